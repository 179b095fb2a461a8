"""Bad input and failed runs: a clear, one-line error naming what was wrong, never a bare
traceback from inside PySD or SciPy, and never partial numbers passed off as a result."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from _shared import load_text
from conformance_mdl import vensim

import flywheel_sd as fw
from flywheel_sd.errors import (
    FlywheelError,
    MethodError,
    ModelFileError,
    NonFiniteError,
    ParameterError,
    SolverError,
    UnsupportedElementError,
)


def one_line(err: pytest.ExceptionInfo, *parts: str) -> str:
    """The message of a flywheel_sd error: one line, that contains each of `parts`."""
    text = str(err.value)
    assert "\n" not in text and text.strip() == text and text
    assert isinstance(err.value, FlywheelError)
    for part in parts:
        assert part in text, (part, text)
    return text


LEVERS = vensim(
    "region: north, south",
    "Stock[region] = INTEG(Growth Rate * Stock[region] - drain[region], 10)",
    "Growth Rate = 0.1 ~ 1/Month [0, 0.5] ~ A lever with a documented range.",
    "drain[region] = 1, 2",
    "Price Level = 3",
)


@pytest.fixture(scope="module")
def levers(tmp_path_factory):
    return load_text(tmp_path_factory, "levers.mdl", LEVERS)


# -- parameters --------------------------------------------------------------------------------
def test_unknown_parameter_suggests_a_close_match(levers):
    with pytest.raises(ParameterError) as err:
        fw.simulate(levers, {"Growth Rat": 0.2})
    one_line(err, "'Growth Rat'", "did you mean 'Growth Rate'")


def test_parameter_names_are_case_and_python_name_tolerant(levers):
    a = fw.simulate(levers, {"growth rate": 0.2}, method="euler")
    b = fw.simulate(levers, {"growth_rate": 0.2}, method="euler")
    pd.testing.assert_frame_equal(a, b)
    assert (a["Growth Rate"] == 0.2).all()  # the value was used, not dropped


@pytest.mark.parametrize(
    "value", [[0.1, 0.2], np.array([0.1, 0.2]), (0.1,)], ids=["list", "ndarray", "tuple"]
)
def test_plain_sequence_for_a_constant_is_refused(levers, value):
    with pytest.raises(ParameterError) as err:
        fw.simulate(levers, {"Growth Rate": value})
    text = one_line(err)
    assert text.startswith("Growth Rate: ") and "plain list/array" in text


def _by_region(*elements: str) -> xr.DataArray:
    return xr.DataArray(np.arange(1.0, len(elements) + 1), {"region": list(elements)}, ["region"])


@pytest.mark.parametrize(
    "name, value, expected",
    [
        (
            "drain",
            xr.DataArray([1.0, 2.0], {"area": ["x", "y"]}, ["area"]),
            ["drain: ", "'area'", "[region]"],
        ),
        (
            "drain",
            _by_region("north", "south", "west"),
            ["drain: ", "'region'", "['north', 'south']", "'west'"],
        ),
        ("Price Level", _by_region("north", "south"), ["Price Level: ", "'region'", "scalar"]),
    ],
    ids=["wrong-dims", "wrong-elements", "for-a-scalar"],
)
def test_xarray_that_does_not_fit_the_variable_is_refused(levers, name, value, expected):
    with pytest.raises(ParameterError) as err:
        fw.simulate(levers, {name: value})
    one_line(err, *expected)


def test_right_xarray_is_used(levers):
    right = xr.DataArray([0.0, 5.0], {"region": ["north", "south"]}, ["region"])
    frame = fw.simulate(levers, {"drain": right}, method="euler")
    assert frame["drain[south]"].iloc[0] == 5.0


@pytest.mark.parametrize(
    "value",
    [np.nan, np.inf, -np.inf, pd.Series([0.1, np.nan], index=[0.0, 10.0])],
    ids=["nan", "inf", "-inf", "series-with-nan"],
)
def test_non_finite_value_is_refused(levers, value):
    with pytest.raises(ParameterError) as err:
        fw.simulate(levers, {"Growth Rate": value})
    text = one_line(err)
    assert text.startswith("Growth Rate: ") and "not finite" in text


@pytest.mark.parametrize(
    "value, problem",
    [
        ("0.2", "expected a number, got '0.2'"),
        (True, "expected a number, got True"),
        (None, "expected a number, got None"),
    ],
    ids=["str", "bool", "none"],
)
def test_non_number_is_refused(levers, value, problem):
    with pytest.raises(ParameterError) as err:
        fw.simulate(levers, {"Growth Rate": value})
    assert one_line(err) == f"Growth Rate: {problem}"


def test_unsorted_time_series_is_refused(levers):
    with pytest.raises(ParameterError) as err:
        fw.simulate(levers, {"Growth Rate": pd.Series([0.1, 0.2], index=[5.0, 1.0])})
    assert "sorted" in one_line(err)


def test_out_of_range_lever_is_an_error(levers):
    with pytest.raises(ParameterError) as err:
        fw.simulate(levers, {"Growth Rate": 0.9})
    one_line(err, "Growth Rate", "[0, 0.5]", "range_check")


def test_out_of_range_lever_can_warn_or_pass(levers):
    with pytest.warns(fw.RangeWarning, match="Growth Rate"):
        warned = fw.simulate(levers, {"Growth Rate": 0.9}, range_check="warn", method="euler")
    assert warned["Growth Rate"].iloc[0] == 0.9
    silent = fw.simulate(levers, {"Growth Rate": 0.9}, range_check="off", method="euler")
    pd.testing.assert_frame_equal(warned, silent)
    with pytest.raises(ParameterError) as err:
        fw.simulate(levers, range_check="loud")
    one_line(err, "range_check", "'loud'")


# -- files -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name, content, parts",
    [
        (
            "broken.mdl",
            "{UTF-8}\nStock = INTEG(((, 1)\n\t~\t\n\t~\t\n\t|\n",
            ["broken.mdl", "could not translate"],
        ),
        ("nowhere.mdl", None, ["nowhere.mdl", "no such model file"]),
        ("model.txt", "x", ["unknown model file type '.txt'", ".mdl"]),
        # the multi-line error inside is cut to its first line
        (
            "model.py",
            "raise RuntimeError('not a model\\nat all')\n",
            ["model.py", "could not load", "not a model"],
        ),
    ],
    ids=["does-not-parse", "missing", "unknown-type", "python-not-a-translation"],
)
def test_model_file_that_cannot_be_loaded(tmp_path, name, content, parts):
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    with pytest.raises(ModelFileError) as err:
        fw.load(path)
    one_line(err, *parts)


# -- methods and options -----------------------------------------------------------------------
def test_unknown_method_lists_the_valid_ones(levers):
    with pytest.raises(MethodError) as err:
        fw.simulate(levers, method="RK99")
    one_line(err, "'RK99'", *fw.METHODS)


def test_method_names_are_case_insensitive(levers):
    assert fw.simulate(levers, method="rk45").attrs["method"] == "RK45"
    assert fw.simulate(levers, method="Euler").attrs["method"] == "euler"


@pytest.mark.parametrize(
    "options, problem",
    [
        ({"rtol": 0}, "rtol must be a positive finite number, not 0"),
        ({"atol": -1}, "atol must be a positive finite number, not -1"),
        ({"rtol": float("nan")}, "rtol must be a positive finite number, not nan"),
        ({"max_step": 0}, "max_step must be positive, not 0"),
        ({"breakpoints": [float("inf")]}, "breakpoint inf is not finite"),
    ],
    ids=["rtol0", "atol-neg", "rtol-nan", "max_step0", "bp-inf"],
)
def test_bad_solver_options(levers, options, problem):
    with pytest.raises(MethodError) as err:
        fw.simulate(levers, **options)
    assert problem in one_line(err)


# -- failed runs -------------------------------------------------------------------------------
def test_solver_failure_reports_time_reached_and_what_to_try(write_mdl):
    """y' = y^2, y(0) = 1 blows up at t = 1: the step size collapses just before."""
    model = fw.load(write_mdl(vensim("y = INTEG(y * y, 1)", final_time=2)))
    with pytest.raises(SolverError) as err:
        fw.simulate(model)
    text = one_line(err)
    assert "t=" in text and "try method=" in text
    reached = float(text.split("t=")[1].split()[0].rstrip(":,"))
    assert 0.9 < reached <= 1.0


