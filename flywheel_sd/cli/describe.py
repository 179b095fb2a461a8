"""``flywheel scenarios``, ``flywheel describe`` and ``flywheel diagram``: what there is."""

from __future__ import annotations

import dataclasses
import math
import shutil
import textwrap
import warnings
from pathlib import Path
from typing import Any

from ._common import (
    EXIT_OK,
    UsageError,
    check_plot,
    load_model,
    model_path,
    print_json,
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
        print_wrapped(table, None, _width())
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
    width = _width()
    times = model.time_settings()
    summary = (
        f"{model.path.name}: {len(stocks)} stocks, {len(loops)} loops, {len(levers)} levers; "
        f"t = {times['initial_time']:g} to {times['final_time']:g}, "
        f"TIME STEP {times['time_step']:g}, SAVEPER {times['saveper']:g}"
    )
    print(textwrap.fill(summary, width, subsequent_indent="  "))
    print()
    print_wrapped(stocks, "Stocks", width)
    print()
    if loops:
        import pandas as pd

        table = pd.DataFrame(loops).set_index("loop").drop(columns="description")
        source = loops_file.name if loops_file else "loops"
        print_wrapped(table, f"Loops ({source})", width)
    else:
        print(
            textwrap.fill(
                f"Loops: none documented (no {model.path.stem}.loops.toml beside the model)",
                width,
            )
        )
    print()
    print_wrapped(levers, "Levers (constants; range = documented [min, max])", width)
    return EXIT_OK


def _width() -> int:
    """The terminal's width (COLUMNS if set), 100 when output is not a terminal."""
    return max(shutil.get_terminal_size((100, 24)).columns, 20)


FLEX = 36  # the narrowest the meaning (or path) column of a table gets, if it can


def wrap_table(frame, width: int) -> list[str]:
    """`frame` (its index as the first column) as lines of at most `width` characters:
    numbers (one human format, right-aligned) keep their width, and the widest text
    columns are narrowed, their cells wrapped onto further lines, until the table fits."""
    import pandas as pd

    from ..metrics import format_number

    def cell(value) -> str:
        if isinstance(value, str):
            return " ".join(value.split())
        if value is None:
            return "-"
        return format_number(value)

    columns = [frame.index.name or "", *(str(c) for c in frame.columns)]
    numeric = [False, *(pd.api.types.is_numeric_dtype(frame[c]) for c in frame.columns)]
    rows = [
        [cell(index), *(cell(v) for v in values)]
        for index, values in zip(frame.index, frame.itertuples(index=False, name=None))
    ]
    widths = [
        max([len(columns[i]), *(len(r[i]) for r in rows)], default=1) for i in range(len(columns))
    ]
    gap = 2

    def over() -> int:
        return sum(widths) + gap * (len(widths) - 1) - width

    def shrink(columns: list[int], floor: int) -> None:
        """Narrow the widest of `columns`, one character at a time, until the table fits
        or none is wider than `floor`."""
        while over() > 0:
            wide = [i for i in columns if widths[i] > floor]
            if not wide:
                return
            widths[max(wide, key=lambda i: widths[i])] -= 1

    # The longest text column (meaning, path) takes what the others leave, but keeps at
    # least FLEX characters while other text columns can still give some up.
    text = [i for i in range(len(widths)) if not numeric[i]]
    flex = max(text, key=lambda i: widths[i])
    others = [i for i in text if i != flex]
    if over() > 0:
        widths[flex] = max(min(widths[flex], FLEX), widths[flex] - over())
        shrink([i for i in others if i != 0], 12)  # the row names (column 0) last
        shrink([0], 16)
        shrink([flex], 12)
        shrink(list(range(len(widths))), 4)  # a very narrow terminal: whatever it takes

    def render(cells: list[str]) -> list[str]:
        wrapped = [_wrap(text, widths[i]) for i, text in enumerate(cells)]
        lines = []
        for k in range(max(len(w) for w in wrapped)):
            parts = []
            for i, w in enumerate(wrapped):
                text = w[k] if k < len(w) else ""
                parts.append(text.rjust(widths[i]) if numeric[i] else text.ljust(widths[i]))
            lines.append((" " * gap).join(parts).rstrip())
        return lines

    out = render(columns)
    out.append((" " * gap).join("-" * w for w in widths))
    for row in rows:
        out.extend(render(row))
    return out


def _wrap(text: str, width: int) -> list[str]:
    """Lines of `text`, at most `width` long; a chain "A b -> C d" breaks at its arrows
    where it can, so that no variable name is split."""
    if " -> " in text:
        glued = " -> ".join(part.replace(" ", "\x1f") for part in text.split(" -> "))
        lines = textwrap.wrap(glued, width, break_on_hyphens=False)
        return [line.replace("\x1f", " ") for line in lines] or [""]
    if " " not in text and "/" in text and len(text) > width:  # units: break after a "/"
        lines = textwrap.wrap(text.replace("/", "/ "), width, break_on_hyphens=False)
        return [line.replace("/ ", "/") for line in lines] or [""]
    return textwrap.wrap(text, width, break_on_hyphens=False) or [""]


def print_wrapped(frame, title: str | None, width: int) -> None:
    """A table (under `title`) that fits in `width` columns (long cells wrap onto more
    lines)."""
    if title:
        print(textwrap.fill(title, width))
    if frame.empty:
        print("  (none)")
        return
    for line in wrap_table(frame, width):
        print(line)


def _describe(model):
    import numpy as np
    import pandas as pd
    import xarray as xr

    from ..metrics import format_number

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
            shown = "; ".join(  # not ", ": numbers have thousands separators
                f"{'/'.join(map(str, np.atleast_1d(k)))}={format_number(float(v))}"
                for k, v in value.to_series().items()
            )
        elif isinstance(value, (int, float, np.number)):
            shown = format_number(float(value))
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
    if out is None:  # --out is required
        raise UsageError("diagram needs --out PATH")
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
            plt.close(result)  # type: ignore[arg-type]  # a Figure, if the drawer returns one
    except ImportError:
        pass
    if args.json:
        print_json({"model": str(model), "out": str(out)})
    else:
        print(f"wrote {out}")
    return EXIT_OK
