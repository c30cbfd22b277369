"""Bad result files (issue 14, item 9): whatever a file holds, `compare` and `plot` answer with
one error line and exit status 2, or work; never a traceback. Each of the issue's examples,
then every field of a real run and cycle document replaced by values of the wrong kind."""
import copy
import gzip
import json

import pytest
from click.testing import CliRunner

from wpcompare import compare, cycle_plot, cycle_report, cycle_results, documents, plot, report, results
from wpcompare.cli import main
from wpcompare.errors import InvalidArgument

QUICK = ["--size", "1M", "-s", "read", "--repeat", "2", "--warmup", "0", "--quiet"]


@pytest.fixture(scope="module")
def run_document(tmp_path_factory):
    path = tmp_path_factory.mktemp("docs") / "run.json"
    result = CliRunner().invoke(main, ["run", *QUICK, "--op", "read", "-o", str(path)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def cycle_document(tmp_path_factory):
    path = tmp_path_factory.mktemp("docs") / "cycle.json"
    result = CliRunner().invoke(main, ["cycle", "--size", "1M", "-s", "read", "--cycles", "2", "-o", str(path)],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(path.read_text())


def one_line_refusal(result):
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and result.output.rstrip().endswith(errors[0]), result.output
    return errors[0]


ISSUE_EXAMPLES = {
    "no runs": '{"schema":"wpcompare.run/1"}',
    "runs a string": '{"schema":"wpcompare.run/1","metadata":{},"runs":"x"}',
    "NaN": '{"schema":"wpcompare.run/1","metadata":{},"runs":[],"groups":[{"x":NaN}]}',
    "Infinity": '{"schema":"wpcompare.run/1","metadata":{"elapsed_s":Infinity},"runs":[]}',
    "deep": "[" * 200000,
    "huge integer": '{"schema":"wpcompare.run/1","metadata":{},"runs":[],"n":' + "9" * 400 + "}",
    "not JSON": "{",
    "not UTF-8": b'{"schema":"\xff"}',
    "a list": "[]",
    "damaged gzip": b"\x1f\x8b\x08\x00" + b"not deflate data",
    "gzip of not JSON": gzip.compress(b"{"),
}


@pytest.mark.parametrize("name", ISSUE_EXAMPLES)
@pytest.mark.parametrize("command", ["compare", "plot"])
def test_issue_examples_are_one_line(tmp_path, name, command):
    path = tmp_path / "bad.json"
    text = ISSUE_EXAMPLES[name]
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    args = [str(path), str(path)] if command == "compare" else [str(path), "-o", str(tmp_path / "x.png")]
    one_line_refusal(CliRunner().invoke(main, [command, *args]))
    assert not (tmp_path / "x.png").exists()


def test_values_near_the_float_limit_are_refused_before_plotting(tmp_path, run_document):
    document = copy.deepcopy(run_document)
    document["groups"][0]["metrics"]["touch_ns"]["median"] = 1e308
    path = tmp_path / "big.json"
    path.write_text(json.dumps(document))
    line = one_line_refusal(CliRunner().invoke(main, ["plot", str(path), "-o", str(tmp_path / "x.png")]))
    assert "beyond 64 bits" in line


WRONG = ["x", [], {}, -1, None, 2 ** 64]


def _paths(value, prefix=()):
    """Every key path into value, dicts and the first element of lists, depth first."""
    if isinstance(value, dict):
        for key, inner in value.items():
            yield prefix + (key,)
            yield from _paths(inner, prefix + (key,))
    elif isinstance(value, list) and value:
        yield prefix + (0,)
        yield from _paths(value[0], prefix + (0,))


def _mutations(document, roots):
    for root in roots:
        node = document
        for key in root:
            node = node[key]
        for index, path in enumerate(_paths(node, root)):
            if path[-1] in ("buckets",) or (len(path) > 1 and path[-2] == "buckets"):
                continue
            # Every field deleted, and given one wrong value, in turn (all of them: ~7x slower).
            yield path, "<delete>"
            yield path, WRONG[index % len(WRONG)]


def _mutated(document, path, wrong):
    changed = copy.deepcopy(document)
    node = changed
    for key in path[:-1]:
        node = node[key]
    if wrong == "<delete>":
        if isinstance(node, list):
            return None
        del node[path[-1]]
    else:
        node[path[-1]] = wrong
    return changed


def _survives(path, document, use):
    """use(document) after validation: a valid document must be usable, an invalid one refused."""
    file = "doc.json"
    try:
        loaded = documents.validate(file, json.loads(json.dumps(document)), tuple(documents.SCHEMA_FILES))
    except InvalidArgument as refused:
        assert "\n" not in refused.reason
        return
    try:
        use(loaded)
    except Exception as crash:   # the point of the test: name the field that crashed it
        raise AssertionError(f"{path} made valid but unusable: {crash!r}") from crash


def _use_run(document):
    document = results.load_document("doc.json", document)
    side = compare.Side("doc.json", document)
    comparison = compare.compare_documents(side, side)
    for fmt in compare.FORMATS:
        compare.render(comparison, fmt)
    for fmt in report.FORMATS:
        report.render(document, fmt)
    report.warnings(document)
    for group in document["groups"]:
        plot.merged_buckets(plot.measured_rows(document, group))
        plot.phase_medians(group)


def _use_cycle(document):
    document = cycle_results.derive(document)
    for fmt in cycle_report.FORMATS:
        cycle_report.render(document, fmt)
    cycle_report.warnings(document)
    cycle_plot.figure_rows(document)
    cycle_plot.ranking_lines(document)


def _small(document):
    """The document with every histogram cut to 2 buckets: the same fields, validated faster."""
    document = copy.deepcopy(document)
    for row in document.get("runs", []) + [cycle for chain in document.get("chains", []) for cycle in chain["cycles"]]:
        for histogram in (row.get("histograms") or {}).values():
            histogram["buckets"] = histogram["buckets"][:2]
    return document


@pytest.mark.parametrize("kind", ["run", "cycle"])
def test_every_field_of_a_document_wrong(request, kind):
    document = _small(request.getfixturevalue(f"{kind}_document"))
    roots, use = {"run": ([("runs",), ("groups",), ("metadata",)], _use_run),
                  "cycle": ([("chains",), ("ranking",), ("metadata",)], _use_cycle)}[kind]
    for path, wrong in _mutations(document, roots):
        changed = _mutated(document, path, wrong)
        if changed is not None:
            _survives((path, wrong), changed, use)


def test_the_shipped_schemas_accept_what_wpcompare_writes(run_document, cycle_document, tmp_path):
    documents.validate("run", run_document, (results.SCHEMA,))
    documents.validate("cycle", cycle_document, (cycle_results.SCHEMA,))
    path = tmp_path / "run.json"
    path.write_text(results.dumps(run_document))
    out = tmp_path / "cmp.json"
    result = CliRunner().invoke(main, ["compare", str(path), str(path), "-o", str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    documents.load(str(out), ("wpcompare.compare/1",))


@pytest.mark.parametrize("bucket", [[1, "x", 2], [1, 2], [-1, 2, 3], {"a": 1}, [1.5, 2, 3]])
def test_a_malformed_histogram_bucket_is_refused(tmp_path, run_document, bucket):
    document = copy.deepcopy(run_document)
    document["runs"][0]["histograms"]["touch"]["buckets"].append(bucket)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(document))
    line = one_line_refusal(CliRunner().invoke(main, ["compare", str(path), str(path)]))
    assert "$.runs[0].histograms.touch.buckets[" in line


def test_a_gzipped_document_is_read_as_the_plain_one(tmp_path, run_document):
    """docs/results/data/ keeps results gzipped: show and compare take them as they are (plot: below),
    recognised by their first bytes whatever their name."""
    plain = tmp_path / "run.json"
    plain.write_text(json.dumps(run_document))
    packed = tmp_path / "run.json.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    misnamed = tmp_path / "packed.json"
    misnamed.write_bytes(packed.read_bytes())
    assert documents.read_json(packed) == documents.read_json(misnamed) == run_document
    shown = [CliRunner().invoke(main, ["show", str(path)], catch_exceptions=False) for path in (plain, packed)]
    assert shown[0].exit_code == shown[1].exit_code == 0, shown[1].output
    assert shown[1].output == shown[0].output
    compared = CliRunner().invoke(main, ["compare", str(plain), str(packed)], catch_exceptions=False)
    assert compared.exit_code == 0, compared.output


def test_plot_reads_a_gzipped_document(tmp_path, run_document):
    pytest.importorskip("matplotlib", reason="plot needs the plot extra (matplotlib)")
    packed = tmp_path / "run.json.gz"
    packed.write_bytes(gzip.compress(json.dumps(run_document).encode()))
    plotted = CliRunner().invoke(main, ["plot", str(packed), "-o", str(tmp_path / "r.svg")], catch_exceptions=False)
    assert plotted.exit_code == 0, plotted.output
    assert (tmp_path / "r.svg").stat().st_size > 0


def test_a_gzip_that_expands_without_end_is_refused_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr(documents, "GZIP_EXPANSION_LIMIT", 1000)
    path = tmp_path / "bomb.json.gz"
    path.write_bytes(gzip.compress(b"[" + b"0," * 600 + b"0]"))
    refusal = one_line_refusal(CliRunner().invoke(main, ["compare", str(path), str(path)]))
    assert "expands beyond" in refusal and "bomb.json.gz" in refusal
