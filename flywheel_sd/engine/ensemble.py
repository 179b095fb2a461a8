"""Many runs of a compiled model: each member integrated alone, on all cores.

Every member runs the same driver as a single run (`drivers.euler`, `drivers.rk45`, ...)
with its own constants and, for the adaptive methods, its own step-size control, so a
member equals its single run by construction and one kinked member never forces small
steps on the others. The members loop is compiled with Numba's ``prange`` (threads).
Fixed-step methods can instead run every member at once as rows of NumPy arrays
("lock-step": the same code over arrays, no operation mixing members), which is what runs
without Numba and what small models prefer (`flywheel_sd.sweeps.chunk` times both). Only
the requested output columns are kept.
"""

from __future__ import annotations

import math

import numpy as np

from .compiler import NotCompilable


def constants_matrix(
    cm, base_params: dict, names: list[str], values: np.ndarray, control: dict
) -> np.ndarray:
    """One row of constants per member: the base parameters, then the design's values."""
    c0 = cm.constants(base_params, control)
    C = np.repeat(c0[None, :], len(values), axis=0)
    for j, name in enumerate(names):
        slots = cm.program.params.get(name)
        if slots is None:
            raise NotCompilable(f"{name!r} is not a constant of the model")
        C[:, slots] = values[:, j : j + 1]
    return C


def run_members(
    cm,
    mod,
    base_params: dict,
    names: list[str],
    values: np.ndarray,
    *,
    method: str,
    rtol: float,
    atol: float,
    max_step: float | None,
    control: dict,
    return_timestamps,
    breakpoints,
    columns: list[int],
    lockstep: bool = False,
):
    """Integrate every member; returns (times, OUT (n, n_times, n_columns), ok mask,
    errors {member: reason}, stats). With `lockstep`, fixed-step methods run all members
    at once as rows of NumPy arrays (`_lockstep`), for the plain-Python backend."""
    from . import run as single

    program = cm.program
    values = np.asarray(values, dtype=float).reshape(len(values), len(names))
    n = len(values)
    C = constants_matrix(cm, base_params, names, values, control)
    sel = np.asarray(columns, dtype=np.int64)
    n_steps, save, times = single.grid(C[0], return_timestamps)
    Y0 = np.zeros((n, program.n_states))
    status = np.zeros(n, dtype=np.int64)
    OUT = np.full((n, len(times), len(sel)), np.nan)
    lockstep = lockstep and method in ("euler", "rk4")
    with np.errstate(all="ignore"):
        if lockstep:  # derived constants for every member at once; states in _lockstep
            CT = np.ascontiguousarray(C.T)
            cm.module("numpy").setup(CT)
            C = np.ascontiguousarray(CT.T)
        else:
            mod.init_members(C, Y0, status)
        guarded = cm.program.guard_slots
        for m in range(n) if guarded and _varies(C, guarded) else range(min(n, 1)):
            if mod.guards(C[m]):
                raise NotCompilable(mod.guards(C[m])[0])
        if lockstep:
            failed = _lockstep(cm, C, method, save, sel, OUT)
            nfev = n * n_steps * (1 if method == "euler" else 4)
        elif method in ("euler", "rk4"):
            _fits(
                mod.fixed_members(
                    C,
                    Y0,
                    float(C[0, 1]),
                    float(C[0, 0]),
                    save,
                    len(times),
                    sel,
                    OUT,
                    status,
                    method == "rk4",
                )
            )
            nfev = n * n_steps * (1 if method == "euler" else 4)
            failed = status != 0
        else:
            if program.time_equality:
                raise NotCompilable(f"{program.time_equality} tests Time for equality")
            C[:, 4] = 1.0  # exact STEP/PULSE edges, as a single adaptive run
            stats = np.zeros((n, 8), dtype=np.int64)
            save_t = single.clock_times(C[0], save)
            for idx, edges in _edge_groups(cm, mod, C, breakpoints):
                out, st = OUT[idx], stats[idx]  # copies (fancy indexing): written back
                _fits(
                    mod.adaptive_members(
                        C[idx],
                        Y0[idx],
                        edges,
                        save_t,
                        float(rtol),
                        float(atol),
                        math.inf if max_step is None else float(max_step),
                        sel,
                        out,
                        st,
                        method == "RK23",
                    )
                )
                OUT[idx], stats[idx] = out, st
            nfev = int(stats[:, 0].sum())
            failed = stats[:, 3] != 0
    OUT[failed] = np.nan  # a failed run has no results, not a partial one
    reason = {}
    for i, m in enumerate(np.flatnonzero(failed).tolist()):
        if i < DIAGNOSED:
            reason[int(m)] = str(
                single.diagnose(
                    cm, C[m], method, return_timestamps, rtol, atol, max_step, breakpoints or ()
                )
            )
        else:
            reason[int(m)] = (
                "a state or derivative became non-finite, or the step size "
                "collapsed (run it alone with simulate() for details)"
            )
    return times, OUT, ~failed, reason, {"mode": "compiled", "nfev": nfev, "lockstep": lockstep}


