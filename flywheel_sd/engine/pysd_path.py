"""A configured PySD model seen as an ODE system y' = f(t, y).

PySD keeps each stock's value inside its Stateful object (scalars, NumPy arrays for
SMOOTH/DELAY stages, xarray for subscripted stocks). `OdeSystem` flattens those states into
one float vector in a fixed order, and evaluates the model's derivatives as a pure function
of (t, y): it writes the states back, clears PySD's per-step cache and calls each element's
``ddt()``. Discrete elements (DELAY FIXED, SAMPLE IF TRUE) are not part of the vector; they
are updated once per fixed step, as PySD does.
"""

from __future__ import annotations

import ast
import builtins
import copy
import itertools
import math
from collections.abc import Hashable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
from pysd.py_backend import statefuls
from pysd.py_backend.data import Data
from pysd.py_backend.model import Macro

from ..errors import NonFiniteError, UnsupportedElementError
from . import _pysd_compat as compat

DISCRETE = (statefuls.DelayFixed, statefuls.SampleIfTrue)
ARITHMETIC_ERRORS = (ZeroDivisionError, OverflowError, FloatingPointError)
VENSIM_NAMES = {
    "DelayFixed": "DELAY FIXED",
    "SampleIfTrue": "SAMPLE IF TRUE",
    "DelayN": "DELAY N",
}


@dataclass(frozen=True)
class Slot:
    """Where one Stateful element's state lives in the flat vector."""

    element: Any
    start: int
    stop: int
    shape: tuple[int, ...]
    dims: tuple[Hashable, ...] | None  # xarray dims, None for plain floats/arrays
    coords: Any
    nonnegative: bool


def _copy(value):
    return value.copy() if isinstance(value, (np.ndarray, xr.DataArray)) else value


def _dynamic_elements(container) -> list:
    """All DynamicStateful elements, with macros expanded into their own elements."""
    out = []
    for element in compat.dynamic_elements(container):
        if isinstance(element, Macro):
            out.extend(_dynamic_elements(element))
        else:
            out.append(element)
    return out


