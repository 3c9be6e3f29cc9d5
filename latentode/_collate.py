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


class Packed:
    """Series standardised once and held on the device; :meth:`batch` gathers padded batches from it.

    What :func:`collate` gives, without going back to numpy for the values: the points are
    moved to the device once (per fit), and a batch costs one index transfer and a gather.

    Attributes
    ----------
    t : Tensor, shape (n_points + 1,)
        Model time of each point since its series' origin; a last zero point stands in for
        the padding of empty series.
    x, m : Tensor, shape (n_points + 1, features)
        Standardised values (0 where unobserved) and the observation mask.
    offsets, lengths : numpy.ndarray
        The series' point ranges (host side, so that batch shapes need no device read).
    """

    def __init__(self, series: SeriesSet, scaling: Scaling, device=None, dtype=torch.float32):
        self.offsets, self.lengths, self.n_series = series.offsets, series.lengths, series.n_series
        self.empty = len(series.time)  # the index of the stand-in point
        t = (series.time - series.origin[series.point_series()]) / scaling.time_scale
        v = (series.values - scaling.mean) / scaling.std
        m = ~np.isnan(v)
        n_f = len(scaling.mean)
        as_t = lambda a: torch.as_tensor(a, dtype=dtype, device=device)  # noqa: E731
        self.t = as_t(np.concatenate([t, [0.0]]))
        self.x = as_t(np.concatenate([np.where(m, v, 0.0).reshape(-1, n_f), np.zeros((1, n_f))]))
        self.m = as_t(np.concatenate([m.reshape(-1, n_f), np.zeros((1, n_f), bool)]))
        self.device = self.t.device
        self._starts = torch.as_tensor(np.where(self.lengths > 0, self.offsets[:-1], self.empty), device=self.device)
        self._lengths = torch.as_tensor(self.lengths, device=self.device)

    def width(self, idx) -> int:
        """The padded time length of a batch of the series ``idx`` (at least 1)."""
        idx = np.asarray(idx, dtype=np.int64)
        return max(int(self.lengths[idx].max()) if len(idx) else 0, 1)

    def batch(self, idx, idx_device: torch.Tensor | None = None) -> Batch:
        """The series ``idx`` as a :class:`Batch`, equal to :func:`collate`'s.

        ``idx_device``: the same indices already on the device (a slice of an epoch's
        permutation, moved there once); the gather then needs no transfer from the host.
        """
        idx = np.asarray(idx, dtype=np.int64)
        if idx_device is None:
            idx_device = torch.as_tensor(idx, device=self.device)
        width = self.width(idx)
        lengths = self._lengths[idx_device].unsqueeze(1)                                  # (batch, 1)
        j = torch.arange(width, device=self.device).unsqueeze(0)                          # (1, width)
        index = self._starts[idx_device].unsqueeze(1) + torch.minimum(j, (lengths - 1).clamp_min(0))
        keep = (j < lengths).unsqueeze(-1).to(self.m.dtype)
        m = self.m[index] * keep
        return Batch(self.t[index], self.x[index] * m, m)


def pad_queries(times: list[np.ndarray], device=None, dtype=torch.float32):
    """Pad per-series sorted query times (model units) to shape (batch, queries).

    Returns the padded tensor (padding repeats the last time; empty series get 0) and
    the lengths.
    """
    lengths = np.array([len(q) for q in times], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    flat = np.concatenate(times) if len(times) and lengths.sum() else np.zeros(0)
    return pad_points(flat, offsets, np.arange(len(times)), np.zeros(len(times)), 1.0, device, dtype)


def pad_points(times: np.ndarray, offsets: np.ndarray, idx, origin: np.ndarray, scale: float, device=None,
               dtype=torch.float32):
    """Query times of the series ``idx`` in model units, padded to shape (batch, queries), without a loop.

    ``times[offsets[i]:offsets[i + 1]]`` are series ``i``'s sorted internal times; each becomes
    ``(time - origin[i]) / scale``. Padding repeats the last time; empty series get 0.

    Returns
    -------
    tq : Tensor, shape (len(idx), max queries)
    lengths : numpy.ndarray, shape (len(idx),)
    """
    idx = np.asarray(idx, dtype=np.int64)
    pos, _, lengths = _padded_positions(offsets, idx)
    if len(times):
        tq = (times[np.clip(pos, 0, len(times) - 1)] - origin[idx][:, None]) / scale
    else:
        tq = np.zeros(pos.shape)
    tq = np.where((lengths > 0)[:, None], tq, 0.0)
    return torch.as_tensor(tq, dtype=dtype, device=device), lengths
