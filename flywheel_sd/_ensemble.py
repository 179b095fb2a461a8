"""Ensemble integration: N parameter sets of one model integrated as one vectorized system.

Data flow of one chunk of a sweep (`run_chunk`):

1. `EnsembleRun` configures the PySD model exactly as `simulate` does, except that each swept
   constant's component function returns all N members' values at once: a NumPy array of
   shape (N,) for models without subscripts ("numpy" mode), or an ``xarray.DataArray`` with
   an extra ``_run`` dimension for models with subscripts ("xarray" mode, so that members
   broadcast against subscripts by name). PySD's helpers that branch in Python
   (IF THEN ELSE, ZIDZ, PULSE, lookups, ...) are swapped for broadcasting versions
   (`flywheel_sd._broadcast`) in the translated module, for this run only.
2. `EnsembleSystem` gives every stock and SMOOTH/DELAY stage the ensemble axis and flattens
   the states member-major: ``y.reshape(N, S)[i]`` is member i's state vector, so the
   Jacobian of the whole system is block diagonal.
3. The system is integrated at once: fixed-step ``euler``/``rk4``, or ``solve_ivp``.
4. **Verify, don't assume**: a few members (the first, the last and one at random) are run
   again alone with `simulate`, and compared. A model that does not broadcast (an exception
   during the vectorized run, or a mismatch) falls back to per-run integration, with a
   one-line notice (`EnsembleFallbackWarning`) -- never to wrong numbers.

Step control of the adaptive methods on an ensemble
---------------------------------------------------
All members share one step sequence. SciPy measures a step's error with the RMS norm over
the whole state vector, which would let one hard member hide among N easy ones. Here the
norm is replaced by the *largest per-member RMS norm*: a step is accepted only if every
member's own error estimate passes, i.e. each member is integrated at least as accurately
as it would be alone, and the step size is set by the hardest member of the chunk. (For
RK23/RK45/DOP853 by subclassing the solver; for BDF/Radau by a thread-local dispatch of
their ``norm``; LSODA already uses a max norm.) The implicit methods get the block-diagonal
Jacobian structure (``jac_sparsity`` for BDF/Radau, ``lband/uband`` for LSODA), so a
Jacobian costs S evaluations of the right-hand side, not N*S. One stiff or fast member
thus slows its whole chunk: chunks bound that cost.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import math
import threading
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import xarray as xr
from pysd.py_backend import statefuls
from pysd.py_backend.lookups import Lookups
from scipy import sparse
from scipy.integrate import DOP853, RK23, RK45, solve_ivp

from . import _broadcast
from ._broadcast import RUN
from ._integrate import ADAPTIVE_METHODS, DEFAULT_ATOL, DEFAULT_RTOL, FIXED_METHODS, simulate
from ._model import Model
from ._system import DISCRETE, VENSIM_NAMES, _dynamic_elements, model_breakpoints, save_times
from .errors import (
    FlywheelError,
    MethodError,
    SolverError,
    UnsupportedElementError,
)

#: Verification has two parts. (1) Exact: at every saved time, the member's state is put
#: into a single-run model configured as `simulate` configures it, and its derivatives and
#: outputs must equal the ensemble's to round-off (`VERIFY_RTOL_EXACT`); the initial
#: states too. This catches any broadcasting fault, whatever the tolerances. (2) Whole run:
#: the member is run again with `simulate`; fixed-step methods must agree to round-off,
#: adaptive ones within ``VERIFY_FACTOR * (atol + rtol * |single|)``: both runs meet the same
#: local tolerance with different step sequences, and on a model that amplifies errors
#: (growth, switches) their global errors differ by tens of tolerance units, while a fault
#: is off by orders more.
VERIFY_FACTOR = 1000.0
VERIFY_RTOL_EXACT = 1e-9
VERIFY_RTOL_FIXED = 1e-9


class EnsembleFallbackWarning(UserWarning):
    """A sweep fell back from ensemble to per-run integration (the message says why)."""


class NotVectorizable(Exception):
    """The model (or an element of it) does not run as an ensemble; fall back per run."""


class MembersFailed(Exception):
    """Some members' derivatives became non-finite (local indices in `members`)."""

    def __init__(self, members: np.ndarray, t: float):
        super().__init__(f"{len(members)} member(s) became non-finite at t={t:g}")
        self.members = members
        self.t = t


@dataclass(frozen=True)
class RunOptions:
    """How each run is integrated: what `simulate` takes besides the parameters."""

    method: str = "RK45"
    rtol: float = DEFAULT_RTOL
    atol: float = DEFAULT_ATOL
    max_step: float | None = None
    final_time: float | None = None
    time_step: float | None = None
    saveper: float | None = None
    return_timestamps: tuple | float | None = None
    breakpoints: tuple = ()

    def simulate_kwargs(self) -> dict:
        out = {"method": self.method, "rtol": self.rtol, "atol": self.atol, "max_step": self.max_step,
                   "final_time": self.final_time, "time_step": self.time_step, "saveper": self.saveper,
                   "breakpoints": list(self.breakpoints), "range_check": "off"}
        if self.return_timestamps is not None:
            ts = self.return_timestamps
            out["return_timestamps"] = list(ts) if isinstance(ts, tuple) else ts
        return out


@dataclass
class ChunkResult:
    """Outputs of one chunk of runs: arrays (runs, time) per column, status per run."""

    times: np.ndarray
    columns: dict[str, np.ndarray]
    status: np.ndarray  # 1 ok, 2 failed
    errors: dict[int, str] = field(default_factory=dict)  # local run index -> reason
    stats: dict = field(default_factory=dict)


STATUS_OK, STATUS_FAILED = 1, 2

# -- the ensemble state vector --------------------------------------------------------------
_LEAD = {statefuls.Smooth: "_smooth", statefuls.Delay: "_delay", statefuls.DelayN: "_delay"}
_PLAIN = (statefuls.Integ, statefuls.Trend, statefuls.Forecast)


