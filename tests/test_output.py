"""Where `-o` writes (issue 14, items 1 and 2): devices, FIFOs and symlinks are never
replaced by a regular file, an existing file keeps its mode and owner, and a write that
fails after the runs loses nothing: the table is printed first, the document is kept
somewhere safe, named in the one error line."""
import json
import os
import shutil
import stat
import subprocess
import threading

import pytest
from click.testing import CliRunner

from wpcompare import output, results, runner
from wpcompare.cli import main

from harness import CLI, CLI_COMMAND, in_private_mount_namespace, is_root

QUICK = ["run", "--size", "1M", "-s", "read", "--repeat", "1", "--warmup", "0", "--quiet"]


def invoke(*args):
    return CliRunner().invoke(main, [*QUICK, *args], catch_exceptions=False)


def test_a_symlink_to_a_character_device_is_written_through(tmp_path):
    link = tmp_path / "out"
    link.symlink_to("/dev/null")
    result = invoke("-o", str(link))
    assert result.exit_code == 0, result.output
    assert link.is_symlink() and os.readlink(link) == "/dev/null"
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


@pytest.mark.skipif(not is_root(), reason="mknod of a character device needs root")
def test_a_device_node_is_written_not_replaced(tmp_path):
    node = tmp_path / "null"
    os.mknod(node, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    result = invoke("-o", str(node))
    assert result.exit_code == 0, result.output
    assert stat.S_ISCHR(os.lstat(node).st_mode), "the device node is still a device node"


def test_a_fifo_is_written_not_replaced(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    received = []
    reader = threading.Thread(target=lambda: received.append(open(fifo).read()))
    reader.start()
    result = invoke("-o", str(fifo), "--format", "json")
    reader.join(10)
    assert result.exit_code == 0, result.output
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert json.loads(received[0])["schema"] == results.SCHEMA


def test_a_symlink_to_a_file_is_followed_and_the_target_replaced(tmp_path):
    target = tmp_path / "real.json"
    target.write_text("old")
    target.chmod(0o640)
    link = tmp_path / "link.json"
    link.symlink_to(target)
    result = invoke("-o", str(link))
    assert result.exit_code == 0, result.output
    assert link.is_symlink(), "the symlink stays a symlink"
    assert json.loads(target.read_text())["schema"] == results.SCHEMA
    assert stat.S_IMODE(target.stat().st_mode) == 0o640, "the old file's mode is kept"


@pytest.mark.skipif(not is_root(), reason="giving a file to another user needs root")
def test_an_existing_file_keeps_its_owner(tmp_path):
    target = tmp_path / "r.json"
    target.write_text("old")
    os.chown(target, 4321, 4322)
    output.write_export(str(target), "new")
    assert (target.stat().st_uid, target.stat().st_gid) == (4321, 4322)
    assert target.read_text() == "new"


def test_a_directory_behind_a_symlink_is_refused(tmp_path):
    link = tmp_path / "dir"
    link.symlink_to(tmp_path)
    result = CliRunner().invoke(main, [*QUICK, "-o", str(link)])
    assert result.exit_code == 2 and "is a directory" in result.output


def test_a_block_device_is_refused():
    devices = [os.path.join("/dev", name) for name in sorted(os.listdir("/dev"))
               if stat.S_ISBLK(os.lstat(os.path.join("/dev", name)).st_mode)]
    if not devices:
        pytest.skip("no block device in /dev")
    result = CliRunner().invoke(main, [*QUICK, "-o", devices[0]])
    assert result.exit_code == 2 and "is a block device" in result.output


def test_a_directory_removed_mid_run_prints_the_table_and_keeps_the_document(tmp_path, monkeypatch):
    gone = tmp_path / "gone"
    gone.mkdir()
    real = runner.run_matrix

    def run_then_remove(*args, **kwargs):
        rows = real(*args, **kwargs)
        shutil.rmtree(gone)
        return rows

    monkeypatch.setattr(runner, "run_matrix", run_then_remove)
    result = CliRunner().invoke(main, [*QUICK, "-o", str(gone / "r.json")], catch_exceptions=False)
    assert result.exit_code == 1
    assert "strategy" in result.stdout and "read" in result.stdout, "the table came first"
    errors = result.stderr.strip().splitlines()
    assert len(errors) == 1 and errors[0].startswith(f"Error: cannot write {gone / 'r.json'}:"), errors
    kept = errors[0].rsplit("the results are kept in ", 1)[1]
    assert json.load(open(kept))["schema"] == results.SCHEMA


def test_standard_output_on_a_full_device_is_one_line_and_the_document_kept(tmp_path):
    with open("/dev/full", "w") as full:
        done = subprocess.run([*CLI, *QUICK], stdout=full,
                              stderr=subprocess.PIPE, text=True, env=dict(os.environ))
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: cannot write to standard output: No space left"), lines
    kept = lines[0].rsplit("the results are kept in ", 1)[1]
    assert json.load(open(kept))["runs"]
    for command in (["info"], ["list"]):
        with open("/dev/full", "w") as full:
            done = subprocess.run([*CLI, *command], stdout=full,
                                  stderr=subprocess.PIPE, text=True)
        assert done.returncode == 1 and done.stderr.count("\n") == 1, done.stderr


def test_a_full_disk_under_output_keeps_the_document(tmp_path):
    mount = tmp_path / "small"
    mount.mkdir()
    done = in_private_mount_namespace(
        f"mount -t tmpfs -o size=64K tmpfs {mount} && head -c 60K /dev/zero > {mount}/f && "
        f"{CLI_COMMAND} {' '.join(QUICK)} -o {mount}/r.json")
    assert done.returncode == 1, done.stderr
    assert "read" in done.stdout
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "No space left on device" in lines[0], lines
    kept = lines[0].rsplit("the results are kept in ", 1)[1]
    assert json.load(open(kept))["schema"] == results.SCHEMA
