"""`wpcompare plot` of a size sweep (wpcompare.sweep): the cost per page against the size.

One panel per phase (restore, touch, fixup, time to detached), the size on a log-2 axis and
the ns per 4 KiB page on a log axis; one line per strategy and op (a strategy keeps its color
in every panel; reads solid, writes dashed), each point the median over the measured runs with
a bar from the fastest to the slowest run. A line is broken where a size did not run.
"""
from wpcompare import sweep
from wpcompare.options import format_size

OP_DASHES = {"read": "-", "write": "--", "mixed": ":"}


def points(line, name):
    """(sizes, medians, below, above) of one line's phase, where it ran: the spread bar's
    distances below and above the median (to the min and the max run)."""
    sizes, medians, below, above = [], [], [], []
    for entry in line["per_size"]:
        summary = (entry or {}).get("per_page_ns", {}).get(name) if entry and entry["status"] == "ok" else None
        if not summary:
            continue
        sizes.append(entry["size"])
        medians.append(summary["median"])
        below.append(summary["median"] - summary["min"])
        above.append(summary["max"] - summary["median"])
    return sizes, medians, below, above


def plot_sweep(document, Figure):
    """(figure, notes): the per-page panels; notes name the lines left out of every panel."""
    from wpcompare import plot, report

    section = sweep.derive(document)
    lines = section["lines"]
    labels = list(dict.fromkeys(line["label"] for line in lines))
    colors = dict(zip(labels, (color for color, _ in plot._line_styles(len(labels)))))
    notes = [f"not plotted: {line['label']} {line['op']}: no size ran" for line in lines
             if not any(entry and entry["status"] == "ok" for entry in line["per_size"])]
    figure = Figure(figsize=(13, 9), layout="constrained")
    figure.suptitle(f"cost per 4 KiB page against the image size ({', '.join(map(format_size, section['sizes']))})"
                    f"\n{report.context_line(document)}", fontsize=10)
    grid = figure.add_gridspec(2, 3, width_ratios=[1, 1, 0.4])
    drawn = {}
    for index, (name, _, pages) in enumerate(sweep.PHASES):
        axes = figure.add_subplot(grid[index // 2, index % 2])
        of = "touched page" if pages == "touched_pages" else "page"
        axes.set_title(f"{name}: ns per 4 KiB {of}", fontsize=10)
        any_drawn = False
        for line in lines:
            xs, ys, below, above = points(line, name)
            # Zero per-page cost (a phase with nothing to do) has no place on a log axis.
            kept = [(x, y, b, a) for x, y, b, a in zip(xs, ys, below, above) if y > 0]
            if not kept:
                continue
            xs, ys, below, above = (list(values) for values in zip(*kept))
            below = [min(b, y * 0.999) for b, y in zip(below, ys)]
            handle = axes.errorbar(xs, ys, yerr=[below, above], color=colors[line["label"]],
                                   linestyle=OP_DASHES.get(line["op"], "-."), marker="o", markersize=3,
                                   capsize=2, linewidth=1.3)
            drawn.setdefault(f"{line['label']} {line['op']}", handle)
            any_drawn = True
        axes.set_xscale("log", base=2)
        axes.set_xticks(section["sizes"], [format_size(size) for size in section["sizes"]])
        axes.minorticks_off()
        axes.set_xlabel("image size (log 2)")
        if any_drawn:
            from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter
            axes.set_yscale("log")
            axes.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
            axes.yaxis.set_major_formatter(FuncFormatter(lambda value, _: sweep.format_per_page(value)))
            axes.yaxis.set_minor_formatter(NullFormatter())
        else:
            axes.text(0.5, 0.5, f"no {name} measured", ha="center", va="center",
                      transform=axes.transAxes, color="gray")
        axes.grid(True, which="major", alpha=0.3)
    legend = figure.add_subplot(grid[:, 2])
    legend.set_axis_off()
    if drawn:
        legend.legend(list(drawn.values()), list(drawn), loc="upper left", fontsize=8, frameon=False,
                      title="strategy, op (bars: fastest to slowest run)", title_fontsize=8)
    return figure, notes
