"""``flywheel run``: one scenario; a summary of its stocks; optional file and figure."""

from __future__ import annotations

import json

from ._common import (
    EXIT_OK,
    check_plot,
    check_suffix,
    print_json,
    print_table,
    print_wrote,
    records,
    scenario_for,
    simulate_options,
    units_of,
    with_policies,
)
from ._files import save_comparison_plot, write_netcdf


def cmd_run(args) -> int:
    from .. import run_scenario
    from ..scenarios.compare import frames_to_dataset

    out = check_suffix(args.out, (".csv", ".nc"), "--out")
    plot = check_plot(args.plot)
    sc = with_policies(args, scenario_for(args, args.scenario))
    model = sc.load_model()
    options = simulate_options(args)
    if args.columns:
        options["return_columns"] = [model.real_name(c) for c in args.columns]
    # Read the metadata the summary needs now: after a run, reading it reloads the model.
    units = units_of(model)
    frame = run_scenario(sc, **options)

    wrote = []  # files first: a closed pipe on stdout must not lose them
    if out is not None or plot is not None:
        ds = frames_to_dataset([frame], [sc.name])
        ds.attrs.update(
            policy_windows=json.dumps({sc.name: sc.windows()}),
            method=str(frame.attrs.get("method", "")),
            model=str(model.path),
            model_sha256=model.sha256,
        )
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.suffix.lower() == ".csv":
            frame.to_csv(out, index_label="time")
        else:
            write_netcdf(ds.isel(scenario=0), out)
        wrote.append(out)
    if plot is not None:
        save_comparison_plot(ds, model, plot)
        wrote.append(plot)

    table = _summary(frame, model, args.columns, units)
    if args.json:
        print_json(
            {
                "scenario": sc.name,
                "model": str(model.path),
                "method": frame.attrs.get("method"),
                "summary": records(table),
                "wrote": [str(w) for w in wrote],
            }
        )
    else:
        print_table(
            _in_words(table),
            f"{sc.name} on {model.path.name} "
            f"({frame.attrs.get('method')}, t = {frame.index[0]:g} to "
            f"{frame.index[-1]:g})",
        )
        print_wrote(wrote)
    return EXIT_OK


def _summary(frame, model, columns, units):
    """Initial, final, min and max of the stocks (or of the chosen columns)."""
    import pandas as pd

    wanted = [model.real_name(c) for c in columns] if columns else model.stocks
    rows = []
    for name in wanted:
        for col in frame.columns:
            if col == name or str(col).startswith(name + "["):
                series = pd.to_numeric(frame[col], errors="coerce")
                rows.append(
                    {
                        "variable": col,
                        "units": units.get(name, ""),
                        "initial": float(series.iloc[0]),
                        "final": float(series.iloc[-1]),
                        "min": float(series.min()),
                        "max": float(series.max()),
                    }
                )
    return pd.DataFrame(
        rows, columns=["variable", "units", "initial", "final", "min", "max"]
    ).set_index("variable")


def _in_words(table):
    """The table as printed: units in words ("fraction (0-1)", "visits / month"), as the
    plots label them; --json keeps the model's own units."""
    from ..metrics import readable_units

    return table.assign(
        units=[readable_units(u, str(v)) or "-" for u, v in zip(table["units"], table.index)]
    )
