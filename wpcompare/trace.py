"""Trace files: a recorded access order, replayed by `--pattern trace:PATH`.

Format, version 1 (text, UTF-8, one item a line)::

    wpcompare-trace 1
    page_size 4096
    region_bytes 67108864
    threads 2
    entries 3
    mechanism synthetic
    timestamps ns
    source pid 4242 (java) mapping 7f00c0000000-7f00c4000000 [heap]
    # a comment
    end
    0 w 0 0
    1 r 1 1500
    0 r 1 1800

The header comes first: the magic line `wpcompare-trace VERSION`, then `KEY VALUE` lines
(the value is the rest of the line) and `#` comments, up to the line `end`. Required keys:
`page_size` (bytes; 4096 is the only size replayed), `region_bytes` (the size of the
recorded region: the image it is replayed on must have exactly this size), `threads`
(1..64), `entries` (how many entry lines follow, so a cut file is refused) and `mechanism`
(how the trace was made: `synthetic`, or the capture's mechanism, see wpcompare.capture).
Optional: `timestamps` (`ns`: every entry has a fourth field, nanoseconds from the start
of the recording, never decreasing; `none`, the default: no fourth field), `source` and
`mapping` (free text: what was recorded), `window` (seconds recorded), `note` (free text:
what a reader must know, e.g. entries the capture added).

Each entry is `PAGE OP THREAD [NS]`: the page index in the region (0-based, below
region_bytes / page_size), `r` or `w`, and the workload thread (0..threads-1) that
replays it, in the order recorded. The replay (csrc/trace.c): each thread accesses its
own entries in file order; an entry is a *first touch* when no earlier entry of the file
names its page; only first touches are timed and counted as touched pages, the other
entries are replayed untimed (their cost, a write fault after a first read for example,
is in the touch phase's elapsed time). A write by thread t stores the value every
pattern's writes store (seeded by the page and t), so verification, the model of the
writes and the dirty-set checks see which threads wrote which pages.
"""
import os
import tempfile
from dataclasses import dataclass, field

from wpcompare.errors import InvalidArgument

MAGIC = "wpcompare-trace"
VERSION = 1
PAGE_SIZE = 4096
MAX_THREADS = 64
REQUIRED = ("page_size", "region_bytes", "threads", "entries", "mechanism")
OPTIONAL = ("timestamps", "source", "mapping", "window", "note")
MAX_HEADER_LINES = 1000


