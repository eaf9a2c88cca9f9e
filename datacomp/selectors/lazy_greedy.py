"""Exact lazy greedy (Minoux 1978) for a monotone submodular objective, shared by max coverage and facility location.

Each candidate sits in a heap under an upper bound of its marginal gain (its gain when last computed: submodularity
makes gains only shrink). The top candidate's gain is recomputed; if it still beats every other bound it is the true
argmax and is picked, otherwise it goes back under its fresh gain. The sequence equals the naive greedy's: ties are
broken by the lowest index (heap keys ``(-gain, index)``, as ``numpy.argmax`` does in the naive greedy), and a bound
of 0 means every remaining gain is 0, so the lowest remaining index is picked without recomputing anything.
"""

from __future__ import annotations

import heapq
from typing import Callable

import numpy as np

__all__ = ["lazy_greedy"]


def lazy_greedy(bounds: np.ndarray, budget: int, gain: Callable[[int], float], pick: Callable[[int, float], None],
                dtype: type = np.float64) -> tuple[np.ndarray, np.ndarray]:
    """Pick ``budget`` candidates greedily by marginal gain.

    Args:
        bounds: ``[n]`` initial gains (gain of each candidate alone), or any upper bounds of them.
        budget: number of picks, ``<= n``.
        gain: ``gain(i)`` -> the marginal gain of candidate ``i`` given the picks so far.
        pick: ``pick(i, g)`` is called once per pick (``g`` its gain) to update the state ``gain`` reads.
        dtype: dtype of the returned gains (``np.int64`` for counts).

    Returns:
        ``(indices, gains)``: int64 picks in order and the marginal gain of each.
    """
    # Heap entries (-stale_gain, index); heapify of a list built from arrays is O(n).
    heap = list(zip((-np.asarray(bounds)).tolist(), range(len(bounds))))
    heapq.heapify(heap)
    selected = np.empty(budget, dtype=np.int64)
    gains = np.empty(budget, dtype=dtype)
    for step in range(budget):
        while True:
            neg_stale, item = heapq.heappop(heap)
            fresh = gain(item) if neg_stale != 0 else 0
            if not heap or (-fresh, item) <= heap[0]:
                break
            heapq.heappush(heap, (-fresh, item))
        selected[step] = item
        gains[step] = fresh
        pick(item, fresh)
    return selected, gains
