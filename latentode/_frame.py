"""The boundary: a user's long DataFrame in, validated numpy arrays out, and back.

Everything pandas-specific lives here (and in the estimator's output step). After
:func:`validate_frame` the rest of the package trusts its input.

Vocabulary
----------
long frame
    One row per (series, timestamp), an id column, a time column and one numeric
    column per variable; NaN means "not measured".
time kind
    ``"numeric"`` (int/float), ``"datetime"`` (tz-naive or tz-aware) or
    ``"timedelta"`` (see :mod:`latentode._times`).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from pandas.api import types as ptypes

from ._times import TimeKind, parse_text_times  # noqa: F401  (TimeKind is used through this module too)
from ._validation import InputTypeError, InputValueError

ID_CANDIDATES = ("unique_id", "id")
TIME_CANDIDATES = ("ds", "time", "timestamp")


@dataclass(frozen=True)
class Columns:
    """Resolved column roles. ``id`` is None when the frame is a single series."""

    id: str | None
    time: str
    values: tuple


def _find(columns, candidates):
    for c in candidates:
        if c in columns:
            return c
    lowered = {str(c).lower(): c for c in columns}
    for c in candidates:
        if c in lowered:
            return lowered[c]
    return None


def _in_index(df: pd.DataFrame, names) -> str:
    """A hint when the time (or id) sits in the index instead of a column; '' when not."""
    index_names = [n for n in df.index.names if n is not None]
    hit = [n for n in index_names if n in names or str(n).lower() in names]
    if hit or isinstance(df.index, (pd.DatetimeIndex, pd.TimedeltaIndex)):
        what = f"index level {hit[0]!r}" if hit else f"the index ({type(df.index).__name__})"
        return f" The times are held in {what}, not in a column: pass df.reset_index()."
    return ""


def resolve_columns(df: pd.DataFrame, id_col=None, time_col=None, value_cols=None, fitted=False) -> Columns:
    """Decide which columns are the id, the time and the variables.

    Parameters
    ----------
    df : pandas.DataFrame
    id_col, time_col : str or None
        None looks for the usual names (``unique_id``/``id``; ``ds``/``time``/``timestamp``).
        Without an id column the whole frame is one series.
    value_cols : list of str or None
        None takes every other column.
    fitted : bool, default=False
        The columns are a fitted model's: a missing one is reported as a fitted column the
        frame lacks.
    """
    if not isinstance(df, pd.DataFrame):
        raise InputTypeError(f"expected a pandas DataFrame, got {type(df).__name__}.")
    cols = list(df.columns)
    found = f"columns found: {cols}"
    if time_col is None:
        time_col = _find(cols, TIME_CANDIDATES)
        if time_col is None:
            raise InputValueError(
                f"could not find a time column among {list(TIME_CANDIDATES)}; pass time_col=...; {found}."
                + _in_index(df, TIME_CANDIDATES)
            )
    elif time_col not in cols:
        lacks = f"the frame lacks the fitted time column {time_col!r}" if fitted else \
            f"time_col={time_col!r} is not a column"
        raise InputValueError(f"{lacks}; {found}." + _in_index(df, (time_col,)))
    if id_col is None:
        id_col = _find([c for c in cols if c != time_col], ID_CANDIDATES)
    elif id_col not in cols:
        lacks = f"the frame lacks the fitted id column {id_col!r}" if fitted else f"id_col={id_col!r} is not a column"
        hint = " It is an index level: pass df.reset_index()." if id_col in df.index.names else ""
        raise InputValueError(f"{lacks}; {found}.{hint}")
    if id_col is not None and id_col == time_col:
        raise InputValueError(f"id_col and time_col are the same column {id_col!r}.")
    if value_cols is None:
        value_cols = [c for c in cols if c not in (id_col, time_col)]
        if not value_cols:
            raise InputValueError(f"no variable columns besides id {id_col!r} and time {time_col!r}; {found}.")
    else:
        if isinstance(value_cols, str):
            value_cols = [value_cols]
        value_cols = list(value_cols)
        missing = [c for c in value_cols if c not in cols]
        if missing and fitted:
            shown = ", ".join(map(str, missing))
            raise InputValueError(f"the frame lacks the fitted variable{'s' if len(missing) > 1 else ''} {shown}; "
                                  f"{found}.")
        if missing:
            raise InputValueError(f"value_cols {missing} are not columns; {found}.")
        if len(set(value_cols)) != len(value_cols):
            raise InputValueError(f"value_cols has repeated names: {value_cols}.")
        clash = [c for c in value_cols if c in (id_col, time_col)]
        if clash:
            raise InputValueError(f"value_cols {clash} is also the id or time column.")
        if not value_cols:
            raise InputValueError("value_cols is empty.")
    if len(set(map(str, cols))) != len(cols):
        raise InputValueError(f"the frame has duplicate column names; {found}.")
    return Columns(id_col, time_col, tuple(value_cols))


def value_matrix(df: pd.DataFrame, value_cols) -> np.ndarray:
    """Variables as a float64 array of shape (rows, variables), NaN where missing."""
    out = np.empty((len(df), len(value_cols)), dtype=np.float64)
    for j, c in enumerate(value_cols):
        s = df[c]
        if ptypes.is_bool_dtype(s.dtype) or not ptypes.is_numeric_dtype(s.dtype):
            raise InputTypeError(
                f"variable column {c!r} must be numeric, found dtype {s.dtype}; "
                "drop it or choose the variables with value_cols=[...]."
            )
        col = s.to_numpy(dtype=np.float64, na_value=np.nan)
        if np.isinf(col).any():
            raise InputValueError(f"variable column {c!r} has infinite values; use NaN for 'not measured'.")
        out[:, j] = col
    return out


@dataclass
class SeriesSet:
    """Series as flat, sorted numpy arrays (the validated form of a long frame).

    Attributes
    ----------
    ids : numpy.ndarray, shape (n_series,)
        The original id of each series (object), in order of first appearance.
    time : numpy.ndarray, shape (n_points,)
        Distinct float64 times, sorted within each series.
    values : numpy.ndarray, shape (n_points, n_features)
        Values at those times, NaN where unobserved; repeated (id, time) rows are averaged.
    offsets : numpy.ndarray, shape (n_series + 1,)
        Series ``i`` owns points ``offsets[i]:offsets[i+1]``.
    origin : numpy.ndarray, shape (n_series,)
        Start of each series' window (its earliest time): where z0 sits.
    row_point : numpy.ndarray, shape (n_rows,)
        For each input row, the index of its point.
    """

    ids: np.ndarray
    time: np.ndarray
    values: np.ndarray
    offsets: np.ndarray
    origin: np.ndarray
    row_point: np.ndarray

    @property
    def n_series(self) -> int:
        return len(self.ids)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def point_series(self) -> np.ndarray:
        """Series index of each point, shape (n_points,)."""
        return np.repeat(np.arange(self.n_series), self.lengths)

    def observed_only(self) -> SeriesSet:
        """Drop points where no variable was observed (they carry no information).

        The window origin is kept, so z0 still sits at the start of the original window.
        """
        keep = ~np.isnan(self.values).all(axis=1)
        counts = np.bincount(self.point_series()[keep], minlength=self.n_series)
        offsets = np.concatenate([[0], np.cumsum(counts)])
        return SeriesSet(self.ids, self.time[keep], self.values[keep], offsets, self.origin, np.empty(0, np.int64))

    def subset(self, idx) -> SeriesSet:
        """The series ``idx`` (an integer array), in that order."""
        idx = np.asarray(idx, dtype=np.int64)
        lengths = self.lengths[idx]
        pos = np.concatenate([np.arange(self.offsets[i], self.offsets[i + 1]) for i in idx]) if len(idx) else (
            np.empty(0, np.int64))
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        return SeriesSet(self.ids[idx], self.time[pos], self.values[pos], offsets, self.origin[idx],
                         np.empty(0, np.int64))


def group_points(codes: np.ndarray, t: np.ndarray, values: np.ndarray | None, n_series: int):
    """Sort rows by (series, time), merge repeated (series, time) pairs.

    Parameters
    ----------
    codes : (n_rows,) int series codes in ``[0, n_series)``
    t : (n_rows,) float64 times
    values : (n_rows, n_features) float64 or None

    Returns
    -------
    time : (n_points,), values : (n_points, n_features) or None (nan-mean of merged rows),
    offsets : (n_series + 1,), row_point : (n_rows,) point index of every row.
    """
    order = np.lexsort((t, codes))
    sc, st = codes[order], t[order]
    new = np.ones(len(order), dtype=bool)
    new[1:] = (sc[1:] != sc[:-1]) | (st[1:] != st[:-1])
    point_of_sorted = np.cumsum(new) - 1
    row_point = np.empty(len(order), dtype=np.int64)
    row_point[order] = point_of_sorted
    starts = np.flatnonzero(new)
    time = st[starts]
    counts = np.bincount(sc[starts], minlength=n_series)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    merged = None
    if values is not None:
        v = values[order]
        obs = ~np.isnan(v)
        sums = np.add.reduceat(np.where(obs, v, 0.0), starts, axis=0) if len(starts) else v[:0]
        n = np.add.reduceat(obs.astype(np.int64), starts, axis=0) if len(starts) else v[:0]
        with np.errstate(invalid="ignore", divide="ignore"):
            merged = np.where(n > 0, sums / np.maximum(n, 1), np.nan)
    return time, merged, offsets, row_point


@dataclass
class LongFrame:
    """A validated long frame: the original frame plus its arrays.

    ``series`` holds the points; ``codes`` maps each row to its series.
    """

    frame: pd.DataFrame
    columns: Columns
    time_kind: TimeKind
    codes: np.ndarray
    series: SeriesSet


def series_codes(df: pd.DataFrame, id_col) -> tuple[np.ndarray, np.ndarray]:
    """Integer code per row and the unique ids (order of first appearance)."""
    if id_col is None:
        return np.zeros(len(df), dtype=np.int64), np.array([None], dtype=object)
    ids = df[id_col]
    if ids.isna().any():
        raise InputValueError(f"id column {id_col!r} has {int(ids.isna().sum())} missing ids.")
    codes, uniques = pd.factorize(ids, sort=False)
    return codes.astype(np.int64), np.asarray(uniques, dtype=object)


WIDE_HINT = 20  # a frame fitted as one series with this many variables gets a hint


def warn_if_one_series_by_mistake(df: pd.DataFrame, cols: Columns, name: str = "X") -> None:
    """Warn when a frame without an id column looks like many series (or like a wide frame).

    A column is a candidate id when it holds integers, text or categories with repeated
    values and either is not numeric or the frame has many rows per time (at least two
    on average) while (candidate, time) pairs repeat less than times alone. Many rows per
    time without a candidate, or 20 or more variables, get a hint without a column name.
    """
    if cols.id is not None:
        return
    n, tcol = len(df), cols.time
    time_dups = int(df[tcol].duplicated().sum())
    many_per_time = n >= 4 and time_dups * 2 >= n
    for c in [*cols.values, *(c for c in df.columns if c != tcol and c not in cols.values)]:
        dtype = df[c].dtype
        texty = isinstance(dtype, pd.CategoricalDtype) or ptypes.is_object_dtype(dtype) or \
            ptypes.is_string_dtype(dtype)
        if not texty and not (ptypes.is_integer_dtype(dtype) and not ptypes.is_bool_dtype(dtype)):
            continue
        k = int(df[c].nunique())
        if not 1 < k < n:
            continue
        if texty or (many_per_time and int(df.duplicated([c, tcol]).sum()) < time_dups):
            warnings.warn(
                f"{name}: no id column was found (looked for {list(ID_CANDIDATES)}), so all {n} rows are one "
                f"series; column {c!r} ({dtype}, {k} distinct values) looks like a series id: pass id_col={c!r}.",
                UserWarning, stacklevel=4)
            return
    if many_per_time:
        warnings.warn(
            f"{name}: no id column was found (looked for {list(ID_CANDIDATES)}), so all {n} rows are one series, "
            f"yet they hold only {n - time_dups} distinct times (repeats are averaged). If a column identifies the "
            "series, pass id_col=...", UserWarning, stacklevel=4)
    elif len(cols.values) >= WIDE_HINT:
        warnings.warn(
            f"{name}: no id column was found (looked for {list(ID_CANDIDATES)}), so the frame is fitted as one "
            f"series with {len(cols.values)} variables. If its columns are separate series (a wide frame), melt it "
            f"to long format (df.melt(id_vars={tcol!r}, var_name='unique_id')); if a column identifies the "
            "series, pass id_col=...", UserWarning, stacklevel=4)


def validate_frame(df, id_col=None, time_col=None, value_cols=None, time_kind: TimeKind | None = None,
                   name: str = "X", fitted: bool = False) -> LongFrame:
    """Check a user's long frame and turn it into a :class:`LongFrame`.

    Parameters
    ----------
    df : pandas.DataFrame
    id_col, time_col, value_cols : see :func:`resolve_columns`
    time_kind : TimeKind or None
        The fitted kind that the time column must match; None infers it.
    name : str
        The argument's name, for error messages.
    fitted : bool, default=False
        The columns are a fitted model's (see :func:`resolve_columns`). When False (in
        ``fit``) and no id column is found, a frame that looks like many series warns
        (:func:`warn_if_one_series_by_mistake`).
    """
    if not isinstance(df, pd.DataFrame):
        raise InputTypeError(f"{name} must be a pandas DataFrame in long format, got {type(df).__name__}.")
    if len(df) == 0:
        raise InputValueError(f"{name} has no rows.")
    try:
        cols = resolve_columns(df, id_col, time_col, value_cols, fitted)
        if not fitted:
            warn_if_one_series_by_mistake(df, cols, name)
        vals = value_matrix(df, cols.values)
    except (TypeError, ValueError) as err:  # say which argument the columns belong to
        raise type(err)(f"{name}: {err}") from None
    tser = parse_text_times(df[cols.time])
    kind = time_kind or TimeKind.of(tser, f"time column {cols.time!r}")
    t = kind.to_float(tser, f"time column {cols.time!r} of {name}")
    codes, uniques = series_codes(df, cols.id)
    time, merged, offsets, row_point = group_points(codes, t, vals, len(uniques))
    origin = time[offsets[:-1]]
    series = SeriesSet(uniques, time, merged, offsets, origin, row_point)
    return LongFrame(df, cols, kind, codes, series)
