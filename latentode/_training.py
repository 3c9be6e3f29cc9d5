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

from ._collate import Batch, Packed, Scaling
from ._distributed import SINGLE, all_gather_arrays, all_reduce_max, all_reduce_sum, shard_rows, shard_series, wrap
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


def holdout_mask(series: SeriesSet, seed: int = HOLDOUT_SEED, tail: float = HOLDOUT_TAIL) -> np.ndarray:
    """Reproducible held-out observed values, used by ``score`` and early stopping.

    A value is held out when it lies in the last ``tail`` (by default ``HOLDOUT_TAIL``, 20%)
    of its series' window (forecasting) or, elsewhere, with probability ``HOLDOUT_RANDOM`` (10%) by
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
    late = (rel > 1 - tail)[:, None]
    rand = value_uniforms(series, seed) < HOLDOUT_RANDOM
    return observed & (late | rand)


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


class HeldOut:
    """The held-out values of :func:`holdout_mask` for a set of series, on the device once.

    ``full`` holds every observed value (the targets), ``seen`` the rest (the encoder's input);
    a fit builds this once for its validation series and scores them every epoch from it.
    """

    def __init__(self, series: SeriesSet, scaling: Scaling, device, seed: int = HOLDOUT_SEED,
                 tail: float = HOLDOUT_TAIL):
        held = holdout_mask(series, seed, tail)
        self.n_series = series.n_series if held.any() else 0
        self.full = Packed(series, scaling, device)
        self.seen = Packed(hide(series, held), scaling, device)


def _heldout_batches(model, held: HeldOut, batch_size: int, solver, ctx=SINGLE):
    """Per batch of this rank's series: (full, seen, xhat, r, outside, distance), the encoder seeing ``seen``."""
    from .model import reference_and_regime

    mine = shard_series(held.n_series, ctx)
    model.eval()
    with torch.no_grad():
        for start in range(0, len(mine), batch_size):
            idx = mine[start:start + batch_size]
            full, seen = held.full.batch(idx), held.seen.batch(idx)
            mu, _, t0, ref = model.encode(seen.t, seen.x, seen.m)
            xhat = model.decode(mu.unsqueeze(0), full.t, t0, ref, **solver)[0]
            r, outside, distance = reference_and_regime(seen.t, seen.x, seen.m, full.t)
            yield full, seen, xhat, r, outside, distance


def heldout_errors(model, held: HeldOut, batch_size: int, solver, ctx=SINGLE, blend=None):
    """Squared errors (standardised units) on the held-out values, the encoder seeing the rest.

    ``blend`` ``(alpha, edges)`` or None: the gate of :mod:`latentode._blend` applied to the
    predictions. Under data parallelism each rank scores its share of the series and the sums
    are all-reduced, so every rank returns the same totals.

    Returns
    -------
    sq, n : numpy.ndarray, shape (n_features,)
        Per variable: the weighted sum of squared errors and the sum of weights of the
        held-out values (``model.variable_weight``; 1 each by default).
    """
    from ._blend import apply_blend

    n_f = held.full.x.shape[1]
    totals = torch.zeros(2, n_f, dtype=torch.float64, device=held.full.device)
    for full, seen, xhat, r, outside, distance in _heldout_batches(model, held, batch_size, solver, ctx):
        xhat = apply_blend(xhat, r, outside, distance, blend)
        target = (full.m - seen.m) * model.variable_weight
        totals[0] += ((xhat - full.x).pow(2) * target).sum(dim=(0, 1)).double()
        totals[1] += target.sum(dim=(0, 1)).double()
    sq, n = all_reduce_sum(ctx, totals).cpu().numpy()
    return sq, n


def heldout_values(model, held: HeldOut, batch_size: int, solver, ctx=SINGLE):
    """The held-out values as flat arrays, to fit the gate: y, model, interpolation, outside, distance to
    the nearest visible value, feature index.

    Under data parallelism every rank gets every rank's values, in rank order."""
    parts = []
    for full, seen, xhat, r, outside, distance in _heldout_batches(model, held, batch_size, solver, ctx):
        sel = ((full.m - seen.m) > 0).cpu().numpy()
        feat = np.broadcast_to(np.arange(sel.shape[-1]), sel.shape)
        parts.append([a.cpu().double().numpy()[sel] if torch.is_tensor(a) else a[sel]
                      for a in (full.x, xhat, r, outside, distance, feat)])
    if parts:
        y, m, r, out, dist, f = (np.concatenate(c) for c in zip(*parts))
    else:
        y, m, r, out, dist, f = [np.empty(0)] * 5 + [np.empty(0, np.int64)]
    y, m, r, out, dist, f = all_gather_arrays(ctx, [y, m, r, out.astype(bool), dist, f.astype(np.int64)])
    return y, m, r, out.astype(bool), dist, f.astype(np.int64)


def evaluate_mse(model, held: HeldOut | None, batch_size: int, solver, ctx=SINGLE) -> float:
    """MSE (standardised units) on the held-out values, the encoder seeing the rest (NaN if none)."""
    if held is None:
        return float("nan")
    sq, n = heldout_errors(model, held, batch_size, solver, ctx)
    return float(sq.sum() / n.sum()) if n.sum() > 0 else float("nan")


AUTO_CLIP_FACTOR = 5.0
AUTO_CLIP_WINDOW = 50
AUTO_CLIP_START = 5


def clip_threshold(max_grad_norm, norms):
    """The gradient-norm cap of the next step.

    A number: that number. None: no cap. "auto": ``AUTO_CLIP_FACTOR`` (5) times the median
    norm of the last ``AUTO_CLIP_WINDOW`` (50) steps, once ``AUTO_CLIP_START`` (5) steps
    were seen, so that a rare spike (an exploding trajectory of one batch) moves the
    weights no more than a typical step instead of wrecking Adam's moment estimates.
    ``norms`` (a list or a 1-D tensor of the steps' norms so far): with a tensor the
    "auto" cap is a 0-d tensor on its device, so that no step reads a value back to the host.
    """
    if max_grad_norm is None:
        return float("inf")
    if isinstance(max_grad_norm, str):
        if len(norms) < AUTO_CLIP_START:
            return float("inf")
        if torch.is_tensor(norms):
            return AUTO_CLIP_FACTOR * torch.quantile(norms[-AUTO_CLIP_WINDOW:], 0.5)
        return AUTO_CLIP_FACTOR * float(np.median(norms[-AUTO_CLIP_WINDOW:]))
    return float(max_grad_norm)


def clip_gradients(parameters, cap) -> torch.Tensor:
    """Scale the gradients to a total 2-norm of at most ``cap``; returns the norm before (0-d tensor).

    As :func:`torch.nn.utils.clip_grad_norm_`, with ``cap`` a float or a 0-d tensor, and without
    a read back to the host: when the norm is not finite every gradient is set to 0 (the
    step then changes the weights by Adam's momentum only), and the training loop reports it
    at the end of the epoch.
    """
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return torch.zeros(())
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.detach()) for g in grads]))
    finite = torch.isfinite(norm)
    coef = torch.where(finite, (cap / (norm + 1e-6)).clamp(max=1.0), torch.zeros_like(norm))
    for g in grads:
        g.detach().copy_(torch.where(finite, g.detach() * coef.to(g.dtype), torch.zeros_like(g)))
    return norm


