"""Training steps, split small: fit_loop -> run_epoch -> train_step, plus the masks they use.

Training teaches one model both jobs: in each batch the encoder is denied a random
subset of observed values (imputation) and, for a random share of the series, every
observation after a random cut in the window (forecasting); the likelihood scores all
observed values.
"""

from __future__ import annotations

import copy
import math
import hashlib
import time
import warnings

import numpy as np
import torch
from tqdm.auto import tqdm

from ._collate import Batch, Scaling, collate
from ._frame import SeriesSet

HOLDOUT_TAIL = 0.2
HOLDOUT_RANDOM = 0.1
HOLDOUT_SEED = 0


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: a bijection of uint64 that scrambles every bit."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def value_uniforms(series: SeriesSet, seed: int = HOLDOUT_SEED) -> np.ndarray:
    """A uniform draw in [0, 1) per (series id, time, variable), shape (n_points, n_features).

    A hash of the id (blake2b of its ``str``), the time's bits, the variable's position
    and ``seed``: the same value gets the same draw whatever the row order, the other series
    or the process.
    """
    ids = np.array([int.from_bytes(hashlib.blake2b(str(i).encode(), digest_size=8).digest(), "little")
                    for i in series.ids], dtype=np.uint64)
    with np.errstate(over="ignore"):
        key = _mix64(ids[series.point_series()] ^ _mix64(series.time.astype(np.float64).view(np.uint64)))
        cols = _mix64(np.arange(series.values.shape[1], dtype=np.uint64) + np.uint64(seed) * np.uint64(0x9E3779B9))
        bits = _mix64(key[:, None] ^ cols[None, :])
    return (bits >> np.uint64(11)).astype(np.float64) / float(2**53)


def holdout_mask(series: SeriesSet, seed: int = HOLDOUT_SEED) -> np.ndarray:
    """Reproducible held-out observed values, used by ``score`` and early stopping.

    A value is held out when it lies in the last ``HOLDOUT_TAIL`` (20%) of its series'
    window (forecasting) or, elsewhere, with probability ``HOLDOUT_RANDOM`` (10%) by
    :func:`value_uniforms` (imputation): the subset depends on the values' (id, time,
    variable), not on the order of the rows.

    Returns
    -------
    numpy.ndarray of bool, shape (n_points, n_features)
    """
    observed = ~np.isnan(series.values)
    if not observed.any():
        return observed
    owner = series.point_series()
    last = series.time[np.maximum(series.offsets[1:] - 1, 0)]
    span = (last - series.origin)[owner]
    rel = np.divide(series.time - series.origin[owner], span, out=np.zeros_like(span), where=span > 0)
    tail = (rel > 1 - HOLDOUT_TAIL)[:, None]
    rand = value_uniforms(series, seed) < HOLDOUT_RANDOM
    return observed & (tail | rand)


def hide(series: SeriesSet, mask: np.ndarray) -> SeriesSet:
    """A copy of ``series`` with the values under ``mask`` set to NaN."""
    values = series.values.copy()
    values[mask] = np.nan
    return SeriesSet(series.ids, series.time, values, series.offsets, series.origin, series.row_point)


def train_encoder_mask(batch: Batch, mask_fraction: float, forecast_fraction: float, generator) -> torch.Tensor:
    """What the encoder may see in a training batch: (batch, time, features) float mask.

    Each observed value is hidden with probability ``mask_fraction``; each series, with
    probability ``forecast_fraction``, loses everything after a cut drawn uniformly
    between 25% and 90% of its window.
    """
    b, n_t, n_f = batch.m.shape
    dev, dt = batch.m.device, batch.m.dtype
    keep = (torch.rand((b, n_t, n_f), generator=generator, device=dev) >= mask_fraction).to(dt)
    forecast = torch.rand((b, 1), generator=generator, device=dev) < forecast_fraction
    cut = (0.25 + 0.65 * torch.rand((b, 1), generator=generator, device=dev)) * batch.t[:, -1:]
    before = (batch.t <= cut) | ~forecast
    return batch.m * keep * before.unsqueeze(-1).to(dt)


