"""Designs of experiments: reproducible, checked, and shaped as SALib expects."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conformance_mdl import vensim

import flywheel_sd as fw
from flywheel_sd import designs
from flywheel_sd.errors import ParameterError

RANGED = vensim(
    "Stock = INTEG(Inflow, 10) ~ widgets",
    "Inflow = Rate * Stock ~ widgets/Month",
    "Rate = 0.05 ~ 1/Month [0, 0.2]",
    "Scale = 3 ~ Dmnl [1, 5]",
    "Open Ended = 7 ~ Dmnl [0, ?]",
    "Undocumented = 1 ~ Dmnl",
    final_time=10,
    time_step=0.5,
    control_limits=True,
)

TWO = {"a": (0.0, 1.0), "b": (10.0, 20.0)}


@pytest.fixture
def ranged_model(write_mdl):
    return fw.load(write_mdl(RANGED, "ranged.mdl"))


@pytest.mark.parametrize(
    "build",
    [
        lambda seed: designs.lhs(TWO, 16, seed=seed),
        lambda seed: designs.sobol(TWO, 16, seed=seed),
        lambda seed: designs.morris(TWO, 4, seed=seed),
        lambda seed: designs.saltelli(TWO, 8, seed=seed),
    ],
    ids=["lhs", "sobol", "morris", "saltelli"],
)
def test_seeded_designs_are_reproducible(build):
    first, again, other = build(7), build(7), build(8)
    pd.testing.assert_frame_equal(first.table, again.table)
    assert first.fingerprint() == again.fingerprint()
    assert not np.allclose(first.values, other.values)
    assert first.seed == 7


def test_generator_seed_is_recorded_and_rebuilds_the_design():
    d = designs.lhs(TWO, 10, seed=np.random.default_rng(3))
    again = designs.lhs(TWO, 10, seed=d.seed)
    pd.testing.assert_frame_equal(d.table, again.table)


def test_no_seed_still_records_one():
    d = designs.lhs(TWO, 5)
    assert isinstance(d.seed, int)
    pd.testing.assert_frame_equal(d.table, designs.lhs(TWO, 5, seed=d.seed).table)


def test_lhs_stays_in_bounds_and_stratifies():
    d = designs.lhs(TWO, 50, seed=1)
    assert d.table.shape == (50, 2)
    assert d.table["a"].between(0, 1).all() and d.table["b"].between(10, 20).all()
    # Latin hypercube: one point per stratum in each dimension
    strata = np.floor(d.table["a"].to_numpy() * 50).astype(int)
    assert sorted(strata) == list(range(50))


def test_sobol_needs_a_power_of_two():
    with pytest.raises(ParameterError, match=r"power of two \(got 1000; use 512 or 1024\)"):
        designs.sobol(TWO, 1000)
    assert len(designs.sobol(TWO, 1024, seed=0)) == 1024


def test_saltelli_sizes_and_power_of_two():
    assert len(designs.saltelli(TWO, 16, seed=0)) == 16 * (2 + 2)
    assert len(designs.saltelli(TWO, 16, calc_second_order=True, seed=0)) == 16 * (2 * 2 + 2)
    with pytest.raises(ParameterError, match="power of two"):
        designs.saltelli(TWO, 100)


def test_morris_size_and_levels():
    d = designs.morris(TWO, 5, num_levels=4, seed=1)
    assert len(d) == 5 * (2 + 1)
    assert d.options["num_levels"] == 4
    with pytest.raises(ParameterError, match="even"):
        designs.morris(TWO, 5, num_levels=3)


def test_grid_is_full_factorial():
    d = designs.grid({"a": (0.0, 1.0), "b": [1.0, 2.0, 5.0]}, levels=4)
    assert len(d) == 4 * 3
    assert sorted(d.table["b"].unique()) == [1.0, 2.0, 5.0]
    assert np.allclose(sorted(d.table["a"].unique()), np.linspace(0, 1, 4))
    assert d.bounds["b"] == (1.0, 5.0)


def test_problem_is_what_salib_takes():
    d = designs.lhs(TWO, 4, seed=0)
    assert d.problem == {"num_vars": 2, "names": ["a", "b"], "bounds": [[0.0, 1.0], [10.0, 20.0]]}


@pytest.mark.parametrize(
    "params, message",
    [
        ({"a": (1.0, 1.0)}, "empty range"),
        ({"a": (2.0, 1.0)}, "empty range"),
        ({"a": (0.0, float("inf"))}, "not finite"),
        ({"a": "wide"}, "a range is"),
        ({}, "no parameters"),
    ],
    ids=["equal", "reversed", "infinite", "not-a-range", "none"],
)
def test_bad_ranges(params, message):
    with pytest.raises(ParameterError, match=message):
        designs.lhs(params, 4)


def test_bad_sizes_and_seeds():
    with pytest.raises(ParameterError, match="positive integer"):
        designs.lhs(TWO, 0)
    with pytest.raises(ParameterError, match="seed"):
        designs.lhs(TWO, 4, seed="x")


def test_documented_ranges_are_the_default(ranged_model):
    d = designs.lhs(["rate", "Scale"], 8, seed=0, model=ranged_model)
    assert d.names == ["Rate", "Scale"]  # canonical Vensim names
    assert d.bounds == {"Rate": (0.0, 0.2), "Scale": (1.0, 5.0)}


def test_unknown_parameter_suggests_close_matches(ranged_model):
    with pytest.raises(ParameterError, match="did you mean 'Rate'"):
        designs.lhs(["Rat"], 8, model=ranged_model)


@pytest.mark.parametrize(
    "name, message",
    [
        ("Undocumented", "no documented range"),
        ("Open Ended", "open documented range"),
        ("Stock", "not a constant"),
    ],
)
def test_names_without_a_usable_range(ranged_model, name, message):
    with pytest.raises(ParameterError, match=message):
        designs.lhs([name], 8, model=ranged_model)


def test_oat_varies_one_parameter_at_a_time(ranged_model):
    d = designs.oat(["Rate", "Scale"], model=ranged_model)
    assert len(d) == 1 + 2 * 2
    assert d.table.iloc[0].tolist() == [0.05, 3.0]  # the model's own values
    assert d.table.iloc[1].tolist() == [0.0, 3.0] and d.table.iloc[4].tolist() == [0.05, 5.0]
    assert d.options["varied"] == ["", "Rate", "Rate", "Scale", "Scale"]


def test_from_table_and_bind(ranged_model):
    d = designs.from_table({"rate": [0.1, 0.2]})
    bound = d.bind(ranged_model)
    assert bound.names == ["Rate"] and d.kind == "table"
    with pytest.raises(ParameterError, match="outside its documented range"):
        designs.from_table({"Rate": [0.5]}).bind(ranged_model)
