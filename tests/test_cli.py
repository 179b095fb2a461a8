"""The ``flywheel`` command: every subcommand in-process through ``main([...])``, once each
through ``python -m flywheel_sd``, and bad input giving exit 2 with a one-line message.

Most tests use LAUNCH, a one-stock model with a critical mass (growth is negative below
``Critical Buyers``), so that runs take milliseconds; the default model is exercised with
short final times.
"""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from _cli import Result, cli_fixture, one_line_error  # noqa: F401 - cli_fixture: the cli fixture
from conformance_mdl import vensim

import flywheel_sd as fw
from flywheel_sd.errors import WideIntervalWarning

LAUNCH = vensim(
    "Active Buyers = INTEG(Buyer Growth + Ad Buyers, 10) ~ Buyer [0,?]"
    " ~ Stock. Buyers on the platform.",
    "Buyer Growth = Growth Rate * Active Buyers * (Active Buyers / Critical Buyers - 1)"
    " * (1 - Active Buyers / Market) ~ Buyer/Month"
    " ~ Word of mouth: negative below the critical mass, positive above it.",
    "Ad Buyers = Ad Budget / Cost Per Buyer * (1 - STEP(1, Ad Stop Time)) ~ Buyer/Month"
    " ~ Buyers bought with ads until the ads stop.",
    "Growth Rate = 0.2 ~ 1/Month [0, 1] ~ Fractional growth rate.",
    "Critical Buyers = 100 ~ Buyer [1, 1000] ~ Critical mass of buyers.",
    "Market = 1000 ~ Buyer [1, 100000] ~ Market size.",
    "Ad Budget = 0 ~ USD/Month [0, 1000] ~ Advertising spend.",
    "Cost Per Buyer = 10 ~ USD/Buyer [1, 100] ~ Cost per acquired buyer.",
    "Ad Stop Time = 10 ~ Month [0, 40] ~ When the ads stop.",
    "GMV = Active Buyers * 5 ~ USD/Month ~ Sales.",
    final_time=40,
    control_limits=True,
    control_comments=True,
)

LOOPS = """
[[loops]]
id = "R1"
name = "word of mouth"
variables = ["Active Buyers", "Buyer Growth", "Active Buyers"]

[[loops]]
id = "B1"
name = "saturation"
polarity = "balancing"
variables = ["Active Buyers", "Buyer Growth"]
"""

# A stock that reaches infinity at t = 1: every method fails on it.
BLOWUP = vensim(
    "X = INTEG(X * X, 1) ~ Dmnl ~ Blows up.",
    final_time=5,
    control_limits=True,
    control_comments=True,
)


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("cli-models")
    paths = {}
    for name, text in (
        ("launch", LAUNCH),
        ("blowup", BLOWUP),
        ("broken", "{UTF-8}\nStock = INTEG(( , 1\n\t~\t\n\t~\t\n\t|\n"),
    ):
        paths[name] = folder / f"{name}.mdl"
        paths[name].write_text(text)
    (folder / "launch.loops.toml").write_text(LOOPS)
    paths["ads"] = folder / "ads.toml"
    paths["ads"].write_text(
        f'name = "ads"\ndescription = "Ads for ten months."\nmodel = "{paths["launch"]}"\n'
        '[params]\n"Ad Budget" = 300\n'
    )
    return paths


# -- run -------------------------------------------------------------------------------------
def test_run_prints_a_summary_of_the_stocks(cli, models):
    result = cli("run", "--model", models["launch"])
    assert result.code == 0, result.err
    assert "Active Buyers" in result.out and "final" in result.out


