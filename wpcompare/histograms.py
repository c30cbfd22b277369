"""Percentiles of an exported latency histogram (binding.export_histogram), as the C core computes them.

The definition is csrc/histogram.c's wpc_hist_quantile, applied to the exported buckets, so a
document's percentiles can be computed where no C histogram exists (compare, plot, a file from
another machine). tests/test_results.py checks that both agree, for any recorded values and q.
"""
import math


def percentile(hist, q):
    """Latency at quantile q (0..1) of an exported histogram, as wpc_hist_quantile computes it.

    The rank is ceil(q * count), at least 1, so q = 0.5 of 4 values is the
    2nd smallest; the value is the midpoint of the bucket holding that rank,
    kept within the exactly known min and max (q <= 0 and q >= 1 give them).
    """
    if not hist or not hist["count"]:
        return None
    if q <= 0:
        return hist["min_ns"]
    if q >= 1:
        return hist["max_ns"]
    rank = max(1, math.ceil(q * hist["count"]))
    seen = 0
    for low, high, count in hist["buckets"]:
        seen += count
        if seen >= rank:
            return min(max(low + (high - low) // 2, hist["min_ns"]), hist["max_ns"])
    return hist["max_ns"]
