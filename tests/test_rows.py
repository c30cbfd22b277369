"""The Row/RunSpec model and the registries: every row built one way, a metric or format declared once."""
import json

import pytest

from wpcompare import binding, compare, cycle_report, export, metrics, presets, report, results, rows, worker
from wpcompare.options import Latency, Pattern, parse_pattern


def _spec(**fields):
    settings = dict(strategy="sigsegv", image="/x.img", params=(("chunk", "4K"), ("fixup", "background")),
                    label="sigsegv:chunk=4K,fixup=background", op="write", pattern=Pattern("sparse", 0.25),
                    threads=2, repetition=3, latency=Latency("sample", 16), image_seed=7, image_kind="random")
    settings.update(fields)
    return rows.RunSpec(**settings)


def test_a_spec_goes_through_json_unchanged():
    spec = _spec()
    text = json.dumps(spec.to_json())
    assert rows.RunSpec.from_json(json.loads(text)) == spec
    assert json.loads(text)["pattern"] == {"kind": "sparse", "fraction": 0.25, "stride": 1}, \
        "the pattern is data, not text to parse"


def test_a_spec_file_may_give_pattern_and_latency_as_typed():
    spec = rows.RunSpec.from_json({"image": "/x.img", "strategy": "mmap", "pattern": "stride:4",
                                   "latency": "every", "params": "chunk=4K"})
    assert (spec.pattern, spec.latency, spec.params, spec.label) == \
        (parse_pattern("stride:4"), Latency("every"), (("chunk", "4K"),), "mmap")


@pytest.mark.parametrize("value,words", [({"strategy": "mmap"}, "lacks image"),
                                         ({"image": "x", "strategy": "mmap", "colour": 1}, "unknown keys: colour"),
                                         ({"image": "x", "strategy": "mmap", "latency": "off"}, "not off")])
def test_a_bad_spec_is_refused_naming_why(value, words):
    with pytest.raises(ValueError, match=words):
        worker.check_spec(value)


def test_every_kind_of_row_has_the_same_identity():
    spec = _spec()
    identity = spec.identity()
    assert list(identity) == list(rows.IDENTITY)
    assert identity["params"] == "chunk=4K,fixup=background" and identity["pattern"] == "sparse:0.25"
    assert identity["latency"] == "sample:16"
    made = [rows.Row(spec, measurements={"phases": None, "verified": True}),
            rows.Row.skipped(spec, "no userfaultfd"),
            rows.Row.failed(spec, "timed out after 1 s", "touch")]
    for row in made:
        value = row.to_json()
        assert {key: value[key] for key in rows.IDENTITY} == identity
        assert rows.Row.from_json(json.loads(json.dumps(value))).to_json() == value


def test_the_runner_and_the_presets_build_rows_from_the_model():
    missing = presets.Missing("nosuch:x=1", "not in this build")
    (row,) = presets.missing_rows(missing, ["read"], parse_pattern("random"), 1, False, 1)
    assert row == rows.Row.skipped(rows.RunSpec(strategy="nosuch", params=(("x", "1"),), label="nosuch:x=1"),
                                   "not in this build").to_json()


def test_a_metric_flows_from_its_registry_entry(monkeypatch):
    """One Metric line: the table column, csv's four columns, the spread check, compare."""
    extra = metrics.Metric("answer_ns", "ns", lambda row: 42, column="answer", spread_checked=True,
                           compared=True)
    monkeypatch.setattr(metrics, "RUN_METRICS", metrics.RUN_METRICS + (extra,))
    monkeypatch.setitem(metrics.BY_NAME, "answer_ns", extra)
    row = rows.Row(_spec(latency=rows.NO_LATENCY, label="mmap", strategy="mmap", params=()),
                   measurements={"phases": None, "verified": True, "detached": True}).to_json()
    document = results.build_document([row, dict(row, repetition=4)], {"options": {}, "image": {"bytes": 1}})
    assert document["groups"][0]["metrics"]["answer_ns"]["median"] == 42
    assert "answer" in report.render(document, "markdown").splitlines()[2]
    assert "answer" in export.parse_columns(report.KIND, "all")
    assert "answer_ns_median" in report.render_csv(document).splitlines()[0]
    side = compare.Side("a.json", document)
    assert "answer_ns" in compare.compare_documents(side, side)["rows"][0]["metrics"]


def test_every_command_offers_the_registry_formats():
    assert report.FORMATS == ("table", "json", "csv", "markdown", "hlog")
    assert cycle_report.FORMATS == ("table", "json", "csv", "markdown"), "no latency histograms to export"
    assert compare.FORMATS == ("table", "json", "markdown"), "compare has no records for csv"
    assert export.format_of(report.KIND, "out.MD") == "markdown"
    assert export.format_of(compare.KIND, "out.csv") == "table"
    assert export.format_of(cycle_report.KIND, "out.txt") == "table"


def test_the_worker_copies_every_registry_c_field():
    result = binding.ffi.new("struct wpc_result *")
    result.peak_rss_kb, result.time_to_detached_ns = 1234, -1
    fields = worker.result_fields(result)
    assert {name for name, _ in metrics.c_fields()} <= set(fields)
    assert (fields["peak_rss_kb"], fields["time_to_detached_ns"]) == (1234, None)


def test_a_cycle_whose_worker_died_is_a_row_like_the_others():
    chain = rows.Chain("uffd:chunk=4K", "uffd", "chunk=4K")
    dead = chain.row(2)
    dead.fail("timed out after 1 s")
    chain.cycles.append(dead.to_json())
    value = chain.end("failed", "cycle 2: timed out after 1 s").to_json()
    assert value["cycles"] == [{"label": "uffd:chunk=4K", "strategy": "uffd", "params": "chunk=4K", "cycle": 2,
                                "status": "failed", "reason": "timed out after 1 s", "failed_phase": None}]
    assert (value["status"], value["reason"]) == ("failed", "cycle 2: timed out after 1 s")