def test_run_json_csv_netcdf_and_plot(cli, models, tmp_path):
    import pandas as pd
    import xarray as xr

    csv, nc, png = tmp_path / "r.csv", tmp_path / "sub" / "r.nc", tmp_path / "r.png"
    result = cli(
        "run",
        "--model",
        models["launch"],
        "--set",
        "Ad Budget=300",
        "--method",
        "euler",
        "--out",
        csv,
        "--plot",
        png,
        "--json",
    )
    assert result.code == 0, result.err
    data = result.json()
    (row,) = [r for r in data["summary"] if r["variable"] == "Active Buyers"]
    assert data["method"] == "euler" and row["max"] >= row["initial"]
    frame = pd.read_csv(csv, index_col=0)
    assert frame.index[0] == 0 and frame.index[-1] == 40
    assert frame["Ad Budget"].iloc[0] == 300
    assert png.stat().st_size > 0

    assert cli("run", "--model", models["launch"], "--out", nc, "--final-time", 5).code == 0
    with xr.open_dataset(nc) as ds:
        assert float(ds["time"][-1]) == 5 and "Active Buyers" in ds


def test_run_set_policy_window(cli, models):
    result = cli(
        "run",
        "--model",
        models["launch"],
        "--set",
        "Ad Budget=300@2:6",
        "--columns",
        "Ad Buyers",
        "--json",
    )
    assert result.code == 0, result.err
    (row,) = result.json()["summary"]
    assert row["initial"] == 0 and row["max"] == pytest.approx(30)


def test_run_scenario_file(cli, models):
    result = cli("run", models["ads"], "--json")
    assert result.code == 0, result.err
    assert result.json()["scenario"] == "ads"


@pytest.mark.slow
def test_run_default_model(cli, tmp_path):
    result = cli(
        "run",
        "wish_deposit",
        "--final-time",
        2,
        "--method",
        "euler",
        "--plot",
        tmp_path / "run.png",
    )
    assert result.code == 0, result.err
    assert "Active Sellers[High]" in result.out and (tmp_path / "run.png").stat().st_size > 0


# -- scenarios -------------------------------------------------------------------------------
def test_scenarios_lists_every_scenario(cli):
    result = cli("scenarios")
    assert result.code == 0, result.err
    for name, description in fw.scenarios.describe().items():
        assert name in result.out and description[:30] in result.out
    listed = cli("scenarios", "--json").json()
    assert [row["scenario"] for row in listed] == fw.scenarios.list()


def test_scenarios_says_which_fit_another_model(cli, models):
    rows = {
        r["scenario"]: r for r in cli("scenarios", "--model", models["launch"], "--json").json()
    }
    column = "fits launch.mdl"
    assert rows["baseline"][column] == "yes"
    assert rows["wish_deposit"][column].startswith("no")


# -- compare ---------------------------------------------------------------------------------
def test_compare_prints_metrics_and_writes_files(cli, models, tmp_path):
    files = {
        k: tmp_path / f"{k}.{ext}"
        for k, ext in (("plot", "png"), ("bars", "svg"), ("csv", "csv"), ("nc", "nc"))
    }
    result = cli(
        "compare",
        "--model",
        models["launch"],
        "baseline",
        models["ads"],
        "--metrics",
        "final_active_buyers",
        "peak_active_buyers",
        "--plot",
        files["plot"],
        "--metrics-plot",
        files["bars"],
        "--out",
        files["csv"],
    )
    assert result.code == 0, result.err
    assert "final_active_buyers" in result.out and "ads %chg" in result.out
    assert files["plot"].stat().st_size > 0 and files["bars"].stat().st_size > 0
    import pandas as pd

    table = pd.read_csv(files["csv"])
    assert set(table["scenario"]) == {"baseline", "ads"}

    data = cli(
        "compare",
        "--model",
        models["launch"],
        "baseline",
        models["ads"],
        "--json",
        "--out",
        files["nc"],
    ).json()
    values = {(r["scenario"], r["metric"]): r["value"] for r in data["metrics"]}
    # Ads past the critical mass: the ads scenario ends with more buyers than baseline.
    assert values[("ads", "final_active_buyers")] > values[("baseline", "final_active_buyers")]
    import xarray as xr

    with xr.open_dataset(files["nc"]) as ds:
        assert list(ds["scenario"].values) == ["baseline", "ads"]


@pytest.mark.slow
def test_compare_default_model(cli, tmp_path):
    result = cli(
        "compare",
        "baseline",
        "wish_deposit",
        "--final-time",
        2,
        "--method",
        "euler",
        "--plot",
        tmp_path / "c.png",
    )
    assert result.code == 0, result.err
    assert "cumulative_gmv" in result.out and (tmp_path / "c.png").stat().st_size > 0


