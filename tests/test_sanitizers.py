"""The sanitizer passes of .ci/sanitize catch what they are there to catch.

Run only in a sanitized build (.ci/sanitize sets WPCOMPARE_SANITIZED to the
-fsanitize list). Each test makes the instrumented core commit one error in
a fresh interpreter, whose reports go to its stderr instead of the pass's
report directory, and checks the sanitizer stopped it there: a pass whose
sanitizer were not active, or not preloaded, or not halting, would fail here
instead of passing everything else silently.
"""
import os
import subprocess
import sys

import pytest

SANITIZED = os.environ.get("WPCOMPARE_SANITIZED", "")
pytestmark = pytest.mark.skipif(not SANITIZED, reason="only in the sanitized builds of .ci/sanitize")


def _run_python(code):
    env = dict(os.environ)
    for name in ("ASAN_OPTIONS", "UBSAN_OPTIONS"):
        # The same options, reporting to stderr: this error is the test's, not the pass's.
        options = [option for option in env.get(name, "").split(":") if not option.startswith("log_path=")]
        env[name] = ":".join(options)
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=120)


def test_the_core_and_the_runtimes_are_loaded():
    with open("/proc/self/maps") as maps:
        mapped = maps.read()
    assert "libubsan" in mapped
    if "address" in SANITIZED:
        assert "libasan" in mapped


@pytest.mark.skipif("address" not in SANITIZED, reason="AddressSanitizer is not in this build")
def test_asan_stops_a_heap_overflow_in_the_core():
    # A page written into a 100-byte block from the (ASan-interposed) malloc.
    done = _run_python(
        "import ctypes\n"
        "from wpcompare._core import ffi, lib\n"
        "libc = ctypes.CDLL(None)\n"
        "libc.malloc.restype = ctypes.c_void_p\n"
        "block = libc.malloc(100)\n"
        "lib.wpc_image_fill_page(1, lib.WPC_IMAGE_RANDOM, 0, ffi.cast('uint8_t *', block))\n"
        "print('not stopped')\n")
    assert done.returncode != 0 and "not stopped" not in done.stdout, done.stderr
    assert "heap-buffer-overflow" in done.stderr
    assert "wpc_image_fill_page" in done.stderr or "fill_random" in done.stderr


def test_ubsan_stops_a_misaligned_store_in_the_core():
    done = _run_python(
        "from wpcompare._core import ffi, lib\n"
        "buffer = ffi.new('uint8_t[]', 8192)\n"
        "lib.wpc_image_fill_page(1, lib.WPC_IMAGE_RANDOM, 0, buffer + 1)\n"
        "print('not stopped')\n")
    assert done.returncode != 0 and "not stopped" not in done.stdout, done.stderr
    assert "misaligned address" in done.stderr


# ---- leaks of the C core (LeakSanitizer, in the ASan build) ----
#
# The passes run with detect_leaks=0: at exit the interpreter leaves memory
# LSan calls leaked. Here a fresh interpreter allocates through malloc only
# (PYTHONMALLOC=malloc: every Python object is then a heap block LSan can
# trace from the interpreter's globals, so Python itself shows no leak), does
# what the core offers, and asks LSan mid-process: anything unreachable then
# is the core's.

_LEAK_SCRIPT = r"""
import ctypes, os, sys
from wpcompare import binding, strategies
from wpcompare.errors import WpcError
from wpcompare.options import parse_pattern

path = sys.argv[1]
binding.generate_image(path, 2 << 20, 1, "mixed")
binding.image_residency(path)
binding.uffd_probe()
binding.timer_overhead_ns()


def run(strategy, params=None, stop="verify", **workload):
    settings = dict(op="mixed", pattern=parse_pattern("random"), threads=4, overlap=False, seed=3,
                    write_fraction=0.5)
    settings.update(workload)
    try:
        binding.probe_strategy(strategy, params)
        with binding.Run(image_path=path, image_seed=1, image_kind="mixed", strategy=strategy,
                         params=params, **settings) as one:
            for phase in binding.PHASES[:binding.PHASES.index(stop) + 1]:
                getattr(one, phase)()
    except WpcError:
        pass                                    # failures are exercised too: their paths free


for strategy in strategies.all_strategies():
    for stop in ("restore", "touch", "verify"):
        run(strategy.name, stop=stop)
    run(strategy.name, op="write", pattern=parse_pattern("sparse:0.3"), threads=1)
    if strategy.params:
        run(strategy.name, params=f"{strategy.params[0].name}=not-a-value")
    os.environ["WPCOMPARE_INJECT_MREMAP_ENOMEM"] = "2"
    run(strategy.name, op="write")
    del os.environ["WPCOMPARE_INJECT_MREMAP_ENOMEM"]
run("mmap", pattern=parse_pattern("stride:3"), overlap=True)
try:
    binding.Run(image_path=path + ".missing", image_seed=None, image_kind=None, strategy="mmap",
                params=None, op="read", pattern=parse_pattern("seq"), threads=1, overlap=False, seed=1)
except WpcError:
    pass
if len(sys.argv) > 2:                           # the control: a run never destroyed
    binding.Run(image_path=path, image_seed=1, image_kind="mixed", strategy="read", params=None,
                op="read", pattern=parse_pattern("seq"), threads=1, overlap=False, seed=1)
import gc
gc.collect()                                    # cycles awaiting collection are not leaks
print("leaks", ctypes.CDLL(None).__lsan_do_recoverable_leak_check())
"""


def _leaks(tmp_path, *extra):
    """The leak records LSan reported in a fresh interpreter running _LEAK_SCRIPT."""
    env = dict(os.environ, PYTHONMALLOC="malloc")
    options = [option for option in env.get("ASAN_OPTIONS", "").split(":")
               if option and not option.startswith(("log_path=", "detect_leaks="))]
    report = tmp_path / "lsan"
    env["ASAN_OPTIONS"] = ":".join(options + ["detect_leaks=1", "leak_check_at_exit=0",
                                              f"log_path={report}"])
    done = subprocess.run([sys.executable, "-c", _LEAK_SCRIPT, str(tmp_path / "leak.img"), *extra],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0 and done.stdout.startswith("leaks"), done.stdout + done.stderr
    text = "".join(path.read_text() for path in tmp_path.glob("lsan.*"))
    return [record for record in text.split("\n\n") if " leak of " in record]


def _the_cores(records):
    # A Python-internal block LSan cannot trace (rare, e.g. a freelist) has no frame of ours.
    return [record for record in records if "_core" in record or "wpc_" in record or "csrc/" in record]


@pytest.mark.skipif("address" not in SANITIZED, reason="LeakSanitizer comes with AddressSanitizer")
def test_the_core_leaks_nothing(tmp_path):
    records = _leaks(tmp_path)
    assert _the_cores(records) == [], "\n\n".join(records)


@pytest.mark.skipif("address" not in SANITIZED, reason="LeakSanitizer comes with AddressSanitizer")
def test_the_leak_check_sees_a_leak(tmp_path):
    records = _the_cores(_leaks(tmp_path, "leak-on-purpose"))
    assert any("wpc_run_create" in record for record in records), records
