"""The benchmark's hand-written NumPy floor (``benchmarks/flywheel_numpy.py``) is the project's
first model, kept as ``benchmarks/platform_flywheel_v1.mdl`` so the floor stays fixed while the
model evolves: its Euler run reproduces ``simulate(method="euler")`` at every saved time, and its
RK45 run the ensemble sweep's, so ``bench_sweep.py`` times the same computation both ways."""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import flywheel_sd as fw

pytestmark = pytest.mark.slow

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
FLOOR = BENCHMARKS / "flywheel_numpy.py"
V1_MODEL = BENCHMARKS / "platform_flywheel_v1.mdl"

OUTPUTS = ["Active Buyers", "Active Sellers", "Platform Cash", "GMV"]
SWEPT = ["Take Rate", "Seller Deposit", "Ad Budget"]  # the benchmark's design

#: Three runs over the benchmark's parameters; the last two also switch the policies on
#: (times off the TIME STEP grid, so STEP's half-step rule matters) and change a subscripted
#: constant.
MEMBERS = [
    {"Take Rate": 0.12, "Seller Deposit": 800.0, "Ad Budget": 1.2e6},
    {
        "Take Rate": 0.28,
        "Seller Deposit": 2500.0,
        "Ad Budget": 4e5,
        "Deposit Start Time": 30.03,
        "Deposit End Time": 60.5,
        "Membership Start Time": 24,
        "Membership Fee": 5,
        "Membership Benefit": 1,
        "Logistics Investment": 0.2,
        "Qualification Change Time": 40.02,
        "Qualification Strictness Late": 1,
        "Enforcement Intensity": 0.8,
    },
    {
        "Take Rate": 0.06,
        "Seller Deposit": 300.0,
        "Ad Budget": 1.9e6,
        "Supply Cost Shock Time": 24.1,
        "Supply Cost Shock Size": 1,
        "Innovation Investment": 0,
        "Competitor Entry Time": 23.97,
        "Competitor Strength": 5,
        "Marketplace Switch Time": 36.04,
        "Ad Stop Time": 50.01,
        "Funding Round Time": 7.3,
        "Funding Round Duration": 2.2,
        "Seller Working Capital": (2000.0, 800.0),
    },
]


@pytest.fixture(scope="module")
def flywheel_model(tmp_path_factory):
    """The v1 model the floor was written from, translated in a temp dir."""
    folder = tmp_path_factory.mktemp("v1")
    (folder / V1_MODEL.name).write_bytes(V1_MODEL.read_bytes())
    return fw.load(folder / V1_MODEL.name)


@pytest.fixture(scope="module")
def floor():
    spec = importlib.util.spec_from_file_location("flywheel_numpy", FLOOR)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _per_member(floor, members) -> dict[str, np.ndarray]:
    """name -> one value per member ((N,) or (N, 2)), defaults where a member leaves it."""
    names = sorted({name for member in members for name in member})
    return {
        name: np.array([member.get(name, floor.DEFAULTS[name]) for member in members], dtype=float)
        for name in names
    }


def _assert_close(got: np.ndarray, ref: np.ndarray, label: str) -> None:
    scale = max(float(np.max(np.abs(ref))), 1e-300)
    np.testing.assert_allclose(got, ref, rtol=1e-9, atol=1e-12 * scale, err_msg=label)


def test_defaults_are_the_model_file_constants(floor, flywheel_model):
    pm = flywheel_model.pysd_model()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pm.initialize()
    assert set(floor.DEFAULTS) == set(flywheel_model.constants)
    for name, value in floor.DEFAULTS.items():
        actual = getattr(pm.components, flywheel_model.namespace[name])()
        actual = actual.values if isinstance(actual, xr.DataArray) else actual
        np.testing.assert_array_equal(np.ravel(value), np.ravel(actual), err_msg=name)
    settings = flywheel_model.time_settings()
    assert (
        settings["initial_time"],
        settings["final_time"],
        settings["time_step"],
        settings["saveper"],
    ) == (floor.INITIAL_TIME, floor.FINAL_TIME, floor.TIME_STEP, floor.SAVEPER)


def test_euler_is_pysd_euler_at_every_saved_time(floor, flywheel_model):
    columns = OUTPUTS + [name for name in floor.STATES if name not in OUTPUTS]
    times, got = floor.euler(_per_member(floor, MEMBERS), columns)
    for j, member in enumerate(MEMBERS):
        params = {
            name: xr.DataArray(list(value), {"Quality": list(floor.QUALITY)}, ["Quality"])
            if isinstance(value, tuple)
            else value
            for name, value in member.items()
        }
        ref = fw.simulate(flywheel_model, params, method="euler", return_columns=columns)
        np.testing.assert_array_equal(times, ref.index.to_numpy())
        assert set(got) == set(ref.columns)
        for column in ref.columns:
            _assert_close(got[column][j], ref[column].to_numpy(), f"member {j}: {column}")