@dataclass(frozen=True)
class _Slot:
    element: Any
    start: int
    stop: int
    member_shape: tuple[int, ...]  # one member's state, canonical order (stage, subscripts)
    run_pos: int  # where the ensemble axis sits in PySD's state array
    dims: tuple[str, ...] | None  # xarray mode: canonical dims (with RUN)
    coords: dict | None
    nonnegative: bool
    template: Any = None  # xarray mode: a DataArray whose indexes new states reuse


def _conform(value: Any, dims: tuple[str, ...] | None, run_pos: int,
             full_shape: tuple[int, ...]) -> np.ndarray:
    """`value` as an array of `full_shape` (ensemble axis at `run_pos`), or NotVectorizable."""
    if isinstance(value, xr.DataArray) and dims is not None:
        if value.dims != dims:
            extra = [d for d in value.dims if d not in dims]
            if extra:
                raise NotVectorizable(f"a value has unexpected dimensions {extra}")
            value = value.transpose(*[d for d in dims if d in value.dims])
            shape = [value.sizes[d] if d in value.dims else 1 for d in dims]
            arr = np.asarray(value.values, dtype=float).reshape(shape)
        else:
            arr = np.asarray(value.values, dtype=float)
    else:
        arr = np.asarray(value, dtype=float)
        if arr.ndim and arr.shape != full_shape:
            member = full_shape[:run_pos] + full_shape[run_pos + 1:]
            if dims is None and arr.shape == member:  # numpy mode, no ensemble axis yet
                arr = np.expand_dims(arr, run_pos)
            elif dims is not None and arr.shape == (full_shape[run_pos],):  # a RUN vector
                arr = arr.reshape([-1 if i == run_pos else 1 for i in range(len(full_shape))])
            else:
                raise NotVectorizable(
                    f"a value of shape {arr.shape} does not match the ensemble shape "
                    f"{full_shape}")
    try:
        return np.broadcast_to(arr, full_shape)
    except ValueError as err:
        raise NotVectorizable(f"shape {arr.shape} does not broadcast to {full_shape}") from err


class EnsembleSystem:
    """States and right-hand side of an ensemble-configured PySD model; y is (N, S)."""

    def __init__(self, pysd_model, n: int, mode: str, method: str, real_names: dict):
        self.model = pysd_model
        self.time = pysd_model.time
        self.n = n
        self.mode = mode
        elements = _dynamic_elements(pysd_model)
        discrete = [e for e in elements if isinstance(e, DISCRETE)]
        if discrete:
            kind = VENSIM_NAMES[type(discrete[0]).__name__]
            if method != "euler":
                raise UnsupportedElementError(
                    f"{_element_name(pysd_model, discrete[0], real_names)!r} uses {kind}, a "
                    f"discrete element that {method!r} cannot integrate; use method='euler'")
            raise NotVectorizable(f"the model uses {kind}, which ensembles do not vectorize")
        self.delay_n = [e for e in elements if isinstance(e, statefuls.DelayN)]
        self.slots: list[_Slot] = []
        start = 0
        for element in elements:
            slot = self._canonicalize(element, start)
            self.slots.append(slot)
            start = slot.stop
        self.size = start
        self.nonnegative = np.zeros(self.size, dtype=bool)
        for slot in self.slots:
            self.nonnegative[slot.start:slot.stop] = slot.nonnegative
        self.any_nonnegative = bool(self.nonnegative.any())

    # -- giving every state the ensemble axis -----------------------------------------
    def _canonicalize(self, element, start: int) -> _Slot:
        lead = next((name for cls, name in _LEAD.items() if type(element) is cls), None)
        if lead is None and not isinstance(element, _PLAIN):
            raise NotVectorizable(f"stateful element {type(element).__name__} is not supported")
        nonneg = isinstance(element, statefuls.NonNegativeInteg)
        n = self.n
        state = element.state
        sub = ([d for d in state.dims if d not in (lead, RUN)]
               if isinstance(state, xr.DataArray) else [])
        if not sub:  # a scalar stock (or SMOOTH/DELAY of a scalar): NumPy, run axis last
            run_pos = 1 if lead else 0
            member = (int(element.order),) if lead else ()
            element._state = self._np_state(state, member, run_pos)
            element.shape_info = None
            if isinstance(element, statefuls.DelayN):
                element.times = self._np_state(element.times, member, run_pos)
            size = int(np.prod(member)) if member else 1
            return _Slot(element, start, start + size, member, run_pos, None, None, nonneg)
        coords = {d: state.coords[d].values for d in sub}
        dims = ((lead,) if lead else ()) + (RUN,) + tuple(sub)
        if lead:
            coords[lead] = np.arange(int(element.order))
        shape = tuple(n if d == RUN else len(coords[d]) for d in dims)
        template = xr.DataArray(np.zeros(shape), coords=coords, dims=dims)
        canon = (template + state).transpose(*dims).copy()
        element._state = canon
        element.shape_info = {"dims": dims, "coords": canon.coords}
        run_pos = dims.index(RUN)
        member = shape[:run_pos] + shape[run_pos + 1:]
        if isinstance(element, statefuls.DelayN):
            element.times = (template + element.times).transpose(*dims).copy()
        if lead:  # PySD assigns the input into stage 0 by position: give it canonical dims
            inner = dims[1:]
            inner_coords = {d: coords[d] for d in inner if d in coords}
            inner_shape = shape[1:]
            for attr in ("input_func", "delay_time_func"):
                if hasattr(element, attr):
                    setattr(element, attr,
                            _conforming(getattr(element, attr), inner, inner_coords, inner_shape))
        size = int(np.prod(member)) if member else 1
        return _Slot(element, start, start + size, member, run_pos, dims, coords, nonneg,
                     canon.copy())

    def _np_state(self, state, member: tuple, run_pos: int) -> np.ndarray:
        if isinstance(state, xr.DataArray) and RUN in state.dims and state.ndim == 2:
            state = state.transpose(*[d for d in state.dims if d != RUN], RUN)
        arr = np.asarray(state, dtype=float)
        full = member[:run_pos] + (self.n,) + member[run_pos:]
        if arr.shape == full:
            return arr.copy()
        if arr.shape == member or arr.ndim == 0:
            return np.broadcast_to(np.expand_dims(arr, run_pos) if arr.ndim else arr,
                                   full).copy()
        raise NotVectorizable(f"a state of shape {arr.shape} does not fit {full}")

    # -- state vector -----------------------------------------------------------------
    def get_state(self) -> np.ndarray:
        y = np.empty((self.n, self.size))
        for slot in self.slots:
            state = slot.element.state
            arr = _conform(state, slot.dims, slot.run_pos, self._full(slot))
            y[:, slot.start:slot.stop] = np.moveaxis(arr, slot.run_pos, 0).reshape(self.n, -1)
        return y

    def _full(self, slot: _Slot) -> tuple[int, ...]:
        m = slot.member_shape
        return m[: slot.run_pos] + (self.n,) + m[slot.run_pos:]

    def set_state(self, t: float, y: np.ndarray) -> None:
        """Put time and the (N, S) states into the PySD model; clear its per-step cache."""
        self.time.update(t)
        if self.any_nonnegative:
            y = np.where(self.nonnegative, np.maximum(y, 0.0), y)
        n = self.n
        for slot in self.slots:
            block = y[:, slot.start:slot.stop]
            if not slot.member_shape and slot.dims is None:
                slot.element._state = y[:, slot.start]  # a strided view: PySD only reads it
                continue
            arr = block.reshape((n,) + slot.member_shape)
            if slot.run_pos:
                arr = np.moveaxis(arr, 0, slot.run_pos)
            arr = np.ascontiguousarray(arr)
            if slot.dims is None:
                slot.element._state = arr
            else:  # reuse the slot's indexes: building them anew is most of the cost
                slot.element._state = slot.template.copy(deep=False, data=arr)
        self.model.clean_caches()

    def derivatives(self, commit_delays: bool = False) -> np.ndarray:
        saved = [] if commit_delays else [e.times.copy() for e in self.delay_n]
        n = self.n
        dy = np.empty((n, self.size))
        for slot in self.slots:
            value = slot.element.ddt()
            if slot.dims is None and not slot.member_shape:
                # a scalar stock in numpy mode: a float or an (N,) array
                if isinstance(value, np.ndarray) and value.shape not in ((n,), ()):
                    raise NotVectorizable(f"a derivative has shape {value.shape}, "
                                          f"expected ({n},)")
                dy[:, slot.start] = value
                continue
            arr = _conform(value, slot.dims, slot.run_pos, self._full(slot))
            dy[:, slot.start:slot.stop] = np.moveaxis(arr, slot.run_pos, 0).reshape(n, -1)
        for element, times in zip(self.delay_n, saved):
            element.times = times
        return dy

    def rhs(self, t: float, y: np.ndarray) -> np.ndarray:
        """Pure right-hand side on the (N, S) state; raises MembersFailed on non-finite."""
        self.set_state(t, y)
        dy = self.derivatives()
        if self.any_nonnegative:
            dy = np.where(self.nonnegative & (y <= 0) & (dy < 0), 0.0, dy)
        _check_finite(dy, t)
        return dy


