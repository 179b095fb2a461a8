"""Matplotlib figures of comparisons and metrics. Each returns the Figure and, given a path,
saves it there (the format follows the suffix: .png, .svg, .pdf).

Figures are meant to be read without the code: a title, axis labels with units in words
(``metrics.readable_units``), tick labels with SI suffixes ("13.3M", "$1.2B") and never an
offset such as ``1e7``, and one legend per figure, outside the panels."""

from __future__ import annotations

import itertools
import json
import math
import warnings
from collections.abc import Mapping
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import xarray as xr
from matplotlib import ticker
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from .metrics import format_number, readable_units, total

# (panel title, variable, units) of the comparison's small multiples. The units are the
# model's (Vensim) units, a fallback for datasets whose variables carry none in their attrs.
PANELS = (
    ("Active buyers", "Active Buyers", "Buyer"),
    ("Active sellers", "Active Sellers", "Seller"),
    ("Traffic", "Traffic", "Visit/Month"),
    ("Buyer trust", "Buyer Trust", "Dmnl"),
    ("GMV", "GMV", "USD/Month"),
    ("Platform cash", "Platform Cash", "USD"),
)

WINDOW_ALPHA = 0.13
LINESTYLES = ("-", "--", "-.", ":")
# Several policy windows: one strip each along the panels' top; the windows of one scenario
# (one colour) told apart by hatching.
STRIP_ALPHA, STRIP_HEIGHT = 0.6, 0.045
HATCHES = (None, "////", "....", "xxxx")


class SIFormatter(ticker.Formatter):
    """Tick labels with SI suffixes ("250k", "13.3M", "$1.2B") and no offset text; the
    ticks of one axis share their number of decimals ("2.5M", "5.0M", "7.5M")."""

    def __init__(self, prefix: str = ""):
        self.prefix = prefix

    def __call__(self, x, pos=None) -> str:
        return format_number(x, 3, prefix=self.prefix)

    def format_ticks(self, values) -> list[str]:
        finite = [abs(v) for v in values if np.isfinite(v)]
        if not finite:
            return [self(v) for v in values]
        top = max(finite)
        scale, suffix = next(
            (
                (s, letter)
                for s, letter in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k"))
                if top >= max(s, 1e4)
            ),
            (1.0, ""),
        )
        steps = np.diff(sorted(values)) / scale
        step = float(min((s for s in steps if s > 0), default=1.0))
        decimals = next(
            (
                d
                for d in range(7)
                if abs(round(step * 10**d) - step * 10**d) < 1e-6 * max(1.0, step * 10**d)
            ),
            6,
        )
        labels = []
        for v in values:
            if not np.isfinite(v):
                labels.append("")
                continue
            scaled = v / scale
            if abs(scaled) < 0.5 * 10**-decimals:
                labels.append("0")
                continue
            sign = "-" if scaled < 0 else ""
            number = f"{abs(scaled):,.{decimals}f}"
            labels.append(f"{sign}{self.prefix}{number}{suffix}")
        return labels

    def get_offset(self) -> str:
        return ""


def is_money(units: str | None) -> bool:
    """True for units in US dollars (USD, USD/Month, ...): their ticks get a "$"."""
    return (units or "").strip().upper().startswith("USD")


def format_axis(axis, units: str | None = None) -> None:
    """SI tick labels on `axis` (``ax.yaxis``), with "$" for money."""
    axis.set_major_formatter(SIFormatter("$" if is_money(units) else ""))


def model_units(ds: xr.Dataset) -> dict[str, str]:
    """Vensim name -> units for the variables of `ds`: their ``units`` attrs (``compare``
    sets them); where no variable has any, the documentation of the model the dataset
    names in its attrs (``model`` or ``models``), if that file is there; else nothing."""
    units = {str(v): str(ds[v].attrs["units"]) for v in ds.data_vars if ds[v].attrs.get("units")}
    if units:
        return units
    path = ds.attrs.get("model")
    if not path and ds.attrs.get("models"):
        try:
            path = next(iter(json.loads(ds.attrs["models"]).values()), None)
        except (ValueError, TypeError, AttributeError):
            path = None
    if not path or not Path(str(path)).is_file():
        return {}
    try:
        from .engine.model import load

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            doc = load(str(path)).doc
    except Exception:  # noqa: BLE001 - units are a nicety; the plot goes on without them
        return {}
    return {
        str(name): unit.strip()
        for name, unit in zip(doc["Real Name"], doc["Units"])
        if isinstance(unit, str) and unit.strip()
    }


def units_of(
    ds: xr.Dataset, variable: str, fallback: str = "", known: dict[str, str] | None = None
) -> str:
    """The (Vensim) units of `variable` (or of its subscripted columns ``Name[...]``):
    from `known` (default: ``model_units(ds)``), else `fallback`."""
    known = model_units(ds) if known is None else known
    base = variable.split("[")[0].strip()
    return known.get(variable) or known.get(base) or fallback


def time_units(known: dict[str, str]) -> tuple[str, str]:
    """(singular, plural) of the model's time unit in words: ("month", "months"); empty
    when the model does not say."""
    unit = next(
        (known[k] for k in ("TIME STEP", "FINAL TIME", "INITIAL TIME") if known.get(k)), ""
    )
    if not unit or not unit.replace(" ", "").isalpha():
        return "", ""
    plural = readable_units(unit)
    return unit.lower(), plural


def _save(fig, path):
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=120, bbox_inches="tight")
    return fig


def _window_label(
    label: str, start: float, end: float, scenario: str, unit: tuple[str, str] = ("", "")
) -> str:
    """The legend entry of a policy window: 'US$2,000 deposit, months 60-74
    (wish_deposit)', with an en dash."""
    one, many = unit
    if math.isinf(end):
        span = f"from {one} {start:g}" if one else f"from t = {start:g}"
    else:
        span = f"{many or 't ='} {start:g}\N{EN DASH}{end:g}"
    who = f" ({scenario})" if scenario else ""
    return f"{label}, {span}{who}"


