"""The matrix of runs, each in a fresh process under a watchdog.

A run leaves signal handlers, VMAs, huge pages and page-table state behind,
so every run gets a process of its own: the runner forks, the child runs the
worker and writes its row to a pipe, and the parent (single-threaded, having
touched nothing but the strategy table and the image) waits with a deadline.
fork, not a new interpreter, because a run of a small image takes
milliseconds and starting Python and loading the core would take longer.

A worker that crashes, exits early or hangs becomes a failed row naming the
signal, exit status or timeout, and the phase it was in; a strategy this
machine cannot run becomes one skipped row per op; the rest of the matrix
still runs. A worker never outlives the runner: it is killed with the runner
(PR_SET_PDEATHSIG), and killed and reaped when the runner is interrupted.
"""
import ctypes
import faulthandler
import json
import mmap
import os
import select
import signal
import sys
import time
import traceback
from dataclasses import dataclass, field
from typing import Optional

from wpcompare import binding, leftovers, strategies, worker
from wpcompare.errors import CacheStateError, WpcError
from wpcompare.image import CacheMode, PageCache
from wpcompare.options import Latency
from wpcompare.rows import NO_LATENCY, Row, RunSpec

DEFAULT_TIMEOUT = 120.0


# What a death by these signals usually means, for the person reading the row.
SIGNAL_HINTS = {
    signal.SIGBUS: "a page of the region could not be provided: was the image truncated "
                   "while mapped, or did huge pages run out?",
    signal.SIGKILL: "killed from outside: the OOM killer? (see dmesg)",
}


class WorkerFailure(Exception):
    """The child process produced no result; reason says what happened to it.

    phase: the phase the child had started and not finished, if it said (see PhaseNote).
    """

    def __init__(self, reason, phase=None):
        super().__init__(reason)
        self.reason = reason
        self.phase = phase


class PhaseNote:
    """A few bytes shared with one child, where it writes the phase it is in.

    Shared memory, not the result pipe: it survives the child's death by a
    signal and costs the child one store per phase.
    """

    SIZE = 64

    def __init__(self):
        self._page = mmap.mmap(-1, self.SIZE, flags=mmap.MAP_SHARED)

    def write(self, phase):
        data = phase.encode()[:self.SIZE - 1]
        self._page[:len(data) + 1] = data + b"\0"

    def read(self):
        text = self._page[:].split(b"\0", 1)[0].decode("utf-8", "replace")
        return text or None

    def close(self):
        self._page.close()


@dataclass(frozen=True)
class Injection:
    """Tests only: make the workers of one strategy (or all) fail this way after restore."""

    kind: str                      # worker.INJECTIONS
    target: Optional[str] = None   # strategy name or label; None: every run

    def applies_to(self, choice):
        return self.target is None or self.target in (choice.label, choice.strategy.name)


@dataclass
class Matrix:
    choices: list          # strategies.StrategyChoice, in display order
    ops: list              # "read", "write"
    pattern: object        # options.Pattern
    image: object          # image.Image
    threads: int = 1
    overlap: bool = False
    pin_threads: bool = True
    repeat: int = 5
    warmup: int = 1
    seed: int = 1
    cache: CacheMode = CacheMode("read")
    timeout: float = DEFAULT_TIMEOUT
    inject: Optional[Injection] = None
    # Per-page latencies come from runs of their own (latency_runs per row, default
    # repeat): a clock read around each access slows the accesses it times, so the
    # measured runs, whose touch time is the application's, time none.
    latency: Latency = Latency("off")
    latency_runs: Optional[int] = None
    bounds: list = field(default_factory=list)   # strategies.StrategyChoice of family "bound"


class Progress:
    """Told before and after every run; the base class shows nothing."""

    def started(self, index, total, spec):
        pass

    def finished(self, index, total, spec, row):
        pass

    def close(self):
        """The matrix is over (or interrupted): leave the terminal clean."""


def _passes(matrix, choice):
    """(warmup, runs, latency) of each kind of run a row gets: warmups and measured runs with
    no clock in the touch loop, then the instrumented runs (none for a bound, whose touch is
    of memory already loaded)."""
    passes = [(True, matrix.warmup, NO_LATENCY), (False, matrix.repeat, NO_LATENCY)]
    if matrix.latency.mode != "off" and choice.strategy.family != strategies.BOUND_FAMILY:
        runs = matrix.repeat if matrix.latency_runs is None else matrix.latency_runs
        passes.append((False, runs, matrix.latency))
    return passes


