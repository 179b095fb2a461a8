"""Benchmark: parameter sweeps on the compiled engine, against the alternatives.

Prints issue #10's sweep figures, each a ratio of two timings measured side by side in this
one run (warm-up first, then the two sides interleaved, medians of the repetitions), for the
project's first model (``benchmarks/platform_flywheel_v1.mdl``, which the floor mirrors) and
the SIR sample (``$FLYWHEEL_TEST_MODELS/samples/SIR/SIR.mdl``, read in place):

1. a 10,000-run Euler sweep keeping metrics only, against the hand-written NumPy floor on
   the same design rows (``benchmarks/flywheel_numpy.py`` for the project's model, whose
   Euler run is PySD's Euler bit for bit, ``tests/test_numpy_floor.py``; `sir_floor` below
   for SIR), the floor's series reduced by the same metric functions -- goal <= 0.5x;
2. the 10,000-run RK45 sweep (rtol = atol = 1e-6, the default) against the Euler one --
   goal <= 2x;
3. the same at 1,000 runs, and the sweep against looping PySD's own ``run()``
   (``simulate(engine="pysd", method="euler")`` on a few rows, scaled: a run of the
   project's model takes PySD about 20 s);
4. with ``--million``, a 1,000,000-run metrics-only sweep (the sweep's default method,
   RK45) written to a Zarr store in a temporary folder, in a fresh process so that its
   peak resident memory is its own -- goals: under 15 minutes, under 1 GB. It runs the
   project's model when the 10,000-run rate measured here says it fits in 15 minutes, else
   SIR (and prints the project model's extrapolation).

The first use of a model's compiled members in a process loads (or, with an empty Numba
cache, compiles) them; that cost is measured in the warm-up, printed, and kept out of the
ratios. ``--cold-cache`` points ``FLYWHEEL_SD_CACHE`` at an empty temporary folder, so the
warm-up measures translation and Numba's first compile from nothing.

Usage::

    python benchmarks/bench_sweep.py                       # both models, 1,000 and 10,000
    python benchmarks/bench_sweep.py --models sir --repeats 5
    python benchmarks/bench_sweep.py --million             # adds the 1,000,000-run sweep
    python benchmarks/bench_sweep.py --models none --million --million-model sir
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
SUITE = Path(os.environ.get("FLYWHEEL_TEST_MODELS", REPO.parent / "shared" / "test-models"))
SIR = SUITE / "samples" / "SIR" / "SIR.mdl"
# The NumPy floor is written from the v1 model, so the side-by-side runs use that file.
FLYWHEEL = REPO / "benchmarks" / "platform_flywheel_v1.mdl"

WARMUP_RUNS = 200  # the sweep's Numba threshold: the warm-up runs on the compiled members
MILLION_LIMIT_S = 15 * 60
MILLION_LIMIT_MB = 1024


def _peak_infectious(ds):
    return ds["Infectious"].max("time")


def _final_recovered(ds):
    return ds["Recovered"].isel(time=-1)


SETUPS = {
    "flywheel": {
        "path": FLYWHEEL,
        "params": {
            "Take Rate": (0.05, 0.3),
            "Seller Deposit": (0.0, 3000.0),
            "Ad Budget": (0.0, 2e6),
        },
        "metrics": ["cumulative_gmv", "final_active_buyers"],
        "series": ["GMV", "Active Buyers"],  # what the metrics read
        "options": {},
        "pysd_runs": 3,
    },
    "sir": {
        "path": SIR,
        "params": {"Contact Infectivity": (0.2, 0.5), "Duration": (3.0, 8.0)},
        "metrics": {"peak_infectious": _peak_infectious, "final_recovered": _final_recovered},
        "series": ["Infectious", "Recovered"],
        "options": {"saveper": 1.0},
        "pysd_runs": 20,
    },
}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb(field: str = "VmRSS") -> float:
    """/proc/self/status's VmRSS (now) or VmHWM (the peak of this process image; unlike
    ru_maxrss, which Linux carries over from the parent across fork and exec)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def timed(func, *args, **kwargs):
    gc.collect()
    start = time.perf_counter()
    out = func(*args, **kwargs)
    return time.perf_counter() - start, out


def median(xs) -> float:
    return statistics.median(xs)


def spread(xs) -> str:
    return f"{median(xs):.3f} s (min {min(xs):.3f}, max {max(xs):.3f}, n={len(xs)})"


