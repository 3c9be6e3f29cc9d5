"""Draw the README's figures from the benchmarks' committed results.

- ``docs/forecast_bands.png``: one held-out PhysioNet stay, its context, the forecast of the
  last 25% of its window with 80% and 95% predictive bands, and what was observed;
- ``docs/calibration.png``: nominal against empirical coverage of the predictive intervals on
  the held-out stays' future values.

Both come from ``benchmarks/results/bands.json`` (``python benchmarks/bands.py``).

Run: ``python docs/figures.py [--results benchmarks/results/bands.json] [--out docs]``.
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
    ax.set_xlim(0, 1), ax.set_ylim(0, 1)
    ax.set_xlabel("nominal coverage of the interval")
    ax.set_ylabel("share of future values inside")
    ax.set_title(f"PhysioNet forecasts, {res['n_held']} held-out stays\n{res['n_values']:,} future values",
                 fontsize=9)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    return fig


def main(argv=None) -> list[Path]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", default=str(ROOT / "benchmarks" / "results" / "bands.json"))
    ap.add_argument("--out", default=str(ROOT / "docs"))
    a = ap.parse_args(argv)
    res = json.loads(Path(a.results).read_text())
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, draw in (("forecast_bands.png", forecast_bands), ("calibration.png", calibration)):
        draw(res).savefig(out / name, dpi=110)
        paths.append(out / name)
    return paths


if __name__ == "__main__":
    for p in main():
        print(p)
