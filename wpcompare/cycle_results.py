"""The result document of `wpcompare cycle`: schema wpcompare.cycle/2.

    metadata   as `run`'s (version, timestamp, command line, system facts, image,
               options), plus where the chains' images lived
    chains     one per strategy: identity, status and reason, every cycle's raw
               row (the worker's measurements, dumps, image checks) and totals
    ranking    strategies by median time per cycle and by median pause over the cycles
               of all their chains (`--repeat`), with the spread, and ranks that tie
               where the Mann-Whitney U test cannot tell two strategies apart

Derived numbers, per cycle:
    checkpoint  the dump the chain kept: incremental where the strategy has a
                dirty set, else full (both are measured and both checked)
    pause       the part of fixup the application cannot run alongside, plus
                that checkpoint, for which the application is stopped
    cycle       restore + work + fixup + that checkpoint
    slowdown    work / the same pass over the region once loaded (steady);
                both passes read no clock inside their loop (cycle/1 files timed
                every access, which inflated both)
"""
from wpcompare import documents, mannwhitney, metrics
from wpcompare.results import summarize_values

SCHEMA = "wpcompare.cycle/2"
# Read as well: cycle/1 files, whose work and steady passes timed every access (so
# their work and slowdown are inflated by the clock reads).
READABLE_SCHEMAS = ("wpcompare.cycle/1", SCHEMA)



def cycle_metrics(row):
    """The flat numbers of one cycle's row (None where that step did not run): metrics.CYCLE_METRICS."""
    return metrics.cycle_values(row)


def chain_totals(chain):
    """Sums (times, bytes) and maxima (VMAs, RSS) over the chain's completed cycles, and
    the per-cycle statistics the ranking uses; None if no cycle completed."""
    done = [cycle_metrics(row) for row in chain["cycles"] if row["status"] == "ok"]
    if not done:
        return None
    totals = {"cycles": len(done)}
    totals.update(metrics.cycle_totals(done))
    totals["per_cycle"] = {name: summarize_values(values[name] for values in done)
                           for name in metrics.PER_CYCLE}
    return totals


ALPHA = 0.05


def ranking(chains, alpha=ALPHA):
    """Strategies ordered by median time per cycle, and by median pause, over the completed
    cycles of all their completed chains (`--repeat` runs several per strategy), with the
    spread (results.summarize_values) and a rank: a strategy the two-sided Mann-Whitney U test
    cannot tell from the first of the rank above it (p >= alpha, or too few cycles for any p
    below it) shares that rank."""
    ranked = {}
    for key, metric in (("by_cycle_time", "cycle_ns"), ("by_pause", "pause_ns")):
        values = {}
        for chain in chains:
            if chain["status"] != "ok" or not chain.get("totals") or not chain["totals"]["per_cycle"][metric]:
                continue
            values.setdefault(chain["label"], []).extend(
                cycle_metrics(row)[metric] for row in chain["cycles"] if row["status"] == "ok")
        entries = []
        for label, found in values.items():
            summary = summarize_values(found)
            entries.append({"label": label, "median_ns": summary["median"], "min_ns": summary["min"],
                            "max_ns": summary["max"], "spread_pct": summary["spread_pct"],
                            "cycles": summary["n"], "values_ns": found})
        entries.sort(key=lambda entry: entry["median_ns"])
        _add_ranks(entries, alpha)
        for entry in entries:
            del entry["values_ns"]
        ranked[key] = entries
    return ranked


def _add_ranks(entries, alpha):
    """rank: 1-based position, shared with the leader of the rank above when the test cannot
    tell them apart; p: that test's p-value (None for a leader or when too few cycles)."""
    leader = None
    for position, entry in enumerate(entries, 1):
        entry["p"] = None
        if leader is not None:
            a, b = leader["values_ns"], entry["values_ns"]
            if mannwhitney.smallest_p(len(a), len(b)) >= alpha:
                entry["rank"], entry["tie"] = leader["rank"], "too few cycles"
                continue
            entry["p"] = mannwhitney.mann_whitney_u(a, b).p
            if entry["p"] >= alpha:
                entry["rank"], entry["tie"] = leader["rank"], "not significant"
                continue
        entry["rank"], entry["tie"], leader = position, None, entry


def derive(document):
    """A read document with its totals and ranking derived again from the cycles."""
    return build_document(document["chains"], document["metadata"])


def build_document(chains, metadata):
    for chain in chains:
        chain["totals"] = chain_totals(chain)
        chain["cycles"] = [documents.wide_integers_as_text(row) for row in chain["cycles"]]
    return {"schema": SCHEMA, "metadata": metadata, "chains": chains, "ranking": ranking(chains)}