@pytest.mark.parametrize("method", ["RK45", "BDF", "euler", "rk4"])
def test_nan_names_the_first_non_finite_variable(write_mdl, method):
    """Headroom = 5 - Time turns negative after t = 5 and Margin = SQRT(Headroom) turns
    NaN: the error names Margin (the root), not Stock that it feeds, and no frame comes
    back."""
    model = fw.load(
        write_mdl(
            vensim(
                "Headroom = 5 - Time",
                "Margin = SQRT(Headroom)",
                "Stock = INTEG(Margin, 0)",
                final_time=10,
                time_step=0.25,
            )
        )
    )
    with pytest.raises(NonFiniteError) as err:
        fw.simulate(model, method=method)
    text = one_line(err)
    assert "'Margin'" in text
    reached = float(text.split("at time ")[1].split(";")[0])
    assert 5 <= reached <= 5.25


def test_division_by_zero_names_the_variable(write_mdl):
    """Capacity reaches exactly 0 at t = 5 on Euler's grid; Python raises where NumPy would
    give inf, and the error still names Utilisation = Load / Capacity."""
    model = fw.load(
        write_mdl(
            vensim(
                "Capacity = INTEG(-1, 5)",
                "Load = 2",
                "Utilisation = Load / Capacity",
                "Stock = INTEG(Utilisation, 0)",
                final_time=10,
                time_step=0.25,
            )
        )
    )
    with pytest.raises(NonFiniteError) as err:
        fw.simulate(model, method="euler")
    one_line(err, "'Utilisation'", "time 5")
    # An adaptive method meets the singularity first: its step size collapses at t = 5.
    with pytest.raises(SolverError) as err:
        fw.simulate(model)
    assert "t=5" in one_line(err)


