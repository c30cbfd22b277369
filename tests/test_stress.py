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

from harness import children, problems, stress, stress_choices
from wpcompare import runner, strategies

ROUNDS = 20
SIZE = 4 << 20       # 1024 pages, 128 per thread: 20 rounds of 13 strategies in ~25 s here


def test_eight_threads_reading_and_writing_lose_nothing(make_image):
    image = make_image(SIZE, seed=7, kind="random")
    choices = stress_choices()
    seconds = float(os.environ.get("WPCOMPARE_STRESS_SECONDS", "0"))
    started = time.monotonic()
    rows = stress(image, choices, ROUNDS, seconds=seconds)
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
    assert not children(), "every worker was reaped"
    print(f"stress: {len(rows)} runs of {len(ran)} strategies in {elapsed:.1f} s; skipped: {skipped}")


def test_a_hang_under_stress_is_a_failed_row_naming_the_strategy(make_image):
    image = make_image(1 << 20)
    choices = [strategies.parse_choice("mmap"), strategies.parse_choice("read")]
    rows = stress(image, choices, rounds=1, timeout=1, inject=runner.Injection("hang", "read"))
    assert problems(rows, image.pages) == ["read seed 1: timed out after 1 s"]
    assert [row["status"] for row in rows if row["label"] == "mmap"] == ["ok"]
