"""Sensitivity analysis of sweep results: Sobol and Morris indices (SALib), tornado and fan
charts.

Analyses read the design back from the sweep's attrs (``design``: kind, parameter names,
bounds and options), so a sweep result is all they need. Charts are drawn on a
``matplotlib.figure.Figure`` (no pyplot state, so they work headless), saved to `path` when
given, and returned.
"""

from __future__ import annotations

import contextlib
import json
import os
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from ..designs import _seed_int
from ..errors import ParameterError, WideIntervalWarning

__all__ = ["fan_chart", "indices_chart", "sensitivity", "tornado_chart"]

METHODS = ("sobol", "morris")
#: A Sobol index is poorly resolved when the half-width of its confidence interval exceeds
#: both the index's size and this floor (indices lie in [0, 1]; a negligible parameter
#: with a tight interval around zero is resolved well enough).
WIDE_CONF_FLOOR = 0.05
# design kind (None when the sweep records none) -> its analysis
_DEFAULT_METHOD: dict[str | None, str] = {"saltelli": "sobol", "morris": "morris"}


def _design_info(result: xr.Dataset) -> dict:
    try:
        return json.loads(result.attrs["design"])
    except (KeyError, TypeError, json.JSONDecodeError) as err:
        raise ParameterError(
            "this Dataset is not a flywheel_sd sweep result (no 'design' in its attrs)"
        ) from err


def _metric_values(result: xr.Dataset, metric: str | Callable) -> tuple[str, np.ndarray]:
    """One value per run: a metric variable of the sweep, or a metric evaluated on it."""
    if isinstance(metric, str) and metric in result.data_vars:
        da = result[metric]
        name = metric
    else:
        if isinstance(metric, str):
            from .. import metrics as registry

            func: Callable = registry.get(metric)
            name = metric
        elif callable(metric):
            func = metric
            name = getattr(metric, "__name__", "metric")
        else:
            raise ParameterError(f"metric must be a name or a function, not {metric!r}")
        try:
            da = func(result)
        except KeyError as err:
            raise ParameterError(
                f"metric {name!r} needs variable {err.args[0]!r}, which "
                "the sweep did not keep (add it to outputs=)"
            ) from err
        da = da if isinstance(da, xr.DataArray) else xr.DataArray(da)
    if set(da.dims) != {"run"}:
        raise ParameterError(
            f"metric {name!r} must give one value per run (dims ('run',)), not dims {da.dims}"
        )
    return name, np.asarray(da.values, dtype=float)


