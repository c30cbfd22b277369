"""The result document of `wpcompare cycle`: schema wpcompare.cycle/2.

    metadata   as `run`'s (version, timestamp, command line, system facts, image,
               options), plus where the chains' images lived
    chains     one per strategy: identity, status and reason, every cycle's raw
               row (the worker's measurements, dumps, image checks) and totals
    ranking    strategies by median time per cycle and by median pause

Derived numbers, per cycle:
    checkpoint  the dump the chain kept: incremental where the strategy has a
                dirty set, else full (both are measured and both checked)
    pause       the part of fixup the application cannot run alongside, plus
                that checkpoint, for which the application is stopped
    cycle       restore + work + fixup + that checkpoint
    slowdown    work / the same pass over the region once loaded (steady);
                both passes read no clock inside their loop (cycle/1 files timed
                every access, which inflated both)
"""
import os
import tempfile
from datetime import datetime, timezone

from wpcompare import __version__
from wpcompare.image import filesystem_type
from wpcompare.results import summarize_values

SCHEMA = "wpcompare.cycle/2"
# Read as well: cycle/1 files, whose work and steady passes timed every access (so
# their work and slowdown are inflated by the clock reads).
READABLE_SCHEMAS = ("wpcompare.cycle/1", SCHEMA)

# Summed over the cycles in a total; the others below are maxima or ratios.
SUMMED = ("restore_ns", "work_ns", "steady_ns", "fixup_ns", "fixup_pause_ns", "full_dump_ns",
          "incremental_dump_ns", "checkpoint_ns", "pause_ns", "cycle_ns", "bytes_written",
          "bytes_copied", "bytes_fallback", "written_pages")
MAXIMA = ("vmas", "peak_rss_kb")
METRICS = SUMMED[:3] + ("slowdown",) + SUMMED[3:] + MAXIMA


def _add(*values):
    return None if any(value is None for value in values) else sum(values)


def cycle_metrics(row):
    """The flat numbers of one cycle's row (None where that step did not run)."""
    phases = row.get("phases") or {}

    def phase_ns(name):
        return (phases.get(name) or {}).get("ns")

    checkpoint = row.get("checkpoint") or {}
    full, incremental = checkpoint.get("full"), checkpoint.get("incremental")
    kept = incremental or full
    work, steady = phase_ns("touch"), row.get("steady_ns")
    checkpoint_ns = kept["ns"] if kept else None
    return {
        "restore_ns": phase_ns("restore"),
        "work_ns": work,
        "steady_ns": steady,
        "slowdown": work / steady if work is not None and steady else None,
        "fixup_ns": phase_ns("fixup"),
        "fixup_pause_ns": row.get("fixup_pause_ns"),
        "full_dump_ns": full["ns"] if full else None,
        "incremental_dump_ns": incremental["ns"] if incremental else None,
        "checkpoint_ns": checkpoint_ns,
        "pause_ns": _add(row.get("fixup_pause_ns"), checkpoint_ns),
        "cycle_ns": _add(phase_ns("restore"), work, phase_ns("fixup"), checkpoint_ns),
        "bytes_written": kept["bytes_written"] if kept else None,
        "bytes_copied": kept["bytes_copied"] if kept else None,
        "bytes_fallback": kept["bytes_fallback"] if kept else None,
        "written_pages": row.get("written_pages"),
        "vmas": (phases.get("fixup") or {}).get("vmas"),
        "peak_rss_kb": row.get("peak_rss_kb"),
    }


def chain_totals(chain):
    """Sums (times, bytes) and maxima (VMAs, RSS) over the chain's completed cycles, and
    the per-cycle statistics the ranking uses; None if no cycle completed."""
    done = [cycle_metrics(row) for row in chain["cycles"] if row["status"] == "ok"]
    if not done:
        return None
    totals = {"cycles": len(done)}
    for name in SUMMED:
        totals[name] = _add(*(metrics[name] for metrics in done))
    for name in MAXIMA:
        values = [metrics[name] for metrics in done if metrics[name] is not None]
        totals[name] = max(values) if values else None
    work, steady = totals["work_ns"], totals["steady_ns"]
    totals["slowdown"] = work / steady if work is not None and steady else None
    totals["per_cycle"] = {name: summarize_values(metrics[name] for metrics in done)
                           for name in ("cycle_ns", "pause_ns", "checkpoint_ns")}
    return totals


def ranking(chains):
    """Completed chains ordered by median time per cycle, and by median pause."""
    ranked = {}
    for key, metric in (("by_cycle_time", "cycle_ns"), ("by_pause", "pause_ns")):
        entries = []
        for chain in chains:
            totals = chain.get("totals")
            if chain["status"] != "ok" or not totals or not totals["per_cycle"][metric]:
                continue
            summary = totals["per_cycle"][metric]
            entries.append({"label": chain["label"], "median_ns": summary["median"],
                            "min_ns": summary["min"], "max_ns": summary["max"]})
        ranked[key] = sorted(entries, key=lambda entry: entry["median_ns"])
    return ranked


def derive(document):
    """A read document with its totals and ranking derived again from the cycles."""
    return build_document(document["chains"], document["metadata"])


def build_document(chains, metadata):
    for chain in chains:
        chain["totals"] = chain_totals(chain)
    return {"schema": SCHEMA, "metadata": metadata, "chains": chains, "ranking": ranking(chains)}


def metadata(plan, facts, elapsed, command_line):
    """Everything a reader of the results needs besides the chains."""
    directory = plan.directory or tempfile.gettempdir()
    return {
        "wpcompare_version": __version__,
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command_line": command_line,
        "elapsed_s": round(elapsed, 3),
        "system": facts,
        "timer_overhead_ns": facts.get("timer_overhead_ns"),
        # 1, 5 and 15 minutes at the end: whether other work shared the CPUs with the chains.
        "load_average": list(os.getloadavg()),
        "image": plan.image.describe(),
        # Each image is restored right after the previous cycle wrote it (the first: copied
        # with copy_file_range); the work pass times no access, as run's measured runs.
        "cache": {"mode": "written", "kind": "written",
                  "state": "each image restored right after the previous cycle wrote it"},
        "latency": {"mode": "off", "runs": 0},
        "images_directory": {"path": directory, "filesystem": filesystem_type(directory)},
        "options": {
            "strategies": [choice.label for choice in plan.choices], "cycles": plan.cycles,
            "dirty": plan.dirty, "pattern": str(plan.pattern), "threads": plan.threads,
            "overlap": plan.overlap, "pin_threads": plan.pin_threads, "seed": plan.seed,
            "delete_old": plan.delete_old, "timeout": plan.timeout,
        },
    }

