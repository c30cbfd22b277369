"""The C core through the bindings: workload, verifier, detach check, histograms, images."""
import mmap
import os

import pytest

from harness import assert_ok, in_child, open_run, run_strategy
from wpcompare import binding, worker
from wpcompare._core import ffi, lib
from wpcompare.errors import InvalidArgument, VerificationError
from wpcompare.image import Image

BASELINES = ("mmap", "mmap-populate", "read")
PATTERNS = ("seq", "random", "sparse:0.1", "stride:7")


def test_bindings_expose_the_strategy_table():
    rows = {row["name"]: row for row in binding.strategy_rows()}
    for name in BASELINES:
        assert name in rows
        assert rows[name]["description"]
    assert lib.WPC_ABI_VERSION == 1


@pytest.mark.parametrize("strategy", BASELINES)
@pytest.mark.parametrize("pattern", PATTERNS)
@pytest.mark.parametrize("op", ("read", "write"))
@pytest.mark.parametrize("threads", (1, 4))
@pytest.mark.parametrize("latency", ("none", "every"))
def test_baseline_restores_the_right_bytes(image, strategy, pattern, op, threads, latency):
    row = run_strategy(image, strategy, op=op, pattern=pattern, threads=threads, latency=latency)
    assert_ok(row)
    assert row["detached"], "every baseline ends detached after its fixup"
    assert row["time_to_detached_ns"] > 0
    timed = row["touched_pages"] if latency == "every" else 0
    assert row["histograms"]["touch"]["count"] == timed


@pytest.mark.parametrize("pattern,expected", [("seq", 512), ("random", 512),
                                              ("sparse:0.1", 51), ("stride:7", 74)])
def test_pattern_touches_the_expected_number_of_pages(image, pattern, expected):
    row = run_strategy(image, "read", pattern=pattern, threads=3)
    assert_ok(row)
    assert row["touched_pages"] == expected


def test_read_checksum_agrees_across_strategies(image):
    sums = {name: run_strategy(image, name, op="read")["checksum"] for name in BASELINES}
    assert len(set(sums.values())) == 1, sums
    assert sums["mmap"] != 0


def test_overlapping_writers_all_land(image):
    row = run_strategy(image, "mmap", op="write", pattern="random", threads=8, overlap=True)
    assert_ok(row)
    assert row["touched_pages"] == 8 * image.pages


def _corrupt_and_verify(spec):
    image, page = spec
    with open_run(image, "read") as run:
        run.restore()
        run.touch()
        run.fixup()
        addr, _ = run.region()
        ffi.cast("uint8_t *", addr)[page * binding.PAGE_SIZE + 1234] ^= 0x40
        try:
            run.verify()
        except VerificationError as error:
            result = run.result
            return {"raised": error.reason, "mismatched": result.mismatched_pages,
                    "first": result.first_mismatch_page, "verified": result.verified}
    return {"raised": None}


def test_verifier_catches_one_flipped_bit(image):
    outcome = in_child(_corrupt_and_verify, (image, 300))
    assert outcome["raised"] and "first at page 300" in outcome["raised"]
    assert outcome["mismatched"] == 1 and outcome["first"] == 300 and not outcome["verified"]


def _flips_missed(spec):
    """Flip one byte at a time at each (page, offset), verify, flip it back: the flips missed."""
    image, flips = spec
    missed = []
    with open_run(image, "read") as run:
        run.restore()
        run.touch()
        run.fixup()
        addr, _ = run.region()
        region = ffi.cast("uint8_t *", addr)
        for page, offset in flips:
            at = page * binding.PAGE_SIZE + offset
            region[at] ^= 0x01
            try:
                run.verify()
                missed.append((page, offset, "verified"))
            except VerificationError as error:
                if f"first at page {page}" not in error.reason or run.result.mismatched_pages != 1:
                    missed.append((page, offset, error.reason))
            region[at] ^= 0x01
        run.verify()
    return missed


def test_verifier_catches_a_flip_at_every_word_of_a_page(make_image):
    """Every 8-byte word of a page, each at a different byte within it, and the first and
    last byte: a verifier that skips any part of a page misses one of them."""
    image = make_image(64 << 10, kind="random")
    words = binding.PAGE_SIZE // 8
    flips = [(word % image.pages, word * 8 + word % 8) for word in range(words)]
    flips += [(0, 0), (image.pages - 1, binding.PAGE_SIZE - 1)]
    assert in_child(_flips_missed, (image, flips)) == []


@pytest.mark.parametrize("generated", (True, False), ids=("generated", "user-file"))
def test_verifier_catches_the_last_byte_of_an_odd_sized_image(tmp_path, make_image,
                                                              generated):
    size = 3 * binding.PAGE_SIZE + 101
    if generated:
        image = make_image(size, kind="random")
    else:
        path = tmp_path / "odd.img"
        path.write_bytes(os.urandom(size))
        image = Image(str(path), size, None, None, "file")
    # The image's last byte, and the first byte past it (the mapping must read zero there).
    flips = [(3, 100), (3, 101), (3, binding.PAGE_SIZE - 1)]
    assert in_child(_flips_missed, (image, flips)) == []


def _verify_with_lingering_mapping(image):
    with open_run(image, "mmap") as run:
        run.restore()
        run.touch()
        run.fixup()
        with open(image.path, "rb") as f, mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ):
            run.verify()
            lingering = worker.result_fields(run.result)
        run.verify()
        clean = worker.result_fields(run.result)
    return lingering, clean


