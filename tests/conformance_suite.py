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
    rows = pd.read_csv(
        io.StringIO(text),
        sep=sep,
        header=None,
        dtype=str,
        keep_default_na=False,
        skip_blank_lines=True,
    ).values.tolist()
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
    first_time: float | None = None  # the earliest canonical time at which a column fails

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


def align(actual: pd.DataFrame, canonical: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, int]:
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
    canon = _fill_constant_nan(canonical).loc[np.array(keep, dtype=bool), [c for c, _ in pairs]]
    values = pd.DataFrame(
        {c: pd.to_numeric(actual[a].iloc[rows], errors="coerce").values for c, a in pairs},
        index=canon.index,
    )
    return values, canon, missing


def compare(
    actual: pd.DataFrame, canonical: pd.DataFrame, rtol: float = RTOL, atol: float = ATOL
) -> Comparison:
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
            first = float(canon.index[int(np.argmax(err > 1.0))])
            result.first_time = (
                first if result.first_time is None else min(result.first_time, first)
            )
    return result


def relative_errors(actual: pd.DataFrame, reference: pd.DataFrame) -> dict[str, float]:
    """For each column of `reference` that `actual` has (by `name_key`), on the reference's
    times: max |actual - reference| / scale, the scale being the column's max |reference|.
    Non-finite values agree only with the same value (NaN with NaN, inf with inf of the
    same sign); anywhere else they make the column's error inf, and so does a column with
    no finite value at all (nothing shows agreement). A column identically 0 in the
    reference has error 0 if `actual` is 0 there too, else inf."""
    values, ref, _ = align(actual, reference)
    errors = {}
    for column in ref.columns:
        x = ref[column].to_numpy(dtype=float)
        y = values[column].to_numpy(dtype=float)
        finite = np.isfinite(x) & np.isfinite(y)
        same = (x == y) | (np.isnan(x) & np.isnan(y))
        if not finite.any() or not np.all(finite | same):
            errors[column] = math.inf
            continue
        scale = float(np.max(np.abs(x[finite])))
        diff = float(np.max(np.abs(y[finite] - x[finite])))
        errors[column] = diff / scale if scale > 0 else (0.0 if diff == 0 else math.inf)
    return errors


def relative_error(actual: pd.DataFrame, reference: pd.DataFrame) -> float:
    """The largest of `relative_errors` over the common columns; inf when there is none
    (or none with a finite value): never 0 for want of a comparison."""
    errors = relative_errors(actual, reference)
    return max(errors.values()) if errors else math.inf


# -- what we know about individual models (PySD's own integration tests keep such a table) --
PYSD_FAILS = "pysd_fails"  # PySD's own run() fails: euler may fail the same way (xfail)
REFUSED = "refused"  # the adaptive methods must refuse it, naming this kind of element
EXCEPTION = "exception"  # canonical Euler output is >5% from the converged solution
ADAPTIVE_XFAIL = "adaptive_xfail"  # listed exception whose evidence fails (strict xfail)
DATA_FILES = "data_files"
SKIP = "skip"

CASE_TABLE: dict[str, dict] = {
    # not a conformance case
    "tests/data_from_other_model/model_to_generate_data": {
        SKIP: "generates data.tab for its sibling; the folder's output.tab is the sibling's"
    },
    # data
    "tests/data_from_other_model/test_data_from_other_model": {
        DATA_FILES: ["data.tab"],
        EXCEPTION: "HOLD BACKWARD / LOOK FORWARD data are step functions of time; Euler "
        "samples them at grid points",
    },
    # PySD itself cannot run these as Vensim does
    "tests/get_time_value/test_get_time_value": {
        PYSD_FAILS: "PySD 3.14 does not implement GET TIME VALUE with relativeto=1"
    },
    "samples/Query_file": {
        PYSD_FAILS: "RANDOM UNIFORM: PySD draws other random numbers than Vensim",
        REFUSED: "DELAY FIXED",
    },
    "samples/Roessler_Chaos": {
        PYSD_FAILS: "chaotic: round-off differences between PySD's and Vensim's Euler grow "
        "exponentially (dxdt 2.7x the tolerance)",
        EXCEPTION: "chaotic attractor: Euler at the model's TIME STEP is far from the "
        "converged trajectory",
    },
}  # and below, by reason: the models the adaptive methods refuse and the Euler exceptions


def _add(key: str, by_reason: dict[str, list[str]]) -> None:
    """Enter each case of `by_reason` ({reason: [case ids]}) in CASE_TABLE as {key: reason}."""
    for reason, ids in by_reason.items():
        for case_id in ids:
            assert case_id not in CASE_TABLE, f"{case_id} is listed twice"
            CASE_TABLE[case_id] = {key: reason}


