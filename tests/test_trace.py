"""Trace files (wpcompare.trace) and their replay by the C workload (csrc/trace.c).

Round trip of the format, one-line refusals naming the line or entry of a malformed
trace, the C plan against the file, and replays with writes from several threads,
verified by every strategy that can run here, by the dirty-set checks and by the model
of a chain of checkpoints.
"""
import json
import os
import random
import struct

import pytest
from click.testing import CliRunner

from harness import SMALL, assert_ok, in_child, run_strategy, skip_unless_available, strategy_names
from wpcompare import binding, cycle, strategies
from wpcompare import trace as traces
from wpcompare.cli import main
from wpcompare.errors import InvalidArgument
from wpcompare.options import parse_pattern

PAGES = SMALL // binding.PAGE_SIZE


def _random_trace(seed=7, entries=2000, threads=3, npages=PAGES, write_share=0.3, stamped=False):
    """Entries over npages pages with repeats, reads before writes of the same page, and
    writes of one page by several threads."""
    rng = random.Random(seed)
    pages = [rng.randrange(npages) for _ in range(entries)]
    writes = [rng.random() < write_share for _ in range(entries)]
    thread_of = [rng.randrange(threads) for _ in range(entries)]
    times = sorted(rng.randrange(10 ** 9) for _ in range(entries)) if stamped else None
    return traces.Trace(region_bytes=npages * binding.PAGE_SIZE, threads=threads,
                        mechanism="synthetic", pages=pages, writes=writes, thread_of=thread_of,
                        times=times, info={"source": "tests/test_trace.py"})


def _saved(tmp_path, trace, name="t.trace"):
    path = tmp_path / name
    traces.save(trace, path)
    return str(path)


# ---- the format ----

@pytest.mark.parametrize("stamped", [False, True])
def test_round_trip(tmp_path, stamped):
    original = _random_trace(stamped=stamped)
    path = _saved(tmp_path, original)
    again = traces.load(path)
    for field in ("region_bytes", "threads", "mechanism", "pages", "writes", "thread_of", "times",
                  "info", "page_size", "version"):
        assert getattr(again, field) == getattr(original, field), field
    assert traces.render(again) == open(path).read()
    assert os.listdir(tmp_path) == ["t.trace"], "no temp file left"


GOOD = """wpcompare-trace 1
page_size 4096
region_bytes 16384
threads 2
entries 3
mechanism synthetic
timestamps ns
end
0 w 0 10
3 r 1 20
0 r 1 20
"""


@pytest.mark.parametrize("old,new,expected", [
    ("wpcompare-trace 1", "wpcompare-trace 2", "line 1: version '2': this wpcompare reads version 1"),
    ("wpcompare-trace 1", "hello", "line 1: not a wpcompare trace"),
    ("page_size 4096", "page_size 2097152", "line 2: page_size 2097152: only 4096-byte pages"),
    ("region_bytes 16384", "region_bytes lots", "line 3: region_bytes must be a whole number"),
    ("threads 2", "threads 65", "line 4: threads must be at least 1 and at most 64, not 65"),
    ("entries 3", "entries 4", "entry 4: missing: the header says 4 entries, the file has 3"),
    ("entries 3", "entries 2", "entry 3 (line 11): one too many"),
    ("mechanism synthetic\n", "", "header: lacks mechanism"),
    ("timestamps ns", "timestamps ms", "line 7: timestamps must be ns or none"),
    ("timestamps ns", "colour blue", "line 7: unknown header key 'colour'"),
    ("end\n", "", "line 8: '0 w 0 10' looks like an entry, but no 'end' line closes the header"),
    ("end\n0 w 0 10\n3 r 1 20\n0 r 1 20\n", "", "header: no 'end' line closes the header"),
    ("3 r 1 20", "4 r 1 20", "entry 2 (line 10): page 4 is outside the region of 4 pages"),
    ("3 r 1 20", "3 x 1 20", "entry 2 (line 10): access 'x' is neither r nor w"),
    ("3 r 1 20", "3 r 2 20", "entry 2 (line 10): thread 2 is not below the header's threads (2)"),
    ("3 r 1 20", "3 r 1 5", "entry 2 (line 10): timestamp 5 is before the previous entry's (10)"),
    ("3 r 1 20", "3 r 1", "entry 2 (line 10): '3 r 1' is not 'PAGE r|w THREAD NS'"),
    ("3 r 1 20", "-3 r 1 20", "entry 2 (line 10): '-3 r 1 20' is not"),
])
def test_malformed_traces_are_one_line_naming_the_place(tmp_path, old, new, expected):
    assert old in GOOD
    path = tmp_path / "bad.trace"
    path.write_text(GOOD.replace(old, new, 1))
    with pytest.raises(InvalidArgument) as caught:
        traces.load(path)
    assert caught.value.reason.startswith(f"trace {path}: ")
    assert expected in caught.value.reason
    assert "\n" not in caught.value.reason
    shown = CliRunner().invoke(main, ["trace", "show", str(path)])
    assert shown.exit_code == 2
    assert shown.stderr.strip().splitlines() == [f"Error: {caught.value.reason}"]


