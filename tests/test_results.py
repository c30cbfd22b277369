"""Statistics and reports computed from rows: percentiles, medians and spread, rendering."""
import csv
import io
import json
import re

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from wpcompare import binding, report, results
from wpcompare.cli import main
from wpcompare.errors import InvalidArgument

# 100 first accesses: 50 at 100 ns, 30 in [256, 257], 19 in [1024, 1031], 1 at 4100 ns.
HIST = {"count": 100, "min_ns": 100, "max_ns": 4100, "sum_ns": 0,
        "buckets": [[100, 100, 50], [256, 257, 30], [1024, 1031, 19], [4096, 4127, 1]]}


@pytest.mark.parametrize("q,expected", [
    (0.0, 100),      # the exact minimum
    (0.01, 100),
    (0.50, 100),     # rank 50 is the last of the first bucket
    (0.51, 256),     # rank 51 opens the second: midpoint of [256, 257] rounded down
    (0.80, 256),
    (0.81, 1027),    # midpoint of [1024, 1031]
    (0.99, 1027),
    (0.995, 4100),   # rank 100: the last bucket's midpoint 4111 lies past the max
    (1.0, 4100),
])
def test_percentile_of_a_constructed_histogram(q, expected):
    assert results.histogram_percentile(HIST, q) == expected


def test_percentile_of_an_empty_histogram():
    assert results.histogram_percentile({"count": 0, "buckets": []}, 0.5) is None
    assert results.histogram_percentile(None, 0.5) is None


def test_percentiles_agree_with_the_c_core():
    values = [40, 41, 255, 256, 300, 301, 999, 1000, 1024, 5000, 77777, 123456, 10 ** 7, 10 ** 9] * 3
    hist = binding.histogram_from_values(values)
    exported = binding.export_histogram(hist)
    assert exported["count"] == len(values)
    assert sum(count for _, _, count in exported["buckets"]) == len(values)
    for q in (0.0, 0.1, 0.25, 0.5, 0.5001, 0.75, 0.9, 0.99, 0.999, 1.0):
        assert results.histogram_percentile(exported, q) == binding.histogram_quantile(hist, q), q


@given(st.lists(st.integers(min_value=0, max_value=1 << 40), min_size=1, max_size=300),
       st.lists(st.floats(min_value=-0.5, max_value=1.5, allow_nan=False), min_size=1, max_size=8))
def test_percentile_is_the_c_quantile_for_any_values(values, quantiles):
    """The Python percentile of an exported histogram is wpc_hist_quantile of the C histogram:
    one definition, whatever was recorded and whatever q."""
    hist = binding.histogram_from_values(values)
    exported = binding.export_histogram(hist)
    for q in quantiles + [0.0, 0.5, 0.99, 1.0]:
        assert results.histogram_percentile(exported, q) == binding.histogram_quantile(hist, q), q


def test_median_and_spread():
    summary = results.summarize_values([14, None, 10, 12])
    assert summary["median"] == 12
    assert (summary["min"], summary["max"], summary["n"]) == (10, 14, 3)
    assert (summary["q1"], summary["q3"]) == (11, 13)           # between ranks, as numpy interpolates
    assert summary["spread_pct"] == pytest.approx(100 * (13 - 11) / 2 / 12)
    assert results.summarize_values([None, None]) is None
    assert results.summarize_values([0, 0])["spread_pct"] == 0


def test_one_outlier_barely_moves_the_spread_and_stays_in_min_max():
    """Five runs, one 67x slower: half the min-max range said ±3300%; half the IQR says ±0.5%."""
    summary = results.summarize_values([1005, 67700, 990, 1010, 1000])
    assert (summary["q1"], summary["median"], summary["q3"]) == (1000, 1005, 1010)
    assert summary["spread_pct"] == pytest.approx(100 * 5 / 1005)
    assert (summary["min"], summary["max"]) == (990, 67700)


@given(st.lists(st.integers(min_value=0, max_value=10 ** 12), min_size=1, max_size=40))
def test_quartiles_are_numpys_inclusive_quantiles_in_any_order(values):
    """The quartiles do not depend on the order the runs came in (statistics.quantiles'
    inclusive method is numpy's default)."""
    import statistics

    summary = results.summarize_values(values)
    expected = statistics.quantiles(values, n=4, method="inclusive") if len(values) > 1 else [values[0]] * 3
    assert summary["q1"] == pytest.approx(expected[0]) and summary["q3"] == pytest.approx(expected[2])
    assert summary["q1"] <= summary["median"] <= summary["q3"]


def _row(label="mmap", op="read", status="ok", warmup=False, restore=1000, reason=None, **extra):
    row = {"strategy": label.split(":")[0], "params": "", "label": label, "op": op, "pattern": "random",
           "threads": 1, "overlap": False, "seed": 1, "repetition": 1, "warmup": warmup,
           "status": status, "reason": reason, "failed_phase": None, "phases": None}
    if status == "ok":
        row.update(
            phases={"restore": {"ns": restore, "minflt": 0, "majflt": 0, "vmas": 1},
                    "touch": {"ns": 5000, "minflt": 40, "majflt": 2, "vmas": 1},
                    "fixup": {"ns": 9000, "minflt": 0, "majflt": 0, "vmas": 1},
                    "verify": {"ns": 100, "minflt": 0, "majflt": 0, "vmas": 1}},
            time_to_detached_ns=15000, verified=True, detached=True, peak_rss_kb=100, tail_bytes=0,
            histograms={"touch": HIST, "handler": {"count": 0, "buckets": []}})
    row.update(extra)
    return row


