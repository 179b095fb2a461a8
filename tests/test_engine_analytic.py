"""The engine against closed forms and independent recurrences, on small models of our own.

Accuracy criterion for the adaptive methods, at ``rtol = atol = TOL = 1e-9``:

* the worst error relative to the largest |y_true| is below 1e-6, for every method;
* the error in tolerance units as in SciPy's ``_ivp`` tests,
  e = (y - y_true) / (atol + rtol*|y_true|), has rms(e) < 5 for RK45, DOP853 and Radau.
  The tolerances bound the *local* error; RK23, LSODA and BDF let the *global* error grow
  past them over the oscillator's four periods (measured: ~18, ~10 and ~110 units), so
  their bound is 25, 25 and 150 (`RMS_BOUND`).

``"euler"`` and ``"rk4"`` are compared to their recurrences computed here with NumPy, to
round-off (rtol 1e-12).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from _shared import load_text
from conformance_mdl import vensim

import flywheel_sd as fw
from flywheel_sd.engine.simulate import ADAPTIVE_METHODS

TOL = 1e-9
ROUND_OFF = 1e-12


def rms_tolerance_units(y, y_true, rtol=TOL, atol=TOL) -> float:
    e = (np.asarray(y, float) - y_true) / (atol + rtol * np.abs(y_true))
    return float(np.sqrt(np.mean(e**2)))


RMS_BOUND = {"RK45": 5, "DOP853": 5, "Radau": 5, "RK23": 25, "LSODA": 25, "BDF": 150}


def assert_matches_closed_form(y, y_true, method="RK45"):
    y, y_true = np.asarray(y, float), np.asarray(y_true, float)
    assert rms_tolerance_units(y, y_true) < RMS_BOUND[method]
    scale = max(float(np.max(np.abs(y_true))), 1e-300)
    assert float(np.max(np.abs(y - y_true))) / scale < 1e-6


def euler_grid(t0, t1, dt):
    """PySD's time grid: t += dt until t + dt*1e-5 >= t1."""
    out, t = [], t0
    while t + dt * 1e-5 < t1:
        out.append(t)
        t = t + dt
    return out, t


# -- models --------------------------------------------------------------------------------
DECAY = vensim("Stock = INTEG(-k * Stock, 100)", "k = 0.3")
LOGISTIC = vensim("P = INTEG(r * P * (1 - P / K), 10)", "r = 0.5", "K = 1000")
BASS = vensim(
    "Adopters = INTEG(Adoption, 0)",
    "Adoption = (p + q * Adopters / M) * (M - Adopters)",
    "p = 0.03",
    "q = 0.38",
    "M = 1000",
)
OSCILLATOR = vensim(
    "x = INTEG(v, 1)",
    "v = INTEG(-w * w * x, 0)",
    "w = 1.3",
)
SUBSCRIPTED = vensim(
    "region: north, south, east",
    "product: a, b",
    "rate[region] = 0.1, 0.2, 0.3",
    "init[product] = 5, 7",
    "Stock[region, product] = INTEG(-rate[region] * Stock[region, product], init[product])",
)
STEP_INPUT = vensim("S = INTEG(STEP(h, 3.3), 0)", "h = 2")
STIFF = vensim(
    "y = INTEG(-a * (y - COS(Time)), 0)", "a = 1000", final_time=10, time_step=0.001, saveper=0.5
)


def decay_true(t):
    return 100 * np.exp(-0.3 * t)


def logistic_true(t):
    return 1000 / (1 + (1000 / 10 - 1) * np.exp(-0.5 * t))


def bass_true(t):
    p, q, m = 0.03, 0.38, 1000
    e = np.exp(-(p + q) * t)
    return m * (1 - e) / (1 + q / p * e)


def stiff_true(t):
    a = 1000.0
    return (a * a * np.cos(t) + a * np.sin(t)) / (a * a + 1) - a * a / (a * a + 1) * np.exp(-a * t)


