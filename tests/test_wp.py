"""Write-protect strategies: uffd-wp-anon (sync WP faults) and mmap-wp-async
(WP_ASYNC + PAGEMAP_SCAN), their dirty sets, the kernel tracking they rely
on (through the test-only wpc_wp_tracker_* entry points), and their skip
paths with features masked (WPCOMPARE_UFFD_FEATURE_MASK,
WPCOMPARE_HIDE_PAGEMAP_SCAN: test-only knobs read by the C probes).

Every run happens in a forked child, as the runner isolates runs: signal
state, VMAs and userfaultfd registrations must not leak between tests, and a
hang (a writer blocked on a handler that is gone) becomes a failure with a
timeout instead of a stuck suite.
"""
import errno
import json
import os
import select
import signal

import pytest

from wpcompare._core import ffi, lib

PAGE = lib.WPC_IMAGE_PAGE
IMAGE_SEED = 1234
RUN_TIMEOUT_S = 60
WP_STRATEGIES = ("uffd-wp-anon", "mmap-wp-async")

FEATURE_PAGEFAULT_FLAG_WP = 1 << 0
FEATURE_WP_UNPOPULATED = 1 << 13
FEATURE_WP_ASYNC = 1 << 15

PATTERNS = {  # name: (enum, fraction, stride)
    "seq": (lib.WPC_PATTERN_SEQ, 0.0, 0),
    "random": (lib.WPC_PATTERN_RANDOM, 0.0, 0),
    "sparse:0.25": (lib.WPC_PATTERN_SPARSE, 0.25, 0),
    "stride:3": (lib.WPC_PATTERN_STRIDE, 0.0, 3),
}


def _text(value):
    return ffi.string(value).decode("utf-8", "replace")


def _why():
    return ffi.new("char[]", lib.WPC_REASON_LEN)


# ---- running C in a forked child ----

def in_child(function, *args, env=None, timeout=RUN_TIMEOUT_S):
    """Run function(*args) in a forked child and return its JSON-able result.

    env: variables set in the child before anything runs (the C probes read
    them with getenv). A child that does not answer within timeout is killed
    and the test fails: that is how a hang shows.
    """
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        status = 0
        try:
            os.close(read_end)
            for key, value in (env or {}).items():
                os.environ[key] = value
            payload = {"ok": function(*args)}
        except BaseException as error:  # the parent reports it
            payload = {"error": f"{type(error).__name__}: {error}"}
            status = 1
        with os.fdopen(write_end, "w") as out:
            json.dump(payload, out)
        os._exit(status)
    os.close(write_end)
    chunks = []
    with os.fdopen(read_end) as stream:
        while True:
            ready, _, _ = select.select([stream], [], [], timeout)
            if not ready:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                pytest.fail(f"child running {function.__name__}{args} hung for {timeout}s")
            chunk = stream.read()
            if not chunk:
                break
            chunks.append(chunk)
    _, status = os.waitpid(pid, 0)
    text = "".join(chunks)
    if not text:
        pytest.fail(f"child running {function.__name__}{args} died (wait status {status:#x})")
    payload = json.loads(text)
    if "error" in payload:
        pytest.fail(f"child running {function.__name__}{args}: {payload['error']}")
    return payload["ok"]


def _hist(hist):
    return {"count": hist.count,
            "p50": lib.wpc_hist_quantile(hist, 0.5) if hist.count else None}


