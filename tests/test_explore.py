"""The what-if explorer (issue 15): its callbacks without a browser, and (slow) the served
app in headless Chromium."""

from __future__ import annotations

import dataclasses
import io
import math
import os
import subprocess
import sys
import threading
import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

import flywheel_sd as fw
from flywheel_sd.errors import FlywheelError, NonFiniteError

pytest.importorskip("panel", reason='the explorer needs Panel: pip install "flywheel_sd[explore]"')

from _browser import missing
from _shared import FRAGILE
from conformance_mdl import vensim

from flywheel_sd import explorer as explorer_module
from flywheel_sd import ltm
from flywheel_sd.explorer import Explorer, _column

# Customers in two regions, each growing at its own rate: a subscripted lever (a reinforcing
# loop per region, too).
REGIONS = vensim(
    "Region: North, South",
    "Customers[Region] = INTEG(New Customers[Region], 10) ~ people",
    "New Customers[Region] = Growth[Region] * Customers[Region] ~ people/Month",
    "Growth[Region] = 0.05, 0.02 ~ 1/Month [0, 0.2] ~ Monthly growth of the customers.",
    final_time=10,
    time_step=0.25,
)
# A stock filled at a constant rate: no feedback loop at all.
NO_LOOPS = vensim(
    "Stock = INTEG(Inflow, 0) ~ units",
    "Inflow = Rate ~ units/Month",
    "Rate = 2 ~ units/Month [0, 10]",
    final_time=10,
    time_step=0.25,
)
# A constant over two subscript ranges.
GRID = vensim(
    "Region: North, South",
    "Channel: Web, Shop",
    "Sales[Region, Channel] = INTEG(Rate[Region, Channel], 0) ~ units",
    "Rate[Region, Channel] = 1, 2; 3, 4; ~ units/Month [0, 10]",
    final_time=4,
    time_step=0.25,
)


@pytest.fixture
def explorer(monkeypatch, tmp_path):
    monkeypatch.setenv("FLYWHEEL_SD_SCENARIOS", str(tmp_path))
    return Explorer("baseline")


def sellers(frame):
    """Active sellers of a run, both quality classes."""
    return _column(frame, "Active Sellers")


def times(frame, start, end):
    t = np.asarray(frame.index, dtype=float)
    return (t >= start) & (t < end)


