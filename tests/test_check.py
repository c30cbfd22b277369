"""`wpcompare check` and wpcompare.testing: TAP output, exit statuses, -o JSON, failures
detected and named, and the battery from a project's own pytest run.

A failure is caused on purpose with the C core's test-only WPCOMPARE_INJECT_LOSE_WRITE
(`--inject lose-write:N`: page N's first write is undone before verify, as a
copy-and-remap that copied the page after the write and mapped the copy over it would
leave it), and with the worker's `segv` injection (the worker dies after restore).
"""
import glob
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import textwrap

from click.testing import CliRunner

from harness import CLI, error_line, in_child
from wpcompare import check, leftovers, process_state
from wpcompare.cli import main
from wpcompare.testing import CheckFailed, check_strategy

SUMMARY = re.compile(r"^# Totals: pass:(\d+) fail:(\d+) skip:(\d+) \((\d+) cases in [0-9.]+ s\)$")


def run_check(*args):
    """(exit status, stdout lines, stderr) of `wpcompare check ARGS`, in this process."""
    result = CliRunner().invoke(main, ["check", *args], catch_exceptions=False)
    return result.exit_code, result.stdout.splitlines(), result.stderr


def totals(lines):
    match = SUMMARY.match(lines[-1])
    assert match, f"no totals line last: {lines[-1]!r}"
    passed, failed, skipped, cases = map(int, match.groups())
    return {"passed": passed, "failed": failed, "skipped": skipped, "cases": cases}


def test_tap_output_shape_and_exit_zero():
    status, lines, _ = run_check("-s", "mmap", "-s", "sigsegv", "--case", "size-one-page",
                                 "--case", "size-tail")
    assert status == 0, lines
    assert lines == ["TAP version 13", "1..4",
                     "ok 1 - mmap: size-one-page", "ok 2 - mmap: size-tail",
                     "ok 3 - sigsegv: size-one-page", "ok 4 - sigsegv: size-tail", lines[-1]]
    assert totals(lines) == {"passed": 4, "failed": 0, "skipped": 0, "cases": 4}


def test_skipped_case_is_marked_and_counted(tmp_path):
    """mmap has no background work: its racing case is a SKIP saying so, counted as skipped."""
    output = tmp_path / "check.json"
    status, lines, _ = run_check("-s", "mmap", "--case", "size-one-page", "--case",
                                 "racing-writers", "-o", str(output))
    assert status == 0, lines
    assert lines[3].startswith("ok 2 - mmap: racing-writers # SKIP no background work to race"), lines
    assert totals(lines) == {"passed": 1, "failed": 0, "skipped": 1, "cases": 2}
    document = json.loads(output.read_text())
    assert [row["status"] for row in document["results"]] == ["ok", "skipped"]
    assert document["totals"]["skipped"] == 1 and document["totals"]["passed"] == 1


def test_racing_case_without_background_work_is_a_skip_not_a_pass():
    """sigsegv with fixup=on-write-only has no background thread: nothing was raced."""
    status, lines, _ = run_check("-s", "sigsegv:fixup=on-write-only", "--case", "racing-writers")
    assert status == 0, lines
    assert re.match(r"ok 1 - sigsegv:fixup=on-write-only: racing-writers # SKIP no background "
                    r"work with these parameters: chunks_by_background stayed 0 in \d+ runs$",
                    lines[2]), lines


def test_racing_case_shows_the_overlap_it_tested(tmp_path):
    output = tmp_path / "check.json"
    status, lines, _ = run_check("-s", "sigsegv:chunk=4K", "--case", "racing-writers",
                                 "-o", str(output))
    result = json.loads(output.read_text())["results"][0]
    if result["status"] == "skipped":
        # Whether a run overlaps is the scheduler's; what must hold is that it says so.
        assert "never overlapped" in result["reason"], result
        return
    assert status == 0 and lines[2] == "ok 1 - sigsegv:chunk=4K: racing-writers", lines
    assert result["detail"]["overlapped"] >= 1 and result["detail"]["runs"] >= 1


def test_a_lost_write_fails_its_case_naming_the_page():
    """Cases run in the battery's order, whatever the order of --case."""
    status, lines, _ = run_check("-s", "sigsegv", "--case", "seq-write", "--case", "size-tail",
                                 "--inject", "lose-write:5")
    assert status == 1, lines
    assert lines[2].startswith("not ok 1 - sigsegv: size-tail: verify: "), lines
    assert "first at page 5 " in lines[2]
    assert re.match(r"not ok 2 - sigsegv: seq-write: verify: 1 of \d+ pages differ from the "
                    r"image plus the workload's writes; first at page 5 \(byte offset \d+: the "
                    r"write of workload thread \d was lost\)$", lines[3]), lines
    assert totals(lines)["failed"] == 2


def test_a_lost_write_in_a_racing_run_fails_naming_the_page():
    status, lines, _ = run_check("-s", "sigsegv", "--case", "racing-writers",
                                 "--inject", "lose-write:7")
    assert status == 1, lines
    assert lines[2].startswith("not ok 1 - sigsegv: racing-writers: "), lines
    assert re.search(r"first at page 7 \(byte offset \d+: the write of workload thread \d was "
                     r"lost\)$", lines[2]), lines