class StepRandomness:
    """The random draws of one training step, made for the *global* batch.

    Every rank draws the same numbers from the same generator for the whole global batch
    and keeps its own rows, so that the draws a series gets do not depend on the number
    of processes (and one process draws what it always drew).
    """

    def __init__(self, batch: Batch, est, latent_dim: int, generator):
        self.enc_mask = train_encoder_mask(batch, est.mask_fraction, est.forecast_fraction, generator)
        b = batch.m.shape[0]
        self.eps = torch.randn((est.n_samples, b, latent_dim), generator=generator, device=batch.m.device,
                               dtype=batch.m.dtype)


def local_rows(batch: Batch, draws: StepRandomness, rows: np.ndarray, width: int):
    """This rank's ``rows`` (contiguous) of a global batch and of its draws, cut to their own padded ``width``."""
    lo, hi = int(rows[0]), int(rows[-1]) + 1
    assert hi - lo == len(rows), "a rank's rows are contiguous"
    cut = lambda a: a[lo:hi, :width]  # noqa: E731
    return Batch(cut(batch.t), cut(batch.x), cut(batch.m)), cut(draws.enc_mask), draws.eps[:, lo:hi]


def train_step(net, model, optimizer, packed: Packed, gidx: np.ndarray, est, kl_weight: float, generator, solver,
               norms: torch.Tensor, ctx=SINGLE, gidx_device=None):
    """One optimisation step on the global batch ``gidx`` (this rank computes its own rows of it).

    ``gidx_device``: the same indices on the device (see :meth:`Packed.batch`).

    ``net`` is ``model`` itself or its :class:`~torch.nn.parallel.DistributedDataParallel`
    wrapper. The loss of a rank is its share of the global batch's loss (normalised by the
    global count of scored values), times the world size because DDP averages the gradients:
    the update is the one a single process would make on the whole global batch.

    Returns
    -------
    stats : dict of 0-d tensors (loss, mse, kl: this rank's share; grad_norm; nonfinite)
        and ints (nfe_*), none of them read back to the host.
    norms : Tensor
        ``norms`` with this step's gradient norm appended (for ``max_grad_norm="auto"``).
    """
    model.train()
    dyn, enc = model.decoder.dynamics, model.encoder
    nfe0, enc0 = dyn.nfe, enc.nfe
    prior0 = getattr(model.prior, "nfe", 0)
    batch = packed.batch(gidx, gidx_device)
    draws = StepRandomness(batch, est, model.latent_dim, generator)
    scored = batch.m if est.loss_on == "all" else batch.m * (1 - draws.enc_mask)
    n_scored = (scored * model.variable_weight).sum().clamp_min(1.0)
    rows = shard_rows(len(gidx), ctx)
    share = len(rows) / len(gidx)
    if not len(rows):  # fewer series than ranks: compute on one, contribute nothing
        rows = np.zeros(1, dtype=np.int64)
    local, enc_mask, eps = local_rows(batch, draws, rows, packed.width(gidx[rows]))
    optimizer.zero_grad(set_to_none=True)
    loss, stats = net(local, enc_mask, n_samples=est.n_samples, kl_weight=kl_weight, generator=generator,
                      solver=solver, loss_on=est.loss_on, eps=eps, normalizer=n_scored, share=share)
    nfe_fwd = dyn.nfe - nfe0
    objective = loss * (ctx.world_size if share > 0 else 0.0)
    if ctx.active:  # DDP (find_unused_parameters=False) needs a gradient for every parameter on every rank, but
        # a rank's rows can leave a part idle (one visible value each: the encoder ODE never runs); a zero
        # term keeps each parameter in the graph without changing the gradient
        objective = objective + sum(p.sum() for p in model.parameters() if p.requires_grad) * 0.0
    objective.backward()
    grad_norm = clip_gradients(model.parameters(), clip_threshold(est.max_grad_norm, norms))
    finite = torch.isfinite(grad_norm)  # the same on every rank: the gradients were all-reduced
    previous = norms[-1:] if len(norms) else torch.zeros(1, device=grad_norm.device)
    norms = torch.cat([norms, torch.where(finite, grad_norm, previous[0]).reshape(1)])[-AUTO_CLIP_WINDOW:]
    optimizer.step()
    bad = ~(finite & torch.isfinite(loss.detach()))  # this rank's view; reduced at the end of the epoch
    stats = dict(loss=loss.detach() * (share > 0), mse=stats["mse"] * (share > 0), kl=stats["kl"] * (share > 0),
                 grad_norm=grad_norm, nonfinite=bad.to(grad_norm.dtype))
    stats.update(nfe_forward=nfe_fwd, nfe_backward=dyn.nfe - nfe0 - nfe_fwd, nfe_encoder=enc.nfe - enc0,
                 nfe_prior=getattr(model.prior, "nfe", 0) - prior0)
    return stats, norms


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


