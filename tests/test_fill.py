"""Eager fills (csrc/fill.c): fill=, threads= and thp= of every strategy that fills eagerly.

Table-driven, as the kernel's uffd-unit-tests: every strategy x every value of its fill
parameters restores and fixes up an image whose size is neither whole 2 MiB shares nor whole
pages, with half its pages written before the fixup (op mixed), and verifies every byte: the
written pages must hold the written bytes after a fixup that copies the region, the others the
image's. Then the counters say what each fill did (threads that copied, huge pages the
destination got), the refusals and skips say why, and a run leaves nothing behind.
"""
import errno
import os

import pytest

from harness import (HUGE, PAGE, assert_ok, counters, in_child, open_run, probe, run_strategy,
                     skip_unless_available)
from wpcompare import strategies

# Not whole 2 MiB shares, not whole pages: every share boundary and the tail are exercised.
ODD_SIZE = (5 << 20) + 3 * PAGE + 100
REGION = (ODD_SIZE + PAGE - 1) // PAGE * PAGE
NCPUS = len(os.sched_getaffinity(0))

# strategy (with the parameters it needs) -> the fill= choices it offers, whether it offers
# thp=, and what the copier splits: the region, or the image's bytes (a memfd's sendfile).
FILLS = {
    "read": (["pread", "memcpy", "uffdio-copy"], True, REGION),
    "uffd-wp-anon": (["pread", "memcpy", "uffdio-copy"], True, REGION),
    "mmap": (["memcpy", "uffdio-copy"], True, REGION),
    "mmap-populate": (["memcpy", "uffdio-copy"], True, REGION),
    "mmap-wp-async": (["memcpy", "uffdio-copy"], True, REGION),
    "uffd-wp": (["sendfile", "uffdio-copy"], False, ODD_SIZE),
    "uffd-minor": (["sendfile", "uffdio-copy"], False, ODD_SIZE),
}
# 3: as many shares as threads; 8: more threads than shares; 0: one per CPU.
THREADS = [1, 3, 8, 0]


