"""One chunk of a sweep: many parameter sets of one model.

A chunk runs on the compiled engine (`flywheel_sd.engine.ensemble`): every member is
integrated alone, with its own step-size control, by the same driver as a single run, so
each member equals its single run by construction (tested in ``tests/test_ensemble.py``),
with no check to pay per chunk. A model the compiler does not cover runs member by member
through `simulate` on the PySD path, with one notice (`EnsembleFallbackWarning`).
"""

from __future__ import annotations

import copy
import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..engine import _pysd_compat as compat
from ..engine.model import Model, _first_line
from ..engine.pysd_path import save_times
from ..engine.simulate import DEFAULT_ATOL, DEFAULT_RTOL, simulate
from ..errors import SolverError


class EnsembleFallbackWarning(UserWarning):
    """A sweep fell back from ensemble to per-run integration (the message says why)."""


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
        out = {
            "method": self.method,
            "rtol": self.rtol,
            "atol": self.atol,
            "max_step": self.max_step,
            "final_time": self.final_time,
            "time_step": self.time_step,
            "saveper": self.saveper,
            "breakpoints": list(self.breakpoints),
            "range_check": "off",
        }
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

STATUS_OK, STATUS_FAILED = 1, 2


def _variable_dims(pm, func) -> tuple[tuple[str, ...], list[list[str]]]:
    subs = getattr(func, "subscripts", None)
    if subs:
        sd = compat.subscript_dict(pm)
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
    out: list[str] = []
    for real in variables:
        func = getattr(pm.components, model.namespace[real])
        _, labels = _variable_dims(pm, func)
        out.extend(name for name, _ in _flat_columns(real, labels))
    return out


def expected_times(model: Model, options: RunOptions) -> np.ndarray:
    """The output times of every run (SAVEPER grid or `return_timestamps`), as the clock
    reaches them (t0 + dt + dt ...)."""
    from ..engine import NotCompilable
    from ..engine import run as single

    given = options.return_timestamps
    ts = list(given) if isinstance(given, tuple) else given
    control = {
        "final_time": options.final_time,
        "time_step": options.time_step,
        "saveper": options.saveper,
    }
    try:
        cm = model.compiled()
        c = cm.constants({}, control)
        c[:4] = [
            v if (override := control.get(k)) is None else float(override)
            for k, v in zip(
                ("time_step", "initial_time", "final_time", "saveper"), cm.control_values()
            )
        ]
        _, save, _ = single.grid(c, ts)
        return single.clock_times(c, save)
    except NotCompilable:
        pass
    pm = model._checkout()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pm.initialize()  # control variables given by expressions read the model's clock
    compat.set_control_vars(pm, ts, options.final_time, options.time_step, options.saveper)
    time = copy.deepcopy(pm.time)
    time.reset()
    return np.asarray(save_times(time), dtype=float)