def _heldout_batches(model, series: SeriesSet, scaling: Scaling, batch_size: int, solver, device, seed: int):
    """Per batch: (full, seen, xhat, r, outside) on :func:`holdout_mask`'s values (encoder sees the rest)."""
    from ._blend import reference_and_regime

    held = holdout_mask(series, seed)
    if not held.any():
        return
    visible = hide(series, held)
    model.eval()
    with torch.no_grad():
        for start in range(0, series.n_series, batch_size):
            idx = np.arange(start, min(start + batch_size, series.n_series))
            full = collate(series, idx, scaling, device)
            seen = collate(visible, idx, scaling, device)
            mu, _, t0, ref = model.encode(seen.t, seen.x, seen.m)
            xhat = model.decode(mu.unsqueeze(0), full.t, t0, ref, **solver)[0]
            r, outside = reference_and_regime(seen.t, seen.x, seen.m, full.t)
            yield full, seen, xhat, r, outside


def heldout_errors(model, series: SeriesSet, scaling: Scaling, batch_size: int, solver, device,
                   seed: int = HOLDOUT_SEED, blend=None):
    """Squared errors (standardised units) on :func:`holdout_mask`'s values, the encoder seeing the rest.

    ``blend`` (2, n_features) or None: the gate of :mod:`latentode._blend` applied to the predictions.

    Returns
    -------
    sq, n : numpy.ndarray, shape (n_features,)
        Per variable: the weighted sum of squared errors and the sum of weights of the
        held-out values (``model.variable_weight``; 1 each by default).
    """
    from ._blend import apply_blend

    n_f = series.values.shape[1]
    sq, n = np.zeros(n_f), np.zeros(n_f)
    for full, seen, xhat, r, outside in _heldout_batches(model, series, scaling, batch_size, solver, device, seed):
        xhat = apply_blend(xhat, r, outside, blend)
        target = (full.m - seen.m) * model.variable_weight
        sq += ((xhat - full.x).pow(2) * target).sum(dim=(0, 1)).double().cpu().numpy()
        n += target.sum(dim=(0, 1)).double().cpu().numpy()
    return sq, n


def heldout_values(model, series: SeriesSet, scaling: Scaling, batch_size: int, solver, device,
                   seed: int = HOLDOUT_SEED):
    """The held-out values as flat arrays, to fit the gate: y, model, interpolation, outside, feature index."""
    parts = []
    for full, seen, xhat, r, outside in _heldout_batches(model, series, scaling, batch_size, solver, device, seed):
        sel = ((full.m - seen.m) > 0).cpu().numpy()
        feat = np.broadcast_to(np.arange(sel.shape[-1]), sel.shape)
        parts.append([a.cpu().double().numpy()[sel] if torch.is_tensor(a) else a[sel]
                      for a in (full.x, xhat, r, outside, feat)])
    if not parts:
        return [np.empty(0)] * 3 + [np.empty(0, bool), np.empty(0, np.int64)]
    y, m, r, out, f = (np.concatenate(c) for c in zip(*parts))
    return y, m, r, out.astype(bool), f.astype(np.int64)


def evaluate_mse(model, series: SeriesSet, scaling: Scaling, batch_size: int, solver, device,
                 seed: int = HOLDOUT_SEED) -> float:
    """MSE (standardised units) on :func:`holdout_mask`'s values, the encoder seeing the rest (NaN if none)."""
    sq, n = heldout_errors(model, series, scaling, batch_size, solver, device, seed)
    return float(sq.sum() / n.sum()) if n.sum() > 0 else float("nan")


AUTO_CLIP_FACTOR = 5.0
AUTO_CLIP_WINDOW = 50
AUTO_CLIP_START = 5


