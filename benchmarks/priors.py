"""Benchmark: CNF prior vs standard normal prior over z0 on periodic series from two frequency regimes.

Data: :func:`latentode.datasets.make_periodic` with a bimodal frequency distribution (each series draws
its frequency from one of two bands), split by series into train (80%) and test (20%). For each seed both
priors are fitted with the same settings and seed, without early stopping (``validation_fraction=0``) so
that both run the same number of epochs. Scored on the test series:

* held-out log-likelihood: :func:`latentode.evaluation.heldout_log_likelihood` (IWAE, K importance
  samples), per series and per observed value, in the data's units;
* imputation MSE: :func:`~latentode.datasets.periodic_task` ``"interpolation"``, the encoder sees
  ``n_observed`` of the points, the others are scored;
* forecast MSE: ``"extrapolation"``, the encoder sees the first half of each series, the second half is scored;
* fit seconds (wall clock and process CPU) and the prior's NFE per epoch (``history_[i]["nfe_prior"]``);
* prior samples in a band: z0 drawn from the fitted prior, decoded on a regular grid, its least-squares
  frequency within 0.05 of one of the two bands -- does the prior generate the regimes?

Run ``python benchmarks/priors.py --help``; results go to ``benchmarks/results/priors.json`` and a markdown
table is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from latentode import LatentODERegressor
from latentode.baselines import baseline_predict
from latentode.datasets import make_periodic, periodic_task
from latentode.evaluation import heldout_log_likelihood

BANDS = [(0.3, 0.45), (0.9, 1.05)]
PRIORS = ("normal", "cnf")
METRICS = [  # (key, column title, format)
    ("ll_series", "held-out log-lik / series (IWAE)", "{:.2f}"),
    ("ll_value", "held-out log-lik / value", "{:.3f}"),
    ("impute_mse", "imputation MSE", "{:.4f}"),
    ("forecast_mse", "forecast MSE", "{:.4f}"),
    ("fit_seconds", "fit seconds", "{:.1f}"),
    ("fit_cpu_seconds", "fit CPU seconds", "{:.1f}"),
    ("nfe_prior_epoch", "prior NFE / epoch", "{:.0f}"),
    ("prior_in_band", "prior samples in a band", "{:.2f}"),
]


def _mse(est, observed, target):
    """MSE of the predictive mean at the target rows that the encoder did not see (original units)."""
    pred = est.predict(observed, times=target[["unique_id", "time"]])
    merged = target.merge(observed[["unique_id", "time"]], how="left", on=["unique_id", "time"], indicator=True)
    unseen = (merged["_merge"] == "left_only").to_numpy()
    err = pred["y"].to_numpy() - target["y"].to_numpy()
    return float(np.mean(err[unseen] ** 2))


def dominant_frequency(t, y, freqs):
    """Least-squares frequency of each row of ``y`` (n, T) on the grid ``t`` (T,): the ``f`` in ``freqs``
    whose fit ``a sin(2 pi f t) + b cos(2 pi f t) + c`` leaves the smallest residual (works on windows
    shorter than a period, unlike an FFT peak)."""
    best, best_res = np.zeros(len(y)), np.full(len(y), np.inf)
    for f in freqs:
        A = np.stack([np.sin(2 * np.pi * f * t), np.cos(2 * np.pi * f * t), np.ones_like(t)], 1)   # (T, 3)
        coef, *_ = np.linalg.lstsq(A, y.T, rcond=None)                                            # (3, n)
        res = ((A @ coef - y.T) ** 2).sum(0)
        better = res < best_res
        best[better], best_res[better] = f, res[better]
    return best


def in_band(freq, bands=BANDS, tol=0.05):
    hit = np.zeros(len(freq), dtype=bool)
    for lo, hi in bands:
        hit |= (freq >= lo - tol) & (freq <= hi + tol)
    return hit


FREQS = np.arange(0.1, 1.6, 0.01)


def prior_in_band(est, t_max, n=500, n_grid=100, seed=0):
    """Share of ``n`` trajectories decoded from prior samples whose fitted frequency lies in a band."""
    model, gen = est.module_, torch.Generator().manual_seed(seed)
    t = np.linspace(0.0, t_max, n_grid)
    with torch.no_grad():
        z0 = model.prior.sample(n, gen)                                           # (n, latent)
        tq = torch.as_tensor(t / est.scaling_.time_scale, dtype=z0.dtype).expand(n, -1)
        y = model.decoder(z0.unsqueeze(0), tq, **est._solver())[0, :, :, 0].double().numpy()   # (n, grid)
    return float(in_band(dominant_frequency(t, y, FREQS)).mean())


def run_one(prior, train, test, seed, settings, prior_options, n_importance, n_observed):
    est = LatentODERegressor(prior=prior, prior_options=prior_options if prior == "cnf" else None,
                             random_state=seed, validation_fraction=0.0, device="cpu", **settings)
    start, cpu = time.perf_counter(), time.process_time()
    est.fit(train)
    fit_seconds, fit_cpu_seconds = time.perf_counter() - start, time.process_time() - cpu
    ll = heldout_log_likelihood(est, test, n_samples=n_importance, random_state=seed)
    n_values = test.groupby("unique_id")["y"].count().reindex(ll.index).to_numpy()
    obs_i, tgt_i = periodic_task(test, "interpolation", n_observed=n_observed, random_state=seed)
    obs_f, tgt_f = periodic_task(test, "extrapolation", n_observed=None, random_state=seed)
    return {
        "prior": prior, "seed": seed,
        "ll_series": float(ll.mean()), "ll_value": float(ll.sum() / n_values.sum()),
        "impute_mse": _mse(est, obs_i, tgt_i), "forecast_mse": _mse(est, obs_f, tgt_f),
        "fit_seconds": fit_seconds, "fit_cpu_seconds": fit_cpu_seconds, "epochs": len(est.history_),
        "nfe_prior_epoch": float(np.mean([h["nfe_prior"] for h in est.history_])),
        "nfe_forward_epoch": float(np.mean([h["nfe_forward"] for h in est.history_])),
        "prior_in_band": prior_in_band(est, float(test["time"].max()), seed=seed),
        "final_loss": float(est.history_[-1]["loss"]),
    }


def baseline_mse(test, seed, n_observed):
    """Per-series baselines on the same test points: linear interpolation (imputation), last value carried
    forward (forecast) and the mean of the observed values (both)."""
    out = {}
    for task, kinds in (("interpolation", ("linear", "mean")), ("extrapolation", ("locf", "mean"))):
        obs, tgt = periodic_task(test, task, n_observed=n_observed if task == "interpolation" else None,
                                 random_state=seed)
        merged = tgt.merge(obs[["unique_id", "time"]], how="left", on=["unique_id", "time"], indicator=True)
        unseen = (merged["_merge"] == "left_only").to_numpy()
        for kind in kinds:
            err = baseline_predict(obs, tgt[["unique_id", "time"]], kind)["y"].to_numpy() - tgt["y"].to_numpy()
            out[f"{task}_{kind}"] = float(np.mean(err[unseen] ** 2))
    return out


def table(rows, baselines=None) -> str:
    """Markdown: one row per (prior, seed), then mean ± std per prior, the CNF / normal fit-time ratio and
    the baselines. Columns missing from every row are left out."""
    metrics = [m for m in METRICS if any(m[0] in r for r in rows)]
    head = "| prior | seed | " + " | ".join(title for _, title, _ in metrics) + " |"
    lines = [head, "|" + "---|" * (len(metrics) + 2)]
    for r in rows:
        lines.append(f"| {r['prior']} | {r['seed']} | " + " | ".join(fmt.format(r[k]) for k, _, fmt in metrics)
                     + " |")
    for prior in PRIORS:
        sel = [r for r in rows if r["prior"] == prior]
        if not sel:
            continue
        cells = []
        for k, _, fmt in metrics:
            v = np.array([r[k] for r in sel])
            cells.append(f"{fmt.format(v.mean())} ± {fmt.format(v.std(ddof=1) if len(v) > 1 else 0.0)}")
        lines.append(f"| **{prior}** | mean ± std | " + " | ".join(cells) + " |")
    ratios = [c["fit_seconds"] / n["fit_seconds"] for c in rows if c["prior"] == "cnf"
              for n in rows if n["prior"] == "normal" and n["seed"] == c["seed"]]
    if ratios:
        lines.append("")
        lines.append(f"Fit-time ratio cnf / normal per seed: {', '.join(f'{x:.2f}' for x in ratios)} "
                     f"(mean {np.mean(ratios):.2f}).")
    if baselines:
        lines.append("")
        lines.append("Baselines on the same test points (mean ± std over seeds): " + "; ".join(
            f"{k.replace('_', ' ')} MSE {np.mean([b[k] for b in baselines]):.4f} ± "
            f"{np.std([b[k] for b in baselines], ddof=1) if len(baselines) > 1 else 0.0:.4f}"
            for k in baselines[0]) + ".")
    return "\n".join(lines)


def main(n_series=200, epochs=40, seeds=(0, 1, 2), *, n_points=100, t_max=2.0, latent_dim=6, encoder="gru",
         encoder_dim=20, width=32, n_layers=2, batch_size=50, lr=1e-2, kl_warmup=10,
         prior_options=None, n_importance=32, n_observed=50, out="benchmarks/results/priors.json",
         verbose=0):
    """Fit both priors per seed, print the markdown table, write the JSON (unless ``out`` is None).

    Returns the list of per-(prior, seed) result dicts.
    """
    torch.set_num_threads(1)
    prior_options = {"hidden_dim": 32, "n_layers": 2, "rtol": 1e-4, "atol": 1e-4} if prior_options is None \
        else prior_options
    settings = dict(latent_dim=latent_dim, encoder=encoder, encoder_dim=encoder_dim, width=width,
                    n_layers=n_layers, batch_size=batch_size, lr=lr, kl_warmup=kl_warmup, max_epochs=epochs,
                    verbose=verbose)
    warm = make_periodic(n_series=4, n_points=10, random_state=0)   # untimed: first-call costs out of the timings
    for prior in PRIORS:
        LatentODERegressor(prior=prior, max_epochs=1, validation_fraction=0.0, device="cpu", latent_dim=latent_dim,
                           width=8, encoder_dim=8, encoder=encoder).fit(warm)
    rows, baselines = [], []
    for seed in seeds:
        train, test = _split(n_series, n_points, t_max, seed)
        grid = test.groupby("unique_id")["time"].apply(np.asarray).iloc[0]   # make_periodic shares one grid
        data_in_band = float(in_band(dominant_frequency(grid, test["y"].to_numpy().reshape(-1, n_points),
                                                        FREQS)).mean())      # the classifier on real series
        baselines.append(baseline_mse(test, seed, n_observed))
        for prior in PRIORS:
            row = run_one(prior, train, test, seed, settings, prior_options, n_importance, n_observed)
            row["data_in_band"] = data_in_band
            rows.append(row)
            print(json.dumps(row), flush=True)
    print(table(rows, baselines))
    if out is not None:
        path = Path(out)
        path.parent.mkdir(parents=True, exist_ok=True)
        config = dict(n_series=n_series, n_points=n_points, t_max=t_max, epochs=epochs, seeds=list(seeds),
                      bands=BANDS, settings=settings, prior_options=prior_options, n_importance=n_importance,
                      n_observed=n_observed, torch=torch.__version__, threads=torch.get_num_threads(),
                      machine=f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
                      command="python " + " ".join(sys.argv))
        path.write_text(json.dumps({"config": config, "rows": rows, "baselines": baselines}, indent=1))
    return rows


def _split(n_series, n_points, t_max, seed):
    df = make_periodic(n_series=n_series, n_points=n_points, t_max=t_max, freq_range=BANDS, random_state=seed)
    n_train = int(0.8 * n_series)
    return df[df["unique_id"] < n_train], df[df["unique_id"] >= n_train].reset_index(drop=True)


def report(path="benchmarks/results/priors.json"):
    """Print the markdown table of a saved run (baselines recomputed if the file lacks them: no training)."""
    saved = json.loads(Path(path).read_text())
    cfg, baselines = saved["config"], saved.get("baselines")
    if baselines is None:
        baselines = [baseline_mse(_split(cfg["n_series"], cfg["n_points"], cfg.get("t_max", 2.0), seed)[1], seed,
                                  cfg["n_observed"]) for seed in cfg["seeds"]]
    text = table(saved["rows"], baselines)
    print(text)
    return text


def _parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n-series", type=int, default=200)
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--t-max", type=float, default=2.0)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--latent-dim", type=int, default=6)
    p.add_argument("--encoder", default="gru")
    p.add_argument("--n-importance", type=int, default=32)
    p.add_argument("--out", default="benchmarks/results/priors.json")
    p.add_argument("--verbose", type=int, default=0)
    p.add_argument("--report", metavar="JSON", help="only print the table of a saved run (no training)")
    return p.parse_args(argv)


if __name__ == "__main__":
    a = _parse()
    if a.report:
        report(a.report)
    else:
        main(a.n_series, a.epochs, tuple(a.seeds), t_max=a.t_max, latent_dim=a.latent_dim, encoder=a.encoder,
             n_importance=a.n_importance, out=a.out, verbose=a.verbose)
