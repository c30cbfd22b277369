"""The userfaultfd strategies that load pages on demand: MISSING faults (uffd, uffd-huge,
uffd-move, and uffd-hybrid with its loader threads), MINOR faults (uffd-minor) and
UFFD_FEATURE_SIGBUS (uffd-sigbus): the table, the bytes, fault serving and its races, the
hybrid's loaders and recorded order, huge pages, and teardown with faults in flight.
Running unprivileged (UFFD_USER_MODE_ONLY, kernel-faults) is in test_unprivileged.py.

Every run happens in a forked child (harness.run_strategy, harness.in_child): a strategy
installs signal handlers and threads, and a crash or a hang must fail one test, not take
pytest down.
"""
import ctypes
import errno
import os
import threading
import time

import pytest

from harness import (HOLD_VARIABLE, HUGE, PAGE, assert_handler_placed, assert_ok, free_huge_pages, generate_image,
                     hold_expired, hold_release, hold_wait, in_child, open_run, probe,
                     reason_buffer, row_of, run_phases, run_strategy, skip_unless_available,
                     skip_unless_two_cpus, text, touched_pages, try_phase)
from wpcompare._core import ffi, lib

UFFD = ("uffd", "uffd-huge", "uffd-sigbus", "uffd-hybrid", "uffd-move", "uffd-minor")
PATTERNS = ("seq", "random", "sparse:0.1", "stride:7")
IMAGE_SEED = 11
# Two MiB and a ragged tail: the last page is part image, part zeros.
IMAGE_SIZE = (2 << 20) + 1000


# ---- helpers ----

def _all_phases(image, strategy, params=None, **workload):
    """Every phase, without the probe a run starts with: the row, as far as it got."""
    with open_run(image, strategy, params, op="read", **workload) as run:
        return run_phases(run)


def placed_pages(row):
    c = row["counters"]
    return c["handler_pages"] + c["loader_pages"] + c["fixup_pages"]


