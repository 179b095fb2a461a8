"""Matplotlib figures of comparisons and metrics. Each returns the Figure and, given a path,
saves it there (the format follows the suffix: .png, .svg, .pdf)."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import xarray as xr

from .metrics import total

# (panel title, variable, units) of the comparison's small multiples.
PANELS = (
    ("Active buyers", "Active Buyers", "Buyer"),
    ("Active sellers", "Active Sellers", "Seller"),
    ("Traffic", "Traffic", "Visit/Month"),
    ("Buyer trust", "Buyer Trust", "Dmnl"),
    ("GMV", "GMV", "USD/Month"),
    ("Platform cash", "Platform Cash", "USD"),
)


def _save(fig, path):
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=120, bbox_inches="tight")
    return fig


def plot_comparison(ds: xr.Dataset, path: str | Path | None = None, panels=PANELS):
    """Small multiples of buyers, sellers, traffic, trust, GMV and cash per scenario, with
    each scenario's policy windows shaded in its colour."""
    available = []
    for panel in panels:
        try:
            available.append((panel, total(ds, panel[1])))
        except KeyError:
            continue
    if not available:
        raise ValueError("none of the panel variables is in this dataset")
    ncols = 3 if len(available) > 4 else 2
    nrows = -(-len(available) // ncols)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(4.2 * ncols, 3.0 * nrows), sharex=True, squeeze=False
    )
    windows = json.loads(ds.attrs.get("policy_windows", "{}"))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    names = [str(s) for s in ds["scenario"].values] if "scenario" in ds.dims else [""]
    for ax, ((title, _, units), data) in zip(axes.flat, available):
        for i, name in enumerate(names):
            series = data.sel(scenario=name) if "scenario" in data.dims else data
            color = colors[i % len(colors)]
            ax.plot(series["time"], series, label=name, color=color, lw=1.6)
            for _lever, start, end in windows.get(name, []):
                end = min(end, float(series["time"].max()))
                if end <= start:  # the window opens after the run ends
                    continue
                ax.axvspan(start, end, color=color, alpha=0.08, lw=0)
        ax.set_title(title)
        ax.set_ylabel(units)
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(available) :]:
        ax.set_visible(False)
    for ax in axes[-1]:
        ax.set_xlabel("Month")
    axes.flat[0].legend(fontsize=8, frameon=False)
    fig.tight_layout()
    return _save(fig, path)


def plot_metrics(table: pd.DataFrame, path: str | Path | None = None, metrics=None):
    """Bar chart of each metric's change from the first scenario, in percent."""
    pct = table["diff_pct"].unstack("metric")
    if metrics is not None:
        pct = pct[list(metrics)]
    pct = pct.iloc[1:] if len(pct) > 1 else pct
    pct = pct.dropna(axis=1, how="all")
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * pct.shape[1] + 2), 4))
    if pct.empty:
        ax.text(0.5, 0.5, "no metric differences to show", ha="center", va="center")
    else:
        pct.T.plot.bar(ax=ax, width=0.8)
        ax.axhline(0, color="black", lw=0.8)
        ax.set_ylabel(f"change vs {table.index.get_level_values(0)[0]} (%)")
        ax.legend(fontsize=8, frameon=False)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)
