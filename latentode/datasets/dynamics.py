"""Dynamical systems observed as a user's long table: irregular times, NaNs, noise.

Each generator draws per-series initial conditions or parameters, solves the system
with :func:`scipy.integrate.solve_ivp` (dense output), reads it at irregular times and
hides values independently per variable. All return ``(df, truth)`` like
:func:`latentode.datasets.make_synthetic`: ``df`` has columns ``id``, ``time`` and one
float column per variable (NaN = not measured); ``truth`` has the same rows, noise-free
and complete.

=====================  =====  ==============  ============================================
generator              vars   obs per series  character
=====================  =====  ==============  ============================================
make_oscillator        2      30-80           harmonic, 3-5 periods per window, float times
make_oscillator        1      20-50           ``damping > 0``: damped, position only
make_lotka_volterra    2      40-100          predator-prey cycles, unequal NaN rates
make_van_der_pol       2      100-200         relaxation (slow-fast), datetime stamps
make_pk                3      5-12            multi-exponential decays (drug levels)
make_mixed_sensors     20     20-40           20 noisy linear views of a 3-d latent state
=====================  =====  ==============  ============================================
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.integrate import solve_ivp
from sklearn.utils import check_random_state


def _observe(clean_fn, n_series, n_obs, span, missing, noise, rs, start=None, names=None):
    """Irregular times, values, NaN masks and noise for ``n_series`` trajectories.

    ``clean_fn(i, t)`` returns the noise-free values of series ``i`` at times ``t``,
    shape (len(t), n_features). ``span``: (low, high) window length; ``missing``:
    per-variable NaN rate (scalar or sequence); ``noise``: per-variable noise std.
    ``start`` (a timestamp string) makes the time column datetime64 in hours.
    """
    lo, hi = n_obs
    counts = rs.randint(lo, hi + 1, size=n_series)
    spans = rs.uniform(*span, size=n_series)
    parts_t, parts_v, owner = [], [], []
    for i in range(n_series):
        t = np.sort(rs.uniform(0, spans[i], size=counts[i]))
        t[0] = 0.0  # each window starts with an observation
        parts_t.append(t)
        parts_v.append(np.asarray(clean_fn(i, t), dtype=float))
        owner.append(np.full(counts[i], i))
    t, clean, owner = np.concatenate(parts_t), np.concatenate(parts_v), np.concatenate(owner)
    n_f = clean.shape[1]
    rate = np.broadcast_to(np.asarray(missing, dtype=float), (n_f,))
    observed = rs.uniform(size=clean.shape) >= rate
    none = ~observed.any(axis=1)
    observed[none, rs.randint(0, n_f, size=none.sum())] = True
    sd = np.broadcast_to(np.asarray(noise, dtype=float), (n_f,))
    noisy = np.where(observed, clean + sd * rs.standard_normal(clean.shape), np.nan)
    ids = pd.Series(np.array([f"s{i:04d}" for i in range(n_series)], dtype=object)[owner], dtype="str")
    if start is None:
        time = pd.Series(t)
    else:
        offsets = pd.to_timedelta(rs.randint(0, 30 * 24, size=n_series), unit="h")
        time = pd.Series((pd.Timestamp(start) + offsets)[owner] + pd.to_timedelta(np.round(t * 60), unit="min"))
    names = names or [f"x{j + 1}" for j in range(n_f)]
    df = pd.DataFrame({"id": ids, "time": time, **{c: noisy[:, j] for j, c in enumerate(names)}})
    truth = pd.DataFrame({"id": ids, "time": time, **{c: clean[:, j] for j, c in enumerate(names)}})
    return df, truth


def _solve(rhs, y0, t, args=()):
    sol = solve_ivp(rhs, (0.0, float(t[-1]) + 1e-9), y0, t_eval=t, args=args, rtol=1e-7, atol=1e-9,
                    method="LSODA")
    return sol.y.T


def make_oscillator(n_series=200, *, damping=0.0, periods=(3.0, 5.0), n_obs=(30, 80), missing=0.3, noise=0.02,
                    observe_velocity=True, random_state=None):
    """A harmonic oscillator x'' = -w^2 x - 2 zeta w x' seen over several periods.

    Every series shares the frequency (one period = 1 time unit); amplitude and phase vary.
    ``damping`` is the ratio zeta. ``observe_velocity=False`` observes the position only.

    Examples
    --------
    >>> from latentode.datasets import make_oscillator
    >>> df, truth = make_oscillator(3, random_state=0)
    >>> list(df.columns), df["id"].nunique(), df.shape == truth.shape
    (['id', 'time', 'position', 'velocity'], 3, True)
    >>> bool(df["position"].isna().any() and truth["position"].notna().all())
    True
    """
    rs = check_random_state(random_state)
    w = 2 * np.pi
    amp, phase = rs.uniform(0.5, 1.5, n_series), rs.uniform(0, 2 * np.pi, n_series)
    wd = w * np.sqrt(max(1 - damping ** 2, 1e-12))

    def clean(i, t):
        env = amp[i] * np.exp(-damping * w * t)
        x = env * np.cos(wd * t + phase[i])
        v = -damping * w * x - env * wd * np.sin(wd * t + phase[i])
        return np.stack([x, v / w], axis=1) if observe_velocity else x[:, None]

    names = ["position", "velocity"] if observe_velocity else ["position"]
    return _observe(clean, n_series, n_obs, periods, missing, noise, rs, names=names)


def make_lotka_volterra(n_series=200, *, span=(15.0, 25.0), n_obs=(40, 100), missing=(0.2, 0.5), noise=0.05,
                        random_state=None):
    """Predator-prey cycles: prey' = a prey - b prey pred, pred' = d prey pred - g pred.

    Shared rates (a, b, d, g) = (1, 1, 1, 1) (period about 6.5 at the sampled amplitudes);
    each series starts from its own point on a different cycle.
    """
    rs = check_random_state(random_state)
    y0 = np.stack([rs.uniform(0.4, 1.6, n_series), rs.uniform(0.4, 1.6, n_series)], axis=1)

    def rhs(_, y):
        prey, pred = y
        return [prey - prey * pred, prey * pred - pred]

    return _observe(lambda i, t: _solve(rhs, y0[i], t), n_series, n_obs, span, missing, noise, rs,
                    names=["prey", "predator"])


def make_van_der_pol(n_series=100, *, mu=4.0, span=(20.0, 30.0), n_obs=(100, 200), missing=0.4, noise=0.05,
                     random_state=None):
    """The Van der Pol relaxation oscillator x'' = mu (1 - x^2) x' - x (slow drifts, fast jumps).

    Times are datetimes (one model hour per time unit); each series starts on its own day.
    """
    rs = check_random_state(random_state)
    y0 = np.stack([rs.uniform(-2.5, 2.5, n_series), rs.uniform(-3.0, 3.0, n_series)], axis=1)

    def rhs(_, y):
        x, v = y
        return [v, mu * (1 - x * x) * v - x]

    def clean(i, t):
        y = _solve(rhs, y0[i], t)
        return np.stack([y[:, 0], y[:, 1] / mu], axis=1)

    return _observe(clean, n_series, n_obs, span, missing, noise, rs, start="2024-01-01", names=["x", "v"])


def make_pk(n_series=300, *, span=(18.0, 30.0), n_obs=(5, 12), missing=(0.1, 0.3, 0.7), noise=0.02,
            random_state=None):
    """Two-compartment pharmacokinetics after an oral dose: multi-exponential decays.

    Per series the absorption, elimination and exchange rates vary log-normally, and the
    dose uniformly; the variables are the central and peripheral concentrations and a
    saturating effect ``c / (1 + c)`` of the central one (measured rarely).
    """
    rs = check_random_state(random_state)
    ka = 1.2 * np.exp(0.3 * rs.standard_normal(n_series))
    ke = 0.15 * np.exp(0.3 * rs.standard_normal(n_series))
    k12, k21 = 0.3 * np.exp(0.2 * rs.standard_normal(n_series)), 0.2 * np.exp(0.2 * rs.standard_normal(n_series))
    dose = rs.uniform(0.5, 2.0, n_series)

    def clean(i, t):
        def rhs(_, y):
            gut, c1, c2 = y
            return [-ka[i] * gut, ka[i] * gut - (ke[i] + k12[i]) * c1 + k21[i] * c2, k12[i] * c1 - k21[i] * c2]
        y = _solve(rhs, [dose[i], 0.0, 0.0], t)
        return np.stack([y[:, 1], y[:, 2], y[:, 1] / (1 + y[:, 1])], axis=1)

    return _observe(clean, n_series, n_obs, span, missing, noise, rs, names=["central", "peripheral", "effect"])


def make_mixed_sensors(n_series=200, *, n_features=20, span=(8.0, 12.0), n_obs=(20, 40), missing=0.6, noise=0.05,
                       random_state=None):
    """``n_features`` sensors reading fixed linear mixes of a damped 2-d rotation and a decay.

    The latent state (a rotation with period 4 and damping 0.05, plus an exponential
    decay with rate 0.2) starts at a random point per series; sensor j reads
    ``w_j . state`` with weights shared by all series.
    """
    rs = check_random_state(random_state)
    weights = rs.standard_normal((3, n_features)) / np.sqrt(3)
    r0, ph0, d0 = rs.uniform(0.5, 1.5, n_series), rs.uniform(0, 2 * np.pi, n_series), rs.uniform(-1, 1, n_series)
    w = 2 * np.pi / 4.0

    def clean(i, t):
        env = r0[i] * np.exp(-0.05 * t)
        state = np.stack([env * np.cos(w * t + ph0[i]), env * np.sin(w * t + ph0[i]), d0[i] * np.exp(-0.2 * t)], 1)
        return state @ weights

    names = [f"s{j + 1:02d}" for j in range(n_features)]
    return _observe(clean, n_series, n_obs, span, missing, noise, rs, names=names)


def make_long_oscillator(n_series=2, *, n_obs=(400, 500), periods=(40.0, 50.0), missing=0.2, noise=0.05,
                         random_state=None):
    """A few long series (sensors): a harmonic oscillator with a slow drift, over 40-50 periods.

    ``x = a cos(2 pi t + phi) + 0.5 sin(2 pi t / 30)`` and its quadrature; a single z0 at
    the window start cannot carry such a series: it needs windows.
    """
    rs = check_random_state(random_state)
    amp, phase = rs.uniform(0.5, 1.5, n_series), rs.uniform(0, 2 * np.pi, n_series)

    def clean(i, t):
        drift = 0.5 * np.sin(2 * np.pi * t / 30.0)
        return np.stack([amp[i] * np.cos(2 * np.pi * t + phase[i]) + drift,
                         amp[i] * np.sin(2 * np.pi * t + phase[i])], axis=1)

    return _observe(clean, n_series, n_obs, periods, missing, noise, rs, names=["a", "b"])
