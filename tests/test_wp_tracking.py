"""The strategies that track writes by write-protection, without copy-and-remap:
uffd-wp-anon (sync WP faults) and mmap-wp-async (WP_ASYNC + PAGEMAP_SCAN), their dirty
sets, the kernel tracking they rely on (through the test-only wpc_wp_tracker_* entry
points), and their skip paths with features masked (WPCOMPARE_UFFD_FEATURE_MASK,
WPCOMPARE_HIDE_PAGEMAP_SCAN: test-only knobs the C probes read with getenv, set with
monkeypatch.setenv). uffd-wp, which write-protects to copy-and-remap, is test_uffd_wp.py.

Every run happens in a fresh process, as the runner isolates runs: VMAs and
userfaultfd registrations must not leak between tests, and a hang (a writer
blocked on a handler that is gone) becomes a failure with a timeout.
"""
import errno
import os

import pytest

from harness import (PAGE, assert_handler_placed, assert_ok, in_child, open_run, probe, reason_buffer, row_of,
                     run_phases, run_strategy, skip_unless_two_cpus, text, touched_pages)
from wpcompare import binding
from wpcompare._core import ffi, lib

WP_STRATEGIES = ("uffd-wp-anon", "mmap-wp-async")
MASK_VARIABLE = "WPCOMPARE_UFFD_FEATURE_MASK"

FEATURE_PAGEFAULT_FLAG_WP = 1 << 0
FEATURE_WP_UNPOPULATED = 1 << 13
FEATURE_WP_ASYNC = 1 << 15

PATTERNS = ("seq", "random", "sparse:0.25", "stride:3")


def _phases_then_threads(image, strategy, phases, params=None, pattern="random"):
    """Only these phases, then destroy: the row as far as it got, and the threads left once
    the run is destroyed."""
    with open_run(image, strategy, params, pattern=pattern, seed=1) as run:
        row = run_phases(run, phases)
    row["threads_after"] = len(os.listdir("/proc/self/task"))
    return row


# ---- fixtures ----

@pytest.fixture
def wp_image(make_image):
    """4 MiB: 1024 pages."""
    return make_image(4 << 20, seed=1234)


@pytest.fixture
def odd_image(make_image):
    """Ends inside its last page: the region must read zeros past the end."""
    return make_image((1 << 20) + 1000, seed=77)


@pytest.fixture(scope="module", autouse=True)
def wp_supported():
    for strategy in WP_STRATEGIES:
        rc, why = probe(strategy)
        if rc:
            pytest.skip(f"{strategy} cannot run here: {why}")


# ---- bytes and dirty sets ----

@pytest.mark.parametrize("threads", [1, 4])
@pytest.mark.parametrize("pattern", PATTERNS)
@pytest.mark.parametrize("op", ["read", "write"])
@pytest.mark.parametrize("strategy", WP_STRATEGIES)
def test_bytes_and_dirty_set(wp_image, strategy, op, pattern, threads):
    row = run_strategy(wp_image, strategy, op=op, pattern=pattern, threads=threads)
    assert_ok(row)
    assert row["detached"] and not row["image_mapped"] and row["foreign_vmas"] == 0
    assert row["touched_pages"] == touched_pages(row["pages"], pattern)
    expected = touched_pages(row["pages"], pattern) if op == "write" else 0
    assert row["dirty"] == {"reported": expected, "missing": 0, "extra": 0}


@pytest.mark.parametrize("overlap", [False, True])
@pytest.mark.parametrize("strategy,params", [
    ("uffd-wp-anon", "handler-cpu=same"),
    ("uffd-wp-anon", "handler-cpu=other"),
    ("uffd-wp-anon", "handler-cpu=any"),
    ("mmap-wp-async", None),
])
def test_dirty_set_exact_under_concurrent_writers(wp_image, strategy, params, overlap):
    if params == "handler-cpu=other":
        skip_unless_two_cpus()
    row = run_strategy(wp_image, strategy, params=params, op="write", pattern="random", threads=4,
                       overlap=overlap)
    assert_ok(row)
    assert row["dirty"] == {"reported": row["pages"], "missing": 0, "extra": 0}