def test_binary_and_missing_files_are_refused_in_one_line(tmp_path):
    path = tmp_path / "bin.trace"
    path.write_bytes(b"wpcompare-trace 1\n\xff\xfe")
    with pytest.raises(InvalidArgument, match=r"line 2: not UTF-8 text$"):
        traces.load(path)
    with pytest.raises(InvalidArgument, match="cannot read it: No such file"):
        traces.load(tmp_path / "none")
    with pytest.raises(InvalidArgument, match="is neither a file nor a directory"):
        parse_pattern(f"trace:{tmp_path / 'none'}")


def test_show_summarises(tmp_path):
    path = tmp_path / "good.trace"
    path.write_text(GOOD)
    summary = traces.summary(traces.load(path))
    assert summary["pages_touched"] == 2 and summary["region_pages"] == 4
    assert summary["pages_written"] == 1 and summary["write_entries"] == 1
    assert summary["repeats"] == 1 and summary["span_ns"] == 10
    assert [(row["entries"], row["first_touches"], row["writes"]) for row in summary["per_thread"]] \
        == [(1, 1, 1), (2, 1, 0)]
    seq = traces.Trace(region_bytes=8 * 4096, threads=1, mechanism="synthetic",
                       pages=[0, 1, 2, 5, 6, 6], writes=[False] * 6, thread_of=[0] * 6)
    assert traces.summary(seq)["sequential_share"] == 3 / 4
    shown = CliRunner().invoke(main, ["trace", "show", str(path)])
    assert shown.exit_code == 0, shown.output
    assert "pages touched: 2 (50.0% of the region)" in shown.output
    assert "thread 1: 2 entries, 1 first touches, 0 writes" in shown.output


# ---- the C plan ----

