"""Output formats, one registry for every document: `run`'s, `cycle`'s and `compare`'s.

A document Kind says what its document holds for each way of showing it: its layout as text
(blocks of lines, bulleted notes and tables: the skeleton every text report shares), its raw
records for tools (a header and rows of numbers as measured: ns, counts, bytes; None for a kind
without any), its JSON text, and the warnings that go to stderr when stdout carries data.

A Format is a name, the file extensions that choose it for `-o FILE`, and one renderer of any
kind's document. `run`, `cycle` and `compare` offer every format whose renderer has what it
needs from their kind. A new format is one renderer and one line in FORMATS.
"""
import csv
import io
import os
from dataclasses import dataclass
from typing import Callable, Optional

from tabulate import tabulate

from wpcompare.options import human_bytes


# ---- the text skeleton ----

@dataclass(frozen=True)
class Table:
    header: list
    rows: list


@dataclass(frozen=True)
class Bullet:
    """A note: a list item in markdown, a plain line in the terminal."""

    text: str


@dataclass(frozen=True)
class Listed:
    """An item under a heading: a list item in markdown, indented in the terminal."""

    text: str


def _no_warnings(document):
    return []


@dataclass(frozen=True)
class Kind:
    name: str                              # "run", "cycle", "compare"
    layout: Callable                       # document -> [block]: a block is [str | Bullet | Listed | Table]
    dumps: Callable                        # document -> its JSON text
    records: Optional[Callable] = None     # document -> (header, rows) of raw values; None: no csv
    warnings: Callable = _no_warnings      # document -> [text], on stderr when stdout is data
    # () -> (every column name, the terminal table's default ones): the table's columns can be
    # chosen (`--columns`), and layout takes them as layout(document, names); None: fixed columns.
    columns: Optional[Callable] = None
    histograms: Optional[Callable] = None  # document -> [(tag, length_s, histogram)]: hlog; None: none


def table(rows, header, tablefmt):
    """tabulate's table; in markdown (github) a `|` inside a cell is escaped, so a label such as
    `-s uffd-hybrid:path=a|b` stays in its column."""
    if tablefmt == "github":
        rows = [[_markdown_cell(cell) for cell in row] for row in rows]
        header = [_markdown_cell(cell) for cell in header]
    return tabulate(rows, header, tablefmt=tablefmt, disable_numparse=True)


def _markdown_cell(cell):
    return cell.replace("|", "\\|") if isinstance(cell, str) else cell


def text(blocks, tablefmt, bullet):
    """The blocks, separated by an empty line, each item on its line(s)."""
    def line(item):
        if isinstance(item, Table):
            return table(item.rows, item.header, tablefmt)
        if isinstance(item, Bullet):
            return bullet + item.text
        if isinstance(item, Listed):
            return (bullet or "  ") + item.text
        return item
    return "\n\n".join("\n".join(line(item) for item in block) for block in blocks if block) + "\n"


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


# ---- the table's columns ----

def parse_columns(kind, text):
    """The column names `--columns TEXT` chooses: "all", "default", or NAME,NAME,... (names
    as `--columns all` lists them, any case), or InvalidArgument naming what is wrong."""
    from wpcompare.errors import InvalidArgument

    if kind.columns is None:
        raise InvalidArgument(f"--columns: a {kind.name} table has fixed columns; drop --columns")
    every, default = kind.columns()
    if text.strip().lower() == "all":
        return tuple(every)
    if text.strip().lower() == "default":
        return tuple(default)
    by_lower = {name.lower(): name for name in every}
    chosen = []
    for name in (part.strip() for part in text.split(",")):
        if name.lower() not in by_lower:
            raise InvalidArgument(f"--columns: no column {name!r} in a {kind.name} table; choose "
                                  "all, default, or names from: " + ", ".join(every))
        if by_lower[name.lower()] not in chosen:
            chosen.append(by_lower[name.lower()])
    return tuple(chosen)


def _layout(kind, document, columns, wide):
    """kind's blocks with the chosen columns; without a choice the terminal's table has the
    kind's default ones, markdown (wide) every one."""
    if kind.columns is None:
        return kind.layout(document)
    every, default = kind.columns()
    return kind.layout(document, columns or (every if wide else default))


def _text_format(tablefmt, bullet, wide):
    def render(kind, document, columns=None):
        return text(_layout(kind, document, columns, wide), tablefmt, bullet)
    return render


# ---- the formats ----

def render_csv(kind, document, columns=None):
    """The kind's records, one line each; an absent value is an empty field."""
    header, rows = kind.records(document)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow(["" if value is None else value for value in row])
    return out.getvalue()


@dataclass(frozen=True)
class Format:
    name: str
    extensions: tuple            # for -o FILE without --format
    render: Callable             # (kind, document, columns) -> text; columns: names or None
    needs_records: bool = False  # offered only for kinds with records
    data: bool = False           # for tools: a kind's warnings go to stderr instead
    needs_histograms: bool = False  # offered only for kinds with histograms

    def offered_for(self, kind):
        return ((not self.needs_records or kind.records is not None)
                and (not self.needs_histograms or kind.histograms is not None))


def render_hlog(kind, document, columns=None):
    from wpcompare import hlog

    return hlog.interval_log(kind.histograms(document), document.get("metadata") or {})


FORMATS = (
    Format("table", (), _text_format("simple", "", wide=False)),
    Format("json", (".json",), lambda kind, document, columns=None: kind.dumps(document), data=True),
    Format("csv", (".csv",), render_csv, needs_records=True, data=True),
    Format("markdown", (".md", ".markdown"), _text_format("github", "- ", wide=True)),
    Format("hlog", (".hlog",), render_hlog, needs_histograms=True, data=True),
)
BY_NAME = {fmt.name: fmt for fmt in FORMATS}
DEFAULT = "table"


def names(kind):
    """The formats kind's documents can be written in, in registry order."""
    return tuple(fmt.name for fmt in FORMATS if fmt.offered_for(kind))


def render(kind, document, name, columns=None):
    """document in format name; columns: the table's column names (parse_columns), or None."""
    return BY_NAME[name].render(kind, document, columns)


def is_data(name):
    return BY_NAME[name].data


def format_of(kind, path):
    """The format a file's extension names, if kind offers it; else the default (table)."""
    extension = os.path.splitext(str(path))[1].lower()
    for fmt in FORMATS:
        if extension in fmt.extensions and fmt.offered_for(kind):
            return fmt.name
    return DEFAULT
