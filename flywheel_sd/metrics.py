"""Named metrics: scalar summaries of a run.

A metric is a function of an `xarray.Dataset` holding model outputs over a ``time`` dim (and
possibly other dims such as ``scenario`` or ``run``); it reduces over ``time`` and keeps the
other dims, so one function serves a single run, a comparison and a sweep alike. A metric
may take a second argument, the reference run (the first scenario of a comparison), for
metrics defined relative to it.

Add your own with `register`::

    from flywheel_sd import metrics
    metrics.register("final_members", lambda ds: ds["Members"].isel(time=-1),
                     description="Members at the end of the run", units="Buyer")
"""

from __future__ import annotations

import builtins
import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import xarray as xr

from .errors import ParameterError, unknown_name_message

__all__ = [
    "Metric",
    "evaluate",
    "format_number",
    "format_percent",
    "get",
    "list",
    "readable_units",
    "register",
    "total",
]


@dataclass(frozen=True)
class Metric:
    name: str
    func: Callable
    description: str = ""
    units: str = ""

    def __call__(self, ds: xr.Dataset, ref: xr.Dataset | None = None) -> xr.DataArray:
        takes_ref = len(inspect.signature(self.func).parameters) >= 2
        out = self.func(ds, ref) if takes_ref else self.func(ds)
        return xr.DataArray(out) if not isinstance(out, xr.DataArray) else out


_REGISTRY: dict[str, Metric] = {}


def register(
    name: str, func: Callable, *, description: str = "", units: str = "", replace: bool = False
) -> Metric:
    """Add a metric under `name` (set `replace=True` to override an existing one)."""
    if name in _REGISTRY and not replace:
        raise ParameterError(f"metric {name!r} exists already; pass replace=True to override")
    metric = Metric(name, func, description, units)
    _REGISTRY[name] = metric
    return metric


def get(name: str | Metric) -> Metric:
    """The metric called `name`; an unknown name lists the valid ones."""
    if isinstance(name, Metric):
        return name
    if name not in _REGISTRY:
        raise ParameterError(unknown_name_message("metric", name, _REGISTRY))
    return _REGISTRY[name]


def list() -> builtins.list[str]:  # noqa: A001 - the public API name
    """Names of the registered metrics."""
    return builtins.list(_REGISTRY)


def evaluate(ds: xr.Dataset, names=None, ref: xr.Dataset | None = None) -> dict[str, xr.DataArray]:
    """Evaluate metrics (default: all that the dataset has the variables for)."""
    chosen = [get(n) for n in (names if names is not None else _REGISTRY)]
    out = {}
    for metric in chosen:
        try:
            out[metric.name] = metric(ds, ref)
        except KeyError as err:
            if names is not None:
                raise ParameterError(
                    f"metric {metric.name!r} needs variable {err.args[0]!r}, "
                    "which this model's output lacks"
                ) from err
    return out


# -- helpers shared by the built-ins ------------------------------------------------------
def total(ds: xr.Dataset, name: str) -> xr.DataArray:
    """A variable summed over its subscripts (``Name[...]`` columns), or the variable itself."""
    if name in ds:
        return ds[name]
    pattern = re.compile(re.escape(name) + r"\[.*\]$")
    parts = [ds[v] for v in ds.data_vars if pattern.match(str(v))]
    if not parts:
        raise KeyError(name)
    return sum(parts[1:], parts[0]).rename(name)


def _time_of(mask: xr.DataArray) -> xr.DataArray:
    """First time where `mask` holds (NaN where it never does)."""
    times = mask["time"].broadcast_like(mask)
    return times.where(mask).min("time")


def _time_of_max(da: xr.DataArray) -> xr.DataArray:
    return _time_of(da == da.max("time"))


def cumulative(da: xr.DataArray) -> xr.DataArray:
    """Time integral over the run (trapezoid rule on the saved times)."""
    return da.integrate("time")


