"""The compiler's uses of PySD internals (`flywheel_sd.engine._pysd_compat`) against the
installed PySD (the project allows ``pysd>=3.14,<4``): the abstract model, the subscript
manager (ranges, sub-ranges, mappings, merged dimensions, subscripts as values) and the
fixed-step clock, which must equal PySD's own ``run()`` index."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from conformance_mdl import vensim

from flywheel_sd.engine import _pysd_compat as compat

SUBSCRIPTED = vensim(
    "Region: north, south, east",
    "Coast: north, east",
    "Branch: b1, b2, b3 -> Region",
    "Demand[Region] = 1, 2, 3",
    "Coastal Demand[Coast] = Demand[Coast] * 2",
    "Shipment[Branch] = Demand[Region]",
    "Position[Region] = Region",
    "Partial[north] = 1",
    "Partial[south] = 2",
    "Stock[Region] = INTEG(Demand[Region], 0)",
    "Total = SUM(Demand[Region!])",
)


@pytest.fixture
def section(tmp_path):
    path = tmp_path / "subscripted.mdl"
    path.write_text(SUBSCRIPTED)
    return compat.parse(path).sections[0]


def _element(section, name):
    return next(e for e in section.elements if e.name == name)


def test_parse_returns_the_main_section_with_its_elements(section):
    assert section.name == "__main__"
    names = compat.real_names(section)
    assert {"Demand", "Coastal Demand", "Stock", "Total", "TIME STEP"} <= set(names)
    stock = _element(section, "Stock")
    assert compat.ast_kind(stock.components[0].ast) == "IntegStructure"
    assert compat.is_control(_element(section, "TIME STEP"))
    assert not compat.is_control(stock)


def test_parse_puts_macros_in_their_own_sections(tmp_path):
    macro = ":MACRO: DOUBLE(input)\nDOUBLE = 2 * input\n\t~\t\n\t~\t\t|\n\n:END OF MACRO:\n"
    text = vensim("X = DOUBLE(3)").replace("{UTF-8}\n", "{UTF-8}\n" + macro, 1)
    path = tmp_path / "macro.mdl"
    path.write_text(text)
    sections = compat.parse(path).sections
    assert sections[0].name == "__main__"
    assert [s.name for s in sections[1:]] == ["double"]
    assert [p.lower() for p in sections[1].params] == ["input"]


def test_subscript_ranges_resolve_subranges_and_mappings(section):
    ranges = compat.subscript_ranges(section)
    assert ranges["Region"] == ["north", "south", "east"]
    assert ranges["Coast"] == ["north", "east"]
    assert ranges["Branch"] == ["b1", "b2", "b3"]
    assert compat.subscript_mappings(section)["Branch"] == ["Region"]
    assert compat.subscript_mappings(section)["Region"] == []


def test_final_dims_merge_the_equations(section):
    assert compat.final_dims(section, _element(section, "Demand")) == ["Region"]
    assert compat.final_dims(section, _element(section, "Coastal Demand")) == ["Coast"]
    assert compat.final_dims(section, _element(section, "Total")) == []
    # two equations on single elements merge into the range that holds them
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PySD warns that the definition is incomplete
        assert compat.final_dims(section, _element(section, "Partial")) == ["Region"]


def test_subscripts_used_as_values_are_their_positions(section):
    numbers = compat.subscript_numbers(section)
    assert numbers["region"] == ("Region", [1.0, 2.0, 3.0])
    assert numbers["coast"] == ("Coast", [1.0, 3.0])  # positions in the main range
    assert numbers["south"] == (None, [2.0])


def test_bang_subscripts_and_reference_name(section):
    total = _element(section, "Total").components[0].ast
    assert compat.bang_subscripts(total.arguments[0]) == ["Region!"]
    position = _element(section, "Position").components[0].ast
    assert compat.reference_name(position) == "region"


def test_computed_order_is_detected(tmp_path):
    path = tmp_path / "orders.mdl"
    path.write_text(
        vensim("Order = 3", "In = 1", "A = SMOOTH N(In, 2, 0, Order)", "B = SMOOTH N(In, 2, 0, 3)")
    )
    section = compat.parse(path).sections[0]
    assert compat.has_computed_order(_element(section, "A").components[0].ast)
    assert not compat.has_computed_order(_element(section, "B").components[0].ast)


@pytest.mark.parametrize(
    ("t0", "t1", "dt", "saveper", "stamps"),
    [
        (0, 20, 0.125, 1, None),
        (0, 10, 0.25, 0.25, None),
        (1990, 2000, 1 / 3, 1, None),  # saved times off the step grid
        (0, 7, 1, 2, None),  # FINAL TIME not on the SAVEPER grid
        (0, 10, 0.5, 1, [0, 2.5, 3, 10]),  # return_timestamps
        (-5, 5, 0.0625, 0.5, None),
    ],
)
def test_time_grid_equals_pysd_run_index(tmp_path, t0, t1, dt, saveper, stamps):
    import pysd

    path = tmp_path / "clock.mdl"
    path.write_text(
        vensim("X = INTEG(1, 0)", initial_time=t0, final_time=t1, time_step=dt, saveper=saveper)
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run = pysd.read_vensim(str(path)).run(return_timestamps=stamps)
    n_steps, save, times = compat.time_grid(
        float(t0), float(t1), float(dt), float(saveper), stamps
    )
    np.testing.assert_array_equal(times, np.asarray(run.index, dtype=float))
    assert save.sum() == len(times)
    assert len(save) == n_steps + 1
    assert n_steps == pytest.approx((t1 - t0) / dt, abs=1)


# -- the PySD path's private names ----------------------------------------------------------
@pytest.fixture
def loaded(tmp_path):
    """A loaded, initialised PySD model of SUBSCRIPTED (via flywheel_sd's loader)."""
    import flywheel_sd as fw

    path = tmp_path / "subscripted.mdl"
    path.write_text(SUBSCRIPTED)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PySD warns about the partly defined `Partial`
        pm = fw.load(path).pysd_model(fresh=True)
        pm.initialize()
    return pm


def test_runtime_accessors_reach_the_installed_pysd(loaded):
    elements = compat.dynamic_elements(loaded)
    assert len(elements) == 1 and np.asarray(elements[0].state).shape == (3,)
    deps = compat.dependencies(loaded)
    assert "demand" in deps["total"]
    namespace = compat.components_namespace(loaded)
    assert callable(namespace["total"]) and namespace["total"]() == 6
    assert compat.subscript_dict(loaded)["Region"] == ["north", "south", "east"]


def test_state_and_clock_setters_change_what_the_model_reads(loaded):
    element = compat.dynamic_elements(loaded)[0]
    new = element.state * 0 + 7.0
    compat.set_state(element, new)
    assert np.all(np.asarray(element.state) == 7.0)
    compat.set_clock(loaded.time, 4.5)
    assert compat.clock(loaded.time) == 4.5 and loaded.time() == 4.5


def test_configure_run_and_control_vars_as_run_does(loaded):
    compat.configure_run(loaded, {}, ["Total"], None, 3, 0.5, 1)
    assert loaded.time.final_time() == 3 and loaded.time.time_step() == 0.5
    compat.set_control_vars(loaded, None, 6, 0.25, 2)
    assert loaded.time.final_time() == 6 and loaded.time.saveper() == 2
