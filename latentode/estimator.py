"""LatentODERegressor: the scikit-learn style estimator on long pandas frames."""

from __future__ import annotations

import functools
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.base import BaseEstimator
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted

from ._collate import Scaling, collate, pad_points
from . import _distributed
from ._frame import SeriesSet, TimeKind, group_points, validate_frame
from ._queries import interval_columns, resolve_queries, time_values
from ._validation import (InputTypeError, InputValueError, check_choice, check_number, resolve_device,
                          resolve_threads, torch_threads)
from ._training import SCHEDULES, HeldOut, fit_loop, heldout_errors, heldout_values, scheduled_epochs, training_budget
from ._blend import apply_blend, as_gate, fit_blend, gate_at
from ._windows import auto_window, cut_windows, query_windows
from ._solvers import check_method
from .decoder import DYNAMICS_INIT, READOUTS, ROTATION_CYCLES
from ._timescale import characteristic_cycles
from .encoders import ANCHORS, ENCODERS
from .model import CENTERS, LatentODE, reference_and_regime
from .priors import PRIORS

_FORMAT_VERSION = 1
WINDOW_STRIDE = 0.125  # training windows (and the gate's backtest windows) start every eighth of a window
BACKTEST_HORIZON = 1.0  # a windowed model's gate is fitted on forecasts up to this many windows ahead
ADJOINT_AUTO_POINTS = 200_000  # batch_size x longest series above which adjoint="auto" uses the adjoint
INFER_CHUNK = 2048  # series per decoded chunk in predict/impute/sample (also capped by INFER_ELEMENTS)
INFER_ELEMENTS = 2e7  # samples x series x queries x (features + latent) per chunk: the working memory's bound
TRAIN_NOISE = 0.05  # noise_std="auto": the fixed noise std of training (standardised units)
#: readout="auto": the per-variable read-out when the median variable is observed at fewer than this share of
#: the points (times at which the series observed anything), i.e. when variables are measured at their own times
SPARSE_RATE = 0.2


def choose_readout(series: SeriesSet) -> str:
    """The read-out of ``readout="auto"``: "per_variable" when the variables are measured at their own times.

    That is when the median variable is observed at fewer than ``SPARSE_RATE`` of the points
    of ``series`` (the times at which a series observed anything); "linear" otherwise. A single
    variable is observed at every point, so it gets "linear".
    """
    values = series.values
    if not len(values):
        return "linear"
    rates = np.isfinite(values).mean(axis=0)
    return "per_variable" if float(np.median(rates)) < SPARSE_RATE else "linear"


