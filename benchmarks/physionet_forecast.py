"""PhysioNet 2012 forecasting, the t-PatchGNN protocol (Zhang et al., ICML 2024).

set-a + set-b (8,000 stays); stays split 60/20/20 (:func:`_harness.tpatchgnn_split`); the 41
variables min-max scaled to [0, 1] per variable on train + validation; the model reads a test
stay's observations with ``Time < 24`` h and predicts every observed value with
``24 <= Time <= 48``; MSE and MAE per variable over the whole test set, then averaged over the
variables, on the scaled values.

The neural models are fitted on the training stays' full 0-48 h windows (their training hides
random suffixes and values) for a fixed number of epochs, without early stopping. With
``--select-on-valid`` the latent ODE keeps the weights of its best epoch on the validation
stays (as t-PatchGNN's code picks its epoch); otherwise the validation split is not used.

Run: ``python benchmarks/physionet_forecast.py --epochs 10 --seeds 0,1,2 --models odernn``.
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
                validation_fraction=0.0)


def main(data_dir=None, n_stays=None, n_train=None, epochs=10, seeds=(0, 1, 2), models=H.MODELS,
         score_valid=False, name="physionet_forecast", out_dir=None, n_test=None, select_on_valid=False,
         estimator_defaults=False, **params) -> dict:
    """Run the protocol; returns the result dict (also written to ``<out_dir>/<name>.json``).

    Parameters
    ----------
    n_stays : int or None
        Use only the first ``n_stays`` stays (by RecordID) before splitting.
    n_train : int or None
        Fit on the first ``n_train`` training stays only.
    n_test : int or None
        Score the first ``n_test`` test stays only (None: all of them).
    select_on_valid : bool
        Keep the latent ODE's weights from the epoch with the lowest error on the
        protocol's validation stays (their full windows, scored on the estimator's
        held-out values: the last 20% of each window and 10% of the rest), as t-PatchGNN's
        code selects its epoch; otherwise the last epoch's.
    epochs : int
        Training epochs of the neural models.
    seeds : sequence of int
        One fit per seed (the baselines are deterministic and run once).
    models : sequence of str
        Among ``locf, linear, mean, odernn, gru, attention, grudt``.
    estimator_defaults : bool
        Fit the latent ODE with the estimator's own defaults (only the column names and
        ``random_state`` given, as a user would), instead of the protocol's fixed-epoch settings
        (``DEFAULTS``, ``epochs``); ``epochs`` and ``select_on_valid`` are then ignored.
    params : dict
        Extra keyword arguments for the neural models.
    """
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    cols = list(VARIABLES)
    df = H.load_physionet(data_dir, n_stays)
    train_ids, valid_ids, test_ids = H.tpatchgnn_split(df["RecordID"].unique())
    lo, rng = H.minmax_fit(df[df["RecordID"].isin(np.concatenate([train_ids, valid_ids]))], cols)
    df = H.minmax_apply(df, cols, lo, rng)
    fit_ids = train_ids[:n_train] if n_train is not None else train_ids
    train = df[df["RecordID"].isin(fit_ids)]
    cases = {"test": H.forecast_frames(df, test_ids[:n_test])}
    if estimator_defaults:
        select_on_valid = False
        model_params = dict(params)
    else:
        if select_on_valid:
            params = {"patience": None, **params}  # train every epoch, keep the best one
        model_params = {**DEFAULTS, **params, "max_epochs": epochs}
    valid = df[df["RecordID"].isin(valid_ids)] if select_on_valid else None
    if score_valid:
        cases["valid"] = H.forecast_frames(df, valid_ids)
    settings = {"n_stays": int(df["RecordID"].nunique()), "n_train_split": len(train_ids),
                "n_valid": len(valid_ids), "n_test": len(test_ids[:n_test]), "n_fit": len(fit_ids),
                "epochs": None if estimator_defaults else epochs, "select_on_valid": bool(select_on_valid),
                "estimator_defaults": bool(estimator_defaults), "seeds": list(seeds), "params": model_params,
                "n_test_targets": int(cases["test"][1][cols].notna().to_numpy().sum()),
                "load_seconds": time.perf_counter() - t0}
    runs = []
    for model in models:
        for seed in (seeds[:1] if model in H.BASELINES else seeds):
            run = H.run_one(model, train, cases, cols, settings["params"], seed, valid=valid)
            runs.append(run)
            print(f"{model} seed {seed}: test MSE {run['test']['mse']:.4e} MAE {run['test']['mae']:.4e}"
                  f" ({run['total_seconds']:.0f} s)", flush=True)
            H.write_json(name, {"protocol": "physionet_forecast", "settings": settings, "runs": runs}, out_dir)
    rows = H.summarise(runs, "test")
    table = H.markdown_table(rows)
    print(table)
    result = {"protocol": "physionet_forecast", "settings": settings, "runs": runs, "summary": rows, "table": table}
    H.write_json(name, result, out_dir)
    return result


def _cli():
    p = H.physionet_parser(__doc__.split("\n\n")[0], "physionet_forecast")
    p.add_argument("--score-valid", action="store_true")
    p.add_argument("--n-test", type=int, default=None, help="score the first N test stays only")
    p.add_argument("--select-on-valid", action="store_true",
                   help="keep the latent ODE's weights of its best epoch on the validation stays")
    p.add_argument("--estimator-defaults", action="store_true",
                   help="fit the latent ODE with the estimator's defaults (ignores --epochs, --select-on-valid)")
    a = p.parse_args()
    main(a.data_dir, a.n_stays, a.n_train, a.epochs, H.parse_list(a.seeds, int), H.parse_list(a.models),
         a.score_valid, a.name, n_test=a.n_test, select_on_valid=a.select_on_valid,
         estimator_defaults=a.estimator_defaults, **H.model_options(a))

if __name__ == "__main__":
    _cli()
