"""`wpcompare check`: the correctness battery, for any strategy the table (or a plugin) holds.

A strategy is a name resolved like every other (strategies.parse_choice); the battery knows
none by name. Every case runs in a fresh worker (runner.run_isolated, or
runner.call_in_fresh_process for the cases that act between phases), so a crash is a failed
case with its signal and the rest of the battery still runs.

What the cases check (CASES lists them, in order; QUICK is the short battery):
- sizes: one page, a tail that is not whole pages, whole pages but not a multiple of any
  chunk, 64 MiB; patterns seq/random/sparse with read, write and mixed; 1, 4 and 8 threads,
  with and without overlap. Every byte is verified (the C core's verify: image plus every
  thread's known writes; a lost write names its page, byte offset and thread), every page
  touched, the dirty set complete, and after fixup the region detached.
- racing: writers racing the strategy's background work, retried until a run shows both
  sides did work (OVERLAP_EVIDENCE) and kept going for --seconds; a strategy that reports
  no background work is a SKIP saying so.
- detach: after fixup the image is truncated and unlinked, then every byte verified: a
  chunk still mapping it would SIGBUS.
- leaves-nothing: descriptors, image/memfd/hugetlb mappings, huge pages, threads, signal
  handlers and address space as before the run (process_state), for a completed run and
  one torn down with its background work still running.
- segv-outside: a SIGSEGV outside the region still kills the process by SIGSEGV.
- inject: the C core's fault injection (mremap failing with ENOMEM, the fault handler
  thread exiting) ends in a clear one-line failure or in every byte verified, never in
  wrong data, a crash or a hang.
- hugetlb: the strategy's page=2M where it has that parameter (a SKIP with the probe's
  reason where no huge pages can be had).

Results are Result objects; tap_lines() renders them as kselftest's TAP 13, document() as
the -o JSON.
"""
import ctypes
import faulthandler
import mmap
import os
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Optional

from wpcompare import binding, documents, leftovers, plugins, process_state, runner
from wpcompare.errors import WpcError
from wpcompare.options import parse_pattern
from wpcompare.rows import RunSpec

PAGE = binding.PAGE_SIZE
KIND = "wpcompare.check"
FORMAT_VERSION = 1

# Image sizes: a tail that is not whole pages; whole pages, but a multiple of no chunk size
# a strategy offers (4K excepted); the default size of the workload cases.
ONE_PAGE = PAGE
TAIL_SIZE = (1 << 20) + 3 * PAGE + 123
NOT_CHUNK_MULTIPLE = (3 << 20) + 5 * PAGE
BASE_SIZE = (4 << 20) + 2 * PAGE + 1000
LARGE_SIZE = 64 << 20
RACING_SIZE = 16 << 20

# Counter pairs (by a fault, by background work): a run where both are above zero had its
# writers and the strategy's background work overlap. A strategy (a plugin too) that
# reports one of these pairs can be raced; one that reports neither has no background
# work the battery can see.
OVERLAP_EVIDENCE = (("chunks_by_fault", "chunks_by_background"),
                    ("handler_pages", "loader_pages"))


def overlap_seen(counters):
    """Whether a run's counters show its writers and the strategy's background work overlapping."""
    return any(counters.get(by_fault, 0) > 0 and counters.get(by_background, 0) > 0
               for by_fault, by_background in OVERLAP_EVIDENCE)


DEFAULT_TIMEOUT = 60.0 * (4 if os.environ.get("WPCOMPARE_SANITIZED") else 1)
# Racing runs before a battery gives up on seeing an overlap (more with --seconds).
RACING_ATTEMPTS = {"quick": 4, "full": 12}


@dataclass(frozen=True)
class Case:
    name: str
    kind: str                      # "workload", "racing", "detach", "leaves-nothing", ...
    size: int = BASE_SIZE
    op: str = "mixed"
    pattern: str = "random"
    threads: int = 4
    overlap: bool = False
    quick: bool = False            # in the short battery
    inject: Optional[str] = None   # worker.INJECTIONS, for kind "inject"
    params: tuple = ()             # ((name, value), ...) the case sets, where the strategy has them
    describe: str = ""


def _workload(name, quick=False, **fields):
    return Case(name, "workload", quick=quick, **fields)


