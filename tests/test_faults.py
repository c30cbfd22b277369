"""Fault injection: what a run makes of the machine or a strategy failing under it.

Every case runs every strategy of the C table, so a strategy added later is
covered without a change here. The outcome that is never acceptable is a
silent one: a run that reports ok with bytes it did not restore, or that
hangs until the watchdog. Either the strategy survives the fault (ok, every
byte verified), or the run fails with a reason that says what happened and
in which phase.

The injections are the worker's (worker.INJECTIONS): some act on the machine
from the worker (truncate the image, take every free huge page), some through
the C core's test-only hooks (csrc/fault_inject.c: mremap failing with
ENOMEM without lowering vm.max_map_count for everybody; a fault handler
thread exiting).
"""
import os
import resource

import pytest

from harness import (SMALL, WATCHDOG, free_huge_pages, in_child, open_run, run_strategy,
                     skip_unless_available)
from wpcompare import binding, runner, strategies
from wpcompare.errors import WpcError
from wpcompare.options import parse_pattern

NAMES = [strategy.name for strategy in strategies.all_strategies()]
# A handler thread serves faults for the strategies that let you place it.
WITH_HANDLER = [s.name for s in strategies.all_strategies() if s.param("handler-cpu")]
WITHOUT_HANDLER = [name for name in NAMES if name not in WITH_HANDLER]


def _run(image, strategy, **fields):
    row = run_strategy(image, strategy, **fields)
    if row["status"] == "skipped":
        pytest.skip(f"{strategy} cannot run here: {row['reason']}")
    return row


def _where(row):
    return f"{row['strategy']} {row['op']}: {row['status']} in {row.get('failed_phase')}: {row['reason']}"


def assert_survived_or_failed_loudly(row, image):
    """Ok with every byte verified, or failed with a reason, never by the watchdog."""
    if row["status"] == "ok":
        assert row["verified"] and row["mismatched_pages"] == 0, _where(row)
        assert row["touched_pages"] == image.pages, _where(row)
        return
    assert row["status"] == "failed", _where(row)
    assert row["reason"] and "\n" not in row["reason"], _where(row)
    assert "timed out" not in row["reason"], f"a hang, not a failure: {_where(row)}"
    # A worker killed inside a phase has it in failed_phase; one killed by a strategy's own
    # thread between phases (a background fixup copying a truncated chunk) has None there.
    assert row["failed_phase"] in (None, "create") + binding.PHASES, _where(row)


# ---- the image truncated while the region may still map it ----

