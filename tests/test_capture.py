"""`wpcompare capture` (wpcompare.capture) of tests/capture_target.c, whose accesses after
SIGUSR1 come in an order the test computes: the trace must be that order, the image its
bytes, the replay of both verified, and the system as it was afterwards, also after an
interrupted capture.

Needs root, perf with the exceptions:page_fault_user tracepoint, zram and a C compiler;
skipped, with the reason, elsewhere.
"""
import glob
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import pytest

from wpcompare import capture as captures
from wpcompare import trace as traces
from wpcompare.errors import UnsupportedError

HERE = os.path.dirname(os.path.abspath(__file__))
CLI = [sys.executable, "-c", "from wpcompare.cli import main; main()"]
PAGES, THREADS, ACCESSES, SEED = 64, 2, 25, 7    # ACCESSES % THREADS == 1: see known_order
MASK = (1 << 64) - 1


def _mix(x):
    x = (x + 0x9e3779b97f4a7c15) & MASK
    x = ((x ^ (x >> 30)) * 0xbf58476d1ce4e5b9) & MASK
    x = ((x ^ (x >> 27)) * 0x94d049bb133111eb) & MASK
    return x ^ (x >> 31)


def known_order(pages=PAGES, threads=THREADS, accesses=ACCESSES, seed=SEED):
    """(page, write, thread) of capture_target's accesses after SIGUSR1, in order. The last
    writes the page access 1 read: if that read's fault mapped the page writable, the write
    faults no more and capture finds it at the end, by the thread of the page's first entry
    (access 1's: thread 1), which is also the thread that makes the write (accesses % threads)."""
    order = list(range(pages))
    for i in range(pages - 1, 0, -1):
        j = _mix(seed + i) % (i + 1)
        order[i], order[j] = order[j], order[i]
    accesses_made = [(order[k], k % 3 == 0, k % threads) for k in range(accesses)]
    return accesses_made + [(order[1], True, accesses % threads)]


def fill_page(page):
    return b"".join(_mix(page * 4099 + word).to_bytes(8, "little") for word in range(512))


@pytest.fixture(scope="module")
def target_program(tmp_path_factory):
    try:
        captures.check_prerequisites()
    except UnsupportedError as error:
        pytest.skip(error.reason)
    compiler = shutil.which("cc") or shutil.which("gcc")
    if not compiler:
        pytest.skip("no C compiler (cc) to build tests/capture_target.c")
    binary = str(tmp_path_factory.mktemp("target") / "capture_target")
    subprocess.run([compiler, "-O2", "-Wall", "-Wextra", "-Werror", "-pthread", "-o", binary,
                    os.path.join(HERE, "capture_target.c")], check=True)
    return binary


def system_state():
    """What capture changes and must put back."""
    def read(path):
        with open(path) as source:
            return source.read()
    return {
        "swaps": read("/proc/swaps"),
        "page_cluster": read("/proc/sys/vm/page-cluster"),
        "zram": {os.path.basename(path): read(os.path.join(path, "disksize"))
                 for path in sorted(glob.glob("/sys/block/zram*"))},
        "tracefs": [line for line in read("/proc/mounts").splitlines() if " tracefs " in line],
        "temp": sorted(glob.glob(os.path.join(tempfile.gettempdir(), "wpcompare-capture-*"))),
    }


class Target:
    """capture_target running, waiting for SIGUSR1."""

    def __init__(self, binary, pages=PAGES):
        self.process = subprocess.Popen([binary, str(pages), str(THREADS), str(ACCESSES), str(SEED)],
                                        stdout=subprocess.PIPE, text=True)
        self.address = int(self.process.stdout.readline(), 16)
        assert self.process.stdout.readline().strip() == "ready"

    def state(self):
        with open(f"/proc/{self.process.pid}/stat") as source:
            return source.read().rsplit(")", 1)[1].split()[0]

    def close(self):
        self.process.kill()
        self.process.wait()
        self.process.stdout.close()


def _running(program):
    """Pids of live processes whose command line names program (read from /proc, no pgrep:
    it would run with whatever the tests preload)."""
    found = []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as source:
                words = source.read().split(b"\0")
            with open(f"/proc/{entry}/stat") as source:
                state = source.read().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if program.encode() in words and state != "Z":
            found.append(int(entry))
    return found


def _entries(trace):
    return list(zip(trace.pages, trace.writes, trace.thread_of))


