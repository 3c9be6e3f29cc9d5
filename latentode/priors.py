"""Priors over the latent initial state ``z0`` of a Latent ODE.

Two priors share one interface (``log_prob``, ``sample``, ``analytic_kl``, ``nfe``, ``reset_nfe``):

* :class:`NormalPrior` -- the standard normal N(0, I) with an analytic KL to a diagonal Gaussian posterior.
* :class:`CNFPrior` -- a continuous normalizing flow (FFJORD, Grathwohl et al. 2019) carrying N(0, I) at time
  0 to ``z0`` at time ``T``; its KL term has no closed form (``analytic_kl`` returns ``None``) and the caller
  uses the Monte Carlo estimate ``log q(z0 | x) - log p(z0)``.

Strings become objects through :data:`PRIORS` and :func:`make_prior`. Divergence estimators are plain
functions with one signature ``(f, z, noise=None, *, create_graph=True) -> (batch,)`` looked up in
:data:`DIVERGENCES`. Run ``python -m latentode.priors`` to re-measure the trace costs behind ``trace="auto"``.
"""

from __future__ import annotations

import inspect
import math
import numbers
import time
from collections.abc import Mapping

import torch
from torch import nn
from torchdiffeq import odeint, odeint_adjoint

from ._validation import InputTypeError, InputValueError
from ._solvers import METHODS

__all__ = ["NormalPrior", "CNFPrior", "PRIORS", "make_prior", "DIVERGENCES", "divergence_exact",
           "divergence_hutchinson", "measure_trace_cost"]

#: ``trace="auto"`` uses the exact trace up to this latent dimension and Hutchinson's estimator above it.
AUTO_EXACT_MAX_DIM = 8
TRACES = ("auto", "exact", "hutchinson")
_LOG_2PI = math.log(2.0 * math.pi)


def _standard_normal_log_prob(z: torch.Tensor) -> torch.Tensor:
    """Log-density of N(0, I) at ``z`` of shape ``(..., d)``, returned with shape ``(...)``."""
    return -0.5 * (z.pow(2).sum(-1) + z.shape[-1] * _LOG_2PI)


# ----------------------------------------------------------------------------------------------------------
# Divergence estimators: ``f`` is computed from ``z`` (both ``(batch, d)``) inside ``torch.enable_grad()``.
# ----------------------------------------------------------------------------------------------------------
def divergence_exact(f: torch.Tensor, z: torch.Tensor, noise: torch.Tensor | None = None, *,
                     create_graph: bool = True) -> torch.Tensor:
    """Exact divergence ``Tr(df/dz)`` of ``f`` (batch, d) w.r.t. ``z`` (batch, d), returned as (batch,).

    The ``d`` vector-Jacobian products with the unit vectors run as one batched backward pass
    (``is_grads_batched``), so the cost grows with ``d`` (see :func:`measure_trace_cost`). ``noise`` is
    ignored; it is accepted so that every estimator has the same signature.
    """
    d = z.shape[-1]
    basis = torch.eye(d, dtype=z.dtype, device=z.device).unsqueeze(1).expand(d, *z.shape)
    (jac,) = torch.autograd.grad(f, z, basis, create_graph=create_graph, retain_graph=True,
                                 is_grads_batched=True)
    return torch.diagonal(jac, dim1=0, dim2=-1).sum(-1)   # jac[i, b, j] = df_i / dz_j


def divergence_hutchinson(f: torch.Tensor, z: torch.Tensor, noise: torch.Tensor | None = None, *,
                          create_graph: bool = True) -> torch.Tensor:
    """Hutchinson's estimate ``noise^T (df/dz) noise`` of the divergence, returned as (batch,).

    Unbiased for any ``noise`` (batch, d) with zero mean and identity covariance (Rademacher noise has the
    lowest variance); one vector-Jacobian product whatever ``d`` is.
    """
    if noise is None:
        raise ValueError("divergence_hutchinson needs `noise` of shape (batch, d); got None")
    (vjp,) = torch.autograd.grad(f, z, noise, create_graph=create_graph, retain_graph=True)
    return (vjp * noise).sum(-1)


