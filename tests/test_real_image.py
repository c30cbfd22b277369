"""Real images: chains on a file the user gives (cycle --image), one trace per cycle, and the
image's zero pages placed with UFFDIO_ZEROPAGE (zero=zeropage) and found in holes."""
import json
import os
import random
import shutil

import pytest
from click.testing import CliRunner

from harness import (SMALL, assert_ok, error_line, in_child, open_run, run_phases, run_strategy,
                     skip_unless_available)
from wpcompare import binding, cycle, strategies
from wpcompare import trace as traces
from wpcompare.cli import main
from wpcompare.image import open_user_image
from wpcompare.options import parse_pattern

PAGE = binding.PAGE_SIZE
PAGES = SMALL // PAGE
# The strategies that offer zero=zeropage (UFFDIO_ZEROPAGE on an anonymous region).
ZEROPAGE_STRATEGIES = ["uffd", "uffd-move", "uffd-hybrid", "uffd-sigbus"]
# Chains on a real image: with and without a dirty set, lazy and eager.
CHAIN_STRATEGIES = ["read", "mmap", "sigsegv", "uffd-wp", "mmap-wp-async", "uffd"]


def _trace(seed, threads=3, npages=PAGES, entries=1500, write_share=0.4):
    rng = random.Random(seed)
    pages = [rng.randrange(npages) for _ in range(entries)]
    return traces.Trace(region_bytes=npages * PAGE, threads=threads, mechanism="synthetic",
                        pages=pages, writes=[rng.random() < write_share for _ in pages],
                        thread_of=[rng.randrange(threads) for _ in pages], times=None,
                        info={"source": "tests/test_real_image.py"})


def _save(trace, path):
    traces.save(trace, path)
    return str(path)


@pytest.fixture
def real_image(make_image, tmp_path):
    """A user's image file: bytes nobody can regenerate (no seed), so every check must read it."""
    generated = make_image()
    path = tmp_path / "heap.img"
    shutil.copyfile(generated.path, path)
    return open_user_image(path)


def _chain(image, name, tmp_path, pattern, cycles=3, **fields):
    plan = cycle.ChainPlan(choices=[strategies.parse_choice(name)], cycles=cycles, dirty=0.0,
                           pattern=pattern, image=image, threads=3, directory=str(tmp_path),
                           timeout=60, **fields)
    chain = cycle.run_chains(plan)[0]
    if chain["status"] == "skipped":
        pytest.skip(f"{name} cannot run here: {chain['reason']}")
    return chain


def _assert_cycles_ok(chain):
    assert chain["status"] == "ok", chain["reason"]
    for row in chain["cycles"]:
        assert row["status"] == "ok", row["reason"]
        assert row["verified"], "memory after the work equals the base file plus every cycle's writes"
        for check in row["image_check"].values():
            assert check["verified"], check
        if row["dirty"] is not None:
            assert row["dirty"]["missing"] == 0, row["dirty"]


# ---- cycle --image ----

@pytest.mark.parametrize("strategy", CHAIN_STRATEGIES)
def test_a_chain_on_a_real_image_verifies_across_cycles_with_writes_from_several_threads(
        real_image, tmp_path, strategy):
    pattern = parse_pattern(f"trace:{_save(_trace(seed=3), tmp_path / 'a.trace')}")
    with open(real_image.path, "rb") as file:
        before = file.read()
    chain = _chain(real_image, strategy, tmp_path, pattern)
    _assert_cycles_ok(chain)
    assert [row["cycle"] for row in chain["cycles"]] == [1, 2, 3]
    assert all(row["workload"]["threads"] == 3 for row in chain["cycles"])
    with open(real_image.path, "rb") as file:
        assert file.read() == before, "the user's file is never written"


def test_a_real_image_chain_with_old_images_deleted_when_detached_verifies(real_image, tmp_path):
    """The image a cycle restored is gone by verify: the base file and the model vouch instead."""
    pattern = parse_pattern(f"trace:{_save(_trace(seed=4), tmp_path / 'a.trace')}")
    for name in ("read", "uffd"):
        chain = _chain(real_image, name, tmp_path, pattern, delete_old="when-detached")
        _assert_cycles_ok(chain)
        assert {row["old_image_deleted"] for row in chain["cycles"]} <= {"restore", "fixup"}