# Discrete elements and run-time control variables: the adaptive methods refuse them.
_add(
    REFUSED,
    {
        "DELAY FIXED": ["tests/delay_fixed", "tests/delay_pipeline", "tests/forecast"],
        "SAMPLE IF TRUE": ["tests/sample_if_true"],
        "DELAY N with a time-varying delay time": ["tests/delays"],
        "FINAL TIME changes during the run": ["tests/dynamic_final_time"],
        "tests Time for equality": ["tests/time"],
        "changes during the run": ["tests/control_vars"],
    },
)

# Oscillators and flows that change within a TIME STEP: Euler's own error exceeds 5%.
_add(
    EXCEPTION,
    {
        "oscillator: Euler spirals outwards": ["samples/simple_harmonic_oscillator"],
        "SMOOTH with a smoothing time of 1 TIME STEP": ["tests/active_initial_circular"],
        "first-order Euler error of nested SMOOTHs": ["tests/arguments"],
        "DELAY N with a delay of a few TIME STEPs": ["tests/delay_numeric_error"],
        "DELAY1 with a delay of a few TIME STEPs": ["tests/delay_parentheses"],
        "first-order Euler error of a stock near zero": ["tests/except"],
        "LOOK FORWARD data: Euler samples a step function at grid points": [
            "tests/get_data_args_3d_xls"
        ],
        "stock of a lookup of Time: Euler's rectangle rule": [
            "tests/get_lookups_data_3d_xls",
            "tests/lookups",
            "tests/lookups_funcnames",
            "tests/lookups_without_range",
        ],
        "stock of a flow ~ Time: Euler's rectangle rule": [
            "tests/initial_function",
            "tests/line_continuation",
        ],
        "stock of LN(Time): Euler's rectangle rule near the singularity": ["tests/ln"],
        "stock of SQRT(Time): Euler's rectangle rule near 0": ["tests/sqrt"],
        "stock of an IF THEN ELSE on Time: Euler's rectangle rule": ["tests/nested_functions"],
        "SMOOTH3/SMOOTH N with a smoothing time of a few TIME STEPs": ["tests/smooth"],
        "fast exponential growth at TIME STEP 1": [
            "tests/subscript_copy/test_subscript_copy",
            "tests/subscript_copy/test_subscript_copy2",
            "tests/subscript_mapping_simple",
            "tests/subscript_numeric_range",
        ],
        "first-order Euler error of a delay": ["tests/subscript_switching"],
        "TREND with an averaging time of a few TIME STEPs": [
            "tests/subscripted_trend",
            "tests/trend",
        ],
        "DELAY3 with a delay of a few TIME STEPs": ["tests/subscripted_delays"],
        "SMOOTH3 with a smoothing time of a few TIME STEPs": ["tests/subscripted_smooth"],
        "first-order Euler error": ["tests/zeroled_decimals"],
    },
)


def options(case: Case) -> dict:
    return CASE_TABLE.get(case.id, {})


# -- running one case (in a worker process) -------------------------------------------------
# The converged reference of an exception: DOP853 at tight tolerances, through simulate(),
# so the model's breakpoints and discontinuities are handled as the engine handles them.
CONVERGED = {"method": "DOP853", "rtol": 1e-10, "atol": 1e-12}
#: How close (relative to each column's max |value|) the adaptive run must be to it.
ADAPTIVE_VS_CONVERGED = 1e-3


def _columns(model, canonical: pd.DataFrame) -> list[str]:
    """The model's variables (Vensim names) behind the canonical output's columns."""
    by_key = {name_key(real): real for real in model.namespace}
    out = []
    for column in canonical.columns:
        base = name_key(column).split("[")[0]
        real = by_key.get(base)
        if real is not None and real not in out and real.lower() != "time":
            out.append(real)
    return out


def _outcome(frame_or_error, canonical) -> dict:
    if isinstance(frame_or_error, BaseException):
        err = frame_or_error
        text = " ".join(str(err).split())[:300]
        return {"status": "error", "error": type(err).__name__, "summary": text}
    comparison = compare(frame_or_error, canonical)
    return {
        "status": "pass" if comparison.ok else "fail",
        "summary": comparison.summary(),
        "failed": sorted(comparison.failed),
    }


# -- the compiled engine against PySD ---------------------------------------------------
IDENTICAL_RTOL = 1e-12

# Why the compiler may refuse a suite model (it then runs on the PySD path): the constructs
# it does not reproduce exactly, as its NotCompilable messages name them. A refusal whose
# reason names none of these fails the tests: a new gap must be explained here first.
COMPILER_REFUSALS = (
    "DELAY FIXED",
    "SAMPLE IF TRUE",
    "ALLOCATE AVAILABLE",
    "ALLOCATE BY PRIORITY",
    "GET TIME VALUE",
    "DELAY N with a time-varying delay time",
    "given by an expression (a control variable that may change during the run)",
    "DELAY order above delay time / TIME STEP",
    "a simultaneous equation (algebraic loop)",
    "INVERT MATRIX",
    "VECTOR SELECT",
    "VECTOR SORT ORDER",
    "VECTOR RANK",
    "VECTOR REORDER",
    "RANDOM",
)


