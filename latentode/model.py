"""The Latent ODE as a torch module: encoder -> z0 -> ODE decode -> masked Gaussian likelihood."""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn

from ._collate import Batch
from .decoder import Decoder
from .encoders import ENCODERS, anchor_time
from .priors import make_prior

LOG_2PI = math.log(2 * math.pi)
CENTERS = ("last", "mean", "interp")
N_CONTEXT = 4  # per-variable inputs of the "per_variable" read-out (:meth:`Reference.context`)


def series_level(center, x, m):
    """Per-series constant reference value of each variable.

    x, m : (batch, time, features) standardised values and mask -> (batch, features).
    ``center=None``: zeros (the training mean; Rubanova et al.). "last": the series' last
    observed value of the variable; "mean": the mean of its observed values. A variable the
    series never observed gets 0.
    """
    if center is None:
        return x.new_zeros(x.shape[0], x.shape[-1])
    if center == "mean":
        return (x * m).sum(dim=1) / m.sum(dim=1).clamp_min(1.0)
    steps = torch.arange(x.shape[1], device=x.device).view(1, -1, 1)
    last = torch.where(m > 0, steps, -1).amax(dim=1)                                  # (batch, features)
    value = x.gather(1, last.clamp_min(0).unsqueeze(1)).squeeze(1)
    return torch.where(last >= 0, value, torch.zeros_like(value))


def _neighbours(t, m, tq, strict=False):
    """Each variable's nearest observed steps around ``tq``: the one at or before and the one after
    (``strict``: strictly before and strictly after, so a value observed at ``tq`` itself is left out).

    t : (batch, time); m : (batch, time, features); tq : (batch, Q) ->
    p, n : (batch, Q, features) step indices (clamped into range), has_p, has_n : bool, whether they exist.
    """
    b, n_t, n_f = m.shape
    n_q = tq.shape[1]
    steps = torch.arange(n_t, device=m.device).view(1, -1, 1).expand(b, n_t, n_f)
    observed = m > 0
    prev = torch.where(observed, steps, -1).cummax(dim=1).values                  # last observed step <= j
    nxt = torch.where(observed, steps, n_t).flip(1).cummin(dim=1).values.flip(1)  # first observed step >= j
    tc, qc = t.contiguous(), tq.contiguous()
    k = torch.searchsorted(tc, qc, right=True)                                    # (b, Q): first step with t_k > tq
    j = (torch.searchsorted(tc, qc, right=False) if strict else k) - 1           # last step with t_j < (<=) tq
    at_j = j.clamp_min(0).unsqueeze(-1).expand(b, n_q, n_f)
    after_k = k.clamp_max(n_t - 1).unsqueeze(-1).expand(b, n_q, n_f)
    p = torch.where((j >= 0).unsqueeze(-1), prev.gather(1, at_j), -1)              # (b, Q, features)
    n = torch.where((k < n_t).unsqueeze(-1), nxt.gather(1, after_k), n_t)
    has_p, has_n = p >= 0, n < n_t
    return p.clamp(0, n_t - 1), n.clamp(0, n_t - 1), has_p, has_n


def interpolate_observed(t, x, m, tq, return_distance=False, strict=False):
    """Each variable's observed values, linearly interpolated in time at ``tq``.

    Before a variable's first and after its last observation the nearest observed value
    is carried (so past the end this is last-value-carried-forward); a variable the
    series never observed gives 0.

    t : (batch, time), non-decreasing per row; x, m : (batch, time, features);
    tq : (batch, Q) -> (batch, Q, features); with ``return_distance`` also the time from
    each query to the nearest observed value of its variable, (batch, Q, features)
    (infinite for a variable the series never observed). ``strict`` leaves out a value
    observed at the query time itself: the interpolation of the *other* values.
    """
    return _interpolate(t, x, tq, *_neighbours(t, m, tq, strict), return_distance=return_distance)


