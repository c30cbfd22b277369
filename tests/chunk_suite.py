"""Correctness of chunked copy-and-remap (csrc/chunk_fixup.c), shared by sigsegv and uffd-wp.

test_sigsegv.py and test_uffd_wp.py subclass ChunkFixupSuite with their
strategy name, so both strategies pass the same suite. Every run happens in
a forked child: the strategies install signal handlers, start threads and
remap memory, none of which may reach the pytest process.
"""
import ctypes
import mmap
import os
import threading
import time

import pytest

from harness import (HOLD_VARIABLE, assert_ok, counters, hold_arrivals, hold_expired, hold_release,
                     hold_wait, in_child, maps_lines, open_run, run_strategy)
from wpcompare import binding
from wpcompare.check import overlap_seen
from wpcompare.errors import WpcError

CHUNKS = {"4K": 4096, "64K": 65536, "2M": 2 << 20}
FIXUPS = ("background", "at-checkpoint", "on-write-only")
COPIES = ("memcpy", "read")
# A multiple of neither 2 MiB, 64 KiB nor even 4 KiB: the last chunk is short
# and the last page ends past the image.
ODD_SIZE = (3 << 20) + 12345

libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                      ctypes.c_int, ctypes.c_long)
libc.munmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t)
libc.mprotect.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
libc.memcmp.argtypes = (ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t)
libc.memset.argtypes = (ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t)