CLOSED_FORMS = {
    "decay": (DECAY, {"Stock": decay_true}),
    "logistic": (LOGISTIC, {"P": logistic_true}),
    "bass": (BASS, {"Adopters": bass_true}),
    "oscillator": (
        OSCILLATOR,
        {"x": lambda t: np.cos(1.3 * t), "v": lambda t: -1.3 * np.sin(1.3 * t)},
    ),
    "step": (STEP_INPUT, {"S": lambda t: 2 * np.maximum(t - 3.3, 0)}),
}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("analytic")
    out = {}
    for name, text in [(n, v[0]) for n, v in CLOSED_FORMS.items()] + [
        ("subscripted", SUBSCRIPTED),
        ("stiff", STIFF),
    ]:
        path = folder / f"{name}.mdl"
        path.write_text(text)
        out[name] = fw.load(path)
    return out


# -- adaptive methods against closed forms ---------------------------------------------------
@pytest.mark.parametrize("method", ADAPTIVE_METHODS)
@pytest.mark.parametrize("case", list(CLOSED_FORMS))
def test_adaptive_matches_closed_form(models, case, method):
    frame = fw.simulate(models[case], method=method, rtol=TOL, atol=TOL)
    t = frame.index.to_numpy(float)
    assert t[0] == 0 and t[-1] == 20 and len(t) == 21  # SAVEPER 1
    for column, truth in CLOSED_FORMS[case][1].items():
        assert_matches_closed_form(frame[column], truth(t), method)
    assert frame.attrs["method"] == method and frame.attrs["status"] == 0
    assert frame.attrs["nfev"] > 0


@pytest.mark.parametrize(
    "method",
    [pytest.param(m, marks=pytest.mark.slow) if m == "RK23" else m for m in ADAPTIVE_METHODS],
)
def test_subscripted_stock_keeps_its_order(models, method):
    frame = fw.simulate(models["subscripted"], method=method, rtol=TOL, atol=TOL)
    t = frame.index.to_numpy(float)
    for region, rate in zip(("north", "south", "east"), (0.1, 0.2, 0.3)):
        for product, init in zip(("a", "b"), (5, 7)):
            assert_matches_closed_form(
                frame[f"Stock[{region},{product}]"], init * np.exp(-rate * t), method
            )


def test_subscripted_stock_state_vector_is_flattened_in_xarray_order(models):
    """The flat vector follows each xarray's C order, and goes back into the same shape."""
    from flywheel_sd.engine.simulate import _Run

    run = _Run(models["subscripted"], {}, None, None, None, None, None)
    try:
        y = run.system.get_state()
        assert y.tolist() == [5, 7] * 3
        run.system.set_state(0.0, np.arange(6.0))
        state = run.system.slots[0].element.state
        assert state.dims == ("region", "product")
        assert state.sel(region="south", product="b").item() == 3.0
    finally:
        run.close()


# -- fixed-step methods against their recurrences --------------------------------------------
def test_euler_is_the_euler_recurrence(models):
    frame = fw.simulate(models["decay"], method="euler")
    grid, _ = euler_grid(0.0, 20.0, 0.125)
    y, saved = 100.0, [100.0]
    for n, _t in enumerate(grid):
        y = y + (-0.3 * y) * 0.125
        if (n + 1) % 8 == 0:
            saved.append(y)
    np.testing.assert_allclose(frame["Stock"], saved, rtol=ROUND_OFF, atol=0)
    assert frame.attrs["nfev"] == frame.attrs["n_steps"] == 160


def test_euler_recurrence_of_a_system(models):
    frame = fw.simulate(models["oscillator"], method="euler", saveper=0.125)
    x, v, w, dt = 1.0, 0.0, 1.3, 0.125
    xs = [x]
    for _ in range(160):
        x, v = x + v * dt, v + (-w * w * x) * dt
        xs.append(x)
    np.testing.assert_allclose(frame["x"], xs, rtol=ROUND_OFF, atol=1e-15)
    # Euler spirals out: the recurrence, not the closed form, is the reference.
    assert abs(xs[-1]) > abs(np.cos(1.3 * 20)) * 1.5


