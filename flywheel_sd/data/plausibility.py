"""The model beside published series (issue 11): each reference series of
`flywheel_sd.reference_data()` that a scenario mirrors, with what the scenario's run gives
for the same calendar period.

A scenario runs in model months; a *time map* (the calendar date of month 0) puts them on
the calendar. A figure for a period is compared with the run over the same period:

- a flow (revenue, US$ a month in the model) with its integral over the period (US$);
- a level (buyers, sellers) with its mean over the period, or its value at a point;
- a share (third-party share of orders and GMV) with its mean weighted by the flow it is a
  share of (GMV), as a yearly share of a year's sales is.

The comparison of the shipped scenarios says whether the unfitted model is of the right size
and shape. `FITS` go one step further: each fits a few constants of a case's scenario to its
series with `flywheel_sd.calibrate` (inside their documented ranges) and is stored as a
scenario (``wish_fitted``, ``amazon_fitted``; written by scripts/fit_cases.py), so that
``runs(fitted=True)`` and ``plausibility(fitted=True)`` compare the fitted model.
docs/plausibility.md shows and discusses both.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from . import reference_data

__all__ = [
    "COMPARISONS",
    "FITS",
    "TIME_MAPS",
    "Comparison",
    "Fit",
    "annual",
    "calendar",
    "fit",
    "fitted_name",
    "model_month",
    "period_value",
    "plausibility",
    "runs",
]

#: Scenario -> the calendar date of its month 0. Wish: wish_deposit's month 60 is
#: 2018-10-01 (the deposit), so month 0 is 2013-10-01 and month 90 is 2021-04 (the dearer
#: ads). Amazon: amazon_marketplace starts at the first year of the third-party series
#: (1999, the year Amazon first let other merchants sell on its site), so month 0 is
#: 1999-01-01 and 2018 ends at month 240.
TIME_MAPS: dict[str, pd.Timestamp] = {
    "wish_at_scale": pd.Timestamp("2013-10-01"),
    "amazon_marketplace": pd.Timestamp("1999-01-01"),
}


@dataclass(frozen=True)
class Comparison:
    """How the reference `series` is read from a run of `scenario`: `variable` as a
    ``"flow"``, a ``"level"`` or a ``"share"`` (weighted by `weight`)."""

    series: str
    scenario: str
    variable: str
    kind: str
    weight: str | None = None

    @property
    def columns(self) -> list[str]:
        return [self.variable] + ([self.weight] if self.weight else [])


COMPARISONS: tuple[Comparison, ...] = (
    Comparison("wish_revenue", "wish_at_scale", "Platform Revenue", "flow"),
    Comparison("wish_mau", "wish_at_scale", "Total Buyers", "level"),
    Comparison("wish_merchants", "wish_at_scale", "Total Active Sellers", "level"),
    Comparison(
        "amazon_third_party_share", "amazon_marketplace", "Third Party Share", "share", "GMV"
    ),
)


@dataclass(frozen=True)
class Fit:
    """A fit of `params` (name -> (low, high), or None for the documented range) of the
    scenario `base` to the compared `series`, stored as the scenario `name` (which extends
    `base`). The payoff is on log values: the series are shares or span a factor of five."""

    name: str
    base: str
    series: tuple[str, ...]
    params: Mapping[str, tuple[float, float] | None]
    why: str
    seed: int = 1

    @property
    def comparisons(self) -> list[Comparison]:
        return [c for c in COMPARISONS if c.series in self.series]


FITS: tuple[Fit, ...] = (
    Fit(
        "wish_fitted",
        "wish_at_scale",
        ("wish_revenue", "wish_mau"),
        {"Shipping Delay Shock Size": None, "Shipping Delay Shock Time": (72.0, 96.0)},
        why=(
            "when and how much longer deliveries got, between 2020 (COVID-19 grounded the "
            "flights that carried parcels from China) and 2021 (the freight crunch)"
        ),
    ),
    Fit(
        "amazon_fitted",
        "amazon_marketplace",
        ("amazon_third_party_share",),
        {
            "Online Market Growth Rate": (0.005, 0.012),
            "Normal Seller Entry Fraction": None,
            "First Party Catalogue": None,
        },
        why=(
            "how fast the online market grew (within 0.5-1.2% a month), how readily "
            "merchants joined, and how large Amazon's own catalogue was"
        ),
    ),
)


def model_month(date: pd.Timestamp | str, origin: pd.Timestamp | str) -> float:
    """Model time (months) of a calendar `date`, month 0 being `origin`: whole calendar
    months, plus the fraction of the month gone by (2013-10-16 is month 0.48)."""
    date, origin = pd.Timestamp(date), pd.Timestamp(origin)
    whole = (date.year - origin.year) * 12 + (date.month - origin.month)
    return whole + (date.day - 1) / date.days_in_month - (origin.day - 1) / origin.days_in_month


def calendar(run: pd.DataFrame, origin: pd.Timestamp | str) -> pd.DatetimeIndex:
    """The dates of a run's (monthly or finer) times under the time map `origin`."""
    origin = pd.Timestamp(origin)
    times = np.asarray(run.index, dtype=float)
    whole = np.floor(times).astype(int)
    starts = [origin + pd.DateOffset(months=int(m)) for m in whole]
    return pd.DatetimeIndex(
        [s + pd.Timedelta(days=(t - m) * s.days_in_month) for s, t, m in zip(starts, times, whole)]
    )


