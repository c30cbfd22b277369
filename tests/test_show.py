"""`wpcompare show`: a saved run, cycle or compare document rendered again without measuring,
byte for byte what the command printed; old schema versions read; bad files one line."""
import json

import pytest

from wpcompare import export, report

from harness import error_line, invoke

QUICK_RUN = ["--size", "1M", "--repeat", "2", "--warmup", "0", "--no-bounds", "-s", "mmap", "-s", "read", "-q"]


@pytest.fixture(scope="module")
def saved_run(tmp_path_factory):
    """(path of a run's JSON, what run printed on stdout)."""
    path = tmp_path_factory.mktemp("show") / "run.json"
    result = invoke("run", *QUICK_RUN, "-o", str(path))
    assert result.exit_code == 0, result.output
    return path, result.stdout


def test_show_prints_the_run_table_byte_for_byte(saved_run):
    path, printed = saved_run
    result = invoke("show", str(path))
    assert result.exit_code == 0, result.output
    assert result.stdout == printed
    assert "verdict: read: fastest to detached:" in printed


@pytest.mark.parametrize("fmt", ["markdown", "csv", "json", "hlog"])
def test_show_renders_every_format_as_run_wrote_it(saved_run, tmp_path, fmt):
    path, _ = saved_run
    target = tmp_path / f"again.{ {'markdown': 'md'}.get(fmt, fmt)}"
    written = invoke("show", str(path), "-o", str(target))
    assert written.exit_code == 0, written.output
    shown = invoke("show", str(path), "--format", fmt)
    assert shown.exit_code == 0, shown.output
    assert target.read_text() == shown.stdout
    if fmt == "json":
        assert json.loads(shown.stdout) == json.loads(path.read_text())


def test_markdown_and_csv_keep_every_column_the_table_the_default_ones(saved_run):
    path, printed = saved_run
    markdown = invoke("show", str(path), "--format", "markdown").stdout
    every, default = report.column_names()
    header = next(line for line in markdown.splitlines() if line.startswith("| strategy"))
    assert [cell.strip() for cell in header.strip("|").split("|")][2:] == \
        [name.partition("x bound:")[0] or "x bound" for name in every]
    table_header = next(line for line in printed.splitlines() if line.startswith("strategy"))
    assert table_header.split()[2:] == "restore touch fixup to detached checked".split()
    csv_header = invoke("show", str(path), "--format", "csv").stdout.splitlines()[0]
    assert "page_p99_ns_median" in csv_header and "page_p99_ns_q3" in csv_header


def test_columns_choose_the_tables_columns_in_their_order(saved_run):
    path, _ = saved_run
    result = invoke("show", str(path), "--columns", "P99/page,x bound:to detached,verified")
    assert result.exit_code == 0, result.output
    header = next(line for line in result.stdout.splitlines() if line.startswith("strategy"))
    assert header.split() == ["strategy", "op", "p99/page", "x", "bound", "verified"]
    every = invoke("show", str(path), "--columns", "all").stdout
    assert every == export.render(report.KIND, report_document(path), "table", report.column_names()[0])


def report_document(path):
    from wpcompare import results
    return results.load_document(path)


def test_the_default_table_fits_100_columns(saved_run):
    path, printed = saved_run
    lines = printed.split("\n\n")[1].splitlines()          # the table: the second block
    assert lines[0].startswith("strategy") and max(map(len, lines)) <= 100


def test_an_old_run_document_is_shown(saved_run, tmp_path):
    """run/1: every run timed each access, rows have no "latency"."""
    path, _ = saved_run
    document = json.loads(path.read_text())
    document["schema"] = "wpcompare.run/1"
    document["runs"] = [row for row in document["runs"] if row.get("latency") != "none"]
    for row in document["runs"]:
        row.pop("latency", None)
        if "checksum" in row:
            row["checksum"] = int(row["checksum"])     # run/1 wrote it as a number
    old = tmp_path / "old.json"
    old.write_text(json.dumps(document))
    result = invoke("show", str(old), "--columns", "all")
    assert result.exit_code == 0, result.output
    assert "mmap" in result.stdout and "p50/page" in result.stdout


def test_show_cycle_and_compare_documents(tmp_path, saved_run):
    cycle_path = tmp_path / "cycle.json"
    cycled = invoke("cycle", "--size", "1M", "-s", "read", "--cycles", "1", "-o", str(cycle_path))
    assert cycled.exit_code == 0, cycled.output
    assert invoke("show", str(cycle_path)).stdout == cycled.stdout
    default_header = next(line for line in cycled.stdout.splitlines() if line.startswith("strategy"))
    assert "slowdown" not in default_header and "cycle time" in default_header
    every = invoke("show", str(cycle_path), "--columns", "all").stdout
    assert "slowdown" in next(line for line in every.splitlines() if line.startswith("strategy"))
    chosen = invoke("show", str(cycle_path), "--columns", "pause,verified").stdout
    assert next(line for line in chosen.splitlines() if line.startswith("strategy")).split() == \
        ["strategy", "cycle", "pause", "verified"]
    path, _ = saved_run
    compare_path = tmp_path / "compare.json"
    compared = invoke("compare", str(path), str(path), "-o", str(compare_path))
    assert compared.exit_code == 0, compared.output
    shown = invoke("show", str(compare_path))
    assert shown.exit_code == 0 and shown.stdout == compared.stdout


@pytest.mark.parametrize("content,message", [
    ("{", "is not JSON"),
    ('{"schema": "wpcompare.run/9"}', "is not a wpcompare result (schema 'wpcompare.run/9')"),
    ('{"schema": "wpcompare.run/2", "runs": 3}', "is not a valid wpcompare.run/2 document"),
    ("[1, 2]", "is not a wpcompare result"),
])
def test_a_file_that_is_not_a_result_is_one_line(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    result = invoke("show", str(path))
    assert result.exit_code == 2
    assert message in error_line(result) and result.stdout == ""


def test_a_missing_file_and_bad_choices_are_one_line(tmp_path, saved_run):
    result = invoke("show", str(tmp_path / "none.json"))
    assert result.exit_code == 2 and "cannot read" in error_line(result)
    path, _ = saved_run
    result = invoke("show", str(path), "--columns", "restore,nosuch")
    assert result.exit_code == 2 and "no column 'nosuch'" in error_line(result)
    compare_path = tmp_path / "c.json"
    invoke("compare", str(path), str(path), "-o", str(compare_path))
    result = invoke("show", str(compare_path), "--format", "csv")
    assert result.exit_code == 2 and "a compare document is shown as table, json, markdown" in error_line(result)
    result = invoke("show", str(compare_path), "--columns", "all")
    assert result.exit_code == 2 and "fixed columns" in error_line(result)