# The suite models the compiler refuses, and the construct its reason names.
COMPILER_REFUSED: dict[str, str] = {
    "samples/Query_file": "DELAY FIXED",
    "tests/delay_fixed": "DELAY FIXED",
    "tests/delay_pipeline": "DELAY FIXED",
    "tests/forecast": "DELAY FIXED",
    "tests/sample_if_true": "SAMPLE IF TRUE",
    "tests/allocate_available": "ALLOCATE AVAILABLE",
    "tests/allocate_by_priority": "ALLOCATE BY PRIORITY",
    "tests/get_time_value/test_get_time_value": "GET TIME VALUE",
    "tests/get_time_value/test_get_time_value_simple": "GET TIME VALUE",
    "tests/invert_matrix": "INVERT MATRIX",
    "tests/vector_select": "VECTOR SELECT",
    "tests/vector_order": "VECTOR SORT ORDER",
    "tests/delays": "DELAY N with a time-varying delay time",
    "tests/control_vars": "given by an expression",
    "tests/dynamic_final_time": "given by an expression",
}


def compiled_check(model, reference) -> dict:
    """``simulate(method="euler", engine="compiled")`` against PySD's ``run()`` (the
    `reference` frame, or the exception it raised): every variable at every saved time,
    to `IDENTICAL_RTOL` relative (NaN equals NaN). Status "equal", "mismatch", "refused"
    (the compiler's reason in the summary: the model runs on the PySD path) or "error"."""
    import flywheel_sd as fw
    from flywheel_sd.errors import UnsupportedElementError

    try:
        frame = fw.simulate(model, method="euler", engine="compiled", range_check="off")
    except UnsupportedElementError as err:
        text = " ".join(str(err).split())
        reason = re.search(r"does not cover this run \((.*)\)$", text)
        return {"status": "refused", "summary": (reason.group(1) if reason else text)[:300]}
    except Exception as err:  # noqa: BLE001 -- reported, and the test fails on it
        return {
            "status": "error",
            "summary": f"{type(err).__name__}: {' '.join(str(err).split())[:300]}",
        }
    if isinstance(reference, BaseException):
        return {
            "status": "mismatch",
            "summary": f"compiled, but PySD's run() failed: {type(reference).__name__}",
        }
    return identical(frame, reference)


def identical(frame: pd.DataFrame, reference: pd.DataFrame, rtol: float = IDENTICAL_RTOL) -> dict:
    """Whether two runs agree on the same columns and times, value for value to `rtol`
    relative (NaN == NaN)."""
    missing = [c for c in reference.columns if c not in frame.columns]
    extra = [c for c in frame.columns if c not in reference.columns]
    if missing or extra:
        return {
            "status": "mismatch",
            "summary": f"columns differ: only PySD's {missing[:3]}, only compiled {extra[:3]}",
        }
    t_ref = np.asarray(reference.index, dtype=float)
    t_out = np.asarray(frame.index, dtype=float)
    if t_ref.shape != t_out.shape or not np.array_equal(t_ref, t_out):
        return {
            "status": "mismatch",
            "summary": f"times differ: {len(t_out)} saved times, PySD {len(t_ref)}",
        }
    bad = []
    for column in reference.columns:
        x = pd.to_numeric(reference[column], errors="coerce").to_numpy(dtype=float)
        y = pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=float)
        with np.errstate(invalid="ignore"):
            same = (
                (x == y)
                | (np.isnan(x) & np.isnan(y))
                | (np.abs(x - y) <= rtol * np.maximum(np.abs(x), np.abs(y)))
            )
        if not same.all():
            i = int(np.argmin(same))
            bad.append(f"{column!r} at t={t_ref[i]:g}: {y[i]!r} vs PySD {x[i]!r}")
    if bad:
        return {
            "status": "mismatch",
            "summary": f"{len(bad)} columns differ: " + "; ".join(bad[:2]),
        }
    return {
        "status": "equal",
        "summary": f"{len(reference.columns)} columns x {len(t_ref)} times identical",
    }


