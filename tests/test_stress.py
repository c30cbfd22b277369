"""Stress: 8 threads of random reads and writes over every strategy, again and again.

Every strategy in the C table runs, with its background fixup where it has
one (a `fixup` parameter offering `background`), so that the workload's
writes race the copying. Each round is a fresh seed: other pages, another
split of reads and writes. Every run is in its own process under the
runner's watchdog, and its verifier checks every byte of the region against
the image plus the writes the workload made: one lost write fails the run.

20 rounds by default, kept under a minute by the image size (measured: about
25 s for 13 strategies on this 2-CPU machine, twice that when it is busy);
WPCOMPARE_STRESS_SECONDS=N keeps starting rounds until N seconds have passed.
"""
import os
import time

from wpcompare import runner, strategies
from wpcompare.options import parse_pattern

ROUNDS = 20
THREADS = 8
SIZE = 4 << 20       # 1024 pages, 128 per thread: 20 rounds of 13 strategies in ~25 s here
RUN_TIMEOUT = 30.0


def stress_choices():
    """Every strategy of the table, with fixup=background where it has that choice."""
    choices = []
    for strategy in strategies.all_strategies():
        fixup = strategy.param("fixup")
        text = strategy.name
        if fixup is not None and "background" in fixup.choices:
            text += ":fixup=background"
        choices.append(strategies.parse_choice(text))
    return choices


def stress(image, choices, rounds=ROUNDS, seconds=0.0, timeout=RUN_TIMEOUT, inject=None):
    """Rows of every run: `rounds` rounds at least, more until `seconds` have passed."""
    rows, done, started = [], 0, time.monotonic()
    while done < rounds or time.monotonic() - started < seconds:
        matrix = runner.Matrix(
            choices=choices, ops=["mixed"], pattern=parse_pattern("random"), image=image,
            threads=THREADS, repeat=1, warmup=0, seed=done + 1, timeout=timeout, inject=inject,
            # Pinned, the threads share CPUs in a fixed way; unpinned, the scheduler mixes them.
            pin_threads=done % 2 == 0)
        rows += runner.run_matrix(matrix)
        done += 1
    return rows


def problems(rows, pages):
    """One line per run that failed or lost anything, naming the strategy and seed."""
    found = []
    for row in rows:
        where = f"{row['label']} seed {row['seed']}"
        if row["status"] == "failed":
            phase = f"{row['failed_phase']}: " if row.get("failed_phase") else ""
            found.append(f"{where}: {phase}{row['reason']}")
        elif row["status"] == "ok":
            if not row["verified"] or row["mismatched_pages"]:
                found.append(f"{where}: {row['mismatched_pages']} pages lost writes")
            if row["touched_pages"] != pages:
                found.append(f"{where}: touched {row['touched_pages']} of {pages} pages")
            if row["dirty"] and row["dirty"]["missing"]:
                found.append(f"{where}: dirty set misses {row['dirty']['missing']} written pages")
    return found


def _children():
    """Live or zombie children of this process: workers the runner did not reap."""
    mine = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/stat") as stat:
                if int(stat.read().rsplit(")", 1)[1].split()[1]) == os.getpid():
                    mine.append(int(entry))
        except OSError:
            pass
    return mine


def test_eight_threads_reading_and_writing_lose_nothing(make_image):
    image = make_image(SIZE, seed=7, kind="random")
    choices = stress_choices()
    seconds = float(os.environ.get("WPCOMPARE_STRESS_SECONDS", "0"))
    started = time.monotonic()
    rows = stress(image, choices, seconds=seconds)
    elapsed = time.monotonic() - started

    assert not problems(rows, image.pages), "\n".join(problems(rows, image.pages))
    ran = {row["label"] for row in rows if row["status"] == "ok"}
    skipped = {row["label"]: row["reason"] for row in rows if row["status"] == "skipped"}
    assert ran | set(skipped) == {choice.label for choice in choices}
    for choice in choices:
        if choice.label in ran:
            runs = [row for row in rows if row["label"] == choice.label]
            assert len(runs) >= ROUNDS, (choice.label, len(runs))
    # The mixed workload really mixed: the reads saw data, the dirty sets saw writes.
    assert all(row["checksum"] for row in rows if row["status"] == "ok")
    assert all(row["dirty"]["reported"] for row in rows if row["status"] == "ok" and row["dirty"])
    assert not _children(), "every worker was reaped"
    print(f"stress: {len(rows)} runs of {len(ran)} strategies in {elapsed:.1f} s; skipped: {skipped}")


def test_a_hang_under_stress_is_a_failed_row_naming_the_strategy(make_image):
    image = make_image(1 << 20)
    choices = [strategies.parse_choice("mmap"), strategies.parse_choice("read")]
    rows = stress(image, choices, rounds=1, timeout=1, inject=runner.Injection("hang", "read"))
    assert problems(rows, image.pages) == ["read seed 1: timed out after 1 s"]
    assert [row["status"] for row in rows if row["label"] == "mmap"] == ["ok"]
