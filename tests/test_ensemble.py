"""Ensemble integration: N members at once equal N single runs, member by member."""

from __future__ import annotations

import numpy as np
import pytest

import flywheel_sd as fw
from _shared import FRAGILE, sir_fixture  # noqa: F401  (sir_fixture: the `sir` fixture)
from conformance_mdl import vensim
from flywheel_sd import _broadcast, _ensemble
from flywheel_sd._ensemble import RunOptions, expected_times, run_chunk, simulate_ensemble

# Subscripts, a SMOOTH of a subscripted variable, a lookup called with a subscripted
# argument, IF THEN ELSE on a SUM over the range, ZIDZ.
REGIONS = vensim(
    "Region: north, south, east",
    "Population[Region] = INTEG(Births[Region] - Deaths[Region], Initial Population[Region])"
    " ~ people",
    "Initial Population[Region] = 100, 50, 20 ~ people",
    "Births[Region] = Population[Region] * Birth Rate"
    " * Crowding Effect(Population[Region] / Capacity) ~ people/Year",
    "Crowding Effect([(0,0)-(2,1)],(0,1),(0.5,0.9),(1,0.5),(1.5,0.1),(2,0)) ~ Dmnl",
    "Birth Rate = 0.1 ~ 1/Year [0.01, 0.3]",
    "Capacity = 200 ~ people [50, 500]",
    "Deaths[Region] = Population[Region]"
    " * IF THEN ELSE(Total Population > Crisis Level, Crisis Death Rate, Death Rate[Region])"
    " ~ people/Year",
    "Death Rate[Region] = 0.02, 0.03, 0.01 ~ 1/Year",
    "Crisis Level = 300 ~ people [100, 1000]",
    "Crisis Death Rate = 0.08 ~ 1/Year [0, 0.2]",
    "Total Population = SUM(Population[Region!]) ~ people",
    "North Share = ZIDZ(Population[north], Total Population) ~ Dmnl"
    ' ~ PySD selects the element by position (.loc["north"]).',
    "Perceived Population[Region] = SMOOTH(Population[Region], Perception Time) ~ people",
    "Perception Time = 3 ~ Year [1, 10]",
    "Average Size = ZIDZ(Total Population, 3) ~ people",
    final_time=20, time_step=0.25, time_units="Year", control_limits=True,
)

# Exponential decay at rates spanning two orders of magnitude: a closed form per member.
DECAY = vensim(
    "Stock = INTEG(-Rate * Stock, 1) ~ units",
    "Rate = 1 ~ 1/Time [0.01, 10]",
    final_time=5, time_step=0.01, saveper=0.5, time_units="Time", control_limits=True,
)

# A switch: IF THEN ELSE on a state, whose threshold differs between members.
SWITCH = vensim(
    "Level = INTEG(Inflow, 0) ~ units",
    "Inflow = IF THEN ELSE(Level > Threshold, 0.5, 1) + PULSE(Pulse Start, 1)"
    " + Effect(Level / 10) ~ units/Time",
    "Effect([(0,0)-(2,2)],(0,0),(1,1),(2,1.5)) ~ Dmnl",
    "Threshold = 5 ~ units [0, 20]",
    "Pulse Start = 3 ~ Time [0, 10]",
    "Drain = INTEG(-Drain Rate, 1) ~ units",
    "Drain Rate = XIDZ(Drain, Drain Time, 0) + INTEGER(Level) * 0 ~ units/Time",
    "Drain Time = 2 ~ Time [0, 5]",
    final_time=10, time_step=0.125, time_units="Time", control_limits=True,
)


@pytest.fixture
def model_of(write_mdl):
    def make(text: str, name: str):
        return fw.load(write_mdl(text, name))
    return make


def _members(model, names, n, seed=0):
    rng = np.random.default_rng(seed)
    lo = np.array([model.ranges.get(p, (0.2, 0.5))[0] for p in names])
    hi = np.array([model.ranges.get(p, (0.2, 0.5))[1] for p in names])
    return lo + (hi - lo) * rng.random((n, len(names)))


def _assert_members_match(model, names, values, options, variables):
    times, columns, stats = simulate_ensemble(model, {}, names, values, options, variables)
    for j, row in enumerate(values):
        frame = fw.simulate(model, {k: float(v) for k, v in zip(names, row)},
                            return_columns=variables,
                            **options.simulate_kwargs())
        np.testing.assert_allclose(frame.index.to_numpy(dtype=float), times)
        for column, arr in columns.items():
            ref = frame[column].to_numpy(dtype=float)
            if options.method in ("euler", "rk4"):
                np.testing.assert_allclose(arr[j], ref, rtol=1e-10, atol=1e-12,
                                           err_msg=f"run {j} {column}")
            else:  # both meet the local tolerance with different step sequences; at a
                # switch (IF THEN ELSE on a state) their global errors differ by tens of units
                err = np.abs(arr[j] - ref) / (options.atol + options.rtol * np.abs(ref))
                assert err.max() < 200, f"run {j} {column}: {err.max():.1f} tolerance units"
    return stats


