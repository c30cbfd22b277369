"""Repeated checkpoints: chains of cycles per strategy, the dump writer, the model check, the CLI.

Chains run on 2 MiB images; every cycle is a forked worker, as in real use.
Strategies come from the C table, so rows merged later are covered too.
"""
import csv
import io
import json
import socket
import os
import time

import pytest
from click.testing import CliRunner

from harness import SMALL, error_line, in_child, invoke, open_run, strategy_names
from wpcompare import binding, cycle, cycle_report, cycle_results, strategies
from wpcompare._core import ffi
from wpcompare.cli import main
from wpcompare.errors import InvalidArgument
from wpcompare.image import cache_dir, filesystem_type
from wpcompare.options import parse_pattern

PAGE = binding.PAGE_SIZE
DIRTY = 0.25


def _plan(image, names, tmp_path, **fields):
    settings = dict(choices=[strategies.parse_choice(name) for name in names], cycles=3, dirty=DIRTY,
                    pattern=parse_pattern("random"), image=image, directory=str(tmp_path), timeout=60)
    settings.update(fields)
    return cycle.ChainPlan(**settings)


def _run_chain(image, name, tmp_path, **fields):
    chain = cycle.run_chains(_plan(image, [name], tmp_path, **fields))[0]
    if chain["status"] == "skipped":
        pytest.skip(f"{name} cannot run here: {chain['reason']}")
    return chain


def _assert_chain_ok(chain):
    assert chain["status"] == "ok", chain["reason"]
    for row in chain["cycles"]:
        assert row["status"] == "ok", row["reason"]
        assert row["verified"], "memory after the work equals the model"
        assert row["image_check"]["full"]["verified"]


def _chain_directories(tmp_path):
    return [entry for entry in os.listdir(tmp_path) if entry.startswith("wpcompare-cycle-")]


def _workload(seed, fraction=DIRTY, pattern="random", threads=1):
    return {"op": "mixed", "pattern": parse_pattern(pattern), "seed": seed, "threads": threads,
            "write_fraction": fraction}


# ---- chains of every strategy ----

@pytest.mark.parametrize("strategy", strategy_names())
def test_three_cycles_verify_for_every_strategy(image, tmp_path, strategy):
    chain = _run_chain(image, strategy, tmp_path)
    _assert_chain_ok(chain)
    assert [row["cycle"] for row in chain["cycles"]] == [1, 2, 3]
    for row in chain["cycles"]:
        assert row["written_pages"] == round(DIRTY * image.pages)
        assert row["old_image_deleted"] == "checkpoint"
        assert row["steady_ns"] > 0 and row["phases"]["touch"]["ns"] > 0
        checkpoint = row["checkpoint"]
        assert checkpoint["full"]["bytes_written"] == image.size
        if checkpoint["incremental"]:
            # A dirty set: the kept dump wrote only those pages and equals the full dump.
            assert checkpoint["kept"] == "incremental"
            assert checkpoint["incremental_equals_full"] is True
            assert row["image_check"]["incremental"]["verified"]
            incremental = checkpoint["incremental"]
            assert incremental["bytes_written"] == incremental["dirty_pages"] * PAGE
            assert incremental["dirty_pages"] >= row["written_pages"]
            assert incremental["bytes_written"] + incremental["bytes_copied"] \
                + incremental["bytes_fallback"] == image.size
        else:
            assert checkpoint["incremental_unavailable"] == "no dirty set"
            assert strategy in checkpoint["incremental_reason"]
    totals = cycle_results.chain_totals(chain)
    assert totals["cycles"] == 3 and totals["slowdown"] > 0
    assert _chain_directories(tmp_path) == [], "the chain's images are removed"


@pytest.mark.parametrize("strategy", strategy_names())
def test_old_image_deleted_as_soon_as_detached_and_the_run_still_verifies(image, tmp_path, strategy):
    chain = _run_chain(image, strategy, tmp_path, delete_old="when-detached")
    _assert_chain_ok(chain)
    for row in chain["cycles"]:
        assert row["old_image_deleted"] in ("restore", "fixup")
        assert row["checkpoint"]["incremental_unavailable"] == "old image deleted"


