"""Shared fixtures. Translations go to a per-session temp cache, never the source tree."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
_CACHE = Path(tempfile.mkdtemp(prefix="flywheel-test-cache-"))
os.environ["FLYWHEEL_SD_CACHE"] = str(_CACHE)
os.environ.setdefault("MPLBACKEND", "Agg")
# The compiled engine runs on its plain-Python backend (the same numbers as Numba) unless a
# test asks for Numba: no JIT compiles or background warm-ups for the suite's many small
# models on CI's two cores. Tests of the Numba backend set FLYWHEEL_SD_JIT=eager.
os.environ.setdefault("FLYWHEEL_SD_JIT", "off")


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(_CACHE, ignore_errors=True)


@pytest.fixture(scope="session")
def flywheel_model():
    """The project's default model, loaded once per session."""
    import flywheel_sd

    return flywheel_sd.load()


@pytest.fixture
def write_mdl(tmp_path):
    """Write a small Vensim model into a temp dir and return its path."""

    def write(text: str, name: str = "model.mdl") -> Path:
        path = tmp_path / name
        path.write_text(text)
        return path

    return write


from conformance_report import pytest_terminal_summary as _conformance_table  # noqa: E402


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """The conformance table (conformance_report), and one loud line when the conformance
    tests were selected but skipped because FLYWHEEL_TEST_MODELS names no suite folder."""
    _conformance_table(terminalreporter, exitstatus, config)
    skipped = terminalreporter.stats.get("skipped", [])
    if any("test_conformance.py" in getattr(r, "nodeid", "") for r in skipped):
        from conformance_suite import ENV, suite_root

        if suite_root() is None:
            terminalreporter.write_sep(
                "!",
                f"{ENV} is unset or names no test-models folder: the ~480 SDXorg "
                "conformance tests (tests/test_conformance.py) did NOT run",
                red=True,
                bold=True,
            )
