"""Options: the groups several subcommands share, and the types that parse option values.

A type refuses a value with `OptionError`: argparse shows it as a one-line usage error
(exit 2), and code that calls the types directly catches it as a `ParameterError`.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from typing import Any

from ..errors import ParameterError


class OptionError(ParameterError, argparse.ArgumentTypeError):
    """A malformed option value, in one line (argparse shows its message as it is)."""


@dataclasses.dataclass(frozen=True)
class Option:
    """One ``parser.add_argument(*flags, **settings)`` call, kept as data."""

    flags: tuple[str, ...]
    settings: dict[str, Any]

    def add_to(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(*self.flags, **self.settings)


def option(*flags: str, **settings: Any) -> Option:
    return Option(flags, settings)


# -- argument types ------------------------------------------------------------------------
def number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise OptionError(f"not a number: {text!r}") from None
    if not math.isfinite(value):
        raise OptionError(f"not a finite number: {text!r}")
    return value


def positive_number(text: str) -> float:
    value = number(text)
    if value <= 0:
        raise OptionError(f"must be positive: {text!r}")
    return value


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise OptionError(f"not a whole number: {text!r}") from None
    if value <= 0:
        raise OptionError(f"must be positive: {text!r}")
    return value


def setting(text: str) -> tuple[str, Any]:
    """NAME=VALUE, or NAME=VALUE@START[:END] for a time-bound policy."""
    name, sep, value = text.partition("=")
    name = name.strip()
    if not sep or not name or not value.strip():
        raise OptionError(f"expected NAME=VALUE, got {text!r}")
    value, at, window = value.partition("@")
    amount = _setting_number(text, value)
    if not at:
        return name, amount
    start, colon, end = window.partition(":")
    from ..scenarios import Policy

    try:
        policy = Policy(
            amount,
            _setting_number(text, start),
            _setting_number(text, end) if colon and end.strip() else math.inf,
        )
    except ParameterError as err:
        raise OptionError(f"{text!r}: {err}") from None
    return name, policy


def _setting_number(text: str, part: str) -> float:
    try:
        value = float(part)
    except ValueError:
        raise OptionError(
            f"expected NAME=VALUE or NAME=VALUE@START:END with numbers, got {text!r}"
        ) from None
    if not math.isfinite(value):
        raise OptionError(f"{text!r}: the value is not finite")
    return value


@dataclasses.dataclass(frozen=True)
class ParamRange:
    """A parameter named on the command line, with an optional range and grid levels."""

    name: str
    low: float | None = None
    high: float | None = None
    levels: int | None = None


def param_range(text: str) -> ParamRange:
    """NAME, NAME=LOW:HIGH or NAME=LOW:HIGH:N."""
    name, sep, spec = text.partition("=")
    name = name.strip()
    if not name:
        raise OptionError(f"expected NAME=LOW:HIGH[:N], got {text!r}")
    if not sep:
        return ParamRange(name)
    parts = spec.split(":")
    if len(parts) not in (2, 3):
        raise OptionError(f"expected NAME=LOW:HIGH[:N], got {text!r}")
    try:
        low, high = float(parts[0]), float(parts[1])
        levels = int(parts[2]) if len(parts) == 3 else None
    except ValueError:
        raise OptionError(f"expected NAME=LOW:HIGH[:N] with numbers, got {text!r}") from None
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise OptionError(f"{text!r}: the range is empty; need LOW < HIGH")
    if levels is not None and levels < 2:
        raise OptionError(f"{text!r}: a grid needs at least 2 levels")
    return ParamRange(name, low, high, levels)


# -- option groups -------------------------------------------------------------------------
def add_common(parser: argparse.ArgumentParser, top: bool) -> None:
    """--model, --json, --quiet, --debug: accepted before or after the subcommand. Only the
    top-level parser sets their defaults, so a subcommand does not undo them."""
    default = (lambda value: value) if top else (lambda value: argparse.SUPPRESS)
    parser.add_argument(
        "--model",
        metavar="PATH",
        default=default(None),
        help="model file (.mdl, .xmile or PySD .py); default: the platform flywheel",
    )
    parser.add_argument(
        "--json", action="store_true", default=default(False), help="print results as JSON"
    )
    parser.add_argument(
        "-q", "--quiet", action="store_true", default=default(False), help="no progress bar"
    )
    parser.add_argument(
        "--debug", action="store_true", default=default(False), help="show tracebacks"
    )


def _simulation(method_flag: str) -> list[Option]:
    return [
        option(
            method_flag,
            dest="method",
            metavar="M",
            help="integration method: RK45 (default), RK23, DOP853, LSODA, BDF, Radau, euler, rk4",
        ),
        option("--rtol", type=positive_number, help="relative tolerance"),
        option("--atol", type=positive_number, help="absolute tolerance"),
        option(
            "--final-time", type=number, metavar="T", help="end the run at T instead of FINAL TIME"
        ),
        option(
            "--range-check",
            choices=("error", "warn", "off"),
            help="a parameter outside its documented range: error (default), warn or off",
        ),
    ]


# Group name -> its options; a subcommand's table entry names the groups it takes.
GROUPS: dict[str, list[Option]] = {
    "simulation": _simulation("--method"),
    # `sensitivity` uses --method for the analysis, so its integration method is --solver.
    "solver": _simulation("--solver"),
    "set": [
        option(
            "--set",
            action="append",
            type=setting,
            default=[],
            metavar="NAME=VALUE",
            help="override a parameter in every run (repeatable); NAME=VALUE@START:END "
            "sets it only from START to END (through the model's own window constants where "
            "it has them, e.g. Seller Deposit's Deposit Start Time and Deposit End Time)",
        ),
    ],
    "executor": [
        option(
            "--executor",
            choices=("ensemble", "processes", "dask"),
            help="where runs go: ensemble (this process, vectorized; default), processes "
            "(a local pool) or dask",
        ),
        option(
            "--scheduler",
            metavar="ADDR",
            help="Dask scheduler address, e.g. tcp://host:8786 (implies --executor "
            "dask; without it, dask starts a LocalCluster)",
        ),
        option(
            "--workers",
            type=positive_int,
            metavar="N",
            help="processes for --executor processes or a local Dask cluster",
        ),
    ],
    "design": [
        option(
            "--param",
            action="append",
            required=True,
            type=param_range,
            metavar="NAME=LOW:HIGH[:N]",
            help="a swept parameter (repeatable); LOW:HIGH default to its documented "
            "range; N = grid levels",
        ),
        option(
            "--design",
            choices=("grid", "lhs", "sobol", "morris", "saltelli"),
            default="lhs",
            help="sampling design (default: lhs)",
        ),
        option(
            "--n",
            type=positive_int,
            help="number of samples (grid: levels per parameter unless :N given)",
        ),
        option("--seed", type=int, default=0, help="random seed (default 0)"),
    ],
}


def add_group(parser: argparse.ArgumentParser, name: str) -> None:
    for entry in GROUPS[name]:
        entry.add_to(parser)