# -- critical mass ---------------------------------------------------------------------------
def test_critical_mass_brackets_the_threshold(cli, models):
    result = cli(
        "critical-mass",
        "--model",
        models["launch"],
        "--scenario",
        "baseline",
        "--lever",
        "Ad Budget",
        "--low",
        0,
        "--high",
        300,
        "--json",
    )
    assert result.code == 0, result.err
    found = result.json()
    assert 0 < found["decays_at"] <= found["threshold"] <= found["grows_at"] < 300
    assert found["grows_at"] - found["decays_at"] <= 0.3 + 1e-9  # the default tol: 1/1000
    text = cli(
        "critical-mass",
        "--model",
        models["launch"],
        "--scenario",
        "baseline",
        "--lever",
        "Ad Budget",
        "--low",
        0,
        "--high",
        300,
        "--tol",
        10,
    )
    assert text.code == 0 and "threshold" in text.out


@pytest.mark.slow
def test_critical_mass_default_model(cli):
    """launch_ad_burn on the flywheel model: a coarse bracket (tol) keeps it to a few runs."""
    result = cli(
        "critical-mass",
        "--lever",
        "Ad Budget",
        "--low",
        0,
        "--high",
        1_000_000,
        "--tol",
        250_000,
        "--rtol",
        1e-4,
        "--atol",
        1e-3,
        "--json",
    )
    assert result.code == 0, result.err
    found = result.json()
    assert found["scenario"] == "launch_ad_burn"
    assert 0 <= found["decays_at"] < found["grows_at"] <= 1_000_000
    assert found["grows_at"] - found["decays_at"] <= 250_000


# -- describe --------------------------------------------------------------------------------
def test_describe_lists_stocks_loops_and_levers(cli, models):
    result = cli("describe", "--model", models["launch"])
    assert result.code == 0, result.err
    assert "Active Buyers" in result.out and "word of mouth" in result.out
    data = cli("describe", "--model", models["launch"], "--json").json()
    assert [s["stock"] for s in data["stocks"]] == ["Active Buyers"]
    assert {loop["loop"]: loop["polarity"] for loop in data["loops"]} == {
        "R1": "reinforcing",
        "B1": "balancing",
    }
    levers = {lever["lever"]: lever for lever in data["levers"]}
    assert levers["Ad Budget"]["min"] == 0 and levers["Ad Budget"]["max"] == 1000
    assert levers["Ad Budget"]["units"] == "USD/Month"


@pytest.mark.slow
def test_describe_default_model(cli):
    data = cli("describe", "--json").json()
    model = fw.load()
    assert [s["stock"] for s in data["stocks"]] == model.stocks
    assert {lever["lever"] for lever in data["levers"]} == set(model.constants)


# -- diagram ---------------------------------------------------------------------------------
def test_diagram_of_any_model(cli, models, tmp_path):
    out = tmp_path / "launch.svg"
    result = cli("diagram", "--model", models["launch"], "--out", out)
    assert result.code == 0, result.err
    assert out.stat().st_size > 0 and str(out) in result.out


@pytest.mark.slow
def test_diagram_of_the_default_model(cli, tmp_path):
    out = tmp_path / "flywheel.png"
    result = cli("diagram", "--out", out, "--json")
    assert result.code == 0, result.err
    assert result.json()["out"] == str(out) and out.stat().st_size > 0


