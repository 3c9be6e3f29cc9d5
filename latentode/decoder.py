"""The latent ODE dz/dt = f(z), decoded at per-series query times on one short shared grid.

Change of time variable
-----------------------
Series ``i`` wants z at its own sorted query times ``u_i1 <= ... <= u_iQ`` (model time,
origin 0 where z0 sits). With ``u_i0 = 0`` define the piecewise-linear map
``t_i(s) = u_ij + (s - j) (u_i,j+1 - u_ij)`` for ``s`` in ``[j, j+1]``. Then
``y_i(s) = z_i(t_i(s))`` solves ``dy/ds = f(y) * (u_i,j+1 - u_ij)`` and
``y_i(j) = z_i(u_ij)``: every series of the batch is read off at the *same* integer
grid ``s = 0, 1, ..., Q``, so the solver has ``Q`` output intervals (the per-series
count), not the size of the union of all series' times. Padding repeats the last query
(zero-length intervals cost one cheap step). Query times before the origin are fine:
that interval simply runs backwards. The rate is discontinuous at integer ``s``; adaptive
solvers get these points as ``jump_t`` and fixed-grid solvers use torchdiffeq's
``perturb`` so each evaluation sees the rate of its own interval.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torchdiffeq import odeint, odeint_adjoint

from .encoders import mlp

ADAPTIVE = {"dopri5", "dopri8", "bosh3", "fehlberg2", "adaptive_heun"}
FIXED = {"euler", "midpoint", "rk4", "explicit_adams", "implicit_adams"}
METHODS = sorted(ADAPTIVE | FIXED)


class SolverError(RuntimeError):
    """The ODE solver gave up (step cap reached: stiff or exploding dynamics)."""


DYNAMICS_INIT = ("rotations", "mlp")
ROTATION_CYCLES = (0.5, 3.0)  # cycles per model time unit (the median window span) of the initial rotations
ROTATION_DAMPING = 0.1
SPEED_LIMIT = 2.0  # |log-speed| cap of the rotations field: series run at most e^2 times faster or slower


def rotation_matrix(latent_dim: int, cycles=ROTATION_CYCLES, damping=ROTATION_DAMPING) -> torch.Tensor:
    """Block-diagonal (latent_dim, latent_dim) generator of damped rotations.

    Pair ``k`` of latent coordinates rotates at ``2 pi c_k`` radians per time unit, the
    ``c_k`` log-spaced over ``cycles``, and decays at rate ``damping``; an odd last
    coordinate only decays. ``z' = z @ A.T`` then holds sines and cosines of many
    frequencies from the first step, as a Fourier time embedding does.
    """
    a = torch.zeros(latent_dim, latent_dim)
    n_pairs = latent_dim // 2
    freq = 2 * math.pi * torch.logspace(math.log10(cycles[0]), math.log10(cycles[1]), max(n_pairs, 1))
    for k in range(n_pairs):
        i, j = 2 * k, 2 * k + 1
        a[i, i] = a[j, j] = -damping
        a[i, j], a[j, i] = freq[k], -freq[k]
    if latent_dim % 2:
        a[-1, -1] = -damping
    return a


class LatentDynamics(nn.Module):
    """Autonomous field f: (..., latent_dim) -> (..., latent_dim).

    ``init="mlp"`` (Rubanova et al.): an MLP with tanh. ``init="rotations"``: a learned
    linear term plus the MLP, ``f(z) = A z + mlp(z)``, with ``A`` starting as
    :func:`rotation_matrix` and kept stable (a skew-symmetric rotation part minus a
    positive diagonal damping, so the linear part cannot grow a trajectory exponentially;
    the MLP's part is bounded), so the latent state oscillates at many frequencies from the
    first step instead of having to grow them out of a near-zero field (which is what
    keeps a plain MLP field on a plateau for tens of epochs on periodic data).
    ``cycles``: the (lowest, highest) initial frequency, in cycles per time unit.
    With ``"rotations"`` the last latent coordinate ``s`` is also a per-series log-speed:
    it stays constant and the field of the others is ``exp(s) (A z + mlp(z))``, so a
    series whose dynamics run faster or slower (another heart rate, another
    elimination rate) is the same trajectory on a warped clock, which the encoder sets
    through z0 rather than the field having to learn it.

    ``nfe`` counts evaluations (forward solves and adjoint backward solves alike).
    """

    def __init__(self, latent_dim: int, width: int = 50, n_layers: int = 3, init: str = "mlp",
                 cycles=ROTATION_CYCLES):
        super().__init__()
        self.net = mlp(latent_dim, width, latent_dim, n_layers)
        self.speed = init == "rotations" and latent_dim >= 2
        if init == "rotations":
            a = torch.zeros(latent_dim, latent_dim)
            k = latent_dim - 1 if self.speed else latent_dim
            a[:k, :k] = rotation_matrix(k, cycles)
            # A = (S - S^T) / 2 - diag(softplus(d)): a rotation part and a damping part, so the linear
            # part stays stable (no eigenvalue with a positive real part) however it is trained
            self.skew = nn.Parameter(0.5 * (a - a.T))
            self.log_damping = nn.Parameter(torch.full((latent_dim,), math.log(math.expm1(ROTATION_DAMPING))))
            # the last coordinate is a log-speed: constant in time, it scales the whole field of its series
            self.register_buffer("moving", torch.cat([torch.ones(k), torch.zeros(latent_dim - k)]), persistent=False)
        self.init = init
        self.nfe = 0

    @property
    def linear(self) -> torch.Tensor | None:
        """The linear part A of the field, (latent_dim, latent_dim); None for ``init="mlp"``."""
        if self.init != "rotations":
            return None
        return 0.5 * (self.skew - self.skew.T) - torch.diag(nn.functional.softplus(self.log_damping))

    def forward(self, z):
        self.nfe += 1
        out = self.net(z)
        if self.init != "rotations":
            return out
        out = out + z @ self.linear.T
        if self.speed:
            out = out * self.moving * torch.exp(z[..., -1:].clamp(-SPEED_LIMIT, SPEED_LIMIT))
        return out


class TimeChangedField(nn.Module):
    """dy/ds = f(y) * rate[:, floor(s)] for y of shape (..., batch, latent_dim).

    ``rates`` (batch, Q) is set before each solve and must stay until its backward pass
    (the adjoint re-evaluates the field then); it carries no gradient.
    """

    def __init__(self, field: LatentDynamics):
        super().__init__()
        self.field = field
        self.rates: torch.Tensor | None = None

    def forward(self, s, y):
        j = torch.floor(s).clamp(0, self.rates.shape[1] - 1).long().reshape(1)
        return self.field(y) * self.rates.index_select(1, j)


def decode_latent(func: TimeChangedField, z0: torch.Tensor, tq: torch.Tensor, *, method="dopri5",
                  rtol=1e-3, atol=1e-4, adjoint=True, max_num_steps=1000) -> torch.Tensor:
    """Solve the latent ODE from z0 (at model time 0) to each series' query times.

    Parameters
    ----------
    func : TimeChangedField
    z0 : Tensor, shape (samples, batch, latent_dim)
    tq : Tensor, shape (batch, Q)
        Query times per series, ascending along Q (padding repeats the last one).
    method, rtol, atol : solver settings passed to torchdiffeq.
    adjoint : bool
        ``odeint_adjoint`` (memory flat in the number of solver steps) or backprop
        through the solver.
    max_num_steps : int
        Cap on accepted steps per output interval and model time unit (an interval of
        length 3 may take 3 times as many) for adaptive methods.

    Returns
    -------
    Tensor, shape (samples, batch, Q, latent_dim)

    Raises
    ------
    SolverError
        When an adaptive solver hits ``max_num_steps``.
    """
    n_q = tq.shape[1]
    knots = torch.cat([torch.zeros_like(tq[:, :1]), tq], dim=1)
    func.rates = (knots[:, 1:] - knots[:, :-1]).detach()
    s = torch.arange(n_q + 1, dtype=torch.float64, device=z0.device).to(z0.dtype)
    if method in ADAPTIVE:
        # the cap is per output interval and per model time unit: a query far beyond the data needs
        # proportionally more steps of a field that oscillates
        longest = float(func.rates.abs().max()) if func.rates.numel() else 1.0
        options = {"max_num_steps": int(max_num_steps * max(1.0, math.ceil(longest)))}
        if n_q > 1:
            options["jump_t"] = s[1:-1]
    else:
        options = {"perturb": True}
    kwargs = dict(rtol=rtol, atol=atol, method=method, options=options)
    try:
        if adjoint and torch.is_grad_enabled():  # without gradients the adjoint has nothing to add
            adj_options = dict(options, norm="seminorm")
            ys = odeint_adjoint(func, z0, s, adjoint_options=adj_options, **kwargs)
        else:
            ys = odeint(func, z0, s, **kwargs)
    except AssertionError as err:  # torchdiffeq signals the step cap with an assert
        if "max_num_steps" in str(err):
            raise SolverError(
                f"the ODE solver ({method}) reached max_num_steps={max_num_steps} within one output interval: "
                "the learned dynamics are stiff or exploding. Lower lr, loosen rtol/atol, raise max_num_steps "
                "or use a fixed-step method such as method='rk4'."
            ) from err
        raise
    return ys[1:].permute(1, 2, 0, 3)


class Decoder(nn.Module):
    """Latent dynamics plus a linear read-out to the variables and a per-variable noise scale.

    Attributes
    ----------
    log_noise : Parameter, shape (n_features,)
        log of the observation noise standard deviation (standardised units); learned when
        ``noise_std`` is None, else fixed at ``log(noise_std)``.
    """

    def __init__(self, latent_dim: int, n_features: int, width: int = 50, n_layers: int = 3,
                 noise_min: float = 1e-3, noise_std: float | None = None, dynamics_init: str = "mlp",
                 rotation_cycles=ROTATION_CYCLES):
        super().__init__()
        self.dynamics = LatentDynamics(latent_dim, width, n_layers, dynamics_init, rotation_cycles)
        self.func = TimeChangedField(self.dynamics)
        self.readout = nn.Linear(latent_dim, n_features)
        if noise_std is None:  # learned, per variable
            self.log_noise = nn.Parameter(torch.full((n_features,), -0.5))
            self.noise_min = noise_min
        else:  # fixed (kept in the state dict, never trained)
            self.log_noise = nn.Parameter(torch.full((n_features,), math.log(noise_std)), requires_grad=False)
            self.noise_min = 0.0

    @property
    def noise_std(self) -> torch.Tensor:
        """(n_features,) observation noise standard deviation, at least ``noise_min``."""
        return self.log_noise.exp() + self.noise_min

    def forward(self, z0, tq, **solver):
        """(samples, batch, latent) and (batch, Q) -> predicted means (samples, batch, Q, features)."""
        return self.readout(decode_latent(self.func, z0, tq, **solver))