def clip_threshold(max_grad_norm, norms: list) -> float:
    """The gradient-norm cap of the next step.

    A number: that number. None: no cap. "auto": ``AUTO_CLIP_FACTOR`` (5) times the median
    norm of the last ``AUTO_CLIP_WINDOW`` (50) steps, once ``AUTO_CLIP_START`` (5) steps
    were seen, so that a rare spike (an exploding trajectory of one batch) moves the
    weights no more than a typical step instead of wrecking Adam's moment estimates.
    """
    if max_grad_norm is None:
        return float("inf")
    if isinstance(max_grad_norm, str):
        if len(norms) < AUTO_CLIP_START:
            return float("inf")
        return AUTO_CLIP_FACTOR * float(np.median(norms[-AUTO_CLIP_WINDOW:]))
    return float(max_grad_norm)


def train_step(model, optimizer, batch: Batch, est, kl_weight: float, generator, solver, norms=None) -> dict:
    """One optimisation step on one batch; returns its statistics (loss, mse, kl, nfe).

    ``norms``: the gradient norms (before clipping) of the steps so far; this step's is appended."""
    norms = [] if norms is None else norms
    model.train()
    dyn, enc = model.decoder.dynamics, model.encoder
    nfe0, enc0 = dyn.nfe, enc.nfe
    prior0 = getattr(model.prior, "nfe", 0)
    enc_mask = train_encoder_mask(batch, est.mask_fraction, est.forecast_fraction, generator)
    optimizer.zero_grad(set_to_none=True)
    loss, stats = model.loss(batch, enc_mask, n_samples=est.n_samples, kl_weight=kl_weight, generator=generator,
                             solver=solver, loss_on=est.loss_on)
    nfe_fwd = dyn.nfe - nfe0
    if not torch.isfinite(loss):
        raise FloatingPointError(
            f"the training loss became {float(loss)}; lower lr (now {est.lr}) or tighten rtol/atol."
        )
    loss.backward()
    grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), clip_threshold(est.max_grad_norm, norms)))
    norms.append(grad_norm)
    optimizer.step()
    stats.update(loss=float(loss.detach()), grad_norm=grad_norm, nfe_forward=nfe_fwd,
                 nfe_backward=dyn.nfe - nfe0 - nfe_fwd,
                 nfe_encoder=enc.nfe - enc0, nfe_prior=getattr(model.prior, "nfe", 0) - prior0)
    return stats


LR_FLOOR = 0.1
COSINE_FLOOR = 0.05
SCHEDULES = ("cosine", "exponential", "constant")


def lr_schedule(optimizer, decay: float = 1.0, kind: str = "exponential", total_steps: int = 1,
                warmup_steps: int = 0):
    """Per-step learning-rate factor as a ``LambdaLR``.

    ``"exponential"``: ``decay**step``, floored at ``LR_FLOOR`` (Rubanova et al.'s 0.999 per
    step down to a tenth). ``"cosine"``: a linear warm-up from a tenth over
    ``warmup_steps``, then a half cosine from 1 down to ``COSINE_FLOOR`` at ``total_steps``.
    ``"constant"``: 1.
    """
    if kind == "exponential":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: max(decay ** step, LR_FLOOR))
    if kind == "constant":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)

    def cosine(step):
        if step < warmup_steps:
            return 0.1 + 0.9 * step / warmup_steps
        frac = min(1.0, (step - warmup_steps) / max(total_steps - warmup_steps, 1))
        return COSINE_FLOOR + (1 - COSINE_FLOOR) * 0.5 * (1 + math.cos(math.pi * frac))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, cosine)


