"""Every metric of a `run`, declared once: the registry the row, the statistics, the table,
csv, markdown, json and `compare` read.

A Metric says where its value comes from (a field of the C core's struct wpc_result the worker
copies into each row under the metric's name, or a function of the row), its unit, which runs of
a row it is read from, the table column that shows it, whether a wide spread of it is warned
about and whether `compare` tests it. Every metric is summarised the same way: the median over
its runs, their min and max, and the spread (results.summarize_values).

A new metric is its C field (struct wpc_result in csrc/wpcompare.h, set by the core) and one
Metric(..., field="the_c_field") line in RUN_METRICS: the worker then copies it into every row,
results summarises it, csv and json carry it, and the table shows it if it has a column.
"""
from dataclasses import dataclass
from typing import Callable, Optional

from wpcompare import histograms

# Which runs of a row a metric is read from (see results.rows_for):
MEASURED = "measured"            # runs whose touch loop reads no clock; in a run/1 file, which has
                                 # none, its runs (all instrumented)
MEASURED_ONLY = "measured-only"  # the measured runs, never instrumented ones (run/1 files lack it)
INSTRUMENTED = "instrumented"    # runs that timed every first access (or a sample)

UNITS = ("ns", "count", "KiB")


@dataclass(frozen=True)
class Metric:
    name: str                        # its key in a row's metrics, csv's columns, compare's rows
    unit: str                        # UNITS: "ns" shown as 12.3 µs, "count" as 1,234, "KiB"
    read: Optional[Callable] = None  # value of one row, or None; default: row[name]
    field: Optional[str] = None      # a struct wpc_result field the worker copies to row[name]
    runs: str = MEASURED             # which runs it is read from
    column: Optional[str] = None     # its column in the run table; None: csv and json only
    bound_ratio: bool = False        # an `x bound` column after it: its median over the bound's
    spread_checked: bool = False     # a spread over results' limit is warned about
    compared: bool = False           # `compare` tests it (lower is better)
    absent: str = "-"                # the table's cell where no run has a value
    compare_absent: str = "-"        # compare's median cell where one side has none
    missing: str = "no values"       # compare's verdict words for a side without values

    def value(self, row):
        if self.read is not None:
            return self.read(row)
        return row.get(self.name)


def _phase(name, key="ns"):
    def read(row):
        phases = row.get("phases")
        return phases[name][key] if phases else None
    return read


def _percentile(histogram, q):
    def read(row):
        return histograms.percentile((row.get("histograms") or {}).get(histogram), q)
    return read


def _touch_faults(row):
    phases = row.get("phases")
    if not phases:
        return None
    return phases["touch"]["minflt"] + phases["touch"]["majflt"]


def _touch_max(row):
    hist = (row.get("histograms") or {}).get("touch")
    return hist["max_ns"] if hist and hist["count"] else None


def _touched_and_detached(row):
    """From restore's start until every page was touched and the region detached, the later of both."""
    touched, detached = row.get("time_to_touched_ns"), row.get("time_to_detached_ns")
    return None if touched is None or detached is None else max(touched, detached)


# The order is the report's, the csv's and compare's.
RUN_METRICS = (
    Metric("restore_ns", "ns", _phase("restore"), column="restore", spread_checked=True, compared=True),
    # The application's time: from the measured runs, whose touch loop reads no clock.
    Metric("touch_ns", "ns", _phase("touch"), runs=MEASURED_ONLY, column="touch", spread_checked=True,
           compared=True, missing="no touch without a clock in the loop (run/1 files time every access)"),
    # The instrumented runs' touch: inflated by the clock reads that time each access.
    Metric("touch_instrumented_ns", "ns", _phase("touch"), runs=INSTRUMENTED),
    Metric("page_p50_ns", "ns", _percentile("touch", 0.50), runs=INSTRUMENTED, column="p50/page",
           spread_checked=True, compared=True),
    Metric("page_p99_ns", "ns", _percentile("touch", 0.99), runs=INSTRUMENTED, column="p99/page",
           spread_checked=True, compared=True),
    # One sample per run: always noisy, its spread not worth a warning.
    Metric("page_max_ns", "ns", _touch_max, runs=INSTRUMENTED, column="max/page"),
    # The strategy's own service time of one fault, where it measures one: for a chunked
    # strategy most first accesses find their chunk done, so the page percentiles hide what
    # one fault costs.
    Metric("fault_p50_ns", "ns", _percentile("handler", 0.50), column="p50/fault"),
    Metric("fault_p99_ns", "ns", _percentile("handler", 0.99), column="p99/fault"),
    Metric("fixup_ns", "ns", _phase("fixup"), column="fixup", spread_checked=True, compared=True,
           missing="no fixup"),
    Metric("time_to_detached_ns", "ns", field="time_to_detached_ns", column="to detached",
           bound_ratio=True, spread_checked=True, compared=True, absent="never", compare_absent="never",
           missing="never detached"),
    Metric("touched_and_detached_ns", "ns", _touched_and_detached, column="touched+detached",
           bound_ratio=True, spread_checked=True, compared=True, absent="never",
           missing="never detached (or a run/1 file)"),
    Metric("touch_faults", "count", _touch_faults, column="faults"),
    Metric("vmas_after_fixup", "count", _phase("fixup", "vmas"), column="VMAs"),
    Metric("verify_ns", "ns", _phase("verify")),
    Metric("peak_rss_kb", "KiB", field="peak_rss_kb"),
)
BY_NAME = {metric.name: metric for metric in RUN_METRICS}