def cash_positive_month(ds: xr.Dataset) -> xr.DataArray:
    """First time, after the cash minimum, at which cash is positive (NaN if never)."""
    cash = ds["Platform Cash"]
    after_min = cash["time"] >= _time_of_max(-cash)
    return _time_of(after_min & (cash > 0))


def months_to_recover(ds: xr.Dataset, ref: xr.Dataset | None) -> xr.DataArray:
    """Months from the policy start until total active sellers are back to 95% of the
    reference run, and stay there.

    0 if they never dip below it; ``inf`` if they dip and are still below it at the end
    of the run (never recovered); NaN if the metric does not apply: no reference run or
    no policy start (the reference scenario itself, a scenario without a timed policy)."""
    if ref is None or "policy_start" not in ds.coords:
        return xr.DataArray(np.nan)
    start = ds.coords["policy_start"]
    sellers, base = total(ds, "Active Sellers"), total(ref, "Active Sellers")
    below = (sellers < 0.95 * base) & (sellers["time"] >= start)
    last_below = sellers["time"].broadcast_like(below).where(below).max("time")
    step = float(np.diff(sellers["time"].values[:2])[0]) if sellers.sizes["time"] > 1 else 0.0
    months = xr.where(below.any("time"), last_below + step - start, 0.0)
    months = xr.where(below.isel(time=-1), np.inf, months)
    return months.where(np.isfinite(start))


def min_trust_after_startup(ds: xr.Dataset) -> xr.DataArray:
    """Lowest Buyer Trust once the start-up climb is over: the minimum over the run from
    trust's first peak (the first saved time after which it falls) to the end. A trust
    that never falls gives its final value. (Trust starts at its initial value and rises,
    so the minimum over the whole run would be that initial value in every scenario.)"""
    trust = ds["Buyer Trust"]
    falls = trust.diff("time", label="lower") < 0
    first_peak = _time_of(falls).fillna(trust["time"][-1])
    return trust.where(trust["time"] >= first_peak).min("time")


def flywheel_speed(ds: xr.Dataset) -> xr.DataArray:
    """Peak 12-month GMV growth rate, per year: max over t of GMV(t)/GMV(t-12) - 1."""
    gmv = ds["GMV"]
    lagged = gmv.shift(time=12) if gmv.sizes["time"] > 12 else gmv * np.nan
    growth = (gmv / lagged.where(lagged > 0)) - 1
    return growth.max("time")


def _register_builtins() -> None:
    def final(var):
        return lambda ds: total(ds, var).isel(time=-1)

    def peak(var):
        return lambda ds: total(ds, var).max("time")

    def peak_time(var):
        return lambda ds: _time_of_max(total(ds, var))

    for key, var, unit in (
        ("active_buyers", "Active Buyers", "Buyer"),
        ("active_sellers", "Active Sellers", "Seller"),
    ):
        register(
            f"final_{key}", final(var), description=f"{var} at the end of the run", units=unit
        )
        register(f"peak_{key}", peak(var), description=f"Largest {var} over the run", units=unit)
        register(
            f"peak_{key}_time", peak_time(var), description=f"When {var} peaks", units="Month"
        )
    register(
        "cumulative_gmv",
        lambda ds: cumulative(ds["GMV"]),
        description="GMV summed over the run",
        units="USD",
    )
    register(
        "min_trust",
        min_trust_after_startup,
        description="Lowest buyer trust after the start-up climb (from trust's first "
        "peak on; its final value if it never falls): how far trust sinks "
        "once earned",
        units="Dmnl",
    )
    register(
        "min_cash",
        lambda ds: ds["Platform Cash"].min("time"),
        description="Lowest platform cash (the deepest burn)",
        units="USD",
    )
    register(
        "cash_positive_month",
        cash_positive_month,
        description="First month, after the deepest burn, with positive cash",
        units="Month",
    )
    register(
        "final_low_quality_share",
        lambda ds: ds["Low Quality Seller Share"].isel(time=-1),
        description="Low-quality share of active sellers at the end",
        units="Dmnl",
    )
    register(
        "months_to_recover",
        months_to_recover,
        description="Months from the policy start until sellers are back to 95% of "
        "the reference run; 0 if they never dip, inf if they never "
        "recover, NaN (shown '-') if not applicable: no reference run or "
        "no policy start",
        units="Month",
    )
    register(
        "flywheel_speed",
        flywheel_speed,
        description="Peak 12-month GMV growth rate (GMV growth, per year)",
        units="1/Year",
    )


