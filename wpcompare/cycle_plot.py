"""The figure of a `wpcompare cycle` result (schema wpcompare.cycle/2, or /1): every cycle of every chain.

One row per cycle, the rows of a strategy together and every row on the
same axes, so strategies compare by length as in the table. Left: the
cycle's time as a stacked bar of restore, work, fixup and the kept dump,
and under it a black line as long as the application's pause. Right: the
bytes the kept dump wrote from memory (in the kept dump's colour) and
copied from the previous image. A skipped chain or a failed cycle is a row
saying so, with its reason in the numbered notes under the figure, and the
ranking is written there too.

plot.py hands in its Figure class; matplotlib's other parts are imported
inside the drawing functions, so that this module imports without it.
"""
import textwrap

from wpcompare import cycle_report, cycle_results
from wpcompare.options import human_bytes
from wpcompare.report import format_ns

PHASES = (("restore", "restore_ns", "#4c72b0"), ("work", "work_ns", "#dd8452"),
          ("fixup", "fixup_ns", "#55a868"), ("checkpoint (kept dump)", "checkpoint_ns", "#8172b3"))
PAUSE_COLOR = "black"
PAUSE_LABEL = "pause (application stopped)"
# After the phases it is drawn over, not before them (matplotlib lists lines before bars).
LAST_IN_LEGEND = (PAUSE_LABEL,)
WRITTEN_COLOR = PHASES[-1][2]
COPIED_COLOR = "#d9d9d9"
FAILED_COLOR = "#c44e52"

ROW_INCHES = 0.34
# Past this the rows get thinner rather than the figure taller (a chain may have 1000 cycles).
MAX_ROWS_INCHES = 30.0
NUMBERS_MIN_ROW_INCHES = 0.25
STRATEGY_GAP = 0.7
FOOTER_WIDTH = 170
BAR = 0.56

DEFINITIONS = (
    "work: the workload's first access to each page of the pattern; fixup: until detached; "
    "checkpoint: the dump the chain kept (incremental where the strategy has a dirty set, else "
    "full); pause: the part of fixup the application cannot run alongside + that dump; "
    "written: bytes that dump wrote from memory; copied: its other pages, copied from the "
    "previous image")


def figure_rows(document):
    """(rows, notes): the rows top to bottom and the numbered notes their reasons went to.

    A row is a dict: chain (its index), label, cycle (None for a chain
    without cycles), position on the y axis, and either metrics and kept (a
    completed cycle) or text saying what happened instead.
    """
    rows, notes = [], []
    position = 0.0
    for index, chain in enumerate(document["chains"]):
        label = chain["label"]
        if chain["status"] == "skipped" or not chain["cycles"]:
            notes.append(f"{label}: {chain['status']}: {chain['reason']}")
            rows.append({"chain": index, "label": label, "cycle": None, "position": position,
                         "metrics": None, "text": f"{chain['status']} [{len(notes)}]"})
            position += 1 + STRATEGY_GAP
            continue
        for cycle in chain["cycles"]:
            row = {"chain": index, "label": label, "cycle": cycle["cycle"], "position": position,
                   "metrics": None, "text": None}
            if cycle["status"] == "ok":
                row["metrics"] = cycle_results.cycle_metrics(cycle)
                row["kept"] = (cycle.get("checkpoint") or {}).get("kept")
            else:
                phase = f" in {cycle['failed_phase']}" if cycle.get("failed_phase") else ""
                notes.append(f"{label} cycle {cycle['cycle']}: failed{phase}: {cycle['reason']}")
                row["text"] = f"failed{phase} [{len(notes)}]"
            rows.append(row)
            position += 1
        position += STRATEGY_GAP
    return rows, notes