CASES = (
    _workload("size-one-page", quick=True, size=ONE_PAGE, op="write", pattern="seq", threads=1,
              describe="an image of one page, written"),
    _workload("size-tail", quick=True, size=TAIL_SIZE,
              describe="an image ending inside its last page"),
    _workload("size-not-chunk-multiple", size=NOT_CHUNK_MULTIPLE, op="write",
              describe="whole pages, a multiple of no chunk above 4K"),
    _workload("size-64M", size=LARGE_SIZE, op="write",
              describe="64 MiB written at random by 4 threads"),
    *(_workload(f"{pattern.split(':')[0]}-{op}", quick=(pattern, op) == ("sparse:0.3", "mixed"),
                op=op, pattern=pattern, describe=f"pattern {pattern}, op {op}")
      for pattern in ("seq", "random", "sparse:0.3") for op in ("read", "write", "mixed")),
    _workload("threads-1", threads=1, describe="one thread, mixed"),
    _workload("threads-4", threads=4, describe="4 threads, mixed"),
    _workload("threads-8", threads=8, describe="8 threads, mixed"),
    _workload("threads-4-overlap", threads=4, overlap=True,
              describe="4 threads each touching every page"),
    _workload("threads-8-overlap", quick=True, threads=8, overlap=True, op="write", pattern="seq",
              describe="8 threads writing every page in order: faults on the same chunks at once"),
    Case("racing-writers", "racing", size=RACING_SIZE, op="write", threads=4, quick=True,
         describe="4 writers at random while the strategy's background work runs"),
    Case("racing-writers-overlap", "racing", size=RACING_SIZE + PAGE, op="write", pattern="seq",
         threads=8, overlap=True,
         describe="8 writers of every page while the strategy's background work runs"),
    Case("detach", "detach", size=TAIL_SIZE, op="write", quick=True,
         describe="after fixup the image is truncated and unlinked, then verified"),
    Case("leaves-nothing", "leaves-nothing", size=4 << 20, quick=True,
         describe="a completed run leaves its process as it found it"),
    Case("leaves-nothing-torn-down", "leaves-nothing-torn-down", size=8 << 20,
         describe="a run destroyed right after touch, background work still running"),
    Case("segv-outside-region", "segv-outside", size=1 << 20, quick=True,
         describe="a SIGSEGV outside the region kills the process"),
    Case("inject-mremap-enomem", "inject", size=2 << 20, op="write", inject="mremap-enomem:1",
         quick=True, describe="the first mremap fails with ENOMEM"),
    Case("inject-mremap-enomem-later", "inject", size=2 << 20, op="mixed", inject="mremap-enomem:3",
         describe="the third mremap fails with ENOMEM"),
    Case("inject-handler-exit", "inject", size=8 << 20, op="write", inject="handler-exit:1",
         quick=True, describe="the fault handler thread exits after its first fault"),
    Case("hugetlb-2M", "workload", size=(8 << 20) + 3 * PAGE, params=(("page", "2M"),),
         describe="page=2M, where the strategy has it"),
)

CASE_NAMES = tuple(case.name for case in CASES)
QUICK = tuple(case.name for case in CASES if case.quick)


def select_cases(cases="full"):
    """The Case objects of "quick", "full", or a list of case names (ValueError naming the
    valid ones for an unknown name)."""
    if cases == "full":
        return list(CASES)
    if cases == "quick":
        return [case for case in CASES if case.quick]
    if isinstance(cases, str):
        cases = [cases]
    unknown = [name for name in cases if name not in CASE_NAMES]
    if unknown:
        raise ValueError(f"unknown check case {', '.join(map(repr, unknown))}; valid: quick, full, "
                         f"or any of {', '.join(CASE_NAMES)}")
    return [case for case in CASES if case.name in cases]


@dataclass
class Result:
    """One case of one strategy: status "ok", "failed" or "skipped"."""

    label: str
    case: str
    status: str
    reason: Optional[str] = None
    seconds: float = 0.0
    detail: dict = field(default_factory=dict)

    @property
    def name(self):
        return f"{self.label}: {self.case}"

    def to_json(self):
        return {"strategy": self.label, "case": self.case, "status": self.status,
                "reason": self.reason, "seconds": round(self.seconds, 3), "detail": self.detail}


def _ok(detail=None):
    return "ok", None, detail or {}


def _failed(reason, detail=None):
    return "failed", reason, detail or {}


def _skipped(reason, detail=None):
    return "skipped", reason, detail or {}


# ---- images ----

