"""Sensitivity indices against an additive model with known answers; headless charts."""

from __future__ import annotations

import numpy as np
import pytest
from conformance_mdl import vensim

import flywheel_sd as fw
from flywheel_sd import designs
from flywheel_sd.errors import ParameterError

# Final Stock = A + 2 B (Euler is exact for a constant inflow): with A, B ~ U(0, 1),
# S1 = ST = (0.2, 0.8), and the elementary effects are 1 and 2.
ADDITIVE = vensim(
    "Stock = INTEG(A + 2 * B, 0) ~ units",
    "A = 0.5 ~ units/Time [0, 1]",
    "B = 0.5 ~ units/Time [0, 1]",
    final_time=1,
    time_step=0.25,
    saveper=0.25,
    time_units="Time",
    control_limits=True,
)


def final_stock(ds):
    return ds["Stock"].isel(time=-1)


@pytest.fixture
def additive(write_mdl):
    return fw.load(write_mdl(ADDITIVE, "additive.mdl"))


def test_sobol_indices_of_an_additive_model(additive):
    design = designs.saltelli(["A", "B"], 256, seed=3, model=additive)
    ds = fw.sweep(additive, design, metrics={"final": final_stock}, method="euler", progress=False)
    table = fw.sensitivity(ds, "final", seed=1)
    assert list(table.columns) == ["S1", "S1_conf", "ST", "ST_conf"]
    np.testing.assert_allclose(table["S1"], [0.2, 0.8], atol=0.05)
    np.testing.assert_allclose(table["ST"], [0.2, 0.8], atol=0.05)
    assert table.attrs["method"] == "sobol" and table.attrs["metric"] == "final"


def test_morris_indices_of_an_additive_model(additive):
    design = designs.morris(["A", "B"], 20, seed=3, model=additive)
    ds = fw.sweep(additive, design, outputs=["Stock"], method="euler", progress=False)
    table = fw.sensitivity(ds, final_stock, seed=1)  # a function of the kept series
    np.testing.assert_allclose(table["mu_star"], [1.0, 2.0], rtol=1e-6)
    np.testing.assert_allclose(table["sigma"], [0.0, 0.0], atol=1e-6)


def test_sensitivity_needs_the_right_design(additive):
    ds = fw.sweep(
        additive,
        designs.lhs(["A", "B"], 8, seed=0, model=additive),
        metrics={"final": final_stock},
        method="euler",
        progress=False,
    )
    with pytest.raises(ParameterError, match="needs a saltelli design"):
        fw.sensitivity(ds, "final")
    with pytest.raises(ParameterError, match="needs a morris design"):
        fw.sensitivity(ds, "final", method="morris")


def test_sensitivity_refuses_failed_runs(additive):
    design = designs.saltelli(["A", "B"], 8, seed=3, model=additive)
    ds = fw.sweep(additive, design, metrics={"final": final_stock}, method="euler", progress=False)
    ds["final"][3] = np.nan
    with pytest.raises(ParameterError, match="not finite for 1 of 32 runs"):
        fw.sensitivity(ds, "final")


def test_tornado_chart_of_one_at_a_time_ranges(additive, tmp_path):
    design = designs.oat(["A", "B"], model=additive)
    ds = fw.sweep(additive, design, metrics={"final": final_stock}, method="euler", progress=False)
    np.testing.assert_allclose(ds["final"].values, [1.5, 1.0, 2.0, 0.5, 2.5])
    path = tmp_path / "charts" / "tornado.png"
    fig = fw.tornado_chart(ds, "final", path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    ax = fig.axes[0]
    labels = [t.get_text().split("\n")[0] for t in ax.get_yticklabels()]
    assert labels == ["A", "B"]  # widest bar (B) on top


def test_fan_chart_of_a_sweep_output(additive, tmp_path):
    ds = fw.sweep(
        additive,
        designs.lhs(["A", "B"], 30, seed=0, model=additive),
        outputs=["Stock"],
        method="euler",
        progress=False,
    )
    path = tmp_path / "fan.png"
    fig = fw.fan_chart(ds, "Stock", path, percentiles=(10, 50, 90))
    assert path.stat().st_size > 1000
    assert len(fig.axes[0].collections) == 1 and len(fig.axes[0].lines) == 1
    with pytest.raises(ParameterError, match="unknown output"):
        fw.fan_chart(ds, "Stok")


def test_charts_need_a_sweep():
    import xarray as xr

    with pytest.raises(ParameterError, match="not a flywheel_sd sweep"):
        fw.tornado_chart(xr.Dataset(), "x")
