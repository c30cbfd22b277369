"""`wpcompare compare`: the Mann-Whitney U test, ratios and verdicts on constructed results, and the CLI."""
import itertools
import json
import math

import pytest
from click.testing import CliRunner

from wpcompare import compare, mannwhitney, results
from wpcompare.cli import main


# ---- the test itself ----

def test_midranks_share_ties():
    assert mannwhitney.midranks([30, 10, 20, 20]) == [4, 1, 2.5, 2.5]
    assert mannwhitney.midranks([5, 5, 5]) == [2, 2, 2]


def test_textbook_example_exact_and_normal():
    # scipy.stats.mannwhitneyu's documented example: U1 = 17, exact p = 1/9,
    # asymptotic (tie and continuity corrected) p = 0.11134688653314041.
    males, females = [19, 22, 16, 29, 24], [20, 11, 17, 12]
    test = mannwhitney.mann_whitney_u(males, females)
    assert (test.u, test.method) == (17, "exact")
    assert test.p == pytest.approx(1 / 9)
    ranks = mannwhitney.midranks(males + females)
    assert mannwhitney._normal_p(ranks, 17, 5, 4) == pytest.approx(0.11134688653314041, rel=1e-12)


def test_complete_separation_gives_the_smallest_p():
    test = mannwhitney.mann_whitney_u([1, 2, 3, 4, 5], [6, 7, 8, 9, 10])
    assert test.u == 0
    assert test.p == pytest.approx(2 / 252) == mannwhitney.smallest_p(5, 5)
    assert mannwhitney.mann_whitney_u([6, 7, 8, 9, 10], [1, 2, 3, 4, 5]).u == 25


def _brute_force_p(a, b):
    """Two-sided p by enumerating every split of the pooled values (ties included)."""
    pooled = list(a) + list(b)
    ranks = mannwhitney.midranks(pooled)
    n, n1 = len(pooled), len(a)
    center = n1 * (n + 1) / 2
    observed = abs(sum(ranks[:n1]) - center)
    splits = list(itertools.combinations(range(n), n1))
    extreme = sum(1 for chosen in splits if abs(sum(ranks[i] for i in chosen) - center) >= observed - 1e-9)
    return extreme / len(splits)


@pytest.mark.parametrize("a,b", [
    ([1, 2, 2, 3, 5], [2, 4, 4, 6]),
    ([10, 10, 10, 11], [10, 11, 12, 12, 12]),
    ([3, 1, 4, 1, 5, 9], [2, 6, 5, 3, 5]),
    ([7], [1, 2, 3, 7]),
    ([100, 101, 102], [99, 100, 103]),
])
def test_exact_p_with_ties_equals_enumeration(a, b):
    test = mannwhitney.mann_whitney_u(a, b)
    assert test.method == "exact"
    assert test.p == pytest.approx(_brute_force_p(a, b), abs=1e-12)
    assert test.u + mannwhitney.mann_whitney_u(b, a).u == len(a) * len(b)


def test_large_samples_use_the_normal_approximation():
    a = [float(i) for i in range(30)]
    b = [i + 0.5 for i in range(5, 35)]
    test = mannwhitney.mann_whitney_u(a, b)
    assert test.method == "normal"
    # No ties: a's value k exceeds the k - 5 values 5.5 .. k - 0.5 of b, so U = 1 + ... + 24 = 300,
    # 150 below its mean 450; variance 30 * 30 / 12 * 61; continuity-corrected z.
    assert test.u == 300
    expected = math.erfc((150 - 0.5) / math.sqrt(900 / 12 * 61) / math.sqrt(2))
    assert test.p == pytest.approx(expected)


def test_all_values_equal_is_no_evidence():
    assert mannwhitney.mann_whitney_u([5] * 3, [5] * 4).p == 1
    assert mannwhitney.mann_whitney_u([5] * 30, [5] * 30).p == 1


@pytest.mark.parametrize("n1,n2,p", [(3, 3, 0.1), (4, 4, 2 / 70), (5, 5, 2 / 252), (2, 8, 2 / 45), (0, 5, 1)])
def test_smallest_possible_p(n1, n2, p):
    assert mannwhitney.smallest_p(n1, n2) == pytest.approx(p)


# ---- verdicts ----

def test_faster_is_the_ratio_of_medians():
    entry = compare.compare_values([200, 210, 190, 205, 220], [100, 105, 95, 110, 98])
    assert entry["a"]["median"] == 205 and entry["b"]["median"] == 100
    assert entry["ratio"] == pytest.approx(100 / 205)
    assert entry["p"] == pytest.approx(2 / 252)
    assert entry["verdict"] == "2.05x faster"


