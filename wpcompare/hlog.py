"""Latency histograms in HdrHistogram's interval log format (`.hlog`), which its own tools
(HistogramLogProcessor, HdrHistogramVisualizer, hdrh for Python, hdrhistogram-go) read.

A log is text: comment lines (`#[Histogram log format version 1.3]`, `#[StartTime: ...]`),
a CSV header line, then one line per interval:

    Tag=NAME,START_S,LENGTH_S,MAX_MS,BASE64

where BASE64 is a histogram in HdrHistogram's V2 compressed encoding, big-endian:

    compressed:  int32 cookie 0x1c849314 (0x1c849304 | 0x10), int32 length, zlib(payload)
    payload:     int32 cookie 0x1c849313 (0x1c849303 | 0x10), int32 length of the counts,
                 int32 normalizing index offset (0), int32 significant digits,
                 int64 lowest discernible value, int64 highest trackable value,
                 float64 integer-to-double ratio (1.0), then the counts array up to its last
                 non-zero entry, each a ZigZag LEB128-64b9B varint: a count as itself, a run
                 of n > 1 zeros as -n.

wpcompare's histograms (csrc/histogram.c) are log-linear buckets [low, high, count] in ns;
HdrHistogram's are its own. Each bucket's count is recorded at the value wpcompare's
percentiles read it as (its midpoint, kept within the exact min and max:
histograms.percentile), in an HdrHistogram of SIGNIFICANT_DIGITS digits from 1 ns, so each
value lands within 0.1% of itself. Tags are `LABEL/OP/HISTOGRAM` (`mmap/write/touch`),
with characters a tag cannot hold (`,` and white space) as `_`. Runs do not record when
their touch began: the intervals of one tag follow each other from 0, each as long as that
run's touch phase.
"""
import base64
import re
import struct
import zlib
from datetime import datetime

SIGNIFICANT_DIGITS = 3
LOWEST = 1
COOKIE_WORD_SIZE = 0x10
ENCODING_COOKIE = 0x1c849303 | COOKIE_WORD_SIZE
COMPRESSED_COOKIE = 0x1c849304 | COOKIE_WORD_SIZE
_HEADER = struct.Struct(">iiiiqqd")
MAX_VALUE_UNIT_RATIO = 1e6          # Interval_Max in ms, as HdrHistogram's log writer prints it


class Layout:
    """Where HdrHistogram keeps a value: its counts array for 1 ns .. highest, at this precision."""

    def __init__(self, highest, digits=SIGNIFICANT_DIGITS, lowest=LOWEST):
        self.lowest, self.highest, self.digits = lowest, max(highest, 2 * lowest), digits
        largest_single_unit = 2 * 10 ** digits
        self.sub_bucket_count_magnitude = (largest_single_unit - 1).bit_length()
        self.sub_bucket_half_count_magnitude = self.sub_bucket_count_magnitude - 1
        self.sub_bucket_count = 1 << self.sub_bucket_count_magnitude
        self.sub_bucket_half_count = self.sub_bucket_count // 2
        self.unit_magnitude = lowest.bit_length() - 1
        self.sub_bucket_mask = (self.sub_bucket_count - 1) << self.unit_magnitude
        self.leading_zero_count_base = 64 - self.unit_magnitude - self.sub_bucket_half_count_magnitude - 1
        buckets, smallest_untrackable = 1, self.sub_bucket_count << self.unit_magnitude
        while smallest_untrackable <= self.highest:
            smallest_untrackable <<= 1
            buckets += 1
        self.counts_length = (buckets + 1) * self.sub_bucket_half_count

    def index_of(self, value):
        bucket = self.leading_zero_count_base - (64 - (value | self.sub_bucket_mask).bit_length())
        sub_bucket = value >> (bucket + self.unit_magnitude)
        return ((bucket + 1) << self.sub_bucket_half_count_magnitude) + (sub_bucket - self.sub_bucket_half_count)

    def value_at(self, index):
        """The lowest value counted at index (HdrHistogram's valueFromIndex)."""
        bucket = (index >> self.sub_bucket_half_count_magnitude) - 1
        sub_bucket = (index & (self.sub_bucket_half_count - 1)) + self.sub_bucket_half_count
        if bucket < 0:
            sub_bucket -= self.sub_bucket_half_count
            bucket = 0
        return sub_bucket << (bucket + self.unit_magnitude)


# ---- ZigZag LEB128-64b9B ----

def _zigzag_varint(value):
    """value as HdrHistogram writes a counts word: ZigZag, then 7 bits a byte (the ninth byte
    of a 64-bit value carries 8)."""
    number = ((value << 1) ^ (value >> 63)) & (2 ** 64 - 1)
    out = bytearray()
    for _ in range(8):
        if number < 0x80:
            out.append(number)
            return bytes(out)
        out.append((number & 0x7f) | 0x80)
        number >>= 7
    out.append(number & 0xff)
    return bytes(out)


