"""The physical bounds: every byte copied whatever the thread count and page kind, detached at once."""
import pytest

from harness import assert_ok, run_strategy, skip_unless_available
from wpcompare import results, strategies

# Not whole 2 MiB shares, not whole pages: every share boundary and the tail are exercised.
ODD_SIZE = (5 << 20) + 3 * 4096 + 100


@pytest.mark.parametrize("bound", ["bound-copy", "bound-fresh"])
@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("page", ["4K", "thp", "2M"])
def test_a_bound_restores_every_byte_and_is_detached_at_once(make_image, bound, threads, page):
    params = f"page={page},threads={threads}"
    image = make_image(ODD_SIZE, kind="random")
    skip_unless_available(bound, params, image)
    row = run_strategy(image, bound, params=params, op="write")
    assert_ok(row)
    assert row["detached"] and row["time_to_detached_ns"] <= row["phases"]["restore"]["ns"] * 2
    assert row["counters"]["copy_threads"] == threads


def test_bounds_are_measured_beside_strategies_but_are_not_strategies():
    names = {strategy.name for strategy in strategies.measured_strategies()}
    assert not names & {"bound-copy", "bound-fresh"}
    assert [choice.label for choice in strategies.bound_choices()] == list(strategies.BOUNDS)
    assert strategies.REFERENCE_BOUND == strategies.BOUNDS[0]
    copy_kinds = [text for text in strategies.BOUNDS if text.startswith(strategies.REFERENCE_BOUND)]
    assert copy_kinds == ["bound-copy", "bound-copy:page=thp", "bound-copy:page=2M"]


def _group(label, median, status="ok"):
    strategy = label.partition(":")[0]
    return {"label": label, "strategy": strategy, "op": "read", "pattern": "random", "threads": 1,
            "overlap": False, "status": status, "metrics": {
                metric: {"median": median} for metric in results.BOUND_RATIOS}}


def test_x_bound_divides_by_the_fastest_copy_bound_of_any_page_kind():
    groups = [_group("bound-copy", 40.0), _group("bound-copy:page=2M", 20.0),
              _group("bound-copy:page=thp", 10.0, status="skipped"), _group("bound-fresh", 5.0),
              _group("uffd-hybrid:page=2M", 30.0)]
    results._add_bound_ratios(groups, strategies.REFERENCE_BOUND)
    ratios = {group["label"]: group["x_bound"]["time_to_detached_ns"] for group in groups}
    assert ratios == {"bound-copy": 2.0, "bound-copy:page=2M": 1.0, "bound-copy:page=thp": None,
                      "bound-fresh": 0.25, "uffd-hybrid:page=2M": 1.5}
    assert {group["x_bound_over"]["time_to_detached_ns"] for group in groups} == {"bound-copy:page=2M"}


def test_x_bound_is_none_without_a_measured_copy_bound():
    groups = [_group("bound-copy", 40.0, status="failed"), _group("mmap", 30.0)]
    results._add_bound_ratios(groups, strategies.REFERENCE_BOUND)
    assert groups[1]["x_bound"] == {metric: None for metric in results.BOUND_RATIOS}