def test_euler_with_pysd_step_semantics(models):
    """PySD's STEP switches once t + TIME STEP/2 > tstep: at t = 3.25 for 3.3, dt 0.125."""
    frame = fw.simulate(models["step"], method="euler", saveper=0.125)
    grid, _ = euler_grid(0.0, 20.0, 0.125)
    s, out = 0.0, [0.0]
    for t in grid:
        s = s + 2 * (t + 0.125 / 2 > 3.3) * 0.125
        out.append(s)
    np.testing.assert_allclose(frame["S"], out, rtol=ROUND_OFF, atol=0)


@pytest.mark.parametrize("case", ["decay", "oscillator"])
def test_rk4_is_the_rk4_recurrence(models, case):
    a = {"decay": np.array([[-0.3]]), "oscillator": np.array([[0, 1], [-1.69, 0]])}[case]
    y0 = {"decay": [100.0], "oscillator": [1.0, 0.0]}[case]
    columns = {"decay": ["Stock"], "oscillator": ["x", "v"]}[case]
    h = 0.125
    m = h * a
    step = np.eye(len(y0)) + m + m @ m / 2 + m @ m @ m / 6 + m @ m @ m @ m / 24
    y, saved = np.array(y0), [np.array(y0)]
    for n in range(160):
        y = step @ y
        if (n + 1) % 8 == 0:
            saved.append(y)
    frame = fw.simulate(models[case], method="rk4")
    np.testing.assert_allclose(frame[columns].to_numpy(), np.array(saved), rtol=1e-11, atol=1e-13)
    assert frame.attrs["nfev"] == 4 * 160
    # and RK4 is fourth order: far closer to the closed form than Euler
    truth = {
        "decay": lambda t: decay_true(t)[:, None],
        "oscillator": lambda t: np.c_[np.cos(1.3 * t), -1.3 * np.sin(1.3 * t)],
    }[case]
    t = frame.index.to_numpy(float)
    euler = fw.simulate(models[case], method="euler")
    rk4_error = np.max(np.abs(frame[columns].to_numpy() - truth(t)))
    euler_error = np.max(np.abs(euler[columns].to_numpy() - truth(t)))
    assert rk4_error < 1e-3 and rk4_error < euler_error / 100


# -- stiffness --------------------------------------------------------------------------------
STIFF_NFEV_BOUND = 800  # measured: BDF ~480, LSODA ~550 (Jacobians by finite differences)


@pytest.mark.parametrize("method", ["BDF", "LSODA"])
def test_stiff_relaxation_is_cheap_for_implicit_methods(models, method):
    """y' = -1000 (y - cos t) over [0, 10]: implicit methods need few evaluations (nfev
    includes the finite-difference Jacobians); an explicit method is held to steps of about
    3/1000 by stability, whatever the tolerance."""
    frame = fw.simulate(models["stiff"], method=method, rtol=1e-6, atol=1e-9)
    t = frame.index.to_numpy(float)
    assert rms_tolerance_units(frame["y"], stiff_true(t), 1e-6, 1e-9) < 5
    assert frame.attrs["nfev"] < STIFF_NFEV_BOUND
    assert frame.attrs["njev"] >= 1


@pytest.mark.slow
def test_stiff_relaxation_is_expensive_for_rk45(models):
    implicit = fw.simulate(models["stiff"], method="BDF", rtol=1e-6, atol=1e-9)
    explicit = fw.simulate(models["stiff"], method="RK45", rtol=1e-6, atol=1e-9)
    t = explicit.index.to_numpy(float)
    assert rms_tolerance_units(explicit["y"], stiff_true(t), 1e-6, 1e-9) < 5
    assert explicit.attrs["nfev"] > 20 * implicit.attrs["nfev"]


