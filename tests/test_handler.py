"""The one fault-handler thread (csrc/handler.c) of every strategy that has one.

Where it runs (handler-cpu=same|other|any, csrc/handler.h) means the same in each. On a
process allowed one CPU, `other` is a skipped row that says why (and a run made without the
probe fails at restore with the same reason): never a silent fallback to the same CPU or to
unpinned, whose figures it would report as other's. Its own errors end the run the same way
in each, with the handler named (a handler that vanishes: tests/test_faults.py)."""
import os

import pytest

from harness import in_child, open_run, run_strategy, skip_unless_available, skip_unless_two_cpus, spec_for
from wpcompare import runner, strategies, worker
from wpcompare.errors import WpcError

WITH_HANDLER = [s.name for s in strategies.all_strategies() if s.param("handler-cpu")]
NO_SECOND_CPU = "handler-cpu=other needs a second CPU, and this process may run on 1 (CPU {cpu})"


def test_every_handler_strategy_offers_the_same_placements():
    assert {"uffd", "uffd-wp", "uffd-wp-anon"} <= set(WITH_HANDLER)
    for name in WITH_HANDLER:
        assert strategies.find(name).param("handler-cpu").choices == ("same", "other", "any"), name


def _spec(image, strategy, params):
    return spec_for(image, strategy, params=params, op="write", pattern="seq")


def _on_one_cpu(argument):
    """In a child allowed only its first CPU: the worker's rows for each placement, and a
    handler-cpu=other run created without the probe."""
    image, strategy = argument
    cpu = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})
    rows = {placement: worker.run_spec(_spec(image, strategy, f"handler-cpu={placement}"))
            for placement in ("same", "other", "any")}
    with open_run(image, strategy, params="handler-cpu=other", pattern="seq") as run:
        try:
            run.restore()
            unprobed = None
        except WpcError as error:
            unprobed = error.reason
    return {"cpu": cpu, "rows": rows, "unprobed": unprobed}


@pytest.mark.parametrize("strategy", WITH_HANDLER)
def test_other_on_one_cpu_is_skipped_with_the_reason(image, strategy):
    skip_unless_available(strategy)
    out = in_child(_on_one_cpu, (image, strategy))
    rows, cpu = out["rows"], out["cpu"]
    why = NO_SECOND_CPU.format(cpu=cpu)
    assert rows["other"]["status"] == "skipped" and why in rows["other"]["reason"], rows["other"]
    assert out["unprobed"] and why in out["unprobed"], out["unprobed"]
    assert rows["same"]["status"] == "ok", rows["same"]
    assert rows["same"]["handler_cpu"] == rows["same"]["app_cpu"] == cpu
    assert rows["any"]["status"] == "ok", rows["any"]
    assert rows["any"]["handler_cpu"] is None


@pytest.mark.parametrize("strategy", WITH_HANDLER)
def test_other_with_two_cpus_runs_on_the_second(image, strategy):
    skip_unless_two_cpus()
    skip_unless_available(strategy)
    row = run_strategy(image, strategy, params="handler-cpu=other", op="write", pattern="seq")
    assert row["status"] == "ok", row["reason"]
    assert row["handler_cpu"] == sorted(os.sched_getaffinity(0))[1] != row["app_cpu"]


def test_the_reason_reaches_a_row_run_through_the_runner(image):
    """One CPU for the whole worker process (as `taskset -c 0 wpcompare run ...` gives)."""
    skip_unless_available("uffd")

    def one_cpu_run(spec):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
        return runner.run_isolated(spec)

    row = runner.call_in_fresh_process(one_cpu_run, _spec(image, "uffd", "handler-cpu=other"))
    assert row["status"] == "skipped" and "handler-cpu=other needs a second CPU" in row["reason"]


# Released by the strategy's orphaned op (unprotected, unregistered): the writers go on, fixup says why.
RELEASES_WAITERS = {"uffd-wp": "the rest of the region was unprotected in place",
                    "uffd-wp-anon": "the region was unregistered and its writers woken"}


@pytest.mark.parametrize("strategy", WITH_HANDLER)
def test_a_handler_error_ends_the_run_with_its_reason(make_image, monkeypatch, strategy):
    """The handler's read() fails after its first fault: the run fails naming the handler and
    the error, never by the watchdog; waiters are released only where the strategy can do so
    without handing out pages it never loaded."""
    skip_unless_available(strategy)
    image = make_image(8 << 20)
    monkeypatch.setenv("WPCOMPARE_INJECT_HANDLER_ERROR", "1")
    # Every write faults: no background fixup or loader serves a page before the handler does.
    row_params = strategies.find(strategy)
    params = ("fixup=on-write-only" if row_params.param("fixup")
              else "loader-threads=0" if row_params.param("loader-threads") else None)
    row = run_strategy(image, strategy, params=params, op="write", threads=4)
    assert row["status"] == "failed", row
    assert "timed out" not in row["reason"], row["reason"]
    assert ("the userfaultfd handler thread stopped: reading fault messages failed: "
            "Input/output error; ") in row["reason"], row["reason"]
    if strategy in RELEASES_WAITERS:
        assert row["failed_phase"] == "fixup", row
        assert row["reason"].endswith(RELEASES_WAITERS[strategy]), row["reason"]
    else:
        assert row["failed_phase"] in ("touch", "fixup"), row
        assert row["reason"].endswith("would never be served"), row["reason"]
