"""The torchdiffeq solvers the package accepts, shared by the decoder and the CNF prior.

One registry, so that a method valid for one ODE is valid for the other. Left out on purpose:
``explicit_adams`` (wrong on the decoder's piecewise-constant-rate grid: error 1e5 against the matrix
exponential, in plain torchdiffeq too), ``implicit_adams`` (its multistep history spans the rate jumps
at the integer grid points and its error grows from 1e-5 to 6e-2), ``fixed_adams`` (the same history)
and ``scipy_solver`` (no gradients).
"""

from __future__ import annotations

#: Adaptive Runge-Kutta methods and their stages (field evaluations per attempted step, at most).
ADAPTIVE_STAGES = {"dopri5": 7, "dopri8": 14, "bosh3": 4, "fehlberg2": 3, "adaptive_heun": 2}
ADAPTIVE = frozenset(ADAPTIVE_STAGES)
#: Fixed-step methods (the step comes from ``step_size``).
FIXED = frozenset({"euler", "midpoint", "heun2", "heun3", "rk4"})
#: Every accepted method, sorted.
METHODS = tuple(sorted(ADAPTIVE | FIXED))


class SolverError(RuntimeError):
    """The ODE solver gave up (step cap reached: stiff or exploding dynamics)."""


def check_method(name: str, value) -> str:
    """``value`` if it is one of :data:`METHODS`, else ``ValueError`` naming ``name`` and the choices."""
    if not isinstance(value, str) or value not in METHODS:
        raise ValueError(f"{name}={value!r} is not one of {list(METHODS)} (explicit_adams and implicit_adams "
                         "are not supported: their step history breaks at the rate jumps).")
    return value