def _check_finite(a: np.ndarray, t: float) -> None:
    """Raise MembersFailed naming the members (rows) of `a` that are not finite."""
    if np.isfinite(np.add.reduce(a, axis=None)):  # cheap; exact test only if it fails
        return
    bad = ~np.isfinite(a).all(axis=1)
    if bad.any():
        raise MembersFailed(np.flatnonzero(bad), t)


def _conforming(func, dims, coords, shape):
    """Wrap `func` so that it returns a DataArray with exactly `dims` (broadcast)."""
    template_shape = tuple(shape)
    template = xr.DataArray(np.zeros(template_shape), coords=coords, dims=dims)

    def wrapped():
        value = func()
        arr = _conform(value, dims, dims.index(RUN), template_shape)
        return template.copy(deep=False, data=np.array(arr))

    return wrapped


def _element_name(pysd_model, element, real_names) -> str:
    py = element.py_name
    for name, deps in pysd_model._dependencies.items():
        if isinstance(deps, dict) and py in deps and name in real_names:
            return real_names[name]
    return py


# -- member-wise error norms for solve_ivp -------------------------------------------------
def member_norm(x: np.ndarray, n: int, s: int) -> float:
    """Largest per-member RMS norm of `x` (shape (..., n*s), member-major)."""
    x = np.asarray(x).reshape(-1, n, s)
    return float(np.sqrt(np.max(np.mean(np.abs(x) ** 2, axis=(0, 2)))))


def _member_solver(method: str, n: int, s: int):
    base = {"RK45": RK45, "RK23": RK23, "DOP853": DOP853}[method]
    if base is DOP853:
        def estimate(self, K, h, scale):
            err5 = ((self.E5 @ K) / scale).reshape(n, s)
            err3 = ((self.E3 @ K) / scale).reshape(n, s)
            e5 = np.sum(err5 ** 2, axis=1)
            e3 = np.sum(err3 ** 2, axis=1)
            denom = e5 + 0.01 * e3
            with np.errstate(all="ignore"):
                per = np.where(denom > 0, np.abs(h) * e5 / np.sqrt(denom * s), 0.0)
            return float(per.max())
    else:
        def estimate(self, K, h, scale):
            return member_norm((self.E @ K) * h / scale, n, s)
    return type(f"Ensemble{method}", (base,), {"_estimate_error_norm": estimate})


_norm_local = threading.local()
_norm_lock = threading.Lock()


def _fast_rk_step(fun, t, y, f, h, A, B, C, K):
    """SciPy's ``rk_step`` with its dot products written row-major (``a @ K``).

    Same arithmetic; ``np.dot(K[:1].T, a[:1])`` hits a slow OpenBLAS path on long vectors
    (15 ms at 30,000 states), which made the step cost dominate large ensembles.
    """
    K[0] = f
    for s, (a, c) in enumerate(zip(A[1:], C[1:]), start=1):
        dy = (a[:s] @ K[:s]) * h
        K[s] = fun(t + c * h, y + dy)
    y_new = y + h * (B @ K[:-1])
    f_new = fun(t + h, y_new)
    K[-1] = f_new
    return y_new, f_new