class Images:
    """Generated images of the sizes the cases ask for, in a private directory: made on entering
    the block and removed when it ends, however it ends (leftovers.owned_directory)."""

    SEED = 7
    KIND = "random"     # no zero page: a page never copied shows

    def __init__(self):
        self.directory = None
        self._owned = None
        self._paths = {}

    def path(self, size):
        if size not in self._paths:
            path = os.path.join(self.directory, f"image-{size}.img")
            binding.generate_image(path, size, self.SEED, self.KIND)
            self._paths[size] = path
        return self._paths[size]

    def scratch_copy(self, size):
        """A copy of the image of `size` the case may truncate and unlink."""
        fd, path = tempfile.mkstemp(dir=self.directory, prefix="scratch-", suffix=".img")
        os.close(fd)
        shutil.copyfile(self.path(size), path)
        return path

    def __enter__(self):
        # Named by the owner's pid: what a battery killed by SIGKILL left, the next
        # `check` (leftovers.remove_stale) removes.
        self._owned = leftovers.owned_directory(None, prefix=leftovers.CHECK_PREFIX)
        self.directory = self._owned.__enter__()
        return self

    def __exit__(self, *exc):
        return self._owned.__exit__(*exc)


# ---- judging one run's row ----

def expected_touched(pages, case):
    pattern = parse_pattern(case.pattern)
    if pattern.kind == "sparse":
        touched = max(1, int(pages * pattern.fraction + 0.5))
    elif pattern.kind == "stride":
        touched = (pages + pattern.stride - 1) // pattern.stride
    else:
        touched = pages
    return touched * (case.threads if case.overlap else 1)


def _failure_text(row):
    phase = f"{row['failed_phase']}: " if row.get("failed_phase") else ""
    return f"{phase}{row.get('reason') or 'failed without a reason'}"


def judge_row(row, case, pages):
    """(status, reason, detail) of one worker row for a case whose runs must end ok."""
    if row["status"] == "skipped":
        return _skipped(row["reason"])
    if row["status"] != "ok":
        return _failed(_failure_text(row))
    if not row["verified"] or row["mismatched_pages"]:
        return _failed(f"{row['mismatched_pages']} pages differ, first at page "
                       f"{row['first_mismatch_page']}, yet the run reported ok")
    want = expected_touched(pages, case)
    if row["touched_pages"] != want:
        return _failed(f"touched {row['touched_pages']} pages, expected {want}")
    if row["dirty"] and row["dirty"]["missing"]:
        return _failed(f"dirty set misses {row['dirty']['missing']} written pages")
    if not row["detached"]:
        return _failed("after fixup the region is not detached: the image is "
                       f"{'still' if row['image_mapped'] else 'not'} mapped, "
                       f"{row['foreign_vmas']} foreign VMAs in the region")
    return _ok(documents.wide_integers_as_text({"checksum": row["checksum"]}))


def _spec(choice, case, image_path, *, params=None, seed=1, pin=True, inject=None):
    return RunSpec(strategy=choice.strategy.name, params=params if params is not None else choice.params,
                   label=choice.label, image=image_path, image_seed=Images.SEED,
                   image_kind=Images.KIND, image_bytes=case.size, op=case.op,
                   pattern=parse_pattern(case.pattern), threads=case.threads, overlap=case.overlap,
                   pin_threads=pin, seed=seed, inject=inject)


