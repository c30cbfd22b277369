#!/usr/bin/env python3
"""When was the application done touching *and* free of the image? From a `wpcompare run` JSON.

For each row: restore + touch (every page touched), time to detached, and the later of
the two -- the moment a restored process has all its memory and could be checkpointed
again -- as medians over the measured runs, with the ratio to a reference row's
restore + touch (mmap's by default: the lazy mapping that touches fastest but never
detaches by itself). This is issue 4's hybrid target: at most 1.5x mmap's touch-all time
while ending detached.

    python scripts/touched_and_detached.py RESULTS.json [--reference mmap]
"""
import argparse
import json
import statistics
import sys


def per_run(row):
    phases = row.get("phases") or {}
    restore, touch = (phases.get(p, {}).get("ns") for p in ("restore", "touch"))
    if restore is None or touch is None:
        return None
    touched = restore + touch
    detached = row.get("time_to_detached_ns")
    return touched, detached, None if detached is None else max(touched, detached)


def medians(document):
    groups = {}
    for row in document["runs"]:
        if row.get("warmup") or row.get("status") != "ok":
            continue
        values = per_run(row)
        if values:
            groups.setdefault((row["label"], row["op"]), []).append(values)
    result = {}
    for key, runs in groups.items():
        columns = list(zip(*runs))
        result[key] = [None if None in column else statistics.median(column) for column in columns]
    return result


def ms(ns):
    return "never" if ns is None else f"{ns / 1e6:.1f} ms"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results")
    parser.add_argument("--reference", default="mmap", help="label whose restore+touch is 1x")
    args = parser.parse_args()
    with open(args.results) as f:
        document = json.load(f)
    if document.get("schema") != "wpcompare.run/1":
        sys.exit(f"{args.results}: not a `wpcompare run` result (schema {document.get('schema')!r})")
    table = medians(document)
    print(f"{'strategy':32} {'op':5} {'touched':>10} {'detached':>10} {'both':>10} {'both / ref':>10}")
    for (label, op), (touched, detached, both) in table.items():
        reference = table.get((args.reference, op))
        ratio = "-" if both is None or not reference else f"{both / reference[0]:.2f}x"
        print(f"{label:32} {op:5} {ms(touched):>10} {ms(detached):>10} {ms(both):>10} {ratio:>10}")
    print(f"(medians over measured runs; touched = restore + touch; both = the later of touched "
          f"and detached; ref = {args.reference}'s touched)")


if __name__ == "__main__":
    main()
