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
(zero-length intervals cost one cheap step). The rate is discontinuous at integer ``s``;
adaptive solvers get these points as ``jump_t`` and fixed-grid solvers use torchdiffeq's
``perturb`` so each evaluation sees the rate of its own interval.

Queries before the origin (``anchor="last"``, or times before a window) are solved outward
from z0: the batch is doubled, one copy runs backwards through the earlier queries (latest
first), the other forwards through the later ones, in one solve, and the two are merged.

Solver settings
---------------
* Fixed-step methods take steps of at most ``step_size`` model time units (each output
  interval is split into ``ceil(longest rate / step_size)`` equal steps), so a value does not
  depend on which other times were queried.
* Adaptive methods measure the error of each series by its own RMS over the latent
  dimensions and accept a step on the worst series (not one RMS over the whole batch, in which
  padded, idle batch-mates would loosen the tolerance of the active ones).
* ``max_num_steps`` is enforced by the field itself, which counts its evaluations per output
  interval; it holds in the adjoint's backward solve and under ``python -O`` (torchdiffeq's
  own cap is an ``assert``).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torchdiffeq import odeint, odeint_adjoint

from ._solvers import ADAPTIVE, ADAPTIVE_STAGES, FIXED, METHODS, SolverError
from .encoders import mlp

__all__ = ["ADAPTIVE", "FIXED", "METHODS", "READOUTS", "SolverError", "LatentDynamics", "TimeChangedField",
           "decode_latent", "PerVariableReadout", "Decoder"]


