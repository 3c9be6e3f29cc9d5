"""Shared protocol code of the benchmarks: splits, scaling, context/target frames, metrics,
model and baseline runners, cost measurement and result files.

Every protocol is expressed on long frames (one row per (series, time), NaN = not measured):
a *context* frame (what a model may read) and a *target* frame (rows to predict, with the
true values; only their observed entries are scored). The model under test only ever sees
``predict(context, times=target[[id, time]])``, so the estimator, the baselines and GRU-Δt
are scored by the same code.
"""

from __future__ import annotations

import argparse

import json
import os
import platform
import resource
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.model_selection import train_test_split

from latentode import LatentODERegressor
from latentode.baselines import GRUDeltaTRegressor, baseline_predict
from latentode.decoder import READOUTS

RESULTS = Path(__file__).resolve().parent / "results"
BASELINES = ("locf", "linear", "mean")
NEURAL = ("odernn", "gru", "attention", "grudt")
MODELS = BASELINES + NEURAL
#: Environment variable naming the data root, the folder that holds ``physionet2012/``.
DATA_ENV = "LATENTODE_DATA"
#: The default data root: ``../shared/data`` next to the repository (a checkout's sibling).
DEFAULT_DATA_ROOT = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def data_root() -> Path:
    """The folder holding the data sets: ``$LATENTODE_DATA`` if set, else ``../shared/data`` next to the repository."""
    env = os.environ.get(DATA_ENV, "").strip()
    return Path(env).expanduser() if env else DEFAULT_DATA_ROOT


def physionet_dir(data_dir=None) -> Path:
    """Where the PhysioNet 2012 files are: ``data_dir`` (``--data-dir``) if given, else ``data_root()/physionet2012``."""
    return Path(data_dir).expanduser() if data_dir is not None else data_root() / "physionet2012"


# ---------------------------------------------------------------------------- data and splits
def physionet_paths(data_dir=None) -> list[Path]:
    """The set-a and set-b archives (or directories) found in :func:`physionet_dir` of ``data_dir``."""
    root = physionet_dir(data_dir)
    found = [p for name in ("set-a", "set-b") for p in (root / f"{name}.tar.gz", root / name) if p.exists()]
    if not found:
        raise FileNotFoundError(f"no set-a/set-b archive or directory in {root} (pass --data-dir, or set "
                                f"{DATA_ENV} to the folder holding physionet2012/).")
    seen, paths = set(), []
    for p in found:  # an archive and its unpacked directory are the same set
        key = p.name.split(".")[0]
        if key not in seen:
            seen.add(key)
            paths.append(p)
    return paths


def load_physionet(data_dir=None, n_stays=None) -> pd.DataFrame:
    """set-a + set-b as one long frame (``RecordID``, ``Time`` in hours, 41 variables).

    ``n_stays`` keeps the first ``n_stays`` stays in RecordID order (a reduced run).
    """
    from latentode.datasets import load_physionet2012

    df = pd.concat([load_physionet2012(p) for p in physionet_paths(data_dir)], ignore_index=True)
    df = df.sort_values(["RecordID", "Time"], ignore_index=True)
    if n_stays is not None:
        keep = np.sort(df["RecordID"].unique())[:n_stays]
        df = df[df["RecordID"].isin(keep)].reset_index(drop=True)
    return df


def tpatchgnn_split(ids, random_state=42):
    """t-PatchGNN's 60/20/20 split of stay ids (Zhang et al. 2024, ``lib/parse_datasets.py``).

    ``train_test_split(ids, train_size=0.8, random_state=42, shuffle=True)`` gives the seen and
    test stays; the first 75% of the seen ones (unshuffled) train, the rest validate.
    The ids are sorted first, so the split does not depend on file order.

    Returns
    -------
    train, valid, test : numpy.ndarray of ids
    """
    ids = np.sort(np.asarray(ids))
    seen, test = train_test_split(ids, train_size=0.8, random_state=random_state, shuffle=True)
    train, valid = train_test_split(seen, train_size=0.75, random_state=random_state, shuffle=False)
    return np.asarray(train), np.asarray(valid), np.asarray(test)