def test_slower():
    entry = compare.compare_values([100, 101, 102, 103, 104], [180, 181, 182, 183, 184])
    assert entry["verdict"] == "1.78x slower"
    assert entry["ratio"] == pytest.approx(182 / 102)


def test_overlapping_runs_are_not_significant():
    entry = compare.compare_values([100, 120, 110, 130, 90], [105, 125, 95, 115, 135])
    assert entry["p"] > 0.05
    assert entry["verdict"] == "not significant"
    assert entry["ratio"] == pytest.approx(115 / 110)


def test_three_runs_each_can_never_be_significant():
    entry = compare.compare_values([1, 2, 3], [100, 200, 300])
    assert entry["verdict"] == "too few runs"
    assert entry["ratio"] == pytest.approx(100)


def test_alpha_decides():
    a, b = [10, 11, 12, 13], [12.5, 14, 15, 16]
    p = compare.compare_values(a, b)["p"]
    assert compare.compare_values(a, b, alpha=p * 1.01)["verdict"] == "1.26x slower"  # 14.5 / 11.5
    assert compare.compare_values(a, b, alpha=p * 0.99)["verdict"] == "not significant"


def test_missing_values():
    assert compare.compare_values([], [1, 2])["verdict"] == "no values in A"
    assert compare.compare_values([1], [], missing="never detached")["verdict"] == "never detached in B"


@pytest.mark.parametrize("factor,text", [(1.234, "1.23x"), (12.34, "12.3x"), (123.4, "123x")])
def test_factor_format(factor, text):
    assert compare.format_factor(factor) == text


# ---- documents ----

def _row(label, op="read", status="ok", restore=1000, touch=5000, detached=9000, reason=None, warmup=False,
         latency="none"):
    name, _, params = label.partition(":")
    row = {"strategy": name, "params": params, "label": label, "op": op, "pattern": "random",
           "threads": 1, "overlap": False, "seed": 1, "repetition": 1, "warmup": warmup, "latency": latency,
           "status": status, "reason": reason, "failed_phase": None, "phases": None}
    if status == "ok":
        hist = {"count": 1, "min_ns": 100, "max_ns": 100, "sum_ns": 100, "buckets": [[100, 100, 1]]}
        row.update(
            phases={"restore": {"ns": restore, "minflt": 0, "majflt": 0, "vmas": 1},
                    "touch": {"ns": touch, "minflt": 0, "majflt": 0, "vmas": 1},
                    "fixup": {"ns": 100, "minflt": 0, "majflt": 0, "vmas": 1},
                    "verify": {"ns": 10, "minflt": 0, "majflt": 0, "vmas": 1}},
            time_to_detached_ns=detached, verified=True, detached=detached is not None, peak_rss_kb=1,
            touched_pages=1, histograms={"touch": hist, "handler": {"count": 0, "buckets": []}})
    return row


def _document(rows, size=1 << 20):
    metadata = {"timestamp": "2026-01-01T00:00:00+00:00", "image": {"bytes": size, "kind": "mixed"},
                "cache": "hot", "options": {"repeat": 5}}
    return results.build_document(rows, metadata)


def _side(rows, path="x.json", size=1 << 20):
    return compare.Side(path, json.loads(json.dumps(_document(rows, size))))


def test_rows_are_matched_and_the_rest_listed():
    a = _side([_row("mmap", restore=r) for r in (1000, 1010, 990, 1005, 995)]
              + [_row("mmap", restore=5, warmup=True)]
              + [_row("uffd:chunk=64K", restore=r) for r in (10, 11, 12, 13, 14)]
              + [_row("read")]
              + [_row("uffd-huge", status="skipped", reason="no free 2 MiB huge pages")])
    b = _side([_row("mmap", restore=r) for r in (500, 505, 495, 510, 490)]
              + [_row("uffd:chunk=65536", restore=r) for r in (10, 11, 12, 13, 14)]
              + [_row("uffd-huge", restore=1)]
              + [_row("read", op="write")])
    comparison = compare.compare_documents(a, b)
    by_label = {row["label"]: row for row in comparison["rows"]}
    assert set(by_label) == {"mmap", "uffd:chunk=64K"}, "64K and 65536 are the same chunk"
    restore = by_label["mmap"]["metrics"]["restore_ns"]
    assert restore["a"]["n"] == 5, "the warmup is left out"
    assert (restore["a"]["median"], restore["b"]["median"]) == (1000, 500)
    assert restore["ratio"] == 0.5 and restore["verdict"] == "2.00x faster"
    assert by_label["uffd:chunk=64K"]["metrics"]["restore_ns"]["verdict"] == "not significant"
    assert by_label["mmap"]["metrics"]["touch_ns"]["verdict"] == "not significant"
    assert comparison["only_in_a"] == ["read read (random, 1 thread(s))"]
    assert comparison["only_in_b"] == ["read write (random, 1 thread(s))"]
    (skipped,) = comparison["not_compared"]
    assert skipped["row"].startswith("uffd-huge read") and "A: skipped: no free 2 MiB huge pages" in skipped["why"]


