"""Single runs on the compiled engine: fixed-step loops in the generated module, and the
adaptive methods (the generated RK45/RK23, or ``solve_ivp`` on the compiled RHS).

Backends: ``"numba"`` (the generated code compiled) and ``"python"`` (the same code as
plain Python: identical numbers, no compile wait); `choose_backend` picks one per run.
A failed run is replayed on plain Python with a checking right-hand side (`diagnose`), for
an error that names the variable and the time.
"""

from __future__ import annotations

import itertools
import math
import os
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np

from ..errors import (
    FlywheelError,
    MethodError,
    NonFiniteError,
    SolverError,
    UnsupportedElementError,
)
from . import _pysd_compat as compat
from .modules import numba_available

if TYPE_CHECKING:
    from .compiled import CompiledModel

GENERATED_ADAPTIVE = {"RK45": "rk45", "RK23": "rk23"}


#: Single runs of a model in one process before auto mode loads its Numba code: loading
#: it from the disk cache costs about a second (Numba imports SciPy's BLAS), a plain-Python
#: run of the default model 0.1-0.2 s, a Numba run a millisecond.
NUMBA_AFTER_RUNS = 5


def choose_backend(cm: CompiledModel, backend: str | None, runs: int = 1) -> str:
    """ "numba" for many runs, or once this process has made a few single runs of the model
    (or has its Numba code loaded already); "python" for a one-off run, while Numba's cache
    is warmed in the background for later. FLYWHEEL_SD_JIT=off|eager overrides."""
    if backend in ("python", "numba"):
        return backend
    setting = os.environ.get("FLYWHEEL_SD_JIT", "auto")
    if setting == "off" or not numba_available():
        return "python"
    if setting == "eager" or runs > 1 or "numba" in cm._modules:
        return "numba"
    cm.single_runs += 1
    if cm.numba_is_warm():
        return "numba" if cm.single_runs > NUMBA_AFTER_RUNS else "python"
    cm.warm_in_background()
    return "python"


@lru_cache(maxsize=64)
def _grid(t0, t1, dt, saveper, timestamps):
    return compat.time_grid(t0, t1, dt, saveper, list(timestamps) if timestamps else None)


#: More fixed steps than this is a mistake (a TIME STEP far too small), not a run.
MAX_STEPS = 5e7


def check_control(
    time_step: float, initial_time: float, final_time: float, saveper: float
) -> None:
    """Raise `MethodError` (one line, before any work) for control values no run can use:
    a TIME STEP or SAVEPER that is not a positive number (0 would loop forever), a FINAL
    TIME that is not after INITIAL TIME (a run of nothing), too many steps, or a SAVEPER
    that is not a whole multiple of TIME STEP (PySD's clock would save only at the times
    both divide, silently: SAVEPER 0.3 with TIME STEP 0.0625 saved every 1.5)."""
    for name, value in (("TIME STEP", time_step), ("SAVEPER", saveper)):
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise MethodError(f"{name} must be a positive number, not {value!r}")
    if (
        not (math.isfinite(initial_time) and math.isfinite(final_time))
        or final_time <= initial_time
    ):
        raise MethodError(
            f"FINAL TIME ({final_time:g}) must be a number after INITIAL TIME ({initial_time:g})"
        )
    if (final_time - initial_time) / time_step > MAX_STEPS:
        raise MethodError(
            f"{(final_time - initial_time) / time_step:.3g} steps of TIME STEP "
            f"{time_step:g}: too many; use a larger time step"
        )
    nearest = valid_saveper(time_step, saveper)
    if nearest != saveper:
        raise MethodError(
            f"SAVEPER {saveper:.10g} is not a whole multiple of TIME STEP {time_step:.10g} "
            f"(Vensim requires one: results are saved at time steps); use SAVEPER "
            f"{nearest:.10g}, or a TIME STEP that divides {saveper:.10g}"
        )


#: How far SAVEPER / TIME STEP may be from a whole number and still count as one: binary
#: floating point cannot hold 0.1 or 0.01 exactly (0.1 / 0.01 is 10.000000000000002).
SAVEPER_RTOL = 1e-9


