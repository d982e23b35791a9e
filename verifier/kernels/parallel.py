"""Splitting a kernel's boxes over threads when the batch is large.

The kernels that loop over boxes are compiled with ``nogil=True`` and write into preallocated
outputs for a range of boxes ``[b0, b1)``; ``boxes`` runs them on a small thread pool, one
contiguous range per thread, once the work (elements touched) exceeds ``MIN_WORK`` -- below it,
thread hand-off costs more than it saves. The number of threads follows ``NUMBA_NUM_THREADS``
(default: the number of cores).
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numba

#: elements of work below which a kernel runs on the calling thread
MIN_WORK = 1 << 20

_POOL: ThreadPoolExecutor | None = None
_POOL_PID = -1


def threads() -> int:
    return max(1, int(numba.config.NUMBA_NUM_THREADS))


def boxes(kernel, B: int, work: int, args: tuple) -> None:
    """Run ``kernel(*args, b0, b1)`` over the boxes ``[0, B)``, split over threads when
    ``work`` is large enough and more than one box and thread are available."""
    global _POOL, _POOL_PID
    T = min(threads(), B)
    if T <= 1 or work < MIN_WORK:
        kernel(*args, 0, B)
        return
    if _POOL is None or _POOL_PID != os.getpid():  # a forked child cannot use its parent's
        _POOL = ThreadPoolExecutor(max_workers=threads(), thread_name_prefix="bounds")
        _POOL_PID = os.getpid()
    cuts = [B * i // T for i in range(T + 1)]
    futures = [_POOL.submit(kernel, *args, cuts[i], cuts[i + 1]) for i in range(1, T)]
    kernel(*args, cuts[0], cuts[1])
    for f in futures:
        f.result()
