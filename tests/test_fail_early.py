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