def test_importing_flywheel_sd_does_not_import_panel():
    code = (
        "import sys, flywheel_sd as fw; fw.explore; import flywheel_sd.explorer; "
        "assert 'panel' not in sys.modules and 'bokeh' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_without_panel_the_error_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "panel", None)  # import panel raises ImportError
    with pytest.raises(FlywheelError, match=r'pip install "flywheel_sd\[explore\]"'):
        fw.explore()


def test_levers_have_their_range_unit_sector_and_window(explorer):
    deposit = explorer.levers["Seller Deposit"]
    assert (deposit.low, deposit.high, deposit.units) == (0, 100_000, "USD/Seller")
    assert deposit.sector == "Sellers"
    assert (deposit.start, deposit.end) == ("Deposit Start Time", "Deposit End Time")
    widget = explorer.widgets["Seller Deposit"]
    assert (widget.start, widget.end) == (0, 100_000) and "US$ / seller" in widget.label
    # window constants belong to their lever, not to a slider of their own
    assert "Deposit Start Time" not in explorer.widgets
    assert "Seller Deposit" in explorer.windows
    assert explorer.sectors[:2] == ["Buyers", "Sellers"]  # the model file's order
    bases = {lever.base for lever in explorer.levers.values()}
    assert bases | {"Deposit Start Time", "Deposit End Time"} <= set(explorer.model.constants)


def test_a_deposit_in_a_window_cuts_seller_entry_in_the_window(explorer):
    explorer.move_window("Seller Deposit", 24, 48)
    explorer.move("Seller Deposit", 2000)
    run, ref = explorer.current, explorer.reference_run
    inside, before = times(run, 24, 48), times(run, 0, 24)
    entry, ref_entry = run["Seller Entry"].to_numpy(), ref["Seller Entry"].to_numpy()
    assert np.all(entry[inside][1:] < ref_entry[inside][1:])
    np.testing.assert_allclose(entry[before], ref_entry[before], rtol=1e-6)
    # the plotted data follows: active sellers (panel 1) below the ghost by the window's end
    data = explorer.source.data
    k = int(np.searchsorted(data["time"], 48))
    assert data["cur_1"][k] < data["ref_1"][k]
    # the window is shaded and labelled (on every panel: they share the windows' source)
    windows = explorer.window_source.data
    assert (windows["left"][0], windows["right"][0]) == (24, 48)
    assert windows["short"][0] == "Seller Deposit"
    assert "Seller Deposit = 2,000 US$ / seller, months 24\N{EN DASH}48" in (
        explorer.windows_note.object
    )
    table = explorer.metrics_pane.object
    sellers = table.set_index("metric").loc["final_active_sellers"]
    assert sellers["change"].startswith("-")


def test_save_as_scenario_round_trips(explorer, tmp_path):
    explorer.move_window("Seller Deposit", 24, 48)
    explorer.move("Seller Deposit", 2000)
    path = explorer.save_scenario("deposit_24_48", tmp_path)
    assert path == tmp_path / "deposit_24_48.toml"
    sc = fw.scenarios.get("deposit_24_48")  # found through FLYWHEEL_SD_SCENARIOS
    assert sc.params["Seller Deposit"] == 2000
    assert (sc.params["Deposit Start Time"], sc.params["Deposit End Time"]) == (24, 48)
    assert ("Seller Deposit = 2,000 US$ / seller", 24, 48) in sc.windows()
    again = fw.run_scenario("deposit_24_48")
    np.testing.assert_allclose(sellers(again), sellers(explorer.current), rtol=1e-9)
    assert "deposit_24_48" in explorer.scenario_select.options
    # the picker loads it back onto the widgets
    explorer.move("Seller Deposit", 0)
    explorer.scenario_select.value = "deposit_24_48"
    assert explorer.widgets["Seller Deposit"].value == 2000
    assert explorer.windows["Seller Deposit"].value == (24, 48)
    with pytest.raises(FlywheelError, match="exists"):
        explorer.save_scenario("wish_deposit", tmp_path)  # a built-in's name


def test_flywheel_run_reads_a_saved_scenario(explorer, tmp_path, capsys):
    from flywheel_sd.cli import main

    explorer.move("Take Rate", 0.2)
    path = explorer.save_scenario("higher_take", tmp_path)
    assert main(["run", str(path), "--columns", "Active Buyers"]) == 0
    assert "Active Buyers" in capsys.readouterr().out


def test_a_picked_scenario_sets_the_widgets_and_runs_as_flywheel_run(explorer):
    explorer.scenario_select.value = "wish_deposit"
    assert explorer.widgets["Seller Deposit"].value == 2000
    assert explorer.windows["Seller Deposit"].value == (60, 74)
    expected = fw.run_scenario("wish_deposit")
    np.testing.assert_allclose(sellers(explorer.current), sellers(expected), rtol=1e-9)
    labels = list(explorer.window_source.data["short"])
    assert "Seller Deposit" in labels
    assert "ads 4x dearer (ATT)" in labels  # the scenario's own event


def test_a_step_policy_on_a_lever_without_window_constants_keeps_its_window(explorer):
    """penalty_overreach: Enforcement Intensity = 1 from month 48 (the model has no window
    constants for it): the slider edits the value, the window stays the scenario's."""
    explorer.scenario_select.value = "penalty_overreach"
    assert explorer.widgets["Enforcement Intensity"].value == 1.0
    expected = fw.run_scenario("penalty_overreach")
    np.testing.assert_allclose(sellers(explorer.current), sellers(expected), rtol=1e-9)
    explorer.move("Enforcement Intensity", 0.5)
    policy = explorer.explored_scenario().params["Enforcement Intensity"]
    assert (policy.value, policy.start, policy.end) == (0.5, 48, math.inf)


@pytest.mark.parametrize(("typed", "clamped", "word"), [(1e9, 100_000, "above"), (-5, 0, "below")])
def test_out_of_range_values_are_clamped_with_a_message(explorer, typed, clamped, word):
    explorer.move("Seller Deposit", typed)
    widget = explorer.widgets["Seller Deposit"]
    assert widget.value == clamped and (widget.start, widget.end) == (0, 100_000)
    assert explorer.message.visible
    assert f"{word} its documented range" in explorer.message.object
    assert explorer.explored_scenario().params.get("Seller Deposit", 0) == clamped
    assert explorer.stats["failed"] == 0


def test_a_cleared_value_is_refused_with_a_message(explorer):
    explorer.move("Seller Deposit", 2000)
    explorer.move("Seller Deposit", None)  # the number box emptied
    assert explorer.widgets["Seller Deposit"].value == 0  # the model's value
    assert "not a finite number" in explorer.message.object


def test_a_failed_run_shows_the_error_and_keeps_the_last_plot(explorer, monkeypatch):
    good = dict(explorer.source.data)
    last = explorer.current

    def fail(sc):
        raise NonFiniteError("a stock became NaN at t=37")

    monkeypatch.setattr(explorer, "_run", fail)
    explorer.move("Seller Deposit", 2000)
    assert explorer.message.visible and explorer.message.alert_type == "danger"
    assert explorer.message.object.startswith("run failed: a stock became NaN at t=37")
    assert "\n" not in explorer.message.object
    assert explorer.current is last
    for key, values in good.items():
        np.testing.assert_array_equal(explorer.source.data[key], values)
    monkeypatch.undo()
    explorer.move("Seller Deposit", 1000)
    assert not explorer.message.visible and explorer.current is not last


def test_a_model_file_gives_its_own_levers_and_a_real_failure_is_shown(write_mdl):
    path = write_mdl(FRAGILE, "fragile.mdl")
    explorer = Explorer(None, model=path)
    assert list(explorer.levers) == ["Threshold"]
    assert explorer.scenario.name == "fragile"
    good = explorer.current
    explorer.move("Threshold", 5)  # the SQRT of a negative number once the clock passes 5
    assert explorer.message.alert_type == "danger"
    assert explorer.message.object.startswith("run failed:")
    assert explorer.current is good


def test_requests_that_pile_up_are_answered_by_one_run(explorer):
    class Doc:  # a served session: callbacks run on the next tick of its event loop
        def __init__(self):
            self.callbacks = []

        def add_next_tick_callback(self, callback):
            self.callbacks.append(callback)

    doc = explorer._doc = Doc()
    runs = explorer.stats["runs"]
    for value in (500, 1000, 1500, 2000):
        explorer.move("Seller Deposit", value)
    assert explorer.stats["runs"] == runs  # nothing ran yet
    while doc.callbacks:
        doc.callbacks.pop(0)()
    assert explorer.stats["runs"] == runs + 1 and explorer.stats["skipped"] == 3
    assert explorer.current["Seller Deposit"].iloc[-1] == 2000


def test_the_ghost_line_follows_the_reference_picker(explorer):
    explorer.reference_select.value = "wish_deposit"
    expected = fw.run_scenario("wish_deposit")
    np.testing.assert_allclose(explorer.source.data["ref_1"], sellers(expected), rtol=1e-9)
    table = explorer.metrics_pane.object
    assert "wish_deposit" in table.columns


def test_the_csv_holds_both_runs(explorer):
    explorer.move("Seller Deposit", 2000)
    import io

    import pandas as pd

    table = pd.read_csv(io.StringIO(explorer.csv()))
    assert set(table["scenario"]) == {"explored", "baseline"}
    assert {"time", "Seller Entry", "GMV", "Active Sellers[High]"} <= set(table.columns)


# -- scenarios overlaid ----------------------------------------------------------------------
def test_compared_scenarios_are_overlaid_as_their_own_runs(explorer, monkeypatch):
    names = ["wish_deposit", "ebay_qualification"]
    explorer.compare_select.value = names
    lines = explorer.compare_source.data
    assert list(lines["name"]) == names and len(set(lines["color"])) == 2
    expected = {name: fw.run_scenario(name) for name in names}
    for k, name in enumerate(names):
        np.testing.assert_allclose(lines["ys_1"][k], sellers(expected[name]), rtol=1e-9)
        np.testing.assert_allclose(lines["xs"][k], np.asarray(expected[name].index, float))
        np.testing.assert_allclose(lines["ys_4"][k], expected[name]["GMV"], rtol=1e-9)
    # the ghost line is still the reference, and the explored run still baseline's
    baseline = sellers(fw.run_scenario("baseline"))
    np.testing.assert_allclose(explorer.source.data["ref_1"], baseline, rtol=1e-9)
    np.testing.assert_allclose(explorer.source.data["cur_1"], baseline, rtol=1e-9)
    # every panel draws them, with a legend entry per scenario (its name)
    for fig in explorer.figures:
        overlay = [
            r for r in fig.renderers if getattr(r.data_source, "name", "") == "explorer-compared"
        ]
        assert len(overlay) == 1
    legend = explorer.figures[0].legend[0]
    assert any(getattr(item.label, "field", None) == "name" for item in legend.items)
    # the metrics table: a column each, its value and change from the reference
    table = explorer.metrics_pane.object.set_index("metric")
    wish = table.loc["final_active_sellers", "wish_deposit"]
    fall = sellers(expected["wish_deposit"])[-1] / baseline[-1] - 1
    assert fall < 0 and f"({100 * fall:+.1f}%)" in wish
    # the CSV holds every run
    csv = pd.read_csv(io.StringIO(explorer.csv()))
    assert set(csv["scenario"]) == {"explored", "baseline", *names}
    # a lever move neither reads nor runs them again
    read = []
    scenario = explorer_module._scenario
    monkeypatch.setattr(
        explorer_module, "_scenario", lambda name, path: read.append(name) or scenario(name, path)
    )
    runs = dict(explorer.compared_runs)
    explorer.move("Take Rate", 0.2)
    assert read == [] and all(explorer.compared_runs[name] is runs[name] for name in names)
    assert not np.allclose(explorer.source.data["cur_1"], baseline)


def test_a_compared_scenario_follows_its_file_and_a_broken_one_is_said(explorer, tmp_path):
    explorer.move("Seller Deposit", 2000)
    path = explorer.save_scenario("mine", tmp_path)
    explorer.compare_select.value = ["mine", "wish_deposit"]
    first = np.array(explorer.compare_source.data["ys_1"][0])
    np.testing.assert_allclose(first, sellers(explorer.current), rtol=1e-9)
    # the file is edited outside the app: the next move runs it again
    sc = fw.scenarios.load_file(path)
    dataclasses.replace(sc, params={"Seller Deposit": 5000.0}, source=None).save(path)
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 2_000_000_000))
    explorer.move("Take Rate", 0.2)
    now = np.array(explorer.compare_source.data["ys_1"][0])
    np.testing.assert_allclose(now, sellers(fw.run_scenario(str(path))), rtol=1e-9)
    assert now[-1] < first[-1]  # a dearer deposit: fewer sellers
    # broken: said in one line, the other scenario still drawn, the explored run too
    path.write_text('name = "mine"\n[params]\n"No Such Lever" = 1\n')
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 4_000_000_000))
    explorer.move("Take Rate", 0.1)
    assert explorer.message.visible and explorer.message.alert_type == "warning"
    assert explorer.message.object.startswith("mine not compared:")
    assert "No Such Lever" in explorer.message.object and "\n" not in explorer.message.object
    assert list(explorer.compare_source.data["name"]) == ["wish_deposit"]
    assert explorer.current["Take Rate"].iloc[-1] == 0.1 and explorer.stats["failed"] == 0