def ranking_lines(document):
    """The ranking as text: completed chains by median time per cycle, and by median pause."""
    lines = []
    for key, title in (("by_cycle_time", "median time per cycle"), ("by_pause", "median pause")):
        entries = document["ranking"][key]
        if entries:
            ranked = " < ".join(f"{entry['label']} {format_ns(entry['median_ns'])}" for entry in entries)
            lines.append(f"{title} (chains that completed): {ranked}")
    return lines


def plot_cycle(document, Figure):
    """(figure, notes): the per-cycle bars; notes name what was skipped or failed and why."""
    rows, notes = figure_rows(document)
    span = rows[-1]["position"] + 1 if rows else 1
    rows_inches = min(ROW_INCHES * span, MAX_ROWS_INCHES)
    footer = _footer(document, notes)
    footer_inches = 0.16 * len(footer) + 0.1

    figure = Figure(figsize=(13, rows_inches + footer_inches + 1.6), layout="constrained")
    grid = figure.add_gridspec(3, 2, width_ratios=[3, 1.25],
                               height_ratios=[0.25, rows_inches + 0.9, footer_inches])
    figure.suptitle("\n".join(textwrap.wrap(cycle_report.context_line(document), 150)), fontsize=10)
    times = figure.add_subplot(grid[1, 0])
    written = figure.add_subplot(grid[1, 1], sharey=times)
    # Thinner rows have no room for the numbers: the axis gives them.
    numbers = rows_inches / span >= NUMBERS_MIN_ROW_INCHES
    _time_bars(times, rows, numbers)
    _written_bars(written, rows, numbers)
    _legend(figure.add_subplot(grid[0, :]), (times, written))
    _rows_axis(times, written, rows, span, rows_inches)

    text = figure.add_subplot(grid[2, :])
    text.set_axis_off()
    text.text(0, 1, "\n".join(footer), va="top", ha="left", fontsize=8, transform=text.transAxes)
    return figure, notes


def _footer(document, notes):
    lines = []
    for number, note in enumerate(notes, 1):
        lines += textwrap.wrap(f"[{number}] {note}", FOOTER_WIDTH, subsequent_indent="     ")
    for line in ranking_lines(document):
        lines += textwrap.wrap(line, FOOTER_WIDTH, subsequent_indent="     ")
    return lines + textwrap.wrap(DEFINITIONS, FOOTER_WIDTH)


def _legend(axes, panels):
    """One legend over both panels, in a row of its own: above the bars it would hide the title."""
    axes.set_axis_off()
    handles, names = [], []
    for panel in panels:
        for handle, name in sorted(zip(*panel.get_legend_handles_labels()),
                                   key=lambda entry: entry[1] in LAST_IN_LEGEND):
            handles.append(handle)
            names.append(name)
    axes.legend(handles, names, loc="center", ncols=len(names), fontsize=8, frameon=False)


def _rows_axis(times, written, rows, span, rows_inches):
    """Strategy and cycle on the shared y axis; every cycle labelled while the labels fit."""
    every = next(step for step in (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)
                 if rows_inches / span * step >= 0.15)
    ticks, labels, previous = [], [], None
    for row in rows:
        if row["cycle"] is None:
            label = row["label"]
        elif row["chain"] != previous:
            label = f"{row['label']}  cycle {row['cycle']}"
        else:
            label = f"cycle {row['cycle']}" if row["cycle"] % every == 0 else None
        previous = row["chain"]
        if label:
            ticks.append(row["position"])
            labels.append(label)
    times.set_yticks(ticks, labels, fontsize=8)
    written.tick_params(axis="y", labelleft=False)
    for axes in (times, written):
        axes.set_ylim(span - 0.4, -0.6)
        for before, after in zip(rows, rows[1:]):
            if before["chain"] != after["chain"]:
                axes.axhline((before["position"] + after["position"]) / 2, color="#cccccc",
                             linewidth=0.8)