@pytest.mark.parametrize("op", ["read", "write"])
@pytest.mark.parametrize("strategy", NAMES)
def test_image_truncated_while_mapped(make_image, strategy, op):
    image = make_image(SMALL)      # this test's own file: it is cut in half
    row = _run(image, strategy, op=op, inject="truncate")
    assert row["status"] != "ok" or row["injection"] == {"truncated_to": SMALL // 2}
    assert_survived_or_failed_loudly(row, image)
    if (row["reason"] or "").startswith("worker killed by SIGBUS"):
        assert "truncated" in row["reason"]


def _fixup_of_a_truncated_image(spec):
    """Restore, cut the image in half, then load every page in fixup, touching none."""
    image, strategy = spec
    with open_run(image, strategy, op="read", pattern="seq", seed=1) as run:
        run.restore()
        os.truncate(image.path, image.size // 2)
        try:
            run.fixup()
        except WpcError as error:
            return error.reason
        return None


@pytest.mark.parametrize("strategy", ["uffd", "uffd-sigbus"])
def test_a_copy_that_fails_is_an_error_not_a_placed_page(make_image, strategy):
    """UFFDIO_COPY from the truncated half fails (EFAULT): fixup must fail naming it, not
    count the page as placed (as for EEXIST) and leave it empty for the next access."""
    skip_unless_available(strategy)
    image = make_image(SMALL, kind="random", name="cut.img")
    reason = in_child(_fixup_of_a_truncated_image, (image, strategy))
    assert reason is not None, "fixup succeeded with half of the image unreadable"
    assert "Bad address" in reason, reason


def test_lazy_mmap_of_a_truncated_image_dies_of_sigbus_in_touch(make_image):
    image = make_image(SMALL)
    row = _run(image, "mmap", op="read", inject="truncate")
    assert row["status"] == "failed" and row["failed_phase"] == "touch"
    assert row["reason"].startswith("worker killed by SIGBUS: ")
    assert "was the image truncated while mapped" in row["reason"]


def test_eager_read_survives_truncation_after_restore(make_image):
    image = make_image(SMALL)
    row = _run(image, "read", op="write", inject="truncate")
    assert row["status"] == "ok" and row["verified"] and row["detached"]


# ---- huge pages exhausted mid-run ----

@pytest.mark.parametrize("op", ["read", "write"])
@pytest.mark.parametrize("strategy", NAMES)
def test_huge_pages_exhausted_mid_run(make_image, strategy, op):
    # Takes every free huge page of the machine for the few ms of one run.
    if not free_huge_pages():
        pytest.skip("no free 2 MiB huge pages to exhaust (.ci/run reserves some)")
    image = make_image(SMALL)
    row = _run(image, strategy, op=op, inject="hugepages")
    assert_survived_or_failed_loudly(row, image)
    if row["status"] == "ok":
        # None left free, unless another user of the machine added some meanwhile.
        taken = row["injection"]
        assert taken["hugepages_free_after"] == 0 or taken["hugepages_taken"] > 0, taken


# ---- mremap failing with ENOMEM (as at vm.max_map_count) ----

@pytest.mark.parametrize("nth", [1, 3])
@pytest.mark.parametrize("op", ["write", "mixed"])
@pytest.mark.parametrize("strategy", NAMES)
def test_mremap_enomem(image, strategy, op, nth):
    row = _run(image, strategy, op=op, threads=4, inject=f"mremap-enomem:{nth}")
    assert_survived_or_failed_loudly(row, image)
    if row["status"] == "failed":
        reason = row["reason"]
        assert "ENOMEM" in reason or "Cannot allocate memory" in reason, _where(row)
        assert "remap" in reason, f"the failed operation is named: {_where(row)}"


def test_mmap_fixup_names_the_failed_mremap(image):
    row = _run(image, "mmap", op="write", inject="mremap-enomem:1")
    assert row["status"] == "failed" and row["failed_phase"] == "fixup"
    assert "copy-and-remap of the whole region failed: Cannot allocate memory" in row["reason"]
    assert not row["detached"]


def test_mremap_injection_is_refused_when_malformed(image, monkeypatch):
    monkeypatch.setenv("WPCOMPARE_INJECT_MREMAP_ENOMEM", "soon")
    row = run_strategy(image, "mmap")
    assert row["status"] == "failed" and row["failed_phase"] == "create"
    assert "WPCOMPARE_INJECT_MREMAP_ENOMEM=soon: give a whole number >= 1" in row["reason"]


# ---- a fault handler thread gone while faults are pending ----

@pytest.mark.parametrize("op", ["write", "mixed"])     # write faults, for write-protect handlers too
@pytest.mark.parametrize("strategy", WITH_HANDLER)
def test_handler_thread_gone_never_means_zeros_or_a_hang(make_image, strategy, op):
    """The handler vanishes after its first fault. Faults still pending then must fail the run
    at once, naming the handler; with none pending (a proactive loader placed the rest) the
    run may complete, every byte verified."""
    image = make_image(8 << 20)
    row = _run(image, strategy, op=op, threads=4, params=_without_background(strategy),
               inject="handler-exit:1")
    if row["status"] == "ok":
        assert row["verified"] and row["touched_pages"] == image.pages, _where(row)
        return
    assert "differ from the image" not in row["reason"], (
        f"pages read as zeros (or stale) after the handler was gone: data loss: {_where(row)}")
    assert "timed out" not in row["reason"], f"a hang, not a failure: {_where(row)}"
    assert row["failed_phase"] == "touch" and "handler" in row["reason"], _where(row)


def _without_background(strategy):
    """Params that leave the writes to fault (no background fixup racing them), where there are any."""
    fixup = strategies.find(strategy).param("fixup")
    return "fixup=on-write-only" if fixup and "on-write-only" in fixup.choices else ""


@pytest.mark.parametrize("strategy", [name for name in ("uffd-wp", "uffd") if name in WITH_HANDLER])
def test_a_handler_gone_with_faults_pending_fails_the_run_in_touch(make_image, strategy):
    # Every write of uffd-wp:fixup=on-write-only, every first access of uffd, faults:
    # after the first one, the rest are certain to be left pending.
    image = make_image(8 << 20)
    row = _run(image, strategy, op="write", threads=4, params=_without_background(strategy),
               inject="handler-exit:1")
    assert (row["status"], row["failed_phase"]) == ("failed", "touch"), _where(row)
    assert "the userfaultfd handler thread is gone while the workload runs" in row["reason"]


@pytest.mark.parametrize("strategy", WITHOUT_HANDLER)
def test_handler_injection_leaves_strategies_without_a_handler_alone(image, strategy):
    row = _run(image, strategy, op="write", inject="handler-exit:1")
    assert row["status"] == "ok" and row["verified"], _where(row)


# ---- a worker killed by a signal ----

def test_a_worker_killed_from_outside_is_named_and_the_rest_runs(image):
    choices = [strategies.parse_choice(name) for name in ("mmap", "read")]
    matrix = runner.Matrix(choices=choices, ops=["read", "write"], pattern=parse_pattern("random"),
                           image=image, repeat=2, warmup=0, timeout=WATCHDOG,
                           inject=runner.Injection("kill", "mmap"))
    rows = runner.run_matrix(matrix)
    killed = [row for row in rows if row["strategy"] == "mmap"]
    assert len(killed) == 4 and all(row["status"] == "failed" for row in killed)
    assert {row["reason"] for row in killed} == {
        "worker killed by SIGKILL: killed from outside: the OOM killer? (see dmesg)"}
    assert [row["status"] for row in rows if row["strategy"] == "read"] == ["ok"] * 4


# ---- an address-space limit ----

def _vm_size():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[0]) * binding.PAGE_SIZE


def _fixup_under_an_address_space_limit(image):
    with open_run(image, "mmap") as run:
        run.restore()
        run.touch()
        # Room for less than the anonymous copy of the region the fixup makes.
        limit = _vm_size() + SMALL // 2
        resource.setrlimit(resource.RLIMIT_AS, (limit, resource.getrlimit(resource.RLIMIT_AS)[1]))
        try:
            run.fixup()
        except WpcError as error:
            return error.reason
    return None


def test_an_address_space_limit_is_named_not_max_map_count(image):
    reason = in_child(_fixup_under_an_address_space_limit, image)
    assert reason and "RLIMIT_AS" in reason and "ulimit -v" in reason, reason
    assert "sysctl vm.max_map_count" not in reason, reason
