"""Nothing left behind: descriptors, memfds, mappings, huge pages, threads, signal
handlers, temporary files and worker processes, after every run and after an
interrupted one.

Within a run, every strategy of the table is checked in a forked child: the
process's state after wpc_run_destroy must equal its state before the run,
whether the run completed, failed, or was torn down half-way (with a
background fixup still running). Across runs, `wpcompare run` is started as a
subprocess and interrupted (SIGINT as a terminal's Ctrl-C sends it, or
SIGKILL), and nothing of it may remain.
"""
import gc
import json
import os
import resource
import signal
import subprocess
import time

import pytest

from wpcompare import binding, process_state, strategies
from wpcompare.errors import WpcError
from wpcompare.worker import HUGE_PAGE_DIR
from wpcompare.check import run_through

from harness import CLI, in_child, open_run, skip_unless_available

NAMES = [strategy.name for strategy in strategies.all_strategies()]


# ---- inside one worker process ----

def _run_phases(image, strategy, params, stop):
    """Run the strategy up to `stop` (or through a failure) and destroy it: (done, failed, region)."""
    with open_run(image, strategy, params or None, op="mixed", threads=4, seed=5) as run:
        return run_through(run, stop)


def _run_to(argument):
    """In a forked child: run the strategy up to `stop` (or through a failure), destroy, compare."""
    image, strategy, params, stop, inject = argument
    if inject:
        os.environ.update(inject)
    try:
        # A first run fills what the C library keeps for reuse, not a leak:
        # cached thread stacks (8 MiB each) and per-thread malloc arenas.
        _run_phases(image, strategy, params, stop)
        # Garbage the parent held when it forked (a pipe of an earlier test's worker in a
        # reference cycle) would otherwise be collected, and its descriptor closed, mid-check.
        gc.collect()
        space_before = process_state.address_space()
        before = process_state.state(image.path)
        done, failed, region = _run_phases(image, strategy, params, stop)
    except WpcError as error:
        return {"skipped": error.reason}
    still_mapped = process_state.mapped_within(*region) if region else []
    after = process_state.settled_state(image.path, before["threads"])
    space_after = process_state.address_space()
    before["region_still_mapped"], after["region_still_mapped"] = [], still_mapped
    growth = process_state.address_space_grew(space_before, space_after)
    return {"before": before, "after": after, "done": done, "failed": failed, "growth": growth,
            "region_kb": region[1] >> 10 if region else 0}


def _check_nothing_left(image, strategy, stop, params=None, inject=None):
    skip_unless_available(strategy, params or None, image)
    outcome = in_child(_run_to, (image, strategy, params, stop, inject))
    if "skipped" in outcome:
        pytest.skip(outcome["skipped"])
    before, after = outcome["before"], outcome["after"]
    for key in before:
        assert after[key] == before[key], (
            f"{strategy} left {key} behind (ran {outcome['done']}, failed: {outcome['failed']}): "
            f"before {before[key]!r}, after {after[key]!r}")
    # Process-wide, anywhere outside the region too (process_state.address_space_grew:
    # more than one VMA or its slack of anonymous memory or VmSize).
    growth = outcome["growth"]
    if "address" in os.environ.get("WPCOMPARE_SANITIZED", ""):
        return outcome     # ASan's allocator maps and unmaps as it likes; the UBSan pass checks
    assert not growth, (
        f"{strategy} left address space behind (ran {outcome['done']}, failed: "
        f"{outcome['failed']}): growth {growth} for a region of {outcome['region_kb']} kB")
    return outcome


@pytest.mark.parametrize("stop", ["restore", "touch", "verify"])
@pytest.mark.parametrize("strategy", NAMES)
def test_a_run_leaves_nothing_in_its_process(make_image, strategy, stop):
    """Destroyed after restore, after touch (a background fixup may be running) or at the end."""
    image = make_image(4 << 20)
    outcome = _check_nothing_left(image, strategy, stop)
    assert outcome["failed"] is None and outcome["done"][-1] == stop


@pytest.mark.parametrize("strategy", [s.name for s in strategies.all_strategies()
                                      if s.param("fixup") and "background" in s.param("fixup").choices])
def test_teardown_during_background_fixup_leaves_nothing(make_image, strategy):
    image = make_image(8 << 20)
    _check_nothing_left(image, strategy, "restore", params="fixup=background")


