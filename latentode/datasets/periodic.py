"""The synthetic periodic task of Rubanova, Chen & Duvenaud (2019), "Latent ODEs for
Irregularly-Sampled Time Series" (NeurIPS), section 4.1.

The reference code (``Periodic_1d`` with ``z0=1``, amplitude 1, ``--n 1000 --timepoints 100
--max-t 5 --noise-weight 0.01``) samples one irregular time grid shared by all series, a frequency
and a noisy offset per series, and adds one-sided uniform noise to every point but the first. By the
protocol the first 80% of the series (ids 0..799 of 1000) train and the rest (800..999) test.
"""

from __future__ import annotations

import numbers

import numpy as np
import pandas as pd

TASKS = ("interpolation", "extrapolation")


def make_periodic(
    n_series=1000,
    n_points=100,
    t_max=5.0,
    freq_range=(0.4, 0.8),
    offset_std=0.1,
    noise=0.01,
    random_state=None,
):
    """Sample noisy sine waves with random frequency and offset on one shared irregular grid.

    The generative process, in this draw order from one generator:

    1. grid ``t = sort([0] + (n_points - 1) draws of U(0, t_max))``, shared by all series;
    2. per series a frequency ``f`` (see ``freq_range``);
    3. per series an offset ``z0 = 1 + N(0, offset_std**2)``;
    4. ``y = sin(2 pi f t) + z0``, plus ``noise * U[0, 1)`` at every point but the first (t = 0).

    The noise is one-sided (mean ``noise / 2``), as in the reference code.

    Parameters
    ----------
    n_series : int, default 1000
        Number of series.
    n_points : int, default 100
        Points per series, including t = 0.
    t_max : float, default 5.0
        Upper end of the time grid.
    freq_range : (low, high) or list of (low, high), default (0.4, 0.8)
        A pair: ``f ~ U[low, high)``. A list of pairs: a mixture with equal weights, each series
        first picks a component uniformly then draws ``f`` uniformly in it; e.g.
        ``[(0.3, 0.4), (0.9, 1.0)]`` gives a bimodal-frequency variant. A list of one pair draws
        exactly as the pair alone.
    offset_std : float, default 0.1
        Standard deviation of the offset around 1.
    noise : float, default 0.01
        Scale of the uniform noise added to every point but the first.
    random_state : None, int, numpy.random.SeedSequence or numpy.random.Generator, optional
        Passed to :func:`numpy.random.default_rng`: the same int gives the same frame; a
        Generator is used (and advanced) in place.

    Returns
    -------
    pandas.DataFrame, shape (n_series * n_points, 3)
        Columns ``unique_id`` (int64, 0..n_series-1), ``time`` (float64) and ``y`` (float64),
        sorted by ``unique_id`` then ``time``, with a RangeIndex.

    Raises
    ------
    TypeError
        ``n_series`` or ``n_points`` is not an int, or ``random_state`` is of an unsupported type.
    ValueError
        A count is below its minimum (1 series, 2 points), ``t_max`` is not positive and finite,
        a frequency range is not finite with ``0 <= low < high``, or ``offset_std`` or ``noise``
        is negative.

    Notes
    -----
    Protocol of the paper: 1000 series of 100 points on [0, 5]; ids 0..799 train, 800..999 test;
    then :func:`periodic_task` chooses what is observed.

    Examples
    --------
    >>> df = make_periodic(n_series=2, n_points=3, random_state=0)
    >>> df.shape, list(df.columns)
    ((6, 3), ['unique_id', 'time', 'y'])
    >>> bool((df.loc[df["time"] == 0, "y"] - 1).abs().max() < 1)
    True
    """
    n_series = _check_int(n_series, "n_series", minimum=1)
    n_points = _check_int(n_points, "n_points", minimum=2)
    t_max = _check_real(t_max, "t_max", positive=True)
    ranges = _check_freq_range(freq_range)
    offset_std = _check_real(offset_std, "offset_std")
    noise = _check_real(noise, "noise")
    rng = _check_random_state(random_state)

    t = np.sort(np.concatenate(([0.0], rng.uniform(0.0, t_max, n_points - 1))))
    freq = _sample_frequencies(rng, ranges, n_series)
    z0 = 1.0 + rng.normal(0.0, offset_std, n_series)
    y = np.sin(2 * np.pi * freq[:, None] * t[None, :]) + z0[:, None]
    y[:, 1:] += noise * rng.random((n_series, n_points - 1))
    return pd.DataFrame({
        "unique_id": np.repeat(np.arange(n_series, dtype=np.int64), n_points),
        "time": np.tile(t, n_series),
        "y": y.ravel(),
    })  # fmt: skip