@pytest.mark.parametrize("op", ["read", "write"])
@pytest.mark.parametrize("strategy", WP_STRATEGIES)
def test_image_ending_inside_a_page(odd_image, strategy, op):
    row = run_strategy(odd_image, strategy, op=op, pattern="seq")
    assert_ok(row)
    assert row["tail_bytes"] > 0 and row["detached"]
    assert row["dirty"]["missing"] == 0 and row["dirty"]["extra"] == 0


def _mixed_run_and_dumps(image, strategy, directory, write_fraction, threads):
    """A mixed workload (reads, writes to a share of the pages), then a full and an
    incremental checkpoint of the fixed-up region: the dirty set as a checkpointer uses it."""
    with open_run(image, strategy, op="mixed", write_fraction=write_fraction,
                  threads=threads) as run:
        for phase in binding.PHASES:
            getattr(run, phase)()
        paths = [os.path.join(directory, name) for name in ("full.img", "incremental.img")]
        stats = [run.checkpoint(path, incremental) for incremental, path in enumerate(paths)]
        row = row_of(run)
        with open(paths[0], "rb") as full, open(paths[1], "rb") as incremental:
            same = full.read() == incremental.read()
        return {"dirty": row["dirty"], "touched": row["touched_pages"], "same": same,
                "dumped_pages": stats[1]["dirty_pages"]}


@pytest.mark.parametrize("threads", [1, 4])
@pytest.mark.parametrize("strategy", WP_STRATEGIES)
def test_incremental_checkpoint_from_the_dirty_set(wp_image, tmp_path, strategy, threads):
    r = in_child(_mixed_run_and_dumps, wp_image, strategy, str(tmp_path), 0.3, threads)
    written = round(0.3 * r["touched"])
    assert r["dirty"] == {"reported": written, "missing": 0, "extra": 0}
    assert r["dumped_pages"] == written
    assert r["same"], "the incremental dump differs from the full dump"


# ---- uffd-wp-anon ----

def test_wp_anon_one_fault_per_first_write(wp_image):
    row = run_strategy(wp_image, "uffd-wp-anon", op="write", pattern="random")
    assert_ok(row)
    c = row["counters"]
    assert c["wp_faults"] == row["touched_pages"] == row["pages"]
    assert c["repeat_faults"] == 0 and c["unexpected_msgs"] == 0
    assert row["histograms"]["handler"]["count"] == c["wp_faults"]
    assert 1 <= c["fault_reads"] <= c["wp_faults"]


def test_wp_anon_reads_do_not_fault(wp_image):
    row = run_strategy(wp_image, "uffd-wp-anon", op="read", pattern="seq")
    assert_ok(row)
    assert row["counters"]["wp_faults"] == 0
    assert row["histograms"]["handler"]["count"] == 0


def test_wp_anon_detached_from_restore(wp_image):
    row = run_strategy(wp_image, "uffd-wp-anon", op="write", pattern="seq")
    assert_ok(row)
    # Marked when the image was read in, before the registration and the touch.
    assert 0 < row["time_to_detached_ns"] <= row["phases"]["restore"]["ns"]


@pytest.mark.parametrize("placement", ["same", "other", "any"])
def test_wp_anon_handler_placement_recorded(wp_image, placement):
    if placement == "other":
        skip_unless_two_cpus()
    row = run_strategy(wp_image, "uffd-wp-anon", params=f"handler-cpu={placement}", op="write",
                       pattern="sparse:0.25")
    assert_ok(row)
    assert_handler_placed(row, placement)


