"""Equivalence of the compiled engine with two independent references, on the default model.

* PySD's own ``run()`` (Euler at TIME STEP, every variable at every SAVEPER): the compiled
  Euler run equals it to 1e-12 relative for every variable at every saved time (in practice
  bit for bit). PySD's run takes 10-40 s, so this part is marked ``slow``.
* pysimlin (the Simlin engine, a Rust bytecode VM; PyPI ``pysimlin``) running the same
  ``.mdl`` file: equal to 1e-9 relative on every variable both engines record. pysimlin is
  not a project dependency: it is the optional extra ``bench`` (``pip install -e
  ".[test,bench]"``). CI installs only ``.[test]``, so CI skips the pysimlin part unless the
  extra is installed; ``benchmarks/bench_compiled.py`` (which needs it) prints the speed
  comparison against it.

Name matching: pysimlin names a variable by its Vensim name lower-cased with each run of
whitespace replaced by one underscore (``Active Sellers[High]`` -> ``active_sellers[high]``,
subscript elements lower-cased the same way); ``TIME STEP`` is pysimlin's ``dt``, and
pysimlin does not record ``SAVEPER``. Every other column of ours has its pysimlin twin, and
the test checks that no variable is lost by the mapping.

Relative difference is elementwise: |ours - ref| <= rtol * |ref| (so a reference value of
exactly 0 must be matched exactly). The compiled engine runs on the suite's backend (plain
Python under ``FLYWHEEL_SD_JIT=off``, see conftest); ``tests/test_drivers.py`` shows the
Numba backend gives the same numbers.
"""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest

import flywheel_sd as fw

#: pysimlin's name for a few control variables, and ours it does not record.
SIMLIN_SPECIAL = {"TIME STEP": "dt"}
SIMLIN_UNRECORDED = {"SAVEPER"}


def simlin_name(column: str) -> str:
    """Our column name -> pysimlin's (see the module docstring)."""
    if column in SIMLIN_SPECIAL:
        return SIMLIN_SPECIAL[column]
    return re.sub(r"\s+", "_", column.strip()).lower()


def worst_relative(got: np.ndarray, ref: np.ndarray) -> tuple[float, int]:
    """Largest elementwise |got - ref| / |ref| (0 where equal, inf where ref is 0 and got
    is not), and its index."""
    got, ref = np.asarray(got, dtype=float), np.asarray(ref, dtype=float)
    diff = np.abs(got - ref)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(diff == 0, 0.0, diff / np.abs(ref))
    rel = np.where(np.isnan(got) & np.isnan(ref), 0.0, rel)
    rel = np.where(np.isnan(rel), np.inf, rel)
    k = int(np.argmax(rel))
    return float(rel[k]), k


def assert_relative(ours, ref, pairs, rtol: float, label: str) -> None:
    """Every (our column, reference column) pair within rtol at every saved time; the
    message names the worst variable and time."""
    np.testing.assert_array_equal(ours.index.to_numpy(float), ref.index.to_numpy(float))
    worst = (0.0, None, None)
    for mine, theirs in pairs:
        rel, k = worst_relative(ours[mine].to_numpy(), ref[theirs].to_numpy())
        if rel > worst[0]:
            worst = (rel, mine, k)
    rel, column, k = worst
    assert rel <= rtol, (
        f"{label}: {column!r} at time {ours.index[k]:g} differs by {rel:.3g} relative "
        f"(ours {ours[column].iloc[k]!r}); tolerance {rtol:g}"
    )


@pytest.fixture(scope="module")
def compiled_euler(flywheel_model):
    frame = fw.simulate(flywheel_model, method="euler", engine="compiled")
    assert frame.attrs["engine"].startswith("compiled")
    return frame


@pytest.mark.slow
def test_compiled_euler_equals_pysd_run(flywheel_model, compiled_euler):
    import pysd

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = pysd.load(str(flywheel_model.py_file)).run()
    assert set(compiled_euler.columns) == set(ref.columns)
    assert_relative(compiled_euler, ref, [(c, c) for c in ref.columns], 1e-12, "vs PySD")


def test_compiled_euler_equals_pysimlin(flywheel_model, compiled_euler):
    simlin = pytest.importorskip("simlin", reason="pysimlin (the 'bench' extra) is not installed")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = simlin.load(str(flywheel_model.path)).run(analyze_loops=False).results
    pairs = [(c, simlin_name(c)) for c in compiled_euler.columns if c not in SIMLIN_UNRECORDED]
    missing = [mine for mine, theirs in pairs if theirs not in ref.columns]
    assert not missing, f"no pysimlin column for {missing}"
    unmatched = set(ref.columns) - {theirs for _, theirs in pairs}
    assert not unmatched, f"pysimlin records {sorted(unmatched)}, which we do not"
    assert len(pairs) >= 250  # the model's variables, not a handful of controls
    assert_relative(compiled_euler, ref, pairs, 1e-9, "vs pysimlin")


def test_name_rule():
    assert simlin_name("Active Sellers[High]") == "active_sellers[high]"
    assert simlin_name("Effect of Cash on Ad Spending") == "effect_of_cash_on_ad_spending"
    assert simlin_name("TIME STEP") == "dt"
