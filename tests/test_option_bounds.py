"""Every numeric option is bounded to what the C core and the runner take (issue 14, item 10):
out of range, not finite or too wide is one error line and exit status 2, before anything runs."""
import pytest
from click.testing import CliRunner

from wpcompare.cli import main

from harness import refused as refused_by

QUICK = ["--size", "1M", "-s", "read", "--repeat", "1", "--warmup", "0", "--quiet"]


def refused(command, *args):
    return refused_by(*args, command=command)


@pytest.mark.parametrize("command", ["run", "cycle"])
@pytest.mark.parametrize("option,value", [
    ("--timeout", "nan"), ("--timeout", "inf"), ("--timeout", "-inf"), ("--timeout", "1e300"),
    ("--timeout", "0"), ("--seed", "18446744073709551616"), ("--seed", "9223372036854775808"),
    ("--seed", "-1"), ("--threads", "65"), ("--pattern", "stride:99999999999999999999"),
])
def test_out_of_range_is_refused(command, option, value):
    args = QUICK if command == "run" else ["--size", "1M", "-s", "read", "--cycles", "1"]
    line = refused(command, *args, option, value)
    assert option in line or "pattern" in line, line


@pytest.mark.parametrize("option,value", [("--repeat", "99999999999999999999999"), ("--repeat", "0"),
                                          ("--warmup", "99999999999999999999999"), ("--warmup", "-1"),
                                          ("--latency-runs", "99999999999999999999"), ("--latency-runs", "0")])
def test_repetitions_are_bounded(option, value):
    assert option in refused("run", *QUICK, option, value)


@pytest.mark.parametrize("value", ["nan", "inf", "-0.5", "1.5"])
def test_dirty_share_is_a_finite_share(value):
    assert "--dirty" in refused("cycle", "--size", "1M", "-s", "read", "--dirty", value)


@pytest.mark.parametrize("value", ["nan", "inf", "0", "1"])
def test_alpha_is_a_finite_probability(tmp_path, value):
    path = tmp_path / "x.json"
    path.write_text("{}")
    assert "--alpha" in refused("compare", str(path), str(path), "--alpha", value)


def test_the_largest_seed_runs(tmp_path):
    from wpcompare.cli import MAX_SEED
    result = CliRunner().invoke(main, ["run", *QUICK, "--seed", str(MAX_SEED)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
