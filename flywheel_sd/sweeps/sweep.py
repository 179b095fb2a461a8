"""`sweep`: run a design of parameter sets, in chunks, into one ``xarray.Dataset``.

Data flow: resolve the model (and a scenario's parameters as the base) -> check the design
against the model -> split its runs into chunks -> integrate each chunk (as an ensemble,
`flywheel_sd.sweeps.chunk.run_chunk`) in this process, a process pool or on Dask workers ->
reduce to the requested outputs and metrics in the worker -> write each finished chunk to
the store -> assemble the Dataset (dims ``run`` and ``time``; the sampled parameters as
coordinates on ``run``; provenance in ``attrs``).

The store is a folder: ``data.zarr`` (the Dataset, written chunk by chunk), ``sweep.json``
(the design's fingerprint and the settings) and ``chunks/NNNNNN.json`` (one marker per
finished chunk, written after its data, with its failed runs and statistics). A sweep that
stops for any reason resumes from the markers and computes only the missing chunks.
"""

from __future__ import annotations

import contextlib
import gc
import json
import math
import multiprocessing
import os
import sys
import warnings
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd
import xarray as xr

from .. import designs as designs_mod
from ..engine.model import Model, load
from ..engine.simulate import DEFAULT_ATOL, DEFAULT_RTOL, check_method
from ..errors import FlywheelError, MethodError, ParameterError, unknown_name_message
from .chunk import (
    STATUS_OK,
    ChunkResult,
    RunOptions,
    column_names,
    expected_times,
    fallback_notice,
    run_chunk,
)

EXECUTORS = ("ensemble", "processes", "dask")
SIMULATE_OPTIONS = (
    "rtol",
    "atol",
    "max_step",
    "final_time",
    "time_step",
    "saveper",
    "return_timestamps",
    "breakpoints",
    "range_check",
)
#: Default chunk: as many runs as keep one chunk's recorded values under this many floats
#: (64 MB), at most `MAX_CHUNK` runs.
CHUNK_FLOATS = 8_000_000
MAX_CHUNK = 20_000


class SweepError(FlywheelError, RuntimeError):
    """A sweep could not go on (a worker died, the store is unusable)."""