def run_strategy(image, strategy, params=None, op="write", pattern="random", threads=1,
                 overlap=0, phases=("restore", "touch", "fixup", "verify")):
    """One run through the C core (in the calling process); a dict of its result."""
    kind, fraction, stride = PATTERNS[pattern]
    keep = [ffi.new("char[]", image.encode()), ffi.new("char[]", strategy.encode()),
            ffi.new("char[]", params.encode()) if params else ffi.NULL]
    cfg = ffi.new("struct wpc_config *")
    cfg.image_path, cfg.strategy, cfg.params = keep
    cfg.image_seed = IMAGE_SEED
    cfg.image_kind = lib.WPC_IMAGE_MIXED
    w = cfg.workload
    w.op = lib.WPC_OP_WRITE if op == "write" else lib.WPC_OP_READ
    w.pattern, w.fraction, w.stride = kind, fraction, stride
    w.seed, w.threads, w.overlap, w.pin_threads = 99, threads, overlap, 1
    out = ffi.new("struct wpc_run **")
    why = _why()
    rc = lib.wpc_run_create(cfg, out, why, len(why))
    assert rc == 0, _text(why)
    run = out[0]
    res = lib.wpc_run_result(run)
    failed = None
    try:
        for phase in phases:
            rc = getattr(lib, f"wpc_run_{phase}")(run)
            if rc:
                failed = {"phase": phase, "errno": -rc, "reason": _text(res.reason)}
                break
        scalar = ("verified", "mismatched_pages", "detached", "image_mapped", "foreign_vmas",
                  "dirty_known", "dirty_reported", "dirty_missing", "dirty_extra",
                  "touched_pages", "pages", "handler_cpu", "app_cpu", "time_to_detached_ns")
        result = {name: getattr(res, name) for name in scalar}
        result["failed"] = failed
        result["phase_ns"] = [res.phase[i].ns for i in range(lib.WPC_PHASE_COUNT)]
        result["counters"] = {_text(res.counters[i].name): res.counters[i].value
                              for i in range(res.ncounters)}
        result["touch"] = _hist(ffi.addressof(res, "touch"))
        result["handler"] = _hist(ffi.addressof(res, "handler"))
        return result
    finally:
        lib.wpc_run_destroy(run)


def run(image, strategy, env=None, **kwargs):
    return in_child(lambda: run_strategy(image, strategy, **kwargs), env=env)


def probe(strategy, params=None, env=None):
    def go():
        why = _why()
        rc = lib.wpc_strategy_probe(strategy.encode(),
                                    params.encode() if params else ffi.NULL, why, len(why))
        return rc, _text(why)
    return in_child(go, env=env)


def expect_ok(result):
    assert result["failed"] is None, result["failed"]
    return result


def written_pages(npages, pattern):
    kind, fraction, stride = PATTERNS[pattern]
    if kind == lib.WPC_PATTERN_SPARSE:
        return max(1, int(npages * fraction + 0.5))
    if kind == lib.WPC_PATTERN_STRIDE:
        return (npages + stride - 1) // stride
    return npages


# ---- fixtures ----

def _generate(path, size):
    why = _why()
    rc = lib.wpc_image_generate(str(path).encode(), size, IMAGE_SEED, lib.WPC_IMAGE_MIXED,
                                why, len(why))
    assert rc == 0, _text(why)
    return str(path)


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    """4 MiB: 1024 pages."""
    return _generate(tmp_path_factory.mktemp("wp") / "image-4M", 4 << 20)


@pytest.fixture(scope="module")
def odd_image(tmp_path_factory):
    """Ends inside its last page: the region must read zeros past the end."""
    return _generate(tmp_path_factory.mktemp("wp") / "image-odd", (1 << 20) + 1000)


@pytest.fixture(scope="module", autouse=True)
def wp_supported():
    for strategy in WP_STRATEGIES:
        rc, why = probe(strategy)
        if rc:
            pytest.skip(f"{strategy} cannot run here: {why}")


# ---- bytes and dirty sets ----

@pytest.mark.parametrize("threads", [1, 4])
@pytest.mark.parametrize("pattern", list(PATTERNS))
@pytest.mark.parametrize("op", ["read", "write"])
@pytest.mark.parametrize("strategy", WP_STRATEGIES)
def test_bytes_and_dirty_set(image, strategy, op, pattern, threads):
    r = expect_ok(run(image, strategy, op=op, pattern=pattern, threads=threads))
    assert r["verified"] == 1 and r["mismatched_pages"] == 0
    assert r["detached"] == 1 and r["image_mapped"] == 0 and r["foreign_vmas"] == 0
    assert r["touched_pages"] == written_pages(r["pages"], pattern)
    assert r["dirty_known"] == 1
    assert r["dirty_missing"] == 0 and r["dirty_extra"] == 0
    expected = written_pages(r["pages"], pattern) if op == "write" else 0
    assert r["dirty_reported"] == expected


@pytest.mark.parametrize("overlap", [0, 1])
@pytest.mark.parametrize("strategy,params", [
    ("uffd-wp-anon", "handler-cpu=same"),
    ("uffd-wp-anon", "handler-cpu=other"),
    ("uffd-wp-anon", "handler-cpu=any"),
    ("mmap-wp-async", None),
])
def test_dirty_set_exact_under_concurrent_writers(image, strategy, params, overlap):
    if params == "handler-cpu=other" and len(os.sched_getaffinity(0)) < 2:
        pytest.skip("handler-cpu=other needs 2 CPUs")
    r = expect_ok(run(image, strategy, params=params, op="write", pattern="random",
                      threads=4, overlap=overlap))
    assert r["verified"] == 1
    assert (r["dirty_missing"], r["dirty_extra"]) == (0, 0)
    assert r["dirty_reported"] == r["pages"]


