"""`wpcompare plot RESULTS.json -o FILE.png|svg`: the figures of a result file.

A run result (schema wpcompare.run/1) gives three panels: the first-access latency of a
page by percentile, HdrHistogram style (log latency against a percentile axis stretched
towards the tail: 50, 90, 99, 99.9, 99.99 %, so the slow 1% of stalls is as wide as the
fast half), one curve per strategy, for first reads and for first writes, from the touch
histograms kept in the file (the measured runs of a row merged); and one stacked bar per
row with the median restore, touch and fixup times, with the median and interquartile
range of their sum over the runs as an error bar. Colour means one thing per figure: a
strategy; the phases are greys.

Each document type has its plotter in PLOTTERS, keyed by schema: results of
`wpcompare cycle` (wpcompare.cycle/2 and /1) are drawn per cycle by cycle_plot; a size
sweep (`run --size 64M,256M,...`) as cost per page against size by sweep_plot.

matplotlib is an optional dependency (`pip install 'wpcompare[plot]'`); it
is imported only here, with the Agg backend, which needs no display.
"""
import io
import os

from wpcompare import cycle_plot, cycle_results, documents, metrics, report, results, sweep, sweep_plot
from wpcompare.errors import InvalidArgument, WpcError

IMAGE_FORMATS = {".png": "png", ".svg": "svg"}
# The stacked bars: metrics of the registry, each titled as its table column.
# Greys: in a run's figure colour means a strategy, and only that.
PHASES = tuple((metrics.find(name).column, name, color)
               for name, color in (("restore_ns", "#404040"), ("touch_ns", "#8c8c8c"), ("fixup_ns", "#cfcfcf")))
# The percentile axis: x = 1 / (1 - share), so 90% is at 10, 99% at 100, ...
PERCENTILE_TICKS = ((1, "0%"), (2, "50%"), (10, "90%"), (100, "99%"), (1000, "99.9%"), (10_000, "99.99%"),
                    (100_000, "99.999%"))
MISSING_MATPLOTLIB = ("wpcompare plot needs matplotlib, which is not installed: "
                      "pip install 'wpcompare[plot]' (in a checkout: pip install '.[plot]')")


class PlotUnavailable(WpcError):
    """matplotlib is not installed."""


def figure_class():
    """matplotlib's Figure, on the Agg backend; PlotUnavailable naming the install command if absent."""
    try:
        import matplotlib
    except ImportError:
        raise PlotUnavailable(MISSING_MATPLOTLIB) from None
    matplotlib.use("Agg")
    # Text stays text in SVG: searchable, selectable, smaller.
    matplotlib.rcParams["svg.fonttype"] = "none"
    from matplotlib.figure import Figure
    return Figure


def image_format(path):
    """"png" or "svg" from the file name, or InvalidArgument."""
    extension = os.path.splitext(str(path))[1].lower()
    if extension not in IMAGE_FORMATS:
        raise InvalidArgument(f"cannot tell the image format of {os.path.basename(str(path))!r}: "
                              f"name the file .png or .svg")
    return IMAGE_FORMATS[extension]


# ---- the data the figures show (no matplotlib needed) ----

def measured_rows(document, group):
    key = tuple(group.get(name) for name in results.GROUP_KEYS)
    return [row for row in document["runs"]
            if results.group_key(row) == key and row["status"] == "ok" and not row.get("warmup")]


def merged_buckets(rows, histogram="touch"):
    """[(low_ns, high_ns, count)] of the rows' histograms added up, in latency order."""
    counts = {}
    for row in rows:
        hist = (row.get("histograms") or {}).get(histogram)
        for low, high, count in (hist or {}).get("buckets", ()):
            counts[(low, high)] = counts.get((low, high), 0) + count
    return sorted((low, high, count) for (low, high), count in counts.items())


