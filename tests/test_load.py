"""Loading: the translation cache, the source tree left alone, pickling, parameter isolation."""

from __future__ import annotations

import importlib
import pickle

import numpy as np
import pandas as pd
import pytest
from conformance_mdl import vensim

import flywheel_sd as fw
from flywheel_sd.engine import model as _model

DECAY = vensim("Stock = INTEG(-k * Stock, 100)", "k = 0.3", final_time=10)
MACRO = """{UTF-8}
:MACRO: ACCUMULATE(input, start)
ACCUMULATE = INTEG(input, start)
\t~\tinput
\t~\tA macro that holds a stock.
\t|

:END OF MACRO:
""" + vensim("out = ACCUMULATE(rate, 2)", "rate = 0.5", final_time=4).removeprefix("{UTF-8}")


@pytest.fixture
def counted(monkeypatch, tmp_path):
    """A fresh cache, and a count of PySD translations."""
    monkeypatch.setenv("FLYWHEEL_SD_CACHE", str(tmp_path / "cache"))
    calls = []
    original = _model._TRANSLATABLE[".mdl"]

    def read_vensim(*args, **kwargs):
        calls.append(args[0])
        return original(*args, **kwargs)

    monkeypatch.setitem(_model._TRANSLATABLE, ".mdl", read_vensim)
    return calls


def test_second_load_of_an_unchanged_file_does_not_translate(counted, write_mdl):
    path = write_mdl(DECAY)
    first = fw.load(path)
    second = fw.load(path)
    assert len(counted) == 1
    assert first.py_file == second.py_file
    pd.testing.assert_frame_equal(fw.simulate(first), fw.simulate(second))


def test_editing_the_file_translates_again(counted, write_mdl):
    path = write_mdl(DECAY)
    before = fw.simulate(fw.load(path), method="euler")
    path.write_text(DECAY.replace("k = 0.3", "k = 0.1"))
    after = fw.simulate(fw.load(path), method="euler")
    assert len(counted) == 2
    assert after["Stock"].iloc[-1] > before["Stock"].iloc[-1]
    assert after["k"].iloc[0] == 0.1


def test_nothing_is_written_next_to_the_model(counted, tmp_path):
    folder = tmp_path / "src"
    folder.mkdir()
    path = folder / "decay.mdl"
    path.write_text(DECAY)
    fw.simulate(fw.load(path))
    assert sorted(p.name for p in folder.iterdir()) == ["decay.mdl"]
    cached = [p.name for p in (tmp_path / "cache").rglob("*.py")]
    # PySD's translation and the compiled engine's generated module, both in the cache
    assert "decay.py" in cached
    assert all(name == "decay.py" or name.startswith("compiled_") for name in cached)