def _fits(code: int) -> None:
    if code != 0:  # a bug of ours, not of the model: the arrays did not fit the module
        raise RuntimeError("the members' arrays do not fit the generated module")


#: Failed members per chunk whose error is diagnosed in full (a replay on plain Python).
DIAGNOSED = 20


def _lockstep(cm, C, method, save, sel, OUT) -> np.ndarray:
    """Euler or RK4 of every member at once: the generated code over arrays whose last
    axis is the member (the "numpy" module). Each element follows the same IEEE
    operations as its member's scalar run, so members equal single runs; no operation
    mixes members. Returns the mask of failed (non-finite) members."""
    from . import run as single

    mod = cm.module("numpy")
    CT = np.ascontiguousarray(C.T)
    y = np.zeros((cm.program.n_states, C.shape[0]))
    mod.setup(CT)
    mod.init(CT, y)
    nonneg = np.asarray(mod.NONNEG, dtype=bool)
    dy = np.empty_like(y)
    row = np.empty((mod.N_OUT, C.shape[0]))
    failed = np.zeros(C.shape[0], dtype=bool)
    t, dt, r = float(C[0, 1]), float(C[0, 0]), 0
    for k in range(len(save)):
        if save[k]:
            mod.record(t, y, CT, row)
            OUT[:, r, :] = row[sel].T
            r += 1
        if k == len(save) - 1:
            break
        if method == "euler":
            mod.rhs(t, y, CT, dy)
            y = y + dy * dt
        else:
            y = single._rk4_step(mod.rhs, CT, t, y, dt)
        y[nonneg] = np.maximum(y[nonneg], 0.0)
        failed |= ~np.isfinite(y).all(axis=0)
        t = t + dt
    return failed


def _varies(C: np.ndarray, slots: list[int]) -> bool:
    return bool(slots) and not np.all(C[:, slots] == C[0, slots])


def _edge_groups(cm, mod, C: np.ndarray, extra):
    """Members grouped by their breakpoints (STEP/PULSE times, Time comparisons), which
    depend on constants that a design may vary: each member gets exactly the breakpoints
    its single run would, so it equals that run."""
    from . import run as single

    t0, t1 = float(C[0, 1]), float(C[0, 2])
    slots = cm.program.event_slots
    groups: dict[tuple, np.ndarray | list[int]]
    if not _varies(C, slots):
        groups = {(): np.arange(len(C))}
    else:
        keys = [tuple(C[m, slots]) for m in range(len(C))]
        by_key: dict[tuple, list[int]] = {}
        for m, key in enumerate(keys):
            by_key.setdefault(key, []).append(m)
        groups = dict(by_key)
    for members in groups.values():
        members = np.asarray(members)
        breaks = single.breakpoints(mod, C[members[0]], t0, t1, extra)
        yield members, np.array([t0, *breaks, t1], dtype=float)