# -- sweep -----------------------------------------------------------------------------------
def test_sweep_summarises_metrics_and_writes_netcdf(cli, models, tmp_path):
    import xarray as xr

    store = tmp_path / "sweep.nc"
    argv = [
        "sweep",
        "--model",
        models["launch"],
        "--param",
        "Ad Budget=0:300",
        "--param",
        "Growth Rate",
        "--design",
        "lhs",
        "--n",
        12,
        "--seed",
        3,
        "--metrics",
        "final_active_buyers",
        "--store",
        store,
        "--json",
    ]
    result = cli(*argv)
    assert result.code == 0, result.err
    data = result.json()
    assert (data["runs"], data["ok"], data["failed"]) == (12, 12, 0)
    (row,) = data["summary"]
    assert row["variable"] == "final_active_buyers" and row["min"] <= row["median"] <= row["max"]
    with xr.open_dataset(store) as ds:
        assert ds.sizes["run"] == 12
        assert float(ds["Ad Budget"].min()) >= 0 and float(ds["Ad Budget"].max()) <= 300
        # Growth Rate took its documented range, [0, 1]
        assert 0 <= float(ds["Growth Rate"].min()) < float(ds["Growth Rate"].max()) <= 1
    assert not (tmp_path / "sweep.nc.parts").exists()

    again = cli(*argv[:-1])  # the store exists: refuse without --resume
    assert again.code == 2 and "--resume" in one_line_error(again)
    resumed = cli(*argv, "--resume")
    assert resumed.code == 0 and resumed.json()["ok"] == 12


def test_sweep_grid_to_zarr_keeps_stocks(cli, models, tmp_path):
    import xarray as xr

    store = tmp_path / "grid.zarr"
    result = cli(
        "sweep",
        "--model",
        models["launch"],
        "--param",
        "Ad Budget=0:300:4",
        "--param",
        "Market=500:1000:2",
        "--design",
        "grid",
        "--store",
        store,
        "--final-time",
        20,
    )
    assert result.code == 0, result.err
    assert "Active Buyers" in result.out
    assert "8 runs (grid), 8 ok" in result.out
    with xr.open_zarr(store / "data.zarr", consolidated=False) as ds:
        assert ds.sizes["run"] == 8 and float(ds["time"][-1]) == 20


def test_sweep_around_a_scenario_with_settings(cli, models):
    result = cli(
        "sweep",
        "--model",
        models["launch"],
        "--scenario",
        models["ads"],
        "--set",
        "Cost Per Buyer=20",
        "--param",
        "Ad Stop Time=2:20",
        "--design",
        "sobol",
        "--n",
        8,
        "--metrics",
        "final_active_buyers",
        "--json",
    )
    assert result.code == 0, result.err
    assert result.json()["scenario"] == "ads"


@pytest.mark.slow
def test_sweep_on_a_local_dask_cluster(cli, models, tmp_path):
    result = cli(
        "sweep",
        "--model",
        models["launch"],
        "--param",
        "Ad Budget=0:300",
        "--design",
        "lhs",
        "--n",
        8,
        "--executor",
        "dask",
        "--workers",
        2,
        "--chunk-size",
        4,
        "--metrics",
        "final_active_buyers",
        "--json",
    )
    assert result.code == 0, result.err
    data = result.json()
    assert data["executor"] == "dask" and data["ok"] == 8


@pytest.mark.slow
def test_sweep_default_model(cli):
    result = cli(
        "sweep",
        "--param",
        "Seller Deposit=0:5000",
        "--design",
        "grid",
        "--n",
        2,
        "--final-time",
        2,
        "--method",
        "euler",
        "--metrics",
        "min_trust",
    )
    assert result.code == 0, result.err
    assert "2 runs (grid), 2 ok" in result.out


# -- sensitivity -----------------------------------------------------------------------------
def test_sensitivity_sobol_ranks_the_parameters(cli, models, tmp_path):
    plot = tmp_path / "sobol.png"
    # n=8 is too few to resolve the indices: the CLI warns (WideIntervalWarning, one line on
    # stderr) and goes on.
    with warnings.catch_warnings():
        warnings.simplefilter("default", WideIntervalWarning)
        result = cli(
            "sensitivity",
            "--model",
            models["launch"],
            "--param",
            "Ad Budget=0:300",
            "--param",
            "Cost Per Buyer=5:50",
            "--param",
            "Critical Buyers=99:101",
            "--metric",
            "cumulative_gmv",
            "--n",
            8,
            "--plot",
            plot,
            "--json",
        )
    warned = [line for line in result.err.splitlines() if line.startswith("flywheel: warning:")]
    assert len(warned) == 1 and "raise n" in warned[0], result.err
    assert result.code == 0, result.err
    data = result.json()
    assert data["method"] == "sobol" and data["runs"] == 8 * (3 + 2)
    indices = {row["parameter"]: row for row in data["indices"]}
    assert set(indices) == {"Ad Budget", "Cost Per Buyer", "Critical Buyers"}
    # Ads bought per month are Ad Budget / Cost Per Buyer, while Critical Buyers hardly
    # moves (99 to 101): it must rank last on total-order influence.
    assert data["indices"][-1]["parameter"] == "Critical Buyers"
    assert plot.stat().st_size > 0