def test_stiff_relaxation_euler_at_its_time_step(models):
    """Euler at a*dt = 1 is the recurrence y_{n+1} = cos(t_n) (stable, first order)."""
    frame = fw.simulate(models["stiff"], method="euler")
    grid, _ = euler_grid(0.0, 10.0, 0.001)
    y, out = 0.0, {0.0: 0.0}
    for n, t in enumerate(grid):
        y = y + (-1000 * (y - math.cos(t))) * 0.001
        if (n + 1) % 500 == 0:
            out[round((n + 1) * 0.001, 6)] = y
    np.testing.assert_allclose(frame["y"], list(out.values()), rtol=1e-9, atol=1e-12)


# -- SMOOTH, DELAY and TREND: continuous states with closed forms ---------------------------
def erlang_cdf(t, order, delay):
    """Output/input of an order-n material delay (or SMOOTHn) after a unit step at 0."""
    x = order * np.asarray(t, float) / delay
    return 1 - np.exp(-x) * sum(x**k / math.factorial(k) for k in range(order))


DELAYS = vensim(
    "input = 10",
    "tau = 4",
    "smooth 1 = SMOOTHI(input, tau, 0)",
    "smooth 3 = SMOOTH3I(input, tau, 0)",
    "delay 1 = DELAY1I(input, tau, 0)",
    "delay 3 = DELAY3I(input, tau, 0)",
    "delay n = DELAY N(input, tau, 0, 5)",
    "growing = EXP(g * Time)",
    "g = 0.1",
    "avg = 2",
    "smoothed growth = SMOOTH(growing, avg)",
    "trend of growth = TREND(growing, avg, 0)",
)


def delays_true(t):
    g, avg = 0.1, 2.0
    smooth = np.exp(g * t) / (1 + g * avg) + g * avg / (1 + g * avg) * np.exp(-t / avg)
    return {
        "smooth 1": 10 * erlang_cdf(t, 1, 4),
        "smooth 3": 10 * erlang_cdf(t, 3, 4),
        "delay 1": 10 * erlang_cdf(t, 1, 4),
        "delay 3": 10 * erlang_cdf(t, 3, 4),
        "delay n": 10 * erlang_cdf(t, 5, 4),
        "smoothed growth": smooth,
        # TREND = (input - SMOOTH(input, avg, input0 / (1 + trend0*avg))) / (avg * smooth)
        "trend of growth": (np.exp(g * t) - smooth) / (avg * smooth),
    }


@pytest.fixture(scope="module")
def delay_model(tmp_path_factory):
    return load_text(tmp_path_factory, "delays.mdl", DELAYS)


@pytest.mark.parametrize("method", ADAPTIVE_METHODS)
def test_smooth_delay_trend_match_closed_forms(delay_model, method):
    frame = fw.simulate(delay_model, method=method, rtol=TOL, atol=TOL)
    t = frame.index.to_numpy(float)
    for column, truth in delays_true(t).items():
        assert_matches_closed_form(frame[column], truth, method)


def test_smooth_delay_trend_euler_is_pysd_run(delay_model):
    """Euler reproduces PySD's own run(), DELAY N's shifting pipeline of delay times
    included, to round-off."""
    import pysd

    reference = pysd.load(str(delay_model.py_file)).run()
    frame = fw.simulate(delay_model, method="euler")
    # values, index and columns; PySD keeps integer constants as int64 columns
    pd.testing.assert_frame_equal(
        frame, reference, check_exact=False, rtol=ROUND_OFF, atol=1e-13, check_dtype=False
    )


def test_delay_rhs_is_pure(delay_model):
    """Evaluating the right-hand side twice at the same (t, y) gives the same answer (PySD's
    DelayN.ddt() shifts its delay-time pipeline as a side effect)."""
    from flywheel_sd.engine.simulate import _Run

    run = _Run(delay_model, {}, None, None, None, None, None)
    try:
        y = run.system.get_state() + 1.0
        first = run.system.rhs(1.5, y)
        run.system.rhs(7.0, y * 2)
        np.testing.assert_array_equal(run.system.rhs(1.5, y), first)
    finally:
        run.close()