def run_case(case: Case) -> dict:
    """Translate and run one model three ways, and compare each with Vensim's output:
    PySD's own run(), simulate(method="euler") and simulate() (adaptive, RK45). For an
    adaptive result listed as an exception, also collect the convergence evidence."""
    import time
    import warnings

    import pysd

    import flywheel_sd as fw
    from flywheel_sd.errors import UnsupportedElementError

    # The compiled engine on its plain-Python backend (the same numbers as Numba): no Numba
    # compile per suite model in CI (the workers inherit it from conftest; set it anyway)
    os.environ.setdefault("FLYWHEEL_SD_JIT", "off")
    opts = options(case)
    result: dict = {"id": case.id}
    warnings.simplefilter("ignore")  # the suite's models warn a lot; PySD's tests ignore it
    canonical = read_canonical(case.canonical)
    data_files = [str(case.mdl.parent / f) for f in opts.get(DATA_FILES, [])] or None
    started, cpu = time.perf_counter(), time.process_time()
    try:
        model = fw.load(case.mdl, data_files=data_files)
    except Exception as err:  # noqa: BLE001 -- reported, and the tests fail on it
        result["load"] = _outcome(err, canonical)
        return result
    result["load_seconds"] = time.perf_counter() - started
    columns = _columns(model, canonical)
    result["columns"] = len(columns)

    def timed(key, run):
        started, cpu = time.perf_counter(), time.process_time()
        try:
            out = run()
        except Exception as err:  # noqa: BLE001
            out = err
        result[key] = _outcome(out, canonical)
        result[key]["seconds"] = time.perf_counter() - started
        result[key]["cpu"] = time.process_time() - cpu
        return out

    # PySD's run() of every variable: the reference of the compiled engine (below) and,
    # on the canonical columns, of Vensim conformance
    reference = timed("pysd", lambda: pysd.load(str(model.py_file), data_files=data_files).run())
    begun = time.perf_counter()
    result["compiled"] = compiled_check(model, reference)
    result["compiled"]["seconds"] = time.perf_counter() - begun
    timed(
        "euler",
        lambda: fw.simulate(model, method="euler", return_columns=columns, range_check="off"),
    )
    adaptive = timed(
        "adaptive", lambda: fw.simulate(model, return_columns=columns, range_check="off")
    )
    if isinstance(adaptive, UnsupportedElementError):
        result["adaptive"]["status"] = "refused"
    elif isinstance(adaptive, pd.DataFrame):
        result["adaptive"]["nfev"] = adaptive.attrs["nfev"]
        if result["adaptive"]["status"] == "fail" and EXCEPTION in opts:
            begun = time.perf_counter()
            result["evidence"] = evidence(model, canonical, adaptive, columns)
            result["evidence"]["seconds"] = time.perf_counter() - begun
    result["seconds"] = time.perf_counter() - started
    result["cpu"] = time.process_time() - cpu
    return result


def evidence(model, canonical, adaptive, columns) -> dict:
    """Whether the adaptive answer may differ from Vensim's: (a) Vensim's canonical output
    is itself more than 5% (PySD's criterion, `compare`) from a converged reference
    (`CONVERGED`), and (b) the adaptive run is within `ADAPTIVE_VS_CONVERGED` of that
    reference, relative to each column's scale, over the whole run. Both on every column
    the canonical output shares with the model (`shared`; `uncovered` lists any of them
    a comparison left out, and must be empty)."""
    import flywheel_sd as fw

    # the canonical columns that name a model variable (Time aside), and those compared
    known = {name_key(real) for real in model.namespace} - {"time"}
    shared = [c for c in canonical.columns if name_key(c).split("[")[0] in known]
    compared = set(compare(adaptive, canonical).compared)
    try:
        converged = fw.simulate(model, return_columns=columns, range_check="off", **CONVERGED)
    except Exception as err:  # noqa: BLE001 -- reported, and the test fails on it
        return {
            "shared": shared,
            "uncovered": shared,
            "canonical_off": False,
            "canonical_vs_converged": f"no converged run: {type(err).__name__}: {err}"[:300],
            "adaptive_vs_converged": math.inf,
            "worst_column": None,
        }
    off = compare(converged, canonical)
    # the reference's columns under their canonical names, so that coverage can be checked
    errors = relative_errors(adaptive, converged)
    by_key = {name_key(c): e for c, e in errors.items()}
    per_column = {c: by_key.get(name_key(c), math.nan) for c in shared}
    uncovered = sorted(
        (set(shared) - compared)
        | (set(shared) - set(off.compared))
        | {c for c, e in per_column.items() if math.isnan(e)}
    )
    worst = max(  # a column without an error (NaN) counts as the worst
        per_column,
        key=lambda c: math.inf if math.isnan(per_column[c]) else per_column[c],
        default=None,
    )
    return {
        "shared": shared,
        "uncovered": uncovered,
        # (a): a column off by more than 5%, every canonical time present
        "canonical_off": bool(off.failed) and not off.missing_times,
        "canonical_vs_converged": off.summary(),
        # (b): the worst column over the whole run (inf if none was compared)
        "adaptive_vs_converged": per_column[worst] if worst is not None else math.inf,
        "worst_column": worst,
        "converged_nfev": converged.attrs.get("nfev"),
    }