@dataclass
class Trace:
    """A trace file's header and entries (parallel lists, in file order)."""

    region_bytes: int
    threads: int
    mechanism: str
    pages: list
    writes: list                 # bool per entry
    thread_of: list              # int per entry
    times: list = None           # ns per entry, or None
    info: dict = field(default_factory=dict)   # source, mapping, window
    page_size: int = PAGE_SIZE
    version: int = VERSION
    path: str = None

    @property
    def region_pages(self):
        return -(-self.region_bytes // self.page_size)

    def __len__(self):
        return len(self.pages)


def _bad(path, where, what):
    return InvalidArgument(f"trace {path}: {where}: {what}")


def _whole(text, path, where, name, minimum=0, maximum=None):
    if not text.isascii() or not text.isdigit():
        raise _bad(path, where, f"{name} must be a whole number, not {text!r}")
    value = int(text)
    if value < minimum or (maximum is not None and value > maximum):
        upper = f" and at most {maximum}" if maximum is not None else ""
        raise _bad(path, where, f"{name} must be at least {minimum}{upper}, not {value}")
    return value


def _open_lines(path):
    try:
        with open(path, "rb") as source:
            data = source.read()
    except IsADirectoryError:
        raise InvalidArgument(f"trace {path}: is a directory, not a trace file") from None
    except OSError as error:
        raise InvalidArgument(f"trace {path}: cannot read it: {error.strerror or error}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data[:error.start].count(b"\n") + 1
        raise _bad(path, f"line {line}", "not UTF-8 text") from None
    return text.split("\n")


def _read_header(lines, path):
    """(header dict, index of the first entry line)."""
    if not lines or not lines[0].startswith(MAGIC + " "):
        raise _bad(path, "line 1", f"not a wpcompare trace (it must begin with '{MAGIC} {VERSION}')")
    version = lines[0][len(MAGIC) + 1:].strip()
    if version != str(VERSION):
        raise _bad(path, "line 1", f"version {version!r}: this wpcompare reads version {VERSION}")
    header = {}
    for index in range(1, min(len(lines), MAX_HEADER_LINES)):
        line = lines[index].strip()
        where = f"line {index + 1}"
        if not line or line.startswith("#"):
            continue
        if line == "end":
            return header, index + 1
        key, _, value = line.partition(" ")
        if key.isascii() and key.isdigit():
            raise _bad(path, where, f"{line!r} looks like an entry, but no 'end' line closes the "
                       "header before it")
        if key not in REQUIRED and key not in OPTIONAL:
            raise _bad(path, where, f"unknown header key {key!r} (known: "
                       f"{', '.join(REQUIRED + OPTIONAL)})")
        if key in header:
            raise _bad(path, where, f"header key {key!r} given twice")
        header[key] = (value.strip(), where)
    raise _bad(path, "header", "no 'end' line closes the header")


def load(path):
    """The trace at path; InvalidArgument with one line naming the line or entry at fault."""
    path = os.fspath(path)
    lines = _open_lines(path)
    header, first = _read_header(lines, path)
    missing = [key for key in REQUIRED if key not in header]
    if missing:
        raise _bad(path, "header", f"lacks {', '.join(missing)}")
    page_size = _whole(header["page_size"][0], path, header["page_size"][1], "page_size", 1)
    if page_size != PAGE_SIZE:
        raise _bad(path, header["page_size"][1],
                   f"page_size {page_size}: only {PAGE_SIZE}-byte pages are replayed")
    region_bytes = _whole(header["region_bytes"][0], path, header["region_bytes"][1], "region_bytes", 1)
    threads = _whole(header["threads"][0], path, header["threads"][1], "threads", 1, MAX_THREADS)
    count = _whole(header["entries"][0], path, header["entries"][1], "entries", 1)
    stamps_text, stamps_where = header.get("timestamps", ("none", "header"))
    if stamps_text not in ("ns", "none"):
        raise _bad(path, stamps_where, f"timestamps must be ns or none, not {stamps_text!r}")
    stamped = stamps_text == "ns"
    mechanism = header["mechanism"][0]
    if not mechanism:
        raise _bad(path, header["mechanism"][1], "mechanism is empty")
    region_pages = -(-region_bytes // page_size)

    body = lines[first:]
    if body and body[-1] == "":
        body.pop()      # the newline that ends the last entry
    if len(body) < count:
        raise _bad(path, f"entry {len(body) + 1}",
                   f"missing: the header says {count} entries, the file has {len(body)} (cut short?)")
    if len(body) > count:
        raise _bad(path, f"entry {count + 1} (line {first + count + 1})",
                   f"one too many: the header says {count} entries")
    pages, writes, thread_of = [0] * count, [False] * count, [0] * count
    times = [0] * count if stamped else None
    fields_wanted = 4 if stamped else 3
    previous = 0
    for number, line in enumerate(body):
        parts = line.split()
        if len(parts) != fields_wanted or not all(part.isascii() and part.isdigit()
                                                  for i, part in enumerate(parts) if i != 1):
            raise _bad(path, f"entry {number + 1} (line {first + number + 1})",
                       f"{line.strip()!r} is not 'PAGE r|w THREAD{' NS' if stamped else ''}'")
        page, thread = int(parts[0]), int(parts[2])
        if parts[1] not in ("r", "w"):
            raise _bad(path, f"entry {number + 1} (line {first + number + 1})",
                       f"access {parts[1]!r} is neither r nor w")
        if page >= region_pages:
            raise _bad(path, f"entry {number + 1} (line {first + number + 1})",
                       f"page {page} is outside the region of {region_pages} pages")
        if thread >= threads:
            raise _bad(path, f"entry {number + 1} (line {first + number + 1})",
                       f"thread {thread} is not below the header's threads ({threads})")
        if stamped:
            stamp = int(parts[3])
            if stamp < previous:
                raise _bad(path, f"entry {number + 1} (line {first + number + 1})",
                           f"timestamp {stamp} is before the previous entry's ({previous})")
            times[number] = previous = stamp
        pages[number], writes[number], thread_of[number] = page, parts[1] == "w", thread
    info = {key: header[key][0] for key in OPTIONAL if key in header and key != "timestamps"}
    return Trace(region_bytes=region_bytes, threads=threads, mechanism=mechanism, pages=pages,
                 writes=writes, thread_of=thread_of, times=times, info=info, page_size=page_size,
                 path=path)


def check_region(trace, image_bytes):
    """InvalidArgument unless the trace was recorded for a region of the image's size."""
    if trace.region_bytes != image_bytes:
        raise InvalidArgument(
            f"trace {trace.path}: recorded for a region of {trace.region_bytes} bytes, "
            f"the image is {image_bytes} bytes: replay it on the image captured with it")


def render(trace):
    """The file text of a trace."""
    out = [f"{MAGIC} {VERSION}", f"page_size {trace.page_size}", f"region_bytes {trace.region_bytes}",
           f"threads {trace.threads}", f"entries {len(trace.pages)}", f"mechanism {trace.mechanism}",
           f"timestamps {'ns' if trace.times is not None else 'none'}"]
    for key in OPTIONAL:
        value = trace.info.get(key)
        if key != "timestamps" and value is not None:
            text = " ".join(str(value).split())
            if text:
                out.append(f"{key} {text}")
    out.append("end")
    if trace.times is None:
        out += [f"{p} {'w' if w else 'r'} {t}"
                for p, w, t in zip(trace.pages, trace.writes, trace.thread_of)]
    else:
        out += [f"{p} {'w' if w else 'r'} {t} {ns}"
                for p, w, t, ns in zip(trace.pages, trace.writes, trace.thread_of, trace.times)]
    return "\n".join(out) + "\n"


def save(trace, path):
    """Write trace to path: a temporary file beside it, renamed over it when complete."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, temporary = tempfile.mkstemp(prefix=".wpcompare-trace-", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as sink:
            sink.write(render(trace))
            sink.flush()
            os.fsync(sink.fileno())
        os.rename(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except FileNotFoundError:
            pass
        raise


def summary(trace):
    """What `wpcompare trace show` prints, as data."""
    seen, written = set(), set()
    per_thread = [{"thread": t, "entries": 0, "first_touches": 0, "writes": 0}
                  for t in range(trace.threads)]
    last_first = [None] * trace.threads
    steps = next_page = 0
    for page, write, thread in zip(trace.pages, trace.writes, trace.thread_of):
        counts = per_thread[thread]
        counts["entries"] += 1
        counts["writes"] += write
        if write:
            written.add(page)
        if page in seen:
            continue
        seen.add(page)
        counts["first_touches"] += 1
        if last_first[thread] is not None:
            steps += 1
            next_page += page == last_first[thread] + 1
        last_first[thread] = page
    entries = len(trace.pages)
    return {
        "path": trace.path, "version": trace.version, "mechanism": trace.mechanism,
        "info": dict(trace.info), "page_size": trace.page_size, "region_bytes": trace.region_bytes,
        "region_pages": trace.region_pages, "threads": trace.threads, "entries": entries,
        "pages_touched": len(seen), "touched_share": len(seen) / trace.region_pages,
        "pages_written": len(written), "written_share": len(written) / len(seen) if seen else 0.0,
        "write_entries": sum(trace.writes), "repeats": entries - len(seen),
        # Of the successive first touches of each thread, the share that go to the next page.
        "sequential_share": next_page / steps if steps else None,
        "span_ns": (trace.times[-1] - trace.times[0]) if trace.times else None,
        "per_thread": per_thread,
    }


def show_lines(trace):
    """`wpcompare trace show`: the summary for people."""
    s = summary(trace)
    lines = [f"trace {s['path']}: version {s['version']}, mechanism {s['mechanism']}"]
    for key, value in s["info"].items():
        lines.append(f"{key}: {value}")
    lines.append(f"region: {s['region_bytes']} bytes, {s['region_pages']} pages of {s['page_size']} bytes")
    lines.append(f"entries: {s['entries']} ({s['repeats']} repeat an earlier entry's page)"
                 + (f", over {s['span_ns'] / 1e9:.3f} s" if s["span_ns"] is not None else ""))
    lines.append(f"pages touched: {s['pages_touched']} ({100 * s['touched_share']:.1f}% of the region)")
    lines.append(f"pages written: {s['pages_written']} ({100 * s['written_share']:.1f}% of those "
                 f"touched); write entries: {s['write_entries']}")
    sequential = ("n/a (fewer than two first touches per thread)" if s["sequential_share"] is None
                  else f"{100 * s['sequential_share']:.1f}% of successive first touches go to the next page")
    lines.append(f"sequential: {sequential}")
    lines.append(f"threads: {s['threads']}")
    for row in s["per_thread"]:
        lines.append(f"  thread {row['thread']}: {row['entries']} entries, {row['first_touches']} "
                     f"first touches, {row['writes']} writes")
    return lines
