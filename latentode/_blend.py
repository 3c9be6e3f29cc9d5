"""A learned gate between the latent read-out and each series' own interpolation.

Dense, smooth data are hard to beat by linear interpolation, and a latent ODE trained for
a few epochs may not; sparse data are the reverse. Rather than one of them by rule, the
prediction of variable ``j`` at a query is

    xhat = r + alpha[k, j] * (m - r)

with ``m`` the model's read-out, ``r`` the linear interpolation in time of the values the
encoder saw (the nearest value outside their span, i.e. the last value past the end) and
``k`` the regime of the query: 0 *inside* the variable's observed span (imputation), 1
*outside* it (forecasting, backcasting). ``alpha`` is fitted after training by least
squares on held-out values of the validation series, clipped to [0, 1]: 1 is the model
alone, 0 interpolation alone.
"""

from __future__ import annotations

import numpy as np
import torch

from .model import interpolate_observed


def reference_and_regime(t, x, m, tq):
    """Interpolation of the visible values at ``tq`` and whether ``tq`` lies outside their span.

    t : (batch, time); x, m : (batch, time, features); tq : (batch, Q)
    -> r : (batch, Q, features), outside : (batch, Q, features) bool
    """
    r = interpolate_observed(t, x, m, tq)
    big = torch.finfo(t.dtype).max
    tt = t.unsqueeze(-1).expand_as(m)
    first = torch.where(m > 0, tt, big).amin(dim=1)      # (batch, features)
    last = torch.where(m > 0, tt, -big).amax(dim=1)
    q = tq.unsqueeze(-1)
    outside = (q < first.unsqueeze(1)) | (q > last.unsqueeze(1))
    return r, outside


def apply_blend(xhat, r, outside, alpha):
    """``r + alpha[regime] * (xhat - r)``; xhat (..., batch, Q, features), alpha (2, features) or None."""
    if alpha is None:
        return xhat
    a = torch.as_tensor(alpha, dtype=xhat.dtype, device=xhat.device)
    gate = torch.where(outside, a[1], a[0])
    return r + gate * (xhat - r)


def fit_blend(y, m, r, outside, feature) -> np.ndarray:
    """Least-squares gate per (regime, variable) from held-out values, shape (2, n_features).

    y, m, r : (n,) target, model and interpolation at held-out values (standardised);
    outside : (n,) bool; feature : (n,) int variable index. A (regime, variable) with no
    held-out value gets 1 (the model).
    """
    n_f = int(feature.max()) + 1 if len(feature) else 0
    alpha = np.ones((2, n_f))
    d, e = m - r, y - r
    for k, sel_k in enumerate((~outside, outside)):
        num = np.bincount(feature[sel_k], weights=(e * d)[sel_k], minlength=n_f)
        den = np.bincount(feature[sel_k], weights=(d * d)[sel_k], minlength=n_f)
        ok = den > 1e-12
        alpha[k, ok] = np.clip(num[ok] / den[ok], 0.0, 1.0)
    return alpha