# -- public entry point ---------------------------------------------------------------------
def sweep(
    model_or_scenario: Any,
    design: Any,
    *,
    outputs: Sequence[str] | str | None = None,
    metrics: Any = None,
    executor: str = "ensemble",
    scheduler: Any = None,
    store: str | os.PathLike | None = None,
    chunk_size: int | None = None,
    progress: bool = True,
    method: str = "RK45",
    resume: bool = True,
    workers: int | None = None,
    vectorize: bool = True,
    callback: Callable[[int, int, int], None] | None = None,
    **simulate_options: Any,
) -> xr.Dataset:
    """Run every parameter set of `design` and collect the results.

    Parameters
    ----------
    model_or_scenario : Model, path or scenario
        A loaded model, a model file, a scenario (name or object from
        `flywheel_sd.scenarios`: its model, with its parameters as the base of every run).
    design : Design, DataFrame or mapping
        From `flywheel_sd.designs` (grid, lhs, sobol, morris, saltelli, oat), or a table of
        runs (one column per parameter).
    outputs : list of str, optional
        Variables whose time series to keep. Default: the stocks, or none when `metrics`
        are given (then only the metrics are kept, in bounded memory).
    metrics : str, callable, list or dict, optional
        Scalar metrics per run: names registered in `flywheel_sd.metrics`, or functions of
        an ``xarray.Dataset`` (dims ``run``, ``time``) that reduce over ``time``. A dict
        names them. They are evaluated in the workers, chunk by chunk.
    executor : {"ensemble", "processes", "dask"}
        Where chunks run: in this process (default); a local process pool of `workers`
        processes (default: all cores); or Dask (``scheduler``).
    scheduler : str or dask.distributed.Client, optional
        For ``executor="dask"``: an address ``"tcp://host:8786"`` or a Client. With none,
        a ``LocalCluster`` of `workers` processes is started for the sweep.
    store : path, optional
        A folder to save results in, chunk by chunk (Zarr; see the module doc). The
        returned Dataset then reads lazily from it.
    chunk_size : int, optional
        Runs per chunk (default: as many as keep a chunk's recorded values under 64 MB,
        at most 20,000, and at least one chunk per worker).
    progress : bool
        A progress bar (runs done, runs/s, ETA) on a terminal.
    method : str
        Integration method, as `simulate` takes it.
    resume : bool
        With `store`: continue a sweep found there (True, default), or refuse to touch an
        existing store (False).
    workers : int, optional
        Processes for ``"processes"`` and a local Dask cluster.
    vectorize : bool
        Run each chunk on the compiled engine (True, default: every member integrated alone
        with its own step control, so each equals its single run) or run by run through
        `simulate`.
    callback : callable, optional
        ``callback(chunk_index, runs_done, runs_total)`` after each chunk is stored.
    **simulate_options
        rtol, atol, max_step, final_time, time_step, saveper, return_timestamps,
        breakpoints, range_check: as `simulate` takes them.

    Returns
    -------
    xarray.Dataset
        Dims ``run`` and ``time``; parameters as coordinates on ``run``; one variable per
        output column (``Name`` or ``Name[sub]``, as `simulate` names them) and per metric;
        ``status`` (1 ok, 2 failed) and ``error`` (the reason) per run; provenance in attrs.

    Raises
    ------
    ParameterError
        Unknown parameter, output or metric (with close matches), an empty range, an
        unknown executor or option, or a store that holds a different sweep. All are
        raised before any run starts.
    SweepError
        A worker process died (finished chunks are in the store: run again to resume).

    Examples
    --------
    >>> import flywheel_sd as fw
    >>> design = fw.designs.lhs({"Contact Infectivity": (0.2, 0.5)}, n=100, seed=1)
    >>> ds = fw.sweep("SIR.mdl", design, outputs=["Infectious"])  # doctest: +SKIP
    """
    plan = _plan(
        model_or_scenario,
        design,
        outputs=outputs,
        metrics=metrics,
        executor=executor,
        scheduler=scheduler,
        store=store,
        chunk_size=chunk_size,
        method=method,
        workers=workers,
        vectorize=vectorize,
        simulate_options=simulate_options,
    )
    writer = _open_store(plan, resume) if store is not None else _MemoryWriter(plan)
    todo = [k for k in range(plan.n_chunks) if k not in writer.done]
    runner = _Runner(plan, writer, progress, callback)
    runner.run(todo)
    return writer.result(runner.summary())


# -- planning: everything checked before any run ---------------------------------------------
@dataclass
class _Plan:
    model: Model
    base: dict
    scenario: str | None
    design: designs_mod.Design
    options: RunOptions
    range_check: str
    outputs: list[str]  # variables whose series are kept
    output_columns: list[str]
    metrics: list[tuple[str, Any]]  # (name, metric name or callable)
    variables: list[str]  # variables recorded in the workers
    times: np.ndarray
    executor: str
    scheduler: Any
    workers: int
    chunk_size: int
    vectorize: bool
    store: Path | None = None
    seed: int = 0

    @property
    def n_runs(self) -> int:
        return len(self.design)

    @property
    def n_chunks(self) -> int:
        return math.ceil(self.n_runs / self.chunk_size)

    def bounds(self, k: int) -> tuple[int, int]:
        return k * self.chunk_size, min((k + 1) * self.chunk_size, self.n_runs)

    def settings(self) -> dict:
        """What, besides the design, makes two sweeps the same sweep."""
        o = self.options
        return {
            "model_sha256": self.model.sha256,
            "method": o.method,
            "rtol": o.rtol,
            "atol": o.atol,
            "max_step": o.max_step,
            "final_time": o.final_time,
            "time_step": o.time_step,
            "saveper": o.saveper,
            "return_timestamps": _plain(o.return_timestamps),
            "breakpoints": list(o.breakpoints),
            "base": _describe_params(self.base),
            "outputs": self.output_columns,
            "metrics": [n for n, _ in self.metrics],
            "times": len(self.times),
            "chunk_size": self.chunk_size,
        }