def sensitivity(
    result: xr.Dataset,
    metric: str | Callable,
    *,
    method: str | None = None,
    conf_level: float = 0.95,
    num_resamples: int = 100,
    seed: int | np.random.Generator | None = None,
) -> pd.DataFrame:
    """Sobol (first-order and total) or Morris indices of a scalar metric of a sweep.

    Parameters
    ----------
    result : xarray.Dataset
        A `sweep` of a ``designs.saltelli`` design (Sobol) or ``designs.morris`` design.
    metric : str or callable
        A metric variable of the sweep (``metrics=`` when sweeping), a registered metric
        name, or a function of the Dataset giving one value per run.
    method : {"sobol", "morris"}, optional
        Default: what the design was built for.
    conf_level, num_resamples : float, int
        Bootstrap confidence intervals (SALib).
    seed : int, Generator or None
        Seed of the bootstrap.

    Returns
    -------
    pandas.DataFrame
        One row per parameter: ``S1, S1_conf, ST, ST_conf`` (Sobol) or
        ``mu, mu_star, sigma, mu_star_conf`` (Morris).

    References
    ----------
    Saltelli, A. et al. (2010). Variance based sensitivity analysis of model output.
    Computer Physics Communications 181(2), 259-270. doi:10.1016/j.cpc.2009.09.018
    Campolongo, F., Cariboni, J., Saltelli, A. (2007). An effective screening design for
    sensitivity analysis of large models. Environmental Modelling & Software 22(10),
    1509-1518. doi:10.1016/j.envsoft.2006.10.004
    """
    info = _design_info(result)
    kind = info.get("kind")
    method = method or _DEFAULT_METHOD.get(kind)
    if method not in METHODS:
        raise ParameterError(
            f"sensitivity needs a saltelli design (method='sobol') or a morris design "
            f"(method='morris'); this sweep ran a {kind!r} design"
            + ("" if method is None else f" and method {method!r} is unknown")
        )
    wanted = {"sobol": "saltelli", "morris": "morris"}[method]
    if kind != wanted:
        raise ParameterError(
            f"method={method!r} needs a {wanted} design; this sweep ran a {kind!r} design"
        )
    name, y = _metric_values(result, metric)
    bad = ~np.isfinite(y)
    if bad.any():
        raise ParameterError(
            f"metric {name!r} is not finite for {int(bad.sum())} of {len(y)} "
            "runs (failed runs?); Sobol and Morris need every run"
        )
    names = info["names"]
    problem = {
        "num_vars": len(names),
        "names": names,
        "bounds": [info["bounds"][n] for n in names],
    }
    s = _seed_int(seed)
    options = info.get("options", {})
    if method == "sobol":
        from SALib.analyze import sobol as sobol_analyze

        out = sobol_analyze.analyze(
            problem,
            y,
            calc_second_order=bool(options.get("calc_second_order")),
            num_resamples=num_resamples,
            conf_level=conf_level,
            seed=s,
        )
        frame = pd.DataFrame(
            {k: out[k] for k in ("S1", "S1_conf", "ST", "ST_conf")},
            index=pd.Index(names, name="parameter"),
        )
        _warn_wide_intervals(frame, name, options.get("n"), len(y))
    else:
        from SALib.analyze import morris as morris_analyze

        x = np.column_stack([np.asarray(result[n].values, dtype=float) for n in names])
        out = morris_analyze.analyze(
            problem,
            x,
            y,
            num_resamples=num_resamples,
            conf_level=conf_level,
            num_levels=int(options.get("num_levels", 4)),
            seed=s,
        )
        frame = pd.DataFrame(
            {
                k: np.asarray(out[k], dtype=float)
                for k in ("mu", "mu_star", "sigma", "mu_star_conf")
            },
            index=pd.Index(names, name="parameter"),
        )
    frame.attrs.update(metric=name, method=method, runs=len(y), conf_level=conf_level)
    return frame


def _warn_wide_intervals(frame: pd.DataFrame, metric: str, n, runs: int) -> None:
    """One `WideIntervalWarning` naming the parameters whose S1 or ST interval is wider
    than the index (see `WIDE_CONF_FLOOR`)."""
    wide = []
    for param, row in frame.iterrows():
        parts = [
            f"{k} {row[k]:.3g} +/- {row[k + '_conf']:.3g}"
            for k in ("S1", "ST")
            if row[k + "_conf"] > max(abs(row[k]), WIDE_CONF_FLOOR)
        ]
        if parts:
            wide.append(f"{param!r} ({', '.join(parts)})")
    if wide:
        hint = f"raise n (now {n}; try {4 * int(n)})" if n else f"raise n ({runs} runs now)"
        warnings.warn(
            f"Sobol indices of {metric!r} with a confidence interval wider than "
            f"the index: {'; '.join(wide)}; too few runs to tell their size: {hint}",
            WideIntervalWarning,
            stacklevel=3,
        )


# -- charts ---------------------------------------------------------------------------------
def _figure(ax, figsize):
    from matplotlib.figure import Figure

    if ax is not None:
        return ax.figure, ax
    fig = Figure(figsize=figsize, layout="constrained")
    return fig, fig.subplots()


def _save(fig, path) -> None:
    if path is not None:
        os.makedirs(os.path.dirname(os.path.abspath(path)) or ".", exist_ok=True)
        fig.savefig(path, dpi=120, bbox_inches="tight")


