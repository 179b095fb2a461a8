"""``flywheel scenarios``, ``flywheel describe`` and ``flywheel diagram``: what there is."""

from __future__ import annotations

import dataclasses
import math
import warnings
from pathlib import Path
from typing import Any

from ._common import (
    EXIT_OK,
    UsageError,
    check_plot,
    fmt,
    load_model,
    model_path,
    print_json,
    print_table,
    records,
    sentence,
)


def cmd_scenarios(args) -> int:
    """The scenarios with one-line descriptions; with --model, whether each fits that
    model."""
    import pandas as pd

    from .. import scenarios

    described = scenarios.describe()
    table = pd.DataFrame({"scenario": list(described), "description": list(described.values())})
    if args.model is not None:
        model = load_model(args)
        files = scenarios._files()  # name -> file, not yet checked against a model
        table[f"fits {model.path.name}"] = [
            _fits(scenarios.load_file(files[name], validate=False), model) for name in described
        ]
    table = table.set_index("scenario")
    if args.json:
        print_json(records(table))
    else:
        print_table(table)
    return EXIT_OK


def _fits(sc, model) -> str:
    """'yes', or 'no: ...' with the overrides the model lacks or the first problem."""
    from ..errors import FlywheelError

    unknown = []
    for key in sc.params:
        try:
            model.real_name(key)
        except FlywheelError:
            unknown.append(key)
    if unknown:
        more = f" (+{len(unknown) - 3} more)" if len(unknown) > 3 else ""
        return f"no: lacks {', '.join(unknown[:3])}{more}"
    try:
        dataclasses.replace(sc, model=str(model.path)).validate(model)
    except FlywheelError as err:
        return f"no: {sentence(str(err).split(': ')[-1], 60)}"
    return "yes"


def cmd_describe(args) -> int:
    """Stocks, loops and levers of the model."""
    model = load_model(args)
    stocks, loops, levers = _describe(model)
    loops_file = _loops_file(model)
    if args.json:
        print_json(
            {
                "model": str(model.path),
                "stocks": records(stocks),
                "loops": loops,
                "loops_file": str(loops_file) if loops_file else None,
                "levers": records(levers),
            }
        )
        return EXIT_OK
    for table in (stocks, levers):
        table["meaning"] = table["meaning"].map(lambda text: sentence(text, 72))
    times = model.time_settings()
    print(
        f"{model.path.name}: {len(stocks)} stocks, {len(loops)} loops, {len(levers)} levers; "
        f"t = {times['initial_time']:g} to {times['final_time']:g}, "
        f"TIME STEP {times['time_step']:g}, SAVEPER {times['saveper']:g}"
    )
    print()
    print_table(stocks, "Stocks", wrap=False)
    print()
    if loops:
        import pandas as pd

        table = pd.DataFrame(loops).set_index("loop").drop(columns="description")
        print_table(table, f"Loops ({loops_file.name})", wrap=False)
    else:
        print(f"Loops: none documented (no {model.path.stem}.loops.toml beside the model)")
    print()
    print_table(levers, "Levers (constants; range = documented [min, max])", wrap=False)
    return EXIT_OK


