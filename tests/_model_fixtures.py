"""Shared runs of the default model for the model tests, each computed once per session.

``tests/conftest.py`` (the engine's) provides ``flywheel_model``; the runs here build on it.
Import the fixtures you use into a test module by their function names
(``from _model_fixtures import baseline_fixture``); tests ask for them by fixture name
(``baseline``).
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

import flywheel_sd as fw

REPO = Path(__file__).resolve().parent.parent
MODEL_FILE = REPO / "models" / "platform_flywheel.mdl"
LOOPS_FILE = REPO / "models" / "platform_flywheel.loops.toml"

#: The outputs the brief calls headline: buyers, sellers, GMV and trust.
HEADLINE = ["Active Buyers", "Total Active Sellers", "GMV", "Buyer Trust"]

#: Parameter sets that push the model into other regimes (membership, collapse, no buyers),
#: used where a property must hold for any run, not just the baseline.
STRESS = {
    "membership": {
        "Membership Start Time": 24,
        "Membership Fee": 5,
        "Membership Benefit": 1,
        "Logistics Investment": 0.2,
    },
    "collapse": {
        "Supply Cost Shock Time": 24,
        "Supply Cost Shock Size": 1,
        "Innovation Investment": 0,
        "Competitor Entry Time": 24,
        "Competitor Strength": 5,
        "Enforcement Intensity": 1,
    },
    "deposit_and_strictness": {
        "Seller Deposit": 5000,
        "Deposit Start Time": 30,
        "Deposit End Time": 60,
        "Qualification Change Time": 40,
        "Qualification Strictness Late": 1,
    },
}


#: Outputs the invariant and behaviour tests read, besides every stock.
CHECKED = [
    *HEADLINE,
    "Addressable Market",
    "Low Quality Seller Share",
    "Platform Choice Share",
    "Orders",
]


def columns(model) -> list[str]:
    """Every stock of `model` plus `CHECKED`: recording all outputs would dominate run time."""
    return list(dict.fromkeys(model.stocks + CHECKED))


def loops() -> dict:
    """The loop index as parsed TOML (one table per loop), after checking its format with
    `flywheel_sd.loop_index.read_loop_index`: a polarity of "reinforcing", "balancing" or
    "state-dependent" (the last with a ``polarity_note``), chains of variable names."""
    from flywheel_sd.loop_index import read_loop_index

    data = tomllib.loads(LOOPS_FILE.read_text())
    read_loop_index(data)
    return data


@pytest.fixture(scope="session", name="baseline")
def baseline_fixture(flywheel_model):
    """The default run (adaptive RK45): every stock and the checked outputs."""
    return fw.simulate(flywheel_model, return_columns=columns(flywheel_model))


@pytest.fixture(scope="session", name="baseline_euler")
def baseline_euler_fixture(flywheel_model):
    """The default run with Euler at the model's TIME STEP, headline variables only."""
    return fw.simulate(flywheel_model, method="euler", return_columns=HEADLINE)


@pytest.fixture(scope="session", name="stress_runs")
def stress_runs_fixture(flywheel_model):
    """The STRESS parameter sets (stocks and checked outputs), by name."""
    return {
        name: fw.simulate(flywheel_model, params, return_columns=columns(flywheel_model))
        for name, params in STRESS.items()
    }
