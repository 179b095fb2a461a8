"""``flywheel calibrate`` (issue 13) and ``flywheel loops`` (issue 14), in-process through
``main([...])`` on small logistic models whose answers are known:

* calibrate: data made from the model at known parameters plus Gaussian noise of known
  sigma (one fixed seed, the one `tests/test_calibration.py` checks the library with); the
  printed χ² bounds must hold the truth, in both data layouts;
* loops: logistic growth written as births r X and crowding r X²/K; the reinforcing loop
  dominates until the inflection X = K/2, at t* = ln((K - X0) / X0) / r, the balancing one
  after it.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from _cli import Result, cli_fixture, one_line_error  # noqa: F401 - cli_fixture: the cli fixture
from conformance_mdl import vensim

import flywheel_sd as fw

TRUTH = {"Growth Rate": 0.6, "Capacity": 1500.0}
SIGMA = 20.0

LOGISTIC = vensim(
    "Population = INTEG(Growth, 10) ~ people ~ Stock.",
    "Growth = Growth Rate * Population * (1 - Population / Capacity) ~ people/Month ~ Net growth.",
    "Growth Rate = 0.5 ~ 1/Month [0.05, 2] ~ Fractional growth rate.",
    "Capacity = 1000 ~ people [100, 5000] ~ Carrying capacity.",
    final_time=20,
    time_step=0.125,
    saveper=1,
    control_limits=True,
    control_comments=True,
)

# The loops model: two flows, so both loops are plain chains of the variables.
R, K, X0 = 0.5, 1000.0, 10.0
T_STAR = math.log((K - X0) / X0) / R  # X = K/2: the logistic's inflection (9.19)
DT = 1 / 16
TWO_LOOPS = vensim(
    f"X = INTEG(Births - Crowding, {X0}) ~ people ~ Stock.",
    "Births = r * X ~ people/Month ~ Births.",
    "Crowding = r * X * X / K ~ people/Month ~ Deaths from crowding.",
    f"r = {R} ~ 1/Month [0, 2] ~ Growth rate.",
    f"K = {K} ~ people [1, 10000] ~ Capacity.",
    final_time=20,
    time_step=DT,
    saveper=DT,
    control_limits=True,
    control_comments=True,
)
INDEX = (
    '[R1]\nname = "Births"\npolarity = "reinforcing"\nchain = ["X", "Births"]\n'
    '[B1]\nname = "Crowding"\npolarity = "balancing"\nchain = ["X", "Crowding"]\n'
)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """The logistic model, and its run at TRUTH plus noise (seed 11) in both layouts."""
    folder = tmp_path_factory.mktemp("calibrate")
    model = folder / "logistic.mdl"
    model.write_text(LOGISTIC)
    run = fw.simulate(model, TRUTH, method="euler", return_columns=["Population"])
    population = run["Population"]
    noisy = population.to_numpy() + np.random.default_rng(11).normal(0.0, SIGMA, len(run))
    simple = folder / "Population.csv"
    pd.DataFrame({"time": run.index, "value": noisy, "sigma": SIGMA}).to_csv(simple, index=False)
    # The reference_data layout: dated points (month 0 is 2020-01-01), twice the stock
    dates = [pd.Timestamp("2020-01-01") + pd.DateOffset(months=int(t)) for t in run.index]
    reference = folder / "reference.csv"
    pd.DataFrame(
        {
            "series": "Doubled",
            "period_start": [d.date() for d in dates],
            "period_end": [d.date() for d in dates],
            "value": 2 * noisy,
            "sigma": 2 * SIGMA,
            "sampling": "point",
        }
    ).to_csv(reference, index=False)
    loops = folder / "two_loops.mdl"
    loops.write_text(TWO_LOOPS)
    indexed = folder / "indexed.mdl"
    indexed.write_text(TWO_LOOPS)
    (folder / "indexed.loops.toml").write_text(INDEX)
    return {
        "model": model,
        "simple": simple,
        "reference": reference,
        "loops": loops,
        "indexed": indexed,
    }


def params_args() -> list[str]:
    return ["--param", "Growth Rate", "--param", "Capacity=500:3000"]


def assert_recovered(data: dict) -> None:
    """The truth lies inside each printed χ² interval, which is closed on both sides."""
    for name, true in TRUTH.items():
        row = data["params"][name]
        assert row["low"] <= true <= row["high"], (name, row)
        assert row["low"] < row["best"] < row["high"]
        assert not row["low_open"] and not row["high_open"]
    assert data["params"]["Capacity"]["prior_low"] == 500  # the --param range is used


# -- calibrate ----------------------------------------------------------------------------
def test_calibrate_recovers_known_parameters_within_its_bounds(cli, files, tmp_path):
    out, toml, png = tmp_path / "fit.nc", tmp_path / "fit.toml", tmp_path / "fit.png"
    argv = ["calibrate", "--model", files["model"], "--data", files["simple"], *params_args()]
    result = cli(*argv, "--out", out, "--scenario-out", toml, "--plot", png, "--json")
    assert result.code == 0, result.err
    data = result.json()
    assert_recovered(data)
    assert data["payoff"] == "wsse" and data["sigma_estimated"] is False
    (fit,) = data["fit"]
    assert fit["series"] == "Population" and fit["n"] == 21 and fit["r2"] > 0.99
    assert data["threshold"] == pytest.approx(3.8415, abs=1e-4)
    assert sorted(data["wrote"]) == sorted(map(str, (out, toml, png)))
    # the files: the bounds in the netCDF, the best values in the scenario, a PNG
    with xr.open_dataset(out) as ds:
        for name, row in data["params"].items():
            assert float(ds["best"].sel(parameter=name)) == pytest.approx(row["best"])
            assert float(ds["bound_low"].sel(parameter=name)) == pytest.approx(row["low"])
        assert int(ds.sizes["point"]) == 21 and "run_Population" in ds
    saved = fw.scenarios.load_file(toml)
    for name, row in data["params"].items():
        assert saved.params[name] == pytest.approx(row["best"])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # the table printed without --json shows the same interval
    text = cli(*argv).out
    (line,) = [ln for ln in text.splitlines() if ln.startswith("Capacity")]
    low, high = data["params"]["Capacity"]["low"], data["params"]["Capacity"]["high"]
    assert f"{low:,.0f}" in line and f"{high:,.0f}" in line, line
    assert "r2" in text and "rmse" in text


def test_calibrate_reference_layout_with_map_and_time_map(cli, files):
    result = cli(
        "calibrate",
        "--model",
        files["model"],
        "--data",
        files["reference"],
        "--series",
        "Doubled",
        "--map",
        "Doubled=Population * 2",
        "--time-map",
        "0=2020-01-01",
        *params_args(),
        "--json",
    )
    assert result.code == 0, result.err
    data = result.json()
    assert_recovered(data)
    (fit,) = data["fit"]
    assert fit["series"] == "Doubled" and fit["expression"] == "Population * 2"
    assert fit["n"] == 21


def test_calibrate_mcmc_posterior(cli, files, tmp_path):
    """With --mcmc the posterior's central 95 % lies near the χ² interval (a linear-Gaussian
    problem: both are about best ± 1.96 standard errors) and the samples go to --out."""
    out = tmp_path / "mc.nc"
    argv = ["calibrate", "--model", files["model"], "--data", files["simple"], *params_args()]
    data = cli(*argv, "--mcmc", 300, "--out", out, "--json").json()
    for name, post in data["posterior"].items():
        row = data["params"][name]
        width = row["high"] - row["low"]
        assert post["q2.5"] < row["best"] < post["q97.5"]
        assert abs(post["mean"] - row["best"]) < 0.25 * width
        assert 0.5 * width < post["q97.5"] - post["q2.5"] < 2 * width
    with xr.open_dataset(out) as ds:
        assert ds["posterior_Capacity"].dims == ("chain", "draw")
        assert ds.sizes["draw"] == 300


@pytest.fixture
def no_run(monkeypatch):
    """calibrate must refuse these before it fits anything."""

    def refuse(*args, **kwargs):
        raise AssertionError("calibrate was called")

    monkeypatch.setattr(fw, "calibrate", refuse)


BAD_CALIBRATE = {
    "unknown parameter": (["--param", "Growth Rat"], "did you mean 'Growth Rate'"),
    "malformed --map": (["--param", "Capacity", "--map", "Population"], "expected SERIES="),
    "--map of an unknown series": (
        ["--param", "Capacity", "--map", "Popul=Population"],
        "did you mean 'Population'",
    ),
    "unknown output in --map": (
        ["--param", "Capacity", "--map", "Population=Populaton * 2"],
        "did you mean 'Population'",
    ),
    "range outside the documented one": (["--param", "Capacity=0:9000"], "documented range"),
    "unknown --series": (["--param", "Capacity", "--series", "Popu"], "unknown series 'Popu'"),
    "bad --time-map": (["--param", "Capacity", "--time-map", "x=2020"], "--time-map"),
}


@pytest.mark.parametrize(("extra", "match"), list(BAD_CALIBRATE.values()), ids=list(BAD_CALIBRATE))
def test_calibrate_bad_input_exits_2_in_one_line(cli, files, extra, match):
    result = cli("calibrate", "--model", files["model"], "--data", files["simple"], *extra)
    assert match in one_line_error(result, code=2)


def test_calibrate_checks_files_before_any_run(cli, files, tmp_path, no_run):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    base = ["calibrate", "--model", files["model"], "--param", "Capacity"]
    cases = {
        "--out under a file": [
            *base,
            "--data",
            files["simple"],
            "--out",
            blocker / "fit.nc",
        ],
        "--out not .nc": [*base, "--data", files["simple"], "--out", tmp_path / "fit.csv"],
        "--scenario-out under a file": [
            *base,
            "--data",
            files["simple"],
            "--scenario-out",
            blocker / "fit.toml",
        ],
        "--plot under a file": [*base, "--data", files["simple"], "--plot", blocker / "f.png"],
        "missing data file": [*base, "--data", tmp_path / "missing.csv"],
        "data without the columns": [*base, "--data", files["model"]],
    }
    messages = {name: one_line_error(cli(*argv), code=2) for name, argv in cases.items()}
    assert "is a file, not a folder" in messages["--out under a file"]
    assert "expected a file ending in .nc" in messages["--out not .nc"]
    assert "no such file" in messages["missing data file"]
    assert "expected the columns" in messages["data without the columns"]


# -- loops --------------------------------------------------------------------------------
def periods_printed(text: str) -> list[tuple[float, float, str, str]]:
    """(from, to, loops, polarity) of each row of the printed periods table."""
    rows = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 4 and parts[3] in ("reinforcing", "balancing", "mixed"):
            try:
                rows.append((float(parts[0]), float(parts[1]), parts[2], parts[3]))
            except ValueError:
                continue
    return rows


def test_loops_reinforcing_before_the_inflection_balancing_after(cli, files):
    result = cli("loops", "--model", files["indexed"])
    assert result.code == 0, result.err
    rows = periods_printed(result.out)
    assert [(r[2], r[3]) for r in rows] == [("R1", "reinforcing"), ("B1", "balancing")]
    (_, r_end, _, _), (b_start, b_end, _, _) = rows
    # R's share is 1 / (1 + (X + X') / K): it dominates while X + X' < K, on the Euler run
    x = fw.simulate(files["indexed"], method="euler", saveper=DT)["X"]
    before = (x + x.shift(1) < K)[x.index > DT]
    assert r_end == before[before].index.max()
    # ... which is near the analytic inflection (Euler at r·dt = 1/32 delays the growth by
    # about r·dt/2 relative, 0.14 months here)
    assert T_STAR < r_end < T_STAR + 3 * DT, r_end
    assert b_start == pytest.approx(r_end + DT) and b_end == 20
    assert "R1 Births" in result.out and "B1 Crowding" in result.out


def test_loops_at_lists_the_relative_scores_sorted(cli, files):
    """Before t* the reinforcing loop explains most of the change, after it the balancing;
    the shares are the closed form 1 / (1 + (X + X') / K) (Euler: X from the run)."""
    for t, first in ((T_STAR - 2, "R1"), (T_STAR + 2, "B1")):
        data = cli("loops", "--model", files["indexed"], "--at", t, "--json").json()
        at = data["at"]
        assert at["time"] == pytest.approx(round(t / DT) * DT)
        scores = at["scores"]
        assert scores[0]["loop"] == first
        x = fw.simulate(files["indexed"], method="euler", saveper=DT)["X"]
        now = x.loc[at["time"]]
        before = x.iloc[x.index.get_loc(at["time"]) - 1]
        r_share = 1 / (1 + (now + before) / K)
        shares = {s["loop"]: s["relative_score"] for s in scores}
        assert shares["R1"] == pytest.approx(r_share, rel=1e-9)
        assert shares["B1"] == pytest.approx(r_share - 1, rel=1e-9)
        assert {s["loop"]: s["polarity"] for s in scores} == {
            "R1": "reinforcing",
            "B1": "balancing",
        }
    text = cli("loops", "--model", files["indexed"], "--at", T_STAR + 2).out
    assert "relative loop scores at t =" in text


def test_loops_json_structure(cli, files):
    data = cli("loops", "--model", files["loops"], "--json").json()
    assert set(data) == {
        "scenario",
        "model",
        "discovery",
        "note",
        "variable",
        "loops",
        "periods",
        "at",
        "wrote",
    }
    assert data["discovery"] == "exhaustive" and data["at"] is None and data["wrote"] == []
    assert data["variable"] is None
    assert [(lp["variables"], lp["polarity"]) for lp in data["loops"]] == [
        ("X -> Births", "reinforcing"),
        ("X -> Crowding", "balancing"),
    ]
    assert set(data["loops"][0]) == {"id", "name", "variables", "polarity", "partition"}
    assert [p["polarity"] for p in data["periods"]] == ["reinforcing", "balancing"]
    assert set(data["periods"][0]) == {"partition", "start", "end", "loops", "share", "polarity"}
    assert all(0.5 <= p["share"] <= 1 for p in data["periods"])


def test_loops_plot_and_index_only(cli, files, tmp_path):
    png = tmp_path / "sub" / "loops.png"
    result = cli(
        "loops", "--model", files["indexed"], "--index-only", "--variable", "X", "--plot", png
    )
    assert result.code == 0, result.err
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    assert f"wrote {png}" in result.out


def test_plot_loop_dominance_draws_what_it_says(files):
    """The figure: a behaviour panel above the stacked shares, each loop in the legend by
    its index id and name, reinforcing shares above 0 and balancing below, within ±100 %."""
    import matplotlib.pyplot as plt

    from flywheel_sd.ltm import loop_dominance
    from flywheel_sd.plotting import plot_loop_dominance

    ds = loop_dominance(files["indexed"])
    run = fw.simulate(files["indexed"], method="euler")
    fig = plot_loop_dominance(ds, run, "X")
    try:
        above, below = fig.axes[:2]
        assert above.get_ylabel() and below.get_ylabel() and below.get_xlabel()
        assert fig.get_suptitle()
        labels = [t.get_text() for t in fig.legends[0].get_texts()]
        assert labels == ["R1 Births", "B1 Crowding"]
        tops = [c for c in below.collections if len(c.get_paths())]
        ys = np.concatenate([p.vertices[:, 1] for c in tops for p in c.get_paths()])
        assert 0.9 < ys.max() <= 1 + 1e-9 and -1 - 1e-9 <= ys.min() < -0.5
    finally:
        plt.close(fig)


# Two stocks in one partition (tests/test_ltm.py derives the shares): among the loops through
# A, the births loop's share is a / (a + c B'), among those through B the transfer loop's
# c A' / (c A' + d) (B', A': the previous step's values).
A_RATE, C_RATE, D_RATE = 0.1, 0.001, 0.05
COUPLED = vensim(
    "A = INTEG(Births - Transfer, 100) ~ units ~ First stock.",
    "Births = Birth Rate * A ~ units/Month ~ Births.",
    "Transfer = Contact Rate * A * B ~ units/Month ~ From A to B.",
    "B = INTEG(Transfer - Deaths, 10) ~ units ~ Second stock.",
    "Deaths = Death Rate * B ~ units/Month ~ Deaths.",
    f"Birth Rate = {A_RATE} ~ 1/Month ~ Birth rate.",
    f"Contact Rate = {C_RATE} ~ 1/(Month*units) ~ Contact rate.",
    f"Death Rate = {D_RATE} ~ 1/Month ~ Death rate.",
    final_time=30,
    time_step=DT,
    saveper=DT,
    control_limits=True,
    control_comments=True,
)


@pytest.fixture(scope="module")
def coupled(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("coupled") / "coupled.mdl"
    path.write_text(COUPLED)
    return path


def test_loops_variable_gives_the_periods_of_its_own_loops(cli, coupled):
    run = fw.simulate(coupled, method="euler", saveper=DT)
    t = run.index.to_numpy()[2:]
    a_prev, b_prev = run["A"].to_numpy()[1:-1], run["B"].to_numpy()[1:-1]
    whole = cli("loops", "--model", coupled, "--json").json()
    ids = {lp["variables"]: lp["id"] for lp in whole["loops"]}
    assert whole["variable"] is None and len(ids) == 4
    for name, (lead, after), leads in (
        ("A", ("A -> Births", "A -> Transfer"), b_prev < A_RATE / C_RATE),
        ("b", ("B -> Transfer", "B -> Deaths"), a_prev > D_RATE / C_RATE),
    ):
        data = cli("loops", "--model", coupled, "--variable", name, "--json").json()
        assert data["variable"] == name.upper()
        periods = data["periods"]
        assert [p["loops"] for p in periods] == [ids[lead], ids[after]]
        assert [p["polarity"] for p in periods] == ["reinforcing", "balancing"]
        assert periods[0]["end"] == t[leads].max() and periods[1]["start"] == t[~leads].min()
    # --at: the shares among A's loops, the closed form a / (a + c B')
    data = cli("loops", "--model", coupled, "--variable", "A", "--at", 5, "--json").json()
    i = int(np.flatnonzero(np.isclose(t, data["at"]["time"]))[0])
    shares = {s["loop"]: s["relative_score"] for s in data["at"]["scores"]}
    assert set(shares) == {ids["A -> Births"], ids["A -> Transfer"]}
    births = A_RATE / (A_RATE + C_RATE * b_prev[i])
    assert shares[ids["A -> Births"]] == pytest.approx(births, rel=1e-9)
    assert shares[ids["A -> Transfer"]] == pytest.approx(births - 1, rel=1e-9)
    text = cli("loops", "--model", coupled, "--variable", "B").out
    assert "dominance periods of B in" in text and "2 of 4 loops pass through it" in text
    # a variable in no loop: no periods, and a note saying why
    result = cli("loops", "--model", coupled, "--variable", "contact_rate")
    assert result.code == 0, result.err
    assert "note: Contact Rate is in no feedback loop of these" in result.out
    assert (
        cli("loops", "--model", coupled, "--variable", "Contact Rate", "--json").json()["periods"]
        == []
    )


def test_plot_loop_dominance_of_the_loops_through_a_variable(cli, coupled, tmp_path):
    """With only_through, the chart stacks the shares among A's two loops: the births loop
    a / (a + c B') above zero, the transfer loop below, so the stacks span exactly the
    closed form's range; the CLI draws it with --variable."""
    import matplotlib.pyplot as plt

    from flywheel_sd.ltm import loop_dominance
    from flywheel_sd.plotting import plot_loop_dominance

    ds = loop_dominance(coupled)
    run = fw.simulate(coupled, method="euler", saveper=DT)
    b_prev = run["B"].to_numpy()[1:-1]
    births = A_RATE / (A_RATE + C_RATE * b_prev)
    fig = plot_loop_dominance(ds, run, "A", only_through=True)
    try:
        below = fig.axes[1]
        labels = [t.get_text() for t in fig.legends[0].get_texts()]
        ids = {str(v): str(k) for k, v in zip(ds["loop"].values, ds["loop_variables"].values)}
        assert sorted(label.split()[0] for label in labels) == sorted(
            [ids["A -> Births"], ids["A -> Transfer"]]
        )
        tops = [c for c in below.collections if len(c.get_paths())]
        ys = np.concatenate([p.vertices[:, 1] for c in tops for p in c.get_paths()])
        assert ys.max() == pytest.approx(births.max(), rel=1e-9)
        assert ys.min() == pytest.approx((births - 1).min(), rel=1e-9)
        assert "2 loops through A" in below.get_title(loc="left")
    finally:
        plt.close(fig)
    png = tmp_path / "a.png"
    result = cli("loops", "--model", coupled, "--variable", "A", "--plot", png)
    assert result.code == 0, result.err
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


BAD_LOOPS = {
    "--at after the run": (["--at", "25"], "outside the run's times 0 to 20"),
    "--at before the run": (["--at", "-1"], "outside the run's times"),
    "--at not a number": (["--at", "soon"], "not a number"),
    "--index-only without an index": (["--index-only"], "no loop index"),
    "unknown --variable": (["--plot", "{tmp}/x.png", "--variable", "Births2"], "Births"),
    "unknown --variable for the periods": (
        ["--variable", "Birth"],
        "--variable: unknown variable 'Birth'; did you mean 'Births'",
    ),
    "bad --plot suffix": (["--plot", "{tmp}/x.nope"], "expected a file ending in"),
}


@pytest.mark.parametrize(("extra", "match"), list(BAD_LOOPS.values()), ids=list(BAD_LOOPS))
def test_loops_bad_input_exits_2_in_one_line(cli, files, tmp_path, extra, match):
    argv = [a.format(tmp=tmp_path) for a in extra]
    assert match in one_line_error(cli("loops", "--model", files["loops"], *argv), code=2)