def plan(matrix, image_path=None):
    """Every run's rows.RunSpec, in order: bounds first, then per strategy and op, warmups first.

    image_path: the file the runs restore from, if not the image's own (a copy the page
    cache state was made with)."""
    specs = []
    for choice in list(matrix.bounds) + list(matrix.choices):
        inject = matrix.inject.kind if matrix.inject and matrix.inject.applies_to(choice) else None
        for op in matrix.ops:
            for warmup, count, latency in _passes(matrix, choice):
                for repetition in range(1, count + 1):
                    specs.append(RunSpec.for_choice(
                        choice,
                        image=image_path or matrix.image.path,
                        image_seed=matrix.image.seed,
                        image_kind=matrix.image.kind,
                        image_bytes=matrix.image.size,     # fixed when the image was opened
                        op=op,
                        pattern=matrix.pattern,
                        threads=matrix.threads,
                        overlap=matrix.overlap,
                        pin_threads=matrix.pin_threads,
                        seed=matrix.seed,
                        repetition=repetition,
                        warmup=warmup,
                        latency=latency,
                        inject=inject))
    return specs


def run_matrix(matrix, progress=None, page_cache=None, rows=None):
    """Run every spec of the matrix; return the rows (one per run, one per skipped strategy and op).

    page_cache: an entered image.PageCache holding the image in matrix.cache's state; None:
    one is made here (and its directory removed at the end). rows: a list each row is appended
    to as it finishes, so a caller interrupted (Ctrl-C) still has the finished ones."""
    if page_cache is None:
        with PageCache(matrix.image, matrix.cache) as own:
            return run_matrix(matrix, progress, own, rows)
    progress = progress or Progress()
    specs = plan(matrix, page_cache.path)
    rows = [] if rows is None else rows
    unavailable = {}           # label -> reason, from the first worker that probed it
    reported = set()           # (label, op) that already have their skipped row
    for index, spec in enumerate(specs):
        label, op = spec.label, spec.op
        if label in unavailable:
            if (label, op) not in reported:
                rows.append(Row.skipped(spec, unavailable[label]).to_json())
                reported.add((label, op))
            continue
        progress.started(index, len(specs), spec)
        try:
            page_cache.before_run()
        except CacheStateError as error:
            row = Row.failed(spec, error.reason, "cache").to_json()
        else:
            row = run_isolated(spec, matrix.timeout)
        progress.finished(index, len(specs), spec, row)
        if row["status"] == "skipped":
            unavailable[label] = row["reason"]
            reported.add((label, op))
        rows.append(row)
    page_cache.finish()
    return rows


def unavailable(argument):
    """None if the strategy (name, "param=value,..." text, image bytes) can run here, else
    the reason it cannot."""
    name, params, image_bytes = argument
    try:
        binding.probe_strategy(name, params or None, image_bytes)
    except WpcError as error:
        return error.reason
    return None


def unavailable_choices(choices, image_bytes, timeout=DEFAULT_TIMEOUT):
    """{label: reason} for each choice that cannot run here on an image of image_bytes; probed
    in a fresh process, as every run is (a probe may open a userfaultfd or reserve huge pages)."""
    arguments = [[choice.strategy.name, choice.params_text, image_bytes] for choice in choices]
    reasons = call_in_fresh_process(lambda each: [unavailable(argument) for argument in each],
                                    arguments, timeout)
    return {choice.label: reason for choice, reason in zip(choices, reasons) if reason is not None}


def skipped_rows(matrix, reasons):
    """The rows of a matrix none of whose strategies can run ({label: reason}), one per
    strategy and op, without running (or needing) anything."""
    rows, reported = [], set()
    for spec in plan(matrix):
        if (spec.label, spec.op) not in reported:
            rows.append(Row.skipped(spec, reasons[spec.label]).to_json())
            reported.add((spec.label, spec.op))
    return rows