def _read_zigzag_varint(data, position):
    number, shift = 0, 0
    for byte_number in range(9):
        byte = data[position]
        position += 1
        if byte_number == 8:
            number |= byte << shift
            break
        number |= (byte & 0x7f) << shift
        shift += 7
        if not byte & 0x80:
            break
    return (number >> 1) ^ -(number & 1), position


# ---- one histogram ----

def recorded_values(histogram):
    """(value ns, count) of an exported wpcompare histogram, each bucket at the value its
    percentiles read it as: the midpoint, within the exact min and max."""
    if not histogram or not histogram.get("count"):
        return []
    low_limit, high_limit = histogram["min_ns"], histogram["max_ns"]
    return [(max(LOWEST, min(max(low + (high - low) // 2, low_limit), high_limit)), count)
            for low, high, count in histogram["buckets"] if count]


def counts_array(values, layout):
    counts = [0] * layout.counts_length
    for value, count in values:
        counts[layout.index_of(value)] += count
    return counts


def encode(values, highest=None):
    """The V2 compressed encoding, base64, of a histogram holding (value, count) pairs."""
    highest = highest or max((value for value, _ in values), default=2)
    layout = Layout(highest)
    counts = counts_array(values, layout)
    last = max((index for index, count in enumerate(counts) if count), default=-1)
    words, index = bytearray(), 0
    while index <= last:
        if counts[index]:
            words += _zigzag_varint(counts[index])
            index += 1
            continue
        zeros = 1
        while index + zeros <= last and counts[index + zeros] == 0:
            zeros += 1
        words += _zigzag_varint(-zeros if zeros > 1 else 0)
        index += zeros
    payload = _HEADER.pack(ENCODING_COOKIE, len(words), 0, layout.digits, layout.lowest, layout.highest,
                           1.0) + bytes(words)
    compressed = zlib.compress(payload, 9)
    return base64.b64encode(struct.pack(">ii", COMPRESSED_COOKIE, len(compressed)) + compressed).decode("ascii")


def decode(text):
    """(layout, counts array) of a V2 compressed, base64 histogram; ValueError if it is not one."""
    data = base64.b64decode(text, validate=True)
    cookie, length = struct.unpack_from(">ii", data)
    if cookie & ~0xf0 != COMPRESSED_COOKIE & ~0xf0:
        raise ValueError(f"compressed cookie {cookie:#x}, expected {COMPRESSED_COOKIE:#x}")
    payload = zlib.decompress(data[8:8 + length])
    cookie, words_length, offset, digits, lowest, highest, _ = _HEADER.unpack_from(payload)
    if cookie & ~0xf0 != ENCODING_COOKIE & ~0xf0 or offset != 0:
        raise ValueError(f"encoding cookie {cookie:#x}, expected {ENCODING_COOKIE:#x}")
    layout = Layout(highest, digits, lowest)
    counts, index, position = [0] * layout.counts_length, 0, _HEADER.size
    end = _HEADER.size + words_length
    while position < end:
        word, position = _read_zigzag_varint(payload, position)
        if word < 0:
            index += -word
        else:
            counts[index] = word
            index += 1
    return layout, counts


# ---- the log ----

_NOT_IN_A_TAG = re.compile(r"[\s,]")


def tag(*parts):
    return _NOT_IN_A_TAG.sub("_", "/".join(str(part) for part in parts))


def interval_log(entries, metadata):
    """The interval log of entries [(tag, length_s, histogram)]: the intervals of a tag follow
    each other from 0 s, each length_s long."""
    timestamp = metadata.get("timestamp")
    lines = ["#[Histogram log format version 1.3]"]
    if timestamp:
        start = datetime.fromisoformat(timestamp)
        lines.append(f"#[StartTime: {start.timestamp():.3f} (seconds since epoch), {start.isoformat()}]")
    lines.append("#[wpcompare: first-access latencies in ns; intervals of a tag follow each other, "
                 "each as long as its run's touch phase]")
    lines.append('"StartTimestamp","Interval_Length","Interval_Max","Interval_Compressed_Histogram"')
    elapsed = {}
    for name, length_s, histogram in entries:
        values = recorded_values(histogram)
        if not values:
            continue
        start_s = elapsed.get(name, 0.0)
        elapsed[name] = start_s + length_s
        # The exact maximum the histogram kept, not its bucket's representative value.
        maximum = histogram.get("max_ns") or max(value for value, _ in values)
        lines.append(f"Tag={name},{start_s:.3f},{length_s:.3f},{maximum / MAX_VALUE_UNIT_RATIO:.3f},"
                     + encode(values, maximum))
    return "\n".join(lines) + "\n"


def read_intervals(text):
    """[(tag, start_s, length_s, max_ms, layout, counts)] of an interval log this module wrote."""
    found = []
    for line in text.splitlines():
        if not line or line.startswith("#") or line.startswith('"'):
            continue
        name = None
        if line.startswith("Tag="):
            name, _, line = line[4:].partition(",")
        start, length, maximum, encoded = line.split(",")
        layout, counts = decode(encoded)
        found.append((name, float(start), float(length), float(maximum), layout, counts))
    return found