# -- the floors -----------------------------------------------------------------------------
_FLOOR = None


def flywheel_floor_module():
    global _FLOOR
    if _FLOOR is None:
        spec = importlib.util.spec_from_file_location(
            "flywheel_numpy", Path(__file__).with_name("flywheel_numpy.py")
        )
        _FLOOR = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(_FLOOR)
    return _FLOOR


def sir_floor(table, t_end=100.0, dt=0.03125, saveper=1.0):
    """Hand-written SIR, Euler at TIME STEP for all rows at once: (saved times, {series:
    (N, T)})."""
    c = table["Contact Infectivity"].to_numpy()
    d = table["Duration"].to_numpy()
    pop = 1000.0
    s, i, r = np.full(len(c), pop), np.full(len(c), 5.0), np.zeros(len(c))
    every = round(saveper / dt)
    inf, rec = [i.copy()], [r.copy()]
    for k in range(round(t_end / dt)):
        succumbing = s * i / pop * c
        recovering = i / d
        s, i, r = s - dt * succumbing, i + dt * (succumbing - recovering), r + dt * recovering
        if (k + 1) % every == 0:
            inf.append(i.copy())
            rec.append(r.copy())
    times = np.arange(len(inf)) * saveper
    return times, {"Infectious": np.stack(inf, axis=1), "Recovered": np.stack(rec, axis=1)}


def floor_metrics(key, table, metrics):
    """The floor's Euler run of every row, reduced by the sweep's own metric functions."""
    import xarray as xr

    from flywheel_sd import metrics as registry

    if key == "flywheel":
        floor = flywheel_floor_module()
        params = {name: table[name].to_numpy() for name in table.columns}
        times, series = floor.euler(params, SETUPS[key]["series"])
    else:
        times, series = sir_floor(table)
    ds = xr.Dataset(
        {name: (("run", "time"), a) for name, a in series.items()},
        coords={"run": np.arange(len(table)), "time": times},
    )
    items = metrics.items() if isinstance(metrics, dict) else [(m, m) for m in metrics]
    return {
        name: np.asarray((registry.get(f) if isinstance(f, str) else f)(ds).values)
        for name, f in items
    }


# -- one model ------------------------------------------------------------------------------
def run_sweep(fw, model, design, setup, method, **extra):
    ds = fw.sweep(
        model,
        design,
        metrics=setup["metrics"],
        method=method,
        progress=False,
        **setup["options"],
        **extra,
    )
    n = len(design.table)
    ok = int((ds["status"] == 1).sum())
    if ok != n:
        raise RuntimeError(f"{n - ok} runs failed in the benchmark: {ds.attrs}")
    if ds.attrs.get("fallback"):
        raise RuntimeError(f"the sweep fell back to per-run integration: {ds.attrs['fallback']}")
    return ds


def pysd_loop(fw, model, table, setup):
    """Seconds per run of PySD's own run() (Euler), on the first rows of the design."""
    k = setup["pysd_runs"]
    times = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _, row in table.iloc[:k].iterrows():
            t, _ = timed(
                fw.simulate,
                model,
                {n: float(v) for n, v in row.items()},
                engine="pysd",
                method="euler",
                return_columns=setup["series"],
                **setup["options"],
            )
            times.append(t)
    return times


