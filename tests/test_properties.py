"""Property-based tests (hypothesis): option parsing and the C core's access plan.

The parsers take whatever a person types, so every text either parses into
something that reads back the same, or is refused with one line saying why;
never another exception. The plan is what every measurement stands on: the
order of pages, their share, and their split among threads.
"""
import math

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from wpcompare import binding, strategies
from wpcompare._core import ffi, lib
from wpcompare.errors import InvalidArgument
from wpcompare.options import Pattern, format_size, parse_pattern, parse_size

UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def one_line(error):
    assert error.reason and "\n" not in error.reason, repr(error.reason)


# ---- sizes ----

@given(st.integers(min_value=0, max_value=1 << 20), st.sampled_from(sorted(UNITS)),
       st.sampled_from(["", "B", "iB", "b", "ib"]), st.booleans(), st.text(" ", max_size=2))
def test_size_with_any_unit_spelling(number, unit, suffix, lower, space):
    text = f"{space}{number}{space}{unit.lower() if lower else unit}{suffix if unit else ''}{space}"
    if number * UNITS[unit] == 0:
        with pytest.raises(InvalidArgument):
            parse_size(text)
        return
    assert parse_size(text) == number * UNITS[unit]


@given(st.integers(min_value=1, max_value=1 << 50))
def test_format_size_reads_back(size):
    assert parse_size(format_size(size)) == size


@given(st.text(max_size=12))
@example("1.5G")
@example("٣K")         # a digit Python's isdigit() accepts but int() of a size must not
@example("4K\x00")
@example("4\u212a")    # KELVIN SIGN: matches "K" case-insensitively in Unicode regexes
def test_any_size_text_parses_or_is_refused_in_one_line(text):
    try:
        size = parse_size(text)
    except InvalidArgument as error:
        one_line(error)
        assert repr(text) in error.reason
    else:
        assert isinstance(size, int) and size >= 1


# ---- patterns ----

patterns = st.one_of(
    st.sampled_from([Pattern("seq"), Pattern("random")]),
    st.builds(lambda f: Pattern("sparse", fraction=f),
              st.floats(min_value=1e-9, max_value=1.0, allow_nan=False)),
    st.builds(lambda n: Pattern("stride", stride=n), st.integers(min_value=1, max_value=1 << 40)),
)


@given(patterns)
def test_pattern_text_reads_back(pattern):
    again = parse_pattern(str(pattern))
    assert again.kind == pattern.kind
    assert str(again) == str(pattern)
    if pattern.kind == "stride":
        assert again == pattern
    if pattern.kind == "sparse":
        assert math.isclose(again.fraction, pattern.fraction, rel_tol=1e-5)


@given(st.one_of(st.text(max_size=16),
                 st.builds(lambda kind, arg: f"{kind}:{arg}",
                           st.sampled_from(["seq", "random", "sparse", "stride", "SPARSE", ""]),
                           st.text(max_size=8))))
@example("sparse:inf")
@example("sparse:1e-400")
@example("stride:٣")
@example("stride:²")
def test_any_pattern_text_parses_or_is_refused_in_one_line(text):
    try:
        pattern = parse_pattern(text)
    except InvalidArgument as error:
        one_line(error)
        return
    assert pattern.kind in ("seq", "random", "sparse", "stride")
    assert 0 < pattern.fraction <= 1 and pattern.stride >= 1
    # Whatever Python accepts, the C core accepts too.
    assert _plan(pattern, npages=64) is not None


# ---- strategy:param strings, from the table ----

def _value_for(spec):
    """A hypothesis strategy of values of one parameter: valid ones mostly, some not."""
    if spec.choices:
        valid = st.sampled_from(spec.choices)
    elif spec.kind == "size":
        valid = st.sampled_from(["4K", "64K", "2M", "4096"])
    elif spec.kind == "int":
        valid = st.integers(min_value=0, max_value=64).map(str)
    else:
        valid = st.text("abcxyz/._-", min_size=1, max_size=12)
    return st.one_of(valid, valid, st.text(max_size=6))


@st.composite
def choice_texts(draw):
    strategy = draw(st.sampled_from(strategies.all_strategies()))
    chosen = draw(st.lists(st.sampled_from(strategy.params), unique_by=lambda p: p.name)
                  if strategy.params else st.just([]))
    items = [f"{spec.name}={draw(_value_for(spec))}" for spec in chosen]
    return strategy.name + (":" + ",".join(items) if items else "")


def _parsed_or_refused(text):
    """The choice text parses into, which the C core validates too; None where it is
    refused, in one line."""
    try:
        choice = strategies.parse_choice(text)
    except InvalidArgument as error:
        one_line(error)
        return None
    binding.validate_params(choice.strategy.name, choice.params_text)
    return choice


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(choice_texts())
def test_strategy_choices_parse_or_are_refused_in_one_line(text):
    # What was accepted is what the C core validates, and its label reads back the same.
    choice = _parsed_or_refused(text)
    if choice is None:
        return
    again = strategies.parse_choice(choice.label)
    assert again.label == choice.label
    canonical = {name: choice.strategy.param(name).canonical(value) for name, value in choice.params}
    for name, value in again.params:
        assert choice.strategy.param(name).canonical(value) == canonical[name]


@given(st.text(max_size=24))
@example("mmap:")
@example("mmap:,,")
@example("mmap\x00")
@example(":chunk=4K")
def test_any_strategy_text_parses_or_is_refused_in_one_line(text):
    _parsed_or_refused(text)