def _interpolate(t, x, tq, p, n, has_p, has_n, return_distance=False):
    """:func:`interpolate_observed` from the neighbours that :func:`_neighbours` found."""
    n_f = x.shape[-1]
    tt = t.unsqueeze(-1).expand(-1, -1, n_f)
    tp, tn = tt.gather(1, p), tt.gather(1, n)
    xp, xn = x.gather(1, p), x.gather(1, n)
    gap = tn - tp
    w = torch.where(gap > 0, (tq.unsqueeze(-1) - tp) / torch.where(gap > 0, gap, 1.0), 0.0).clamp(0.0, 1.0)
    both = xp + w * (xn - xp)
    r = torch.where(has_p & has_n, both, torch.where(has_p, xp, torch.where(has_n, xn, torch.zeros_like(xp))))
    if not return_distance:
        return r
    inf = torch.full_like(tp, float("inf"))
    q = tq.unsqueeze(-1)
    distance = torch.minimum(torch.where(has_p, (q - tp).abs(), inf), torch.where(has_n, (tn - q).abs(), inf))
    return r, distance


def reference_and_regime(t, x, m, tq):
    """Interpolation of the visible values at ``tq``, whether ``tq`` lies outside their span, and how far
    it lies from the nearest visible value.

    t : (batch, time); x, m : (batch, time, features); tq : (batch, Q)
    -> r : (batch, Q, features), outside : (batch, Q, features) bool, distance : (batch, Q, features)
    (model time units; infinite for a variable with no visible value)
    """
    r, distance = interpolate_observed(t, x, m, tq, return_distance=True)
    big = torch.finfo(t.dtype).max
    tt = t.unsqueeze(-1).expand_as(m)
    first = torch.where(m > 0, tt, big).amin(dim=1)      # (batch, features)
    last = torch.where(m > 0, tt, -big).amax(dim=1)
    q = tq.unsqueeze(-1)
    outside = (q < first.unsqueeze(1)) | (q > last.unsqueeze(1))
    return r, outside, distance


class Reference(NamedTuple):
    """What the decoder's read-out of a batch of series is relative to (the ``center``).

    Built from the values the encoder saw, so nothing hidden from it leaks.

    Attributes
    ----------
    center : {None, "last", "mean", "interp"}
    t : Tensor, shape (batch, time)
    x, m : Tensor, shape (batch, time, features)
        The encoder's input (standardised values and mask).
    """

    center: str | None
    t: torch.Tensor
    x: torch.Tensor
    m: torch.Tensor

    def at(self, tq):
        """Reference values at query times ``tq`` (batch, Q): (batch, Q, features)."""
        if self.center == "interp":
            return interpolate_observed(self.t, self.x, self.m, tq)
        return series_level(self.center, self.x, self.m).unsqueeze(1).expand(-1, tq.shape[1], -1)

    def context(self, tq):
        """What the ``"per_variable"`` read-out knows of each variable at query times ``tq`` (batch, Q).

        Built from the variable's visible values at *other* times than the query's: a value
        observed at the query time is left out, so that in training the read-out of a visible
        value cannot copy it and learns, as for a hidden one, from its neighbours.

        Returns (batch, Q, features, N_CONTEXT): the linear interpolation of those values
        (the nearest one outside their span), ``log1p`` of the time to the nearest of them,
        whether there is any, and whether the query lies outside their span (no value on one
        side). All four are 0 for a variable with no such value.
        """
        sides = _neighbours(self.t, self.m, tq, strict=True)
        r, distance = _interpolate(self.t, self.x, tq, *sides, return_distance=True)
        seen, has_p, has_n = torch.isfinite(distance), sides[2], sides[3]
        d = torch.where(seen, torch.log1p(distance.clamp(0.0, 1e3)), torch.zeros_like(distance))
        return torch.stack([r, d, seen.to(r.dtype), (seen & ~(has_p & has_n)).to(r.dtype)], dim=-1)


