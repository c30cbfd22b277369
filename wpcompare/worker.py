"""One isolated run: probe, restore, touch, fixup, verify, and the result as JSON-able data.

The runner calls run_spec() with a rows.RunSpec in a fresh process for every run. Stand-alone:

    python -m wpcompare.worker < spec.json

prints the row. A spec file is rows.RunSpec.to_json()'s object: image (required), strategy
(required), params {name: value}, label, image_seed, image_kind, image_bytes, op, write_fraction,
pattern {kind, fraction, stride, and path for a trace} (or as typed: "seq", "random",
"sparse:F", "stride:N", "trace:PATH": see wpcompare.trace; a trace's op, write fraction and
overlap do not apply, its threads must be the trace's), threads, overlap, pin_threads, seed,
repetition, warmup, latency ("none": no clock inside the touch loop, so touch's time is the
application's; "every"; "sample:N"), inject (tests only: a failure to cause, INJECTIONS, as
KIND or KIND:N).
"""
import json
import mmap
import os
import re
import signal
import sys
import time

from wpcompare import binding, metrics
from wpcompare.process_memory import RunMemory
from wpcompare.errors import WpcError
from wpcompare.rows import Row, RunSpec
from wpcompare.trace import check_region

# Failures tests cause on purpose. Right after restore: "segv", "abort", "kill" (as
# the OOM killer would), "hang", "truncate" (the image file cut to half while
# the region may still map it), "hugepages" (every free 2 MiB huge page taken
# for the rest of the run). From the start, through the C core's test-only
# hooks (csrc/fault_inject.c): "mremap-enomem:N" (the N-th and every later
# mremap fails with ENOMEM), "handler-exit:N" (a fault handler thread exits
# after serving N faults) and "lose-write:N" (page N's first write is undone
# before verify, as a copy-and-remap that lost it would leave it).
INJECTIONS = ("segv", "abort", "kill", "hang", "truncate", "hugepages", "mremap-enomem",
              "handler-exit", "lose-write")
_INJECTION_ENVIRONMENT = {"mremap-enomem": "WPCOMPARE_INJECT_MREMAP_ENOMEM",
                          "handler-exit": "WPCOMPARE_INJECT_HANDLER_EXIT",
                          "lose-write": "WPCOMPARE_INJECT_LOSE_WRITE"}
HUGE_PAGE_DIR = "/sys/kernel/mm/hugepages/hugepages-2048kB"
_MAP_HUGETLB = 0x40000      # not exported by Python's mmap module


def parse_injection(text):
    """(kind, count) from "KIND" or "KIND:N"; ValueError naming the valid kinds."""
    kind, sep, count = str(text).partition(":")
    if kind not in INJECTIONS:
        raise ValueError(f"inject must be one of {', '.join(INJECTIONS)} (optionally KIND:N), "
                         f"not {text!r}")
    if not sep:
        return kind, 1
    least = 0 if kind == "lose-write" else 1      # a page number, or a count
    if kind not in _INJECTION_ENVIRONMENT or not re.fullmatch("[0-9]+", count) or int(count) < least:
        raise ValueError(f"inject {text!r}: only {', '.join(_INJECTION_ENVIRONMENT)} take a count "
                         "N >= 1 (lose-write's N: a page, >= 0)")
    return kind, int(count)


def check_spec(spec):
    """spec as a RunSpec, its injection checked; ValueError naming what is wrong."""
    spec = RunSpec.coerce(spec)
    if spec.inject is not None:
        parse_injection(spec.inject)
    return spec


def _negative_as_none(value):
    return None if value < 0 else value


def result_fields(result):
    """The measurements of a struct wpc_result, as far as the run got: a row's fields besides
    its identity, and every metric the registry copies from a C field (metrics.c_fields)."""
    phases = {}
    for index, name in enumerate(binding.PHASES):
        stats = result.phase[index]
        phases[name] = {
            "ns": _negative_as_none(stats.ns),
            "minflt": stats.minflt,
            "majflt": stats.majflt,
            "vmas": _negative_as_none(stats.vmas),
        }
    dirty = None
    if result.dirty_known:
        dirty = {"reported": result.dirty_reported, "missing": result.dirty_missing,
                 "extra": result.dirty_extra}
    fields = {
        "phases": phases,
        "time_to_touched_ns": _negative_as_none(result.time_to_touched_ns),
        "image_bytes": result.image_bytes,
        "region_bytes": result.region_bytes,
        "tail_bytes": result.tail_bytes,
        "pages": result.pages,
        "touched_pages": result.touched_pages,
        "checksum": result.checksum,
        "verified": bool(result.verified),
        "mismatched_pages": result.mismatched_pages,
        "first_mismatch_page": _negative_as_none(result.first_mismatch_page),
        "detached": bool(result.detached),
        "image_mapped": bool(result.image_mapped),
        "foreign_vmas": _negative_as_none(result.foreign_vmas),
        "dirty": dirty,
        "app_cpu": _negative_as_none(result.app_cpu),
        "handler_cpu": _negative_as_none(result.handler_cpu),
        "histograms": {"touch": binding.export_histogram(result.touch),
                       "handler": binding.export_histogram(result.handler)},
        "counters": {binding.result_text(result.counters[i].name): result.counters[i].value
                     for i in range(result.ncounters)},
    }
    for key, name in metrics.c_fields():
        fields[key] = _negative_as_none(getattr(result, name))
    return fields