def test_wp_anon_other_cpu_needs_two_cpus(wp_image):
    def go():
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
        return _phases_then_threads(wp_image, "uffd-wp-anon", ("restore",),
                                    params="handler-cpu=other")
    row = in_child(go)
    assert row["failed_phase"] == "restore"
    assert "handler-cpu=other needs a second CPU" in row["reason"]
    assert row["threads_after"] == 1


def test_wp_anon_chunk_trades_faults_for_extra_dirty_pages(wp_image):
    row = run_strategy(wp_image, "uffd-wp-anon", params="chunk=64K", op="write", pattern="stride:3")
    assert_ok(row)
    # Every 64 KiB chunk holds a written page, so every page is reported.
    assert row["dirty"]["missing"] == 0
    assert row["dirty"]["reported"] == row["pages"]
    assert row["dirty"]["extra"] == row["pages"] - row["touched_pages"]
    assert row["counters"]["wp_faults"] == row["pages"] // 16


def test_wp_anon_chunk_larger_than_the_region(odd_image):
    row = run_strategy(odd_image, "uffd-wp-anon", params="chunk=2M", op="write", pattern="sparse:0.25")
    assert_ok(row)
    # One fault unprotects the whole (clipped) region; every page is then reported.
    assert row["counters"]["wp_faults"] == 1
    assert row["dirty"] == {"reported": row["pages"], "missing": 0,
                            "extra": row["pages"] - row["touched_pages"]}


@pytest.mark.parametrize("phases", [("restore",), ("restore", "touch"), binding.PHASES])
def test_wp_anon_teardown_joins_the_handler(wp_image, phases):
    """Destroying a run, wherever it stopped, stops and joins the handler thread."""
    row = in_child(_phases_then_threads, wp_image, "uffd-wp-anon", phases)
    assert row["status"] == "ok", row["reason"]
    assert row["counters"]["protect_ns"] > 0
    assert row["threads_after"] == 1


# ---- mmap-wp-async ----

def test_wp_async_scan_and_rearm(wp_image):
    row = run_strategy(wp_image, "mmap-wp-async", op="write", pattern="sparse:0.25")
    assert_ok(row)
    c = row["counters"]
    assert c["written_pages"] == row["touched_pages"] == row["dirty"]["reported"]
    assert c["rearm_differ_pages"] == 0
    assert c["written_after_rearm"] == 0
    assert c["scan_ns"] > 0 and c["rearm_scan_ns"] > 0 and c["clean_scan_ns"] > 0


def test_wp_async_scan_resumes_when_the_vector_fills(wp_image):
    # stride:3 writes 342 separate pages: more regions than one PAGEMAP_SCAN call returns.
    row = run_strategy(wp_image, "mmap-wp-async", op="write", pattern="stride:3")
    assert_ok(row)
    assert row["counters"]["scan_regions"] == row["touched_pages"]
    assert row["counters"]["scan_calls"] > 1
    assert row["dirty"]["missing"] == 0 and row["dirty"]["extra"] == 0
    row = run_strategy(wp_image, "mmap-wp-async", op="write", pattern="seq")
    assert_ok(row)
    assert (row["counters"]["scan_regions"], row["counters"]["scan_calls"]) == (1, 1)


def test_wp_async_rearm_can_be_skipped(wp_image):
    row = run_strategy(wp_image, "mmap-wp-async", params="rearm=no", op="write", pattern="seq")
    assert_ok(row)
    assert "rearm_scan_ns" not in row["counters"] and "scan_ns" in row["counters"]
    assert row["dirty"]["missing"] == 0 and row["dirty"]["extra"] == 0


def test_wp_async_dirty_set_without_fixup(wp_image):
    """Before fixup the region is still tracked: the set comes from a live scan."""
    row = in_child(_phases_then_threads, wp_image, "mmap-wp-async", ("restore", "touch", "verify"),
                   pattern="sparse:0.25")
    assert row["status"] == "ok", row["reason"]
    assert row["verified"] and not row["detached"] and row["image_mapped"]
    assert row["dirty"] == {"reported": row["touched_pages"], "missing": 0, "extra": 0}


