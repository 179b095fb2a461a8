"""The SDXorg test-models suite as conformance cases: discovery, canonical outputs, comparison.

Used by ``tests/test_conformance.py`` and ``benchmarks/bench_engine.py``. The suite is found
through ``$FLYWHEEL_TEST_MODELS`` and is read in place (never copied into the project).
"""

from __future__ import annotations

import io
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

ENV = "FLYWHEEL_TEST_MODELS"
RTOL = 0.05
ATOL = 1e-5
CONTROL = {"initial time", "final time", "time step", "saveper"}


def suite_root() -> Path | None:
    """The suite's folder, or None when the environment variable is unset or wrong."""
    value = os.environ.get(ENV)
    if not value:
        return None
    root = Path(value).expanduser().resolve()
    return root if (root / "tests").is_dir() else None


@dataclass(frozen=True)
class Case:
    """One model of the suite that has a canonical output next to it."""

    id: str  # e.g. "tests/delays" or "tests/subscript_copy/test_subscript_copy2"
    mdl: Path
    canonical: Path


def discover(root: Path) -> list[Case]:
    """Every ``.mdl`` under tests/ and samples/ whose folder has an output.tab/output.csv."""
    cases = []
    for group in ("tests", "samples"):
        for folder in sorted((root / group).iterdir()):
            if not folder.is_dir():
                continue
            canonical = next(
                (folder / n for n in ("output.tab", "output.csv") if (folder / n).is_file()),
                None,
            )
            models = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".mdl")
            if canonical is None or not models:
                continue
            for mdl in models:
                case_id = f"{group}/{folder.name}"
                if len(models) > 1:
                    case_id += f"/{mdl.stem}"
                cases.append(Case(case_id, mdl, canonical))
    return cases


# -- canonical outputs --------------------------------------------------------------------
def _decode(raw: bytes) -> str:
    for encoding in ("utf-8-sig", "utf-16"):
        try:
            text = raw.decode(encoding)
        except UnicodeDecodeError:
            continue
        if "\x00" not in text:
            return text
    return raw.decode("cp1252", errors="replace")  # Vensim on Windows writes ANSI


def _number(text: str) -> float:
    text = text.strip()
    if text in {":NA:", "NA", "N/A", ""}:
        return math.nan
    try:
        return float(text)
    except ValueError:
        return math.nan


def read_canonical(path: Path) -> pd.DataFrame:
    """Vensim's output as a float frame indexed by time, whatever its line endings
    (old-Mac ``\\r`` included), separator (tab or comma) or orientation (one variable per
    column, or per row as Vensim's "transposed" export)."""
    text = _decode(Path(path).read_bytes()).replace("\r\n", "\n").replace("\r", "\n")
    sep = "\t" if path.suffix.lower() == ".tab" else ","
    rows = pd.read_csv(io.StringIO(text), sep=sep, header=None, dtype=str,
                       keep_default_na=False, skip_blank_lines=True).values.tolist()
    rows = [r for r in rows if any(str(c).strip() for c in r)]
    header = [str(c).strip() for c in rows[0]]
    transposed = header[0].lower() == "time" and not math.isnan(_number(header[1]))
    if transposed:  # first column holds names, first row is "Time, t0, t1, ..."
        names = [str(r[0]).strip() for r in rows[1:]]
        index = [_number(c) for c in rows[0][1:]]
        data = [[_number(c) for c in r[1:]] for r in rows[1:]]
        frame = pd.DataFrame(np.array(data, dtype=float).T, index=index, columns=names)
    else:
        names = header[1:]
        index = [_number(r[0]) for r in rows[1:]]
        data = [[_number(c) for c in r[1:]] for r in rows[1:]]
        frame = pd.DataFrame(np.array(data, dtype=float), index=index, columns=names)
    frame = frame.loc[~np.isnan(frame.index.values.astype(float))]
    frame = frame.loc[:, [c for c in frame.columns if c]]
    frame.index = frame.index.astype(float)
    return frame


# -- names --------------------------------------------------------------------------------
def name_key(name: str) -> str:
    """A key under which a Vensim output column and a PySD column compare equal:
    case, runs of white space/underscores and the spaces after commas in subscripts do not
    count (Vensim names are case- and space/underscore-insensitive)."""
    name = str(name).strip()
    if len(name) >= 2 and name[0] == name[-1] == '"' and '"' not in name[1:-1]:
        name = name[1:-1]
    name = re.sub(r"[\s_]+", " ", name).strip().lower()
    return re.sub(r"\s*([\[\],])\s*", r"\1", name)