def test_sensitivity_morris(cli, models):
    result = cli(
        "sensitivity",
        "--model",
        models["launch"],
        "--param",
        "Ad Budget=0:300",
        "--param",
        "Growth Rate",
        "--metric",
        "final_active_buyers",
        "--method",
        "morris",
        "--n",
        4,
    )
    assert result.code == 0, result.err
    assert "mu_star" in result.out and "12 runs" in result.out


@pytest.mark.slow
def test_sensitivity_default_model(cli):
    result = cli(
        "sensitivity",
        "--param",
        "Seller Deposit=0:5000",
        "--param",
        "Qualification Strictness",
        "--metric",
        "min_trust",
        "--method",
        "morris",
        "--n",
        2,
        "--final-time",
        2,
        "--solver",
        "euler",
        "--json",
    )
    assert result.code == 0, result.err
    assert result.json()["runs"] == 2 * (2 + 1)


# -- errors ----------------------------------------------------------------------------------
BAD_USAGE = {
    "no subcommand": [],
    "unknown subcommand": ["frobnicate"],
    "unknown scenario": ["run", "no_such_scenario"],
    "unknown scenario in compare": ["compare", "baseline", "no_such_scenario"],
    "--set without =": ["run", "--set", "Ad Budget"],
    "--set not a number": ["run", "--set", "Ad Budget=lots"],
    "--set bad window": ["run", "--set", "Ad Budget=5@9:3"],
    "unknown parameter": ["run", "--model", "{launch}", "--set", "No Such Thing=1"],
    "out of range": ["run", "--model", "{launch}", "--set", "Ad Budget=5000"],
    "missing model file": ["run", "--model", "{missing}"],
    "missing model for describe": ["describe", "--model", "{missing}"],
    "missing scenario file": ["run", "{missing_toml}"],
    "unparsable model": ["run", "--model", "{broken}"],
    "unparsable model for describe": ["describe", "--model", "{broken}"],
    "unknown metric": ["compare", "baseline", "--metrics", "no_such_metric"],
    "unknown method": ["run", "--model", "{launch}", "--method", "leapfrog"],
    "bad output suffix": ["run", "--model", "{launch}", "--out", "results.txt"],
    "bad plot suffix": ["compare", "baseline", "--plot", "figure.nope"],
    "diagram without --out": ["diagram"],
    "diagram of a missing model": ["diagram", "--model", "{missing}", "--out", "d.png"],
    "not a number": ["run", "--final-time", "soon"],
    "empty bracket": ["critical-mass", "--lever", "Ad Budget", "--low", "5", "--high", "1"],
    "empty sweep range": ["sweep", "--param", "Take Rate=0.3:0.1", "--n", "4"],
    "sobol size not a power of two": [
        "sweep",
        "--model",
        "{launch}",
        "--param",
        "Ad Budget=0:300",
        "--design",
        "sobol",
        "--n",
        "12",
    ],
    "unknown swept parameter": ["sweep", "--model", "{launch}", "--param", "Nope=0:1"],
    "levels on a random design": [
        "sweep",
        "--model",
        "{launch}",
        "--param",
        "Ad Budget=0:300:3",
        "--design",
        "lhs",
    ],
    "bad store suffix": [
        "sweep",
        "--model",
        "{launch}",
        "--param",
        "Ad Budget=0:300",
        "--store",
        "out.csv",
    ],
    "sensitivity: unknown metric": ["sensitivity", "--param", "Take Rate", "--metric", "nope"],
    "sensitivity: n not a power of two": [
        "sensitivity",
        "--model",
        "{launch}",
        "--param",
        "Ad Budget=0:300",
        "--metric",
        "cumulative_gmv",
        "--n",
        "10",
    ],
    "sensitivity: unknown parameter": [
        "sensitivity",
        "--model",
        "{launch}",
        "--param",
        "Nope=0:1",
        "--metric",
        "cumulative_gmv",
    ],
    "sensitivity without --metric": ["sensitivity", "--param", "Take Rate"],
    "scheduler with processes": [
        "sweep",
        "--model",
        "{launch}",
        "--param",
        "Ad Budget=0:300",
        "--executor",
        "processes",
        "--scheduler",
        "tcp://x:8786",
    ],
}


