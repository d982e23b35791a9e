"""Weighted quantiles of breakpoints: where a convex (or concave) piecewise-linear function of
one variable turns. Its slope changes by ``dl_k >= 0`` at ``tb_k``; the optimum is the first
breakpoint (in value) at which the changes summed so far reach the starting slope's size
``need``. ``weighted_quantile`` finds it in expected O(m) without sorting (the split
multipliers' line search in ``search.bab_kernels``, the dual of ``bounds.lp_cuts.range_max``).
"""
import numpy as np
from numba import njit


#: sample breakpoints that split ``weighted_quantile``'s candidates into 16 value ranges (a
#: binary search of 4 steps places each candidate)
PIVOTS = 15


@njit(cache=True)
def weighted_quantile(tb, dl, m, need):
    """``quickselect``'s answer (the smallest ``tb[k]``, k < m, whose weight ``sum of dl[j]
    over tb[j] <= tb[k]`` reaches ``need``), by one bucketing pass first: 15 sampled
    breakpoints, sorted, cut the values into 16 ranges; each candidate's weight goes to its
    range (branch-free binary search), the range where the running weight reaches ``need``
    is found, and only its candidates (about m / 16) go to ``quickselect`` with what is left
    of ``need``. About twice as fast as ``quickselect`` alone for the ~400 breakpoints of an
    MNIST input. tb and dl are reordered in place."""
    if m <= 4 * PIVOTS:
        return quickselect(tb, dl, m, need)
    piv = np.empty(PIVOTS)
    for s in range(PIVOTS):
        piv[s] = tb[((2 * s + 1) * m) // (2 * PIVOTS)]
    for s in range(1, PIVOTS):
        v = piv[s]
        i = s - 1
        while i >= 0 and piv[i] > v:
            piv[i + 1] = piv[i]
            i -= 1
        piv[i + 1] = v
    wb = np.zeros(PIVOTS + 1)
    top = -1.0
    for k in range(m):
        t = tb[k]
        top = max(top, t)
        i = 8 if t > piv[7] else 0
        i += 4 if t > piv[i + 3] else 0
        i += 2 if t > piv[i + 1] else 0
        i += 1 if t > piv[i] else 0
        wb[i] += dl[k]
    acc = 0.0
    sel = -1
    for i in range(PIVOTS + 1):
        if acc + wb[i] >= need:
            sel = i
            break
        acc += wb[i]
    if sel < 0:
        return 2.0 * top + 1.0
    lo_v = piv[sel - 1] if sel > 0 else -np.inf
    hi_v = piv[sel] if sel < PIVOTS else np.inf
    w = 0
    bmax = -np.inf
    for k in range(m):
        t = tb[k]
        if t > lo_v and t <= hi_v:
            tb[w] = t
            dl[w] = dl[k]
            w += 1
            bmax = max(bmax, t)
    # the range's weight reaches ``need - acc`` up to the order of the sums: if rounding says
    # otherwise, its largest breakpoint is the answer
    return min(quickselect(tb, dl, w, need - acc), bmax)


@njit(cache=True)
def quickselect(tb, dl, m, need):
    """The smallest ``tb[k]`` (k < m) with ``sum of dl[j] over tb[j] <= tb[k]`` >= ``need``
    (dl >= 0), or ``2 max(tb) + 1`` when all of dl sums to less (1 when m = 0). Expected O(m):
    three-way partitions around a median-of-three pivot (tb and dl are reordered in place)."""
    lo = 0
    hi = m
    top = -1.0
    for k in range(m):
        top = max(top, tb[k])
    while hi > lo:
        a, b, c = tb[lo], tb[(lo + hi) // 2], tb[hi - 1]
        pivot = max(min(a, b), min(max(a, b), c))
        # [lo, lt) < pivot, [lt, i) == pivot, (gt, hi) > pivot
        lt = lo
        i = lo
        gt = hi - 1
        while i <= gt:
            t = tb[i]
            if t < pivot:
                tb[i], tb[lt] = tb[lt], tb[i]
                dl[i], dl[lt] = dl[lt], dl[i]
                lt += 1
                i += 1
            elif t > pivot:
                tb[i], tb[gt] = tb[gt], tb[i]
                dl[i], dl[gt] = dl[gt], dl[i]
                gt -= 1
            else:
                i += 1
        w_less = 0.0
        for k in range(lo, lt):
            w_less += dl[k]
        if w_less >= need:
            hi = lt
            continue
        w_eq = 0.0
        for k in range(lt, gt + 1):
            w_eq += dl[k]
        if w_less + w_eq >= need:
            return pivot
        need -= w_less + w_eq
        lo = gt + 1
    return 2.0 * top + 1.0 if m > 0 else 1.0


@njit(cache=True)
def turning_points(points, incs, need):
    """Per row r of ``points``, ``incs`` (R, n) (incs >= 0): the smallest ``points[r, k]`` at
    which ``sum of incs[r, j] over points[r, j] <= points[r, k]`` reaches ``need[r]`` -- where
    a convex piecewise-linear function whose slope starts at ``-need[r]`` and grows by
    ``incs[r, j]`` at ``points[r, j]`` stops falling. The smallest point when ``need[r] <= 0``,
    the largest when the row's increments sum to less than ``need[r]``. Returns (R,)."""
    R, n = points.shape
    out = np.empty(R)
    tb = np.empty(n)
    dl = np.empty(n)
    for r in range(R):
        lo = np.inf
        hi = -np.inf
        total = 0.0
        for k in range(n):
            t = points[r, k]
            tb[k] = t
            dl[k] = incs[r, k]
            lo = min(lo, t)
            hi = max(hi, t)
            total += incs[r, k]
        if need[r] <= 0.0:
            out[r] = lo
        elif total < need[r]:
            out[r] = hi
        else:
            out[r] = min(weighted_quantile(tb, dl, n, need[r]), hi)
    return out
