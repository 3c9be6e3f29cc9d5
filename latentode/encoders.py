"""Encoders q(z0 | x): from a padded batch of observations to a Gaussian over z0.

The recurrent encoders walk each series' own observation times, vectorised over the batch; padded
steps are zero-length and masked, so they change nothing. Two anchors:

- ``anchor="origin"`` (Rubanova et al.): backwards, from the last observation to the
  window origin (model time 0); ``z0`` is the state at the origin.
- ``anchor="last"``: forwards, from the origin to the last *observed* step
  (:func:`last_observed_time`); ``z0`` is the state there, so the most recent values
  reach it through one update instead of the whole series (suits forecasting).
"""

from __future__ import annotations

import math

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


class AttentionEncoder(nn.Module):
    """Multi-time attention per variable (mTAN; Shukla & Marlin 2021), then a GRU over reference times.

    Each series gets ``n_ref`` reference times evenly spread from the window origin to its last
    observed step. A learnable time embedding ``phi(t) = [a t + b, sin(W t + c)]`` gives
    queries (at the reference times) and keys (at the observation times) for ``n_heads``
    heads; for each head, reference time and variable, the softmax over *that variable's*
    observations weighs its values. Per reference time the GRU reads, for every head and
    variable, the attended value and the share of the attention that fell on steps where
    the variable was observed (0 and 0 for a variable with no observation), plus the
    spacing of the reference times. It runs backwards to the origin (``anchor="origin"``) or
    forwards to the last observed step (``"last"``), as the recurrent encoders do, over
    ``n_ref`` steps whatever the number of observations: there is no loop over them.

    Parameters
    ----------
    n_features, latent_dim : int
    hidden_dim : int
        GRU state size.
    width : int
        Width of the output network.
    n_ref, n_heads, embed_dim : int
        Reference times, attention heads and size of the time embedding.
    """

    def __init__(self, n_features: int, latent_dim: int, hidden_dim: int = 40, width: int = 50,
                 anchor: str = "origin", n_ref: int = 16, n_heads: int = 4, embed_dim: int = 16, **_):
        super().__init__()
        self.time_linear = nn.Linear(1, 1)
        self.time_periodic = nn.Linear(1, embed_dim - 1)
        with torch.no_grad():  # frequencies from half a cycle to n_ref / 2 cycles per time unit (the median span)
            cycles = torch.logspace(np.log10(0.5), np.log10(max(n_ref / 2, 1.0)), embed_dim - 1)
            self.time_periodic.weight.copy_(2 * np.pi * cycles.unsqueeze(1))
            self.time_periodic.bias.uniform_(0, 2 * np.pi)
        self.query = nn.Linear(embed_dim, embed_dim * n_heads)
        self.key = nn.Linear(embed_dim, embed_dim * n_heads)
        self.gru = nn.GRU(2 * n_heads * n_features + 1, hidden_dim, batch_first=True)
        self.posterior = _Posterior(hidden_dim, latent_dim, width)
        self.hidden_dim, self.anchor = hidden_dim, anchor
        self.n_ref, self.n_heads, self.embed_dim = n_ref, n_heads, embed_dim
        self.nfe = 0

    def embed(self, t: torch.Tensor) -> torch.Tensor:
        """(...) times -> (..., embed_dim) embedding."""
        t = t.unsqueeze(-1)
        return torch.cat([self.time_linear(t), torch.sin(self.time_periodic(t))], dim=-1)

    def attend(self, t, x, m):
        """The GRU's input sequence, (batch, n_ref, 2 * n_heads * features + 1), in forward time order."""
        b, n_t, n_f = x.shape
        h, e = self.n_heads, self.embed_dim
        tc = stopped_clock(t, m)
        end = last_observed_time(t, m)                                                    # (batch,)
        ref = end.unsqueeze(1) * torch.linspace(0, 1, self.n_ref, device=t.device, dtype=t.dtype)  # (batch, n_ref)
        q = self.query(self.embed(ref)).view(b, self.n_ref, h, e).transpose(1, 2)        # (batch, heads, n_ref, e)
        k = self.key(self.embed(tc)).view(b, n_t, h, e).transpose(1, 2)                  # (batch, heads, time, e)
        score = q @ k.transpose(-1, -2) / math.sqrt(e)                                   # (batch, heads, n_ref, time)
        seen = (m.amax(dim=-1) > 0).unsqueeze(1).unsqueeze(1)                            # (batch, 1, 1, time)
        score = score.masked_fill(~seen, float("-inf"))
        top = score.amax(dim=-1, keepdim=True)
        w = torch.exp(score - torch.where(torch.isfinite(top), top, torch.zeros_like(top)))  # 0 at unseen steps
        num = torch.einsum("bhkt,btf->bhkf", w, x * m)
        den = torch.einsum("bhkt,btf->bhkf", w, m)
        value = torch.where(den > 1e-30, num / den.clamp_min(1e-30), torch.zeros_like(num))
        share = den / w.sum(dim=-1, keepdim=True).clamp_min(1e-30)                      # (batch, heads, n_ref, features)
        feats = torch.cat([value, share], dim=-1).permute(0, 2, 1, 3).reshape(b, self.n_ref, 2 * h * n_f)
        spacing = (end / max(self.n_ref - 1, 1)).view(b, 1, 1).expand(b, self.n_ref, 1)
        return torch.cat([feats, spacing], dim=-1)

    def forward(self, t, x, m):
        """Same contract as :meth:`ODERNNEncoder.forward`."""
        seq = self.attend(t, x, m)
        if self.anchor == "origin":
            seq = seq.flip(1)  # read backwards, ending at the origin
        _, h = self.gru(seq)
        return self.posterior(h[0])


ENCODERS = {"odernn": ODERNNEncoder, "gru": GRUEncoder, "attention": AttentionEncoder}
