"""sweep(): datasets, metrics, stores that resume, failures, executors, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import xarray as xr
from _shared import FRAGILE, SIR, sir_fixture  # noqa: F401  (sir_fixture: the `sir` fixture)
from conformance_mdl import vensim

import flywheel_sd as fw
from flywheel_sd import designs
from flywheel_sd.errors import FlywheelError, ParameterError
from flywheel_sd.sweeps import sweep as _sweep

SIR_RANGES = {"Contact Infectivity": (0.2, 0.5), "Duration": (3.0, 8.0)}

SWITCH = vensim(
    "Level = INTEG(IF THEN ELSE(Level > Threshold, 0.5, 1), 0) ~ units",
    "Threshold = 5 ~ units [0, 20]",
    final_time=10,
    time_step=0.25,
    time_units="Time",
    control_limits=True,
)


@pytest.fixture
def design():
    return designs.lhs(SIR_RANGES, 40, seed=1)


@pytest.fixture
def count_chunks(monkeypatch):
    """Count chunk computations (the in-process executor calls compute_chunk)."""
    calls = []
    original = _sweep.compute_chunk

    def counting(task):
        calls.append(task.index)
        return original(task)

    monkeypatch.setattr(_sweep, "compute_chunk", counting)
    return calls


def peak_infectious(ds):
    return ds["Infectious"].max("time")


def test_dataset_dims_coords_and_provenance(sir, design):
    ds = fw.sweep(sir, design, outputs=["Infectious"], saveper=5, progress=False)
    assert dict(ds.sizes) == {"run": 40, "time": 21}
    assert list(ds["Infectious"].dims) == ["run", "time"]
    np.testing.assert_allclose(ds["Duration"].values, design.table["Duration"].values)
    assert (ds["status"] == 1).all() and (ds["error"] == "").all()
    a = ds.attrs
    assert a["method"] == "RK45" and a["rtol"] == 1e-6 and a["model_sha256"] == sir.sha256
    assert a["design_kind"] == "lhs" and a["design_seed"] == 1
    assert a["flywheel_sd_version"] == fw.__version__ and a["n_runs"] == 40
    assert json.loads(a["design"])["names"] == ["Contact Infectivity", "Duration"]
    row = design.table.iloc[7]
    frame = fw.simulate(
        sir, {k: float(v) for k, v in row.items()}, saveper=5, return_columns=["Infectious"]
    )
    err = np.abs(ds["Infectious"][7].values - frame["Infectious"].values) / (
        1e-6 + 1e-6 * np.abs(frame["Infectious"].values)
    )
    assert err.max() < 200


def test_default_outputs_are_the_stocks(sir, design):
    ds = fw.sweep(sir, design, saveper=10, progress=False)
    assert {"Infectious", "Recovered", "Susceptible"} <= set(ds.data_vars)


def test_metrics_only_sweep_keeps_no_series(sir, design):
    ds = fw.sweep(sir, design, metrics={"peak": peak_infectious}, saveper=1, progress=False)
    assert [v for v in ds.data_vars if "time" in ds[v].dims] == []
    full = fw.sweep(sir, design, outputs=["Infectious"], saveper=1, progress=False)
    np.testing.assert_allclose(ds["peak"].values, full["Infectious"].max("time").values)


def test_registered_metric_by_name(sir, design):
    fw.metrics.register(
        "test_final_recovered", lambda d: d["Recovered"].isel(time=-1), replace=True
    )
    ds = fw.sweep(sir, design, metrics=["test_final_recovered"], saveper=10, progress=False)
    assert ds["test_final_recovered"].dims == ("run",)
    assert np.isfinite(ds["test_final_recovered"]).all()


def test_failed_runs_are_recorded_and_do_not_sink_the_sweep(write_mdl):
    model = fw.load(write_mdl(FRAGILE, "fragile.mdl"))
    table = {"Threshold": [50.0, 4.0, 30.0, 7.0, 60.0, 80.0]}
    ds = fw.sweep(
        model,
        table,
        outputs=["Accumulated"],
        chunk_size=3,
        metrics={"total": lambda d: d["Accumulated"].isel(time=-1)},
        progress=False,
    )
    assert ds["status"].values.tolist() == [1, 2, 1, 2, 1, 1]
    assert "non-finite" in str(ds["error"].values[1]) and ds["error"].values[0] == ""
    assert np.isnan(ds["total"].values[[1, 3]]).all() and np.isfinite(ds["total"].values[0])
    assert ds.attrs["n_failed"] == 2


def test_store_resume_computes_only_missing_chunks(sir, design, tmp_path, count_chunks):
    reference = fw.sweep(
        sir,
        design,
        outputs=["Infectious"],
        metrics={"peak": peak_infectious},
        saveper=5,
        chunk_size=10,
        progress=False,
    )
    count_chunks.clear()

    def interrupt_after_two(index, done, total):
        if done >= 20:
            raise KeyboardInterrupt

    store = tmp_path / "sweep"
    with pytest.raises(KeyboardInterrupt):
        fw.sweep(
            sir,
            design,
            outputs=["Infectious"],
            metrics={"peak": peak_infectious},
            saveper=5,
            chunk_size=10,
            store=store,
            callback=interrupt_after_two,
            progress=False,
        )
    assert count_chunks == [0, 1]
    assert sorted(p.name for p in (store / "chunks").glob("*.json")) == [
        "000000.json",
        "000001.json",
    ]
    resumed = fw.sweep(
        sir,
        design,
        outputs=["Infectious"],
        metrics={"peak": peak_infectious},
        saveper=5,
        chunk_size=10,
        store=store,
        progress=False,
    )
    assert count_chunks == [0, 1, 2, 3]  # no chunk computed twice
    np.testing.assert_array_equal(resumed["Infectious"].values, reference["Infectious"].values)
    np.testing.assert_array_equal(resumed["peak"].values, reference["peak"].values)
    np.testing.assert_array_equal(resumed["Duration"].values, reference["Duration"].values)
    assert "Duration" in resumed.coords
    again = fw.sweep(
        sir,
        design,
        outputs=["Infectious"],
        metrics={"peak": peak_infectious},
        saveper=5,
        chunk_size=10,
        store=store,
        progress=False,
    )
    assert count_chunks == [0, 1, 2, 3]
    xr.testing.assert_equal(again["peak"].load(), reference["peak"])
    reopened = xr.open_zarr(store / "data.zarr", consolidated=False)
    np.testing.assert_array_equal(reopened["peak"].values, reference["peak"].values)


def test_store_refuses_a_different_design(sir, design, tmp_path, count_chunks):
    store = tmp_path / "sweep"
    fw.sweep(sir, design, saveper=10, store=store, progress=False)
    count_chunks.clear()
    other = designs.lhs(SIR_RANGES, 40, seed=2)
    with pytest.raises(ParameterError, match="holds a different design"):
        fw.sweep(sir, other, saveper=10, store=store, progress=False)
    with pytest.raises(ParameterError, match=r"other settings .*method"):
        fw.sweep(sir, design, saveper=10, store=store, method="euler", progress=False)
    with pytest.raises(ParameterError, match="pass resume=True"):
        fw.sweep(sir, design, saveper=10, store=store, resume=False, progress=False)
    assert count_chunks == []


@pytest.mark.parametrize(
    "case, message",
    [
        ({"executor": "threads"}, "unknown executor 'threads'; valid: ensemble, processes, dask"),
        ({"design": {"Contact Infectivty": [0.3]}}, "did you mean 'Contact Infectivity'"),
        ({"design": {"Susceptible": [10.0]}}, "not a constant"),
        ({"rtoll": 1e-3}, "unknown sweep option 'rtoll'"),
        ({"outputs": ["Infectios"]}, "did you mean 'Infectious'"),
        ({"metrics": ["no_such_metric"]}, "unknown metric 'no_such_metric'"),
        ({"method": "RK99"}, "unknown method"),
        ({"chunk_size": 0}, "chunk_size"),
    ],
    ids=["executor", "parameter", "not-constant", "option", "output", "metric", "method", "chunk"],
)
def test_bad_input_fails_before_any_run(sir, design, count_chunks, case, message):
    case = dict(case)
    chosen = case.pop("design", design)
    with pytest.raises(FlywheelError, match=message):
        fw.sweep(sir, chosen, progress=False, **case)
    assert count_chunks == []


def test_bad_designs_fail_before_any_run():
    with pytest.raises(ParameterError, match="empty range"):
        designs.lhs({"Contact Infectivity": (0.5, 0.2)}, 10)
    with pytest.raises(ParameterError, match="power of two"):
        designs.sobol(SIR_RANGES, 100)


def test_fallback_is_announced_once_and_numbers_stay_right(write_mdl):
    """A model the compiler refuses (DELAY FIXED): every chunk runs per run on PySD, with
    one notice for the whole sweep, and the same numbers as single runs."""
    model = fw.load(
        write_mdl(
            vensim(
                "Out = DELAY FIXED(In, 2, 0) ~ units",
                "In = 1 + Gain * Time ~ units",
                "Gain = 1 ~ units/Time [0, 5]",
                final_time=5,
                time_step=0.5,
                time_units="Time",
                control_limits=True,
            ),
            "fixed.mdl",
        )
    )
    table = {"Gain": [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]}
    with pytest.warns(fw.EnsembleFallbackWarning, match="falls back to per-run") as caught:
        ds = fw.sweep(model, table, outputs=["Out"], method="euler", chunk_size=2, progress=False)
    assert len([w for w in caught if issubclass(w.category, fw.EnsembleFallbackWarning)]) == 1
    assert "DELAY FIXED" in ds.attrs["fallback"] and ds.attrs["per_run_chunks"] == 3
    for j, gain in enumerate(table["Gain"]):
        frame = fw.simulate(model, {"Gain": gain}, method="euler", return_columns=["Out"])
        np.testing.assert_array_equal(ds["Out"][j].values, frame["Out"].values)


class _Scenario:
    """The duck type sweep() accepts as a scenario: name, params and a model path."""

    def __init__(self, model, params):
        self.name = "bigger town"
        self.model = str(model)
        self.params = params


def test_scenario_params_are_the_base_of_every_run(sir, design):
    scenario = _Scenario(SIR, {"Total Population": 5000.0, "Duration": 99.0})
    ds = fw.sweep(scenario, design, outputs=["Susceptible"], saveper=10, progress=False)
    assert ds.attrs["scenario"] == "bigger town"
    assert (ds["Susceptible"].isel(time=0) == 5000).all()
    # the design's Duration wins over the scenario's
    np.testing.assert_allclose(ds["Duration"].values, design.table["Duration"].values)
    assert json.loads(ds.attrs["base_params"]) == {"Total Population": 5000.0}


def test_progress_is_quiet_off_a_terminal(sir, design, capsys):
    fw.sweep(sir, design, saveper=10, progress=True)
    assert capsys.readouterr().err == ""


def test_per_run_integration_gives_the_same_numbers(sir, design):
    vec = fw.sweep(sir, design, outputs=["Infectious"], saveper=5, method="euler", progress=False)
    loop = fw.sweep(
        sir,
        designs.from_table(design.table.iloc[:5]),
        outputs=["Infectious"],
        saveper=5,
        method="euler",
        vectorize=False,
        progress=False,
    )
    np.testing.assert_allclose(vec["Infectious"].values[:5], loop["Infectious"].values, rtol=1e-10)
    assert loop.attrs["per_run_chunks"] == 1 and not loop.attrs["fallback"]


@pytest.mark.slow
def test_process_pool_matches_in_process(sir, design):
    local = fw.sweep(sir, design, outputs=["Infectious"], saveper=5, progress=False)
    pooled = fw.sweep(
        sir,
        design,
        outputs=["Infectious"],
        saveper=5,
        progress=False,
        executor="processes",
        workers=2,
        chunk_size=10,
    )
    np.testing.assert_allclose(pooled["Infectious"].values, local["Infectious"].values, rtol=1e-5)
    assert pooled.attrs["executor"] == "processes"


@pytest.mark.slow
def test_dask_local_cluster_with_two_workers(sir, design, tmp_path):
    from dask.distributed import Client, LocalCluster

    local = fw.sweep(
        sir,
        design,
        outputs=["Infectious"],
        metrics={"peak": peak_infectious},
        saveper=5,
        progress=False,
    )
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        ds = fw.sweep(
            sir,
            design,
            outputs=["Infectious"],
            metrics={"peak": lambda d: d["Infectious"].max("time")},
            saveper=5,
            progress=False,
            executor="dask",
            scheduler=client,
            chunk_size=10,
            store=tmp_path / "dask-sweep",
        )
        workers_used = len(client.scheduler_info(n_workers=-1)["workers"])
    assert workers_used == 2
    np.testing.assert_allclose(ds["Infectious"].values, local["Infectious"].values, rtol=1e-5)
    np.testing.assert_allclose(ds["peak"].values, local["peak"].values, rtol=1e-5)


@pytest.mark.parametrize("vectorize", [True, False])
def test_a_model_whose_saveper_is_time_step_sweeps_from_its_path(write_mdl, vectorize):
    """SAVEPER = TIME STEP (an expression, as in the SIR sample): the docstring's example
    ``fw.sweep("SIR.mdl", design)`` once crashed reading the control variables."""
    path = write_mdl(
        vensim(
            "Stock = INTEG(-Rate * Stock, 1) ~ units",
            "Rate = 1 ~ 1/Time [0.1, 2]",
            final_time=2,
            time_step=0.25,
            saveper="TIME STEP",
            time_units="Time",
            control_limits=True,
        ),
        "every_step.mdl",
    )
    ds = fw.sweep(
        str(path),
        {"Rate": [0.5, 1.5]},
        outputs=["Stock"],
        method="euler",
        progress=False,
        vectorize=vectorize,
    )
    np.testing.assert_allclose(ds["time"].values, np.arange(0, 2.01, 0.25))
    for j, rate in enumerate([0.5, 1.5]):
        np.testing.assert_allclose(
            ds["Stock"][j].values, (1 - 0.25 * rate) ** np.arange(9), rtol=1e-12
        )
