"""`wpcompare compare A.json B.json`: is B faster or slower than A, row by row, and can we tell?

Rows are matched by strategy with its parameters (the values that differ
from the defaults, sizes compared as numbers), op, pattern,
thread count and overlap. For every metric the registry
has `compare` test (wpcompare.metrics), the
comparison gives the ratio of B's median to A's, the two-sided Mann-Whitney
U test (wpcompare.mannwhitney) on the per-run values kept in the files,
and a verdict in words: "1.80x faster" or "1.25x slower" when p < alpha,
else "not significant"; "too few runs" where the run counts cannot reach
alpha whatever the values (e.g. 3 against 3: the smallest p is 0.1).
Rows only one file has are listed, as are rows either file could not run.
"""
import json
from dataclasses import dataclass

from wpcompare import export, mannwhitney, metrics, results, strategies
from wpcompare.errors import InvalidArgument
from wpcompare.export import Bullet, Listed, Table, format_ns
from wpcompare.options import format_size, parse_size
from wpcompare.rows import params_pairs

SCHEMA = "wpcompare.compare/1"
DEFAULT_ALPHA = 0.05


@dataclass(frozen=True)
class Side:
    path: str
    document: dict


def _normal_value(value):
    """"4K" and "4096" are the same chunk size."""
    try:
        return str(parse_size(value, minimum=0))
    except InvalidArgument:
        return value


def row_key(group):
    """What makes two rows of different files the same measurement: the strategy, the values
    of its parameters that differ from their defaults (where this build knows the strategy;
    sizes compared as numbers), op, pattern, threads and overlap."""
    pairs = [(name, _normal_value(value)) for name, value in _chosen(group["strategy"], group.get("params"))]
    return (group["strategy"], tuple(sorted(pairs)), group["op"], group["pattern"], group["threads"],
            bool(group.get("overlap")), group.get("sweep_size"))


def _chosen(name, params):
    """The (name, value) parameters of a row that are not the strategy's defaults."""
    pairs = params_pairs(params)
    try:
        return strategies.find(name).changed(pairs)
    except InvalidArgument:
        return pairs          # a strategy this build lacks: every parameter as given


def sized_label(group):
    """The row's label, with its size where it is a row of a size sweep (wpcompare.sweep)."""
    size = group.get("sweep_size")
    return group["label"] if size is None else f"{group['label']} @{format_size(size)}"


def describe_key(group):
    where = f"{group['pattern']}, {group['threads']} thread(s)" + (", overlap" if group.get("overlap") else "")
    return f"{sized_label(group)} {group['op']} ({where})"


def measured_values(rows, metric):
    """The metric of every run of a row it is read from (measured or instrumented runs)."""
    return results.metric_values(rows, metric)


def format_factor(factor):
    if factor < 10:
        return f"{factor:.2f}x"
    if factor < 100:
        return f"{factor:.1f}x"
    return f"{factor:.0f}x"


def compare_values(a, b, alpha=DEFAULT_ALPHA, missing="no values"):
    """Median of each side, B/A ratio, the test and the verdict for one metric of one row.

    missing names what an absent value means ("never detached") in the verdict.
    """
    entry = {"a": _side_summary(a), "b": _side_summary(b), "ratio": None, "u": None, "p": None,
             "method": None, "verdict": None}
    if not a or not b:
        entry["verdict"] = f"{missing} in " + ("A and B" if not a and not b else "A" if not a else "B")
        return entry
    median_a, median_b = entry["a"]["median"], entry["b"]["median"]
    if median_a > 0:
        entry["ratio"] = median_b / median_a
    test = mannwhitney.mann_whitney_u(b, a)
    entry.update(u=test.u, p=test.p, method=test.method)
    if mannwhitney.smallest_p(len(a), len(b)) >= alpha:
        entry["verdict"] = "too few runs"
    elif test.p >= alpha:
        entry["verdict"] = "not significant"
    elif median_b < median_a:
        entry["verdict"] = f"{format_factor(median_a / median_b)} faster" if median_b > 0 else "faster"
    elif median_b > median_a:
        entry["verdict"] = f"{format_factor(median_b / median_a)} slower" if median_a > 0 else "slower"
    else:
        # Significant yet equal medians: the distributions differ around the same middle.
        entry["verdict"] = "differs, same median"
    return entry


def _side_summary(values):
    summary = results.summarize_values(values)
    return {"median": summary["median"] if summary else None, "n": len(values), "values": list(values)}


def _groups_with_rows(document):
    groups = results.summarize(document["runs"], (document.get("metadata") or {}).get("reference_bound"))
    rows_by_key = {}
    for row in document["runs"]:
        rows_by_key.setdefault(results.group_key(row), []).append(row)
    return [(group, rows_by_key[tuple(group.get(key) for key in results.GROUP_KEYS)]) for group in groups]


