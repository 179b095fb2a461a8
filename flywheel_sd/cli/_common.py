"""What the subcommands share: errors, the model and scenario from the options, printing.

Heavy libraries (pandas, NumPy, matplotlib, tqdm) are imported inside the functions that use
them, so that ``flywheel --help`` stays fast.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
PROG = "flywheel"


class UsageError(Exception):
    """Bad command-line usage: exit status 2."""


class SweepFailed(Exception):
    """Every run of a sweep failed: exit status 1."""


# -- files named on the command line -------------------------------------------------------
# Every output path is checked before any run, so that a typo does not lose the results of a
# long run: its suffix, and that its folder exists or can be made and is writable.
def check_suffix(
    path: str | None, allowed: Sequence[str], option: str, folder: bool = False
) -> Path | None:
    """`path` (the value of `option`) as a Path, if it ends in one of `allowed` and can be
    written (`folder`: the output is a folder, e.g. a Zarr store)."""
    if path is None:
        return None
    out = Path(path).expanduser()
    if out.suffix.lower() not in allowed:
        raise UsageError(f"{option} {path}: expected a file ending in {', '.join(allowed)}")
    check_writable(out, option, folder)
    return out


def check_plot(path: str | None, option: str = "--plot") -> Path | None:
    """`path` as a Path, if matplotlib can write that kind of file there."""
    if path is None:
        return None
    from matplotlib.figure import Figure

    allowed = sorted("." + s for s in Figure().canvas.get_supported_filetypes())
    return check_suffix(path, allowed, option)


def check_writable(out: Path, option: str, folder: bool = False) -> None:
    """Refuse `out` in one line unless it can be written: not under a regular file, in a
    folder that exists or can be made and is writable; an existing `out` must be a file
    (a folder if `folder`) this user may replace. Nothing is created."""

    def refuse(why: str):
        raise UsageError(f"{option} {out}: {why}")

    try:
        if out.exists():
            if folder and not out.is_dir():
                refuse("is a file, not a folder; choose another path")
            if not folder and out.is_dir():
                refuse("is a folder; name a file")
            if not os.access(out, os.W_OK):
                refuse("is not writable")
        ancestor = out.parent
        while not ancestor.exists() and ancestor != ancestor.parent:
            ancestor = ancestor.parent
    except OSError as err:  # e.g. a folder on the way that this user may not search
        refuse(f"cannot be checked ({err.strerror or err})")
    if not ancestor.is_dir():
        refuse(f"{ancestor} is a file, not a folder")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        refuse(f"cannot write in {ancestor} (permission denied)")


# -- the model and scenario the options name -----------------------------------------------
def model_path(args) -> Path | None:
    """The --model file, resolved (None: the default model)."""
    if args.model is None:
        return None
    path = Path(args.model).expanduser()
    if not path.is_file():
        raise UsageError(f"{args.model}: no such model file")
    return path.resolve()


def load_model(args):
    from .. import load

    return load(model_path(args))


def scenario_for(args, name: str | None):
    """The scenario `name` (a built-in, a user's or a .toml file), moved onto --model, with
    the run's control values (--final-time, a --set of TIME STEP or SAVEPER) checked
    against its model before any run: a bad one is a usage error (exit 2)."""
    from ..engine.simulate import check_run_control

    sc = _scenario_for(args, name)
    settings = list(getattr(args, "set", None) or ())
    constants = {k: v for k, v in settings if not _is_policy(v)}
    final_time = getattr(args, "final_time", None)
    if final_time is not None or constants:
        model = sc.load_model()
        check_run_control(model, {**sc.params, **constants}, final_time)
        _check_windows(model, settings)
    return sc


def _check_windows(model, settings: list) -> None:
    """A --set of a constant that a --set policy's window sets (Deposit End Time beside
    Seller Deposit=2000@60:74) contradicts it: refused, naming both."""
    from ..scenarios import policy_companions

    constants = {model.real_name(k): f"{k}={v:g}" for k, v in settings if not _is_policy(v)}
    for key, value in settings:
        if not _is_policy(value):
            continue
        for companion in policy_companions(model, key):
            if companion in constants:
                end = f"{value.end:g}" if math.isfinite(value.end) else ""
                policy = f"{key}={value.value:g}@{value.start:g}:{end}"
                raise UsageError(
                    f"--set {constants[companion]!r} contradicts --set {policy!r}, whose "
                    f"window sets {companion!r}; give one of them"
                )


def _scenario_for(args, name: str | None):
    from .. import scenarios
    from ..scenarios import Scenario

    model = model_path(args)
    if name is None:
        if model is None:
            return scenarios.get("baseline")
        return Scenario(
            name=model.stem, description="the model's own parameters", model=str(model)
        )
    if model is None:
        return scenarios.get(name)
    if name.endswith(".toml") or Path(name).is_file():
        sc = scenarios.load_file(name, validate=False)
    else:
        files = scenarios._files()  # name -> file, without checking it against its own model
        if name not in files:
            scenarios.get(name)  # raises, listing the valid names
        sc = scenarios.load_file(files[name], validate=False)
    sc = dataclasses.replace(sc, model=str(model))
    sc.validate()
    return sc


def simulate_options(args) -> dict[str, Any]:
    """`simulate`'s keyword arguments from the simulation options and the constant --set's."""
    from .. import METHODS

    options: dict[str, Any] = {}
    if args.method is not None:
        canonical = {m.lower(): m for m in METHODS}
        if args.method.lower() not in canonical:
            raise UsageError(f"unknown method {args.method!r}; valid: {', '.join(METHODS)}")
        options["method"] = canonical[args.method.lower()]
    for key in ("rtol", "atol", "final_time", "range_check"):
        if getattr(args, key, None) is not None:
            options[key] = getattr(args, key)
    constants = {k: v for k, v in getattr(args, "set", None) or () if not _is_policy(v)}
    if constants:  # checked by simulate, which honours --range-check
        options["params"] = constants
    return options


def _is_policy(value) -> bool:
    from ..scenarios import Policy

    return isinstance(value, Policy)


def with_policies(args, sc):
    """`sc` plus the time-bound --set overrides (policies live in the scenario, so that
    their switch times become breakpoints and their windows are shaded on plots)."""
    policies = {k: v for k, v in getattr(args, "set", None) or () if _is_policy(v)}
    if not policies:
        return sc
    return dataclasses.replace(sc, params={**sc.params, **policies}, source=None)


def progress_bar(args, total: int | None, desc: str):
    from tqdm.auto import tqdm

    # disable=None: quiet when stderr is not a terminal.
    return tqdm(
        total=total,
        desc=desc,
        unit="run",
        file=sys.stderr,
        leave=False,
        disable=True if args.quiet or args.json else None,
    )


def units_of(model) -> dict[str, str]:
    """Vensim name -> units ("" where the model gives none)."""
    doc = model.doc
    units = zip(doc["Real Name"], doc["Units"], strict=True)
    return {real: (u if isinstance(u, str) else "") for real, u in units}


# -- printing ------------------------------------------------------------------------------
def _clean(value: Any) -> Any:
    """JSON-safe: NaN -> null, +/-inf -> "inf"/"-inf" (so "never" stays apart from "not
    applicable", as in months_to_recover), NumPy scalars -> Python, tuples -> lists."""
    import numpy as np

    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, np.ndarray):
        return [_clean(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def to_json(value: Any) -> str:
    return json.dumps(_clean(value))


def print_json(obj: Any) -> None:
    print(json.dumps(_clean(obj), indent=2))


def fmt(value: Any) -> str:
    """A number in a printed table, as ``metrics.format_number`` writes it (4 significant
    digits, never an exponent: "7,913", "45.44k", "18.23B"); NaN is "-", infinities
    "inf"/"-inf" (so "never" stays apart from "not applicable"). Beyond a thousand
    trillion or below 0.0001 (a run that blew up, a vanishing index) the exponent is the
    shorter truth ("3.2e+17"). Not floats: as they are."""
    import numpy as np

    from ..metrics import format_number

    if isinstance(value, (float, np.floating)):
        size = abs(float(value))
        if math.isfinite(size) and (size >= 1e15 or 0 < size < 1e-4):
            return f"{value:.4g}"
        return format_number(value)
    return str(value)


def print_table(frame, title: str | None = None, wrap: bool = True) -> None:
    """A DataFrame as text; wide tables wrap at the terminal's width unless `wrap` is off."""
    if title:
        print(title)
    if frame.empty:
        print("  (none)")
        return
    width = shutil.get_terminal_size((120, 24)).columns if wrap else None
    frame = frame.copy()
    for column in frame.columns:  # words read better left-aligned (numbers stay right)
        values = frame[column]
        if (
            values.dtype == object
            and values.map(type).eq(str).all()
            and values.str.contains(r"[A-Za-z]").any()
        ):
            size = max(frame[column].str.len().max(), len(str(column)))
            frame[column] = frame[column].str.ljust(size)
    print(frame.to_string(float_format=fmt, line_width=width, na_rep="-"))


def print_record(record: dict, title: str | None = None) -> None:
    if title:
        print(title)
    width = max(len(str(k)) for k in record)
    for key, value in record.items():
        print(f"  {str(key).ljust(width)}  {fmt(value)}")


def print_wrote(paths: Sequence[Path]) -> None:
    for path in paths:
        print(f"wrote {path}")


def records(frame) -> list[dict]:
    return frame.reset_index().to_dict(orient="records")


def sentence(text: str, limit: int | None = None) -> str:
    """The first informative sentence of a comment, cut to `limit` characters."""
    sentences = [s.strip().rstrip(".") for s in " ".join(text.split()).split(". ")]
    sentences = [s for s in sentences if s]
    while len(sentences) > 1 and (
        sentences[0].lower().startswith("stock") and len(sentences[0]) < 16
    ):
        sentences.pop(0)  # "Stock." or "Stock, 0-1." says less than what follows
    first = sentences[0] if sentences else ""
    return first if limit is None or len(first) <= limit else first[: limit - 3] + "..."
