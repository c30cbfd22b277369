"""What a wpcompare.cycle/2 document shows: its kind in the format registry (export.KIND).

One line per cycle and one total per strategy, the reasons for what was
skipped, failed or could not be dumped incrementally, then the ranking. As
in `run`'s report, csv holds raw numbers (ns, bytes) and json the whole
document.
"""
from wpcompare import cycle_results, export, metrics, results
from wpcompare.export import Bullet, Table, format_ns
from wpcompare.options import human_bytes

# The table's metric columns, in its order (titles and units: metrics.CYCLE_METRICS).
TABLE_METRICS = ("restore_ns", "work_ns", "slowdown", "fixup_ns", "full_dump_ns", "incremental_dump_ns",
                 "bytes_written", "pause_ns", "cycle_ns", "vmas", "peak_rss_kb")


def columns():
    shown = [metrics.CYCLE_BY_NAME[name] for name in TABLE_METRICS]
    return [("strategy", None), ("cycle", None)] + [(metric.column, metric.name) for metric in shown] \
        + [("verified", None)]


DEFINITIONS = (
    "work: the workload's first access to each page of the pattern (the share --dirty written, "
    "the rest read), with no clock inside its loop: the application's time; slowdown: work / the same pass over the region once loaded; fixup: until "
    "detached; written: bytes the kept dump wrote from memory (the incremental one where the "
    "strategy has a dirty set, its other pages copied from the old image); pause: the part of "
    "fixup the application cannot run alongside + the kept dump; cycle time: restore + work + "
    "fixup + the kept dump; totals: sums, VMAs and peak RSS the maximum; #N: the N-th chain of "
    "a strategy (--repeat); ranking: median over the cycles of all its chains ± spread (half the "
    "interquartile range, % of the median); a rank with = ties with the first of that rank: the "
    "Mann-Whitney U test cannot tell them apart (p >= 0.05) or too few cycles to test")


def _format(name, value):
    return export.format_value(metrics.CYCLE_BY_NAME[name].unit, value)


DEFAULT_COLUMNS = ("restore", "work", "fixup", "written", "pause", "cycle time", "verified")


def column_names():
    """(every column name after strategy and cycle, the terminal table's default): export.Kind.columns."""
    return tuple(title for title, _ in columns()[2:]), DEFAULT_COLUMNS


def table_rows(document, names=None):
    """(header, rows, notes): a line per cycle and a total per strategy in the named columns
    (column_names(); None: every one); numbered reasons.

    verified: "yes", "NO" (bytes differ from the model), or "not checked" for a cycle that
    failed before its checks ran (a full disk, a timeout, a crash)."""
    names = column_names()[0] if names is None else names
    metric_of = {title: metric for title, metric in columns()[2:-1]}
    header = ["strategy", "cycle"] + list(names)
    rows, notes = [], []

    def note(text):
        notes.append(text)
        return f"[{len(notes)}]"

    def line(label, cycle, cells, status=None):
        row = [label, cycle] + [cells.get(name, "") for name in names]
        if status is not None:
            row[2] = status
        return row

    def measured(values, verified):
        cells = {title: _format(metric, values[metric]) for title, metric in metric_of.items()}
        return dict(cells, verified=verified)

    repeated = any(chain.get("repetition", 1) > 1 for chain in document["chains"])
    for chain in document["chains"]:
        label = chain["label"] + (f" #{chain.get('repetition', 1)}" if repeated else "")
        if chain["status"] == "skipped" or not chain["cycles"]:
            # A chain that failed before its first cycle (its probe) is a row too.
            marker = note(f"{label}: {chain['status']}: {chain['reason']}")
            rows.append(line(label, "-", {}, f"{chain['status']} {marker}"))
            continue
        for row in chain["cycles"]:
            if row["status"] != "ok":
                phase = f" in {row['failed_phase']}" if row.get("failed_phase") else ""
                marker = note(f"{label} cycle {row['cycle']}: failed{phase}: {row['reason']}")
                rows.append(line(label, str(row["cycle"]), {"verified": VERDICT_TEXT[cycle_verdict(row)]},
                                 f"failed {marker}"))
                continue
            rows.append(line(label, str(row["cycle"]), measured(cycle_results.cycle_metrics(row), "yes")))
        totals = chain.get("totals")
        if totals:
            rows.append(line(label, f"all {totals['cycles']}",
                             measured(totals, VERDICT_TEXT[chain_verdict(chain)])))
    return header, rows, notes