class OdeSystem:
    """The states and right-hand side of an initialised, configured PySD model."""

    def __init__(self, pysd_model, real_names: dict[str, str]):
        self.model = pysd_model
        self.time = pysd_model.time
        self._real_names = real_names  # python name -> Vensim name
        elements = _dynamic_elements(pysd_model)
        self.discrete = [e for e in elements if isinstance(e, DISCRETE)]
        self.delay_n = [e for e in elements if isinstance(e, statefuls.DelayN)]
        self.slots: list[Slot] = []
        start = 0
        for element in elements:
            if isinstance(element, DISCRETE):
                continue
            state = element.state
            if isinstance(state, xr.DataArray):
                shape, dims, coords = state.shape, state.dims, state.coords
            else:
                shape, dims, coords = np.shape(state), None, None
            size = int(np.prod(shape)) if shape else 1
            self.slots.append(
                Slot(
                    element,
                    start,
                    start + size,
                    shape,
                    dims,
                    coords,
                    isinstance(element, statefuls.NonNegativeInteg),
                )
            )
            start += size
        self.size = start
        self.nonnegative = np.zeros(self.size, dtype=bool)
        for slot in self.slots:
            self.nonnegative[slot.start : slot.stop] = slot.nonnegative
        self.any_nonnegative = bool(self.nonnegative.any())
        self._delay_times = None
        # Fast paths: scalar stocks are set and read as a list; xarray states are rebuilt
        # from their initial array (same coordinate indexes, cheaper than a constructor).
        self._scalar = [(s.element, s.start) for s in self.slots if s.dims is None and not s.shape]
        self._arrays = [s for s in self.slots if s.dims is not None or s.shape]
        self._templates = {id(s): s.element.state for s in self.slots if s.dims is not None}
        self._all_scalar = not self._arrays
        self._elements = [s.element for s in self.slots]

    # -- names ------------------------------------------------------------------------
    def element_name(self, element) -> str:
        """The Vensim name of the variable a Stateful element belongs to."""
        py = element.py_name
        for name, deps in compat.dependencies(self.model).items():
            if isinstance(deps, dict) and py in deps and name in self._real_names:
                return self._real_names[name]
        return py

    def refuse_time_equality(self, method: str) -> None:
        """Raise if the model tests Time = x: continuous time would never see that instant."""
        names = time_equalities(self.model)
        if names:
            py = names[0]
            element = getattr(self.model.components, py, None)
            name = (
                self._real_names.get(py)
                if py in self._real_names
                else self.element_name(element)
                if element is not None
                else py
            )
            raise UnsupportedElementError(
                f"{name!r} tests Time for equality, an event at one instant that only a "
                f"fixed time step sees; {method!r} cannot integrate it; use method='euler'"
            )

    def refuse_discrete(self, method: str) -> None:
        """Raise if the model has elements `method` cannot integrate correctly."""
        if self.discrete:
            element = self.discrete[0]
            kind = VENSIM_NAMES[type(element).__name__]
            raise UnsupportedElementError(
                f"{self.element_name(element)!r} uses {kind}, a discrete element that "
                f"{method!r} cannot integrate; use method='euler'"
            )

    # -- state vector -----------------------------------------------------------------
    def get_state(self) -> np.ndarray:
        y = np.empty(self.size)
        for slot in self.slots:
            state = slot.element.state
            values = state.values if isinstance(state, xr.DataArray) else state
            y[slot.start : slot.stop] = np.ravel(values)
        return y

    def set_state(self, t: float, y: np.ndarray) -> None:
        """Put time and states into the PySD model, and clear its per-step cache."""
        self.time.update(float(t))  # a NumPy scalar time breaks xr.DataArray(scalar, coords)
        if self.any_nonnegative:
            y = np.where(self.nonnegative, np.maximum(y, 0.0), y)
        values = y.tolist()
        for element, index in self._scalar:
            compat.set_state(element, values[index])
        for slot in self._arrays:
            data = y[slot.start : slot.stop].reshape(slot.shape).copy()
            if slot.dims is not None:
                compat.set_state(
                    slot.element, self._templates[id(slot)].copy(deep=False, data=data)
                )
            else:
                compat.set_state(slot.element, data)
        self.model.clean_caches()

    def derivatives(self, commit_delays: bool = False) -> np.ndarray:
        """d(states)/dt at the state last set.

        PySD's DELAY N shifts its pipeline of delay times inside ``ddt()``. That is right
        once per Euler step (`commit_delays=True`); everywhere else the shift is undone so
        that the right-hand side stays a pure function of (t, y).
        """
        if self._all_scalar:
            return np.array([element.ddt() for element in self._elements], dtype=float)
        saved = [] if commit_delays else [_copy(e.times) for e in self.delay_n]
        dy = np.empty(self.size)
        for slot in self.slots:
            value = slot.element.ddt()
            dy[slot.start : slot.stop] = np.ravel(
                value.values if isinstance(value, xr.DataArray) else value
            )
        for element, times in zip(self.delay_n, saved):
            element.times = times
        return dy

    def rhs(self, t: float, y: np.ndarray) -> np.ndarray:
        """Pure right-hand side f(t, y) for SciPy's solvers."""
        self.set_state(t, y)
        if self.delay_n:
            self.check_delay_n_constant()
        try:
            dy = self.derivatives()
        except ARITHMETIC_ERRORS as err:
            raise self.nonfinite_error(t) from err
        if self.any_nonnegative:
            # A non-negative stock at zero cannot be drained further.
            dy = np.where(self.nonnegative & (y <= 0) & (dy < 0), 0.0, dy)
        if not np.all(np.isfinite(dy)):
            raise self.nonfinite_error(t)
        return dy

    # -- DELAY N with a time-varying delay time ---------------------------------------
    def check_delay_n_constant(self) -> None:
        """Refuse DELAY N whose delay time changes: PySD keeps a per-step pipeline of
        delay times, which only a fixed Euler step reproduces."""
        for element in self.delay_n:
            current = np.asarray(element.delay_time_func(), dtype=float)
            first = np.asarray(
                element.times[0].values
                if isinstance(element.times, xr.DataArray)
                else element.times[0],
                dtype=float,
            )
            if not np.allclose(current, first, rtol=1e-12, atol=0):
                raise UnsupportedElementError(
                    f"{self.element_name(element)!r} uses DELAY N with a time-varying delay "
                    "time, which only method='euler' reproduces; use method='euler'"
                )

    # -- discrete elements (fixed-step methods only) ----------------------------------
    def step_discrete(self) -> None:
        """Advance DELAY FIXED / SAMPLE IF TRUE by one step, at the state last set."""
        for element in self.discrete:
            element.update(None)

    # -- diagnostics ------------------------------------------------------------------
    def nonfinite_error(self, t: float) -> NonFiniteError:
        """An error naming the first variable (in dependency order) that is not finite."""
        culprit = self.first_nonfinite()
        where = f"variable {culprit!r}" if culprit else "a state derivative"
        return NonFiniteError(
            f"{where} became non-finite at time {t:g}; check its equation and inputs "
            "(division by zero, overflow), or try method='BDF' / a smaller max_step"
        )

    def first_nonfinite(self) -> str | None:
        """Evaluate every variable at the current state and return the root non-finite one."""
        components = self.model.components
        deps = compat.dependencies(self.model)
        bad = {}
        with np.errstate(all="ignore"):
            for py in self._real_names:
                try:
                    func = getattr(components, py)
                    if getattr(func, "args", None):
                        continue
                    value = func()
                except ARITHMETIC_ERRORS:  # Python floats raise where NumPy gives inf/nan
                    bad[py] = True
                    continue
                except Exception:  # noqa: BLE001, S112 - model code may raise anything; not a cause
                    continue
                try:
                    arr = np.asarray(
                        value.values if isinstance(value, xr.DataArray) else value, dtype=float
                    )
                except (TypeError, ValueError):
                    continue
                if not np.all(np.isfinite(arr)):
                    bad[py] = True
        if not bad:
            return None
        # The root cause is a bad variable none of whose direct inputs is bad.
        roots = [py for py in bad if not any(dep in bad for dep in (deps.get(py) or {}))]
        chosen = min(roots or bad)
        return self._real_names.get(chosen, chosen)