@pytest.mark.parametrize("strategy", WP_STRATEGIES)
def test_image_ending_inside_a_page(odd_image, strategy):
    for op in ("read", "write"):
        r = expect_ok(run(odd_image, strategy, op=op, pattern="seq"))
        assert r["verified"] == 1 and r["detached"] == 1
        assert r["dirty_missing"] == 0 and r["dirty_extra"] == 0


# ---- uffd-wp-anon ----

def test_wp_anon_one_fault_per_first_write(image):
    r = expect_ok(run(image, "uffd-wp-anon", op="write", pattern="random"))
    c = r["counters"]
    assert c["wp_faults"] == r["touched_pages"] == r["pages"]
    assert c["repeat_faults"] == 0 and c["unexpected_msgs"] == 0
    assert r["handler"]["count"] == c["wp_faults"]
    assert 1 <= c["msg_reads"] <= c["wp_faults"]


def test_wp_anon_reads_do_not_fault(image):
    r = expect_ok(run(image, "uffd-wp-anon", op="read", pattern="seq"))
    assert r["counters"]["wp_faults"] == 0 and r["handler"]["count"] == 0


def test_wp_anon_detached_from_restore(image):
    r = expect_ok(run(image, "uffd-wp-anon", op="write", pattern="seq"))
    # Marked when the image was read in, before the registration and the touch.
    assert 0 < r["time_to_detached_ns"] <= r["phase_ns"][lib.WPC_PHASE_RESTORE]


@pytest.mark.parametrize("placement", ["same", "other", "any"])
def test_wp_anon_handler_placement_recorded(image, placement):
    if placement == "other" and len(os.sched_getaffinity(0)) < 2:
        pytest.skip("handler-cpu=other needs 2 CPUs")
    r = expect_ok(run(image, "uffd-wp-anon", params=f"handler-cpu={placement}",
                      pattern="sparse:0.25"))
    if placement == "same":
        assert r["handler_cpu"] == r["app_cpu"] >= 0
    elif placement == "other":
        assert r["handler_cpu"] >= 0 and r["handler_cpu"] != r["app_cpu"]
    else:
        assert r["handler_cpu"] == -1


def test_wp_anon_chunk_trades_faults_for_extra_dirty_pages(image):
    r = expect_ok(run(image, "uffd-wp-anon", params="chunk=64K", op="write",
                      pattern="stride:3"))
    assert r["verified"] == 1
    assert r["dirty_missing"] == 0
    # Every 64 KiB chunk holds a written page, so all of it is reported.
    assert r["dirty_reported"] == r["pages"]
    assert r["dirty_extra"] == r["pages"] - r["touched_pages"]
    assert r["counters"]["wp_faults"] == r["pages"] // 16


@pytest.mark.parametrize("phases", [("restore",), ("restore", "touch"),
                                    ("restore", "touch", "fixup", "verify")])
def test_wp_anon_teardown_joins_the_handler(image, phases):
    """Destroying a run, wherever it stopped, stops and joins the handler thread."""
    def go():
        result = run_strategy(image, "uffd-wp-anon", phases=phases)
        result["threads_after"] = len(os.listdir("/proc/self/task"))
        return result
    r = expect_ok(in_child(go))
    assert r["counters"]["protect_ns"] > 0
    assert r["threads_after"] == 1


def test_wp_anon_other_cpu_needs_two_cpus(image):
    def go():
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
        return run_strategy(image, "uffd-wp-anon", params="handler-cpu=other")
    r = in_child(go)
    assert r["failed"]["phase"] == "restore"
    assert "needs 2 usable CPUs" in r["failed"]["reason"]


# ---- mmap-wp-async ----

def test_wp_async_scan_and_rearm(image):
    r = expect_ok(run(image, "mmap-wp-async", op="write", pattern="sparse:0.25"))
    c = r["counters"]
    assert c["written_pages"] == r["touched_pages"] == r["dirty_reported"]
    assert c["rearm_differ_pages"] == 0
    assert c["written_after_rearm"] == 0
    assert c["scan_ns"] > 0 and c["rearm_scan_ns"] > 0 and c["clean_scan_ns"] > 0


