"""The published measurement wpcompare set out to reproduce, and this run's numbers beside it.

Radim Vansa, "Replacing mmap with userfaultfd", crac-dev, 16 May 2023: a
512 MiB image restored by mapping it, and by loading it with userfaultfd
into 4 KiB and into 2 MiB huge pages; userfaultfd came out about 20x slower
than the mapping with 4 KiB pages and about 3x with 2 MiB pages. Those two
ratios are what is recorded here (per_page_ns stays None until the
message's per-page figures are copied in; nothing is estimated).

"Per page" here is what the published table measured: the mean latency of one
first access, each access timed on its own (the instrumented runs' touch
histogram: sum over count). Timing each access serialises the accesses, so
beside it stands what the application takes per page: the measured runs'
touch time (no clock inside the loop) over the pages touched.
"""
import statistics

from wpcompare import results

CRAC_DEV_MAY_2023 = {
    "source": 'Radim Vansa, "Replacing mmap with userfaultfd", crac-dev mailing list, 16 May 2023',
    "url": "https://mail.openjdk.org/pipermail/crac-dev/2023-May/000862.html",
    "setup": "512 MiB image, every page touched once",
    "rows": [
        {"strategy": "mmap", "op": "read", "page": "4 KiB", "per_page_ns": None, "times_mmap": 1},
        {"strategy": "uffd", "op": "read", "page": "4 KiB", "per_page_ns": None, "times_mmap": 20},
        {"strategy": "uffd-huge", "op": "read", "page": "2 MiB", "per_page_ns": None, "times_mmap": 3},
    ],
}

REFERENCES = {"crac-dev-2023-05": CRAC_DEV_MAY_2023}


def per_page_ns(rows):
    """Median over the instrumented runs of the mean timed first access; None without such runs."""
    values = [hist["sum_ns"] / hist["count"] for hist in
              ((row.get("histograms") or {}).get("touch") for row in results.split_runs(rows)[1])
              if hist and hist["count"]]
    return statistics.median(values) if values else None


def app_per_page_ns(rows):
    """Median over the measured runs (no clock in the loop) of touch time / pages touched."""
    values = [row["phases"]["touch"]["ns"] / row["touched_pages"] for row in results.split_runs(rows)[0]
              if row.get("phases") and row["phases"]["touch"]["ns"] is not None and row.get("touched_pages")]
    return statistics.median(values) if values else None


def beside_reference(document, reference):
    """One dict per published row: the published figures and this run's, or why it has none."""
    groups = document["groups"]
    ours = {}
    for line in reference["rows"]:
        group = next((g for g in groups if g["strategy"] == line["strategy"] and g["op"] == line["op"]), None)
        rows = [row for row in document["runs"] if group and row.get("label") == group["label"]
                and row.get("op") == group["op"]]
        ok = group and group["status"] == "ok"
        ours[line["strategy"]] = (group, per_page_ns(rows) if ok else None,
                                  app_per_page_ns(rows) if ok else None)
    _, baseline, app_baseline = ours.get("mmap", (None, None, None))
    compared = []
    for line in reference["rows"]:
        group, value, app_value = ours[line["strategy"]]
        if group is None:
            status = "not in this run"
        elif group["status"] != "ok":
            status = f"{group['status']}: {group['reason']}"
        else:
            status = "ok"
        compared.append({
            "strategy": line["strategy"], "label": group["label"] if group else line["strategy"],
            "op": line["op"], "page": line["page"], "status": status,
            "per_page_ns": value,
            "times_mmap": value / baseline if value is not None and baseline else None,
            "app_per_page_ns": app_value,
            "app_times_mmap": app_value / app_baseline if app_value is not None and app_baseline else None,
            "published_per_page_ns": line["per_page_ns"],
            "published_times_mmap": line["times_mmap"],
            "placement": (group or {}).get("placement"),
        })
    return compared