def _pages(size):
    return -(-size // PAGE)


def _case_params(choice, case):
    """The choice's params with the case's own (which must exist and not be set already);
    None with the reason when they do not apply."""
    params = list(choice.params)
    for name, value in case.params:
        spec = choice.strategy.param(name)
        if spec is None or (spec.choices and value not in spec.choices):
            return None, f"{choice.strategy.name} has no parameter {name}={value}"
        if any(given == name for given, _ in params):
            return None, f"{name} is set by the strategy under test ({choice.label})"
        params.append((name, value))
    order = [spec.name for spec in choice.strategy.params]
    return tuple(sorted(params, key=lambda pair: order.index(pair[0]))), None


# ---- the cases ----

class Battery:
    """The cases of one battery, run for one strategy choice after another."""

    def __init__(self, cases="full", seconds=0.0, timeout=DEFAULT_TIMEOUT, injection=None):
        """cases: "quick", "full" or a list of case names; seconds: how long each racing case
        keeps going once it has seen an overlap; inject: tests only, a worker.INJECTIONS kind
        given to every workload and racing run (a lost write the battery must catch)."""
        self.cases = select_cases(cases)
        self.mode = "quick" if cases == "quick" else "full"
        self.seconds = seconds
        self.timeout = timeout
        self.injection = injection

    def run(self, choices, images, report=None):
        """Results of every case for every choice, in order; report(result) after each."""
        results = []
        for choice in choices:
            for case in self.cases:
                started = time.monotonic()
                status, reason, detail = self.run_case(choice, case, images)
                result = Result(choice.label, case.name, status, reason,
                                time.monotonic() - started, detail)
                results.append(result)
                if report:
                    report(result)
        return results

    def run_case(self, choice, case, images):
        handler = getattr(self, "_" + case.kind.replace("-", "_"))
        try:
            return handler(choice, case, images)
        except runner.WorkerFailure as failure:
            phase = f" in {failure.phase}" if failure.phase else ""
            return _failed(f"{failure.reason}{phase}")

    def _workload(self, choice, case, images):
        params, why = _case_params(choice, case)
        if params is None:
            return _skipped(why)
        spec = _spec(choice, case, images.path(case.size), params=params, inject=self.injection)
        return judge_row(runner.run_isolated(spec, self.timeout), case, _pages(case.size))

    def _racing(self, choice, case, images):
        """Runs until one shows writers and background work overlapping, then on for
        self.seconds; every run's bytes must verify."""
        path, pages = images.path(case.size), _pages(case.size)
        started, attempts, overlapped, reported, background = time.monotonic(), 0, 0, set(), False
        limit = RACING_ATTEMPTS[self.mode]
        while True:
            # Pinned, the threads share CPUs in a fixed way; unpinned, the scheduler mixes them.
            spec = _spec(choice, case, path, seed=attempts + 1, pin=attempts % 2 == 0,
                         inject=self.injection)
            row = runner.run_isolated(spec, self.timeout)
            attempts += 1
            status, reason, _ = judge_row(row, case, pages)
            if status != "ok":
                if status == "failed" and attempts > 1:
                    reason = f"run {attempts} (seed {spec.seed}): {reason}"
                return status, reason, {"runs": attempts, "overlapped": overlapped}
            counters = row.get("counters") or {}
            pairs = [pair for pair in OVERLAP_EVIDENCE if all(name in counters for name in pair)]
            reported.update(name for pair in pairs for name in pair)
            background |= any(counters[by_background] > 0 for _, by_background in pairs)
            if overlap_seen(counters):
                overlapped += 1
            elapsed = time.monotonic() - started
            if overlapped and elapsed >= self.seconds:
                break
            if not overlapped and attempts >= limit and elapsed >= self.seconds:
                break
        detail = {"runs": attempts, "overlapped": overlapped,
                  "seconds": round(time.monotonic() - started, 3)}
        if not reported:
            names = ", ".join("/".join(pair) for pair in OVERLAP_EVIDENCE)
            return _skipped(f"no background work to race: the strategy reports none of the "
                            f"counters {names}", detail)
        if not background:
            names = ", ".join(sorted(name for _, name in OVERLAP_EVIDENCE if name in reported))
            return _skipped(f"no background work with these parameters: {names} stayed 0 in "
                            f"{attempts} runs", detail)
        if not overlapped:
            return _skipped(f"writers and background work never overlapped in {attempts} runs "
                            "(with these parameters, or on this machine): the race was not tested",
                            detail)
        return _ok(detail)

    def _detach(self, choice, case, images):
        path = images.scratch_copy(case.size)
        try:
            out = runner.call_in_fresh_process(_detach_then_destroy_image,
                                               (path, choice.strategy.name, choice.params_text,
                                                case), self.timeout)
        finally:
            if os.path.exists(path):
                os.unlink(path)
        if "skipped" in out:
            return _skipped(out["skipped"])
        if out.get("failed"):
            return _failed(out["failed"])
        if not out["detached"]:
            return _failed("after fixup the region still maps the image, or a VMA not the "
                           "region's lies in it")
        return _ok(out)

    def _leaves_nothing(self, choice, case, images, stop="verify"):
        out = runner.call_in_fresh_process(_run_and_compare, (images.path(case.size),
                                           choice.strategy.name, choice.params_text, case, stop),
                                           self.timeout)
        if "skipped" in out:
            return _skipped(out["skipped"])
        if out["failed"]:
            return _failed(out["failed"])
        left = out["differences"]
        if left:
            key = sorted(left)[0]
            before, after = left[key]
            return _failed(f"left {', '.join(sorted(left))} behind: {key} before {before!r}, "
                           f"after {after!r}", out)
        if out["still_mapped"]:
            return _failed(f"the region is still mapped after destroy: {out['still_mapped'][0]}", out)
        if out["growth"]:
            return _failed(f"left address space behind: growth {out['growth']}", out)
        return _ok({"ran": out["done"]})

    def _leaves_nothing_torn_down(self, choice, case, images):
        return self._leaves_nothing(choice, case, images, stop="touch")

    def _segv_outside(self, choice, case, images):
        path = images.path(case.size)
        why = runner.call_in_fresh_process(_probe_in_child, (choice.strategy.name,
                                           choice.params_text, path), self.timeout)
        if why:
            return _skipped(why)
        deaths = {}
        for where in ("unmapped", "read-only"):
            status = _exit_status(_fault_outside_region, (path, choice.strategy.name,
                                  choice.params_text, case, where), self.timeout)
            if status is None:
                return _failed(f"a write to an {where} address outside the region hung")
            if os.WIFEXITED(status):
                return _failed(f"a write to an {where} address outside the region did not kill the "
                               f"process (it exited with status {os.WEXITSTATUS(status)})")
            if os.WTERMSIG(status) != signal.SIGSEGV:
                return _failed(f"a write to an {where} address outside the region killed the "
                               f"process by {signal.Signals(os.WTERMSIG(status)).name}, not SIGSEGV")
            deaths[where] = "SIGSEGV"
        return _ok(deaths)

    def _inject(self, choice, case, images):
        """Survived (every byte verified) or failed with a clear reason: never wrong bytes,
        a crash or a hang."""
        spec = _spec(choice, case, images.path(case.size), inject=case.inject)
        row = runner.run_isolated(spec, self.timeout)
        if row["status"] == "skipped":
            return _skipped(row["reason"])
        if row["status"] == "ok":
            status, reason, detail = judge_row(row, case, _pages(case.size))
            if status == "ok":
                detail["outcome"] = "survived: every byte verified"
            return status, reason, detail
        reason = row.get("reason") or ""
        if "differ from the image" in reason:
            return _failed(f"wrong data after {case.inject}: {_failure_text(row)}")
        if not reason or "\n" in reason or "timed out" in reason or "killed by" in reason:
            return _failed(f"no clear failure after {case.inject}: {_failure_text(row)}")
        return _ok({"outcome": f"failed clearly: {_failure_text(row)}"})


# ---- bodies run in forked children ----

def _open_run(image_path, strategy, params, case, **workload):
    fields = dict(op=case.op, pattern=parse_pattern(case.pattern), threads=case.threads,
                  overlap=case.overlap, seed=3, pin_threads=True)
    fields.update(workload)
    return binding.Run(image_path=image_path, image_seed=Images.SEED, image_kind=Images.KIND,
                       strategy=strategy, params=params or None, **fields)


def _probe(strategy, params, image_path):
    """The probe's reason where the strategy cannot run here, else None."""
    try:
        binding.probe_strategy(strategy, binding.Choice(strategy, params or None),
                               os.stat(image_path).st_size)
    except WpcError as error:
        return error.reason
    return None


def _probe_in_child(argument):
    strategy, params, image_path = argument
    return _probe(strategy, params, image_path)


def _detach_then_destroy_image(argument):
    image_path, strategy, params, case = argument
    why = _probe(strategy, params, image_path)
    if why:
        return {"skipped": why}
    with _open_run(image_path, strategy, params, case) as run:
        try:
            run.restore()
            run.touch()
            run.fixup()
        except WpcError as error:
            return {"failed": error.reason}
        os.truncate(image_path, 0)
        os.unlink(image_path)
        # The image's page cache is gone: a chunk still mapping it would SIGBUS here.
        try:
            run.verify()
        except WpcError as error:
            return {"failed": f"verify with the image gone: {error.reason}"}
        result = run.result
        return {"verified": bool(result.verified), "detached": bool(result.detached)}


def run_through(run, stop):
    """Run an open binding.Run's phases up to `stop`, or until one fails: (phases done,
    "phase: reason" of the failure or None, the region as first seen)."""
    done, failed, region = [], None, None
    for phase in binding.PHASES[:binding.PHASES.index(stop) + 1]:
        try:
            getattr(run, phase)()
        except WpcError as error:
            failed = f"{phase}: {error.reason}"
            break
        done.append(phase)
        region = region or run.region()
    return done, failed, region


def _run_phases(image_path, strategy, params, case, stop):
    """Run up to `stop` (or through a failure) and destroy: (phases done, failure, region)."""
    with _open_run(image_path, strategy, params, case, seed=5) as run:
        return run_through(run, stop)


def _run_and_compare(argument):
    image_path, strategy, params, case, stop = argument
    why = _probe(strategy, params, image_path)
    if why:
        return {"skipped": why}
    # A first run fills what the C library keeps for reuse, not a leak: cached thread
    # stacks and per-thread malloc arenas.
    _run_phases(image_path, strategy, params, case, stop)
    space_before = process_state.address_space()
    before = process_state.state(image_path)
    done, failed, region = _run_phases(image_path, strategy, params, case, stop)
    still_mapped = process_state.mapped_within(*region) if region else []
    after = process_state.settled_state(image_path, before["threads"])
    space_after = process_state.address_space()
    sanitized = "address" in os.environ.get("WPCOMPARE_SANITIZED", "")
    return {"done": done, "failed": failed, "still_mapped": still_mapped,
            "differences": process_state.differences(before, after),
            # ASan's allocator maps and unmaps as it likes.
            "growth": {} if sanitized else process_state.address_space_grew(space_before,
                                                                            space_after)}


_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                       ctypes.c_int, ctypes.c_long)
_libc.memset.argtypes = (ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t)