def test_capture_of_a_known_order_and_its_replay(target_program, tmp_path):
    before = system_state()
    target = Target(target_program)
    try:
        image, trace_path = str(tmp_path / "t.img"), str(tmp_path / "t.trace")
        done = subprocess.run(CLI + ["capture", "--pid", str(target.process.pid), "--mapping",
                                     f"{target.address:x}", "--image", image, "--trace", trace_path,
                                     "--window", "1", "--signal", "USR1"],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert target.process.stdout.readline().strip() == "done", "the target ran on after capture"
        assert target.state() in "SR", "the target was continued"
    finally:
        target.close()
    assert system_state() == before
    trace = traces.load(trace_path)
    assert trace.mechanism == captures.MECHANISM
    assert trace.region_bytes == PAGES * 4096 and os.path.getsize(image) == PAGES * 4096
    assert _entries(trace) == known_order()
    assert trace.times == sorted(trace.times)
    with open(image, "rb") as source:
        data = source.read()
    for page in range(PAGES):
        assert data[page * 4096:(page + 1) * 4096] == fill_page(page), f"image page {page}"

    replay = subprocess.run(CLI + ["run", "--image", image, "--pattern", f"trace:{trace_path}",
                                   "-s", "mmap", "-s", "uffd", "-s", "sigsegv", "--repeat", "1",
                                   "--warmup", "0", "--latency", "off", "--no-bounds", "-q",
                                   "--format", "json"], capture_output=True, text=True, timeout=120)
    assert replay.returncode == 0, replay.stderr
    import json
    groups = json.loads(replay.stdout)["groups"]
    assert [(group["label"], group["verified"], group["threads"]) for group in groups] \
        == [(name, True, THREADS) for name in ("mmap", "uffd", "sigsegv")]


def test_capture_of_a_started_command(target_program, tmp_path):
    """-- CMD: started, snapshot after --delay, its largest mapping (the target's region, no
    thread stack exists before the signal), ended when capture is done."""
    before = system_state()
    image = str(tmp_path / "c.img")
    pages = 256     # larger than the initial [heap]
    done = subprocess.run(CLI + ["capture", "--image", image, "--window", "1", "--delay", "0.5",
                                 # (no sanitizer runtime preloaded into it: its mappings would be larger)
                                 "--signal", "USR1", "--", "env", "-u", "LD_PRELOAD", target_program,
                                 str(pages), str(THREADS),
                                 str(ACCESSES), str(SEED)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert system_state() == before
    trace = traces.load(image + ".trace")
    assert trace.region_bytes == pages * 4096
    assert _entries(trace) == known_order(pages=pages)
    assert f"command env -u LD_PRELOAD {target_program} " in trace.info["source"]
    assert not _running(target_program), "the started command was ended"


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_capture_puts_everything_back(target_program, tmp_path, signum):
    before = system_state()
    target = Target(target_program)
    try:
        image = str(tmp_path / "i.img")
        capture = subprocess.Popen(CLI + ["capture", "--pid", str(target.process.pid), "--mapping",
                                          f"{target.address:x}", "--image", image, "--window", "60"],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        lines = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = capture.stderr.readline()
            lines.append(line)
            if not line or "recording" in line:
                break
        assert "recording" in lines[-1], "".join(lines)
        during = system_state()
        assert during["swaps"] != before["swaps"] and during["page_cluster"].strip() == "0"
        capture.send_signal(signum)
        _, rest = capture.communicate(timeout=120)
        assert capture.returncode == 128 + signum, rest
        error = [line for line in rest.splitlines() if line.startswith("Error:")]
        assert len(error) == 1 and signal.Signals(signum).name in error[0], rest
        assert system_state() == before
        assert target.state() in "SR", "the target was continued"
        assert os.listdir(tmp_path) == [], "no image or trace of an interrupted capture"
    finally:
        target.close()


def test_refusals_name_the_fix(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(UnsupportedError, match=r"^capture: needs root .*: run it as root$"):
        captures.check_prerequisites()
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(shutil, "which", lambda tool: None if tool == "perf" else "/bin/" + tool)
    with pytest.raises(UnsupportedError, match="needs perf, which is not on PATH: install linux-perf"):
        captures.check_prerequisites()


def test_refused_on_the_command_line_in_one_line(tmp_path):
    done = subprocess.run(CLI + ["capture", "--image", str(tmp_path / "x.img")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "Error: give --pid PID or a command after --, not both or neither"]


def test_perf_script_lines_parse():
    text = ("   4242 12345.000000100:   exceptions:page_fault_user: address=0x7f0000001008 "
            "ip=0x401000 error_code=0x6\n"
            "   4243 12345.000000050: address=0x7f0000000000 ip=0x401000 error_code=0x4\n"
            "junk\n")
    assert captures.parse_perf_script(text) == [(4243, 12345000000050, 0x7f0000000000, 4),
                                                (4242, 12345000000100, 0x7f0000001008, 6)]


def test_build_trace_appends_writes_found_at_the_end_and_folds_threads():
    mapping = captures.Mapping(0x10000, 0x10000 + 8 * 4096, "rw-p", "")
    faults = [(100 + t, 1000 + t, 0x10000 + (t % 8) * 4096, 0x4 | (0x2 if t == 0 else 0))
              for t in range(70)]
    faults.append((5, 5000, 0x9000, 0x6))        # outside the mapping: left out
    trace, appended = captures.build_trace(faults, mapping, {0, 1, 7}, 2.0, "pid 1 (x)")
    assert appended == 2, "page 0 has a recorded write; 1 and 7 get one each"
    assert trace.pages[-2:] == [1, 7] and trace.writes[-2:] == [True, True]
    assert trace.thread_of[-2:] == [1, 7], "by the thread of the page's first entry"
    assert trace.times[-2:] == [2 * 10 ** 9] * 2 and trace.times[0] == 0
    assert trace.threads == 64 and trace.thread_of[64:70] == [0, 1, 2, 3, 4, 5]
    assert trace.info["note"] == ("the last 2 entries are writes found by comparing pages with the "
                                  "image at the end of the window (no write fault recorded); 70 "
                                  "threads faulted: thread k replays those numbered k mod 64")
    assert trace.region_bytes == 8 * 4096


def test_a_second_capture_at_once_is_refused(target_program):
    """vm.page-cluster is saved and put back by each: two at once would leave it at 0."""
    holder = captures._lock()
    try:
        with pytest.raises(UnsupportedError, match="another wpcompare capture is running"):
            captures.capture(pid=os.getpid(), image_path="/nonexistent/x", trace_path="/nonexistent/y",
                             window=1)
    finally:
        holder.close()
    captures._lock().close()