def test_cache_folder_falls_back_to_the_user_cache(monkeypatch, tmp_path):
    monkeypatch.delenv("FLYWHEEL_SD_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert _model.cache_dir() == tmp_path / "flywheel_sd"


def test_a_model_with_a_macro_loads_from_the_cache(counted, write_mdl):
    """PySD writes one .py per macro beside the model's; they stay together in the cache."""
    model = fw.load(write_mdl(MACRO))
    frame = fw.simulate(model, method="euler")
    np.testing.assert_allclose(frame["out"], 2 + 0.5 * frame.index.to_numpy(float))
    adaptive = fw.simulate(model)
    np.testing.assert_allclose(adaptive["out"], frame["out"], rtol=1e-9)


def test_a_pysd_translation_loads(tmp_path):
    import pysd

    path = tmp_path / "decay.mdl"
    path.write_text(DECAY)
    reference = pysd.read_vensim(str(path)).run()
    model = fw.load(tmp_path / "decay.py")
    assert model.py_file == tmp_path / "decay.py"
    pd.testing.assert_frame_equal(
        fw.simulate(model, method="euler"), reference, check_exact=False, rtol=1e-12
    )


def test_model_pickles_and_simulates_identically(write_mdl):
    model = fw.load(write_mdl(DECAY))
    fw.simulate(model)  # a used model pickles too
    clone = pickle.loads(pickle.dumps(model))
    assert clone.path == model.path and clone is not model
    for method in ("RK45", "euler"):
        pd.testing.assert_frame_equal(
            fw.simulate(clone, {"k": 0.2}, method=method),
            fw.simulate(model, {"k": 0.2}, method=method),
            check_exact=True,
        )


def test_params_do_not_leak_between_runs(write_mdl):
    model = fw.load(write_mdl(DECAY))
    base = fw.simulate(model)
    changed = fw.simulate(model, {"k": 0.05})
    assert (changed["k"] == 0.05).all()
    again = fw.simulate(model)
    pd.testing.assert_frame_equal(base, again, check_exact=True)
    series = fw.simulate(model, {"k": pd.Series([0.0, 0.5], index=[0.0, 10.0])})
    assert series["k"].iloc[-1] == 0.5
    pd.testing.assert_frame_equal(base, fw.simulate(model), check_exact=True)


def test_metadata(write_mdl):
    model = fw.load(
        write_mdl(
            vensim(
                "Stock = INTEG(-k * Stock, 100)",
                "k = 0.3\n\t~\t1/Month [0, 1]\n\t~\tDecay rate.\n\t|",
                final_time=10,
            )
        )
    )
    assert model.stocks == ["Stock"]
    assert model.constants == ["k"]
    assert model.ranges == {"k": (0.0, 1.0)}
    assert model.time_settings() == {
        "initial_time": 0.0,
        "final_time": 10.0,
        "time_step": 0.125,
        "saveper": 1.0,
    }
    assert model.default_value("k") == 0.3
    assert model.real_name("K") == "k"
    assert len(model.sha256) == 64


def test_data_files_travel_with_the_model(tmp_path):
    """A DATA variable read from a .tab file; the file list survives pickling."""
    (tmp_path / "input.tab").write_text("Time\tdemand\n0\t1\n5\t3\n10\t3\n")
    path = tmp_path / "data.mdl"
    path.write_text(
        vensim(
            "demand:INTERPOLATE::=\n\t~\t\n\t~\t\n\t|", "Stock = INTEG(demand, 0)", final_time=10
        )
    )
    model = fw.load(path, data_files=[tmp_path / "input.tab"])
    clone = pickle.loads(pickle.dumps(model))
    assert clone.data_files == [str(tmp_path / "input.tab")]
    frame = fw.simulate(clone, saveper=0.125)
    t = frame.index.to_numpy(float)
    np.testing.assert_allclose(frame["demand"], np.interp(t, [0, 5, 10], [1, 3, 3]))
    truth = np.where(t < 5, t + 0.2 * t * t, 10 + 3 * (t - 5))
    np.testing.assert_allclose(frame["Stock"], truth, rtol=1e-6)


def test_default_model_loads():
    if not _model.DEFAULT_MODEL.exists():
        pytest.skip("models/platform_flywheel.mdl does not exist yet")
    model = fw.load()
    assert model.path == _model.DEFAULT_MODEL.resolve()
    assert model.stocks


def test_translation_leaves_no_temporary_folders(counted, write_mdl, tmp_path):
    fw.load(write_mdl(DECAY))
    with pytest.raises(fw.FlywheelError):
        fw.load(write_mdl("{UTF-8}\nx = (((\n\t~\t\n\t~\t\n\t|\n", name="broken.mdl"))
    leftovers = [p.name for p in (tmp_path / "cache").iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_the_package_ships_the_default_model():
    """A non-editable install has no models/ folder beside it: the package data does."""
    import fnmatch
    import tomllib
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    package = root / "flywheel_sd"
    globs = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"
    ]["flywheel_sd"]
    files = [
        f"{folder}/{p.name}"
        for folder in ("scenarios", "models")
        for p in (package / folder).iterdir()
    ]  # iterdir: models/ is a symlink
    shipped = {f for f in files if any(fnmatch.fnmatch(f, g) for g in globs)}
    assert _model.DEFAULT_MODEL.parent.parent == Path(fw.__file__).parent
    for wanted in ("models/platform_flywheel.mdl", "models/platform_flywheel.loops.toml"):
        assert wanted in shipped
        assert (package / wanted).read_bytes() == (root / wanted).read_bytes()


def test_a_new_compiler_version_clears_the_old_ones_files(tmp_path, monkeypatch):
    """Generated files of another compiler version are removed when the current one
    compiles the model, so a cache folder does not grow with every release."""
    compiled_module = importlib.import_module("flywheel_sd.engine.compiled")
    path = tmp_path / "decay.mdl"
    path.write_text(DECAY)
    model = fw.load(path)
    folder = model.py_file.parent
    stale = [folder / "compiled_v0_base.pkl", folder / "compiled_v0_base_python.py"]
    for p in stale:
        p.write_text("old")
    monkeypatch.setattr(compiled_module, "_MEMO", {})
    fw.simulate(model)
    assert not any(p.exists() for p in stale)
    assert any(folder.glob(f"compiled_v{compiled_module.COMPILER_VERSION}_base*.py"))
