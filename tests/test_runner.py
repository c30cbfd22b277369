"""The runner: fresh processes, the watchdog, crashes and skips as rows, page-cache modes."""
import json
import os
import subprocess
import sys

import pytest

from conftest import spec_for
from wpcompare import binding, runner, strategies
from wpcompare.errors import UnsupportedError
from wpcompare.options import Latency, parse_pattern


def _children():
    """Pids of this process's children still present (zombies included)."""
    mine = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    fields = stat.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == os.getpid():
                mine.append(int(entry))
    return mine


def test_a_crashing_worker_is_a_failed_row_naming_the_signal(image):
    row = runner.run_isolated(spec_for(image, "mmap", inject="segv", repetition=3), timeout=60)
    assert row["status"] == "failed"
    assert row["reason"] == "worker killed by SIGSEGV"
    assert (row["strategy"], row["repetition"]) == ("mmap", 3)


def test_an_aborting_worker_names_sigabrt(image):
    row = runner.run_isolated(spec_for(image, "read", inject="abort"), timeout=60)
    assert row["reason"] == "worker killed by SIGABRT"


def test_a_hanging_worker_is_killed_and_reported(image):
    row = runner.run_isolated(spec_for(image, "mmap", inject="hang"), timeout=0.5)
    assert row["status"] == "failed"
    assert row["reason"] == "timed out after 0.5 s"
    assert _children() == [], "the hung worker was reaped"


def test_worker_exit_status_and_exceptions_are_reported():
    with pytest.raises(runner.WorkerFailure, match="worker exited with status 3"):
        runner.call_in_fresh_process(lambda _: os._exit(3), None)
    with pytest.raises(runner.WorkerFailure, match="worker raised ZeroDivisionError"):
        runner.call_in_fresh_process(lambda n: 1 // n, 0)
    assert runner.call_in_fresh_process(lambda n: {"double": 2 * n}, 21) == {"double": 42}
    assert _children() == []


def test_large_results_pass_through_the_pipe():
    # More than a pipe buffer holds: the parent must read while the child writes.
    value = runner.call_in_fresh_process(lambda n: list(range(n)), 200_000)
    assert len(value) == 200_000 and value[-1] == 199_999


def _matrix(image, names, **fields):
    choices = [strategies.parse_choice(name) for name in names]
    settings = dict(ops=["read", "write"], pattern=parse_pattern("random"), repeat=2, warmup=1, timeout=60)
    settings.update(fields)
    return runner.Matrix(choices=choices, image=image, **settings)


def test_plan_puts_warmups_first_and_marks_them(image):
    specs = runner.plan(_matrix(image, ["mmap", "read"], repeat=3, warmup=2))
    assert len(specs) == 2 * 2 * 5
    first = [(s.strategy, s.op, s.warmup, s.repetition) for s in specs[:5]]
    assert first == [("mmap", "read", True, 1), ("mmap", "read", True, 2),
                     ("mmap", "read", False, 1), ("mmap", "read", False, 2), ("mmap", "read", False, 3)]
    assert all(s.image_seed == image.seed and s.image_kind == image.kind for s in specs)
    assert {str(s.latency) for s in specs} == {"none"}, "latency off: no instrumented runs"


def test_plan_adds_instrumented_runs_after_the_measured_ones_and_bounds_first(image):
    matrix = _matrix(image, ["mmap"], ops=["read"], repeat=2, warmup=1, latency=Latency("sample", 16),
                     latency_runs=3, bounds=strategies.bound_choices()[:1])
    specs = runner.plan(matrix)
    kinds = [(s.label, s.warmup, str(s.latency)) for s in specs]
    # A bound's touch is of memory already loaded: no instrumented runs for it.
    assert kinds == [("bound-copy", True, "none"), ("bound-copy", False, "none"), ("bound-copy", False, "none"),
                     ("mmap", True, "none"), ("mmap", False, "none"), ("mmap", False, "none"),
                     ("mmap", False, "sample:16"), ("mmap", False, "sample:16"), ("mmap", False, "sample:16")]


def test_matrix_goes_on_after_a_crash(image):
    matrix = _matrix(image, ["mmap", "read"], inject=runner.Injection("segv", "mmap"))
    rows = runner.run_matrix(matrix)
    assert len(rows) == 2 * 2 * 3
    crashed = [row for row in rows if row["strategy"] == "mmap"]
    assert {row["reason"] for row in crashed} == {"worker killed by SIGSEGV"}
    survivors = [row for row in rows if row["strategy"] == "read"]
    assert [row["status"] for row in survivors] == ["ok"] * 6
    assert all(row["verified"] for row in survivors)


def test_an_unavailable_strategy_is_one_skipped_row_per_op(image, monkeypatch):
    # The forked workers inherit this probe: the runner sees what it would on a
    # kernel lacking mmap-populate's feature.
    real_probe = binding.probe_strategy

    def probe(strategy, params, image_bytes=0):
        if strategy == "mmap-populate":
            raise UnsupportedError("MAP_POPULATE is not offered by this kernel", 95)
        return real_probe(strategy, params, image_bytes)

    monkeypatch.setattr(binding, "probe_strategy", probe)
    started = []

    class Recorder(runner.Progress):
        def started(self, index, total, spec):
            started.append((spec.strategy, spec.op))

    rows = runner.run_matrix(_matrix(image, ["mmap-populate", "read"]), Recorder())
    skipped = [row for row in rows if row["status"] == "skipped"]
    assert [(row["strategy"], row["op"]) for row in skipped] == [("mmap-populate", "read"),
                                                                ("mmap-populate", "write")]
    assert all(row["reason"] == "MAP_POPULATE is not offered by this kernel" for row in skipped)
    assert started.count(("mmap-populate", "read")) == 1, "probed once, then not run again"
    assert started.count(("mmap-populate", "write")) == 0
    assert [row["status"] for row in rows if row["strategy"] == "read"] == ["ok"] * 6


def test_worker_runs_stand_alone(image):
    spec = spec_for(image, "read", op="write", pattern="sparse:0.5")
    completed = subprocess.run([sys.executable, "-m", "wpcompare.worker"], input=json.dumps(spec),
                               capture_output=True, text=True, timeout=60, check=True)
    row = json.loads(completed.stdout)
    assert row["status"] == "ok" and row["verified"]
    assert row["touched_pages"] == image.pages // 2
    assert row["phases"]["touch"]["ns"] > 0


def test_stand_alone_worker_rejects_a_bad_spec():
    completed = subprocess.run([sys.executable, "-m", "wpcompare.worker"], input='{"strategy": "mmap"}',
                               capture_output=True, text=True, timeout=60)
    assert completed.returncode == 2
    assert "lacks image" in completed.stderr