def test_too_few_runs_and_different_setups_are_warned_about():
    a = _side([_row("mmap", restore=r) for r in (1, 2, 3)], size=1 << 20)
    b = _side([_row("mmap", restore=r) for r in (7, 8, 9)], size=2 << 20)
    comparison = compare.compare_documents(a, b)
    assert comparison["rows"][0]["metrics"]["restore_ns"]["verdict"] == "too few runs"
    text = " ".join(comparison["warnings"])
    assert "with 3 run(s) in A and 3 in B no difference can be significant" in text
    assert "--repeat 4 or more" in text
    assert "image size 1048576 vs 2097152" in text


def test_never_detached_is_said_so():
    a = _side([_row("mmap", detached=None) for _ in range(5)])
    b = _side([_row("mmap") for _ in range(5)])
    entry = compare.compare_documents(a, b)["rows"][0]["metrics"]["time_to_detached_ns"]
    assert entry["verdict"] == "never detached in A"


def test_renderings():
    a = _side([_row("mmap", restore=r) for r in (1000, 1010, 990, 1005, 995)], "a.json")
    b = _side([_row("mmap", restore=r) for r in (500, 505, 495, 510, 490)], "b.json")
    comparison = compare.compare_documents(a, b)
    table = compare.render(comparison, "table")
    line = next(line for line in table.splitlines() if "restore" in line)
    assert line.split()[:2] == ["mmap", "read"] and "2.00x faster" in line and "0.500" in line
    assert "1 µs (5)" in line and "500 ns (5)" in line
    assert "Mann-Whitney U" in table
    assert "| mmap" in compare.render(comparison, "markdown")
    loaded = json.loads(compare.render(comparison, "json"))
    assert loaded["schema"] == "wpcompare.compare/1"
    assert loaded["rows"][0]["metrics"]["restore_ns"]["b"]["values"] == [500, 505, 495, 510, 490]


# ---- the command ----

def _write(tmp_path, name, rows, size=1 << 20):
    path = tmp_path / name
    path.write_text(results.dumps(_document(rows, size)))
    return str(path)


def test_compare_command(tmp_path):
    a = _write(tmp_path, "a.json", [_row("mmap", touch=t) for t in (5000, 5100, 4900, 5050, 4950)])
    b = _write(tmp_path, "b.json", [_row("mmap", touch=t) for t in (9000, 9100, 8900, 9050, 8950)])
    result = CliRunner().invoke(main, ["compare", a, b])
    assert result.exit_code == 0, result.output
    touch = next(line for line in result.stdout.splitlines() if " touch " in line)
    assert "1.80x slower" in touch
    out = tmp_path / "cmp.json"
    result = CliRunner().invoke(main, ["compare", a, b, "-o", str(out)])
    assert result.exit_code == 0
    assert "1.80x slower" in result.stdout
    assert json.loads(out.read_text())["rows"][0]["metrics"]["touch_ns"]["verdict"] == "1.80x slower"
    assert json.loads(CliRunner().invoke(main, ["compare", a, b, "--format", "json"]).stdout)["a"]["path"] == a


@pytest.mark.parametrize("content,message", [
    (None, "cannot read"),
    ("not json", "is not JSON"),
    ('{"schema": "wpcompare.cycle/1"}', "is not a wpcompare result"),
])
def test_compare_refuses_what_is_not_a_result_file(tmp_path, content, message):
    good = _write(tmp_path, "a.json", [_row("mmap")])
    bad = tmp_path / "bad.json"
    if content is not None:
        bad.write_text(content)
    result = CliRunner().invoke(main, ["compare", good, str(bad)])
    assert result.exit_code == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and message in errors[0]
