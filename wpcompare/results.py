"""The result document: a versioned schema, its metadata, every run, and the statistics.

A result file holds everything later commands (compare, plot) need: the raw
rows of every run including their latency histograms, and the facts of the
machine. The statistics ("groups") are derived from the rows by summarize()
and stored for convenience; readers may recompute them.

Statistics of a group (one strategy with its parameters, op, pattern and
thread count) are over its runs that are not warmups and succeeded. A row has
two kinds of runs: measured runs, whose touch loop reads no clock (so touch is
the application's time), and instrumented runs, which time every first access
(or a sample) into the touch histogram. Per-page percentiles come from the
instrumented runs (each run's histogram: the midpoint of the bucket holding
the rank, then the median over the runs); every other value from the measured
runs. Each value is the median over its runs, with its spread: half the
interquartile range as a percentage of the median (min and max are kept too;
the quartiles interpolate between ranks, as numpy does). `x bound` is a median over the
reference bound's median (bound-copy, same op and pattern).
"""
import json
import re
import statistics

from wpcompare import documents, histograms, metrics

SCHEMA = "wpcompare.run/2"
# Read as well: run/1 files, whose every run timed each access in touch.
READABLE_SCHEMAS = ("wpcompare.run/1", SCHEMA)

histogram_percentile = histograms.percentile


def is_instrumented(row):
    """Whether the row's touch loop read the clock (every access, or a sample).

    Rows of wpcompare.run/1 files have no "latency": their touch timed every access."""
    return row.get("latency", "every") != "none"


# Ratios of a group's median to the reference bound's, for the same op, pattern and threads.
BOUND_RATIOS = tuple(metric.name for metric in metrics.bound_ratio_metrics())


def rows_for(metric, measured, instrumented):
    """The runs a metric is read from, given a group's measured and instrumented runs: the
    instrumented ones for a latency, else the measured ones (in a run/1 file, which has none,
    its rows, all instrumented -- except touch_ns, which such a file never measured)."""
    runs = metrics.find(metric).runs
    if runs == metrics.INSTRUMENTED:
        return instrumented
    if measured or runs == metrics.MEASURED_ONLY:
        return measured
    return instrumented


def split_runs(rows):
    """(measured, instrumented): the rows that count (succeeded, not warmups), by kind."""
    ok = [row for row in rows if row["status"] == "ok" and not row.get("warmup")]
    return ([row for row in ok if not is_instrumented(row)], [row for row in ok if is_instrumented(row)])


def metric_values(rows, metric):
    """The values of metric over the runs of one group it is read from (see rows_for)."""
    extract = metrics.find(metric).value
    values = (extract(row) for row in rows_for(metric, *split_runs(rows)))
    return [value for value in values if value is not None]


def quantile(ordered, q):
    """The q-quantile (0..1) of values in ascending order, interpolated linearly between the
    two nearest ranks (numpy's default, statistics.quantiles' "inclusive" method)."""
    position = (len(ordered) - 1) * q
    below = int(position)
    above = min(below + 1, len(ordered) - 1)
    return ordered[below] + (ordered[above] - ordered[below]) * (position - below)


def summarize_values(values):
    """Median, quartiles, range and spread of the values that exist; None if none do.

    spread_pct is half the interquartile range, (q3 - q1) / 2, as a percentage of the median:
    the middle half of the runs lies within about ± it. One outlier among five runs moves it
    little, where it set half the min-max range (a 677 µs maximum showed as ±9965%)."""
    ordered = sorted(value for value in values if value is not None)
    if not ordered:
        return None
    median = statistics.median(ordered)
    q1, q3 = quantile(ordered, 0.25), quantile(ordered, 0.75)
    spread = (q3 - q1) / 2 / median * 100 if median else 0.0
    return {"median": median, "q1": q1, "q3": q3, "min": ordered[0], "max": ordered[-1],
            "spread_pct": spread, "n": len(ordered)}


# sweep_size: the image size of a row of a size sweep (wpcompare.sweep); absent (None) otherwise.
GROUP_KEYS = ("label", "op", "pattern", "threads", "overlap", "sweep_size")


def group_key(row):
    return tuple(row.get(key) for key in GROUP_KEYS)


def summarize(rows, reference_bound=None):
    """One summary per group, in the order the groups first appear.

    reference_bound: the strategy whose rows `x bound` divides by, the fastest of them
    (any page kind) for each metric and workload (None: the ratios are not computed)."""
    groups = {}
    for row in rows:
        groups.setdefault(group_key(row), []).append(row)
    summaries = [_summarize_group(members) for members in groups.values()]
    if reference_bound:
        _add_bound_ratios(summaries, reference_bound)
    return summaries