def _time_bars(axes, rows, numbers):
    from matplotlib.ticker import FuncFormatter, MaxNLocator
    axes.set_title("time per cycle, and the application's pause", fontsize=10, loc="left")
    done = [row for row in rows if row["metrics"]]
    # The bar in the upper part of its row, the pause line in the lower.
    bar_at = [row["position"] - 0.12 for row in done]
    lefts = [0] * len(done)
    for name, metric, color in PHASES:
        widths = [row["metrics"][metric] or 0 for row in done]
        _bars(axes, bar_at, lefts, widths, color, name)
        lefts = [left + width for left, width in zip(lefts, widths)]
    paused = [row for row in done if row["metrics"]["pause_ns"] is not None]
    pause_width = 2.2 if numbers else 1.0
    axes.hlines([row["position"] + 0.3 for row in paused], 0,
                [row["metrics"]["pause_ns"] for row in paused], color=PAUSE_COLOR,
                linewidth=pause_width, capstyle="butt", label=PAUSE_LABEL)
    if numbers:
        for row, total, y in zip(done, lefts, bar_at):
            pause = row["metrics"]["pause_ns"]
            axes.text(total, y, f" {format_ns(total)}"
                      + (f"  (pause {format_ns(pause)})" if pause is not None else ""),
                      va="center", fontsize=7.5)
    _status_texts(axes, rows)
    axes.set_xlim(0, max(lefts, default=0) * 1.3 or 1)
    axes.xaxis.set_major_locator(MaxNLocator(nbins=8, steps=[1, 2, 2.5, 5, 10]))
    axes.xaxis.set_major_formatter(FuncFormatter(lambda value, _: format_ns(value) if value else "0"))
    axes.grid(True, axis="x", alpha=0.3)
    axes.set_axisbelow(True)


def _bars(axes, centers, lefts, widths, color, label):
    """Horizontal bars as one collection: barh's one patch per bar takes seconds for 1000 cycles."""
    from matplotlib.collections import PolyCollection
    half = BAR / 2
    boxes = [[(left, y - half), (left + width, y - half), (left + width, y + half), (left, y + half)]
             for y, left, width in zip(centers, lefts, widths)]
    axes.add_collection(PolyCollection(boxes, facecolors=color, edgecolors="none", label=label),
                        autolim=False)


def _status_texts(axes, rows):
    from matplotlib.transforms import blended_transform_factory
    at_left = blended_transform_factory(axes.transAxes, axes.transData)
    for row in rows:
        if row["text"]:
            color = FAILED_COLOR if row["text"].startswith("failed") else "gray"
            axes.text(0.01, row["position"], row["text"], va="center", fontsize=8, color=color,
                      transform=at_left)


def _bytes_unit(largest):
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if largest >= 2 * scale:
            return unit, scale
    return "B", 1


def _written_bars(axes, rows, numbers):
    axes.set_title("bytes per checkpoint (the kept dump)", fontsize=10, loc="left")
    done = [row for row in rows if row["metrics"] and row["metrics"]["bytes_written"] is not None]
    written = [row["metrics"]["bytes_written"] for row in done]
    copied = [(row["metrics"]["bytes_copied"] or 0) + (row["metrics"]["bytes_fallback"] or 0)
              for row in done]
    largest = max((w + c for w, c in zip(written, copied)), default=0)
    unit, scale = _bytes_unit(largest)
    positions = [row["position"] for row in done]
    _bars(axes, positions, [0] * len(done), [w / scale for w in written], WRITTEN_COLOR,
          "written by the kept dump")
    if any(copied):
        _bars(axes, positions, [w / scale for w in written], [c / scale for c in copied], COPIED_COLOR,
              "copied from the previous image")
    if numbers:
        for row, w, c in zip(done, written, copied):
            axes.text((w + c) / scale, row["position"], f" {human_bytes(w)} ({row['kept']})",
                      va="center", fontsize=7.5)
    axes.set_xlim(0, largest / scale * 1.75 or 1)
    axes.set_xlabel(unit)
    axes.grid(True, axis="x", alpha=0.3)
    axes.set_axisbelow(True)