def test_compare_refuses_an_unknown_scenario():
    with pytest.raises(FlywheelError, match=r"no_such_scenario.*wish_deposit"):
        Explorer("baseline", compare=["no_such_scenario"])


# -- loop dominance ------------------------------------------------------------------------
def index_loops(model) -> dict:
    """The model's loop index, read here from its TOML file."""
    path = Path(model.path)
    return tomllib.loads(path.with_name(path.stem + ".loops.toml").read_text(encoding="utf-8"))


def test_the_loop_panel_names_the_loop_that_dominates_then(explorer):
    index = index_loops(explorer.model)
    ds = ltm.loop_dominance(explorer.model, list(index), run="baseline")
    periods = ltm.dominance_periods(ds)
    times = ds["time"].to_numpy()
    keys = [str(k) for k in ds["loop"].to_numpy()]
    shared = periods[periods["loops"].str.contains("+", regex=False)]  # loops together
    longest = shared.loc[(shared["end"] - shared["start"]).idxmax()]
    for t in (30.0, float(longest["start"] + longest["end"]) / 2, explorer.t1):
        explorer.loop_time.value = t
        j = int(np.argmin(np.abs(times - t)))
        at = periods[(periods["start"] <= times[j]) & (periods["end"] >= times[j])]
        dominant = str(at["loops"].iloc[0]).split("+")
        # the strongest loop then, found directly: one of the dominant set, shown first
        rel = ds["relative_score"].to_numpy()[:, j]
        strongest = str(ds["loop"].to_numpy()[np.argmax(np.abs(rel))])
        assert strongest in dominant
        table = explorer.dominant_loops()
        assert sorted(table.loc[table["dominant"], "loop"]) == sorted(dominant)
        assert table["loop"].iloc[0] == strongest
        row = table.set_index("loop").loc[strongest]
        assert row["name"] == index[strongest]["name"]
        for shown in table.itertuples():  # each loop shown: its share and sign then
            score = rel[keys.index(shown.loop)]
            assert shown.polarity == ("reinforcing" if score > 0 else "balancing")
            assert shown.share == pytest.approx(abs(score))
        note = explorer.loop_note.object
        name = index[strongest]["name"]
        assert f"**{strongest}** ({name[0].lower()}{name[1:]}, {row['polarity']})" in note
        share = sum(abs(rel[keys.index(k)]) for k in dominant)
        assert f"explaining {round(100 * share)}% of the change" in note
    assert explorer.loop_marker.location == explorer.t1
    assert explorer.loop_story.object == ltm.describe_dominance(periods, ds, unit="month")
    # the stacked shares: the strongest loops' |relative scores|, averaged over blocks
    bands = explorer.loop_source.data
    top = str(ds["loop"].to_numpy()[np.argmax(np.abs(ds["relative_score"]).mean("time").values)])
    assert bands["label"][0] == top