@pytest.mark.parametrize("failing", ["1", "2"], ids=["first-mremap", "second-mremap"])
@pytest.mark.parametrize("strategy", NAMES)
def test_a_failed_run_leaves_nothing_in_its_process(image, strategy, failing):
    """The run's first mremap fails, or its second (a chunked fixup half done); a strategy
    that makes no such call did not fail, and says so instead of passing as a failed run."""
    outcome = _check_nothing_left(image, strategy, "verify",
                                  inject={"WPCOMPARE_INJECT_MREMAP_ENOMEM": failing})
    if outcome["failed"] is None:
        pytest.skip(f"{strategy} makes no mremap number {failing}: its run did not fail")


@pytest.mark.parametrize("strategy,params", [
    ("read", "fill=uffdio-copy,threads=3"), ("read", "fill=memcpy,threads=8,thp=yes"),
    ("mmap", "fill=uffdio-copy,threads=3"), ("mmap-wp-async", "fill=uffdio-copy,threads=3"),
    ("uffd-wp-anon", "fill=uffdio-copy,threads=3"), ("uffd-minor", "fill=uffdio-copy,threads=3"),
    ("uffd-wp", "fill=sendfile,threads=3"), ("sigsegv", "fixup=at-checkpoint,threads=3"),
])
def test_a_threaded_fill_leaves_nothing_behind(make_image, strategy, params):
    """Copier threads joined, their stacks back, the fill's userfaultfd closed, its mappings
    (of the image, of a memfd, of a shadow) unmapped."""
    outcome = _check_nothing_left(make_image((5 << 20) + 3 * 4096 + 100), strategy, "verify", params=params)
    assert outcome["failed"] is None, outcome["failed"]


def _generate_with_file_size_limit(path):
    # SIGXFSZ would kill the process: ignored, write() fails with EFBIG instead.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (256 << 10, 256 << 10))
    try:
        binding.generate_image(path, 4 << 20, 1, "mixed")
    except WpcError as error:
        return error.reason
    return None


def test_a_failed_generation_leaves_no_file(tmp_path):
    reason = in_child(_generate_with_file_size_limit, str(tmp_path / "big.img"))
    assert reason and "File too large" in reason
    assert os.listdir(tmp_path) == []


# ---- `wpcompare run` interrupted ----

def _hugepages_free():
    try:
        with open(f"{HUGE_PAGE_DIR}/free_hugepages") as free:
            return int(free.read())
    except (OSError, ValueError):
        return None


