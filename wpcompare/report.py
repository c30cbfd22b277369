"""What a `run` result document shows: its kind in the format registry (export.KIND).

The text view (table, markdown) is for people: medians in human units with their spread,
skipped and failed rows with their reasons, warnings underneath; its columns are the
metrics of the registry (wpcompare.metrics) that have one. The records (csv) are for
tools: raw numbers (ns, counts) of every metric; json is the whole document.
"""
import re

from wpcompare import export, hlog, metrics, output, published, results, verdict
from wpcompare.export import Bullet, Table, format_count, format_ns
from wpcompare.options import human_bytes
from wpcompare.rows import params_pairs, params_text


def columns():
    """(title, key) of the table's columns: the registry's metrics that have a column, each
    ratio to the bound after its metric (key "x_bound:NAME")."""
    shown = [("strategy", None), ("op", None)]
    for metric in metrics.table_metrics():
        shown.append((metric.column, metric.name))
        if metric.bound_ratio:
            shown.append(("x bound", f"x_bound:{metric.name}"))
    return shown + [("verified", None), ("detached", None)]


# The columns `--columns` names (after strategy and op, which every table has): each metric's
# column title, "x bound:" and the title of the metric it divides, verified and detached, and
# "checked" (verified and detached in one mark, for the narrow default table).
CHECKED = "checked"
DEFAULT_COLUMNS = ("restore", "touch", "fixup", "to detached", CHECKED)


def column_names():
    """(every column name in `--columns all` order, the default table's): export.Kind.columns."""
    every = []
    for metric in metrics.table_metrics():
        every.append(metric.column)
        if metric.bound_ratio:
            every.append(f"x bound:{metric.column}")
    return tuple(every + ["verified", "detached"]), DEFAULT_COLUMNS


def legend(document):
    """What the columns mean, as this document measured them."""
    meta = document["metadata"]
    latency = meta.get("latency") or {}
    if latency.get("mode") in (None, "every"):
        timed = "every first access timed (a clock read before and after it)"
    elif latency.get("mode") == "off":
        timed = "not measured (--latency off)"
    else:
        timed = f"about every {latency.get('every')}-th first access timed (random gaps)"
    if "latency" in meta:
        touch = ("touch: the workload's first access to each page, in runs with no clock inside the "
                 f"loop: the application's time; p50/p99/max per page: from {latency.get('runs')} "
                 f"instrumented run(s) of their own per row, {timed}")
    else:
        touch = "touch, p50/p99/max per page: every first access timed (a run/1 file)"
    bound = meta.get("reference_bound")
    bound_text = (f"x bound: the median over the fastest {bound} row's (one copy of the image from the "
                  "page cache into memory faulted in before restore, in 4 KiB, THP or 2 MiB pages; here "
                  f"{_reference_rows(document)}), same op, for time to detached and for "
                  "touched+detached (the later of every page touched and detached, from restore's start)"
                  if bound else "x bound: no bound measured (--no-bounds)")
    return ("values: median over the runs ± spread (half the interquartile range, % of the median: "
            "the middle half of the runs lies within about ± it; min and max are in the json and csv); "
            + "checked: ok = every byte restored right and the region detached from the image "
            "(k/n det: in k of n runs; mapped: never detached; NO: bytes differ); " + touch
            + "; p50/p99/fault: the strategy's service time of one fault, where it measures one; "
            + bound_text + "; faults: minor+major during touch; VMAs: after fixup")


def _reference_rows(document):
    """Which bound rows the ratios divided by, each once, in table order."""
    labels = []
    for group in document.get("groups") or []:
        for label in (group.get("x_bound_over") or {}).values():
            if label and label not in labels:
                labels.append(label)
    return " and ".join(labels) if labels else "none measured"


table = export.table


def _with_spread(summary, formatter, always):
    if summary is None:
        return None
    text = formatter(summary["median"])
    if summary["n"] > 1 and (always or round(summary["spread_pct"])):
        text += f" ±{summary['spread_pct']:.0f}%"
    return text


def _cell(metric, summary):
    if summary is None:
        return metric.absent
    # Counts are mostly exact: a spread is shown only where there is one.
    return _with_spread(summary, lambda value: export.format_value(metric.unit, value),
                        always=metric.unit == "ns")


def _yes_no(group):
    verified = "yes" if group["verified"] else "NO"
    runs, detached = group["runs"], group["detached_runs"]
    if detached == runs:
        state = "yes"
    elif detached == 0:
        state = "no"
    else:
        state = f"{detached} of {runs}"
    return verified, state


def _checked(group):
    """Verified and detached in one mark: "ok", "ok, mapped", "ok, 3/5 det", or "NO"."""
    if not group["verified"]:
        return "NO"
    runs, detached = group["runs"], group["detached_runs"]
    if detached == runs:
        return "ok"
    return "ok, mapped" if detached == 0 else f"ok, {detached}/{runs} det"