SIR_PARAMS = ["Contact Infectivity", "Duration"]


@pytest.mark.parametrize("method", ["euler", "rk4", "RK45", "DOP853", "LSODA", "BDF", "Radau"])
def test_sir_ensemble_equals_single_runs(sir, method):
    rng = np.random.default_rng(1)
    values = np.column_stack([rng.uniform(0.2, 0.5, 6), rng.uniform(3, 8, 6)])
    stats = _assert_members_match(sir, SIR_PARAMS, values, RunOptions(method=method, saveper=2),
                                  ["Infectious", "Susceptible", "Succumbing"])
    assert stats["mode"] == "numpy" and stats["members"] == 6


def test_single_member_ensemble_is_padded(sir):
    values = np.array([[0.3, 5.0]])
    stats = _assert_members_match(sir, SIR_PARAMS, values, RunOptions(method="RK45", saveper=5),
                                  ["Infectious"])
    assert stats["padded"] >= 1


@pytest.mark.slow
@pytest.mark.parametrize("method", ["euler", "RK45"])
def test_subscripted_ensemble_equals_single_runs(model_of, method):
    model = model_of(REGIONS, "regions.mdl")
    names = ["Birth Rate", "Capacity", "Crisis Level", "Perception Time"]
    # 3 members: as many as regions, so the ensemble is padded to stay unambiguous
    values = _members(model, names, 3, seed=2)
    variables = ["Population", "Births", "Deaths", "Total Population",
                 "Perceived Population", "Average Size", "North Share"]
    stats = _assert_members_match(model, names, values, RunOptions(method=method), variables)
    assert stats["mode"] == "xarray" and stats["padded"] >= 1


@pytest.mark.parametrize("method", ["euler", "RK45"])
def test_switches_lookups_and_pulses_broadcast(model_of, method):
    model = model_of(SWITCH, "switch.mdl")
    names = ["Threshold", "Pulse Start", "Drain Time"]
    values = np.array([[1.0, 2.0, 0.0], [6.0, 3.0, 1.0], [15.0, 7.5, 4.0], [8.0, 5.0, 2.0]])
    _assert_members_match(model, names, values, RunOptions(method=method),
                          ["Level", "Inflow", "Drain", "Drain Rate"])


def test_each_member_meets_the_tolerance_alone(model_of):
    """One shared step, but each member's own error is controlled (max over members)."""
    model = model_of(DECAY, "decay.mdl")
    rates = np.r_[np.full(99, 0.05), 8.0][:, None]  # one hard member among easy ones
    options = RunOptions(method="RK45", rtol=1e-6, atol=1e-9)
    times, columns, _ = simulate_ensemble(model, {}, ["Rate"], rates, options, ["Stock"])
    exact = np.exp(-rates * times[None, :])
    err = np.abs(columns["Stock"] - exact) / (options.atol + options.rtol * exact)
    rms = np.sqrt(np.mean(err ** 2, axis=1))
    assert rms.max() < 5, rms.max()


def test_rhs_is_pure(sir):
    values = np.array([[0.3, 5.0], [0.4, 4.0], [0.25, 6.0]])
    run = _ensemble.EnsembleRun(sir, {}, SIR_PARAMS, values, RunOptions(), ["Infectious"])
    try:
        with _broadcast.active(run.n):
            y = run.system.get_state()
            y_copy = y.copy()
            first = run.system.rhs(3.0, y)
            run.system.rhs(7.0, y * 2)
            again = run.system.rhs(3.0, y)
    finally:
        run.close()
    np.testing.assert_array_equal(first, again)
    np.testing.assert_array_equal(y, y_copy)


def test_helpers_are_restored_after_an_ensemble(sir):
    values = np.array([[0.3, 5.0], [0.4, 4.0]])
    simulate_ensemble(sir, {}, SIR_PARAMS, values, RunOptions(), ["Infectious"])
    frame = fw.simulate(sir, {"Contact Infectivity": 0.3, "Duration": 5.0}, saveper=5)
    assert np.isfinite(frame["Infectious"]).all()