def _plan(
    target,
    design,
    *,
    outputs,
    metrics,
    executor,
    scheduler,
    store,
    chunk_size,
    method,
    workers,
    vectorize,
    simulate_options,
) -> _Plan:
    if executor not in EXECUTORS:
        raise ParameterError(f"unknown executor {executor!r}; valid: {', '.join(EXECUTORS)}")
    unknown = [k for k in simulate_options if k not in SIMULATE_OPTIONS]
    if unknown:
        raise ParameterError(
            unknown_name_message(
                "sweep option", unknown[0], (*SIMULATE_OPTIONS, "outputs", "metrics")
            )
        )
    method = check_method(method)
    rtol = simulate_options.get("rtol", DEFAULT_RTOL)
    atol = simulate_options.get("atol", DEFAULT_ATOL)
    for name, value in (("rtol", rtol), ("atol", atol)):
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise MethodError(f"{name} must be a positive finite number, not {value!r}")
    max_step = simulate_options.get("max_step")
    if max_step is not None and not max_step > 0:
        raise MethodError(f"max_step must be positive, not {max_step!r}")
    range_check = simulate_options.get("range_check", "error")
    if workers is not None and (not isinstance(workers, int) or workers < 1):
        raise ParameterError(f"workers must be a positive int, not {workers!r}")
    if scheduler is not None:
        if executor != "dask":
            raise ParameterError("scheduler= is for executor='dask'")
        if not isinstance(scheduler, str) and type(scheduler).__name__ != "Client":
            raise ParameterError(
                "scheduler must be an address 'tcp://host:port' or a "
                f"dask.distributed.Client, not {type(scheduler).__name__}"
            )
    if chunk_size is not None and (
        isinstance(chunk_size, bool)
        or not isinstance(chunk_size, (int, np.integer))
        or chunk_size < 1
    ):
        raise ParameterError(f"chunk_size must be a positive int, not {chunk_size!r}")

    model, base, breaks, scenario = _resolve_target(target, range_check)
    if not isinstance(design, designs_mod.Design):
        if isinstance(design, (pd.DataFrame, Mapping)):
            design = designs_mod.from_table(design)
        else:
            raise ParameterError(
                "design must be a flywheel_sd.designs.Design, a DataFrame "
                f"or a mapping of name -> values, not {type(design).__name__}"
            )
    design = design.bind(model, range_check)
    base = {k: v for k, v in base.items() if model.real_name(k) not in design.names}

    out_vars = _resolve_outputs(model, outputs, metrics is None)
    out_vars = [v for v in out_vars if v not in design.names]
    metric_list = _resolve_metrics(metrics)
    ts = simulate_options.get("return_timestamps")
    if ts is not None and not np.isscalar(ts):
        ts = tuple(float(t) for t in ts)
    user_breaks = [float(t) for t in (simulate_options.get("breakpoints") or ())]
    for t in user_breaks:
        if not math.isfinite(t):
            raise MethodError(f"breakpoint {t!r} is not finite")
    knots = [float(t) for v in base.values() if isinstance(v, pd.Series) for t in v.index]
    options = RunOptions(
        method=method,
        rtol=float(rtol),
        atol=float(atol),
        max_step=max_step,
        final_time=simulate_options.get("final_time"),
        time_step=simulate_options.get("time_step"),
        saveper=simulate_options.get("saveper"),
        return_timestamps=ts,
        breakpoints=tuple(sorted(set(user_breaks + breaks + knots))),
    )
    times = expected_times(model, options)
    needs = _metric_needs(model, metric_list, times) if metric_list else []
    variables = list(dict.fromkeys(out_vars + needs))
    output_columns = column_names(model, out_vars)
    clash = {n for n, _ in metric_list} & (set(output_columns) | set(design.names))
    if clash:
        raise ParameterError(
            f"metric name {min(clash)!r} is also a variable or "
            "parameter name; name the metric differently"
        )
    n_workers = workers or os.cpu_count() or 1
    chunk = (
        int(chunk_size)
        if chunk_size
        else _default_chunk(
            len(design),
            len(column_names(model, variables)) or 1,
            len(times),
            1 if executor == "ensemble" else n_workers,
        )
    )
    if not chunk_size and store is not None:  # resuming: keep the chunks the store has
        meta = Path(store).expanduser() / "sweep.json"
        if meta.is_file():
            with contextlib.suppress(KeyError, TypeError, ValueError, json.JSONDecodeError):
                chunk = int(json.loads(meta.read_text())["settings"]["chunk_size"])
    return _Plan(
        model=model,
        base=base,
        scenario=scenario,
        design=design,
        options=options,
        range_check=range_check,
        outputs=out_vars,
        output_columns=output_columns,
        metrics=metric_list,
        variables=variables,
        times=times,
        executor=executor,
        scheduler=scheduler,
        workers=n_workers,
        chunk_size=chunk,
        vectorize=vectorize,
        store=Path(store).expanduser().resolve() if store is not None else None,
        seed=design.seed or 0,
    )