def bench_model(key, runs, repeats, skip_pysd):
    import flywheel_sd as fw

    setup = SETUPS[key]
    if not setup["path"].is_file():
        print(f"\n{setup['path']} is not there: skipping {key}")
        return None
    t_load, model = timed(fw.load, setup["path"])
    cm = model.compiled({})
    warm_before = cm.numba_is_warm()
    name = setup["path"].name
    print(
        f"\n=== {name}: {len(model.stocks)} stocks ({cm.program.n_states} state elements, "
        f"{len(cm.program.columns)} variables); design: LHS (seed 42) over "
        f"{', '.join(setup['params'])}; metrics {', '.join(list(setup['metrics']))} only "
        f"===",
        flush=True,
    )
    print(
        f"load {t_load:.2f} s; Numba cache of this model warm before the run: "
        f"{'yes' if warm_before else 'no'}"
    )
    big = fw.designs.lhs(setup["params"], max(runs), seed=42)
    table = big.table

    # warm-up: the first sweep per method loads/compiles the members (excluded from ratios)
    warm = fw.designs.from_table(table.iloc[:WARMUP_RUNS])
    warmup = {}
    for method in ("euler", "RK45"):
        first, _ = timed(run_sweep, fw, model, warm, setup, method)
        second, _ = timed(run_sweep, fw, model, warm, setup, method)
        warmup[method] = (first, second)
        print(
            f"warm-up {method:>5}: first {WARMUP_RUNS}-run sweep {first:6.2f} s, second "
            f"{second:.2f} s -> first use of the compiled members {first - second:.2f} s",
            flush=True,
        )
    timed(floor_metrics, key, table.iloc[:WARMUP_RUNS], setup["metrics"])
    collect = []
    for _ in range(3):
        dt, _ = timed(gc.collect)
        collect.append(dt)
    print(
        f"a full gc.collect() here takes {median(collect):.3f} s (the sweep runs one after "
        f"every chunk of >= 1,000 runs: flywheel_sd/sweeps/sweep.py compute_chunk)",
        flush=True,
    )

    per_run = None
    if not skip_pysd:
        loop = pysd_loop(fw, model, table, setup)
        per_run = median(loop)
        print(
            f"PySD run() (simulate engine='pysd', Euler): {per_run:.3f} s per run (median "
            f"of {len(loop)}: {', '.join(f'{t:.2f}' for t in loop)})",
            flush=True,
        )

    results = {"model": name, "key": key, "warmup": warmup, "pysd_per_run": per_run, "sizes": {}}
    for n in runs:
        design = fw.designs.from_table(table.iloc[:n])
        reps = repeats if n >= 5000 else max(repeats, 5)
        t = {"euler": [], "RK45": [], "floor": []}
        check = None
        for _ in range(reps):  # interleaved: sweep Euler, floor, sweep RK45
            dt, ds_e = timed(run_sweep, fw, model, design, setup, "euler")
            t["euler"].append(dt)
            dt, fm = timed(floor_metrics, key, design.table, setup["metrics"])
            t["floor"].append(dt)
            dt, ds_r = timed(run_sweep, fw, model, design, setup, "RK45")
            t["RK45"].append(dt)
            if check is None:
                check = {
                    m: float(
                        np.max(np.abs(ds_e[m].values - fm[m]) / np.maximum(np.abs(fm[m]), 1e-300))
                    )
                    for m in fm
                }
                nfev = {"euler": int(ds_e.attrs["nfev"]), "RK45": int(ds_r.attrs["nfev"])}
        row = {"runs": n, "reps": reps, **t, "check": check, "nfev": nfev}
        results["sizes"][n] = row
        e, r, f = median(t["euler"]), median(t["RK45"]), median(t["floor"])
        pair_floor = median([a / b for a, b in zip(t["euler"], t["floor"])])
        pair_rk = median([a / b for a, b in zip(t["RK45"], t["euler"])])
        print(f"\n{n:,} runs ({reps} interleaved repetitions, medians):")
        print(
            f"  sweep Euler      {spread(t['euler'])}  {n / e:8,.0f} runs/s  "
            f"({nfev['euler'] / n:,.0f} RHS evaluations per run)"
        )
        print(
            f"  sweep RK45       {spread(t['RK45'])}  {n / r:8,.0f} runs/s  "
            f"({nfev['RK45'] / n:,.0f} RHS evaluations per run)"
        )
        print(f"  NumPy floor Euler {spread(t['floor'])}  {n / f:8,.0f} runs/s")
        print(
            f"  sweep Euler / floor  = {e / f:.2f}x (median of pairwise ratios "
            f"{pair_floor:.2f}x); metrics agree to {max(check.values()):.1e} relative"
        )
        print(f"  sweep RK45 / Euler   = {r / e:.2f}x (median of pairwise ratios {pair_rk:.2f}x)")
        if per_run is not None:
            print(
                f"  PySD loop scaled to {n:,} runs: {per_run * n:,.0f} s -> sweep Euler is "
                f"{per_run * n / e:,.0f}x faster, RK45 {per_run * n / r:,.0f}x"
            )
        sys.stdout.flush()
    return results


