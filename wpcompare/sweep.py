"""Cost against size: `wpcompare run --size 64M,256M,1G,4G`.

A sweep runs the same matrix (the chosen strategies and the bounds) once per size, smallest
first, each size on an image generated for it and put into the same page-cache state, every
run in a fresh worker as always. Each row carries its size (`sweep_size`), so a row's groups,
and their `x bound`, are per size: time to detached is divided by the copy bound at the same
size. When a size is done its image is evicted from the page cache, so it adds no memory
pressure to the next size's runs.

The derived `sweep` section of the document (derive(), recomputed from the rows whenever a
file is read, as the groups are) gives per line (strategy with its parameters, op, pattern,
threads) and size: the per-page cost of restore, touch, fixup and time to detached (each run's
time over its own region's 4 KiB pages, touch over the pages it touched; median, min and max
over the measured runs), its growth over the smallest size, `x bound`, and the worker's memory
(process_memory: the resident set's high-water mark before restore and at the end, page
tables at the end, minor faults). A growth of the largest size over 256 MiB (or over the
smallest size, if 256 MiB was not swept) above GROWTH_LIMIT is flagged: issue 15's target
is per-page cost at 4 GiB within 1.3x of that at 256 MiB.
"""
import os

from wpcompare import export, metrics, report, results, runner
from wpcompare import image as images
from wpcompare.errors import InvalidArgument
from wpcompare.export import Bullet, Table, format_count, format_ns
from wpcompare.options import format_size, human_bytes, parse_size

PAGE = 4096                      # per-page costs are per 4 KiB page, whatever the strategy maps
GROWTH_BASE = 256 << 20          # the reference size for the growth target
GROWTH_LIMIT = 1.3
# (name in the sweep section, metric of the registry, the row field counting its pages)
PHASES = (("restore", "restore_ns", "pages"),
          ("touch", "touch_ns", "touched_pages"),
          ("fixup", "fixup_ns", "pages"),
          ("to detached", "time_to_detached_ns", "pages"))
# (key of a row's "memory", what it is)
MEMORY = (("hwm_before_kb", "VmHWM before restore"), ("hwm_end_kb", "VmHWM at the end"),
          ("rss_end_kb", "VmRSS at the end"), ("pte_end_kb", "VmPTE at the end"),
          ("minflt", "minor faults in the run"))
SIZE_KEY = "sweep_size"


# ---- the size list ----

def parse_sizes(text):
    """The sizes of --size, a comma list of parse_size's sizes, as a tuple of bytes: one size
    as typed (today's behaviour), several sorted ascending, each a whole number of 4 KiB pages,
    none twice; InvalidArgument naming the item at fault and the fix."""
    items = [item.strip() for item in str(text).split(",")]
    if len(items) == 1:
        return (parse_size(items[0]),)
    if any(not item for item in items):
        raise InvalidArgument(f"invalid size list {text!r}: an empty item; give sizes separated by "
                              "single commas, e.g. 64M,256M,1G")
    sizes = [parse_size(item) for item in items]
    for item, size in zip(items, sizes):
        if size % PAGE:
            raise InvalidArgument(f"invalid size {item!r} in a sweep: per-page costs need whole 4 KiB "
                                  f"pages; use a multiple of 4K (e.g. {format_size(-(-size // PAGE) * PAGE)})")
    seen = {}
    for item, size in zip(items, sizes):
        if size in seen:
            raise InvalidArgument(f"invalid size list {text!r}: {item!r} is the same size as "
                                  f"{seen[size]!r}; give each size once")
        seen[size] = item
    return tuple(sorted(sizes))


def check_fits(sizes):
    """InvalidArgument, before anything is generated or run, if the largest size's runs cannot
    fit in MemAvailable (image.memory_needed: the image in the page cache plus its restored
    copy; the sizes run one after the other, each size's image evicted when it is done)."""
    available = images.memory_available()
    if available is None:
        return
    largest = max(sizes)
    needed = images.memory_needed(largest)
    if needed <= available:
        return
    fitting = [size for size in sizes if images.memory_needed(size) <= available]
    fix = (f"drop the sizes above {format_size(max(fitting))}" if fitting
           else "use smaller sizes")
    raise InvalidArgument(f"--size {','.join(format_size(size) for size in sizes)}: the "
                          f"{format_size(largest)} runs need about {human_bytes(needed)} of memory (the "
                          f"image in the page cache plus its restored copy) but only "
                          f"{human_bytes(available)} is available (MemAvailable): {fix}")


