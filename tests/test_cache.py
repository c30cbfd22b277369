"""The image cache is not trusted blindly (issue 14, item 8): a changed image is generated
again (and said so), a directory of another user or writable by others is refused with the
fix, a symlink planted under an image's name is removed and never followed, a directory that
cannot be written is one line; `wpcompare cache list|clean`."""
import os

import pytest
from click.testing import CliRunner

from wpcompare import cache
from wpcompare.cli import main

from harness import CLI_COMMAND, in_private_mount_namespace, invoke, is_root

QUICK = ["run", "--size", "1M", "-s", "read", "--repeat", "1", "--warmup", "0", "--quiet"]


def cached_images():
    return sorted(entry["path"] for entry in cache.entries())


def test_a_flipped_byte_is_found_and_the_image_made_again():
    assert invoke(*QUICK).exit_code == 0
    (path,) = cached_images()
    with open(path, "r+b") as image:
        image.seek(300_000)
        byte = image.read(1)
        image.seek(300_000)
        image.write(bytes([byte[0] ^ 0x10]))
    result = invoke(*QUICK)
    assert result.exit_code == 0, result.output
    assert f"the cached image {path} was changed since it was made (1 page(s) differ" in result.stderr
    assert "generating it again" in result.stderr
    again = invoke(*QUICK)
    assert again.exit_code == 0 and "changed" not in again.stderr, "repaired once, then trusted"


def test_an_unchanged_image_is_checked_by_its_record_only(monkeypatch):
    assert invoke(*QUICK).exit_code == 0
    monkeypatch.setattr(cache.binding, "image_check", lambda *args: pytest.fail("full check of an unchanged image"))
    assert invoke(*QUICK).exit_code == 0


def test_a_planted_symlink_is_removed_not_followed(tmp_path):
    assert invoke(*QUICK).exit_code == 0
    (path,) = cached_images()
    target = tmp_path / "victim"
    target.write_bytes(b"x" * (1 << 20))
    os.unlink(path)
    os.unlink(path + cache.RECORD_SUFFIX)
    os.symlink(target, path)
    result = invoke(*QUICK)
    assert result.exit_code == 0, result.output
    assert "was a symlink, not an image wpcompare made: removed" in result.stderr
    assert target.read_bytes() == b"x" * (1 << 20)
    assert not os.path.islink(path)


def test_a_directory_writable_by_others_is_refused():
    directory = cache.cache_dir()
    directory.mkdir(parents=True)
    directory.chmod(0o777)
    result = CliRunner().invoke(main, QUICK)
    assert result.exit_code == 2
    assert f"`chmod go-w {directory}`" in result.output and "writable by others" in result.output


@pytest.mark.skipif(not is_root(), reason="giving the cache directory to another user needs root")
def test_a_directory_of_another_user_is_refused():
    directory = cache.cache_dir()
    directory.mkdir(parents=True, mode=0o700)
    os.chown(directory, 4321, 4321)
    result = CliRunner().invoke(main, QUICK)
    assert result.exit_code == 2
    assert "belongs to uid 4321" in result.output and "set XDG_CACHE_HOME" in result.output


def test_a_directory_that_cannot_be_written_is_one_line(tmp_path):
    directory = cache.cache_dir()
    directory.mkdir(parents=True, mode=0o700)
    if is_root():
        # Root writes anywhere: a read-only bind mount, in a namespace of its own.
        done = in_private_mount_namespace(f"mount --bind -o ro {directory} {directory} && "
                                          f"{CLI_COMMAND} {' '.join(QUICK)}")
        output, code = done.stderr, done.returncode
    else:
        directory.chmod(0o500)
        result = CliRunner().invoke(main, QUICK)
        output, code = result.output, result.exit_code
    assert code == 2, output
    assert output.strip().splitlines()[-1].startswith(f"Error: the image cache '{directory}' is not writable")


def test_cache_list_and_clean():
    assert invoke(*QUICK).exit_code == 0
    assert invoke("run", "--size", "2M", "-s", "read", "--repeat", "1", "--warmup", "0", "--quiet").exit_code == 0
    listed = invoke("cache", "list")
    assert listed.exit_code == 0
    assert "mixed-1M-seed1" in listed.stdout and "mixed-2M-seed1" in listed.stdout
    assert "2 image(s), 3 MiB in" in listed.stdout
    cleaned = invoke("cache", "clean")
    assert cleaned.exit_code == 0 and "removed 4 file(s)" in cleaned.stdout
    assert cached_images() == []
    assert "0 image(s)" in invoke("cache", "list").stdout
