"""`wpcompare plot`: the data behind the figures, valid PNG and SVG files of `run` and `cycle`
results, and a missing matplotlib."""
import json
import struct
import sys
import xml.etree.ElementTree as ElementTree

import pytest

from wpcompare import cycle, cycle_plot, cycle_results, plot, results
from wpcompare.options import human_bytes
from wpcompare.report import format_ns

from harness import invoke

SMALL = ["--size", "1M", "--repeat", "2", "--warmup", "0", "--no-bounds"]


def test_percentile_points_put_each_bucket_at_its_upper_bound_on_a_tail_axis():
    """x = 1 / (1 - share): 50% at 2, 75% at 4; the last access (100%) one step further."""
    xs, ys = plot.percentile_points([(100, 100, 2), (256, 257, 1), (1024, 1031, 1)])
    assert xs == [1, 2, 4, 8]
    assert ys == [100, 100, 257, 1031]
    assert plot.percentile_points([]) == ([], [])
    xs, _ = plot.percentile_points([(10, 10, 9990), (5000, 5000, 10)])
    assert xs[1] == pytest.approx(1000), "99.9% of the pages at 10 ns: the tail starts at the 99.9% tick"


def test_the_total_spread_is_over_the_measured_runs():
    def row(restore, latency="none"):
        return {"status": "ok", "warmup": False, "latency": latency,
                "phases": {"restore": {"ns": restore}, "touch": {"ns": 100}, "fixup": {"ns": 10}}}
    rows = [row(1000), row(2000), row(3000), row(4000), row(10 ** 9, latency="every")]
    assert plot.total_spread(rows) == (2610, 1860, 3360)


def test_buckets_of_the_measured_runs_are_merged():
    def row(buckets, **extra):
        return dict({"status": "ok", "warmup": False,
                     "histograms": {"touch": {"count": sum(b[2] for b in buckets), "buckets": buckets}}},
                    **extra)
    rows = [row([[100, 100, 1], [300, 301, 2]]), row([[300, 301, 5], [50, 50, 1]])]
    assert plot.merged_buckets(rows) == [(50, 50, 1), (100, 100, 1), (300, 301, 7)]


@pytest.mark.parametrize("name,fmt", [("a.png", "png"), ("b.SVG", "svg")])
def test_image_format_from_the_name(name, fmt):
    assert plot.image_format(name) == fmt


@pytest.fixture
def result_file(tmp_path):
    """A real result file: mmap and read, both ops, plus a strategy this build lacks (skipped rows)."""
    path = tmp_path / "results.json"
    result = invoke("run", *SMALL, "-s", "mmap", "-s", "read", "-o", str(path))
    assert result.exit_code == 0, result.output
    document = json.loads(path.read_text())
    document["runs"].append({"strategy": "uffd-huge", "params": "", "label": "uffd-huge", "op": "read",
                             "pattern": "random", "threads": 1, "overlap": False, "seed": 1,
                             "repetition": 0, "warmup": False, "status": "skipped",
                             "reason": "no free 2 MiB huge pages", "failed_phase": None})
    document["groups"] = results.summarize(document["runs"])
    path.write_text(results.dumps(document))
    return path


def _needs_matplotlib():
    pytest.importorskip("matplotlib", reason="plotting needs matplotlib: pip install '.[plot]'")


def _plot(source, target):
    """`wpcompare plot SOURCE -o TARGET`, which must succeed: its result."""
    _needs_matplotlib()
    result = invoke("plot", str(source), "-o", str(target))
    assert result.exit_code == 0, result.output
    return result