def is_sweep(document):
    return bool((document.get("metadata") or {}).get("sweep"))


# ---- running it ----

class _SizedProgress(runner.Progress):
    """One progress line over every size's matrix, each run's label saying its size."""

    def __init__(self, inner, total):
        self.inner, self.total = inner, total
        self.offset, self.size = 0, None

    def at(self, size, offset):
        self.size, self.offset = size, offset

    def _sized(self, spec):
        return spec.replace(label=f"{spec.label} @{format_size(self.size)}")

    def started(self, index, total, spec):
        self.inner.started(self.offset + index, self.total, self._sized(spec))

    def finished(self, index, total, spec, row):
        self.inner.finished(self.offset + index, self.total, self._sized(spec), row)

    def close(self):
        self.inner.close()


def generate_images(sizes, seed, kind):
    """The image of each size (image.generated_image), all before the first run, so a disk too
    small for the last is refused before anything ran."""
    return [images.generated_image(size, seed, kind) for size in sizes]


def run_sweep(matrix, sized_images, cache, progress=None):
    """(rows, per-size facts): matrix (a runner.Matrix) run on each image in turn (its own image
    replaced), each in the page-cache state cache; every row carries its SIZE_KEY."""
    from dataclasses import replace

    sized = [replace(matrix, image=image) for image in sized_images]
    counts = [len(runner.plan(each)) for each in sized]
    progress = _SizedProgress(progress or runner.Progress(), sum(counts))
    rows, facts = [], []
    for each, offset in zip(sized, _offsets(counts)):
        size = each.image.size
        progress.at(size, offset)
        with images.PageCache(each.image, cache) as page_cache:
            done = runner.run_matrix(each, progress, page_cache) if each.choices else []
            facts.append({"size": size, "image": each.image.describe(), "cache": page_cache.describe()})
        _evict(each.image.path)
        for row in done:
            row[SIZE_KEY] = size
        rows += done
    return rows, facts


def _offsets(counts):
    total = 0
    for count in counts:
        yield total
        total += count


def _evict(path):
    """Drop a size's image from the page cache, so the next size's runs do not pay for it."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def metadata(facts):
    """The document metadata's "sweep": the sizes and each one's image and page-cache state."""
    return {"sizes": [fact["size"] for fact in facts], "per_size": facts}


# ---- the derived section ----

def per_page_values(rows, metric, pages_field):
    """Each measured run's value of metric over its own pages_field (ns per 4 KiB page)."""
    values = []
    for row in results.rows_for(metric, *results.split_runs(rows)):
        value, pages = metrics.find(metric).value(row), row.get(pages_field)
        if value is not None and pages:
            values.append(value / pages)
    return values


def _memory_values(rows, key):
    measured, _ = results.split_runs(rows)
    return [row["memory"][key] for row in measured
            if (row.get("memory") or {}).get(key) is not None]


def growth_base(sizes):
    """The size the flagged growth is over: 256 MiB if swept below the largest, else the smallest."""
    return GROWTH_BASE if GROWTH_BASE in sizes and GROWTH_BASE < max(sizes) else min(sizes)


def _line_key(group):
    return tuple(group.get(key) for key in results.GROUP_KEYS if key != SIZE_KEY)


