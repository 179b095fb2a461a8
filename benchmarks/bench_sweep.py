"""Benchmark: parameter sweeps, ensemble integration against the alternatives.

Prints ratios measured side by side in one run, for the project's model (falling back to
the SIR sample, and saying so, when ``models/platform_flywheel.mdl`` is absent) at 1,000 and
10,000 runs:

* the ensemble sweep (``flywheel_sd.sweep``, default settings, verification included)
  against looping PySD's ``run()`` (measured on a sample of runs and scaled);
* against a process pool of per-run integrations on all cores (the usual way to
  parallelise; also on a sample, scaled), and the process pool of ensemble chunks;
* against a hand-written NumPy right-hand side of the same model, integrated for all runs
  at once by the same integrator (the practical floor): `sir_numpy_floor` below for SIR,
  ``benchmarks/flywheel_numpy.py`` for the project's model (its Euler is PySD's Euler to
  round-off and its RK45 takes the ensemble's steps, ``tests/test_numpy_floor.py``).

``--million`` adds a 1,000,000-run scalar-metric sweep of SIR written to a store, and
reports its peak resident memory.

Usage::

    python benchmarks/bench_sweep.py                 # project model if present, and SIR
    python benchmarks/bench_sweep.py --model sir --runs 1000 10000
    python benchmarks/bench_sweep.py --model sir --million
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import os
import resource
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
SUITE = Path(os.environ.get("FLYWHEEL_TEST_MODELS", REPO.parent / "shared" / "test-models"))
SIR = SUITE / "samples" / "SIR" / "SIR.mdl"
FLYWHEEL = REPO / "models" / "platform_flywheel.mdl"

SIR_SETUP = {"path": SIR, "params": {"Contact Infectivity": (0.2, 0.5), "Duration": (3.0, 8.0)},
             "outputs": ["Infectious", "Susceptible", "Recovered"], "options": {"saveper": 1.0},
             "loop_sample": 40, "pool_sample": 200}
FLYWHEEL_SETUP = {"path": FLYWHEEL,
                  "params": {"Take Rate": (0.05, 0.3), "Seller Deposit": (0.0, 3000.0),
                             "Ad Budget": (0.0, 2e6)},
                  "outputs": ["Active Buyers", "Active Sellers", "Platform Cash", "GMV"],
                  "options": {}, "loop_sample": 20, "pool_sample": 8}


def timed(func, *args, **kwargs):
    gc.collect()
    start = time.perf_counter()
    out = func(*args, **kwargs)
    return time.perf_counter() - start, out


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# -- the alternatives -----------------------------------------------------------------------
def pysd_loop(model, table, outputs, options, sample):
    """Seconds per run of PySD's own run(), on the first `sample` rows."""
    import pysd

    pm = pysd.load(str(model.py_file))
    rows = table.iloc[:sample]
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _, row in rows.iterrows():
            pm.run(params={k: float(v) for k, v in row.items()}, return_columns=outputs,
                   **options)
    return (time.perf_counter() - start) / len(rows)


def sir_numpy_floor(table, method, t_end=100.0, dt=0.03125, saveper=1.0):
    """Hand-written SIR, all runs at once, with the integrator the ensemble uses."""
    from scipy.integrate import solve_ivp


    n = len(table)
    c = table["Contact Infectivity"].to_numpy()
    d = table["Duration"].to_numpy()
    pop = 1000.0

    def f(t, y):
        y = y.reshape(n, 3)
        s, i = y[:, 0], y[:, 1]
        infect = s * i / pop * c
        recover = i / d
        out = np.empty_like(y)
        out[:, 0] = -infect
        out[:, 1] = infect - recover
        out[:, 2] = recover
        return out.ravel()

    y0 = np.tile([pop, 5.0, 0.0], n)
    save = np.arange(0.0, t_end + 1e-9, saveper)
    if method == "euler":
        y, out, every = y0.copy(), [y0.copy()], round(saveper / dt)
        for k in range(round(t_end / dt)):
            y = y + dt * f(k * dt, y)
            if (k + 1) % every == 0:
                out.append(y.copy())
        return np.array(out)
    sol = solve_ivp(f, (0.0, t_end), y0, method=method, rtol=1e-6, atol=1e-6, t_eval=save)
    return sol.y


def flywheel_numpy_floor(table, method):
    """The hand-written flywheel model, all runs at once, with the ensemble's integrator
    and outputs."""
    spec = importlib.util.spec_from_file_location("flywheel_numpy",
                                                  Path(__file__).with_name("flywheel_numpy.py"))
    floor = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(floor)
    params = {name: table[name].to_numpy() for name in table.columns}
    outputs = FLYWHEEL_SETUP["outputs"]
    if method == "euler":
        return floor.euler(params, outputs)
    return floor.adaptive(params, outputs, method)


