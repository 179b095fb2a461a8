"""The what-if explorer (issue 15): its callbacks without a browser, and (slow) the served
app in headless Chromium."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest

import flywheel_sd as fw
from flywheel_sd.errors import FlywheelError, NonFiniteError

pytest.importorskip("panel", reason='the explorer needs Panel: pip install "flywheel_sd[explore]"')

from _browser import missing
from _shared import FRAGILE

from flywheel_sd.explorer import Explorer, _column


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


@pytest.mark.parametrize("argv", [["no_such_scenario"], ["--reference", "no_such_scenario"]])
def test_the_cli_refuses_an_unknown_scenario_before_serving(capsys, argv):
    from flywheel_sd.cli import main

    assert main(["explore", *argv, "--port", "5999"]) == 2
    err = capsys.readouterr().err
    assert "no_such_scenario" in err and "wish_deposit" in err  # the valid names


@pytest.mark.slow
def test_in_a_browser_a_deposit_cuts_sellers_and_a_saved_scenario_round_trips(
    tmp_path, monkeypatch
):
    """The served app in headless Chromium: move the Seller Deposit slider (its handle, by
    keyboard), see the plotted active sellers fall below the ghost; save the scenario from
    the page and read it back; type a value beyond the range and see it clamped, said."""
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