def test_wp_async_scan_resumes_when_the_vector_fills(image):
    # stride:3 writes 342 separate pages: more regions than one PAGEMAP_SCAN call returns.
    r = expect_ok(run(image, "mmap-wp-async", op="write", pattern="stride:3"))
    assert r["counters"]["scan_regions"] == r["touched_pages"]
    assert r["counters"]["scan_calls"] > 1
    assert r["dirty_missing"] == 0 and r["dirty_extra"] == 0
    r = expect_ok(run(image, "mmap-wp-async", op="write", pattern="seq"))
    assert (r["counters"]["scan_regions"], r["counters"]["scan_calls"]) == (1, 1)


def test_wp_async_rearm_can_be_skipped(image):
    r = expect_ok(run(image, "mmap-wp-async", params="rearm=no", op="write", pattern="seq"))
    assert "rearm_scan_ns" not in r["counters"] and "scan_ns" in r["counters"]
    assert r["dirty_missing"] == 0 and r["dirty_extra"] == 0


def test_wp_async_dirty_set_without_fixup(image):
    """Before fixup the region is still tracked: the set comes from a live scan."""
    r = expect_ok(run(image, "mmap-wp-async", op="write", pattern="sparse:0.25",
                      phases=("restore", "touch", "verify")))
    assert r["verified"] == 1 and r["detached"] == 0 and r["image_mapped"] == 1
    assert r["dirty_reported"] == r["touched_pages"] and r["dirty_extra"] == 0


# ---- the kernel tracking itself (test-only tracker) ----