def run_isolated(spec, timeout=DEFAULT_TIMEOUT):
    """The worker's row for spec (a rows.RunSpec, or its JSON object), or a failed row saying
    how its process died, and in which phase."""
    spec = RunSpec.coerce(spec)
    try:
        return call_in_fresh_process(worker.run_spec, spec, timeout, noted=True)
    except WorkerFailure as failure:
        return Row.failed(spec, failure.reason, failure.phase).to_json()


def call_in_fresh_process(function, argument, timeout=DEFAULT_TIMEOUT, noted=False):
    """function(argument) computed in a forked child; its JSON-able value, or WorkerFailure.

    noted: call function(argument, note) instead, where note(phase) tells the
    parent which phase the child is in, for the WorkerFailure if it dies.
    """
    # Buffered output would otherwise be written twice, once by each process.
    sys.stdout.flush()
    sys.stderr.flush()
    note = PhaseNote() if noted else None
    try:
        read_end, write_end = os.pipe()
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:
            call = (lambda value: function(value, note.write)) if note else function
            _child(call, argument, read_end, write_end, parent)
        os.close(write_end)
        try:
            payload, status = _collect(pid, read_end, timeout)
        except BaseException:
            # Interrupted (Ctrl-C) or broken: leave no worker behind.
            _kill_and_reap(pid)
            raise
        finally:
            os.close(read_end)
        phase = note.read() if note else None
    finally:
        if note:
            note.close()
    if status is None:
        raise WorkerFailure(f"timed out after {timeout:g} s", phase)
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        hint = SIGNAL_HINTS.get(number)
        raise WorkerFailure(f"worker killed by {signal.Signals(number).name}"
                            + (f": {hint}" if hint else ""), phase)
    if os.WEXITSTATUS(status) != 0:
        message = _decode(payload).get("error")
        raise WorkerFailure(message or f"worker exited with status {os.WEXITSTATUS(status)}", phase)
    message = _decode(payload)
    if "value" not in message:
        raise WorkerFailure("worker exited without a result", phase)
    return message["value"]


def _decode(payload):
    try:
        message = json.loads(payload)
    except ValueError:
        return {}
    return message if isinstance(message, dict) else {}


_CHILD_FAILED = 70   # EX_SOFTWARE


_PR_SET_PDEATHSIG = 1


def _die_with_parent(parent):
    """Be killed when the runner dies, however it dies (SIGKILL included)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    # The parent may have died before prctl: then nobody would tell us.
    if os.getppid() != parent:
        os._exit(_CHILD_FAILED)


def _child(function, argument, read_end, write_end, parent):
    """Runs in the forked child; never returns."""
    status = _CHILD_FAILED
    try:
        _die_with_parent(parent)
        os.close(read_end)
        # The parent handles Ctrl-C (and SIGTERM, SIGHUP) and kills its workers; a worker just dies.
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        leftovers.default_termination_handlers()
        # A crash is reported by the parent from the wait status; an inherited
        # faulthandler (pytest's) would dump the parent's stack, which misleads.
        faulthandler.disable()
        try:
            message = {"value": function(argument)}
            status = 0
        except Exception as error:
            # To the real stderr: the parent's sys.stderr may be a test's buffer.
            os.write(2, traceback.format_exc().encode())
            message = {"error": f"worker raised {type(error).__name__}: {error}"}
        view = memoryview(json.dumps(message).encode())
        while view:
            view = view[os.write(write_end, view):]
    finally:
        # No atexit handlers, no flushing of the parent's buffers: they are the parent's.
        os._exit(status)


def _collect(pid, read_end, timeout):
    """(everything the child wrote, its wait status); status None if it ran out of time."""
    deadline = time.monotonic() + timeout
    chunks = []
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            _kill_and_reap(pid)
            return b"".join(chunks), None
        readable, _, _ = select.select([read_end], [], [], remaining)
        if readable:
            chunk = os.read(read_end, 1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
    # The pipe closes when the child exits, or earlier if it closed it and hangs.
    pause = 0.001
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return b"".join(chunks), status
        if time.monotonic() >= deadline:
            _kill_and_reap(pid)
            return b"".join(chunks), None
        time.sleep(pause)
        pause = min(pause * 2, 0.05)


def _kill_and_reap(pid):
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass
