"""`simulate`: run a PySD model with SciPy's ODE solvers or a fixed-step method.

Data flow: configure the PySD model exactly as ``Model.run()`` would (parameters, control
variables, output columns), view it as an `OdeSystem`, integrate the state vector, then
replay the saved states through PySD's own output handler so that the frame has PySD's
columns, names and index.

Adaptive methods integrate piecewise between breakpoints (STEP/PULSE/RAMP times found in the
model, the `breakpoints` argument, and the knots of time-series parameters); each segment
is evaluated from inside, so a switch at a breakpoint is never smeared.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from pysd.py_backend.output import ModelOutput

from ..errors import (
    FlywheelError,
    MethodError,
    PySDPathWarning,
    SolverError,
    UnsupportedElementError,
)
from . import _pysd_compat as compat
from .model import Model, _first_line, load
from .pysd_path import (
    ARITHMETIC_ERRORS,
    OdeSystem,
    data_breakpoints,
    exact_time_functions,
    model_breakpoints,
    save_times,
    time_switch_breakpoints,
)
from .run import piecewise_solve_ivp

ADAPTIVE_METHODS = ("RK45", "RK23", "DOP853", "LSODA", "BDF", "Radau")
FIXED_METHODS = ("euler", "rk4")
METHODS = ADAPTIVE_METHODS + FIXED_METHODS
ENGINES = ("auto", "compiled", "pysd")
DEFAULT_RTOL = 1e-6
DEFAULT_ATOL = 1e-6


def check_method(method: str) -> str:
    """Return the canonical method name, or raise `MethodError` listing the valid ones."""
    for name in METHODS:
        if method == name or (isinstance(method, str) and method.lower() == name.lower()):
            return name
    raise MethodError(f"unknown method {method!r}; valid: {', '.join(METHODS)}")


def simulate(
    model: Model | str | None,
    params: dict[str, Any] | None = None,
    *,
    method: str = "RK45",
    rtol: float = DEFAULT_RTOL,
    atol: float = DEFAULT_ATOL,
    max_step: float | None = None,
    final_time: float | None = None,
    time_step: float | None = None,
    saveper: float | None = None,
    return_timestamps: Sequence[float] | float | None = None,
    return_columns: Sequence[str] | str | None = None,
    breakpoints: Iterable[float] | None = None,
    range_check: str = "error",
    engine: str = "auto",
) -> pd.DataFrame:
    """Simulate `model` and return a frame shaped like PySD's ``Model.run()``.

    Parameters
    ----------
    model : Model, path or None
        A loaded model, a model file, or None for the default model.
    params : dict, optional
        Vensim (or Python) name -> value, as ``Model.run(params=...)`` takes: a number,
        an ``xarray.DataArray`` for a subscripted constant, or a ``pandas.Series`` over time.
    method : str
        ``"RK45"`` (default), ``"RK23"``, ``"DOP853"``, ``"LSODA"``, ``"BDF"``, ``"Radau"``
        (``scipy.integrate.solve_ivp``), or fixed-step ``"euler"`` (reproduces PySD's
        ``run()`` and Vensim's Euler) or ``"rk4"`` (Vensim's RK4 fixed), at TIME STEP.
    rtol, atol : float
        Tolerances of the adaptive methods. Choosing them: ``atol`` is absolute, in the
        units of each stock; set it well below the smallest stock value you care about.
    max_step : float, optional
        Largest step an adaptive method may take (default: unbounded).
    final_time, time_step, saveper : float, optional
        Override the model's FINAL TIME, TIME STEP (fixed-step methods) and SAVEPER.
    return_timestamps : sequence of float or float, optional
        Times to report instead of every SAVEPER.
    return_columns : list of str or "step", optional
        Variables to report (default: every time-varying variable and constant).
    breakpoints : iterable of float, optional
        Extra times at which an adaptive method restarts (policy switch times).
    range_check : {"error", "warn", "off"}
        What to do with a parameter outside its documented range.
    engine : {"auto", "compiled", "pysd"}
        ``"auto"`` runs the model compiled to flat array code (`flywheel_sd.engine`) and
        falls back to PySD's own objects, with a one-line `PySDPathWarning` naming the
        construct, where the compiler does not cover the model. ``"compiled"`` raises
        `UnsupportedElementError` instead of falling back; ``"pysd"`` skips the compiler.

    Returns
    -------
    pandas.DataFrame
        Indexed by time, one column per variable (subscripted ones flattened as
        ``Name[a,b]``). ``frame.attrs`` holds the solver statistics: method, nfev,
        n_steps, status, message, rtol, atol, breakpoints, model and model_sha256.

    Raises
    ------
    ParameterError, MethodError, UnsupportedElementError, SolverError, ModelFileError
    """
    model = model if isinstance(model, Model) else load(model)
    method = check_method(method)
    for name, value in (("rtol", rtol), ("atol", atol)):
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise MethodError(f"{name} must be a positive finite number, not {value!r}")
    if max_step is not None and not (max_step > 0):
        raise MethodError(f"max_step must be positive, not {max_step!r}")
    params = model.check_params(params, range_check)
    if engine not in ENGINES:
        raise MethodError(f"unknown engine {engine!r}; valid: {', '.join(ENGINES)}")
    if time_step is None and saveper is None and not CONTROL_PARAMS & set(params):
        saveper = _file_saveper(model)
    if engine != "pysd":
        frame = _compiled_run(
            model,
            params,
            engine,
            method=method,
            rtol=rtol,
            atol=atol,
            max_step=max_step,
            final_time=final_time,
            time_step=time_step,
            saveper=saveper,
            return_timestamps=return_timestamps,
            return_columns=return_columns,
            breakpoints=breakpoints,
        )
        if frame is not None:
            return frame

    _check_control(model, final_time, time_step, saveper, params)
    run = _Run(model, params, final_time, time_step, saveper, return_timestamps, return_columns)
    try:
        if method in FIXED_METHODS:
            stats = run.fixed_step(method)
        else:
            stats = run.adaptive(
                method, rtol, atol, max_step, _breakpoints(run, params, breakpoints)
            )
        frame = run.collect()
    finally:
        run.close()
    frame.attrs.update(stats)
    frame.attrs.update(model=str(model.path), model_sha256=model.sha256, engine="pysd")
    return frame


#: Control variables a run may be given as parameters (checked like the keyword overrides).
CONTROL_PARAMS = {"TIME STEP", "SAVEPER"}

_FILE_SAVEPER: dict[tuple[str, str], float | None] = {}


def _file_saveper(model: Model) -> float | None:
    """None, or the SAVEPER to run with when the model file's own SAVEPER is not a whole
    multiple of its TIME STEP: the nearest one that is, as Vensim rounds it (one warning
    per model). A SAVEPER or TIME STEP the caller gives is checked instead, and refused in
    one line (`run.check_control`). Models whose control values vary with time are judged
    at INITIAL TIME."""
    from .run import valid_saveper

    key = (str(model.path), model.sha256)
    if key not in _FILE_SAVEPER:
        settings = model.time_settings()
        step, save = settings["time_step"], settings["saveper"]
        nearest = None
        if all(math.isfinite(v) and v > 0 for v in (step, save)):
            rounded = valid_saveper(step, save)
            if rounded != save:
                nearest = rounded
                warnings.warn(
                    f"{model.path.name}: SAVEPER {save:.10g} is not a whole multiple of "
                    f"TIME STEP {step:.10g}; saving every {rounded:.10g} instead (the nearest "
                    "multiple: results exist only at time steps)",
                    UserWarning,
                    stacklevel=3,
                )
        _FILE_SAVEPER[key] = nearest
    return _FILE_SAVEPER[key]


def check_run_control(model: Model, params: Mapping | None = None, final_time=None) -> None:
    """Check the control values a run would use, before any run: the model's own, with
    any TIME STEP or SAVEPER in `params` (Vensim or Python names) and `final_time` over
    them; raise `MethodError` in one line (`run.check_control`). Nothing to check (the
    file's own values only) returns at once: those are `simulate`'s to judge."""
    from .run import check_control

    given = {}
    for name, value in (params or {}).items():
        real = model.real_name(str(name))
        if real in CONTROL_PARAMS and isinstance(value, (int, float)):
            given[real] = float(value)
    if not given and final_time is None:
        return
    settings = model.time_settings()
    check_control(
        given.get("TIME STEP", settings["time_step"]),
        settings["initial_time"],
        settings["final_time"] if final_time is None else float(final_time),
        given.get("SAVEPER", settings["saveper"]),
    )


def _check_control(model: Model, final_time, time_step, saveper, params=None) -> None:
    """The PySD path's check of the control values, before PySD's loop (which would never
    end with a TIME STEP of 0); the compiled engine makes the same check in `run.grid`.
    A TIME STEP or SAVEPER given in `params` counts where the keyword is not given."""
    from .run import check_control

    for name, key in (("TIME STEP", "time_step"), ("SAVEPER", "saveper")):
        value = (params or {}).get(name)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if key == "time_step" and time_step is None:
                time_step = value
            if key == "saveper" and saveper is None:
                saveper = value

    for name, value in (
        ("final_time", final_time),
        ("time_step", time_step),
        ("saveper", saveper),
    ):
        if value is not None and not isinstance(value, (int, float)):
            raise MethodError(f"{name} must be a number, not {value!r}")
    settings = model.time_settings()
    time_step = settings["time_step"] if time_step is None else float(time_step)
    saveper = settings["saveper"] if saveper is None else float(saveper)
    check_control(
        time_step,
        settings["initial_time"],
        settings["final_time"] if final_time is None else float(final_time),
        saveper,
    )


def _compiled_run(
    model: Model,
    params: dict,
    engine: str,
    *,
    method,
    rtol,
    atol,
    max_step,
    final_time,
    time_step,
    saveper,
    return_timestamps,
    return_columns,
    breakpoints,
) -> pd.DataFrame | None:
    """The run on the compiled engine, or None (after a one-line notice) where the
    compiler does not cover the model or these options."""
    from . import NotCompilable, run

    try:
        cm = model.compiled(params)
        backend = run.choose_backend(cm, None)
        mod = cm.module(backend)
        c = cm.constants(
            params, {"final_time": final_time, "time_step": time_step, "saveper": saveper}
        )
        if method in FIXED_METHODS:
            times, out, stats = run.fixed_step(cm, mod, c, method, return_timestamps)
        else:
            extra = [float(t) for t in breakpoints or ()]
            for t in extra:
                if not math.isfinite(t):
                    raise MethodError(f"breakpoint {t!r} is not finite")
            for value in params.values():
                if isinstance(value, pd.Series):
                    extra += [float(t) for t in value.index]
            times, out, stats = run.adaptive(
                cm, mod, c, method, rtol, atol, max_step, extra, return_timestamps
            )
        frame = run.to_frame(cm, model, times, out, return_columns)
    except NotCompilable as reason:
        if engine == "compiled":
            raise UnsupportedElementError(
                f"{model.path.name}: the compiled engine does not cover this run ({reason})"
            ) from None
        _notice(model, str(reason))
        return None
    frame.attrs.update(stats)
    frame.attrs.update(
        model=str(model.path), model_sha256=model.sha256, engine=f"compiled ({backend})"
    )
    return frame


_NOTICED: set = set()


def _notice(model: Model, reason: str) -> None:
    key = (str(model.path), reason)
    if key not in _NOTICED:
        _NOTICED.add(key)
        warnings.warn(
            f"{model.path.name}: {reason}: running on the PySD path", PySDPathWarning, stacklevel=4
        )


def _breakpoints(run: _Run, params: dict, extra: Iterable[float] | None) -> list[float]:
    times = set(model_breakpoints(run.pysd, run.t0, run.t1))
    times.update(data_breakpoints(run.pysd, run.t0, run.t1))
    for value in params.values():
        if isinstance(value, pd.Series):
            times.update(float(t) for t in value.index)
    for t in extra or ():
        t = float(t)
        if not math.isfinite(t):
            raise MethodError(f"breakpoint {t!r} is not finite")
        times.add(t)
    return sorted(t for t in times if run.t0 < t < run.t1)


class _Run:
    """One configured run of a PySD model, from parameters to output frame."""

    def __init__(
        self, model, params, final_time, time_step, saveper, return_timestamps, return_columns
    ) -> None:
        self.model = model
        pm = model._checkout()
        self.pysd = pm
        if isinstance(return_columns, str) and return_columns != "step":
            return_columns = [return_columns]
        try:
            with warnings.catch_warnings():
                # PySD warns when a constant is replaced by a time series: that is the point.
                warnings.filterwarnings("ignore", message="Replacing .*")
                compat.configure_run(
                    pm, params, return_columns, return_timestamps, final_time, time_step, saveper
                )
        except FlywheelError:
            raise
        except (KeyError, NameError, ValueError, TypeError) as err:
            raise SolverError(
                f"{model.path.name}: could not set up the run ({_first_line(err)})"
            ) from err
        self.output = ModelOutput(None)
        self.output.set_capture_elements(pm.capture_elements)
        self.output.initialize(pm)
        pm.output = self.output
        self.system = OdeSystem(pm, {py: real for real, py in model.namespace.items()})
        self.t0 = float(pm.time())
        self.t1 = float(pm.time.final_time())
        self.saved: list[tuple[float, np.ndarray, list]] = []
        self._patched: dict[str, Any] = {}

    # -- fixed step -------------------------------------------------------------------
    def fixed_step(self, method: str) -> dict:
        """PySD's own loop: record, take the derivatives at the same state (sharing PySD's
        per-step cache with the outputs), step. TIME STEP, SAVEPER and FINAL TIME are read
        every step at the current state, as PySD does, so they may change during a run."""
        system, time = self.system, self.pysd.time
        if method == "rk4":
            system.refuse_discrete("rk4")
        y = system.get_state()
        t = float(time())
        system.set_state(t, y)
        steps = 0
        with np.errstate(all="ignore"):
            while time.in_bounds():
                if time.in_return():
                    self._record(t, y, at_state=True)
                dt = float(time.time_step())
                try:
                    if method == "euler":
                        dy = system.derivatives(commit_delays=True)
                        system.step_discrete()
                        y_next = y + dy * dt
                    else:
                        y_next = _rk4_step(system, t, y, dt)
                except ARITHMETIC_ERRORS as err:
                    system.set_state(t, y)
                    raise system.nonfinite_error(t) from err
                if system.any_nonnegative:
                    y_next = np.where(system.nonnegative, np.maximum(y_next, 0.0), y_next)
                # one reduction instead of two: a sum is finite iff every term is (or it
                # overflowed, which the full check then clears)
                if not math.isfinite(y_next.sum()) and not np.all(np.isfinite(y_next)):
                    system.set_state(t, y)
                    raise system.nonfinite_error(t)
                y, t = y_next, t + dt
                system.set_state(t, y)
                steps += 1
            if time.in_return():
                self._record(t, y, at_state=True)
        nfev = steps * (1 if method == "euler" else 4)
        return {
            "method": method,
            "nfev": nfev,
            "n_steps": steps,
            "status": 0,
            "message": "fixed step completed",
            "time_step": float(time.time_step()),
            "rtol": None,
            "atol": None,
            "breakpoints": [],
        }

    # -- adaptive ---------------------------------------------------------------------
    def adaptive(self, method, rtol, atol, max_step, breakpoints) -> dict:
        system, time = self.system, self.pysd.time
        system.refuse_discrete(method)
        system.refuse_time_equality(method)
        for key, vensim in (
            ("final_time", "FINAL TIME"),
            ("time_step", "TIME STEP"),
            ("saveper", "SAVEPER"),
        ):
            if self.pysd.cache_type.get(key) == "step":
                raise UnsupportedElementError(
                    f"{vensim} changes during the run, which fixes the output times only "
                    f"step by step; {method!r} cannot follow it; use method='euler'"
                )
        self._patch(exact_time_functions(time))
        switches = time_switch_breakpoints(self.pysd, self.t0, self.t1, float(time.time_step()))
        breakpoints = sorted(set(breakpoints).union(switches))
        save = np.array(save_times(self.pysd.time))
        edges = [self.t0, *breakpoints, self.t1]
        y = system.get_state()
        stats = {
            "method": method,
            "nfev": 0,
            "njev": 0,
            "nlu": 0,
            "n_steps": 0,
            "status": 0,
            "message": "",
            "rtol": rtol,
            "atol": atol,
            "breakpoints": list(breakpoints),
        }
        saved_y, counts = piecewise_solve_ivp(
            system.rhs, y, edges, save, method, rtol, atol, max_step
        )
        for key in ("nfev", "njev", "nlu", "n_steps"):
            stats[key] = counts[key]
        stats["message"] = "integration completed"
        with np.errstate(all="ignore"):
            for t, y_t in zip(save, saved_y):
                self._record(t, y_t)
        return stats

    def _patch(self, functions: dict) -> None:
        namespace = compat.components_namespace(self.pysd)
        for name, func in functions.items():
            if name in namespace:
                self._patched[name] = namespace[name]
                namespace[name] = func

    def close(self) -> None:
        namespace = compat.components_namespace(self.pysd)
        namespace.update(self._patched)
        self._patched = {}

    # -- output -----------------------------------------------------------------------
    def _record(self, t: float, y: np.ndarray, at_state: bool = False) -> None:
        """Evaluate PySD's output elements at (t, y) and append them as one row
        (`at_state`: the model already holds (t, y))."""
        if not at_state:
            self.system.set_state(t, y)
        try:  # callers hold np.errstate(all="ignore") around their whole loop
            self.output.update(self.pysd)
        except FlywheelError:
            raise
        except ARITHMETIC_ERRORS as err:
            raise self.system.nonfinite_error(t) from err
        except Exception as err:
            raise SolverError(
                f"evaluating the outputs at time {t:g} failed ({_first_line(err)})"
            ) from err

    def collect(self) -> pd.DataFrame:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=FutureWarning)
            warnings.filterwarnings("ignore", message=".*inplace.*")
            return self.output.collect(self.pysd, True)


def _rk4_step(system: OdeSystem, t: float, y: np.ndarray, h: float) -> np.ndarray:
    """One classical Runge-Kutta step, as Vensim's RK4 Fixed."""
    k1 = system.rhs(t, y)
    k2 = system.rhs(t + h / 2, y + h / 2 * k1)
    k3 = system.rhs(t + h / 2, y + h / 2 * k2)
    k4 = system.rhs(t + h, y + h * k3)
    return y + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
