"""Conformance against the SDXorg test-models suite and Vensim's canonical outputs.

Every model under ``tests/`` and ``samples/`` of ``$FLYWHEEL_TEST_MODELS`` that has an
``output.tab``/``output.csv`` beside it is run three ways and compared with Vensim's output at
rtol 0.05 (PySD's criterion |x - canonical| <= 1e-5 + 0.05 |x|) on the columns both have:

* ``test_pysd_run``: PySD's own ``run()``, the reference of what is achievable; the models
  PySD itself fails are listed in ``conformance_suite.CASE_TABLE`` with the reason (xfail);
* ``test_euler``: ``simulate(method="euler")`` passes every model PySD's run() passes
  (``simulate``'s engine is "auto": the compiled engine where it covers the model);
* ``test_compiled``: ``simulate(method="euler", engine="compiled")`` equals PySD's own
  ``run()`` on every variable at every saved time (1e-12 relative), or refuses the model
  naming a construct listed in ``conformance_suite.COMPILER_REFUSED`` (a new refusal fails);
* ``test_adaptive``: ``simulate()`` (RK45) passes every model whose states are continuous,
  and refuses the rest with `UnsupportedElementError` (DELAY FIXED, SAMPLE IF TRUE, DELAY N
  with a varying delay time, a test of Time for equality, FINAL TIME/TIME STEP/SAVEPER
  changing during the run), naming the element and pointing to method='euler'. The one
  allowed exception (``EXCEPTION`` in ``conformance_suite.CASE_TABLE``) is a model where
  Vensim is the one that is off, proven on EVERY column the canonical output shares with
  the model (`conformance_suite.evidence`): (a) the canonical output is more than 5%
  (PySD's criterion) from a converged reference, DOP853 at rtol 1e-10 through
  ``simulate()`` (the model's breakpoints and discontinuities handled as the engine
  handles them), and (b) the adaptive run is within 1e-3 of that reference, relative to
  each column's max |value|, over the whole run. A listed exception whose evidence fails
  is an ``ADAPTIVE_XFAIL`` (strict xfail, with the reason).

The models are translated and run in worker processes (``FLYWHEEL_CONFORMANCE_WORKERS``,
default 2), once per session; the table is printed at the end of the session by
``conformance_report``.
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor

import conformance_report
import conformance_suite as cs
import pytest

ROOT = cs.suite_root()
if ROOT is None:
    pytest.skip(
        f"set ${cs.ENV} to the SDXorg test-models folder (with tests/ and samples/) "
        "to run the conformance tests",
        allow_module_level=True,
    )

pytestmark = pytest.mark.slow
CASES = cs.discover(ROOT)
IDS = [case.id for case in CASES]
# Slowest first, so that two workers finish together.
SLOW = (
    "get_lookups_subscripted_args",
    "subscripted_delays",
    "allocate_by_priority",
    "vector_order",
    "data_from_other_model",
    "subscripted_smooth",
    "subscripted_round",
    "vector_select",
    "subscript_mapping_simple",
    "allocate_available",
    "Roessler_Chaos",
)


@pytest.fixture(scope="module")
def results(request):
    """Run every selected case once, in parallel, and keep the outcomes for the report."""
    selected = {
        item.callspec.params["case"].id
        for item in request.session.items
        if getattr(item, "module", None) is request.module and hasattr(item, "callspec")
    }
    todo = [
        case
        for case in CASES
        if case.id in selected
        and cs.SKIP not in cs.options(case)
        and case.id not in conformance_report.RESULTS
    ]
    todo.sort(key=lambda c: next((i for i, s in enumerate(SLOW) if s in c.id), len(SLOW)))
    workers = int(os.environ.get("FLYWHEEL_CONFORMANCE_WORKERS", min(2, os.cpu_count() or 1)))
    if workers > 1 and len(todo) > 1:
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            for result in pool.map(cs.run_case, todo):
                conformance_report.RESULTS[result["id"]] = result
    else:
        for case in todo:
            conformance_report.RESULTS[case.id] = cs.run_case(case)
    return conformance_report.RESULTS


def _result(case, results) -> dict:
    options = cs.options(case)
    if cs.SKIP in options:
        pytest.skip(options[cs.SKIP])
    result = results[case.id]
    assert "load" not in result, f"load failed: {result['load']['summary']}"
    assert result["columns"] > 0, "no canonical column is a model variable"
    return result


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_pysd_run(case, results):
    result = _result(case, results)
    options = cs.options(case)
    if cs.PYSD_FAILS in options:
        assert result["pysd"]["status"] != "pass", "PySD passes now: update CASE_TABLE"
        pytest.xfail(options[cs.PYSD_FAILS])
    assert result["pysd"]["status"] == "pass", result["pysd"]["summary"]


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_euler(case, results):
    """Euler passes every model that PySD's run() passes."""
    result = _result(case, results)
    options = cs.options(case)
    if result["euler"]["status"] != "pass" and result["pysd"]["status"] != "pass":
        assert cs.PYSD_FAILS in options, result["pysd"]["summary"]
        pytest.xfail(f"PySD fails too: {options[cs.PYSD_FAILS]}")
    assert result["euler"]["status"] == "pass", result["euler"]["summary"]


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_compiled(case, results):
    """The compiled engine's Euler run equals PySD's run() on every variable at every
    saved time (1e-12 relative), or the model is listed in COMPILER_REFUSED and refused
    naming that construct (one of COMPILER_REFUSALS): it then runs on the PySD path."""
    result = _result(case, results)
    outcome = result["compiled"]
    expected = cs.COMPILER_REFUSED.get(case.id)
    if outcome["status"] == "refused":
        assert any(c in outcome["summary"] for c in cs.COMPILER_REFUSALS), (
            f"refused for a reason not in COMPILER_REFUSALS: {outcome['summary']}"
        )
        assert expected is not None, f"refused, not in COMPILER_REFUSED: {outcome['summary']}"
        assert expected in outcome["summary"], outcome["summary"]
        return
    assert expected is None, f"compiles now ({outcome['status']}): remove it from COMPILER_REFUSED"
    assert outcome["status"] == "equal", outcome["summary"]


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_adaptive(case, results, request):
    result = _result(case, results)
    options = cs.options(case)
    if cs.ADAPTIVE_XFAIL in options:  # the assertions below must fail, for that reason
        request.applymarker(pytest.mark.xfail(reason=options[cs.ADAPTIVE_XFAIL], strict=True))
    outcome = result["adaptive"]
    if cs.REFUSED in options:
        assert outcome["status"] == "refused", outcome["summary"]
        assert options[cs.REFUSED] in outcome["summary"]
        assert "method='euler'" in outcome["summary"]
        return
    assert outcome["status"] != "refused", f"a continuous model was refused: {outcome}"
    if outcome["status"] == "pass":
        return
    if cs.PYSD_FAILS in options and cs.EXCEPTION not in options:
        pytest.xfail(f"PySD fails too: {options[cs.PYSD_FAILS]}")
    assert cs.EXCEPTION in options, outcome["summary"]
    assert outcome["status"] == "fail", outcome["summary"]
    ev = result["evidence"]
    # every column the canonical output shares with the model is compared ...
    assert ev["shared"] and not ev["uncovered"], f"columns not compared: {ev['uncovered']}"
    # ... (a) Vensim's canonical output is more than 5% from the converged reference ...
    assert ev["canonical_off"], f"canonical vs converged: {ev['canonical_vs_converged']}"
    # ... (b) and the adaptive run is within 1e-3 of it, column by column, whole run.
    assert ev["adaptive_vs_converged"] <= cs.ADAPTIVE_VS_CONVERGED, (
        f"adaptive vs converged: {ev['adaptive_vs_converged']:.3g} on {ev['worst_column']!r}"
    )


def test_relative_error_never_passes_for_want_of_a_comparison():
    """A column with no finite value, a non-finite value on one side only, or no common
    column at all is an infinite error, never 0."""
    import numpy as np
    import pandas as pd

    t = [0.0, 1.0, 2.0]
    nonfinite = pd.DataFrame({"x": [np.nan] * 3, "y": [np.inf] * 3}, index=t)
    assert cs.relative_error(nonfinite, nonfinite) == np.inf
    ref = pd.DataFrame({"x": [1.0, 2.0, np.nan], "y": [0.0, 0.0, 0.0]}, index=t)
    close = pd.DataFrame({"x": [1.0, 2.1, np.nan], "y": [0.0, 0.0, 0.0]}, index=t)
    assert cs.relative_errors(close, ref) == pytest.approx({"x": 0.05, "y": 0.0})
    one_sided = pd.DataFrame({"x": [1.0, 2.0, 3.0], "y": [0.0, 0.0, 1e-9]}, index=t)
    assert cs.relative_errors(one_sided, ref) == {"x": np.inf, "y": np.inf}
    assert cs.relative_error(pd.DataFrame({"z": [1.0] * 3}, index=t), ref) == np.inf
