"""Matplotlib figures of comparisons and metrics. Each returns the Figure and, given a path,
saves it there (the format follows the suffix: .png, .svg, .pdf).

Figures are meant to be read without the code: a title, axis labels with units in words
(``metrics.readable_units``), tick labels with SI suffixes ("13.3M", "$1.2B") and never an
offset such as ``1e7``, and one legend per figure, outside the panels."""

from __future__ import annotations

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
):
    """Which feedback loops drive a run: `variable`'s behaviour (from `run`, a DataFrame
    indexed by time) in a panel above the relative loop scores of `ds` (as
    `flywheel_sd.ltm.loop_dominance` returns it), stacked over time: reinforcing shares
    above zero, balancing shares below, one colour per loop (the `top` loops by mean
    |relative score|; the rest in one grey band).

    Relative scores are shares within a loop partition (loops that share no variable are
    not compared); the partition drawn is the one with most loops through `variable`. The
    units of `variable` default to the model's (``run.attrs["model"]``)."""
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
    if ds.sizes.get("loop", 0):
        _, keys = _dominance_partition(ds, variable)
        rel = ds["relative_score"].sel(loop=keys).to_numpy()
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
        if others:
            note = (
                f" ({len(keys)} loops of the partition through {variable}; "
                + ("1 loop that shares" if others == 1 else f"{others} loops that share")
                + " no variable with them not shown)"
            )
    else:
        below.text(0.5, 0.5, "no feedback loops", ha="center", va="center",
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
