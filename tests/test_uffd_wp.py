"""Strategy uffd-wp: the copy-and-remap suite of sigsegv, handler placement, the memfd
copy of the image, kernel-mode writes, and the skip paths for missing features."""
import ctypes
import os

import pytest

from chunk_suite import ChunkFixupSuite, maps_lines, open_run
from conftest import assert_ok, skip_unless_available
from wpcompare import binding
from wpcompare.errors import WpcError

MASK_VARIABLE = "WPCOMPARE_UFFD_FEATURE_MASK"
FEATURE_BITS = {"UFFD_FEATURE_PAGEFAULT_FLAG_WP": 0, "UFFD_FEATURE_WP_HUGETLBFS_SHMEM": 12,
                "UFFD_FEATURE_WP_UNPOPULATED": 13}


@pytest.fixture
def uffd_wp_available():
    skip_unless_available("uffd-wp")


@pytest.mark.usefixtures("uffd_wp_available")
class TestUffdWp(ChunkFixupSuite):
    strategy = "uffd-wp"


@pytest.mark.usefixtures("uffd_wp_available")
@pytest.mark.parametrize("placement", ("same", "other", "any"))
def test_handler_runs_where_placed(image, run_strategy, placement):
    if placement == "other" and len(os.sched_getaffinity(0)) < 2:
        pytest.skip("handler-cpu=other needs 2 CPUs")
    row = run_strategy(image, "uffd-wp", params=f"handler-cpu={placement}", op="write")
    assert_ok(row)
    if placement == "same":
        assert row["handler_cpu"] == row["app_cpu"] is not None
    elif placement == "other":
        assert row["handler_cpu"] is not None and row["handler_cpu"] != row["app_cpu"]
    else:
        assert row["handler_cpu"] is None
    assert row["counters"]["wakes"] == row["counters"]["write_faults"]
    assert row["counters"]["unexpected_msgs"] == 0


def _memfd_lifetime(image):
    with open_run(image, "uffd-wp", "fixup=on-write-only", threads=2) as run:
        run.restore()
        before = len(maps_lines("memfd:wpcompare-image"))
        run.touch()
        run.fixup()
        after = len(maps_lines("memfd:wpcompare-image"))
        run.verify()
        counters = {binding.result_text(run.result.counters[i].name): run.result.counters[i].value
                    for i in range(run.result.ncounters)}
        return {"before": before, "after": after, "detached": bool(run.result.detached),
                "restore_ns": run.result.phase[0].ns, "copy_ns": counters["memfd_fill_ns"]}


@pytest.mark.usefixtures("uffd_wp_available")
def test_memfd_copy_is_the_image_until_fixup(image, in_child):
    out = in_child(_memfd_lifetime, image)
    assert out["before"] >= 1, "the region does not map the memfd copy of the image"
    assert out["after"] == 0 and out["detached"]
    # Getting the image into shmem is part of restore.
    assert 0 < out["copy_ns"] <= out["restore_ns"]


def _kernel_write_into_region(image):
    """read(2) into a write-protected chunk: the kernel's own write waits for the handler."""
    with open_run(image, "uffd-wp", "fixup=on-write-only") as run:
        run.restore()
        addr, _ = run.region()
        target = (ctypes.c_char * 64).from_address(addr + binding.PAGE_SIZE)
        read_end, write_end = os.pipe()
        os.write(write_end, b"x" * 64)
        got = os.readv(read_end, [target])
        landed = ctypes.string_at(addr + binding.PAGE_SIZE, 64)
        result = run.result
        run.fixup()
        counters = {binding.result_text(result.counters[i].name): result.counters[i].value
                    for i in range(result.ncounters)}
        return {"got": got, "landed": landed == b"x" * 64, "faults": counters["write_faults"]}


@pytest.mark.usefixtures("uffd_wp_available")
def test_kernel_write_into_protected_chunk_is_served(image, in_child):
    """Where sigsegv fails with EFAULT (test_sigsegv.py), uffd-wp handles the kernel's fault,
    as the descriptor is opened without UFFD_USER_MODE_ONLY where permitted."""
    if binding.uffd_probe()["syscall_errno"] and binding.uffd_probe()["devnode_errno"]:
        pytest.skip("only a user-mode-only userfaultfd is permitted here")
    assert in_child(_kernel_write_into_region, image) == {"got": 64, "landed": True, "faults": 1}


def _mask_honoured(bit):
    return not binding.uffd_probe()["features"] & (1 << bit)


@pytest.mark.parametrize("feature", sorted(FEATURE_BITS))
def test_missing_feature_is_a_skip_with_its_name(image, run_strategy, monkeypatch, feature):
    skip_unless_available("uffd-wp")
    monkeypatch.setenv(MASK_VARIABLE, hex(1 << FEATURE_BITS[feature]))
    if not _mask_honoured(FEATURE_BITS[feature]):
        pytest.skip(f"{MASK_VARIABLE} not honoured by this build (probe.c feature mask not merged)")
    row = run_strategy(image, "uffd-wp", op="write")
    assert row["status"] == "skipped"
    assert feature in row["reason"] and "needs Linux" in row["reason"]


def _restore_with_masked_feature(image):
    with open_run(image, "uffd-wp", None) as run:
        try:
            run.restore()
        except WpcError as error:
            return {"errno": error.errno, "reason": error.reason}
    return {"errno": None}


def test_missing_feature_at_restore_names_it(image, in_child, monkeypatch):
    """Past the probe (a caller that skipped it): restore still fails with the feature's name."""
    skip_unless_available("uffd-wp")
    monkeypatch.setenv(MASK_VARIABLE, hex(1 << FEATURE_BITS["UFFD_FEATURE_WP_UNPOPULATED"]))
    if not _mask_honoured(FEATURE_BITS["UFFD_FEATURE_WP_UNPOPULATED"]):
        pytest.skip(f"{MASK_VARIABLE} not honoured by this build (probe.c feature mask not merged)")
    out = in_child(_restore_with_masked_feature, image)
    assert out["errno"] == 95    # EOPNOTSUPP
    assert "UFFD_FEATURE_WP_UNPOPULATED" in out["reason"]