@pytest.mark.parametrize("strategy,spec", [(s, p) for s in strategies.all_strategies() for p in s.params])
@given(junk=st.text(max_size=8).filter(lambda v: "," not in v))
def test_a_value_the_c_core_would_see_differently_is_refused(strategy, spec, junk):
    # A NUL ends the C string early: "4K\0junk" must not pass as "4K".
    value = (spec.choices[0] if spec.choices else spec.default) + "\x00" + junk
    with pytest.raises(InvalidArgument) as caught:
        strategies.parse_choice(f"{strategy.name}:{spec.name}={value}")
    one_line(caught.value)


# ---- the access plan (csrc/workload.c) ----

def _plan(pattern, npages, threads=1, overlap=False, seed=1, op="read", write_fraction=0.5,
          with_writes=False):
    """(order, begin[, written]) as the C core builds them, or None if it refuses the workload."""
    workload = ffi.new("struct wpc_workload *")
    workload.op = binding.OPS[op]
    workload.pattern = binding.PATTERN_KINDS[pattern.kind]
    workload.fraction = pattern.fraction
    workload.stride = pattern.stride
    workload.seed = seed
    workload.threads = threads
    workload.overlap = int(overlap)
    workload.write_fraction = write_fraction
    order = ffi.new("uint64_t[]", max(npages, 1))
    begin = ffi.new("uint64_t[]", binding.MAX_THREADS + 1)
    written = ffi.new("uint8_t[]", max(npages, 1))
    count = lib.wpc_plan_pages(workload, npages, order, begin, written)
    if count < 0:
        return None
    if with_writes:
        return list(order[0:count]), list(begin[0:threads + 1]), list(written[0:count])
    return list(order[0:count]), list(begin[0:threads + 1])


pages = st.integers(min_value=1, max_value=3000)
threads = st.integers(min_value=1, max_value=binding.MAX_THREADS)
seeds = st.integers(min_value=0, max_value=2**64 - 1)


@given(pages, seeds)
def test_seq_is_every_page_in_order(npages, seed):
    order, _ = _plan(Pattern("seq"), npages, seed=seed)
    assert order == list(range(npages))


@given(pages, seeds)
def test_random_is_a_permutation(npages, seed):
    order, _ = _plan(Pattern("random"), npages, seed=seed)
    assert sorted(order) == list(range(npages))


@given(pages, st.floats(min_value=1e-6, max_value=1.0), seeds)
def test_sparse_is_the_first_pages_of_the_permutation(npages, fraction, seed):
    order, _ = _plan(Pattern("sparse", fraction=fraction), npages, seed=seed)
    assert len(order) == max(1, math.floor(npages * fraction + 0.5))
    assert len(set(order)) == len(order)
    full, _ = _plan(Pattern("random"), npages, seed=seed)
    assert order == full[:len(order)]


@given(pages, st.integers(min_value=1, max_value=5000))
def test_stride_touches_every_nth_page(npages, stride):
    order, _ = _plan(Pattern("stride", stride=stride), npages)
    assert order == list(range(0, npages, stride))


@given(pages, threads, patterns, seeds)
def test_threads_split_covers_each_page_once(npages, nthreads, pattern, seed):
    order, begin = _plan(pattern, npages, threads=nthreads, seed=seed)
    assert begin[0] == 0 and begin[-1] == len(order)
    sizes = [begin[t + 1] - begin[t] for t in range(nthreads)]
    assert min(sizes) >= 0 and max(sizes) - min(sizes) <= 1, "an even split"
    walked = [page for t in range(nthreads) for page in order[begin[t]:begin[t + 1]]]
    assert walked == order and len(set(walked)) == len(walked)


@given(pages, threads)
def test_overlap_lets_every_thread_walk_the_whole_order(npages, nthreads):
    order, begin = _plan(Pattern("random"), npages, threads=nthreads, overlap=True)
    assert len(order) == npages
    assert begin[0] == 0 and all(b == npages for b in begin[1:])


@given(st.one_of(
    st.builds(lambda f: Pattern("sparse", fraction=f),
              st.one_of(st.floats(max_value=0.0), st.floats(min_value=1.0, exclude_min=True),
                        st.just(math.nan))),
    st.just(Pattern("stride", stride=0))), pages)
def test_the_c_core_refuses_what_the_parser_refuses(pattern, npages):
    assert _plan(pattern, npages) is None


@given(st.sampled_from([0, binding.MAX_THREADS + 1, -1]))
def test_thread_counts_outside_the_limit_are_refused(nthreads):
    workload = ffi.new("struct wpc_workload *", {"threads": nthreads})
    order = ffi.new("uint64_t[]", 8)
    begin = ffi.new("uint64_t[]", binding.MAX_THREADS + 2)
    assert lib.wpc_plan_pages(workload, 8, order, begin, ffi.NULL) < 0


@given(pages, threads, patterns, st.floats(min_value=0.0, max_value=1.0), seeds)
def test_mixed_writes_exactly_its_share_of_the_touched_pages(npages, nthreads, pattern, share, seed):
    order, _, written = _plan(pattern, npages, threads=nthreads, seed=seed, op="mixed",
                              write_fraction=share, with_writes=True)
    assert sum(written) == math.floor(len(order) * share + 0.5)
    again = _plan(pattern, npages, threads=nthreads, seed=seed, op="mixed", write_fraction=share,
                  with_writes=True)
    assert again[2] == written, "the same seed writes the same pages"


@given(pages, patterns)
def test_read_and_write_ops_read_or_write_every_page(npages, pattern):
    for op, expected in (("read", 0), ("write", 1)):
        _, _, written = _plan(pattern, npages, op=op, with_writes=True)
        assert set(written) == {expected}


@given(st.one_of(st.floats(max_value=0.0, exclude_max=True), st.floats(min_value=1.0, exclude_min=True),
                 st.just(math.nan)))
def test_mixed_refuses_a_share_outside_0_1(share):
    assert _plan(Pattern("random"), 16, op="mixed", write_fraction=share) is None
