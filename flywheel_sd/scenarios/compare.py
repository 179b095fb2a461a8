"""Policy what-ifs: run scenarios, compare them with metrics, find critical mass."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from .. import metrics as metrics_mod
from .. import scenarios
from ..engine.simulate import simulate
from ..errors import ParameterError
from . import Scenario


def _resolve(scenario: str | Scenario):
    sc = scenarios.get(scenario)
    return sc, sc.load_model()


def run_scenario(scenario: str | Scenario, **simulate_options: Any) -> pd.DataFrame:
    """Simulate one scenario; options go to `simulate` (``params`` add to the scenario's).

    Policy switch times become breakpoints, so adaptive methods do not smear them.
    """
    sc, model = _resolve(scenario)
    return _run(sc, model, **simulate_options)


def _run(sc: Scenario, model, **options: Any) -> pd.DataFrame:
    times = model.time_settings()
    t0 = times["initial_time"]
    t1 = float(options.get("final_time") or times["final_time"])
    params, breaks = sc.inputs(model, t0, t1)
    params.update(options.pop("params", None) or {})
    breaks += list(options.pop("breakpoints", None) or ())
    frame = simulate(model, params, breakpoints=breaks, **options)
    frame.attrs.update(
        scenario=sc.name, policy_windows=sc.windows(), policy_start=sc.policy_start()
    )
    return frame


def frames_to_dataset(
    frames: Sequence[pd.DataFrame], names: Sequence[str], dim: str = "scenario"
) -> xr.Dataset:
    """Stack run frames into a Dataset with dims (`dim`, time), one variable per column."""
    datasets = []
    for frame in frames:
        numeric = frame.apply(pd.to_numeric, errors="coerce").astype(float)
        numeric.index = pd.Index(np.asarray(frame.index, dtype=float), name="time")
        datasets.append(xr.Dataset.from_dataframe(numeric))
    ds = xr.concat(datasets, dim=dim, join="outer", coords="minimal", compat="override")
    return ds.assign_coords({dim: list(names)})


def compare(
    names_or_scenarios: Iterable[str | Scenario],
    *,
    metrics: Sequence[str] | None = None,
    on_run: Callable[[str], Any] | None = None,
    **simulate_options: Any,
) -> xr.Dataset:
    """Run scenarios side by side; return a Dataset with dims ``scenario`` and ``time``.

    One variable per model output, plus ``metrics`` (dims ``scenario`` x ``metric``).
    ``ds.flywheel.metrics`` gives the metrics table as a DataFrame, with each metric's
    difference from the first scenario, absolute and in percent.

    Every scenario and metric name is checked before anything runs. `on_run` is called
    with each scenario's name once its run is done (a progress bar's hook).
    """
    resolved = [_resolve(s) for s in names_or_scenarios]
    if not resolved:
        raise ParameterError("compare needs at least one scenario")
    names = [sc.name for sc, _ in resolved]
    if len(set(names)) != len(names):
        raise ParameterError(f"scenario names repeat: {names}")
    chosen = [metrics_mod.get(m) for m in metrics] if metrics is not None else None
    units = _model_units([model for _, model in resolved])  # read before the runs
    frames = []
    for sc, model in resolved:
        frames.append(_run(sc, model, **dict(simulate_options)))
        if on_run is not None:
            on_run(sc.name)
    ds = frames_to_dataset(frames, names)
    for var in ds.data_vars:  # the model's units, for plots and readers of the file
        unit = units.get(str(var).split("[")[0].strip())
        if unit:
            ds[var].attrs["units"] = unit
    ds = ds.assign_coords(policy_start=("scenario", [sc.policy_start() for sc, _ in resolved]))
    ds.attrs.update(
        policy_windows=json.dumps({sc.name: sc.windows() for sc, _ in resolved}),
        method=frames[0].attrs.get("method", ""),
        models=json.dumps({sc.name: str(model.path) for sc, model in resolved}),
    )
    return attach_metrics(ds, chosen)


def _model_units(models) -> dict[str, str]:
    """Vensim name -> units, from the models' documentation (first model wins)."""
    units: dict[str, str] = {}
    for model in models:
        try:
            doc = model.doc
        except Exception:  # noqa: BLE001, S112 - units are a nicety; runs do not need them
            continue
        for name, unit in zip(doc["Real Name"], doc["Units"]):
            if isinstance(unit, str) and unit.strip():
                units.setdefault(str(name), unit.strip())
    return units