def test_the_loop_panel_follows_every_move(explorer):
    explorer.move("Seller Deposit", 2000)
    assert explorer.loops_for is explorer.current
    ds = ltm.loop_dominance(
        explorer.model, list(index_loops(explorer.model)), run={"Seller Deposit": 2000.0}
    )
    np.testing.assert_allclose(
        explorer.loops_ds["relative_score"], ds["relative_score"], rtol=1e-9, atol=1e-12
    )
    explorer.loops_switch.value = False  # off: a move leaves the panel as it was
    analysed = explorer.loops_ds
    explorer.move("Seller Deposit", 3000)
    assert explorer.loops_ds is analysed and explorer.loops_for is not explorer.current
    explorer.loops_switch.value = True  # on again: the current run is analysed
    assert explorer.loops_for is explorer.current and explorer.loops_ds is not analysed


def test_in_a_served_app_only_the_newest_loop_analysis_runs_off_the_event_loop(
    explorer, monkeypatch
):
    class Doc:  # a served session: callbacks run on the next tick of its event loop
        def __init__(self):
            self.callbacks = []

        def add_next_tick_callback(self, callback):
            self.callbacks.append(callback)

    def tick():
        while doc.callbacks:
            doc.callbacks.pop(0)()

    doc = explorer._doc = Doc()
    analysed = []
    analyse = explorer._analyse

    def counted(sc, **options):
        analysed.append(sc.params.get("Seller Deposit"))
        return analyse(sc, **options)

    monkeypatch.setattr(explorer, "_analyse", counted)
    gate = threading.Event()
    pool = explorer_module._loop_pool()
    pool.submit(gate.wait, 60)  # the worker is busy: the analyses queue
    try:
        for value in (1000, 2000):
            explorer.move("Seller Deposit", value)
            tick()  # the run, the figure, the metrics: all done, the loops still queued
            assert explorer.current["Seller Deposit"].iloc[-1] == value
        assert analysed == [] and explorer.loop_status.object.startswith("analysing")
    finally:
        gate.set()
    pool.submit(lambda: None).result(timeout=120)  # the queue has drained
    tick()  # the result comes back on the event loop
    assert analysed == [2000]  # the overtaken request was skipped
    assert explorer.loops_for is explorer.current
    assert explorer.loop_status.object.startswith("loops analysed in")


