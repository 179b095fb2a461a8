"""Models and fixtures that several engine test modules use.

Import what you use explicitly: fixtures by their function names
(``from _shared import sir_fixture``); tests ask for them by fixture name (``sir``).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conformance_mdl import vensim

import flywheel_sd as fw

REPO = Path(__file__).resolve().parent.parent
#: The SDXorg test-models suite (its samples are used as small real-world models).
SUITE = Path(os.environ.get("FLYWHEEL_TEST_MODELS", REPO.parent / "shared" / "test-models"))
SIR = SUITE / "samples" / "SIR" / "SIR.mdl"

# A run fails numerically when the clock passes the threshold: SQRT of a negative number.
FRAGILE = vensim(
    "Clock = INTEG(1, 0) ~ Time",
    "Accumulated = INTEG(SQRT(Threshold - Clock), 0) ~ units",
    "Threshold = 20 ~ Time [0, 100]",
    final_time=10,
    time_step=0.25,
    time_units="Time",
    control_limits=True,
)


def load_text(tmp_path_factory, file_name: str, text: str) -> fw.Model:
    """Write `text` to `file_name` in a fresh temp folder and load it (for module- or
    session-scoped model fixtures)."""
    path = tmp_path_factory.mktemp(Path(file_name).stem) / file_name
    path.write_text(text)
    return fw.load(path)


@pytest.fixture(scope="session", name="sir")
def sir_fixture():
    """The suite's SIR sample, loaded once per session (skipped without the suite)."""
    if not SIR.is_file():
        pytest.skip(f"SIR sample not found under {SUITE} (set FLYWHEEL_TEST_MODELS)")
    return fw.load(SIR)