@pytest.mark.parametrize("argv", list(BAD_USAGE.values()), ids=list(BAD_USAGE))
def test_bad_usage_exits_2_with_one_line(cli, models, tmp_path, argv):
    paths = {
        **{k: str(v) for k, v in models.items()},
        "missing": str(tmp_path / "missing.mdl"),
        "missing_toml": str(tmp_path / "missing.toml"),
    }
    result = cli(*[a.format(**paths) for a in argv])
    assert result.code == 2, (result.code, result.err)
    one_line_error(result)


def test_failed_run_exits_1(cli, models):
    result = cli("run", "--model", models["blowup"])
    assert result.code == 1
    assert "run failed" in one_line_error(result)


def test_debug_shows_the_traceback(cli):
    result = cli("run", "no_such_scenario", "--debug")
    assert result.code == 2 and "Traceback" in result.err


def test_help_and_version_exit_0(cli):
    assert cli("--help").code == 0
    assert cli("sweep", "--help").code == 0
    version = cli("--version")
    assert version.code == 0 and fw.__version__ in version.out


# -- through a subprocess --------------------------------------------------------------------
SUBPROCESS = {
    "run": ["run", "--model", "{launch}", "--final-time", "5"],
    "scenarios": ["scenarios"],
    "compare": ["compare", "--model", "{launch}", "baseline", "{ads}"],
    "critical-mass": [
        "critical-mass",
        "--model",
        "{launch}",
        "--scenario",
        "baseline",
        "--lever",
        "Ad Budget",
        "--low",
        "0",
        "--high",
        "300",
        "--tol",
        "20",
    ],
    "describe": ["describe", "--model", "{launch}"],
    "diagram": ["diagram", "--model", "{launch}", "--out", "{tmp}/diagram.png"],
    "sensitivity": [
        "sensitivity",
        "--model",
        "{launch}",
        "--param",
        "Ad Budget=0:300",
        "--metric",
        "final_active_buyers",
        "--method",
        "morris",
        "--n",
        "2",
    ],
    "sweep": [
        "sweep",
        "--model",
        "{launch}",
        "--param",
        "Ad Budget=0:300",
        "--design",
        "lhs",
        "--n",
        "4",
    ],
    "bad usage": ["run", "--set", "oops"],
}


@pytest.mark.parametrize("name", list(SUBPROCESS))
def test_python_dash_m(models, name, tmp_path):
    paths = {**{k: str(v) for k, v in models.items()}, "tmp": str(tmp_path)}
    argv = [a.format(**paths) for a in SUBPROCESS[name]]
    proc = subprocess.run(
        [sys.executable, "-m", "flywheel_sd", *argv], capture_output=True, text=True, timeout=300
    )
    if name == "bad usage":
        assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
        assert "Traceback" not in proc.stderr
    else:
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip()


def test_json_keeps_infinity_apart_from_not_applicable():
    """months_to_recover is inf for "never recovered" and NaN for "not applicable": JSON
    has neither, so they become "inf" and null, and stay distinct."""
    from flywheel_sd.cli._common import to_json

    assert json.loads(to_json({"never": float("inf"), "n/a": float("nan"), "x": 1.5})) == {
        "never": "inf",
        "n/a": None,
        "x": 1.5,
    }
