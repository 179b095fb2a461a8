"""Extreme conditions at every integration step (issue 11): with any documented lever at either
end of its range, alone or paired with another extreme, no stock goes negative at any Euler
step, and cash never falls below minus the credit line.

Sterman, *Business Dynamics* ch. 13: a physical stock must stay non-negative because each
outflow is first-order controlled (it cannot remove more than the stock holds). The model
guarantees this only for Euler steps no longer than half the Minimum Residence Time, so the
runs use the model's own TIME STEP, and record every step (SAVEPER = TIME STEP): monthly
output would hide an overshoot inside the month.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import flywheel_sd as fw

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _numba(monkeypatch):
    """Some 300 runs of 1,920 recorded steps: the Numba backend, as sweeps use."""
    monkeypatch.setenv("FLYWHEEL_SD_JIT", "eager")


#: Stocks that may be negative by design: cash is net of debt, drawn on the credit line.
SIGNED = {"Platform Cash"}
#: Stocks that are fractions and must stay in [0, 1].
FRACTIONS = {"Buyer Trust", "Seller Confidence", "Investor Confidence", "Platform Exit"}

#: The named extremes of issue 11, each a lever setting at an end of its documented range.
NAMED = {
    "ads huge": {"Ad Budget": "max"},
    "clicks cheap": {"Cost per Click": "min"},
    "take rate 0": {"Take Rate": 0.0},
    "take rate 1": {"Take Rate": 1.0},
    "deposit huge": {"Seller Deposit": "max"},
    "trust 0": {"Initial Buyer Trust": 0.0},
    "no sellers": {"Initial Active Sellers": 0.0},
    "rival at full strength": {"Competitor Entry Time": 0.0, "Competitor Strength": "max"},
    "market of 1e9": {"Addressable Market": 1e9},
    "recruitment huge": {"Seller Recruitment Budget": "max"},
    "impatient investors": {"Investor Patience": "min"},
}


def _resolve(model, setting: dict) -> dict:
    out = {}
    for name, value in setting.items():
        low, high = model.ranges[name]
        out[name] = {"min": low, "max": high}.get(value, value)
    return out


def _check(model, params: dict, label: str) -> None:
    step = model.time_settings()["time_step"]
    columns = [*model.stocks, "Credit Line"]
    out = fw.simulate(model, params, method="euler", saveper=step, return_columns=columns)
    assert len(out) > 1000, "every integration step is recorded"
    values = out.to_numpy()
    assert np.isfinite(values).all(), f"{label}: non-finite values"
    for column in out.columns:
        stock = column.split("[")[0]
        series = out[column].to_numpy()
        if stock in SIGNED or stock == "Credit Line":
            continue
        assert series.min() >= 0.0, f"{label}: {column} went negative ({series.min():.3g})"
        if stock in FRACTIONS:
            assert series.max() <= 1.0, f"{label}: {column} above 1 ({series.max():.3g})"
    cash = out["Platform Cash"].to_numpy()
    credit = out["Credit Line"].to_numpy()
    assert (cash >= -credit).all(), (
        f"{label}: cash {cash.min():.4g} fell below minus the credit line"
    )


def test_every_lever_at_either_end_of_its_range(flywheel_model):
    """Each constant with a documented range, alone, at its minimum and at its maximum."""
    settings = flywheel_model.time_settings()
    control = {"INITIAL TIME", "FINAL TIME", "TIME STEP", "SAVEPER"}
    checked = 0
    for name, (low, high) in sorted(flywheel_model.ranges.items()):
        if name in control or name not in flywheel_model.constants:
            continue
        for value in (low, high):
            _check(flywheel_model, {name: value}, f"{name}={value:g}")
            checked += 1
    assert checked > 100 and settings["time_step"] > 0


@pytest.mark.parametrize(
    "first, second", list(itertools.combinations(sorted(NAMED), 2)), ids="+".join
)
def test_named_extremes_in_pairs(flywheel_model, first, second):
    params = _resolve(flywheel_model, {**NAMED[first], **NAMED[second]})
    _check(flywheel_model, params, f"{first} + {second}")


@pytest.mark.parametrize("name", fw.scenarios.list())
def test_every_built_in_scenario_stays_in_bounds(flywheel_model, name):
    """The first model breached its US$100M credit line in 5 of 11 scenarios (Ezbuy down to
    -162M); now every scenario keeps cash above minus the credit line, and every stock
    non-negative, at every Euler step."""
    scenario = fw.scenarios.get(name)
    if scenario.model is not None:
        pytest.skip(f"{name} runs another model")
    times = flywheel_model.time_settings()
    params, _ = scenario.inputs(flywheel_model, times["initial_time"], times["final_time"])
    _check(flywheel_model, params, name)


def test_a_platform_with_no_buyers_stops_paying(flywheel_model):
    """Issue 11: a platform with no buyers used to pay its US$1.5M a month forever. Out of
    money and of investors' patience it now exits (more than nine tenths by month 120) and
    its operating cost falls below a tenth of the fixed cost."""
    out = fw.simulate(
        flywheel_model,
        {"Addressable Market": 0},
        return_columns=["Platform Exit", "Operating Cost", "Fixed Operating Cost"],
    )
    assert out["Platform Exit"][120] > 0.9
    assert out["Operating Cost"][120] < 0.1 * out["Fixed Operating Cost"][120]
