#!/usr/bin/env python3
"""Is wpcompare's touch figure what the application takes? A benchmark, not a test.

For each page-cache state, on the same image: a plain C loop (scripts/plain_touch.c,
nothing of wpcompare in it) reads one word of every page of a private mapping in
wpcompare's own access order, pinned to the CPU wpcompare pins its workload to; and
wpcompare's runner measures `-s mmap --op read` the way `wpcompare run` does, each run in
a fresh worker. The two alternate run by run inside one page-cache state (which one goes
first alternates too), so both meet the same machine: in a VM the cost of a random pass
over 512 MiB drifts by a quarter between minutes. Printed: the medians, their faults, the
ratio (of the medians, and of the lower quartiles), and an instrumented run's touch (a
clock read around every access) for contrast.
Exit status 1 if a state's ratio is off by more than --tolerance.

    python scripts/check_touch.py --size 512M --image-kind random --runs 11

Run it on a quiet machine: nothing else running, no tests, no builds.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

from wpcompare import binding, image as images, runner
from wpcompare.options import format_size, parse_pattern, parse_size
from wpcompare.report import format_count, format_ns

HERE = os.path.dirname(os.path.abspath(__file__))


def build_plain_loop(directory):
    program = os.path.join(directory, "plain_touch")
    subprocess.run(["cc", "-O2", "-Wall", "-Wextra", "-Werror", "-o", program,
                    os.path.join(HERE, "plain_touch.c")], check=True)
    return program


def write_order(path, pages, pattern, seed):
    """wpcompare's access order for one thread, from the C core's own planner."""
    with open(path, "wb") as out:
        out.write(binding.access_order(pages, op="read", pattern=parse_pattern(pattern), seed=seed))


def plain_pass(program, path, order, cpu):
    """(ns, faults) of one plain pass, in a fresh process."""
    line = subprocess.run([program, path, order, str(cpu)], check=True, capture_output=True,
                          text=True).stdout.split()
    return int(line[0]), int(line[1])


def worker_run(image, path, pattern, seed, latency):
    """(touch ns, faults, app CPU) of one `-s mmap --op read` run, in a fresh worker as `run` makes them."""
    row = runner.run_isolated({"image": path, "image_seed": image.seed, "image_kind": image.kind,
                               "strategy": "mmap", "op": "read", "pattern": pattern, "seed": seed,
                               "latency": latency}, timeout=120)
    if row["status"] != "ok" or not row["verified"]:
        raise SystemExit(f"the mmap run failed: {row['status']}: {row['reason']}")
    touch = row["phases"]["touch"]
    return touch["ns"], touch["minflt"] + touch["majflt"], row["app_cpu"] or 0


def measure(image, mode, program, order, pattern, seed, runs):
    """Plain passes, measured runs and instrumented runs of one state, alternating, after one
    unmeasured run of each."""
    plain, ours, timed = [], [], []
    with images.PageCache(image, images.parse_cache_mode(mode)) as cache:
        for number in range(runs + 1):
            pair = []
            for side in (("plain", "ours") if number % 2 == 0 else ("ours", "plain")):
                cache.before_run()
                if side == "plain":
                    # wpcompare pins workload thread 0 to the first CPU this process may use.
                    pair.append(plain_pass(program, cache.path, order, min(os.sched_getaffinity(0))))
                else:
                    pair.append(worker_run(image, cache.path, pattern, seed, "none")[:2])
            cache.before_run()
            timed_ns = worker_run(image, cache.path, pattern, seed, "every")[0]
            if number:
                plain.append(pair[0] if number % 2 == 0 else pair[1])
                ours.append(pair[1] if number % 2 == 0 else pair[0])
                timed.append(timed_ns)
        state = cache.describe()
    return plain, ours, timed, state


def lower_quartile(values):
    """The 25th percentile: in a VM the same pass lands in two modes a quarter apart (where the
    host backs the new page tables), and the medians of two short series can fall in different
    ones; the lower quartile compares the fast mode of both."""
    return statistics.quantiles(values, n=4)[0]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="512M")
    parser.add_argument("--image-kind", default="random", choices=images.IMAGE_KINDS)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--pattern", default="random")
    parser.add_argument("--runs", type=int, default=11)
    parser.add_argument("--states", default="read,written,cold",
                        help="page-cache states, comma-separated (as --cache takes them)")
    parser.add_argument("--tolerance", type=float, default=0.10)
    args = parser.parse_args()

    size = parse_size(args.size)
    image = images.generated_image(size, args.seed, args.image_kind)
    header = ("state", "plain loop", "p25", "faults", "wpcompare touch", "p25", "faults", "ratio", "p25 ratio",
              "clock per access")
    lines, off = [], []
    with tempfile.TemporaryDirectory(prefix="wpcompare-check-touch-") as directory:
        program = build_plain_loop(directory)
        order = os.path.join(directory, "order")
        write_order(order, image.pages, args.pattern, args.seed)
        for mode in args.states.split(","):
            plain, ours, timed, state = measure(image, mode, program, order, args.pattern, args.seed,
                                                args.runs)
            plain_ns = statistics.median(ns for ns, _ in plain)
            ours_ns = statistics.median(ns for ns, _ in ours)
            plain_p25, ours_p25 = (lower_quartile([ns for ns, _ in runs]) for runs in (plain, ours))
            ratio = ours_ns / plain_ns
            if abs(ratio - 1) > args.tolerance:
                off.append(mode)
            lines.append((mode, format_ns(plain_ns), format_ns(plain_p25),
                          format_count(statistics.median(f for _, f in plain)),
                          format_ns(ours_ns), format_ns(ours_p25), format_count(statistics.median(f for _, f in ours)),
                          f"{ratio:.2f}", f"{ours_p25 / plain_p25:.2f}", format_ns(statistics.median(timed))))
            print(f"{mode}: {state['state']}; probe before the runs: {json.dumps(state['before'])}; "
                  f"state set again {state['resets']} time(s)", file=sys.stderr)
    widths = [max(len(str(row[i])) for row in [header] + lines) for i in range(len(header))]
    print(f"{format_size(size)} {args.image_kind} image, pattern {args.pattern}, "
          f"{args.runs} runs of each after one unmeasured, alternating (medians)")
    for row in [header] + lines:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)))
    if off:
        print(f"off by more than {args.tolerance:.0%}: {', '.join(off)}")
        return 1
    print(f"every state within {args.tolerance:.0%} of the plain loop")
    return 0


if __name__ == "__main__":
    sys.exit(main())