def derive(document):
    """The `sweep` section of a sweep document, from its runs and groups (see the module)."""
    sizes = sorted(document["metadata"]["sweep"]["sizes"])
    base = growth_base(sizes)
    rows_by_group = {}
    for row in document["runs"]:
        rows_by_group.setdefault(results.group_key(row), []).append(row)
    lines = {}
    for group in document["groups"]:
        size = group.get(SIZE_KEY)
        # A row of no size is one that never ran (a preset's strategy this build lacks): it
        # stands, with its reason, at every size.
        if size not in sizes and not (size is None and group["status"] != "ok"):
            continue
        line = lines.setdefault(_line_key(group), {
            **{key: group.get(key) for key in ("label", "strategy", "params", "op", "pattern", "threads",
                                               "overlap")},
            "per_size": [None] * len(sizes)})
        rows = rows_by_group[tuple(group.get(key) for key in results.GROUP_KEYS)]
        for each in (sizes if size is None else [size]):
            line["per_size"][sizes.index(each)] = _entry(group, each, rows)
    for line in lines.values():
        line["growth"], line["growth_over_base"], line["flagged"] = {}, {}, []
        for name, _, _ in PHASES:
            medians = [_median((entry or {}).get("per_page_ns", {}).get(name)) for entry in line["per_size"]]
            first = medians[0]
            line["growth"][name] = [median / first if median is not None and first else None
                                    for median in medians]
            at_base, largest = medians[sizes.index(base)], medians[-1]
            factor = largest / at_base if largest is not None and at_base else None
            line["growth_over_base"][name] = factor
            if factor is not None and factor > GROWTH_LIMIT:
                line["flagged"].append(name)
    return {"sizes": sizes, "growth_base": base, "growth_limit": GROWTH_LIMIT,
            "page_bytes": PAGE, "lines": list(lines.values())}


def format_per_page(ns):
    """format_ns, with two digits below 10 ns (a fixup with nothing to do costs a fraction of one)."""
    return f"{ns:.2g} ns" if ns is not None and ns < 10 else format_ns(ns)


def _entry(group, size, rows):
    """One size of one line: the group's status, per-page costs, x bound and memory."""
    ok = group["status"] == "ok"
    return {
        "size": size, "status": group["status"], "reason": group["reason"],
        "verified": group["verified"], "detached_runs": group["detached_runs"], "runs": group["runs"],
        "per_page_ns": {name: results.summarize_values(per_page_values(rows, metric, pages))
                        if ok else None for name, metric, pages in PHASES},
        "x_bound": (group.get("x_bound") or {}).get("time_to_detached_ns") if ok else None,
        "memory": {key: results.summarize_values(_memory_values(rows, key)) if ok else None
                   for key, _ in MEMORY},
    }


def _median(summary):
    return summary["median"] if summary else None


def attach(document):
    """document with its `sweep` section (derived again) if it is a sweep; as it was otherwise."""
    if is_sweep(document):
        document["sweep"] = derive(document)
    return document


def build_document(rows, metadata_):
    """results.build_document with the sweep section."""
    return attach(results.build_document(rows, metadata_))


# ---- showing it ----

def _size_header(section):
    return [format_size(size) for size in section["sizes"]]


def _state(entry):
    if entry is None:
        return "-"
    if entry["status"] != "ok":
        return entry["status"]
    return None


def _phase_table(section, name):
    base = format_size(section["growth_base"])
    largest = format_size(section["sizes"][-1])
    header = ["strategy", "op"] + _size_header(section) + [f"{largest}/{base}"]
    rows = []
    for line in section["lines"]:
        cells = []
        for index, entry in enumerate(line["per_size"]):
            state = _state(entry)
            summary = entry["per_page_ns"][name] if state is None else None
            if state is not None or summary is None:
                cells.append(state or "-")
                continue
            text = format_per_page(summary["median"])
            if summary["n"] > 1:
                text += f" ±{summary['spread_pct']:.0f}%"
            growth = line["growth"][name][index]
            if index and growth is not None:
                text += f" {growth:.2f}x"
            cells.append(text)
        factor = line["growth_over_base"][name]
        flag = "-" if factor is None else f"{factor:.2f}x" + (" !" if name in line["flagged"] else "")
        rows.append([line["label"], line["op"]] + cells + [flag])
    return Table(header, rows)


def _size_cells(section, line, cell):
    return [_state(entry) or cell(entry) for entry in line["per_size"]]


def _ratio(value):
    return "-" if value is None else f"{value:.2f}x"


def _kib(summary):
    return "-" if summary is None else human_bytes(summary["median"] * 1024)


def _memory_cell(entry):
    memory = entry["memory"]
    base, peak = memory["hwm_before_kb"], memory["hwm_end_kb"]
    if base is None or peak is None:
        return "-"
    return f"{_kib(base)} -> {_kib(peak)} (+{human_bytes((peak['median'] - base['median']) * 1024)})"


def _faults_cell(entry):
    faults, pages = entry["memory"]["minflt"], entry["size"] // PAGE
    if faults is None:
        return "-"
    return f"{format_count(faults['median'])} ({faults['median'] / pages:.2f}/page)"