# ---- the kernel tracking itself (test-only tracker) ----

TRACKED_MEMORY = ["file", "anon", "anon-populated"]
TRACKED_PAGES = 256


def _open_tracker(memory, image):
    """A tracker over 1 MiB of the image's mapping or of anonymous memory, and its fd."""
    fd = os.open(image.path, os.O_RDONLY) if memory == "file" else -1
    out = ffi.new("struct wpc_wp_tracker **")
    why = reason_buffer()
    rc = lib.wpc_wp_tracker_open(fd, TRACKED_PAGES * PAGE, memory == "anon-populated", out,
                                 why, len(why))
    assert rc == 0, text(why)
    return out[0], fd


def _close_tracker(tracker, fd):
    lib.wpc_wp_tracker_close(tracker)
    if fd >= 0:
        os.close(fd)


def _tracker_steps(memory, image, steps):
    """Apply steps: ("write", pages), ("read", pages), or ("scan", rearm) which records
    the pages a scan reports. The list of those records."""
    tracker, fd = _open_tracker(memory, image)
    words = ffi.cast("uint64_t *", lib.wpc_wp_tracker_addr(tracker))
    scans = []
    try:
        for action, arg in steps:
            if action == "write":
                for page in arg:
                    words[page * (PAGE // 8) + 7] = page + 1
            elif action == "read":
                for page in arg:
                    words[page * (PAGE // 8)]
            else:
                bitmap = ffi.new("uint8_t[]", TRACKED_PAGES // 8)
                count = lib.wpc_wp_tracker_scan(tracker, int(arg), bitmap)
                assert count >= 0, os.strerror(-count)
                pages = [p for p in range(TRACKED_PAGES) if bitmap[p // 8] >> (p % 8) & 1]
                assert count == len(pages)
                scans.append(pages)
        return scans
    finally:
        _close_tracker(tracker, fd)


@pytest.mark.parametrize("memory", TRACKED_MEMORY)
def test_wp_async_reports_exactly_the_written_pages(wp_image, memory):
    written = [0, 1, 2, 17, 100, 255]
    scans = in_child(_tracker_steps, memory, wp_image, [
        ("scan", False),
        ("read", list(range(0, TRACKED_PAGES, 3))),  # reads, of unpopulated pages too, are not writes
        ("scan", False),
        ("write", written),
        ("scan", False),
        ("scan", False),                             # a plain scan changes nothing
    ])
    assert scans == [[], [], written, written]


@pytest.mark.parametrize("memory", TRACKED_MEMORY)
def test_wp_async_rearm_reports_only_later_writes(wp_image, memory):
    scans = in_child(_tracker_steps, memory, wp_image, [
        ("write", [3, 4, 5, 90]),
        ("scan", True),                # reports them and protects them again
        ("scan", False),
        ("write", [4, 200]),           # one page written again, one new
        ("scan", True),
        ("scan", False),
    ])
    assert scans == [[3, 4, 5, 90], [], [4, 200], []]


def _stress(memory, image, threads, rounds):
    tracker, fd = _open_tracker(memory, image)
    writes, lost = ffi.new("uint64_t *"), ffi.new("uint64_t *")
    try:
        rc = lib.wpc_wp_tracker_stress(tracker, threads, rounds, 5, writes, lost)
        assert rc == 0, os.strerror(-rc)
        return writes[0], lost[0]
    finally:
        _close_tracker(tracker, fd)


@pytest.mark.parametrize("memory", TRACKED_MEMORY)
def test_wp_async_rearm_loses_no_write_under_concurrent_writers(wp_image, memory):
    """1000 checkpoint rounds (scan with re-arm, copy what it reports) while 4 writers
    write the same 256 pages over and over; the copies must end equal to memory."""
    writes, lost = in_child(_stress, memory, wp_image, 4, 1000)
    assert lost == 0
    assert writes > TRACKED_PAGES


# ---- skip paths ----

@pytest.mark.parametrize("strategy,mask,named", [
    ("uffd-wp-anon", FEATURE_PAGEFAULT_FLAG_WP, "UFFD_FEATURE_PAGEFAULT_FLAG_WP"),
    ("mmap-wp-async", FEATURE_WP_ASYNC, "UFFD_FEATURE_WP_ASYNC"),
    ("mmap-wp-async", FEATURE_WP_UNPOPULATED, "UFFD_FEATURE_WP_UNPOPULATED"),
])
def test_masked_feature_is_a_skipped_row_with_reason(wp_image, monkeypatch, strategy, mask, named):
    monkeypatch.setenv(MASK_VARIABLE, hex(mask))
    rc, why = probe(strategy)
    assert rc == -errno.EOPNOTSUPP
    assert named in why and "needs Linux" in why
    row = run_strategy(wp_image, strategy)
    assert row["status"] == "skipped" and row["reason"] == why


def test_mask_only_hides_what_it_names(monkeypatch):
    monkeypatch.setenv(MASK_VARIABLE, hex(FEATURE_WP_ASYNC))
    assert probe("uffd-wp-anon") == (0, "")


def test_mask_shows_in_the_system_probe(monkeypatch):
    def features():
        out = ffi.new("struct wpc_uffd_probe *")
        assert lib.wpc_uffd_probe(out) == 0
        return out.features
    unmasked = features()
    monkeypatch.setenv(MASK_VARIABLE, hex(FEATURE_WP_ASYNC))
    masked = features()
    assert unmasked & FEATURE_WP_ASYNC
    assert masked == unmasked & ~FEATURE_WP_ASYNC


def test_masked_feature_fails_restore_with_reason(wp_image, monkeypatch):
    """A run started despite the probe fails cleanly: no hang, no crash, no thread left."""
    monkeypatch.setenv(MASK_VARIABLE, hex(FEATURE_PAGEFAULT_FLAG_WP))
    row = in_child(_phases_then_threads, wp_image, "uffd-wp-anon", binding.PHASES)
    assert row["failed_phase"] == "restore"
    assert "userfaultfd" in row["reason"]
    assert row["threads_after"] == 1


def test_missing_pagemap_scan_skips_with_reason(monkeypatch):
    monkeypatch.setenv("WPCOMPARE_HIDE_PAGEMAP_SCAN", "1")
    rc, why = probe("mmap-wp-async")
    assert rc == -errno.EOPNOTSUPP
    assert "PAGEMAP_SCAN" in why and "Linux 6.7" in why
    assert probe("uffd-wp-anon") == (0, "")


def test_masked_tracker_refuses_to_open(monkeypatch):
    def open_masked():
        out = ffi.new("struct wpc_wp_tracker **")
        why = reason_buffer()
        rc = lib.wpc_wp_tracker_open(-1, 1 << 20, 0, out, why, len(why))
        return rc, text(why)
    monkeypatch.setenv(MASK_VARIABLE, hex(FEATURE_WP_ASYNC))
    rc, why = in_child(open_masked)
    assert rc == -errno.EOPNOTSUPP and "UFFD_FEATURE_WP_ASYNC" in why


# ---- parameters ----

@pytest.mark.parametrize("strategy,params,named", [
    ("uffd-wp-anon", "handler-cpu=elsewhere", "same|other|any"),
    ("uffd-wp-anon", "chunk=8K", "4K|16K|64K|256K|2M"),
    ("mmap-wp-async", "rearm=maybe", "yes|no"),
    ("mmap-wp-async", "chunk=4K", "valid parameters: rearm"),
])
def test_invalid_params_name_the_valid_ones(strategy, params, named):
    why = reason_buffer()
    rc = lib.wpc_params_validate(strategy.encode(), params.encode(), why, len(why))
    assert rc == -errno.EINVAL and named in text(why)