def periodic_task(df, task="interpolation", n_observed=50, random_state=None):
    """Split a periodic frame into what a model observes and what it must predict.

    Parameters
    ----------
    df : pandas.DataFrame
        Long frame with columns ``unique_id``, ``time`` and ``y``, e.g. from :func:`make_periodic`.
    task : {"interpolation", "extrapolation"}, default "interpolation"
        ``"interpolation"``: each series observes ``n_observed`` of its points drawn at random
        without replacement, and the target is all its points. ``"extrapolation"``: each series of
        ``n`` points observes its first ``n // 2`` in time order (``n_observed`` of them, drawn at
        random, when fewer), and the target is the remaining ``n - n // 2``.
    n_observed : int or None, default 50
        Points observed per series; None means all that the task allows (every point for
        interpolation, the whole first half for extrapolation).
    random_state : None, int, numpy.random.SeedSequence or numpy.random.Generator, optional
        Seeds the subsampling, as in :func:`make_periodic`.

    Returns
    -------
    observed : pandas.DataFrame, shape (n_series * n_observed, 3)
    target : pandas.DataFrame
        Both with the columns of ``df``, sorted by ``unique_id`` then ``time``, with a RangeIndex.

    Notes
    -----
    All series share one clock from t = 0, but ``observed`` starts at each series' first
    observed point. A :class:`~latentode.LatentODERegressor` places its window start at a
    series' earliest row, so add an empty row (``y`` NaN) at t = 0 to every series of
    ``observed`` before predicting, as ``benchmarks/periodic.py`` does
    (``benchmarks/periodic_window_start.py`` measures what it changes).

    Raises
    ------
    TypeError
        ``df`` is not a DataFrame or ``n_observed`` is not an int or None.
    ValueError
        ``task`` is not one of :data:`TASKS`, a column is missing, ``df`` has no rows, or
        ``n_observed`` is below 1 or above the points available to some series (the message
        names the series).

    Examples
    --------
    >>> df = make_periodic(n_series=3, n_points=10, random_state=0)
    >>> observed, target = periodic_task(df, "extrapolation", n_observed=None)
    >>> len(observed), len(target), bool(observed["time"].max() < target["time"].min())
    (15, 15, True)
    """
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"df must be a pandas DataFrame, got {type(df).__name__}")
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    missing = [c for c in ("unique_id", "time", "y") if c not in df.columns]
    if missing:
        raise ValueError(f"df lacks the column(s) {missing}; found {list(df.columns)}")
    if df.empty:
        raise ValueError("df has no rows")
    if n_observed is not None:
        n_observed = _check_int(n_observed, "n_observed", minimum=1)
    rng = _check_random_state(random_state)

    df = df.sort_values(["unique_id", "time"], kind="stable", ignore_index=True)
    ids = df["unique_id"].to_numpy()
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
    sizes = np.diff(np.r_[starts, len(df)])
    rank = np.arange(len(df)) - np.repeat(starts, sizes)  # position of a point in its series
    if task == "interpolation":
        pool, target = np.ones(len(df), dtype=bool), np.ones(len(df), dtype=bool)
    else:
        pool = rank < np.repeat(sizes // 2, sizes)
        target = ~pool
    observed = _subsample(pool, ids, starts, sizes, n_observed, rng)
    return df[observed].reset_index(drop=True), df[target].reset_index(drop=True)


def _subsample(pool, ids, starts, sizes, n_observed, rng):
    """Keep ``n_observed`` random rows of ``pool`` in each series (all of them when None)."""
    if n_observed is None:
        return pool
    available = np.add.reduceat(pool.astype(np.int64), starts)
    short = np.flatnonzero(available < n_observed)
    if short.size:
        i = short[0]
        raise ValueError(
            f"n_observed={n_observed} exceeds the {available[i]} points that series"
            f" {ids[starts[i]]} can observe"
        )
    # Random keys, +inf outside the pool; the n_observed smallest keys of each series are kept.
    keys = np.where(pool, rng.random(len(pool)), np.inf)
    order = np.lexsort((keys, np.repeat(np.arange(len(starts)), sizes)))
    rank = np.empty(len(pool), dtype=np.int64)
    rank[order] = np.arange(len(pool)) - np.repeat(starts, sizes)
    return rank < n_observed


def _sample_frequencies(rng, ranges, n_series):
    if len(ranges) == 1:
        low, high = ranges[0]
        return rng.uniform(low, high, n_series)
    lows, highs = np.array(ranges).T
    component = rng.integers(len(ranges), size=n_series)
    return rng.uniform(lows[component], highs[component])


def _check_int(value, name, minimum):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value}")
    return int(value)


def _check_real(value, name, positive=False):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if not np.isfinite(value) or value < 0 or (positive and value == 0):
        kind = "positive" if positive else "non-negative"
        raise ValueError(f"{name} must be finite and {kind}, got {value}")
    return value


def _check_freq_range(freq_range):
    """Return ``freq_range`` as a list of ``(low, high)`` float pairs."""
    if _is_pair(freq_range):
        pairs = [freq_range]
    elif isinstance(freq_range, (list, tuple)) and freq_range and all(map(_is_pair, freq_range)):
        pairs = list(freq_range)
    else:
        raise ValueError(
            f"freq_range must be a (low, high) pair or a non-empty list of such pairs,"
            f" got {freq_range!r}"
        )
    for low, high in pairs:
        if not (np.isfinite(low) and np.isfinite(high) and 0 <= low < high):
            raise ValueError(f"freq_range: need finite 0 <= low < high, got ({low}, {high})")
    return [(float(low), float(high)) for low, high in pairs]


def _is_pair(value):
    return (
        isinstance(value, (list, tuple))
        and len(value) == 2
        and all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in value)
    )


def _check_random_state(random_state):
    if random_state is None or isinstance(
        random_state, (numbers.Integral, np.random.SeedSequence, np.random.Generator)
    ):
        return np.random.default_rng(random_state)
    raise TypeError(
        "random_state must be None, an int, a numpy SeedSequence or a numpy Generator,"
        f" got {type(random_state).__name__}"
    )