def test_exit_status_is_one_when_a_case_fails(tmp_path):
    """One case fails (its write to page 0 lost), one passes (it only reads): exit 1."""
    output = tmp_path / "check.json"
    status, lines, _ = run_check("-s", "read", "--case", "size-one-page", "--case", "seq-read",
                                 "--inject", "lose-write:0", "-o", str(output))
    assert status == 1, lines
    assert lines[2].startswith("not ok 1 - read: size-one-page: verify: 1 of 1 pages differ"), lines
    assert lines[3] == "ok 2 - read: seq-read", lines
    document = json.loads(output.read_text())
    assert document["kind"] == check.KIND and document["format_version"] == check.FORMAT_VERSION
    assert document["totals"]["failed"] == 1 and document["totals"]["passed"] == 1
    assert document["totals"]["cases"] == 2
    first = document["results"][0]
    assert (first["number"], first["strategy"], first["case"], first["status"]) == \
        (1, "read", "size-one-page", "failed")
    assert "first at page 0 " in first["reason"]
    assert document["metadata"]["strategies"] == ["read"]


def test_a_crashing_worker_is_a_failed_case_with_its_signal():
    status, lines, _ = run_check("-s", "mmap", "--case", "size-tail", "--case", "size-one-page",
                                 "--inject", "segv")
    assert status == 1, lines
    assert lines[2:4] == ["not ok 1 - mmap: size-one-page: worker killed by SIGSEGV",
                          "not ok 2 - mmap: size-tail: worker killed by SIGSEGV"], lines


def test_bad_usage_exits_2_and_writes_nothing(tmp_path):
    output = tmp_path / "check.json"
    for args, says in [(["-s", "no-such"], "unknown strategy 'no-such'"),
                       ([], "give -s NAME (repeatable) or --all"),
                       (["-s", "mmap", "--all"], "give -s NAME (repeatable) or --all"),
                       (["-s", "mmap", "--quick", "--case", "detach"], "give --quick or --case"),
                       (["-s", "mmap", "--case", "nope"], "'nope' is not one of"),
                       (["-s", "sigsegv:chunk=3K"], "chunk")]:
        result = CliRunner().invoke(main, ["check", *args, "-o", str(output)],
                                    catch_exceptions=False)
        assert result.exit_code == 2, (args, result.output)
        assert says in error_line(result), (args, result.stderr)
        assert result.stdout == "", "no TAP stream for a refused command"
    assert os.listdir(tmp_path) == []


def test_interrupted_battery_leaves_no_output_file(tmp_path):
    """SIGTERM in the middle of the battery: no -o file, no temporary file, no worker."""
    output = tmp_path / "check.json"
    process = subprocess.Popen([*CLI, "check", "-s", "sigsegv", "--case", "racing-writers",
                                "--seconds", "60", "-o", str(output)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline() == "TAP version 13\n"
        assert process.stdout.readline() == "1..1\n"
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 128 + signal.SIGTERM, stderr
    assert os.listdir(tmp_path) == []
    assert not glob.glob(os.path.join(tempfile.gettempdir(),
                                      f"{leftovers.CHECK_PREFIX}{process.pid}-*")), \
        "the battery's image directory was left behind"


def test_a_killed_batterys_directory_is_removed_by_the_next(tmp_path, monkeypatch):
    """SIGKILL runs no cleanup: the next check removes the image directory of a dead owner."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    gone = subprocess.Popen(["true"])
    gone.wait()
    stale = tmp_path / f"{leftovers.CHECK_PREFIX}{gone.pid}-abcd1234"
    stale.mkdir()
    (stale / "image-4096.img").write_bytes(b"x")
    status, lines, stderr = run_check("-s", "read", "--case", "size-one-page")
    assert status == 0, lines
    assert not stale.exists()
    assert f"removed {stale}, left by a wpcompare process that is gone" in stderr
    assert os.listdir(tmp_path) == [], "the battery's own directory was not removed"


def test_check_strategy_returns_results_and_raises_with_the_reason(monkeypatch):
    results = check_strategy(None, "read", cases=["size-one-page", "racing-writers"])
    assert [(r.case, r.status) for r in results] == [("size-one-page", "ok"),
                                                     ("racing-writers", "skipped")]
    monkeypatch.setenv("WPCOMPARE_INJECT_LOSE_WRITE", "2")
    try:
        check_strategy(None, "mmap", cases=["seq-write"])
    except CheckFailed as failure:
        assert [r.case for r in failure.failures] == ["seq-write"]
        assert "mmap: seq-write: verify: " in str(failure) and "first at page 2 " in str(failure)
    else:
        raise AssertionError("a lost write passed check_strategy")


def test_pytest_fixture_from_a_project_test_suite(tmp_path):
    """A project's own tests, through the pytest11 entry point's `wpcompare_check` fixture."""
    (tmp_path / "test_mine.py").write_text(textwrap.dedent("""
        import os

        def test_good(wpcompare_check):
            results = wpcompare_check(None, "uffd", cases=["size-tail"])
            assert [result.status for result in results] in (["ok"], ["skipped"])

        def test_lost_write(wpcompare_check, monkeypatch):
            monkeypatch.setenv("WPCOMPARE_INJECT_LOSE_WRITE", "3")
            wpcompare_check(None, "sigsegv", cases=["seq-write"])
    """))
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           str(tmp_path / "test_mine.py")], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert "1 failed, 1 passed" in done.stdout, done.stdout + done.stderr
    assert "CheckFailed: 1 wpcompare check case(s) failed" in done.stdout
    assert "sigsegv: seq-write: verify: " in done.stdout and "first at page 3 " in done.stdout


# ---- the leftover detector the leaves-nothing cases use ----

def _leak(what):
    before = process_state.state("/nonexistent")
    if what == "signal":
        signal.signal(signal.SIGUSR1, lambda *_: None)
    elif what == "fd":
        os.open("/dev/null", os.O_RDONLY)
    return sorted(process_state.differences(before, process_state.state("/nonexistent")))


def test_leftover_detector_sees_a_signal_handler_and_a_descriptor():
    assert in_child(_leak, None) == []
    assert in_child(_leak, "signal") == ["caught_signals"]
    assert in_child(_leak, "fd") == ["fds"]