def _fault_outside_region(argument):
    """Restore and touch, then write outside the region: must die of SIGSEGV."""
    image_path, strategy, params, case, where = argument
    run = _open_run(image_path, strategy, params, case, op="write",
                    pattern=parse_pattern("sparse:0.5"))
    run.restore()
    run.touch()
    if where == "unmapped":
        _libc.memset(16, 0, 1)                                   # SEGV_MAPERR
    else:
        page = _libc.mmap(None, mmap.PAGESIZE, mmap.PROT_READ,
                          mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS, -1, 0)
        _libc.memset(page, 0, 1)                                 # SEGV_ACCERR, not the region
    os._exit(0)


def _exit_status(function, argument, timeout):
    """function(argument) in a forked child with stderr silenced: its wait status, None if
    it was still running after timeout (then killed). The child exits 0 when function
    returns, 3 when it raises."""
    sys.stdout.flush()
    sys.stderr.flush()
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:
        code = 3
        try:
            runner._die_with_parent(parent)
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 2)
            # The default action, not an inherited faulthandler, must meet a SIGSEGV the
            # strategy passes on.
            faulthandler.disable()
            signal.signal(signal.SIGSEGV, signal.SIG_DFL)
            function(argument)
            code = 0
        finally:
            os._exit(code)
    deadline = time.monotonic() + timeout
    try:
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                return status
            if time.monotonic() > deadline:
                runner._kill_and_reap(pid)
                return None
            time.sleep(0.005)
    except BaseException:
        runner._kill_and_reap(pid)
        raise


