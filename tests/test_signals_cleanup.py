"""`cycle` leaves no image behind (issue 14, item 6): SIGTERM and SIGHUP clean up as Ctrl-C
does; after SIGKILL the next `run` or `cycle` removes the private directory of the process
that is gone, and says so; a live process's directory is left alone."""
import os
import signal
import subprocess
import time

import pytest

from wpcompare import leftovers

from harness import CLI



def _start_cycle(tmp_path):
    env = dict(os.environ, TMPDIR=str(tmp_path))
    process = subprocess.Popen([*CLI, "cycle", "--size", "4M", "--cycles", "1000", "-s", "read"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        made = [name for name in os.listdir(tmp_path) if name.startswith(leftovers.PREFIX)]
        if made and any(os.listdir(tmp_path / made[0])):
            return process, made[0]
        time.sleep(0.05)
    process.kill()
    raise AssertionError("cycle made no private directory within 30 s")


@pytest.mark.parametrize("number", [signal.SIGTERM, signal.SIGHUP])
def test_term_and_hup_remove_the_images(tmp_path, number):
    process, made = _start_cycle(tmp_path)
    process.send_signal(number)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 128 + number, stderr
    assert f"stopped by {signal.Signals(number).name}" in stderr
    assert not (tmp_path / made).exists(), os.listdir(tmp_path / made)


def test_after_sigkill_the_next_command_removes_what_was_left(tmp_path):
    process, made = _start_cycle(tmp_path)
    process.kill()
    process.wait(10)
    assert (tmp_path / made).exists(), "SIGKILL leaves the directory (nothing can run)"
    env = dict(os.environ, TMPDIR=str(tmp_path))
    done = subprocess.run([*CLI, "run", "--size", "1M", "-s", "read", "--repeat", "1", "--warmup", "0", "--quiet"],
                          capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert f"removed {tmp_path / made}, left by a wpcompare process that is gone" in done.stderr
    assert not (tmp_path / made).exists()


def test_a_live_process_keeps_its_directory(tmp_path):
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        live = tmp_path / f"{leftovers.PREFIX}{sleeper.pid}-abcdefgh"
        live.mkdir()
        gone = tmp_path / f"{leftovers.PREFIX}999999999-abcdefgh"
        gone.mkdir()
        unrelated = tmp_path / f"{leftovers.PREFIX}abcdefgh"
        unrelated.mkdir()
        assert leftovers.remove_stale([str(tmp_path)]) == [str(gone)]
        assert live.exists() and unrelated.exists()
    finally:
        sleeper.kill()
        sleeper.wait()


def test_a_written_cache_copy_left_by_a_killed_run_is_removed_by_the_next(tmp_path):
    image = tmp_path / "user.img"
    image.write_bytes(b"\x03" * (1 << 20))
    left = tmp_path / f"{leftovers.WRITTEN_PREFIX}999999999-abcdefgh"
    left.mkdir()
    (left / "image.img").write_bytes(b"\x03" * (1 << 20))
    done = subprocess.run([*CLI, "run", "--image", str(image), "-s", "read", "--repeat", "1", "--warmup", "0",
                           "--quiet", "--cache", "written"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert f"removed {left}, left by a wpcompare process that is gone" in done.stderr
    assert sorted(os.listdir(tmp_path)) == ["user.img"], "the run's own copy went too"