def test_the_c_plan_is_each_threads_entries_in_file_order(tmp_path):
    trace = _random_trace()
    pattern = parse_pattern(f"trace:{_saved(tmp_path, trace)}")
    workload = dict(op="mixed", pattern=pattern, seed=3, threads=trace.threads)
    order = struct.unpack(f"{len(trace)}Q", binding.access_order(PAGES, **workload))
    expected = [page for t in range(trace.threads)
                for page, thread in zip(trace.pages, trace.thread_of) if thread == t]
    assert list(order) == expected
    count, bitmap = binding.written_pages(workload, PAGES)
    written = {page for page, write in zip(trace.pages, trace.writes) if write}
    assert count == len(written)
    assert {p for p in range(PAGES) if bitmap[p // 8] >> (p % 8) & 1} == written


def test_the_c_core_refuses_a_trace_outside_the_region_or_its_threads(tmp_path):
    trace = _random_trace(npages=PAGES)
    pattern = parse_pattern(f"trace:{_saved(tmp_path, trace)}")
    with pytest.raises(InvalidArgument):
        binding.written_pages(dict(op="mixed", pattern=pattern, seed=1, threads=trace.threads),
                              PAGES - 1)
    with pytest.raises(InvalidArgument):
        binding.written_pages(dict(op="mixed", pattern=pattern, seed=1, threads=trace.threads - 1),
                              PAGES)


# ---- replays ----

@pytest.mark.parametrize("strategy", strategy_names())
def test_replay_with_writes_from_several_threads_verifies(image, tmp_path, strategy):
    skip_unless_available(strategy)
    trace = _random_trace(threads=3)
    path = _saved(tmp_path, trace)
    row = run_strategy(image, strategy, op="mixed", pattern=f"trace:{path}", threads=3,
                       image_bytes=image.size)
    if row["status"] == "skipped":
        pytest.skip(f"{strategy} cannot run here: {row['reason']}")
    assert_ok(row)
    assert row["touched_pages"] == len(set(trace.pages)), "first touches only"
    if row["dirty"] is not None:
        # Every written page reported (a chunk-granular tracker may report more).
        assert row["dirty"]["missing"] == 0, row["dirty"]


def test_only_first_touches_are_timed(image, tmp_path):
    trace = _random_trace(entries=1500, threads=2)
    path = _saved(tmp_path, trace)
    for latency in ("every", "sample:4"):
        row = run_strategy(image, "uffd", op="mixed", pattern=f"trace:{path}", threads=2,
                           latency=latency)
        assert_ok(row)
        timed = row["histograms"]["touch"]["count"]
        distinct = len(set(trace.pages))
        assert (timed == distinct) if latency == "every" else (0 < timed < distinct), (latency, timed)


def test_a_trace_for_another_region_size_is_refused(make_image, tmp_path):
    path = _saved(tmp_path, _random_trace(npages=PAGES // 2))
    image = make_image()
    row = run_strategy(image, "mmap", op="mixed", pattern=f"trace:{path}", threads=3)
    assert row["status"] == "failed" and row["failed_phase"] == "create"
    assert row["reason"] == (f"trace {path}: recorded for a region of {SMALL // 2} bytes, the image "
                             f"is {SMALL} bytes: replay it on the image captured with it")
    result = CliRunner().invoke(main, ["run", "--image", image.path, "--pattern", f"trace:{path}"])
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [f"Error: {row['reason']}"]


def test_threads_and_overlap_that_do_not_fit_the_trace_are_refused(image, tmp_path):
    path = _saved(tmp_path, _random_trace(threads=2))
    result = CliRunner().invoke(main, ["run", "--image", image.path, "--pattern", f"trace:{path}",
                                       "--threads", "3"])
    assert result.exit_code == 2
    assert "recorded with 2 thread(s); drop --threads" in result.stderr
    result = CliRunner().invoke(main, ["run", "--image", image.path, "--pattern", f"trace:{path}",
                                       "--overlap"])
    assert result.exit_code == 2 and "--overlap does not apply to a trace" in result.stderr


def test_run_command_replays_a_trace_with_its_threads(image, tmp_path):
    path = _saved(tmp_path, _random_trace(threads=2))
    result = CliRunner().invoke(main, ["run", "--image", image.path, "--pattern", f"trace:{path}",
                                       "-s", "mmap", "-s", "uffd", "--repeat", "1", "--warmup", "0",
                                       "--latency", "off", "--no-bounds", "-q", "--format", "json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert [(group["label"], group["op"], group["pattern"], group["threads"], group["verified"])
            for group in document["groups"]] == [(name, "mixed", f"trace:{path}", 2, True)
                                                 for name in ("mmap", "uffd")]


def test_a_chain_replaying_a_trace_every_cycle_verifies_against_the_model(image, tmp_path):
    """The model of the checkpoints holds the trace's writes: each cycle's image is checked
    against it, and every cycle's memory after the work."""
    trace = _random_trace(threads=2, write_share=0.5)
    pattern = parse_pattern(f"trace:{_saved(tmp_path, trace)}")
    plan = cycle.ChainPlan(choices=[strategies.parse_choice("mmap"), strategies.parse_choice("uffd")],
                           cycles=3, dirty=0.0, pattern=pattern, image=image, threads=2,
                           directory=str(tmp_path), timeout=60)
    for chain in cycle.run_chains(plan):
        assert chain["status"] == "ok", chain["reason"]
        for row in chain["cycles"]:
            assert row["status"] == "ok" and row["verified"], row["reason"]
            assert row["image_check"]["full"]["verified"]


def test_the_model_without_the_traces_writes_names_a_written_page(image, tmp_path):
    trace = _random_trace(threads=2, write_share=0.5)
    pattern = parse_pattern(f"trace:{_saved(tmp_path, trace)}")
    dumped = tmp_path / "after.img"

    def replay_and_dump():
        with binding.Run(image_path=image.path, image_seed=image.seed, image_kind=image.kind,
                         strategy="read", params=None, op="mixed", pattern=pattern, threads=2,
                         overlap=False, seed=5) as run:
            for phase in binding.PHASES:
                getattr(run, phase)()
            run.checkpoint(dumped, incremental=False)

    in_child(replay_and_dump)
    workload = dict(op="mixed", pattern=pattern, seed=5, threads=2)
    assert binding.image_check(dumped, image.size, image.seed, image.kind, [workload])["verified"]
    check = binding.image_check(dumped, image.size, image.seed, image.kind, [])
    written = {page for page, write in zip(trace.pages, trace.writes) if write}
    assert not check["verified"] and check["first_mismatch_page"] == min(written)
    assert check["mismatched_pages"] == len(written)


def test_cycle_command_replays_a_trace_every_cycle(tmp_path):
    path = _saved(tmp_path, _random_trace(threads=2))
    result = CliRunner().invoke(main, ["cycle", "-s", "mmap", "--cycles", "2", "--size", "2M",
                                       "--pattern", f"trace:{path}", "--dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert f"2 cycle(s), each replaying trace:{path} (its reads and writes), 2 thread(s)" in result.stdout
    result = CliRunner().invoke(main, ["cycle", "--size", "4M", "--pattern", f"trace:{path}"])
    assert result.exit_code == 2
    assert "recorded for a region of 2097152 bytes, the image is 4194304 bytes" in result.stderr


def test_a_run_spec_carries_the_traces_path(tmp_path):
    from wpcompare.rows import RunSpec
    path = _saved(tmp_path, _random_trace())
    spec = RunSpec(image=str(tmp_path / "x.img"), strategy="mmap", op="mixed",
                   pattern=parse_pattern(f"trace:{path}"), threads=3)
    again = RunSpec.from_json(json.loads(json.dumps(spec.to_json())))
    assert again.pattern == spec.pattern and again.pattern.path == path
    assert spec.identity()["pattern"] == f"trace:{path}"