def _integral(y: np.ndarray, x: np.ndarray) -> float:
    """The trapezoidal rule (numpy's own is np.trapz before 2.0, np.trapezoid after)."""
    return float(np.sum((y[1:] + y[:-1]) * np.diff(x)) / 2)


def period_value(
    run: pd.DataFrame,
    variable: str,
    start: float,
    end: float,
    kind: str,
    weight: str | None = None,
) -> float:
    """`variable` over model months [`start`, `end`) as `kind` reads it (see the module's
    doc): the integral of a flow, the mean of a level (its value when start == end), the
    `weight`-weighted mean of a share. The run's values are interpolated linearly between
    its times (monthly runs: the trapezoidal rule)."""
    times = np.asarray(run.index, dtype=float)
    if start < times[0] or end > times[-1] + 1e-9:
        raise ValueError(
            f"the run covers months {times[0]:g} to {times[-1]:g}, not {start:g} to {end:g}"
        )
    values = np.asarray(run[variable], dtype=float)
    if end <= start:
        if kind == "flow":
            raise ValueError(f"a flow ({variable}) has no value at a point in time")
        return float(np.interp(start, times, values))
    inside = times[(times > start) & (times < end)]
    grid = np.concatenate([[start], inside, [end]])
    y = np.interp(grid, times, values)
    if kind == "flow":
        return float(_integral(y, grid))
    if kind == "level":
        return float(_integral(y, grid) / (end - start))
    if kind == "share":
        if weight is None:
            raise ValueError("a share needs the flow it is a share of (weight)")
        w = np.interp(grid, times, np.asarray(run[weight], dtype=float))
        return float(_integral(y * w, grid) / _integral(w, grid))
    raise ValueError(f"kind must be 'flow', 'level' or 'share', not {kind!r}")


def _span(row: pd.Series, origin: pd.Timestamp) -> tuple[float, float]:
    """Model months of a reference row's period; the end is the day after period_end (a
    calendar year 2017-01-01..2017-12-31 is [2017-01-01, 2018-01-01))."""
    start = model_month(row["period_start"], origin)
    if row["sampling"] == "point":
        return start, start
    return start, model_month(row["period_end"] + pd.Timedelta(days=1), origin)


def _chosen(series: str | Iterable[str] | None) -> list[Comparison]:
    if series is None:
        return list(COMPARISONS)
    names = [series] if isinstance(series, str) else list(series)
    reference_data(names)  # unknown names: the loader's one-line error
    by_name = {c.series: c for c in COMPARISONS}
    missing = [n for n in names if n not in by_name]
    if missing:
        from ..errors import ParameterError

        raise ParameterError(
            f"no scenario mirrors {', '.join(map(repr, missing))}; compared series: "
            f"{', '.join(by_name)}"
        )
    return [by_name[n] for n in names]


def _final_time(scenario: str, chosen: list[Comparison]) -> float:
    """The model's final time, or later if `chosen`'s reference periods of `scenario` end
    later."""
    from .. import scenarios

    origin = TIME_MAPS[scenario]
    data = reference_data([c.series for c in chosen if c.scenario == scenario])
    last = max(_span(row, origin)[1] for _, row in data.iterrows())
    model = scenarios.get(scenario).load_model()
    return max(model.time_settings()["final_time"], float(math.ceil(last)))


def fitted_name(scenario: str) -> str:
    """The fitted scenario of a compared scenario (`FITS`)."""
    return next(f.name for f in FITS if f.base == scenario)