def _install_dispatch() -> None:
    """While an ensemble solve runs in this thread, let SciPy's BDF and Radau use
    `member_norm`, and its explicit RK methods `_fast_rk_step`. Other threads and other
    callers see SciPy unchanged."""
    from scipy.integrate._ivp import bdf, radau, rk

    with _norm_lock:
        for module in (bdf, radau):
            original = getattr(module, "norm", None)
            if original is None or getattr(original, "_flywheel_dispatch", False):
                continue

            def dispatch(x, _original=original):
                shape = getattr(_norm_local, "members", None)
                if shape is not None and np.size(x) % (shape[0] * shape[1]) == 0:
                    return member_norm(x, *shape)
                return _original(x)

            dispatch._flywheel_dispatch = True
            module.norm = dispatch
        original_step = getattr(rk, "rk_step", None)
        if original_step is not None and not getattr(original_step, "_flywheel_dispatch",
                                                     False):
            def step_dispatch(*args, _original=original_step):
                if getattr(_norm_local, "members", None) is not None:
                    return _fast_rk_step(*args)
                return _original(*args)

            step_dispatch._flywheel_dispatch = True
            rk.rk_step = step_dispatch


@contextlib.contextmanager
def _member_norms(n: int, s: int):
    previous = getattr(_norm_local, "members", None)
    _norm_local.members = (n, s)
    try:
        yield
    finally:
        _norm_local.members = previous


# -- one ensemble run -----------------------------------------------------------------------
def _padded_size(n: int, pysd_model) -> int:
    """At least 2 members, and never the length of another axis of the model.

    NumPy broadcasts by position: an ensemble of as many members as a subscript range or a
    delay order has could be silently confused with it. Padding (repeating the last member)
    rules that out; the padding is dropped from the results.
    """
    forbidden = {0, 1}
    for values in pysd_model._subscript_dict.values():
        forbidden.add(len(values))
    for value in vars(pysd_model.components._components).values():
        if isinstance(value, Lookups):
            forbidden.update(len(x) for x, *_ in getattr(value, "values", []))
    for element in _dynamic_elements(pysd_model):
        order_func = getattr(element, "order_func", None)
        if order_func is not None:
            with contextlib.suppress(Exception):
                forbidden.add(int(order_func()))
    while n in forbidden:
        n += 1
    return n


