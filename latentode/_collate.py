"""Validated series -> padded tensors and masks. No NaN leaves this module.

Each series keeps its own time points: a batch is padded to the longest series in it
(not collated onto the union of all its timestamps), and padding repeats the last
time so that padded steps are zero-length intervals for every solver.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch

from ._frame import SeriesSet
from ._validation import InputValueError


@dataclass
class Scaling:
    """Per-variable standardisation and the time unit, learned in ``fit`` and stored.

    Attributes
    ----------
    mean, std : numpy.ndarray, shape (n_features,)
        Of the observed values of each variable.
    time_scale : float
        One model time unit in internal float units (seconds for datetimes): the
        median span of the training series' windows (1.0 if every window is a point).
    """

    mean: np.ndarray
    std: np.ndarray
    time_scale: float

    @classmethod
    def fit(cls, series: SeriesSet, names) -> Scaling:
        vals = series.values
        n_obs = (~np.isnan(vals)).sum(axis=0)
        empty = [names[j] for j in np.flatnonzero(n_obs == 0)]
        if empty:
            raise InputValueError(
                f"variable columns {empty} have no observed value in the training data; drop them "
                f"(df.drop(columns={empty})) or leave them out of value_cols (some PhysioNet stays, for example, "
                "never measure Cholesterol).")
        mean = np.nanmean(vals, axis=0)
        std = np.nanstd(vals, axis=0)
        scale = np.abs(mean) * 1e-6 + 1e-12
        std = np.where(std > scale, std, 1.0)
        last = series.time[np.maximum(series.offsets[1:] - 1, 0)]
        spans = np.where(series.lengths > 0, last - series.origin, 0.0)
        spans = spans[spans > 0]
        time_scale = float(np.median(spans)) if len(spans) else 1.0
        return cls(mean, std, time_scale)

    def to_dict(self) -> dict:
        return {"mean": self.mean.tolist(), "std": self.std.tolist(), "time_scale": self.time_scale}

    @classmethod
    def from_dict(cls, d) -> Scaling:
        return cls(np.asarray(d["mean"], float), np.asarray(d["std"], float), float(d["time_scale"]))


class Batch(NamedTuple):
    """A padded batch of series.

    Attributes
    ----------
    t : Tensor, shape (batch, time)
        Model time since each series' window origin (origin = 0), padded by repeating the last time.
    x : Tensor, shape (batch, time, features)
        Standardised values, 0 where unobserved or padded.
    m : Tensor, shape (batch, time, features)
        1.0 where observed, else 0.0.
    """

    t: torch.Tensor
    x: torch.Tensor
    m: torch.Tensor


def _padded_positions(offsets: np.ndarray, idx: np.ndarray):
    """Point index (batch, time) of each slot and the validity mask; padding repeats the last point."""
    lengths = offsets[idx + 1] - offsets[idx]
    width = max(int(lengths.max()) if len(lengths) else 0, 1)
    j = np.arange(width)[None, :]
    valid = j < lengths[:, None]
    pos = offsets[idx][:, None] + np.minimum(j, np.maximum(lengths[:, None] - 1, 0))
    return pos, valid, lengths


def collate(series: SeriesSet, idx, scaling: Scaling, device=None, dtype=torch.float32) -> Batch:
    """Pad the series ``idx`` of ``series`` into a :class:`Batch`.

    Series with no points become one padded, fully masked step at time 0.
    """
    idx = np.asarray(idx, dtype=np.int64)
    pos, valid, lengths = _padded_positions(series.offsets, idx)
    n_points = len(series.time)
    safe = np.clip(pos, 0, max(n_points - 1, 0))
    if n_points:
        t = (series.time[safe] - series.origin[idx][:, None]) / scaling.time_scale
        v = (series.values[safe] - scaling.mean) / scaling.std
    else:
        t = np.zeros(pos.shape)
        v = np.full(pos.shape + (len(scaling.mean),), np.nan)
    t = np.where((lengths > 0)[:, None], t, 0.0)
    m = ~np.isnan(v) & valid[:, :, None]
    x = np.where(m, v, 0.0)
    as_t = lambda a: torch.as_tensor(a, dtype=dtype, device=device)  # noqa: E731
    return Batch(as_t(t), as_t(x), as_t(m))


def pad_queries(times: list[np.ndarray], device=None, dtype=torch.float32):
    """Pad per-series sorted query times (model units) to shape (batch, queries).

    Returns the padded tensor (padding repeats the last time; empty series get 0) and
    the lengths.
    """
    lengths = np.array([len(q) for q in times], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    flat = np.concatenate(times) if len(times) and lengths.sum() else np.zeros(1)
    pos, valid, _ = _padded_positions(offsets, np.arange(len(times)))
    tq = np.where((lengths > 0)[:, None], flat[np.clip(pos, 0, len(flat) - 1)], 0.0)
    return torch.as_tensor(tq, dtype=dtype, device=device), lengths
