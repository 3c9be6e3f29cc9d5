"""Encoders q(z0 | x): from a padded batch of observations to a Gaussian over z0.

Both encoders walk each series' own observation times, vectorised over the batch; padded
steps are zero-length and masked, so they change nothing. Two anchors:

- ``anchor="origin"`` (Rubanova et al.): backwards, from the last observation to the
  window origin (model time 0); ``z0`` is the state at the origin.
- ``anchor="last"``: forwards, from the origin to the last *observed* step
  (:func:`last_observed_time`); ``z0`` is the state there, so the most recent values
  reach it through one update instead of the whole series (suits forecasting).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

SIGMA_MIN = 1e-3


def mlp(n_in: int, n_hidden: int, n_out: int, n_layers: int) -> nn.Sequential:
    """``n_layers`` linear layers with tanh between them (``n_layers >= 1``)."""
    layers, width = [], n_in
    for _ in range(n_layers - 1):
        layers += [nn.Linear(width, n_hidden), nn.Tanh()]
        width = n_hidden
    layers.append(nn.Linear(width, n_out))
    return nn.Sequential(*layers)


ANCHORS = ("origin", "last")


def last_observed_time(t: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """(batch,) time of each series' last step with an observed value (0 when none).

    t : (batch, time) ascending model times; m : (batch, time, features) mask.
    """
    seen = m.amax(dim=-1) > 0
    return torch.where(seen, t, torch.zeros_like(t)).amax(dim=1)


def stopped_clock(t: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """(batch, time) model times with the clock stopped at each series' last observed step.

    Later steps (hidden for forecasting, or padding) then add no time, so a context that ends at its
    last observation encodes as it did in training.
    """
    return torch.minimum(t, last_observed_time(t, m).unsqueeze(1))


def anchor_time(anchor: str, t: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """(batch,) model time at which the encoder places z0 for ``anchor``."""
    if anchor == "origin":
        return torch.zeros_like(t[:, 0])
    return last_observed_time(t, m)


class _Posterior(nn.Module):
    """Hidden state -> (mu, sigma) of q(z0|x), with ``sigma >= SIGMA_MIN``."""

    def __init__(self, hidden_dim: int, latent_dim: int, width: int):
        super().__init__()
        self.net = mlp(hidden_dim, width, 2 * latent_dim, 2)

    def forward(self, h):
        mu, s = self.net(h).chunk(2, dim=-1)
        return mu, F.softplus(s) + SIGMA_MIN


class ODERNNEncoder(nn.Module):
    """ODE-RNN encoder (Rubanova et al. 2019), run backwards in time.

    At each observation a mask-gated GRU update (inputs: values and mask); between
    observations the hidden state follows dh/dt = g(h), integrated with classical RK4
    in sub-steps of at most ``max_step`` model time units.

    Parameters
    ----------
    n_features, latent_dim : int
    hidden_dim : int
        GRU state size.
    width, n_layers : int
        Width and depth of the MLP g and of the output network.
    max_step : float
        Largest RK4 step, in model time units (the median series span is 1).
    """

    def __init__(self, n_features: int, latent_dim: int, hidden_dim: int = 40, width: int = 50,
                 n_layers: int = 3, max_step: float = 0.25, anchor: str = "origin"):
        super().__init__()
        self.gru = nn.GRUCell(2 * n_features, hidden_dim)
        self.ode = mlp(hidden_dim, width, hidden_dim, n_layers)
        self.posterior = _Posterior(hidden_dim, latent_dim, width)
        self.hidden_dim, self.max_step, self.anchor = hidden_dim, max_step, anchor
        self.nfe = 0

    def _evolve(self, h: torch.Tensor, dt: torch.Tensor, n_sub: int) -> torch.Tensor:
        """RK4 for dh/dt = g(h) over per-series intervals ``dt`` (batch, 1) in ``n_sub`` equal steps."""
        if n_sub == 0:  # padded or repeated times: nothing to integrate
            return h
        step = dt / n_sub
        for _ in range(n_sub):
            k1 = self.ode(h)
            k2 = self.ode(h + 0.5 * step * k1)
            k3 = self.ode(h + 0.5 * step * k2)
            k4 = self.ode(h + step * k3)
            h = h + step / 6.0 * (k1 + 2 * k2 + 2 * k3 + k4)
            self.nfe += 4
        return h

    def substeps(self, gaps: torch.Tensor) -> list[int]:
        """RK4 sub-steps of every interval, from ``gaps`` (batch, n_intervals): one read to the host per batch.

        An interval takes ``ceil(longest gap of the batch / max_step)`` steps, 0 when every gap is 0.
        """
        if not gaps.numel():
            return [0] * gaps.shape[1]
        longest = gaps.detach().abs().amax(dim=0).double().cpu().numpy()
        return [int(np.ceil(g / self.max_step)) if g > 0 else 0 for g in longest]

    def forward(self, t: torch.Tensor, x: torch.Tensor, m: torch.Tensor):
        """Encode a batch.

        Parameters
        ----------
        t : (batch, time) model times, origin 0, ascending, padding repeats the last time
        x : (batch, time, features) standardised values, 0 where unobserved
        m : (batch, time, features) observation mask

        Returns
        -------
        mu, sigma : (batch, latent_dim)
            q(z0|x) at :func:`anchor_time` (the origin, or the last observed step).
        """
        inp = torch.cat([x * m, m], dim=-1)
        seen = m.amax(dim=-1, keepdim=True) > 0  # (batch, time, 1)
        h = x.new_zeros(x.shape[0], self.hidden_dim)
        n_t = t.shape[1]
        tc = stopped_clock(t, m)
        if self.anchor == "last":
            gaps = tc[:, 1:] - tc[:, :-1]  # (batch, time - 1): step j - 1 -> j
            n_sub = self.substeps(gaps)
            for j in range(n_t):
                if j > 0:
                    h = self._evolve(h, gaps[:, j - 1:j], n_sub[j - 1])
                h = torch.where(seen[:, j], self.gru(inp[:, j], h), h)
            return self.posterior(h)
        # backwards: step j -> j - 1, and step 0 -> the origin
        gaps = torch.cat([torch.zeros_like(tc[:, :1]), tc[:, :-1]], dim=1) - tc  # (batch, time), <= 0
        n_sub = self.substeps(gaps)
        for j in range(n_t - 1, -1, -1):
            h = torch.where(seen[:, j], self.gru(inp[:, j], h), h)
            h = self._evolve(h, gaps[:, j:j + 1], n_sub[j])
        return self.posterior(h)


class GRUEncoder(nn.Module):
    """A GRU fed values, mask and the time gap to the previous (later) step, run backwards.

    A final step with an empty observation carries the state from the first observation
    back to the window origin, so that z0 sits at model time 0 for both encoders.
    """

    def __init__(self, n_features: int, latent_dim: int, hidden_dim: int = 40, width: int = 50,
                 anchor: str = "origin", **_):
        super().__init__()
        self.gru = nn.GRUCell(2 * n_features + 1, hidden_dim)
        self.posterior = _Posterior(hidden_dim, latent_dim, width)
        self.hidden_dim, self.anchor = hidden_dim, anchor
        self.nfe = 0

    def forward(self, t, x, m):
        """Same contract as :meth:`ODERNNEncoder.forward`."""
        seen = m.amax(dim=-1, keepdim=True) > 0
        if self.anchor == "last":
            # forwards; the gap input is the time since the previous observed step (from the origin
            # for the first), and the state ends at the last observed step
            h = x.new_zeros(x.shape[0], self.hidden_dim)
            prev = torch.zeros_like(t[:, :1])
            for j in range(t.shape[1]):
                step_in = torch.cat([x[:, j] * m[:, j], m[:, j], t[:, j:j + 1] - prev], dim=-1)
                h = torch.where(seen[:, j], self.gru(step_in, h), h)
                prev = torch.where(seen[:, j], t[:, j:j + 1], prev)
            return self.posterior(h)
        # gap from each step to the later step already consumed (0 for the last one), on the stopped clock
        tc = stopped_clock(t, m)
        gap = torch.cat([tc[:, 1:] - tc[:, :-1], torch.zeros_like(tc[:, :1])], dim=1).unsqueeze(-1)
        inp = torch.cat([x * m, m, gap], dim=-1)
        h = x.new_zeros(x.shape[0], self.hidden_dim)
        acc = torch.zeros_like(gap[:, 0])  # time since the last consumed observation
        for j in range(t.shape[1] - 1, -1, -1):
            acc = acc + gap[:, j]
            step_in = torch.cat([inp[:, j, :-1], acc], dim=-1)
            h = torch.where(seen[:, j], self.gru(step_in, h), h)
            acc = torch.where(seen[:, j], torch.zeros_like(acc), acc)
        tail = torch.cat([torch.zeros_like(inp[:, 0, :-1]), acc + t[:, :1]], dim=-1)
        h = self.gru(tail, h)
        return self.posterior(h)


ENCODERS = {"odernn": ODERNNEncoder, "gru": GRUEncoder}
