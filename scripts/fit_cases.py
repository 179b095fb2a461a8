"""Fit the Wish and Amazon cases to their published series and write the fitted scenarios.

Each fit of `flywheel_sd.data.plausibility.FITS` calibrates a few constants of a case's
scenario (inside their documented ranges) with `flywheel_sd.calibrate` and writes the best
values as a scenario that extends it: flywheel_sd/scenarios/13_wish_fitted.toml and
32_amazon_fitted.toml. docs/plausibility.md compares them with the data;
tests/test_plausibility.py checks them and that a fresh fit lands within the stored
fit's bounds.

Usage::

    python scripts/fit_cases.py [NAME ...]

It prints each fit (payoff, best values, 95% profile bounds) and the file it wrote.
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import tomli_w

from flywheel_sd.data import plausibility as pl
from flywheel_sd.metrics import format_number

REPO = Path(__file__).resolve().parent.parent
FOLDER = REPO / "flywheel_sd" / "scenarios"
NUMBERS = {"wish_fitted": 13, "amazon_fitted": 32}


def description(case: pl.Fit, cal) -> str:
    """What was fitted to what, and how well, from the calibration's own numbers."""
    bounds = cal.bounds
    open_ = bool(bounds["low_open"].any() or bounds["high_open"].any())
    parts = []
    for name, value in cal.params.items():
        row = bounds.loc[name]
        low = ("at most " if row["low_open"] else "") + format_number(row["low"])
        high = ("at least " if row["high_open"] else "") + format_number(row["high"])
        parts.append(f"{name} {format_number(value)} (95% bounds {low} to {high})")
    note = "; 'at most'/'at least': the data allow any value to the search bound" * open_
    text = (
        f"{case.base} with {len(cal.params)} constants fitted by flywheel_sd.calibrate to "
        f"{', '.join(case.series)} (log payoff {cal.payoff:.4g}, {cal.n_runs} runs): "
        f"{case.why}. Fitted: {'; '.join(parts)}{note}. Written by scripts/fit_cases.py; "
        "see docs/plausibility.md."
    )
    return textwrap.fill(text, 92)


def main(names: list[str]) -> None:
    for case in pl.FITS:
        if names and case.name not in names:
            continue
        cal = pl.fit(case)
        print(cal)
        document = {
            "name": case.name,
            "extends": case.base,
            "description": description(case, cal),
            "params": {k: float(f"{v:.6g}") for k, v in cal.params.items()},
        }
        path = FOLDER / f"{NUMBERS[case.name]:02d}_{case.name}.toml"
        path.write_text(tomli_w.dumps(document, multiline_strings=True), encoding="utf-8")
        print(f"wrote {path.relative_to(REPO)}")


if __name__ == "__main__":
    main(sys.argv[1:])