def summary(all_results):
    print("\n=== summary (goals of issue #10) ===")
    header = f"{'model':<22} {'figure':<44} {'value':>12} {'goal':>8}  verdict"
    print(header)
    print("-" * len(header))
    for res in all_results:
        if res is None:
            continue
        for n, row in res["sizes"].items():
            e, r, f = median(row["euler"]), median(row["RK45"]), median(row["floor"])
            lines = [
                (
                    f"{n:,}-run Euler sweep / NumPy floor",
                    f"{e / f:.2f}x",
                    "<= 0.5x",
                    e / f <= 0.5 if n >= 10000 else None,
                ),
                (
                    f"{n:,}-run RK45 sweep / Euler sweep",
                    f"{r / e:.2f}x",
                    "<= 2x",
                    r / e <= 2 if n >= 10000 else None,
                ),
                (f"{n:,}-run Euler sweep, runs/s", f"{n / e:,.0f}", "", None),
                (f"{n:,}-run RK45 sweep, runs/s", f"{n / r:,.0f}", "", None),
            ]
            if res["pysd_per_run"]:
                lines.append(
                    (
                        f"{n:,}-run PySD loop (scaled) / Euler sweep",
                        f"{res['pysd_per_run'] * n / e:,.0f}x",
                        "",
                        None,
                    )
                )
            for figure, value, goal, met in lines:
                verdict = "" if met is None else ("met" if met else "MISSED")
                print(f"{res['model']:<22} {figure:<44} {value:>12} {goal:>8}  {verdict}")
    sys.stdout.flush()


# -- the million-run sweep ------------------------------------------------------------------
def million_child(key: str, n: int, method: str) -> None:
    """In a fresh process: the metrics-only sweep to a Zarr store; prints one JSON line."""
    import flywheel_sd as fw

    setup = SETUPS[key]
    model = fw.load(setup["path"])
    t_design, design = timed(fw.designs.lhs, setup["params"], n, seed=1)
    root = Path(tempfile.mkdtemp(prefix="flywheel-million-"))
    store = root / "million.zarr"
    samples, stop = [], threading.Event()

    def sample():
        while not stop.is_set():
            samples.append(current_rss_mb())
            stop.wait(0.25)

    chunks = []
    start = time.perf_counter()

    def watch(index, done, total):
        chunks.append((time.perf_counter() - start, done, current_rss_mb()))
        if index % 10 == 0 or done == total:
            print(
                f"  chunk {index:3d}: {done:>9,} runs in {chunks[-1][0]:6.1f} s, RSS "
                f"{chunks[-1][2]:.0f} MB",
                flush=True,
            )

    base = current_rss_mb()
    watcher = threading.Thread(target=sample, daemon=True)
    watcher.start()
    try:
        start = time.perf_counter()
        ds = fw.sweep(
            model,
            design,
            metrics=setup["metrics"],
            method=method,
            store=store,
            progress=False,
            callback=watch,
            **setup["options"],
        )
        wall = time.perf_counter() - start
        ok = int((ds["status"] == 1).sum())
        first = next(iter(setup["metrics"]))
        med = float(np.nanmedian(np.asarray(ds[first].values)))
    finally:
        stop.set()
        watcher.join()
    size = sum(p.stat().st_size for p in store.rglob("*") if p.is_file()) / 2**20
    shutil.rmtree(root, ignore_errors=True)
    print(
        "RESULT "
        + json.dumps(
            {
                "model": setup["path"].name,
                "runs": n,
                "method": method,
                "wall_s": wall,
                "design_s": t_design,
                "ok": ok,
                "chunk_size": int(ds.attrs["chunk_size"]),
                "rss_before_mb": base,
                "rss_after_first_chunk_mb": chunks[0][2] if chunks else None,
                "first_chunk_s": chunks[0][0] if chunks else None,
                "rss_sampled_max_mb": max(samples) if samples else None,
                "ru_maxrss_mb": peak_rss_mb(),
                "hwm_mb": current_rss_mb("VmHWM"),
                "store_mb": size,
                "median_" + first: med,
            }
        ),
        flush=True,
    )