def _tracker_case(fd_path, populate, steps):
    """Open a tracker over 1 MiB, then apply steps: ("write", pages) or ("read", pages)
    or ("scan", rearm) recording the pages a scan reports."""
    fd = os.open(fd_path, os.O_RDONLY) if fd_path else -1
    out = ffi.new("struct wpc_wp_tracker **")
    why = _why()
    rc = lib.wpc_wp_tracker_open(fd, 1 << 20, populate, out, why, len(why))
    assert rc == 0, _text(why)
    tracker = out[0]
    npages = (1 << 20) // PAGE
    words = ffi.cast("uint64_t *", lib.wpc_wp_tracker_addr(tracker))
    scans = []
    try:
        for action, arg in steps:
            if action == "write":
                for page in arg:
                    words[page * (PAGE // 8) + 7] = page + 1
            elif action == "read":
                for page in arg:
                    _ = words[page * (PAGE // 8)]
            else:
                bitmap = ffi.new("uint8_t[]", npages // 8)
                count = lib.wpc_wp_tracker_scan(tracker, int(arg), bitmap)
                assert count >= 0, os.strerror(-count)
                pages = [p for p in range(npages) if bitmap[p // 8] >> (p % 8) & 1]
                assert count == len(pages)
                scans.append(pages)
        return scans
    finally:
        lib.wpc_wp_tracker_close(tracker)
        if fd >= 0:
            os.close(fd)


TRACKED_MEMORY = ["file", "anon", "anon-populated"]


def _memory(kind, image):
    return (image if kind == "file" else None), kind == "anon-populated"


@pytest.mark.parametrize("memory", TRACKED_MEMORY)
def test_wp_async_reports_exactly_the_written_pages(image, memory):
    path, populate = _memory(memory, image)
    written = [0, 1, 2, 17, 100, 255]
    scans = in_child(_tracker_case, path, populate, [
        ("scan", False),
        ("read", range(0, 256, 3)),   # reads, also of never-populated pages, are not writes
        ("scan", False),
        ("write", written),
        ("scan", False),
        ("scan", False),               # a plain scan changes nothing
    ])
    assert scans == [[], [], written, written]


@pytest.mark.parametrize("memory", TRACKED_MEMORY)
def test_wp_async_rearm_reports_only_later_writes(image, memory):
    path, populate = _memory(memory, image)
    scans = in_child(_tracker_case, path, populate, [
        ("write", [3, 4, 5, 90]),
        ("scan", True),                # reports them and protects them again
        ("scan", False),
        ("write", [4, 200]),           # one re-written page, one new
        ("scan", True),
        ("scan", False),
    ])
    assert scans == [[3, 4, 5, 90], [], [4, 200], []]


def _stress(path, populate, threads, writes):
    fd = os.open(path, os.O_RDONLY) if path else -1
    out = ffi.new("struct wpc_wp_tracker **")
    why = _why()
    rc = lib.wpc_wp_tracker_open(fd, 1 << 20, populate, out, why, len(why))
    assert rc == 0, _text(why)
    scans, lost = ffi.new("uint64_t *"), ffi.new("uint64_t *")
    try:
        rc = lib.wpc_wp_tracker_stress(out[0], threads, writes, 5, scans, lost)
        assert rc == 0, os.strerror(-rc)
        return scans[0], lost[0]
    finally:
        lib.wpc_wp_tracker_close(out[0])
        if fd >= 0:
            os.close(fd)


@pytest.mark.parametrize("memory", TRACKED_MEMORY)
def test_wp_async_rearm_loses_no_write_under_concurrent_writers(image, memory):
    """Checkpoint rounds (scan with re-arm, copy reported pages) race 4 writers that
    re-write the same 256 pages over and over; the copies must end equal to memory."""
    path, populate = _memory(memory, image)
    scans, lost = in_child(_stress, path, populate, 4, 100000)
    assert lost == 0
    assert scans >= 2


# ---- skip paths ----

@pytest.mark.parametrize("strategy,mask,named", [
    ("uffd-wp-anon", FEATURE_PAGEFAULT_FLAG_WP, "UFFD_FEATURE_PAGEFAULT_FLAG_WP"),
    ("mmap-wp-async", FEATURE_WP_ASYNC, "UFFD_FEATURE_WP_ASYNC"),
    ("mmap-wp-async", FEATURE_WP_UNPOPULATED, "UFFD_FEATURE_WP_UNPOPULATED"),
])
def test_masked_feature_skips_with_reason(strategy, mask, named):
    rc, why = probe(strategy, env={"WPCOMPARE_UFFD_FEATURE_MASK": hex(mask)})
    assert rc == -errno.EOPNOTSUPP
    assert named in why and "needs Linux" in why


def test_mask_only_hides_what_it_names():
    rc, why = probe("uffd-wp-anon", env={"WPCOMPARE_UFFD_FEATURE_MASK": hex(FEATURE_WP_ASYNC)})
    assert (rc, why) == (0, "")


def test_mask_shows_in_the_system_probe():
    def features():
        out = ffi.new("struct wpc_uffd_probe *")
        assert lib.wpc_uffd_probe(out) == 0
        return out.features
    unmasked = in_child(features)
    masked = in_child(features, env={"WPCOMPARE_UFFD_FEATURE_MASK": hex(FEATURE_WP_ASYNC)})
    assert unmasked & FEATURE_WP_ASYNC
    assert masked == unmasked & ~FEATURE_WP_ASYNC


def test_masked_feature_fails_restore_with_reason(image):
    """A run started despite the probe fails cleanly rather than hanging or crashing."""
    r = run(image, "uffd-wp-anon", env={"WPCOMPARE_UFFD_FEATURE_MASK": "1"})
    assert r["failed"]["phase"] == "restore"
    assert "userfaultfd" in r["failed"]["reason"]


def test_missing_pagemap_scan_skips_with_reason():
    rc, why = probe("mmap-wp-async", env={"WPCOMPARE_HIDE_PAGEMAP_SCAN": "1"})
    assert rc == -errno.EOPNOTSUPP
    assert "PAGEMAP_SCAN" in why and "Linux 6.7" in why
    rc, _ = probe("uffd-wp-anon", env={"WPCOMPARE_HIDE_PAGEMAP_SCAN": "1"})
    assert rc == 0


def test_masked_tracker_refuses_to_open(image):
    def open_masked():
        out = ffi.new("struct wpc_wp_tracker **")
        why = _why()
        rc = lib.wpc_wp_tracker_open(-1, 1 << 20, 0, out, why, len(why))
        return rc, _text(why)
    rc, why = in_child(open_masked, env={"WPCOMPARE_UFFD_FEATURE_MASK": hex(FEATURE_WP_ASYNC)})
    assert rc == -errno.EOPNOTSUPP and "UFFD_FEATURE_WP_ASYNC" in why


# ---- parameters ----

@pytest.mark.parametrize("strategy,params,named", [
    ("uffd-wp-anon", "handler-cpu=elsewhere", "same|other|any"),
    ("uffd-wp-anon", "chunk=8K", "4K|16K|64K|256K|2M"),
    ("mmap-wp-async", "rearm=maybe", "yes|no"),
    ("mmap-wp-async", "chunk=4K", "valid parameters: rearm"),
])
def test_invalid_params_name_the_valid_ones(strategy, params, named):
    why = _why()
    rc = lib.wpc_params_validate(strategy.encode(), params.encode(), why, len(why))
    assert rc == -errno.EINVAL and named in _text(why)
