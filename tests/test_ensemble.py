"""Sweeps on the compiled engine: each member of a chunk equals its own single run.

Members are integrated one by one by the same compiled driver as `simulate`, each with its
own step-size control, so equality is exact for fixed-step methods and for the adaptive
ones too (same steps, same arithmetic): the tests assert equality to round-off, and one
test fails if members shared a step size.
"""

from __future__ import annotations

import importlib

import numpy as np
import pytest
from _shared import FRAGILE, sir_fixture  # noqa: F401  (sir_fixture: the `sir` fixture)
from conformance_mdl import vensim

import flywheel_sd as fw
from flywheel_sd.sweeps.chunk import RunOptions, expected_times, run_chunk

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
    final_time=20,
    time_step=0.25,
    time_units="Year",
    control_limits=True,
)

# Exponential decay at rates spanning two orders of magnitude: a closed form per member.
DECAY = vensim(
    "Stock = INTEG(-Rate * Stock, 1) ~ units",
    "Rate = 1 ~ 1/Time [0.01, 10]",
    final_time=5,
    time_step=0.01,
    saveper=0.5,
    time_units="Time",
    control_limits=True,
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
    final_time=10,
    time_step=0.125,
    time_units="Time",
    control_limits=True,
)


@pytest.fixture
def model_of(write_mdl):
    def make(text: str, name: str):
        return fw.load(write_mdl(text, name))

    return make


@pytest.fixture(params=["python", "numba"])
def backend(request, monkeypatch):
    """The plain-Python backend and Numba (compiled here: slow on the first run)."""
    if request.param == "numba":
        pytest.importorskip("numba")
        monkeypatch.setenv("FLYWHEEL_SD_JIT", "eager")
    return request.param


def _members(model, names, n, seed=0):
    rng = np.random.default_rng(seed)
    lo = np.array([model.ranges[p][0] for p in names])
    hi = np.array([model.ranges[p][1] for p in names])
    return lo + (hi - lo) * rng.random((n, len(names)))


def _assert_members_equal_single_runs(model, names, values, options, variables):
    times = expected_times(model, options)
    result = run_chunk(model, {}, names, values, options, variables, times)
    assert result.stats["mode"] == "compiled", result.stats
    assert (result.status == 1).all(), result.errors
    for j, row in enumerate(values):
        frame = fw.simulate(
            model,
            {k: float(v) for k, v in zip(names, row)},
            return_columns=variables,
            **options.simulate_kwargs(),
        )
        # the sweep's time coordinate is the clock's (t0 + k dt); the frame's is rounded
        np.testing.assert_allclose(frame.index.to_numpy(dtype=float), times, rtol=1e-12)
        for column, arr in result.columns.items():
            # the same driver on the same constants: equal up to the order of floating
            # point operations, which is the same too (rtol 1e-13 leaves room for FMA)
            np.testing.assert_allclose(
                arr[j],
                frame[column].to_numpy(dtype=float),
                rtol=1e-13,
                atol=0,
                err_msg=f"run {j} {column}",
            )
    return result


SIR_PARAMS = ["Contact Infectivity", "Duration"]


@pytest.mark.parametrize("method", ["euler", "rk4", "RK45", "RK23"])
def test_sir_members_equal_single_runs(sir, method):
    rng = np.random.default_rng(1)
    values = np.column_stack([rng.uniform(0.2, 0.5, 6), rng.uniform(3, 8, 6)])
    _assert_members_equal_single_runs(
        sir,
        SIR_PARAMS,
        values,
        RunOptions(method=method, saveper=2),
        ["Infectious", "Susceptible", "Succumbing"],
    )


@pytest.mark.parametrize("method", ["euler", "RK45"])
def test_subscripted_members_equal_single_runs(model_of, method, backend):
    model = model_of(REGIONS, "regions.mdl")
    names = ["Birth Rate", "Capacity", "Crisis Level", "Perception Time"]
    values = _members(model, names, 4, seed=2)
    variables = [
        "Population",
        "Births",
        "Deaths",
        "Total Population",
        "Perceived Population",
        "Average Size",
        "North Share",
    ]
    result = _assert_members_equal_single_runs(
        model, names, values, RunOptions(method=method), variables
    )
    # fixed-step chunks without Numba run members as rows of NumPy arrays (lock-step)
    lockstep = backend == "python" and method in ("euler", "rk4")
    assert result.stats["engine"] == (
        "compiled (numpy lock-step)" if lockstep else f"compiled ({backend})"
    )


