"""Benchmark Loops That Matter (issue 14) against one run of the same model.

Usage::

    python benchmarks/bench_ltm.py [MODEL.mdl] [--repeats N]

Default model: ``models/platform_flywheel.mdl``. Measured side by side in this one process,
after a warm-up call of each (so parsing, compiling and caches are not counted; the cold
first call is printed too), medians over the repeats:

1. ``flywheel_sd.simulate(model)``: one run as users make it (RK45, compiled engine), and the
   Euler run at TIME STEP;
2. ``flywheel_sd.ltm.loop_dominance(model)``: its own Euler run recorded at every TIME STEP,
   every node's value from the states, link scores, loop discovery (exhaustive, or the
   strongest-path search beyond ``MAX_CYCLES`` cycles) and loop scores;
3. the same for the loop index's loops only (``loops=[...]``: no discovery);
4. ``flywheel_sd.ltm.loop_dominance_ensemble`` over a ``--runs``-run LHS of two uncertain
   constants (Maximum Conversion Rate 0.06-0.18, Referral Visits per Buyer 1-6: in their
   documented ranges), where the model has them: one index-loop analysis per run;
5. ``flywheel_sd.dominance_periods`` of (2): per partition, and for one stock (Active Buyers,
   else the model's first stock: only the loops through it, renormalised).

It prints each time and its ratio to the RK45 run, and the engine of each: with Numba
(``FLYWHEEL_SD_JIT=eager``) the run, every node's values, the link scores (generated code:
`flywheel_sd.engine.links.layout_text`) and the strongest-path search are compiled; under
``FLYWHEEL_SD_JIT=off`` the run is plain Python and the analysis NumPy over whole rows. In
the default (auto) mode a process's first few analyses take the second way while Numba
compiles the model's analysis code in the background (minutes of one core, once per model).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PROJECT_MODEL = REPO / "models" / "platform_flywheel.mdl"


def median_time(func, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = func()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", default=str(PROJECT_MODEL))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--runs", type=int, default=16, help="runs of the ensemble (default 16)")
    args = parser.parse_args(argv)

    import flywheel_sd as fw
    from flywheel_sd.loop_index import loop_index_path, read_loop_index
    from flywheel_sd.ltm import dominance_periods, loop_dominance, loop_dominance_ensemble

    model = fw.load(args.model)
    start = time.perf_counter()
    ds = loop_dominance(model)
    cold = time.perf_counter() - start
    fw.simulate(model)
    fw.simulate(model, method="euler")
    index_path = loop_index_path(model)
    index = list(read_loop_index(index_path)) if index_path.is_file() else []

    rows = [
        ("simulate (RK45)", lambda: fw.simulate(model)),
        ("simulate (euler)", lambda: fw.simulate(model, method="euler")),
        (f"loop_dominance ({ds.attrs['discovery']})", lambda: loop_dominance(model)),
    ]
    if index:
        loop_dominance(model, index)
        rows.append(
            (f"loop_dominance ({len(index)} index loops)", lambda: loop_dominance(model, index))
        )
    uncertain = {"Maximum Conversion Rate": (0.06, 0.18), "Referral Visits per Buyer": (1, 6)}
    if index and all(name in model.namespace for name in uncertain):
        design = fw.designs.lhs(uncertain, args.runs, seed=14, model=model)
        rows.append(
            (
                f"loop_dominance_ensemble ({args.runs} runs)",
                lambda: loop_dominance_ensemble(model, design),
            )
        )
    stocks = list(model.stocks)
    stock = "Active Buyers" if "Active Buyers" in stocks else stocks[0] if stocks else None
    if ds.sizes["loop"]:
        rows.append(("dominance_periods (per partition)", lambda: dominance_periods(ds)))
    if ds.sizes["loop"] and stock is not None:
        rows.append(
            (f"dominance_periods ({stock})", lambda: dominance_periods(ds, variable=stock))
        )
    results = []
    for name, func in rows:
        seconds, out = median_time(func, args.repeats)
        engine = getattr(out, "attrs", {}).get("engine")
        results.append((f"{name}, {engine}" if isinstance(engine, str) else name, seconds))
    run = results[0][1]
    print(
        f"model: {Path(args.model).name}; {ds.sizes['time']} steps, {ds.sizes['loop']} loops "
        f"({ds.attrs['discovery']}, {ds.attrs['n_cycles_found']} cycles); "
        f"median of {args.repeats}"
    )
    print(f"{'':48s} {'seconds':>9s} {'x run':>7s}")
    for name, seconds in results:
        print(f"{name:48s} {seconds:9.3f} {seconds / run:7.1f}")
    print(f"{'loop_dominance, first call (cold)':48s} {cold:9.3f} {cold / run:7.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