# -- STEP and PULSE: where the switch happens ------------------------------------------------
PULSES = vensim(
    "pulse in = h * PULSE(2, 1.5)",
    "pulsed = INTEG(pulse in, 0)",
    "train in = h * PULSE TRAIN(1.1, 0.35, 3, 12)",
    "trained = INTEG(train in, 0)",
    "h = 4",
)


@pytest.fixture(scope="module")
def pulse_model(tmp_path_factory):
    return load_text(tmp_path_factory, "pulses.mdl", PULSES)


def test_step_off_the_grid_is_not_smeared(models):
    """RK45 at its default tolerances puts a STEP at 3.3 (not a TIME STEP multiple) exactly:
    3.3 is found in the model and the integration restarts there."""
    frame = fw.simulate(models["step"])
    t = frame.index.to_numpy(float)
    np.testing.assert_allclose(frame["S"], 2 * np.maximum(t - 3.3, 0), rtol=1e-6, atol=1e-9)
    assert 3.3 in frame.attrs["breakpoints"]


def test_step_semantics_adaptive_versus_euler(models):
    """The decision (see `exact_time_functions`): adaptive methods switch STEP at its own
    time; Euler keeps PySD's/Vensim's grid semantics (on from the first grid time past
    tstep - TIME STEP/2). For a STEP of height 2 at 3.3 and TIME STEP 0.125 Euler switches at
    3.25, so the two differ by 2 * 0.05 once the step is on, and converge as TIME STEP -> 0."""
    adaptive = fw.simulate(models["step"], rtol=TOL, atol=TOL)
    euler = fw.simulate(models["step"], method="euler")
    assert adaptive["S"].iloc[-1] == pytest.approx(2 * (20 - 3.3), rel=1e-9)
    assert euler["S"].iloc[-1] == pytest.approx(2 * (20 - 3.25), rel=1e-12)
    finer = fw.simulate(models["step"], method="euler", time_step=0.01)
    assert finer["S"].iloc[-1] == pytest.approx(2 * (20 - 3.3), rel=1e-9)


def test_pulse_integrates_to_its_area(pulse_model):
    """PULSE(2, 1.5) on the grid: both Euler and the adaptive methods deliver h * width."""
    for method in ("euler", "RK45", "BDF"):
        frame = fw.simulate(pulse_model, method=method, saveper=0.125)
        t = frame.index.to_numpy(float)
        np.testing.assert_allclose(
            frame["pulsed"], 4 * np.clip(t - 2, 0, 1.5), rtol=1e-6, atol=1e-9
        )


def test_pulse_train_off_the_grid_is_exact_under_adaptive_methods(pulse_model):
    """PULSE TRAIN(1.1, 0.35, 3, 12): edges at 1.1 + 3k and 1.45 + 3k are breakpoints."""
    frame = fw.simulate(pulse_model, saveper=0.125)
    t = frame.index.to_numpy(float)
    truth = sum(4 * np.clip(t - (1.1 + 3 * k), 0, 0.35) for k in range(4))
    np.testing.assert_allclose(frame["trained"], truth, rtol=1e-6, atol=1e-9)
    for k in range(4):
        assert any(abs(b - (1.1 + 3 * k)) < 1e-12 for b in frame.attrs["breakpoints"])
        assert any(abs(b - (1.45 + 3 * k)) < 1e-12 for b in frame.attrs["breakpoints"])


def test_time_switch_in_if_then_else_is_found(write_mdl):
    """A switch written as IF THEN ELSE on Time (here periodic, via MODULO) is located and
    integrated exactly, not left to step-size control (which can step over it)."""
    model = fw.load(
        write_mdl(
            vensim(
                "flow = IF THEN ELSE(MODULO(Time, 3) < 2, Time, 0)",
                "S = INTEG(flow, 0)",
                final_time=20,
                time_step=1,
            )
        )
    )
    frame = fw.simulate(model)
    t = frame.index.to_numpy(float)

    def truth(t):  # integral of s over [3k, 3k+2), k = 0, 1, ...
        total = 0.0
        for k in range(7):
            a, b = 3 * k, min(3 * k + 2, t)
            if b > a:
                total += (b * b - a * a) / 2
        return total

    np.testing.assert_allclose(frame["S"], [truth(x) for x in t], rtol=1e-6)
    assert {2.0, 3.0, 5.0, 6.0} <= {round(b, 9) for b in frame.attrs["breakpoints"]}