# ---- output ----

def tap_header(total):
    return ["TAP version 13", f"1..{total}"]


def tap_line(number, result):
    """One TAP line: `ok N - case`, `not ok N - case: reason`, `ok N - case # SKIP reason`."""
    if result.status == "ok":
        return f"ok {number} - {result.name}"
    if result.status == "skipped":
        return f"ok {number} - {result.name} # SKIP {result.reason}"
    return f"not ok {number} - {result.name}: {result.reason}"


def totals(results, seconds):
    counts = {"passed": 0, "failed": 0, "skipped": 0}
    for result in results:
        counts[{"ok": "passed", "failed": "failed", "skipped": "skipped"}[result.status]] += 1
    return dict(counts, cases=len(results), seconds=round(seconds, 3))


def summary_line(counts):
    """kselftest's totals line, with the seconds the battery took."""
    return (f"# Totals: pass:{counts['passed']} fail:{counts['failed']} skip:{counts['skipped']} "
            f"({counts['cases']} cases in {counts['seconds']:.1f} s)")


def exit_status(counts):
    """0 only if no case failed."""
    return 1 if counts["failed"] else 0


def document(results, counts, choices, battery, command_line):
    return {
        "kind": KIND,
        "format_version": FORMAT_VERSION,
        "metadata": {"command_line": command_line, "cases": battery.mode if battery.mode == "quick"
                     else [case.name for case in battery.cases],
                     "seconds_per_racing_case": battery.seconds,
                     "strategies": [choice.label for choice in choices],
                     "plugins": plugins.loaded()},
        "totals": counts,
        "results": [dict(result.to_json(), number=number)
                    for number, result in enumerate(results, 1)],
    }