def _ceil_div(a, b):
    return -(-a // b)


def _shares(length, threads):
    """Threads that get a share: contiguous 2 MiB-aligned shares, as the copier splits them."""
    wanted = threads or NCPUS
    share = _ceil_div(_ceil_div(length, wanted), HUGE) * HUGE
    return min(wanted, _ceil_div(length, share))


def _cases():
    for strategy, (fills, thp, length) in FILLS.items():
        for fill in fills:
            for threads in THREADS:
                for huge in (["no", "yes"] if thp and fill != "uffdio-copy" else ["no"]):
                    params = f"fill={fill},threads={threads}" + (f",thp={huge}" if thp else "")
                    yield pytest.param(strategy, params, _shares(length, threads),
                                       id=f"{strategy}:{params}")


@pytest.mark.parametrize("strategy,params,shares", list(_cases()))
def test_every_fill_restores_and_fixes_up_every_byte(make_image, strategy, params, shares):
    image = make_image(ODD_SIZE, kind="random")
    skip_unless_available(strategy, params, image)
    row = run_strategy(image, strategy, params=params, op="mixed")
    assert_ok(row)
    assert row["detached"]
    got = row["counters"]
    memfd = strategy in ("uffd-wp", "uffd-minor")
    assert got["memfd_fill_threads" if memfd else "fill_threads"] == shares, got
    if "thp=yes" not in params and "fill_huge_pages" in got:
        # MADV_NOHUGEPAGE (or UFFDIO_COPY's 4 KiB pages): none, whatever the system setting.
        assert got["fill_huge_pages"] == 0, got


@pytest.mark.parametrize("threads", [1, 3, 8, 0])
@pytest.mark.parametrize("copy", ["memcpy", "read"])
def test_sigsegv_at_checkpoint_sweep_in_threads(make_image, copy, threads):
    """Half the pages written first, at random: the sweep copies many short runs; then only
    pages 0 and 1280 written: one run of 79 chunks (64 KiB each), split into shares."""
    image = make_image(ODD_SIZE, kind="random")
    params = f"fixup=at-checkpoint,copy={copy},threads={threads}"
    for pattern, op in (("random", "mixed"), ("stride:1280", "write")):
        row = run_strategy(image, "sigsegv", params=params, op=op, pattern=pattern)
        assert_ok(row)
    # Counter fill_threads: the most threads one run of the sweep used.
    assert row["counters"]["fill_threads"] == _shares(79 * (64 << 10), threads)


def _huge_pages_of(start, length):
    """AnonHugePages of the VMAs inside [start, start + length), in 2 MiB pages, from smaps."""
    kb, inside = 0, False
    with open("/proc/self/smaps") as smaps:
        for line in smaps:
            head = line.split()[0]
            if "-" in head and not head.endswith(":"):
                low, high = (int(bound, 16) for bound in head.split("-"))
                inside = low >= start and high <= start + length
            elif inside and head == "AnonHugePages:":
                kb += int(line.split()[1])
    return kb * 1024 // HUGE


def _restore_and_count(image, strategy, params, phases):
    with open_run(image, strategy, params) as run:
        for phase in phases:
            getattr(run, phase)()
        start, length = run.region()
        return counters(run.result)["fill_huge_pages"], _huge_pages_of(start, length)


@pytest.mark.parametrize("thp", ["no", "yes"])
@pytest.mark.parametrize("strategy,phases", [("read", ["restore"]),
                                             ("mmap", ["restore", "touch", "fixup"])],
                         ids=["read-restore", "mmap-fixup"])
def test_the_huge_page_count_is_what_the_region_holds(make_image, strategy, phases, thp):
    """fill_huge_pages is the region's AnonHugePages as this process reads them right after:
    whatever THP gave this time (erratic here), the row says it, and thp=no says 0."""
    image = make_image(8 << 20, kind="random")
    params = f"thp={thp}"
    skip_unless_available(strategy, params, image)
    reported, present = in_child(_restore_and_count, image, strategy, params, phases)
    if thp == "no":
        assert reported == present == 0
    else:
        # khugepaged may collapse more meanwhile, never fewer: what holds in every run.
        assert reported <= present


def test_thp_where_it_is_off_is_a_skipped_row_with_the_setting_to_change(make_image, monkeypatch):
    monkeypatch.setenv("WPCOMPARE_HIDE_THP", "1")
    for strategy in ("read", "mmap", "mmap-wp-async", "uffd-wp-anon"):
        rc, why = probe(strategy, "thp=yes")
        assert rc == -errno.EOPNOTSUPP, (strategy, why)
        assert "transparent huge pages are off" in why and "echo madvise" in why, why
    assert probe("read", "thp=no") == (0, "") and probe("mmap", "thp=no") == (0, "")
    row = run_strategy(make_image(), "read", params="thp=yes")
    assert row["status"] == "skipped" and "transparent huge pages are off" in row["reason"], row


def test_thp_with_uffdio_copy_is_refused_naming_what_goes_together():
    for strategy, other in (("read", "pread or memcpy"), ("mmap", "memcpy")):
        rc, why = probe(strategy, "fill=uffdio-copy,thp=yes")
        assert rc == -errno.EINVAL, why
        assert "thp=yes cannot go with fill=uffdio-copy" in why and f"fill={other}" in why


def test_sigsegv_threads_without_at_checkpoint_is_refused():
    rc, why = probe("sigsegv", "threads=2")
    assert rc == -errno.EINVAL and "fixup=at-checkpoint" in why, why
    assert probe("sigsegv", "fixup=at-checkpoint,threads=2") == (0, "")


def test_each_strategy_offers_only_the_fill_choices_that_apply():
    offered = {s.name: s for s in strategies.all_strategies()}
    for name, (fills, thp, _) in FILLS.items():
        assert list(offered[name].param("fill").choices) == fills, name
        assert (offered[name].param("thp") is not None) == thp, name
        assert offered[name].param("threads").default == "1", name
        assert offered[name].param("fill").default == fills[0], name
    assert offered["sigsegv"].param("fill") is None and offered["sigsegv"].param("thp") is None
    for name in ("uffd", "uffd-move", "uffd-huge", "uffd-hybrid", "uffd-sigbus"):
        assert offered[name].param("fill") is None, name


def test_uffdio_copy_needs_a_userfaultfd_and_says_so():
    """uffdio-copy opens a user-mode userfaultfd: its row needs one (the probe checks it), the
    published default needs none. (tests/test_unprivileged.py runs it behind seccomp.)"""
    for strategy in ("read", "mmap", "mmap-populate"):
        assert probe(strategy, "fill=uffdio-copy")[0] == 0
        assert probe(strategy)[0] == 0