def _session_members(sid):
    """Pids of live processes in session sid (zombies are already gone from the kernel's books)."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid and fields[0] != "Z":
            members.append(int(entry))
    return members


def _children_of(pid):
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    if int(stat.read().rsplit(")", 1)[1].split()[1]) == pid:
                        found.append(int(entry))
            except OSError:
                pass
    return found


def _hugetlb_holders():
    """Processes mapping hugetlb pages, for the message when the free count did not come back."""
    holders = {}
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/smaps") as smaps:
                kb = sum(int(line.split()[1]) for line in smaps
                         if line.startswith(("Private_Hugetlb:", "Shared_Hugetlb:")))
            if kb:
                with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                    holders[int(entry)] = (kb, cmdline.read().replace(b"\0", b" ")[:80])
        except OSError:
            pass
    return holders


def _start_run(tmp_path, *args, command="run"):
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "cache"), TMPDIR=str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    return subprocess.Popen([*CLI, command, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)


def _interrupt(process, ready, what, interrupt):
    """Once ready() (within 60 s), interrupt(); the stderr the process exits with. Its
    process group is killed if it is still there after that."""
    try:
        _wait_for(ready, 60, what)
        interrupt()
        _, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    return stderr


def _wait_for(predicate, seconds, what):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.005)
    raise AssertionError(f"gave up waiting for {what}")


def _assert_nothing_left(tmp_path, process, output, hugepages_before):
    _wait_for(lambda: not _session_members(process.pid), 10, "every process of the run to exit")
    assert os.listdir(tmp_path / "tmp") == [], "temporary files left in TMPDIR"
    cache = tmp_path / "cache" / "wpcompare"
    for name in os.listdir(cache) if cache.exists() else []:
        assert ".tmp" not in name, f"temporary image {name} left in the cache"
    if output.exists():
        # Ctrl-C after a row finished: the finished rows are saved, whole, and marked so.
        assert json.loads(output.read_text())["metadata"]["interrupted"] is True
    assert [name for name in os.listdir(tmp_path) if name.startswith(".wpcompare-")] == []
    if hugepages_before is not None:
        try:
            _wait_for(lambda: _hugepages_free() == hugepages_before, 5, "the huge pages to come back")
        except AssertionError:
            pytest.fail(f"free huge pages {hugepages_before} before, {_hugepages_free()} after; "
                        f"held by: {_hugetlb_holders()} (other users of this machine count too)")


@pytest.mark.parametrize("how", ["ctrl-c", "sigint-to-runner", "sigkill-to-runner"])
def test_interrupted_run_leaves_nothing(tmp_path, how):
    hugepages_before = _hugepages_free()
    output = tmp_path / "results.json"
    process = _start_run(tmp_path, "--size", "8M", "--repeat", "100", "--warmup", "0",
                         "-o", str(output))
    if how == "ctrl-c":
        interrupt = lambda: os.killpg(process.pid, signal.SIGINT)   # the terminal signals the group
    elif how == "sigint-to-runner":
        interrupt = lambda: os.kill(process.pid, signal.SIGINT)
    else:
        interrupt = lambda: os.kill(process.pid, signal.SIGKILL)
    # Mid-run: a worker of a strategy run (it has the image open; the system probe does not).
    stderr = _interrupt(process, lambda: [pid for pid in _children_of(process.pid)
                                          if _fd_into(pid, tmp_path / "cache")],
                        "a worker to start", interrupt)
    if how != "sigkill-to-runner":
        assert process.returncode == 130
        assert b"Traceback" not in stderr, stderr.decode()
        assert stderr.decode().splitlines()[-1].startswith("Error: interrupted by SIGINT"), stderr
    else:
        assert process.returncode == -signal.SIGKILL
        assert not output.exists(), "a killed run writes nothing"
    _assert_nothing_left(tmp_path, process, output, hugepages_before)


def test_interrupted_cycle_leaves_no_image(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    output = tmp_path / "results.json"
    process = _start_run(tmp_path, "--size", "8M", "-s", "read", "--cycles", "1000",
                         "--dir", str(images), "-o", str(output), command="cycle")
    stderr = _interrupt(process,
                        lambda: [pid for pid in _children_of(process.pid) if _fd_into(pid, images)],
                        "a cycle worker to open an image",
                        lambda: os.killpg(process.pid, signal.SIGINT))
    assert process.returncode != 0 and b"Traceback" not in stderr, stderr.decode()
    _assert_nothing_left(tmp_path, process, output, None)
    assert os.listdir(images) == [], "the cycle's private image directory was removed"


def _fd_into(pid, directory):
    try:
        return any(os.readlink(f"/proc/{pid}/fd/{fd}").startswith(str(directory))
                   for fd in os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return False


@pytest.mark.parametrize("signal_number", [signal.SIGINT, signal.SIGKILL])
def test_run_interrupted_while_generating_its_image_leaves_no_partial_file(tmp_path, signal_number):
    output = tmp_path / "results.json"
    process = _start_run(tmp_path, "--size", "512M", "-s", "read", "--repeat", "1", "--warmup", "0",
                         "-o", str(output))
    cache = tmp_path / "cache" / "wpcompare"
    try:
        _wait_for(lambda: _fd_into(process.pid, cache), 30, "the image generator to open its file")
        os.killpg(process.pid, signal_number)
        process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert process.returncode != 0
    _assert_nothing_left(tmp_path, process, output, None)
    # SIGINT waits for the generator (C code) to finish: a complete image may stay, never a part.
    for name in os.listdir(cache):
        assert os.path.getsize(cache / name) == 512 << 20, f"{name} is incomplete"
    if signal_number == signal.SIGKILL:
        assert os.listdir(cache) == [], "SIGKILL mid-generation leaves no file at all"


def test_workers_die_with_a_killed_runner(tmp_path):
    """Even SIGKILL of the runner alone (no group signal) takes its worker along (PR_SET_PDEATHSIG)."""
    process = _start_run(tmp_path, "--size", "4M", "-s", "mmap", "--repeat", "1", "--warmup", "0",
                         "--inject", "hang", "--timeout", "600")
    try:
        workers = _wait_for(lambda: [pid for pid in _children_of(process.pid)
                                     if _fd_into(pid, tmp_path / "cache")], 30, "the hanging worker")
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
        _wait_for(lambda: not any(os.path.exists(f"/proc/{pid}") and pid in _session_members(process.pid)
                                  for pid in workers), 10, "the orphaned worker to die")
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert not _session_members(process.pid)