DYNAMICS_INIT = ("rotations", "mlp")
ROTATION_CYCLES = (0.5, 3.0)  # cycles per model time unit (the median window span) of the initial rotations
ROTATION_DAMPING = 0.1


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

    ``nfe`` counts evaluations (forward solves and adjoint backward solves alike).
    """

    def __init__(self, latent_dim: int, width: int = 50, n_layers: int = 3, init: str = "mlp",
                 cycles=ROTATION_CYCLES):
        super().__init__()
        self.net = mlp(latent_dim, width, latent_dim, n_layers)
        if init == "rotations":
            a = rotation_matrix(latent_dim, cycles)
            # A = (S - S^T) / 2 - diag(softplus(d)): a rotation part and a damping part, so the linear
            # part stays stable (no eigenvalue with a positive real part) however it is trained
            self.skew = nn.Parameter(0.5 * (a - a.T))
            self.log_damping = nn.Parameter(torch.full((latent_dim,), math.log(math.expm1(ROTATION_DAMPING))))
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
        return out + z @ self.linear.T


class TimeChangedField(nn.Module):
    """dy/ds = f(y) * rates[:, floor(s)] for y of shape (..., batch, latent_dim), for one solve.

    A fresh instance is built per solve and holds that solve's ``rates``, so the adjoint's backward
    solve, which evaluates the field again later, sees them even if other solves ran in between.
    The dynamics' parameters are shared (``dynamics`` is the decoder's module).

    Parameters
    ----------
    dynamics : nn.Module
        f: (..., latent_dim) -> (..., latent_dim).
    rates : Tensor, shape (batch, Q)
        Length (model time, signed) of each series' output interval; carries no gradient.
    max_evals : int or None
        Most evaluations in a row within one output interval before :class:`SolverError`.
    method, max_num_steps : str, int
        Only for the error message.
    """

    def __init__(self, dynamics: nn.Module, rates: torch.Tensor, max_evals: int | None = None,
                 method: str = "", max_num_steps: int | None = None):
        super().__init__()
        self.dynamics = dynamics
        self.rates = rates.detach()
        self.max_evals, self.method, self.max_num_steps = max_evals, method, max_num_steps
        self.reset_count()

    def reset_count(self) -> None:
        """Forget the evaluations counted so far (called before the backward solve)."""
        self._interval, self._count = -1, 0

    def forward(self, s, y):
        j = min(max(math.floor(float(s.detach())), 0), self.rates.shape[1] - 1)
        if self.max_evals is not None:
            self._count = self._count + 1 if j == self._interval else 1
            self._interval = j
            if self._count > self.max_evals:
                raise SolverError(
                    f"the ODE solver ({self.method}) reached max_num_steps={self.max_num_steps} within one output "
                    "interval: the learned dynamics are stiff or exploding. Lower lr, loosen rtol/atol, raise "
                    "max_num_steps or use a fixed-step method such as method='rk4' (with step_size small enough "
                    "for the dynamics)."
                )
        return self.dynamics(y) * self.rates[:, j:j + 1]


def series_rms_norm(x: torch.Tensor) -> torch.Tensor:
    """Error norm for a state (..., batch, latent_dim): the largest per-series RMS over the latent dims."""
    return x.pow(2).mean(-1).max().sqrt()


def _fixed_grid(rates: torch.Tensor, step_size: float):
    """A torchdiffeq ``grid_constructor`` splitting output interval ``j`` into ``ceil(max |rates[:, j]| / h)``
    equal steps, for any output times ``t`` (ascending in the forward solve, descending in the adjoint's)."""
    n_sub = torch.ceil(rates.abs().amax(0) / step_size).clamp_min(1).long().tolist()   # (Q,)

    def grid(func, y0, t):
        pieces = [t[:1]]
        for a, b in zip(t[:-1], t[1:]):
            j = min(max(math.floor(float(torch.minimum(a, b)) + 0.5 * float((b - a).abs())), 0), len(n_sub) - 1)
            n = n_sub[j] if float((b - a).abs()) > 0 else 1
            pieces.append(torch.linspace(float(a), float(b), n + 1, dtype=t.dtype, device=t.device)[1:])
            pieces[-1][-1] = b
        return torch.cat(pieces)

    return grid


def _outward(tq: torch.Tensor):
    """Split sorted queries (batch, Q) into a backward and a forward half, both starting at 0.

    Returns the queries of the doubled batch (2 * batch, Q'), the earlier ones latest first
    (padding repeats the earliest; none: 0), then the later ones (>= 0) in order, and the flat
    index into (2 * batch * Q') of each original query, shape (batch, Q).
    """
    b, n_q = tq.shape
    neg = tq < 0
    n_neg = neg.sum(1, keepdim=True)                                      # (b, 1)
    width = max(int(n_neg.max()), int((n_q - n_neg).max()), 1)
    p = torch.arange(width, device=tq.device).unsqueeze(0)               # (1, Q')
    back = tq.gather(1, (n_neg - 1 - p).clamp(0, n_q - 1))
    back = torch.where(n_neg > 0, back, torch.zeros_like(back))
    fwd = tq.gather(1, (n_neg + p).clamp(max=n_q - 1))
    fwd = torch.where(n_neg < n_q, fwd, torch.zeros_like(fwd))
    k = torch.arange(n_q, device=tq.device).unsqueeze(0)
    rows = torch.arange(b, device=tq.device).unsqueeze(1)
    index = torch.where(neg, rows * width + (n_neg - 1 - k), (b + rows) * width + (k - n_neg))
    return torch.cat([back, fwd]), index


def decode_latent(dynamics: nn.Module, z0: torch.Tensor, tq: torch.Tensor, *, method="dopri5", rtol=1e-3,
                  atol=1e-4, adjoint=True, max_num_steps=1000, step_size=0.1) -> torch.Tensor:
    """Solve the latent ODE from z0 (at model time 0) outward to each series' query times.

    Parameters
    ----------
    dynamics : nn.Module
        The field f: (..., latent_dim) -> (..., latent_dim), e.g. :class:`LatentDynamics`.
    z0 : Tensor, shape (samples, batch, latent_dim)
    tq : Tensor, shape (batch, Q)
        Query times per series, ascending along Q (padding repeats the last one); negative
        times lie before z0 and are reached by solving backwards from it.
    method : str
        One of :data:`METHODS`.
    rtol, atol : float
        Tolerances of the adaptive methods (per series, see the module docstring).
    adjoint : bool
        ``odeint_adjoint`` (memory flat in the number of solver steps) or backprop
        through the solver.
    max_num_steps : int
        Cap on the steps of an adaptive method per output interval and model time unit
        (an interval of length 3 may take 3 times as many), forward and backward.
    step_size : float
        Largest step of a fixed-step method, in model time units.

    Returns
    -------
    Tensor, shape (samples, batch, Q, latent_dim)

    Raises
    ------
    SolverError
        When an adaptive solver hits ``max_num_steps``, in the forward solve or in the
        adjoint's backward solve (raised from ``backward()``).
    """
    if method not in METHODS:
        raise ValueError(f"method={method!r} is not one of {list(METHODS)}.")
    n_s, b = z0.shape[0], z0.shape[1]
    split = bool((tq < 0).any())
    if split:
        tq, index = _outward(tq)
        z0 = torch.cat([z0, z0], dim=1)
    n_q = tq.shape[1]
    knots = torch.cat([torch.zeros_like(tq[:, :1]), tq], dim=1)
    rates = (knots[:, 1:] - knots[:, :-1]).detach()
    s = torch.arange(n_q + 1, dtype=torch.float64, device=z0.device).to(z0.dtype)
    if method in ADAPTIVE:
        options = {"norm": series_rms_norm}
        # the cap is per output interval and per model time unit: a query far beyond the data needs
        # proportionally more steps of a field that oscillates
        max_num_steps = int(max_num_steps * max(1.0, math.ceil(float(rates.abs().max())) if rates.numel() else 1.0))
        if n_q > 1:
            options["jump_t"] = s[1:-1]
        max_evals = max_num_steps * ADAPTIVE_STAGES[method] + 2   # + 2: the initial step selection
    else:
        options = {"perturb": True, "grid_constructor": _fixed_grid(rates, step_size)}
        max_evals = None
    func = TimeChangedField(dynamics, rates, max_evals, method, max_num_steps)
    kwargs = dict(rtol=rtol, atol=atol, method=method, options=options)
    if adjoint and torch.is_grad_enabled():  # without gradients the adjoint has nothing to add
        ys = odeint_adjoint(func, z0, s, adjoint_options=dict(options, norm="seminorm"), **kwargs)
        if ys.requires_grad:   # the backward solve counts its own steps
            ys.register_hook(lambda grad: func.reset_count())
    else:
        ys = odeint(func, z0, s, **kwargs)
    out = ys[1:].permute(1, 2, 0, 3)                                       # (samples, batch', Q', latent)
    if split:
        out = out.reshape(n_s, -1, out.shape[-1])[:, index.reshape(-1)].reshape(n_s, b, -1, out.shape[-1])
    return out


READOUTS = ("linear", "per_variable")
VARIABLE_EMBEDDING = 8  # size of each variable's learned embedding e_j in the "per_variable" read-out


class PerVariableReadout(nn.Module):
    """x_j(t) = a_j . z(t) + b_j + g_j r_j(t) + w_j . tanh(U z(t) + V e_j + C c_j(t)), per (query, variable).

    ``e_j`` is a learned embedding of variable ``j`` and ``c_j(t)`` what the series shows of
    the variable around the query (:meth:`latentode.model.Reference.context`), whose first
    entry ``r_j(t)`` is the interpolated visible value (the last one past the end): the gain
    ``g_j`` lets a variable lean on its own recent value, as ``center="last"`` does, by as
    much as training finds useful. The hidden layer of width ``width`` is shared by the
    variables. ``g_j`` and ``w_j`` start at 0, so training starts from the linear read-out.

    Shapes: z (samples, batch, Q, latent), context (batch, Q, features, n_context) or None
    (nothing seen: zeros) -> (samples, batch, Q, features).
    """

    def __init__(self, latent_dim: int, n_features: int, width: int = 50, n_context: int = 4,
                 embed_dim: int = VARIABLE_EMBEDDING):
        super().__init__()
        self.linear = nn.Linear(latent_dim, n_features)
        self.embedding = nn.Parameter(torch.randn(n_features, embed_dim) / math.sqrt(embed_dim))
        self.z_in = nn.Linear(latent_dim, width)
        self.e_in = nn.Linear(embed_dim, width, bias=False)
        self.c_in = nn.Linear(n_context, width, bias=False)
        self.out = nn.Parameter(torch.zeros(n_features, width))
        self.gain = nn.Parameter(torch.zeros(n_features))

    def forward(self, z, context=None):
        h = self.z_in(z).unsqueeze(-2) + self.e_in(self.embedding)            # (samples, batch, Q, features, width)
        out = self.linear(z)
        if context is not None:
            h = h + self.c_in(context).unsqueeze(0)
            out = out + self.gain * context[..., 0]
        return out + (torch.tanh(h) * self.out).sum(-1)


class Decoder(nn.Module):
    """Latent dynamics plus a read-out to the variables and a per-variable noise scale.

    ``readout="linear"`` (Rubanova et al.): one linear layer from z(t). ``"per_variable"``:
    :class:`PerVariableReadout`, which also reads each variable's context at the query.

    Attributes
    ----------
    log_noise : Parameter, shape (n_features,)
        log of the observation noise standard deviation (standardised units); learned when
        ``noise_std`` is None, else fixed at ``log(noise_std)``.
    uses_context : bool
        Whether :meth:`forward` reads a ``context``.
    """

    def __init__(self, latent_dim: int, n_features: int, width: int = 50, n_layers: int = 3,
                 noise_min: float = 1e-3, noise_std: float | None = None, dynamics_init: str = "mlp",
                 rotation_cycles=ROTATION_CYCLES, readout: str = "linear", n_context: int = 4):
        super().__init__()
        if readout not in READOUTS:
            raise ValueError(f"readout must be one of {list(READOUTS)}, got {readout!r}.")
        self.dynamics = LatentDynamics(latent_dim, width, n_layers, dynamics_init, rotation_cycles)
        self.uses_context = readout == "per_variable"
        self.readout = (PerVariableReadout(latent_dim, n_features, width, n_context) if self.uses_context
                        else nn.Linear(latent_dim, n_features))
        if noise_std is None:  # learned, per variable
            self.log_noise = nn.Parameter(torch.full((n_features,), -0.5))
            self.noise_min = noise_min
        else:  # fixed (kept in the state dict, never trained)
            self.log_noise = nn.Parameter(torch.full((n_features,), math.log(noise_std)), requires_grad=False)
            self.noise_min = 0.0
        self._register_load_state_dict_pre_hook(_drop_shared_field_keys)

    @property
    def noise_std(self) -> torch.Tensor:
        """(n_features,) observation noise standard deviation, at least ``noise_min``."""
        return self.log_noise.exp() + self.noise_min

    def forward(self, z0, tq, context=None, **solver):
        """(samples, batch, latent) and (batch, Q) -> predicted means (samples, batch, Q, features).

        ``context`` (batch, Q, features, n_context): read by the ``"per_variable"`` read-out only.
        """
        z = decode_latent(self.dynamics, z0, tq, **solver)
        return self.readout(z, context) if self.uses_context else self.readout(z)


def _drop_shared_field_keys(state_dict, prefix, *args):
    """Older saves also hold the dynamics under ``func.field.`` (a shared module, now built per solve)."""
    for key in [k for k in state_dict if k.startswith(prefix + "func.")]:
        del state_dict[key]
