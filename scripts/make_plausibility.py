"""Draw docs/img/plausibility.png: the unfitted model beside published figures (issue 11).

Three panels: Wish's annual revenue and Wish's monthly active users against scenario
wish_at_scale (wish_deposit with every extensive constant times 10), and Amazon's
third-party share of physical gross merchandise sales against amazon_marketplace. The time
maps and the way each figure is read from a run are in flywheel_sd/data/plausibility.py;
docs/plausibility.md explains the figure.

Usage::

    MPLBACKEND=Agg python scripts/make_plausibility.py [out.png]

It prints each figure beside the model's value and the factor between them.
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib import ticker

import flywheel_sd as fw
from flywheel_sd.data import plausibility as pl
from flywheel_sd.metrics import format_number
from flywheel_sd.plotting import format_axis

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "docs" / "img" / "plausibility.png"
TIMES, DIVIDED = "\u00d7", "\u00f7"  # the multiplication and division signs
DATA_COLOUR, MODEL_COLOUR, EVENT_COLOUR = "#4a7ab5", "#d9541e", "#777777"
FITTED_COLOUR = "#2a9d4b"
WISH = pl.TIME_MAPS["wish_at_scale"]
AMAZON = pl.TIME_MAPS["amazon_marketplace"]


def _year(date: pd.Timestamp) -> float:
    """A date as a fractional calendar year (2021-04-01 is 2021.25)."""
    return date.year + (date.dayofyear - 1) / (366 if date.is_leap_year else 365)


def _wish_events(ax, as_year: bool) -> list:
    """The deposit window and the dearer ads, from wish_at_scale's events."""
    handles = []
    events = fw.scenarios.get("wish_at_scale").events
    for label, start, end in events:
        begin = WISH + pd.DateOffset(months=int(start))
        x = _year(begin) if as_year else begin
        if "deposit" in label:
            stop = WISH + pd.DateOffset(months=int(end))
            x1 = _year(stop) if as_year else stop
            handles.append(
                ax.axvspan(x, x1, color=EVENT_COLOUR, alpha=0.15, lw=0, label=f"{label} (model)")
            )
        else:
            handles.append(
                ax.axvline(x, color=EVENT_COLOUR, ls="--", lw=1.2, label=f"{label} (model)")
            )
    return handles


def _fitted_label(scenario: str) -> str:
    """The fitted scenario's legend entry: its name and fitted values."""
    case = next(f for f in pl.FITS if f.base == scenario)
    params = fw.scenarios.get(case.name).params
    values = ", ".join(f"{k} {format_number(params[k], 3)}" for k in case.params)
    return textwrap.fill(f"fitted ({case.name}): {values}", 52)


def _fitted_line(ax, fitted, scenario: str, variable: str) -> None:
    """The fitted run of `scenario`'s case: `variable` over calendar dates, dashed."""
    run = fitted[scenario]
    ax.plot(
        pl.calendar(run, pl.TIME_MAPS[scenario]),
        run[variable],
        "--",
        color=FITTED_COLOUR,
        lw=2,
        label=_fitted_label(scenario),
    )


def _legend(ax, title: str | None = None) -> None:
    """The panel's legend under it, so that it hides no data."""
    ax.legend(
        loc="upper center",
        bbox_to_anchor=(0.5, -0.2),
        fontsize=9,
        title=title,
        title_fontsize=9,
        frameon=False,
    )


def revenue_panel(ax, frames, table, fitted) -> None:
    data = table[table["series"] == "wish_revenue"]
    years = data["period_start"].dt.year
    ax.bar(years, data["value"], width=0.6, color=DATA_COLOUR, alpha=0.8, label="Wish (S-1, 10-K)")
    model = pl.annual(frames["wish_at_scale"], WISH, "Platform Revenue", "flow")
    ax.plot(
        model.index,
        model.values,
        "o-",
        color=MODEL_COLOUR,
        lw=2,
        label="model: Platform Revenue summed over the year",
    )
    fit = pl.annual(fitted["wish_at_scale"], WISH, "Platform Revenue", "flow")
    ax.plot(
        fit.index,
        fit.values,
        "s--",
        color=FITTED_COLOUR,
        lw=2,
        ms=5,
        label=_fitted_label("wish_at_scale"),
    )
    for year, value, ratio in zip(years, data["value"], data["ratio"]):
        ax.annotate(
            f"{TIMES}{ratio:.2f}",
            (year, value),
            xytext=(0, 3),
            textcoords="offset points",
            ha="center",
            va="bottom",
            fontsize=8,
            color=DATA_COLOUR,
        )
    _wish_events(ax, as_year=True)
    ax.set_title("Wish: revenue per calendar year")
    ax.set_xlabel("calendar year")
    ax.set_ylabel("revenue (US dollars per year)")
    format_axis(ax.yaxis, "USD")
    ax.xaxis.set_major_locator(ticker.MultipleLocator(1))
    ax.xaxis.set_major_formatter(ticker.FormatStrFormatter("%d"))
    ax.tick_params(axis="x", labelrotation=45)
    ax.set_ylim(0, max(data["value"].max(), model.max(), fit.max()) * 1.25)
    _legend(ax, title=f"{TIMES}: model {DIVIDED} Wish, over each bar")


