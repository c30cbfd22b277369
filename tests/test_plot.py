"""`wpcompare plot`: the data behind the figures, valid PNG and SVG files, and a missing matplotlib."""
import json
import struct
import sys
import xml.etree.ElementTree as ElementTree

import pytest
from click.testing import CliRunner

from wpcompare import plot, results
from wpcompare.cli import main

SMALL = ["--size", "1M", "--repeat", "2", "--warmup", "0"]


def invoke(*args):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_cdf_points_count_each_bucket_at_its_upper_bound():
    xs, ys = plot.cdf_points([(100, 100, 2), (256, 257, 1), (1024, 1031, 1)])
    assert xs == [100, 100, 257, 1031]
    assert ys == [0.0, 0.5, 0.75, 1.0]
    assert plot.cdf_points([]) == ([], [])


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


def _png_size(data):
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "PNG signature"
    length, kind = struct.unpack(">I4s", data[8:16])
    assert kind == b"IHDR" and length == 13
    return struct.unpack(">II", data[16:24])


def test_plot_writes_a_png(result_file, tmp_path):
    pytest.importorskip("matplotlib", reason="plotting needs matplotlib: pip install '.[plot]'")
    target = tmp_path / "figure.png"
    result = invoke("plot", str(result_file), "-o", str(target))
    assert result.exit_code == 0, result.output
    data = target.read_bytes()
    width, height = _png_size(data)
    assert width > 800 and height > 500
    assert data.endswith(b"IEND\xaeB`\x82"), "the file is complete"
    assert "not plotted: uffd-huge read: skipped: no free 2 MiB huge pages" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "figure.png", "results.json"]


def test_plot_writes_an_svg_with_every_row(result_file, tmp_path):
    pytest.importorskip("matplotlib", reason="plotting needs matplotlib: pip install '.[plot]'")
    target = tmp_path / "figure.svg"
    result = invoke("plot", str(result_file), "-o", str(target))
    assert result.exit_code == 0, result.output
    root = ElementTree.parse(target).getroot()
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    text = " ".join(node.text or "" for node in root.iter("{http://www.w3.org/2000/svg}text"))
    for label in ("first read of a page: latency CDF", "first write of a page: latency CDF",
                  "median time per phase", "mmap read", "mmap write", "read read", "read write",
                  "restore", "touch", "fixup"):
        assert label in text, label
    assert "uffd-huge" not in text, "a skipped row draws nothing"


def test_plot_without_write_rows_says_so(tmp_path):
    pytest.importorskip("matplotlib", reason="plotting needs matplotlib: pip install '.[plot]'")
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
    ('{"schema": "wpcompare.cycle/2"}', "figure.png", "wpcompare plot draws wpcompare.run/1"),
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