@pytest.mark.parametrize("method", ["euler", "RK45"])
def test_switches_lookups_and_pulses(model_of, method):
    """Member-specific switch and pulse times: each member gets its own breakpoints."""
    model = model_of(SWITCH, "switch.mdl")
    names = ["Threshold", "Pulse Start", "Drain Time"]
    _assert_members_equal_single_runs(
        model,
        names,
        _members(model, names, 5, seed=3),
        RunOptions(method=method),
        ["Level", "Inflow", "Drain"],
    )


def test_each_member_has_its_own_step_size(model_of):
    """Decay rates two orders of magnitude apart: a fast member needs many RK45 steps, a
    slow one few. Shared steps would give every member the fast one's count."""
    model = model_of(DECAY, "decay.mdl")
    values = np.array([[0.01], [10.0], [0.1]])
    result = _assert_members_equal_single_runs(
        model, ["Rate"], values, RunOptions(method="RK45"), ["Stock"]
    )
    single = [fw.simulate(model, {"Rate": float(r)}).attrs["nfev"] for (r,) in values]
    assert result.stats["nfev"] == sum(single)
    assert single[1] > 3 * single[0]  # the check has teeth: the counts differ widely
    # and the closed form holds within the tolerance for every member
    times = result.times
    for j, (rate,) in enumerate(values):
        exact = np.exp(-rate * times)
        err = np.abs(result.columns["Stock"][j] - exact) / (1e-6 + 1e-6 * exact)
        assert err.max() < 5, (rate, err.max())


@pytest.mark.parametrize("method", ["euler", "RK45"])
def test_failed_members_are_isolated_and_recorded(model_of, method):
    model = model_of(FRAGILE, "fragile.mdl")
    values = np.array([[50.0], [4.0], [30.0], [7.0], [60.0]])  # 4 and 7 fail before t=10
    options = RunOptions(method=method)
    times = expected_times(model, options)
    result = run_chunk(model, {}, ["Threshold"], values, options, ["Accumulated"], times)
    assert result.status.tolist() == [1, 2, 1, 2, 1]
    assert set(result.errors) == {1, 3}
    assert "non-finite" in result.errors[1] and "'Accumulated'" in result.errors[1]
    assert "fallback" not in result.stats
    frame = fw.simulate(model, {"Threshold": 30.0}, method=method, return_columns=["Accumulated"])
    np.testing.assert_allclose(result.columns["Accumulated"][2], frame["Accumulated"], rtol=1e-13)
    assert np.isnan(result.columns["Accumulated"][1]).all()


def test_a_model_the_compiler_refuses_runs_per_run_on_pysd(model_of):
    """DELAY FIXED is discrete: the compiler refuses it, the chunk runs through simulate."""
    model = model_of(
        vensim(
            "Out = DELAY FIXED(In, 2, 0) ~ units",
            "In = 1 + Gain * Time",
            "Gain = 1 ~ units/Time [0, 5]",
            final_time=5,
            time_step=0.5,
            time_units="Time",
            control_limits=True,
        ),
        "fixed.mdl",
    )
    values = np.array([[1.0], [3.0]])
    options = RunOptions(method="euler")
    result = run_chunk(
        model, {}, ["Gain"], values, options, ["Out"], expected_times(model, options)
    )
    assert "DELAY FIXED" in result.stats["fallback"]
    for j, (gain,) in enumerate(values):
        frame = fw.simulate(model, {"Gain": gain}, method="euler", engine="pysd")
        np.testing.assert_array_equal(result.columns["Out"][j], frame["Out"])


FLYWHEEL_PARAMS = ["Take Rate", "Seller Deposit", "Ad Budget"]