def chunk_count(size, chunk):
    region = -(-size // binding.PAGE_SIZE) * binding.PAGE_SIZE
    return -(-region // chunk)


def expected_region(image):
    """The bytes a correct restore shows before any write: the generator's pages."""
    return b"".join(binding.image_page(image.seed, image.kind, page)
                    for page in range(image.pages))


def region_buffer(run):
    addr, length = run.region()
    return addr, (ctypes.c_char * length).from_address(addr)


def fill_vmas_to(limit_gap):
    """Create VMAs until the process is limit_gap below vm.max_map_count; returns (addr, len)."""
    with open("/proc/sys/vm/max_map_count") as f:
        limit = int(f.read())
    have = len(maps_lines(""))
    # Every other page PROT_NONE: each mprotect splits off two more VMAs.
    pairs = max(0, (limit - limit_gap - have) // 2)
    length = (2 * pairs + 1) * mmap.PAGESIZE
    addr = libc.mmap(None, length, mmap.PROT_READ, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS, -1, 0)
    assert addr not in (None, ctypes.c_void_p(-1).value)
    for i in range(pairs):
        libc.mprotect(addr + (2 * i + 1) * mmap.PAGESIZE, mmap.PAGESIZE, 0)   # PROT_NONE
    return addr, length



# ---- bodies run in forked children (module level: they must be importable names) ----

def _detach_then_destroy_image(spec):
    """Restore, write, fix up; then unlink and truncate the image and verify every byte."""
    image, strategy, params = spec
    with open_run(image, strategy, params, threads=4) as run:
        run.restore()
        mapped_before = bool(maps_lines(os.path.basename(image.path))) or \
            bool(maps_lines("memfd:wpcompare-image"))
        run.touch()
        run.fixup()
        os.truncate(image.path, 0)
        os.unlink(image.path)
        # The page cache of the image is gone: a chunk still mapping it would SIGBUS here.
        run.verify()
        result = run.result
        return {"mapped_before": mapped_before, "verified": bool(result.verified),
                "detached": bool(result.detached), "image_mapped": bool(result.image_mapped)}


def _read_while_remapping(spec):
    """A reader thread compares never-written pages while writers remap the chunks around them."""
    image, strategy, params = spec
    expected = expected_region(image)
    page = binding.PAGE_SIZE
    with open_run(image, strategy, params, op="write", pattern="stride:2", threads=2) as run:
        run.restore()
        addr, _ = run.region()
        want = ctypes.create_string_buffer(expected, len(expected))
        want_addr = ctypes.addressof(want)
        stop = threading.Event()
        seen = {"passes": 0, "mismatches": 0}

        def reader():
            while not stop.is_set():
                for number in range(1, image.pages, 2):   # stride:2 writes the even pages
                    offset = number * page
                    if libc.memcmp(addr + offset, want_addr + offset, page):
                        seen["mismatches"] += 1
                seen["passes"] += 1

        thread = threading.Thread(target=reader)
        thread.start()
        try:
            while seen["passes"] == 0:
                time.sleep(0.001)
            run.touch()    # cffi drops the GIL: the reader runs throughout
            run.fixup()
        finally:
            stop.set()
            thread.join()
        run.verify()
        return dict(seen, verified=bool(run.result.verified), counters=counters(run.result))


def kernel_write_into_region(image, strategy):
    """read(2) of 64 bytes into a chunk not written yet (fixup=on-write-only): the errno it
    failed with, or what it read, whether that landed, and the write faults after fixup."""
    with open_run(image, strategy, "fixup=on-write-only") as run:
        run.restore()
        addr, _ = run.region()
        target = (ctypes.c_char * 64).from_address(addr + binding.PAGE_SIZE)
        read_end, write_end = os.pipe()
        os.write(write_end, b"x" * 64)
        try:
            got = os.readv(read_end, [target])
        except OSError as error:
            return {"errno": error.errno}
        finally:
            os.close(read_end)
            os.close(write_end)
        landed = ctypes.string_at(addr + binding.PAGE_SIZE, 64) == b"x" * 64
        run.fixup()
        return {"got": got, "landed": landed, "faults": counters(run.result)["write_faults"]}


def _vma_limit(spec):
    """4 KiB chunks written at random with the process a few VMAs below vm.max_map_count."""
    image, strategy, params = spec
    with open_run(image, strategy, params, op="write", pattern="random") as run:
        run.restore()
        filler = fill_vmas_to(limit_gap=40)
        run.touch()
        reason = None
        try:
            run.fixup()
        except WpcError as error:
            reason = error.reason
        libc.munmap(*filler)
        try:
            run.verify()
        except WpcError:
            pass    # the dirty set is unknown after degrading; the bytes must still verify
        return {"reason": reason, "verified": bool(run.result.verified),
                "mismatched": run.result.mismatched_pages}


# ---- races held in a chosen order (WPCOMPARE_INJECT_HOLD) ----

# The chunk every race is held on: in the middle of a 1 MiB image of 64 KiB chunks.
RACE_CHUNK = 7
RACE_CHUNK_BYTES = 65536


class Writer(threading.Thread):
    """Writes 8 bytes into the region from its own thread (ctypes drops the GIL)."""

    def __init__(self, addr, offset, value):
        super().__init__(daemon=True)
        self.addr, self.offset, self.value = addr, offset, value

    def run(self):
        ctypes.memmove(self.addr + self.offset, self.value, len(self.value))

    def finish(self, what, timeout=5):
        self.join(timeout)
        assert not self.is_alive(), \
            f"{what}: a write at byte {self.offset} still blocked {timeout} s after its chunk was released"


def _held_race(spec):
    """One race on chunk RACE_CHUNK, its steps in a fixed order; what the region holds after."""
    image, strategy, params, scenario = spec
    os.environ[HOLD_VARIABLE] = str(RACE_CHUNK)
    try:
        run = open_run(image, strategy, params, op="write", pattern="seq")
    finally:
        del os.environ[HOLD_VARIABLE]
    base = RACE_CHUNK * RACE_CHUNK_BYTES
    expected = bytearray(expected_region(image))
    writes = {}

    def write(offset, value, start=True):
        writes[offset] = value
        expected[offset:offset + len(value)] = value
        writer = Writer(addr, offset, value)
        if start:
            writer.start()
        return writer

    steps = []
    with run:
        run.restore()
        addr, _ = run.region()
        if scenario in ("fault-against-background", "two-faults"):
            if scenario == "fault-against-background":
                # The background thread sees the chunk FRESH first, then a writer faults on it.
                steps.append(hold_wait(1))
                writers = [write(base + 3 * 4096 + 8, b"\x11" * 8)]
            else:
                # Two writers fault on the chunk (each its own SIGSEGV handler).
                writers = [write(base + 5 * 4096 + 16, b"\x22" * 8)]
                steps.append(hold_wait(1))
                writers.append(write(base + 9 * 4096 + 24, b"\x33" * 8))
            steps.append(hold_wait(2))              # both saw it FRESH
            hold_release(0)
            hold_release(1)
            # One claims it and copies it, the other lost the claim: ["copy", "lost"]; two
            # copies would be ["copy", "copy"], both made before either remaps.
            outcome = hold_wait(4)[2:]
            steps.append(sorted(outcome))
            hold_release(2 + outcome.index("copy"))  # the first copy is remapped...
            deadline = time.monotonic() + 2
            while all(writer.is_alive() for writer in writers) and time.monotonic() < deadline:
                time.sleep(0.001)                     # ...and a write lands in it
            hold_release()
            for writer in writers:
                writer.finish(scenario)
        elif scenario == "write-during-copy":
            # The background thread has copied the chunk, not yet remapped it; a writer comes.
            steps.append(hold_wait(1))
            hold_release(0)
            steps.append(hold_wait(2))
            writer = write(base + 2 * 4096 + 40, b"\x44" * 8)
            writer.join(0.3)
            steps.append("writer returned during the copy" if not writer.is_alive() else
                         "writer waits")
            hold_release()
            writer.finish("write during copy")
        # The bytes first: a fixup that fails on its own bookkeeping must not hide them.
        try:
            run.fixup()
            fixup_error = None
        except WpcError as error:
            fixup_error = error.reason
        steps.append(hold_arrivals())
        region = ctypes.string_at(addr, image.size)
    lost = {offset: region[offset:offset + len(value)].hex() for offset, value in writes.items()
            if region[offset:offset + len(value)] != value}
    pages = sorted({offset // binding.PAGE_SIZE for offset in range(image.size)
                    if region[offset] != expected[offset]})
    return {"lost": lost, "pages_differing": pages[:10], "steps": steps,
            "expired": hold_expired(), "fixup_error": fixup_error}


def _vmas_after_writes(spec):
    """Process VMAs gained by restore and touch (4 KiB chunks written at random, nothing
    fixed up yet), and how many of them make up the region."""
    image, strategy, params, without_dontunmap = spec
    if without_dontunmap:
        os.environ["WPCOMPARE_INJECT_NO_DONTUNMAP"] = "1"
    with open_run(image, strategy, params, op="write", pattern="sparse:0.3") as run:
        before = len(maps_lines(""))
        run.restore()
        run.touch()
        addr, length = run.region()
        lines = maps_lines("")
        region = sum(1 for line in lines
                     if int(line.split("-")[0], 16) < addr + length and
                     int(line.split()[0].split("-")[1], 16) > addr)
        return {"gained": len(lines) - before, "region": region}


def assert_race_kept_every_write(out, claims=None):
    """A held race's outcome: every write and every other byte where it belongs (checked
    first, so a lost write is reported as lost bytes), then the bookkeeping."""
    assert not out["lost"], f"writes lost (offset: bytes found): {out['lost']}"
    assert not out["pages_differing"], f"pages differ: {out['pages_differing']}"
    assert out["fixup_error"] is None, out["fixup_error"]
    if claims:
        assert out["steps"][2] == claims, f"claims: {out['steps'][2]}, expected {claims}"
    assert not out["expired"], f"a held thread was never released: {out['steps']}"


class ChunkFixupSuite:
    strategy = None          # set by the subclass

    def run(self, image, params, **fields):
        row = run_strategy(image, self.strategy, params=params, **fields)
        assert_ok(row)
        return row

    @pytest.mark.parametrize("chunk", sorted(CHUNKS))
    @pytest.mark.parametrize("fixup", FIXUPS)
    @pytest.mark.parametrize("op", ("read", "write"))
    @pytest.mark.parametrize("copy", COPIES)
    def test_bytes_right_after_fixup(self, make_image, chunk, fixup, op, copy):
        image = make_image(ODD_SIZE, kind="random")     # no zero page: a page never copied shows
        row = self.run(image, f"chunk={chunk},fixup={fixup},copy={copy}", op=op,
                       threads=2)
        counters = row["counters"]
        assert row["detached"] and not row["image_mapped"]
        assert row["time_to_detached_ns"] > 0
        # Moved pieces of one shadow merge again: the region ends as one VMA.
        assert row["phases"]["fixup"]["vmas"] == 1
        assert counters["chunks"] == chunk_count(ODD_SIZE, CHUNKS[chunk])
        # Each chunk copied exactly once, by whoever claimed it.
        assert (counters["chunks_by_fault"] + counters["chunks_by_background"]
                + counters["chunks_at_fixup"]) == counters["chunks"]
        if fixup != "background":
            assert counters["chunks_by_background"] == 0
        if op == "read":
            assert counters["write_faults"] == 0, "a first read must not fault"
        else:
            assert row["dirty"]["missing"] == 0
        assert row["histograms"]["handler"]["count"] == counters["write_faults"]

    @pytest.mark.parametrize("chunk", ("4K", "64K"))
    @pytest.mark.parametrize("copy", COPIES)
    def test_concurrent_writers_lose_no_write(self, make_image, chunk, copy):
        """4 threads write random pages while the background thread fixes up the rest; the
        verifier checks every page against image + each thread's known values."""
        image = make_image(16 << 20, kind="random")
        # Whether the writers and the background thread overlap depends on scheduling;
        # on a loaded machine one may finish first, so a few attempts are allowed.
        for _ in range(5):
            row = self.run(image, f"chunk={chunk},fixup=background,copy={copy}",
                           op="write", pattern="random", threads=4)
            counters = row["counters"]
            if overlap_seen(counters):
                break
        assert row["touched_pages"] == image.pages
        assert overlap_seen(counters), \
            "writers and the background thread did not both copy chunks: no concurrency tested"
        assert row["dirty"]["missing"] == 0
        assert row["histograms"]["handler"]["count"] == counters["write_faults"]

    @pytest.mark.parametrize("fixup", ("background", "on-write-only"))
    def test_many_writers_on_the_same_chunk(self, make_image, fixup):
        """overlap: all 8 threads write every page, so they fault on the same 2 MiB chunks at once."""
        image = make_image((4 << 20) + 4096, kind="random")
        row = self.run(image, f"chunk=2M,fixup={fixup}", op="write",
                       pattern="seq", threads=8, overlap=True)
        counters = row["counters"]
        assert row["touched_pages"] == 8 * image.pages
        assert (counters["chunks_by_fault"] + counters["chunks_by_background"]
                + counters["chunks_at_fixup"]) == counters["chunks"] == 3
        assert counters["write_faults"] >= counters["chunks_by_fault"]

    def test_reads_during_background_remap_see_the_image(self, make_image):
        image = make_image(16 << 20)
        row = self.run(image, "chunk=4K,fixup=background", op="read", threads=2)
        reference = run_strategy(image, "read", op="read", threads=2)
        assert_ok(reference)
        assert row["checksum"] == reference["checksum"] != 0
        assert row["counters"]["chunks_by_background"] > 0
        assert row["counters"]["write_faults"] == 0

    def test_chunk_remapped_while_another_thread_reads_it(self, make_image):
        image = make_image(16 << 20)
        # on-write-only: every chunk is remapped by a writer while the reader runs.
        out = in_child(_read_while_remapping, (image, self.strategy, "chunk=64K,fixup=on-write-only"))
        assert out["verified"]
        assert out["passes"] > 1
        assert out["mismatches"] == 0
        assert out["counters"]["chunks_by_fault"] == out["counters"]["chunks"]

    @pytest.mark.parametrize("fixup", FIXUPS)
    @pytest.mark.parametrize("copy", COPIES)
    def test_image_unlinked_and_truncated_after_detach(self, make_image, fixup, copy):
        image = make_image(ODD_SIZE, kind="random", name="doomed.img")
        out = in_child(_detach_then_destroy_image, (image, self.strategy, f"fixup={fixup},copy={copy}"))
        if fixup != "background":     # the background thread may be done before we look
            assert out["mapped_before"], "the region did not map the image before fixup"
        assert out["verified"] and out["detached"] and not out["image_mapped"], out

    @pytest.mark.parametrize("chunk,pattern,fixup", [
        ("4K", "sparse:0.3", "on-write-only"),
        ("4K", "sparse:0.3", "at-checkpoint"),
        ("64K", "stride:16", "on-write-only"),
    ])
    def test_dirty_set_is_exact(self, make_image, chunk, pattern, fixup):
        image = make_image(4 << 20, kind="random")
        row = self.run(image, f"chunk={chunk},fixup={fixup}", op="write",
                       pattern=pattern, threads=4)
        dirty = row["dirty"]
        assert dirty["missing"] == 0
        if chunk == "4K":
            # Page-sized chunks: exactly the pages written, nothing more.
            assert dirty["reported"] == row["touched_pages"] == round(0.3 * image.pages)
            assert dirty["extra"] == 0
        else:
            # One written page in every 16-page chunk: the chunk is the unit reported.
            assert row["touched_pages"] == image.pages // 16
            assert dirty["reported"] == image.pages
            assert dirty["extra"] == image.pages - row["touched_pages"]

    def test_dirty_set_with_background_fixup_misses_nothing(self, make_image):
        image = make_image(8 << 20)
        row = self.run(image, "chunk=4K,fixup=background", op="write",
                       pattern="sparse:0.2", threads=4)
        dirty = row["dirty"]
        assert dirty["missing"] == 0
        # Chunks remapped by the background thread while writers ran are reported too.
        assert dirty["reported"] == row["touched_pages"] + dirty["extra"]
        assert dirty["reported"] >= row["touched_pages"]

    @pytest.mark.parametrize("copy", COPIES)
    def test_held_race_fault_claim_against_background_claim(self, make_image, copy):
        """The background thread and a faulting writer both see the chunk FRESH, then both
        claim it: one must lose (and the writer wait), never both copy and remap it."""
        image = make_image(1 << 20, kind="random")
        out = in_child(_held_race, (image, self.strategy,
                                    f"chunk=64K,fixup=background,copy={copy}",
                                    "fault-against-background"))
        assert out["steps"][:2] == [["claim"], ["claim", "claim"]], out
        assert_race_kept_every_write(out, ["copy", "lost"])

    @pytest.mark.parametrize("copy", COPIES)
    def test_held_race_write_during_copy(self, make_image, copy):
        """A writer meets a chunk the background thread has copied and not yet remapped:
        it waits, and its write lands in the new pages."""
        image = make_image(1 << 20, kind="random")
        out = in_child(_held_race, (image, self.strategy,
                                    f"chunk=64K,fixup=background,copy={copy}",
                                    "write-during-copy"))
        assert out["steps"][:2] == [["claim"], ["claim", "copy"]], out
        assert out["steps"][2] == "writer waits", out
        assert_race_kept_every_write(out)

    def test_moved_chunks_cost_vmas_in_the_region_only(self, make_image):
        """MREMAP_DONTUNMAP keeps the shadow one VMA: the VMAs a run gains are the region's
        pieces (written chunks between image chunks) and a few more, where without it every
        moved chunk also punches a hole in the shadow, and vm.max_map_count comes twice as soon."""
        image = make_image(4 << 20, kind="random")
        params = "chunk=4K,fixup=on-write-only"
        kept = in_child(_vmas_after_writes, (image, self.strategy, params, False))
        holes = in_child(_vmas_after_writes, (image, self.strategy, params, True))
        assert kept["region"] > 100, f"too few region pieces to measure: {kept}"
        # A few more: the shadow itself, and what the allocator (ASan's too) maps meanwhile.
        assert kept["gained"] - kept["region"] <= max(8, kept["region"] // 8), \
            f"with MREMAP_DONTUNMAP the run gained {kept['gained']} VMAs for {kept['region']} in the region"
        assert holes["gained"] - holes["region"] >= kept["region"] // 2, \
            f"without MREMAP_DONTUNMAP: {holes}, with it: {kept}"

    def test_vma_limit_fails_the_run_with_a_reason(self, make_image):
        image = make_image(2 << 20)
        out = in_child(_vma_limit, (image, self.strategy, "chunk=4K,fixup=on-write-only"))
        assert out["reason"] and "vm.max_map_count" in out["reason"], out
        assert "raise it" in out["reason"]
        assert out["verified"], f"{out['mismatched']} pages wrong after degrading"