def rubanova_split(ids, random_state=42):
    """Rubanova et al.'s 80/20 split: ``train_test_split(ids, train_size=0.8, random_state=42, shuffle=True)``."""
    train, test = train_test_split(np.sort(np.asarray(ids)), train_size=0.8, random_state=random_state,
                                   shuffle=True)
    return np.asarray(train), np.asarray(test)


def minmax_fit(df: pd.DataFrame, cols) -> tuple[np.ndarray, np.ndarray]:
    """Per-variable min and range of the observed values (range 1 where a variable is constant or absent)."""
    vals = df[list(cols)].to_numpy(dtype=float)
    lo = np.fmin.reduce(vals, axis=0, initial=np.inf)  # NaN-skipping min, inf if all NaN
    hi = np.fmax.reduce(vals, axis=0, initial=-np.inf)
    lo = np.where(np.isfinite(lo), lo, 0.0)
    rng = np.where(np.isfinite(hi) & (hi > lo), hi - lo, 1.0)
    return lo, rng


def minmax_apply(df: pd.DataFrame, cols, lo, rng) -> pd.DataFrame:
    out = df.copy()
    out[list(cols)] = (df[list(cols)].to_numpy(dtype=float) - lo) / rng
    return out


def forecast_frames(df: pd.DataFrame, ids, cut=24.0, end=48.0, id_col="RecordID", time_col="Time"):
    """Context = rows with ``Time < cut``; targets = rows with ``cut <= Time <= end`` of stays that
    have at least one context row (a stay with no context has nothing to condition on)."""
    sub = df[df[id_col].isin(ids)]
    context = sub[sub[time_col] < cut]
    targets = sub[(sub[time_col] >= cut) & (sub[time_col] <= end)]
    targets = targets[targets[id_col].isin(context[id_col].unique())]
    return context.reset_index(drop=True), targets.reset_index(drop=True)


def with_window_start(context: pd.DataFrame, start: float = 0.0, id_col="RecordID", time_col="Time") -> pd.DataFrame:
    """``context`` plus one empty row (every variable NaN) per series at ``start``.

    A series' earliest row is where latentode places its window start (z0). Periodic series share
    one clock from t = 0, and PhysioNet stays all
    begin at ICU admission (every stay has its descriptors at Time 0), and so does every training
    window; when a context drops the stay's first rows, the empty row keeps the window start
    where training had it, as the reference code's grid (which always holds 0) does.
    """
    empty = pd.DataFrame({id_col: context[id_col].unique()})
    empty[time_col] = float(start)
    out = pd.concat([empty, context], ignore_index=True)
    return out[list(context.columns)]


def interp_frames(df: pd.DataFrame, ids, fraction=0.5, random_state=0, id_col="RecordID"):
    """Per stay, a seeded random ``ceil(fraction * n)`` of its ``n`` observation times are the
    context and the others the targets (stays with one row only give context)."""
    sub = df[df[id_col].isin(ids)].reset_index(drop=True)
    rng = np.random.default_rng(random_state)
    codes, _ = pd.factorize(sub[id_col])
    n = np.bincount(codes)
    keys = rng.random(len(sub))
    order = np.lexsort((keys, codes))
    rank = np.empty(len(sub), dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(n)[:-1]])
    rank[order] = np.arange(len(sub)) - np.repeat(starts, n)
    seen = rank < np.ceil(fraction * n[codes])
    return sub[seen].reset_index(drop=True), sub[~seen].reset_index(drop=True)