def _threaded(method):
    """Run an estimator method with the estimator's torch thread count, restoring the caller's."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        device = getattr(self, "device_", None) or resolve_device(self.device)
        with torch_threads(resolve_threads(self.n_threads, device)):
            return method(self, *args, **kwargs)
    return wrapper
_SAVED_FILES = ("config.json", "weights.pt")


class LatentODERegressor(BaseEstimator):
    """Latent ODE for irregularly sampled multivariate time series in long format.

    An encoder (ODE-RNN, GRU or attention) reads each series' observations backwards to a
    Gaussian q(z0|x) over a latent state at the start of the series' window; a latent ODE
    dz/dt = f(z), solved with torchdiffeq, carries z0 to any query time; a linear
    read-out gives the variables. Trained by the ELBO (or IWAE bound) on observed values
    only: no imputation or regular grid is ever needed.

    Parameters
    ----------
    id_col, time_col : str or None, default=None
        Column names. None finds ``unique_id``/``id`` and ``ds``/``time``/``timestamp``;
        a frame without an id column is one series (``fit`` warns, naming the column, when
        an integer or text column looks like a series id, and for 20 or more variables).
    value_cols : list of str or None, default=None
        The variables; None takes every other column (all must be numeric).
    encoder : {"odernn", "gru", "attention"}, default="odernn"
        ODE-RNN (hidden state follows an ODE between observations; more accurate on
        long gaps), a GRU fed time gaps (faster), or multi-time attention per variable
        (mTAN-style; :class:`~latentode.encoders.AttentionEncoder`): each variable's own
        observations attended from a fixed number of reference times, then a short GRU, so
        its cost does not grow with a loop over the observations.
    latent_dim : int, default=20
    encoder_dim : int, default=40
        Encoder hidden state size.
    width, n_layers : int, default=50, 3
        Width and depth of the MLPs (latent dynamics and encoder ODE).
    dynamics_init : {"rotations", "mlp"}, default="rotations"
        The latent field. "rotations": ``f(z) = A z + mlp(z)`` with ``A`` learned and
        started as damped rotations at frequencies log-spaced from a quarter to twice the
        data's characteristic frequency (from the semivariogram of the training series;
        ``rotation_cycles_``), so that oscillations over several periods, and slow trends,
        are there from the first epoch instead of being grown out of a near-zero field,
        which kept a plain MLP field on a plateau for tens of epochs. "mlp": the MLP alone
        (Rubanova et al.).
    readout : {"auto", "linear", "per_variable"}, default="auto"
        From the latent state z(t) to the variables. "linear" (Rubanova et al.): one linear
        layer. "per_variable": that layer, plus a learned gain on each variable's own
        interpolated visible value (its last value past the end), plus a hidden layer per
        (query, variable) that also reads a learned embedding of the variable and what the
        series shows of it around the query (that value, the time to it, whether it was
        seen, whether the query lies past its observed span;
        :class:`~latentode.decoder.PerVariableReadout`), as the query decoders of
        forecasting models for irregular series do. Both extra terms start at 0. It imputes
        better and forecasts sparse clinical data better, but forecasts smooth dynamics
        worse: on the periodic task's extrapolation (seed 0) its MSE was 24x the linear
        read-out's (BENCHMARKS.md, "Periodic task"). "auto"
        (:func:`~latentode.estimator.choose_readout`): "per_variable" when the variables are measured at their own times, the median
        variable at fewer than a fifth (``SPARSE_RATE``) of the times at which the series
        observed anything, as ICU labs and vitals are (PhysioNet 2012: 5%); "linear"
        otherwise (every synthetic dataset of the defaults scoreboard: 40-100%). The choice
        is stored in ``readout_``.
    prior : {"normal", "cnf"}, default="normal"
        Prior over z0: standard normal, or a continuous normalizing flow.
    prior_options : dict or None, default=None
        Keyword options of the prior (see :mod:`latentode.priors`).
    method : str, default="dopri5"
        torchdiffeq solver for the latent ODE, one of :data:`latentode.decoder.METHODS`.
        Adaptive methods (dopri5, dopri8, bosh3, fehlberg2, adaptive_heun) use ``rtol``/``atol``
        per series; fixed-step ones (euler, midpoint, heun2, heun3, rk4) use ``step_size``.
        ``explicit_adams`` and ``implicit_adams`` are not accepted: their step history spans
        the rate jumps of the decoder's time change and their error grows to 1e5 and 6e-2.
    rtol, atol : float, default=1e-3, 1e-4
        Tolerances of adaptive solvers (the latent state is of order 1). At 1e-2 dopri5
        accepted unstable steps on a fast rotating field (decoded values of 700 where the
        accurate solution is 1.5), so looser is not safer than cheaper.
    adjoint : {"auto", True, False}, default="auto"
        ``odeint_adjoint`` (memory flat in the number of solver steps, the backward solve
        costs more) or backpropagation through the solver (faster on short grids, memory
        grows with the steps). "auto" backpropagates through the solver unless
        ``batch_size`` times the longest training series (or window) exceeds 200,000
        points; the choice is stored in ``adjoint_``.
    max_num_steps : int, default=1000
        Cap on adaptive solver steps per output interval and model time unit: stiff or
        exploding dynamics end in a :class:`~latentode.decoder.SolverError` instead of a
        hang. Counted by the field itself, so it also holds in the adjoint's backward solve
        and under ``python -O``.
    step_size : float, default=0.1
        Largest step of a fixed-step ``method``, in model time units (the median series
        span is 1): each output interval is split into equal steps no longer than this, so
        a value does not depend on which other times are queried. Smaller is more accurate
        and slower; ignored by adaptive methods.
    noise_std : "auto", float or None, default="auto"
        Observation noise standard deviation in standardised units (1 = the variable's
        standard deviation). "auto": training uses a fixed 0.05, so the likelihood is a
        weighted MSE that a noise scale cannot absorb (a learned noise can grow until the
        posterior collapses to the prior); after training, each variable's noise is set
        to the RMS error of the predictions on held-out values of the validation series
        (``noise_std_``), so that intervals and samples carry the error the model makes.
        A float fixes the noise throughout (intervals then come mostly from q(z0|x):
        calibrate them, :mod:`latentode.calibration`). None learns one per variable with
        the rest of the model.
    n_samples : int, default=1
        z0 samples per series in the bound; 1 is the ELBO (analytic KL for the normal
        prior), K > 1 the IWAE bound (with its -log K term).
    kl_warmup : int, default=10
        Epochs over which the KL weight grows linearly to 1 (0: no warm-up).
    mask_fraction : float, default=0.2
        Share of observed values hidden from the encoder in each batch (trains imputation).
    forecast_fraction : float, default=0.5
        Share of series per batch whose window is cut at a random point (25-90% of the
        window) for the encoder (trains forecasting).
    loss_on : {"all", "hidden"}, default="all"
        Which observed values the likelihood scores in training: all of them
        (reconstruction, imputation and forecasting at once), or only those hidden from
        the encoder by ``mask_fraction`` / ``forecast_fraction`` (a pure imputation or
        forecasting objective, e.g. ``mask_fraction=0, forecast_fraction=1`` trains a
        forecaster). "hidden" needs one of the two fractions above 0.
    variable_weight : None, "balanced" or dict, default=None
        Weights of the variables in the training likelihood (and in the validation MSE).
        None: every observed value counts the same, so often-measured variables dominate.
        "balanced": variable j gets ``n_values / (n_features * n_j)`` (``n_j`` its observed
        values in training), so every variable counts the same in total, as in a metric
        averaged per variable (like scikit-learn's ``class_weight="balanced"``). A dict maps
        column names to weights (missing columns: 1). The fitted weights are in
        ``variable_weight_``.
    anchor : {"origin", "last"}, default="origin"
        Where the latent state z0 sits. "origin" (Rubanova et al.): the encoder reads each
        series backwards and z0 is the state at the window's start, from which the ODE
        runs forward to every query. "last": the encoder reads forwards and z0 is the
        state at the series' last observation; the ODE runs backwards to earlier queries
        and forwards to later ones, so the latest values need not travel through the
        whole series (suits forecasting). The prior is over z0 either way;
        :meth:`sample_prior` decodes its draws from the earliest time (origin) or backwards
        from the latest (last).
    center : {None, "last", "mean", "interp"}, default=None
        What the decoder's read-out of each variable is relative to. None (Rubanova et al.):
        the training mean, so z0 must carry every variable's level. "last": each series'
        last observed value of the variable in the data the encoder reads; "mean": the mean
        of those values (a per-series centring, as RevIN does for forecasting models);
        "interp": those values linearly interpolated in time at each query (the nearest one
        before the first and after the last observation, so past the end it equals "last"):
        the ODE then models what linear interpolation misses. A
        variable a series never observed falls back to the training mean. The reference is
        computed from what the encoder sees (in training: after masking), so nothing hidden
        leaks. Use "last" to forecast rarely measured, slowly changing variables (lab
        values), whose last value a small z0 otherwise forgets, and "interp" to impute such
        data. Leave it None for smooth dynamics that the latent state can carry, where a
        centre can hurt. Losses, ELBOs and log-likelihoods are not comparable across ``center`` settings: with a
        centre the model is a density of the values given their reference, which is built from
        the data (see :func:`latentode.evaluation.heldout_log_likelihood`).
    max_epochs, batch_size : "auto" or int, default="auto"
        A training step costs about the same for any batch of up to a few hundred short
        series (the solver's steps, not the batch, set the cost on a CPU), so
        ``max_epochs`` is the cost knob; larger data gets more steps per epoch. "auto"
        (:func:`~latentode._training.training_budget`): 20 epochs of 50 series when the
        training series number more than 250; fewer give fewer optimiser steps (90 series: 2
        an epoch, 40 in all), so the batch shrinks (to no fewer than 8 series) until an epoch
        makes 6 steps, and the epochs grow (up to 100) until the fit makes 120 and has read
        as many series as 20 epochs of 250 (180 series: 28 epochs). Those epochs are one
        cycle of ``lr_schedule``: when a cycle ends with the fit still leaving its initial
        plateau (best validation MSE above half the first epoch's, and lowered by more than 5%
        in the cycle's last quarter), or still learning fast (the last quarter lowered the
        best by more than 20%; :func:`~latentode._training.still_learning`), the
        schedule restarts for one more cycle that runs to 100 epochs, if that is at least as
        long as the first (20 epochs, then 80; ``history_`` records each epoch's ``"cycle"``).
        The values used are in ``batch_size_`` and ``max_epochs_`` (the epochs scheduled, the
        added cycle included). In the added cycle, early stopping and the weights kept read
        the validation MSE of an exponential moving average of the weights over about the
        last ten steps (at most an epoch of them; :func:`~latentode._training.ema_decay`),
        which smooths the jumps that steps at the restarted learning rate make. Windowed
        fits (``window``) count their windows as series and keep one cycle, scored by that
        average from the first step on: their validation windows are few and overlap, and
        a single step moved their validation MSE by up to 3x.
    lr, weight_decay : float, default=1e-2, 0.0
        Adam settings.
    lr_schedule : {"cosine", "exponential", "constant"}, default="cosine"
        The learning rate per optimisation step. "cosine": a one-epoch linear warm-up
        from ``lr / 10``, then a half cosine down to ``lr / 20`` at ``max_epochs``, so that
        late epochs take small steps and the validation error settles instead of jumping.
        "exponential": ``lr * lr_decay**step`` down to ``lr / 10`` (Rubanova et al. use
        0.999). "constant": ``lr`` throughout.
    lr_decay : float, default=1.0
        The per-step factor of ``lr_schedule="exponential"``; a value below 1 selects that
        schedule.
    max_grad_norm : "auto", float or None, default="auto"
        Clip the gradient of each step to this total L2 norm
        (:func:`torch.nn.utils.clip_grad_norm_`). "auto": five times the median norm of
        the last 50 steps (from the sixth step), so that a rare spike, such as one batch
        whose trajectory exploded, moves the weights no more than a typical step. None: no
        clipping. The norm before clipping is recorded in ``history_`` either way
        (``grad_norm``: the epoch mean, ``grad_norm_max``).
    validation_fraction : float, default=0.1
        Share of series held out for early stopping (0 disables it); at least one series
        is always kept for training.
    patience : "auto", int or None, default="auto"
        Epochs without improvement of the validation MSE before stopping (counted after
        the KL warm-up, and afresh in a cycle that ``max_epochs="auto"`` adds); the best
        weights are restored. "auto": 10, or a quarter of the cycle's epochs if more (a
        56-epoch budget waits 14 epochs, a 93-epoch one 24), since early in a long cosine
        cycle the learning rate is still high and the validation MSE of a fit on few
        series still jumps. None: no stopping (the best weights are still restored).
    blend : {"auto", None}, default="auto"
        "auto": after training, a gate per variable between the model's read-out and the
        linear interpolation in time of the context's values (the last value past the
        end) is fitted by least squares on held-out values of the validation and training
        series (the encoder not seeing them), and for a windowed model also on forecasts up to
        a window past a context window cut from its own series:
        weights in [0, 1] inside the variable's observed span (imputation) and outside it
        (forecasting), each for up to 4 bins of the distance to the nearest observed value
        (``blend_``, ``blend_edges_``; :mod:`latentode._blend`). Where the model beats
        interpolation the weight is 1; on dense, smooth data, or next to an observation, an
        undertrained model is pulled towards interpolation instead of losing to it. None:
        the read-out alone.
    window : "auto", None, float or duration, default="auto"
        Train and predict long series in windows of this length (a number in the time
        column's units, or a duration such as ``"30D"`` for datetimes). Training windows
        start every eighth of a window (``WINDOW_STRIDE``), each its own example with z0 at
        its start, and are trained on with the budget of as many whole series
        (``max_epochs``); a query reads
        the window centred on it (moved inside the data), a forecast the window ending at
        the last observation (``blend`` checks such forecasts up to a window ahead on the
        series itself and falls back on the last value where the model misses more than
        it). "auto" uses windows when there are fewer than 32 series
        whose median length exceeds 200 points, each window spanning about 100 points;
        None never cuts. The length used is stored in ``window_`` (internal units:
        seconds for datetimes; None when not windowed).
    n_threads : "auto", int or None, default="auto"
        torch threads for the estimator's own work; the caller's setting is restored
        afterwards. "auto": 1 on CPU (the matrices are small, so a second thread
        gains little and competes with other processes for the cores; BENCHMARKS.md,
        "Scaling"), torch's setting on CUDA. None leaves torch's setting.
    device : str, default="auto"
        "auto" uses CUDA when available (under torchrun, the GPU ``cuda:LOCAL_RANK``).
    distributed : "auto", bool, default="auto"
        Data-parallel training on ``torch.distributed``. "auto": when the process was
        launched by ``torchrun`` with more than one process (``WORLD_SIZE``, ``RANK``,
        ``LOCAL_RANK``) or a process group is already initialised; single-process
        otherwise. Every rank must call ``fit`` on the same data: each trains on its own
        rows of every global batch of ``batch_size`` series, the gradients are averaged by
        ``DistributedDataParallel`` (gloo on CPU, NCCL on CUDA), the validation MSE is
        all-reduced, and every rank ends with the same weights. ``batch_size`` stays the
        global batch, so a fit on 2 processes makes the same steps as on 1. False never
        talks to other processes; True requires a distributed job.
    random_state : int, RandomState or None, default=None
        Makes a fit reproducible at a fixed thread count.
    verbose : int, default=0
        1 shows a tqdm progress bar (loss, validation MSE, NFE).

    Attributes
    ----------
    module_ : LatentODE
    scaling_ : Scaling
        Per-variable mean/std and the time unit (median window span of the training series).
    time_kind_ : TimeKind
    id_col_, time_col_ : str or None
    feature_names_in_ : ndarray of str, n_features_in_ : int
    variable_weight_ : ndarray of shape (n_features,)
        The likelihood weight of each variable in training (see ``variable_weight``).
    adjoint_ : bool
        Whether training used the adjoint (see ``adjoint``).
    blend_ : ndarray of shape (2, n_bins, n_features) or None
        The gate of ``blend``: ``blend_[0]`` inside each variable's observed span,
        ``blend_[1]`` outside, one row per distance bin (1 = the model alone, 0 =
        interpolation alone).
    blend_edges_ : ndarray of shape (2, n_bins - 1) or None
        The distance bins' edges of each regime, in units of ``scaling_.time_scale`` (the
        model's time unit); infinite edges leave the bins above them unused.
    noise_std_ : ndarray of shape (n_features,)
        The observation noise std of each variable used by intervals and samples
        (standardised units; see ``noise_std``).
    window_ : float or None
        The window length in internal time units (see ``window``).
    readout_ : {"linear", "per_variable"}
        The read-out used (see ``readout``).
    batch_size_, max_epochs_ : int
        The batch size and the epoch budget that training used (see ``max_epochs``).
    world_size_ : int
        The number of processes that trained the model (1 without data parallelism).
    rotation_cycles_ : (float, float) or None
        The lowest and highest initial frequency of the latent field, in cycles per
        time unit (``dynamics_init="rotations"``; None otherwise).
    history_ : list of dict
        Per epoch: loss, mse, kl, valid_mse, NFE (forward, backward, encoder, prior), the
        gradient norm before clipping (mean and max over steps), learning rate, optimiser steps,
        seconds.

    Examples
    --------
    >>> from latentode import LatentODERegressor
    >>> from latentode.datasets import make_synthetic
    >>> df, _ = make_synthetic(n_series=8, random_state=0)
    >>> est = LatentODERegressor(latent_dim=4, encoder_dim=8, width=16, max_epochs=1,
    ...                          validation_fraction=0, random_state=0).fit(df)
    >>> est.impute(df).shape == df.shape
    True
    """

    def __init__(self, *, id_col=None, time_col=None, value_cols=None, encoder="odernn", latent_dim=20,
                 encoder_dim=40, width=50, n_layers=3, dynamics_init="rotations", readout="auto", prior="normal",
                 prior_options=None, method="dopri5",
                 rtol=1e-3, atol=1e-4, adjoint="auto", max_num_steps=1000, noise_std="auto", n_samples=1, kl_warmup=10,
                 mask_fraction=0.2, forecast_fraction=0.5, loss_on="all", variable_weight=None, anchor="origin",
                 center=None,
                 step_size=0.1,
                 max_epochs="auto", batch_size="auto", lr=1e-2, weight_decay=0.0, lr_schedule="cosine", lr_decay=1.0,
                 max_grad_norm="auto",
                 validation_fraction=0.1,
                 patience="auto", blend="auto", window="auto", n_threads="auto", device="auto", distributed="auto",
                 random_state=None, verbose=0):
        self.id_col = id_col
        self.time_col = time_col
        self.value_cols = value_cols
        self.encoder = encoder
        self.latent_dim = latent_dim
        self.encoder_dim = encoder_dim
        self.width = width
        self.n_layers = n_layers
        self.dynamics_init = dynamics_init
        self.readout = readout
        self.prior = prior
        self.prior_options = prior_options
        self.method = method
        self.rtol = rtol
        self.atol = atol
        self.adjoint = adjoint
        self.max_num_steps = max_num_steps
        self.step_size = step_size
        self.noise_std = noise_std
        self.n_samples = n_samples
        self.kl_warmup = kl_warmup
        self.mask_fraction = mask_fraction
        self.forecast_fraction = forecast_fraction
        self.loss_on = loss_on
        self.variable_weight = variable_weight
        self.anchor = anchor
        self.center = center
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.lr_schedule = lr_schedule
        self.lr_decay = lr_decay
        self.max_grad_norm = max_grad_norm
        self.validation_fraction = validation_fraction
        self.patience = patience
        self.blend = blend
        self.window = window
        self.n_threads = n_threads
        self.device = device
        self.distributed = distributed
        self.random_state = random_state
        self.verbose = verbose

    def __sklearn_tags__(self):
        """Input is one long DataFrame (id, time, variables; NaN = not observed), not a 2-D array."""
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.input_tags.allow_nan = True
        tags.input_tags.string = True        # ids may be strings
        tags.input_tags.categorical = True   # and categories
        tags.target_tags.required = False    # the targets are the observed values
        tags.non_deterministic = False       # with random_state set
        return tags

    # ------------------------------------------------------------------ validation
    def _validate_params(self):
        check_choice("encoder", self.encoder, ENCODERS)
        check_choice("prior", self.prior, PRIORS)
        check_method("method", self.method)
        check_choice("dynamics_init", self.dynamics_init, DYNAMICS_INIT)
        check_choice("readout", self.readout, ("auto",) + READOUTS)
        check_choice("loss_on", self.loss_on, ("all", "hidden"))
        check_choice("lr_schedule", self.lr_schedule, SCHEDULES)
        if self.blend is not None:
            check_choice("blend", self.blend, ("auto",))
        check_choice("anchor", self.anchor, ANCHORS)
        if self.center is not None:
            check_choice("center", self.center, CENTERS)
        vw = self.variable_weight
        if vw is not None and not isinstance(vw, dict) and not (isinstance(vw, str) and vw == "balanced"):
            raise InputTypeError(f"variable_weight must be None, 'balanced' or a dict, got {vw!r}.")
        if self.loss_on == "hidden" and self.mask_fraction == 0 and self.forecast_fraction == 0:
            raise InputValueError("loss_on='hidden' scores only values hidden from the encoder; set mask_fraction or "
                             "forecast_fraction above 0.")
        for name in ("latent_dim", "encoder_dim", "width", "n_layers", "max_num_steps", "n_samples"):
            check_number(name, getattr(self, name), low=1, integer=True)
        for name, none in (("max_epochs", False), ("batch_size", False), ("patience", True)):
            value = getattr(self, name)
            if isinstance(value, str) and value != "auto":
                raise InputTypeError(f"{name} must be 'auto'{', None' if none else ''} or a positive integer, "
                                     f"got {value!r}.")
            if not isinstance(value, str):
                check_number(name, value, low=1, integer=True, allow_none=none)
        check_number("kl_warmup", self.kl_warmup, low=0, integer=True)
        if not (isinstance(self.noise_std, str) and self.noise_std == "auto"):
            check_number("noise_std", self.noise_std, low=0, low_open=True, allow_none=True)
        for name in ("rtol", "atol", "lr", "step_size"):
            check_number(name, getattr(self, name), low=0, low_open=True)
        check_number("weight_decay", self.weight_decay, low=0)
        check_number("lr_decay", self.lr_decay, low=0, high=1, low_open=True)
        if not (isinstance(self.max_grad_norm, str) and self.max_grad_norm == "auto"):
            check_number("max_grad_norm", self.max_grad_norm, low=0, low_open=True, allow_none=True)
        check_number("mask_fraction", self.mask_fraction, low=0, high=1)
        check_number("forecast_fraction", self.forecast_fraction, low=0, high=1)
        check_number("validation_fraction", self.validation_fraction, low=0, high=0.9)
        if not isinstance(self.adjoint, (bool, np.bool_)) and not (isinstance(self.adjoint, str)
                                                                  and self.adjoint == "auto"):
            raise InputTypeError(f"adjoint must be True, False or 'auto', got {self.adjoint!r}.")
        if self.n_threads != "auto":
            check_number("n_threads", self.n_threads, low=1, integer=True, allow_none=True)
        if not isinstance(self.distributed, (bool, np.bool_)) and not (isinstance(self.distributed, str)
                                                                      and self.distributed == "auto"):
            raise InputTypeError(f"distributed must be 'auto', True or False, got {self.distributed!r}.")
        if self.prior_options is not None and not isinstance(self.prior_options, dict):
            raise InputTypeError(f"prior_options must be a dict or None, got {type(self.prior_options).__name__}.")

    def _solver(self) -> dict:
        adjoint = getattr(self, "adjoint_", self.adjoint)
        return dict(method=self.method, rtol=self.rtol, atol=self.atol,
                    adjoint=bool(adjoint) if not isinstance(adjoint, str) else True, max_num_steps=self.max_num_steps,
                    step_size=self.step_size)

    def _resolve_adjoint(self, series: SeriesSet) -> bool:
        """``adjoint="auto"``: backpropagate through the solver unless a batch is large."""
        if not isinstance(self.adjoint, str):
            return bool(self.adjoint)
        longest = int(series.lengths.max()) if series.n_series else 0
        return self.batch_size_ * longest > ADJOINT_AUTO_POINTS

    def _resolve_window(self, series: SeriesSet):
        """The window length in internal time units (seconds for datetimes), or None."""
        w = self.window
        if w is None:
            return None
        if isinstance(w, str) and w == "auto":
            return auto_window(series)
        if self.time_kind_.kind == "numeric":
            check_number("window", w, low=0, low_open=True)
            return float(w)
        try:
            seconds = pd.Timedelta(w).total_seconds()
        except (TypeError, ValueError) as err:
            raise InputTypeError(f"window must be 'auto', None or a duration such as '30D' or pd.Timedelta(days=30) "
                            f"for a model fitted on {self.time_kind_.describe()} times, got {w!r}.") from err
        if not seconds > 0:
            raise InputValueError(f"window must be a positive duration, got {w!r}.")
        return float(seconds)

    def _windowed(self, series: SeriesSet, stride_fraction: float) -> SeriesSet:
        """``series`` cut into windows of ``window_`` (unchanged without windows)."""
        if self.window_ is None:
            return series
        return cut_windows(series, self.window_, self.window_ * stride_fraction)

    def _backtest(self, whole: SeriesSet) -> HeldOut:
        """Forecasts of a windowed model checked on its own long series, for the gate.

        Windows of ``(1 + BACKTEST_HORIZON) * window_`` every ``WINDOW_STRIDE`` window: the encoder reads
        the first ``window_`` of each (as :meth:`predict` reads the window that ends at the last
        observation) and the values after it are held out (the fit keeps those outside the
        context's span: the forecasts), so that the gate's forecast distance bins
        reach ``BACKTEST_HORIZON`` windows past the context instead of the fifth of a window
        that the training windows' own held-out tails reach.
        """
        length = self.window_ * (1.0 + BACKTEST_HORIZON)
        windows = cut_windows(whole, length, self.window_ * WINDOW_STRIDE)
        return HeldOut(windows, self.scaling_, self.device_, tail=BACKTEST_HORIZON / (1.0 + BACKTEST_HORIZON))

    def _set_variable_weight(self) -> None:
        """Copy ``variable_weight_`` into the module's (non-persistent) buffer, after fit or a load."""
        self.module_.variable_weight = torch.as_tensor(self.variable_weight_, dtype=torch.float32,
                                                       device=self.device_)

    def _build_module(self) -> LatentODE:
        return LatentODE(self.n_features_in_, self.latent_dim, self.encoder, self.encoder_dim, self.width,
                         self.n_layers, self.prior, self.prior_options,
                         TRAIN_NOISE if self.noise_std == "auto" else self.noise_std, self.anchor, self.center,
                         self.dynamics_init, getattr(self, "rotation_cycles_", None) or ROTATION_CYCLES,
                         self.readout_)

    def _infer_chunk(self, n_samples: int, q_max: int) -> int:
        """Series per decoded chunk, so that samples x series x queries x (what one query holds) stays within
        ``INFER_ELEMENTS``: the features and latent state, and with ``readout="per_variable"`` its hidden layer
        (features x width)."""
        per_query = self.n_features_in_ + self.latent_dim
        if self.readout_ == "per_variable":
            per_query += self.n_features_in_ * self.width
        return int(np.clip(INFER_ELEMENTS // (max(n_samples, 1) * max(q_max, 1) * per_query), 1,
                           max(self.batch_size_, INFER_CHUNK)))

    def _queries(self, lf, times):
        return resolve_queries(lf, times, self.time_kind_, self.id_col_, self.time_col_)

    def _validate(self, X, name="X"):
        """Validate a frame against the fitted columns and time kind."""
        return validate_frame(X, self.id_col_, self.time_col_, list(self.feature_names_in_), self.time_kind_, name,
                              fitted=True)

    def _variable_weights(self, series: SeriesSet) -> np.ndarray:
        """(n_features,) likelihood weights from ``variable_weight`` and the training counts."""
        names = list(self.feature_names_in_)
        vw = self.variable_weight
        if vw is None:
            return np.ones(len(names))
        if isinstance(vw, dict):
            unknown = sorted(set(map(str, vw)) - set(map(str, names)))
            if unknown:
                raise InputValueError(f"variable_weight names columns that are not variables: {unknown}; "
                                 f"the variables are {names}.")
            w = np.array([vw.get(n, 1.0) for n in names], dtype=float)
            if not np.all(np.isfinite(w)) or (w < 0).any() or not (w > 0).any():
                raise InputValueError(f"variable_weight values must be finite, >= 0 and not all 0, got {vw!r}.")
            return w
        count = (~np.isnan(series.values)).sum(axis=0).astype(float)
        return np.where(count > 0, count.sum() / (len(names) * np.maximum(count, 1)), 1.0)

    # ------------------------------------------------------------------ fit
    @_threaded
    def fit(self, X, y=None, *, validation_data=None):
        """Fit on a long frame.

        Parameters
        ----------
        X : pandas.DataFrame
            Long format: id column, time column, one numeric column per variable (NaN =
            not measured). Rows in any order; repeated (id, time) rows are averaged.
        y : None
            Ignored (the targets are the observed values).
        validation_data : pandas.DataFrame or None
            Series of your own for early stopping and for choosing the weights to keep
            (same columns as ``X``; a benchmark's validation split, say). Every series of
            ``X`` is then trained on and ``validation_fraction`` is not used.

        Returns
        -------
        self
        """
        self._validate_params()
        lf = validate_frame(X, self.id_col, self.time_col, self.value_cols, None, "X")
        self.id_col_, self.time_col_ = lf.columns.id, lf.columns.time
        self.feature_names_in_ = np.asarray(lf.columns.values, dtype=object)
        self.n_features_in_ = len(lf.columns.values)
        self.time_kind_ = lf.time_kind
        whole = lf.series.observed_only()
        self.window_ = self._resolve_window(whole)
        series = self._windowed(whole, WINDOW_STRIDE)
        self.scaling_ = Scaling.fit(series, lf.columns.values)
        self.rotation_cycles_ = None
        if self.dynamics_init == "rotations":  # around the data's own frequency, up to its second harmonic
            c = characteristic_cycles(series, self.scaling_.mean, self.scaling_.std, self.scaling_.time_scale)
            self.rotation_cycles_ = (c / 4.0, 2.0 * c)
        self.variable_weight_ = self._variable_weights(series)
        self.readout_ = choose_readout(series) if self.readout == "auto" else self.readout
        self.device_ = _distributed.device_for(resolve_device(self.device))
        ctx = _distributed.resolve(self.distributed, self.device_)
        self.world_size_ = ctx.world_size

        _distributed.check_same_data(ctx, _distributed.fingerprint(series.ids, series.time, series.values,
                                                                   series.offsets))
        rs = check_random_state(self.random_state)
        seed = _distributed.broadcast_seed(ctx, int(rs.randint(0, 2**31 - 1)))
        rng = np.random.default_rng(seed)
        n = series.n_series
        if validation_data is not None:
            valid = self._validate(validation_data, "validation_data").series.observed_only()
            train = series
        else:
            n_valid = min(int(round(self.validation_fraction * n)), n - 1)  # keep a training series
            perm = rng.permutation(n)
            valid = series.subset(np.sort(perm[:n_valid])) if n_valid else None
            train = series.subset(np.sort(perm[n_valid:])) if n_valid else series

        self.batch_size_, self.max_epochs_ = training_budget(train.n_series, self.batch_size, self.max_epochs)
        self.adjoint_ = self._resolve_adjoint(train)
        cuda = [self.device_.index or 0] if self.device_.type == "cuda" else []
        # the global torch RNG (initialisation, Hutchinson noise of a CNF prior) is seeded here and the
        # caller's RNG state is restored afterwards
        with torch.random.fork_rng(devices=cuda):
            torch.manual_seed(seed)
            self.module_ = self._build_module().to(self.device_)
            self._set_variable_weight()
            generator = torch.Generator(device=self.device_).manual_seed(seed)
            # "auto" epochs on whole series: more cycles while the fit is leaving its initial plateau
            extend = isinstance(self.max_epochs, str) and self.window_ is None
            self.history_ = fit_loop(self.module_, train, valid, self.scaling_, self, rng, generator,
                                     self._solver(), self.device_, ctx, (self.batch_size_, self.max_epochs_), extend,
                                     average=self.window_ is not None)
        cycles = max((r.get("cycle", 1) for r in self.history_), default=1)
        self.max_epochs_ = scheduled_epochs(self.max_epochs_, cycles)
        self.module_.eval()
        self.blend_ = self.blend_edges_ = None
        if self.blend == "auto" or isinstance(self.noise_std, str):
            # held-out values of the validation series (else the training ones): the noise and the gate
            bs, solver = max(self.batch_size_, 256), self._solver()
            held = heldout_values(self.module_, HeldOut(valid if valid is not None else train, self.scaling_,
                                                        self.device_), bs, solver, ctx)
            if self.blend == "auto":
                # the gate also reads the training series' held-out values: a few validation series alone give
                # too few values per variable, and fit(df) is mostly followed by impute(df) / predict(df)
                parts = [held] if valid is None else [held, heldout_values(
                    self.module_, HeldOut(train, self.scaling_, self.device_), bs, solver, ctx)]
                if self.window_ is not None:  # forecasts up to a window ahead, read as predict reads them
                    back = heldout_values(self.module_, self._backtest(whole), bs, solver, ctx)
                    parts.append([a[back[3]] for a in back])  # outside the context: forecasts only
                gate = [np.concatenate(c) for c in zip(*parts)]
                if len(gate[0]):
                    self.blend_, self.blend_edges_ = fit_blend(*gate, n_features=self.n_features_in_)
            if isinstance(self.noise_std, str):  # "auto": the noise of the predictions is what they miss by
                self._set_noise(*held)
        self.noise_std_ = self.module_.decoder.noise_std.detach().cpu().double().numpy()
        return self

    def _set_noise(self, y, m, r, outside, distance, feature):
        """Set the decoder's noise std of each variable to the RMS error of the (blended) predictions at
        held-out values (arrays of :func:`~latentode._training.heldout_values`)."""
        if self.blend_ is None:
            pred = m
        else:
            pred = r + gate_at(*self._gate(), outside, distance, feature) * (m - r)
        n_f = self.n_features_in_
        sq = np.bincount(feature, (pred - y) ** 2, minlength=n_f)
        n = np.bincount(feature, minlength=n_f).astype(float)
        w = self.module_.variable_weight.detach().cpu().double().numpy()
        scored = (n > 0) & (w > 0)
        overall = np.sqrt((sq * w).sum() / (n * w).sum()) if (n * w).sum() > 0 else TRAIN_NOISE
        rms = np.clip(np.where(scored, np.sqrt(sq / np.maximum(n, 1)), overall), 1e-3, None)
        with torch.no_grad():
            self.module_.decoder.log_noise.copy_(torch.as_tensor(np.log(rms), dtype=torch.float32))

    def _gate(self):
        """``(alpha, edges)`` of the fitted gate, or None (``blend=None``, or a model without one)."""
        alpha = getattr(self, "blend_", None)
        return None if alpha is None else as_gate(alpha, getattr(self, "blend_edges_", None))

    # ------------------------------------------------------------------ inference core
    def _posterior(self, series: SeriesSet, idx):
        """The encoder's :class:`~latentode.model.Posterior` of the series ``idx``."""
        batch = collate(series, idx, self.scaling_, self.device_)
        return self.module_.encode(batch.t, batch.x, batch.m)

    def _decode_points(self, context: SeriesSet, q_codes, q_t, n_samples=0, generator=None, reduce=None):
        """Predicted values at query points, in original units.

        Parameters
        ----------
        context : SeriesSet
            Observed points of each series (the encoder's input).
        q_codes : (n_query,) int series index into ``context``
        q_t : (n_query,) float internal time of each query
        n_samples : int
            0 decodes the posterior mean of z0 (one "sample", no noise); ``k > 0`` draws
            ``k`` samples of z0 from q(z0|x) and adds observation noise (predictive samples).
        generator : torch.Generator or None
            For the draws.
        reduce : callable or None
            Applied to each chunk's draws, shape (n_samples, n_points, n_features) in
            original units, returning (k, n_points, n_features) (e.g. quantiles), so that
            the full draws never need to exist at once.

        Returns
        -------
        numpy.ndarray, shape (k, n_query, n_features)
            k = 1 for the mean, ``n_samples`` for draws, or what ``reduce`` returns.
        """
        if self.window_ is not None:  # each query reads the context window that ends at or surrounds it
            context, q_codes = query_windows(context, q_codes, q_t, self.window_)
        n_s, n_f = context.n_series, self.n_features_in_
        times, _, offsets, row_point = group_points(np.asarray(q_codes), np.asarray(q_t), None, n_s)
        scale, model, solver = self.scaling_.time_scale, self.module_, self._solver()
        gate = self._gate()
        q_max = int(np.diff(offsets).max()) if n_s else 1
        chunk = self._infer_chunk(n_samples, q_max)
        parts = []
        model.eval()
        with torch.no_grad():
            for start in range(0, n_s, chunk):
                idx = np.arange(start, min(start + chunk, n_s))
                idx = idx[offsets[idx + 1] > offsets[idx]]
                if not len(idx):
                    continue
                mu, sigma, t0, ref = self._posterior(context, idx)
                z0 = mu.unsqueeze(0) if not n_samples else model.sample_z0(mu, sigma, n_samples, generator)
                tq, lengths = pad_points(times, offsets, idx, context.origin, scale, self.device_)
                xhat = model.decode(z0, tq, t0, ref, **solver)
                if gate is not None:
                    xhat = apply_blend(xhat, *reference_and_regime(ref.t, ref.x, ref.m, tq), gate)
                if n_samples:
                    eps = torch.randn(xhat.shape, generator=generator, device=xhat.device, dtype=xhat.dtype)
                    xhat = xhat + model.decoder.noise_std * eps
                valid = np.arange(tq.shape[1])[None, :] < lengths[:, None]
                values = xhat.cpu().double().numpy()[:, valid] * self.scaling_.std + self.scaling_.mean
                parts.append(values if reduce is None else reduce(values))
        out = np.concatenate(parts, axis=1) if parts else np.empty((max(n_samples, 1), 0, n_f))
        return out[:, row_point]

    # ------------------------------------------------------------------ public inference
    @_threaded
    def predict(self, X, times=None, *, quantiles=None, level=None, return_std=False, n_samples=200,
                random_state=0):
        """Predictive mean of every variable, at any times.

        The encoder reads each series' observed values in ``X``; the latent ODE, started
        from the posterior mean of z0 (at the window origin, or with ``anchor="last"`` at the
        last observation), is decoded at the queries.

        Parameters
        ----------
        X : pandas.DataFrame
            Context, in the fitted long format.
        times : None, 1-D sequence of times, or DataFrame, default=None
            None: at the rows of ``X`` (a denoised reconstruction; index of ``X``).
            A sequence (e.g. ``pd.date_range``): the same times for every series.
            A DataFrame with the id and time columns: per-series query rows (its index
            is kept). Times may lie anywhere: between, before or after the observations.

        quantiles : sequence of float in (0, 1) or None
            Adds predictive quantiles ``{var}-q-{100 q}`` (``{var}-median`` for 0.5).
        level : sequence of float in (1, 100) or None
            In percent (80 for an 80% interval; a level at or below 1, likely a fraction, is
            refused). Adds central prediction intervals ``{var}-lo-{level}`` and ``{var}-hi-{level}``
            (the Nixtla convention). Exclusive with ``quantiles``.
        return_std : bool, default=False
            Adds the predictive standard deviation ``{var}-std``.
        n_samples : int, default=200
            Predictive samples behind quantiles, intervals and std (z0 from q(z0|x),
            decoded, plus observation noise); ignored when none is asked for.
        random_state : int or None, default=0
            Seed of those samples.

        Returns
        -------
        pandas.DataFrame
            Id column (if the model has one), time column (same kind as fitted), one
            float column per variable (the mean), then the requested uncertainty columns.
        """
        check_is_fitted(self)
        probs, names = interval_columns(quantiles, level)
        lf = self._validate(X)
        codes, t, keys = self._queries(lf, times)
        context = lf.series.observed_only()
        mean = self._decode_points(context, codes, t)[0]
        out = self._to_frame(keys, mean)
        if probs or return_std:
            check_number("n_samples", n_samples, low=2, integer=True)

            def summarise(draws):  # (n_samples, n_points, n_features) -> (n_probs [+ 1], ...)
                stats = [np.quantile(draws, probs, axis=0)] if probs else []
                return np.concatenate(stats + ([draws.std(axis=0, ddof=1)[None]] if return_std else []), axis=0)

            summary = self._decode_points(context, codes, t, n_samples, self._generator(random_state), summarise)
            extra = {}
            for j, var in enumerate(self.feature_names_in_):
                for k, suffix in enumerate(names):
                    extra[f"{var}-{suffix}"] = summary[k, :, j]
                if return_std:
                    extra[f"{var}-std"] = summary[-1, :, j]
            out = pd.concat([out, pd.DataFrame(extra, index=out.index)], axis=1)
        return out

    @_threaded
    def sample(self, X, times=None, *, n_samples=100, random_state=None):
        """Draw predictive samples: z0 from q(z0|x), decoded, plus observation noise.

        Parameters
        ----------
        X, times : as in :meth:`predict`
        n_samples : int, default=100
        random_state : int or None
            Seed; the same seed gives the same samples (at a fixed thread count and device).

        Returns
        -------
        pandas.DataFrame
            Long frame: for each sample ``0 .. n_samples-1`` (column ``sample``) the query
            rows (id, time) and one column per variable.
        """
        check_is_fitted(self)
        check_number("n_samples", n_samples, low=1, integer=True)
        lf = self._validate(X)
        codes, t, keys = self._queries(lf, times)
        draws = self._decode_points(lf.series.observed_only(), codes, t, n_samples, self._generator(random_state))
        n_q = len(keys)
        rep = keys.iloc[np.tile(np.arange(n_q), n_samples)].reset_index(drop=True)
        rep.insert(0, "sample", np.repeat(np.arange(n_samples), n_q))
        return self._to_frame(rep, draws.reshape(-1, draws.shape[-1]))

    @property
    def prior_(self):
        """The fitted prior over z0 (``log_prob(z)``: (n, latent_dim) -> (n,); ``sample(n)``)."""
        check_is_fitted(self, "module_")
        return self.module_.prior

    @_threaded
    def sample_prior(self, times, *, n_samples=10, noise=True, random_state=None):
        """Generate new trajectories: z0 from the prior, decoded at ``times``.

        There is no series to center on, so with any ``center`` the draws are
        changes around the training mean of each variable.

        Parameters
        ----------
        times : 1-D sequence of times (the fitted kind)
            Where z0 sits: the earliest time, or with ``anchor="last"`` the latest (the
            prior is over the state at the last observation; the draws are decoded backwards).
        n_samples : int, default=10
        noise : bool, default=True
            Add observation noise (else the decoded means).
        random_state : int or None

        Returns
        -------
        pandas.DataFrame
            Columns ``sample``, the time column and one column per variable.
        """
        check_is_fitted(self)
        check_number("n_samples", n_samples, low=1, integer=True)
        tvals = time_values(times)
        t = self.time_kind_.to_float(tvals, "times")
        gen = self._generator(random_state)
        model = self.module_
        order = np.argsort(t, kind="stable")
        start = t[order[-1]] if self.anchor == "last" else t[order[0]]
        rel = (t[order] - start) / self.scaling_.time_scale
        with torch.no_grad():
            z0 = model.prior.sample(n_samples, generator=gen).to(self.device_)
            tq = torch.as_tensor(rel, dtype=z0.dtype, device=self.device_).unsqueeze(0)
            xhat = model.decoder(z0.unsqueeze(1), tq, **self._solver())[:, 0]  # (samples, times, features)
            if noise:
                eps = torch.randn(xhat.shape, generator=gen, device=xhat.device, dtype=xhat.dtype)
                xhat = xhat + model.decoder.noise_std * eps
        values = np.empty((n_samples, len(t), self.n_features_in_))
        values[:, order] = xhat.cpu().double().numpy()
        values = values * self.scaling_.std + self.scaling_.mean
        keys = pd.DataFrame({"sample": np.repeat(np.arange(n_samples), len(t)),
                             self.time_col_: tvals.take(np.tile(np.arange(len(t)), n_samples)).to_numpy()})
        return self._to_frame(keys, values.reshape(-1, self.n_features_in_))

    def _generator(self, random_state):
        seed = int(check_random_state(random_state).randint(0, 2**31 - 1))
        return torch.Generator(device=self.device_).manual_seed(seed)

    def _to_frame(self, keys: pd.DataFrame, values: np.ndarray, suffix="") -> pd.DataFrame:
        """The single place where predictions become a DataFrame."""
        out = keys.copy()
        for j, name in enumerate(self.feature_names_in_):
            out[f"{name}{suffix}"] = values[:, j]
        return out

    @_threaded
    def impute(self, X):
        """Fill every NaN of the variable columns with the model's reconstruction.

        Returns
        -------
        pandas.DataFrame
            Same rows, index, columns and column order as ``X``; observed values and other
            columns untouched; filled columns become float if they were not.
        """
        check_is_fitted(self)
        lf = self._validate(X)
        pred = self._decode_points(lf.series.observed_only(), lf.codes,
                                   self.time_kind_.to_float(X[self.time_col_], "time column"))[0]
        out = X.copy()
        for j, name in enumerate(self.feature_names_in_):
            col = X[name]
            missing = col.isna().to_numpy()
            if not missing.any():
                continue
            filled = col.to_numpy(dtype=np.float64, na_value=np.nan, copy=True)
            filled[missing] = pred[missing, j]
            dtype = col.dtype if pd.api.types.is_float_dtype(col.dtype) else np.float64
            out[name] = pd.Series(filled, index=X.index).astype(dtype)
        return out

    @_threaded
    def score(self, X, y=None):
        """Negative mean squared error on a reproducible held-out subset, standardised units.

        Held out: the observed values in the last 20% of each series' window
        (forecasting) and a seeded random 10% of the others (imputation); the encoder sees
        the rest. Higher is better, so ``GridSearchCV(..., cv=GroupKFold())`` can tune it.
        """
        check_is_fitted(self)
        series = self._windowed(self._validate(X).series.observed_only(), 1.0)
        sq, n = heldout_errors(self.module_, HeldOut(series, self.scaling_, self.device_), max(self.batch_size_, 256),
                               self._solver(), blend=self._gate())
        mse = float(sq.sum() / n.sum()) if n.sum() > 0 else float("nan")
        if not np.isfinite(mse):
            raise ValueError("X has no held-out values to score (every series too short or empty).")
        return -mse

    # ------------------------------------------------------------------ persistence
    def _fitted_config(self) -> dict:
        params = self.get_params()
        if not isinstance(params["random_state"], (int, type(None))):
            params["random_state"] = None
        return {
            "format_version": _FORMAT_VERSION,
            "params": params,
            "id_col": self.id_col_, "time_col": self.time_col_,
            "feature_names": [str(c) for c in self.feature_names_in_],
            "time_kind": {"kind": self.time_kind_.kind, "tz": self.time_kind_.tz},
            "scaling": self.scaling_.to_dict(),
            "variable_weight": [float(w) for w in self.variable_weight_],
            "window": self.window_, "adjoint": bool(self.adjoint_), "readout": self.readout_,
            "blend": None if self.blend_ is None else np.asarray(self.blend_).tolist(),
            "blend_edges": None if self.blend_ is None else self._gate()[1].tolist(),
            "rotation_cycles": self.rotation_cycles_,
            "world_size": self.world_size_, "history": self.history_,
            "batch_size": self.batch_size_, "max_epochs": self.max_epochs_,
        }

    def save(self, path):
        """Save to a directory: ``config.json`` (parameters, columns, scalers, history) and ``weights.pt``.

        Atomic: both files are written to a temporary directory beside ``path``, which then
        replaces ``path``, so a save interrupted midway leaves a model saved there before
        loadable. An existing ``path`` must be a saved model or empty (``FileExistsError``
        otherwise: nothing else in it is deleted).
        """
        check_is_fitted(self)
        path = Path(path)
        if path.exists() and (not path.is_dir() or set(p.name for p in path.iterdir()) - set(_SAVED_FILES)):
            raise FileExistsError(f"path={str(path)!r} exists and is not a saved LatentODERegressor "
                                  f"(only {list(_SAVED_FILES)} may be in it); choose another path.")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
        try:
            (tmp / "config.json").write_text(json.dumps(self._fitted_config(), indent=1, default=float))
            torch.save({k: v.detach().cpu() for k, v in self.module_.state_dict().items()}, tmp / "weights.pt")
            old = None
            if path.exists():
                old = path.with_name(tmp.name + ".old")
                os.replace(path, old)
            os.replace(tmp, path)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return path

    @classmethod
    def load(cls, path, device="auto"):
        """Load an estimator saved with :meth:`save` (weights read with ``weights_only=True``)."""
        path = Path(path)
        if not (path / "config.json").is_file() or not (path / "weights.pt").is_file():
            raise FileNotFoundError(f"{path} is not a saved LatentODERegressor (needs config.json and weights.pt).")
        cfg = json.loads((path / "config.json").read_text())
        if cfg.get("format_version") != _FORMAT_VERSION:
            raise ValueError(f"{path}: unsupported format_version {cfg.get('format_version')!r}.")
        est = cls(**cfg["params"])
        est._restore(cfg, device)
        state = torch.load(path / "weights.pt", map_location=est.device_, weights_only=True)
        est.module_.load_state_dict(state)
        est.noise_std_ = est.module_.decoder.noise_std.detach().cpu().double().numpy()
        return est

    def _restore(self, cfg, device):
        self.id_col_, self.time_col_ = cfg["id_col"], cfg["time_col"]
        self.feature_names_in_ = np.asarray(cfg["feature_names"], dtype=object)
        self.n_features_in_ = len(self.feature_names_in_)
        self.time_kind_ = TimeKind(**cfg["time_kind"])
        self.scaling_ = Scaling.from_dict(cfg["scaling"])
        self.variable_weight_ = np.asarray(cfg.get("variable_weight", np.ones(self.n_features_in_)), dtype=float)
        self.history_ = cfg["history"]
        self.window_ = cfg.get("window")
        self.readout_ = cfg.get("readout", self.readout)  # models saved before readout="auto" name theirs
        self.blend_ = self.blend_edges_ = None
        if cfg.get("blend") is not None:
            self.blend_, self.blend_edges_ = as_gate(cfg["blend"], cfg.get("blend_edges"))
        self.rotation_cycles_ = tuple(cfg["rotation_cycles"]) if cfg.get("rotation_cycles") else None
        self.world_size_ = int(cfg.get("world_size", 1))
        self.batch_size_, self.max_epochs_ = training_budget(0, self.batch_size, self.max_epochs)  # saved before
        self.batch_size_ = int(cfg.get("batch_size", self.batch_size_))                            # these were kept
        self.max_epochs_ = int(cfg.get("max_epochs", self.max_epochs_))
        self.noise_std_ = None  # set from the weights below
        self.adjoint_ = bool(cfg.get("adjoint", True))
        self.device_ = resolve_device(device)
        self.module_ = self._build_module().to(self.device_).eval()
        self._set_variable_weight()

    def __getstate__(self):
        state = self.__dict__.copy()
        if "module_" in state:
            state["module_"] = {k: v.detach().cpu() for k, v in self.module_.state_dict().items()}
            state["device_"] = str(self.device_)
        return state

    def __setstate__(self, state):
        module_state = state.pop("module_", None)
        self.__dict__.update(state)
        if module_state is not None and "batch_size_" not in state:  # pickled before the budget was stored
            self.batch_size_, self.max_epochs_ = training_budget(0, self.batch_size, self.max_epochs)
        if module_state is not None:
            self.device_ = torch.device("cpu")
            self.module_ = self._build_module().eval()
            self.module_.load_state_dict(module_state)
            self._set_variable_weight()