def _column_cell(name, group):
    """The cell of one named column (column_names()) for an ok group."""
    if name == CHECKED:
        return _checked(group)
    if name in ("verified", "detached"):
        return _yes_no(group)[name == "detached"]
    ratio_of = name.partition("x bound:")[2]
    for metric in metrics.table_metrics():
        if ratio_of and metric.column == ratio_of:
            return _times((group.get("x_bound") or {}).get(metric.name))
        if metric.column == name:
            return _cell(metric, group["metrics"][metric.name])
    raise KeyError(name)


def _column_title(name):
    return "x bound" if name.startswith("x bound:") else name


def table_rows(document, names=None):
    """(header, rows, notes): the table cells of the named columns (column_names(); None:
    every one) and the numbered reasons of skipped/failed rows."""
    names = column_names()[0] if names is None else names
    header = ["strategy", "op"] + [_column_title(name) for name in names]
    rows, notes = [], []
    for group in document["groups"]:
        row = [group["label"], group["op"]]
        if group["status"] != "ok":
            notes.append(f"{group['label']} {group['op']}: {group['status']}: {group['reason']}")
            row.append(f"{group['status']} [{len(notes)}]")
            row += [""] * (len(header) - len(row))
        else:
            row += [_column_cell(name, group) for name in names]
        rows.append(row)
    return header, rows, notes


def context_line(document):
    """One line saying what was measured, for the top of the table."""
    meta = document["metadata"]
    image, options = meta.get("image") or {}, meta.get("options") or {}
    if image.get("seed") is not None:
        source = f"{image['kind']} image, seed {image['seed']}"
    else:
        source = image.get("path", "?")
    cache = meta.get("cache")
    cache_mode = cache.get("mode") if isinstance(cache, dict) else cache
    return (f"{human_bytes(image.get('bytes', 0))} {source}; pattern {options.get('pattern')}, "
            f"{options.get('threads')} thread(s); page cache {cache_mode}; "
            f"{options.get('repeat')} run(s) + {options.get('warmup')} warmup per row")


def cache_line(document):
    """What the page cache held of the image when the runs began, as measured; None if unknown."""
    cache = document["metadata"].get("cache")
    if not isinstance(cache, dict) or not cache.get("state"):
        return None
    text = f"page cache: {cache['state']}"
    before = cache.get("before") or {}
    if before.get("pass_faults") is not None:
        text += (f"; one read pass over a private mapping of it: {format_count(before['pass_faults'])} "
                 f"faults for {format_count(before['pages'])} pages, {format_ns(before['pass_ns'])}")
    folios = before.get("folio_pages")
    if folios:
        total = sum(folios.values())
        shares = sorted(((int(size), count) for size, count in folios.items()), reverse=True)
        text += "; folios: " + ", ".join(f"{human_bytes(size)} {count / total:.0%}"
                                          for size, count in shares if count / total >= 0.005)
    return text


def warnings(document):
    """Things the reader must know to trust (or distrust) the numbers, each with what to do."""
    found = []
    image = document["metadata"].get("image") or {}
    if image.get("tail_bytes"):
        found.append(f"the image is {image['bytes']} bytes, not whole pages: its last page has "
                     f"{image['tail_bytes']} bytes past the end of the file")
    for group in document["groups"]:
        name = f"{group['label']} {group['op']}"
        if group["status"] == "ok" and group["failed_runs"]:
            found.append(f"{name}: {group['failed_runs']} run(s) failed and are left out: "
                         + "; ".join(group["failures"]))
        if group["status"] == "ok" and not group["verified"]:
            found.append(f"{name}: restored bytes differ from the image")
    found += filter(None, (_spread_warning(document), _huge_page_warning(document),
                           _cache_warning(document)))
    found += _handler_placement_warnings(document)
    return found


SPREAD_LIMIT_PCT = 10
SPREAD_NAMED = 4       # values a spread warning names; the rest are counted


def _spread_warning(document):
    """Wide spreads of the values the verdict compares (a ranking, a ratio printed), the
    only ones that could change what it concludes; at most SPREAD_NAMED named."""
    wide, seen = [], set()
    for claim in verdict.claims(document):
        for group, name in claim.rests_on:
            summary = group["metrics"].get(name)
            key = (group["label"], group["op"], name)
            if key in seen or not metrics.find(name).spread_checked or not summary or summary["n"] < 2 or summary["spread_pct"] <= SPREAD_LIMIT_PCT:
                continue
            seen.add(key)
            wide.append(f"{group['label']} {group['op']} {metrics.find(name).column} ±{summary['spread_pct']:.0f}%")
    if not wide:
        return None
    repeat = (document["metadata"].get("options") or {}).get("repeat") or 5
    shown = ", ".join(wide[:SPREAD_NAMED]) + (f" and {len(wide) - SPREAD_NAMED} more"
                                               if len(wide) > SPREAD_NAMED else "")
    return (f"the verdict compares values spread over {SPREAD_LIMIT_PCT}% of their median ({shown}): "
            f"its ranking or ratios may change; more runs narrow them (--repeat {max(10, 2 * repeat)}), "
            "as does a quieter machine")


