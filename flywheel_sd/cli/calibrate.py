"""``flywheel calibrate``: fit constants to data, with χ² profile bounds (issue 13).

The data file is read and every name checked (parameters, series, --map expressions) by
`flywheel_sd.calibrate` before its first run; output paths are checked before that.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

from ._common import (
    EXIT_OK,
    UsageError,
    check_plot,
    check_suffix,
    fmt,
    print_json,
    print_table,
    print_wrote,
    scenario_for,
)

#: The reference_data layout: one row per figure, periods from start to end.
PERIOD_COLUMNS = ("series", "period_start", "period_end", "value")


def cmd_calibrate(args) -> int:
    from .. import calibrate
    from ..errors import DataError, IdentifiabilityWarning

    out = check_suffix(args.out, (".nc",), "--out")
    scenario_out = check_suffix(args.scenario_out, (".toml",), "--scenario-out")
    plot = check_plot(args.plot)
    params = _params(args.param)
    maps = _maps(args.map or [])
    time_map = _time_map(args.time_map)
    series = read_data(args.data)
    if args.series:
        from ..errors import unknown_name_message

        for name in args.series:
            if name not in series:
                raise UsageError(
                    f"--series: {unknown_name_message('series', name, series)} (in {args.data})"
                )
        series = {name: series[name] for name in dict.fromkeys(args.series)}
    unknown = [name for name in [*maps, *(args.sum or [])] if name not in series]
    if unknown:
        from ..errors import unknown_name_message

        option = "--map" if unknown[0] in maps else "--sum"
        raise UsageError(
            f"{option}: {unknown_name_message('series', unknown[0], series)} (in {args.data})"
        )
    sc = scenario_for(args, args.scenario)
    keys = {name: maps.get(name, name) for name in series}  # series -> output or expression
    data = {keys[name]: frame for name, frame in series.items()}
    aggregate = {keys[name]: "sum" for name in args.sum or []}
    options: dict[str, Any] = {
        "payoff": args.payoff,
        "method": args.method,
        "seed": args.seed,
        "time_map": time_map,
        "aggregate": aggregate or None,
        "mcmc_steps": args.mcmc or 0,
    }
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", IdentifiabilityWarning)
        try:
            result = calibrate(sc, data, params, **options)
        except DataError as err:
            unmapped = [n for n in series if n not in maps and f"data {n!r}: unknown" in str(err)]
            if not unmapped:
                raise
            raise DataError(
                f"{err}; or say what series {unmapped[0]!r} is in the model with --map "
                f"'{unmapped[0]}=OUTPUT or EXPRESSION'"
            ) from None
    notes = []
    for w in caught:
        if issubclass(w.category, IdentifiabilityWarning):
            notes.append(" ".join(str(w.message).split()))
        else:  # shown as the CLI shows every warning
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)

    label = {key: name for name, key in keys.items()}  # expression -> series name
    wrote = []  # files first: a closed pipe on stdout must not lose them
    if out is not None:
        from ._files import write_netcdf

        write_netcdf(_dataset(result, label, sc.name), out)
        wrote.append(out)
    if scenario_out is not None:
        scenario_out.parent.mkdir(parents=True, exist_ok=True)
        result.to_scenario(scenario_out.stem).save(scenario_out)
        wrote.append(scenario_out)
    if plot is not None:
        import matplotlib.pyplot as plt

        plt.close(plot_fit(result, label, sc, plot, summed=set(aggregate)))
        wrote.append(plot)

    fit = result.fit.rename(index=label)
    posterior = _posterior(result)
    if args.json:
        print_json(
            {
                "scenario": sc.name,
                "model": result.extra.get("model"),
                "payoff": result.payoff_kind,
                "method": result.method,
                "payoff_value": result.payoff,
                "threshold": result.threshold,
                "sigma_estimated": result.sigma_estimated,
                "params": {
                    str(name): {k: _plain(v) for k, v in row.items()}
                    for name, row in result.bounds.iterrows()
                },
                "correlation": {
                    str(a): {str(b): float(v) for b, v in row.items()}
                    for a, row in result.correlation.iterrows()
                },
                "fit": [
                    {"series": label[key], "expression": key, **_fit_row(fit.loc[label[key]])}
                    for key in result.fit.index
                ],
                "posterior": posterior,
                "notes": notes,
                "runs": result.n_runs,
                "seconds": result.elapsed,
                "wrote": [str(w) for w in wrote],
            }
        )
        return EXIT_OK
    sigma = "sigma estimated from the residuals" if result.sigma_estimated else "sigma given"
    print_table(
        _bounds_text(result.bounds),
        f"calibration of {sc.name} ({result.method}, {result.payoff_kind} payoff "
        f"{fmt(result.payoff)}, {sigma}; {result.n_runs} runs in {result.elapsed:.1f} s)",
        wrap=False,
    )
    print()
    print_table(
        fit.assign(expression=[key if key != label[key] else "-" for key in result.fit.index])[
            ["expression", "n", "rmse", "r2", "payoff"]
        ].rename_axis("series"),
        "fit (rmse in the data's units; r2 = 1 - SS_res / SS_tot)",
        wrap=False,
    )
    if posterior:
        import pandas as pd

        print()
        print_table(
            pd.DataFrame(posterior).T.rename_axis("parameter"),
            f"posterior (emcee, {args.mcmc} steps; the second half of each chain)",
            wrap=False,
        )
    if (result.bounds["low_open"] | result.bounds["high_open"]).any():
        notes.insert(
            0,
            "<= or >= marks an interval end that reached the search bound: the data do not "
            "bound the parameter on that side within its range",
        )
    for note in notes:
        print(f"note: {note}")
    print_wrote(wrote)
    return EXIT_OK


# -- options ----------------------------------------------------------------------------
def _params(ranges) -> dict[str, tuple[float, float] | None]:
    params: dict[str, tuple[float, float] | None] = {}
    for p in ranges:
        if p.levels is not None:
            raise UsageError(f"--param {p.name}: grid levels (:N) do not apply to calibrate")
        params[p.name] = None if p.low is None else (p.low, p.high)
    return params


def _maps(items: list[str]) -> dict[str, str]:
    """--map SERIES=EXPRESSION, each series once."""
    maps: dict[str, str] = {}
    for text in items:
        name, sep, expression = text.partition("=")
        if not sep or not name.strip() or not expression.strip():
            raise UsageError(
                f"--map {text!r}: expected SERIES=OUTPUT or SERIES=EXPRESSION, e.g. "
                "'Revenue=Platform Revenue*12'"
            )
        if name.strip() in maps:
            raise UsageError(f"--map: series {name.strip()!r} is mapped twice")
        maps[name.strip()] = expression.strip()
    return maps


def _time_map(text: str | None):
    """--time-map MONTH=DATE (model month MONTH is DATE) or DATE (the date of month 0)."""
    if text is None:
        return None
    import pandas as pd

    month, sep, date = text.rpartition("=") if "=" in text else ("", "", text)
    try:
        when = pd.Timestamp(date.strip())
        number = float(month) if sep else 0.0
    except ValueError:
        raise UsageError(
            f"--time-map {text!r}: expected MONTH=DATE (e.g. 60=2018-10-01) or DATE"
        ) from None
    if not sep:
        return when
    if not math.isfinite(number) or number != int(number):
        raise UsageError(f"--time-map {text!r}: the model month must be a whole number")
    return {int(number): when}


# -- the data file ----------------------------------------------------------------------
def read_data(path_text: str) -> dict[str, Any]:
    """Series name -> what `calibrate` takes for it, from a CSV: the reference_data layout
    (series, period_start, period_end, value[, sigma, sampling]; one DataFrame of periods
    per series) or time, value[, sigma] (one series named by the file's stem)."""
    import pandas as pd

    path = Path(path_text).expanduser()
    if not path.is_file():
        raise UsageError(f"--data {path_text}: no such file")
    try:
        frame = pd.read_csv(path, skipinitialspace=True)
    except (ValueError, UnicodeDecodeError) as err:
        raise UsageError(f"--data {path_text}: not a readable CSV ({err})") from None
    frame.columns = [str(c).strip() for c in frame.columns]
    columns = set(frame.columns)
    if set(PERIOD_COLUMNS) <= columns:
        keep = [*PERIOD_COLUMNS, *(c for c in ("sigma", "sampling") if c in columns)]
        frame = frame[keep].copy()
        for column in ("period_start", "period_end"):
            frame[column] = _times(frame[column], path_text, column)
        frame["value"] = _numbers(frame["value"], path_text, "value")
        if "sigma" in columns:
            frame["sigma"] = _numbers(frame["sigma"], path_text, "sigma")
        return {
            str(name): rows.drop(columns="series").reset_index(drop=True)
            for name, rows in frame.groupby("series", sort=False)
        }
    if {"time", "value"} <= columns:
        index = pd.Index(_times(frame["time"], path_text, "time"), name="time")
        values = pd.DataFrame({"value": _numbers(frame["value"], path_text, "value").to_numpy()})
        if "sigma" in columns:
            values["sigma"] = _numbers(frame["sigma"], path_text, "sigma").to_numpy()
            return {path.stem: values.set_index(index)}
        return {path.stem: values["value"].set_axis(index)}
    raise UsageError(
        f"--data {path_text}: expected the columns series, period_start, period_end, value "
        f"(the reference_data layout) or time, value[, sigma]; found {', '.join(frame.columns)}"
    )


def _numbers(column, path_text: str, name: str):
    import pandas as pd

    values = pd.to_numeric(column, errors="coerce")
    bad = values.isna() & column.notna()
    if bad.any():
        raise UsageError(
            f"--data {path_text}: column {name!r} has a value that is not a number: "
            f"{column[bad].iloc[0]!r}"
        )
    return values.astype(float)


def _times(column, path_text: str, name: str):
    """Model times (numbers) or dates."""
    import pandas as pd

    numbers = pd.to_numeric(column, errors="coerce")
    if numbers.notna().all():
        return numbers.astype(float)
    try:
        return pd.to_datetime(column, format="mixed")
    except (ValueError, TypeError):
        raise UsageError(
            f"--data {path_text}: column {name!r} holds neither model times nor dates"
        ) from None


# -- results ----------------------------------------------------------------------------
def _plain(value):
    if isinstance(value, bool) or (hasattr(value, "dtype") and value.dtype == bool):
        return bool(value)
    return float(value)


def _bounds_text(bounds):
    """The parameter table as printed: an interval end that reached the search bound is
    marked (the data do not bound the parameter on that side)."""
    import pandas as pd

    rows = []
    for name, row in bounds.iterrows():
        rows.append(
            {
                "parameter": name,
                "best": fmt(row["best"]),
                "chi2 low": ("<=" if row["low_open"] else "") + fmt(row["low"]),
                "chi2 high": (">=" if row["high_open"] else "") + fmt(row["high"]),
                "prior range": f"{fmt(row['prior_low'])} to {fmt(row['prior_high'])}",
            }
        )
    return pd.DataFrame(rows).set_index("parameter")


def _dataset(result, label: dict[str, str], scenario: str):
    """The calibration as one xarray Dataset: bounds and correlation per parameter, the fit
    per series, every data point with the model's value there, the fitted run, and the
    posterior samples (with --mcmc)."""
    import numpy as np
    import pandas as pd
    import xarray as xr

    bounds = result.bounds
    names = [str(n) for n in bounds.index]
    ds = xr.Dataset(coords={"parameter": names, "parameter_2": names})
    for column in bounds.columns:
        values = bounds[column].to_numpy()
        ds[f"bound_{column}" if column not in ("best", "std") else column] = (
            "parameter",
            values.astype(int) if values.dtype == bool else values.astype(float),
        )
    ds["correlation"] = (("parameter", "parameter_2"), result.correlation.to_numpy(float))
    series = [label[k] for k in result.fit.index]
    ds = ds.assign_coords(series=series, expression=("series", list(result.fit.index)))
    for column in result.fit.columns:
        ds[f"fit_{column}"] = ("series", result.fit[column].to_numpy(float))
    points = pd.concat(
        [frame.reset_index().assign(series=label[key]) for key, frame in result.residuals.items()],
        ignore_index=True,
    )
    ds = ds.assign_coords(
        point_series=("point", points["series"].to_numpy(str)),
        point_time=("point", points["time"].to_numpy(float)),
    )
    for column in ("data", "model", "sigma", "residual", "weighted", "end"):
        if column in points:
            ds[f"point_{column}"] = ("point", points[column].to_numpy(float))
    run = result.run
    ds = ds.assign_coords(time=run.index.to_numpy(float))
    for column in run.columns:
        ds[f"run_{column}"] = ("time", pd.to_numeric(run[column], errors="coerce").to_numpy())
    if result.samples is not None:
        for name in names:
            ds[f"posterior_{name}"] = (
                ("chain", "draw"),
                np.asarray(result.samples[name].values, float),
            )
    ds.attrs.update(
        scenario=scenario,
        model=str(result.extra.get("model") or ""),
        payoff_kind=result.payoff_kind,
        payoff=float(result.payoff),
        threshold=float(result.threshold),
        sigma_estimated=int(result.sigma_estimated),
        method=result.method,
        runs=int(result.n_runs),
    )
    return ds


def plot_fit(result, label: dict[str, str], sc, path: Path, summed: set[str] | None = None):
    """One panel per series: the data (points, or a bar over each period, with ±sigma where
    given) and the fitted model at the same points, on the model's time axis. A `summed`
    series (the model's integral over each period) is labelled in its units per period."""
    import matplotlib.pyplot as plt

    from ..plotting import _save, format_axis, readable_units, time_units
    from ._common import units_of

    model = sc.load_model()
    units = units_of(model)
    tunit = time_units(units)
    keys = list(result.residuals)
    fig, axes = plt.subplots(
        len(keys),
        1,
        figsize=(8, 2.6 + 2.4 * len(keys)),
        squeeze=False,
        layout="constrained",
    )
    for ax, key in zip(axes[:, 0], keys):
        res = result.residuals[key]
        t = res.index.to_numpy(float)
        fitted = f"fitted model ({result.payoff_kind} payoff)"
        if "end" in res.columns:  # periods: a bar from start to end for data and model
            ends = res["end"].to_numpy(float)
            ax.hlines(res["data"], t, ends, color="black", lw=3, label="data (per period)")
            ax.hlines(res["model"], t, ends, color="C1", lw=2, label=fitted)
            mids = (t + ends) / 2
            ax.plot(mids, res["data"], "o", color="black", ms=4)
            ax.plot(mids, res["model"], "s", color="C1", ms=4)
        else:
            ax.plot(t, res["model"], "-", color="C1", lw=1.8, label=fitted)
            if not result.sigma_estimated and result.payoff_kind != "log":
                ax.errorbar(t, res["data"], yerr=res["sigma"], fmt="o", color="black",
                            ms=3.5, lw=0.8, label="data ± sigma")  # fmt: skip
            else:
                ax.plot(t, res["data"], "o", color="black", ms=3.5, label="data")
        name = label[key]
        unit = units.get(key, "") if key in units else ""
        fit = result.fit.loc[key]
        what = name if name == key else f"{name} vs {key}"
        ax.set_title(
            f"{what}: rmse {fmt(float(fit['rmse']))}, r² {float(fit['r2']):.3f}",
            loc="left",
            fontsize=10,
        )
        if key in (summed or ()) and "/" in unit:  # a flow's integral: per period
            unit = unit.split("/")[0].strip()
            ax.set_ylabel(f"{readable_units(unit, key) or name} per period")
        else:
            ax.set_ylabel(readable_units(unit, key) or name)
        format_axis(ax.yaxis, unit)
        ax.grid(alpha=0.3)
        ax.set_xlabel(f"model time ({tunit[1]})" if tunit[1] else "model time")
    params = ", ".join(f"{k} = {fmt(v)}" for k, v in result.params.items())
    fig.suptitle(f"Calibration of {sc.name}: data and fitted run\n{params}", fontsize=11)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=2, frameon=False)
    return _save(fig, path)


def _fit_row(row) -> dict[str, Any]:
    return {k: int(v) if k == "n" else float(v) for k, v in row.items()}


def _posterior(result) -> dict[str, dict[str, float]]:
    """Mean and 2.5 / 97.5 % quantiles of each parameter's posterior samples (the second
    half of each chain); empty without --mcmc."""
    if result.samples is None:
        return {}
    table = result.posterior_table(burn=0.5)
    return {
        str(name): {
            "mean": float(table[name].mean()),
            "q2.5": float(table[name].quantile(0.025)),
            "q97.5": float(table[name].quantile(0.975)),
        }
        for name in table.columns
    }
