"""`.hlog`: the latency histograms in HdrHistogram's interval log format, decoded back to the
same counts by this module's decoder and by HdrHistogram's Python port (hdrh) where installed."""
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wpcompare import binding, hlog, report, results

from harness import invoke


def _exported(values):
    return binding.export_histogram(binding.histogram_from_values(values))


def _expected_counts(histogram, layout):
    return hlog.counts_array(hlog.recorded_values(histogram), layout)


@given(st.lists(st.integers(min_value=0, max_value=1 << 40), min_size=1, max_size=300))
def test_a_histogram_decodes_to_the_counts_written(values):
    histogram = _exported(values)
    layout, counts = hlog.decode(hlog.encode(hlog.recorded_values(histogram), histogram["max_ns"]))
    assert counts == _expected_counts(histogram, layout)
    assert sum(counts) == len(values)
    for value, count in hlog.recorded_values(histogram):
        index = layout.index_of(value)
        # HdrHistogram keeps each value within its precision: 3 digits, 1 part in 2048 here.
        assert layout.value_at(index) <= value and value - layout.value_at(index) <= value / 1000 + 1
        assert counts[index] >= count


@pytest.mark.parametrize("value", [0, 1, -1, 63, -64, 64, 2 ** 20, -(2 ** 35), 2 ** 56, 2 ** 62, -(2 ** 63)])
def test_the_zigzag_varint_reads_back(value):
    encoded = hlog._zigzag_varint(value)
    assert len(encoded) <= 9
    assert hlog._read_zigzag_varint(encoded, 0) == (value, len(encoded))


def test_hdrhistograms_own_decoder_reads_the_same_counts():
    hdrh = pytest.importorskip("hdrh.histogram", reason="hdrhistogram (the test extra) is not installed")
    values = [40, 41, 255, 256, 300, 301, 999, 1000, 1024, 5000, 77777, 123456, 10 ** 7, 10 ** 9] * 3
    histogram = _exported(values)
    recorded = hlog.recorded_values(histogram)
    decoded = hdrh.HdrHistogram.decode(hlog.encode(recorded, histogram["max_ns"]))
    assert decoded.get_total_count() == len(values)
    # Where each value belongs, by hdrh's own arithmetic, not this module's.
    expected = {}
    for value, count in recorded:
        index = decoded.get_counts_array_index(value)
        expected[index] = expected.get(index, 0) + count
    for value, _ in recorded:
        assert decoded.get_count_at_value(value) == expected[decoded.get_counts_array_index(value)], value
    assert decoded.get_value_at_percentile(50) == pytest.approx(
        results.histogram_percentile(histogram, 0.5), rel=1e-3)


def test_a_runs_hlog_has_a_line_per_run_and_histogram_with_counts(tmp_path):
    path = tmp_path / "run.json"
    measured = invoke("run", "--size", "1M", "--repeat", "2", "--warmup", "0", "--no-bounds", "-s", "sigsegv",
                      "--op", "write", "-q", "-o", str(path))
    assert measured.exit_code == 0, measured.output
    document = json.loads(path.read_text())
    text = invoke("show", str(path), "--format", "hlog").stdout
    assert text.startswith("#[Histogram log format version 1.3]\n#[StartTime: ")
    intervals = hlog.read_intervals(text)
    counted = [row for row in document["runs"] if row["status"] == "ok"]
    expected = [(f"sigsegv/write/{name}", histogram) for row in counted
                for name, histogram in row["histograms"].items() if histogram["count"]]
    assert [name for name, *_ in intervals] == [name for name, _ in expected]
    assert "sigsegv/write/touch" in {name for name, _ in expected}
    for (name, start, length, maximum, layout, counts), (_, histogram) in zip(intervals, expected):
        assert counts == _expected_counts(histogram, layout)
        assert sum(counts) == histogram["count"]
        assert maximum == pytest.approx(histogram["max_ns"] / 1e6, abs=0.001)
    touch = [(start, length) for name, start, length, *_ in intervals if name.endswith("touch")]
    assert touch[1][0] == pytest.approx(touch[0][0] + touch[0][1], abs=0.002), "a tag's intervals follow each other"
    assert report.latency_histograms(results.load_document(path))


def test_a_tag_holds_no_comma_or_space():
    assert hlog.tag("uffd:chunk=4K,handler-cpu=other", "write", "touch") == \
        "uffd:chunk=4K_handler-cpu=other/write/touch"