def test_element_that_does_not_broadcast_falls_back(model_of, monkeypatch):
    model = model_of(SWITCH, "switch.mdl")
    monkeypatch.delitem(_broadcast._FUNCTIONS, "if_then_else")  # PySD's own: Python `if`
    names = ["Threshold"]
    values = np.array([[1.0], [6.0], [15.0]])
    options = RunOptions(method="euler")
    times = expected_times(model, options)
    result = run_chunk(model, {}, names, values, options, ["Level"], times)
    assert "does not run as an ensemble" in result.stats["fallback"]
    for j, (threshold,) in enumerate(values):
        frame = fw.simulate(model, {"Threshold": threshold}, method="euler",
                            return_columns=["Level"])
        np.testing.assert_allclose(result.columns["Level"][j], frame["Level"], rtol=1e-12)


def test_wrong_broadcast_is_caught_by_verification(model_of, monkeypatch):
    """A helper that broadcasts but computes the wrong thing: the single-run check sees it."""

    def wrong_if_then_else(condition, val_if_true, val_if_false):
        return val_if_true() if np.any(condition) else val_if_false()

    model = model_of(SWITCH, "switch.mdl")
    monkeypatch.setitem(_broadcast._FUNCTIONS, "if_then_else", wrong_if_then_else)
    names = ["Threshold"]
    values = np.array([[15.0], [6.0], [1.0]])  # the first member never crosses its threshold
    options = RunOptions(method="euler")
    times = expected_times(model, options)
    result = run_chunk(model, {}, names, values, options, ["Level"], times, verify=1)
    assert "differs from its single run" in result.stats["fallback"]
    frame = fw.simulate(model, {"Threshold": 15.0}, method="euler", return_columns=["Level"])
    np.testing.assert_allclose(result.columns["Level"][0], frame["Level"], rtol=1e-12)


@pytest.mark.parametrize("method", ["euler", "RK45"])
def test_failed_members_are_isolated_and_recorded(model_of, method):
    model = model_of(FRAGILE, "fragile.mdl")
    values = np.array([[50.0], [4.0], [30.0], [7.0], [60.0]])  # 4 and 7 fail before t=10
    options = RunOptions(method=method)
    times = expected_times(model, options)
    result = run_chunk(model, {}, ["Threshold"], values, options, ["Accumulated"], times)
    assert result.status.tolist() == [1, 2, 1, 2, 1]
    assert set(result.errors) == {1, 3}
    assert "non-finite" in result.errors[1]
    assert "fallback" not in result.stats
    frame = fw.simulate(model, {"Threshold": 30.0}, method=method,
                        return_columns=["Accumulated"])
    err = np.abs(result.columns["Accumulated"][2] - frame["Accumulated"].to_numpy())
    assert err.max() < 50 * (1e-6 + 1e-6 * frame["Accumulated"].abs().max())
    assert np.isnan(result.columns["Accumulated"][1]).all()


def test_member_norm_is_max_over_members():
    x = np.zeros(6)
    x[4] = 3.0  # member 2 of 3, two states each
    assert _ensemble.member_norm(x, 3, 2) == pytest.approx(np.sqrt(9 / 2))
    assert _ensemble.member_norm(np.ones((3, 6)), 3, 2) == pytest.approx(1.0)


FLYWHEEL_PARAMS = ["Take Rate", "Seller Deposit", "Ad Budget"]


@pytest.mark.slow
@pytest.mark.parametrize("method", ["euler", "RK45"])
def test_flywheel_ensemble_equals_single_runs(flywheel_model, method):
    """The project's model (subscripts, SMOOTHs, lookups, STEP policies) as an ensemble."""
    values = np.array([[0.05, 0.0, 2e5], [0.25, 2500.0, 1.5e6], [0.15, 800.0, 8e5]])
    options = RunOptions(method=method)
    variables = ["Active Buyers", "Active Sellers", "Platform Cash", "GMV", "Buyer Trust",
                 "Low Quality Seller Share"]  # the last selects a subscript by position
    times = expected_times(flywheel_model, options)
    # exact checks of all three; no whole re-runs inside: this test runs each alone below
    result = run_chunk(flywheel_model, {}, FLYWHEEL_PARAMS, values, options, variables,
                       times, verify=3, rerun=0)
    assert "fallback" not in result.stats, result.stats.get("fallback")
    assert result.stats["mode"] == "xarray" and result.stats["verified"] == [0, 2, 1]
    for j, row in enumerate(values):
        frame = fw.simulate(flywheel_model, dict(zip(FLYWHEEL_PARAMS, map(float, row))),
                            return_columns=variables, method=method)
        for column, arr in result.columns.items():
            ref = frame[column].to_numpy(dtype=float)
            if method == "euler":
                np.testing.assert_allclose(arr[j], ref, rtol=1e-9, atol=1e-9 * np.abs(ref).max(),
                                           err_msg=f"run {j} {column}")
            else:
                err = np.abs(arr[j] - ref) / (options.atol + options.rtol * np.abs(ref))
                assert err.max() < _ensemble.VERIFY_FACTOR, (column, err.max())
