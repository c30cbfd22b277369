"""`wpcompare run --size A,B,C`: a size sweep runs everything at each size, and its per-page
costs, growth factors, x bound and worker memory are what the rows measured."""
import json
import statistics
import xml.etree.ElementTree as ElementTree

import pytest

from wpcompare import compare, presets, results, sweep
from wpcompare import image as images
from wpcompare.options import format_size, parse_pattern
from wpcompare.runner import Progress
from wpcompare.rows import RunSpec

from harness import PAGE, error_line, invoke, refused

SIZES = (4 << 20, 8 << 20, 16 << 20)
SWEEP = ["--size", "4M,8M,16M", "-s", "read", "-s", "mmap", "--op", "read", "--repeat", "3",
         "--warmup", "0", "--latency", "off"]
STRATEGIES = ("read", "mmap")


@pytest.fixture(scope="module")
def sweep_file(tmp_path_factory):
    """One real sweep (read and mmap and the bounds at 4M, 8M and 16M), shared by the tests that
    only read it."""
    directory = tmp_path_factory.mktemp("sweep")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(directory / "cache"))
        path = directory / "sweep.json"
        result = invoke("run", *SWEEP, "-o", str(path))
    assert result.exit_code == 0, result.output
    return path, result.stdout


@pytest.fixture
def document(sweep_file):
    return sweep.attach(results.load_document(str(sweep_file[0])))


def _line(document, label):
    (line,) = [line for line in document["sweep"]["lines"] if line["label"] == label]
    return line


def _rows(document, label, size):
    return [row for row in document["runs"] if row["label"] == label and row.get("sweep_size") == size
            and row["status"] == "ok" and not row["warmup"]]


def test_a_sweep_runs_every_strategy_at_every_size_and_verifies(document):
    assert document["sweep"]["sizes"] == list(SIZES)
    for label in STRATEGIES + ("bound-copy", "bound-fresh"):
        line = _line(document, label)
        assert [entry["size"] for entry in line["per_size"]] == list(SIZES)
        for entry in line["per_size"]:
            assert entry["status"] == "ok" and entry["verified"] and entry["runs"] == 3, (label, entry)
            rows = _rows(document, label, entry["size"])
            assert len(rows) == 3
            assert {row["image_bytes"] for row in rows} == {entry["size"]}
            assert all(row["verified"] for row in rows)


def test_the_table_has_a_column_per_size_and_a_row_per_strategy(sweep_file):
    stdout = sweep_file[1]
    assert stdout.startswith("size sweep 4M, 8M, 16M:")
    restore = stdout.split("restore: ns per 4 KiB page")[1].split("\n\n")[0]
    header = restore.splitlines()[1].split()
    assert header == ["strategy", "op", "4M", "8M", "16M", "16M/4M"]
    assert [line.split()[0] for line in restore.splitlines()[3:]].count("read") == 1