def run_epoch(model, optimizer, series: SeriesSet, scaling: Scaling, est, epoch: int, rng, generator, solver,
              device, scheduler=None, norms=None) -> dict:
    """One pass over the training series in random batches; returns mean statistics.

    ``scheduler`` (optional) is stepped after every optimisation step; ``norms`` collects the
    gradient norms across epochs (for ``max_grad_norm="auto"``)."""
    order = rng.permutation(series.n_series)
    kl_weight = 1.0 if est.kl_warmup <= 0 else min(1.0, (epoch + 1) / est.kl_warmup)
    totals, n_batches, grad_max = {}, 0, 0.0
    for start in range(0, len(order), est.batch_size):
        batch = collate(series, order[start:start + est.batch_size], scaling, device)
        stats = train_step(model, optimizer, batch, est, kl_weight, generator, solver, norms)
        if scheduler is not None:
            scheduler.step()
        for k, v in stats.items():
            totals[k] = totals.get(k, 0.0) + v
        grad_max = max(grad_max, stats["grad_norm"])
        n_batches += 1
    out = {k: v / n_batches for k, v in totals.items()}
    out["grad_norm_max"] = grad_max
    for k in ("nfe_forward", "nfe_backward", "nfe_encoder", "nfe_prior"):
        out[k] = int(totals.get(k, 0))
    out["kl_weight"] = kl_weight
    out["lr"] = optimizer.param_groups[0]["lr"]
    return out


def fit_loop(model, train: SeriesSet, valid: SeriesSet | None, scaling: Scaling, est, rng, generator, solver,
             device) -> list[dict]:
    """Adam over ``est.max_epochs`` epochs with early stopping on the validation MSE.

    The best weights (lowest validation MSE, or last epoch without validation) are
    restored into ``model``. Returns the per-epoch history.

    A ``KeyboardInterrupt`` (Ctrl-C) stops training cleanly, as in skorch and Keras: the
    best weights so far are restored, the last record gets ``"interrupted": True`` (a
    record ``{"epoch": 1, "interrupted": True}`` when no epoch finished) and a warning says so.
    """
    optimizer = torch.optim.Adam(model.parameters(), lr=est.lr, weight_decay=est.weight_decay)
    steps_per_epoch = max(1, math.ceil(train.n_series / est.batch_size))
    kind = "exponential" if est.lr_decay < 1 else est.lr_schedule
    scheduler = lr_schedule(optimizer, est.lr_decay, kind, est.max_epochs * steps_per_epoch, steps_per_epoch)
    history, best, best_state, waited, norms = [], np.inf, None, 0, []
    bar = tqdm(range(est.max_epochs), disable=not est.verbose, desc="fit", unit="epoch")
    try:
        for epoch in bar:
            t0 = time.perf_counter()
            stats = run_epoch(model, optimizer, train, scaling, est, epoch, rng, generator, solver, device, scheduler,
                              norms)
            train_seconds = time.perf_counter() - t0
            v = evaluate_mse(model, valid, scaling, est.batch_size, solver, device) if valid is not None else np.nan
            record = {"epoch": epoch + 1, **stats, "valid_mse": v, "train_seconds": train_seconds,
                      "seconds": time.perf_counter() - t0}
            history.append(record)
            bar.set_postfix(loss=f"{stats['loss']:.3f}", valid_mse=f"{v:.4f}", nfe=stats["nfe_forward"])
            if valid is None or not np.isfinite(v):
                continue
            if v < best:
                best, waited = v, 0
                best_state = copy.deepcopy(model.state_dict())
            elif epoch + 1 >= est.kl_warmup:  # no stopping while the KL weight still grows
                waited += 1
                if est.patience is not None and waited >= est.patience:
                    break
    except KeyboardInterrupt:
        if history:
            history[-1]["interrupted"] = True
        else:
            history.append({"epoch": 1, "interrupted": True})
        done = sum("loss" in r for r in history)
        warnings.warn(f"fit interrupted by KeyboardInterrupt after {done} complete epoch(s); the best weights so "
                      "far are kept and history_[-1] is marked 'interrupted'.", RuntimeWarning, stacklevel=3)
    bar.close()
    if best_state is not None:
        model.load_state_dict(best_state)
    return history