class EnsembleRun:
    """N members of one model, configured as `simulate` configures a single run."""

    def __init__(self, model: Model, base_params: dict, names: list[str], values: np.ndarray,
                 options: RunOptions, variables: list[str]):
        self.model = model
        self.options = options
        self.variables = variables
        self.n_real = len(values)
        pm = model._checkout()
        self.pysd = pm
        self.mode = "xarray" if pm._subscript_dict else "numpy"
        self.n = _padded_size(self.n_real, pm)
        if self.n > self.n_real:
            values = np.concatenate([values, np.repeat(values[-1:], self.n - self.n_real, 0)])
        self.namespace = vars(pm.components._components)
        self._saved = _broadcast.patch_namespace(self.namespace, self.mode)
        try:
            with _broadcast.active(self.n):
                self._configure(base_params, names, values)
        except Exception:
            self.close()
            raise

    def _configure(self, base_params, names, values) -> None:
        pm, options = self.pysd, self.options
        pm._stepper_mode = False
        for j, real in enumerate(names):
            self._set_constant(self.model.namespace[real], values[:, j])
        ts = options.return_timestamps
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="Replacing .*")
                with np.errstate(all="ignore"):
                    pm._config_simulation(
                        dict(base_params) or None, list(self.variables) or None,
                        list(ts) if isinstance(ts, tuple) else ts, "original",
                        options.final_time, options.time_step, options.saveper,
                        cache_output=True, progress=False)
        except FlywheelError:
            raise
        except Exception as err:
            raise NotVectorizable(f"the model does not initialise as an ensemble "
                                  f"({type(err).__name__}: {_first_line(err)})") from err
        real_names = {py: real for real, py in self.model.namespace.items()}
        self.system = EnsembleSystem(pm, self.n, self.mode, options.method, real_names)
        self.t0 = float(pm.time())
        self.t1 = float(pm.time.final_time())

    def _set_constant(self, py: str, column: np.ndarray) -> None:
        """Replace constant `py` by one returning every member's value (as PySD's
        ``set_components`` replaces a constant, but with the ensemble axis)."""
        pm = self.pysd
        func = getattr(pm.components, py)
        value: Any = np.asarray(column, dtype=float).copy()
        coords = pm.get_coords(func)
        if coords:  # a subscripted constant: every element takes the member's value
            sub_coords, sub_dims = coords
            shape = [len(sub_coords[d]) for d in sub_dims]
            template = xr.DataArray(np.zeros(shape), {d: sub_coords[d] for d in sub_dims},
                                    list(sub_dims))
            value = (template + xr.DataArray(value, dims=[RUN])).transpose(RUN, *sub_dims)

        def constant():
            return value

        constant.__name__ = py
        constant.__dict__.update(getattr(func, "__dict__", {}))
        pm.components._set_component(py, constant)
        pm._dependencies[py] = {}
        pm.cache.cached_funcs.discard(py)

    def close(self) -> None:
        _broadcast.restore_namespace(self.namespace, self._saved)
        self._saved = {}

    # -- integration ------------------------------------------------------------------
    def run(self, probe: Sequence[int] = ()) -> tuple[np.ndarray, dict[str, np.ndarray], dict]:
        """Integrate; return (times, columns as (n_real, T) arrays, solver statistics).

        For the members in `probe` (local indices), ``stats["probe"]`` keeps their states
        and derivatives at the saved times, for `verify_members` to check exactly.
        """
        method = self.options.method
        with np.errstate(all="ignore"), _broadcast.active(self.n):
            if method in FIXED_METHODS:
                saved, stats = self._fixed_step(method)
            else:
                saved, stats = self._adaptive(method)
            times = np.array([t for t, _ in saved])
            columns = self._record(saved)
            if len(probe):
                stats["probe"] = self._probe(saved, list(probe))
        stats.update(mode=self.mode, members=self.n_real, padded=self.n - self.n_real)
        return times, columns, stats

    def _probe(self, saved, members: list[int]) -> dict:
        states = np.stack([y[members] for _, y in saved], axis=1)
        derivs = np.stack([self.system.rhs(t, y)[members] for t, y in saved], axis=1)
        layout = [(slot.element.py_name, slot.start, slot.stop, slot.member_shape,
                   None if slot.dims is None else tuple(d for d in slot.dims if d != RUN),
                   slot.coords) for slot in self.system.slots]
        return {"members": members, "states": states, "derivatives": derivs,
                "layout": layout}

    def _fixed_step(self, method: str):
        system, time = self.system, self.pysd.time
        dt = float(time.time_step())
        y = system.get_state()
        saved, steps = [], 0
        while time.in_bounds():
            t = time()
            if time.in_return():
                saved.append((t, y.copy()))
            if method == "euler":
                system.set_state(t, y)
                dy = system.derivatives(commit_delays=True)
                y_next = y + dy * dt
            else:
                k1 = system.rhs(t, y)
                k2 = system.rhs(t + dt / 2, y + dt / 2 * k1)
                k3 = system.rhs(t + dt / 2, y + dt / 2 * k2)
                k4 = system.rhs(t + dt, y + dt * k3)
                y_next = y + dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
            if system.any_nonnegative:
                y_next = np.where(system.nonnegative, np.maximum(y_next, 0.0), y_next)
            _check_finite(y_next, t)
            y = y_next
            time.update(t + dt)
            steps += 1
        if time.in_return():
            saved.append((time(), y.copy()))
        nfev = steps * (1 if method == "euler" else 4)
        return saved, {"method": method, "nfev": nfev, "n_steps": steps, "time_step": dt}

    def _breakpoints(self) -> list[float]:
        times = set(model_breakpoints(self.pysd, self.t0, self.t1))
        times.update(float(t) for t in self.options.breakpoints)
        return sorted(t for t in times if self.t0 < t < self.t1 and math.isfinite(t))

    def _adaptive(self, method: str):
        system, pm, options = self.system, self.pysd, self.options
        if pm.cache_type.get("final_time") == "step":
            raise MethodError("FINAL TIME changes during the run; use method='euler'")
        if system.delay_n:
            raise NotVectorizable("DELAY N under an adaptive method is checked per run")
        extra = _broadcast.exact_time_functions(pm.time)
        for name, value in _broadcast.replace(self.namespace, extra).items():
            self._saved.setdefault(name, value)
        breakpoints = self._breakpoints()
        save = np.array(save_times(self.pysd.time))
        edges = [self.t0, *breakpoints, self.t1]
        n, s = self.n, system.size
        y = system.get_state().ravel()
        kwargs: dict[str, Any] = {"rtol": options.rtol, "atol": options.atol}
        if options.max_step:
            kwargs["max_step"] = options.max_step
        solver: Any = method
        if method in ("RK45", "RK23", "DOP853"):
            _install_dispatch()
            solver = _member_solver(method, n, s)
        elif method in ("BDF", "Radau"):
            _install_dispatch()
            kwargs["jac_sparsity"] = sparse.kron(sparse.eye(n, format="csr"),
                                                 np.ones((s, s)), format="csr")
        elif method == "LSODA":
            kwargs["lband"] = kwargs["uband"] = max(s - 1, 0)
        stats = {"method": method, "nfev": 0, "njev": 0, "nlu": 0,
                     "rtol": options.rtol, "atol": options.atol, "breakpoints": len(breakpoints)}
        saved: dict[float, np.ndarray] = {}
        for a, b in itertools.pairwise(edges):
            if b <= a:
                continue
            inside = b - 1e-11 * max(1.0, abs(b))

            def fun(t, yy, _inside=inside):
                return system.rhs(min(t, _inside), yy.reshape(n, s)).ravel()

            here = [float(t) for t in save[(save >= a) & (save <= b)] if t not in saved]
            t_eval = sorted(set(here) | {b})
            try:
                with _member_norms(n, s):
                    sol = solve_ivp(fun, (a, b), y, method=solver, t_eval=t_eval, **kwargs)
            except (FlywheelError, MembersFailed, NotVectorizable):
                raise
            except Exception as err:
                if isinstance(err, (TypeError, ValueError, AttributeError, KeyError,
                                    IndexError)):
                    raise NotVectorizable(f"{type(err).__name__}: {_first_line(err)}") from err
                raise SolverError(f"{method} failed between t={a:g} and t={b:g} "
                                  f"({type(err).__name__}: {err})") from err
            for key in ("nfev", "njev", "nlu"):
                stats[key] += int(getattr(sol, key, 0) or 0)
            if sol.status != 0:
                reached = sol.t[-1] if len(sol.t) else a
                raise SolverError(f"{method} stopped at t={reached:g} of {self.t1:g}: "
                                  f"{sol.message}")
            wanted = set(here)
            for t, col in zip(sol.t, sol.y.T):
                if float(t) in wanted:
                    saved[float(t)] = col.reshape(n, s)
            y = sol.y[:, -1]
        return [(t, saved[t]) for t in save], stats

    # -- outputs ----------------------------------------------------------------------
    def _record(self, saved) -> dict[str, np.ndarray]:
        """Evaluate the requested variables at each saved state: (n_real, T) per column."""
        pm = self.pysd
        layout = []
        for real in self.variables:
            py = self.model.namespace[real]
            func = getattr(pm.components, py)
            dims, labels = _variable_dims(pm, func)
            shape = tuple(len(v) for v in labels)
            dims_full = (RUN, *dims) if self.mode == "xarray" else None
            layout.append((real, func, dims_full, (self.n, *shape), labels))
        out = {}
        arrays = {real: np.empty((self.n, len(saved)) + full[1:])
                  for real, _, _, full, _ in layout}
        for k, (t, y) in enumerate(saved):
            self.system.set_state(t, y)
            for real, func, dims_full, full, _ in layout:
                try:
                    value = func()
                except (FlywheelError, NotVectorizable):
                    raise
                except Exception as err:
                    raise NotVectorizable(f"evaluating {real!r}: {type(err).__name__}: "
                                          f"{_first_line(err)}") from err
                arrays[real][:, k] = _conform(value, dims_full, 0, full)
        for real, _, _, full, labels in layout:
            data = arrays[real][: self.n_real]
            for name, idx in _flat_columns(real, labels):
                out[name] = np.ascontiguousarray(data[(slice(None), slice(None), *idx)])
        return out


