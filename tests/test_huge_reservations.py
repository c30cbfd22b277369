"""Huge pages another process has reserved are not available (issue 14, item 7): the probe
counts free - reserved, skips with the shortfall instead of failing the run, and advises
`nr_hugepages = current total + missing`, never a number that would shrink the pool."""
import os
import subprocess
import sys

import pytest

from wpcompare import binding, strategies
from wpcompare.errors import WpcError

from harness import is_root, problems, stress

POOL = "/sys/kernel/mm/hugepages/hugepages-2048kB"
SIZE = 4 << 20          # an image of 2 huge pages
HOLD = 4                # pages the other process reserves


def pool():
    def read(name):
        with open(f"{POOL}/{name}") as source:
            return int(source.read())
    return {name: read(name + "_hugepages") for name in ("nr", "free", "resv")}


@pytest.fixture
def huge_pool():
    """A pool with at least HOLD + 2 available pages: raised for the test as root if needed, put back."""
    if not os.path.isdir(POOL):
        pytest.skip("no 2 MiB hugetlb pages in this kernel")
    now = pool()
    available = now["free"] - now["resv"]
    raised = 0
    if available < HOLD + 2:
        if not is_root():
            pytest.skip(f"needs {HOLD + 2} available 2 MiB huge pages: sysctl vm.nr_hugepages="
                        f"{now['nr'] + HOLD + 2 - available}")
        raised = HOLD + 2 - available
        with open("/proc/sys/vm/nr_hugepages", "w") as setting:
            setting.write(str(now["nr"] + raised))
        if pool()["free"] - pool()["resv"] < HOLD + 2:
            _shrink(raised)
            pytest.skip("the kernel could not grow the huge-page pool (memory fragmented)")
    yield
    if raised:
        _shrink(raised)


def _shrink(by):
    with open("/proc/sys/vm/nr_hugepages") as setting:
        current = int(setting.read())
    with open("/proc/sys/vm/nr_hugepages", "w") as setting:
        setting.write(str(max(0, current - by)))


def _hold_all_but(left):
    """Another process reserving every available page but `left` (reserved, never faulted in)."""
    now = pool()
    count = now["free"] - now["resv"] - left
    code = ("import mmap,sys;m=mmap.mmap(-1,%d*2**21,flags=mmap.MAP_PRIVATE|mmap.MAP_ANONYMOUS|0x40000);"
            "print('held',flush=True);sys.stdin.read()" % count)
    holder = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True)
    assert holder.stdout.readline().strip() == "held"
    return holder


def _release(holder):
    holder.stdin.close()
    holder.wait(10)


def test_reserved_pages_are_not_available_and_the_advice_grows_the_pool(huge_pool):
    holder = _hold_all_but(1)
    try:
        now = pool()
        with pytest.raises(WpcError) as refused:
            binding.probe_strategy("uffd-huge", None, SIZE)
    finally:
        _release(holder)
    reason = refused.value.reason
    assert "2 needed, 1 available" in reason, reason
    assert f"{now['resv']} of them reserved by other mappings" in reason
    assert f"`sysctl vm.nr_hugepages={now['nr'] + 1}`" in reason, reason


def test_stress_passes_while_another_process_holds_reservations(huge_pool, make_image):
    image = make_image(SIZE, seed=7, kind="random")
    choices = [strategies.parse_choice(text) for text in ("uffd-huge", "uffd-hybrid:page=2M", "uffd")]
    holder = _hold_all_but(1)
    try:
        rows = stress(image, choices, rounds=2)
    finally:
        _release(holder)
    assert not problems(rows, image.pages), "\n".join(problems(rows, image.pages))
    huge = [row for row in rows if row["label"] == "uffd-huge"]
    assert huge and all(row["status"] == "skipped" for row in huge)
    assert "reserved by other mappings" in huge[0]["reason"]