def valid_saveper(time_step: float, saveper: float) -> float:
    """`saveper` itself if it is a whole multiple (1 or more) of `time_step`, to a relative
    tolerance; else the nearest multiple that is (never less than one TIME STEP)."""
    ratio = saveper / time_step
    if not math.isfinite(ratio):  # beyond float range: no step could tell the difference
        return saveper
    whole = max(1, round(ratio))
    if math.isclose(ratio, whole, rel_tol=SAVEPER_RTOL):
        return saveper
    return whole * time_step


def grid(c: np.ndarray, return_timestamps=None):
    """Steps, save mask and saved times for the run's control variables in c."""
    dt, t0, t1, saveper = (float(v) for v in c[:4])
    check_control(dt, t0, t1, saveper)
    stamps = None
    if return_timestamps is not None:
        stamps = tuple(float(t) for t in np.atleast_1d(return_timestamps))
    return _grid(t0, t1, dt, saveper, stamps)


def initial_state(mod, c: np.ndarray, program) -> np.ndarray:
    with np.errstate(all="ignore"):
        mod.setup(c)
        problems = mod.guards(c)
        if problems:
            from .compiler import NotCompilable

            raise NotCompilable(problems[0])
        y0 = np.zeros(program.n_states)
        mod.init(c, y0)
    return y0


def fixed_step(cm: CompiledModel, mod, c, method, return_timestamps):
    """Euler (PySD's loop, bit for bit) or RK4 at TIME STEP; returns (times, out, stats)."""
    program = cm.program
    n_steps, save, times = grid(c, return_timestamps)
    y0 = initial_state(mod, c, program)
    out = np.full((len(times), len(program.columns)), np.nan)
    with np.errstate(all="ignore"):
        status = fixed_driver(mod, method)(c, y0, float(c[1]), float(c[0]), save, out)
    if status:
        raise diagnose(cm, c, method, return_timestamps, None, None, None, ())
    stats = {
        "method": method,
        "nfev": n_steps * (1 if method == "euler" else 4),
        "n_steps": n_steps,
        "status": 0,
        "message": "fixed step completed",
        "time_step": float(c[0]),
        "rtol": None,
        "atol": None,
        "breakpoints": [],
    }
    return times, out, stats


def fixed_driver(mod, method: str, rhs=None):
    """The module's compiled loop, or under plain Python a loop over whole vectors (the
    same IEEE operations element by element, so the same numbers, 10x sooner)."""
    if rhs is None and hasattr(mod.euler, "py_func"):  # a Numba dispatcher
        return mod.euler if method == "euler" else mod.rk4
    rhs = rhs or mod.rhs

    def loop(c, y0, t0, dt, save, out):
        y, t, row = y0.copy(), t0, 0
        dy = np.empty_like(y)
        nonneg = mod.NONNEG
        for k in range(len(save) - 1):
            if save[k]:
                mod.record(t, y, c, out[row])
                row += 1
            if method == "euler":
                rhs(t, y, c, dy)
                y_new = y + dy * dt
            else:
                y_new = _rk4_step(rhs, c, t, y, dt)
            y_new[nonneg] = np.maximum(y_new[nonneg], 0.0)
            if not np.isfinite(y_new).all():
                return k + 1
            y, t = y_new, t + dt
        if save[-1]:
            mod.record(t, y, c, out[row])
        return 0

    return loop


def _rk4_step(rhs, c, t, y, h):
    k1, k2, k3, k4 = (np.empty_like(y) for _ in range(4))
    rhs(t, y, c, k1)
    rhs(t + h / 2, y + h / 2 * k1, c, k2)
    rhs(t + h / 2, y + h / 2 * k2, c, k3)
    rhs(t + h, y + h * k3, c, k4)
    return y + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)


def _nonfinite_message(cm, row, t, dy=None) -> str:
    program = cm.program
    culprit = next(
        (program.columns[i] for i in program.eval_order if not math.isfinite(row[i])), None
    )
    where = f"variable {culprit!r}" if culprit else "a state derivative"
    if culprit is None and dy is not None and not np.isfinite(dy).all():
        state = program.state_names[int(np.argmax(~np.isfinite(dy)))]
        where = f"the rate of change of {state!r}"
    return (
        f"{where} became non-finite at time {t:g}; check its equation and inputs "
        "(division by zero, overflow), or try method='BDF' / a smaller max_step"
    )