class Posterior(NamedTuple):
    """What the encoder gives for a batch of series.

    Attributes
    ----------
    mu, sigma : Tensor, shape (batch, latent_dim)
        q(z0|x).
    t0 : Tensor, shape (batch,)
        Model time at which z0 sits.
    reference : Reference
        What the decoded read-out is added to (:meth:`Reference.at`).
    """

    mu: torch.Tensor
    sigma: torch.Tensor
    t0: torch.Tensor
    reference: Reference


class LatentODE(nn.Module):
    """Encoder q(z0|x), prior p(z0), latent ODE decoder p(x|z0).

    Parameters
    ----------
    n_features, latent_dim : int
    encoder : {"odernn", "gru", "attention"}
    encoder_dim : int
        Encoder hidden state size.
    width, n_layers : int
        Width and depth of every MLP (encoder ODE, latent dynamics).
    prior : str
        A name in :data:`latentode.priors.PRIORS`.
    prior_options : dict or None
        Keyword options for the prior.
    noise_std : float or None
        Fixed observation noise std (standardised units); None learns one per variable.
    anchor : {"origin", "last"}
        Where z0 sits: the window origin (Rubanova et al.) or each series' last observed
        step (see :mod:`latentode.encoders`).
    center : {None, "last", "mean", "interp"}
        Per-series reference the read-out is relative to (:class:`Reference`).
    dynamics_init : {"mlp", "rotations"}
        The latent field (:class:`~latentode.decoder.LatentDynamics`).
    rotation_cycles : (float, float)
        Lowest and highest initial frequency of ``"rotations"`` (cycles per time unit).
    readout : {"linear", "per_variable"}
        From z(t) to the variables (:class:`~latentode.decoder.Decoder`); "per_variable" also
        reads each variable's :meth:`Reference.context`.
    """

    def __init__(self, n_features: int, latent_dim: int, encoder: str = "odernn", encoder_dim: int = 40,
                 width: int = 50, n_layers: int = 3, prior: str = "normal", prior_options=None,
                 noise_std: float | None = None, anchor: str = "origin",
                 center: str | None = None, dynamics_init: str = "mlp", rotation_cycles=(0.5, 3.0),
                 readout: str = "linear"):
        super().__init__()
        self.encoder = ENCODERS[encoder](n_features, latent_dim, hidden_dim=encoder_dim, width=width,
                                         n_layers=n_layers, anchor=anchor)
        self.decoder = Decoder(latent_dim, n_features, width, n_layers, noise_std=noise_std,
                               dynamics_init=dynamics_init, rotation_cycles=rotation_cycles, readout=readout,
                               n_context=N_CONTEXT)
        self.prior = make_prior(prior, latent_dim, prior_options)
        self.latent_dim, self.anchor, self.center = latent_dim, anchor, center
        # per-variable weights of the training likelihood (set by the estimator's fit; not saved:
        # they only matter while training)
        self.register_buffer("variable_weight", torch.ones(n_features), persistent=False)

    def encode(self, t, x, m) -> Posterior:
        """q(z0|x), where z0 sits and the series' reference values.

        t : (batch, time); x, m : (batch, time, features) -> :class:`Posterior`
        """
        mu, sigma = self.encoder(t, x, m)
        return Posterior(mu, sigma, anchor_time(self.anchor, t, m), Reference(self.center, t, x, m))

    def decode(self, z0, tq, t0, reference=None, **solver):
        """Predicted means at query times ``tq`` (batch, Q) from z0 (samples, batch, latent) at ``t0`` (batch,),
        plus ``reference.at(tq)`` if given: (samples, batch, Q, features)."""
        context = reference.context(tq) if (reference is not None and self.decoder.uses_context) else None
        xhat = self.decoder(z0, tq - t0.unsqueeze(1), context=context, **solver)
        if reference is None or reference.center is None:  # the training mean: nothing to add
            return xhat
        return xhat + reference.at(tq).unsqueeze(0)

    def sample_z0(self, mu, sigma, n_samples: int, generator=None):
        """Reparameterised draws from q(z0|x): (samples, batch, latent_dim)."""
        eps = torch.randn((n_samples,) + tuple(mu.shape), generator=generator, device=mu.device, dtype=mu.dtype)
        return mu + sigma * eps

    def log_likelihood(self, xhat, x, m):
        """Masked Gaussian log-likelihood, summed over time and variables.

        xhat : (samples, batch, time, features); x, m : (batch, time, features) -> (samples, batch)
        """
        noise = self.decoder.noise_std
        z = (x - xhat) / noise
        ll = -0.5 * z.pow(2) - torch.log(noise) - 0.5 * LOG_2PI
        return (ll * m).sum(dim=(-2, -1))

    def forward(self, batch: Batch, enc_mask, **kwargs):
        """The training loss, :meth:`loss` (what DistributedDataParallel calls)."""
        return self.loss(batch, enc_mask, **kwargs)

    def loss(self, batch: Batch, enc_mask, *, n_samples: int = 1, kl_weight: float = 1.0, generator=None,
             solver=None, loss_on: str = "all", eps=None, normalizer=None, share: float = 1.0):
        """Negative ELBO (``n_samples=1``) or IWAE bound, per scored value.

        The encoder sees ``enc_mask``. With ``loss_on="all"`` the likelihood scores every
        observed value (``batch.m``), so hidden values train imputation and forecasting
        next to reconstruction; with ``"hidden"`` only the observed values the encoder did
        not see (``batch.m - enc_mask``) are scored.

        ``eps`` (samples, batch, latent_dim), ``normalizer`` and ``share`` let a batch be one
        rank's rows of a larger global batch: the reparameterisation noise drawn for those
        rows, the global batch's (weighted) count of scored values, and the rows' share of the
        global batch's series. The returned loss and statistics are then this part's
        contributions, which sum over the parts to the global batch's values.

        Returns
        -------
        loss : scalar Tensor
            ``-sum(bound) / normalizer`` (default: this batch's weighted count of scored
            values) ``+ share *`` the prior's regularisation, if any.
        stats : dict of 0-d tensors
            ``mse`` of the sample-mean reconstruction (standardised units, over
            ``normalizer``) and ``kl`` (summed over the rows, divided by ``rows / share``).
        """
        solver = solver or {}
        mu, sigma, t0, reference = self.encode(batch.t, batch.x * enc_mask, enc_mask)
        z0 = self.sample_z0(mu, sigma, n_samples, generator) if eps is None else mu + sigma * eps
        xhat = self.decode(z0, batch.t, t0, reference, **solver)
        scored = batch.m if loss_on == "all" else batch.m * (1 - enc_mask)
        scored = scored * self.variable_weight  # weights 1 unless the estimator set others
        ll = self.log_likelihood(xhat, batch.x, scored)
        reg = torch.zeros((), device=mu.device)
        kl_fn = getattr(self.prior, "analytic_kl", None)
        kl_value = kl_fn(mu, sigma) if (n_samples == 1 and kl_fn is not None) else None
        if kl_value is not None:
            bound = ll[0] - kl_weight * kl_value
            kl = kl_value
        else:
            log_q = torch.distributions.Normal(mu, sigma).log_prob(z0).sum(-1)
            if getattr(self.prior, "kinetic_weight", 0) or getattr(self.prior, "jacobian_weight", 0):
                log_p, reg = self.prior.log_prob(z0, return_regularization=True)
            else:
                log_p = self.prior.log_prob(z0)
            log_w = ll + kl_weight * (log_p - log_q)
            bound = torch.logsumexp(log_w, dim=0) - math.log(n_samples)
            kl = (log_q - log_p).mean(0)
        n_obs = scored.sum().clamp_min(1.0) if normalizer is None else normalizer
        loss = -bound.sum() / n_obs + share * reg
        with torch.no_grad():
            mse = ((xhat.mean(0) - batch.x).pow(2) * scored).sum() / n_obs
            kl = kl.detach().sum() * share / kl.shape[0]
        return loss, {"mse": mse, "kl": kl}
