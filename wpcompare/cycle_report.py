"""Rendering a wpcompare.cycle/2 document: the terminal table, markdown, csv and json.

One line per cycle and one total per strategy, the reasons for what was
skipped, failed or could not be dumped incrementally, then the ranking. As
in `run`'s report, csv holds raw numbers (ns, bytes) and json the whole
document.
"""
import csv
import io


from wpcompare import cycle_results, report, results
from wpcompare.options import human_bytes
from wpcompare.report import format_count, format_ns

FORMATS = ("table", "json", "csv", "markdown")

COLUMNS = (
    ("strategy", None),
    ("cycle", None),
    ("restore", "restore_ns"),
    ("work", "work_ns"),
    ("slowdown", "slowdown"),
    ("fixup", "fixup_ns"),
    ("full dump", "full_dump_ns"),
    ("incr. dump", "incremental_dump_ns"),
    ("written", "bytes_written"),
    ("pause", "pause_ns"),
    ("cycle time", "cycle_ns"),
    ("VMAs", "vmas"),
    ("peak RSS", "peak_rss_kb"),
    ("verified", None),
)

DEFINITIONS = (
    "work: the workload's first access to each page of the pattern (the share --dirty written, "
    "the rest read), with no clock inside its loop: the application's time; slowdown: work / the same pass over the region once loaded; fixup: until "
    "detached; written: bytes the kept dump wrote from memory (the incremental one where the "
    "strategy has a dirty set, its other pages copied from the old image); pause: the part of "
    "fixup the application cannot run alongside + the kept dump; cycle time: restore + work + "
    "fixup + the kept dump; totals: sums, VMAs and peak RSS the maximum")


def _format(metric, value):
    if value is None:
        return "-"
    if metric == "slowdown":
        return f"{value:.3g}x"
    if metric.startswith("bytes_"):
        return human_bytes(value)
    if metric == "peak_rss_kb":
        return human_bytes(value * 1024)
    if metric == "vmas":
        return format_count(value)
    return format_ns(value)


def table_rows(document):
    """(header, rows, notes): a line per cycle and a total per strategy; numbered reasons.

    verified: "yes", "NO" (bytes differ from the model), or "not checked" for a cycle that
    failed before its checks ran (a full disk, a timeout, a crash)."""
    header = [name for name, _ in COLUMNS]
    rows, notes = [], []

    def note(text):
        notes.append(text)
        return f"[{len(notes)}]"

    for chain in document["chains"]:
        label = chain["label"]
        if chain["status"] == "skipped" or not chain["cycles"]:
            # A chain that failed before its first cycle (its probe) is a row too.
            marker = note(f"{label}: {chain['status']}: {chain['reason']}")
            rows.append([label, "-", f"{chain['status']} {marker}"] + [""] * (len(COLUMNS) - 3))
            continue
        for row in chain["cycles"]:
            if row["status"] != "ok":
                phase = f" in {row['failed_phase']}" if row.get("failed_phase") else ""
                marker = note(f"{label} cycle {row['cycle']}: failed{phase}: {row['reason']}")
                rows.append([label, str(row["cycle"]), f"failed {marker}"]
                            + [""] * (len(COLUMNS) - 4) + [VERDICT_TEXT[cycle_verdict(row)]])
                continue
            metrics = cycle_results.cycle_metrics(row)
            rows.append([label, str(row["cycle"])]
                        + [_format(metric, metrics[metric]) for _, metric in COLUMNS[2:-1]] + ["yes"])
        totals = chain.get("totals")
        if totals:
            verified = VERDICT_TEXT[chain_verdict(chain)]
            rows.append([label, f"all {totals['cycles']}"]
                        + [_format(metric, totals[metric]) for _, metric in COLUMNS[2:-1]] + [verified])
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
    return (f"{human_bytes(image.get('bytes', 0))} {image.get('kind')} image, seed {image.get('seed')}; "
            f"{options.get('cycles')} cycle(s), each {work}, {options.get('threads')} "
            f"thread(s); images in {directory.get('path')} ({directory.get('filesystem')}), "
            f"each deleted {deletion}")


def ranking_rows(document):
    """(header, rows) of the ranking: by median time per cycle and by median pause."""
    by_time = document["ranking"]["by_cycle_time"]
    by_pause = document["ranking"]["by_pause"]
    rows = []
    for rank in range(max(len(by_time), len(by_pause))):
        row = [str(rank + 1)]
        for entries in (by_time, by_pause):
            entry = entries[rank] if rank < len(entries) else None
            row.append(f"{entry['label']} {format_ns(entry['median_ns'])}" if entry else "")
        rows.append(row)
    return ["rank", "time per cycle (median)", "pause (median)"], rows


def warnings(document):
    found = []
    image = document["metadata"].get("image") or {}
    if image.get("tail_bytes"):
        found.append(f"the image is {image['bytes']} bytes, not whole pages: writes past its end "
                     "live only in memory, no dump keeps them")
    return found


def _text_report(document, tablefmt, bullet):
    header, rows, notes = table_rows(document)
    parts = [context_line(document), "", report.table(rows, header, tablefmt)]
    if notes:
        parts.append("")
        parts += [f"{bullet}[{number}] {text}" for number, text in enumerate(notes, 1)]
    dumps = dump_notes(document)
    if dumps:
        parts.append("")
        parts += [f"{bullet}{text}" for text in dumps]
    rank_header, rank_rows = ranking_rows(document)
    if rank_rows:
        parts += ["", report.table(rank_rows, rank_header, tablefmt)]
    for text in warnings(document):
        parts += ["", f"{bullet}warning: {text}"]
    parts += ["", bullet + DEFINITIONS]
    return "\n".join(parts) + "\n"


def render_table(document):
    return _text_report(document, "simple", "")


def render_markdown(document):
    return _text_report(document, "github", "- ")


CSV_IDENTITY = ("label", "strategy", "params", "status", "reason", "cycle")
CSV_EXTRA = ("checkpoint_kind", "copy_fallback", "old_image_deleted", "verified")


def render_csv(document):
    """A line per cycle and a total per strategy (cycle "total"); ns, bytes, KiB as measured."""
    header = list(CSV_IDENTITY) + list(cycle_results.METRICS) + list(CSV_EXTRA)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    for chain in document["chains"]:
        identity = [chain["label"], chain["strategy"], chain["params"]]
        if chain["status"] == "skipped":
            writer.writerow(identity + ["skipped", chain["reason"]] + [""] * (len(header) - 5))
            continue
        for row in chain["cycles"]:
            metrics = cycle_results.cycle_metrics(row)
            checkpoint = row.get("checkpoint") or {}
            kept = checkpoint.get(checkpoint.get("kept") or "", None) or {}
            line = identity + [row["status"], row.get("reason"), row["cycle"]]
            line += [metrics[name] for name in cycle_results.METRICS]
            line += [checkpoint.get("kept"), kept.get("fallback"), row.get("old_image_deleted"),
                     cycle_verdict(row)]
            writer.writerow(["" if value is None else value for value in line])
        totals = chain.get("totals")
        if totals:
            line = identity + [chain["status"], chain["reason"], "total"]
            line += [totals[name] for name in cycle_results.METRICS]
            line += [None, None, None, chain_verdict(chain)]
            writer.writerow(["" if value is None else value for value in line])
    return out.getvalue()


def render(document, fmt):
    renderers = {"table": render_table, "markdown": render_markdown,
                 "csv": render_csv, "json": results.dumps}
    return renderers[fmt](document)