def attach_metrics(ds: xr.Dataset, chosen=None) -> xr.Dataset:
    """Add the ``metrics`` variable (scenario x metric), reference = the first scenario."""
    ref = ds.isel(scenario=0).drop_vars("policy_start", errors="ignore")
    values = metrics_mod.evaluate(ds, [m.name for m in chosen] if chosen else None, ref)
    if not values:
        return ds
    # Drop the scalar coords some metrics keep (time=t1 after isel): concat needs them alike.
    parts = [values[name].broadcast_like(ds["scenario"]).astype(float) for name in values]
    parts = [p.drop_vars([c for c in p.coords if c not in p.dims]) for p in parts]
    table = xr.concat(parts, dim="metric")
    table = table.assign_coords(metric=list(values))
    units = [metrics_mod.get(n).units for n in values]
    table = table.drop_vars([c for c in table.coords if c not in ("scenario", "metric")])
    table.attrs["units"] = json.dumps(dict(zip(values, units)))
    return ds.assign(metrics=table.transpose("scenario", "metric"))


def metrics_table(ds: xr.Dataset) -> pd.DataFrame:
    """Tidy metrics table: one row per (scenario, metric): value, diff, diff_pct, units."""
    if "metrics" not in ds:
        raise ParameterError("this dataset has no metrics; build it with flywheel_sd.compare")
    values = ds["metrics"].transpose("scenario", "metric").to_pandas()
    first = values.iloc[0]
    diff = values - first
    with np.errstate(divide="ignore", invalid="ignore"):
        pct = diff / first.abs().where(first != 0) * 100
    units = json.loads(ds["metrics"].attrs.get("units", "{}"))
    rows = []
    for scenario in values.index:
        for metric in values.columns:
            rows.append(
                (
                    scenario,
                    metric,
                    values.at[scenario, metric],
                    diff.at[scenario, metric],
                    pct.at[scenario, metric],
                    units.get(metric, ""),
                )
            )
    return pd.DataFrame(
        rows, columns=["scenario", "metric", "value", "diff", "diff_pct", "units"]
    ).set_index(["scenario", "metric"])


class MetricsTable(pd.DataFrame):
    """The metrics table of a comparison: a DataFrame that prints every column (value,
    diff, diff_pct, units) in one human number format ("13.26M", "-9.0%"), whatever the
    pandas display options; the numbers themselves are untouched."""

    @property
    def _constructor(self):  # slices and arithmetic give plain DataFrames
        return pd.DataFrame

    def _display_frame(self) -> pd.DataFrame:
        shown = pd.DataFrame(index=self.index)
        headers = {}
        for column in self.columns:
            values = self[column]
            if column == "diff_pct":
                shown[column] = [metrics_mod.format_percent(v) for v in values]
            elif column == "diff":
                shown[column] = [metrics_mod.format_number(v, signed=True) for v in values]
            elif column == "units":
                metric_names = self.index.get_level_values(-1)
                shown[column] = [
                    metrics_mod.readable_units(str(u), str(m)) or "-"
                    for u, m in zip(values, metric_names)
                ]
            elif pd.api.types.is_numeric_dtype(values):
                shown[column] = [metrics_mod.format_number(v) for v in values]
            else:
                shown[column] = values.astype(str)
            # Numbers line up on the right, words on the left.
            size = max([len(str(column)), *(len(v) for v in shown[column])])
            numeric = column != "units" and pd.api.types.is_numeric_dtype(values)
            align = str.rjust if numeric else str.ljust
            shown[column] = [align(v, size) for v in shown[column]]
            headers[column] = align(str(column), size)
        # A header stands over its column's text the way the text is aligned.
        return shown.rename(columns=headers)

    def to_text(self, line_width: int | None = None) -> str:
        """The table as text, every column shown (wrapped at `line_width` if given)."""
        shown = self._display_frame()
        return shown.to_string(line_width=line_width, max_rows=None, max_cols=None)

    def __repr__(self) -> str:
        return self.to_text()

    def __str__(self) -> str:
        return self.to_text()

    def _repr_html_(self) -> str:
        return self._display_frame().to_html(max_rows=None, max_cols=None)