def mapped_pages(strategy, row, params=None):
    """4 KiB pages the strategy's region mapping holds: units of 4 KiB or 2 MiB."""
    huge = strategy == "uffd-huge" or (params and "page=2M" in params)
    unit = HUGE if huge else PAGE
    return -(-row["region_bytes"] // unit) * unit // PAGE


def assert_restored(row, strategy, params=None):
    assert_ok(row)
    assert row["detached"] and not row["image_mapped"], "fixup must leave the image unmapped"
    assert 0 < row["time_to_detached_ns"]
    # Every page was placed exactly once, by a fault, a loader or the fixup.
    assert placed_pages(row) == mapped_pages(strategy, row, params), row["counters"]


# Random images: no page is all zero, so a page never copied into zeroed
# anonymous memory cannot verify by chance.
@pytest.fixture(scope="module")
def image(tmp_path_factory):
    return generate_image(tmp_path_factory.mktemp("uffd") / "image", IMAGE_SIZE, IMAGE_SEED,
                          "random")


@pytest.fixture(scope="module")
def big_image(tmp_path_factory):
    """Big enough that a loader is still at work while the workload faults."""
    return generate_image(tmp_path_factory.mktemp("uffd-big") / "image", 16 << 20, IMAGE_SEED,
                          "random")


# ---- the strategy table ----

def test_rows_and_parameters_are_in_the_table():
    info = ffi.new("struct wpc_strategy_info *")
    param = ffi.new("struct wpc_param_info *")
    names = {}
    for i in range(lib.wpc_strategy_count()):
        assert lib.wpc_strategy_get(i, info) == 0
        params = {}
        for j in range(info.nparams):
            assert lib.wpc_strategy_param(i, j, param) == 0
            params[text(param.name)] = text(param.choices) if param.choices != ffi.NULL else None
        names[text(info.name)] = params
    for name in UFFD:
        assert name in names
    assert names["uffd"]["handler-cpu"] == "same|other|any"
    assert names["uffd"]["kernel-faults"] == "auto|yes|no"
    assert "4K" in names["uffd"]["chunk"] and "2M" in names["uffd"]["chunk"]
    assert names["uffd-hybrid"]["order"] == "sequential|recorded"
    assert {"loader-threads", "path", "page"} <= set(names["uffd-hybrid"])


@pytest.mark.parametrize("params,fragment", [
    ("chunk=3K", "chunk=3K is not valid"),
    ("chunk=4M", "chunk=4M is not valid"),
    ("handler-cpu=near", "use one of same|other|any"),
    ("loader-threads=9", "loader-threads=9"),
])
def test_bad_parameters_are_named(params, fragment):
    strategy = "uffd-hybrid"
    why = reason_buffer()
    assert lib.wpc_params_validate(strategy.encode(), params.encode(), why, len(why)) == -errno.EINVAL
    assert fragment in text(why)


def test_recorded_order_needs_a_path():
    rc, why = probe("uffd-hybrid", "order=recorded")
    assert rc == -errno.EINVAL and "path=FILE" in why


MASK_VARIABLE = "WPCOMPARE_UFFD_FEATURE_MASK"   # test-only: features the kernel pretends to lack


@pytest.mark.parametrize("strategy,params,bit,named", [
    ("uffd-move", None, 16, "kernel lacks UFFD_FEATURE_MOVE (needs Linux 6.8)"),
    ("uffd-minor", None, 10, "kernel lacks UFFD_FEATURE_MINOR_SHMEM (needs Linux 5.14)"),
    ("uffd-sigbus", None, 7, "kernel lacks UFFD_FEATURE_SIGBUS (needs Linux 4.14)"),
    ("uffd-huge", None, 4, "kernel lacks UFFD_FEATURE_MISSING_HUGETLBFS (needs Linux 4.11)"),
    ("uffd-hybrid", "page=2M", 4, "UFFD_FEATURE_MISSING_HUGETLBFS"),
])
def test_missing_kernel_feature_is_a_skip_naming_it(image, monkeypatch, strategy, params, bit,
                                                    named):
    monkeypatch.setenv(MASK_VARIABLE, hex(1 << bit))
    rc, why = probe(strategy, params)
    assert rc == -errno.EOPNOTSUPP and named in why
    # Run anyway (no probe): restore refuses cleanly, nothing crashes or hangs.
    row = in_child(_all_phases, image, strategy, params)
    assert row["failed_phase"] == "restore" and "lacks" in row["reason"], row["reason"]
    if strategy in ("uffd-move", "uffd-minor", "uffd-sigbus"):
        assert named.split()[2] in row["reason"]


def test_masking_an_unused_feature_changes_nothing(image, monkeypatch):
    monkeypatch.setenv(MASK_VARIABLE, hex(1 << 16))
    assert probe("uffd")[0] == 0
    assert_restored(run_strategy(image, "uffd", pattern="sparse:0.1"), "uffd")


# ---- bytes, for every strategy, pattern and thread count ----

@pytest.mark.parametrize("strategy", UFFD)
@pytest.mark.parametrize("pattern", PATTERNS)
@pytest.mark.parametrize("threads", (1, 4))
@pytest.mark.parametrize("op", ("read", "write"))
def test_strategy_restores_the_right_bytes(image, strategy, pattern, threads, op):
    skip_unless_available(strategy, image=image)
    row = run_strategy(image, strategy, op=op, pattern=pattern, threads=threads)
    assert_restored(row, strategy)
    pages = -(-IMAGE_SIZE // PAGE)
    assert row["touched_pages"] == touched_pages(pages, pattern)
    c = row["counters"]
    if strategy != "uffd-hybrid":   # the hybrid's loaders may win every race
        assert c["faults"] > 0
    if strategy != "uffd-sigbus":
        assert c["fault_reads"] <= c["faults"]
    # One service time per fault, from the handler thread or the SIGBUS handler.
    assert row["histograms"]["handler"]["count"] == c["faults"]
    assert row["handler_cpu"] == row["app_cpu"] is not None     # handler-cpu=same by default


@pytest.mark.parametrize("strategy", ("uffd", "uffd-sigbus", "uffd-move", "uffd-minor"))
def test_fault_around_resolves_a_chunk_per_fault(image, strategy):
    skip_unless_available(strategy)
    row = run_strategy(image, strategy, "chunk=64K", pattern="seq")
    assert_restored(row, strategy, "chunk=64K")
    c = row["counters"]
    assert c["chunk_bytes"] == 64 << 10
    # 513 pages in 64 KiB chunks: 33 faults, each placing up to 16 pages.
    assert c["faults"] == -(-row["pages"] // 16)
    assert c["handler_pages"] == row["pages"] and c["fixup_pages"] == 0


@pytest.mark.parametrize("placement", ("same", "other", "any"))
def test_handler_placement_is_recorded(image, placement):
    if placement == "other":
        skip_unless_two_cpus()
    params = f"handler-cpu={placement}"
    row = run_strategy(image, "uffd", params, pattern="sparse:0.1")
    assert_restored(row, "uffd", params)
    assert_handler_placed(row, placement)


def test_sigbus_handler_runs_on_the_faulting_thread(image):
    row = run_strategy(image, "uffd-sigbus", pattern="sparse:0.1")
    assert_restored(row, "uffd-sigbus")
    assert row["handler_cpu"] == row["app_cpu"]
    assert row["counters"]["fault_reads"] == 0, "no handler thread reads messages"
    assert row["counters"]["user_mode_only"] == 1


def _smaps_of(addr):
    """Rss and Anonymous kB of the VMA starting at addr."""
    fields, inside = {}, False
    with open("/proc/self/smaps") as smaps:
        for line in smaps:
            head = line.split()
            if "-" in head[0] and not head[0].endswith(":"):
                inside = int(head[0].split("-")[0], 16) == addr
            elif inside and head[0] in ("Rss:", "Anonymous:"):
                fields[head[0][:-1]] = int(head[1])
    return fields


def _minor_copy_on_write(image, op):
    with open_run(image, "uffd-minor", op=op, pattern="sparse:0.1") as run:
        run.restore()
        addr, _ = run.region()
        run.touch()
        after_touch = _smaps_of(addr)
        return dict(run_phases(run, ("fixup", "verify")), after_touch=after_touch)


@pytest.mark.parametrize("op", ("read", "write"))
def test_minor_maps_shmem_pages_and_copies_on_first_write(image, op):
    skip_unless_available("uffd-minor")
    row = in_child(_minor_copy_on_write, image, op)
    assert_restored(row, "uffd-minor")
    mem = row["after_touch"]
    touched_kb = row["touched_pages"] * PAGE // 1024
    # Reads map the memfd's own pages (no copy); each first write makes a private copy.
    assert mem["Rss"] >= touched_kb
    assert mem["Anonymous"] == (touched_kb if op == "write" else 0), mem


# ---- many threads, same pages ----

@pytest.mark.parametrize("strategy", ("uffd", "uffd-sigbus", "uffd-hybrid", "uffd-move",
                                      "uffd-minor", "uffd-huge"))
def test_many_threads_fault_the_same_pages(image, strategy):
    skip_unless_available(strategy, image=image)
    row = run_strategy(image, strategy, op="write", pattern="random", threads=8, overlap=True)
    assert_restored(row, strategy)
    assert row["touched_pages"] == 8 * row["pages"]


def test_duplicate_faults_are_woken_after_eexist(image):
    """Two threads wait on one page; the second message finds it placed (EEXIST) and wakes.

    The kernel drops a waiter's unread message when a copy wakes it, so both
    messages must be read before the first copy: the delay holds the read
    until the second thread has faulted too.
    """
    params = "fault-delay=20000"
    row = run_strategy(image, "uffd", params, pattern="stride:64", threads=2, overlap=True)
    assert_restored(row, "uffd", params)
    c = row["counters"]
    # Both threads wait on each page, so the handler sees more messages than pages;
    # the later message of a pair finds the page placed and wakes its thread.
    assert row["touched_pages"] // 2 == c["handler_pages"] == 9
    assert c["faults"] > c["handler_pages"], c
    assert c["eexist"] >= 1 and c["wakes"] >= 1, c


def _fault_held_while_fixup_places_it(image):
    """A read fault on unit 5 is held in its resolver; fixup places every unit meanwhile."""
    os.environ[HOLD_VARIABLE] = "5"
    run = open_run(image, "uffd", op="read")
    del os.environ[HOLD_VARIABLE]
    with run:
        run.restore()
        addr, _ = run.region()
        got = {}
        page = ctypes.create_string_buffer(PAGE)
        # memmove drops the GIL (string_at would keep it, blocked in the fault).
        reader = threading.Thread(target=lambda: got.update(
            page=ctypes.memmove(page, addr + 5 * PAGE, PAGE) and page.raw), daemon=True)
        reader.start()
        arrived = hold_wait(1)
        fixup = threading.Thread(target=lambda: got.update(fixup=try_phase(run, "fixup")),
                                 daemon=True)
        fixup.start()
        # The fixup's copy of unit 5 wakes the reader, while the handler still holds its fault.
        reader.join(5)
        woken_by_fixup = not reader.is_alive()
        hold_release()
        reader.join(5)
        fixup.join(5)
        assert not fixup.is_alive(), "fixup still running 5 s after the held fault was released"
        want = open(image.path, "rb").read()[5 * PAGE:6 * PAGE]
        return dict(row_of(run), arrived=arrived, woken_by_fixup=woken_by_fixup,
                    read_right=got.get("page") == want, fixup=got["fixup"], expired=hold_expired())


def test_fault_held_in_flight_while_fixup_places_its_page(image):
    """Two resolvers on one page, in a fixed order: the handler has read the fault, fixup
    places the page first and wakes the reader, then the handler finds it placed (EEXIST)."""
    out = in_child(_fault_held_while_fixup_places_it, image)
    assert out["arrived"] == ["resolve"]
    assert out["woken_by_fixup"], "the reader was not woken by the fixup's copy of its page"
    assert out["read_right"], "the reader read other bytes than the image's"
    assert out["fixup"] is None, out["fixup"]
    assert out["counters"]["eexist"] >= 1, out["counters"]
    assert not out["expired"]


def _fault_on_a_page_a_loader_placed_without_waking(image, order):
    """The loader places unit 5 DONTWAKE while a reader sleeps on it and the handler holds
    the reader's fault; the loader is held before its batch's wake, the handler goes on."""
    os.environ[HOLD_VARIABLE] = "5"
    run = open_run(image, "uffd-hybrid", f"order=recorded,loader-threads=1,path={order}", op="read")
    del os.environ[HOLD_VARIABLE]
    with run:
        run.restore()
        steps = [hold_wait(1)]                    # the loader, about to place unit 5
        addr, _ = run.region()
        page = ctypes.create_string_buffer(PAGE)
        reader = threading.Thread(target=lambda: ctypes.memmove(page, addr + 5 * PAGE, PAGE),
                                  daemon=True)
        reader.start()
        steps.append(hold_wait(2))                # the reader's fault, in the handler
        hold_release(0)
        steps.append(hold_wait(3))                # placed, its wake not sent yet
        hold_release(1)                           # the handler finds it placed: EEXIST
        reader.join(2)
        woken = not reader.is_alive()
        hold_release()
        reader.join(5)
        fixup = try_phase(run, "fixup")
        want = open(image.path, "rb").read()[5 * PAGE:6 * PAGE]
        return dict(row_of(run), steps=steps, woken=woken, read_right=page.raw == want,
                    fixup=fixup, expired=hold_expired())


def test_a_fault_on_a_page_placed_without_wake_is_woken_by_its_resolver(image, tmp_path):
    """A loader places a recorded order DONTWAKE and wakes each batch at its end: a reader
    asleep on a page of the batch must be woken by the handler serving its fault, which
    finds the page placed (EEXIST), not wait for the rest of the batch."""
    pages = 513
    order = tmp_path / "five.order"
    order.write_text(f"wpcompare-fault-order v1 pages={pages} faults=2\n5\n6\n")
    out = in_child(_fault_on_a_page_a_loader_placed_without_waking, image, str(order))
    assert out["steps"] == [["place"], ["place", "resolve"], ["place", "resolve", "unwoken"]], out
    assert out["woken"], "the reader still sleeps on a placed page: nobody woke it after EEXIST"
    assert out["read_right"], "the reader read other bytes than the image's"
    assert out["fixup"] is None, out["fixup"]
    assert out["counters"]["eexist"] >= 1 and not out["expired"], out


def test_loaders_racing_faults_place_each_page_once(big_image):
    """Two loaders and the handler place pages of one region at once, four writers faulting
    at random: the kernel arbitrates (the later copy gets EEXIST), each page is counted
    placed by exactly one of them and every byte is the image's. Whether a copy meets its
    page already placed in a given run is up to the scheduler (here: 77-333 per run, and
    none in six runs once), so EEXIST itself is driven in a fixed order by the held-fault
    tests above, not asserted here."""
    params = "loader-threads=2"
    for seed in range(3):
        row = run_strategy(big_image, "uffd-hybrid", params, op="write", pattern="random",
                           threads=4, overlap=True, seed=seed)
        assert_restored(row, "uffd-hybrid", params)


# ---- the hybrid ----

def test_hybrid_loader_detaches_before_fixup(image):
    """With the workload done, the loaders finish and drop the view themselves."""
    def run():
        with open_run(image, "uffd-hybrid", "loader-threads=1", op="read",
                      pattern="sparse:0.1") as r:
            start_ns = time.monotonic_ns()      # CLOCK_MONOTONIC, as the C core's clock
            r.restore()
            r.touch()
            # The loader unmaps the view on its own; fixup is not needed for that.
            deadline = time.monotonic() + 10
            while not _image_unmapped(image) and time.monotonic() < deadline:
                time.sleep(0.005)
            unmapped_before_fixup = _image_unmapped(image)
            fixup_at_ns = time.monotonic_ns() - start_ns
            return dict(run_phases(r, ("fixup", "verify")),
                        unmapped_before_fixup=unmapped_before_fixup, fixup_at_ns=fixup_at_ns)
    row = in_child(run)
    assert_restored(row, "uffd-hybrid", "loader-threads=1")
    assert row["unmapped_before_fixup"], "the loader should unmap the image view when done"
    assert row["counters"]["fixup_pages"] == 0
    assert row["time_to_detached_ns"] < row["fixup_at_ns"], "detached by the loader, not fixup"


def _image_unmapped(image):
    ino = os.stat(image.path).st_ino
    with open("/proc/self/maps") as maps:
        return not any(line.split()[4] == str(ino) for line in maps if len(line.split()) > 4)


def test_recorded_order_is_written_and_prefetched(image, tmp_path):
    order = str(tmp_path / "faults.order")
    record = f"loader-threads=0,path={order}"
    row = run_strategy(image, "uffd-hybrid", record, pattern="sparse:0.1")
    assert_restored(row, "uffd-hybrid", record)
    with open(order) as f:
        header = f.readline().split()
        pages = [int(line) for line in f]
    assert header[0] == "wpcompare-fault-order"
    assert f"pages={row['pages']}" in header and f"faults={len(pages)}" in header
    # Without loaders every first touch faulted, in the workload's order.
    assert len(pages) == len(set(pages)) == row["touched_pages"] == row["counters"]["recorded_faults"]
    assert row["counters"]["loader_pages"] == 0

    replay = f"order=recorded,loader-threads=1,path={order}"
    again = run_strategy(image, "uffd-hybrid", replay, pattern="sparse:0.1")
    assert_restored(again, "uffd-hybrid", replay)
    assert again["counters"]["prefetch_units"] == len(pages)
    assert "recorded_faults" not in again["counters"], "a replay does not overwrite its input"
    with open(order) as f:
        assert len(f.readlines()) == len(pages) + 1


def test_recorded_order_for_another_image_is_refused(image, tmp_path):
    order = tmp_path / "faults.order"
    order.write_text("wpcompare-fault-order v1 pages=7 faults=1\n3\n")
    row = in_child(_all_phases, image, "uffd-hybrid", f"order=recorded,path={order}")
    assert row["failed_phase"] == "restore" and "record it again" in row["reason"]
    row = in_child(_all_phases, image, "uffd-hybrid", f"order=recorded,path={tmp_path / 'missing'}")
    assert row["failed_phase"] == "restore" and "record one first" in row["reason"]


# ---- huge pages ----

def test_huge_pages_skip_names_the_sysctl():
    if free_huge_pages() > 0:
        pytest.skip("2 MiB huge pages are free here: the skip path is not reachable")
    for strategy, params in (("uffd-huge", None), ("uffd-hybrid", "page=2M")):
        rc, why = probe(strategy, params)
        assert rc == -errno.ENOMEM
        assert "sysctl vm.nr_hugepages=N" in why


def test_huge_pages_too_few_for_the_image_is_refused_by_the_probe():
    """Some free huge pages, but fewer than the image needs: the probe says so (a skipped row,
    not a restore that fails)."""
    if not os.path.isdir("/sys/kernel/mm/hugepages/hugepages-2048kB"):
        pytest.skip("this kernel offers no 2 MiB hugetlb pages")
    if free_huge_pages() == 0:
        pytest.skip("no free 2 MiB huge pages: run `sysctl vm.nr_hugepages=8` to reach this path")
    rc, why = probe("uffd-huge", None, 1 << 40)
    assert rc == -errno.ENOMEM
    assert "524288 needed" in why and "available" in why and "sysctl vm.nr_hugepages=" in why
    assert probe("uffd-huge", None, HUGE)[0] == 0


def test_huge_region_is_whole_huge_pages_but_verified_to_the_image(image):
    needed = -(-IMAGE_SIZE // HUGE)
    if free_huge_pages() < needed:
        pytest.skip(f"needs {needed} free 2 MiB huge pages: run `sysctl vm.nr_hugepages={needed}`")
    row = run_strategy(image, "uffd-huge", op="write", pattern="random", threads=4)
    assert_restored(row, "uffd-huge")
    assert row["region_bytes"] == -(-IMAGE_SIZE // PAGE) * PAGE
    assert row["counters"]["chunk_bytes"] == HUGE
    assert row["counters"]["faults"] <= needed * 4 + 4
    params = "page=2M,loader-threads=1"
    row = run_strategy(image, "uffd-hybrid", params, pattern="random", threads=4)
    assert_restored(row, "uffd-hybrid", params)


# ---- teardown ----

def _teardown_with_faults_in_flight(image, strategy, params):
    """Threads block inside read() on region pages the handler is slow to serve; destroy."""
    run = open_run(image, strategy, params, op="read")
    run.restore()
    addr, _ = run.region()
    results = [None] * 4

    def fault(i):
        zero = os.open("/dev/zero", os.O_RDONLY)
        try:
            buf = ffi.buffer(ffi.cast("char *", addr + (40 + 9 * i) * PAGE), PAGE)
            results[i] = os.readv(zero, [buf])
        except OSError as error:
            results[i] = f"errno {error.errno}"
        finally:
            os.close(zero)

    threads = [threading.Thread(target=fault, args=(i,), daemon=True) for i in range(4)]
    for t in threads:
        t.start()
    time.sleep(0.05)          # every thread is now asleep in its fault
    in_flight = sum(t.is_alive() for t in threads)
    t0 = time.monotonic()
    run.close()
    destroy_s = time.monotonic() - t0
    for t in threads:
        t.join(5)
    return {"in_flight": in_flight, "destroy_s": destroy_s,
            "stuck": sum(t.is_alive() for t in threads), "results": results}


@pytest.mark.parametrize("strategy", ("uffd", "uffd-hybrid", "uffd-move", "uffd-minor"))
def test_teardown_with_faults_in_flight_leaves_no_thread_blocked(image, strategy):
    params = "kernel-faults=yes,fault-delay=2000000"
    if strategy == "uffd-hybrid":
        params += ",loader-threads=0"
    skip_unless_available(strategy, params)
    out = in_child(_teardown_with_faults_in_flight, image, strategy, params, timeout=30)
    assert out["in_flight"] == 4, "the faults should still be waiting for the slow handler"
    assert out["destroy_s"] < 1.0, "teardown waited for the fault delay"
    assert out["stuck"] == 0, out["results"]
    for r in out["results"]:
        # Woken by the closed userfaultfd: the retry reads into plain (or unmapped) memory.
        assert r == PAGE or r == f"errno {errno.EFAULT}", r


def _restore_then_destroy(image, strategy, params):
    run = open_run(image, strategy, params, op="read")
    reason = try_phase(run, "restore")
    loading = not _image_unmapped(image)        # the loaders still copy from the view
    t0 = time.monotonic()
    run.close()
    return {"reason": reason, "loading": loading,
            "destroy_s": time.monotonic() - t0, "unmapped_after": _image_unmapped(image)}


def test_teardown_stops_loaders_mid_flight(big_image):
    out = in_child(_restore_then_destroy, big_image, "uffd-hybrid", "loader-threads=2",
                   timeout=30)
    assert out["reason"] is None, out["reason"]
    assert out["loading"], "the loaders finished 16 MiB before restore returned?"
    assert out["destroy_s"] < 2.0
    assert out["unmapped_after"]