def test_read_detaches_at_restore_so_its_image_goes_right_after_restore(image, tmp_path):
    chain = _run_chain(image, "read", tmp_path, delete_old="when-detached")
    _assert_chain_ok(chain)
    assert {row["old_image_deleted"] for row in chain["cycles"]} == {"restore"}
    mmap_chain = _run_chain(image, "mmap", tmp_path, delete_old="when-detached")
    _assert_chain_ok(mmap_chain)
    assert {row["old_image_deleted"] for row in mmap_chain["cycles"]} == {"fixup"}


def test_deleting_the_image_under_a_strategy_that_still_maps_it_fails(image, tmp_path):
    """The deletion takes the data away: mmap still maps the image after restore."""
    chain = _run_chain(image, "mmap", tmp_path, delete_old=cycle.FORCED_DELETE)
    assert chain["status"] == "failed"
    assert chain["reason"].startswith("cycle 1: worker killed by SIGBUS: ")
    assert "was the image truncated while mapped" in chain["reason"]


@pytest.mark.parametrize("threads,pattern,overlap", [(3, "random", False), (2, "sparse:0.5", False),
                                                     (1, "stride:3", False), (2, "random", True)])
def test_chains_with_threads_and_partial_patterns_verify(image, tmp_path, threads, pattern, overlap):
    chain = _run_chain(image, "mmap", tmp_path, threads=threads, pattern=parse_pattern(pattern),
                       overlap=overlap)
    _assert_chain_ok(chain)


def test_image_with_a_tail_cycles(make_image, tmp_path):
    """Writes past the end of the file live in memory only: the model drops them from the dumps."""
    tailed = make_image(size=(1 << 20) + 100)
    for name in ("read", "mmap"):
        _assert_chain_ok(_run_chain(tailed, name, tmp_path, dirty=1.0))


def test_a_cycle_that_restores_an_image_without_the_last_cycles_writes_names_that_cycle(image):
    """Cycle 2 restored from the base image instead of image 1: cycle 1's writes are lost."""
    def restore_wrong_image():
        with open_run(image, "read", op="mixed", seed=2, write_fraction=0.0,
                      history=[_workload(seed=1)]) as run:
            run.restore()
            run.touch()
            run.fixup()
            try:
                run.verify()
            except Exception as error:
                return error.reason
        return None

    reason = in_child(restore_wrong_image)
    assert reason is not None
    assert "which lost the write of cycle 1" in reason


def test_history_needs_a_base_image(image):
    with pytest.raises(InvalidArgument, match="needs its base image"):
        binding.Run(image_path=image.path, image_seed=None, image_kind=None, strategy="read",
                    params=None, op="mixed", pattern=parse_pattern("random"), threads=1,
                    overlap=False, seed=2, write_fraction=0.5, history=[_workload(seed=1)])


# ---- the mixed workload ----

@pytest.mark.parametrize("pattern,touched", [("random", 512), ("seq", 512), ("sparse:0.1", 51),
                                             ("stride:7", 74)])
@pytest.mark.parametrize("fraction", [0.0, 0.01, 0.5, 1.0])
def test_mixed_workload_writes_exactly_its_share_of_the_touched_pages(pattern, touched, fraction):
    count, bitmap = binding.written_pages(_workload(3, fraction, pattern, threads=2), 512)
    assert count == round(fraction * touched)
    assert sum(bin(byte).count("1") for byte in bitmap) == count


def test_mixed_workload_picks_other_pages_with_another_seed():
    _, first = binding.written_pages(_workload(1), 512)
    _, second = binding.written_pages(_workload(2), 512)
    assert first != second


@pytest.mark.parametrize("fraction", [-0.1, 1.5, float("nan")])
def test_mixed_workload_refuses_a_share_outside_0_1(fraction):
    with pytest.raises(InvalidArgument):
        binding.written_pages(_workload(1, fraction), 512)