def test_groups_use_measured_runs_only():
    rows = [_row(warmup=True, restore=999999), _row(restore=1000), _row(restore=3000), _row(restore=2000),
            _row(status="failed", reason="worker killed by SIGSEGV")]
    (group,) = results.summarize(rows)
    assert group["status"] == "ok"
    assert group["runs"] == 3
    assert group["failed_runs"] == 1
    assert group["failures"] == ["worker killed by SIGSEGV"]
    restore = group["metrics"]["restore_ns"]
    assert (restore["median"], restore["min"], restore["max"]) == (2000, 1000, 3000)
    assert restore["spread_pct"] == 25          # (2500 - 1500) / 2 / 2000
    assert group["metrics"]["touch_faults"]["median"] == 42
    assert group["metrics"]["page_p50_ns"]["median"] == 100
    assert group["metrics"]["page_max_ns"]["median"] == 4100
    assert group["metrics"]["fault_p50_ns"] is None, "no handler histogram: no per-fault cost"


def test_fault_percentiles_come_from_the_handler_histogram():
    handler = {"count": 4, "min_ns": 9000, "max_ns": 80000, "sum_ns": 0,
               "buckets": [[9000, 9000, 3], [80000, 80000, 1]]}
    (group,) = results.summarize([_row(histograms={"touch": HIST, "handler": handler})])
    assert group["metrics"]["fault_p50_ns"]["median"] == 9000
    assert group["metrics"]["fault_p99_ns"]["median"] == 80000
    assert group["metrics"]["page_p50_ns"]["median"] == 100


def test_group_status_failed_and_skipped():
    failed = [_row(status="failed", reason="mremap: ENOMEM", failed_phase="fixup")]
    skipped = [_row(label="uffd", status="skipped", reason="needs root")]
    groups = results.summarize(failed + skipped)
    assert [(g["label"], g["status"], g["reason"]) for g in groups] == [
        ("mmap", "failed", "fixup: mremap: ENOMEM"), ("uffd", "skipped", "needs root")]


def _document(rows, tail_bytes=0):
    metadata = {"image": {"bytes": 1 << 20, "tail_bytes": tail_bytes, "seed": 1, "kind": "mixed"},
                "options": {"pattern": "random", "threads": 1, "repeat": 2, "warmup": 0}, "cache": "hot"}
    return results.build_document(rows, metadata)


def test_table_shows_values_reasons_and_warnings():
    rows = [_row(restore=1000), _row(restore=3000),
            _row(op="write", status="failed", reason="worker killed by SIGSEGV"),
            _row(label="uffd", status="skipped", reason="needs huge pages: reserve some")]
    text = report.render_table(_document(rows, tail_bytes=100))
    assert "2 µs ±25%" in text
    assert "failed [1]" in text and "[1] mmap write: failed: worker killed by SIGSEGV" in text
    assert "skipped [2]" in text and "needs huge pages: reserve some" in text
    assert "warning: the image is 1048576 bytes" in text
    assert "half the interquartile range" in text


def test_csv_holds_raw_numbers():
    text = report.render_csv(_document([_row(restore=1000), _row(restore=3000)]))
    (line,) = list(csv.DictReader(io.StringIO(text)))
    assert line["restore_ns_median"] == "2000.0"
    assert line["restore_ns_spread_pct"] == "25.0"
    assert (line["restore_ns_q1"], line["restore_ns_q3"]) == ("1500.0", "2500.0")
    assert (line["restore_ns_min"], line["restore_ns_max"]) == ("1000", "3000")
    assert line["status"] == "ok"


def test_json_round_trips_through_a_file(tmp_path):
    document = _document([_row()])
    path = tmp_path / "result.json"
    report.write_export(path, report.render(document, "json"))
    loaded = results.load_document(path)
    assert loaded == json.loads(json.dumps(document))
    assert [name for name in tmp_path.iterdir()] == [path], "no temporary file left behind"


def test_loading_something_else_is_refused(tmp_path):
    path = tmp_path / "other.json"
    path.write_text('{"schema": "other/1"}')
    with pytest.raises(InvalidArgument, match="not a wpcompare result"):
        results.load_document(path)


@pytest.mark.parametrize("ns,text", [
    (0, "0 ns"), (850, "850 ns"), (1000, "1 µs"), (12345, "12.3 µs"), (123456, "123 µs"),
    (45_600_000, "45.6 ms"), (1_230_000_000, "1.23 s"), (None, "-"),
])
def test_human_time_units(ns, text):
    assert report.format_ns(ns) == text


def test_a_pipe_in_a_label_keeps_the_markdown_table_in_shape(tmp_path):
    order = tmp_path / "a|b"
    result = CliRunner().invoke(main, ["run", "--size", "1M", "-s", f"uffd-hybrid:order=sequential,path={order}",
                                       "--repeat", "1", "--warmup", "0", "--quiet", "--format", "markdown"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stdout.splitlines() if line.startswith("|")]
    cells = {len(re.findall(r"(?<!\\)\|", line)) for line in lines}
    assert len(lines) >= 3 and len(cells) == 1, lines
    assert "a\\|b" in result.stdout