def percentile_points(buckets):
    """(xs, ys) of the latency by percentile: xs[i] = 1 / (1 - share) at the upper bound ys[i]
    of each bucket (HdrHistogram's percentile distribution). The last share, 1, has no finite
    place: it is drawn at the next step past the rank before it (twice its distance from 0%),
    which is where HdrHistogram's plots end too."""
    total = sum(count for _, _, count in buckets)
    if not total:
        return [], []
    xs, ys, seen = [1.0], [max(buckets[0][0], 1)], 0
    for _, high, count in buckets:
        seen += count
        share = min(seen / total, 1 - 1 / (2 * total))
        xs.append(1 / (1 - share))
        ys.append(max(high, 1))
    return xs, ys


def total_spread(rows):
    """(median, q1, q3) over the measured runs of restore + touch + fixup, or None."""
    measured, _ = results.split_runs(rows)
    sums = []
    for row in measured:
        phases = row.get("phases") or {}
        values = [(phases.get(name) or {}).get("ns") for name in ("restore", "touch", "fixup")]
        if all(value is not None for value in values):
            sums.append(sum(values))
    summary = results.summarize_values(sums)
    return (summary["median"], summary["q1"], summary["q3"]) if summary else None


def phase_medians(group):
    """{phase: median ns or 0} for the stacked bars."""
    return {name: ((group["metrics"].get(metric) or {}).get("median") or 0) for name, metric, _ in PHASES}


# ---- run results ----

def plot_run(document, Figure):
    """(figure, notes): the CDF panels and the phase bars; notes name the rows left out."""
    groups = document["groups"]
    plotted = [group for group in groups if group["status"] == "ok"]
    notes = [f"not plotted: {group['label']} {group['op']}: {group['status']}: {group['reason']}"
             for group in groups if group["status"] != "ok"]
    labels = list(dict.fromkeys(group["label"] for group in plotted))
    style_of = dict(zip(labels, _line_styles(len(labels))))

    cdf_height = 4.0 + 0.1 * max(len(labels) - 6, 0)
    bar_height = 0.4 * max(len(plotted), 1) + 1.2
    figure = Figure(figsize=(13, cdf_height + bar_height), layout="constrained")
    grid = figure.add_gridspec(2, 3, height_ratios=[cdf_height, bar_height], width_ratios=[1, 1, 0.36])
    figure.suptitle(report.context_line(document), fontsize=10)
    lines = {}
    for column, op in enumerate(("read", "write")):
        axes = figure.add_subplot(grid[0, column])
        lines.update(_cdf_panel(axes, document, [g for g in plotted if g["op"] == op], op, style_of))
    # One legend for both panels (a strategy has the same line in each), beside them, hiding no curve.
    legend = figure.add_subplot(grid[0, 2])
    legend.set_axis_off()
    if lines:
        legend.legend(list(lines.values()), list(lines), loc="upper left", fontsize=8, frameon=False,
                      title="strategy", title_fontsize=9)
    _phase_bars(figure.add_subplot(grid[1, :]), document, plotted)
    return figure, notes


