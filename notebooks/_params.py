"""Shared settings of the notebooks: run sizes, solver options, and numbers written as prose.

Set ``FLYWHEEL_NOTEBOOK_SMALL=1`` to make every notebook small and quick (fewer runs, looser
tolerances, coarser searches), as the test suite runs them. Unset, the notebooks run at full
size.
"""

from __future__ import annotations

import math
import os
import textwrap
from pathlib import Path

SMALL = os.environ.get("FLYWHEEL_NOTEBOOK_SMALL", "").strip().lower() not in (
    "",
    "0",
    "false",
    "no",
)

#: Options for simulate/run_scenario/compare: tight by default, looser when small.
SOLVER: dict = {"rtol": 1e-4, "atol": 1e-3} if SMALL else {}


def size(full, small):
    """`full` normally, `small` under FLYWHEEL_NOTEBOOK_SMALL."""
    return small if SMALL else full


def num(x: float, digits: int = 3) -> str:
    """A number for prose: 12.3 million, 4,560, 0.734."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    a = abs(x)
    for limit, word in ((1e9, "billion"), (1e6, "million")):
        if a >= limit:
            return f"{x / limit:.{digits}g} {word}"
    if a >= 1000:
        return f"{x:,.0f}"
    return f"{x:.{digits}g}"


def usd(x: float) -> str:
    """Money for prose: US$1.2 million, -US$3 million."""
    return ("-US$" if x < 0 else "US$") + num(abs(x))


def pct(x: float, digits: int = 0) -> str:
    """A signed percentage: +12%, -3%."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{x:+.{digits}f}%"


def change(new: float, old: float) -> float:
    """Percent change of `new` from `old`."""
    return (new - old) / abs(old) * 100 if old else math.nan


def more_or_less(x: float, more: str = "above", less: str = "below", same: str = "level with"):
    """A word for the sign of a difference."""
    if x > 0:
        return more
    if x < 0:
        return less
    return same


def md(text: str):
    """Markdown shown as a notebook output (the prose is built from computed numbers)."""
    from IPython.display import Markdown

    return Markdown(textwrap.dedent(text).strip())


def series(ds, scenario: str, variable: str):
    """One variable of one scenario of a comparison, as a pandas Series over time."""
    return ds[variable].sel(scenario=scenario).to_series()


#: Where notebooks write files (sweep stores, figures): $FLYWHEEL_NOTEBOOK_OUT, else out/notebooks.
OUT = Path(
    os.environ.get("FLYWHEEL_NOTEBOOK_OUT")
    or Path(__file__).resolve().parent.parent / "out" / "notebooks"
)