def test_a_model_without_loops_says_so(write_mdl):
    explorer = Explorer(None, model=write_mdl(NO_LOOPS, "no_loops.mdl"))
    assert explorer.stats["failed"] == 0 and explorer.current is not None
    assert "the model has no feedback loops" in explorer.loop_note.object
    assert explorer.loop_table.object is None and explorer.loop_source.data["xs"] == []


# -- subscripted constants -----------------------------------------------------------------
def test_a_subscripted_constant_has_a_slider_per_element(write_mdl, tmp_path, monkeypatch):
    monkeypatch.setenv("FLYWHEEL_SD_SCENARIOS", str(tmp_path))
    path = write_mdl(REGIONS, "regions.mdl")
    explorer = Explorer(None, model=path)
    assert list(explorer.levers) == ["Growth[North]", "Growth[South]"]
    south = explorer.levers["Growth[South]"]
    assert (south.low, south.high, south.units, south.default) == (0, 0.2, "1/Month", 0.02)
    assert south.description == "Monthly growth of the customers."
    assert explorer.widgets["Growth[South]"].label.startswith("Growth[South] (")
    explorer.move("Growth[South]", 0.1)
    # as the model runs with Growth[South] = 0.1 and Growth[North] as the file has it
    growth = xr.DataArray([0.05, 0.1], dims=["Region"], coords={"Region": ["North", "South"]})
    expected = fw.simulate(fw.load(path), {"Growth": growth})
    for column in ("Customers[North]", "Customers[South]"):
        np.testing.assert_allclose(explorer.current[column], expected[column], rtol=1e-9)
    assert explorer.current["Customers[South]"].iloc[-1] > 10 * math.exp(0.02 * 10) * 1.5
    # saved as the scenario file's list (one value per element); run back the same
    saved = explorer.save_scenario("faster_south", tmp_path)
    assert tomllib.loads(saved.read_text())["params"]["Growth"] == [0.05, 0.1]
    again = fw.run_scenario("faster_south")
    np.testing.assert_allclose(again["Customers[South]"], expected["Customers[South]"], rtol=1e-9)
    # picked again: the widgets show it
    explorer.move("Growth[South]", 0.02)
    explorer.scenario_select.value = "faster_south"
    assert explorer.widgets["Growth[South]"].value == 0.1
    assert explorer.widgets["Growth[North]"].value == 0.05
    # out of its range: set to the end, said
    explorer.move("Growth[North]", 5)
    assert explorer.widgets["Growth[North]"].value == 0.2
    assert "Growth[North]: 5 is above its documented range" in explorer.message.object


