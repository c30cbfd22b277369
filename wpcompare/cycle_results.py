"""The result document of `wpcompare cycle`: schema wpcompare.cycle/2.

    metadata   as `run`'s (version, timestamp, command line, system facts, image,
               options), plus where the chains' images lived
    chains     one per strategy: identity, status and reason, every cycle's raw
               row (the worker's measurements, dumps, image checks) and totals
    ranking    strategies by median time per cycle and by median pause

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
from wpcompare import metrics
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


def ranking(chains):
    """Completed chains ordered by median time per cycle, and by median pause."""
    ranked = {}
    for key, metric in (("by_cycle_time", "cycle_ns"), ("by_pause", "pause_ns")):
        entries = []
        for chain in chains:
            totals = chain.get("totals")
            if chain["status"] != "ok" or not totals or not totals["per_cycle"][metric]:
                continue
            summary = totals["per_cycle"][metric]
            entries.append({"label": chain["label"], "median_ns": summary["median"],
                            "min_ns": summary["min"], "max_ns": summary["max"]})
        ranked[key] = sorted(entries, key=lambda entry: entry["median_ns"])
    return ranked


def derive(document):
    """A read document with its totals and ranking derived again from the cycles."""
    return build_document(document["chains"], document["metadata"])


def build_document(chains, metadata):
    for chain in chains:
        chain["totals"] = chain_totals(chain)
    return {"schema": SCHEMA, "metadata": metadata, "chains": chains, "ranking": ranking(chains)}