def _assert_whole_png(path):
    """A PNG of a readable size, written to its end."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "PNG signature"
    length, kind = struct.unpack(">I4s", data[8:16])
    assert kind == b"IHDR" and length == 13
    width, height = struct.unpack(">II", data[16:24])
    assert width > 800 and height > 500
    assert data.endswith(b"IEND\xaeB`\x82"), "the file is complete"


def _svg_root(path):
    root = ElementTree.parse(path).getroot()
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    return root


def test_plot_writes_a_png(result_file, tmp_path):
    result = _plot(result_file, tmp_path / "figure.png")
    _assert_whole_png(tmp_path / "figure.png")
    assert "not plotted: uffd-huge read: skipped: no free 2 MiB huge pages" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "figure.png", "results.json"]


def test_plot_writes_an_svg_with_every_row(result_file, tmp_path):
    _plot(result_file, tmp_path / "figure.svg")
    root = _svg_root(tmp_path / "figure.svg")
    text = " ".join(node.text or "" for node in root.iter("{http://www.w3.org/2000/svg}text"))
    for label in ("first read of a page: latency by percentile", "first write of a page: latency by percentile",
                  "90%", "median time per phase", "interquartile range", "mmap read", "mmap write", "read read", "read write",
                  "restore", "touch", "fixup"):
        assert label in text, label
    assert "uffd-huge" not in text, "a skipped row draws nothing"


def test_plot_without_write_rows_says_so(tmp_path):
    _needs_matplotlib()
    path = tmp_path / "reads.json"
    assert invoke("run", *SMALL, "-s", "mmap", "--op", "read", "-o", str(path)).exit_code == 0
    document = plot.load_plottable(str(path))
    svg, notes = plot.render(document, "svg")
    assert b"no write rows measured" in svg and b"mmap" in svg
    assert notes == []


def test_missing_matplotlib_is_one_line_naming_the_install(result_file, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)      # import matplotlib raises ImportError
    target = tmp_path / "figure.png"
    result = invoke("plot", str(result_file), "-o", str(target))
    assert result.exit_code == 1
    (line,) = [line for line in result.stderr.splitlines() if line.strip()]
    assert line.startswith("Error: wpcompare plot needs matplotlib")
    assert "pip install '.[plot]'" in line
    assert not target.exists()


@pytest.mark.parametrize("content,name,message", [
    (None, "figure.pdf", "name the file .png or .svg"),
    ('{"schema": "wpcompare.cycle/9"}', "figure.png",
     "has schema 'wpcompare.cycle/9'; wpcompare plot draws wpcompare.run/1, wpcompare.run/2, wpcompare.cycle/1, "
     "wpcompare.cycle/2"),
    ('{"schema": "wpcompare.cycle/1", "chains": []}', "figure.svg",
     "has no metadata, ranking: not a whole `wpcompare cycle` result"),
    ("[1, 2", "figure.png", "is not JSON"),
])
def test_bad_input_is_one_line_and_writes_nothing(result_file, tmp_path, content, name, message):
    source = result_file
    if content is not None:
        source = tmp_path / "other.json"
        source.write_text(content)
    target = tmp_path / name
    result = invoke("plot", str(source), "-o", str(target))
    assert result.exit_code == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and message in errors[0], result.stderr
    assert not target.exists()


def test_every_schema_has_a_plotter():
    assert plot.PLOTTERS[results.SCHEMA] is plot.plot_run
    assert plot.PLOTTERS[cycle_results.SCHEMA] is cycle_plot.plot_cycle


# ---- cycle results ----

CYCLE_SMALL = ["cycle", "--size", "1M", "--cycles", "2", "--dirty", "0.5"]


@pytest.fixture
def cycle_file(tmp_path, monkeypatch):
    """Real chains of `wpcompare cycle`: read completes, mmap is skipped, sigsegv fails in cycle 2.

    Two runs, since a lost write (the way to fail a cycle) is injected into every chain of a run.
    """
    def probe(argument):
        return "needs a kernel feature (test)" if argument[0] == "mmap" else None
    monkeypatch.setattr(cycle, "_probe", probe)
    completed, failing = tmp_path / "completed.json", tmp_path / "failing.json"
    assert invoke(*CYCLE_SMALL, "-s", "read", "-s", "mmap", "-o", str(completed)).exit_code == 0
    assert invoke(*CYCLE_SMALL, "-s", "sigsegv", "--lose-write", "2", "-o", str(failing)).exit_code == 1
    document = json.loads(completed.read_text())
    chains = document["chains"] + json.loads(failing.read_text())["chains"]
    path = tmp_path / "cycles.json"
    path.write_text(results.dumps(cycle_results.build_document(chains, document["metadata"])))
    completed.unlink()
    failing.unlink()
    return path


def test_cycle_rows_follow_the_chains(cycle_file):
    document = json.loads(cycle_file.read_text())
    rows, notes = cycle_plot.figure_rows(document)
    assert [(row["label"], row["cycle"], row["text"]) for row in rows] == [
        ("read", 1, None), ("read", 2, None), ("mmap", None, "skipped [1]"),
        ("sigsegv", 1, None), ("sigsegv", 2, "failed in image-check [2]")]
    assert notes[0] == "mmap: skipped: needs a kernel feature (test)"
    assert notes[1].startswith("sigsegv cycle 2: failed in image-check: incremental dump of image 3: page ")
    read = document["chains"][0]["cycles"]
    assert rows[1]["metrics"] == cycle_results.cycle_metrics(read[1]) and rows[1]["kept"] == "full"
    positions = [row["position"] for row in rows]
    assert positions == sorted(positions) and positions[1] - positions[0] == 1
    assert positions[2] - positions[1] > 1, "a gap between strategies"


def test_plot_cycle_writes_a_png(cycle_file, tmp_path):
    result = _plot(cycle_file, tmp_path / "cycles.png")
    _assert_whole_png(tmp_path / "cycles.png")
    assert "mmap: skipped: needs a kernel feature (test)" in result.stderr
    assert "sigsegv cycle 2: failed in image-check:" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "cycles.json", "cycles.png"]


def test_plot_cycle_writes_an_svg_with_every_cycle(cycle_file, tmp_path):
    _plot(cycle_file, tmp_path / "cycles.svg")
    root = _svg_root(tmp_path / "cycles.svg")
    text = " ".join("".join(node.itertext()) for node in root.iter("{http://www.w3.org/2000/svg}text"))
    for label in ("time per cycle, and the application's pause", "bytes per checkpoint (the kept dump)",
                  "restore", "work", "fixup", "checkpoint (kept dump)", "pause (application stopped)",
                  "written by the kept dump", "read  cycle 1", "cycle 2", "sigsegv  cycle 1",
                  "skipped [1]", "failed in image-check [2]",
                  "[1] mmap: skipped: needs a kernel feature (test)",
                  "[2] sigsegv cycle 2: failed in image-check:",
                  "median time per cycle (chains that completed): read "):
        assert label in text, label
    document = json.loads(cycle_file.read_text())
    completed = [row for chain in document["chains"] for row in chain["cycles"] if row["status"] == "ok"]
    assert len(completed) == 3
    for row in completed:
        metrics = cycle_results.cycle_metrics(row)
        assert f"{format_ns(metrics['cycle_ns'])}  (pause {format_ns(metrics['pause_ns'])})" in text
        assert f"{human_bytes(metrics['bytes_written'])} ({row['checkpoint']['kept']})" in text