def checked_rhs(cm, mod):
    """The RHS that stops at the first non-finite derivative, naming the root variable
    (the first non-finite output in evaluation order at that state)."""
    row = np.empty(len(cm.program.columns))

    def rhs(t, y, c, dy):
        mod.rhs(t, y, c, dy)
        if not np.isfinite(dy).all():
            mod.record(t, y, c, row)
            raise NonFiniteError(_nonfinite_message(cm, row, t, dy))

    return rhs


def diagnose(cm, c, method, return_timestamps, rtol, atol, max_step, extra) -> Exception:
    """A failed run, replayed on the plain-Python backend with a checking RHS, for the
    one-line error that says where and what (the error path only: speed is no concern)."""
    mod = cm.module("python")
    rhs = checked_rhs(cm, mod)
    try:
        with np.errstate(all="ignore"):
            if method in ("euler", "rk4"):
                _, save, times = grid(c, return_timestamps)
                y0 = initial_state(mod, c, cm.program)
                out = np.full((len(times), len(cm.program.columns)), np.nan)
                status = fixed_driver(mod, method, rhs)(c, y0, float(c[1]), float(c[0]), save, out)
                if status:
                    t = float(c[1]) + (status - 1) * float(c[0])
                    return NonFiniteError(
                        f"a state became non-finite at time {t:g} (overflow); check the "
                        "model's growth rates, or try a smaller TIME STEP"
                    )
            else:
                adaptive(
                    cm, mod, c, method, rtol, atol, max_step, extra, return_timestamps, rhs=rhs
                )
    except (NonFiniteError, SolverError) as err:
        return err
    return SolverError(f"{method} failed; try method='BDF' or 'LSODA', or method='euler'")


def adaptive(
    cm: CompiledModel,
    mod,
    c,
    method,
    rtol,
    atol,
    max_step,
    extra_breaks,
    return_timestamps,
    rhs=None,
):
    """An adaptive run, piecewise between breakpoints, evaluated from inside each piece;
    exact STEP/PULSE edges (c[4] = 1)."""
    program = cm.program
    if program.time_equality:
        raise UnsupportedElementError(
            f"{program.time_equality!r} tests Time for equality, an event at one instant "
            f"that only a fixed time step sees; {method!r} cannot integrate it; "
            "use method='euler'"
        )
    c = c.copy()
    c[4] = 1.0
    _, save, times = grid(c, return_timestamps)
    save_t = clock_times(c, save)
    y0 = initial_state(mod, c, program)
    t0, t1 = float(c[1]), float(c[2])
    breaks = breakpoints(mod, c, t0, t1, extra_breaks)
    edges = np.array([t0, *breaks, t1], dtype=float)
    out = np.full((len(save_t), len(program.columns)), np.nan)
    max_step = math.inf if max_step is None else float(max_step)
    if method in GENERATED_ADAPTIVE and rhs is None:
        stats_arr = np.zeros(8, dtype=np.int64)
        with np.errstate(all="ignore"):
            getattr(mod, GENERATED_ADAPTIVE[method])(
                c, y0, edges, save_t, float(rtol), float(atol), max_step, out, stats_arr
            )
        status = int(stats_arr[3])
        nfev, n_steps = int(stats_arr[0]), int(stats_arr[1])
        if status:
            raise diagnose(cm, c, method, return_timestamps, rtol, atol, max_step, extra_breaks)
        njev = nlu = 0
        rhs_calls = nfev
    else:
        nfev, njev, nlu, n_steps, rhs_calls = _solve_ivp(
            mod,
            c,
            y0,
            edges,
            save_t,
            method,
            rtol,
            atol,
            max_step,
            out,
            rhs or checked_rhs(cm, mod),
            jacobian_sparsity(program, method),
        )
    stats = {
        "method": method,
        "nfev": nfev,
        "rhs_calls": rhs_calls,
        "njev": njev,
        "nlu": nlu,
        "n_steps": n_steps,
        "status": 0,
        "message": "integration completed",
        "rtol": rtol,
        "atol": atol,
        "breakpoints": [float(b) for b in breaks],
    }
    return times, out, stats