HUGE_PAGE = 2 << 20
# The reason a strategy gives when it found no free huge pages ("no free 2 MiB huge pages",
# "run `sysctl vm.nr_hugepages=N`"), not when the kernel has no hugetlb at all.
_WANTS_HUGE_PAGES = re.compile(r"free [^;:]*huge ?pages|nr_hugepages", re.IGNORECASE)


def _huge_page_warning(document):
    """Strategies skipped for want of huge pages, with the command that reserves enough for this image."""
    labels = []
    for group in document["groups"]:
        if group["status"] == "skipped" and _WANTS_HUGE_PAGES.search(group["reason"] or ""):
            if group["label"] not in labels:
                labels.append(group["label"])
    if not labels:
        return None
    meta = document["metadata"]
    image_bytes = (meta.get("image") or {}).get("bytes") or 0
    needed = max(1, -(-image_bytes // HUGE_PAGE))
    pool = ((meta.get("system") or {}).get("hugepages") or {}).get("2048kB") or {}
    in_use = (pool["total"] - pool["free"] + (pool.get("reserved") or 0)
              if pool.get("total") is not None and pool.get("free") is not None else 0)
    # The pool is shared and may change during the runs: the count is what the image needs
    # plus what others held (faulted in, or reserved: free - reserved is what is available)
    # when the machine was probed.
    return (f"{', '.join(labels)} skipped: the {human_bytes(image_bytes)} image needs {needed} free "
            f"2 MiB huge pages; reserve them as root with `sysctl vm.nr_hugepages={needed + in_use}` "
            "and run again")


def _cache_warning(document):
    """The page cache did not hold the same through the runs: the rows met different states."""
    cache = document["metadata"].get("cache")
    if not isinstance(cache, dict):
        return None
    changes = []
    if cache.get("resets"):
        changes.append(f"the kernel evicted part of the image {cache['resets']} time(s) during the "
                       "runs (the state was set again before the next run)")
    before, after = cache.get("before") or {}, cache.get("after") or {}
    faults_before, faults_after = before.get("pass_faults"), after.get("pass_faults")
    if faults_before and faults_after and max(faults_before, faults_after) > 1.5 * min(faults_before,
                                                                                       faults_after):
        changes.append(f"a read pass over it took {format_count(faults_before)} faults before the runs "
                       f"and {format_count(faults_after)} after: its folios changed")
    if not changes:
        return None
    return ("the page cache did not hold the image the same way for every run: " + "; ".join(changes)
            + "; look for memory pressure (free -m) and run again")


def _in_a_vm(document):
    system = document["metadata"].get("system") or {}
    virtualization = system.get("virtualization") or {}
    return bool(virtualization.get("hypervisor") or (system.get("cpu") or {}).get("hypervisor"))


def _handler_placement_warnings(document):
    if not _in_a_vm(document):
        return []
    by_label, same_cpu = {}, {}
    for group in document["groups"]:
        placement = group.get("placement") or {}
        if group["status"] == "ok" and placement.get("handler") in ("other", "mixed"):
            by_label.setdefault(group["label"], []).append(group["op"])
            same_cpu.setdefault(group["label"], _on_the_same_cpu(group))
    return [f"{label} ({', '.join(ops)}): the fault handler ran on another CPU than the workload; "
            "in a VM each such fault pays a cross-vCPU wakeup, often several times a same-CPU fault: "
            f"measure it beside -s {same_cpu[label]}"
            for label, ops in by_label.items()]


def _on_the_same_cpu(group):
    """The group's strategy and parameters with handler-cpu=same in place of its handler-cpu."""
    kept = [(name, value) for name, value in params_pairs(group.get("params")) if name != "handler-cpu"]
    return f"{group['strategy']}:" + params_text(kept + [("handler-cpu", "same")])


def placement_notes(document):
    """Where the handler ran, for the rows whose strategy pinned one: one line per placement."""
    rows_by_placement = {}
    for group in document["groups"]:
        placement = group.get("placement") or {}
        if group["status"] == "ok" and placement.get("handler"):
            where = (f"{placement['handler']} CPU (workload on {_cpus(placement['app_cpus'])}, "
                     f"handler on {_cpus(placement['handler_cpus'])})")
            rows_by_placement.setdefault(where, []).append(f"{group['label']} {group['op']}")
    return [f"{where}: {', '.join(rows)}" for where, rows in rows_by_placement.items()]


def _cpus(numbers):
    return "CPU " + ", ".join(map(str, numbers)) if numbers else "no pinned CPU"


def layout(document, columns=None):
    """The text report's blocks (export.text): what was measured, the table (the named
    columns, column_names(); None: every one), the reasons of skipped and failed rows, the
    verdict, handler placement, published figures, warnings, the legend."""
    header, rows, notes = table_rows(document, columns)
    blocks = [[context_line(document)] + list(filter(None, [cache_line(document)])),
              [Table(header, rows)],
              [Bullet(f"[{number}] {note}") for number, note in enumerate(notes, 1)],
              [Bullet(f"verdict: {text}") for text in verdict.verdict(document)],
              [Bullet(f"handler placement: {note}") for note in placement_notes(document)]]
    reference = (document["metadata"].get("preset") or {}).get("reference")
    if reference:
        blocks += reference_blocks(document, reference)
    blocks.append([Bullet(f"warning: {text}") for text in warnings(document)])
    blocks.append([Bullet(legend(document))])
    return blocks


def _times(value):
    return "-" if value is None else f"{value:.2g}x" if value < 10 else f"{value:.0f}x"


def reference_blocks(document, reference):
    """The published figures with this run's beside them."""
    compared = published.beside_reference(document, reference)
    show_published_per_page = any(line["published_per_page_ns"] is not None for line in compared)
    header = ["row", "page", "per page here", "x mmap here", "x mmap published", "app per page",
              "app x mmap"]
    if show_published_per_page:
        header.append("per page published")
    rows = []
    for line in compared:
        # The reason of a row that did not run is listed with the table's notes.
        here = format_ns(line["per_page_ns"]) if line["status"] == "ok" else line["status"].split(":")[0]
        row = [f"{line['label']} {line['op']}", line["page"], here, _times(line["times_mmap"]),
               _times(line["published_times_mmap"]), format_ns(line["app_per_page_ns"]),
               _times(line["app_times_mmap"])]
        if show_published_per_page:
            row.append(format_ns(line["published_per_page_ns"]))
        rows.append(row)
    return [[f"published beside this run: {reference['source']} ({reference['setup']}), {reference['url']}"],
            [Table(header, rows)],
            [Bullet("per page here: the mean of the timed first accesses (each between two clock "
                    "reads, as the published figures were taken), median over the instrumented runs; "
                    "x mmap: over mmap's; app per page: the measured runs' touch time (no clock in the loop) "
                    "over the pages touched, what the application itself takes")]]


CSV_IDENTITY = ("strategy", "params", "label", "op", "pattern", "threads", "overlap", "status", "reason",
                "runs", "failed_runs", "verified", "detached_runs")
CSV_STATISTICS = ("median", "min", "max", "spread_pct", "q1", "q3")


def records(document):
    """One line per group: its identity, then each metric's median, min, max and spread
    (raw: ns, counts)."""
    header = list(CSV_IDENTITY)
    for metric in metrics.RUN_METRICS:
        header += [f"{metric.name}_{statistic}" for statistic in CSV_STATISTICS]
    lines = []
    for group in document["groups"]:
        line = [group.get(key) for key in CSV_IDENTITY]
        for metric in metrics.RUN_METRICS:
            summary = group["metrics"][metric.name]
            if summary is None:
                line += [None] * len(CSV_STATISTICS)
            else:
                line += [summary["median"], summary["min"], summary["max"], round(summary["spread_pct"], 2),
                         summary.get("q1"), summary.get("q3")]
        lines.append(line)
    return header, lines


def latency_histograms(document):
    """(hlog tag, seconds of touch, histogram) of every histogram with counts of every run that
    counts (succeeded, not a warmup), in run order: the per-page latencies of touch (from the
    instrumented runs), and the strategy's per-fault service times (handler, where it has one)."""
    entries = []
    for row in document["runs"]:
        if row["status"] != "ok" or row.get("warmup"):
            continue
        touch_s = (((row.get("phases") or {}).get("touch") or {}).get("ns") or 0) / 1e9
        for name, histogram in (row.get("histograms") or {}).items():
            if histogram and histogram.get("count"):
                entries.append((hlog.tag(row["label"], row["op"], name), touch_s, histogram))
    return entries


KIND = export.Kind("run", layout, results.dumps, records, warnings, columns=column_names,
                   histograms=latency_histograms)
FORMATS = export.names(KIND)


def render(document, fmt):
    return export.render(KIND, document, fmt)


def render_table(document):
    return render(document, "table")


def render_csv(document):
    return render(document, "csv")


write_export = output.write_export     # kept for callers
