"""BENCHMARKS.md, and the README's results blocks, generated from the result files in benchmarks/results/.

Every figure in BENCHMARKS.md comes from a small JSON file that a benchmark program wrote (committed under
``benchmarks/results/``); the text around the tables is fixed here. ``tests/test_report.py`` checks that
the committed BENCHMARKS.md and README blocks equal what this script generates, so a figure cannot drift from
the run that produced it.

Run: ``python benchmarks/report.py`` (rewrites BENCHMARKS.md and the README's generated blocks), ``--check``
(exit 1 if either differs), ``--results DIR`` (read the result files from another folder).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the benchmark programs whose tables are reused here
import defaults  # noqa: E402
import priors as P  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
BENCHMARKS = ROOT / "BENCHMARKS.md"
README = ROOT / "README.md"
DEFAULTS_FILES = ("defaults-m.json", "defaults-periodic.json", "defaults-budget-m.json", "defaults-l.json",
                  "defaults-budget-l.json", "defaults-co2.json", "defaults-long.json")

#: the rows of the reduced PhysioNet forecasting ablation: (change from the defaults, model, one file per seed).
#: The defaults choose readout="per_variable" on PhysioNet, so the runs that spell it out are the defaults' runs.
ABLATION = (
    ('none (the defaults; `readout="auto"` chose `"per_variable"`)', "odernn",
     ("ablation_per_variable_s0.json", "ablation_per_variable_s1.json", "ablation_per_variable_s2.json")),
    ('`readout="linear"`', "odernn", ("abl_base_s0.json", "abl_base_s1.json", "abl_base_s2.json")),
    ('`encoder="attention"`', "attention",
     ("ablation_attention_per_variable_s0.json", "ablation_attention_per_variable_s1.json",
      "ablation_attention_per_variable_s2.json")),
    ('`encoder="attention", readout="linear"`', "attention", ("ablation_attention_s0.json",
                                                              "ablation_attention_s1.json",
                                                              "ablation_attention_s2.json")),
    ('`readout="linear", variable_weight="balanced"` (every variable weighs the same, as the metric weighs them)',
     "odernn", ("ablation_balanced_s0.json", "ablation_balanced_s1.json")),
    ('`readout="linear", loss_on="hidden", forecast_fraction=1` (a forecasting objective: only hidden values '
     'scored, every series cut)', "odernn", ("ablation_forecast_objective_s0.json",
                                             "ablation_forecast_objective_s1.json")),
)

#: the files each section reads, in the order of BENCHMARKS.md
FILES = {
    "defaults": DEFAULTS_FILES,
    "physionet_forecast": ("forecast_defaults.json", "forecast_grudt.json", "forecast_linear.json",
                           "forecast_attention_per_variable.json", "forecast_per_variable.json"),
    "physionet_ablation": ("ablation_baselines.json",) + tuple(f for _, _, files in ABLATION for f in files),
    "physionet_interp": ("interp_defaults.json", "interp_center.json", "interp_linear.json"),
    "periodic": ("periodic_defaults.json", "periodic_reference_interp.json", "periodic_reference_extrap.json",
                 "periodic_per_variable_extrap.json"),
    "priors": ("priors.json",),
    "calibration": ("bands.json",),
    "speed": ("speed.json", "reference_speed.json"),
    "scaling": ("scaling.json", "threads.json", "loop.json", "streaming.json"),
}


class Results:
    """Reads the JSON result files of one folder."""

    def __init__(self, folder: Path = RESULTS):
        self.folder = Path(folder)

    def __call__(self, name: str) -> dict:
        path = self.folder / name
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing: run the command its section of BENCHMARKS.md gives.")
        return json.loads(path.read_text())


# ------------------------------------------------------------------------------------------------ helpers
def _pm(values, fmt="{:.3e}") -> str:
    """``mean ± std`` over seeds (the mean alone for one seed)."""
    v = np.asarray(values, dtype=float)
    if len(v) == 1:
        return fmt.format(v[0])
    return f"{fmt.format(v.mean())} ± {fmt.format(v.std(ddof=1))}"


def _cmd(d: dict) -> str:
    return f"`{d['command']}`"


def _machine(d: dict) -> str:
    m = d.get("machine")
    if isinstance(m, dict):
        return f"{m.get('processor', '')}, {m.get('cpu_count')} cores, torch {m.get('torch')}, {m.get('platform')}"
    return str(m)


def _runs(d: dict | None, model: str, task: str | None = None) -> list[dict]:
    if d is None:
        return []
    return [r for r in d["runs"] if r["model"] == model and (task is None or r.get("task") == task)]


def _cost(runs, per_step=False) -> str:
    """The cells ``epochs | fit CPU s | CPU s per epoch (or per optimiser step)``; dashes for the baselines."""
    if "fit_cpu_seconds" not in runs[0]:
        return "– | – | –"
    return (f"{_mean(runs, 'epochs'):.0f} | {_mean(runs, 'fit_cpu_seconds'):.0f} | "
            f"{_cpu_each(runs, per_step):.{3 if per_step else 1}f}")


def _cpu_each(runs, per_step=False) -> float:
    """Mean fit CPU seconds per epoch (or per optimiser step) over the runs."""
    unit = [r["epochs"] * (r["steps_per_epoch"] if per_step else 1) for r in runs]
    return float(np.mean([r["fit_cpu_seconds"] / u for r, u in zip(runs, unit)]))


def _mean(runs, key):
    return float(np.mean([r[key] for r in runs]))


# ------------------------------------------------------------------------------------------------ sections
def intro(R: Results) -> str:
    return "\n".join([
        "# Benchmarks",
        "",
        "Generated by `python benchmarks/report.py` from the result files in `benchmarks/results/`; each section "
        "gives the command that wrote its files. Do not edit this file by hand: `tests/test_report.py` fails when "
        "it differs from what the script generates.",
        "",
        "Every run here used the 2-core CPU development machine (x86_64, torch CPU build, one torch thread per "
        "process), usually with two benchmark processes side by side. `CPU s` is the process's CPU time, the "
        "fairer cost on a shared machine; wall seconds drift from run to run. `peak RSS` includes the loaded data. "
        "No GPU was available for these runs.",
        "",
        "Sections: [defaults scoreboard](#defaults-scoreboard), [PhysioNet forecasting](#physionet-forecasting), "
        "[PhysioNet interpolation](#physionet-interpolation), [periodic task](#periodic-task), "
        "[CNF prior](#cnf-prior-against-the-normal-prior), [calibration](#calibration), "
        "[speed and memory](#speed-and-memory-against-the-reference-implementation), "
        "[scaling](#scaling).",
    ])


def defaults_section(R: Results) -> str:
    rows, files = [], []
    for name in DEFAULTS_FILES:
        d = R(name)
        rows += d["rows"]
        files.append(d)
    m = files[0]["machine"]
    text = """## Defaults scoreboard