VERDICT_TEXT = {True: "yes", False: "NO", None: "not checked"}


def cycle_verdict(row):
    """True (checked, right), False (checked: bytes differ) or None (the checks never ran)."""
    if row["status"] == "ok":
        return True
    checks = [check.get("verified") for check in (row.get("image_check") or {}).values() if check]
    if row.get("mismatched_pages") or (row.get("failed_phase") == "verify" and row.get("verified") is False) \
            or False in checks:
        return False
    return None


def chain_verdict(chain):
    """A chain: True if every cycle was checked right, False if any differed, else None."""
    verdicts = [cycle_verdict(row) for row in chain["cycles"]]
    if False in verdicts:
        return False
    return True if chain["status"] == "ok" and all(verdicts) else None


def dump_notes(document):
    """Why a strategy has no incremental dump, and where copy_file_range fell back."""
    unavailable, fallbacks = {}, {}
    for chain in document["chains"]:
        for row in chain["cycles"]:
            checkpoint = row.get("checkpoint") or {}
            why = checkpoint.get("incremental_unavailable")
            if why:
                unavailable.setdefault(why, [])
                if chain["label"] not in unavailable[why]:
                    unavailable[why].append(chain["label"])
            incremental = checkpoint.get("incremental") or {}
            if incremental.get("fallback"):
                fallbacks.setdefault(incremental["fallback"], set()).add(chain["label"])
    found = []
    if "no dirty set" in unavailable:
        found.append("incr. dump '-': the strategy reports no dirty set, so only a full dump is "
                     f"possible ({', '.join(unavailable['no dirty set'])})")
    if "old image deleted" in unavailable:
        found.append("incr. dump '-': the old image was deleted once the region detached "
                     "(--delete-old when-detached), and an incremental dump takes its clean pages "
                     f"from it ({', '.join(unavailable['old image deleted'])})")
    for error, labels in fallbacks.items():
        found.append(f"copy_file_range failed with {error}: the incremental dump copied the old "
                     f"image's pages with read()+write() ({', '.join(sorted(labels))})")
    return found


def context_line(document):
    meta = document["metadata"]
    image, options = meta.get("image") or {}, meta.get("options") or {}
    directory = meta.get("images_directory") or {}
    deletion = {"after-checkpoint": "once the next one is written",
                "when-detached": "as soon as the strategy detached"}.get(options.get("delete_old"),
                                                                         options.get("delete_old"))
    pattern = str(options.get("pattern"))
    work = (f"replaying {pattern} (its reads and writes)" if pattern.startswith("trace:") else
            f"reading the {pattern} pattern's pages and writing {options.get('dirty', 0) * 100:g}% of them")
    source = (f"image {image.get('path')}" if image.get("seed") is None else
              f"{image.get('kind')} image, seed {image.get('seed')}")
    return (f"{human_bytes(image.get('bytes', 0))} {source}; "
            f"{options.get('cycles')} cycle(s), each {work}, {options.get('threads')} "
            f"thread(s); images in {directory.get('path')} ({directory.get('filesystem')}), "
            f"each deleted {deletion}")


def _ranked(entry):
    spread = f" ±{entry['spread_pct']:.0f}%" if entry.get("spread_pct") is not None and entry.get("cycles", 1) > 1 else ""
    return f"{entry['label']} {format_ns(entry['median_ns'])}{spread}"


def ranking_rows(document):
    """(header, rows) of the ranking: by median time per cycle and by median pause, each entry
    with its rank (shared where the test cannot tell two strategies apart) and spread."""
    by_time = document["ranking"]["by_cycle_time"]
    by_pause = document["ranking"]["by_pause"]
    rows = []
    for position in range(max(len(by_time), len(by_pause))):
        row = [str(position + 1)]
        for entries in (by_time, by_pause):
            entry = entries[position] if position < len(entries) else None
            rank = entry.get("rank", position + 1) if entry else None
            row.append(f"{rank}{'=' if entry and entry.get('tie') else ''} {_ranked(entry)}" if entry else "")
        rows.append(row[1:])
    return ["time per cycle (rank, median ± spread)", "pause (rank, median ± spread)"], rows


