"""The model beside published series (issue 11): each reference series of
`flywheel_sd.reference_data()` that a scenario mirrors, with what the scenario's run gives
for the same calendar period.

A scenario runs in model months; a *time map* (the calendar date of month 0) puts them on
the calendar. A figure for a period is compared with the run over the same period:

- a flow (revenue, US$ a month in the model) with its integral over the period (US$);
- a level (buyers, sellers) with its mean over the period, or its value at a point;
- a share (third-party share of orders and GMV) with its mean weighted by the flow it is a
  share of (GMV), as a yearly share of a year's sales is.

The comparison says whether the model is of the right size and shape; it is not a fit
(calibration is issue 13's job). docs/plausibility.md shows and discusses it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from . import reference_data

__all__ = [
    "COMPARISONS",
    "TIME_MAPS",
    "Comparison",
    "annual",
    "calendar",
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


def runs(series: str | Iterable[str] | None = None) -> dict[str, pd.DataFrame]:
    """Scenario -> its monthly run, long enough to cover the reference periods of the
    compared `series` (default: all), with the columns they need."""
    from .. import scenarios
    from ..scenarios.compare import run_scenario

    chosen = _chosen(series)
    data = reference_data([c.series for c in chosen])
    out: dict[str, pd.DataFrame] = {}
    for scenario in dict.fromkeys(c.scenario for c in chosen):
        origin = TIME_MAPS[scenario]
        rows = data[data["series"].isin([c.series for c in chosen if c.scenario == scenario])]
        last = max(_span(row, origin)[1] for _, row in rows.iterrows())
        model = scenarios.get(scenario).load_model()
        final = max(model.time_settings()["final_time"], float(math.ceil(last)))
        columns = sorted({col for c in chosen if c.scenario == scenario for col in c.columns})
        out[scenario] = run_scenario(
            scenario, final_time=final, saveper=1.0, return_columns=columns
        )
    return out


def plausibility(
    series: str | Iterable[str] | None = None,
    frames: Mapping[str, pd.DataFrame] | None = None,
) -> pd.DataFrame:
    """The reference rows of the compared `series` (default: all) with the model beside
    them: ``scenario``, ``variable``, ``model_start`` and ``model_end`` (model months),
    ``model`` (the run's value for the period, in the row's unit), ``ratio`` (model /
    value) and ``factor`` (max(ratio, 1 / ratio): 1 is a match, 3 is three times too large
    or too small). `frames`: the runs to read (``runs()``'s), to save running again."""
    chosen = _chosen(series)
    frames = dict(frames) if frames is not None else runs([c.series for c in chosen])
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
                    "scenario": c.scenario,
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