def clock_times(c, save) -> np.ndarray:
    """The unrounded times of the saved steps (t accumulated as the clock does: cumsum adds
    in order, so each time is bit for bit the clock's)."""
    steps = np.full(len(save), float(c[0]))
    steps[0] = float(c[1])
    return np.cumsum(steps)[np.asarray(save, dtype=bool)]


def jacobian_sparsity(program, method: str):
    """The Jacobian's sparsity pattern from the model's dependency graph, for BDF and
    Radau: their finite-difference Jacobian then perturbs groups of independent states
    together (a chain of n stocks costs 2 evaluations, not n). None for other methods."""
    if method not in ("BDF", "Radau") or not program.state_deps:
        return None
    from scipy.sparse import lil_matrix

    n = program.n_states
    pattern = lil_matrix((n, n), dtype=bool)
    for i, deps in enumerate(program.state_deps):
        for j in deps:
            pattern[i, j] = True
    return pattern.tocsr()


def _solve_ivp(mod, c, y0, edges, save_t, method, rtol, atol, max_step, out, rhs, sparsity=None):
    """solve_ivp on the compiled RHS, piecewise; the outputs recorded at the save times."""
    n = len(y0)

    def evaluate(t, y):
        dy = np.empty(n)
        rhs(t, y, c, dy)
        return dy

    saved_y, counts = piecewise_solve_ivp(
        evaluate, y0, edges, save_t, method, rtol, atol, max_step, sparsity
    )
    with np.errstate(all="ignore"):
        for i, (t, yy) in enumerate(zip(save_t, saved_y)):
            mod.record(t, yy, c, out[i])
    return counts["nfev"], counts["njev"], counts["nlu"], counts["n_steps"], counts["calls"]


def piecewise_solve_ivp(
    evaluate, y0, edges, save_t, method, rtol, atol, max_step=None, sparsity=None
) -> tuple[np.ndarray, dict]:
    """``scipy.integrate.solve_ivp`` from breakpoint to breakpoint (`edges`), each piece
    evaluated from inside (a switch at an edge takes its value within the piece, whatever
    round-off does to time at the edge). Returns the states at `save_t` (dense output; the
    end state itself at and after the last edge) and the counts: nfev, njev, nlu, n_steps
    and calls (every evaluation, the finite-difference Jacobian's included). Used by the
    compiled engine and the PySD path alike."""
    from scipy.integrate import solve_ivp  # here: importing it costs 0.3 s

    y = np.asarray(y0, dtype=float).copy()
    counts = {"nfev": 0, "njev": 0, "nlu": 0, "n_steps": 0, "calls": 0}
    t1 = edges[-1]
    saved_y = np.repeat(y[None, :], len(save_t), axis=0)  # t0 and before
    options = {"max_step": max_step} if max_step and math.isfinite(max_step) else {}
    if sparsity is not None:
        options["jac_sparsity"] = sparsity
    for a, b in itertools.pairwise(edges):
        if b <= a:
            continue
        lo = a + 1e-11 * max(1.0, abs(a))
        hi = b - 1e-11 * max(1.0, abs(b))

        def fun(t, yy, _lo=lo, _hi=hi):
            counts["calls"] += 1
            return evaluate(min(max(t, _lo), _hi), yy)

        try:
            with np.errstate(all="ignore"):
                sol = solve_ivp(
                    fun,
                    (a, b),
                    y,
                    method=method,
                    rtol=rtol,
                    atol=atol,
                    dense_output=True,
                    **options,
                )
        except FlywheelError:
            raise
        except Exception as err:  # a failure inside SciPy's linear algebra, say
            text = str(err).strip().splitlines()
            detail = f"{type(err).__name__}: {text[0]}" if text else type(err).__name__
            raise SolverError(
                f"{method} failed between t={a:g} and t={b:g} ({detail}); "
                "try method='BDF' or 'LSODA', or a smaller max_step"
            ) from err
        for key in ("nfev", "njev", "nlu"):
            counts[key] += int(getattr(sol, key, 0) or 0)
        counts["n_steps"] += len(sol.t) - 1
        if sol.status != 0:
            raise SolverError(
                f"{method} stopped at t={sol.t[-1]:g} of {t1:g}: {sol.message};"
                " try method='BDF' or 'LSODA' (stiff models), looser "
                "rtol/atol, or method='euler'"
            )
        # save times in [a, b); the last piece also takes times a round-off past t1
        here = (save_t >= a) & ((save_t < b) | (b >= t1))
        if here.any():
            assert sol.sol is not None  # dense_output=True
            saved_y[here] = sol.sol(np.clip(save_t[here], a, b)).T
        y = sol.y[:, -1]
    saved_y[save_t >= t1] = y  # the end state exactly, not an interpolant
    return saved_y, counts