def test_overflow_names_the_variable(write_mdl):
    model = fw.load(
        write_mdl(vensim("Boom = EXP(Stock)", "Stock = INTEG(Boom, 700)", final_time=10))
    )
    with pytest.raises(NonFiniteError) as err:
        fw.simulate(model, method="euler")
    assert "'Boom'" in one_line(err)


DISCRETE = vensim(
    "input = 1 + Time",
    "delayed = DELAY FIXED(input, 2, 0)",
    "Stock A = INTEG(delayed, 0)",
    "sampled = SAMPLE IF TRUE(Time >= 3, input, 0)",
    "Stock B = INTEG(sampled, 0)",
    final_time=10,
    time_step=0.5,
)


@pytest.fixture(scope="module")
def discrete_model(tmp_path_factory):
    return load_text(tmp_path_factory, "discrete.mdl", DISCRETE)


@pytest.mark.parametrize("method", ["RK45", "BDF", "LSODA", "rk4"])
def test_discrete_elements_are_refused_by_continuous_methods(discrete_model, method):
    with pytest.raises(UnsupportedElementError) as err:
        fw.simulate(discrete_model, method=method)
    text = one_line(err)
    assert "'delayed' uses DELAY FIXED" in text or "'sampled' uses SAMPLE IF TRUE" in text
    assert "method='euler'" in text


@pytest.mark.parametrize("element", ["DELAY FIXED", "SAMPLE IF TRUE"])
def test_each_discrete_element_is_named(write_mdl, element):
    equation = {
        "DELAY FIXED": "out = DELAY FIXED(Time, 2, 0)",
        "SAMPLE IF TRUE": "out = SAMPLE IF TRUE(Time >= 3, Time, 0)",
    }[element]
    model = fw.load(write_mdl(vensim(equation, "S = INTEG(out, 0)", final_time=5)))
    with pytest.raises(UnsupportedElementError) as err:
        fw.simulate(model)
    one_line(err, f"'out' uses {element}", "method='euler'")