# -- time-series parameters and explicit breakpoints -----------------------------------------
RAMPED = vensim("input = 0", "S = INTEG(input, 0)")


def piecewise_linear_integral(t, knots, values):
    """Integral from 0 of the linear interpolant through (knots, values), held flat beyond."""
    fine = np.union1d(np.linspace(0, 20, 20001), knots)
    y = np.interp(fine, knots, values)
    cumulative = np.concatenate([[0], np.cumsum(np.diff(fine) * (y[1:] + y[:-1]) / 2)])
    return np.interp(t, fine, cumulative)


def test_time_series_parameter_knots_are_breakpoints(write_mdl):
    """A pandas.Series parameter is interpolated linearly by PySD; its kinks at 2.7 and
    6.1 (off the output grid) become breakpoints, so RK45 integrates it exactly."""
    model = fw.load(write_mdl(RAMPED))
    knots, values = [0.0, 2.7, 6.1, 20.0], [0.0, 4.0, 4.0, 0.0]
    series = pd.Series(values, index=knots)
    frame = fw.simulate(model, {"input": series})
    t = frame.index.to_numpy(float)
    np.testing.assert_allclose(
        frame["S"], piecewise_linear_integral(t, knots, values), rtol=1e-6, atol=1e-9
    )
    assert {2.7, 6.1} <= set(frame.attrs["breakpoints"])
    np.testing.assert_allclose(frame["input"], np.interp(t, knots, values), atol=1e-12)


def test_breakpoints_argument_restarts_at_a_switch_the_model_hides(write_mdl):
    """A switch the engine cannot see (here inside a lookup of Time) is declared with
    `breakpoints=`; the run then restarts there and is exact."""
    knots, values = [0, 4.4, 4.4001, 20], [0, 0, 5, 5]
    model = fw.load(
        write_mdl(
            vensim(
                "policy(  [(0,0)-(20,10)],(0,0),(4.4,0),(4.4001,5),(20,5))",
                "input = policy(Time)",
                "S = INTEG(input, 0)",
            )
        )
    )
    frame = fw.simulate(model, breakpoints=[4.4, 4.4001])
    t = frame.index.to_numpy(float)
    np.testing.assert_allclose(
        frame["S"], piecewise_linear_integral(t, knots, values), rtol=1e-6, atol=1e-9
    )
    assert {4.4, 4.4001} <= set(frame.attrs["breakpoints"])


# -- non-negative stocks (XMILE <non_negative/>, PySD's NonNegativeInteg) ---------------------
DRAIN = """<?xml version="1.0" encoding="utf-8"?>
<xmile version="1.0" xmlns="http://docs.oasis-open.org/xmile/ns/XMILE/v1.0">
  <header><name>drain</name><vendor>flywheel_sd</vendor><product version="1">t</product></header>
  <sim_specs method="Euler" time_units="Months"><start>0</start><stop>10</stop><dt>0.25</dt>
  </sim_specs>
  <model><variables>
    <stock name="Tank"><eqn>10</eqn><outflow>Drain</outflow><non_negative/></stock>
    <flow name="Drain"><eqn>2 + 0.1 * TIME</eqn></flow>
    <stock name="Drained"><eqn>0</eqn><inflow>Drain</inflow></stock>
  </variables></model>
</xmile>
"""


@pytest.fixture(scope="module")
def drain_model(tmp_path_factory):
    return load_text(tmp_path_factory, "drain.xmile", DRAIN)