def _variable_dims(pm, func) -> tuple[tuple[str, ...], list[list[str]]]:
    subs = getattr(func, "subscripts", None)
    if subs:
        sd = pm._subscript_dict
        return tuple(subs), [list(map(str, sd[d])) for d in subs]
    return (), []


def _flat_columns(real: str, labels: list[list[str]]):
    """PySD's flat column names: ``Name`` or ``Name[a,b]`` with the index of each."""
    if not labels:
        yield real, ()
        return
    for idx in np.ndindex(*[len(v) for v in labels]):
        yield f"{real}[{','.join(labels[d][i] for d, i in enumerate(idx))}]", idx


def column_names(model: Model, variables: list[str]) -> list[str]:
    """The flat output columns of `variables` (Vensim names), as sweeps and PySD name them."""
    pm = model.pysd_model()
    out = []
    for real in variables:
        func = getattr(pm.components, model.namespace[real])
        _, labels = _variable_dims(pm, func)
        out.extend(name for name, _ in _flat_columns(real, labels))
    return out


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


# -- chunks: ensemble, failure isolation, verification, fallback ---------------------------
def expected_times(model: Model, options: RunOptions) -> np.ndarray:
    """The output times of every run (SAVEPER grid or `return_timestamps`)."""
    pm = model._checkout()
    ts = options.return_timestamps
    pm._set_control_vars(list(ts) if isinstance(ts, tuple) else ts, options.final_time,
                         options.time_step, options.saveper)
    time = copy.deepcopy(pm.time)
    time.reset()
    return np.asarray(save_times(time), dtype=float)


def simulate_ensemble(model: Model, base_params: dict, names: list[str], values: np.ndarray,
                      options: RunOptions, variables: list[str], probe: Sequence[int] = ()):
    """Integrate the members `values` (runs x names) at once: (times, columns, stats).

    Raises `MembersFailed` (local indices), `NotVectorizable`, or the engine's errors.
    """
    run = EnsembleRun(model, base_params, names, values, options, variables)
    try:
        return run.run(probe)
    except MembersFailed as err:
        # a padded member is a copy of the last real one
        err.members = np.unique(np.minimum(err.members, run.n_real - 1))
        raise
    finally:
        run.close()


