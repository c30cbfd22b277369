"""The physical bounds: every byte copied whatever the thread count and page kind, detached at once."""
import pytest

from conftest import assert_ok, skip_unless_available
from wpcompare import strategies

# Not whole 2 MiB shares, not whole pages: every share boundary and the tail are exercised.
ODD_SIZE = (5 << 20) + 3 * 4096 + 100


@pytest.mark.parametrize("bound", ["bound-copy", "bound-fresh"])
@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("page", ["4K", "thp", "2M"])
def test_a_bound_restores_every_byte_and_is_detached_at_once(make_image, run_strategy, bound, threads, page):
    params = f"page={page},threads={threads}"
    skip_unless_available(bound, params)
    image = make_image(ODD_SIZE, kind="random")
    row = run_strategy(image, bound, params=params, op="write")
    assert_ok(row)
    assert row["detached"] and row["time_to_detached_ns"] <= row["phases"]["restore"]["ns"] * 2
    assert row["counters"]["copy_threads"] == threads


def test_bounds_are_measured_beside_strategies_but_are_not_strategies():
    names = {strategy.name for strategy in strategies.measured_strategies()}
    assert not names & {"bound-copy", "bound-fresh"}
    assert [choice.label for choice in strategies.bound_choices()] == list(strategies.BOUNDS)
    assert strategies.REFERENCE_BOUND == strategies.BOUNDS[0]