# -- break times the model itself defines --------------------------------------------------
_TIME_FUNCS = {"step": ("tstep", 2), "pulse": ("start", 1), "ramp": ("start", 2)}


def model_breakpoints(pysd_model, t0: float, t1: float) -> list[float]:
    """Times of STEP, PULSE (edges and repeats) and RAMP (start, finish) in the model file,
    where their arguments evaluate to constants. Others are left to step-size control."""
    try:
        tree = ast.parse(Path(pysd_model.py_model_file).read_text())
    except (OSError, SyntaxError):
        return []
    namespace = compat.components_namespace(pysd_model)
    times: set[float] = set()

    def value(node) -> np.ndarray | None:
        if node is None:
            return None
        try:
            out = eval(compile(ast.Expression(node), "<breakpoint>", "eval"), namespace)
            arr = np.asarray(out.values if isinstance(out, xr.DataArray) else out, dtype=float)
        except Exception:  # noqa: BLE001 - an argument that is not a constant: no break time
            return None
        return arr if np.all(np.isfinite(arr)) else None

    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
            continue
        name = node.func.id
        if name not in _TIME_FUNCS:
            continue
        args = {kw.arg: kw.value for kw in node.keywords}
        positional = node.args

        def arg(key: str, index: int, args=args, positional=positional) -> ast.expr | None:
            return args.get(key, positional[index] if len(positional) > index else None)

        if name == "step":
            v = value(arg("tstep", 2))
            if v is not None:
                times.update(v.ravel().tolist())
        elif name == "ramp":
            for key, index in (("start", 2), ("finish", 3)):
                v = value(arg(key, index))
                if v is not None:
                    times.update(v.ravel().tolist())
        elif name == "pulse":
            start = value(arg("start", 1))
            if start is None:
                continue
            width = value(arg("width", 3))
            if width is None:  # as in exact_time_functions: one TIME STEP
                width = np.asarray(float(pysd_model.time.time_step()))
            repeat = value(arg("repeat_time", 2))
            end = value(arg("end", 5))
            periods = np.unique(repeat) if repeat is not None else np.zeros(1)
            stop = min(float(np.max(end)) if end is not None else t1, t1)
            for s, w, period in itertools.product(np.unique(start), np.unique(width), periods):
                k = 0
                while k <= 100_000:
                    edge = float(s) + k * float(period)
                    if edge > stop:
                        break
                    times.update((edge, edge + float(w)))
                    if period <= 0:
                        break
                    k += 1
    return sorted(t for t in times if t0 < t < t1 and math.isfinite(t))


_JUMPY_FUNCS = {"modulo", "integer", "quantum"}  # functions of time with jumps


def _calls_time(node) -> bool:
    return any(
        isinstance(n, ast.Call)
        and isinstance(n.func, ast.Name)
        and n.func.id == "time"
        and not n.args
        for n in ast.walk(node)
    )