def simulate_member(model: Model, base_params: dict, names: list[str], row: np.ndarray,
                    options: RunOptions, variables: list[str],
                    columns: list[str]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """One member alone, with `simulate`: (times, {column: values over time})."""
    params = {**base_params, **{name: float(v) for name, v in zip(names, row)}}
    frame = simulate(model, params, return_columns=list(variables) or None,
                     **options.simulate_kwargs())
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise RuntimeError(f"simulate() returned no column {missing[0]!r}")
    return (np.asarray(frame.index, dtype=float),
            {c: np.asarray(frame[c].values, dtype=float) for c in columns})


def _agree(got: np.ndarray, ref: np.ndarray, options: RunOptions) -> np.ndarray:
    """Pointwise: does an ensemble member agree with its single run?"""
    both_nan = np.isnan(got) & np.isnan(ref)
    diff = np.abs(got - ref)
    if options.method in FIXED_METHODS:
        scale = np.nanmax(np.abs(ref)) if np.any(np.isfinite(ref)) else 0.0
        bound = VERIFY_RTOL_FIXED * (np.abs(ref) + 1e-3 * scale) + 1e-300
    else:
        bound = VERIFY_FACTOR * (options.atol + options.rtol * np.abs(ref))
    return both_nan | (diff <= bound)


def verify_members(model, base_params, names, values, options, variables, times, columns,
                   members, probe: dict | None = None, rerun: bool = True) -> str | None:
    """Check `members` against single runs; return the first mismatch, or None.

    With `probe` (from `EnsembleRun.run`), first the exact check at the saved states; then,
    if `rerun`, the whole-run comparison with `simulate`; see `VERIFY_FACTOR`.
    """
    names_of_columns = list(columns)
    for j in members:
        if probe is not None and j in probe["members"]:
            k = probe["members"].index(j)
            mismatch = _verify_states(model, base_params, names, values[j], options,
                                      variables, times, columns, j, probe, k)
            if mismatch:
                return mismatch
        if not rerun:
            continue
        try:
            t_ref, ref = simulate_member(model, base_params, names, values[j], options,
                                         variables, names_of_columns)
        except SolverError as err:
            return f"run {j} fails alone ({_first_line(err)}) but not in the ensemble"
        if len(t_ref) != len(times) or not np.allclose(t_ref, times, rtol=0, atol=1e-9):
            return f"run {j}: the ensemble saved different times than a single run"
        for name in names_of_columns:
            ok = _agree(columns[name][j], ref[name], options)
            if not ok.all():
                i = int(np.flatnonzero(~ok)[0])
                return (f"run {j}: {name!r} at t={times[i]:g} is {columns[name][j][i]:.10g} "
                        f"in the ensemble but {ref[name][i]:.10g} alone")
    return None


def _close(a, b) -> np.ndarray:
    """Pointwise agreement to round-off (columns of 2-D arrays scaled separately)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns
        scale = np.nan_to_num(np.nanmax(np.abs(b), axis=0, keepdims=b.ndim > 1))
    bound = VERIFY_RTOL_EXACT * (np.abs(b) + 1e-6 * scale) + 1e-300
    return (np.isnan(a) & np.isnan(b)) | (np.abs(a - b) <= bound)


def _verify_states(model, base_params, names, row, options, variables, times, columns, j,
                   probe, k) -> str | None:
    """The exact check of one member: initial state, derivatives and outputs at the saved
    states equal a single run's evaluated at the same states."""
    from ._integrate import _Run
    from ._system import exact_time_functions

    params = {**base_params, **{name: float(v) for name, v in zip(names, row)}}
    params = model.check_params(params, "off")
    ts = options.return_timestamps
    run = _Run(model, params, options.final_time, options.time_step, options.saveper,
               list(ts) if isinstance(ts, tuple) else ts, list(variables) or None)
    try:
        if options.method in ADAPTIVE_METHODS:
            run._patch(exact_time_functions(run.pysd.time))
        system = run.system
        by_name = {slot.element.py_name: slot for slot in system.slots}
        layout = probe["layout"]
        if len(layout) != len(system.slots) or any(py not in by_name for py, *_ in layout):
            return f"run {j}: the ensemble's states do not match a single run's"

        def single_vector(member_row):
            y = np.empty(system.size)
            for py, start, stop, shape, dims, coords in layout:
                slot = by_name[py]
                block = np.asarray(member_row[start:stop]).reshape(shape)
                if dims is not None:
                    if slot.dims is None or set(slot.dims) != set(dims):
                        raise ValueError(f"state {py} has dims {dims}, single {slot.dims}")
                    for d in dims:
                        if list(map(str, coords[d])) != list(map(str, slot.coords[d].values)):
                            raise ValueError(f"state {py}: coordinates of {d} differ")
                    block = block.transpose([dims.index(d) for d in slot.dims])
                y[slot.start:slot.stop] = block.ravel()
            return y

        states, derivs = probe["states"][k], probe["derivatives"][k]
        try:
            y0 = single_vector(states[0])
        except ValueError as err:
            return f"run {j}: {err}"
        if not _close(y0, system.get_state()).all():
            return f"run {j}: the ensemble starts from other initial states than a single run"
        pm = run.pysd
        funcs = [(real, getattr(pm.components, model.namespace[real])) for real in variables]
        layouts = {real: _variable_dims(pm, func) for real, func in funcs}
        single_dy = np.empty((len(times), system.size))
        ens_dy = np.empty_like(single_dy)
        single_out = {name: np.empty(len(times)) for name in columns}
        with np.errstate(all="ignore"), _broadcast.active(None):  # as simulate evaluates
            for i, t in enumerate(times):
                single_dy[i] = system.rhs(float(t), single_vector(states[i]))
                ens_dy[i] = single_vector(derivs[i])
                for real, func in funcs:
                    value = func()
                    dims, labels = layouts[real]
                    if dims and isinstance(value, xr.DataArray):
                        value = value.transpose(*dims).values
                    arr = np.broadcast_to(np.asarray(value, dtype=float),
                                          tuple(len(v) for v in labels))
                    for name, idx in _flat_columns(real, labels):
                        single_out[name][i] = arr[idx]
        ok = _close(ens_dy, single_dy)
        if not ok.all():
            i, bad = (int(v[0]) for v in np.nonzero(~ok))
            return (f"run {j}: at t={times[i]:g} the ensemble's derivative {bad} is "
                    f"{ens_dy[i, bad]:.10g}, a single run's {single_dy[i, bad]:.10g}")
        for name, ref in single_out.items():
            ok = _close(columns[name][j], ref)
            if not ok.all():
                i = int(np.flatnonzero(~ok)[0])
                return (f"run {j}: {name!r} at t={times[i]:g} is {columns[name][j][i]:.10g} in "
                        f"the ensemble but {ref[i]:.10g} in a single run at the same state")
    except FlywheelError as err:
        return f"run {j} fails alone ({_first_line(err)}) but not in the ensemble"
    finally:
        run.close()
    return None


def per_run_chunk(model, base_params, names, values, options, variables, times,
                  columns) -> ChunkResult:
    """Integrate each member alone; numeric failures are recorded, not raised."""
    n = len(values)
    out = {c: np.full((n, len(times)), np.nan) for c in columns}
    status = np.full(n, STATUS_OK, dtype=np.int8)
    errors: dict[int, str] = {}
    for i in range(n):
        _single_into(model, base_params, names, values, options, variables, times, columns,
                     i, out, status, errors)
    return ChunkResult(times, out, status, errors, {"mode": "per-run", "nfev": None})


def _single_into(model, base_params, names, values, options, variables, times, columns, i,
                 out, status, errors) -> None:
    try:
        t_ref, ref = simulate_member(model, base_params, names, values[i], options, variables,
                                     columns)
    except SolverError as err:  # NonFiniteError included: the run failed numerically
        status[i] = STATUS_FAILED
        errors[i] = _first_line(err)
        return
    if len(t_ref) != len(times):
        raise RuntimeError(f"run {i} saved {len(t_ref)} times, expected {len(times)}")
    for c in columns:
        out[c][i] = ref[c]


def run_chunk(model: Model, base_params: dict, names: list[str], values: np.ndarray,
              options: RunOptions, variables: list[str], times: np.ndarray, *,
              vectorize: bool = True, verify: int = 3, rerun: int | None = None,
              seed: Any = None) -> ChunkResult:
    """Integrate one chunk of runs (rows of `values`), as an ensemble if possible.

    Members whose integration fails are isolated (non-finite members at once, solver
    failures by bisection) and run alone, so that one bad run neither sinks the chunk nor
    slows the others. After the ensemble, `verify` members (the first, the last and one
    at random) are checked exactly against a single-run model at their saved states, and
    `rerun` of them (default: all) are also run again whole with `simulate`; on a mismatch,
    or if the model does not run as an ensemble at all, the whole chunk is integrated per
    run and ``stats["fallback"]`` says why.
    """
    values = np.asarray(values, dtype=float).reshape(len(values), len(names))
    if vectorize and len(values):
        result = compiled_chunk(model, base_params, names, values, options, variables, times)
        if result is not None:
            return result
    columns = column_names(model, variables)
    args = (model, base_params, names, values, options, variables, times, columns)
    if not vectorize or len(values) == 0:
        return per_run_chunk(*args)
    rng = np.random.default_rng(seed)
    n = len(values)
    chosen = list(dict.fromkeys([0, n - 1]))
    if n > 2:
        chosen.append(int(rng.integers(1, n - 1)))
    chosen = chosen[:verify]
    try:
        result = _ensemble_chunk(*args, verify_members_=chosen)
    except (FlywheelError, KeyboardInterrupt):
        raise
    except Exception as err:  # noqa: BLE001 - any failure of the vectorized model: fall back
        result = per_run_chunk(*args)
        result.stats["fallback"] = (f"the model does not run as an ensemble "
                                    f"({_first_line(err)})")
        return result
    done = result.stats.pop("via_ensemble")
    probes = result.stats.pop("probes")
    members = [m for m in chosen if done[m]]
    if verify and not members and done.any():  # the chosen ones failed: check another
        members = [int(rng.choice(np.flatnonzero(done)))]
    if members:
        mismatch = None
        for m in members:
            probe, pos = probes.get(m, (None, None))
            probe_one = None if probe is None else {**probe, "members": [m],
                                                    "states": probe["states"][pos:pos + 1],
                                                    "derivatives":
                                                        probe["derivatives"][pos:pos + 1]}
            whole = rerun is None or m in members[len(members) - rerun:]
            mismatch = verify_members(model, base_params, names, values, options, variables,
                                      times, result.columns, [m], probe_one, rerun=whole)
            if mismatch:
                break
        result.stats["verified"] = members
        if mismatch:
            fallback = per_run_chunk(*args)
            fallback.stats["fallback"] = (f"an ensemble member differs from its single run: "
                                          f"{mismatch}")
            return fallback
    return result


#: Below this many runs in a process, a model whose Numba code is not cached yet runs on
#: the plain-Python backend: compiling takes seconds, such a chunk less.
NUMBA_MIN_RUNS = 200


def compiled_chunk(model: Model, base_params: dict, names: list[str], values: np.ndarray,
                   options: RunOptions, variables: list[str],
                   times: np.ndarray) -> ChunkResult | None:
    """The chunk on the compiled engine, each member with its own integration (so each
    equals its single run); None where the compiler does not cover the model or options."""
    from .engine import NotCompilable
    from .engine import run as single
    from .engine.ensemble import run_members

    try:
        cm = model.compiled(base_params)
        backend = single.choose_backend(
            cm, None, runs=len(values) if len(values) >= NUMBA_MIN_RUNS else 1)
        mod = cm.module(backend)
        params = model.check_params(base_params, "off")
        program = cm.program
        columns, index = [], []
        for real in variables:
            cols = program.column_of.get(real)
            if cols is None:
                raise NotCompilable(f"{real!r} is not a recorded variable")
            index += cols
            columns += [program.columns[i] for i in cols]
        ts = options.return_timestamps
        control = dict(final_time=options.final_time, time_step=options.time_step,
                       saveper=options.saveper)
        t, out, ok, errors, stats = run_members(
            cm, mod, params, names, values, method=options.method, rtol=options.rtol,
            atol=options.atol, max_step=options.max_step, control=control,
            return_timestamps=list(ts) if isinstance(ts, tuple) else ts,
            breakpoints=list(options.breakpoints), columns=index)
    except NotCompilable as reason:
        from ._integrate import _notice

        _notice(model, str(reason))
        return None
    if len(t) != len(times) or not np.allclose(t, times, rtol=0, atol=1e-9):
        raise RuntimeError("the compiled engine saved other times than the sweep expects")
    status = np.where(ok, STATUS_OK, STATUS_FAILED).astype(np.int8)
    data = {c: np.ascontiguousarray(out[:, :, j]) for j, c in enumerate(columns)}
    stats["engine"] = f"compiled ({backend})"
    return ChunkResult(times, data, status, errors, stats)


def _ensemble_chunk(model, base_params, names, values, options, variables, times,
                    columns, verify_members_: Sequence[int] = ()) -> ChunkResult:
    n = len(values)
    out = {c: np.full((n, len(times)), np.nan) for c in columns}
    status = np.full(n, STATUS_OK, dtype=np.int8)
    errors: dict[int, str] = {}
    via_ensemble = np.zeros(n, dtype=bool)
    stats: dict[str, Any] = {"mode": None, "nfev": 0, "ensembles": 0, "isolated": 0}
    probes: dict[int, tuple[dict, int]] = {}

    def single(i):
        stats["isolated"] += 1
        _single_into(model, base_params, names, values, options, variables, times, columns,
                     i, out, status, errors)

    def solve(idx: np.ndarray) -> None:
        local = [int(np.flatnonzero(idx == m)[0]) for m in verify_members_ if m in idx]
        try:
            t, cols, st = simulate_ensemble(model, base_params, names, values[idx], options,
                                            variables, probe=local)
        except MembersFailed as err:
            bad = idx[err.members]
            for i in bad:
                single(int(i))
            rest = idx[~np.isin(idx, bad)]
            if len(rest):
                solve(rest)
            return
        except SolverError:
            if len(idx) <= 2:
                for i in idx:
                    single(int(i))
                return
            half = len(idx) // 2
            solve(idx[:half])
            solve(idx[half:])
            return
        if len(t) != len(times) or not np.allclose(t, times, rtol=0, atol=1e-9):
            raise NotVectorizable("the ensemble saved different times than expected")
        for c in columns:
            out[c][idx] = cols[c]
        via_ensemble[idx] = True
        probe = st.pop("probe", None)
        if probe is not None:
            for pos, m in enumerate(probe["members"]):
                probes[int(idx[m])] = (probe, pos)
        stats["mode"] = st["mode"]
        stats["nfev"] += st["nfev"]
        stats["ensembles"] += 1

    solve(np.arange(n))
    stats["via_ensemble"] = via_ensemble
    stats["probes"] = probes
    return ChunkResult(times, out, status, errors, stats)


def fallback_notice(reason: str) -> None:
    """The one-line notice of a sweep that integrates per run instead of as an ensemble."""
    warnings.warn(f"sweep falls back to per-run integration: {reason}",
                  EnsembleFallbackWarning, stacklevel=3)


__all__ = [
    "ChunkResult",
    "EnsembleFallbackWarning",
    "RunOptions",
    "column_names",
    "expected_times",
    "run_chunk",
    "simulate_ensemble",
]
