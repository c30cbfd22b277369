"""The Mann-Whitney U test (two-sided), in plain Python: does one sample tend to be larger?

Used by `wpcompare compare` on the per-run values of two result files. It
assumes nothing about the distribution of run times (they are skewed and
often bimodal), only that runs are independent.

Ranks: ties get the mean of the ranks they span (midranks). U of sample a
counts the pairs (x from a, y from b) with x > y, plus half the ties.

p-value: exact when the pooled sample has at most EXACT_LIMIT values: the
null distribution of a's rank sum is counted over every way of choosing
len(a) of the pooled ranks (with the tied midranks as they are, so ties
are exact too), and p is the share of choices at least as far from the
mean as the observed one. Larger samples use the normal approximation
with the tie correction of the variance and a continuity correction of
1/2, as in scipy.stats.mannwhitneyu(method="asymptotic").
"""
import math
from dataclasses import dataclass

EXACT_LIMIT = 40


@dataclass(frozen=True)
class UTest:
    u: float          # U of the first sample
    p: float          # two-sided p-value
    method: str       # "exact" or "normal"


def midranks(values):
    """Rank of each value in the pooled order, ties sharing the mean rank (1-based)."""
    order = sorted(range(len(values)), key=values.__getitem__)
    ranks = [0.0] * len(values)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        for position in range(start, end + 1):
            ranks[order[position]] = (start + end) / 2 + 1
        start = end + 1
    return ranks


def smallest_p(n1, n2):
    """The smallest two-sided p-value any data can give with these sample sizes."""
    if n1 == 0 or n2 == 0:
        return 1.0
    return min(1.0, 2 / math.comb(n1 + n2, n1))


def mann_whitney_u(a, b):
    """Two-sided Mann-Whitney U test of samples a and b (each at least one value)."""
    n1, n2 = len(a), len(b)
    if not n1 or not n2:
        raise ValueError("each sample needs at least one value")
    ranks = midranks(list(a) + list(b))
    rank_sum = sum(ranks[:n1])
    u = rank_sum - n1 * (n1 + 1) / 2
    if n1 + n2 <= EXACT_LIMIT:
        return UTest(u, _exact_p(ranks, n1), "exact")
    return UTest(u, _normal_p(ranks, u, n1, n2), "normal")


def _exact_p(ranks, n1):
    """Share of the n1-subsets of the pooled ranks whose sum is as extreme as the first n1's."""
    doubled = [round(2 * rank) for rank in ranks]      # midranks are halves: count in integers
    n = len(doubled)
    center = n1 * (n + 1)                              # mean of the doubled rank sum
    observed = abs(sum(doubled[:n1]) - center)
    # ways[k][s]: subsets of the ranks seen so far with k members and doubled sum s.
    ways = [dict() for _ in range(n1 + 1)]
    ways[0][0] = 1
    for seen, rank in enumerate(doubled):
        for k in range(min(seen + 1, n1), 0, -1):
            target = ways[k]
            for total, count in ways[k - 1].items():
                target[total + rank] = target.get(total + rank, 0) + count
    extreme = sum(count for total, count in ways[n1].items() if abs(total - center) >= observed)
    return min(1.0, extreme / math.comb(n, n1))


def _normal_p(ranks, u, n1, n2):
    n = n1 + n2
    ties = {}
    for rank in ranks:
        ties[rank] = ties.get(rank, 0) + 1
    tie_term = sum(t ** 3 - t for t in ties.values()) / (n * (n - 1))
    variance = n1 * n2 / 12 * ((n + 1) - tie_term)
    if variance <= 0:
        return 1.0                                     # every value equal: no evidence of a difference
    distance = max(0.0, abs(u - n1 * n2 / 2) - 0.5)
    return min(1.0, math.erfc(distance / math.sqrt(variance) / math.sqrt(2)))