def time_switch_breakpoints(pysd_model, t0: float, t1: float, dt: float) -> list[float]:
    """Switch times of the model's explicit functions of time.

    Finds, in the translated model, each comparison that involves ``time()`` and nothing
    but constants (``Time >= policy start``, ``MODULO(Time, 3) < 2`` inside IF THEN ELSE),
    and each MODULO/INTEGER/QUANTUM of such an expression. Each is evaluated on a grid of
    spacing `dt` over [t0, t1] (vectorised when it can be), and every change of value is
    located by bisection to round-off. Switches that come and go within one `dt` are not
    seen (Euler at that TIME STEP would miss them too); switches that depend on stocks are
    left to step-size control.
    """
    try:
        tree = ast.parse(Path(pysd_model.py_model_file).read_text())
    except (OSError, SyntaxError):
        return []
    if not (dt > 0 and t1 > t0):
        return []
    namespace = compat.components_namespace(pysd_model)
    cache_type = getattr(pysd_model, "cache_type", {})

    def allowed(name: str) -> bool:
        if name == "time":
            return True
        obj = namespace.get(name, getattr(builtins, name, None))
        if obj is None:
            return False
        if cache_type.get(name) == "run":  # a constant of the model
            return True
        if name in cache_type:  # a model variable that changes over time
            return False
        module = getattr(obj, "__module__", "") or getattr(obj, "__name__", "")
        return module.startswith(("pysd.py_backend", "numpy", "xarray", "builtins", "flywheel_sd"))

    nodes = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Compare | ast.Call):
            continue
        jumpy = (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in _JUMPY_FUNCS
        )
        if not (isinstance(node, ast.Compare) or jumpy) or not _calls_time(node):
            continue
        names = {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}
        if any(isinstance(n, ast.Lambda) for n in ast.walk(node)) or not all(
            allowed(n) for n in names
        ):
            continue
        nodes.append((compile(ast.Expression(node), "<switch>", "eval"), not jumpy))

    if not nodes:
        return []
    time = pysd_model.time
    saved_time = compat.clock(time)
    grid = np.linspace(t0, t1, max(2, math.ceil((t1 - t0) / dt - 1e-9) + 1))
    times: set[float] = set()
    try:
        for code, boolean in nodes:
            times.update(_switches(code, boolean, namespace, time, grid))
    finally:
        compat.set_clock(time, saved_time)
    return sorted(t for t in times if t0 < t < t1 and math.isfinite(t))


def _evaluate(code, namespace, time, ts: np.ndarray) -> np.ndarray | None:
    """The expression at each of the times `ts`, one row per time (None if it fails)."""
    with np.errstate(all="ignore"):
        try:  # vectorised: time() returns the whole array
            compat.set_clock(time, ts)
            out = eval(code, namespace)
            arr = np.asarray(out, dtype=float)
            if arr.shape == ts.shape:
                return arr[:, None]
        except Exception:  # noqa: BLE001, S110 - not vectorisable: one time at a time below
            pass
        rows = []
        for t in ts:
            try:
                compat.set_clock(time, float(t))
                out = eval(code, namespace)
                rows.append(
                    np.ravel(
                        np.asarray(
                            out.values if isinstance(out, xr.DataArray) else out, dtype=float
                        )
                    )
                )
            except Exception:  # noqa: BLE001 - the expression cannot be evaluated: no switches
                return None
    try:
        return np.array(rows, dtype=float).reshape(len(ts), -1)
    except ValueError:
        return None


def _switches(code, boolean: bool, namespace, time, grid: np.ndarray) -> list[float]:
    values = _evaluate(code, namespace, time, grid)
    if values is None or (not boolean and len(grid) * values.shape[1] > 200_000):
        return []
    change = np.abs(np.diff(values, axis=0)).max(axis=1)
    changed = np.nonzero(change > 0)[0]
    if changed.size == 0:
        return []
    lo, hi = grid[changed].copy(), grid[changed + 1].copy()
    vlo, vhi = values[changed], values[changed + 1]
    first = np.abs(vhi - vlo).max(axis=1)
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        vmid = _evaluate(code, namespace, time, mid)
        if vmid is None:
            return []
        left = np.abs(vmid - vlo).max(axis=1)
        right = np.abs(vhi - vmid).max(axis=1)
        # keep the half where the value changes (booleans) or changes more (jumps)
        go_left = left > 0 if boolean else left >= right
        hi = np.where(go_left, mid, hi)
        lo = np.where(go_left, lo, mid)
        vhi = np.where(go_left[:, None], vmid, vhi)
        vlo = np.where(go_left[:, None], vlo, vmid)
    final = np.abs(vhi - vlo).max(axis=1)
    jump = final > 0 if boolean else final > 1e-3 * first
    return hi[jump].tolist()