def indices_chart(
    table: pd.DataFrame,
    path: str | os.PathLike | None = None,
    *,
    ax: Any = None,
    title: str | None = None,
):
    """Chart of a `sensitivity` table: the indices as horizontal bars, the most influential
    parameter on top, error bars for their confidence intervals; a title saying what is
    shown, and the legend (which also says what the error bars are) below the axes, or to
    their right when drawn on `ax`. Sobol: ST and S1 per parameter; Morris: mu*.

    Returns the ``matplotlib.figure.Figure`` (saved to `path` when given)."""
    from .. import metrics
    from ..metrics import readable_units
    from ..plotting import format_axis

    method = str(table.attrs.get("method") or ("sobol" if "ST" in table else "morris"))
    metric = str(table.attrs.get("metric") or "the metric")
    key = "ST" if method == "sobol" else "mu_star"
    table = table.sort_values(key, ascending=False)
    runs = table.attrs.get("runs")
    of_runs = f", {runs:,} runs" if runs else ""
    conf = f"{table.attrs.get('conf_level', 0.95):.0%}"
    own = ax is None
    fig, ax = _figure(ax, (7.5, 0.5 * len(table) + 2.2))
    pos = np.arange(len(table))[::-1]
    if method == "sobol":
        ax.barh(
            pos + 0.2,
            table["ST"],
            height=0.4,
            xerr=table["ST_conf"],
            label="total effect (ST), with interactions",
        )
        ax.barh(
            pos - 0.2,
            table["S1"],
            height=0.4,
            xerr=table["S1_conf"],
            label="first-order effect (S1), alone",
        )
        ax.set_xlabel(f"Sobol index: share of the variance of {metric} (0\N{EN DASH}1)")
        what = "Sobol sensitivity indices"
    else:
        units = ""
        with contextlib.suppress(ParameterError):  # a metric of the sweep, not registered
            units = metrics.get(metric).units
        ax.barh(
            pos,
            table["mu_star"],
            xerr=table["mu_star_conf"],
            label="mu* (mean absolute elementary effect)",
        )
        words = readable_units(units, metric)
        ax.set_xlabel(
            _plain(
                f"mu*: mean absolute elementary effect on {metric}"
                + (f" ({words})" if words else "")
            )
        )
        format_axis(ax.xaxis, units)
        what = "Morris elementary effects"
    ax.set_title(title or f"What drives {metric}: {what}{of_runs}")
    ax.set_yticks(pos, list(table.index))
    ax.axvline(0, color="black", lw=0.8)
    ax.grid(axis="x", alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    legend = {
        "frameon": False,
        "fontsize": 8,
        "title": f"error bars: {conf} confidence interval",
        "title_fontsize": 8,
    }
    if own:
        fig.legend(handles, labels, loc="outside lower center", ncols=len(handles), **legend)
    else:
        ax.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.01, 1.0), **legend)
    _save(fig, path)
    return fig


def _units(result: xr.Dataset) -> dict[str, str]:
    """Vensim name -> units of the sweep's model (empty if its file is not at hand)."""
    from ..plotting import model_units

    return model_units(result)


def _metric_units(metric: str | Callable, name: str, known: dict[str, str]) -> str:
    """The units of a registered metric, or of a model variable used as the metric."""
    if isinstance(metric, str):
        from .. import metrics as registry

        try:
            return registry.get(metric).units or known.get(metric, "")
        except ParameterError:
            return known.get(metric, "")
    return ""


def _range_label(param: str, low: float, high: float, units: str) -> str:
    """'Ad Budget\n0 to $10M (US$ / month)': the range a parameter was varied over."""
    from ..metrics import format_number, readable_units
    from ..plotting import is_money

    prefix = "$" if is_money(units) else ""
    words = readable_units(units, param)
    words = "" if words == "index" else words  # a dimensionless range says it with its numbers
    span = f"{format_number(low, prefix=prefix)} to {format_number(high, prefix=prefix)}"
    return _plain(f"{param}\n{span}" + (f" ({words})" if words else ""))


def _plain(text: str) -> str:
    """`text` drawn as written: two "$" in one label would start matplotlib's math mode."""
    return text.replace("$", r"\$")