def verdict(document):
    """The ranking in words: the first by time per cycle and by pause, who ties with them,
    and what did not run."""
    lines = []
    for key, what in (("by_cycle_time", "fastest per cycle"), ("by_pause", "shortest pause")):
        entries = document["ranking"][key]
        if not entries:
            continue
        first = entries[0]
        text = f"{what}: {first['label']} ({format_ns(first['median_ns'])} median over {first.get('cycles', '?')} cycle(s))"
        tied = [entry["label"] for entry in entries[1:] if entry.get("rank") == first.get("rank", 1)]
        if tied:
            reasons = {entry.get("tie") for entry in entries[1:] if entry["label"] in tied}
            why = ("too few cycles to tell them apart (--repeat or --cycles more)" if reasons == {"too few cycles"}
                   else "statistically indistinguishable (Mann-Whitney p >= 0.05)")
            text += f"; tied with {', '.join(tied[:4])}{' and more' if len(tied) > 4 else ''}: {why}"
        elif len(entries) > 1:
            text += (f", {entries[1]['median_ns'] / first['median_ns']:.2f}x ahead of the next, "
                     f"{entries[1]['label']}" if first["median_ns"] else "")
        lines.append(text)
    for chain in document["chains"]:
        if chain["status"] in ("skipped", "failed") and chain.get("repetition", 1) == 1:
            gist = (chain["reason"] or "").split(": ")[0].split("; ")[0][:80]
            lines.append(f"{chain['status']}: {chain['label']}: {gist}")
    return lines


def warnings(document):
    found = []
    image = document["metadata"].get("image") or {}
    if image.get("tail_bytes"):
        found.append(f"the image is {image['bytes']} bytes, not whole pages: writes past its end "
                     "live only in memory, no dump keeps them")
    return found


def layout(document, columns=None):
    """The text report's blocks (export.text): the table in the named columns (column_names();
    None: every one), its notes, the ranking, the verdict, warnings, definitions."""
    header, rows, notes = table_rows(document, columns)
    rank_header, rank_rows = ranking_rows(document)
    blocks = [[context_line(document)], [Table(header, rows)],
              [Bullet(f"[{number}] {text}") for number, text in enumerate(notes, 1)],
              [Bullet(text) for text in dump_notes(document)]]
    if rank_rows:
        blocks.append([Table(rank_header, rank_rows)])
    blocks.append([Bullet(f"verdict: {text}") for text in verdict(document)])
    blocks += [[Bullet(f"warning: {text}")] for text in warnings(document)]
    blocks.append([Bullet(DEFINITIONS)])
    return blocks


CSV_IDENTITY = ("label", "strategy", "params", "status", "reason", "cycle")
CSV_EXTRA = ("checkpoint_kind", "copy_fallback", "old_image_deleted", "verified")


def records(document):
    """A line per cycle and a total per strategy (cycle "total"); ns, bytes, KiB as measured."""
    names = [metric.name for metric in metrics.CYCLE_METRICS]
    header = list(CSV_IDENTITY) + names + list(CSV_EXTRA)
    lines = []
    for chain in document["chains"]:
        identity = [chain["label"], chain["strategy"], chain["params"]]
        if chain["status"] == "skipped":
            lines.append(identity + ["skipped", chain["reason"]] + [None] * (len(header) - 5))
            continue
        for row in chain["cycles"]:
            values = cycle_results.cycle_metrics(row)
            checkpoint = row.get("checkpoint") or {}
            kept = checkpoint.get(checkpoint.get("kept") or "", None) or {}
            lines.append(identity + [row["status"], row.get("reason"), row["cycle"]]
                         + [values[name] for name in names]
                         + [checkpoint.get("kept"), kept.get("fallback"), row.get("old_image_deleted"),
                            cycle_verdict(row)])
        totals = chain.get("totals")
        if totals:
            lines.append(identity + [chain["status"], chain["reason"], "total"]
                         + [totals[name] for name in names] + [None, None, None, chain_verdict(chain)])
    return header, lines


KIND = export.Kind("cycle", layout, results.dumps, records, warnings, columns=column_names)
FORMATS = export.names(KIND)


def render(document, fmt):
    return export.render(KIND, document, fmt)
