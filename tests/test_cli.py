"""The command line through click's CliRunner: run, info, list, and every kind of bad input."""
import csv
import io
import json
import os
import socket

import pytest

from wpcompare import strategies
from wpcompare.image import cache_dir

from harness import error_line, invoke

SMALL = ["--size", "1M", "--repeat", "1", "--warmup", "0", "--no-bounds", "--latency", "off"]
# What `run` measures by default besides the strategies: the bounds, and instrumented runs.
SMALL_DEFAULTS = ["--size", "1M", "--repeat", "1", "--warmup", "0"]


def test_run_prints_a_table_of_every_strategy_and_the_bounds():
    result = invoke("run", *SMALL_DEFAULTS, "--latency", "off")
    assert result.exit_code == 0, result.output
    names = [strategy.name for strategy in strategies.all_strategies()]
    body = result.stdout.splitlines()
    for name in names:
        for op in ("read", "write"):
            assert any(line.split()[:2] == [name, op] for line in body), (name, op)
    assert "to detached" in result.stdout and "checked" in result.stdout
    assert "p50/page" not in result.stdout, "the default table is the narrow one (--columns all: every column)"


def test_run_json_has_the_schema_metadata_and_raw_runs():
    result = invoke("run", *SMALL_DEFAULTS, "-s", "mmap", "-s", "read", "--op", "write", "--format", "json",
                    "--pattern", "sparse:0.5", "--threads", "2")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["schema"] == "wpcompare.run/2"
    meta = document["metadata"]
    for key in ("wpcompare_version", "timestamp", "command_line", "system", "timer_overhead_ns",
                "image", "cache", "latency", "bounds", "reference_bound", "options"):
        assert key in meta, key
    assert meta["wpcompare_version"] == "0.1.0"
    assert meta["hostname"] == socket.gethostname()
    assert all(len(meta["load_average"][when]) == 3 and min(meta["load_average"][when]) >= 0
               for when in ("start", "end"))
    assert meta["cache"]["mode"] == "read" and meta["cache"]["before"]["pages"] == 256
    assert meta["latency"] == {"mode": "every", "every": None, "runs": 1,
                               "where": "runs of their own, after the measured runs of each row"}
    assert meta["bounds"] == list(strategies.BOUNDS) and meta["reference_bound"] == "bound-copy"
    assert meta["image"]["bytes"] == 1 << 20 and meta["image"]["seed"] == 1
    assert meta["system"]["kernel"]["release"] == os.uname().release
    assert {s["name"] for s in meta["system"]["strategies"]} >= {"mmap", "read"}
    assert meta["timer_overhead_ns"] > 0
    kinds = [(run["strategy"], run["op"], run["latency"]) for run in document["runs"] if run["status"] == "ok"]
    assert kinds[-4:] == [("mmap", "write", "none"), ("mmap", "write", "every"),
                          ("read", "write", "none"), ("read", "write", "every")]
    assert ("bound-copy", "write", "none") in kinds, "bounds measured, and only without a clock"
    for run in document["runs"][-4:]:
        assert run["status"] == "ok" and run["verified"]
        assert set(run["phases"]) == {"restore", "touch", "fixup", "verify"}
        assert set(run["phases"]["touch"]) == {"ns", "minflt", "majflt", "vmas"}
        assert run["touched_pages"] == 128 and run["threads"] == 2 and run["pattern"] == "sparse:0.5"
        touch = run["histograms"]["touch"]
        assert touch["count"] == (128 if run["latency"] == "every" else 0)
        assert touch["count"] == sum(count for _, _, count in touch["buckets"])
        for key in ("time_to_detached_ns", "time_to_touched_ns", "image_bytes", "tail_bytes", "pages",
                    "checksum", "mismatched_pages", "first_mismatch_page", "detached", "image_mapped",
                    "foreign_vmas", "dirty", "peak_rss_kb", "app_cpu", "handler_cpu", "counters"):
            assert key in run, key
    labels = [group["label"] for group in document["groups"]]
    assert labels[:len(strategies.BOUNDS)] == list(strategies.BOUNDS) and labels[-2:] == ["mmap", "read"]
    mmap_group = document["groups"][-2]
    assert (mmap_group["runs"], mmap_group["latency_runs"]) == (1, 1)
    assert mmap_group["x_bound"]["time_to_detached_ns"] > 0
    reference = {group["label"]: group for group in document["groups"]}[
        mmap_group["x_bound_over"]["time_to_detached_ns"]]
    assert reference["strategy"] == "bound-copy" and reference["x_bound"]["time_to_detached_ns"] == 1
    copies = [group for group in document["groups"] if group["strategy"] == "bound-copy" and group["status"] == "ok"]
    assert all(group["x_bound"]["time_to_detached_ns"] >= 1 for group in copies), "divided by the fastest"