@xr.register_dataset_accessor("flywheel")
class FlywheelAccessor:
    """``ds.flywheel.metrics``: the metrics table of a comparison."""

    def __init__(self, ds: xr.Dataset):
        self._ds = ds

    @property
    def metrics(self) -> MetricsTable:
        """One row per (scenario, metric): value, diff and diff_pct from the first
        scenario, units. Printing it shows every column, numbers in one human format."""
        return MetricsTable(metrics_table(self._ds))

    @property
    def policy_windows(self) -> dict:
        return json.loads(self._ds.attrs.get("policy_windows", "{}"))


# -- critical mass ---------------------------------------------------------------------
@dataclass(frozen=True)
class CriticalMass:
    """The smallest lever value at which the platform keeps growing after the push.

    ``bracket`` = (the value nearest the threshold seen to decay, the one nearest it seen
    to keep growing); ``decaying_run`` and ``growing_run`` are the runs at those two values.
    """

    lever: str
    threshold: float
    bracket: tuple[float, float]
    runs: int
    criterion: str
    decaying_run: pd.DataFrame | None = field(repr=False, compare=False, default=None)
    growing_run: pd.DataFrame | None = field(repr=False, compare=False, default=None)


def keeps_growing(frame: pd.DataFrame, variable: str, push_end: float) -> bool:
    """True if `variable` at the end of the run is above its value when the push ended."""
    series = frame[variable]
    if push_end >= series.index[-1]:
        raise ParameterError(
            f"the push ends at t={push_end:g}, at or after the end of the run "
            f"(t={series.index[-1]:g}); nothing can be said about what follows it"
        )
    at_end_of_push = float(np.interp(push_end, series.index.to_numpy(float), series.to_numpy()))
    return float(series.iloc[-1]) > at_end_of_push


def critical_mass(
    lever: str,
    low: float,
    high: float,
    *,
    scenario: str | Scenario = "launch_ad_burn",
    variable: str = "Active Buyers",
    push_end: float | str = "Ad Stop Time",
    tol: float | None = None,
    max_runs: int = 40,
    on_run: Callable[[str], Any] | None = None,
    **simulate_options: Any,
) -> CriticalMass:
    """Bisect `lever` in [low, high] for the critical mass of `scenario`.

    "Keeps growing" means: `variable` at the end of the run exceeds its value at the end of
    the push. `push_end` is a time, or the name of the parameter holding it (if that is
    the lever itself, each run's own lever value is used). Below the threshold the
    platform decays once the push stops; above it, it keeps growing. `on_run` is called
    with the scenario's name after each run.
    """
    sc, model = _resolve(scenario)
    lever = model.real_name(lever)
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise ParameterError(f"critical_mass needs finite low < high, got [{low}, {high}]")
    model.check_params({lever: low}), model.check_params({lever: high})
    tol = tol if tol is not None else (high - low) * 1e-3

    def push_time(value: float) -> float:
        if isinstance(push_end, (int, float)):
            return float(push_end)
        name = model.real_name(push_end)
        if name == lever:
            return value
        if name in sc.params and isinstance(sc.params[name], (int, float)):
            return float(sc.params[name])
        return float(model.default_value(name))

    runs = 0
    frames: dict[float, pd.DataFrame] = {}  # the runs at the current bracket's ends

    def fate(value: float) -> bool:
        nonlocal runs
        runs += 1
        opts = dict(simulate_options)
        opts["params"] = {**(opts.get("params") or {}), lever: value}
        frame = _run(sc, model, **opts)
        if on_run is not None:
            on_run(sc.name)
        frames[value] = frame
        return keeps_growing(frame, variable, push_time(value))

    grows_low, grows_high = fate(low), fate(high)
    if grows_low == grows_high:
        what = "keeps growing" if grows_low else "decays"
        raise ParameterError(
            f"no critical mass for {lever!r} in [{low:g}, {high:g}]: the platform {what} "
            "at both ends; widen the range"
        )
    decays, grows = (low, high) if grows_high else (high, low)
    while abs(grows - decays) > tol and runs < max_runs:
        mid = 0.5 * (decays + grows)
        if fate(mid):
            frames.pop(grows)
            grows = mid
        else:
            frames.pop(decays)
            decays = mid
    criterion = (
        f"{variable} at the end of the run > {variable} when the push ends "
        f"({push_end if isinstance(push_end, str) else f't={push_end:g}'})"
    )
    return CriticalMass(
        lever,
        0.5 * (decays + grows),
        (decays, grows),
        runs,
        criterion,
        frames[decays],
        frames[grows],
    )
