"""One isolated run: probe, restore, touch, fixup, verify, and the result as JSON-able data.

The runner calls run_spec() in a fresh process for every run. Stand-alone:

    python -m wpcompare.worker < spec.json

prints the row. A spec is a JSON object:

    image        path of the image file (required)
    image_seed   seed it was generated from, or null for a user's file
    image_kind   "mixed" or "random" with image_seed
    strategy     strategy name (required); params "name=value,..."; label for display
    op           "read" or "write"; pattern "seq", "random", "sparse:F", "stride:N"
    threads, overlap, pin_threads, seed, repetition, warmup
    inject       tests only: "segv", "abort" or "hang" right after restore
"""
import json
import os
import signal
import sys
import time

from wpcompare import binding
from wpcompare.errors import WpcError
from wpcompare.options import parse_pattern

SPEC_DEFAULTS = {
    "image_seed": None,
    "image_kind": None,
    "params": "",
    "label": None,
    "op": "read",
    "pattern": "random",
    "threads": 1,
    "overlap": False,
    "pin_threads": True,
    "seed": 1,
    "repetition": 0,
    "warmup": False,
    "inject": None,
}
IDENTITY = ("strategy", "params", "label", "op", "pattern", "threads", "overlap", "seed",
            "repetition", "warmup")
INJECTIONS = ("segv", "abort", "hang")


def complete_spec(spec):
    """spec with defaults filled in; ValueError naming what is missing or unknown."""
    missing = [key for key in ("image", "strategy") if not spec.get(key)]
    if missing:
        raise ValueError(f"worker spec lacks {', '.join(missing)}")
    unknown = set(spec) - set(SPEC_DEFAULTS) - {"image", "strategy"}
    if unknown:
        raise ValueError(f"worker spec has unknown keys: {', '.join(sorted(unknown))}")
    full = dict(SPEC_DEFAULTS, **spec)
    if full["label"] is None:
        full["label"] = full["strategy"]
    if full["inject"] not in (None,) + INJECTIONS:
        raise ValueError(f"inject must be one of {', '.join(INJECTIONS)}")
    return full


def _negative_as_none(value):
    return None if value < 0 else value


def result_fields(result):
    """The measurements of a struct wpc_result, as far as the run got."""
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
    return {
        "phases": phases,
        "time_to_detached_ns": _negative_as_none(result.time_to_detached_ns),
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
        "peak_rss_kb": result.peak_rss_kb,
        "app_cpu": _negative_as_none(result.app_cpu),
        "handler_cpu": _negative_as_none(result.handler_cpu),
        "histograms": {"touch": binding.export_histogram(result.touch),
                       "handler": binding.export_histogram(result.handler)},
        "counters": {binding.result_text(result.counters[i].name): result.counters[i].value
                     for i in range(result.ncounters)},
    }


def _inject(kind):
    """Fail the way a broken strategy would, so tests can show the runner survives it."""
    if kind == "segv":
        # The default action, not a strategy's or faulthandler's handler, must see it.
        signal.signal(signal.SIGSEGV, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGSEGV)
    elif kind == "abort":
        os.abort()
    elif kind == "hang":
        while True:
            time.sleep(3600)


def _image_bytes(path):
    """The image's size for the probe; 0 (any) when it cannot be read: create says why."""
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


def run_spec(spec):
    """Run what spec asks for in this process and return the row."""
    spec = complete_spec(spec)
    row = {key: spec[key] for key in IDENTITY}
    row.update(status="ok", reason=None, failed_phase=None)
    params = spec["params"] or None
    try:
        binding.probe_strategy(spec["strategy"], params, _image_bytes(spec["image"]))
    except WpcError as error:
        row.update(status="skipped", reason=error.reason)
        return row
    try:
        run = binding.Run(
            image_path=spec["image"], image_seed=spec["image_seed"], image_kind=spec["image_kind"],
            strategy=spec["strategy"], params=params, op=spec["op"],
            pattern=parse_pattern(spec["pattern"]), threads=spec["threads"],
            overlap=spec["overlap"], seed=spec["seed"], pin_threads=spec["pin_threads"])
    except WpcError as error:
        row.update(status="failed", reason=error.reason, failed_phase="create")
        return row
    with run:
        for phase in binding.PHASES:
            try:
                getattr(run, phase)()
            except WpcError as error:
                row.update(status="failed", reason=error.reason, failed_phase=phase)
                break
            if phase == "restore" and spec["inject"]:
                _inject(spec["inject"])
        row.update(result_fields(run.result))
    return row


def main():
    try:
        spec = json.load(sys.stdin)
        row = run_spec(spec)
    except (ValueError, TypeError) as error:
        print(f"wpcompare.worker: {error}", file=sys.stderr)
        return 2
    json.dump(row, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