# ---------------------------------------------------------------------------- metric
def masked_errors(truth: pd.DataFrame, pred: pd.DataFrame, cols, groups=None) -> dict:
    """Errors on the observed entries of ``truth`` (rows aligned with ``pred``).

    Parameters
    ----------
    groups : array-like or None
        Series id of each row; adds ``mse_per_series``.

    Returns
    -------
    dict
        ``mse``, ``mae``: per-variable means over all scored values, then the mean over
        the variables with at least one value (t-PatchGNN); ``mse_pooled``, ``mae_pooled``:
        the mean over all scored values; ``n_values``; ``per_variable_mse`` (name -> value).
        With ``groups``, ``mse_per_series``: the MSE of each (series, variable) pair, 0 for
        a pair with nothing scored, averaged over all the variables of a series and then
        over the series with something scored -- the averaging of Rubanova et al.'s code
        (``compute_masked_likelihood`` with ``mse``), the one its published PhysioNet
        figures use. Sparse series pull it far below the pooled MSE.
        All NaN (``n_values=0``) when ``truth`` has no observed value.
    """
    y = truth[list(cols)].to_numpy(dtype=float)
    yhat = pred[list(cols)].to_numpy(dtype=float)
    if y.shape != yhat.shape:
        raise ValueError(f"truth has shape {y.shape} but pred {yhat.shape}.")
    m = ~np.isnan(y)
    if not m.any():  # only at toy sizes: report NaN rather than fail the whole run
        nan = float("nan")
        out = {"mse": nan, "mae": nan, "mse_pooled": nan, "mae_pooled": nan, "n_values": 0,
               "per_variable_mse": {}}
        return out if groups is None else {**out, "mse_per_series": nan}
    err = np.where(m, yhat - np.where(m, y, 0.0), 0.0)
    count = m.sum(axis=0)
    has = count > 0
    se, ae = (err ** 2).sum(axis=0), np.abs(err).sum(axis=0)
    per_mse = se[has] / count[has]
    extra = {}
    if groups is not None:
        codes, _ = pd.factorize(np.asarray(groups))
        g_se = np.zeros((codes.max() + 1, y.shape[1]))
        g_n = np.zeros_like(g_se)
        np.add.at(g_se, codes, err ** 2)
        np.add.at(g_n, codes, m)
        pair = np.divide(g_se, g_n, out=np.zeros_like(g_se), where=g_n > 0)
        scored = g_n.sum(axis=1) > 0
        extra["mse_per_series"] = float(pair[scored].mean(axis=1).mean())
    return {**extra,
        "mse": float(per_mse.mean()), "mae": float((ae[has] / count[has]).mean()),
        "mse_pooled": float(se.sum() / count.sum()), "mae_pooled": float(ae.sum() / count.sum()),
        "n_values": int(count.sum()),
        "per_variable_mse": {str(c): float(v) for c, v in zip(np.asarray(cols)[has], per_mse)},
    }