def test_a_lost_write_on_a_real_image_names_page_and_cycle(real_image, tmp_path):
    trace = _trace(seed=5)
    pattern = parse_pattern(f"trace:{_save(trace, tmp_path / 'a.trace')}")
    chain = _chain(real_image, "mmap", tmp_path, pattern, lose_write=2)
    assert chain["status"] == "failed"
    page = min(page for page, write in zip(trace.pages, trace.writes) if write)
    assert chain["reason"].startswith(f"cycle 2: full dump of image 3: page {page} lost the write of cycle 2")


def test_the_model_of_a_real_image_is_its_base_file_plus_the_writes(real_image, tmp_path):
    """image_check against the base file: a dump of the base verifies; a byte changed is named."""
    copy = tmp_path / "copy.img"
    shutil.copyfile(real_image.path, copy)
    check = binding.image_check(copy, real_image.size, None, None, [], base_path=real_image.path)
    assert check["verified"], check
    with open(copy, "r+b") as file:
        file.seek(7 * PAGE + 16)
        file.write(b"\xff")
    check = binding.image_check(copy, real_image.size, None, None, [], base_path=real_image.path)
    assert not check["verified"] and check["first_mismatch_page"] == 7
    assert check["reason"].startswith("page 7 differs from the base image at byte")
    with pytest.raises(Exception, match="the base image .* is 4096 bytes, the chain's images"):
        short = tmp_path / "short.img"
        short.write_bytes(b"\0" * PAGE)
        binding.image_check(copy, real_image.size, None, None, [], base_path=short)


def test_history_on_a_file_needs_its_base(real_image):
    workload = {"op": "mixed", "pattern": parse_pattern("random"), "seed": 1, "threads": 1,
                "write_fraction": 0.5}
    with pytest.raises(Exception, match="needs its base image"):
        binding.Run(image_path=real_image.path, image_seed=None, image_kind=None, strategy="read",
                    params=None, op="mixed", pattern=parse_pattern("random"), threads=1,
                    overlap=False, seed=2, write_fraction=0.5, history=[workload])


# ---- one trace per cycle ----