def million(key: str, n: int, method: str) -> dict:
    print(
        f"\n=== {n:,}-run metrics-only sweep of {SETUPS[key]['path'].name} ({method}) to a "
        f"Zarr store, in a fresh process ===",
        flush=True,
    )
    proc = subprocess.Popen(
        [sys.executable, __file__, "--million-child", key, str(n), method],
        stdout=subprocess.PIPE,
        text=True,
        env=os.environ.copy(),
    )
    result = None
    for line in proc.stdout:
        if line.startswith("RESULT "):
            result = json.loads(line[len("RESULT ") :])
        else:
            print(line, end="", flush=True)
    if proc.wait() != 0 or result is None:
        raise RuntimeError(f"the million-run child failed (exit {proc.returncode})")
    r = result
    print(
        f"{r['runs']:,} runs in {r['wall_s']:.0f} s ({r['runs'] / r['wall_s']:,.0f} runs/s; "
        f"design {r['design_s']:.1f} s before it); {r['ok']:,} ok; chunks of "
        f"{r['chunk_size']:,}, the first in {r['first_chunk_s']:.1f} s"
    )
    print(
        f"resident memory: {r['rss_before_mb']:.0f} MB before the sweep, "
        f"{r['rss_after_first_chunk_mb']:.0f} MB after the first chunk, sampled maximum "
        f"{r['rss_sampled_max_mb']:.0f} MB, peak of the process (VmHWM) "
        f"{r['hwm_mb']:.0f} MB (ru_maxrss {r['ru_maxrss_mb']:.0f} MB, which counts the "
        f"parent's peak before exec); store {r['store_mb']:.0f} MB"
    )
    t_ok, m_ok = r["wall_s"] < MILLION_LIMIT_S, r["hwm_mb"] < MILLION_LIMIT_MB
    print(
        f"goals: under 15 minutes {'met' if t_ok else 'MISSED'}; under 1 GB "
        f"{'met' if m_ok else 'MISSED'}",
        flush=True,
    )
    return r


def engine_state() -> str:
    try:
        head = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--", "flywheel_sd"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout
        return head + (" (with uncommitted changes in flywheel_sd/)" if dirty.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--models", nargs="+", default=["flywheel", "sir"], choices=["flywheel", "sir", "none"]
    )
    parser.add_argument("--runs", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="interleaved repetitions at >= 5,000 runs (at least 5 below)",
    )
    parser.add_argument("--skip-pysd", action="store_true")
    parser.add_argument("--million", action="store_true")
    parser.add_argument("--million-runs", type=int, default=1_000_000)
    parser.add_argument("--million-model", choices=["auto", "flywheel", "sir"], default="auto")
    parser.add_argument("--million-method", default="RK45")
    parser.add_argument(
        "--cold-cache",
        action="store_true",
        help="translate and compile into an empty FLYWHEEL_SD_CACHE",
    )
    parser.add_argument(
        "--million-child", nargs=3, metavar=("MODEL", "RUNS", "METHOD"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    os.environ.setdefault("MPLBACKEND", "Agg")
    os.environ.setdefault("FLYWHEEL_SD_JIT", "eager")
    if args.million_child:
        key, n, method = args.million_child
        million_child(key, int(n), method)
        return 0
    cold = None
    if args.cold_cache:
        cold = tempfile.mkdtemp(prefix="flywheel-cache-")
        os.environ["FLYWHEEL_SD_CACHE"] = cold
    import numba
    import pysd

    print(
        f"cores: {os.cpu_count()}; load average {os.getloadavg()[0]:.1f}; python "
        f"{sys.version.split()[0]}; numba {numba.__version__} "
        f"({numba.config.NUMBA_NUM_THREADS} threads); numpy {np.__version__}; pysd "
        f"{pysd.__version__}; commit {engine_state()}; FLYWHEEL_SD_JIT="
        f"{os.environ['FLYWHEEL_SD_JIT']}" + (f"; empty cache {cold}" if cold else ""),
        flush=True,
    )
    start = time.perf_counter()
    results = [
        bench_model(k, sorted(args.runs), args.repeats, args.skip_pysd)
        for k in args.models
        if k != "none"
    ]
    if results:
        summary(results)
    if args.million:
        key = args.million_model
        fly = next((r for r in results if r and r["key"] == "flywheel"), None)
        if fly and max(fly["sizes"]) >= 1000:
            n = max(fly["sizes"])
            rate = n / median(
                fly["sizes"][n][
                    args.million_method if args.million_method in ("euler", "RK45") else "RK45"
                ]
            )
            eta = args.million_runs / rate
            print(
                f"\nplatform_flywheel.mdl at the {n:,}-run {args.million_method} rate "
                f"({rate:,.0f} runs/s): {args.million_runs:,} runs would take "
                f"{eta / 60:.1f} min",
                flush=True,
            )
            if key == "auto":
                key = "flywheel" if eta < 0.9 * MILLION_LIMIT_S else "sir"
        elif key == "auto":
            key = "flywheel"
        million(key, args.million_runs, args.million_method)
    print(
        f"\nbenchmark wall time {time.perf_counter() - start:.0f} s; load average now "
        f"{os.getloadavg()[0]:.1f}"
    )
    if cold:
        shutil.rmtree(cold, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