# -- one model ------------------------------------------------------------------------------
def bench_model(setup, runs, methods, skip_pool, note=""):
    import flywheel_sd as fw

    model = fw.load(setup["path"])
    outputs, options = setup["outputs"], setup["options"]
    name = setup["path"].name
    print(f"\n=== {name}{note}: {len(model.stocks)} stocks, parameters "
          f"{', '.join(setup['params'])} ===")
    big = fw.designs.lhs(setup["params"], max(runs), seed=42)
    per_run = pysd_loop(model, big.table, outputs, options, setup["loop_sample"])
    print(f"PySD run() loop: {per_run * 1e3:.1f} ms per run "
          f"(mean of {setup['loop_sample']} runs; Euler at TIME STEP)")
    rows = []
    for n in runs:
        design = fw.designs.from_table(big.table.iloc[:n])
        for method in methods:
            t_ens, ds = timed(fw.sweep, model, design, outputs=outputs, method=method,
                              progress=False, **options)
            assert int((ds["status"] == 1).sum()) == n, "runs failed in the benchmark"
            t_bare, _ = timed(fw.sweep, model, design, outputs=outputs, method=method,
                              progress=False, **options)
            row = {"model": name, "runs": n, "method": method, "ensemble_s": t_ens,
                   "unverified_s": t_bare, "loop_s": per_run * n,
                   "chunks": ds.attrs["ensemble_chunks"], "fallback": ds.attrs["fallback"]}
            if not skip_pool:
                k = min(setup["pool_sample"], n)
                sample = fw.designs.from_table(big.table.iloc[:k])
                t_pool, _ = timed(fw.sweep, model, sample, outputs=outputs, method=method,
                                  executor="processes", vectorize=False, progress=False,
                                  **options)
                row["pool_s"] = t_pool * n / k
                t_pens, _ = timed(fw.sweep, model, design, outputs=outputs, method=method,
                                  executor="processes", progress=False, **options)
                row["pool_ensemble_s"] = t_pens
            if setup is SIR_SETUP:
                row["floor_s"], _ = timed(sir_numpy_floor, design.table, method)
            elif setup is FLYWHEEL_SETUP:
                row["floor_s"], _ = timed(flywheel_numpy_floor, design.table, method)
            rows.append(row)
            report(row)
    return rows


def report(row):
    parts = [(f"{row['runs']:>6} runs {row['method']:>5}: ensemble sweep "
              f"{row['ensemble_s']:8.2f} s | vs PySD loop "
              f"{row['loop_s'] / row['ensemble_s']:7.0f}x ({row['loop_s']:.0f} s scaled)"),
             (f"without verification (verify=0) {row['unverified_s']:.2f} s: "
              f"{row['loop_s'] / row['unverified_s']:.0f}x the loop")]
    if "pool_s" in row:
        parts.append(f"vs process pool (per run, all cores) "
                     f"{row['pool_s'] / row['ensemble_s']:5.1f}x ({row['pool_s']:.1f} s scaled)")
        parts.append(f"process pool of ensemble chunks {row['pool_ensemble_s']:.2f} s")
    if "floor_s" in row:
        parts.append(f"hand-written NumPy floor {row['floor_s']:.3f} s -> ensemble is "
                     f"{row['ensemble_s'] / row['floor_s']:.1f}x the floor "
                     f"({row['unverified_s'] / row['floor_s']:.1f}x without verification)")
    if row["fallback"]:
        parts.append(f"FELL BACK: {row['fallback']}")
    print("\n    ".join(parts))


# -- the million-run sweep ------------------------------------------------------------------
def million(n=1_000_000, chunk=20_000):
    import flywheel_sd as fw

    model = fw.load(SIR)
    design = fw.designs.sobol(SIR_SETUP["params"], 1 << 20, seed=1) if n == 1 << 20 else \
        fw.designs.lhs(SIR_SETUP["params"], n, seed=1)
    metrics = {"peak_infectious": lambda ds: ds["Infectious"].max("time"),
               "final_recovered": lambda ds: ds["Recovered"].isel(time=-1)}
    store = Path(tempfile.mkdtemp(prefix="flywheel-million-")) / "sweep"
    rss = []

    def watch(index, done, total):
        rss.append(peak_rss_mb())
        if index % 10 == 0:
            print(f"  chunk {index:3d}: {done:>9,} runs done, peak RSS {rss[-1]:.0f} MB",
                  flush=True)

    print(f"\n=== {n:,}-run scalar-metric sweep of SIR (metrics only, store {store}) ===")
    base = peak_rss_mb()
    t, ds = timed(fw.sweep, model, design, metrics=metrics, saveper=1.0, store=store,
                  chunk_size=chunk, callback=watch, progress=False)
    peak = np.asarray(ds["peak_infectious"].values)
    print(f"{n:,} runs in {t:.0f} s ({n / t:,.0f} runs/s); peak RSS {peak_rss_mb():.0f} MB "
          f"(before the sweep {base:.0f} MB; after chunk 1 {rss[0]:.0f} MB, after the last "
          f"{rss[-1]:.0f} MB); {int((ds['status'] == 1).sum()):,} ok; peak infectious "
          f"median {np.median(peak):.1f}; store {du(store):.0f} MB")
    shutil.rmtree(store.parent, ignore_errors=True)


def du(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["auto", "flywheel", "sir"], default="auto")
    parser.add_argument("--runs", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--methods", nargs="+", default=["euler", "RK45"])
    parser.add_argument("--skip-pool", action="store_true")
    parser.add_argument("--million", action="store_true")
    parser.add_argument("--million-runs", type=int, default=1_000_000)
    args = parser.parse_args(argv)
    os.environ.setdefault("MPLBACKEND", "Agg")
    print(f"cores: {os.cpu_count()}; load average {os.getloadavg()[0]:.1f}; python "
          f"{sys.version.split()[0]}")
    if args.model in ("auto", "flywheel"):
        if FLYWHEEL.is_file():
            bench_model(FLYWHEEL_SETUP, args.runs, args.methods, args.skip_pool)
        else:
            print(f"\n{FLYWHEEL} is not there yet: benchmarking the SIR sample instead")
    if args.model in ("auto", "sir") or not FLYWHEEL.is_file():
        bench_model(SIR_SETUP, args.runs, args.methods, args.skip_pool)
    if args.million:
        million(args.million_runs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
