"""The conformance table, printed at the end of the test session whatever ``-s`` says.

``tests/test_conformance.py`` fills `RESULTS` (case id -> outcome of each method); the hook
below is registered by importing it in ``tests/conftest.py``.
"""

from __future__ import annotations

import json
import os
from collections import Counter

RESULTS: dict[str, dict] = {}
METHODS = (("pysd", "PySD run()"), ("euler", "euler"), ("adaptive", "adaptive (RK45)"))


def _cell(outcome: dict | None, result: dict) -> str:
    if outcome is None:
        return "-"
    status = outcome["status"]
    if status == "fail" and "evidence" in result and outcome is result.get("adaptive"):
        return "exception"
    return status


def _engine(result: dict) -> tuple[str, str]:
    """The engine column: "compiled" (its Euler run equals PySD's run()), "PySD path"
    with the compiler's reason, or what went wrong on the compiled engine."""
    outcome = result.get("compiled")
    if outcome is None:
        return "-", ""
    status = outcome["status"]
    if status == "equal":
        return "compiled", ""
    if status == "refused":
        return "PySD path", _construct(outcome["summary"])
    return f"compiled {status}".upper() if status == "mismatch" else "compiled error", outcome[
        "summary"
    ][:90]


def _construct(summary: str) -> str:
    """The construct a refusal names (one of `COMPILER_REFUSALS`, without the variable),
    so that the reasons can be counted; else the reason itself."""
    from conformance_suite import COMPILER_REFUSALS

    return next((c for c in COMPILER_REFUSALS if c in summary), summary)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not RESULTS:
        return
    if os.environ.get("FLYWHEEL_CONFORMANCE_JSON"):  # the raw outcomes, for a closer look
        with open(os.environ["FLYWHEEL_CONFORMANCE_JSON"], "w") as file:
            json.dump(RESULTS, file, indent=1, default=str)
    write = terminalreporter.write_line
    terminalreporter.section("SDXorg test-models conformance (rtol 0.05)")
    width = max(len(k) for k in RESULTS)
    write(
        f"{'model':<{width}}  {'PySD run()':<10}  {'euler':<10}  {'adaptive':<10}  "
        f"{'engine':<10}  note"
    )
    counts = {key: Counter() for key, _ in METHODS}
    engines: Counter = Counter()
    reasons: Counter = Counter()
    for case_id in sorted(RESULTS):
        result = RESULTS[case_id]
        if "load" in result:
            cells = ["load error"] * 3
            note = result["load"]["summary"][:80]
        else:
            cells = [_cell(result.get(key), result) for key, _ in METHODS]
            note = ""
            for key, _ in METHODS:
                outcome = result.get(key) or {}
                if outcome.get("status") in ("fail", "error", "refused") and not note:
                    note = f"{key}: {outcome['summary'][:90]}"
        for (key, _), cell in zip(METHODS, cells):
            counts[key][cell] += 1
        engine, reason = _engine(result)
        engines[engine] += 1
        if reason:
            reasons[reason] += 1
            note = f"{engine} ({reason[:70]})" + (f"; {note}" if note else "")
        write(
            f"{case_id:<{width}}  {cells[0]:<10}  {cells[1]:<10}  {cells[2]:<10}  "
            f"{engine:<10}  {note}"
        )
    write("")
    for key, label in METHODS:
        shown = ", ".join(f"{n} {status}" for status, n in sorted(counts[key].items()))
        write(f"{label:<16} {shown}")
    write(
        f"{'engine':<16} "
        + ", ".join(f"{n} {e}" for e, n in sorted(engines.items()))
        + " (compiled: Euler equals PySD's run() on every variable; PySD path: the "
        "compiler refuses it, for the reason in the note)"
    )
    for reason, n in reasons.most_common():
        write(f"  {n:>3}  {reason}")

    cpu = sum(r.get("cpu", 0) for r in RESULTS.values())
    slowest = sorted(RESULTS.items(), key=lambda kv: -kv[1].get("cpu", 0))[:5]
    write(
        f"CPU time of the workers: {cpu:.0f} s; slowest: "
        + ", ".join(f"{k} {r.get('cpu', 0):.1f} s" for k, r in slowest)
    )

    exceptions = {k: r["evidence"] for k, r in sorted(RESULTS.items()) if "evidence" in r}
    if exceptions:
        write("")
        write(
            "Exceptions: (a) Vensim's canonical output vs the converged reference (DOP853, "
            "rtol 1e-10), (b) the adaptive run's worst column vs that reference (<= 1e-3), "
            "on every shared column"
        )
        write(
            f"{'model':<{width}}  {'cols':>4}  {'(a) canonical off':<40}  "
            "(b) adaptive-vs-converged"
        )
        for case_id, ev in exceptions.items():
            cols = len(ev.get("shared", []))
            uncovered = ev.get("uncovered") or []
            a = (
                ev["canonical_vs_converged"]
                if ev["canonical_off"]
                else "NOT OFF: " + ev["canonical_vs_converged"]
            )
            b = f"{ev['adaptive_vs_converged']:.1e} ({ev.get('worst_column')})"
            if uncovered:
                b += f"; {len(uncovered)} columns not compared"
            write(f"{case_id:<{width}}  {cols:>4}  {a[:40]:<40}  {b}")
