"""Metrics that mean something (issue #12): `min_trust` after the start-up climb,
`months_to_recover` that tells "never recovered" from "not applicable", and Sobol indices
whose confidence interval is wider than the index announced with a warning."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import xarray as xr
from conformance_mdl import vensim

import flywheel_sd as fw
from flywheel_sd import designs, metrics
from flywheel_sd.errors import WideIntervalWarning
from flywheel_sd.scenarios import Scenario

# Trust starts at 0.5 and climbs towards 0.8 (a 4-month adjustment); from month 24 to 30 a
# shock of `Shock` per month erodes it, then it climbs back.
TRUST = vensim(
    "Buyer Trust = INTEG(Trust Gain - Trust Loss, 0.5) ~ Dmnl",
    "Trust Gain = (0.8 - Buyer Trust) / 4 ~ 1/Month",
    "Trust Loss = Shock * (STEP(1, 24) - STEP(1, 30)) ~ 1/Month",
    "Shock = 0 ~ 1/Month [0, 0.2]",
    final_time=60,
    time_step=0.25,
)


@pytest.fixture
def trust_model(write_mdl):
    return str(write_mdl(TRUST, "trust.mdl"))


def test_min_trust_is_the_trough_after_start_up(trust_model):
    base = Scenario("calm", model=trust_model)
    ds = fw.compare(
        [base, base.derive("shock", Shock=0.05), base.derive("big_shock", Shock=0.06)],
        metrics=["min_trust"],
        method="euler",
    )
    value = ds["metrics"].sel(metric="min_trust").to_series()
    trust = ds["Buyer Trust"]
    # Not the initial value (0.5, the same in every scenario, as the old definition gave).
    assert (value > 0.55).all()
    # Without a shock trust never falls: the metric is its final value, near 0.8.
    assert value["calm"] == pytest.approx(float(trust.sel(scenario="calm").isel(time=-1)))
    # With a shock it is the trough after month 24, deeper for the bigger shock.
    for name in ("shock", "big_shock"):
        after = trust.sel(scenario=name).where(trust["time"] >= 24).min("time")
        assert value[name] == pytest.approx(float(after))
    assert value["big_shock"] < value["shock"] < value["calm"] - 0.05


def test_months_to_recover_never_versus_not_applicable():
    t = np.arange(0.0, 21.0)
    ref = np.full_like(t, 100.0)
    back = np.where((t >= 5) & (t < 12), 80.0, 100.0)  # dips at the policy, recovers
    never = np.where(t >= 5, 80.0, 100.0)  # dips and stays down
    ds = xr.Dataset(
        {"Active Sellers": (("scenario", "time"), np.vstack([ref, back, never, never]))},
        coords={
            "time": t,
            "scenario": ["ref", "back", "never", "no_policy"],
            "policy_start": ("scenario", [np.nan, 5.0, 5.0, np.nan]),
        },
    )
    metric = metrics.get("months_to_recover")
    value = metric(ds, ds.isel(scenario=0))
    assert float(value.sel(scenario="back")) == 7.0
    assert float(value.sel(scenario="never")) == math.inf  # never recovered
    assert math.isnan(float(value.sel(scenario="no_policy")))  # no policy start
    assert math.isnan(float(value.sel(scenario="ref")))
    assert math.isnan(float(metric(ds, None).max()))  # no reference run
    assert "inf" in metric.description and "NaN" in metric.description
    # The CLI's tables show them differently: "inf" and "-".
    from flywheel_sd.cli._common import fmt

    assert fmt(math.inf) != fmt(math.nan)


# Y(1) = 3 X1 + X2 with X1 ~ U(0, 1), X2 ~ U(0, 2): Var = 9/12 + 4/12, so
# S1 = ST = (9/13, 4/13) (an additive model has no interactions).
LINEAR = vensim(
    "Y = INTEG(3 * X1 + X2, 0) ~ units",
    "X1 = 0.5 ~ units/Time [0, 1]",
    "X2 = 1 ~ units/Time [0, 2]",
    final_time=1,
    time_step=0.25,
    saveper=0.25,
    time_units="Time",
    control_limits=True,
)
ANALYTIC = np.array([9 / 13, 4 / 13])


def _sobol(model, n, seed):
    design = designs.saltelli(["X1", "X2"], n, seed=seed, model=model)
    return fw.sweep(
        model,
        design,
        metrics={"final": lambda ds: ds["Y"].isel(time=-1)},
        method="euler",
        progress=False,
    )


@pytest.fixture
def linear(write_mdl):
    return fw.load(write_mdl(LINEAR, "linear.mdl"))


def test_sobol_with_too_few_runs_warns_naming_the_parameters(linear):
    ds = _sobol(linear, 4, seed=0)
    with pytest.warns(WideIntervalWarning) as record:
        table = fw.sensitivity(ds, "final", seed=1)
    assert len(record) == 1
    message = str(record[0].message)
    assert "\n" not in message and "'X1'" in message and "raise n" in message
    wide = table[(table["S1_conf"] > table["S1"].abs()) | (table["ST_conf"] > table["ST"].abs())]
    assert not wide.empty and all(f"'{p}'" in message for p in wide.index)
    assert issubclass(WideIntervalWarning, UserWarning)


def test_well_resolved_sobol_does_not_warn_and_matches_the_analytic_indices(linear):
    ds = _sobol(linear, 256, seed=3)
    with warnings.catch_warnings():
        warnings.simplefilter("error", WideIntervalWarning)
        table = fw.sensitivity(ds, "final", seed=1)
    for column in ("S1", "ST"):
        error = np.abs(table[column].to_numpy() - ANALYTIC)
        assert (error <= table[f"{column}_conf"].to_numpy()).all(), table