SUMMED = ("loss", "mse", "kl")  # per-rank shares: summed over the ranks
COUNTS = ("nfe_forward", "nfe_backward", "nfe_encoder", "nfe_prior")


def run_epoch(net, model, optimizer, packed: Packed, est, epoch: int, rng, generator, solver, batch_size: int,
              scheduler=None, norms=None, ctx=SINGLE, averaged=None):
    """One pass over the training series in random global batches; returns mean statistics.

    The statistics stay on the device during the epoch and are read (and, under data
    parallelism, all-reduced) once at its end. ``scheduler`` (optional) is stepped after
    every optimisation step; ``norms`` (a 1-D tensor) carries the recent gradient norms across
    epochs (for ``max_grad_norm="auto"``). ``batch_size``: series per global batch, as
    :func:`training_budget` resolved it.

    Returns
    -------
    stats : dict
        Epoch means of loss, mse, kl and grad_norm (the same on every rank), grad_norm_max,
        the NFE counts (the largest over the ranks), kl_weight and lr.
    norms : Tensor
    """
    order = rng.permutation(packed.n_series)
    order_device = torch.as_tensor(order, device=packed.device)  # one transfer per epoch, sliced per step
    kl_weight = 1.0 if est.kl_warmup <= 0 else min(1.0, (epoch + 1) / est.kl_warmup)
    dev = packed.device
    sums = torch.zeros(len(SUMMED), dtype=torch.float64, device=dev)
    grad = torch.zeros(3, dtype=torch.float64, device=dev)  # sum of norms, max norm, non-finite steps
    counts = np.zeros(len(COUNTS))
    norms = torch.zeros(0, device=dev) if norms is None else norms
    n_batches = 0
    for start in range(0, len(order), batch_size):
        stop = start + batch_size
        stats, norms = train_step(net, model, optimizer, packed, order[start:stop], est, kl_weight, generator,
                                  solver, norms, ctx, order_device[start:stop])
        if scheduler is not None:
            scheduler.step()
        if averaged is not None:
            averaged.update(model)
        sums += torch.stack([stats[k].double() for k in SUMMED])
        g = stats["grad_norm"].double()
        grad = torch.stack([grad[0] + g, torch.maximum(grad[1], g), grad[2] + stats["nonfinite"].double()])
        counts += [stats[k] for k in COUNTS]
        n_batches += 1
    all_reduce_sum(ctx, sums)
    highest = torch.cat([grad[1:], torch.as_tensor(counts, dtype=torch.float64, device=dev)])
    all_reduce_max(ctx, highest)  # the norms agree across ranks; the NFE counts and non-finite flags may not
    loss, mse, kl = (sums / n_batches).tolist()
    g_sum = float(grad[0])
    g_max, bad, *cmax = highest.tolist()
    if bad:
        raise FloatingPointError(
            f"the training loss or its gradient became non-finite in {int(bad)} step(s) of epoch {epoch + 1}; "
            f"lower lr (now {est.lr}) or tighten rtol/atol.")
    out = dict(loss=loss, mse=mse, kl=kl, grad_norm=g_sum / n_batches, grad_norm_max=g_max)
    out.update({k: int(v) for k, v in zip(COUNTS, cmax)})
    out["kl_weight"] = kl_weight
    out["lr"] = optimizer.param_groups[0]["lr"]
    return out, norms