def _default_chunk(n_runs: int, n_columns: int, n_times: int, n_workers: int) -> int:
    by_memory = max(CHUNK_FLOATS // max(n_columns * n_times, 1), 1)
    chunk = min(by_memory, MAX_CHUNK, n_runs)
    if n_workers > 1:  # at least one chunk per worker: big chunks amortise each chunk's
        # fixed cost (loading the model, checking members against single runs)
        chunk = min(chunk, max(math.ceil(n_runs / n_workers), 1))
    return max(chunk, 1)


def _resolve_target(target, range_check: str):
    """(model, base params, breakpoints, scenario name) of a Model, path or scenario.

    Extension point: a scenario is anything with ``.name``, ``.params`` and a way to load
    its model (``load_model()`` or a ``.model`` path); `flywheel_sd.scenarios.get`
    resolves names.
    """
    if isinstance(target, Model):
        return target, {}, [], None
    if isinstance(target, (str, os.PathLike)):
        path = Path(target)
        if path.suffix.lower() in (".mdl", ".py", ".xmile", ".stmx") or (
            path.is_file() and path.suffix.lower() != ".toml"
        ):
            return load(path), {}, [], None
        try:
            from .. import scenarios
        except ImportError as err:  # pragma: no cover - scenarios are part of the package
            raise ParameterError(f"{target!r} is not a model file") from err
        target = scenarios.get(target if path.suffix.lower() != ".toml" else path)
    if hasattr(target, "params") and (hasattr(target, "load_model") or hasattr(target, "model")):
        model = target.load_model() if hasattr(target, "load_model") else load(target.model)
        t = model.time_settings()
        if hasattr(target, "inputs"):
            base, breaks = target.inputs(model, t["initial_time"], t["final_time"])
        else:
            base, breaks = dict(target.params), []
        base = model.check_params(base, range_check)
        return model, base, list(breaks), getattr(target, "name", None)
    raise ParameterError(
        f"expected a Model, a model file or a scenario, not {type(target).__name__}"
    )


def _resolve_outputs(model: Model, outputs, default_stocks: bool) -> list[str]:
    if outputs is None:
        return list(model.stocks) if default_stocks else []
    if isinstance(outputs, str):
        outputs = [outputs]
    out = []
    for name in outputs:
        real = model.real_name(str(name).split("[")[0].strip())
        if real not in out:
            out.append(real)
    return out


def _resolve_metrics(metrics) -> list[tuple[str, Any]]:
    if metrics is None:
        return []
    from .. import metrics as registry

    items: list[tuple[str | None, Any]]  # (name given, registered name or function)
    if isinstance(metrics, Mapping):
        items = [(str(k), v) for k, v in metrics.items()]
    elif isinstance(metrics, (str,)) or callable(metrics):
        items = [(None, metrics)]
    else:
        items = [(None, m) for m in metrics]
    out = []
    for name, m in items:
        if isinstance(m, str):
            registry.get(m)  # unknown name: close matches
            out.append((name or m, m))
        elif callable(m):
            label = name or getattr(m, "name", None) or getattr(m, "__name__", None)
            if not label or label == "<lambda>":
                raise ParameterError("name your metric functions: pass metrics={'name': f}")
            out.append((label, m))
        else:
            raise ParameterError(f"a metric is a registered name or a function, not {m!r}")
    names = [n for n, _ in out]
    if len(set(names)) != len(names):
        raise ParameterError(f"metric names repeat: {names}")
    return out


def _metric_function(m) -> Callable[[xr.Dataset], Any]:
    if isinstance(m, str):
        from .. import metrics as registry

        return registry.get(m)
    return m


class _Tracking:
    """A Dataset stand-in that notes which variables a metric reads."""

    def __init__(self, ds: xr.Dataset):
        self._ds = ds
        self.used: set[str] = set()

    def __getitem__(self, key):
        self.used.add(key)
        return self._ds[key]

    def __contains__(self, key):
        return key in self._ds

    def __iter__(self):
        return iter(self._ds)

    def __getattr__(self, name):
        if name in self._ds.data_vars:
            self.used.add(name)
        return getattr(self._ds, name)


def _metric_needs(model: Model, metric_list, times) -> list[str]:
    """The variables the metrics read, found by evaluating them on a stand-in Dataset."""
    pm = model.pysd_model()
    candidates = [v for v in pm._default_return_columns(None) if v in model.namespace]
    columns = column_names(model, candidates)
    t = np.asarray(times[:3] if len(times) >= 3 else times, dtype=float)
    probe = xr.Dataset(
        {c: (("run", "time"), np.ones((2, len(t)))) for c in columns},
        coords={"run": [0, 1], "time": t},
    )
    owner = {}
    for v in candidates:
        for c in column_names(model, [v]):
            owner[c] = v
    needs: list[str] = []
    for name, m in metric_list:
        tracker = _Tracking(probe)
        try:
            with warnings.catch_warnings(), np.errstate(all="ignore"):
                warnings.simplefilter("ignore")
                _metric_function(m)(cast(xr.Dataset, tracker))  # a Dataset stand-in
        except KeyError as err:
            key = err.args[0] if err.args else "?"
            if key not in probe:
                raise ParameterError(
                    f"metric {name!r} needs variable {key!r}, which {model.path.name} lacks"
                ) from None
        except Exception:  # noqa: BLE001, S110 - the stand-in data may upset a metric;
            pass  # what it read before failing is what we need
        used = [owner[k] for k in tracker.used if k in owner]
        if not tracker.used:
            used = candidates  # nothing seen: record everything (safe, if slower)
        needs.extend(u for u in used if u not in needs)
    return needs


# -- computing one chunk (in this process or a worker) --------------------------------------
@dataclass
class _Task:
    index: int
    start: int
    model: Model | str
    base: dict
    names: list[str]
    values: np.ndarray
    options: RunOptions
    variables: list[str]
    times: np.ndarray
    output_columns: list[str]
    metrics: list[tuple[str, Any]]
    vectorize: bool
    seed: int


@dataclass
class _ChunkOut:
    index: int
    start: int
    columns: dict[str, np.ndarray]
    metrics: dict[str, np.ndarray]
    status: np.ndarray
    errors: dict[int, str]
    stats: dict = field(default_factory=dict)


_MODELS: dict[str, Model] = {}


def _worker_model(model: Model | str) -> Model:
    if isinstance(model, Model):
        return model
    if model not in _MODELS:
        _MODELS[model] = load(model)
    return _MODELS[model]


def compute_chunk(task: _Task) -> _ChunkOut:
    """Integrate one chunk and reduce it to its outputs and metrics (runs in workers)."""
    model = _worker_model(task.model)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = run_chunk(
            model,
            task.base,
            task.names,
            task.values,
            task.options,
            task.variables,
            task.times,
            vectorize=task.vectorize,
        )
        values = _evaluate_metrics(result, task)
    stats = dict(result.stats)
    messages = list(dict.fromkeys(f"{w.category.__name__}: {w.message}" for w in caught))
    if messages:
        stats["warnings"] = messages[:5]
    columns = {c: result.columns[c] for c in task.output_columns}
    out = _ChunkOut(task.index, task.start, columns, values, result.status, result.errors, stats)
    on_pysd = result.stats.get("mode") != "compiled"
    del result
    if on_pysd and len(task.values) >= 1000:
        # PySD models are reference cycles holding the chunk's large arrays; collect them
        # now rather than at some later full collection (keeps memory flat over chunks).
        # Compiled chunks build no cycles: a full collection there costs 0.1 s for nothing.
        gc.collect()
    return out


def _evaluate_metrics(result: ChunkResult, task: _Task) -> dict[str, np.ndarray]:
    if not task.metrics:
        return {}
    n = len(result.status)
    ds = xr.Dataset(
        {c: (("run", "time"), a) for c, a in result.columns.items()},
        coords={"run": np.arange(task.start, task.start + n), "time": result.times},
    )
    out = {}
    for name, m in task.metrics:
        try:
            with np.errstate(all="ignore"):
                value = _metric_function(m)(ds)
        except KeyError as err:
            raise ParameterError(
                f"metric {name!r} needs variable {err.args[0]!r}; pass it in outputs="
            ) from err
        value = value if isinstance(value, xr.DataArray) else xr.DataArray(value)
        if "time" in value.dims:
            raise ParameterError(
                f"metric {name!r} does not reduce over time (it returns dims {value.dims})"
            )
        extra = [d for d in value.dims if d != "run"]
        if extra:
            raise ParameterError(f"metric {name!r} returns extra dims {extra}; reduce them")
        arr = np.broadcast_to(np.asarray(value.values, dtype=float), (n,)).copy()
        arr[result.status != STATUS_OK] = np.nan
        out[name] = arr
    return out


# -- running chunks -------------------------------------------------------------------------
class _Runner:
    def __init__(self, plan: _Plan, writer, progress: bool, callback):
        self.plan = plan
        self.writer = writer
        self.callback = callback
        self.vectorize = plan.vectorize
        self.fallback: str | None = None
        self.stats: dict[str, Any] = {
            "ensemble_chunks": 0,
            "per_run_chunks": 0,
            "nfev": 0,
            "isolated_runs": 0,
            "warnings": [],
        }
        done_runs = sum(b - a for a, b in map(plan.bounds, writer.done))
        self.done_runs = done_runs
        self.bar = _progress_bar(plan.n_runs, done_runs, progress)
        self.model_ref: Model | str = plan.model

    def task(self, k: int) -> _Task:
        plan = self.plan
        a, b = plan.bounds(k)
        return _Task(
            index=k,
            start=a,
            model=self.model_ref,
            base=plan.base,
            names=plan.design.names,
            values=plan.design.values[a:b],
            options=plan.options,
            variables=plan.variables,
            times=plan.times,
            output_columns=plan.output_columns,
            metrics=plan.metrics,
            vectorize=self.vectorize,
            seed=plan.seed,
        )

    def handle(self, out: _ChunkOut) -> None:
        stats = out.stats
        if stats.get("fallback") and self.fallback is None:
            self.fallback = stats["fallback"]
            self.vectorize = False
            fallback_notice(self.fallback)
        if stats.get("mode") == "per-run":
            self.stats["per_run_chunks"] += 1
        else:
            self.stats["ensemble_chunks"] += 1
        self.stats["nfev"] += int(stats.get("nfev") or 0)
        self.stats["isolated_runs"] += int(stats.get("isolated") or 0)
        for w in stats.get("warnings", []):
            if w not in self.stats["warnings"] and len(self.stats["warnings"]) < 10:
                self.stats["warnings"].append(w)
        self.writer.write(out)
        n = len(out.status)
        self.done_runs += n
        if self.bar is not None:
            self.bar.update(n)
        if self.callback is not None:
            self.callback(out.index, self.done_runs, self.plan.n_runs)

    def summary(self) -> dict:
        out = dict(self.stats)
        out["fallback"] = self.fallback or ""
        return out

    def run(self, todo: list[int]) -> None:
        try:
            if not todo:
                return
            if self.plan.executor == "ensemble":
                for k in todo:
                    self.handle(compute_chunk(self.task(k)))
            elif self.plan.executor == "processes":
                self._run_processes(todo)
            else:
                self._run_dask(todo)
        finally:
            if self.bar is not None:
                self.bar.close()

    def _run_processes(self, todo: list[int]) -> None:
        self.model_ref = str(self.plan.model.path)
        for _, m in self.plan.metrics:
            _check_picklable(m)
        context = multiprocessing.get_context("spawn")
        queue = list(todo)
        pool = ProcessPoolExecutor(max_workers=self.plan.workers, mp_context=context)
        running: dict = {}
        try:
            while queue or running:
                while queue and len(running) < 2 * self.plan.workers:
                    k = queue.pop(0)
                    running[pool.submit(compute_chunk, self.task(k))] = k
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    running.pop(future)
                    self.handle(future.result())
        except BrokenProcessPool as err:
            pool.shutdown(wait=False, cancel_futures=True)
            raise SweepError(self._died("a worker process died")) from err
        except BaseException:  # Ctrl-C included: do not wait for chunks in flight
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown(wait=True)

    def _run_dask(self, todo: list[int]) -> None:
        try:
            from dask.distributed import Client, LocalCluster, as_completed
        except ImportError as err:  # pragma: no cover - dask is a dependency
            raise SweepError("executor='dask' needs dask.distributed") from err
        self.model_ref = str(self.plan.model.path)
        scheduler = self.plan.scheduler
        cluster = None
        if isinstance(scheduler, Client):
            client, own = scheduler, False
        elif scheduler is None:
            cluster = LocalCluster(
                n_workers=self.plan.workers,
                threads_per_worker=1,
                processes=True,
                dashboard_address=None,
            )
            client, own = Client(cluster), True
        else:
            client, own = Client(scheduler), True
        queue = list(todo)
        futures = []
        try:
            try:
                info = client.scheduler_info(n_workers=-1)
            except TypeError:  # older distributed
                info = client.scheduler_info()
            window = 2 * max(len(info.get("workers", {})), 1)
            first = [
                client.submit(compute_chunk, self.task(queue.pop(0)), pure=False)
                for _ in range(min(window, len(queue)))
            ]
            futures.extend(first)
            pending = as_completed(first)
            for future in pending:
                out = future.result()
                future.release()
                self.handle(out)
                if queue:
                    nxt = client.submit(compute_chunk, self.task(queue.pop(0)), pure=False)
                    futures.append(nxt)
                    pending.add(nxt)
        except BaseException:
            for f in futures:
                f.cancel()
            raise
        finally:
            if own:
                client.close()
            if cluster is not None:
                cluster.close()

    def _died(self, what: str) -> str:
        if self.plan.store is not None:
            return (
                f"{what}; the finished chunks are saved in {self.plan.store}: run the "
                "same sweep again to resume"
            )
        return f"{what}; pass store= to make a sweep resumable"


def _check_picklable(m) -> None:
    import pickle

    if isinstance(m, str):
        return
    try:
        pickle.dumps(m)
    except Exception as err:
        raise ParameterError(
            f"metric {getattr(m, '__name__', m)!r} cannot be sent to worker processes "
            "(define it at module level, register it in flywheel_sd.metrics, or use "
            "executor='dask', which pickles closures)"
        ) from err


def _progress_bar(total: int, initial: int, progress: bool):
    if not progress or not sys.stderr.isatty():
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, unit="run", desc="sweep", smoothing=0.1)


__all__ = ["EXECUTORS", "SweepError", "compute_chunk", "sweep"]

# below _Plan and _ChunkOut, which the writers name
from .store import (  # noqa: E402 - store imports _Plan and _ChunkOut from this module
    _describe_params,
    _MemoryWriter,
    _open_store,
    _plain,
)
