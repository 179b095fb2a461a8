"""Benchmark: a calibration of 5 parameters to one series on the default model (issue 13).

Generates "Active Buyers" (monthly, months 0-120) from the default model with five known
parameter values, adds Gaussian noise of known sigma (2 % of each value, a fixed seed),
and calibrates the five from the documented-range-bounded search box with the compiled
engine (Euler, the model's TIME STEP). Prints the calibration's wall time and its number
of runs, side by side with one single run's time (``simulate``, same engine, warm), and
the recovered values with their chi-square bounds. Goal: under a minute.

The first use of a model's compiled members in a process loads (or, with an empty Numba
cache, compiles) them: a warm-up batch is run first and its time printed apart.

Usage::

    python benchmarks/bench_calibration.py [--method de+least_squares] [--seed 1]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import pandas as pd

os.environ.setdefault("FLYWHEEL_SD_JIT", "eager")

import flywheel_sd as fw

TRUE = {
    "Maximum Conversion Rate": 0.12,
    "Normal Buyer Churn Fraction": 0.04,
    "Referral Visits per Buyer": 3.0,
    "Addressable Market": 2.0e7,
    "Ad Budget": 2.0e6,
}
BOUNDS = {
    "Maximum Conversion Rate": (0.02, 0.5),
    "Normal Buyer Churn Fraction": (0.01, 0.2),
    "Referral Visits per Buyer": (0.5, 10.0),
    "Addressable Market": (5.0e6, 1.0e8),
    "Ad Budget": (0.0, 1.0e7),
}
SERIES = "Active Buyers"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default="de+least_squares")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=20, help="single runs timed (median)")
    args = parser.parse_args()

    model = fw.load()
    start = time.perf_counter()
    truth = fw.simulate(model, TRUE, method="euler", return_columns=[SERIES])[SERIES]
    warm = time.perf_counter() - start
    singles = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        fw.simulate(model, TRUE, method="euler", return_columns=[SERIES])
        singles.append(time.perf_counter() - start)
    single = float(np.median(singles))

    rng = np.random.default_rng(args.seed)
    sigma = 0.02 * truth.to_numpy() + 1.0
    data = pd.Series(truth.to_numpy() + rng.normal(0.0, sigma), index=truth.index)

    start = time.perf_counter()
    result = fw.calibrate(
        model, {SERIES: (data, sigma)}, BOUNDS, method=args.method, seed=args.seed
    )
    elapsed = time.perf_counter() - start

    print(f"model: {model.path.name}, Euler, {len(data)} data points, 5 parameters")
    print(f"first run (load/compile): {warm:.2f} s")
    print(f"single run (median of {args.repeats}): {single * 1e3:.2f} ms")
    print(
        f"calibration ({args.method}): {elapsed:.1f} s, {result.n_runs} runs "
        f"({elapsed / result.n_runs * 1e3:.2f} ms per run in batches; "
        f"{result.n_runs * single:.1f} s as single runs)"
    )
    print(f"payoff {result.payoff:.4g} (chi-square threshold {result.threshold:.3g})")
    table = result.bounds[["low", "best", "high"]].copy()
    table.insert(0, "true", [TRUE[n] for n in table.index])
    table["inside"] = (table["low"] <= table["true"]) & (table["true"] <= table["high"])
    with pd.option_context(
        "display.width", 160, "display.max_columns", None, "display.float_format", "{:.5g}".format
    ):
        print(table)
        print(result.correlation.round(3))


if __name__ == "__main__":
    main()