@pytest.mark.parametrize("method", ["RK45", "DOP853", "LSODA", "BDF"])
def test_nonnegative_stock_stops_at_zero(drain_model, method):
    """Tank' = -(2 + 0.1 t) reaches 0 at t = 10(sqrt(6) - 2) and stays there; the flow
    itself is not clamped (PySD's semantics), so Drained keeps growing."""
    frame = fw.simulate(drain_model, method=method, rtol=TOL, atol=TOL)
    t = frame.index.to_numpy(float)
    np.testing.assert_allclose(
        frame["Tank"], np.maximum(10 - 2 * t - 0.05 * t * t, 0), rtol=1e-6, atol=1e-6
    )
    assert frame["Tank"].min() >= 0
    np.testing.assert_allclose(frame["Drained"], 2 * t + 0.05 * t * t, rtol=1e-6)


def test_nonnegative_stock_euler_recurrence(drain_model):
    frame = fw.simulate(drain_model, method="euler")
    tank, out = 10.0, [10.0]
    grid, _ = euler_grid(0.0, 10.0, 0.25)
    for t in grid:
        tank = max(tank - (2 + 0.1 * t) * 0.25, 0.0)
        out.append(tank)
    np.testing.assert_allclose(frame["Tank"], out, rtol=ROUND_OFF, atol=1e-14)


# A stiff cascade of 12 relaxations (rates from 1000 to 0.1 per unit time): each stock
# follows the one before it, so the Jacobian is lower bidiagonal.
CASCADE_RATES = np.geomspace(1000.0, 0.1, 12)
CASCADE = vensim(
    "x0 = INTEG(-k0 * (x0 - COS(Time)), 0)",
    *(f"x{i} = INTEG(-k{i} * (x{i} - x{i - 1}), 0)" for i in range(1, 12)),
    *(f"k{i} = {float(rate)!r}" for i, rate in enumerate(CASCADE_RATES)),
    final_time=10,
    time_step=0.001,
    saveper=0.5,
)


@pytest.mark.parametrize("method", ["BDF", "Radau"])
def test_stiff_cascade_jacobian_uses_the_dependency_graph(tmp_path, monkeypatch, method):
    """The compiled engine gives BDF/Radau the Jacobian's sparsity from the model's
    dependency graph: a finite-difference Jacobian of the bidiagonal cascade then costs 2
    evaluations of the right-hand side instead of 12. Same accuracy, fewer evaluations
    than the PySD path (counted call by call: SciPy's nfev leaves the Jacobian's out)."""
    from flywheel_sd.engine import pysd_path as _system

    path = tmp_path / "cascade.mdl"
    path.write_text(CASCADE)
    model = fw.load(path)
    compiled = fw.simulate(model, method=method, rtol=1e-6, atol=1e-9)
    calls = []
    original = _system.OdeSystem.rhs
    monkeypatch.setattr(
        _system.OdeSystem, "rhs", lambda self, t, y: calls.append(t) or original(self, t, y)
    )
    pysd_path = fw.simulate(model, method=method, rtol=1e-6, atol=1e-9, engine="pysd")
    monkeypatch.undo()
    reference = fw.simulate(model, method="Radau", rtol=1e-11, atol=1e-13)
    assert compiled.attrs["engine"].startswith("compiled")
    columns = [f"x{i}" for i in range(12)]
    for frame in (compiled, pysd_path):
        err = rms_tolerance_units(
            frame[columns].to_numpy(), reference[columns].to_numpy(), 1e-6, 1e-9
        )
        assert err < RMS_BOUND[method], err
    assert compiled.attrs["njev"] >= 1 and pysd_path.attrs["njev"] >= 1
    # a Jacobian by finite differences: one evaluation per column (12) on the PySD path,
    # one per group of independent columns (2, plus SciPy's occasional refinement) here
    per_jacobian = (compiled.attrs["rhs_calls"] - compiled.attrs["nfev"]) / compiled.attrs["njev"]
    per_jacobian_pysd = (len(calls) - pysd_path.attrs["nfev"]) / pysd_path.attrs["njev"]
    assert per_jacobian_pysd >= 12
    assert per_jacobian <= 12 / 2 < per_jacobian_pysd
    assert compiled.attrs["rhs_calls"] < len(calls)
