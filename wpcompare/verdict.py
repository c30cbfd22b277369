"""What a `run` concludes, in words, computed from its document (as hyperfine ends with
"X ran 1.8 times faster than Y").

For each op: the strategy fastest to detached and by how much against `mmap`, the rows that
cannot be told apart from it (two-sided Mann-Whitney U test on the per-run values, the test
`compare` uses), and for writes the cheapest first write (the least touch: the application's
own time for its first writes). The physical bounds are references, not candidates. Then
what was skipped or failed, one line per strategy with its reason.

Each claim names the values it rests on (Claim.rests_on), so a spread is warned about only
where it could change what is printed: a ranking or a ratio (report's spread warning).
"""
from dataclasses import dataclass

from wpcompare import mannwhitney, results, strategies
from wpcompare.export import format_ns

ALPHA = 0.05
BOUND_STRATEGIES = frozenset(text.partition(":")[0] for text in strategies.BOUNDS)
REFERENCE = "mmap"
TO_DETACHED = "time_to_detached_ns"
TOUCH = "touch_ns"


@dataclass(frozen=True)
class Claim:
    text: str
    rests_on: tuple = ()      # (group, metric name) whose medians the text compares


def _rows_by_group(document):
    rows = {}
    for row in document.get("runs") or []:
        rows.setdefault(results.group_key(row), []).append(row)
    return rows


def _key(group):
    return tuple(group.get(key) for key in results.GROUP_KEYS)


def _median(group, metric):
    summary = group["metrics"].get(metric)
    return summary["median"] if summary else None


def ranked(groups, metric):
    """The ok groups with a value of metric, fastest (lowest median) first; bounds left out."""
    candidates = [group for group in groups if group["status"] == "ok"
                  and group["strategy"] not in BOUND_STRATEGIES and _median(group, metric) is not None]
    return sorted(candidates, key=lambda group: _median(group, metric))


def same_as_fastest(ranking, metric, rows_by_group, alpha=ALPHA):
    """(tied, untestable): the groups after the first that the test cannot tell from it
    (p >= alpha), and whether the run counts were too few for any p below alpha."""
    if len(ranking) < 2:
        return [], False
    fastest = results.metric_values(rows_by_group.get(_key(ranking[0]), []), metric)
    tied, untestable = [], False
    for group in ranking[1:]:
        values = results.metric_values(rows_by_group.get(_key(group), []), metric)
        if not fastest or not values:
            continue
        if mannwhitney.smallest_p(len(fastest), len(values)) >= alpha:
            untestable = True
            tied.append(group)
        elif mannwhitney.mann_whitney_u(fastest, values).p >= alpha:
            tied.append(group)
    return tied, untestable


def _factor(slow, fast):
    ratio = slow / fast
    return f"{ratio:.2f}x" if ratio < 10 else f"{ratio:.1f}x" if ratio < 100 else f"{ratio:.0f}x"


def _names(groups, limit=4):
    names = [group["label"] for group in groups]
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _detached_claims(groups, op, rows_by_group):
    ranking = ranked(groups, TO_DETACHED)
    if not ranking:
        return []
    fastest = ranking[0]
    text = f"{op}: fastest to detached: {fastest['label']} ({format_ns(_median(fastest, TO_DETACHED))})"
    rests_on = [(fastest, TO_DETACHED)]
    reference = next((group for group in ranking if group["strategy"] == REFERENCE and not group.get("params")),
                     None) or next((group for group in ranking if group["strategy"] == REFERENCE), None)
    if reference is not None and reference is not fastest:
        text += (f", {_factor(_median(reference, TO_DETACHED), _median(fastest, TO_DETACHED))} faster "
                 f"than {reference['label']} ({format_ns(_median(reference, TO_DETACHED))})")
        rests_on.append((reference, TO_DETACHED))
    elif len(ranking) > 1:
        runner_up = ranking[1]
        text += (f", {_factor(_median(runner_up, TO_DETACHED), _median(fastest, TO_DETACHED))} faster "
                 f"than the next, {runner_up['label']}")
        rests_on.append((runner_up, TO_DETACHED))
    claims = [Claim(text, tuple(rests_on))]
    tied, untestable = same_as_fastest(ranking, TO_DETACHED, rows_by_group)
    if untestable:
        claims.append(Claim(f"{op}: too few runs per row for the test to tell any two rows apart: "
                            f"the ranking is by medians alone (--repeat {_runs_needed()} or more tests it)"))
    elif tied:
        claims.append(Claim(f"{op}: {fastest['label']} and {_names(tied)}: statistically "
                            f"indistinguishable in time to detached (Mann-Whitney p >= {ALPHA:g})",
                            tuple((group, TO_DETACHED) for group in [fastest] + tied)))
    return claims


def _write_claims(groups, op):
    ranking = ranked(groups, TOUCH)
    if op not in ("write", "mixed") or not ranking:
        return []
    cheapest = ranking[0]
    text = (f"{op}: cheapest first writes: {cheapest['label']} (touch {format_ns(_median(cheapest, TOUCH))}, "
            "the application's time with no clock in its loop")
    rests_on = [(cheapest, TOUCH)]
    if len(ranking) > 1:
        text += f"; next {ranking[1]['label']}, {_factor(_median(ranking[1], TOUCH), _median(cheapest, TOUCH))}"
        rests_on.append((ranking[1], TOUCH))
    return [Claim(text + ")", tuple(rests_on))]


def _runs_needed(alpha=ALPHA):
    n = 1
    while mannwhitney.smallest_p(n, n) >= alpha:
        n += 1
    return n


def _not_run_claims(groups):
    """One line per strategy skipped or failed, with its ops and reason."""
    by_label = {}
    for group in groups:
        if group["status"] in ("skipped", "failed"):
            entry = by_label.setdefault((group["status"], group["label"], group["reason"]), [])
            entry.append(group["op"])
    return [Claim(f"{status}: {label} ({', '.join(ops)}): {_gist(reason)}")
            for (status, label, reason), ops in by_label.items()]


GIST_CHARS = 80


def _gist(reason):
    """A reason's first clause (the table's notes have it whole)."""
    gist = (reason or "no reason given").split(": ")[0].split("; ")[0]
    return gist if len(gist) <= GIST_CHARS else gist[:GIST_CHARS - 3] + "..."


def claims(document):
    """Every claim of the verdict, in print order."""
    groups = document["groups"]
    rows_by_group = _rows_by_group(document)
    ops = list(dict.fromkeys(group["op"] for group in groups))
    found = []
    for op in ops:
        mine = [group for group in groups if group["op"] == op]
        found += _detached_claims(mine, op, rows_by_group)
        found += _write_claims(mine, op)
    return found + _not_run_claims(groups)


def verdict(document):
    """The verdict's lines."""
    return [claim.text for claim in claims(document)]