def test_output_file_gets_the_export_and_stdout_the_table(tmp_path):
    target = tmp_path / "results.csv"
    result = invoke("run", *SMALL, "-s", "read", "--op", "read", "--output", str(target))
    assert result.exit_code == 0, result.output
    assert "to detached" in result.stdout
    (line,) = list(csv.DictReader(io.StringIO(target.read_text())))
    assert line["strategy"] == "read" and line["status"] == "ok"
    assert float(line["touch_ns_median"]) > 0
    assert sorted(os.listdir(tmp_path)) == ["cache", "results.csv"]


def test_generated_image_is_cached_and_reused():
    first = json.loads(invoke("run", *SMALL, "-s", "read", "--op", "read", "--format", "json").stdout)
    second = json.loads(invoke("run", *SMALL, "-s", "read", "--op", "read", "--format", "json").stdout)
    assert first["metadata"]["image"]["origin"] == "generated"
    assert second["metadata"]["image"]["origin"] == "cached"
    path = first["metadata"]["image"]["path"]
    assert path == second["metadata"]["image"]["path"]
    assert os.path.dirname(path) == str(cache_dir())
    assert "mixed-1M-seed1-" in os.path.basename(path)
    other = json.loads(invoke("run", *SMALL, "-s", "read", "--op", "read", "--format", "json",
                              "--image-kind", "random", "--seed", "2").stdout)
    assert "random-1M-seed2-" in other["metadata"]["image"]["path"]


def test_user_image_with_a_tail_is_used_and_warned_about(tmp_path):
    image = tmp_path / "odd.img"
    image.write_bytes(os.urandom(3 * 4096 + 100))
    result = invoke("run", "--image", str(image), "-s", "mmap", "--repeat", "1", "--warmup", "0")
    assert result.exit_code == 0, result.output
    assert "warning: the image is 12388 bytes" in result.stdout
    assert "3996 bytes past the end" in result.stdout


def test_cold_cache_run():
    result = invoke("run", *SMALL, "-s", "mmap", "--op", "read", "--cache", "cold", "--format", "json")
    assert result.exit_code == 0, result.output
    cache = json.loads(result.stdout)["metadata"]["cache"]
    assert cache["mode"] == "cold" and cache["before"]["resident_pages"] == 0


def test_crashing_worker_is_a_failed_row_and_the_rest_still_runs(tmp_path):
    target = tmp_path / "out.json"
    result = invoke("run", *SMALL, "-s", "mmap", "-s", "read", "--inject", "segv@mmap", "-o", str(target))
    assert result.exit_code == 1
    assert "2 run(s) failed" in error_line(result)
    assert "mmap read: failed: worker killed by SIGSEGV" in result.stdout
    document = json.loads(target.read_text())
    statuses = {(run["strategy"], run["op"]): run["status"] for run in document["runs"]}
    assert statuses == {("mmap", "read"): "failed", ("mmap", "write"): "failed",
                        ("read", "read"): "ok", ("read", "write"): "ok"}


def test_hanging_worker_becomes_a_timeout_row():
    result = invoke("run", *SMALL, "-s", "read", "-s", "mmap", "--op", "read",
                    "--inject", "hang@read", "--timeout", "1")
    assert result.exit_code == 1
    assert "read read: failed: timed out after 1 s" in result.stdout
    mmap_line = next(line for line in result.stdout.splitlines() if line.startswith("mmap "))
    assert mmap_line.split()[-1] == "ok"