def test_a_constant_over_two_ranges_runs_and_is_not_saved_silently(write_mdl, tmp_path):
    path = write_mdl(GRID, "grid.mdl")
    explorer = Explorer(None, model=path)
    assert "Rate[South,Web]" in explorer.levers and len(explorer.levers) == 4
    assert explorer.levers["Rate[South,Web]"].default == 3
    explorer.move("Rate[South,Web]", 7)
    assert explorer.current["Sales[South,Web]"].iloc[-1] == pytest.approx(7 * 4)
    assert explorer.current["Sales[North,Shop]"].iloc[-1] == pytest.approx(2 * 4)
    explorer.save_name.value, explorer.save_folder.value = "grid_try", str(tmp_path)
    explorer._save_clicked()
    assert explorer.message.alert_type == "danger"
    assert explorer.message.object.startswith("not saved:")
    assert not (tmp_path / "grid_try.toml").exists()


@pytest.mark.parametrize(
    "argv",
    [
        ["no_such_scenario"],
        ["--reference", "no_such_scenario"],
        ["--compare", "wish_deposit", "no_such_scenario"],
    ],
)
def test_the_cli_refuses_an_unknown_scenario_before_serving(capsys, argv):
    from flywheel_sd.cli import main

    assert main(["explore", *argv, "--port", "5999"]) == 2
    err = capsys.readouterr().err
    assert "no_such_scenario" in err and "wish_deposit" in err  # the valid names