def simulate_member(
    model: Model,
    base_params: dict,
    names: list[str],
    row: np.ndarray,
    options: RunOptions,
    variables: list[str],
    columns: list[str],
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """One member alone, with `simulate`: (times, {column: values over time})."""
    params = {**base_params, **{name: float(v) for name, v in zip(names, row)}}
    frame = simulate(
        model, params, return_columns=list(variables) or None, **options.simulate_kwargs()
    )
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise RuntimeError(f"simulate() returned no column {missing[0]!r}")
    return (
        np.asarray(frame.index, dtype=float),
        {c: np.asarray(frame[c].values, dtype=float) for c in columns},
    )


def per_run_chunk(
    model, base_params, names, values, options, variables, times, columns
) -> ChunkResult:
    """Integrate each member alone; numeric failures are recorded, not raised."""
    n = len(values)
    out = {c: np.full((n, len(times)), np.nan) for c in columns}
    status = np.full(n, STATUS_OK, dtype=np.int8)
    errors: dict[int, str] = {}
    for i in range(n):
        _single_into(
            model,
            base_params,
            names,
            values,
            options,
            variables,
            times,
            columns,
            i,
            out,
            status,
            errors,
        )
    return ChunkResult(times, out, status, errors, {"mode": "per-run", "nfev": None})


def _single_into(
    model, base_params, names, values, options, variables, times, columns, i, out, status, errors
) -> None:
    try:
        t_ref, ref = simulate_member(
            model, base_params, names, values[i], options, variables, columns
        )
    except SolverError as err:  # NonFiniteError included: the run failed numerically
        status[i] = STATUS_FAILED
        errors[i] = _first_line(err)
        return
    if len(t_ref) != len(times):
        raise RuntimeError(f"run {i} saved {len(t_ref)} times, expected {len(times)}")
    for c in columns:
        out[c][i] = ref[c]


def run_chunk(
    model: Model,
    base_params: dict,
    names: list[str],
    values: np.ndarray,
    options: RunOptions,
    variables: list[str],
    times: np.ndarray,
    *,
    vectorize: bool = True,
    **_unused: Any,
) -> ChunkResult:
    """Integrate one chunk of runs (rows of `values`): on the compiled engine, or else (or
    with ``vectorize=False``) run by run with `simulate`; ``stats["fallback"]`` says why.
    Failed members are recorded (status, one-line reason), never raised."""
    values = np.asarray(values, dtype=float).reshape(len(values), len(names))
    if len(values) == 0:
        return ChunkResult(
            times,
            {c: np.empty((0, len(times))) for c in column_names(model, variables)},
            np.empty(0, dtype=np.int8),
        )
    reason = "vectorize=False"
    if vectorize:
        result = compiled_chunk(model, base_params, names, values, options, variables, times)
        if not isinstance(result, str):
            return result
        reason = result
    columns = column_names(model, variables)
    result = per_run_chunk(model, base_params, names, values, options, variables, times, columns)
    if vectorize:
        result.stats["fallback"] = reason
    return result


#: Below this many runs in a process, a model whose Numba code is not cached yet runs on
#: the plain-Python backend: compiling takes seconds, such a chunk less.
NUMBA_MIN_RUNS = 200


def compiled_chunk(
    model: Model,
    base_params: dict,
    names: list[str],
    values: np.ndarray,
    options: RunOptions,
    variables: list[str],
    times: np.ndarray,
) -> ChunkResult | str:
    """The chunk on the compiled engine, each member with its own integration (so each
    equals its single run); where the compiler does not cover the model or options, the
    reason (a string)."""
    from ..engine import NotCompilable
    from ..engine import run as single
    from ..engine.ensemble import run_members

    try:
        cm = model.compiled(base_params)
        backend = single.choose_backend(
            cm, None, runs=len(values) if len(values) >= NUMBA_MIN_RUNS else 1
        )
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
        control = {
            "final_time": options.final_time,
            "time_step": options.time_step,
            "saveper": options.saveper,
        }
        settings: dict[str, Any] = {
            "method": options.method,
            "rtol": options.rtol,
            "atol": options.atol,
            "max_step": options.max_step,
            "control": control,
            "return_timestamps": list(ts) if isinstance(ts, tuple) else ts,
            "breakpoints": list(options.breakpoints),
            "columns": index,
        }
        lockstep = backend == "python" and not cm.program.series
        if (
            backend == "numba"
            and options.method in ("euler", "rk4")
            and not cm.program.series
            and len(values) >= PROBE_MIN_RUNS
        ):
            lockstep = _lockstep_is_faster(cm, mod, params, names, values, settings)
        t, out, ok, errors, stats = run_members(
            cm, mod, params, names, values, lockstep=lockstep, **settings
        )
    except NotCompilable as reason:
        return f"the compiled engine does not cover it ({reason})"
    if len(t) != len(times) or not np.allclose(t, times, rtol=0, atol=1e-9):
        raise RuntimeError("the compiled engine saved other times than the sweep expects")
    status = np.where(ok, STATUS_OK, STATUS_FAILED).astype(np.int8)
    data = {c: np.ascontiguousarray(out[:, :, j]) for j, c in enumerate(columns)}
    stats["engine"] = (
        "compiled (numpy lock-step)" if stats.get("lockstep") else f"compiled ({backend})"
    )
    return ChunkResult(times, data, status, errors, stats)


#: Chunks of at least this many fixed-step runs choose between Numba (a compiled loop over
#: members, on the cores) and NumPy lock-step (all members as rows of arrays) from a quick
#: timing, once per process, model and chunk size: which wins depends on the model.
PROBE_MIN_RUNS = 2000
_PROBE = (256, 4096)


def _lockstep_is_faster(cm, mod, params, names, values, settings) -> bool:
    """Estimate both at this chunk's size, each as a fixed cost plus a cost per member
    timed at two sizes: lock-step as one vectorised RHS per step, the Numba loop as whole
    runs (after compiling it)."""
    from time import perf_counter

    from ..engine import run as single
    from ..engine.ensemble import constants_matrix, run_members

    n = len(values)
    key = (settings["method"], n)
    if key in cm.strategy:
        return cm.strategy[key]
    run_members(cm, mod, params, names, values[:2], lockstep=False, **settings)  # compile
    numba = []
    for rows in (32, 256):
        start = perf_counter()
        run_members(cm, mod, params, names, values[:rows], lockstep=False, **settings)
        numba.append(perf_counter() - start)
    numba_total = numba[0] + max(numba[1] - numba[0], 0.0) / 224 * (n - 32)
    vector = cm.module("numpy")
    c = constants_matrix(cm, params, names, values[:1], settings["control"])[0]
    steps, _, _ = single.grid(c, settings["return_timestamps"])
    evaluations = steps * (1 if settings["method"] == "euler" else 4)
    costs = []
    with np.errstate(all="ignore"):
        for width in _PROBE:
            CT = np.repeat(c[:, None], width, axis=1)
            y = np.zeros((cm.program.n_states, width))
            vector.setup(CT)
            vector.init(CT, y)
            dy = np.empty_like(y)
            best = math.inf
            for _ in range(3):
                start = perf_counter()
                vector.rhs(float(c[1]), y, CT, dy)
                best = min(best, perf_counter() - start)
            costs.append(best)
    per_member = max(costs[1] - costs[0], 0.0) / (_PROBE[1] - _PROBE[0])
    fixed = max(costs[0] - per_member * _PROBE[0], 0.0)
    lockstep_total = evaluations * (fixed + per_member * n)
    cm.strategy[key] = lockstep_total < numba_total
    return cm.strategy[key]


def fallback_notice(reason: str) -> None:
    """The one-line notice of a sweep that integrates per run instead of as an ensemble."""
    warnings.warn(
        f"sweep falls back to per-run integration: {reason}", EnsembleFallbackWarning, stacklevel=3
    )


__all__ = [
    "ChunkResult",
    "EnsembleFallbackWarning",
    "RunOptions",
    "column_names",
    "expected_times",
    "run_chunk",
]
