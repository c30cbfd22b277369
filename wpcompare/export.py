"""How values and tables look to people, in every report (`run`, `cycle`, `compare`).

format_value shows a value of a metric by its unit (wpcompare.metrics); table lays out a
table for the terminal or markdown.
"""
from tabulate import tabulate

from wpcompare.options import human_bytes


def table(rows, header, tablefmt):
    """tabulate's table; in markdown (github) a `|` inside a cell is escaped, so a label such as
    `-s uffd-hybrid:path=a|b` stays in its column."""
    if tablefmt == "github":
        rows = [[_markdown_cell(cell) for cell in row] for row in rows]
        header = [_markdown_cell(cell) for cell in header]
    return tabulate(rows, header, tablefmt=tablefmt, disable_numparse=True)


def _markdown_cell(cell):
    return cell.replace("|", "\\|") if isinstance(cell, str) else cell


# ---- values as people read them ----

def format_ns(ns):
    """850 -> "850 ns", 12345 -> "12.3 µs", 45600000 -> "45.6 ms"."""
    if ns is None:
        return "-"
    for unit, scale in (("s", 1e9), ("ms", 1e6), ("µs", 1e3)):
        if ns >= scale:
            value = ns / scale
            return f"{value:.3g} {unit}" if value < 100 else f"{value:.0f} {unit}"
    return f"{ns:.0f} ns"


def format_count(value):
    return "-" if value is None else f"{round(value):,}"


def format_ratio(value):
    return "-" if value is None else f"{value:.3g}x"


UNIT_FORMATS = {
    "ns": format_ns,
    "count": format_count,
    "bytes": lambda value: "-" if value is None else human_bytes(value),
    "KiB": lambda value: "-" if value is None else human_bytes(value * 1024),
    "ratio": format_ratio,
}


def format_value(unit, value):
    """A value of a metric of this unit, for people."""
    return UNIT_FORMATS[unit](value)