@pytest.mark.slow
def test_in_a_browser_a_deposit_cuts_sellers_and_a_saved_scenario_round_trips(
    tmp_path, monkeypatch
):
    """The served app in headless Chromium: the loop panel fills in; a scenario picked to
    compare is overlaid; move the Seller Deposit slider (its handle, by keyboard), see the
    plotted active sellers fall below the ghost; save the scenario from the page and read it
    back; type a value beyond the range and see it clamped, said."""
    reason = missing()
    if reason:
        pytest.skip(reason)
    import _browser as b
    from selenium.webdriver.common.keys import Keys

    folder = tmp_path / "scenarios"
    folder.mkdir()
    env = {"FLYWHEEL_SD_SCENARIOS": str(folder)}  # (and FLYWHEEL_SD_JIT=off: no JIT)
    with b.served("baseline", env=env) as url, b.chromium() as driver:
        driver.get(url)
        before = b.wait_for(lambda: b.plotted(driver))
        np.testing.assert_allclose(before["cur_1"], before["ref_1"])  # baseline on baseline
        b.find(driver, "loops analysed in", timeout=120)  # the loop panel, off the event loop
        b.find(driver, "At month 120, ")
        b.pick(driver, "Compare with", "wish_deposit")  # overlaid: its own line
        lines = b.wait_for(
            lambda: (c := b.compared(driver)) and c["name"] == ["wish_deposit"] and c
        )
        wish = fw.run_scenario("wish_deposit")
        np.testing.assert_allclose(lines["ys_1"][0], sellers(wish), rtol=1e-6)
        b.open_sector(driver, "Sellers")
        handle = b.find(driver, "Seller Deposit (", ".noUi-handle")
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", handle)
        for _ in range(4):  # four pages of five steps: 0 -> 2,000 US$, a run per key
            handle.send_keys(Keys.PAGE_UP)
        box = b.find(driver, "Seller Deposit (", "input")
        b.wait_for(lambda: box.get_attribute("value") == "2,000")
        after = b.wait_for(lambda: b.settled(driver, before["cur_1"]))
        plotted, ghost = np.array(after["cur_1"]), np.array(after["ref_1"])
        assert np.all(plotted[12:] < ghost[12:])  # the deposit holds for the whole run
        assert plotted[-1] < before["cur_1"][-1]
        # its policy window, by keyboard too: from month 0 to 25 (five pages of five
        # months), the end from 120 to 60; sellers follow the ghost until the window opens
        window = "Seller Deposit: policy window"
        lower = b.find(driver, window, ".noUi-handle-lower")
        upper = b.find(driver, window, ".noUi-handle-upper")
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", lower)
        upper.send_keys(*[Keys.PAGE_DOWN] * 12)
        lower.send_keys(*[Keys.PAGE_UP] * 5)
        b.find(driver, "Shaded: Seller Deposit = 2,000 US$ / seller, months 25\N{EN DASH}60")
        windowed = b.wait_for(lambda: b.settled(driver, after["cur_1"]))
        plotted, ghost = np.array(windowed["cur_1"]), np.array(windowed["ref_1"])
        np.testing.assert_allclose(plotted[:25], ghost[:25], rtol=1e-6)
        assert np.all(plotted[27:61] < ghost[27:61])  # entry cut in the window
        b.type_into(driver, b.find(driver, "Scenario name", "input"), "browser_deposit")
        b.click(driver, b.find(driver, "Save as scenario", "button"))
        saved = b.wait_for(lambda: (p := folder / "browser_deposit.toml").is_file() and p)
        b.find(driver, "saved ")
        b.type_into(driver, box, "1000000000")  # beyond the documented 100,000
        b.find(driver, "Seller Deposit: 1B is above its documented range")
        b.wait_for(lambda: box.get_attribute("value") == "100,000")
        driver.save_screenshot(str(tmp_path / "explorer.png"))
    assert (tmp_path / "explorer.png").stat().st_size > 10_000
    monkeypatch.setenv("FLYWHEEL_SD_SCENARIOS", str(folder))
    sc = fw.scenarios.get("browser_deposit")
    assert sc.params["Seller Deposit"] == 2000
    assert (sc.params["Deposit Start Time"], sc.params["Deposit End Time"]) == (25, 60)
    assert fw.scenarios.load_file(saved).params == sc.params
    rerun = fw.run_scenario(sc)
    np.testing.assert_allclose(sellers(rerun), plotted, rtol=1e-6)
