"""The page cache's state: set as asked, the same for every run, measured and reported."""
import json
import mmap
import os

import pytest
from click.testing import CliRunner

from harness import is_root
from wpcompare import binding, runner, strategies
from wpcompare.cli import main
from wpcompare.errors import CacheStateError, ImageError, InvalidArgument
from wpcompare.image import CacheMode, Image, PageCache, filesystem_type, parse_cache_mode
from wpcompare.options import parse_pattern

ON_A_DISK = filesystem_type(os.environ.get("TMPDIR", "/tmp")) not in (None, "tmpfs", "ramfs")
needs_a_disk = pytest.mark.skipif(not ON_A_DISK, reason="the temp dir is not on a disk filesystem: "
                                                        "its files cannot be evicted")


def test_cache_modes_parse_and_hot_says_what_replaced_it():
    assert parse_cache_mode("read") == CacheMode("read")
    assert parse_cache_mode("written") == CacheMode("written", 4096)
    assert parse_cache_mode("written:64K") == CacheMode("written", 65536)
    assert str(parse_cache_mode("written:64K")) == "written:64K"
    with pytest.raises(InvalidArgument, match="--cache read .* --cache written"):
        parse_cache_mode("hot")
    for bad in ("written:3K", "written:1G", "warm", "cold:4K"):
        with pytest.raises(InvalidArgument, match="cache mode"):
            parse_cache_mode(bad)


@needs_a_disk
def test_read_state_reads_the_image_back_and_measures_a_pass(image):
    with PageCache(image, CacheMode("read")) as cache:
        assert cache.path == image.path
        assert binding.image_residency(image.path) == (image.pages, image.pages)
        state = cache.describe()["before"]
    assert state["resident_pages"] == state["pages"] == image.pages
    assert 0 < state["pass_faults"] <= image.pages
    assert state["pass_ns"] > 0


@needs_a_disk
def test_written_state_runs_on_a_copy_written_page_by_page_and_removes_it(make_image):
    image = make_image(4 << 20, kind="random")
    with PageCache(image, CacheMode("written")) as cache:
        copy = cache.path
        assert copy != image.path and os.path.dirname(os.path.dirname(copy)) == os.path.dirname(image.path)
        with open(copy, "rb") as a, open(image.path, "rb") as b:
            assert a.read() == b.read()
        state = cache.describe()["before"]
        if is_root():
            # 4 KiB writes leave 4 KiB folios: a fault maps only the fault-around window.
            assert state["folio_pages"] == {"4096": image.pages}
    assert not os.path.exists(os.path.dirname(copy))


@needs_a_disk
@pytest.mark.skipif(not is_root(), reason="folio sizes come from /proc/kpageflags, readable by root only")
def test_read_back_sits_in_larger_folios_than_written_and_a_pass_faults_less(make_image):
    image = make_image(16 << 20, kind="random")
    with PageCache(image, CacheMode("read")) as cache:
        read_back = cache.describe()["before"]
    with PageCache(image, CacheMode("written")) as cache:
        written = cache.describe()["before"]
    assert set(written["folio_pages"]) == {"4096"}
    assert sum(count for size, count in read_back["folio_pages"].items() if int(size) > 4096) > image.pages // 2
    # Folios are naturally aligned and, in a file a whole number of 2 MiB long, lie wholly in it:
    # the pages counted in folios of a size are whole folios of it.
    assert sum(read_back["folio_pages"].values()) == image.pages
    assert all(count % (int(size) // 4096) == 0 for size, count in read_back["folio_pages"].items())
    assert read_back["pass_faults"] < written["pass_faults"]


@needs_a_disk
def test_cold_state_evicts_before_every_run(image):
    with PageCache(image, CacheMode("cold")) as cache:
        assert cache.describe()["before"]["pass_faults"] is None, "no pass over pages not cached"
        with open(image.path, "rb") as source:
            source.read()
        cache.before_run()
        assert binding.image_residency(image.path) == (0, image.pages)


@pytest.mark.skipif(filesystem_type("/dev/shm") != "tmpfs", reason="needs a tmpfs at /dev/shm")
@pytest.mark.parametrize("mode", ["read", "cold"])
def test_states_that_need_eviction_are_refused_on_tmpfs_with_the_reason(mode):
    path = f"/dev/shm/wpcompare-test-{os.getpid()}.img"
    binding.generate_image(path, 1 << 20, 1, "mixed")
    try:
        with pytest.raises(ImageError, match="tmpfs") as caught:
            with PageCache(Image(path, 1 << 20, 1, "mixed", "generated"), CacheMode(mode)):
                pass
        assert "disk filesystem" in caught.value.reason
    finally:
        os.unlink(path)


class _MapsTheImageMidway(runner.Progress):
    """Another process keeping the image cached from the third run to the fifth (here: this one)."""

    def __init__(self, path):
        self.path, self.count, self.mapping = path, 0, None

    def started(self, index, total, spec):
        self.count += 1
        if self.count == 3:
            with open(self.path, "rb") as source:
                self.mapping = mmap.mmap(source.fileno(), 0, prot=mmap.PROT_READ)
            self.mapping.read()    # every page in, and mapped: DONTNEED leaves them
        elif self.count == 5:
            self.mapping.close()


@needs_a_disk
def test_a_run_whose_cache_cannot_be_evicted_is_a_failed_row_and_the_matrix_goes_on(image):
    matrix = runner.Matrix(choices=[strategies.parse_choice("mmap")], ops=["read"],
                           pattern=parse_pattern("random"), image=image, repeat=5, warmup=1,
                           cache=CacheMode("cold"), timeout=60)
    rows = runner.run_matrix(matrix, _MapsTheImageMidway(image.path))
    assert [row["status"] for row in rows] == ["ok", "ok", "failed", "failed", "ok", "ok"]
    failed = rows[2]
    assert failed["failed_phase"] == "cache"
    assert "stayed in the page cache" in failed["reason"] and "maps it" in failed["reason"]


def test_the_state_cannot_be_set_is_one_line_and_exit_2_before_any_run(tmp_path, monkeypatch):
    def refuse(self):
        raise CacheStateError("--cache cold: 3 of 512 pages stayed in the page cache")
    monkeypatch.setattr(PageCache, "_establish", refuse)
    output = tmp_path / "r.json"
    result = CliRunner().invoke(main, ["run", "--size", "2M", "-s", "read", "--repeat", "1",
                                       "--cache", "cold", "-o", str(output)])
    assert result.exit_code == 2
    assert "3 of 512 pages stayed" in result.output
    assert not output.exists()


@needs_a_disk
def test_the_table_says_what_the_cache_held_and_the_json_keeps_both_probes(tmp_path):
    output = tmp_path / "r.json"
    result = CliRunner().invoke(main, ["run", "--size", "2M", "-s", "mmap", "--op", "read", "--repeat", "1",
                                       "--warmup", "0", "--latency", "off", "--no-bounds",
                                       "--cache", "written:16K", "-o", str(output)])
    assert result.exit_code == 0, result.output
    assert "page cache: just written (16 KiB per write()" in result.output
    cache = json.loads(output.read_text())["metadata"]["cache"]
    assert (cache["mode"], cache["write_size"], cache["copy"]) == ("written:16K", 16384, True)
    assert cache["before"]["resident_pages"] == cache["after"]["resident_pages"] == 512
    leftovers = [name for name in os.listdir(tmp_path / "cache" / "wpcompare") if "written" in name]
    assert leftovers == [], "the private copy is removed"