def users_panel(ax, frames, table, fitted) -> None:
    run = frames["wish_at_scale"]
    ax.plot(
        pl.calendar(run, WISH),
        run["Total Buyers"],
        color=MODEL_COLOUR,
        lw=2,
        label="model: Total Buyers (active buyers and members)",
    )
    _fitted_line(ax, fitted, "wish_at_scale", "Total Buyers")
    data = table[table["series"] == "wish_mau"]
    for _, row in data.iterrows():
        text = f"{format_number(row['value'], 3)} (model {DIVIDED} Wish {TIMES}{row['ratio']:.2f})"
        if row["sampling"] == "point":
            ax.plot(
                row["period_start"],
                row["value"],
                "^",
                ms=10,
                color=DATA_COLOUR,
                label="Wish MAU at the IPO filing: 100M+ (a lower bound)",
            )
        else:
            end = row["period_end"] + pd.Timedelta(days=1)
            what = "Q2 2021" if row["sampling"] == "quarter" else "2022, about"
            ax.plot(
                [row["period_start"], end],
                [row["value"]] * 2,
                "-",
                lw=4,
                color=DATA_COLOUR,
                solid_capstyle="butt",
                label=f"Wish MAU, {what} {format_number(row['value'], 3)}"
                + " (a year's figure)" * (row["sampling"] == "annual"),
            )
        ax.annotate(
            text,
            (row["period_start"], row["value"]),
            xytext=(-6, -4 if row["sampling"] == "annual" else 8),
            textcoords="offset points",
            ha="right",
            va="top" if row["sampling"] == "annual" else "bottom",
            fontsize=8,
            color=DATA_COLOUR,
        )
    _wish_events(ax, as_year=False)
    ax.set_title("Wish: monthly active users")
    ax.set_xlabel("date (model month 0 = October 2013)")
    ax.set_ylabel("people (monthly active users; model buyers)")
    format_axis(ax.yaxis, "Buyer")
    ax.set_ylim(0, 120e6)
    _legend(ax)


def share_panel(ax, frames, table, fitted) -> None:
    run = frames["amazon_marketplace"]
    ax.plot(
        pl.calendar(run, AMAZON),
        run["Third Party Share"],
        color=MODEL_COLOUR,
        lw=2,
        label="model: Third Party Share (monthly)",
    )
    _fitted_line(ax, fitted, "amazon_marketplace", "Third Party Share")
    data = table[table["series"] == "amazon_third_party_share"]
    middle = data["period_start"] + pd.DateOffset(months=6)
    ax.plot(
        middle,
        data["model"],
        "o",
        mfc="none",
        color=MODEL_COLOUR,
        label="model, each year (weighted by GMV)",
    )
    ax.plot(
        middle, data["value"], "s", color=DATA_COLOUR, label="Amazon (2018 shareholder letter)"
    )
    final = pd.Timestamp(AMAZON) + pd.DateOffset(months=120)
    ax.axvline(final, color=EVENT_COLOUR, ls=":", lw=1.2)
    ax.annotate(
        "the scenario's usual end (month 120);\nrun on to month 240 here",
        (final, 0.9),
        xytext=(4, 0),
        textcoords="offset points",
        fontsize=8,
        color=EVENT_COLOUR,
    )
    ax.set_title("Amazon: third-party share of physical GMV")
    ax.set_xlabel("date (model month 0 = January 1999)")
    ax.set_ylabel("share of gross merchandise sales (percent)")
    ax.yaxis.set_major_formatter(ticker.PercentFormatter(1.0, decimals=0))
    ax.set_ylim(0, 1)
    _legend(ax)


def draw(path: Path = OUT) -> pd.DataFrame:
    frames, fitted = pl.runs(), pl.runs(fitted=True)
    table = pl.plausibility(frames=frames)
    fig, axes = plt.subplots(1, 3, figsize=(18, 8), layout="constrained")
    revenue_panel(axes[0], frames, table, fitted)
    users_panel(axes[1], frames, table, fitted)
    share_panel(axes[2], frames, table, fitted)
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.suptitle(
        "The model beside published figures, unfitted and fitted: Wish (scenario "
        "wish_at_scale) and Amazon (scenario amazon_marketplace)",
        fontsize=14,
    )
    fig.text(
        0.5,
        -0.01,
        "Unfitted: wish_at_scale is wish_deposit with every extensive constant (market, "
        "seller pool, money) times 10, Wish's order of magnitude; amazon_marketplace is run as "
        "shipped. Fitted (dashed): the same scenarios with the constants named in the legend "
        "fitted by flywheel_sd.calibrate (scripts/fit_cases.py).\nSources: "
        "flywheel_sd/data/SOURCES.md. Discussion, time maps and the factors measured: "
        "docs/plausibility.md.",
        ha="center",
        va="top",
        fontsize=10,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return table


def main(argv: list[str]) -> int:
    path = Path(argv[0]) if argv else OUT
    table = draw(path)
    fitted = pl.plausibility(fitted=True)
    table = table.assign(fitted=fitted["model"].to_numpy(), fitted_factor=fitted["factor"])
    shown = table.assign(
        period=table["period_start"].dt.strftime("%Y-%m"),
        data=table["value"].map(lambda v: format_number(v, 3)),
        model_value=table["model"].map(lambda v: format_number(v, 3)),
        factor_=table["factor"].map(lambda v: f"{v:.2f}"),
        fitted_value=table["fitted"].map(lambda v: format_number(v, 3)),
        fitted_factor_=table["fitted_factor"].map(lambda v: f"{v:.2f}"),
    )[
        [
            "series",
            "period",
            "sampling",
            "data",
            "model_value",
            "factor_",
            "fitted_value",
            "fitted_factor_",
        ]
    ]
    print(shown.to_string(index=False))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
