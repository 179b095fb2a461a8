"""Benchmark the engine against PySD: wall time, RHS evaluations at equal accuracy, load time.

Usage::

    python benchmarks/bench_engine.py [SIR.mdl] [--repeats N] [--no-project]

The SIR sample is found at ``$FLYWHEEL_TEST_MODELS/samples/SIR/SIR.mdl`` unless a path is
given; the project's own model is ``models/platform_flywheel.mdl``. For each model it prints,
measured side by side in this one run (medians over the repeats):

1. wall time of ``simulate()`` (RK45, and euler) against PySD's ``Model.run()``;
2. RHS evaluations at equal accuracy: the Euler run at the model's TIME STEP has some error
   against a converged reference (DOP853 at rtol 1e-12); the loosest RK45 tolerance (from a
   scan at four tolerances per decade) whose error is no larger needs ``nfev``
   evaluations, against Euler's steps;
3. load time, cold (a fresh, empty translation cache) against cached.

Errors are relative: max over stocks and saved times of |x - reference| / max |reference|.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
PROJECT_MODEL = REPO / "models" / "platform_flywheel.mdl"


def median_time(func, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        out = func()
        times.append(time.perf_counter() - started)
    return statistics.median(times), out


def stock_error(frame, reference, stocks) -> float:
    worst = 0.0
    times = reference.index.to_numpy(float)
    rows = frame.reindex(times, method="nearest", tolerance=1e-9)
    for name in stocks:
        columns = [c for c in reference.columns if c == name or c.startswith(name + "[")]
        for column in columns:
            ref = reference[column].to_numpy(float)
            scale = max(float(np.max(np.abs(ref))), 1e-300)
            worst = max(worst, float(np.max(np.abs(rows[column].to_numpy(float) - ref))) / scale)
    return worst


def load_times(path: Path, repeats: int) -> tuple[float, float]:
    import flywheel_sd as fw

    cold, cached = [], []
    saved = os.environ.get("FLYWHEEL_SD_CACHE")
    try:
        for _ in range(repeats):
            with tempfile.TemporaryDirectory(prefix="bench-cache-") as folder:
                os.environ["FLYWHEEL_SD_CACHE"] = folder
                started = time.perf_counter()
                fw.load(path)
                cold.append(time.perf_counter() - started)
                started = time.perf_counter()
                fw.load(path)
                cached.append(time.perf_counter() - started)
    finally:
        if saved is None:
            os.environ.pop("FLYWHEEL_SD_CACHE", None)
        else:
            os.environ["FLYWHEEL_SD_CACHE"] = saved
    return statistics.median(cold), statistics.median(cached)


def bench(path: Path, repeats: int) -> dict:
    import pysd

    import flywheel_sd as fw

    model = fw.load(path)
    settings = model.time_settings()
    out = {"model": path.name, "stocks": len(model.stocks), **settings}

    pysd_model = pysd.load(str(model.py_file))
    out["t_pysd"], _ = median_time(pysd_model.run, repeats)
    out["t_rk45"], rk45 = median_time(lambda: fw.simulate(model), repeats)
    out["t_euler"], euler = median_time(lambda: fw.simulate(model, method="euler"), repeats)
    out["rows"], out["columns"] = rk45.shape

    reference = fw.simulate(
        model, method="DOP853", rtol=1e-12, atol=1e-12, return_columns=model.stocks
    )
    out["euler_steps"] = euler.attrs["n_steps"]
    out["euler_error"] = stock_error(euler, reference, model.stocks)
    out["rk45_default_nfev"] = rk45.attrs["nfev"]
    out["rk45_default_error"] = stock_error(rk45, reference, model.stocks)
    out["equal"] = None
    for exponent in np.arange(1, 10.25, 0.25):  # four tolerances per decade
        tol = float(10.0**-exponent)
        run = fw.simulate(model, rtol=tol, atol=tol, return_columns=model.stocks)
        error = stock_error(run, reference, model.stocks)
        if error <= out["euler_error"]:
            out["equal"] = (tol, run.attrs["nfev"], error)
            break
    out["t_load_cold"], out["t_load_cached"] = load_times(path, repeats)
    return out


def report(rows: list[dict]) -> None:
    print()
    header = (
        f"{'model':<24}{'simulate/run()':>16}{'euler/run()':>13}"
        f"{'RHS evals (RK45 : Euler)':>28}{'load cold/cached':>20}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        if r.get("skipped"):
            print(f"{r['model']:<24}  skipped: {r['skipped']}")
            continue
        equal = r["equal"]
        evals = (
            f"{equal[1]} : {r['euler_steps']} = {equal[1] / r['euler_steps']:.3f}"
            if equal
            else "no tolerance reached it"
        )
        print(
            f"{r['model']:<24}{r['t_rk45'] / r['t_pysd']:>16.2f}"
            f"{r['t_euler'] / r['t_pysd']:>13.2f}{evals:>28}"
            f"{r['t_load_cold'] / r['t_load_cached']:>20.1f}"
        )
    print()
    for r in rows:
        if r.get("skipped"):
            continue
        equal = r["equal"]
        print(
            f"{r['model']}: {r['stocks']} stocks, TIME STEP {r['time_step']:g}, SAVEPER "
            f"{r['saveper']:g}, {r['rows']} rows x {r['columns']} columns"
        )
        print(
            f"  wall time (median): PySD run() {r['t_pysd']:.3f} s, simulate() RK45 "
            f"{r['t_rk45']:.3f} s, simulate(method='euler') {r['t_euler']:.3f} s"
        )
        print(
            f"  Euler at TIME STEP: {r['euler_steps']} steps, error {r['euler_error']:.2e}; "
            f"RK45 at its default tolerance: {r['rk45_default_nfev']} evaluations, error "
            f"{r['rk45_default_error']:.2e}"
        )
        if equal:
            print(
                f"  RK45 at rtol = atol = {equal[0]:.3g}: {equal[1]} evaluations, error "
                f"{equal[2]:.2e} (<= Euler's)"
            )
        print(f"  load: cold {r['t_load_cold']:.3f} s, cached {r['t_load_cached']:.3f} s")
        if r["saveper"] == r["time_step"] and r["t_rk45"] > r["t_pysd"]:
            print(
                "  note: SAVEPER == TIME STEP, so every step is recorded; recording the "
                "outputs dominates the run and simulate() is slower than run()"
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sir", nargs="?", help="path of SIR.mdl")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--no-project", action="store_true", help="leave out models/platform_flywheel.mdl"
    )
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    cache = tempfile.TemporaryDirectory(prefix="bench-")
    os.environ.setdefault("FLYWHEEL_SD_CACHE", cache.name)

    rows = []
    sir = Path(args.sir) if args.sir else None
    if sir is None and os.environ.get("FLYWHEEL_TEST_MODELS"):
        sir = Path(os.environ["FLYWHEEL_TEST_MODELS"]) / "samples" / "SIR" / "SIR.mdl"
    if sir is None or not sir.is_file():
        rows.append({"model": "SIR.mdl", "skipped": "pass its path or set FLYWHEEL_TEST_MODELS"})
    else:
        rows.append(bench(sir, args.repeats))
    if args.no_project:
        pass
    elif PROJECT_MODEL.is_file():
        rows.append(bench(PROJECT_MODEL, args.repeats))
    else:
        rows.append({"model": PROJECT_MODEL.name, "skipped": "does not exist yet"})
    report(rows)
    cache.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