def test_euler_runs_discrete_elements_as_pysd_does(discrete_model):
    import pysd

    reference = pysd.load(str(discrete_model.py_file)).run()
    frame = fw.simulate(discrete_model, method="euler")
    pd.testing.assert_frame_equal(frame, reference, check_exact=False, rtol=1e-12)
    # DELAY FIXED(1 + Time, 2, 0) at TIME STEP 0.5: 0 until t = 2, then 1 + (t - 2)
    t = frame.index.to_numpy(float)
    np.testing.assert_allclose(frame["delayed"], np.where(t < 2, 0, t - 1))
    # SAMPLE IF TRUE(Time >= 3, 1 + Time, 0): 0 before t = 3, then follows its input
    np.testing.assert_allclose(frame["sampled"], np.where(t < 3, 0, 1 + t))


def test_time_varying_delay_n_is_refused_by_adaptive_methods(write_mdl):
    model = fw.load(
        write_mdl(
            vensim("out = DELAY N(10, 2 + Time / 10, 0, 3)", "S = INTEG(out, 0)", final_time=5)
        )
    )
    with pytest.raises(UnsupportedElementError) as err:
        fw.simulate(model)
    one_line(err, "'out'", "method='euler'")
    fw.simulate(model, method="euler")  # and euler runs it


# -- control values no run can use: refused before any work, on both engines ---------------
BAD_CONTROL = [
    ({"time_step": 0}, "TIME STEP must be a positive number"),
    ({"time_step": -0.1}, "TIME STEP must be a positive number"),
    ({"time_step": float("inf")}, "TIME STEP must be a positive number"),
    ({"saveper": 0}, "SAVEPER must be a positive number"),
    ({"final_time": -1}, "FINAL TIME (-1) must be a number after INITIAL TIME (0)"),
    ({"final_time": 0}, "FINAL TIME (0) must be a number after INITIAL TIME (0)"),
    ({"final_time": float("nan")}, "FINAL TIME (nan) must be a number after INITIAL TIME"),
]


@pytest.fixture
def no_pysd_loop(monkeypatch):
    """Make reaching PySD's loop an error: a TIME STEP of 0 there would never end."""
    from flywheel_sd.engine import simulate as simulate_module

    def reached(*args, **kwargs):
        raise AssertionError("the run started: the control values were not checked")

    monkeypatch.setattr(simulate_module, "_Run", reached)


@pytest.mark.parametrize("engine", ["compiled", "pysd"])
@pytest.mark.parametrize(
    ("options", "message"),
    BAD_CONTROL,
    ids=[next(iter(o)) + "=" + str(next(iter(o.values()))) for o, _ in BAD_CONTROL],
)
def test_unusable_control_values_are_refused_before_the_run(
    levers, no_pysd_loop, engine, options, message
):
    with pytest.raises(MethodError) as err:
        fw.simulate(levers, method="euler", engine=engine, **options)
    one_line(err, message)


@pytest.mark.parametrize("engine", ["compiled", "pysd"])
def test_a_model_file_with_a_zero_time_step_is_refused(tmp_path, no_pysd_loop, engine):
    path = tmp_path / "zero_step.mdl"
    path.write_text(vensim("Stock = INTEG(1, 0)", time_step=0))
    with pytest.raises(MethodError) as err:
        fw.simulate(fw.load(path), method="euler", engine=engine)
    one_line(err, "TIME STEP must be a positive number")


def test_a_value_for_a_stock_is_refused(levers):
    """PySD would freeze the stock at the value (it never integrates): say so instead."""
    with pytest.raises(ParameterError) as err:
        fw.simulate(levers, {"Stock": 5})
    one_line(err, "'Stock' is a stock", "initial value")
