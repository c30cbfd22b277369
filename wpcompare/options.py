"""Parsing of the values people type: sizes, access patterns and latency sampling.

Kept free of the C core so that the CLI can reject bad input before anything
is built, generated or run.
"""
import math
import os
import re
from dataclasses import dataclass

from wpcompare.errors import InvalidArgument

_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_SIZE = re.compile(r"^\s*([0-9]+)\s*([KMGT]?)(?:I?B)?\s*$", re.IGNORECASE | re.ASCII)


def parse_size(text, minimum=1):
    """Bytes from "4096", "4K", "256M", "1G" (binary multiples; "MiB"/"MB" also accepted)."""
    match = _SIZE.match(str(text))
    if not match:
        raise InvalidArgument(
            f"invalid size {text!r}: give bytes or a whole number with K, M or G (e.g. 256M)")
    size = int(match.group(1)) * _UNITS[match.group(2).upper()]
    if size < minimum:
        raise InvalidArgument(f"invalid size {text!r}: must be at least {format_size(minimum)} byte"
                              + ("s" if minimum > 1 else ""))
    return size


def format_size(size):
    """The shortest exact spelling parse_size accepts: 268435456 -> "256M"."""
    for suffix in ("T", "G", "M", "K"):
        unit = _UNITS[suffix]
        if size and size % unit == 0:
            return f"{size // unit}{suffix}"
    return str(size)


def human_bytes(size):
    """Approximate size for people: 1536 -> "1.5 KiB"."""
    value = float(size)
    for suffix in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or suffix == "GiB":
            break
        value /= 1024
    if suffix == "B":
        return f"{size} B"
    return f"{value:.4g} {suffix}"


PATTERN_KINDS = ("seq", "random", "sparse", "stride")
MAX_STRIDE = 2 ** 40        # beyond any region's page count (4 PiB): a larger stride touches page 0 only
_PATTERN_HELP = "use seq, random, sparse:F (0 < F <= 1), stride:N (N >= 1) or trace:PATH"


@dataclass(frozen=True)
class Pattern:
    """Which pages the workload touches, in which order (see the workload semantics)."""

    kind: str
    fraction: float = 1.0
    stride: int = 1
    path: str = None        # trace: the trace file (wpcompare.trace), or a directory of them, absolute

    def __str__(self):
        if self.kind == "trace":
            return f"trace:{self.path}"
        if self.kind == "sparse":
            return f"sparse:{self.fraction:g}"
        if self.kind == "stride":
            return f"stride:{self.stride}"
        return self.kind


TRACE_SUFFIX = ".trace"


def trace_files(pattern):
    """The trace files of a trace pattern: its file, or a directory's *.trace files in natural
    name order (cycle-2 before cycle-10), one per cycle of `cycle`."""
    if not os.path.isdir(pattern.path):
        return [pattern.path]
    names = [name for name in os.listdir(pattern.path) if name.endswith(TRACE_SUFFIX)
             and os.path.isfile(os.path.join(pattern.path, name))]
    if not names:
        raise InvalidArgument(f"--pattern trace:{pattern.path}: the directory holds no *{TRACE_SUFFIX} "
                              "file; put one trace per cycle there (wpcompare capture writes them)")
    natural = sorted(names, key=lambda name: [int(part) if part.isdigit() else part
                                              for part in re.split("([0-9]+)", name)])
    return [os.path.join(pattern.path, name) for name in natural]


def parse_pattern(text):
    """Pattern from "seq", "random", "sparse:0.1", "stride:16" or "trace:PATH" (an existing file,
    or for `cycle` a directory of them; their content is read by wpcompare.trace where the run
    is set up)."""
    kind, sep, arg = str(text).strip().partition(":")
    kind = kind.lower()
    if kind == "trace" and arg:
        if not os.path.isfile(arg) and not os.path.isdir(arg):
            raise InvalidArgument(f"invalid pattern {text!r}: {arg} is neither a file nor a "
                                  "directory (a trace: wpcompare capture writes one)")
        return Pattern("trace", path=os.path.abspath(arg))
    if kind in ("seq", "random") and not sep:
        return Pattern(kind)
    if kind == "sparse" and arg:
        try:
            fraction = float(arg)
        except ValueError:
            fraction = math.nan
        if not (0 < fraction <= 1):
            raise InvalidArgument(
                f"invalid pattern {text!r}: the fraction of sparse:F must be a number with 0 < F <= 1")
        return Pattern("sparse", fraction=fraction)
    if kind == "stride" and arg:
        # ASCII digits only: str.isdigit() also takes "²", which int() refuses.
        if not re.fullmatch("[0-9]+", arg) or not 1 <= int(arg) <= MAX_STRIDE:
            raise InvalidArgument(
                f"invalid pattern {text!r}: the N of stride:N must be a whole number of pages >= 1 "
                f"(and <= {MAX_STRIDE})")
        return Pattern("stride", stride=int(arg))
    raise InvalidArgument(f"invalid pattern {text!r}: {_PATTERN_HELP}")


LATENCY_HELP = "every (a clock read around every first access), sample:N (about every N-th), or off"


@dataclass(frozen=True)
class Latency:
    """How the instrumented touch pass, run in workers of its own, times first accesses."""

    mode: str          # "every", "sample" or "off"
    every: int = 0     # sample: mean distance between timed accesses

    def __str__(self):
        return f"sample:{self.every}" if self.mode == "sample" else self.mode


def parse_latency(text):
    """Latency from "every", "sample:N" (N >= 2) or "off"."""
    mode, sep, arg = str(text).strip().partition(":")
    mode = mode.lower()
    if mode in ("every", "off") and not sep:
        return Latency(mode)
    if mode == "sample" and sep:
        if not re.fullmatch("[0-9]+", arg) or not 2 <= int(arg) <= 1 << 20:
            raise InvalidArgument(f"invalid latency {text!r}: the N of sample:N must be a whole "
                                  "number from 2 to 1048576")
        return Latency("sample", int(arg))
    raise InvalidArgument(f"invalid latency {text!r}: use {LATENCY_HELP}")