def test_one_trace_per_cycle_in_natural_name_order(real_image, tmp_path):
    directory = tmp_path / "traces"
    directory.mkdir()
    # cycle-2 before cycle-10: natural order, not the string order.
    names = ["cycle-1.trace", "cycle-2.trace", "cycle-10.trace"]
    for seed, name in enumerate(names):
        _save(_trace(seed=10 + seed, threads=1 + seed), directory / name)
    (directory / "notes.txt").write_text("not a trace")
    result = CliRunner().invoke(main, ["cycle", "--image", real_image.path, "--pattern",
                                       f"trace:{directory}", "--cycles", "3", "-s", "mmap", "-s",
                                       "uffd-wp", "--dir", str(tmp_path), "--format", "json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    for chain in document["chains"]:
        _assert_cycles_ok(chain)
        assert [(row["workload"]["pattern"], row["workload"]["threads"]) for row in chain["cycles"]] \
            == [(f"trace:{directory / name}", threads) for threads, name in enumerate(names, 1)]


def test_each_cycles_trace_is_its_own_in_the_model(real_image, tmp_path):
    """Cycle 2 replays another trace than cycle 1: the model of image 3 holds both, and the
    dump without cycle 2's writes is told apart."""
    files = [_save(_trace(seed=20 + k, threads=2), tmp_path / f"c{k}.trace") for k in (1, 2)]
    plan_patterns = [(parse_pattern(f"trace:{path}"), 2) for path in files]
    chain = _chain(real_image, "read", tmp_path, parse_pattern(f"trace:{tmp_path}"), cycles=2,
                   cycle_patterns=plan_patterns)
    _assert_cycles_ok(chain)
    first, second = (dict(op="mixed", pattern=pattern, seed=1 + k, threads=2)
                     for k, (pattern, _) in enumerate(plan_patterns, 1))
    dumped = tmp_path / "after-1.img"

    def replay_first():
        with binding.Run(image_path=real_image.path, image_seed=None, image_kind=None,
                         strategy="read", params=None, op="mixed", pattern=first["pattern"],
                         threads=2, overlap=False, seed=first["seed"],
                         base_image_path=real_image.path, history=[]) as run:
            for phase in binding.PHASES:
                getattr(run, phase)()
            run.checkpoint(dumped, incremental=False)

    in_child(replay_first)
    assert binding.image_check(dumped, SMALL, None, None, [first], base_path=real_image.path)["verified"]
    check = binding.image_check(dumped, SMALL, None, None, [first, second], base_path=real_image.path)
    assert not check["verified"] and check["first_mismatch_cycle"] == 2


# ---- refusals, one line each ----

def _refusal(*args):
    result = CliRunner().invoke(main, list(args))
    assert result.exit_code == 2, result.output
    return error_line(result)


def test_a_trace_of_another_size_than_the_real_image_is_refused(real_image, tmp_path):
    path = _save(_trace(seed=1, npages=PAGES // 2), tmp_path / "half.trace")
    line = _refusal("cycle", "--image", real_image.path, "--pattern", f"trace:{path}")
    assert line == (f"Error: trace {path}: recorded for a region of {SMALL // 2} bytes, the image is "
                    f"{SMALL} bytes: replay it on the image captured with it")


def test_fewer_traces_than_cycles_and_empty_directories_are_refused(real_image, tmp_path):
    for k in (1, 2):
        _save(_trace(seed=k), tmp_path / f"{k}.trace")
    line = _refusal("cycle", "--image", real_image.path, "--pattern", f"trace:{tmp_path}",
                    "--cycles", "3")
    assert line == (f"Error: --cycles 3, but {tmp_path} holds 2 traces (one per cycle): give "
                    "--cycles 2 or fewer, or more traces")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "the directory holds no *.trace file" in _refusal(
        "cycle", "--image", real_image.path, "--pattern", f"trace:{empty}")
    assert _refusal("run", "--image", real_image.path, "--pattern", f"trace:{tmp_path}") == (
        f"Error: --pattern trace:{tmp_path} is a directory: one trace per cycle is for "
        "`wpcompare cycle`; give run one trace file")


def test_a_missing_image_and_size_with_image_are_refused(real_image, tmp_path):
    assert "does not exist" in _refusal("cycle", "--image", str(tmp_path / "nope.img"))
    assert "drop them, or drop --image" in _refusal("cycle", "--image", real_image.path, "--size", "1M")


# ---- zero pages ----

def _zero_pages(path):
    with open(path, "rb") as file:
        data = file.read()
    return {p for p in range(-(-len(data) // PAGE)) if not any(data[p * PAGE:(p + 1) * PAGE])}


@pytest.mark.parametrize("strategy", ZEROPAGE_STRATEGIES)
@pytest.mark.parametrize("op", ["read", "write", "mixed"])
def test_zeropage_is_verified_and_detached_under_each_strategy(image, strategy, op):
    row = run_strategy(image, strategy, params={"zero": "zeropage"}, op=op, pattern="random",
                       threads=2, write_fraction=0.5)
    if row["status"] == "skipped":
        pytest.skip(f"{strategy} cannot run here: {row['reason']}")
    assert_ok(row)
    assert row["verified"] and row["detached"]
    zero = _zero_pages(image.path)
    found = row["counters"]
    assert found["zero_pages"] == len(zero) > 0
    assert found["zero_hole_pages"] == 0, "a generated image has no holes"
    # Every zero page is placed once: by ZEROPAGE, or, where a write faulted on it, copied
    # (the zero page would take a second fault at once to be copied on write).
    assert found["zeropage_pages"] + found["zero_written_faults"] == len(zero)
    if op == "read" or strategy == "uffd-sigbus":       # a SIGBUS does not say it is a write
        assert found["zero_written_faults"] == 0
    if op == "write" and strategy in ("uffd", "uffd-move"):
        # Every page is first touched by a write fault the handler serves, none by fixup.
        assert found["zero_written_faults"] == len(zero) and found["zeropage_pages"] == 0


def _read_then_write(npages, pages, threads=1):
    """Thread 0 reads every page (zero pages get the zero page), then writes `pages`: writes
    that come after a zeropage fault, in one thread's order, so no race decides it."""
    order = list(range(npages)) + list(pages)
    return traces.Trace(region_bytes=npages * PAGE, threads=threads, mechanism="synthetic",
                        pages=order, writes=[False] * npages + [True] * len(pages),
                        thread_of=[0] * len(order), times=None, info={})


@pytest.mark.parametrize("strategy", ZEROPAGE_STRATEGIES)
def test_writes_after_a_zeropage_fault_land_and_are_dumped(image, tmp_path, strategy):
    skip_unless_available(strategy, "zero=zeropage")
    zero = sorted(_zero_pages(image.path))
    path = _save(_read_then_write(PAGES, zero), tmp_path / "rw.trace")
    pattern = parse_pattern(f"trace:{path}")
    dumped = tmp_path / "after.img"

    def replay():
        with open_run(image, strategy, params="zero=zeropage", op="mixed",
                      pattern=f"trace:{path}", seed=5) as run:
            row = run_phases(run)
            if row["status"] == "ok":
                run.checkpoint(dumped, incremental=False)
            return row

    row = in_child(replay)
    assert row["status"] == "ok", row["reason"]
    assert row["verified"] and row["detached"]
    assert row["counters"]["zeropage_pages"] == len(zero)
    # The dump holds every write to a page that was the zero page first.
    workload = dict(op="mixed", pattern=pattern, seed=5, threads=1)
    assert binding.image_check(dumped, image.size, image.seed, image.kind, [workload])["verified"]
    with open(dumped, "rb") as file:
        data = file.read()
    assert all(any(data[p * PAGE:(p + 1) * PAGE]) for p in zero), "each zero page now holds a write"


def test_zero_map_is_exact_on_pages_zero_but_for_one_word(tmp_path):
    """A page is zero only if every byte is: one non-zero word at the start, in the middle or
    at the end keeps it a data page."""
    pages = [bytes(PAGE)] * 8
    for index, offset in ((1, 0), (3, PAGE // 2), (5, PAGE - 8), (6, PAGE - 1)):
        page = bytearray(PAGE)
        page[offset] = 0x5a
        pages[index] = bytes(page)
    path = tmp_path / "words.img"
    path.write_bytes(b"".join(pages) + b"\x01")   # and a tail page holding one byte
    image = open_user_image(path)
    for strategy in ("uffd", "uffd-sigbus"):
        row = run_strategy(image, strategy, params={"zero": "zeropage"}, op="read", pattern="seq")
        assert_ok(row)
        assert row["verified"]
        assert row["counters"]["zero_pages"] == 4, "pages 0, 2, 4 and 7"


def test_zeropage_on_a_sparse_image_reads_only_its_data(image, tmp_path):
    sparse = tmp_path / "sparse.img"
    shutil.copyfile(image.path, sparse)
    result = CliRunner().invoke(main, ["sparsify", str(sparse)])
    zero = _zero_pages(image.path)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"{sparse}: {len(zero)} of {PAGES} pages were all zero and are holes now"
    with open(image.path, "rb") as a, open(sparse, "rb") as b:
        assert a.read() == b.read(), "the bytes are unchanged"
    assert os.stat(sparse).st_blocks * 512 <= (PAGES - len(zero)) * PAGE + PAGE
    user = open_user_image(sparse)
    for strategy in ZEROPAGE_STRATEGIES:
        row = run_strategy(user, strategy, params={"zero": "zeropage"}, op="mixed",
                           pattern="random", write_fraction=0.5, threads=2)
        if row["status"] == "skipped":
            continue
        assert_ok(row)
        assert row["verified"] and row["detached"]
        assert row["counters"]["zero_hole_pages"] == len(zero), "every zero page is a hole, unread"
        assert row["counters"]["zero_pages"] == len(zero)


def test_zeropage_with_huge_pages_is_a_skipped_row_with_the_fix(image):
    row = run_strategy(image, "uffd-hybrid", params={"zero": "zeropage", "page": "2M"}, op="read",
                       pattern="seq")
    assert row["status"] == "skipped"
    assert "zero=zeropage needs page=4K" in row["reason"]


def test_zero_is_offered_where_a_zero_page_can_be_mapped():
    """Anonymous MISSING regions only: uffd-minor's pages are the memfd's, uffd-huge's hugetlb."""
    offered = {name for name in ZEROPAGE_STRATEGIES + ["uffd-minor", "uffd-huge"]
               if "zero" in [param.name for param in strategies.find(name).params]}
    assert offered == set(ZEROPAGE_STRATEGIES)