def compare_documents(a, b, alpha=DEFAULT_ALPHA):
    """The comparison of two result documents, as JSON-able data."""
    groups_a = {row_key(group): (group, rows) for group, rows in _groups_with_rows(a.document)}
    groups_b = {row_key(group): (group, rows) for group, rows in _groups_with_rows(b.document)}
    compared, not_compared = [], []
    for key, (group_a, rows_a) in groups_a.items():
        if key not in groups_b:
            continue
        group_b, rows_b = groups_b[key]
        problems = [f"{side}: {group['status']}: {group['reason']}"
                    for side, group in (("A", group_a), ("B", group_b)) if group["status"] != "ok"]
        if problems:
            not_compared.append({"row": describe_key(group_a), "why": "; ".join(problems)})
            continue
        compared.append({
            "label": sized_label(group_a), "strategy": group_a["strategy"], "op": group_a["op"],
            "pattern": group_a["pattern"], "threads": group_a["threads"],
            "overlap": bool(group_a.get("overlap")),
            "label_b": sized_label(group_b),
            "metrics": {metric.name: compare_values(measured_values(rows_a, metric.name),
                                                    measured_values(rows_b, metric.name), alpha, metric.missing)
                        for metric in metrics.compared_metrics()},
        })
    only_a = [describe_key(group) for key, (group, _) in groups_a.items() if key not in groups_b]
    only_b = [describe_key(group) for key, (group, _) in groups_b.items() if key not in groups_a]
    return {
        "schema": SCHEMA,
        "a": _file_facts(a), "b": _file_facts(b),
        "test": {"name": "Mann-Whitney U", "alternative": "two-sided", "alpha": alpha,
                 "exact_up_to": mannwhitney.EXACT_LIMIT,
                 "u": "U of B: pairs (run of B, run of A) where B's value is larger, plus half the ties",
                 "ratio": "median of B / median of A; lower is faster for every metric"},
        "rows": compared,
        "only_in_a": only_a,
        "only_in_b": only_b,
        "not_compared": not_compared,
        "warnings": _warnings(a, b, compared, alpha),
    }


def _file_facts(side):
    meta = side.document.get("metadata") or {}
    return {"path": side.path, "timestamp": meta.get("timestamp"),
            "wpcompare_version": meta.get("wpcompare_version")}


# Facts that, when they differ, make a ratio say as much about the setup as about the strategies.
_CONTEXT = (
    ("image size", lambda m: (m.get("image") or {}).get("bytes")),
    ("image kind", lambda m: (m.get("image") or {}).get("kind")),
    ("page cache", lambda m: m.get("cache")),
    ("kernel", lambda m: ((m.get("system") or {}).get("kernel") or {}).get("release")),
    ("CPU", lambda m: ((m.get("system") or {}).get("cpu") or {}).get("model")),
    ("thread pinning", lambda m: (m.get("options") or {}).get("pin_threads")),
)


def _warnings(a, b, compared, alpha):
    found = []
    meta_a, meta_b = a.document.get("metadata") or {}, b.document.get("metadata") or {}
    differ = [f"{name} {read(meta_a)} vs {read(meta_b)}" for name, read in _CONTEXT
              if read(meta_a) != read(meta_b)]
    if differ:
        found.append("A and B were measured differently (" + "; ".join(differ)
                     + "): a ratio reflects that as well as the strategies")
    too_few = {(entry["a"]["n"], entry["b"]["n"]) for row in compared
               for entry in row["metrics"].values() if entry["verdict"] == "too few runs"}
    needed = _runs_needed(alpha)
    for n_a, n_b in sorted(too_few):
        found.append(f"with {n_a} run(s) in A and {n_b} in B no difference can be significant at "
                     f"alpha {alpha:g} (the smallest possible p is {mannwhitney.smallest_p(n_a, n_b):.3g}): "
                     f"measure both with --repeat {needed} or more")
    return found


def _runs_needed(alpha):
    """The smallest equal run count per side at which the test can reach alpha."""
    n = 1
    while mannwhitney.smallest_p(n, n) >= alpha:
        n += 1
    return n


# ---- rendering ----

def _format_median(metric, summary):
    if summary["median"] is None:
        return metric.compare_absent
    return f"{format_ns(summary['median'])} ({summary['n']})"


def table_rows(comparison):
    header = ["strategy", "op", "metric", "A median (runs)", "B median (runs)", "B/A", "p", "B vs A"]
    lines = []
    for row in comparison["rows"]:
        first = True
        for metric in metrics.compared_metrics():
            entry = row["metrics"][metric.name]
            lines.append([
                row["label"] if first else "", row["op"] if first else "", metric.column,
                _format_median(metric, entry["a"]), _format_median(metric, entry["b"]),
                "-" if entry["ratio"] is None else f"{entry['ratio']:.3f}",
                "-" if entry["p"] is None else f"{entry['p']:.3g}",
                entry["verdict"],
            ])
            first = False
    return header, lines


def layout(comparison):
    """The text report's blocks (export.text)."""
    test = comparison["test"]
    header, lines = table_rows(comparison)
    blocks = [[f"A: {comparison['a']['path']} ({comparison['a']['timestamp'] or 'no timestamp'})",
               f"B: {comparison['b']['path']} ({comparison['b']['timestamp'] or 'no timestamp'})"],
              [Table(header, lines) if lines else "no row was measured in both files"]]
    for title, rows in (("only in A", comparison["only_in_a"]), ("only in B", comparison["only_in_b"])):
        if rows:
            blocks.append([f"{title}:"] + [Listed(row) for row in rows])
    if comparison["not_compared"]:
        blocks.append(["not compared (not measured in both):"]
                      + [Listed(f"{item['row']}: {item['why']}") for item in comparison["not_compared"]])
    blocks.append([Bullet(f"warning: {text}") for text in comparison["warnings"]])
    blocks.append([Bullet(
        "B/A: ratio of the medians over the measured runs (below 1: B is faster); "
        f"p: two-sided {test['name']} test on the per-run values (exact up to "
        f"{test['exact_up_to']} runs in all, else normal approximation); "
        f"a difference is significant when p < {test['alpha']:g}")])
    return blocks


def dumps(comparison):
    return json.dumps(comparison, indent=2) + "\n"


KIND = export.Kind("compare", layout, dumps)
FORMATS = export.names(KIND)


def render(comparison, fmt):
    return export.render(KIND, comparison, fmt)