def find(name):
    return BY_NAME[name]


def table_metrics():
    return [metric for metric in RUN_METRICS if metric.column]


def compared_metrics():
    return [metric for metric in RUN_METRICS if metric.compared]


def spread_checked_metrics():
    return [metric for metric in RUN_METRICS if metric.spread_checked]


def bound_ratio_metrics():
    return [metric for metric in RUN_METRICS if metric.bound_ratio]


def c_fields():
    """(row key, struct wpc_result field) of the metrics the worker copies from the C result."""
    return [(metric.name, metric.field) for metric in RUN_METRICS if metric.field]


# ---- `cycle`: the numbers of one cycle of a chain, and of the chain ----

SUM, MAX, RATIO = "sum", "max", "ratio"     # how a chain's total is made from its cycles


@dataclass(frozen=True)
class CycleMetric:
    name: str
    unit: str                        # UNITS, "bytes" or "ratio"
    read: Callable                   # one cycle's row -> value, or None where that step did not run
    total: str = SUM                 # SUM or MAX over the completed cycles; RATIO: of two totals
    of: tuple = ()                   # RATIO: (numerator, denominator) metric names
    column: Optional[str] = None     # its title in the cycle table


def _add(*values):
    return None if any(value is None for value in values) else sum(values)


def _cycle_phase(name):
    def read(row):
        return ((row.get("phases") or {}).get(name) or {}).get("ns")
    return read


def _dump(which):
    def read(row):
        dump = (row.get("checkpoint") or {}).get(which)
        return dump["ns"] if dump else None
    return read


def _kept(row):
    """The dump the chain kept: the incremental one where there is one, else the full one."""
    checkpoint = row.get("checkpoint") or {}
    return checkpoint.get("incremental") or checkpoint.get("full")


def _kept_field(key):
    def read(row):
        kept = _kept(row)
        return kept[key] if kept else None
    return read


def _slowdown(row):
    work, steady = _cycle_phase("touch")(row), row.get("steady_ns")
    return work / steady if work is not None and steady else None


def _pause(row):
    return _add(row.get("fixup_pause_ns"), _kept_field("ns")(row))


def _cycle_time(row):
    return _add(_cycle_phase("restore")(row), _cycle_phase("touch")(row), _cycle_phase("fixup")(row),
                _kept_field("ns")(row))


# The order is the csv's and the totals'.
CYCLE_METRICS = (
    CycleMetric("restore_ns", "ns", _cycle_phase("restore"), column="restore"),
    CycleMetric("work_ns", "ns", _cycle_phase("touch"), column="work"),
    CycleMetric("steady_ns", "ns", lambda row: row.get("steady_ns")),
    CycleMetric("slowdown", "ratio", _slowdown, total=RATIO, of=("work_ns", "steady_ns"), column="slowdown"),
    CycleMetric("fixup_ns", "ns", _cycle_phase("fixup"), column="fixup"),
    CycleMetric("fixup_pause_ns", "ns", lambda row: row.get("fixup_pause_ns")),
    CycleMetric("full_dump_ns", "ns", _dump("full"), column="full dump"),
    CycleMetric("incremental_dump_ns", "ns", _dump("incremental"), column="incr. dump"),
    CycleMetric("checkpoint_ns", "ns", _kept_field("ns")),
    CycleMetric("pause_ns", "ns", _pause, column="pause"),
    CycleMetric("cycle_ns", "ns", _cycle_time, column="cycle time"),
    CycleMetric("bytes_written", "bytes", _kept_field("bytes_written"), column="written"),
    CycleMetric("bytes_copied", "bytes", _kept_field("bytes_copied")),
    CycleMetric("bytes_fallback", "bytes", _kept_field("bytes_fallback")),
    CycleMetric("written_pages", "count", lambda row: row.get("written_pages")),
    CycleMetric("vmas", "count", lambda row: ((row.get("phases") or {}).get("fixup") or {}).get("vmas"),
                total=MAX, column="VMAs"),
    CycleMetric("peak_rss_kb", "KiB", lambda row: row.get("peak_rss_kb"), total=MAX, column="peak RSS"),
)
CYCLE_BY_NAME = {metric.name: metric for metric in CYCLE_METRICS}
# Summarised per cycle (median, min, max) for the ranking.
PER_CYCLE = ("cycle_ns", "pause_ns", "checkpoint_ns")


def cycle_values(row):
    """Every cycle metric of one cycle's row."""
    return {metric.name: metric.read(row) for metric in CYCLE_METRICS}


def cycle_totals(done):
    """Each cycle metric's total over the values of the completed cycles."""
    totals = {}
    for metric in CYCLE_METRICS:
        if metric.total == SUM:
            totals[metric.name] = _add(*(values[metric.name] for values in done))
        elif metric.total == MAX:
            present = [values[metric.name] for values in done if values[metric.name] is not None]
            totals[metric.name] = max(present) if present else None
    for metric in CYCLE_METRICS:
        if metric.total == RATIO:
            numerator, denominator = (totals[name] for name in metric.of)
            totals[metric.name] = numerator / denominator if numerator is not None and denominator else None
    return totals
