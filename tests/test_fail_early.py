"""Bad output paths and unusable sweep stores fail before any run (issue #12, "failing late").

Every path option (--out, --plot, --metrics-plot, --store) is checked before the first run:
its folder can be made and written, it is not under a regular file, and its suffix is one
the command writes. A sweep store given with --resume that is not a flywheel_sd sweep, or is
damaged or truncated, is refused in one line naming the path. All of these are bad input:
exit status 2 (the CLI's usage-error convention; a damaged store is input the user must
replace, not a run that failed). No user's file is changed or deleted.

The runners are replaced by functions that raise AssertionError, so a test fails if a run
starts (today's code reached the run and then failed, or failed with a raw xarray/HDF5
error).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conformance_mdl import vensim

import flywheel_sd as fw
from flywheel_sd.cli import main

TINY = vensim(
    "Active Buyers = INTEG(Buyer Growth, 10) ~ Buyer [0,?] ~ Stock. Buyers.",
    "Buyer Growth = Growth Rate * Active Buyers * (1 - Active Buyers / Market)"
    " ~ Buyer/Month ~ Growth.",
    "Growth Rate = 0.2 ~ 1/Month [0, 1] ~ Fractional growth rate.",
    "Market = 1000 ~ Buyer [1, 100000] ~ Market size.",
    final_time=10,
    control_limits=True,
    control_comments=True,
)


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("fail-early") / "tiny.mdl"
    path.write_text(TINY)
    return path


def _boom(*args, **kwargs):
    raise AssertionError("a run started before the paths were checked")


@pytest.fixture
def no_runs(monkeypatch):
    """Any run_scenario / compare / sweep call fails the test."""
    for name in ("run_scenario", "compare", "sweep"):
        monkeypatch.setattr(fw, name, _boom)


@pytest.fixture
def cli(capsys):
    def call(*argv) -> tuple[int, str]:
        code = main([str(a) for a in argv])
        err = capsys.readouterr().err
        lines = err.strip().splitlines()
        assert len(lines) <= 1, err
        return code, (lines[0] if lines else "")

    return call


def _usage(result, *words) -> str:
    code, line = result
    assert code == 2, line
    assert line.startswith("flywheel: error: ") and "Traceback" not in line
    for word in words:
        assert str(word) in line, (word, line)
    return line


@pytest.fixture
def a_file(tmp_path) -> Path:
    path = tmp_path / "somefile.txt"
    path.write_text("keep me\n")
    return path


# -- output paths ----------------------------------------------------------------------------
def test_run_out_under_a_regular_file(cli, model, a_file, no_runs):
    bad = a_file / "x.csv"
    _usage(cli("run", "--model", model, "--out", bad), "--out", bad, "not a folder")
    assert a_file.read_text() == "keep me\n"


def test_run_plot_under_a_regular_file_is_refused_before_out_is_written(
    cli, model, a_file, tmp_path, no_runs
):
    out = tmp_path / "r.csv"
    bad = a_file / "deeper" / "r.png"
    _usage(cli("run", "--model", model, "--out", out, "--plot", bad), "--plot", bad)
    assert not out.exists()


def test_run_plot_with_an_unsupported_suffix(cli, model, tmp_path, no_runs):
    out, bad = tmp_path / "r.csv", tmp_path / "r.txt"
    _usage(cli("run", "--model", model, "--out", out, "--plot", bad), "--plot", bad, ".png")
    assert not out.exists() and not bad.exists()


def test_run_out_with_an_unsupported_suffix(cli, model, tmp_path, no_runs):
    _usage(cli("run", "--model", model, "--out", tmp_path / "r.xlsx"), "--out", "r.xlsx")


def test_run_out_that_is_a_folder(cli, model, tmp_path, no_runs):
    folder = tmp_path / "r.csv"
    folder.mkdir()
    _usage(cli("run", "--model", model, "--out", folder), "--out", folder, "folder")


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() == 0,
    reason="root writes into read-only folders; the 'under a regular file' "
    "tests cover an unwritable --out",
)
def test_run_out_in_a_read_only_folder(cli, model, tmp_path, no_runs):
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        _usage(cli("run", "--model", model, "--out", folder / "sub" / "r.csv"), "--out", "locked")
    finally:
        folder.chmod(0o700)


def test_compare_metrics_plot_under_a_regular_file(cli, model, a_file, tmp_path, no_runs):
    plot = tmp_path / "c.png"
    bad = a_file / "m.png"
    _usage(
        cli("compare", "--model", model, "baseline", "--plot", plot, "--metrics-plot", bad),
        "--metrics-plot",
        bad,
    )
    assert not plot.exists()


def test_compare_out_under_a_regular_file(cli, model, a_file, no_runs):
    _usage(cli("compare", "--model", model, "baseline", "--out", a_file / "c.nc"), "--out")


def test_sweep_store_under_a_regular_file(cli, model, a_file, no_runs):
    for name in ("s.nc", "s.zarr"):
        bad = a_file / name
        _usage(
            cli("sweep", "--model", model, "--param", "Growth Rate", "--n", 4, "--store", bad),
            "--store",
            bad,
        )
    assert a_file.read_text() == "keep me\n"


def test_sweep_zarr_store_that_is_a_regular_file(cli, model, tmp_path, no_runs):
    bad = tmp_path / "s.zarr"
    bad.write_text("not a folder")
    _usage(
        cli(
            "sweep",
            "--model",
            model,
            "--param",
            "Growth Rate",
            "--n",
            4,
            "--store",
            bad,
            "--resume",
        ),
        "--store",
        bad,
    )
    assert bad.read_text() == "not a folder"


def test_sensitivity_plot_under_a_regular_file(cli, model, a_file, no_runs):
    _usage(
        cli(
            "sensitivity",
            "--model",
            model,
            "--param",
            "Growth Rate",
            "--metric",
            "final_active_buyers",
            "--plot",
            a_file / "s.png",
        ),
        "--plot",
    )


def test_diagram_out_under_a_regular_file(cli, model, a_file):
    _usage(cli("diagram", "--model", model, "--out", a_file / "d.png"), "--out")
    assert a_file.read_text() == "keep me\n"


# -- sweep stores given with --resume ----------------------------------------------------------
def _sweep(model, store, *extra):
    return [
        "sweep",
        "--model",
        model,
        "--param",
        "Growth Rate=0.1:0.3",
        "--n",
        4,
        "--chunk-size",
        2,
        "--store",
        store,
        "--json",
        *extra,
    ]


def test_resume_onto_an_unrelated_text_file_named_nc(cli, model, tmp_path, no_runs):
    store = tmp_path / "x.nc"
    store.write_text("hello\n")
    _usage(cli(*_sweep(model, store, "--resume")), store, "not a flywheel_sd sweep store")
    assert store.read_text() == "hello\n"


def test_resume_onto_an_unrelated_netcdf(cli, model, tmp_path, no_runs):
    import xarray as xr

    store = tmp_path / "x.nc"
    xr.Dataset({"a": ("x", [1.0, 2.0])}).to_netcdf(store)
    before = store.read_bytes()
    _usage(cli(*_sweep(model, store, "--resume")), store, "not a flywheel_sd sweep store")
    assert store.read_bytes() == before


def test_resume_onto_a_truncated_nc_store(cli, model, tmp_path, monkeypatch):
    store = tmp_path / "s.nc"
    code, line = cli(*_sweep(model, store))
    assert code == 0, line
    data = store.read_bytes()
    store.write_bytes(data[: len(data) // 2])
    monkeypatch.setattr(fw, "sweep", _boom)
    _usage(cli(*_sweep(model, store, "--resume")), store, "damaged")
    assert store.stat().st_size == len(data) // 2


def test_resume_onto_a_damaged_zarr_store(cli, model, tmp_path, monkeypatch):
    from flywheel_sd.sweeps import store as store_module

    store = tmp_path / "s.zarr"
    code, line = cli(*_sweep(model, store))
    assert code == 0, line
    monkeypatch.setattr(store_module._StoreWriter, "write", _boom)

    meta = store / "sweep.json"
    text = meta.read_text()
    meta.write_text(text[: len(text) // 2])  # cut short
    _usage(cli(*_sweep(model, store, "--resume")), store, "damaged")
    assert meta.read_text() == text[: len(text) // 2]

    meta.write_text(text)
    for marker in (store / "chunks").glob("*.json"):
        marker.unlink()  # make the resume want to run chunks again
    for item in (store / "data.zarr").iterdir():  # the data lost
        if item.is_dir():
            for sub in item.rglob("*"):
                if sub.is_file():
                    sub.unlink()
        else:
            item.unlink()
    _usage(cli(*_sweep(model, store, "--resume")), store, "damaged")


def test_resume_onto_a_folder_that_is_not_a_sweep_store(cli, model, tmp_path, no_runs):
    store = tmp_path / "s.zarr"
    store.mkdir()
    (store / "notes.txt").write_text("mine")
    _usage(cli(*_sweep(model, store, "--resume")), store, "not a flywheel_sd sweep")
    assert (store / "notes.txt").read_text() == "mine"


def test_a_good_resume_still_works(cli, model, tmp_path):
    store = tmp_path / "s.nc"
    assert cli(*_sweep(model, store))[0] == 0
    assert cli(*_sweep(model, store, "--resume"))[0] == 0
    zarr = tmp_path / "s.zarr"
    assert cli(*_sweep(model, zarr))[0] == 0
    assert json.loads((zarr / "sweep.json").read_text())["format"].startswith("flywheel_sd")
    assert cli(*_sweep(model, zarr, "--resume"))[0] == 0


# -- time settings: SAVEPER a whole multiple of TIME STEP (issue 12) ---------------------------
def test_check_control_wants_saveper_a_multiple_of_time_step():
    """Named both values and the nearest valid SAVEPER, in one line; floating-point
    multiples (0.1 of 0.01 is 10.000000000000002 steps) are multiples."""
    from flywheel_sd.engine.run import check_control, valid_saveper
    from flywheel_sd.errors import MethodError

    for step, save in ((0.0625, 1), (0.01, 0.1), (0.125, 0.125), (1 / 3, 1), (0.03125, 0.5)):
        check_control(step, 0, 10, save)
        assert valid_saveper(step, save) == save
    for step, save, nearest in (
        (0.0625, 0.3, "0.3125"),
        (0.0078125, 0.1, "0.1015625"),
        (0.5, 0.1, "0.5"),
        (0.3, 1, "0.9"),
    ):
        with pytest.raises(MethodError) as info:
            check_control(step, 0, 10, save)
        text = str(info.value)
        assert "\n" not in text
        assert f"SAVEPER {save:g}" in text and f"TIME STEP {step:g}" in text, text
        assert f"use SAVEPER {nearest}" in text, text


def test_simulate_refuses_a_saveper_that_is_not_a_multiple(model):
    from flywheel_sd.errors import MethodError

    m = fw.load(model)
    for kwargs in ({"saveper": 0.3}, {"time_step": 0.3}, {"params": {"SAVEPER": 0.3}}):
        params = kwargs.pop("params", None)
        for engine in ("auto", "pysd"):
            with pytest.raises(MethodError, match=r"not a whole multiple of TIME STEP"):
                fw.simulate(m, params, engine=engine, **kwargs)
    frame = fw.simulate(m, saveper=0.25, method="euler")  # a multiple: saved every 0.25
    assert np.allclose(np.diff(frame.index), 0.25)


BAD_SAVEPER = ("not a whole multiple", "SAVEPER 0.3", "TIME STEP 0.125", "use SAVEPER 0.25")


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (("run", "--set", "SAVEPER=0.3"), BAD_SAVEPER),
        (("run", "--set", "TIME STEP=0.3"), ("SAVEPER 1 ", "TIME STEP 0.3", "use SAVEPER 0.9")),
        (("compare", "baseline", "--set", "SAVEPER=0.3"), BAD_SAVEPER),
        (("sweep", "--param", "Growth Rate=0.1:0.3", "--set", "SAVEPER=0.3"), BAD_SAVEPER),
        (("run", "--final-time", -1), ("FINAL TIME (-1)",)),
        (
            (
                "critical-mass",
                "--lever",
                "Growth Rate",
                "--low",
                0,
                "--high",
                1,
                "--scenario",
                "baseline",
                "--push-end",
                5,
                "--final-time",
                -1,
            ),
            ("FINAL TIME (-1)",),
        ),
    ],
)
def test_cli_refuses_bad_time_settings_before_any_run(cli, model, no_runs, argv, words):
    _usage(cli(argv[0], "--model", model, *argv[1:]), *words)


def test_a_scenario_file_with_a_bad_saveper_is_refused(cli, model, tmp_path, no_runs):
    sc = tmp_path / "s.toml"
    sc.write_text(f'name = "s"\nmodel = {str(model)!r}\n[params]\n"SAVEPER" = 0.3\n')
    line = _usage(cli("run", sc), "s.toml", "SAVEPER 0.3", "use SAVEPER 0.25")
    assert "TIME STEP 0.125" in line


def test_a_model_file_whose_own_saveper_is_not_a_multiple_runs_as_vensim_rounds_it(tmp_path):
    """Refusing the file would refuse a model Vensim runs (the SDXorg pendulum sample has
    SAVEPER 0.1 and TIME STEP 1/128): it saves at the nearest multiple, with one warning.
    (PySD's own clock saved only where both divide: every 0.5.)"""
    path = tmp_path / "pendulum_like.mdl"
    path.write_text(
        vensim(
            "Angle = INTEG(Speed, 1) ~ Rad ~ Stock.",
            "Speed = INTEG(-Angle, 0) ~ Rad/Second ~ Stock.",
            final_time=1,
            time_step=0.0078125,
            saveper=0.1,
        )
    )
    m = fw.load(path)
    with pytest.warns(UserWarning, match=r"SAVEPER 0.1 is not a whole multiple.*0.1015625"):
        frame = fw.simulate(m, method="euler")
    assert np.allclose(np.diff(frame.index), 0.1015625)
    adaptive = fw.simulate(m)  # one warning per model
    assert np.allclose(frame.index, adaptive.index)


def test_the_bundled_and_canonical_models_have_valid_saveper():
    """The bundled model's control values pass; so do those of every SDXorg test model with
    a canonical output (read from the files: SAVEPER = TIME STEP, or numbers)."""
    import re

    from flywheel_sd.engine.run import check_control, valid_saveper

    text = (Path(fw.__file__).parent.parent / "models" / "platform_flywheel.mdl").read_text()

    def control(text: str, name: str) -> str | None:
        found = re.search(rf"(?im)^\s*{name}\s*=\s*([^~]*?)\s*~", text)
        return found.group(1) if found else None

    step, save = float(control(text, "TIME STEP")), float(control(text, "SAVEPER"))
    check_control(step, 0, 120, save)
    root = os.environ.get("FLYWHEEL_TEST_MODELS")
    if not root:
        return
    checked = 0
    for mdl in Path(root).glob("**/*.mdl"):
        if not any((mdl.parent / f"output.{s}").exists() for s in ("tab", "csv")):
            continue
        source = mdl.read_text(errors="replace")
        step_text, save_text = control(source, "TIME STEP"), control(source, "SAVEPER")
        try:
            step, save = float(step_text), float(save_text)
        except (TypeError, ValueError):
            continue  # SAVEPER = TIME STEP, or an expression
        assert valid_saveper(step, save) == save, mdl
        checked += 1
    assert checked >= 2  # euler_step_vs_saveper (1 of 1/32), simple_harmonic_oscillator


# -- time-bound levers with companion start/end constants (issue 12) -------------------------
DEPOSIT = vensim(
    "Sellers = INTEG(Joining - Leaving, 100) ~ Seller [0,?] ~ Stock.",
    "Joining = 10 * (1 - Effective Deposit / 5000) ~ Seller/Month ~ Flow.",
    "Leaving = Sellers / 20 ~ Seller/Month ~ Flow.",
    "Seller Deposits Held = INTEG(Effective Deposit * Joining - Refunds, 0) ~ USD ~ Stock.",
    "Refunds = Seller Deposits Held * (1 - Deposit Policy Active) / 2 ~ USD/Month ~ Flow.",
    "Seller Deposit = 0 ~ USD/Seller [0, 100000] ~ The deposit.",
    "Deposit Start Time = 0 ~ Month [0, 1000] ~ When it starts.",
    "Deposit End Time = 1000 ~ Month [0, 1000] ~ When it ends (1000: never).",
    "Deposit Policy Active = IF THEN ELSE(Deposit End Time > Deposit Start Time,"
    " STEP(1, Deposit Start Time) - STEP(1, Deposit End Time), 0) ~ Dmnl ~ On.",
    "Effective Deposit = Seller Deposit * (1 - Deposit Waiver) * Deposit Policy Active"
    " ~ USD/Seller ~ Asked now.",
    "Ad Budget = 100 ~ USD/Month [0, 1000] ~ Ads.",
    "Ad Stop Time = 1000 ~ Month [0, 1000] ~ When ads stop.",
    "Ad Spend = Ad Budget * (1 - STEP(1, Ad Stop Time)) ~ USD/Month ~ Spend.",
    "Deposit Refund Time = 2 ~ Month [0.5, 12] ~ A duration, not a lever with a window.",
    "Deposit Waiver = 0 ~ Dmnl [0, 1] ~ Another lever of the deposit window.",
    "Ad Cost = 1 ~ USD/Click [0, 10] ~ Named like Ad Budget, but Ad Stop Time does not switch it.",
    "Spend per Click = Ad Cost * 2 ~ USD/Click ~ Reads Ad Cost only.",
    final_time=40,
    time_step=0.25,
    control_limits=True,
)


@pytest.fixture(scope="module")
def deposit_model(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("deposit") / "deposit.mdl"
    path.write_text(DEPOSIT)
    return path


def test_companions_are_found_by_name(deposit_model):
    from flywheel_sd.scenarios import policy_companions

    m = fw.load(deposit_model)
    assert policy_companions(m, "Seller Deposit") == ("Deposit Start Time", "Deposit End Time")
    assert policy_companions(m, "seller_deposit") == ("Deposit Start Time", "Deposit End Time")
    assert policy_companions(m, "Ad Budget") == (None, "Ad Stop Time")
    assert policy_companions(m, "Ad Cost") == (None, None)  # the name alone is not enough
    assert policy_companions(m, "Deposit Refund Time") == (None, None)
    assert policy_companions(m, "Deposit End Time") == (None, None)


def test_a_set_policy_on_the_deposit_refunds_as_the_scenario_file_does(
    cli, deposit_model, tmp_path
):
    """--set "Seller Deposit=2000@10:20" sets the deposit window's constants, as a scenario
    file that names them does: the same trajectory, deposits refunded after 20 (before,
    the policy was a step series on Seller Deposit alone and nothing was ever refunded)."""
    toml = tmp_path / "wish.toml"
    toml.write_text(
        f'name = "wish"\nmodel = {str(deposit_model)!r}\n[params]\n"Seller Deposit" = 2000\n'
        '"Deposit Start Time" = 10\n"Deposit End Time" = 20\n'
    )
    by_set, by_file = tmp_path / "set.csv", tmp_path / "file.csv"
    base = ("--model", deposit_model, "--method", "euler", "--columns", "Seller Deposits Held")
    assert cli("run", *base, "--set", "Seller Deposit=2000@10:20", "--out", by_set)[0] == 0
    assert (
        cli(
            "run", toml, "--method", "euler", "--columns", "Seller Deposits Held", "--out", by_file
        )[0]
        == 0
    )
    a = pd.read_csv(by_set, index_col=0)["Seller Deposits Held"]
    b = pd.read_csv(by_file, index_col=0)["Seller Deposits Held"]
    assert np.array_equal(a.to_numpy(), b.to_numpy())
    assert a.loc[20] > 1000 and a.loc[40] < 1e-3 * a.loc[20]  # refunded after the window


def test_policy_inputs_and_policies_that_disagree(deposit_model):
    from flywheel_sd.errors import ParameterError
    from flywheel_sd.scenarios import Policy, Scenario

    m = fw.load(deposit_model)
    fine = Scenario("s", params={"Seller Deposit": Policy(2000, 10, 20)}, model=str(deposit_model))
    fine.validate(m)
    params, breaks = fine.inputs(m, 0, 40)
    assert params["Deposit Start Time"] == 10 and params["Deposit End Time"] == 20
    assert params["Seller Deposit"] == 2000 and breaks == []
    open_ended = Scenario(
        "s", params={"Seller Deposit": Policy(2000, 10)}, model=str(deposit_model)
    )
    assert open_ended.inputs(m, 0, 40)[0]["Deposit End Time"] == 1000  # the model's "never"
    ads = Scenario("a", params={"Ad Budget": Policy(500, 5, 15)}, model=str(deposit_model))
    params, breaks = ads.inputs(m, 0, 40)
    assert params["Ad Stop Time"] == 15 and breaks == [5, 15]  # the budget is a series
    assert isinstance(params["Ad Budget"], pd.Series)
    clash = Scenario(
        "c",
        params={"Seller Deposit": Policy(2000, 10, 20), "Deposit End Time": 30.0},
        model=str(deposit_model),
    )
    assert clash.inputs(m, 0, 40)[0]["Deposit End Time"] == 20  # the policy wins
    both = Scenario(
        "b",
        params={"Seller Deposit": Policy(2000, 10, 20), "Deposit Waiver": Policy(0.5, 12, 20)},
        model=str(deposit_model),
    )
    with pytest.raises(ParameterError, match=r"'Deposit Start Time' to 12.*sets it to 10"):
        both.validate(m)
    window = Scenario(  # a policy on a window constant, and one whose window it is
        "w",
        params={"Deposit End Time": Policy(30, 1, 3), "Seller Deposit": Policy(10, 2, 4)},
        model=str(deposit_model),
    )
    with pytest.raises(ParameterError, match=r"sets 'Deposit End Time', which the policy"):
        window.validate(m)


@pytest.mark.slow
def test_set_deposit_policy_equals_wish_deposit_on_the_bundled_model(cli, tmp_path):
    """The issue's case on the project's model: `flywheel run <what wish_deposit extends>
    --set "Seller Deposit=2000@60:74"` and `flywheel run wish_deposit` hold and refund the
    same deposits (before, the --set run never refunded them: Deposit End Time stayed at
    the model's 1000)."""
    from flywheel_sd import scenarios

    model = fw.load()
    assert scenarios.policy_companions(model, "Seller Deposit") == (
        "Deposit Start Time",
        "Deposit End Time",
    )
    assert scenarios.policy_companions(model, "Ad Budget") == (None, "Ad Stop Time")
    wish = scenarios.read_toml(scenarios._files()["wish_deposit"])
    assert wish["params"]["Deposit End Time"] == 74  # the case this test is about
    parent = wish.get("extends", "baseline")
    outs = []
    for i, argv in enumerate(((parent, "--set", "Seller Deposit=2000@60:74"), ("wish_deposit",))):
        out = tmp_path / f"r{i}.csv"
        code, line = cli("run", *argv, "--columns", "Seller Deposits Held", "--out", out)
        assert code == 0, line
        outs.append(pd.read_csv(out, index_col=0)["Seller Deposits Held"])
    by_set, by_file = outs
    assert np.allclose(by_set.to_numpy(), by_file.to_numpy(), rtol=1e-9, atol=1e-6)
    held = by_set.loc[74]
    assert held > 0 and by_set.loc[100] < 1e-3 * held  # refunded after the window


def test_a_set_constant_that_contradicts_a_set_window_is_refused(cli, deposit_model, no_runs):
    _usage(
        cli(
            "run",
            "--model",
            deposit_model,
            "--set",
            "Deposit End Time=30",
            "--set",
            "Seller Deposit=2000@10:20",
        ),
        "'Deposit End Time=30' contradicts",
        "'Deposit End Time'",
    )