def _add_bound_ratios(summaries, reference_bound):
    """x_bound: {metric: ratio}; x_bound_over: {metric: the bound row's label it divides by}."""
    def workload(group):
        return tuple(group.get(key) for key in GROUP_KEYS[1:])
    fastest = {}
    for group in summaries:
        if group["strategy"] != reference_bound or group["status"] != "ok":
            continue
        for metric in BOUND_RATIOS:
            summary = group["metrics"].get(metric)
            best = fastest.get((workload(group), metric))
            if summary and summary["median"] and (best is None or summary["median"] < best[1]):
                fastest[(workload(group), metric)] = (group["label"], summary["median"])
    for group in summaries:
        ratios, over = {}, {}
        for metric in BOUND_RATIOS:
            mine = group["metrics"].get(metric) if group["status"] == "ok" else None
            bound = fastest.get((workload(group), metric))
            ratios[metric] = mine["median"] / bound[1] if mine and bound else None
            over[metric] = bound[0] if bound else None
        group["x_bound"] = ratios
        group["x_bound_over"] = over


def _summarize_group(members):
    first = members[0]
    measured, instrumented = split_runs(members)
    ok = measured + instrumented
    failed = [row for row in members if row["status"] == "failed"]
    skipped = [row for row in members if row["status"] == "skipped"]
    if skipped:
        status, reason = "skipped", skipped[0]["reason"]
    elif ok:
        status, reason = "ok", None
    else:
        status = "failed"
        reason = _failure_text(failed[0]) if failed else "no measured runs"
    counted = measured or instrumented
    summary = {key: first.get(key) for key in ("label", "strategy", "params") + GROUP_KEYS[1:]}
    summary.update(
        status=status,
        reason=reason,
        runs=len(counted),
        latency_runs=len(instrumented),
        latency=sorted({row.get("latency", "every") for row in instrumented}),
        failed_runs=len(failed),
        failures=sorted({_failure_text(row) for row in failed}),
        metrics={metric.name: summarize_values(metric_values(members, metric.name))
                 for metric in metrics.RUN_METRICS},
        verified=all(row.get("verified") for row in ok) if ok else None,
        detached_runs=sum(1 for row in counted if row.get("detached")),
        placement=handler_placement(counted),
    )
    return summary


def handler_placement(rows):
    """Where the workload and the strategy's handler ran in these runs.

    handler is "same" (every handler on its workload's CPU), "other" (never
    on it), "mixed", or None where no handler was pinned (no handler thread,
    or handler-cpu=any, or the workload unpinned).
    """
    app_cpus = sorted({row["app_cpu"] for row in rows if row.get("app_cpu") is not None})
    handler_cpus = sorted({row["handler_cpu"] for row in rows if row.get("handler_cpu") is not None})
    pairs = {(row["app_cpu"], row["handler_cpu"]) for row in rows
             if row.get("app_cpu") is not None and row.get("handler_cpu") is not None}
    if not pairs:
        where = None
    elif all(app == handler for app, handler in pairs):
        where = "same"
    elif all(app != handler for app, handler in pairs):
        where = "other"
    else:
        where = "mixed"
    return {"app_cpus": app_cpus, "handler_cpus": handler_cpus, "handler": where}


def _failure_text(row):
    phase = row.get("failed_phase")
    return f"{phase}: {row['reason']}" if phase else row["reason"]


def build_document(rows, metadata):
    return {"schema": SCHEMA, "metadata": metadata, "runs": [documents.wide_integers_as_text(row) for row in rows],
            "groups": summarize(rows, metadata.get("reference_bound"))}


def read_json(path):
    """The JSON value in the file at path, or InvalidArgument saying in one line why not."""
    return documents.read_json(path)


def load_document(path, document=None):
    """A result document from a file (or already read from it), validated against the schema
    of its version (run/1 or run/2), or InvalidArgument saying in one line why it is not one."""
    if document is None:
        document = read_json(path)
    document = documents.validate(path, document, READABLE_SCHEMAS)
    # Groups are derived from the runs: derived again, they agree with the runs and with
    # what this version's renderers expect, whatever the file said.
    document["groups"] = summarize(document["runs"], (document.get("metadata") or {}).get("reference_bound"))
    return document


# A histogram bucket [low, high, count] on one line, not five: files stay readable.
_BUCKET = re.compile(r"\[\s+(\d+),\s+(\d+),\s+(\d+)\s+\]")


def dumps(document):
    return _BUCKET.sub(r"[\1, \2, \3]", json.dumps(document, indent=2)) + "\n"