# ---- the dump writer ----

def _memory_and_dirty(image, written_pages):
    """The base image's bytes with one word changed in each written page, and that bitmap."""
    memory = bytearray(open(image.path, "rb").read())
    dirty = bytearray((image.pages + 7) // 8)
    for page in written_pages:
        offset = page * PAGE + 8 * (page % 500)
        if offset < len(memory):
            memory[offset] ^= 0x5A
        dirty[page // 8] |= 1 << (page % 8)
    return bytes(memory), bytes(dirty)


@pytest.mark.parametrize("size", [SMALL, SMALL + 1000])
@pytest.mark.parametrize("written", ["none", "all", "first", "last", "alternate", "runs"])
def test_incremental_dump_equals_full_dump_byte_for_byte(make_image, tmp_path, size, written):
    image = make_image(size=size)
    pages = {"none": [], "all": range(image.pages), "first": [0], "last": [image.pages - 1],
             "alternate": range(0, image.pages, 2),
             "runs": [p for p in range(image.pages) if p % 37 < 5]}[written]
    memory, dirty = _memory_and_dirty(image, pages)
    full = binding.dump_image(memory, None, None, tmp_path / "full.img")
    incremental = binding.dump_image(memory, dirty, image.path, tmp_path / "incremental.img")
    assert (tmp_path / "full.img").read_bytes() == (tmp_path / "incremental.img").read_bytes() == memory
    assert full["bytes_written"] == size and full["bytes_copied"] == 0
    from_memory = sum(min(PAGE, size - p * PAGE) for p in pages)
    assert incremental["bytes_written"] == from_memory
    assert incremental["bytes_copied"] + incremental["bytes_fallback"] == size - from_memory
    assert incremental["dirty_pages"] == len(pages)
    assert incremental["ns"] > 0 and incremental["fallback"] is None
    assert sorted(os.listdir(tmp_path)) == sorted(["full.img", "incremental.img", os.path.basename(image.path)]), \
        "no temp file is left"


def test_incremental_dump_falls_back_to_read_write_across_filesystems(image, tmp_path):
    shm = "/dev/shm"
    if not os.path.isdir(shm) or filesystem_type(shm) == filesystem_type(str(tmp_path)):
        pytest.skip("needs /dev/shm on another filesystem than the test's temp dir")
    previous = os.path.join(shm, f"wpcompare-test-{os.getpid()}.img")
    with open(image.path, "rb") as source, open(previous, "wb") as target:
        target.write(source.read())
    try:
        memory, dirty = _memory_and_dirty(image, range(0, image.pages, 3))
        stats = binding.dump_image(memory, dirty, previous, tmp_path / "incremental.img")
    finally:
        os.unlink(previous)
    assert stats["fallback"].startswith("EXDEV")
    assert stats["bytes_copied"] == 0 and stats["bytes_fallback"] > 0
    assert (tmp_path / "incremental.img").read_bytes() == memory


def test_incremental_dump_refuses_a_previous_image_of_another_size(image, make_image, tmp_path):
    other = make_image(size=SMALL // 2)
    memory, dirty = _memory_and_dirty(image, [1])
    with pytest.raises(InvalidArgument, match="needs images of one size"):
        binding.dump_image(memory, dirty, other.path, tmp_path / "out.img")
    assert not (tmp_path / "out.img").exists()
    assert not [name for name in os.listdir(tmp_path) if ".tmp." in name]


def test_incremental_dump_of_a_strategy_without_a_dirty_set_is_unsupported(image, tmp_path):
    def try_incremental():
        with open_run(image, "mmap", op="mixed", seed=2, write_fraction=0.5) as run:
            run.restore()
            run.touch()
            run.fixup()
            try:
                run.checkpoint(tmp_path / "never.img", incremental=True)
            except Exception as error:
                return [type(error).__name__, error.reason]
        return None

    assert in_child(try_incremental) == ["UnsupportedError",
                                         "mmap reports no dirty set: only a full dump is possible"]
    assert not (tmp_path / "never.img").exists()


# ---- lost writes ----

def _cycle_memory_dump(argument):
    """In a child: cycle 2 of a chain restored from image 1 with `read`; dump its region with
    the given dirty bitmap, taking the rest from image 1."""
    image_1, size, seed, kind, history, current, dirty, target = argument
    history = [dict(w, pattern=parse_pattern(w["pattern"])) for w in history]
    current = dict(current, pattern=parse_pattern(current["pattern"]))
    with binding.Run(image_path=image_1, image_seed=seed, image_kind=kind, strategy="read",
                     params=None, op="mixed", pattern=current["pattern"], threads=1, overlap=False,
                     seed=current["seed"], write_fraction=current["write_fraction"],
                     history=history) as run:
        run.restore()
        run.touch()
        run.fixup()
        address, _ = run.region()
        memory = ffi.buffer(ffi.cast("uint8_t *", address), size)
        binding.dump_image(memory, bytes.fromhex(dirty), image_1, target)
    return True


def test_incremental_dump_that_misses_a_dirty_page_is_caught_naming_page_and_cycle(image, tmp_path):
    first, second = _workload(11), _workload(12)
    # Image 1: the base plus cycle 1's writes, through a real cycle, every page from memory.
    image_1 = tmp_path / "image-1.img"
    in_child(_cycle_memory_dump, [image.path, image.size, image.seed, image.kind, [], _json(first),
                                  bytes((image.pages + 7) // 8 * [0xFF]).hex(), str(image_1)])
    assert binding.image_check(image_1, image.size, image.seed, image.kind, [first])["verified"]

    _, written = binding.written_pages(second, image.pages)
    missed = next(p for p in range(image.pages) if written[p // 8] >> (p % 8) & 1)
    dirty = bytearray(written)
    dirty[missed // 8] &= ~(1 << (missed % 8))
    image_2 = tmp_path / "image-2.img"
    in_child(_cycle_memory_dump, [str(image_1), image.size, image.seed, image.kind, [_json(first)],
                                  _json(second), bytes(dirty).hex(), str(image_2)])
    check = binding.image_check(image_2, image.size, image.seed, image.kind, [first, second])
    assert not check["verified"]
    assert check["mismatched_pages"] == 1
    assert check["first_mismatch_page"] == missed and check["first_mismatch_cycle"] == 2
    assert f"page {missed} lost the write of cycle 2" in check["reason"]
    # With the page reported, the same dump is right.
    in_child(_cycle_memory_dump, [str(image_1), image.size, image.seed, image.kind, [_json(first)],
                                  _json(second), written.hex(), str(image_2)])
    assert binding.image_check(image_2, image.size, image.seed, image.kind, [first, second])["verified"]


def _json(workload):
    return dict(workload, pattern=str(workload["pattern"]))


def test_image_check_names_a_byte_no_cycle_wrote(image, tmp_path):
    written = _workload(5, fraction=1.0)
    corrupt = tmp_path / "corrupt.img"
    in_child(_cycle_memory_dump, [image.path, image.size, image.seed, image.kind, [], _json(written),
                                  bytes((image.pages + 7) // 8 * [0xFF]).hex(), str(corrupt)])
    assert binding.image_check(corrupt, image.size, image.seed, image.kind, [written])["verified"]
    data = bytearray(corrupt.read_bytes())
    page, word = 7, (7 * 37) % 448 + 200      # not the word the one workload thread writes
    data[page * PAGE + word * 8] ^= 1
    corrupt.write_bytes(bytes(data))
    check = binding.image_check(corrupt, image.size, image.seed, image.kind, [written])
    assert not check["verified"]
    assert check["first_mismatch_cycle"] == 0 and check["first_mismatch_page"] == page
    assert "differs from the base image" in check["reason"]
    assert "which no cycle wrote" in check["reason"]


def test_image_check_of_a_short_file(image, tmp_path):
    short = tmp_path / "short.img"
    short.write_bytes(open(image.path, "rb").read()[:-PAGE])
    check = binding.image_check(short, image.size, image.seed, image.kind, [])
    assert not check["verified"]
    assert check["reason"] == f"the file is {image.size - PAGE} bytes, the image {image.size}"


# ---- results ----

def _synthetic_chain(label, cycle_times, status="ok"):
    rows = []
    for number, ns in enumerate(cycle_times, 1):
        rows.append({"cycle": number, "status": "ok", "fixup_pause_ns": ns // 10, "steady_ns": ns // 8,
                     "peak_rss_kb": 100 * number, "written_pages": 5,
                     "phases": {"restore": {"ns": ns // 4}, "touch": {"ns": ns // 4},
                                "fixup": {"ns": ns // 4, "vmas": number}},
                     "checkpoint": {"full": {"ns": ns // 4, "bytes_written": 4096, "bytes_copied": 0,
                                             "bytes_fallback": 0}, "incremental": None}})
    return {"label": label, "strategy": label, "params": "", "status": status, "reason": None,
            "cycles": rows}


def test_totals_and_ranking():
    chains = [_synthetic_chain("slow", [800, 1200, 1000]), _synthetic_chain("fast", [400, 400, 400]),
              _synthetic_chain("broken", [1], status="failed")]
    document = cycle_results.build_document(chains, {"image": {}, "options": {}})
    slow = chains[0]["totals"]
    assert slow["cycle_ns"] == 3000 and slow["restore_ns"] == 750
    assert slow["pause_ns"] == 80 + 120 + 100 + 750
    assert slow["vmas"] == 3 and slow["peak_rss_kb"] == 300 and slow["bytes_written"] == 3 * 4096
    assert slow["per_cycle"]["cycle_ns"]["median"] == 1000
    assert [entry["label"] for entry in document["ranking"]["by_cycle_time"]] == ["fast", "slow"]
    assert [entry["label"] for entry in document["ranking"]["by_pause"]] == ["fast", "slow"]


def _chains_of(label, *chains):
    return [dict(_synthetic_chain(label, times), repetition=number) for number, times in enumerate(chains, 1)]


def test_ranking_is_over_every_chain_of_a_strategy_and_ties_what_the_test_cannot_tell_apart():
    # Cycle times a multiple of 4 ns: each of its four parts is a quarter.
    chains = (_chains_of("a", [400, 408, 416], [424, 432, 440]) + _chains_of("b", [404, 412, 420], [428, 436, 444])
              + _chains_of("c", [904, 912, 920], [928, 936, 944]))
    document = cycle_results.build_document(chains, {"image": {}, "options": {}})
    ranked = document["ranking"]["by_cycle_time"]
    assert [(entry["label"], entry["rank"], entry["tie"], entry["cycles"]) for entry in ranked] == [
        ("a", 1, None, 6), ("b", 1, "not significant", 6), ("c", 3, None, 6)]
    assert ranked[0]["median_ns"] == 420 and (ranked[0]["min_ns"], ranked[0]["max_ns"]) == (400, 440)
    assert ranked[0]["spread_pct"] == pytest.approx(100 * (430 - 410) / 2 / 420)
    assert ranked[2]["p"] < 0.05
    text = cycle_report.render(document, "table")
    assert "1= b 424 ns" in text and "3 c 924 ns" in text
    assert "verdict: fastest per cycle: a (420 ns median over 6 cycle(s)); tied with b: statistically " \
           "indistinguishable" in text


def test_one_cycle_each_ties_for_want_of_cycles():
    chains = [_synthetic_chain("a", [400]), _synthetic_chain("b", [900])]
    ranked = cycle_results.build_document(chains, {"image": {}, "options": {}})["ranking"]["by_cycle_time"]
    assert [(entry["rank"], entry["tie"]) for entry in ranked] == [(1, None), (1, "too few cycles")]


# ---- the command line ----

CLI_SMALL = ["--size", "1M", "--cycles", "2", "--dirty", "0.5"]


def test_cli_table_has_every_cycle_totals_and_the_ranking(tmp_path):
    result = invoke("cycle", *CLI_SMALL, "-s", "read", "-s", "mmap", "--dir", str(tmp_path))
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    for name in ("read", "mmap"):
        for number in ("1", "2", "all"):
            assert any(line.split()[:2] == [name, number] for line in lines), (name, number)
    assert "time per cycle (rank, median ± spread)" in result.stdout and "pause (rank, median" in result.stdout
    assert "verdict: fastest per cycle: " in result.stdout
    assert "only a full dump is possible (read, mmap)" in result.stdout
    assert _chain_directories(tmp_path) == []


def test_cli_json_csv_and_markdown(tmp_path):
    target = tmp_path / "cycles.json"
    result = invoke("cycle", *CLI_SMALL, "-s", "read", "-o", str(target))
    assert result.exit_code == 0, result.output
    assert "cycle time" in result.stdout, "the terminal still gets the table"
    document = json.loads(target.read_text())
    assert document["schema"] == "wpcompare.cycle/2"
    meta = document["metadata"]
    for key in ("wpcompare_version", "timestamp", "command_line", "system", "image", "options", "load_average",
                "images_directory", "timer_overhead_ns"):
        assert key in meta
    assert meta["options"]["cycles"] == 2 and meta["options"]["dirty"] == 0.5
    assert meta["hostname"] == socket.gethostname()
    assert set(meta["load_average"]) == {"start", "end"}
    assert all(len(meta["load_average"][when]) == 3 for when in ("start", "end"))
    chain = document["chains"][0]
    assert chain["label"] == "read" and len(chain["cycles"]) == 2 and chain["totals"]["cycles"] == 2
    assert document["ranking"]["by_cycle_time"][0]["label"] == "read"

    result = invoke("cycle", *CLI_SMALL, "-s", "read", "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [row["cycle"] for row in rows] == ["1", "2", "total"]
    assert int(rows[2]["cycle_ns"]) == int(rows[0]["cycle_ns"]) + int(rows[1]["cycle_ns"])
    assert rows[0]["checkpoint_kind"] == "full" and rows[0]["verified"] == "True"

    markdown = tmp_path / "cycles.md"
    assert invoke("cycle", *CLI_SMALL, "-s", "read", "-o", str(markdown)).exit_code == 0
    assert "| strategy " in markdown.read_text()


def test_cli_lost_write_fails_the_chain_naming_page_and_cycle(tmp_path):
    target = tmp_path / "out.json"
    result = invoke("cycle", "--size", "1M", "--cycles", "3", "-s", "read", "-s", "mmap",
                    "--lose-write", "2", "-o", str(target))
    assert result.exit_code == 1
    assert "2 chain(s) failed (read, mmap)" in error_line(result)
    document = json.loads(target.read_text())
    for chain in document["chains"]:
        failed = chain["cycles"][-1]
        assert failed["cycle"] == 2 and failed["failed_phase"] == "image-check"
        page = failed["lost_write_page"]
        assert f"dump of image 3: page {page} lost the write of cycle 2" in chain["reason"]
        assert f"page {page} lost the write of cycle 2" in result.stdout
    assert document["ranking"]["by_cycle_time"] == []


def test_cli_skipped_strategy_is_a_row_with_its_reason(monkeypatch, tmp_path):
    monkeypatch.setattr(cycle, "_probe", lambda argument: "needs a kernel feature (test)")
    result = invoke("cycle", *CLI_SMALL, "-s", "read")
    assert result.exit_code == 3, "nothing could run: every chain was skipped"
    assert "skipped [1]" in result.stdout
    assert "[1] read: skipped: needs a kernel feature (test)" in result.stdout


@pytest.mark.parametrize("args,message", [
    (["--dirty", "1.5"], "1.5 is not in the range 0<=x<=1"),
    (["--dirty", "lots"], "'lots' is not a valid float"),
    (["--cycles", "0"], "--cycles"),
    (["-s", "nosuch"], "unknown strategy 'nosuch'; valid: mmap"),
    (["--pattern", "zigzag"], "use seq, random, sparse:F"),
    (["--size", "12X"], "invalid size '12X'"),
    (["--delete-old", "never"], "'never' is not one of"),
    (["--dir", "/no/such/dir"], "does not exist: create it first"),
    (["--dir", "/etc/hostname"], "is not a directory"),
    (["--lose-write", "5"], "--lose-write CYCLE needs a CYCLE within --cycles"),
    (["--lose-write", "1", "--delete-old", "when-detached"], "--delete-old after-checkpoint"),
    (["--threads", "0"], "--threads"),
])
def test_cli_bad_input_is_one_line_and_writes_nothing(tmp_path, args, message):
    target = tmp_path / "out.json"
    result = invoke("cycle", *args, "-o", str(target))
    assert result.exit_code == 2
    assert message in error_line(result)
    assert not target.exists()
    assert not cache_dir().exists(), "nothing generated before the input was checked"


def test_cli_output_into_a_missing_directory_is_refused(tmp_path):
    result = invoke("cycle", *CLI_SMALL, "-o", str(tmp_path / "no" / "out.json"))
    assert result.exit_code == 2
    assert "does not exist: create it first" in error_line(result)
    assert not cache_dir().exists()


def test_report_formats_render_a_document_without_chains():
    document = cycle_results.build_document([], {"image": {"bytes": 4096}, "options": {}})
    for fmt in cycle_report.FORMATS:
        assert cycle_report.render(document, fmt)


def test_a_cycle_that_never_reached_its_checks_is_not_checked_not_NO(tmp_path):
    out = tmp_path / "c.json"
    result = invoke("cycle", "--size", "1M", "--cycles", "2", "-s", "read", "-o", str(out))
    assert result.exit_code == 0, result.output
    document = json.loads(out.read_text())
    chain = document["chains"][0]
    for reason, phase in (("timed out after 1 s", None), ("checkpoint: No space left on device", "checkpoint")):
        chain["cycles"][1] = {"cycle": 2, "status": "failed", "reason": reason, "failed_phase": phase}
        chain.update(status="failed", reason=f"cycle 2: {reason}")
        derived = cycle_results.derive(document)
        table = cycle_report.render(derived, "table")
        failed_line = next(line for line in table.splitlines() if line.startswith("read") and "failed" in line)
        assert failed_line.rstrip().endswith("not checked"), failed_line
        total_line = next(line for line in table.splitlines() if line.startswith("read") and "all 1" in line)
        assert total_line.rstrip().endswith("not checked"), total_line
        assert "NO" not in table.split("\n\n")[1]
        csv_lines = cycle_report.render(derived, "csv").splitlines()
        assert csv_lines[2].endswith(",") and csv_lines[3].endswith(","), csv_lines


def test_a_chain_failed_before_its_first_cycle_is_a_row_with_its_reason(monkeypatch):
    # A probe that cannot finish within the timeout, however fast the machine is.
    monkeypatch.setattr(cycle, "_probe", lambda argument: time.sleep(60))
    result = CliRunner().invoke(main, ["cycle", "--size", "1M", "--cycles", "1", "-s", "read", "--timeout", "0.001"])
    assert result.exit_code == 1
    assert "read: failed: probe: timed out" in result.stdout


def test_cli_repeat_runs_chains_per_strategy_and_ranks_over_them(tmp_path):
    target = tmp_path / "cycles.json"
    result = invoke("cycle", *CLI_SMALL, "-s", "read", "--repeat", "2", "-q", "-o", str(target))
    assert result.exit_code == 0, result.output
    document = json.loads(target.read_text())
    assert [(chain["label"], chain["repetition"]) for chain in document["chains"]] == [("read", 1), ("read", 2)]
    assert document["metadata"]["options"]["repeat"] == 2
    (entry,) = document["ranking"]["by_cycle_time"]
    assert entry["cycles"] == 4
    lines = result.stdout.splitlines()
    assert any(line.split()[:3] == ["read", "#2", "all"] for line in lines)
    assert result.stderr == ""
