#!/usr/bin/env python3
"""Is wpcompare's touch figure what the application takes? A benchmark, not a test.

For each page-cache state, on the same image: a plain C loop (scripts/plain_touch.c,
nothing of wpcompare in it) reads one word of every page of a private mapping in
wpcompare's own access order, pinned to the CPU wpcompare pins its workload to;
then `wpcompare run -s mmap --op read` measures the same; then the plain loop
again. Printed: the medians, their faults, the ratio, and the instrumented pass's
touch (a clock read around every access) for contrast. Exit status 1 if a state's
ratio is off by more than --tolerance.

    python scripts/check_touch.py --size 512M --image-kind random --runs 5

Run it on a quiet machine: nothing else running, no tests, no builds.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

from wpcompare import binding, image as images
from wpcompare._core import ffi, lib
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
    workload = ffi.new("struct wpc_workload *")
    binding.fill_workload(workload, op="read", pattern=parse_pattern(pattern), seed=seed)
    order = ffi.new("uint64_t[]", pages)
    begin = ffi.new("uint64_t[]", binding.MAX_THREADS + 1)
    count = lib.wpc_plan_pages(workload, pages, order, begin, ffi.NULL)
    if count < 0:
        raise SystemExit(f"cannot plan pattern {pattern}: {os.strerror(-count)}")
    with open(path, "wb") as out:
        out.write(ffi.buffer(order, count * 8))


def plain_passes(program, cache, order, cpu, runs):
    """(ns, faults) of each of runs passes, after one unmeasured pass, each in a fresh process."""
    passes = []
    for number in range(runs + 1):
        cache.before_run()
        line = subprocess.run([program, cache.path, order, str(cpu)], check=True, capture_output=True,
                              text=True).stdout.split()
        if number:
            passes.append((int(line[0]), int(line[1])))
    return passes


def wpcompare_runs(image, mode, pattern, seed, runs, directory):
    output = os.path.join(directory, f"{mode}.json")
    command = [shutil.which("wpcompare") or "wpcompare", "run", "--image", image.path, "--cache", mode,
               "-s", "mmap", "--op", "read", "--pattern", pattern, "--seed", str(seed),
               "--repeat", str(runs), "--warmup", "1", "--latency", "every", "--no-bounds", "-q",
               "-o", output]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    with open(output) as source:
        document = json.load(source)
    measured = [row for row in document["runs"] if row["status"] == "ok" and not row["warmup"]]
    plain = [row for row in measured if row["latency"] == "none"]
    timed = [row for row in measured if row["latency"] != "none"]
    return ([(row["phases"]["touch"]["ns"], row["phases"]["touch"]["minflt"] + row["phases"]["touch"]["majflt"])
             for row in plain],
            [row["phases"]["touch"]["ns"] for row in timed],
            document["metadata"]["cache"], plain[0]["app_cpu"] if plain else 0)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="512M")
    parser.add_argument("--image-kind", default="random", choices=images.IMAGE_KINDS)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--pattern", default="random")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--states", default="read,written,cold",
                        help="page-cache states, comma-separated (as --cache takes them)")
    parser.add_argument("--tolerance", type=float, default=0.10)
    args = parser.parse_args()

    size = parse_size(args.size)
    image = images.generated_image(size, args.seed, args.image_kind)
    header = ("state", "plain loop", "faults", "wpcompare touch", "faults", "ratio", "clock per access")
    lines, off = [], []
    with tempfile.TemporaryDirectory(prefix="wpcompare-check-touch-") as directory:
        program = build_plain_loop(directory)
        order = os.path.join(directory, "order")
        write_order(order, image.pages, args.pattern, args.seed)
        for mode in args.states.split(","):
            cache_mode = images.parse_cache_mode(mode)
            ours, timed, state, cpu = wpcompare_runs(image, mode, args.pattern, args.seed, args.runs, directory)
            with images.PageCache(image, cache_mode) as cache:
                plain = plain_passes(program, cache, order, cpu, args.runs)
                ours_again, timed_again, _, _ = wpcompare_runs(image, mode, args.pattern, args.seed, args.runs,
                                                               directory)
                plain += plain_passes(program, cache, order, cpu, args.runs)
            ours += ours_again
            timed += timed_again
            plain_ns = statistics.median(ns for ns, _ in plain)
            ours_ns = statistics.median(ns for ns, _ in ours)
            ratio = ours_ns / plain_ns
            if abs(ratio - 1) > args.tolerance:
                off.append(mode)
            lines.append((mode, format_ns(plain_ns), format_count(statistics.median(f for _, f in plain)),
                          format_ns(ours_ns), format_count(statistics.median(f for _, f in ours)),
                          f"{ratio:.2f}", format_ns(statistics.median(timed))))
            print(f"{mode}: {state.get('state')}; probe before the runs: "
                  f"{json.dumps(state.get('before'))}", file=sys.stderr)
    widths = [max(len(str(row[i])) for row in [header] + lines) for i in range(len(header))]
    print(f"{format_size(size)} {args.image_kind} image, pattern {args.pattern}, "
          f"{2 * args.runs} passes of each (medians)")
    for row in [header] + lines:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)))
    if off:
        print(f"off by more than {args.tolerance:.0%}: {', '.join(off)}")
        return 1
    print(f"every state within {args.tolerance:.0%} of the plain loop")
    return 0


if __name__ == "__main__":
    sys.exit(main())
