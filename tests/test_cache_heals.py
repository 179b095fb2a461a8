"""The translation cache heals itself: a damaged or partial entry is discarded and
translated again, and a cache that cannot be written falls back to a temporary folder,
each with a one-line `CacheWarning` naming the path (issue #12)."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest
from conformance_mdl import vensim

import flywheel_sd as fw
from flywheel_sd.engine import model as _model
from flywheel_sd.errors import CacheWarning

DECAY = vensim("Stock = INTEG(-k * Stock, 100)", "k = 0.3", final_time=10)


@pytest.fixture
def cache(monkeypatch, tmp_path):
    """A fresh cache folder for this test, and no temporary fallback left from another."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("FLYWHEEL_SD_CACHE", str(folder))
    monkeypatch.setattr(_model, "_fallback", {}, raising=False)
    return folder


def _run(model) -> pd.DataFrame:
    return fw.simulate(model, method="euler", engine="pysd")


def _entry(cache: Path) -> Path:
    (entry,) = [p for p in cache.iterdir() if not p.name.startswith(".")]
    return entry


def _py(cache: Path) -> Path:
    return _entry(cache) / "model.py"


DAMAGE = {
    "truncated": lambda py: py.write_bytes(py.read_bytes()[: len(py.read_bytes()) // 2]),
    "empty": lambda py: py.write_bytes(b""),
    "garbage": lambda py: py.write_bytes(b"\x00\xff not python at all )(\n" * 50),
    "deleted": lambda py: py.unlink(),
    "marker deleted": lambda py: (py.parent / _model._MARKER).unlink(),
}


@pytest.mark.parametrize("forget", [False, True], ids=["remembered", "fresh"])
@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_entry_is_discarded_and_rebuilt(cache, write_mdl, damage, forget):
    path = write_mdl(DECAY)
    clean = _run(fw.load(path))
    DAMAGE[damage](_py(cache))
    if forget:  # as a new process would: no model remembered by `load`
        _model._loaded.__dict__.pop("models", None)
    with pytest.warns(CacheWarning, match="damaged") as caught:
        model = fw.load(path)
    assert len(caught) == 1
    assert str(_entry(cache)) in str(caught[0].message)
    assert "\n" not in str(caught[0].message)
    pd.testing.assert_frame_equal(_run(model), clean)
    pd.testing.assert_frame_equal(_run(fw.load(path)), clean)  # healed: no more warnings
    assert _model._entry_problem(_entry(cache), "model.py") is None


def test_a_healed_entry_serves_the_compiled_engine(cache, write_mdl):
    path = write_mdl(DECAY)
    clean = fw.simulate(fw.load(path), method="euler")
    DAMAGE["garbage"](_py(cache))
    with pytest.warns(CacheWarning, match="damaged"):
        model = fw.load(path)
    pd.testing.assert_frame_equal(fw.simulate(model, method="euler"), clean)


def _clean_run(write_mdl, monkeypatch, tmp_path) -> pd.DataFrame:
    monkeypatch.setenv("FLYWHEEL_SD_CACHE", str(tmp_path / "clean-cache"))
    clean = _run(fw.load(write_mdl(DECAY, "clean.mdl")))
    return clean


def _falls_back(path: Path, configured: Path, clean: pd.DataFrame) -> None:
    with pytest.warns(CacheWarning, match="FLYWHEEL_SD_CACHE") as caught:
        model = fw.load(path)
    assert len(caught) == 1
    message = str(caught[0].message)
    assert str(configured) in message and "\n" not in message
    fallback = _model.cache_dir()
    assert fallback != configured and fallback.name.startswith("flywheel_sd-cache-")
    assert model.py_file.is_relative_to(fallback)
    pd.testing.assert_frame_equal(_run(model), clean)
    pd.testing.assert_frame_equal(_run(fw.load(path)), clean)  # one warning per process


def test_a_cache_under_a_regular_file_falls_back_to_a_temp_folder(
    cache, write_mdl, monkeypatch, tmp_path
):
    clean = _clean_run(write_mdl, monkeypatch, tmp_path)
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a regular file")
    configured = blocker / "cache"
    monkeypatch.setenv("FLYWHEEL_SD_CACHE", str(configured))
    _falls_back(write_mdl(DECAY), configured, clean)


def test_a_read_only_cache_falls_back_to_a_temp_folder(cache, write_mdl, monkeypatch, tmp_path):
    clean = _clean_run(write_mdl, monkeypatch, tmp_path)
    cache.mkdir()
    cache.chmod(0o500)
    try:
        probe = cache / "probe"
        try:
            probe.write_text("")
        except PermissionError:
            pass
        else:
            probe.unlink()
            pytest.skip(
                "chmod does not stop writes here (running as root); "
                "the cache-under-a-file test covers an unwritable cache"
            )
        monkeypatch.setenv("FLYWHEEL_SD_CACHE", str(cache))
        _falls_back(write_mdl(DECAY), cache, clean)
    finally:
        cache.chmod(0o700)


def test_a_damaged_entry_in_an_unwritable_cache_falls_back(
    cache, write_mdl, monkeypatch, tmp_path
):
    """A damaged entry that cannot be discarded: the temporary folder serves instead."""
    path = write_mdl(DECAY)
    clean = _run(fw.load(path))
    DAMAGE["empty"](_py(cache))
    _model._loaded.__dict__.pop("models", None)
    original = _model._discard

    def cannot(folder):
        raise PermissionError(13, "Permission denied", str(folder))

    monkeypatch.setattr(_model, "_discard", cannot)
    with pytest.warns(CacheWarning) as caught:
        model = fw.load(path)
    messages = [str(w.message) for w in caught]
    assert any("FLYWHEEL_SD_CACHE" in m and str(cache) in m for m in messages)
    pd.testing.assert_frame_equal(_run(model), clean)
    monkeypatch.setattr(_model, "_discard", original)


def test_an_entry_is_used_only_once_complete(cache, write_mdl):
    """The marker is written last, inside the folder that is renamed into place."""
    path = write_mdl(DECAY)
    fw.load(path)
    entry = _entry(cache)
    marker = (entry / _model._MARKER).read_text()
    assert "model.py" in marker
    assert os.listdir(cache) == [entry.name]  # no work folders left behind