# ---------------------------------------------------------------------------- runners
def machine() -> dict:
    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "note": "2-core CPU (sandbox), shared with other jobs"}


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (MB; Linux reports ru_maxrss in KB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def make_model(name: str, params: dict, seed: int, id_col="RecordID", time_col="Time"):
    """A fresh neural model: ``"odernn"``/``"gru"``/``"attention"`` (LatentODERegressor encoders) or ``"grudt"``."""
    if name in ("odernn", "gru", "attention"):
        return LatentODERegressor(id_col=id_col, time_col=time_col, encoder=name, random_state=seed, **params)
    if name == "grudt":
        keep = {k: v for k, v in params.items() if k in GRUDeltaTRegressor().get_params()}
        return GRUDeltaTRegressor(id_col=id_col, time_col=time_col, random_state=seed, **keep)
    raise ValueError(f"model {name!r} is not one of {list(MODELS)}.")


def run_one(name: str, train: pd.DataFrame, cases: dict, cols, params: dict, seed: int, id_col="RecordID",
            time_col="Time", valid: pd.DataFrame | None = None) -> dict:
    """Fit ``name`` on ``train`` (not for the baselines) and score it on every case.

    Parameters
    ----------
    cases : dict name -> (context, targets)
        Each scored with :func:`masked_errors` on the targets' observed entries.
    valid : DataFrame or None
        Validation series for the latent ODE (``fit(validation_data=...)``): the weights of
        its best validation epoch are kept. Other models ignore it.

    Returns
    -------
    dict with the metrics per case and the cost: wall seconds (fit, per epoch, predict, total),
    CPU seconds of this process (``fit_cpu_seconds``, ``cpu_seconds``: the honest cost when the
    machine is shared), epochs and the peak RSS of the process so far (data included).
    """
    torch.set_num_threads(1)
    t0, c0 = time.perf_counter(), time.process_time()
    out = {"model": name, "seed": seed}
    cols = list(cols)
    vals = train[cols].to_numpy(dtype=float)
    count = (~np.isnan(vals)).sum(axis=0)
    mean = np.nansum(vals, axis=0) / np.maximum(count, 1)  # 0 for a variable never observed in training
    if name in BASELINES:
        predict = lambda ctx, q: baseline_predict(ctx, q, name, id_col=id_col, time_col=time_col,  # noqa: E731
                                                  value_cols=cols, fallback=mean)
    else:
        # the models need every variable observed in training (only tiny subsets lack some)
        fitted = [c for c in cols if train[c].notna().any()]
        model = make_model(name, params, seed, id_col, time_col)
        keep = [id_col, time_col, *fitted]
        if valid is not None and isinstance(model, LatentODERegressor):
            model.fit(train[keep], validation_data=valid[keep])
        else:
            model.fit(train[keep])
        hist = model.history_
        out.update(fit_seconds=time.perf_counter() - t0, fit_cpu_seconds=time.process_time() - c0,
                   epochs=len(hist), seconds_per_epoch=float(np.mean([h["train_seconds"] for h in hist])),
                   final_loss=float(hist[-1]["loss"]), steps_per_epoch=int(hist[-1].get("steps", 0)),
                   history=[{k: h[k] for k in ("epoch", "loss", "mse", "kl", "valid_mse", "grad_norm",
                                                  "grad_norm_max", "lr", "train_seconds") if k in h} for h in hist])

        def predict(ctx, q):
            ctx = ctx[[id_col, time_col, *fitted]]
            # rows with nothing observed are dropped, except each series' earliest row: it marks the
            # window start (see with_window_start)
            first = ctx[time_col].eq(ctx.groupby(id_col)[time_col].transform("min"))
            ctx = ctx[ctx[fitted].notna().any(axis=1) | first]
            pred = model.predict(ctx, times=q)
            for j, c in enumerate(cols):
                if c not in fitted:
                    pred[c] = mean[j]
            return pred
    t1 = time.perf_counter()
    for case, (context, targets) in cases.items():
        pred = predict(context, targets[[id_col, time_col]])
        out[case] = masked_errors(targets, pred, cols, groups=targets[id_col].to_numpy())
    out.update(predict_seconds=time.perf_counter() - t1, total_seconds=time.perf_counter() - t0,
               cpu_seconds=time.process_time() - c0, peak_rss_mb=peak_rss_mb())
    return out


# ---------------------------------------------------------------------------- reporting
def summarise(runs: list[dict], case: str, keys=("mse", "mae")) -> list[dict]:
    """Mean ± std over seeds of each model's metrics on ``case`` and its cost."""
    rows = []
    for name in dict.fromkeys(r["model"] for r in runs):
        rs = [r for r in runs if r["model"] == name and case in r]
        if not rs:
            continue
        row = {"model": name, "seeds": len(rs)}
        for k in keys:
            v = np.array([r[case][k] for r in rs])
            row[k] = (float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else float("nan"))
        for k in ("seconds_per_epoch", "epochs", "fit_seconds", "total_seconds", "cpu_seconds", "peak_rss_mb"):
            if k in rs[0]:
                row[k] = float(np.mean([r[k] for r in rs]))
        rows.append(row)
    return rows


def markdown_table(rows: list[dict], keys=("mse", "mae")) -> str:
    head = ["model", "seeds", *[k.upper() for k in keys], "s/epoch", "epochs", "total s", "CPU s", "peak RSS MB"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["model"], str(r["seeds"])]
        for k in keys:
            mu, sd = r[k]
            cells.append(f"{mu:.4e}" + (f" ± {sd:.1e}" if np.isfinite(sd) else ""))
        for k, fmt in (("seconds_per_epoch", "{:.1f}"), ("epochs", "{:.0f}"), ("total_seconds", "{:.0f}"),
                       ("cpu_seconds", "{:.0f}"), ("peak_rss_mb", "{:.0f}")):
            cells.append(fmt.format(r[k]) if k in r else "–")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_json(name: str, payload: dict, out_dir=None) -> Path:
    """Write ``payload`` (plus the machine description and the command line) to ``<out_dir>/<name>.json``."""
    out_dir = Path(out_dir) if out_dir is not None else RESULTS
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.json"
    command = "python " + " ".join(sys.argv) if sys.argv and sys.argv[0].endswith(".py") else None
    path.write_text(json.dumps({**payload, "machine": machine(), "command": command}, indent=1, default=float))
    return path


def parse_list(text: str, cast=str) -> list:
    return [cast(v) for v in text.split(",") if v]


def table_from_json(path, case="test", keys=("mse", "mae"), task=None) -> str:
    """The markdown table of a (possibly partial) result file, e.g. of a run stopped early.

    ``path`` may list several files separated by commas (seeds run as separate processes):
    their runs are summarised together."""
    runs = [r for p in str(path).split(",") if p for r in json.loads(Path(p).read_text())["runs"]]
    if task is not None:
        runs = [r for r in runs if r.get("task") == task]
    return markdown_table(summarise(runs, case, keys), keys)


def physionet_parser(description: str, name: str) -> argparse.ArgumentParser:
    """Command-line options shared by the PhysioNet protocols."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--data-dir", default=None,
                   help=f"folder of set-a/set-b (default: ${DATA_ENV}/physionet2012, else ../shared/data/physionet2012 "
                        "next to the repository)")
    p.add_argument("--n-stays", type=int, default=None)
    p.add_argument("--n-train", type=int, default=None)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--name", default=name)
    add_model_options(p)
    return p


def add_model_options(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Options of the latent ODE that the benchmarks vary; :func:`model_options` collects them."""
    p.add_argument("--noise-std", type=float, default=None,
                   help="fixed observation noise of the latent ODE (default: learned)")
    p.add_argument("--adjoint", choices=["true", "false"], default=None,
                   help="odeint_adjoint (true, the estimator's default) or backprop through the solver")
    p.add_argument("--mask-fraction", type=float, default=None)
    p.add_argument("--forecast-fraction", type=float, default=None)
    p.add_argument("--anchor", choices=["origin", "last"], default=None,
                   help="where z0 sits (the estimator's default: origin)")
    p.add_argument("--center", choices=["last", "mean", "interp"], default=None,
                   help="per-series reference of the read-out (the estimator's default: none)")
    p.add_argument("--loss-on", choices=["all", "hidden"], default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--lr-decay", type=float, default=None, help="per-step learning-rate decay (reference: 0.999)")
    p.add_argument("--max-grad-norm", type=float, default=None, help="clip each step's gradient to this L2 norm")
    p.add_argument("--readout", choices=["auto", *READOUTS], default=None,
                   help="read-out of the latent state (the estimator's default: linear)")
    p.add_argument("--latent-dim", type=int, default=None)
    p.add_argument("--variable-weight", choices=["balanced"], default=None,
                   help="balanced: every variable weighs the same in the training likelihood")
    return p


def model_options(args: argparse.Namespace) -> dict:
    """The keyword arguments for the latent ODE given on the command line (only those set)."""
    out = {}
    if args.noise_std is not None:
        out["noise_std"] = args.noise_std
    if args.adjoint is not None:
        out["adjoint"] = args.adjoint == "true"
    for key in ("mask_fraction", "forecast_fraction", "anchor", "center", "loss_on", "lr", "lr_decay", "max_grad_norm",
                "variable_weight", "readout", "latent_dim"):
        if getattr(args, key) is not None:
            out[key] = getattr(args, key)
    return out


if __name__ == "__main__":  # python benchmarks/_harness.py RESULT.json[,RESULT.json...] [case] [key,key] [task]
    import sys

    args = sys.argv[1:]
    print(table_from_json(args[0], *(args[1:2] or ["test"]), *(parse_list(a) for a in args[2:3]), *args[3:4]))
