"""PhysioNet 2012 interpolation, the Rubanova et al. (2019) protocol.

set-a + set-b (8,000 stays), split 80/20 (:func:`_harness.rubanova_split`); times rounded to
the minute (the files' own resolution, so a no-op); every variable min-max scaled to [0, 1]
over the whole data set (Rubanova's ``get_data_min_max``), and every metric is on that scale.
For each test stay a seeded random ``ceil(n / 2)`` of its ``n`` observation times form the
context, plus an empty row at Time 0 (the window start, where every stay has its descriptors;
:func:`_harness.with_window_start`); the model predicts at all its times. Scored:

- ``heldout``: the observed values at the other times, never seen by the encoder;
- ``all``: every observed value of the stay, seen or not (what Rubanova et al. report).

MSE is given three ways: ``MSE_POOLED`` (mean over all scored values), ``MSE`` (per
variable, then averaged over variables, as in the forecasting benchmark) and
``MSE_PER_SERIES`` (per stay and variable, 0 where the stay has no value of it, averaged over
the variables and then the stays: the averaging of Rubanova et al.'s code and of its
published 2.118e-3, see :func:`_harness.masked_errors`). The neural models
train on the training stays' full windows hiding half of the values (``mask_fraction=0.5``,
``forecast_fraction=0``) for a fixed number of epochs.

Run: ``python benchmarks/physionet_interp.py --epochs 10 --seeds 0,1,2 --models odernn``.
"""

from __future__ import annotations

import time

import numpy as np
import torch

try:
    from . import _harness as H
except ImportError:  # run as a script
    import _harness as H

from latentode.datasets.physionet import VARIABLES

DEFAULTS = dict(latent_dim=20, encoder_dim=40, width=50, n_layers=3, batch_size=50, lr=1e-2,
                validation_fraction=0.0, mask_fraction=0.5, forecast_fraction=0.0)
KEYS = ("mse_pooled", "mse", "mae", "mse_per_series")


def main(data_dir=None, n_stays=None, n_train=None, epochs=10, seeds=(0, 1, 2), models=H.MODELS,
         name="physionet_interp", out_dir=None, estimator_defaults=False, **params) -> dict:
    """Run the protocol; returns the result dict (also written to ``<out_dir>/<name>.json``).

    Parameters are those of :func:`physionet_forecast.main`; the context draw of the test
    stays uses the seed too. With ``estimator_defaults`` the latent ODE is fitted with the
    estimator's own defaults (``DEFAULTS`` and ``epochs`` ignored).
    """
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    cols = list(VARIABLES)
    df = H.load_physionet(data_dir, n_stays)
    df["Time"] = np.round(df["Time"] * 60) / 60
    lo, rng = H.minmax_fit(df, cols)
    df = H.minmax_apply(df, cols, lo, rng)
    train_ids, test_ids = H.rubanova_split(df["RecordID"].unique())
    fit_ids = train_ids[:n_train] if n_train is not None else train_ids
    train = df[df["RecordID"].isin(fit_ids)]
    test = df[df["RecordID"].isin(test_ids)].reset_index(drop=True)
    settings = {"n_stays": int(df["RecordID"].nunique()), "n_train_split": len(train_ids),
                "n_test": len(test_ids), "n_fit": len(fit_ids), "epochs": None if estimator_defaults else epochs,
                "estimator_defaults": bool(estimator_defaults), "seeds": list(seeds),
                "params": dict(params) if estimator_defaults else {**DEFAULTS, **params, "max_epochs": epochs},
                "load_seconds": time.perf_counter() - t0}
    runs = []
    for model in models:
        for seed in (seeds[:1] if model in H.BASELINES else seeds):
            context, heldout = H.interp_frames(test, test_ids, 0.5, random_state=seed)
            context = H.with_window_start(context)  # the stays' window starts at admission, Time 0
            cases = {"heldout": (context, heldout), "all": (context, test)}
            run = H.run_one(model, train, cases, cols, settings["params"], seed)
            runs.append(run)
            print(f"{model} seed {seed}: held-out MSE {run['heldout']['mse_pooled']:.4e} (pooled)"
                  f" {run['heldout']['mse']:.4e} (per variable); all {run['all']['mse_pooled']:.4e}"
                  f" ({run['total_seconds']:.0f} s)", flush=True)
            H.write_json(name, {"protocol": "physionet_interp", "settings": settings, "runs": runs}, out_dir)
    tables = {case: H.markdown_table(H.summarise(runs, case, KEYS), KEYS) for case in ("heldout", "all")}
    for case, table in tables.items():
        print(f"\n{case}:\n{table}")
    result = {"protocol": "physionet_interp", "settings": settings, "runs": runs, "tables": tables}
    H.write_json(name, result, out_dir)
    return result


def _cli():
    p = H.physionet_parser(__doc__.split("\n\n")[0], "physionet_interp")
    p.add_argument("--estimator-defaults", action="store_true",
                   help="fit the latent ODE with the estimator's defaults (ignores --epochs)")
    a = p.parse_args()
    main(a.data_dir, a.n_stays, a.n_train, a.epochs, H.parse_list(a.seeds, int), H.parse_list(a.models), a.name,
         estimator_defaults=a.estimator_defaults, **H.model_options(a))


if __name__ == "__main__":
    _cli()