def plot_comparison(
    ds: xr.Dataset,
    path: str | Path | None = None,
    panels=PANELS,
    *,
    ncols: int | None = None,
    title: str | None = None,
):
    """Small multiples of buyers, sellers, traffic, trust, GMV and cash per scenario, with
    each scenario's policy windows shaded in its colour and named in the legend.

    `panels`: (panel title, variable, fallback units) of each panel, for other variables;
    `ncols`: panels per row (default: 3 from five panels on, else 2); `title`: the
    figure's title (default: the scenarios' names)."""
    available = []
    for panel in panels:
        try:
            available.append((panel, total(ds, panel[1])))
        except KeyError:
            continue
    if not available:
        raise ValueError("none of the panel variables is in this dataset")
    if ncols is None:
        ncols = 3 if len(available) > 4 else min(2, len(available))
    ncols = max(1, min(ncols, len(available)))
    nrows = -(-len(available) // ncols)
    fig, axes = plt.subplots(
        nrows,
        ncols,
        figsize=(4.4 * ncols, 3.0 * nrows + 1.0),
        sharex=True,
        squeeze=False,
        layout="constrained",
    )
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    names = [str(s) for s in ds["scenario"].values] if "scenario" in ds.dims else [""]

    def style(i: int) -> dict:  # colour and dashes: lines that coincide stay visible
        return {"color": colors[i % len(colors)], "ls": LINESTYLES[i % len(LINESTYLES)]}

    lines = [
        Line2D([], [], lw=1.8, label=name or "run", **style(i)) for i, name in enumerate(names)
    ]
    known = model_units(ds)
    unit = time_units(known)
    spans = _policy_spans(ds, names, colors, unit)
    # One window: shaded behind the lines. Several: one strip each along the panels' top,
    # since shades laid over one another blend into a colour no legend entry has.
    strips = len(spans) > 1
    hatches = _hatches(spans)
    patches = [
        Patch(
            facecolor=color,
            alpha=STRIP_ALPHA if strips else min(1.0, 2.5 * WINDOW_ALPHA),
            edgecolor="white",  # the hatch's colour (matplotlib 3.8+); lw=0 hides the edge
            lw=0,
            hatch=hatch,
            label=label,
        )
        for (label, _, _, color), hatch in zip(spans, hatches)
    ]
    for ax, ((panel_title, variable, fallback), data) in zip(axes.flat, available):
        for _label, start, end, color in [] if strips else spans:
            ax.axvspan(start, end, color=color, alpha=WINDOW_ALPHA, lw=0)
        for i, name in enumerate(names):
            series = data.sel(scenario=name) if "scenario" in data.dims else data
            ax.plot(series["time"], series, lw=1.6, **style(i))
        units = units_of(ds, variable, fallback, known)
        ax.set_title(panel_title)
        ax.set_ylabel(readable_units(units, f"{variable} {panel_title}"))  # title: "share of"
        format_axis(ax.yaxis, units)
        ax.grid(alpha=0.3)
        ax.margins(x=0.01)
        if strips:
            _draw_strips(ax, spans)
    for ax in axes.flat[len(available) :]:
        ax.set_visible(False)
    # The lowest visible panel of each column carries the time axis's labels.
    for col in range(ncols):
        visible = [axes[r, col] for r in range(nrows) if axes[r, col].get_visible()]
        if visible:
            visible[-1].set_xlabel(f"time ({unit[1]})" if unit[1] else "time")
            visible[-1].xaxis.set_tick_params(labelbottom=True)
    shown = [n for n in names if n]
    if title is not None:
        fig.suptitle(title)
    elif len(shown) > 1:
        fig.suptitle(f"Scenarios compared: {', '.join(shown)}")
    elif shown:
        fig.suptitle(f"Scenario {shown[0]}")
    handles, ncol = _legend_columns(lines, patches)
    fig.legend(
        handles=handles,
        labels=[_literal(h.get_label()) for h in handles],
        loc="outside lower center",
        ncols=ncol,
        frameon=False,
        fontsize=9,
    )
    return _save(fig, path)


def plot_runs(
    runs: Mapping[str, pd.DataFrame],
    path: str | Path | None = None,
    panels=PANELS,
    **options,
):
    """`plot_comparison` of separate runs (DataFrames as ``run_scenario``, ``simulate`` or
    ``critical_mass`` return them), keyed by the name each gets in the legend; each run's
    policy windows come from its attrs, the units from the model that ran it."""
    from .scenarios.compare import frames_to_dataset

    names = [str(name) for name in runs]
    ds = frames_to_dataset(list(runs.values()), names)
    ds.attrs["policy_windows"] = json.dumps(
        {
            name: list(frame.attrs.get("policy_windows", []))
            for name, frame in zip(names, runs.values())
        }
    )
    model = next((f.attrs["model"] for f in runs.values() if f.attrs.get("model")), None)
    if model:
        ds.attrs["model"] = str(model)
    return plot_comparison(ds, path, panels, **options)


def _literal(text: str) -> str:
    """`text` drawn as written: two "$" in one label ("US$625,000 ..., US$687,500 ...")
    would switch matplotlib to math mode, so they are escaped."""
    return text.replace("$", r"\$") if text.count("$") > 1 else text


def _draw_strips(ax, spans: list) -> None:
    """Each policy window as a strip of its colour along the top of `ax`, in a band of
    its own, above the data (the y range grows to make room)."""
    band = STRIP_HEIGHT
    low, high = ax.get_ylim()
    used = 1 - band * len(spans) - 0.02
    ax.set_ylim(low, low + (high - low) / used)
    for k, ((_label, start, end, color), hatch) in enumerate(zip(spans, _hatches(spans))):
        top = 1 - k * band
        ax.axvspan(
            start,
            end,
            ymin=top - 0.8 * band,
            ymax=top,
            facecolor=color,
            edgecolor="white",  # the hatch's colour (matplotlib 3.8+); lw=0 hides the edge
            lw=0,
            hatch=hatch,
            alpha=STRIP_ALPHA,
        )


def _hatches(spans: list) -> list[str | None]:
    """A hatch for each window that shares its colour with an earlier one (windows of
    the same scenario), so that the legend tells them apart."""
    seen: dict[str, int] = {}
    out: list[str | None] = []
    for *_, color in spans:
        k = seen.get(color, 0)
        seen[color] = k + 1
        out.append(HATCHES[k % len(HATCHES)])
    return out


def _policy_spans(
    ds: xr.Dataset, names: list[str], colors, unit: tuple[str, str] = ("", "")
) -> list:
    """(legend label, start, end, colour) of each policy window in the run; a window that
    several scenarios share (same label and months) is one grey span naming them all."""
    windows = json.loads(ds.attrs.get("policy_windows", "{}"))
    t_end = float(ds["time"].max())
    groups: dict[tuple[str, float, float], list[int]] = {}
    for i, name in enumerate(names):
        for label, start, end in windows.get(name, []):
            start, end = float(start), float(end)
            if min(end, t_end) <= start:  # the window opens after the run ends
                continue
            groups.setdefault((str(label), start, end), []).append(i)
    spans = []
    for (label, start, end), members in groups.items():
        if len(names) == 1:
            who = ""
        elif len(members) == len(names):
            who = "every scenario"
        elif len(members) > 1 and len(members) == len(names) - 1 and 0 not in members:
            who = f"every scenario but {names[0]}"
        else:
            who = ", ".join(names[i] for i in members)
        color = colors[members[0] % len(colors)] if len(members) == 1 else "0.45"
        spans.append((_window_label(label, start, end, who, unit), start, min(end, t_end), color))
    return spans


def _legend_columns(lines: list, patches: list) -> tuple[list, int]:
    """Legend handles and column count: the scenarios in one row when there is no policy
    window; else the scenarios in the first column(s), the windows in the next ones (at
    most four rows), so a long window label does not push the scenario names apart."""
    if not patches:
        return lines, min(len(lines), 5)
    height = min(4, max(len(lines), len(patches)))
    columns: list[list] = []
    for section in (lines, patches):
        for k in range(0, len(section), height):
            column = section[k : k + height]
            columns.append(column + [Line2D([], [], alpha=0, label=" ")] * (height - len(column)))
    return [h for column in columns for h in column], len(columns)


def plot_metrics(table: pd.DataFrame, path: str | Path | None = None, metrics=None):
    """Bar chart of each metric's change from the first scenario (the reference), in
    percent: one group of horizontal bars per metric (in the table's order, top down), one
    bar per other scenario, each labelled with its value; the reference is the zero line."""
    scenarios = list(dict.fromkeys(table.index.get_level_values("scenario")))
    order = list(dict.fromkeys(table.index.get_level_values("metric")))
    reference = scenarios[0]
    pct = table["diff_pct"].unstack("metric").reindex(index=scenarios, columns=order)
    if metrics is not None:
        pct = pct[list(metrics)]
    pct = pct.drop(index=reference).replace([np.inf, -np.inf], np.nan)
    pct = pct.dropna(axis=1, how="all")
    n, groups = len(pct), pct.shape[1]
    fig, ax = plt.subplots(
        figsize=(8.0, min(max(3.2, 0.18 * n * groups + 0.15 * groups + 1.8), 16.0)),
        layout="constrained",
    )
    ax.set_title(f"Change in each metric from {reference}")
    if pct.empty:
        why = (
            "only one scenario: nothing to compare"
            if len(scenarios) < 2
            else ("no metric differences to show")
        )
        ax.text(0.5, 0.5, why, ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return _save(fig, path)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    height = 0.8 / n
    y = np.arange(groups)
    for i, (scenario, row) in enumerate(pct.iterrows()):
        bars = ax.barh(
            y + (i - (n - 1) / 2) * height,
            row.to_numpy(float),
            height=height,
            color=colors[(i + 1) % len(colors)],  # the reference keeps the first colour
            label=str(scenario),
        )
        ax.bar_label(
            bars, labels=[_pct_label(v) for v in row.to_numpy(float)], fontsize=7, padding=3
        )
    ax.axvline(0, color="black", lw=0.9)
    ax.set_yticks(y, [str(m) for m in pct.columns])
    ax.invert_yaxis()  # the first metric on top, the first scenario first in its group
    ax.set_xlabel(f"change from {reference} (%)")
    ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:,.4g}%"))
    ax.grid(axis="x", alpha=0.3)
    # Room on both sides for the bar labels (bars stick to 0, so margins alone do not).
    values = pct.to_numpy(float)
    low, high = min(0.0, float(np.nanmin(values))), max(0.0, float(np.nanmax(values)))
    pad = 0.2 * ((high - low) or 1.0)
    ax.set_xlim(low - pad, high + pad)
    reference_label = f"{reference} (reference, 0%)"
    fig.legend(
        handles=[*ax.containers, Line2D([], [], color="black", lw=0.9)],
        labels=[*(str(s) for s in pct.index), reference_label],
        loc="outside lower center",
        ncols=n + 1 if n < 4 else 3,
        frameon=False,
        fontsize=9,
    )
    return _save(fig, path)


def _pct_label(value: float) -> str:
    if not np.isfinite(value):
        return ""
    if abs(value) < 0.05:
        return "0%"
    return f"{value:+.1f}%" if abs(value) < 100 else f"{value:+,.0f}%"


__all__ = [
    "PANELS",
    "SIFormatter",
    "format_axis",
    "plot_comparison",
    "plot_metrics",
    "plot_runs",
    "readable_units",
    "units_of",
]


# -- loop dominance (issue 14) ---------------------------------------------------------------
#: Loops drawn in their own colour by `plot_loop_dominance`; the rest share one grey band.
DOMINANCE_LOOPS = 8


def loop_label(ds: xr.Dataset, key: str, limit: int = 56, via: list[str] | None = None) -> str:
    """A loop's legend entry: its index id and name ("R1 Cross-side network effect"), or,
    for a loop the index does not name, its id, polarity (and length, past three variables)
    and variables ("L17 (balancing): Seller Confidence → Confidence Loss"), cut to `limit`
    characters. `via`: the variables that tell an unnamed loop apart from the others of a
    legend, shown instead of its whole chain ("L109 (balancing, 29 variables) via Total
    Exposure")."""
    name = str(ds["loop_name"].sel(loop=key).values) if "loop_name" in ds.coords else ""
    if name:
        return f"{key} {name}"
    variables = str(ds["loop_variables"].sel(loop=key).values).split(" -> ")
    kind = str(ds["summary"].sel(loop=key).values)
    size = f", {len(variables)} variables" if len(variables) > 3 else ""
    if via:
        text = f"{key} ({kind}{size}) via {', '.join(via)}"
    else:
        text = f"{key} ({kind}{size}): " + " \N{RIGHTWARDS ARROW} ".join(variables)
    return text if len(text) <= limit else text[: limit - 1] + "\N{HORIZONTAL ELLIPSIS}"


def _distinguishing(paths: list[list[str]], most: int = 2) -> list[list[str]]:
    """Per loop (its chain of variables), the `most` variables that the fewest of the other
    loops pass (none that every loop passes), in chain order; empty for short loops, which
    are shown whole."""
    counts: dict[str, int] = {}
    for path in paths:
        for v in set(path):
            counts[v] = counts.get(v, 0) + 1
    out: list[list[str]] = []
    for path in paths:
        if len(path) <= 4 or len(paths) < 2:
            out.append([])
            continue
        rare = sorted((v for v in path if counts[v] < len(paths)), key=lambda v: counts[v])
        chosen = set(rare[:most])
        out.append([v for v in path if v in chosen])
    return out


def _dominance_partition(ds: xr.Dataset, variable: str) -> tuple[int, list[str]]:
    """The loop partition to draw (the one with most loops through `variable`, else the one
    with most loops) and its loops."""
    keys = [str(k) for k in ds["loop"].values]
    parts = [int(p) for p in ds["partition"].values]
    through = {
        p: sum(
            variable in str(v).split(" -> ")
            for v, q in zip(ds["loop_variables"].values, parts)
            if q == p
        )
        for p in set(parts)
    }
    part = max(sorted(through), key=lambda p: (through[p], parts.count(p)))
    return part, [k for k, p in zip(keys, parts) if p == part]


def plot_loop_dominance(
    ds: xr.Dataset,
    run: pd.DataFrame,
    variable: str = "Active Buyers",
    path: str | Path | None = None,
    *,
    title: str | None = None,
    top: int = DOMINANCE_LOOPS,
    units: str | None = None,
    only_through: bool = False,
):
    """Which feedback loops drive a run: `variable`'s behaviour (from `run`, a DataFrame
    indexed by time) in a panel above the relative loop scores of `ds` (as
    `flywheel_sd.ltm.loop_dominance` returns it), stacked over time: reinforcing shares
    above zero, balancing shares below, one colour per loop (the `top` loops by mean
    |relative score|; the rest in one grey band).

    Relative scores are shares within a loop partition (loops that share no variable are
    not compared); the partition drawn is the one with most loops through `variable`. With
    `only_through`, only the loops through `variable` are drawn, their relative scores
    renormalised among themselves (`flywheel_sd.ltm.variable_scores`, the shares
    ``dominance_periods(ds, variable=...)`` reads). The units of `variable` default to the
    model's (``run.attrs["model"]``)."""
    if variable not in run.columns:
        raise KeyError(f"{variable!r} is not in the run")
    known: dict[str, str] = {}
    if run.attrs.get("model"):
        known = model_units(xr.Dataset(attrs={"model": str(run.attrs["model"])}))
    unit = time_units(known)
    units = units if units is not None else known.get(variable, "")
    fig, (above, below) = plt.subplots(
        2,
        1,
        sharex=True,
        figsize=(10, 7.5),
        height_ratios=(1, 2),
        layout="constrained",
    )
    above.plot(run.index, run[variable], color="black", lw=1.8)
    above.set_title(variable, loc="left", fontsize=10)
    above.set_ylabel(readable_units(units, variable) or variable)
    format_axis(above.yaxis, units)
    above.grid(alpha=0.3)

    handles: list = []
    times = ds["time"].to_numpy()
    note = ""
    keys: list[str] = []
    if only_through:  # the loops through `variable`, renormalised among themselves
        from .ltm import variable_scores

        through = variable_scores(ds, variable)
        keys = [str(k) for k in through["loop"].values]
        rel = through.to_numpy()
    elif ds.sizes.get("loop", 0):
        _, keys = _dominance_partition(ds, variable)
        rel = ds["relative_score"].sel(loop=keys).to_numpy()
    if keys:
        strength = np.abs(rel).mean(axis=1)
        order = [int(i) for i in np.argsort(-strength, kind="stable")]
        shown, rest = order[:top], order[top:]
        # tab10 without its grey, which stays for the other loops
        palette = [plt.get_cmap("tab10")(i) for i in (0, 1, 2, 3, 4, 5, 6, 8, 9)]
        paths = [str(ds["loop_variables"].sel(loop=keys[i]).values).split(" -> ") for i in shown]
        labels = [
            loop_label(ds, keys[i], limit=90, via=via)
            for i, via in zip(shown, _distinguishing(paths))
        ]
        colours = [palette[n % len(palette)] for n in range(len(shown))]
        pos = [np.clip(rel[i], 0, None) for i in shown]
        neg = [np.clip(rel[i], None, 0) for i in shown]
        if rest:  # the other loops' positive and negative parts, each in one band
            labels.append(f"{len(rest)} other loops")
            colours.append((0.72, 0.72, 0.72, 1.0))
            pos.append(np.clip(rel[rest], 0, None).sum(axis=0))
            neg.append(np.clip(rel[rest], None, 0).sum(axis=0))
        below.stackplot(times, pos, colors=colours, lw=0)
        below.stackplot(times, neg, colors=colours, lw=0)
        handles = [Patch(facecolor=c, label=_literal(t)) for t, c in zip(labels, colours)]
        others = ds.sizes["loop"] - len(keys)
        if only_through:
            note = (
                f" ({len(keys)} loops through {variable}, their shares among themselves; "
                f"{others} other loops not counted)"
                if others
                else ""
            )
        elif others:
            note = (
                f" ({len(keys)} loops of the partition through {variable}; "
                + ("1 loop that shares" if others == 1 else f"{others} loops that share")
                + " no variable with them not shown)"
            )
    else:
        empty = f"no feedback loop through {variable}" if only_through else "no feedback loops"
        below.text(0.5, 0.5, empty, ha="center", va="center",
                   transform=below.transAxes)  # fmt: skip
    below.axhline(0, color="black", lw=0.8)
    below.set_ylim(-1.05, 1.05)
    below.yaxis.set_major_formatter(ticker.PercentFormatter(1.0, decimals=0))
    below.set_ylabel("relative loop score\n(+ reinforcing, \N{MINUS SIGN} balancing)")
    below.set_title(
        "Share of the change each loop explains" + note, loc="left", fontsize=10, wrap=True
    )
    below.grid(alpha=0.3)
    below.margins(x=0)
    below.set_xlabel(f"time ({unit[1]})" if unit[1] else "time")
    fig.suptitle(title or f"Loop dominance: which feedback loops drive {variable}")
    if handles:
        # Short names (the loop index's) beside the chart; long descriptions below it, so
        # that the chart keeps its width.
        wide = max(len(h.get_label()) for h in handles) > 45
        if wide:
            fig.set_figheight(fig.get_figheight() + 0.22 * len(handles))
        fig.legend(
            handles=handles,
            loc="outside lower center" if wide else "outside right center",
            frameon=False,
            fontsize=9,
            title="loop",
        )
    return _save(fig, path)


__all__ += ["loop_label", "plot_loop_dominance"]


# -- the dominant loops as a causal-loop diagram (issue 14) -----------------------------------
#: At most this many variables are drawn by `plot_dominant_loops`; longer loops are shown
#: through their stocks, the variables where the loops shown meet, and evenly spaced others.
CLD_NODES = 18
_SIGN_COLOUR = {1: "#1a7f37", -1: "#c0392b", 0: "#7f7f7f"}
_SIGN_TEXT = {1: "+", -1: "\N{MINUS SIGN}", 0: "0"}


def _base_name(label: str) -> str:
    """A variable's name without its subscripts: 'Active Sellers[High]' -> 'Active Sellers'."""
    return label.split("[")[0].strip()


def _link_signs(ds: xr.Dataset, j: int) -> dict[tuple[str, str], int]:
    """(source, target) variable -> the sign at time index `j` of the link score of largest
    magnitude among the links of their elements (0: the link did not move then)."""
    out: dict[tuple[str, str], tuple[float, int]] = {}
    if "link" not in ds.dims:
        return {}
    scores = ds["link_score"].to_numpy()[:, j]
    for s, t, v in zip(ds["link_source"].values, ds["link_target"].values, scores):
        key = (_base_name(str(s)), _base_name(str(t)))
        if key not in out or abs(v) > out[key][0]:
            out[key] = (abs(float(v)), int(np.sign(v)))
    return {k: v[1] for k, v in out.items()}


def _kept_variables(chains: list[list[str]], stocks: set[str], limit: int) -> set[str]:
    """The variables drawn: every one if there are at most `limit`; else the stocks, the
    variables where the loops meet or part (more than one predecessor or successor among
    the loops drawn) and, in the stretches between, every second, third, ... variable
    (the densest spacing that stays within `limit`, or none)."""
    every = {v for chain in chains for v in chain}
    if len(every) <= limit:
        return every
    before: dict[str, set[str]] = {}
    after: dict[str, set[str]] = {}
    for chain in chains:
        for i, v in enumerate(chain):
            before.setdefault(v, set()).add(chain[i - 1])
            after.setdefault(v, set()).add(chain[(i + 1) % len(chain)])
    core = {v for v in every if v in stocks or len(before[v]) > 1 or len(after[v]) > 1}
    for chain in chains:  # a loop keeps at least its first variable (a stock, if any)
        if not core & set(chain):
            core.add(chain[0])
    for gap in range(1, max(len(c) for c in chains) + 1):
        kept = set(core)
        for chain in chains:
            marks = [i for i, v in enumerate(chain) if v in core]
            for a, b in zip(marks, [*marks[1:], marks[0] + len(chain)]):
                for n, i in enumerate(range(a + 1, b), start=1):
                    if n % (gap + 1) == 0 and b - i > 1:
                        kept.add(chain[i % len(chain)])
        if len(kept) <= limit:
            return kept
    return core


#: Spacing of neighbouring variables in `plot_dominant_loops`'s layout (data units; the
#: figure draws CLD_INCH inches per unit).
CLD_SPACING, CLD_INCH = 2.3, 0.55
_LOOP_BOX = 1.5  # a loop's label (data units), kept clear of the variables' labels


def _bulge(
    a: np.ndarray,
    b: np.ndarray,
    n: int,
    away: np.ndarray,
    inward: bool = False,
    height: float | None = None,
) -> list[np.ndarray]:
    """`n` points, evenly spaced, on a curve from `a` to `b` bowed away from `away` (towards
    it if `inward`), with room for `CLD_SPACING` between neighbours."""
    mid = (a + b) / 2
    chord = float(np.linalg.norm(b - a))
    normal = np.array([-(b - a)[1], (b - a)[0]])
    normal = normal / chord if chord > 0 else np.array([0.0, 1.0])
    if (np.dot(normal, mid - away) < 0) != inward:
        normal = -normal
    length = (n + 1) * CLD_SPACING
    apex = max(1.5 * CLD_SPACING, 0.55 * chord, math.sqrt(max(length**2 - chord**2, 0.0)) / 2)
    apex = height if height is not None else apex
    control = mid + normal * 2 * apex
    fine = np.linspace(0, 1, 400)[:, None]
    curve = (1 - fine) ** 2 * a + 2 * (1 - fine) * fine * control + fine**2 * b
    arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(curve, axis=0), axis=1))])
    marks = np.linspace(0, arc[-1], n + 2)[1:-1]
    return [curve[int(np.searchsorted(arc, m))] for m in marks]