DIVERGENCES = {"exact": divergence_exact, "hutchinson": divergence_hutchinson}


def _rademacher(like: torch.Tensor) -> torch.Tensor:
    return torch.randint(0, 2, like.shape, device=like.device).to(like.dtype) * 2 - 1


# ----------------------------------------------------------------------------------------------------------
# The vector field g(z, t) and the augmented dynamics integrated by torchdiffeq.
# ----------------------------------------------------------------------------------------------------------
class ConcatSquashLinear(nn.Module):
    """FFJORD's time-conditioned linear layer: ``(W x + b) * sigmoid(a t + c) + e t``; x (batch, in)."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.linear = nn.Linear(in_features, out_features)
        self.hyper_gate = nn.Linear(1, out_features)
        self.hyper_bias = nn.Linear(1, out_features, bias=False)

    def forward(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        tt = t.reshape(1, 1).to(x)
        return self.linear(x) * torch.sigmoid(self.hyper_gate(tt)) + self.hyper_bias(tt)


class TimeConditionedMLP(nn.Module):
    """The flow's field ``g(t, z)``: ``n_layers`` tanh hidden layers of ``ConcatSquashLinear``; z (batch, d).

    The last layer starts at zero, so an untrained flow is the identity and the prior starts at N(0, I).
    """

    def __init__(self, latent_dim: int, hidden_dim: int = 64, n_layers: int = 2):
        super().__init__()
        dims = [latent_dim] + [hidden_dim] * n_layers + [latent_dim]
        self.layers = nn.ModuleList(ConcatSquashLinear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        last = self.layers[-1]
        for p in (last.linear.weight, last.linear.bias, last.hyper_bias.weight):
            nn.init.zeros_(p)

    def forward(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            z = layer(t, z)
            if i < len(self.layers) - 1:
                z = torch.tanh(z)
        return z


class _CNFDynamics(nn.Module):
    """Right-hand side of the augmented state ``(z, delta_logp[, kinetic][, jacobian])`` for one solve.

    A fresh instance is built per solve and holds that solve's Hutchinson ``noise`` (batch, d), so the noise
    stays fixed during the forward solve and during the adjoint solve that ``backward`` runs later, even if
    the prior is called again in between. ``owner.nfe`` is incremented at every evaluation.
    """

    def __init__(self, owner: "CNFPrior", divergence: str | None, noise: torch.Tensor | None,
                 kinetic: bool = False, jacobian: bool = False):
        super().__init__()
        self.field = owner.field
        self._count = owner._count_evaluation   # a bound method, not a lambda: the owner stays picklable
        self.divergence = DIVERGENCES[divergence] if divergence is not None else None
        self.noise, self.kinetic, self.jacobian = noise, kinetic, jacobian

    def forward(self, t: torch.Tensor, state):
        self._count()
        if self.divergence is None:        # sampling: the plain field, no trace
            return self.field(t, state)
        z = state[0]
        create_graph = torch.is_grad_enabled()   # False in the adjoint's forward solve and under no_grad
        with torch.enable_grad():
            if not (create_graph and z.requires_grad):   # keep z's history only when gradients flow out
                z = z.detach().requires_grad_(True)
            dz = self.field(t, z)
            derivs = [dz, -self.divergence(dz, z, self.noise, create_graph=create_graph)]
            if self.kinetic:
                derivs.append(dz.pow(2).sum(-1))
            if self.jacobian:
                (vjp,) = torch.autograd.grad(dz, z, self.noise, create_graph=create_graph, retain_graph=True)
                derivs.append(vjp.pow(2).sum(-1))
        return tuple(derivs) if create_graph else tuple(d.detach() for d in derivs)


# ----------------------------------------------------------------------------------------------------------
# Validation helpers (used once, at construction and at the public methods' door).
# ----------------------------------------------------------------------------------------------------------
def _check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InputTypeError(f"`{name}` must be an int >= {minimum}; got {value!r} of type {type(value).__name__}")
    if value < minimum:
        raise InputValueError(f"`{name}` must be an int >= {minimum}; got {value}")
    return int(value)


def _check_real(name: str, value, *, allow_zero: bool) -> float:
    bound = ">= 0" if allow_zero else "> 0"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InputTypeError(f"`{name}` must be a finite real number {bound}; got {value!r}")
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        raise InputValueError(f"`{name}` must be a finite real number {bound}; got {value!r}")
    return float(value)


def _check_choice(name: str, value, choices) -> str:
    if value not in choices:
        raise InputValueError(f"`{name}` must be one of {list(choices)}; got {value!r}")
    return value


def _check_latent(name: str, z, latent_dim: int, anchor: torch.Tensor) -> None:
    if not isinstance(z, torch.Tensor) or not z.is_floating_point():
        raise TypeError(f"`{name}` must be a floating-point torch.Tensor of shape (..., {latent_dim}); "
                        f"got {type(z).__name__}{'' if not isinstance(z, torch.Tensor) else ' ' + str(z.dtype)}")
    if z.ndim == 0 or z.shape[-1] != latent_dim:
        raise ValueError(f"`{name}` must have shape (..., latent_dim={latent_dim}); got {tuple(z.shape)}")
    if z.dtype != anchor.dtype or z.device != anchor.device:
        raise TypeError(f"`{name}` is {z.dtype} on {z.device} but the prior is {anchor.dtype} on "
                        f"{anchor.device}; move one of them with .to(...)")


def _base_sample(n: int, latent_dim: int, anchor: torch.Tensor, generator: torch.Generator | None):
    """``n`` draws (n, latent_dim) from N(0, I) with ``anchor``'s dtype and device."""
    _check_int("n", n, 0)
    device = anchor.device if generator is None else generator.device
    eps = torch.randn((n, latent_dim), generator=generator, device=device, dtype=anchor.dtype)
    return eps.to(anchor.device)


