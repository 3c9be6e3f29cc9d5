"""Draw the README's figures from the benchmarks' committed results.

- ``docs/forecast_bands.png``: one held-out PhysioNet stay, its context, the forecast of the
  last 25% of its window with 80% and 95% predictive bands, and what was observed;
- ``docs/calibration.png``: nominal against empirical coverage of the predictive intervals on
  the held-out stays' future values.

- ``docs/speed.png``: CPU seconds per training step and peak memory at PhysioNet shapes, latentode
  against the reference implementation.

The first two come from ``benchmarks/results/bands.json`` (``python benchmarks/bands.py``), the third
from ``speed.json`` and ``reference_speed.json`` (``python benchmarks/speed.py``,
``python benchmarks/reference_speed.py --reference REF``).

Run: ``python docs/figures.py [--results benchmarks/results] [--out docs]``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


def _frames(res: dict):
    """(context, future, forecast) frames of the shown stay."""
    stay = res["stay"]
    ctx, fut, pred = (pd.DataFrame(res[k]).assign(RecordID=stay) for k in ("context", "future", "forecast"))
    return ctx, fut, pred


def forecast_bands(res: dict):
    """The shown stay's forecast with its 80/95% bands (a row of panels, one per variable): a Figure."""
    import matplotlib

    matplotlib.use("Agg")
    from latentode.plotting import plot_series

    ctx, fut, pred = _frames(res)
    variables = list(res["variables"])
    fig = plot_series(ctx, pred, variables=variables, level=95, truth=fut, id_col="RecordID", time_col="Time",
                      forecast_start=res["cut"])
    for ax, v in zip(fig.axes, variables):
        ax.fill_between(pred["Time"], pred[f"{v}-lo-80"], pred[f"{v}-hi-80"], color="C0", alpha=0.3, lw=0,
                        label="80%")
        ax.set_xlabel("hours since admission")
    fig.suptitle(f"PhysioNet stay {res['stay']}: the last 25% forecast from the rest, 80% and 95% bands; "
                 f"crosses: what was observed (default model, {res['n_train']} training stays)", fontsize=9)
    fig.tight_layout()
    return fig


def calibration(res: dict):
    """Nominal against empirical coverage of the predictive intervals: a Figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    levels = sorted(res["coverage"], key=float)
    nominal = [float(lv) / 100 for lv in levels]
    empirical = [res["coverage"][lv] for lv in levels]
    fig, ax = plt.subplots(figsize=(4.2, 4.0))
    ax.plot([0, 1], [0, 1], color="0.6", ls="--", lw=1, label="perfect calibration")
    ax.plot(nominal, empirical, "o-", color="C0", label="latentode (defaults)")
    if "coverage_calibrated" in res:
        ax.plot(nominal, [res["coverage_calibrated"][lv] for lv in levels], "s-", color="C1",
                label="after fit_interval_scale")
    ax.set_xlim(0, 1), ax.set_ylim(0, 1)
    ax.set_xlabel("nominal coverage of the interval")
    ax.set_ylabel("share of future values inside")
    ax.set_title(f"PhysioNet forecasts, {res['n_held']} test stays\n{res['n_values']:,} future values",
                 fontsize=9)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    return fig


def _speed_bars(speed: dict, reference: dict):
    """(labels, CPU s per step, peak RSS MB): the reference, then latentode's 1-thread configurations."""
    ref = reference["records"][0]
    labels = [f"reference\nunion grid\n{ref['union_grid']:,}"]
    cpu, rss = [ref["cpu_seconds_per_step"]], [ref["peak_rss_mb"]]
    for r in speed["records"]:
        if r["threads"] != 1:
            continue
        labels.append(f"latentode\n{'adjoint' if r['adjoint'] else 'backprop'}\ngrid {r['query_factor']}x")
        cpu.append(r["cpu_seconds_per_step"])
        rss.append(r["peak_rss_mb"])
    return labels, cpu, rss


def speed(speed: dict, reference: dict):
    """CPU seconds per step (log scale) and peak memory, latentode against the reference: a Figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels, cpu, rss = _speed_bars(speed, reference)
    colors = ["0.55"] + ["C0"] * (len(labels) - 1)
    fig, (a, b) = plt.subplots(1, 2, figsize=(10.0, 3.9))
    a.bar(range(len(labels)), cpu, color=colors)
    a.set_yscale("log")
    a.set_ylabel("CPU seconds per training step (log)")
    b.bar(range(len(labels)), rss, color=colors)
    b.set_ylabel("peak RSS of the process, MB")
    for ax in (a, b):
        ax.set_xticks(range(len(labels)), labels, fontsize=7)
    for i, v in enumerate(cpu):
        a.text(i, v, f"{v:.2f}" if v < 10 else f"{v:.0f}", ha="center", va="bottom", fontsize=7)
    r0 = speed["records"][0]
    fig.suptitle(f"One training step at PhysioNet shapes: {r0['batch']} stays, 41 variables, latent 20, 1 thread",
                 fontsize=9)
    fig.tight_layout()
    return fig


def main(argv=None) -> list[Path]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", default=str(ROOT / "benchmarks" / "results"), help="folder of the result files")
    ap.add_argument("--out", default=str(ROOT / "docs"))
    a = ap.parse_args(argv)
    folder = Path(a.results)
    res = json.loads((folder / "bands.json").read_text())
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, draw in (("forecast_bands.png", forecast_bands), ("calibration.png", calibration)):
        draw(res).savefig(out / name, dpi=110)
        paths.append(out / name)
    sp, ref = (json.loads((folder / n).read_text()) for n in ("speed.json", "reference_speed.json"))
    speed(sp, ref).savefig(out / "speed.png", dpi=110)
    paths.append(out / "speed.png")
    return paths


if __name__ == "__main__":
    for p in main():
        print(p)