`LatentODERegressor(id_col=..., time_col=..., random_state=seed)` and nothing else, on eleven datasets of
different character (1 to 41 variables, NaN rates 10-70% per variable, 5 to 2,284 observations per series, float
and datetime times, one to 300 series, noise from 1% to a real sensor's), three seeds each. One frame per dataset
and seed: each series' last 25% is cut off and forecast (CO2: the last two years), and 20% of the observed values
before the cut are hidden and imputed; the model is fitted on what remains, exactly as the README's first example.
Scores are pooled MSEs on the observed (noisy) values, each variable in units of its standard deviation; `ratio`
is the model's MSE over the best of per-series linear interpolation, last value carried forward and the series
mean (for CO2 also the seasonal naive, the value one year earlier). `plateau`: the best validation MSE stayed above
0.9x the first epoch's; `max jump`: the largest ratio of consecutive validation MSEs after the 10-epoch KL warm-up.
Datasets: `quickstart` (the example's generator), `periodic` (Rubanova's sines, 50 of 100 points observed),
`oscillator` (harmonic, 3-5 periods), `damped_oscillator` (position only), `lotka_volterra`, `van_der_pol`
(relaxation, datetimes), `pk` (two-compartment drug levels, 5-12 points), `sensors20` (20 mixed views of a 3-d
state), `long_oscillator` (two series of 400-500 points over 40-50 periods: windows), `physionet` (300 random stays
of set-a, 41 variables), `co2` (Mauna Loa weekly CO2 from statsmodels, with its missing weeks; windows). The
generators are in `latentode.datasets.dynamics`; the protocol in `latentode.scoring` and `benchmarks/defaults.py`.
CO2 needs `pip install -e ".[bench]"`. `python benchmarks/defaults.py` alone runs every dataset with seeds 0, 1
and 2 in one process; the files here came from these commands, two to four benchmark processes side by side
at a time on the 2 cores (`physionet` beside two or three others; CPU seconds grow with the load):"""
    cmds = "\n".join(f"- `{d['command']}`" for d in files)
    flags = [defaults.curve_flags(r["valid_mse"]) for r in rows]
    plateau = sorted({f"{r['dataset']} seed {r['seed']}" for r, f in zip(rows, flags) if f["plateau"]})
    jump = max(f["max_jump"] for f in flags if np.isfinite(f["max_jump"]))
    curves = (f"Fits that ended on the initial plateau: {', '.join(plateau) if plateau else 'none'}. The largest "
              f"jump between consecutive validation MSEs after the warm-up: {jump:.2f}x.")
    return "\n\n".join([text, cmds, defaults.summary(rows), curves,
                        f"Machine: {m['platform']}, {m['cpu_count']} cores, torch {m['torch']}, one thread per "
                        "process. Per dataset and seed:", defaults.table(rows)])


PUBLISHED_FORECAST = [  # (model, MSE, MAE or None); Zhang et al. (2024), t-PatchGNN, Table 2, PhysioNet
    ("GraFITi", 4.89e-3, None), ("t-PatchGNN", 4.98e-3, None), ("GRU-D", 5.59e-3, None),
    ("Latent ODE", 6.05e-3, 4.23e-2), ("mTAN", 6.23e-3, None)]


def physionet_forecast(R: Results) -> str:
    dflt, grudt, lin, apv, pv = (R(n) for n in FILES["physionet_forecast"])  # pv: the defaults' fit, spelled out
    s = dflt["settings"]
    locf = _runs(dflt, "locf")[0]["test"]
    head = f"""## PhysioNet forecasting

Protocol of t-PatchGNN (Zhang et al., ICML 2024), in `benchmarks/physionet_forecast.py`: set-a + set-b
({s['n_stays']:,} stays), stay ids split 60/20/20 ({s['n_train_split']:,} train, {s['n_valid']:,} validation,
{s['n_test']:,} test), the 41 variables min-max scaled on train + validation. A test stay's rows with `Time < 24` h
are the context; every observed value in 24-48 h is a target ({s['n_test_targets']:,} values). Metric: the squared
(absolute) error averaged per variable over the test set, then over the variables (t-PatchGNN's `evaluation()`),
on the scaled values. The published figures used sets a, b and c (12,000 stays) and about 100 epochs. `linear`
equals `locf` here: linear interpolation is constant beyond the last observation.

Rows: the estimator's defaults, as a user calls it (`LatentODERegressor(id_col="RecordID", time_col="Time",
random_state=seed)`: it holds out 10% of the training stays for early stopping and for its noise and gate, and its
`readout="auto"` chooses `"per_variable"` on these sparse variables, so a command's `--readout per_variable` below
repeats the default); the same with `readout="linear"`, the read-out it chooses for dense data, and with
`encoder="attention"`; GRU-Δt (`GRUDeltaTRegressor`, hidden 40, width 50, the protocol's fixed epochs); the simple baselines
(the training mean where a stay never observed a variable)."""
    lines = ["| model | seeds | MSE | MAE | MSE / last value | epochs | fit CPU s | CPU s / epoch | peak RSS MB |",
             "|---|---|---|---|---|---|---|---|---|"]

    d_runs = _runs(dflt, "odernn")
    for label, runs in (("latentode, defaults", d_runs),
                        ('latentode, defaults + `readout="linear"`', _runs(lin, "odernn")),
                        ('latentode, defaults + `encoder="attention"`', _runs(apv, "attention")),
                        ("GRU-Δt", _runs(grudt, "grudt")),
                        ("last value carried forward", _runs(dflt, "locf")), ("series mean", _runs(dflt, "mean"))):
        mse = [r["test"]["mse"] for r in runs]
        lines.append(f"| {label} | {len(runs)} | {_pm(mse)} | {_pm([r['test']['mae'] for r in runs])} | "
                     f"{np.mean(mse) / locf['mse']:.3f} | {_cost(runs)} | {_mean(runs, 'peak_rss_mb'):.0f} |")
    for name, mse, mae in PUBLISHED_FORECAST:
        lines.append(f"| published {name} (12,000 stays) | – | {mse:.2e} | {f'{mae:.2e}' if mae else '–'} | "
                     f"{mse / locf['mse']:.3f} | – | – | – | – |")
    dm = np.mean([r["test"]["mse"] for r in d_runs])
    best = min(PUBLISHED_FORECAST, key=lambda x: x[1])
    lode = next(x for x in PUBLISHED_FORECAST if x[0] == "Latent ODE")
    tail = (f"The defaults' MSE is {100 * (1 - dm / locf['mse']):.1f}% below last value carried forward's, "
            f"{100 * abs(1 - dm / lode[1]):.1f}% {'below' if dm < lode[1] else 'above'} the published Latent ODE's and "
            f"{100 * (dm / best[1] - 1):.1f}% above the best published model's ({best[0]}, {best[1]:.2e}).")
    lm = np.mean([r["test"]["mse"] for r in _runs(lin, "odernn")])
    pv_cpu = _mean(_runs(pv, "odernn"), "fit_cpu_seconds")
    same = np.isclose(np.mean([r["test"]["mse"] for r in _runs(pv, "odernn")]), dm, rtol=1e-12, atol=0)
    am = np.mean([r["test"]["mse"] for r in _runs(apv, "attention")])
    tpg = next(x for x in PUBLISHED_FORECAST if x[0] == "t-PatchGNN")
    tail += (f" It is {100 * (dm / tpg[1] - 1):.1f}% above t-PatchGNN's ({tpg[1]:.2e}). With `readout=\"linear\"` "
             f"the MSE is {100 * (lm / dm - 1):+.1f}% against the defaults'; with `encoder=\"attention\"` "
             f"{100 * (am / dm - 1):+.1f}% (one seed each).")
    if same:  # the defaults' fit also stored with --readout per_variable, timed beside less load
        tail += (" The defaults' run shared the 2 cores with two or three other benchmark processes, the others with "
                 "at most one, so its CPU seconds are inflated by the load: the same fit, bit-identical, took "
                 f"{pv_cpu:,.0f} CPU s beside one other process ({_cmd(pv)}), and `encoder=\"attention\"` "
                 f"{_mean(_runs(apv, 'attention'), 'fit_cpu_seconds') / pv_cpu:.2f}x that.")
    cmds = "Commands (each wrote the file named after `--name`):\n\n" + "\n".join(
        f"- {_cmd(d)}" for d in (dflt, lin, apv, grudt))
    return "\n\n".join([head, "\n".join(lines), tail, cmds, f"Machine: {_machine(dflt)}."])