# ----------------------------------------------------------------------------------------------------------
# The priors.
# ----------------------------------------------------------------------------------------------------------
class NormalPrior(nn.Module):
    """Standard normal prior N(0, I) over ``z0`` of shape ``(..., latent_dim)``.

    Parameters
    ----------
    latent_dim : int
        Dimension of the latent state, >= 1.

    Examples
    --------
    >>> prior = NormalPrior(2)
    >>> prior.log_prob(torch.zeros(3, 2)).shape
    torch.Size([3])
    >>> float(prior.analytic_kl(torch.zeros(2), torch.ones(2)))
    0.0
    """

    def __init__(self, latent_dim: int):
        super().__init__()
        self.latent_dim = _check_int("latent_dim", latent_dim, 1)
        self.nfe = 0   # no ODE solve: kept for the shared interface
        self.register_buffer("_anchor", torch.zeros(()), persistent=False)   # carries dtype and device

    def reset_nfe(self) -> None:
        self.nfe = 0

    def log_prob(self, z: torch.Tensor, return_regularization: bool = False):
        """Log-density at ``z`` (..., latent_dim) -> (...); with ``return_regularization`` also a zero scalar."""
        _check_latent("z", z, self.latent_dim, z)   # any float dtype and device will do
        log_p = _standard_normal_log_prob(z)
        return (log_p, z.new_zeros(())) if return_regularization else log_p

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` draws, shape (n, latent_dim), on the module's dtype and device."""
        return _base_sample(n, self.latent_dim, self._anchor, generator)

    def analytic_kl(self, mu: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """KL(N(mu, diag(sigma^2)) || N(0, I)) for ``mu``, ``sigma`` (..., latent_dim), summed to (...)."""
        _check_latent("mu", mu, self.latent_dim, mu)
        _check_latent("sigma", sigma, self.latent_dim, mu)
        return (0.5 * (sigma.pow(2) + mu.pow(2) - 1.0) - torch.log(sigma)).sum(-1)


class CNFPrior(nn.Module):
    """Continuous normalizing flow prior: N(0, I) at time 0 carried to ``z0`` at time ``T``.

    The flow follows ``dz/dt = g(z, t)`` with ``g`` a :class:`TimeConditionedMLP` (FFJORD's ConcatSquash
    layers, tanh). ``log p(z(T)) = log N(z(0); 0, I) - int_0^T Tr(dg/dz) dt`` is found by integrating the
    augmented state ``(z, delta_logp)`` from ``T`` back to 0 with torchdiffeq (``odeint_adjoint`` or
    ``odeint``). The last layer of ``g`` starts at zero, so an untrained prior equals N(0, I).

    Parameters
    ----------
    latent_dim : int
        Dimension of ``z0``, >= 1.
    hidden_dim, n_layers : int, default 64, 2
        Width and number of hidden layers of ``g``.
    T : float, default 1.0
        Flow time, > 0.
    trace : {"auto", "exact", "hutchinson"}, default "auto"
        How ``Tr(dg/dz)`` is computed. ``"exact"`` batches ``latent_dim`` vector-Jacobian products;
        ``"hutchinson"`` uses one Rademacher draw per solve, held fixed during it (and during its adjoint
        solve), which makes ``log_prob`` a random but unbiased estimate. ``"auto"`` is exact for
        ``latent_dim <= 8`` and Hutchinson above: up to 8 dimensions the exact trace costs at most
        about 2.4x Hutchinson's and removes its variance; above, it grows with the dimension
        (``python -m latentode.priors`` measures it).
    method : str, default "dopri5"
        A torchdiffeq solver, one of :data:`latentode._solvers.METHODS` (the decoder's list too);
        fixed-step ones need ``solver_options={"step_size": h}``.
    rtol, atol : float, default 1e-5
        Solver tolerances (also used by the adjoint solve), > 0.
    adjoint : bool, default True
        Gradients by the adjoint method (memory constant in the number of steps) or by backpropagating
        through the solver (faster for small problems, memory grows with the steps).
    kinetic_weight, jacobian_weight : float, default 0.0
        RNODE regularisation (Finlay et al. 2020): weights of ``int_0^T ||g||^2 dt`` and of the Hutchinson
        estimate ``int_0^T ||eps^T dg/dz||^2 dt`` of the Jacobian's Frobenius norm, both averaged over the
        batch; returned by ``log_prob(z, return_regularization=True)`` and only integrated then.
    solver_options : dict, optional
        Extra ``options`` passed to torchdiffeq (e.g. ``{"step_size": 0.05}``).

    Attributes
    ----------
    field : TimeConditionedMLP
        The vector field ``g``; replaceable by any module ``g(t, z) -> (batch, latent_dim)``.
    nfe : int
        Field evaluations since the last :meth:`reset_nfe`, counting forward and adjoint solves.

    Examples
    --------
    >>> prior = CNFPrior(2, hidden_dim=8)
    >>> z = torch.zeros(4, 3, 2)
    >>> torch.allclose(prior.log_prob(z), NormalPrior(2).log_prob(z))   # untrained flow = N(0, I)
    True
    >>> prior.sample(5, torch.Generator().manual_seed(0)).shape
    torch.Size([5, 2])
    """

    def __init__(self, latent_dim: int, hidden_dim: int = 64, n_layers: int = 2, T: float = 1.0,
                 trace: str = "auto", method: str = "dopri5", rtol: float = 1e-5, atol: float = 1e-5,
                 adjoint: bool = True, kinetic_weight: float = 0.0, jacobian_weight: float = 0.0,
                 solver_options: Mapping | None = None):
        super().__init__()
        self.latent_dim = _check_int("latent_dim", latent_dim, 1)
        self.T = _check_real("T", T, allow_zero=False)
        self.trace = _check_choice("trace", trace, TRACES)
        self.method = _check_choice("method", method, METHODS)
        self.rtol = _check_real("rtol", rtol, allow_zero=False)
        self.atol = _check_real("atol", atol, allow_zero=False)
        if not isinstance(adjoint, bool):
            raise TypeError(f"`adjoint` must be True or False; got {adjoint!r}")
        self.adjoint = adjoint
        self.kinetic_weight = _check_real("kinetic_weight", kinetic_weight, allow_zero=True)
        self.jacobian_weight = _check_real("jacobian_weight", jacobian_weight, allow_zero=True)
        if solver_options is not None and not isinstance(solver_options, Mapping):
            raise TypeError(f"`solver_options` must be a dict or None; got {type(solver_options).__name__}")
        self.solver_options = dict(solver_options or {})
        self.field = TimeConditionedMLP(latent_dim, _check_int("hidden_dim", hidden_dim, 1),
                                        _check_int("n_layers", n_layers, 0))
        self.nfe = 0

    @property
    def divergence(self) -> str:
        """The trace method in use: ``trace`` with ``"auto"`` resolved (see the class docstring)."""
        if self.trace != "auto":
            return self.trace
        return "exact" if self.latent_dim <= AUTO_EXACT_MAX_DIM else "hutchinson"

    def _count_evaluation(self) -> None:
        self.nfe += 1

    def reset_nfe(self) -> None:
        self.nfe = 0

    def _anchor(self) -> torch.Tensor:
        return next(self.field.parameters())

    def _solve(self, dynamics: _CNFDynamics, state, t0: float, t1: float):
        t = torch.tensor([t0, t1], dtype=self._anchor().dtype, device=self._anchor().device)
        solve = odeint_adjoint if self.adjoint else odeint
        out = solve(dynamics, state, t, rtol=self.rtol, atol=self.atol, method=self.method,
                    options=dict(self.solver_options))
        return tuple(x[-1] for x in out) if isinstance(state, tuple) else out[-1]

    def log_prob(self, z: torch.Tensor, return_regularization: bool = False):
        """Log-density of the flow at ``z``.

        Parameters
        ----------
        z : Tensor, shape (..., latent_dim)
            Points, e.g. ``z0`` samples of shape (n_samples, batch, latent_dim); leading dims are flattened.
        return_regularization : bool, default False
            Also return the weighted RNODE penalty (a scalar to add to the loss; zero if both weights are 0).

        Returns
        -------
        log_p : Tensor, shape (...)
            Detached when called with gradients disabled (``no_grad``, ``inference_mode``); the trace is
            still taken with autograd.
        reg : Tensor, shape ()
            Only with ``return_regularization=True``.
        """
        _check_latent("z", z, self.latent_dim, self._anchor())
        if torch.is_inference_mode_enabled():   # autograd (for the trace) needs ordinary tensors
            with torch.inference_mode(False), torch.no_grad():
                return self.log_prob(z.clone(), return_regularization)
        flat = z.reshape(-1, self.latent_dim)
        kinetic = return_regularization and self.kinetic_weight > 0
        jacobian = return_regularization and self.jacobian_weight > 0
        noise = _rademacher(flat) if self.divergence == "hutchinson" or jacobian else None
        dynamics = _CNFDynamics(self, self.divergence, noise, kinetic, jacobian)
        zeros = flat.new_zeros(flat.shape[0])
        state = (flat, zeros) + (zeros,) * (int(kinetic) + int(jacobian))
        out = self._solve(dynamics, state, self.T, 0.0) if flat.shape[0] else state
        log_p = (_standard_normal_log_prob(out[0]) - out[1]).reshape(z.shape[:-1])
        if not return_regularization:
            return log_p
        reg = flat.new_zeros(())
        extra = iter(out[2:])   # integrated from T to 0, hence the minus signs
        if kinetic:
            reg = reg - self.kinetic_weight * next(extra).mean()
        if jacobian:
            reg = reg - self.jacobian_weight * next(extra).mean()
        return log_p, reg

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` draws (n, latent_dim): base samples from N(0, I) carried from time 0 to ``T`` (no trace)."""
        z = _base_sample(n, self.latent_dim, self._anchor(), generator)
        if n == 0:
            return z
        return self._solve(_CNFDynamics(self, None, None), z, 0.0, self.T)

    def analytic_kl(self, mu: torch.Tensor, sigma: torch.Tensor) -> None:
        """No closed form: returns ``None`` so the caller uses ``log q(z0 | x) - log p(z0)`` instead."""
        return None


PRIORS = {"normal": NormalPrior, "cnf": CNFPrior}


def make_prior(name: str, latent_dim: int, options: Mapping | None = None) -> nn.Module:
    """Build the prior ``PRIORS[name](latent_dim, **options)``.

    Raises ``ValueError`` listing the names for an unknown ``name`` and ``TypeError`` listing the valid
    option names for an unknown option.

    >>> make_prior("cnf", 3, {"trace": "exact"}).divergence
    'exact'
    """
    if not isinstance(name, str) or name not in PRIORS:
        raise InputValueError(f"prior `name` must be one of {list(PRIORS)}; got {name!r}")
    if options is not None and not isinstance(options, Mapping):
        raise InputTypeError(f"prior `options` must be a dict or None; got {type(options).__name__}")
    options = dict(options or {})
    valid = [p for p in inspect.signature(PRIORS[name]).parameters if p != "latent_dim"]
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise InputTypeError(f"unknown option(s) {unknown} for prior {name!r}; valid options: {valid or 'none'}")
    return PRIORS[name](latent_dim, **options)


def measure_trace_cost(latent_dims=(2, 4, 8, 16, 20, 32), batch: int = 50, hidden_dim: int = 64,
                       n_layers: int = 2, repeats: int = 60, trials: int = 5) -> list[dict]:
    """Time one field evaluation with each trace, relative to the plain field (best of ``trials``).

    Returns one dict per latent dim with ``field_ms`` and the ratios ``exact``/``hutchinson`` (forward, no
    graph kept, as in the adjoint's forward solve) and ``exact_vjp``/``hutchinson_vjp`` (with
    ``create_graph`` and one vector-Jacobian product w.r.t. ``z`` and the parameters, as in the adjoint solve).
    """
    def best(fn, reps):
        fn()
        times = []
        for _ in range(trials):
            start = time.perf_counter()
            for _ in range(reps):
                fn()
            times.append((time.perf_counter() - start) / reps)
        return min(times)

    rows = []
    for d in latent_dims:
        field, t, z0 = TimeConditionedMLP(d, hidden_dim, n_layers), torch.tensor(0.3), torch.randn(batch, d)
        for p in field.parameters():   # a generic (non-zero) field
            nn.init.normal_(p, std=0.3)
        noise, params = _rademacher(z0), list(field.parameters())

        def run(divergence, vjp):
            z = z0.clone().requires_grad_(True)
            f = field(t, z)
            div = divergence(f, z, noise, create_graph=vjp)
            if vjp:
                torch.autograd.grad((f, div), [z] + params, (torch.ones_like(f), torch.ones_like(div)))

        with torch.no_grad():
            plain = best(lambda: field(t, z0), 5 * repeats)
        row = {"latent_dim": d, "field_ms": 1e3 * plain}
        for name, divergence in DIVERGENCES.items():
            row[name] = best(lambda: run(divergence, False), repeats) / plain
            row[name + "_vjp"] = best(lambda: run(divergence, True), repeats) / plain
        rows.append(row)
    return rows


if __name__ == "__main__":
    torch.set_num_threads(1)
    for row in measure_trace_cost():
        print("latent_dim={latent_dim:2d} field={field_ms:.3f}ms  exact={exact:.1f}x hutchinson={hutchinson:.1f}x"
              "  exact_vjp={exact_vjp:.1f}x hutchinson_vjp={hutchinson_vjp:.1f}x".format(**row))