def tornado_chart(
    result: xr.Dataset,
    metric: str | Callable,
    path: str | os.PathLike | None = None,
    *,
    ax: Any = None,
    title: str | None = None,
):
    """Tornado chart of a one-at-a-time sweep (``designs.oat``): for each parameter, the
    change in the metric when the parameter alone is set to the low and to the high end of
    its range, from the base run; the widest bar on top. Ticks in SI units ("$1.2B"), the
    ranges and the base run's value in words and readable numbers; the legend sits to the
    right of the bars.

    Returns the ``matplotlib.figure.Figure`` (saved to `path` when given).
    """
    from ..metrics import format_number, readable_units
    from ..plotting import format_axis, is_money

    info = _design_info(result)
    if info.get("kind") != "oat":
        raise ParameterError(
            f"a tornado chart needs a one-at-a-time design (designs.oat); "
            f"this sweep ran a {info.get('kind')!r} design"
        )
    name, y = _metric_values(result, metric)
    varied = info["options"]["varied"]
    ends = info["options"]["end"]
    base = y[0]
    rows = []
    for param in info["names"]:
        low = next(y[i] for i, (v, e) in enumerate(zip(varied, ends)) if v == param and e == "low")
        high = next(
            y[i] for i, (v, e) in enumerate(zip(varied, ends)) if v == param and e == "high"
        )
        lo_b, hi_b = info["bounds"][param]
        rows.append((param, low - base, high - base, lo_b, hi_b))
    rows.sort(key=lambda r: abs(r[2] - r[1]) if np.isfinite(r[2] - r[1]) else -1)
    known = _units(result)
    units = _metric_units(metric, name, known)
    prefix = "$" if is_money(units) else ""
    fig, ax = _figure(ax, (7.5, 0.6 * len(rows) + 1.8))
    pos = np.arange(len(rows))
    ax.barh(pos, [r[1] for r in rows], color="tab:blue", label="parameter at the low end")
    ax.barh(pos, [r[2] for r in rows], color="tab:orange", label="parameter at the high end")
    labels = [_range_label(r[0], r[3], r[4], known.get(r[0], "")) for r in rows]
    ax.set_yticks(pos, labels, fontsize=8)
    ax.axvline(0, color="black", linewidth=0.8)
    words = readable_units(units, name)
    ax.set_xlabel(
        _plain(
            f"change in {name} from the base run's {format_number(base, prefix=prefix)}"
            + (f" ({words})" if words else "")
        )
    )
    format_axis(ax.xaxis, units)
    ax.grid(axis="x", alpha=0.3)
    ax.set_title(title or f"What moves {name}: each parameter alone at either end of its range")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    _save(fig, path)
    return fig


def fan_chart(
    result: xr.Dataset,
    variable: str,
    path: str | os.PathLike | None = None,
    *,
    percentiles: Sequence[float] = (5, 25, 50, 75, 95),
    ax: Any = None,
    title: str | None = None,
):
    """Fan chart of an output over time: percentile bands across the runs of a sweep
    (failed runs left out), the median as a line; SI ticks, the time and the output's
    units in words, the legend to the right of the fan.

    Returns the ``matplotlib.figure.Figure`` (saved to `path` when given).
    """
    from ..metrics import readable_units
    from ..plotting import format_axis, time_units

    if variable not in result.data_vars or "time" not in result[variable].dims:
        series = [str(v) for v in result.data_vars if "time" in result[v].dims]
        from ..errors import unknown_name_message

        raise ParameterError(unknown_name_message("output with a time series", variable, series))
    pct = sorted(float(p) for p in percentiles)
    if not pct or any(not 0 <= p <= 100 for p in pct):
        raise ParameterError(f"percentiles must lie in [0, 100], not {percentiles!r}")
    da = result[variable]
    if "status" in result:
        da = da.where(result["status"] == 1)
    values = np.asarray(da.transpose("run", "time").values, dtype=float)
    times = np.asarray(result["time"].values, dtype=float)
    if not np.isfinite(values).any():
        raise ParameterError(f"{variable!r} has no finite values to chart")
    bands = np.nanpercentile(values, pct, axis=0)
    fig, ax = _figure(ax, (7.5, 4))
    n = len(pct)
    for i in range(n // 2):
        alpha = 0.2 + 0.5 * (i + 1) / max(n // 2, 1)
        ax.fill_between(
            times,
            bands[i],
            bands[n - 1 - i],
            color="tab:blue",
            alpha=alpha * 0.6,
            linewidth=0,
            label=f"middle {pct[n - 1 - i] - pct[i]:g}% of runs ({pct[i]:g}th\N{EN DASH}"
            f"{pct[n - 1 - i]:g}th percentile)",
        )
    if n % 2:
        ax.plot(
            times,
            bands[n // 2],
            color="tab:blue",
            linewidth=1.5,
            label="median run" if pct[n // 2] == 50 else f"{pct[n // 2]:g}th percentile",
        )
    known = _units(result)
    units = known.get(variable, "") or known.get(variable.split("[")[0].strip(), "")
    unit = time_units(known)[1]
    ax.set_xlabel(f"time ({unit})" if unit else "time")
    ax.set_ylabel(readable_units(units, variable) or variable)
    format_axis(ax.yaxis, units)
    ax.grid(alpha=0.3)
    ax.margins(x=0.01)
    runs = int(np.isfinite(values).any(axis=1).sum())
    middle = "median and spread" if n % 2 and pct[n // 2] == 50 else "spread"
    ax.set_title(title or f"{variable} across {runs} runs of the sweep: {middle}")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    _save(fig, path)
    return fig