AUTO_BATCH, AUTO_EPOCHS = 50, 20  # batch_size="auto" / max_epochs="auto" on data that need nothing more
MIN_STEPS = 120  # ... the fewest optimiser steps "auto" aims for: 20 epochs of 300 series in batches of 50
MIN_BATCH = 8  # batch_size="auto" shrinks the batch to no fewer series than this
MAX_AUTO_EPOCHS = 100
SERIES_VISITS = AUTO_EPOCHS * 250  # ... and the fewest series a fit reads: as many as 20 epochs of 250 series
PLATEAU_SHARE = 0.5  # max_epochs="auto" adds a cycle while the best validation MSE is above this share of the first's
STILL_LEARNING = 0.05  # ... and the cycle's last quarter lowered the best by more than this share
STILL_FAST = 0.2  # ... or, whether on the plateau or not, the last quarter lowered the best by more than this share
MIN_PATIENCE = 10  # patience="auto" waits this many epochs at least ...
PATIENCE_SHARE = 0.25  # ... or this share of the cycle's epochs, if more
EMA_DECAY = 0.9  # an added cycle scores and keeps an exponential average of the steps' weights, over about ten steps


def training_budget(n_train: int, batch_size, max_epochs) -> tuple[int, int]:
    """``(batch_size, max_epochs)`` with ``"auto"`` resolved; integers are kept as given.

    Few training series give few steps an epoch: 90 series in batches of 50 are two steps
    an epoch, 40 steps in 20 epochs. ``batch_size="auto"`` is ``AUTO_BATCH`` (50) series, shrunk (not
    below ``MIN_BATCH``, 8) when an epoch of them would make fewer than
    ``MIN_STEPS / AUTO_EPOCHS`` (6) steps; ``max_epochs="auto"`` is ``AUTO_EPOCHS`` (20),
    extended (up to ``MAX_AUTO_EPOCHS``, 100) until the fit makes ``MIN_STEPS`` (120) steps
    and reads ``SERIES_VISITS`` (5,000) series, what 20 epochs of 250 series read: 180
    series get 28 epochs, 90 series 56. So a fit on fewer series costs about what one on 250
    costs, instead of less. More than 250 training series keep 50 and 20. Windows cut from
    long series count as series.
    """
    n = max(int(n_train), 1)
    if isinstance(batch_size, str):
        per_epoch = math.ceil(MIN_STEPS / AUTO_EPOCHS)
        batch_size = AUTO_BATCH if math.ceil(n / AUTO_BATCH) >= per_epoch else \
            int(np.clip(n // per_epoch, MIN_BATCH, AUTO_BATCH))
    if isinstance(max_epochs, str):
        epochs = max(math.ceil(MIN_STEPS / math.ceil(n / batch_size)), math.ceil(SERIES_VISITS / n))
        max_epochs = int(np.clip(epochs, AUTO_EPOCHS, MAX_AUTO_EPOCHS))
    return int(batch_size), int(max_epochs)


def still_learning(valid, cycle_epochs: int) -> bool:
    """Whether an ``"auto"`` fit that has finished a cycle of ``cycle_epochs`` epochs gets another.

    ``valid``: the validation MSE of every epoch so far. Yes when the fit has not left its
    initial plateau (its best is above ``PLATEAU_SHARE``, a half, of the first epoch's) and is
    leaving it (the last quarter of the cycle lowered the best by more than
    ``STILL_LEARNING``, 5%), and when, plateau or not, the last quarter lowered the best by
    more than ``STILL_FAST`` (20%): the schedule ended while the fit still learned fast. A fit
    that learned what it could stops; so does one that has not begun to learn, such as data
    that nothing predicts.
    """
    v = np.asarray(valid, dtype=float)
    k = max(1, math.ceil(cycle_epochs / 4))
    if len(v) <= k or not np.isfinite(v).any():  # (a NaN first epoch fails the comparisons below)
        return False
    before, tail = np.nanmin(v[:-k]) if np.isfinite(v[:-k]).any() else np.inf, np.nanmin(v[-k:])
    leaving = min(before, tail) > PLATEAU_SHARE * v[0] and tail < (1 - STILL_LEARNING) * before
    return bool(leaving or tail < (1 - STILL_FAST) * before)


def cycle_patience(patience, cycle_epochs: int):
    """Epochs without improvement before stopping, within a cycle of ``cycle_epochs`` epochs (None: never stop).

    ``"auto"``: ``MIN_PATIENCE`` (10), or ``PATIENCE_SHARE`` (a quarter) of the cycle if longer, so that a
    budget of 56 epochs waits 14 and one of 93 waits 24: early in a long cosine cycle the learning rate is still
    high and the validation MSE of a fit on few series (or windows of a few long ones) still jumps. An integer is
    kept as given.
    """
    if isinstance(patience, str):
        return max(MIN_PATIENCE, math.ceil(PATIENCE_SHARE * int(cycle_epochs)))
    return patience


def ema_decay(steps_per_epoch: int) -> float:
    """Per-step decay of the weight average that an added cycle scores and keeps (0: none, the weights themselves).

    ``EMA_DECAY`` (0.9, an average over about ten steps), but at most ``1 - 1 / steps_per_epoch``, so that the
    average reaches back about one epoch at most: two steps an epoch average with 0.5, one step (a few
    windows of long series) not at all.
    """
    return max(0.0, min(EMA_DECAY, 1.0 - 1.0 / max(int(steps_per_epoch), 1)))


class WeightAverage:
    """An exponential moving average of a module's weights: ``average`` (a copy of the module) holds it.

    The first :meth:`update` copies the weights; each later one moves the copy a share ``1 - decay``
    toward them (``torch.optim.swa_utils.get_ema_multi_avg_fn``'s rule, without ``AveragedModel``'s
    step counter on the host, whose copy to the device each step would make the host wait for a GPU).
    Buffers are copied.
    """

    def __init__(self, model: torch.nn.Module, decay: float):
        self.average = copy.deepcopy(model)
        self.decay, self.n = float(decay), 0

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        for a, p in zip(self.average.parameters(), model.parameters()):
            if self.n == 0:
                a.copy_(p)
            else:
                a.lerp_(p, 1.0 - self.decay)
        for a, b in zip(self.average.buffers(), model.buffers()):
            a.copy_(b)
        self.n += 1


def scheduled_epochs(first: int, cycles: int) -> int:
    """Epochs scheduled for a fit of ``cycles`` cycles whose first is ``first`` epochs long (an added cycle runs
    to ``MAX_AUTO_EPOCHS``)."""
    return int(first if cycles <= 1 else max(first, MAX_AUTO_EPOCHS))


def fit_loop(model, train: SeriesSet, valid: SeriesSet | None, scaling: Scaling, est, rng, generator, solver,
             device, ctx=SINGLE, budget=None, extend=False, average=False) -> list[dict]:
    """Adam over ``max_epochs`` epochs (more cycles of them with ``extend``) with early stopping on the validation MSE.

    ``budget``: ``(batch_size, max_epochs)`` to use instead of the estimator's (what
    :func:`training_budget` chose).

    ``extend`` (``max_epochs="auto"``): the ``max_epochs`` epochs are a cycle of the learning-rate
    schedule, and when :func:`still_learning` says so at its end, one more cycle runs to
    ``MAX_AUTO_EPOCHS`` (100; a 20-epoch first cycle: 20 + 80), if that is at least as long as
    the first. The schedule restarts (the cosine from its warm-up to the full ``lr``, the
    exponential from ``lr``), the weights and Adam's moments carry over, as in SGDR, and the
    patience counts from the restart. Each record's ``"cycle"`` counts from 1.

    The training and validation series are standardised and moved to ``device`` once. The
    validation MSE scores the weights, and in the cycle that ``extend`` adds an exponential
    moving average of them over the last steps
    (:func:`ema_decay`, :class:`WeightAverage`; as stochastic weight averaging does along a
    cyclic schedule), which smooths the jumps that steps at the restarted learning
    rate make; the best scored weights (lowest validation MSE, or the last without
    validation) are loaded into ``model``. Returns the per-epoch history.

    ``average`` (windowed fits): score and keep the weight average from the first step on, not
    only in an added cycle. The windows of a few long series overlap and their validation
    windows are few, so a single step at a high learning rate moves the validation MSE by up
    to 3x; the average does not.

    Under data parallelism (``ctx``) the model is wrapped in DDP for the epochs, every rank
    draws the same permutation from ``rng``, and the validation MSE is all-reduced, so that
    every rank stops at the same epoch with the same weights; only rank 0 shows progress.

    A ``KeyboardInterrupt`` (Ctrl-C) stops training cleanly, as in skorch and Keras: the
    best weights so far are restored, the last record gets ``"interrupted": True`` (a
    record ``{"epoch": 1, "interrupted": True}`` when no epoch finished) and a warning says so.
    """
    packed = Packed(train, scaling, device)
    held = HeldOut(valid, scaling, device) if valid is not None else None
    net = wrap(model, ctx, device)
    optimizer = torch.optim.Adam(model.parameters(), lr=est.lr, weight_decay=est.weight_decay)
    batch_size, max_epochs = budget or training_budget(train.n_series, est.batch_size, est.max_epochs)
    steps_per_epoch = max(1, math.ceil(train.n_series / batch_size))
    kind = "exponential" if est.lr_decay < 1 else est.lr_schedule
    scheduler = lr_schedule(optimizer, est.lr_decay, kind, max_epochs * steps_per_epoch, steps_per_epoch)
    history, best, best_state, waited, norms = [], np.inf, None, 0, None
    patience = cycle_patience(est.patience, max_epochs)
    bar = tqdm(total=max_epochs, disable=not (est.verbose and ctx.is_main), desc="fit", unit="epoch")
    epoch, total, cycle, length = 0, max_epochs, 1, max_epochs
    averaged, scored = None, model  # the weights scored and kept: the model's own, or their average
    decay = ema_decay(steps_per_epoch)
    if average and decay > 0:
        averaged = WeightAverage(model, decay)
        scored = averaged.average
    try:
        while epoch < total:
            t0 = time.perf_counter()
            stats, norms = run_epoch(net, model, optimizer, packed, est, epoch, rng, generator, solver, batch_size,
                                     scheduler, norms, ctx, averaged)
            train_seconds = time.perf_counter() - t0
            v = evaluate_mse(scored, held, batch_size, solver, ctx)
            record = {"epoch": epoch + 1, **stats, "valid_mse": v, "steps": steps_per_epoch, "cycle": cycle,
                      "train_seconds": train_seconds, "seconds": time.perf_counter() - t0}
            history.append(record)
            bar.update(1)
            bar.set_postfix(loss=f"{stats['loss']:.3f}", valid_mse=f"{v:.4f}", nfe=stats["nfe_forward"])
            epoch += 1
            if valid is not None and np.isfinite(v):
                if v < best:
                    best, waited = v, 0
                    best_state = copy.deepcopy(scored.state_dict())
                elif epoch >= est.kl_warmup:  # no stopping while the KL weight still grows
                    waited += 1
                    if patience is not None and waited >= patience:
                        break
            if (epoch == total and extend and valid is not None and MAX_AUTO_EPOCHS - total >= length
                    and still_learning([r["valid_mse"] for r in history], length)):
                length = MAX_AUTO_EPOCHS - total
                total, cycle = MAX_AUTO_EPOCHS, cycle + 1
                bar.total = total
                scheduler = lr_schedule(optimizer, est.lr_decay, kind, length * steps_per_epoch, steps_per_epoch)
                waited = 0  # the patience counts within a cycle: the restarted rate first raises the error
                patience = cycle_patience(est.patience, length)
                if decay > 0:
                    averaged = WeightAverage(model, decay)
                    scored = averaged.average
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