def breakpoints(mod, c, t0, t1, extra) -> list[float]:
    """STEP/PULSE/RAMP times with constant arguments, the switch times of Time comparisons
    with constants, time-series knots and the caller's `extra` times, inside (t0, t1)."""
    times = {float(t) for t in extra or ()}
    with np.errstate(all="ignore"):
        times.update(_event_times(mod.events(c), float(c[0]), t1))
        times.update(_switch_times(mod, c, t0, t1))
    return sorted(t for t in times if t0 < t < t1 and math.isfinite(t))


def _event_times(events, dt, t1) -> set:
    out: set = set()
    for kind, args in events:
        a = [float(v) for v in args]
        if kind == "step":
            out.add(a[1])
        elif kind in ("ramp", "Xramp"):
            out.update(a[1:3])
        elif kind in ("pulse", "Xpulse"):
            width = a[1] if kind == "pulse" else dt
            out.update((a[0], a[0] + width))
        else:  # trains: every edge until the end
            start, repeat = a[0], a[1]
            width = a[2] if kind == "pulse_train" else dt
            end = min(a[3], t1) if kind == "pulse_train" else t1
            k = 0
            while repeat > 0 and start + k * repeat <= end and k <= 100_000:
                out.update((start + k * repeat, start + k * repeat + width))
                k += 1
    return out


def _switch_times(mod, c, t0, t1) -> set:
    """Locate by bisection every change of the model's Time comparisons on a TIME STEP
    grid (a switch that comes and goes within one step is not seen, as under Euler)."""

    def values(t):
        return np.array([float(v) for v in mod.switches(t, c)], dtype=float)

    first = values(t0)
    if first.size == 0:
        return set()
    dt = float(c[0])
    grid_t = np.linspace(t0, t1, max(2, math.ceil((t1 - t0) / dt - 1e-9) + 1))
    table = np.array([values(t) for t in grid_t])
    out = set()
    for j in range(table.shape[1]):
        for i in np.nonzero(np.diff(table[:, j]) != 0)[0]:
            lo, hi, vlo = grid_t[i], grid_t[i + 1], table[i, j]
            for _ in range(60):
                mid = 0.5 * (lo + hi)
                if values(mid)[j] == vlo:
                    lo = mid
                else:
                    hi = mid
            out.add(float(hi))
    return out


def to_frame(cm: CompiledModel, model, times, out, return_columns):
    """A frame shaped like PySD's ``run()``: indexed by time, one column per variable."""
    import pandas as pd

    program = cm.program
    index: slice | list[int]
    if return_columns is None:
        index = slice(None)
        columns = program.columns
    else:
        index = _column_indices(program, model, return_columns)
        columns = [program.columns[i] for i in index]
    frame = pd.DataFrame(out[:, index], index=pd.Index(times, name="time"), columns=columns)
    return frame


def _column_indices(program, model, return_columns) -> list[int]:
    from .compiler import NotCompilable

    if isinstance(return_columns, str):
        return_columns = [return_columns]
    position = {c: i for i, c in enumerate(program.columns)}
    out = []
    for name in return_columns:
        if name in position:
            out.append(position[name])
            continue
        real = model.real_name(name)
        if real not in program.column_of:
            raise NotCompilable(f"{real!r} is not a recorded variable")
        out.extend(program.column_of[real])
    return out
