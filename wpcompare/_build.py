"""cffi build script: compiles csrc/*.c into wpcompare._core (API, out-of-line mode).

The cdef is csrc/wpcompare.h itself, minus its include guard and #include lines,
so the C header is the only statement of the interface.
"""
import os
import re
from pathlib import Path

from cffi import FFI

ROOT = Path(__file__).resolve().parent.parent
CSRC = ROOT / "csrc"
HEADER = CSRC / "wpcompare.h"
# The plugin ABI's public header lives in the package (installed with it, printed by
# `wpcompare include-dir`); csrc/plugin.c includes it from there.
PLUGIN_INCLUDE = ROOT / "wpcompare" / "include"
# Relative to ROOT: also what scripts/mutants/run.py compiles a mutated tree with.
INCLUDE_DIRS = [str(CSRC.relative_to(ROOT)), str(PLUGIN_INCLUDE.relative_to(ROOT))]
LIBRARIES = ["dl"]     # dlopen (in libc itself since glibc 2.34)

_DROP = re.compile(r"^\s*#\s*(include|ifndef|endif|if|else|define\s+WPCOMPARE_H\s*$)")


def cdef_text():
    return "\n".join(line for line in HEADER.read_text().splitlines() if not _DROP.match(line))


# WPCOMPARE_SANITIZE (e.g. "address,undefined") builds an instrumented core; .ci/sanitize
# shows how to run it (the runtimes preloaded into Python, and ASan's own SIGSEGV/SIGBUS
# handling off, since the strategies handle those signals themselves).
def extra_compile_args():
    args = ["-std=gnu11", "-O2", "-g", "-Wall", "-Wextra", "-Werror", "-pthread",
            "-fno-strict-aliasing"]
    sanitize = os.environ.get("WPCOMPARE_SANITIZE")
    if sanitize:
        args += [f"-fsanitize={sanitize}", "-fno-omit-frame-pointer"]
    return args


def extra_link_args():
    args = ["-pthread"]
    sanitize = os.environ.get("WPCOMPARE_SANITIZE")
    if sanitize:
        args.append(f"-fsanitize={sanitize}")
    return args


ffibuilder = FFI()
ffibuilder.cdef(cdef_text())
ffibuilder.set_source(
    "wpcompare._core",
    '#include "wpcompare.h"',
    sources=sorted(str(p.relative_to(ROOT)) for p in CSRC.glob("*.c")),
    include_dirs=INCLUDE_DIRS,
    libraries=LIBRARIES,
    extra_compile_args=extra_compile_args(),
    extra_link_args=extra_link_args(),
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