def runs(
    series: str | Iterable[str] | None = None, fitted: bool = False
) -> dict[str, pd.DataFrame]:
    """Scenario -> its monthly run, long enough to cover the reference periods of the
    compared `series` (default: all), with the columns they need. `fitted`: run each
    scenario's fitted version (`FITS`) instead, still keyed by the compared scenario."""
    from ..scenarios.compare import run_scenario

    chosen = _chosen(series)
    out: dict[str, pd.DataFrame] = {}
    for scenario in dict.fromkeys(c.scenario for c in chosen):
        columns = sorted({col for c in chosen if c.scenario == scenario for col in c.columns})
        out[scenario] = run_scenario(
            fitted_name(scenario) if fitted else scenario,
            final_time=_final_time(scenario, chosen),
            saveper=1.0,
            return_columns=columns,
        )
    return out


def fit(case: Fit | str, **options: Any):
    """Fit `case` (a `Fit` or its name) with `flywheel_sd.calibrate`: each series is
    compared over its reference periods as `plausibility` reads it (a flow summed over the
    period, a level averaged, a share averaged weighted by its flow), on log values. `options`
    go to calibrate (e.g. ``profile=False``)."""
    from ..calibration import calibrate

    if isinstance(case, str):
        case = next((f for f in FITS if f.name == case), None) or _unknown_fit(case)
    chosen = case.comparisons
    data = {c.variable: reference_data(c.series) for c in chosen}
    aggregate: dict[str, Any] = {c.variable: "sum" for c in chosen if c.kind == "flow"}
    aggregate.update({c.variable: ("mean", c.weight) for c in chosen if c.kind == "share"})
    return calibrate(
        case.base,
        data,
        dict(case.params),
        payoff="log",
        time_map=TIME_MAPS[case.base],
        aggregate=aggregate,
        seed=case.seed,
        final_time=_final_time(case.base, chosen),
        **options,
    )


def _unknown_fit(name: str):
    from ..errors import ParameterError

    raise ParameterError(f"no fit named {name!r}; fits: {', '.join(f.name for f in FITS)}")


def plausibility(
    series: str | Iterable[str] | None = None,
    frames: Mapping[str, pd.DataFrame] | None = None,
    fitted: bool = False,
) -> pd.DataFrame:
    """The reference rows of the compared `series` (default: all) with the model beside
    them: ``scenario``, ``variable``, ``model_start`` and ``model_end`` (model months),
    ``model`` (the run's value for the period, in the row's unit), ``ratio`` (model /
    value) and ``factor`` (max(ratio, 1 / ratio): 1 is a match, 3 is three times too large
    or too small). `frames`: the runs to read (``runs()``'s), to save running again;
    `fitted`: compare the fitted scenarios (`FITS`; ``scenario`` names them)."""
    chosen = _chosen(series)
    if frames is None:
        frames = runs([c.series for c in chosen], fitted=fitted)
    rows = []
    for c in chosen:
        origin = TIME_MAPS[c.scenario]
        for _, row in reference_data(c.series).iterrows():
            start, end = _span(row, origin)
            model = period_value(frames[c.scenario], c.variable, start, end, c.kind, c.weight)
            ratio = model / row["value"]
            rows.append(
                {
                    **row.to_dict(),
                    "scenario": fitted_name(c.scenario) if fitted else c.scenario,
                    "variable": c.variable,
                    "model_start": start,
                    "model_end": end,
                    "model": model,
                    "ratio": ratio,
                    "factor": max(ratio, 1 / ratio) if ratio > 0 else math.inf,
                }
            )
    return pd.DataFrame(rows)


def annual(
    run: pd.DataFrame,
    origin: pd.Timestamp | str,
    variable: str,
    kind: str,
    weight: str | None = None,
) -> pd.Series:
    """`variable` per calendar year (``period_value`` over each year the run covers
    whole), indexed by year."""
    origin = pd.Timestamp(origin)
    times = np.asarray(run.index, dtype=float)
    out = {}
    for year in range(origin.year, origin.year + int(times[-1] // 12) + 2):
        start = model_month(pd.Timestamp(year=year, month=1, day=1), origin)
        end = model_month(pd.Timestamp(year=year + 1, month=1, day=1), origin)
        if start >= times[0] and end <= times[-1] + 1e-9:
            out[year] = period_value(run, variable, start, end, kind, weight)
    return pd.Series(out, name=variable, dtype=float)