@pytest.mark.slow
@pytest.mark.parametrize("method", ["euler", "RK45"])
def test_flywheel_members_equal_single_runs(flywheel_model, method):
    """The project's model (subscripts, SMOOTHs, lookups, STEP policies) as a chunk."""
    values = np.array([[0.05, 0.0, 2e5], [0.25, 2500.0, 1.5e6], [0.15, 800.0, 8e5]])
    variables = [
        "Active Buyers",
        "Active Sellers",
        "Platform Cash",
        "GMV",
        "Buyer Trust",
        "Low Quality Seller Share",
    ]
    _assert_members_equal_single_runs(
        flywheel_model, FLYWHEEL_PARAMS, values, RunOptions(method=method), variables
    )


@pytest.mark.slow
@pytest.mark.parametrize("lockstep_wins", [True, False])
def test_numba_or_lockstep_chosen_by_timing_gives_the_same_runs(
    model_of, monkeypatch, lockstep_wins
):
    """Large fixed-step chunks time NumPy lock-step against the Numba loop once and take
    the faster; either way each member equals its single run."""
    pytest.importorskip("numba")
    from flywheel_sd.sweeps import chunk

    monkeypatch.setenv("FLYWHEEL_SD_JIT", "eager")
    monkeypatch.setattr(chunk, "PROBE_MIN_RUNS", 20)
    monkeypatch.setattr(chunk, "_PROBE", (4, 8))
    model = model_of(DECAY, "decay.mdl")
    cm = model.compiled()
    cm.strategy.clear()
    values = np.linspace(0.01, 10, 24)[:, None]
    options = RunOptions(method="euler")
    times = expected_times(model, options)
    result = run_chunk(model, {}, ["Rate"], values, options, ["Stock"], times)
    assert ("euler", 24) in cm.strategy  # the probe ran and decided
    cm.strategy[("euler", 24)] = lockstep_wins  # now force each way
    result = run_chunk(model, {}, ["Rate"], values, options, ["Stock"], times)
    assert result.stats["lockstep"] is lockstep_wins
    for j, (rate,) in enumerate(values):
        frame = fw.simulate(model, {"Rate": float(rate)}, method="euler")
        np.testing.assert_allclose(result.columns["Stock"][j], frame["Stock"], rtol=1e-13)


@pytest.mark.slow
def test_background_warm_up_fills_numba_s_cache_for_later_processes(model_of):
    """`python -m flywheel_sd.engine.warm` compiles a model's single-run and members
    drivers into Numba's on-disk cache: a later process then loads them without compiling
    (cache hits, no misses)."""
    import subprocess
    import sys

    pytest.importorskip("numba")
    model = model_of(DECAY, "decay.mdl")
    cm = model.compiled()
    from flywheel_sd.engine import modules

    path = cm.path("numba")
    modules.write_module(
        path, importlib.import_module("flywheel_sd.engine.compiled")._body(cm.program), "numba"
    )
    assert not cm.numba_is_warm()
    subprocess.run(
        [sys.executable, "-m", "flywheel_sd.engine.warm", str(path)], check=True, timeout=600
    )
    assert cm.numba_is_warm()
    # a later process runs what sweeps and single runs run, and counts compiles
    check = (
        "import sys, numpy as np, flywheel_sd as fw\n"
        "from flywheel_sd.engine import run\n"
        "from flywheel_sd.engine.ensemble import run_members\n"
        f"model = fw.load({str(model.path)!r}); cm = model.compiled()\n"
        "mod = cm.module('numba'); c = cm.constants({}, {})\n"
        "run.fixed_step(cm, mod, c, 'euler', None)\n"
        "run.adaptive(cm, mod, c, 'RK45', 1e-6, 1e-6, None, [], None)\n"
        "for method in ('euler', 'RK45'):\n"
        "    run_members(cm, mod, {}, ['Rate'], np.array([[0.5], [1.0], [2.0]]),\n"
        "                method=method, rtol=1e-6, atol=1e-6, max_step=None, control={},\n"
        "                return_timestamps=None, breakpoints=[], columns=[4])\n"
        "names = ['euler', 'rk45', 'fixed_members', 'adaptive_members', 'init_members']\n"
        "counts = {n: (sum(getattr(mod, n).stats.cache_hits.values()),\n"
        "              sum(getattr(mod, n).stats.cache_misses.values())) for n in names}\n"
        "print(counts)\n"
        "sys.exit(any(miss or not hit for hit, miss in counts.values()))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", check], capture_output=True, text=True, timeout=600, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