def _room(points: list[np.ndarray], taken: np.ndarray) -> float:
    """The least distance from `points` to the points `taken`."""
    gaps = np.linalg.norm(np.array(points)[:, None, :] - taken[None], axis=2)
    return float(gaps.min())


def _layout(chains: list[list[str]]) -> tuple[dict[str, np.ndarray], list[np.ndarray]]:
    """Positions of the variables and of each loop's label: the first loop's variables on a
    circle, clockwise in causal order, its label at the centre; each further loop's own
    variables on a curve bowed outwards between the variables it shares with those placed
    (its label between that curve and the shared stretch), or on its own circle beside
    them if it shares none."""
    pos: dict[str, np.ndarray] = {}
    labels: list[np.ndarray] = []
    right = 0.0
    ring: tuple[np.ndarray, float] | None = None  # the first loop's circle
    for chain in chains:
        placed = [i for i, v in enumerate(chain) if v in pos]
        if not placed:
            n = len(chain)
            radius = max(1.4, n * CLD_SPACING / (2 * math.pi))
            centre = np.array([right + radius + (1.5 if pos else 0.0), 0.0])
            for i, v in enumerate(chain):
                angle = math.pi / 2 - 2 * math.pi * i / n
                pos[v] = centre + radius * np.array([math.cos(angle), math.sin(angle)])
            right = centre[0] + radius + 1.0
            labels.append(centre)
            ring = ring or (centre, radius)
            continue
        centroid = np.mean(list(pos.values()), axis=0)
        own: list[np.ndarray] = []
        ends: list[np.ndarray] = []
        for a, b in zip(placed, [*placed[1:], placed[0] + len(chain)]):
            new = [chain[i % len(chain)] for i in range(a + 1, b)]
            if not new:
                continue
            start, end = pos[chain[a]], pos[chain[b % len(chain)]]
            if np.allclose(start, end):  # one shared variable: a loop out and back
                out = start - centroid
                out = out / (np.linalg.norm(out) or 1.0)
                side = np.array([-out[1], out[0]]) * CLD_SPACING * 0.6
                start, end = start + side, start - side
            taken = np.array([*pos.values(), *labels])
            # outwards, unless the other side has more room (another loop bowed out there)
            # (or nested inside another loop's bulge, or inwards, whichever has most room)
            points = _bulge(start, end, len(new), centroid)
            if _room(points, taken) < 1.3 * CLD_SPACING:
                others = [
                    _bulge(start, end, len(new), centroid, inward=side, height=h * CLD_SPACING)
                    for side in (False, True)
                    for h in (0.75, 1.2)
                ]
                points = max((points, *others), key=lambda ps: _room(ps, taken))
            for v, p in zip(new, points):
                pos[v] = p
            own += points
            ends += [start, end]
        middle = np.mean(own, axis=0) if own else None
        if len(chain) == 2:  # two variables: the label between them, an arrow either side
            labels.append((pos[chain[0]] + pos[chain[1]]) / 2)
        elif (
            middle is not None and ring is not None and np.linalg.norm(middle - ring[0]) > ring[1]
        ):
            # between the first loop's circle and this loop's own variables
            out = middle - ring[0]
            far = float(np.linalg.norm(out))
            labels.append(ring[0] + out / far * (far + ring[1]) / 2)
        elif middle is not None:
            labels.append(0.5 * middle + 0.5 * np.mean(ends, axis=0))
        else:
            labels.append(np.mean([pos[v] for v in chain], axis=0) + np.array([0.0, -0.8]))
        # clear of the labels before it: towards its own variables, or else downwards
        way = (middle if middle is not None else labels[-1]) - labels[-1]
        size = float(np.linalg.norm(way))
        way = way / size if size > 1e-9 else np.array([0.0, -1.0])
        for _ in range(20):
            if min(float(np.linalg.norm(labels[-1] - q)) for q in labels[:-1]) > _LOOP_BOX:
                break
            labels[-1] = labels[-1] + 0.3 * way
    return pos, labels