@pytest.mark.parametrize("phase,metric,pages", sweep.PHASES)
def test_per_page_figures_are_each_runs_measured_total_over_its_own_pages(document, phase, metric, pages):
    for label in STRATEGIES:
        for entry in _line(document, label)["per_size"]:
            rows = _rows(document, label, entry["size"])
            assert all(row["pages"] == entry["size"] // PAGE for row in rows)
            totals = [results.metrics.find(metric).value(row) for row in rows]
            expected = [total / row[pages] for total, row in zip(totals, rows) if total is not None]
            summary = entry["per_page_ns"][phase]
            if not expected:
                assert summary is None
                continue
            assert summary["n"] == len(expected)
            assert summary["median"] == pytest.approx(statistics.median(expected))
            assert (summary["min"], summary["max"]) == pytest.approx((min(expected), max(expected)))


def test_growth_is_over_the_smallest_size_and_the_flag_over_the_base(document):
    section = document["sweep"]
    assert section["growth_base"] == SIZES[0]      # no 256M in this sweep
    for line in section["lines"]:
        for phase, _, _ in sweep.PHASES:
            medians = [entry["per_page_ns"][phase]["median"]
                       if entry["status"] == "ok" and entry["per_page_ns"][phase] else None
                       for entry in line["per_size"]]
            if medians[0] is None or not medians[0]:
                continue
            for median, growth in zip(medians, line["growth"][phase]):
                assert growth == (None if median is None else pytest.approx(median / medians[0]))
            over = line["growth_over_base"][phase]
            assert over == pytest.approx(medians[-1] / medians[0])
            assert (phase in line["flagged"]) == (over > sweep.GROWTH_LIMIT)


def test_a_strategy_that_never_ran_stands_at_every_size_with_its_reason(document):
    missing = presets.missing_rows(presets.Missing("uffd-future", "not in this build"), ["read"],
                                   parse_pattern("random"), 1, False, 1)
    document["runs"] += missing
    document["groups"] = results.summarize(document["runs"], document["metadata"]["reference_bound"])
    line = _line(sweep.attach(document), "uffd-future")
    assert [(entry["size"], entry["status"], entry["reason"]) for entry in line["per_size"]] == [
        (size, "skipped", missing[0]["reason"]) for size in SIZES]


@pytest.mark.parametrize("sizes,base", [((64 << 20, 256 << 20, 1 << 30, 4 << 30), 256 << 20),
                                        ((4 << 20, 8 << 20), 4 << 20),
                                        ((64 << 20, 256 << 20), 64 << 20)])
def test_the_flagged_growth_is_over_256M_where_it_was_swept_below_the_largest(sizes, base):
    assert sweep.growth_base(sizes) == base


def test_worker_memory_baseline_is_before_restore_and_peak_grows_with_size(document):
    peaks = []
    for entry in _line(document, "read")["per_size"]:
        for row in _rows(document, "read", entry["size"]):
            memory = row["memory"]
            assert memory["hwm_before_kb"] < memory["hwm_end_kb"]
            # read copies the whole region into anonymous memory during restore: all of it is
            # in the peak and none of it in a baseline taken before restore.
            assert memory["hwm_end_kb"] - memory["hwm_before_kb"] >= 0.9 * entry["size"] / 1024
            assert memory["pte_end_kb"] > 0 and memory["minflt"] >= entry["size"] // PAGE
        rows = _rows(document, "read", entry["size"])
        assert entry["memory"]["hwm_end_kb"]["median"] == statistics.median(
            row["memory"]["hwm_end_kb"] for row in rows)
        # The region's share grows with the size, not necessarily the peak itself: a baseline
        # of hundreds of MiB (a sanitizer's runtime) varies by more than these sizes differ.
        peaks.append(statistics.median(row["memory"]["hwm_end_kb"] - row["memory"]["hwm_before_kb"]
                                       for row in rows))
    assert peaks == sorted(peaks) and peaks[0] < peaks[-1]


def test_x_bound_divides_by_the_copy_bound_at_the_same_size(document):
    for size_index, size in enumerate(SIZES):
        # The fastest copy bound that ran at this size (2 MiB where huge pages are reserved).
        bound = min(statistics.median(row["time_to_detached_ns"] for row in rows)
                    for rows in (_rows(document, label, size) for label in
                                 ("bound-copy", "bound-copy:page=thp", "bound-copy:page=2M"))
                    if rows)
        for label in STRATEGIES:
            mine = statistics.median(row["time_to_detached_ns"] for row in _rows(document, label, size))
            entry = _line(document, label)["per_size"][size_index]
            assert entry["x_bound"] == pytest.approx(mine / bound)


def test_a_sweep_file_round_trips_through_compare(sweep_file):
    path = str(sweep_file[0])
    result = invoke("compare", path, path, "--format", "json")
    assert result.exit_code == 0, result.output
    comparison = json.loads(result.stdout)
    labels = {row["label"] for row in comparison["rows"]}
    assert {f"{label} @{format_size(size)}" for label in STRATEGIES for size in SIZES} <= labels
    assert not comparison["only_in_a"] and not comparison["only_in_b"]


def test_a_sweep_against_one_size_matches_no_row(sweep_file, tmp_path):
    single = tmp_path / "one.json"
    assert invoke("run", "--size", "4M", "-s", "read", "--op", "read", "--repeat", "1", "--warmup", "0",
                  "--latency", "off", "--no-bounds", "-o", str(single)).exit_code == 0
    comparison = compare.compare_documents(compare.Side("a", results.load_document(str(single))),
                                           compare.Side("b", results.load_document(str(sweep_file[0]))))
    assert comparison["rows"] == [] and "read read (random, 1 thread(s))" in comparison["only_in_a"]
    assert "read @4M read (random, 1 thread(s))" in comparison["only_in_b"]


def test_one_size_is_todays_run(tmp_path):
    path = tmp_path / "one.json"
    result = invoke("run", "--size", "4M", "-s", "read", "--op", "read", "--repeat", "1", "--warmup", "0",
                    "--latency", "off", "-o", str(path))
    assert result.exit_code == 0, result.output
    document = json.loads(path.read_text())
    assert "sweep" not in document and "sweep" not in document["metadata"]
    assert all("sweep_size" not in row for row in document["runs"])
    assert result.stdout.startswith("4 MiB mixed image") and "x bound" in result.stdout
    assert all(row["memory"]["hwm_before_kb"] for row in document["runs"] if row["status"] == "ok")


def test_the_csv_has_a_line_per_strategy_and_size(sweep_file, tmp_path):
    target = tmp_path / "sweep.csv"
    assert invoke("run", *SWEEP, "--no-bounds", "--repeat", "1", "-o", str(target)).exit_code == 0
    lines = target.read_text().splitlines()
    assert lines[0].startswith("strategy,params,label,op,pattern,threads,overlap,size_bytes,status")
    assert sorted((line.split(",")[2], int(line.split(",")[7])) for line in lines[1:]) == sorted(
        (label, size) for label in STRATEGIES for size in SIZES)


def test_a_sweep_plots_cost_against_size(sweep_file, tmp_path):
    pytest.importorskip("matplotlib", reason="plotting needs matplotlib: pip install '.[plot]'")
    target = tmp_path / "sweep.svg"
    result = invoke("plot", str(sweep_file[0]), "-o", str(target))
    assert result.exit_code == 0, result.output
    root = ElementTree.parse(target).getroot()
    text = " ".join(node.text or "" for node in root.iter("{http://www.w3.org/2000/svg}text"))
    for phase, _, _ in sweep.PHASES:
        assert f"{phase}: ns per 4 KiB" in text, phase
    for label in ("read read", "mmap read", "bound-copy read", "4M", "8M", "16M"):
        assert label in text, label
    assert "not plotted: bound-copy:page=2M" in result.stderr or "bound-copy:page=2M read" in text


@pytest.mark.parametrize("text,message", [
    ("4M,,8M", "invalid size list '4M,,8M': an empty item"),
    ("4M,6K", "invalid size '6K' in a sweep: per-page costs need whole 4 KiB pages; use a multiple "
              "of 4K (e.g. 8K)"),
    ("4M,4096K", "invalid size list '4M,4096K': '4096K' is the same size as '4M'; give each size once"),
    ("4M,8X", "invalid size '8X'"),
    ("4M,0", "invalid size '0': must be at least 1 byte"),
])
def test_a_bad_size_list_is_refused_in_one_line(text, message):
    assert message in refused("--size", text)


def test_a_sweep_whose_largest_size_cannot_fit_is_refused_naming_the_sizes_to_drop(monkeypatch, tmp_path):
    monkeypatch.setattr(images, "memory_available", lambda: 20 << 20)
    target = tmp_path / "out.json"
    line = refused("--size", "4M,8M,16M", "-o", str(target))
    assert line == ("Error: --size 4M,8M,16M: the 16M runs need about 32 MiB of memory (the image in "
                    "the page cache plus its restored copy) but only 20 MiB is available "
                    "(MemAvailable): drop the sizes above 8M")
    assert not target.exists()


def test_a_sweep_with_a_trace_is_refused(tmp_path):
    trace = tmp_path / "t.trace"
    trace.write_text("")
    line = refused("--size", "4M,8M", "--pattern", f"trace:{trace}")
    assert "a trace was recorded in a region of one size" in line


def test_a_sweep_with_chosen_columns_is_refused():
    line = refused("--size", "4M,8M", "--columns", "all")
    assert "a size sweep prints its own tables" in line


def test_show_prints_a_sweep_file_as_the_sweep_printed_it(sweep_file):
    path, printed = sweep_file
    shown = invoke("show", str(path))
    assert shown.exit_code == 0, shown.output
    assert shown.stdout == printed


def test_a_single_size_that_is_not_whole_pages_is_still_allowed():
    assert sweep.parse_sizes("5000") == (5000,)
    assert sweep.parse_sizes("16M, 4M,8M") == SIZES


def test_progress_names_each_runs_size():
    seen = []

    class Recording(Progress):
        def started(self, index, total, spec):
            seen.append((index, total, spec.label))

    progress = sweep._SizedProgress(Recording(), 10)
    progress.at(8 << 20, 6)
    progress.started(1, 4, RunSpec(strategy="read", label="read"))
    assert seen == [(7, 10, "read @8M")]


def test_a_refusal_line_is_the_only_error(monkeypatch):
    from click.testing import CliRunner
    from wpcompare.cli import main
    monkeypatch.setattr(images, "memory_available", lambda: 1 << 20)
    result = CliRunner().invoke(main, ["run", "--size", "4M,8M"], catch_exceptions=False)
    assert result.exit_code == 2
    assert "use smaller sizes" in error_line(result)


def test_a_sweep_file_with_malformed_sizes_is_refused_in_one_line(sweep_file, tmp_path):
    document = json.loads(sweep_file[0].read_text())
    document["metadata"]["sweep"]["sizes"] = ["4M"]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(document))
    line = refused(str(bad), "-o", str(tmp_path / "bad.png"), command="plot")
    assert "at $.metadata.sweep.sizes[0]: '4M' is not of type 'integer'" in line
