"""``flywheel sweep`` and ``flywheel sensitivity``: many runs from a sampling design."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

from ._common import (
    EXIT_OK,
    SweepFailed,
    UsageError,
    check_plot,
    check_suffix,
    check_writable,
    print_json,
    print_table,
    print_wrote,
    records,
    scenario_for,
    simulate_options,
)
from ._files import write_netcdf

# Default sample sizes: per design kind (grid: levels per parameter).
_DEFAULT_N = {"grid": 5, "lhs": 64, "sobol": 64, "saltelli": 64, "morris": 10}


def cmd_sweep(args) -> int:
    """Sample a design, run it, store the results."""
    from .. import sweep

    folder, export, finished = _store(args)
    sc = _target(args)
    model = sc.load_model()
    levels = {p.name: p.levels for p in args.param if p.levels}
    if levels and args.design != "grid":
        raise UsageError(f"NAME=LOW:HIGH:N sets grid levels; --design {args.design} takes --n")
    design = _sample(args.design, args, model, levels)
    options = simulate_options(args)
    options.pop("params", None)  # --set is in the scenario
    if finished is not None:  # finished earlier: nothing left to run
        try:
            stored = json.loads(finished.attrs.get("design", "{}")).get("fingerprint")
        except (TypeError, ValueError):
            stored = None
        if stored != design.fingerprint():
            raise UsageError(f"{export} holds a different sweep; choose another path")
        return _report(args, finished, export, resumed=True)
    ds = sweep(
        sc,
        design,
        outputs=args.outputs,
        metrics=args.metrics,
        store=folder,
        chunk_size=args.chunk_size,
        progress=not (args.quiet or args.json),
        resume=args.resume,
        **_executor(args),
        **options,
    )
    if export is not None:
        assert folder is not None  # an export is written from its .parts folder
        write_netcdf(ds.load(), export)
        shutil.rmtree(folder, ignore_errors=True)
    return _report(args, ds, export or folder)


def _target(args):
    """The scenario a sweep or sensitivity runs around, with every --set in it."""
    sc = scenario_for(args, args.scenario)
    settings = dict(args.set or ())
    if settings:
        sc = dataclasses.replace(sc, params={**sc.params, **settings}, source=None)
        sc.validate()
    return sc


def _sample(kind: str, args, model, levels: dict[str, int] | None = None):
    """The design of kind `kind` over the --param ranges (None: the documented range)."""
    from .. import designs

    params = {p.name: (p.low, p.high) if p.low is not None else None for p in args.param}
    n = args.n or _DEFAULT_N[kind]
    if kind == "grid":
        return designs.grid(
            params, {name: (levels or {}).get(name, n) for name in params}, model=model
        )
    return getattr(designs, kind)(params, n, seed=args.seed, model=model)


def _executor(args) -> dict[str, Any]:
    executor = args.executor
    if args.scheduler is not None:
        if executor not in (None, "dask"):
            raise UsageError(f"--scheduler needs --executor dask, not {executor}")
        executor = "dask"
    out: dict[str, Any] = {"executor": executor or "ensemble"}
    if args.scheduler is not None:
        out["scheduler"] = args.scheduler
    if args.workers is not None:
        out["workers"] = args.workers
    return out


def _store(args) -> tuple[Path | None, Path | None, Any]:
    """(the folder the sweep writes chunk by chunk, the .nc file to export at the end, the
    sweep that .nc file already holds), all checked before any run: the path can be
    written, and a store to resume is a flywheel_sd sweep store, not damaged."""
    from ..sweeps.store import check_resumable, read_finished

    if args.store is None:
        return None, None, None
    zarr = Path(args.store).suffix.lower() == ".zarr"
    store = check_suffix(args.store, (".nc", ".zarr"), "--store", folder=zarr)
    assert store is not None  # args.store is not None
    if zarr:
        if args.resume:
            check_resumable(store)
        return store, None, None
    if store.exists() and not args.resume:
        raise UsageError(f"{store} exists; pass --resume to keep it, or choose another path")
    parts = store.with_name(store.name + ".parts")
    check_writable(parts, "--store", folder=True)
    if args.resume:
        check_resumable(parts)
    finished = None
    if store.exists():  # --resume: a finished sweep, or one whose export was cut short
        finished = read_finished(store)  # refuses a file that is not such a sweep
        if parts.exists():
            finished = None  # the chunks are there: finish the sweep and write it again
    return parts, store, finished


def _report(args, ds, store: Path | None, resumed: bool = False) -> int:
    import numpy as np
    import pandas as pd

    status = np.asarray(ds["status"].values)
    ok = status == 1
    n, n_ok = int(status.size), int(ok.sum())
    errors = np.asarray(ds["error"].values) if "error" in ds else np.array([""] * n)
    failures = [{"run": int(i), "error": str(errors[i])} for i in np.flatnonzero(~ok)]
    metric_names = [m for m in (args.metrics or []) if m in ds]
    if metric_names:
        columns = {m: np.asarray(ds[m].values, dtype=float)[ok] for m in metric_names}
        what = "the metrics"
    else:
        columns = {
            str(v): np.asarray(ds[v].isel(time=-1).values, dtype=float)[ok]
            for v in ds.data_vars
            if "time" in ds[v].dims
        }
        what = f"the final values (t = {float(ds['time'][-1]):g})" if "time" in ds.dims else ""
    rows = []
    for name, values in columns.items():
        values = values[np.isfinite(values)]
        if values.size:
            q = np.percentile(values, [0, 5, 50, 95, 100])
            rows.append(
                {
                    "variable": name,
                    "min": q[0],
                    "p5": q[1],
                    "median": q[2],
                    "p95": q[3],
                    "max": q[4],
                }
            )
    table = pd.DataFrame(rows, columns=["variable", "min", "p5", "median", "p95", "max"])
    table = table.set_index("variable")
    head = {
        "model": ds.attrs.get("model", ""),
        "summary_of": what,
        "scenario": ds.attrs.get("scenario", ""),
        "design": ds.attrs.get("design_kind", ""),
        "runs": n,
        "ok": n_ok,
        "failed": n - n_ok,
        "method": ds.attrs.get("method", ""),
        "executor": ds.attrs.get("executor", ""),
        "store": str(store) if store is not None else None,
    }
    if args.json:
        print_json({**head, "summary": records(table), "failures": failures})
    else:
        print(
            f"sweep of {Path(head['model']).name} ({head['scenario'] or 'own parameters'}): "
            f"{n} runs ({head['design']}), {n_ok} ok, {n - n_ok} failed; method "
            f"{head['method']}, executor {head['executor']}"
            + (" (already complete)" if resumed else "")
        )
        for failure in failures[:5]:
            print(f"  run {failure['run']} failed: {failure['error']}")
        if len(failures) > 5:
            print(f"  ... and {len(failures) - 5} more (see the 'error' variable)")
        if n_ok and what:
            print_table(table, f"{what}, over the runs that succeeded:")
        if store is not None:
            print(f"wrote {store}")
    if n and not n_ok:
        raise SweepFailed(f"every run failed; the first: {failures[0]['error']}")
    return EXIT_OK


def cmd_sensitivity(args) -> int:
    """Sobol or Morris indices of one metric, from a Saltelli or Morris sweep."""
    import numpy as np

    from .. import metrics, sweep
    from .. import sensitivity as analyse

    metric = metrics.get(args.metric).name  # an unknown metric fails before any run
    plot = check_plot(args.plot)
    if any(p.levels for p in args.param):
        raise UsageError("NAME=LOW:HIGH:N sets grid levels; sensitivity takes --n")
    sc = _target(args)
    model = sc.load_model()
    design = _sample("saltelli" if args.analysis == "sobol" else "morris", args, model)
    options = simulate_options(args)
    options.pop("params", None)  # --set is in the scenario
    ds = sweep(
        sc,
        design,
        metrics=[metric],
        progress=not (args.quiet or args.json),
        **_executor(args),
        **options,
    )
    status = np.asarray(ds["status"].values)
    if (status != 1).any():
        first = str(np.asarray(ds["error"].values)[np.flatnonzero(status != 1)[0]])
        raise SweepFailed(
            f"{int((status != 1).sum())} of {status.size} runs failed, and "
            f"{args.analysis} needs every run; the first: {first}"
        )
    table = analyse(ds, metric, method=args.analysis, seed=args.seed)
    table = table.sort_values("ST" if args.analysis == "sobol" else "mu_star", ascending=False)
    wrote = []
    if plot is not None:
        _plot_indices(table, args.analysis, metric, plot)
        wrote.append(plot)
    head = {
        "model": str(model.path),
        "scenario": sc.name,
        "metric": metric,
        "method": args.analysis,
        "runs": int(status.size),
    }
    if args.json:
        print_json({**head, "indices": records(table), "wrote": [str(w) for w in wrote]})
        return EXIT_OK
    what = (
        "Sobol indices (S1 first order, ST total; _conf: half-width of the "
        f"{table.attrs.get('conf_level', 0.95):.0%} interval)"
        if args.analysis == "sobol"
        else "Morris elementary effects (mu_star: mean absolute effect)"
    )
    print_table(table, f"{what} of {metric} on {model.path.name} ({sc.name}), {status.size} runs:")
    print_wrote(wrote)
    return EXIT_OK


def _plot_indices(table, method: str, metric: str, path: Path):
    """The chart of `flywheel sensitivity --plot` (``sensitivity.indices_chart``)."""
    from ..sweeps.sensitivity import indices_chart

    table.attrs.setdefault("metric", metric)
    table.attrs.setdefault("method", method)
    return indices_chart(table, path)