def _share_text(share: float) -> str:
    """|share| as a percentage; '<1%' for a loop active but below half a percent."""
    return "<1%" if 0 < abs(share) < 0.005 else f"{abs(share):.0%}"


def _box(label: str, fontsize: float = 9) -> tuple[float, float]:
    """A label's box, width and height in data units of `plot_dominant_loops`."""
    lines = label.split("\n")
    width = (max(len(s) for s in lines) * 0.56 * fontsize + 12) / 72 / CLD_INCH
    return width, (len(lines) * 1.25 * fontsize + 12) / 72 / CLD_INCH


def _separate(
    pos: dict[str, np.ndarray],
    fixed: list[np.ndarray],
    sizes: Mapping[str, tuple[float, float]],
    rounds: int = 400,
) -> None:
    """Push apart labels whose boxes (`sizes`) overlap, and labels off the loops' labels in
    `fixed`, each time along the axis of the smaller overlap."""
    names = list(pos)
    for _ in range(rounds):
        moved = False
        for i, u in enumerate(names):
            others = [pos[v] for v in names[i + 1 :]] + fixed
            for k, q in enumerate(others):
                p = pos[u]
                dx, dy = p[0] - q[0], p[1] - q[1]
                fixed_one = k >= len(names) - i - 1  # a loop's label: a circle
                w, h = sizes[u]
                w2, h2 = (_LOOP_BOX, _LOOP_BOX) if fixed_one else sizes[names[i + 1 + k]]
                ox = (w + w2) / 2 - abs(dx)
                oy = (h + h2) / 2 - abs(dy)
                if ox <= 0 or oy <= 0:
                    continue
                moved = True
                step = np.array([ox * math.copysign(1, dx or 1), 0.0])
                if oy * 1.8 < ox:
                    step = np.array([0.0, oy * math.copysign(1, dy or 1)])
                share = 1.0 if fixed_one else 0.5  # a loop's label stays put
                pos[u] = p + step * share * 0.6
                if share < 1:
                    v = names[i + 1 + k]
                    pos[v] = pos[v] - step * 0.5 * 0.6
        if not moved:
            return