def test_lingering_image_mapping_is_not_detached(image):
    lingering, clean = in_child(_verify_with_lingering_mapping, image)
    assert lingering["verified"] and lingering["image_mapped"] and not lingering["detached"]
    assert lingering["time_to_detached_ns"] is None
    assert clean["detached"] and not clean["image_mapped"]


def _verify_without_fixup(image):
    with open_run(image, "mmap") as run:
        run.restore()
        run.touch()
        run.verify()
        return worker.result_fields(run.result)


def test_mmap_without_fixup_still_references_the_image(image):
    fields = in_child(_verify_without_fixup, image)
    assert fields["verified"]
    assert fields["foreign_vmas"] >= 1 and fields["image_mapped"] and not fields["detached"]


def test_user_image_with_partial_last_page(tmp_path):
    path = tmp_path / "odd.img"
    data = os.urandom(3 * binding.PAGE_SIZE + 100)
    path.write_bytes(data)
    image = Image(str(path), len(data), None, None, "file")
    for strategy in BASELINES:
        for op in ("read", "write"):
            row = run_strategy(image, strategy, op=op, pattern="seq")
            assert_ok(row)
            assert row["tail_bytes"] == binding.PAGE_SIZE - 100
            assert row["pages"] == 4


def test_user_image_is_verified_against_the_file(tmp_path):
    """Without a generator seed the verifier reads the file: a wrong seed claim is caught."""
    path = tmp_path / "user.img"
    path.write_bytes(os.urandom(16 * binding.PAGE_SIZE))
    claimed = Image(str(path), 16 * binding.PAGE_SIZE, 5, "mixed", "generated")
    row = run_strategy(claimed, "read")
    assert row["status"] == "failed" and not row["verified"]
    assert "pages differ" in row["reason"]


def test_unknown_strategy_and_parameter_are_named():
    with pytest.raises(InvalidArgument, match="unknown strategy 'nope'"):
        binding.validate_params("nope", None)
    with pytest.raises(InvalidArgument, match="unknown parameter 'chunk'"):
        binding.validate_params("mmap", "chunk=4K")


def test_generated_image_is_deterministic(make_image):
    a = make_image(64 * 4096, seed=9, name="a.img")
    b = make_image(64 * 4096, seed=9, name="b.img")
    c = make_image(64 * 4096, seed=10, name="c.img")
    assert open(a.path, "rb").read() == open(b.path, "rb").read()
    assert open(a.path, "rb").read() != open(c.path, "rb").read()
    assert binding.image_page(9, "mixed", 5) == open(a.path, "rb").read()[5 * 4096:6 * 4096]


def test_mixed_image_has_zero_repeated_and_random_pages():
    pages = [binding.image_page(1, "mixed", p) for p in range(2048)]
    zero = sum(page == bytes(4096) for page in pages)
    distinct = len(set(pages))
    assert 0.15 < zero / len(pages) < 0.35
    # random pages are all distinct; zero pages and 16 templates collapse.
    assert distinct < len(pages) * 0.8
    assert all(p != bytes(4096) for p in (binding.image_page(1, "random", q) for q in range(256)))


def test_generated_image_size_need_not_be_whole_pages(make_image):
    img = make_image(10000, seed=2)
    assert os.path.getsize(img.path) == 10000
    assert not [n for n in os.listdir(os.path.dirname(img.path)) if ".tmp." in n]


def test_histogram_buckets_are_within_one_percent():
    value = 10
    while value < 10 * 10**9:
        index = lib.wpc_hist_index(value)
        low, high = lib.wpc_hist_bucket_low(index), lib.wpc_hist_bucket_high(index)
        assert low <= value <= high
        assert (high - low) / 2 <= 0.01 * value
        value = value * 21 // 20 + 1


def test_histogram_quantiles():
    hist = binding.histogram_from_values(range(1, 100001))
    assert hist.count == 100000 and hist.min_ns == 1 and hist.max_ns == 100000
    for q in (0.5, 0.9, 0.99):
        assert abs(lib.wpc_hist_quantile(hist, q) - q * 100000) <= 0.01 * q * 100000
    assert lib.wpc_hist_quantile(hist, 1.0) == 100000
    assert lib.wpc_hist_quantile(hist, 0.0) == 1


def test_concurrent_recorder_loses_no_record_under_contention():
    """4 threads record 1..N between them into one histogram at once (the sigsegv and
    uffd-sigbus handlers record so, on every faulting thread): it must equal one recorder's
    histogram of 1..N, bucket by bucket. Plain increments lose thousands of records here
    whenever the threads overlap, which a busy machine may not let them do every time: 10
    rounds."""
    threads, per_thread = 4, 1_000_000
    total = threads * per_thread
    expected = []
    for index in range(lib.WPC_HIST_BUCKETS):     # how many of 1..total each bucket holds
        low, high = lib.wpc_hist_bucket_low(index), lib.wpc_hist_bucket_high(index)
        expected.append(max(0, min(high, total) - max(low, 1) + 1) if low <= total else 0)
    for _ in range(10):
        hist = ffi.new("struct wpc_hist *")
        lib.wpc_hist_reset(hist)
        assert lib.wpc_test_hist_contend(hist, threads, per_thread) == 0
        assert (hist.count, hist.min_ns, hist.max_ns) == (total, 1, total)
        assert hist.sum_ns == total * (total + 1) // 2
        assert list(hist.buckets) == expected


def test_timer_overhead_is_measured():
    overhead = lib.wpc_timer_overhead_ns()
    assert 0 < overhead < 10000