def physionet_ablation(R: Results) -> str:
    base = R("ablation_baselines.json")
    s = base["settings"]
    full = R(FILES["physionet_forecast"][0])["settings"]["n_train_split"]
    locf = _runs(base, "locf")[0]["test"]
    head = f"""### Ablation on a reduced set

The forecasting protocol above on the first {s['n_stays']:,} stays by RecordID ({s['n_train_split']:,} train,
{s['n_test']:,} test; the 60/20/20 split and the scaling as above), each row the estimator's defaults with the
row's changes (`benchmarks/physionet_forecast.py --n-stays {s['n_stays']} --estimator-defaults` plus the row's options),
one fit per seed. **Reduced:** {s['n_train_split']:,} of the full {full:,} training stays, so each fit takes
{100 * s['n_train_split'] / full:.0f}% of the optimiser steps of a full one; a change that needs more data or steps to
pay off may lose here.
"MSE / defaults" divides by the defaults' mean MSE over the same seeds."""
    rows = [(label, [r for f in files for r in _runs(R(f), model)]) for label, model, files in ABLATION]
    ref = np.mean([r["test"]["mse"] for r in rows[0][1]])
    lines = ["| change | seeds | MSE | MAE | MSE / defaults | MSE / last value | epochs | fit CPU s | CPU s / epoch "
             "| CPU s / step | peak RSS MB |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for label, runs in rows:
        mse = [r["test"]["mse"] for r in runs]
        lines.append(f"| {label} | {len(runs)} | {_pm(mse)} | {_pm([r['test']['mae'] for r in runs])} | "
                     f"{np.mean(mse) / ref:.3f} | {np.mean(mse) / locf['mse']:.3f} | {_cost(runs)} | "
                     f"{_cpu_each(runs, per_step=True):.3f} | "
                     f"{_mean(runs, 'peak_rss_mb'):.0f} |")
    for label, model in (("last value carried forward", "locf"), ("series mean", "mean")):
        r = _runs(base, model)[0]["test"]
        lines.append(f"| baseline: {label} | – | {r['mse']:.3e} | {r['mae']:.3e} | {r['mse'] / ref:.3f} | "
                     f"{r['mse'] / locf['mse']:.3f} | – | – | – | – | – |")
    cmds = "Commands (a row's first file; its other files differ in the seed and `--name`):\n\n" + "\n".join(
        f"- {_cmd(R(f))}" for f in ("ablation_baselines.json", *(fs[0] for _, _, fs in ABLATION)))
    return "\n\n".join([head, "\n".join(lines), cmds, f"Machine: {_machine(base)}."])


def physionet_interp(R: Results) -> str:
    d, cen, lin_run = (R(n) for n in FILES["physionet_interp"])
    s = d["settings"]
    head = f"""## PhysioNet interpolation

Protocol of Rubanova et al. (2019), in `benchmarks/physionet_interp.py`: set-a + set-b ({s['n_stays']:,} stays),
times rounded to the minute, min-max scaling, an 80/20 split of the stays ({s['n_train_split']:,} train,
{s['n_test']:,} test){_reduced(s)}. A random half of each test stay's observed values is the context; `held-out` scores the
other half, `all points` every observed value. Each test context also carries an empty row at Time 0, the stays'
shared window start. Rows: the estimator's defaults (`LatentODERegressor(id_col="RecordID", time_col="Time",
random_state=seed)`; its `readout="auto"` chooses `"per_variable"` here), the defaults with `readout="linear"`,
alone and with `center="interp"` (the read-out added to the linear interpolation of what the encoder sees), and the
per-stay baselines (the training mean where a
stay never observed a variable).
MSEs are pooled over every scored value; "per-stay averaging" is the averaging of Rubanova et al.'s code (each
stay's per-variable MSE, 0 where nothing is scored, averaged over variables and then stays), the one their
published figure uses."""
    lin = _runs(d, "linear")[0]
    lines = ["| model | seeds | held-out MSE | held-out / linear | all points MSE | all points, per-stay averaging | "
             "epochs | fit CPU s | CPU s / epoch | peak RSS MB |", "|---|---|---|---|---|---|---|---|---|---|"]
    for label, src, model in (("latentode, defaults", d, "odernn"),
                              ('latentode, defaults + `readout="linear"`', lin_run, "odernn"),
                              ('latentode, defaults + `readout="linear", center="interp"`', cen, "odernn"),
                              ("linear interpolation", d, "linear"), ("last value carried forward", d, "locf"),
                              ("series mean", d, "mean")):
        runs = _runs(src, model)
        if not runs:
            continue
        h = [r["heldout"]["mse_pooled"] for r in runs]
        cost = _cost(runs)
        lines.append(f"| {label} | {len(runs)} | {_pm(h)} | {np.mean(h) / lin['heldout']['mse_pooled']:.3f} | "
                     f"{_pm([r['all']['mse_pooled'] for r in runs])} | "
                     f"{_pm([r['all']['mse_per_series'] for r in runs])} | {cost} | {_mean(runs, 'peak_rss_mb'):.0f} |")
    lines.append("| published Latent ODE (ODE-RNN encoder; Rubanova et al. 2019) | – | – | – | – | 2.118e-03 | – | – | "
                 "– | – |")
    cmds = "Commands:\n\n" + "\n".join(f"- {_cmd(x)}" for x in (d, lin_run, cen))
    return "\n\n".join([head, "\n".join(lines), cmds, f"Machine: {_machine(d)}."])


def _reduced(s: dict) -> str:
    """The reduced training set of a PhysioNet run, in words ("" when it used every training stay)."""
    if s["n_fit"] == s["n_train_split"]:
        return ""
    return (f"; **reduced:** the models fit on the first {s['n_fit']:,} training stays only (the forecasting section "
            "gives what a default fit on every training stay costs), scored on the full test set")


def periodic(R: Results) -> str:
    dflt, ref = _periodic_files(R)
    pv = R(FILES["periodic"][3])
    s = dflt["settings"]
    head = f"""## Periodic task

Protocol of Rubanova et al. (2019), section 4.1, in `benchmarks/periodic.py`: per seed,
`make_periodic(n_series={s['n_series']}, n_points={s['n_points']}, random_state=seed)`, noisy sines on one shared
grid of {s['n_points']} points in [0, 5]; {s['n_train']} series train, the rest test. Interpolation: the context is
a random {s['n_observed']} of a test series' points; `all points` scores all {s['n_points']} (the published metric),
`held-out` the {s['n_points'] - s['n_observed']} not observed. Extrapolation: the first {s['n_observed']} points
are the context and the last {s['n_points'] - s['n_observed']} the targets. Each test context carries an empty row
at t = 0, the shared window start. Rows: the estimator's defaults (the same settings for both tasks), the defaults
with `readout="per_variable"` (extrapolation), and the reference code's settings ({_ref_settings(ref)}). MSE on the data's scale."""
    lines = ["| model | task | seeds | all points MSE | held-out MSE | ratio to the best baseline | epochs | "
             "fit CPU s | CPU s / step |", "|---|---|---|---|---|---|---|---|---|"]
    for task in ("interpolation", "extrapolation"):
        base = {m: _runs(dflt, m, task) for m in ("linear", "locf", "mean")}
        key = "heldout" if task == "interpolation" else "test"
        best = min(base, key=lambda m: np.mean([r[key]["mse"] for r in base[m]]))
        best_mse = np.mean([r[key]["mse"] for r in base[best]])
        for label, d, model in (("latentode, defaults", dflt, "odernn"),
                                ('latentode, defaults + `readout="per_variable"`', pv, "odernn"),
                                ("latentode, reference settings", ref, "odernn"),
                                ("linear interpolation", dflt, "linear"), ("last value carried forward", dflt, "locf"),
                                ("series mean", dflt, "mean")):
            runs = _runs(d, model, task)
            if not runs:
                continue
            test = _pm([r["test"]["mse"] for r in runs])
            held = _pm([r["heldout"]["mse"] for r in runs]) if task == "interpolation" else "–"
            ratio = np.mean([r[key]["mse"] for r in runs]) / best_mse
            cost = _cost(runs, per_step=True)
            lines.append(f"| {label} | {task} | {len(runs)} | {test} | {held} | {ratio:.2f} ({best}) | {cost} |")
    note = ("The ratio is to the best baseline on the targets the model did not see (interpolation: `held-out`; "
            "extrapolation: the last points).")
    cmds = "Commands:\n\n" + "\n".join(f"- {_cmd(d)}" for d in (dflt, pv, ref))
    return "\n\n".join([head, "\n".join(lines), note, cmds, f"Machine: {_machine(dflt)}."])


def _periodic_files(R: Results) -> tuple[dict, dict]:
    """The defaults' file, and the reference settings' files merged into one (runs concatenated, commands listed)."""
    dflt, *refs = (R(n) for n in FILES["periodic"][:3])
    ref = {**refs[0], "runs": [run for r in refs for run in r["runs"]],
           "command": "`; `".join(r["command"] for r in refs)}
    return dflt, ref


def _ref_settings(d: dict) -> str:
    p = d["settings"]["params"]
    keys = ("latent_dim", "encoder_dim", "width", "n_layers", "noise_std", "adjoint", "lr_decay", "max_epochs")
    tasks = list(dict.fromkeys(r["task"] for r in d["runs"]))
    ran = "; run for " + " and ".join(f"{t} (seeds {', '.join(str(r['seed']) for r in d['runs'] if r['task'] == t)})"
                                      for t in tasks)
    return "`" + ", ".join(f"{k}={p[k]}" for k in keys if k in p) + "`, interpolation training with " \
        "`mask_fraction=0.5, forecast_fraction=0`, extrapolation with `forecast_fraction=1`, no validation split" + ran


def priors(R: Results) -> str:
    d = R("priors.json")
    c = d["config"]
    head = f"""## CNF prior against the normal prior

When series come from a few distinct regimes, does a continuous normalizing flow prior over z0 help, and what does
it cost? Data: `make_periodic(n_series={c['n_series']}, n_points={c['n_points']}, t_max={c['t_max']},
freq_range={c['bands']})`, each series in one of two frequency bands; 80% of the series train, the rest test. Both
priors share the model (`{', '.join(f'{k}={v}' for k, v in c['settings'].items() if k != 'verbose')}`,
`validation_fraction=0`, so both run every epoch); the CNF is `prior_options={c['prior_options']}`. Held-out
log-likelihood: `latentode.evaluation.heldout_log_likelihood` with {c['n_importance']} importance samples (IWAE), the
encoder seeing every point; imputation: {c['n_observed']} random points seen, the others scored; forecast: the first
half seen, the second scored. "Prior samples in a band": the share of 500 trajectories decoded from prior samples
whose least-squares frequency lies within 0.05 of a band (the real test series: 1.00)."""
    table = P.table(d["rows"], d.get("baselines"))
    rows = d["rows"]
    pairs = [(n, k) for k in rows if k["prior"] == "cnf" for n in rows if n["prior"] == "normal" and n["seed"] == k["seed"]]
    dll = [k["ll_series"] - n["ll_series"] for n, k in pairs]
    dmse = [max(abs(k["impute_mse"] / n["impute_mse"] - 1), abs(k["forecast_mse"] / n["forecast_mse"] - 1))
            for n, k in pairs]
    cost = [k["fit_cpu_seconds"] / n["fit_cpu_seconds"] for n, k in pairs]
    tail = (f"Paired by seed (cnf − normal), the held-out log-likelihood per series changed by "
            f"{', '.join(f'{x:+.1f}' for x in dll)} nats; the imputation and forecast MSEs by at most "
            f"{100 * max(dmse):.1f}%; the fit took {min(cost):.2f}-{max(cost):.2f}x the CPU time. Point predictions "
            "decode z0 from the encoder's q(z0|x), so the prior reaches them only through training.")
    return "\n\n".join([head, table, tail, f"Command: {_cmd(c)}.", f"Machine: {c['machine']}."])


def calibration(R: Results) -> str:
    d = R("bands.json")
    cov, cal = d["coverage"], d["coverage_calibrated"]
    lines = ["| intervals | " + " | ".join(f"{k}%" for k in cov) + " |", "|---|" + "---|" * len(cov),
             "| raw (the defaults) | " + " | ".join(f"{100 * v:.1f}%" for v in cov.values()) + " |",
             "| calibrated | " + " | ".join(f"{100 * cal[k]:.1f}%" for k in cov) + " |",
             "| factor (median over variables) | " + " | ".join(f"{d['scale_median'][k]:.2f}" for k in cov) + " |"]
    head = f"""## Calibration

Do the intervals of `predict(..., level=...)` hold what they say? The defaults scoreboard's PhysioNet protocol, in
`benchmarks/bands.py`: {d['stays']} random stays of set-a, each stay's last 25% forecast from the rest. A default
`LatentODERegressor` is fitted on {d['n_train']} stays ({d['epochs']} epochs, {d['fit_cpu_s']:.0f} fit CPU s);
`latentode.calibration.fit_interval_scale` (split conformal: per variable and level, a factor that stretches the
intervals about their midpoints) is fitted on {d['n_calib']} other stays; the table gives, on the
{d['n_held']} remaining stays, the share of the {d['n_values']:,} observed future values inside the central
interval of each level, from 200 predictive samples (z0 from q(z0|x), decoded, plus the fitted noise)."""
    gaps = {k: 100 * v - float(k) for k, v in cov.items()}
    gaps_cal = {k: 100 * v - float(k) for k, v in cal.items()}
    worst, worst_cal = (max(g, key=lambda k: abs(g[k])) for g in (gaps, gaps_cal))
    tail = (f"Raw, the largest gap is at {worst}%: the intervals held {100 * cov[worst]:.1f}% of the values "
            f"({'too wide' if gaps[worst] > 0 else 'too narrow'}). Calibrated, the largest gap is at {worst_cal}% "
            f"({100 * cal[worst_cal]:.1f}%). `docs/calibration.png` draws both curves and `docs/forecast_bands.png` "
            "one test stay's forecast (`python docs/figures.py`).")
    return "\n\n".join([head, "\n".join(lines), tail, f"Command: `{d['command']}`.", f"Machine: {d['machine']}."])


def speed(R: Results) -> str:
    d, ref = R("speed.json"), R("reference_speed.json")
    recs = d["records"]
    r0 = recs[0]
    head = f"""## Speed and memory against the reference implementation

One training step (encoder + decoder + masked likelihood + backward + optimiser update) at PhysioNet shapes: a batch
of {r0['batch']} stays ({r0['source']}; median {r0['obs_times_median']:.0f} observation times per stay, max
{r0['obs_times_max']}), 41 variables, latent 20, ODE-RNN encoder with 40 hidden units, 3-layer 50-unit MLPs,
dopri5 (rtol 1e-3, atol 1e-4). latentode: `benchmarks/speed.py`, each configuration in its own process, the
median of {r0['steps']} steps after one warm-up step; "query grid" is the decoder's grid after the per-series change
of time variable (10x interleaves 9 extra times in every observation interval and scores only the observed ones).
The reference: Rubanova et al.'s code (`YuliaRubanova/latent_ode`), the same model size and batch, its own
union-grid collation and its training step as `run_models.py` runs it ({ref['records'][0]['n_traj_samples']} z0
samples per stay; latentode's step draws 1, its default `n_samples`), in `benchmarks/reference_speed.py`, which
needs a checkout of that repository. Peak RSS is the
process's VmHWM; "growth" its increase during the timed steps. Compare the CPU seconds: the wall seconds depend on
what else the machine ran (the two programs ran one after the other, beside the other benchmarks of this file)."""
    lines = ["| implementation | adjoint | query grid | threads | wall s / step | CPU s / step | decoder NFE / step | "
             "peak RSS MB | RSS growth in steps MB |", "|---|---|---|---|---|---|---|---|---|"]
    rr = ref["records"][0]
    lines.append(f"| reference | False | {rr['union_grid']:,} (union) | {rr['threads']} | {rr['seconds_per_step']:.1f} | "
                 f"{rr['cpu_seconds_per_step']:.1f} | {rr['decoder_nfe_per_step']:.0f} | {rr['peak_rss_mb']:.0f} | "
                 f"{rr['step_rss_mb']:.0f} |")
    for r in recs:
        lines.append(f"| latentode | {r['adjoint']} | {r['query_grid']} ({r['query_factor']}x) | {r['threads']} | "
                     f"{r['seconds_per_step']:.2f} | {r['cpu_seconds_per_step']:.2f} | {r['decoder_nfe_per_step']:.0f} | "
                     f"{r['peak_rss_mb']:.0f} | {r['step_rss_mb']:.0f} |")
    tail = speed_summary(R)
    return "\n\n".join([head, "\n".join(lines), tail,
                        f"Commands, one after the other: `{d['command']}`; `{ref['command']}`.",
                        f"Machine: {d['machine']}."])


def _speed_rec(recs, adjoint, k=1, threads=1):
    return next(r for r in recs if r["adjoint"] == adjoint and r["query_factor"] == k and r["threads"] == threads)


def speed_summary(R: Results) -> str:
    """The speed figures in words (BENCHMARKS.md and the README share it)."""
    recs, rr = R("speed.json")["records"], R("reference_speed.json")["records"][0]
    a1, b1, a10, b10 = (_speed_rec(recs, True), _speed_rec(recs, False), _speed_rec(recs, True, 10),
                        _speed_rec(recs, False, 10))
    t2 = [r for r in recs if r["threads"] == 2 and r["query_factor"] == 1]
    out = [f"- The reference took {rr['seconds_per_step']:.0f} s ({rr['cpu_seconds_per_step']:.0f} CPU s) per step on "
           f"its union grid of {rr['union_grid']:,} times (its encoder made {rr['encoder_nfe_per_step']:,.0f} function "
           "evaluations, one per grid time, for every stay of the batch). latentode took "
           f"{a1['seconds_per_step']:.2f} s ({a1['cpu_seconds_per_step']:.2f} CPU s) with the adjoint and "
           f"{b1['seconds_per_step']:.2f} s ({b1['cpu_seconds_per_step']:.2f} CPU s) backpropagating through the solver: "
           f"{rr['cpu_seconds_per_step'] / a1['cpu_seconds_per_step']:.0f}x and "
           f"{rr['cpu_seconds_per_step'] / b1['cpu_seconds_per_step']:.0f}x less CPU time "
           f"({rr['seconds_per_step'] / a1['seconds_per_step']:.0f}x and "
           f"{rr['seconds_per_step'] / b1['seconds_per_step']:.0f}x in wall time), at "
           f"{a1['peak_rss_mb'] / rr['peak_rss_mb']:.2f}x and {b1['peak_rss_mb'] / rr['peak_rss_mb']:.2f}x the "
           "reference's peak memory.",
           f"- With the adjoint, peak memory grew {a10['peak_rss_mb'] / a1['peak_rss_mb']:.2f}x when the decoder's grid, "
           f"and with it the solver work (NFE {a1['decoder_nfe_per_step']:,.0f} → {a10['decoder_nfe_per_step']:,.0f}), "
           f"grew 10x; backpropagating through the solver grew {b10['peak_rss_mb'] / b1['peak_rss_mb']:.2f}x. The "
           f"adjoint costs {a1['cpu_seconds_per_step'] / b1['cpu_seconds_per_step']:.1f}x the CPU time of "
           "backpropagation at 1x (`adjoint=\"auto\"` backpropagates unless a batch holds more than 200,000 points)."]
    if t2:
        wall = [r["seconds_per_step"] / _speed_rec(recs, r["adjoint"])["seconds_per_step"] for r in t2]
        cpu = [r["cpu_seconds_per_step"] / _speed_rec(recs, r["adjoint"])["cpu_seconds_per_step"] for r in t2]
        out.append(f"- Two torch threads took {min(wall):.2f}-{max(wall):.2f}x the wall time of one and "
                   f"{min(cpu):.1f}-{max(cpu):.1f}x its CPU time: on CPU the estimator uses one thread "
                   "(`n_threads=\"auto\"`) and restores the caller's setting.")
    out.append("- `docs/speed.png` draws the seconds per step and the peak memory.")
    return "\n".join(out)


def scaling(R: Results) -> str:
    sc, th, lp, st = (R(n) for n in FILES["scaling"])
    return "\n\n".join(["## Scaling", "### Data-parallel training (torchrun, gloo)", _scaling(sc),
                        "### Torch threads", _threads(th), "### The training loop's host work", _loop(lp),
                        "### Inference at scale", _streaming(st)])


def _scaling(d: dict) -> str:
    recs = d["records"]
    out = [f"Data: {recs[0]['source']}, the first {d['stays']} stays ({recs[0]['n_train']} training series), the "
           f"defaults with `max_epochs={d['epochs']}`, `readout=\"linear\"` and the global `batch_size` of the table; the last epoch is "
           f"timed. Two processes share the machine's 2 cores with one torch thread each. \"Time in all-reduce\" is "
           "the time rank 0 spends in DDP's gradient all-reduce (a blocking communication hook), as a share of the "
           f"epoch's training time, including the wait for the slower rank. Machine: {d['machine']}.", "",
           "| global batch | processes | torch threads each | samples / s | vs 1 process, 1 thread | "
           "time in all-reduce | fit wall s | fit CPU s (all ranks) |", "|---|---|---|---|---|---|---|---|"]
    gains = []
    for r in recs:
        base = next(b for b in recs if b["batch_size"] == r["batch_size"])["samples_per_s"]
        share = f"{100 * r['allreduce_share']:.1f}%" if r["world_size"] > 1 else "–"
        out.append(f"| {r['batch_size']} | {r['world_size']} | {r['threads']} | {r['samples_per_s']:.1f} | "
                   f"{r['samples_per_s'] / base:.2f}x | {share} | {r['fit_wall_s']:.0f} | {r['fit_cpu_s']:.0f} |")
        if r["world_size"] > 1:
            gains.append((r["batch_size"], r["samples_per_s"] / base))
    batches = ",".join(str(b) for b in d["batches"])
    if gains:
        out += ["", "On these 2 cores two processes gave " + ", and ".join(
            f"{g:.2f}x the samples per second of one at a global batch of {b}" for b, g in gains) + ". A step's time is set mostly by its length, not its width: the "
                  "encoder walks every time step of the longest series in turn, and the adaptive solver takes the "
                  "steps of the hardest series for all of them, so half a batch costs a rank much of a whole one. "
                  "Data parallelism pays where each rank gets a batch of its own: on GPUs, or with many machines."]
    out += ["", f"Command: `python benchmarks/scaling.py --stays {d['stays']} --epochs {d['epochs']} "
                f"--batches {batches}`."]
    return "\n".join(out)


def _threads(d: dict) -> str:
    out = ["The quickstart data (300 series), the defaults with the epochs of the command, each row in its own "
           "process; \"busy\" rows run beside a process that keeps the cores busy with NumPy matrix products. "
           f"Machine: 2-core x86_64, {d['machine']}.", "",
           "| other busy process | torch threads | wall s / epoch | CPU s / epoch |", "|---|---|---|---|"]
    rows = {(r["other_busy_process"], r["threads"]): r for r in d["rows"]}
    for r in d["rows"]:
        out.append(f"| {'yes' if r['other_busy_process'] else 'no'} | {r['threads']} | {r['wall_s_per_epoch']:.1f} | "
                   f"{r['cpu_s_per_epoch']:.1f} |")
    if all(k in rows for k in ((False, 1), (False, 2), (True, 1), (True, 2))):
        idle = rows[False, 2]["wall_s_per_epoch"] / rows[False, 1]["wall_s_per_epoch"]
        busy_w = rows[True, 2]["wall_s_per_epoch"] / rows[True, 1]["wall_s_per_epoch"]
        busy_c = rows[True, 2]["cpu_s_per_epoch"] / rows[True, 1]["cpu_s_per_epoch"]
        out += ["", f"Idle, two threads took {idle:.2f}x the wall time of one; beside a busy process, {busy_w:.1f}x the "
                    f"wall time and {busy_c:.1f}x the CPU time. `n_threads=\"auto\"` therefore uses one thread on CPU, "
                    "and the CLI's `--threads` sets another count."]
    out += ["", f"Command: `{d['command']}`."]
    return "\n".join(out)


def _loop(d: dict) -> str:
    (before, b), (after, a) = d["rows"].items()
    p = d["prep"]
    rows = [
        ("ODE-RNN sub-step counts read once per batch, not per time step", "encoder forward + backward, batch 50",
         f"{b['encoder_s']:.3f} s", f"{a['encoder_s']:.3f} s", a["encoder_s"] / b["encoder_s"]),
        ("no per-step host reads; batches gathered on the device", "training s per step (2-epoch fit, epoch 2)",
         f"{b['step_s']:.3f} s", f"{a['step_s']:.3f} s", a["step_s"] / b["step_s"]),
        ("tensors prepared once per fit", f"an epoch's {p['epoch_batches']} batches of 50 stays",
         f"{p['collate_epoch_s']:.3f} s (from numpy)",
         f"{p['packed_epoch_s']:.3f} s (+ {p['pack_once_s']:.3f} s once)", p["packed_epoch_s"] / p["collate_epoch_s"]),
        ("predict's query tensors without a loop per series", f"{p['query_series']:,} series' queries padded",
         f"{p['query_loop_s']:.3f} s (loop)", f"{p['query_vector_s']:.3f} s", p["query_vector_s"] / p["query_loop_s"]),
    ]
    out = [f"PhysioNet stays ({a['source']}), 1 torch thread, CPU; `{before}` is the code without these changes, "
           "measured in a git worktree by the same command, one after the other. The last two rows time both ways "
           "inside this tree. On a CPU a read from the device costs nothing, so the table shows the cost of the "
           "code around the reads; on CUDA each read would stall the queue of kernels (`benchmarks/gpu_check.sh` "
           "measures that on a GPU machine).", "",
           "| change | measured | without | with | ratio |", "|---|---|---|---|---|"]
    out += [f"| {c} | {m} | {x} | {y} | {r:.2f} |" for c, m, x, y, r in rows]
    out += ["", f"Command: `python benchmarks/speed.py --loop {before.split()[0]}`."]
    return "\n".join(out)


def _streaming(d: dict) -> str:
    per = d["records"][0]["rows"] / d["records"][0]["n_series"]
    out = ["A model fitted on 300 series of `make_synthetic` predicts (at the rows) and imputes frames of "
           f"`make_synthetic` series (3 variables, {per:.0f} rows per series on average), each size in a fresh "
           f"process, 1 torch thread. Machine: {d['machine']}.", "",
           "| series | call | rows | wall s | CPU s | rows / s | RSS with the frame loaded MB | peak RSS MB | "
           "input frame MB | output frame MB |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in d["records"]:
        out.append(f"| {r['n_series']:,} | {r['what']} | {r['rows']:,} | {r['wall_s']:.0f} | {r['cpu_s']:.0f} | "
                   f"{r['rows_per_s']:,.0f} | {r['frame_rss_mb']:.0f} | {r['peak_rss_mb']:.0f} | {r['in_mb']:.0f} | "
                   f"{r['out_mb']:.0f} |")
    big = max(d["records"], key=lambda r: r["n_series"])
    rate = [r["rows_per_s"] for r in d["records"]]
    out += ["", "The model's working memory is bounded by the chunk (up to 2,048 series, or 2·10⁷ numbers); what "
                "grows with the data is per row: the validated copy of the input, the predictions and the output "
                f"frame. At {big['n_series']:,} series ({big['what']}) the call's peak stood "
                f"{big['peak_rss_mb'] - big['frame_rss_mb']:.0f} MB above the process's size with the frame loaded, "
                f"{(big['peak_rss_mb'] - big['frame_rss_mb']) * 2**20 / big['rows']:.0f} bytes per row. The "
                f"throughput stayed at {min(rate):,.0f}-{max(rate):,.0f} rows per second across the sizes."]
    sizes = ",".join(str(s) for s in sorted({r["n_series"] for r in d["records"]}))
    whats = ",".join(dict.fromkeys(r["what"] for r in d["records"]))
    out += ["", f"Command: `python benchmarks/streaming.py --sizes {sizes} --what {whats}`."]
    return "\n".join(out)


SECTIONS = (intro, defaults_section, physionet_forecast, physionet_ablation, physionet_interp, periodic, priors,
            calibration, speed, scaling)


def build(R: Results | None = None) -> str:
    """The whole of BENCHMARKS.md."""
    R = R or Results()
    return "\n\n".join(section(R) for section in SECTIONS) + "\n"


# ------------------------------------------------------------------------------------------------ README blocks
CENTER = ' (`readout="linear", center="interp"`)'


def readme_results(R: Results) -> str:
    """The README's one-table summary of the protocols (beside the defaults scoreboard's)."""
    f_def, f_lin = R(FILES["physionet_forecast"][0]), R(FILES["physionet_forecast"][2])
    i_def, i_cen = (R(n) for n in FILES["physionet_interp"][:2])  # i_cen: readout="linear", center="interp"
    p_def, p_ref = _periodic_files(R)

    def mse(d, model, case="test", key="mse", task=None):
        return [r[case][key] for r in _runs(d, model, task)]

    locf = mse(f_def, "locf")[0]
    lin = mse(i_def, "linear", "heldout", "mse_pooled")[0]
    rows = ["| protocol | latentode, defaults | latentode, other settings | best simple baseline | "
            "published |", "|---|---|---|---|---|",
            f"| PhysioNet forecasting (t-PatchGNN protocol, MSE) | {_pm(mse(f_def, 'odernn'))} | "
            f"{_pm(mse(f_lin, 'odernn'))} (`readout=\"linear\"`) | "
            f"{locf:.3e} (last value) | "
            "Latent ODE 6.05e-3; GraFITi 4.89e-3 |",
            f"| PhysioNet interpolation (Rubanova protocol, held-out MSE) | "
            f"{_pm(mse(i_def, 'odernn', 'heldout', 'mse_pooled'))} | "
            f"{_pm(mse(i_cen, 'odernn', 'heldout', 'mse_pooled'))}{CENTER} | "
            f"{lin:.3e} (linear) | – |"]
    for task, case in (("interpolation", "heldout"), ("extrapolation", "test")):
        base = min(np.mean(mse(p_def, m, case, task=task)) for m in ("linear", "locf", "mean"))
        ref = mse(p_ref, "odernn", case, task=task)
        rows.append(f"| Periodic {task} ({'held-out' if case == 'heldout' else 'last half'} MSE) | "
                    f"{_pm(mse(p_def, 'odernn', case, task=task))} | "
                    f"{_pm(ref) + ' (reference settings)' if ref else '–'} | {base:.3e} | – |")
    return "\n".join(rows)


def readme_calibration(R: Results) -> str:
    """The README's coverage sentence (bands.json)."""
    d = R("bands.json")
    cov, cal = d["coverage"], d["coverage_calibrated"]

    def pct(c, k):
        return f"{100 * c[k]:.1f}%"

    return (f"With the defaults, on PhysioNet forecasts of {d['n_held']} test stays ({d['n_values']:,} future values; "
            f"a default fit on {d['n_train']} stays of set-a, `{d['command']}`, then `python docs/figures.py`), the "
            f"80% intervals held {pct(cov, '80')} of the future values and the 95% intervals {pct(cov, '95')}; the "
            f"narrow ones are too {'wide' if cov['50'] > 0.5 else 'narrow'} (50%: {pct(cov, '50')}, 20%: "
            f"{pct(cov, '20')}): one noise std per variable must cover both the values the model predicts well and "
            "those it misses. With the factors of "
            f"`fit_interval_scale` fitted on {d['n_calib']} other stays they held {pct(cal, '80')}, {pct(cal, '95')}, "
            f"{pct(cal, '50')} and {pct(cal, '20')}.")


README_BLOCKS = {  # marker name -> builder
    "defaults summary": lambda R: defaults.summary([r for n in DEFAULTS_FILES for r in R(n)["rows"]]),
    "results summary": readme_results,
    "speed summary": speed_summary,
    "calibration summary": readme_calibration,
}


def readme_markers(name: str) -> tuple[str, str]:
    return f"<!-- {name}: begin -->", f"<!-- {name}: end -->"


def render_readme(doc: str, R: Results | None = None) -> str:
    """``doc`` (the README) with each generated block rebuilt."""
    R = R or Results()
    for name, block in README_BLOCKS.items():
        begin, end = readme_markers(name)
        if begin not in doc or end not in doc:
            raise ValueError(f"README.md has no {begin!r} ... {end!r} block")
        head, rest = doc.split(begin, 1)
        _, tail = rest.split(end, 1)
        doc = f"{head}{begin}\n{block(R)}\n{end}{tail}"
    return doc


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if BENCHMARKS.md or the README differs")
    ap.add_argument("--results", type=Path, default=RESULTS, help="folder of the result files")
    ap.add_argument("--benchmarks", type=Path, default=BENCHMARKS)
    ap.add_argument("--readme", type=Path, default=README)
    a = ap.parse_args(argv)
    R = Results(a.results)
    new = {a.benchmarks: build(R), a.readme: render_readme(a.readme.read_text(), R)}
    if a.check:
        stale = [str(p) for p, text in new.items() if not p.exists() or p.read_text() != text]
        if stale:
            print(f"{', '.join(stale)} differ from what benchmarks/report.py generates; run it.", file=sys.stderr)
            return 1
        return 0
    for path, text in new.items():
        path.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