def _shrink(label: str, direction: np.ndarray, fontsize: float) -> float:
    """How far (points) from a label's centre an arrow leaving in `direction` meets its box."""
    lines = label.split("\n")
    half_w = max(len(s) for s in lines) * 0.55 * fontsize / 2 + 5
    half_h = len(lines) * 1.25 * fontsize / 2 + 5
    ux, uy = abs(float(direction[0])), abs(float(direction[1]))
    return min(half_w / ux if ux > 1e-9 else math.inf, half_h / uy if uy > 1e-9 else math.inf)


def plot_dominant_loops(
    ds: xr.Dataset,
    at: float,
    path: str | Path | None = None,
    top: int = 3,
    *,
    title: str | None = None,
    variable: str | None = None,
    max_nodes: int = CLD_NODES,
):
    """A simplified causal-loop diagram of the `top` loops that explain most of the change
    at time `at` (the saved time nearest it), from `ds` as `flywheel_sd.ltm.loop_dominance`
    returns it.

    Each loop's variables are labelled nodes (stocks boxed); an arrow joins each variable
    to the next of the loop, marked + or - (drawn as a minus sign) by the sign of its link
    score at that time (0: the link did not move then). Each loop's id and R (reinforcing)
    or B (balancing, by the sign of its score then) sit in its middle, and its arrows are
    drawn in its colour with a width in proportion to its share (|relative score|).

    Shares compare loops of one partition (loops that share no variable are not compared):
    the loops drawn are those of the partition with most loops through `variable` (default:
    the partition with most loops). Long loops are simplified to at most `max_nodes`
    variables: the stocks, the variables where the loops meet or part, and evenly spaced
    others; an arrow that passes variables left out is dashed and carries the product of
    their signs.

    Raises
    ------
    ParameterError
        `ds` has no link scores (an ensemble summary), or no loop is active at `at`.
    """
    from matplotlib.patches import FancyArrowPatch

    from .diagram import _STOCK, _label
    from .errors import ParameterError

    if "link_score" not in ds or "loop" not in ds.dims:
        raise ParameterError(
            "plot_dominant_loops needs the result of loop_dominance (with link scores)"
        )
    times = ds["time"].to_numpy()
    j = int(np.abs(times - at).argmin())
    t = float(times[j])
    rel = ds["relative_score"].to_numpy()[:, j]
    _, members = _dominance_partition(ds, variable or "")
    allowed = set(members)
    order = [
        int(i)
        for i in np.argsort(-np.abs(rel), kind="stable")
        if rel[i] != 0 and str(ds["loop"].values[i]) in allowed
    ][:top]
    if not order:
        raise ParameterError(f"no loop is active at t = {t:g}: nothing dominates then")
    keys = [str(ds["loop"].values[i]) for i in order]
    shares = [float(rel[i]) for i in order]
    chains = [str(ds["loop_variables"].values[i]).split(" -> ") for i in order]
    stocks = set(json.loads(ds.attrs.get("stocks", "[]")))
    kept = _kept_variables(chains, stocks, max_nodes)
    short = [[v for v in chain if v in kept] for chain in chains]
    signs = _link_signs(ds, j)
    # the longest loop on the circle, the others bowed off it; labels back in share order
    by_size = sorted(range(len(short)), key=lambda i: -len(short[i]))
    pos, placed = _layout([short[i] for i in by_size])
    centres = [placed[by_size.index(i)] for i in range(len(short))]
    texts = {v: _label(v, 16) for v in pos}
    _separate(pos, centres, {v: _box(texts[v]) for v in pos})

    known: dict[str, str] = {}
    if ds.attrs.get("model_path"):
        known = model_units(xr.Dataset(attrs={"model": ds.attrs["model_path"]}))
    one, _ = time_units(known)
    when = f"{one} {t:g}" if one else f"t = {t:g}"
    palette = [plt.get_cmap("tab10")(i) for i in (0, 1, 2, 4, 5, 6, 8, 9)]

    every = [*pos.values(), *centres]
    margin = 2.0 if any(len(c) == 1 for c in short) else 0.0  # room for a one-variable loop
    x0 = min(float(p[0]) for p in every) - max(1.3, margin)
    x1 = max(float(p[0]) for p in every) + max(1.3, margin)
    y0 = min(float(p[1]) for p in every) - max(0.8, margin)
    y1 = max(float(p[1]) for p in every) + max(0.8, margin)
    legend_rows = math.ceil((len(keys) + 5) / 2)
    extra = 1.0 + 0.24 * legend_rows  # inches: the title, the legend and the note
    fig, ax = plt.subplots(figsize=(max((x1 - x0) * CLD_INCH, 10.0), (y1 - y0) * CLD_INCH + extra))
    fig.subplots_adjust(left=0.01, right=0.99, top=1 - 0.7 / fig.get_figheight(),
                        bottom=(extra - 0.7) / fig.get_figheight())  # fmt: skip
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    ax.set_aspect("equal")
    ax.axis("off")
    drawn: dict[tuple[str, str], int] = {}
    marked: set[tuple[tuple[str, str], int]] = set()

    def widths(share: float) -> tuple[float, float]:
        lw = 1.2 + 5.0 * abs(share)
        return lw, 9 + 2.2 * lw

    for n, (share, chain, full) in enumerate(zip(shares, short, chains)):
        colour = palette[n % len(palette)]
        index = {v: i for i, v in enumerate(full)}
        lw, head = widths(share)
        for i, target in enumerate(chain):
            source = chain[i - 1]
            a, b = index[source], index[target]
            steps = [full[k % len(full)] for k in range(a, b + (len(full) if b <= a else 0) + 1)]
            sign = 1
            for x, z in itertools.pairwise(steps):
                sign *= signs.get((x, z), 0)
            edge = (source, target)
            p, q = pos[source], pos[target]
            # bowed away from the loop's label, as much as a circle through its variables
            bend = max(0.12, min(0.6, math.tan(math.pi / max(len(chain), 2)) / 2))
            rad = bend + 0.14 * drawn.get(edge, 0)
            drawn[edge] = drawn.get(edge, 0) + 1
            mid = (p + q) / 2
            if np.dot(np.array([(q - p)[1], -(q - p)[0]]), mid - centres[n]) < -1e-9:
                rad = -rad
            if source == target:  # a one-variable loop: out and back, away from its label
                out = p - centres[n]
                size = float(np.linalg.norm(out))
                out = out / size if size > 1e-9 else np.array([0.0, 1.0])
                side = np.array([-out[1], out[0]]) * 0.6
                p, q = p + out * 0.4 + side, p + out * 0.4 - side
                rad = 1.4
                if np.dot(np.array([(q - p)[1], -(q - p)[0]]), out) < 0:
                    rad = -rad
                shrink_a = shrink_b = 0.0
            else:
                u = (q - p) / (np.linalg.norm(q - p) or 1.0)
                shrink_a = _shrink(texts[source], u, 9)
                shrink_b = _shrink(texts[target], u, 9) + 2
            ax.add_patch(
                FancyArrowPatch(
                    tuple(p),
                    tuple(q),
                    arrowstyle="-|>",
                    mutation_scale=head,
                    connectionstyle=f"arc3,rad={rad}",
                    shrinkA=shrink_a,
                    shrinkB=shrink_b,
                    color=colour,
                    linewidth=lw,
                    linestyle=(0, (3, 1.5)) if len(steps) > 2 else "-",
                    alpha=0.9,
                    zorder=2,
                )
            )
            # the sign beside the arc's middle (arc3's control point, as matplotlib takes it)
            mid = (p + q) / 2
            control = mid + rad * np.array([(q - p)[1], -(q - p)[0]])
            span = float(np.linalg.norm(q - p)) or 1.0
            cut_a, cut_b = (c / 72 / CLD_INCH / span for c in (shrink_a, shrink_b))
            m = min(max((cut_a + 1 - cut_b) / 2, 0.2), 0.8)  # the middle of the arrow drawn
            mark = (1 - m) ** 2 * p + 2 * (1 - m) * m * control + m**2 * q
            if (edge, sign) in marked:  # loops sharing a link: its sign once
                continue
            marked.add((edge, sign))
            ax.text(
                float(mark[0]),
                float(mark[1]),
                _SIGN_TEXT[sign],
                ha="center",
                va="center",
                fontsize=12,
                fontweight="bold",
                color=_SIGN_COLOUR[sign],
                bbox={"boxstyle": "circle,pad=0.1", "fc": "white", "ec": _SIGN_COLOUR[sign]},
                zorder=7,  # above the labels: a sign is never hidden
            )
    for n, (key, share, centre) in enumerate(zip(keys, shares, centres)):
        colour = palette[n % len(palette)]
        ax.text(
            float(centre[0]),
            float(centre[1]),
            f"{key}\n{'R' if share > 0 else 'B'} {_share_text(share)}",
            ha="center",
            va="center",
            fontsize=12,
            fontweight="bold",
            color=colour,
            bbox={"boxstyle": "circle,pad=0.3", "fc": "white", "ec": colour, "lw": 2},
            zorder=4,
        )
    for v, (x, y) in pos.items():
        box = (
            {"boxstyle": "square,pad=0.35", **_STOCK}
            if v in stocks
            else {"boxstyle": "round,pad=0.3", "fc": "white", "ec": "#999999", "lw": 0.8}
        )
        ax.text(x, y, texts[v], ha="center", va="center", fontsize=9, bbox=box, zorder=6)
    shares_text = ", ".join(f"{k} {_share_text(s)}" for k, s in zip(keys, shares))
    rest = max(1 - sum(abs(s) for s in shares), 0.0)
    others = len(members) - len(order)
    explained = f"; the other {others} loops {_share_text(rest)}" if others else ""
    fig.suptitle(
        title
        or f"Dominant feedback loops at {when}: shares of the change {shares_text}{explained}",
        fontsize=12,
        y=1 - 0.25 / fig.get_figheight(),
    )
    handles: list = []
    for n, (key, s) in enumerate(zip(keys, shares)):
        kind = "reinforcing" if s > 0 else "balancing"
        name = loop_label(ds, key, limit=70)
        handles.append(
            Line2D(
                [],
                [],
                color=palette[n % len(palette)],
                lw=widths(s)[0],
                label=(
                    f"{name} ({_share_text(s)})"
                    if kind in name
                    else f"{name} ({kind}, {_share_text(s)})"
                ),
            )
        )
    marks = (
        (1, "+", "+ : cause and effect move the same way (link score > 0)"),
        (-1, "\N{MINUS SIGN}", "\N{MINUS SIGN} : they move opposite ways (link score < 0)"),
        (0, "0", "0 : the cause did not move at that time"),
    )
    for sign, text, label in marks:
        handles.append(
            Line2D([], [], ls="none", marker=f"${text}$", markersize=9,
                   color=_SIGN_COLOUR[sign], label=label)
        )  # fmt: skip
    handles += [
        Line2D([], [], color="black", lw=1.5, ls=(0, (3, 1.5)),
               label="dashed: through variables not drawn (sign: their product)"),
        Patch(label="stock (a quantity that accumulates)", **_STOCK),
    ]  # fmt: skip
    fig.legend(
        handles=handles,
        loc="lower center",
        ncols=2,
        frameon=False,
        fontsize=9,
        bbox_to_anchor=(0.5, 0.02 / fig.get_figheight()),
        title="Line width: the loop's share of the change (|relative loop score| at "
        f"{when}); R reinforcing, B balancing",
        title_fontsize=9,
    )
    return _save(fig, path)


__all__ += ["plot_dominant_loops"]
