"""`load` reuses the model it loaded for an unchanged file, and loads a changed one anew."""

from __future__ import annotations

import os

import pytest
from conformance_mdl import vensim

import flywheel_sd as fw
from flywheel_sd.engine import model as _model

DECAY = vensim("Stock = INTEG(-k * Stock, 100)", "k = 0.3", final_time=10)


@pytest.fixture
def pysd_loads(monkeypatch):
    """The paths PySD's load is called with."""
    calls = []
    original = _model.pysd.load

    def load(path, *args, **kwargs):
        calls.append(path)
        return original(path, *args, **kwargs)

    monkeypatch.setattr(_model.pysd, "load", load)
    return calls


def test_a_second_load_of_an_unchanged_file_reuses_the_model(pysd_loads, write_mdl):
    path = write_mdl(DECAY)
    first = fw.load(path)
    second = fw.load(str(path))  # the same file, named differently
    assert second is first
    assert len(pysd_loads) == 1


def test_a_changed_file_is_loaded_again(pysd_loads, write_mdl):
    path = write_mdl(DECAY)
    first = fw.load(path)
    stat = path.stat()
    # Same size and modification time: only the content tells the change.
    path.write_text(DECAY.replace("k = 0.3", "k = 0.1"))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    second = fw.load(path)
    assert second is not first
    assert len(pysd_loads) == 2
    assert fw.simulate(second, method="euler")["k"].iloc[0] == 0.1


def test_a_changed_data_file_is_loaded_again(pysd_loads, write_mdl, tmp_path):
    path = write_mdl(DECAY)
    data = tmp_path / "input.tab"
    data.write_text("Time\tx\n0\t1\n")
    first = fw.load(path, data_files=[data])
    assert fw.load(path, data_files=[data]) is first
    assert fw.load(path) is not first  # other data files: another model
    data.write_text("Time\tx\n0\t1\n10\t2\n")
    assert fw.load(path, data_files=[data]) is not first


def test_the_memo_is_per_thread(write_mdl):
    from concurrent.futures import ThreadPoolExecutor

    path = write_mdl(DECAY)
    first = fw.load(path)
    with ThreadPoolExecutor(1) as pool:
        other = pool.submit(fw.load, path).result()
    assert other is not first
