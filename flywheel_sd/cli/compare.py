"""``flywheel compare`` and ``flywheel critical-mass``: policy what-ifs on scenarios."""

from __future__ import annotations

import math
from typing import Any

from ._common import (
    EXIT_OK,
    UsageError,
    check_plot,
    check_suffix,
    print_json,
    print_record,
    print_table,
    print_wrote,
    progress_bar,
    records,
    scenario_for,
    simulate_options,
    with_policies,
)
from ._files import save_comparison_plot, write_netcdf


def cmd_compare(args) -> int:
    """The metrics table of two or more scenarios."""
    import matplotlib.pyplot as plt

    from .. import compare, metrics
    from ..plotting import plot_metrics

    out = check_suffix(args.out, (".csv", ".nc"), "--out")
    plot, metrics_plot = check_plot(args.plot), check_plot(args.metrics_plot, "--metrics-plot")
    chosen = [metrics.get(m).name for m in args.metrics] if args.metrics else None
    resolved = [with_policies(args, scenario_for(args, name)) for name in args.scenarios]
    options = simulate_options(args)
    with progress_bar(args, len(resolved), "compare") as bar:
        ds = compare(resolved, metrics=chosen, on_run=lambda _: bar.update(1), **options)
    table = ds.flywheel.metrics if "metrics" in ds else None
    if table is None and (metrics_plot is not None or (out and out.suffix.lower() == ".csv")):
        raise UsageError("no metric applies to this model's outputs; save the runs as .nc")
    wrote = []  # files first: a closed pipe on stdout must not lose them
    if out is not None:
        if out.suffix.lower() == ".csv":
            out.parent.mkdir(parents=True, exist_ok=True)
            assert table is not None  # refused above
            table.to_csv(out)
        else:
            write_netcdf(ds, out)
        wrote.append(out)
    if plot is not None:
        save_comparison_plot(ds, resolved[0].load_model(), plot)
        wrote.append(plot)
    if metrics_plot is not None:
        assert table is not None  # refused above
        plt.close(plot_metrics(table, metrics_plot))
        wrote.append(metrics_plot)

    if args.json:
        print_json(
            {
                "scenarios": [sc.name for sc in resolved],
                "metrics": records(table) if table is not None else [],
                "wrote": [str(w) for w in wrote],
            }
        )
        return EXIT_OK
    if table is not None:
        print_table(_metrics_wide(table))
    else:
        print("no metric applies to this model's outputs; use --out results.nc for the runs")
    print_wrote(wrote)
    return EXIT_OK


def _metrics_wide(table):
    """One row per metric: units, each scenario's value, and each later scenario's change
    from the first in percent."""
    import pandas as pd

    from ..metrics import format_percent, readable_units

    values = table["value"].unstack("scenario")
    pct = table["diff_pct"].unstack("scenario")
    names = list(dict.fromkeys(table.index.get_level_values("scenario")))
    metrics_order = list(dict.fromkeys(table.index.get_level_values("metric")))
    units = table["units"].groupby(level="metric").first()
    wide = pd.DataFrame(index=pd.Index(metrics_order, name="metric"))
    wide["units"] = [  # in words, as the plots label them (--json keeps the model's)
        readable_units(str(u), m) or "-" for m, u in units.reindex(metrics_order).items()
    ]
    for i, name in enumerate(names):
        wide[name] = values[name].reindex(metrics_order)
        if i:
            wide[f"{name} %chg"] = [format_percent(v) for v in pct[name].reindex(metrics_order)]
    return wide


def cmd_critical_mass(args) -> int:
    """Bisect a lever for the launch's critical mass."""
    from .. import critical_mass

    if not args.low < args.high:
        raise UsageError(f"--low ({args.low:g}) must be below --high ({args.high:g})")
    if args.tol is not None and args.tol <= 0:
        raise UsageError(f"--tol must be positive, not {args.tol:g}")
    sc = scenario_for(args, args.scenario)
    options = simulate_options(args)
    try:
        push_end: float | str = float(args.push_end)
    except ValueError:
        push_end = args.push_end
    extra: dict[str, Any] = {
        "variable": args.variable,
        "push_end": push_end,
        "max_runs": args.max_runs,
    }
    if args.tol is not None:
        extra["tol"] = args.tol
    # The bar's length: the two ends of the bracket, then one run per halving.
    tol = args.tol if args.tol is not None else (args.high - args.low) * 1e-3
    width = abs(args.high - args.low)
    expected = 2 + (math.ceil(math.log2(width / tol)) if tol and width > tol else 0)
    with progress_bar(args, min(args.max_runs, expected), "critical mass") as bar:
        found = critical_mass(
            args.lever,
            args.low,
            args.high,
            scenario=sc,
            on_run=lambda _: bar.update(1),
            **extra,
            **options,
        )
    result = {
        "scenario": sc.name,
        "lever": found.lever,
        "threshold": found.threshold,
        "decays_at": found.bracket[0],
        "grows_at": found.bracket[1],
        "runs": found.runs,
        "criterion": found.criterion,
    }
    if args.json:
        print_json(result)
    else:
        print_record(_bracket_text(result), f"critical mass of {sc.name}")
    return EXIT_OK


def _bracket_text(result: dict) -> dict:
    """The record as printed: the lever's three values (threshold and the bracket's ends)
    with as many significant digits (four at least) as it takes to tell them apart
    ("656.25k" between "656.2k" and "656.3k" would read as one of them)."""
    from ..metrics import format_number

    keys = ("threshold", "decays_at", "grows_at")
    values = {result[k] for k in keys}
    digits = 4
    while digits < 15 and len({format_number(v, digits) for v in values}) < len(values):
        digits += 1
    return {k: format_number(v, digits) if k in keys else v for k, v in result.items()}