def time_equalities(pysd_model) -> list[str]:
    """Python names of the model's elements that compare Time for (in)equality, such as
    IF THEN ELSE(Time = INITIAL TIME, ...): an event at one instant, which exists only on a
    fixed time grid."""
    try:
        tree = ast.parse(Path(pysd_model.py_model_file).read_text())
    except (OSError, SyntaxError):
        return []
    out = []
    for top in tree.body:
        if isinstance(top, ast.FunctionDef):
            name = top.name
        elif isinstance(top, ast.Assign) and isinstance(top.targets[0], ast.Name):
            name = top.targets[0].id
        else:
            continue
        for node in ast.walk(top):
            if (
                isinstance(node, ast.Compare)
                and any(isinstance(op, (ast.Eq, ast.NotEq)) for op in node.ops)
                and _calls_time(node)
                and name not in out
            ):
                out.append(name)
    return out


def data_breakpoints(pysd_model, t0: float, t1: float) -> list[float]:
    """The time knots of the model's DATA variables (piecewise constant under HOLD
    BACKWARD / LOOK FORWARD, kinked under INTERPOLATE)."""
    times: set[float] = set()
    for value in compat.components_namespace(pysd_model).values():
        if isinstance(value, Data) and getattr(value, "data", None) is not None:
            try:
                times.update(np.asarray(value.data["time"].values, dtype=float).tolist())
            except (KeyError, TypeError, ValueError, AttributeError):
                continue
    return sorted(t for t in times if t0 < t < t1 and math.isfinite(t))


def exact_time_functions(time) -> dict:
    """STEP and PULSE for the adaptive methods: switching exactly at their own times.

    The decision. PySD (like Vensim) writes STEP and PULSE for a fixed Euler grid: STEP(h, t0)
    is on once ``t + TIME STEP/2 > t0``, that is from the grid time nearest t0, and PULSE
    starts ``1e-6`` early so that round-off on the grid cannot miss an edge. An adaptive
    method has no grid, so here:

    * ``STEP(h, t0)`` is h for t >= t0 and 0 before: the switch is at t0 itself, not up to
      half a TIME STEP earlier. Euler at TIME STEP dt and an adaptive run therefore differ by
      at most ``h*dt/2`` in the integral (not at all when t0 is on the grid), and Euler
      converges to the adaptive answer as dt -> 0.
    * ``PULSE(start, width)`` is 1 for ``start <= t < start + width``, repeating every
      ``repeat_time`` for PULSE TRAIN until ``end``. A pulse without a width (XMILE's
      ``PULSE(magnitude, start)``) lasts one TIME STEP at height magnitude/TIME STEP, so it
      delivers `magnitude`, as it does under Euler.
    * Every edge is a breakpoint (`model_breakpoints`) and each segment between breakpoints
      is evaluated from inside, so no edge is smeared.

    Tested in ``tests/test_engine_analytic.py`` (``test_step_semantics_adaptive_versus_euler``,
    ``test_step_off_the_grid_is_not_smeared``, ``test_pulse_*``).
    """

    def step(_time, value, tstep):
        return value * (time() >= tstep)

    def pulse(_time, start, repeat_time=0, width=None, magnitude=None, end=None):
        t = time()
        dt = time.time_step()
        width = dt if width is None else width
        out = magnitude / dt if magnitude is not None else 1
        if repeat_time == 0:
            return out if start <= t < start + width else 0
        if start <= t and (end is None or t < end):
            return out if (t - start) % repeat_time < width else 0
        return 0

    return {"step": step, "pulse": pulse}


def save_times(time) -> list[float]:
    """The times PySD's Euler loop reports (the SAVEPER grid or return_timestamps), walked
    on a copy of its `Time` object from the time it is at now."""
    time = copy.deepcopy(time)
    dt = time.time_step()
    out = []
    while time.in_bounds():
        if time.in_return():
            out.append(time())
        time.update(time() + dt)
    if time.in_return():
        out.append(time())
    return out