def _table(section, cell):
    header = ["strategy", "op"] + _size_header(section)
    return Table(header, [[line["label"], line["op"]] + _size_cells(section, line, cell)
                          for line in section["lines"]])


def layout(document):
    """The text report of a sweep: one table per phase (per-page cost by size), x bound, memory."""
    section = document.get("sweep") or derive(document)
    meta = document["metadata"]
    options, image = meta.get("options") or {}, meta.get("image") or {}
    sizes = ", ".join(format_size(size) for size in section["sizes"])
    blocks = [[f"size sweep {sizes}: {image.get('kind')} images, seed {image.get('seed')}; pattern "
               f"{options.get('pattern')}, {options.get('threads')} thread(s); page cache "
               f"{(meta.get('cache') or {}).get('mode')}; {options.get('repeat')} run(s) + "
               f"{options.get('warmup')} warmup per row and size"]]
    for name, _, pages in PHASES:
        of = "touched page" if pages == "touched_pages" else "page of the region"
        blocks.append([f"{name}: ns per 4 KiB {of}, median ± spread over the runs; "
                       f"growth over {format_size(section['sizes'][0])}",
                       _phase_table(section, name)])
    blocks.append(["time to detached x bound (over bound-copy at the same size)",
                   _table(section, lambda entry: _ratio(entry["x_bound"]))])
    blocks.append(["worker's peak resident set: VmHWM before restore -> at the end (+ the region's share)",
                   _table(section, _memory_cell)])
    blocks.append(["page tables at the end (VmPTE)",
                   _table(section, lambda entry: _kib(entry["memory"]["pte_end_kb"]))])
    blocks.append(["minor faults in the run, restore to verify (per 4 KiB page of the region)",
                   _table(section, _faults_cell)])
    notes = [f"{line['label']} {line['op']} @{format_size(entry['size'])}: {entry['status']}: {entry['reason']}"
             for line in section["lines"] for entry in line["per_size"]
             if entry is not None and entry["status"] != "ok"]
    blocks.append([Bullet(note) for note in notes])
    flagged = [f"{line['label']} {line['op']} {name} {line['growth_over_base'][name]:.2f}x"
               for line in section["lines"] for name in line["flagged"]]
    found = list(flagged and [
        f"per-page cost grew more than {GROWTH_LIMIT}x from {format_size(section['growth_base'])} to "
        f"{format_size(section['sizes'][-1])} (marked !): " + ", ".join(flagged)])
    found += report.warnings(document)
    blocks.append([Bullet(f"warning: {text}") for text in found])
    blocks.append([Bullet("per page: each measured run's phase time over its own region's 4 KiB pages "
                          "(touch: over the pages it touched), median over the runs; growth: the median "
                          "over the smallest size's; ! marks a growth over "
                          f"{GROWTH_LIMIT}x from {format_size(section['growth_base'])} to the largest size; "
                          "memory: medians over the measured runs, read by the worker")])
    return blocks


RECORD_IDENTITY = ("strategy", "params", "label", "op", "pattern", "threads", "overlap")


def records(document):
    """One line per line of the sweep and size: per-page medians and growth, x bound, memory."""
    section = document.get("sweep") or derive(document)
    header = list(RECORD_IDENTITY) + ["size_bytes", "status", "reason"]
    for name, _, _ in PHASES:
        column = name.replace(" ", "_")
        header += [f"{column}_per_page_ns_median", f"{column}_per_page_ns_min",
                   f"{column}_per_page_ns_max", f"{column}_growth"]
    header += ["time_to_detached_x_bound"] + [f"{key}_median" for key, _ in MEMORY]
    lines = []
    for line in section["lines"]:
        for index, entry in enumerate(line["per_size"]):
            if entry is None:
                continue
            values = [line[key] for key in RECORD_IDENTITY] + [entry["size"], entry["status"], entry["reason"]]
            for name, _, _ in PHASES:
                summary = entry["per_page_ns"][name]
                values += ([summary["median"], summary["min"], summary["max"]] if summary else [None] * 3)
                values.append(line["growth"][name][index])
            values.append(entry["x_bound"])
            values += [_median(entry["memory"][key]) for key, _ in MEMORY]
            lines.append(values)
    return header, lines


KIND = export.Kind("run", layout, results.dumps, records, report.warnings)