def _describe(model):
    import numpy as np
    import pandas as pd
    import xarray as xr

    doc = model.doc.set_index("Real Name")

    def text(name, column):
        value = doc.at[name, column] if column in doc.columns else ""
        return value if isinstance(value, str) else ""

    stocks = pd.DataFrame(
        [
            {"stock": s, "units": text(s, "Units"), "meaning": sentence(text(s, "Comment"))}
            for s in model.stocks
        ],
        columns=["stock", "units", "meaning"],
    ).set_index("stock")

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pysd_model = model.pysd_model()
        pysd_model.initialize()
    rows = []
    for name in model.constants:
        try:
            value = getattr(pysd_model.components, model.namespace[name])()
        except Exception:  # noqa: BLE001 - a constant that needs data files, say
            value = None
        if isinstance(value, xr.DataArray):
            shown = ", ".join(
                f"{'/'.join(map(str, np.atleast_1d(k)))}={fmt(float(v))}"
                for k, v in value.to_series().items()
            )
        elif isinstance(value, (int, float, np.number)):
            shown = fmt(float(value))
        else:
            shown = "" if value is None else str(value)
        low, high = model.ranges.get(name, (math.nan, math.nan))
        rows.append(
            {
                "lever": name,
                "default": shown,
                "min": low,
                "max": high,
                "units": text(name, "Units"),
                "meaning": sentence(text(name, "Comment")),
            }
        )
    levers = pd.DataFrame(
        rows, columns=["lever", "default", "min", "max", "units", "meaning"]
    ).set_index("lever")
    return stocks, read_loops(model), levers


def _loops_file(model) -> Path | None:
    source = Path(getattr(model, "path", model))
    path = source.with_name(source.stem + ".loops.toml")
    return path if path.is_file() else None


def read_loops(model) -> list[dict]:
    """The feedback loops documented beside a model, in ``<model>.loops.toml``.

    Parameters
    ----------
    model : Model or path
        A loaded model or its file.

    Returns
    -------
    list of dict
        One per loop: ``loop`` (its id, e.g. R1), ``name``, ``polarity``, ``path`` (the
        chain of variables) and ``description``. Empty if there is no loop index. The file
        holds ``[[loop]]`` or ``[[loops]]`` tables, or one table per loop keyed by its id.
    """
    import tomllib

    path = _loops_file(model)
    if path is None:
        return []
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise UsageError(f"{path}: not valid TOML ({' '.join(str(err).split())})") from None
    entries = data.get("loop", data.get("loops"))
    if isinstance(entries, dict):
        entries = [
            {"id": key, **value} for key, value in entries.items() if isinstance(value, dict)
        ]
    if entries is None:
        entries = [{"id": key, **value} for key, value in data.items() if isinstance(value, dict)]
    rows = []
    for entry in entries or []:
        if not isinstance(entry, dict):
            continue
        ident = str(entry.get("id", entry.get("code", entry.get("key", ""))))
        polarity = entry.get("polarity", entry.get("type", ""))
        if not polarity and ident[:1] in "RB":
            polarity = {"R": "reinforcing", "B": "balancing"}[ident[:1]]
        chain = entry.get(
            "path", entry.get("variables", entry.get("links", entry.get("chain", "")))
        )
        if isinstance(chain, list):
            chain = " -> ".join(map(str, chain))
        rows.append(
            {
                "loop": ident,
                "name": str(entry.get("name", entry.get("title", ""))),
                "polarity": str(polarity),
                "path": str(chain),
                "description": " ".join(str(entry.get("description", "")).split()),
            }
        )
    return rows


def cmd_diagram(args) -> int:
    """The model's structure picture."""
    out = check_plot(args.out, "--out")
    try:
        from ..diagram import draw_diagram
    except ImportError as err:
        raise UsageError(
            f"this installation cannot draw diagrams (flywheel_sd.diagram: {err})"
        ) from None
    from ..engine.model import DEFAULT_MODEL

    model = model_path(args) or DEFAULT_MODEL
    out.parent.mkdir(parents=True, exist_ok=True)
    options: dict[str, Any] = {}
    if args.views:
        options["views"] = args.views
    if args.dpi:
        options["dpi"] = args.dpi
    try:
        result = draw_diagram(model, out, **options)
    except ValueError as err:  # an unknown view
        raise UsageError(" ".join(str(err).split())) from None
    try:
        import matplotlib.pyplot as plt

        if hasattr(result, "savefig"):
            plt.close(result)
    except ImportError:
        pass
    if args.json:
        print_json({"model": str(model), "out": str(out)})
    else:
        print(f"wrote {out}")
    return EXIT_OK
