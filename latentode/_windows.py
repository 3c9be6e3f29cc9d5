"""Long series as windows: training examples cut from them, and the context window of each query.

A latent ODE places one z0 at the start of each series' window. For a few long series (a
sensor, one patient's years of labs) that is one training example per series, and a z0
far from most of the data it must explain. Here, at the boundary, long series become
sub-windows of length ``length`` (internal time units); the model only ever sees windows.

- :func:`cut_windows`: training windows every ``stride``; each window's origin is its
  first point.
- :func:`query_windows`: for prediction, the queries of each series are grouped in
  blocks of ``length / 4``; a block inside the data reads the window of length
  ``length`` centred on it (moved to lie within the data), a block after the data the
  window that ends at the last observation, a block before the data the first window.
"""

from __future__ import annotations

import numpy as np

from ._frame import SeriesSet

MIN_POINTS = 2


def _from_pieces(ids, pieces, series: SeriesSet) -> SeriesSet:
    """A SeriesSet of windows; ``pieces`` lists (start, stop) point ranges of ``series``."""
    lengths = np.array([b - a for a, b in pieces], dtype=np.int64)
    pos = np.concatenate([np.arange(a, b) for a, b in pieces]) if pieces else np.empty(0, np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    time = series.time[pos]
    origin = time[offsets[:-1]] if len(pieces) else np.empty(0)
    return SeriesSet(np.asarray(ids, dtype=object), time, series.values[pos], offsets, origin,
                     np.empty(0, np.int64))


def cut_windows(series: SeriesSet, length: float, stride: float) -> SeriesSet:
    """Training windows ``[a, a + length]`` with ``a`` every ``stride`` from each series' origin.

    Series shorter than ``length`` stay whole. Windows with fewer than ``MIN_POINTS``
    points are dropped. The ids are ``(original id, window start)`` tuples.
    """
    ids, pieces = [], []
    for i in range(series.n_series):
        lo, hi = series.offsets[i], series.offsets[i + 1]
        if hi <= lo:
            continue
        t = series.time[lo:hi]
        starts = np.arange(t[0], max(t[-1] - length, t[0]) + stride * 0.5, stride)
        for a in starts:
            j0, j1 = lo + np.searchsorted(t, a, "left"), lo + np.searchsorted(t, a + length, "right")
            if j1 - j0 >= MIN_POINTS or (len(starts) == 1 and j1 > j0):
                ids.append((series.ids[i], float(a)))
                pieces.append((j0, j1))
    return _from_pieces(ids, pieces, series)


def query_windows(context: SeriesSet, q_codes: np.ndarray, q_t: np.ndarray, length: float):
    """The context window of every query.

    Parameters
    ----------
    context : SeriesSet
        Observed points of each series.
    q_codes : (n_query,) int, series of each query; q_t : (n_query,) float, its time.
    length : float
        Window length (internal time units).

    Returns
    -------
    windows : SeriesSet
        One pseudo-series per (series, block of queries).
    w_codes : (n_query,) int
        The window of each query.
    """
    block = length / 4.0
    q_codes, q_t = np.asarray(q_codes), np.asarray(q_t, dtype=float)
    w_codes = np.empty(len(q_codes), dtype=np.int64)
    ids, pieces = [], []
    for i in np.unique(q_codes):
        lo, hi = context.offsets[i], context.offsets[i + 1]
        sel = np.flatnonzero(q_codes == i)
        if hi <= lo:  # nothing observed: an empty window decodes from the prior mean of the encoder
            ids.append((context.ids[i], None))
            pieces.append((lo, lo))
            w_codes[sel] = len(pieces) - 1
            continue
        t = context.time[lo:hi]
        first, last = t[0], t[-1]
        if last - first <= length:
            key = np.zeros(len(sel), dtype=np.int64)
        else:
            key = np.floor((np.clip(q_t[sel], first, last + block) - first) / block).astype(np.int64)
        for k in np.unique(key):
            mine = sel[key == k]
            if last - first <= length:
                a = first
            else:
                centre = first + (k + 0.5) * block
                a = float(np.clip(centre - length / 2, first, last - length))
            j0, j1 = lo + np.searchsorted(t, a, "left"), lo + np.searchsorted(t, a + length, "right")
            ids.append((context.ids[i], float(a)))
            pieces.append((j0, max(j1, j0 + 1)))
            w_codes[mine] = len(pieces) - 1
    return _from_pieces(ids, pieces, context), w_codes


def auto_window(series: SeriesSet, min_series: int = 32, points: int = 100):
    """The window length chosen by ``window="auto"`` (None: no windows).

    Windows are used when the training data holds fewer than ``min_series`` series whose
    median length exceeds ``2 * points``: a window then spans about ``points`` points
    (``points`` times the median gap between consecutive points).
    """
    lengths = series.lengths[series.lengths > 0]
    if not len(lengths) or len(lengths) >= min_series or np.median(lengths) <= 2 * points:
        return None
    gaps = np.concatenate([np.diff(series.time[series.offsets[i]:series.offsets[i + 1]])
                           for i in range(series.n_series) if series.lengths[i] > 1])
    gaps = gaps[gaps > 0]
    return float(points * np.median(gaps)) if len(gaps) else None
