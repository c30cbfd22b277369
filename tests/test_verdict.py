"""The verdict under `run`'s table: fastest to detached against mmap, ties said, cheapest first
write, skipped rows in one line each; computed from the document, so `show` prints it too."""
from wpcompare import report, results, verdict


def _row(label, op, detached_ns, touch_ns=5000, status="ok", reason=None):
    row = {"strategy": label.partition(":")[0], "params": label.partition(":")[2], "label": label, "op": op,
           "pattern": "random", "threads": 1, "overlap": False, "seed": 1, "repetition": 1, "warmup": False,
           "latency": "none", "status": status, "reason": reason, "failed_phase": None, "phases": None}
    if status == "ok":
        row.update(phases={name: {"ns": touch_ns if name == "touch" else 1000, "minflt": 0, "majflt": 0,
                                  "vmas": 1} for name in ("restore", "touch", "fixup", "verify")},
                   time_to_detached_ns=detached_ns, verified=True, detached=True, peak_rss_kb=1,
                   histograms={"touch": {"count": 0, "buckets": []}})
    return row


def _rows(label, op, values, **fields):
    return [_row(label, op, value, **fields) for value in values]


def _document(rows):
    return results.build_document(rows, {"image": {"bytes": 1 << 20, "seed": 1, "kind": "mixed"},
                                         "options": {"repeat": 5}, "reference_bound": None})


SPREAD = (0, 30, 60, 90, 120)


def test_the_fastest_to_detached_and_its_factor_against_mmap():
    rows = (_rows("mmap", "read", [8000 + d for d in SPREAD]) + _rows("uffd", "read", [6000 + d for d in SPREAD])
            + _rows("sigsegv", "read", [4000 + d for d in SPREAD]))
    (line,) = verdict.verdict(_document(rows))
    assert line == "read: fastest to detached: sigsegv (4.06 µs), 1.99x faster than mmap (8.06 µs)"


def test_the_bounds_are_references_not_candidates():
    rows = _rows("bound-copy", "read", [100] * 5) + _rows("mmap", "read", [9000] * 5) + _rows("read", "read", [3000] * 5)
    assert verdict.verdict(_document(rows))[0].startswith("read: fastest to detached: read (3 µs), 3.00x faster")


def test_rows_the_test_cannot_tell_apart_are_said_to_be():
    close = _rows("mmap", "read", [4000, 4200, 4400, 4600, 4800]) + _rows("uffd", "read", [4100, 4300, 4500, 4700, 4900])
    apart = _rows("read", "read", [9000 + d for d in SPREAD])
    lines = verdict.verdict(_document(close + apart))
    assert lines[0].startswith("read: fastest to detached: mmap (4.4 µs), 1.02x faster than the next, uffd")
    assert lines[1] == ("read: mmap and uffd: statistically indistinguishable in time to detached "
                        "(Mann-Whitney p >= 0.05)")
    separate = _rows("mmap", "read", [4000 + d for d in SPREAD]) + apart
    assert not [line for line in verdict.verdict(_document(separate)) if "indistinguishable" in line]


def test_too_few_runs_to_test_is_said_not_hidden():
    rows = _rows("mmap", "read", [4000, 4100]) + _rows("read", "read", [9000, 9100])
    lines = verdict.verdict(_document(rows))
    assert lines[1] == ("read: too few runs per row for the test to tell any two rows apart: the ranking "
                        "is by medians alone (--repeat 4 or more tests it)")


def test_cheapest_first_writes_and_skipped_rows_one_line_each():
    rows = (_rows("mmap", "write", [9000] * 5, touch_ns=7000) + _rows("sigsegv", "write", [5000] * 5, touch_ns=3500)
            + _rows("uffd-huge", "write", [None], status="skipped",
                    reason="not enough free 2 MiB huge pages: 2 needed, 0 available; run `sysctl`")
            + _rows("uffd-huge", "read", [None], status="skipped",
                    reason="not enough free 2 MiB huge pages: 2 needed, 0 available; run `sysctl`"))
    lines = verdict.verdict(_document(rows))
    assert ("write: cheapest first writes: sigsegv (touch 3.5 µs, the application's time with no clock in "
            "its loop; next mmap, 2.00x)") in lines
    assert lines[-1] == "skipped: uffd-huge (write, read): not enough free 2 MiB huge pages"


def test_the_verdict_is_under_the_table_and_in_every_text_format():
    document = _document(_rows("mmap", "read", [8000] * 5) + _rows("read", "read", [4000] * 5))
    for fmt, bullet in (("table", ""), ("markdown", "- ")):
        text = report.render(document, fmt)
        assert f"{bullet}verdict: read: fastest to detached: read (4 µs), 2.00x faster than mmap (8 µs)" in text