def _line_styles(count):
    """(color, dash) per strategy: ten distinct colors, then the same colors dashed, then dotted."""
    from matplotlib import colormaps
    colors = colormaps["tab10"].colors
    dashes = ("-", "--", ":", "-.")
    return [(colors[index % 10], dashes[index // 10 % len(dashes)]) for index in range(count)]


def _time_axis(axis):
    from matplotlib.ticker import FuncFormatter, LogLocator
    axis.set_major_locator(LogLocator(base=10))
    axis.set_major_formatter(FuncFormatter(lambda value, _: report.format_ns(value)))


def _cdf_panel(axes, document, groups, op, style_of):
    """Draw the panel; {label: line} of the curves drawn."""
    axes.set_title(f"first {op} of a page: latency by percentile", fontsize=10)
    curves = [(group, percentile_points(merged_buckets(measured_rows(document, group)))) for group in groups]
    curves = [(group, points) for group, points in curves if points[0]]
    if not curves:
        axes.text(0.5, 0.5, f"no {op} rows measured", ha="center", va="center",
                  transform=axes.transAxes, color="gray")
        axes.set_xticks([])
        axes.set_yticks([])
        return {}
    axes.set_ylabel("latency (log scale)")
    axes.set_xlabel("percentile of pages")
    axes.set_xscale("log")
    axes.set_yscale("log")
    widest = max(max(xs) for _, (xs, _) in curves)
    ticks = [(x, text) for x, text in PERCENTILE_TICKS if x <= widest * 1.01] or [PERCENTILE_TICKS[0]]
    axes.set_xticks([x for x, _ in ticks], [text for _, text in ticks], fontsize=8)
    axes.minorticks_off()
    axes.set_xlim(1, max(widest, 2))
    axes.grid(True, which="major", alpha=0.3)
    lines = {}
    for group, (xs, ys) in curves:
        color, dash = style_of[group["label"]]
        (lines[group["label"]],) = axes.step(xs, ys, where="pre", color=color, linestyle=dash,
                                             label=group["label"], linewidth=1.4)
    _time_axis(axes.yaxis)
    return lines


def _phase_bars(axes, document, groups):
    axes.set_title("median time per phase; |-|: restore+touch+fixup, median and interquartile range "
                   "over the runs", fontsize=10, loc="left")
    if not groups:
        axes.text(0.5, 0.5, "no rows measured", ha="center", va="center", transform=axes.transAxes,
                  color="gray")
        axes.set_axis_off()
        return
    names = [f"{group['label']} {group['op']}" for group in groups]
    positions = range(len(groups))
    left = [0.0] * len(groups)
    for name, _, color in PHASES:
        widths = [phase_medians(group)[name] / 1e6 for group in groups]
        axes.barh(positions, widths, left=left, color=color, label=name, height=0.6)
        left = [start + width for start, width in zip(left, widths)]
    spreads = [total_spread(measured_rows(document, group)) for group in groups]
    for position, spread in zip(positions, spreads):
        if spread:
            median, low, high = (value / 1e6 for value in spread)
            axes.errorbar([median], [position], xerr=[[median - low], [high - median]], fmt="|", color="black",
                          markersize=10, capsize=3, linewidth=1)
    ends = [max(total, (spread[2] / 1e6 if spread else 0)) for total, spread in zip(left, spreads)]
    for position, total, end in zip(positions, left, ends):
        axes.text(end, position, " " + report.format_ns(total * 1e6), va="center", fontsize=8)
    axes.set_yticks(list(positions), names, fontsize=8)
    axes.invert_yaxis()
    axes.set_xlabel("milliseconds")
    axes.set_xlim(0, max(ends) * 1.15 or 1)
    axes.grid(True, axis="x", alpha=0.3)
    # Above the bars, beside the title: inside, it would hide the longest bars.
    axes.legend(loc="lower right", bbox_to_anchor=(1, 1), ncol=len(PHASES), fontsize=8, frameon=False)


# Document types and how to draw them.
PLOTTERS = dict({schema: plot_run for schema in results.READABLE_SCHEMAS},
                **{schema: cycle_plot.plot_cycle for schema in cycle_results.READABLE_SCHEMAS})
CYCLE_KEYS = ("metadata", "chains", "ranking")


def load_plottable(path):
    """The document at path if some plotter draws its schema, else InvalidArgument saying why."""
    document = results.read_json(path)
    schema = document.get("schema") if isinstance(document, dict) else None
    if schema not in PLOTTERS:
        raise InvalidArgument(f"{path} has schema {schema!r}; wpcompare plot draws "
                              + ", ".join(PLOTTERS) + " (the JSON `wpcompare run` and `wpcompare cycle` "
                              "write with --format json or -o FILE.json)")
    if schema in results.READABLE_SCHEMAS:
        return results.load_document(path, document)
    missing = [key for key in CYCLE_KEYS if key not in document] if schema in cycle_results.READABLE_SCHEMAS else []
    if missing:
        raise InvalidArgument(f"{path} has no {', '.join(missing)}: not a whole `wpcompare cycle` result; "
                              "write it again with `wpcompare cycle -o FILE.json`")
    return cycle_results.derive(documents.validate(path, document, (schema,)))


def render(document, fmt):
    """(image bytes in fmt, notes) for a loaded document."""
    Figure = figure_class()
    plotter = sweep_plot.plot_sweep if sweep.is_sweep(document) else PLOTTERS[document["schema"]]
    figure, notes = plotter(document, Figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format=fmt, dpi=110)
    return buffer.getvalue(), notes
