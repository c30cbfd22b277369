"""Parsing of sizes, patterns and strategy choices."""
import pytest

from wpcompare import strategies
from wpcompare.errors import InvalidArgument
from wpcompare.options import Pattern, format_size, human_bytes, parse_pattern, parse_size
from wpcompare.strategies import ParamSpec, Strategy, StrategyChoice


@pytest.mark.parametrize("text,size", [
    ("4096", 4096), ("1", 1), ("4K", 4096), ("4k", 4096), ("256M", 256 << 20), ("1G", 1 << 30),
    ("2T", 2 << 40), ("4KiB", 4096), ("16MB", 16 << 20), (" 8M ", 8 << 20), ("100B", 100),
])
def test_sizes(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "M", "12X", "1.5G", "-4K", "4 K B", "0x10", "4KK", "0", "0M"])
def test_bad_sizes_name_the_value(text):
    with pytest.raises(InvalidArgument) as caught:
        parse_size(text)
    assert repr(text) in caught.value.reason
    assert "\n" not in caught.value.reason


@pytest.mark.parametrize("size", [1, 4095, 4096, 3 << 20, (1 << 30) + 4096, 5 << 40])
def test_format_size_is_read_back_exactly(size):
    assert parse_size(format_size(size)) == size


def test_format_size_picks_the_largest_exact_unit():
    assert format_size(256 << 20) == "256M"
    assert format_size(1536) == "1536"
    assert format_size(3 << 10) == "3K"


def test_human_bytes():
    assert human_bytes(512) == "512 B"
    assert human_bytes(1536) == "1.5 KiB"
    assert human_bytes(256 << 20) == "256 MiB"


@pytest.mark.parametrize("text,pattern", [
    ("seq", Pattern("seq")),
    ("random", Pattern("random")),
    ("RANDOM", Pattern("random")),
    ("sparse:0.1", Pattern("sparse", fraction=0.1)),
    ("sparse:1", Pattern("sparse", fraction=1.0)),
    ("stride:1", Pattern("stride", stride=1)),
    ("stride:512", Pattern("stride", stride=512)),
])
def test_patterns(text, pattern):
    assert parse_pattern(text) == pattern


@pytest.mark.parametrize("text", ["seq", "random", "sparse:0.25", "stride:16"])
def test_pattern_text_round_trips(text):
    assert str(parse_pattern(text)) == text


@pytest.mark.parametrize("text,hint", [
    ("zigzag", "use seq, random"),
    ("", "use seq, random"),
    ("sparse", "use seq, random"),
    ("sparse:0", "0 < F <= 1"),
    ("sparse:1.5", "0 < F <= 1"),
    ("sparse:-0.1", "0 < F <= 1"),
    ("sparse:nan", "0 < F <= 1"),
    ("sparse:half", "0 < F <= 1"),
    ("stride:0", ">= 1"),
    ("stride:-2", ">= 1"),
    ("stride:2.5", ">= 1"),
    ("seq:3", "use seq, random"),
])
def test_bad_patterns_say_what_is_valid(text, hint):
    with pytest.raises(InvalidArgument) as caught:
        parse_pattern(text)
    assert hint in caught.value.reason


def test_strategy_choice_from_the_c_table():
    choice = strategies.parse_choice("mmap")
    assert choice.strategy.name == "mmap"
    assert choice.params_text == ""
    assert choice.label == "mmap"


def test_unknown_strategy_lists_the_valid_ones():
    with pytest.raises(InvalidArgument) as caught:
        strategies.parse_choice("mmapp")
    for strategy in strategies.all_strategies():
        assert strategy.name in caught.value.reason


@pytest.mark.parametrize("text,hint", [
    ("mmap:chunk=4K", "'chunk'"),
    ("mmap:chunk", "name=value"),
    ("mmap:=4K", "name=value"),
])
def test_bad_parameters_are_named(text, hint):
    with pytest.raises(InvalidArgument) as caught:
        strategies.parse_choice(text)
    assert hint in caught.value.reason


# A strategy with parameters, built by hand: the label rules do not depend on
# which rows the C table has today.
CHUNKY = Strategy("chunky", "test", "a strategy with parameters", (
    ParamSpec("chunk", "size", ("4K", "2M"), "4K", "copy unit"),
    ParamSpec("fixup", "choice", ("sync", "background"), "background", "who copies"),
))


def test_label_names_only_parameters_that_differ_from_the_default():
    assert StrategyChoice(CHUNKY, (("chunk", "4096"), ("fixup", "background"))).label == "chunky"
    assert StrategyChoice(CHUNKY, (("chunk", "2M"),)).label == "chunky:chunk=2M"
    assert StrategyChoice(CHUNKY, (("chunk", "2M"), ("fixup", "sync"))).label == "chunky:chunk=2M,fixup=sync"


def test_params_text_is_what_the_c_core_takes():
    assert StrategyChoice(CHUNKY, (("chunk", "2M"), ("fixup", "sync"))).params_text == "chunk=2M,fixup=sync"
    assert StrategyChoice(CHUNKY, ()).params_text == ""


def test_size_parameters_compare_by_value():
    chunk = CHUNKY.param("chunk")
    assert chunk.canonical("4K") == chunk.canonical("4096") == 4096
    assert chunk.describe() == "chunk=4K|2M (default 4K)"
