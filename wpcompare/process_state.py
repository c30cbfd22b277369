"""What a run could leave behind in its process, as comparable data.

A strategy installs signal handlers, starts threads, opens descriptors (an image, a
userfaultfd, a memfd) and maps memory (the region, a shadow, a staging buffer, huge
pages). After wpc_run_destroy the process must be as it was before the run. Used by
`wpcompare check` (case leaves-nothing) and tests/test_leftovers.py.

    state(image_path)             descriptors, image/memfd/hugetlb mappings, hugetlb kB,
                                  caught signals, threads
    settled_state(path, threads)  the same, once joined threads have left /proc/self/task
    address_space()               VMAs, unnamed anonymous kB, VmSize kB (process-wide)
    mapped_within(start, length)  the /proc/self/maps lines overlapping a range
    differences(before, after)    {key: (before, after)} for every key that changed
"""
import os
import time

# glibc's own SIGCANCEL (32) and SIGSETXID (33), installed with the first thread: bits 31, 32.
_GLIBC_SIGNALS = 1 << 31 | 1 << 32


def state(image_path):
    """What a run could leak in this process, as comparable data."""
    fds = {}
    for fd in os.listdir("/proc/self/fd"):
        try:
            fds[int(fd)] = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            pass                      # the descriptor listdir itself used
    mappings, hugetlb_kb = [], 0
    with open("/proc/self/smaps") as smaps:
        for line in smaps:
            fields = line.split()
            if "-" in fields[0] and len(fields) >= 5:
                path = " ".join(fields[5:])
                if path.startswith(("/memfd:", "/anon_hugepage", "/dev/hugepages")) or \
                        path.split(" (deleted)")[0] == image_path or "userfaultfd" in path:
                    mappings.append(path)
            elif fields[0] in ("Private_Hugetlb:", "Shared_Hugetlb:"):
                hugetlb_kb += int(fields[1])
    with open("/proc/self/status") as status:
        caught = int(next(line.split()[1] for line in status if line.startswith("SigCgt:")), 16)
    caught &= ~_GLIBC_SIGNALS
    return {"fds": fds, "mappings": sorted(mappings), "hugetlb_kb": hugetlb_kb,
            "caught_signals": f"{caught:016x}", "threads": threads()}


def threads():
    return len(os.listdir("/proc/self/task"))


def settled_state(image_path, expected_threads, wait=2.0):
    """state(), after waiting up to `wait` s for the thread count to fall to expected_threads:
    a joined thread leaves /proc/self/task a moment after pthread_join returns."""
    deadline = time.monotonic() + wait
    while threads() > expected_threads and time.monotonic() < deadline:
        time.sleep(0.005)
    return state(image_path)


def maps_lines(buffer=bytearray(1 << 20)):
    """/proc/self/maps, read into a buffer allocated at import, so that no
    allocation of this check lands in the hole a region left."""
    fd = os.open("/proc/self/maps", os.O_RDONLY)
    try:
        size = 0
        while (count := os.readv(fd, [memoryview(buffer)[size:]])) > 0:
            size += count
    finally:
        os.close(fd)
    return bytes(buffer[:size]).decode().splitlines()


def address_space():
    """Process-wide: every VMA, the unnamed anonymous memory, and VmSize (kB).

    A strategy's own scratch mappings (a shadow region, a staging buffer)
    are unnamed anonymous memory anywhere in the process, not in the region."""
    lines = maps_lines()
    anonymous_kb = 0
    for line in lines:
        fields = line.split()
        if len(fields) == 5 and fields[4] == "0":
            low, high = (int(bound, 16) for bound in fields[0].split("-"))
            anonymous_kb += (high - low) >> 10
    with open("/proc/self/status") as status:
        vm_size_kb = int(next(line.split()[1] for line in status if line.startswith("VmSize:")))
    return {"vmas": len(lines), "anonymous_kb": anonymous_kb, "vm_size_kb": vm_size_kb}


def mapped_within(start, length):
    """VMAs of /proc/self/maps overlapping [start, start + length)."""
    overlapping = []
    for line in maps_lines():
        low, high = (int(bound, 16) for bound in line.split()[0].split("-"))
        if low < start + length and high > start:
            overlapping.append(line)
    return overlapping


# The interpreter may map an arena (1 MiB) meanwhile; a leaked shadow or staging buffer is
# region-sized or at least 2 MiB.
ADDRESS_SPACE_SLACK_KB = 1024


def address_space_grew(before, after, slack_kb=ADDRESS_SPACE_SLACK_KB):
    """{key: growth} if the address space grew by more than one VMA or slack_kb; else {}."""
    growth = {key: after[key] - before[key] for key in before}
    if growth["vmas"] <= 1 and growth["anonymous_kb"] <= slack_kb and \
            growth["vm_size_kb"] <= slack_kb:
        return {}
    return growth


def differences(before, after):
    """{key: (before, after)} for every key of state() that changed."""
    return {key: (before[key], after[key]) for key in before if after.get(key) != before[key]}
