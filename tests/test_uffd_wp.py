"""Strategy uffd-wp: the copy-and-remap suite of sigsegv, handler placement, the memfd
copy of the image, kernel-mode writes, and the skip paths for missing features."""
import pytest

from chunk_suite import ChunkFixupSuite, kernel_write_into_region
from harness import (assert_handler_placed, assert_ok, counters, in_child, maps_lines, open_run,
                     run_strategy, skip_unless_available, skip_unless_two_cpus)
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
def test_handler_runs_where_placed(image, placement):
    if placement == "other":
        skip_unless_two_cpus()
    row = run_strategy(image, "uffd-wp", params=f"handler-cpu={placement}", op="write")
    assert_ok(row)
    assert_handler_placed(row, placement)
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
        return {"before": before, "after": after, "detached": bool(run.result.detached),
                "restore_ns": run.result.phase[0].ns,
                "copy_ns": counters(run.result)["memfd_fill_ns"]}


@pytest.mark.usefixtures("uffd_wp_available")
def test_memfd_copy_is_the_image_until_fixup(image):
    out = in_child(_memfd_lifetime, image)
    assert out["before"] >= 1, "the region does not map the memfd copy of the image"
    assert out["after"] == 0 and out["detached"]
    # Getting the image into shmem is part of restore.
    assert 0 < out["copy_ns"] <= out["restore_ns"]


@pytest.mark.usefixtures("uffd_wp_available")
def test_kernel_write_into_protected_chunk_is_served(image):
    """Where sigsegv fails with EFAULT (test_sigsegv.py), uffd-wp handles the kernel's fault,
    as the descriptor is opened without UFFD_USER_MODE_ONLY where permitted."""
    if binding.uffd_probe()["syscall_errno"] and binding.uffd_probe()["devnode_errno"]:
        pytest.skip("only a user-mode-only userfaultfd is permitted here")
    # The kernel's own write waits for the handler, then lands.
    assert in_child(kernel_write_into_region, image, "uffd-wp") == \
        {"got": 64, "landed": True, "faults": 1}


@pytest.mark.parametrize("feature", sorted(FEATURE_BITS))
def test_missing_feature_is_a_skip_with_its_name(image, monkeypatch, feature):
    skip_unless_available("uffd-wp")
    monkeypatch.setenv(MASK_VARIABLE, hex(1 << FEATURE_BITS[feature]))
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


def test_missing_feature_at_restore_names_it(image, monkeypatch):
    """Past the probe (a caller that skipped it): restore still fails with the feature's name."""
    skip_unless_available("uffd-wp")
    monkeypatch.setenv(MASK_VARIABLE, hex(1 << FEATURE_BITS["UFFD_FEATURE_WP_UNPOPULATED"]))
    out = in_child(_restore_with_masked_feature, image)
    assert out["errno"] == 95    # EOPNOTSUPP
    assert "UFFD_FEATURE_WP_UNPOPULATED" in out["reason"]