_hog = []     # what "hugepages" took: held until the process exits


def _take_every_huge_page():
    """Map and fault in every free 2 MiB huge page; (pages taken, free afterwards)."""
    free = max(0, (_read_int(f"{HUGE_PAGE_DIR}/free_hugepages") or 0)
               - (_read_int(f"{HUGE_PAGE_DIR}/resv_hugepages") or 0))
    size = 2 << 20
    for count in range(free, 0, -1):
        try:
            # A private hugetlb mapping reserves its pages when it is made.
            hog = mmap.mmap(-1, count * size, flags=mmap.MAP_PRIVATE | _MAP_HUGETLB)
        except OSError:
            continue
        for offset in range(0, count * size, size):
            hog[offset] = 1
        _hog.append(hog)
        return count, _read_int(f"{HUGE_PAGE_DIR}/free_hugepages")
    return 0, free


def _read_int(path):
    try:
        with open(path) as source:
            return int(source.read())
    except (OSError, ValueError):
        return None


def _inject(kind, spec):
    """Fail the way a broken strategy or machine would, so tests can show what the runner makes of it.

    Returns what a test needs to know about the injection, or None."""
    if kind == "segv":
        # The default action, not a strategy's or faulthandler's handler, must see it.
        signal.signal(signal.SIGSEGV, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGSEGV)
    elif kind == "abort":
        os.abort()
    elif kind == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif kind == "hang":
        while True:
            time.sleep(3600)
    elif kind == "truncate":
        size = os.stat(spec.image).st_size
        os.truncate(spec.image, size // 2 // binding.PAGE_SIZE * binding.PAGE_SIZE)
        return {"truncated_to": os.stat(spec.image).st_size}
    elif kind == "hugepages":
        taken, free = _take_every_huge_page()
        return {"hugepages_taken": taken, "hugepages_free_after": free}
    return None


def _no_note(phase):
    pass


def _image_bytes(path):
    """The image's size for the probe; 0 (any) when it cannot be read: create says why."""
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


def run_spec(spec, note=_no_note):
    """Run what spec (a rows.RunSpec, or its JSON object) asks for in this process and return
    the row, JSON-able.

    note(phase) is called as each phase starts and note("") as it ends, so a
    runner that sees the process die knows where it was.
    """
    spec = check_spec(spec)
    row = Row(spec)
    params = spec.params_text or None
    injection = parse_injection(spec.inject) if spec.inject else None
    try:
        # Parsed once, here: the probe and the run take the same parsed parameters.
        choice = binding.Choice(spec.strategy, params)
        binding.probe_strategy(spec.strategy, choice, _image_bytes(spec.image))
    except WpcError as error:
        return Row.skipped(spec, error.reason).to_json()
    if injection and injection[0] in _INJECTION_ENVIRONMENT:
        # Read by wpc_run_create; this process is the run's alone.
        os.environ[_INJECTION_ENVIRONMENT[injection[0]]] = str(injection[1])
    try:
        if spec.pattern.kind == "trace":
            check_region(binding.loaded_trace(spec.pattern.path),
                         spec.image_bytes or _image_bytes(spec.image))
        run = binding.Run(
            image_path=spec.image, image_seed=spec.image_seed, image_kind=spec.image_kind,
            strategy=spec.strategy, params=choice, op=spec.op, pattern=spec.pattern,
            threads=spec.threads, overlap=spec.overlap, seed=spec.seed, pin_threads=spec.pin_threads,
            write_fraction=spec.write_fraction, latency=spec.latency.mode,
            latency_every=spec.latency.every, image_bytes=spec.image_bytes)
    except WpcError as error:
        row.fail(error.reason, "create")
        row.measurements = {}
        return row.to_json()
    with run:
        memory = RunMemory()
        for phase in binding.PHASES:
            note(phase)
            try:
                getattr(run, phase)()
            except WpcError as error:
                row.fail(error.reason, phase)
                break
            finally:
                note("")
            if phase == "restore" and injection and injection[0] not in _INJECTION_ENVIRONMENT:
                row.injection = _inject(injection[0], spec)
        row.measurements = result_fields(run.result)
        row.measurements["memory"] = memory.finish()
    return row.to_json()


def main():
    try:
        spec = json.load(sys.stdin)
        row = run_spec(spec)
    except (ValueError, TypeError, KeyError) as error:
        print(f"wpcompare.worker: {error}", file=sys.stderr)
        return 2
    json.dump(row, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