def test_info_text_and_json():
    result = invoke("info")
    assert result.exit_code == 0, result.output
    for label in ("kernel", "userfaultfd", "privileges", "huge pages", "THP", "vm.max_map_count",
                  "CPUs", "clocksource", "strategies"):
        assert label in result.stdout, label
    facts = json.loads(invoke("info", "--json").stdout)
    assert facts["kernel"]["release"] == os.uname().release
    assert facts["cpu"]["count"] == os.cpu_count()
    assert facts["max_map_count"] > 0
    assert "implies" in facts["privileges"]["user_mode_only"]
    for strategy in facts["strategies"]:
        assert strategy["available"] or strategy["reason"]
    assert [s["name"] for s in facts["strategies"]] == [s.name for s in strategies.all_strategies()]


def test_list_names_every_strategy():
    result = invoke("list")
    assert result.exit_code == 0
    for strategy in strategies.all_strategies():
        assert strategy.name in result.stdout
        assert strategy.description in result.stdout


def _special_file(tmp_path, kind):
    if kind == "missing":
        return str(tmp_path / "nothing.img")
    if kind == "empty":
        (tmp_path / "empty.img").touch()
        return str(tmp_path / "empty.img")
    if kind == "directory":
        return str(tmp_path)
    if kind == "fifo":
        os.mkfifo(tmp_path / "fifo")
        return str(tmp_path / "fifo")
    return "/dev/zero"


@pytest.mark.parametrize("kind,message", [
    ("missing", "does not exist"),
    ("empty", "is empty"),
    ("directory", "is a directory, not a regular file"),
    ("fifo", "is a FIFO, not a regular file"),
    ("chardev", "is a character device, not a regular file"),
])
def test_unusable_image_is_one_line(tmp_path, kind, message):
    target = tmp_path / "out.json"
    result = invoke("run", "--image", _special_file(tmp_path, kind), "-o", str(target))
    assert result.exit_code == 2
    assert message in error_line(result)
    assert not target.exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_image(tmp_path):
    image = tmp_path / "secret.img"
    image.write_bytes(b"x" * 4096)
    image.chmod(0)
    result = invoke("run", "--image", str(image))
    assert result.exit_code == 2
    assert "cannot be read" in error_line(result)


@pytest.mark.parametrize("args,message", [
    (["--size", "12X"], "invalid size '12X'"),
    (["--size", "0"], "must be at least 1 byte"),
    (["--pattern", "zigzag"], "use seq, random, sparse:F"),
    (["--pattern", "sparse:0"], "0 < F <= 1"),
    (["--pattern", "stride:0"], ">= 1"),
    (["-s", "nosuch"], "unknown strategy 'nosuch'; valid: mmap"),
    (["-s", "mmap:chunk=4K"], "'chunk'"),
    (["--op", "rw"], "'rw' is not one of"),
    (["--threads", "0"], "--threads"),
    (["--repeat", "0"], "--repeat"),
    (["--timeout", "0"], "--timeout"),
    (["--image", "/etc/hostname", "--size", "4M"], "drop them, or drop --image"),
])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, args, message):
    target = tmp_path / "out.json"
    result = invoke("run", *args, "-o", str(target))
    assert result.exit_code != 0
    assert message in error_line(result)
    assert not target.exists()
    assert not cache_dir().exists(), "nothing generated before the input was checked"


def test_output_into_a_missing_directory_is_refused_before_running(tmp_path):
    result = invoke("run", *SMALL, "-o", str(tmp_path / "no" / "such" / "out.json"))
    assert result.exit_code == 2
    assert "does not exist: create it first" in error_line(result)
    assert not cache_dir().exists()


def test_output_that_is_a_directory_is_refused(tmp_path):
    result = invoke("run", *SMALL, "-o", str(tmp_path))
    assert result.exit_code == 2
    assert "is a directory" in error_line(result)
