"""Bad input the hardening issue adds to tests/test_cli.py's: each a one-line error, exit
status 2, nothing generated and nothing written.

Strategy and parameter errors are checked against every row of the C table,
so a strategy added later gets the same treatment without a change here.
"""
import json
import os

import pytest
from click.testing import CliRunner

from wpcompare import strategies
from wpcompare.cli import main
from wpcompare.image import memory_available

from harness import refused

STRATEGIES = strategies.all_strategies()
WITH_PARAMS = [strategy for strategy in STRATEGIES if strategy.params]


@pytest.mark.parametrize("command", ["run", "cycle"])
def test_a_size_beyond_available_memory_is_refused_with_the_estimate(tmp_path, command):
    available = memory_available()
    assert available, "MemAvailable is readable here"
    target = tmp_path / "out.json"
    line = refused("--size", "1T", "-o", str(target), command=command)
    assert "--size 1T: a run needs about 2048 GiB of memory" in line
    assert "(MemAvailable)" in line and "use a smaller --size" in line
    assert not target.exists()


def test_an_image_beyond_available_memory_is_refused(tmp_path):
    image = tmp_path / "huge.img"
    with open(image, "wb") as sparse:
        sparse.truncate(1 << 40)       # a sparse file: no disk used
    line = refused("--image", str(image))
    assert "huge.img' is 1024 GiB: a run needs about 2048 GiB" in line
    assert "use a smaller image" in line


def test_a_symlink_to_a_device_is_not_an_image(tmp_path):
    link = tmp_path / "zero.img"
    link.symlink_to("/dev/zero")
    assert "is a character device, not a regular file" in refused("--image", str(link))


@pytest.mark.parametrize("strategy", STRATEGIES, ids=lambda s: s.name)
def test_an_unknown_parameter_lists_the_valid_ones(strategy):
    line = refused("-s", f"{strategy.name}:nosuch=1")
    assert "'nosuch'" in line
    if strategy.params:
        for spec in strategy.params:
            assert spec.name in line, (spec.name, line)
    else:
        assert "takes no parameters" in line


@pytest.mark.parametrize("strategy,spec", [(s, p) for s in WITH_PARAMS for p in s.params
                                           if p.choices],
                         ids=lambda value: getattr(value, "name", None))
def test_a_bad_parameter_value_lists_the_valid_values(strategy, spec):
    line = refused("-s", f"{strategy.name}:{spec.name}=not-a-value")
    assert "not-a-value" in line
    for choice in spec.choices:
        assert choice in line, (choice, line)


def test_an_unknown_strategy_lists_every_valid_one():
    line = refused("-s", "mmapp")
    for strategy in STRATEGIES:
        assert strategy.name in line


@pytest.mark.parametrize("text,hint", [
    ("sparse:", "use seq, random, sparse:F"),
    ("sparse:0.5:1", "0 < F <= 1"),
    ("stride:x", ">= 1"),
    ("stride:²", ">= 1"),
    ("random:2", "use seq, random"),
    ("seq random", "use seq, random"),
])
def test_a_malformed_pattern_says_what_is_valid(text, hint):
    assert hint in refused("--pattern", text)


@pytest.mark.parametrize("text", ["4\u212a", "٣M", "1.5G", "-1M", "16 M B"])
def test_a_malformed_size_is_refused(text):
    assert f"invalid size {text!r}" in refused("--size", text)


@pytest.mark.parametrize("text", ["mmap\x00", "mmap:chunk=4K\x00"])
def test_control_characters_in_a_strategy_are_refused(text):
    assert "control characters are not allowed" in refused("-s", text)


def test_the_mixed_op_runs_and_verifies(tmp_path):
    result = CliRunner().invoke(main, ["run", "--size", "1M", "--repeat", "1", "--warmup", "0",
                                       "--no-bounds", "--latency", "off",
                                       "-s", "mmap", "-s", "read", "--op", "mixed", "--threads", "4",
                                       "--format", "json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    runs = json.loads(result.stdout)["runs"]
    assert [(run["strategy"], run["op"], run["status"], run["verified"]) for run in runs] == [
        ("mmap", "mixed", "ok", True), ("read", "mixed", "ok", True)]


def test_test_only_injections_are_checked_too():
    assert "inject must be one of" in refused("--inject", "explode")
    assert "only mremap-enomem, handler-exit, lose-write take a count" in refused("--inject", "segv:2")
    assert "take a count N >= 1" in refused("--inject", "mremap-enomem:²")
    assert os.environ.get("WPCOMPARE_INJECT_MREMAP_ENOMEM") is None