_register_builtins()


# -- formatting: one human format for numbers and units, shared by tables and plots ---------
_SI = ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k"))


def format_number(value, digits: int = 4, signed: bool = False, prefix: str = "") -> str:
    """`value` for people: `digits` significant digits, never an exponent; thousands
    separators below 10,000 ("7,913", "0.6758"), SI suffixes from 10,000 on ("45.44k",
    "13.26M", "18.23B"). NaN is "-", infinities "inf"/"-inf". `signed` adds "+" to
    positive values; `prefix` goes between the sign and the digits ("-$22.58M")."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        return str(value)
    if np.isnan(x):
        return "-"
    sign = "-" if x < 0 else ("+" if signed and x > 0 else "")
    if np.isinf(x):
        return f"{sign}inf"
    x = float(f"{abs(x):.{digits}g}")  # rounded first: 9,999.6 is 10k, not 10,000
    if x == 0:
        return "0"
    suffix = ""
    if x >= 1e4:  # 1,000 to 9,999 are written out, with a separator
        scale, suffix = next((s, letter) for s, letter in _SI if x >= s)
        x /= scale
    # `digits` significant digits as fixed-point decimals, trailing zeros dropped.
    decimals = max(digits - 1 - int(np.floor(np.log10(x))), 0)
    text = f"{x:,.{decimals}f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return f"{sign}{prefix}{text}{suffix}"


def format_percent(value, digits: int = 1) -> str:
    """A change in percent, signed, with `digits` decimals ("+1.5%", "-84.8%"); "-" for
    NaN."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        return str(value)
    if np.isnan(x):
        return "-"
    if np.isinf(x):
        return "+inf%" if x > 0 else "-inf%"
    return f"{x:+,.{digits}f}%"


# Vensim unit words, as people say them (numerators plural, denominators singular).
_UNIT_WORDS = {"usd": "US$", "dmnl": "", "1": "1", "people": "people", "person": "people"}
_FRACTION_WORDS = ("trust", "share", "fraction", "penetration", "probability", "confidence")


def readable_units(units: str | None, name: str = "") -> str:
    """Vensim units in words people read: "Visit/Month" -> "visits / month",
    "USD/Month" -> "US$ / month", "1/Year" -> "per year", "Buyer" -> "buyers".
    "Dmnl" (dimensionless) is "fraction (0 to 1)" for a trust, share or fraction (judged
    from `name`, the variable or metric it belongs to), else "index"."""
    text = (units or "").strip()
    if not text:
        return ""
    if text.lower() in ("dmnl", "dimensionless", "1"):
        fraction = any(w in name.lower() for w in _FRACTION_WORDS)
        return "fraction (0\N{EN DASH}1)" if fraction else "index"

    def word(token: str, plural: bool) -> str:
        token = token.strip()
        core = token.strip("()")
        if not core:
            return token
        if "*" in core:
            return token.replace(core, " · ".join(word(t, False) for t in core.split("*")))
        mapped = _UNIT_WORDS.get(core.lower())
        if mapped is None:
            mapped = core.lower()
            if plural and mapped.isalpha() and not mapped.endswith("s"):
                mapped += "s"
        return token.replace(core, mapped)

    numerator, *denominators = text.split("/")
    if numerator.strip() == "1" and denominators:
        return "per " + " / ".join(word(d, False) for d in denominators)
    return " / ".join([word(numerator, True), *(word(d, False) for d in denominators)])