# -- comparison ---------------------------------------------------------------------------
@dataclass
class Comparison:
    """How an output frame compares with a canonical one, column by column."""

    compared: list[str] = field(default_factory=list)
    failed: dict[str, float] = field(default_factory=dict)  # column -> worst error (tol units)
    missing_times: int = 0
    note: str = ""

    @property
    def ok(self) -> bool:
        return bool(self.compared) and not self.failed and not self.missing_times

    def summary(self) -> str:
        if not self.compared:
            return "no column in common with the canonical output"
        if self.missing_times:
            return f"{self.missing_times} canonical times missing from the output"
        if not self.failed:
            return f"{len(self.compared)} columns within rtol {RTOL}"
        worst = sorted(self.failed.items(), key=lambda kv: -kv[1])[:3]
        shown = ", ".join(f"{c!r} ({e:.3g}x tol)" for c, e in worst)
        return f"{len(self.failed)}/{len(self.compared)} columns off: {shown}"


def _fill_constant_nan(frame: pd.DataFrame) -> pd.DataFrame:
    """Vensim writes constants only in the first row; repeat them down."""
    frame = frame.copy()
    if len(frame) > 1:
        later = frame.iloc[1:]
        constant = later.isna().all().values & frame.iloc[0].notna().values
        for column in frame.columns[constant]:
            frame[column] = frame[column].iloc[0]
    return frame


def align(actual: pd.DataFrame, canonical: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame,
                                                                   int]:
    """Both frames on the canonical times (matched to 1e-6 relative) and common columns."""
    by_key = {}
    for column in actual.columns:
        by_key.setdefault(name_key(column), column)
    pairs = [(c, by_key[name_key(c)]) for c in canonical.columns if name_key(c) in by_key]
    times = np.asarray(actual.index, dtype=float)
    # Vensim writes times with 6 significant digits (10.0312 for 10.03125): match the
    # nearest output time within a quarter of the output's spacing.
    spacing = float(np.min(np.diff(times))) if len(times) > 1 else 1.0
    rows, missing = [], 0
    keep = []
    for t in np.asarray(canonical.index, dtype=float):
        i = np.searchsorted(times, t)
        near = sorted((abs(times[j] - t), j) for j in (i - 1, i) if 0 <= j < len(times))
        near = [j for d, j in near if d <= 0.25 * spacing + 1e-9 * max(1.0, abs(t))]
        if near:
            rows.append(near[0])
            keep.append(True)
        else:
            missing += 1
            keep.append(False)
    canon = _fill_constant_nan(canonical).loc[np.array(keep, dtype=bool),
                                              [c for c, _ in pairs]]
    values = pd.DataFrame(
        {c: pd.to_numeric(actual[a].iloc[rows], errors="coerce").values for c, a in pairs},
        index=canon.index,
    )
    return values, canon, missing


def compare(actual: pd.DataFrame, canonical: pd.DataFrame, rtol: float = RTOL,
            atol: float = ATOL) -> Comparison:
    """PySD's test criterion, |actual - canonical| <= atol + rtol*|actual| (NaN == NaN),
    on the columns and times the two frames share."""
    values, canon, missing = align(actual, canonical)
    result = Comparison(compared=list(canon.columns), missing_times=missing)
    for column in canon.columns:
        x = canon[column].to_numpy(dtype=float)
        y = values[column].to_numpy(dtype=float)
        both_nan = np.isnan(x) & np.isnan(y)
        with np.errstate(invalid="ignore"):
            err = np.abs(x - y) / (atol + rtol * np.abs(y))
        err = np.where(both_nan, 0.0, err)
        err = np.where(np.isnan(err), np.inf, err)
        worst = float(err.max()) if err.size else 0.0
        if worst > 1.0:
            result.failed[column] = worst
    return result


def relative_error(actual: pd.DataFrame, reference: pd.DataFrame) -> float:
    """Largest |actual - reference| / (scale of the column) over common columns and times
    (control variables left out), where a column's scale is max |reference|."""
    values, ref, _ = align(actual, reference)
    worst = 0.0
    for column in ref.columns:
        if name_key(column) in CONTROL:
            continue
        x = ref[column].to_numpy(dtype=float)
        y = values[column].to_numpy(dtype=float)
        if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
            continue
        scale = max(float(np.max(np.abs(x))), 1e-12)
        worst = max(worst, float(np.max(np.abs(y - x))) / scale)
    return worst
