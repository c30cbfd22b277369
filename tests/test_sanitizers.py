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
