"""Scenario files, the comparison API, metrics and plots, on a small model of our own.

The seed-case behaviour of the flywheel model is tested in test_seed_cases.py.
"""

from __future__ import annotations

import importlib
import math

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from conformance_mdl import vensim

import flywheel_sd as fw
from flywheel_sd import metrics, scenarios
from flywheel_sd.errors import ParameterError
from flywheel_sd.plotting import plot_comparison, plot_metrics
from flywheel_sd.scenarios import Policy, Scenario

# Logistic growth of "Active Buyers" driven by an ad budget, with the names the built-in
# metrics look for, so that the comparison machinery can be tested on a closed form.
SMALL = vensim(
    "Active Buyers = INTEG(Buyer Growth, 10) ~ Buyer [0,?] ~ Buyers on the platform.",
    "Buyer Growth = Growth Rate * Active Buyers * (1 - Active Buyers / Market)"
    " + Ad Budget / Cost Per Buyer ~ Buyer/Month ~ Net growth.",
    "Growth Rate = 0.2 ~ 1/Month [0, 1] ~ Fractional growth rate.",
    "Market = 1000 ~ Buyer [1, 100000] ~ Market size.",
    "Ad Budget = 0 ~ USD/Month [0, 1000] ~ Advertising.",
    "Cost Per Buyer = 10 ~ USD/Buyer [1, 100] ~ Cost per acquired buyer.",
    "Deposit Start Time = 10 ~ Month [0, 40] ~ When a policy starts.",
    "Deposit End Time = 20 ~ Month [0, 40] ~ When it ends.",
    "GMV = Active Buyers * 5 ~ USD/Month ~ Sales.",
    final_time=40,
    control_limits=True,
    control_comments=True,
)


@pytest.fixture
def small(write_mdl):
    return write_mdl(SMALL, "small.mdl")


def logistic(t, r=0.2, k=1000.0, y0=10.0):
    return k / (1 + (k / y0 - 1) * np.exp(-r * t))


def test_builtins_are_listed_and_described():
    names = scenarios.list()
    for required in (
        "baseline",
        "wish_deposit",
        "ezbuy_stagnation",
        "ezbuy_early_transformation",
        "ezbuy_late_transformation",
        "amazon_prime",
        "ebay_qualification",
        "launch_ad_burn",
        "penalty_overreach",
        "market_mismatch",
        "competitor_entry",
    ):
        assert required in names
    described = scenarios.describe()
    assert all(described[n] for n in names), "every built-in has a one-line description"


def test_unknown_scenario_lists_close_matches():
    with pytest.raises(ParameterError, match="did you mean 'wish_deposit'"):
        scenarios.get("wish_deposits")


def test_run_scenario_matches_closed_form(small):
    sc = Scenario("plain", params={"Growth Rate": 0.2}, model=str(small))
    frame = fw.run_scenario(sc, rtol=1e-9, atol=1e-9)
    t = frame.index.to_numpy()
    np.testing.assert_allclose(frame["Active Buyers"], logistic(t), rtol=1e-6)
    assert frame.attrs["scenario"] == "plain"


def test_policy_switches_exactly_at_its_times(small):
    """A Policy is a right-continuous step: the ad budget is on in [10, 20) only."""
    sc = Scenario("ads", params={"Ad Budget": Policy(500, 10, 20)}, model=str(small))
    adaptive = fw.run_scenario(sc, return_columns=["Ad Budget", "Active Buyers"])
    assert adaptive.loc[9, "Ad Budget"] == 0 and adaptive.loc[10, "Ad Budget"] == 500
    assert adaptive.loc[19, "Ad Budget"] == 500 and adaptive.loc[20, "Ad Budget"] == 0
    assert adaptive.attrs["breakpoints"] == [10.0, 20.0]
    # Fixed steps sample the switch on their grid, so they carry an O(TIME STEP) error at
    # a discontinuity: halving the step must (about) halve their distance to the adaptive run.
    exact = fw.run_scenario(sc, rtol=1e-10, atol=1e-10)["Active Buyers"]
    for method in ("euler", "rk4"):
        errors = [
            np.max(
                np.abs(fw.run_scenario(sc, method=method, time_step=dt)["Active Buyers"] - exact)
                / exact
            )
            for dt in (0.125, 0.0625)
        ]
        assert errors[0] < 0.03 and errors[1] < 0.6 * errors[0], (method, errors)


def test_round_trip_through_toml_gives_the_same_run(small, tmp_path):
    sc = Scenario(
        "trip",
        "A round trip.",
        params={
            "Growth Rate": 0.25,
            "Ad Budget": Policy(300, 5, 15),
            "Cost Per Buyer": pd.Series([10.0, 20.0, 20.0], index=[0.0, 20.0, 40.0]),
        },
        model=str(small),
        events=(("launch", 0.0, 5.0),),
    )
    path = sc.save(tmp_path / "trip.toml")
    back = scenarios.load_file(path)
    assert back.name == sc.name and back.description == sc.description
    assert back.windows() == sc.windows()
    a, b = fw.run_scenario(sc), fw.run_scenario(back)
    pd.testing.assert_frame_equal(a, b)


def _write(tmp_path, small, body: str):
    path = tmp_path / "bad.toml"
    path.write_text(f'name = "bad"\nmodel = "{small}"\n' + body)
    return path


def test_file_with_unknown_parameter_names_file_and_key(small, tmp_path):
    path = _write(tmp_path, small, '[params]\n"Growth Rat" = 0.3\n')
    with pytest.raises(ParameterError) as err:
        scenarios.get(path)
    message = str(err.value)
    assert "bad.toml" in message and "Growth Rat" in message and "Growth Rate" in message
    assert "\n" not in message


def test_file_with_value_out_of_range(small, tmp_path):
    path = _write(tmp_path, small, '[params]\n"Growth Rate" = 3\n')
    with pytest.raises(ParameterError, match=r"bad\.toml.*Growth Rate.*outside .*\[0, 1\]"):
        scenarios.get(path)


def test_file_with_policy_ending_before_start(small, tmp_path):
    path = _write(tmp_path, small, '[params]\n"Ad Budget" = { value = 5, start = 20, end = 10 }\n')
    with pytest.raises(ParameterError, match=r"bad\.toml.*Ad Budget.*ends .*before it starts"):
        scenarios.get(path)


def test_file_with_model_end_time_before_start_time(small, tmp_path):
    path = _write(
        tmp_path, small, '[params]\n"Deposit Start Time" = 30\n"Deposit End Time" = 12\n'
    )
    with pytest.raises(ParameterError, match=r"bad\.toml.*Deposit End Time.*before"):
        scenarios.get(path)


@pytest.mark.parametrize(
    "body, expected",
    [
        ('[params]\n"Growth Rate" = "fast"\n', "expected a number"),
        ("[params\n", "not valid TOML"),
        ('colour = "red"\n', "unknown top-level key"),
    ],
)
def test_malformed_files(small, tmp_path, body, expected):
    with pytest.raises(ParameterError, match=expected):
        scenarios.get(_write(tmp_path, small, body))


def test_nothing_runs_half_configured(small, tmp_path, monkeypatch):
    """A bad second scenario stops compare before the first one runs."""
    calls = []
    compare_module = importlib.import_module("flywheel_sd.scenarios.compare")
    real = compare_module.simulate
    monkeypatch.setattr(
        compare_module, "simulate", lambda *a, **k: calls.append(1) or real(*a, **k)
    )
    good = Scenario("good", model=str(small))
    with pytest.raises(ParameterError):
        fw.compare([good, _write(tmp_path, small, '[params]\n"Nope" = 1\n')])
    with pytest.raises(ParameterError, match="unknown metric"):
        fw.compare([good], metrics=["final_active_buyer"])
    assert calls == []


def test_compare_dataset_and_metrics_table(small):
    base = Scenario("base", params={"Growth Rate": 0.2}, model=str(small))
    faster = Scenario("faster", params={"Growth Rate": 0.3}, model=str(small))
    ran = []
    ds = fw.compare(
        [base, faster],
        metrics=["final_active_buyers", "peak_active_buyers_time", "cumulative_gmv"],
        on_run=ran.append,
        rtol=1e-9,
        atol=1e-9,
    )
    assert ran == ["base", "faster"]
    assert set(ds.dims) >= {"scenario", "time"}
    assert list(ds["scenario"].values) == ["base", "faster"]
    assert ds["Active Buyers"].dims == ("scenario", "time")
    table = ds.flywheel.metrics
    assert isinstance(table, pd.DataFrame)
    # Differences are taken against the first scenario.
    assert table.loc[("base", "cumulative_gmv"), "diff"] == 0
    t = ds["time"].values
    fast = logistic(t, r=0.3)
    expected_gmv = np.trapezoid(5 * fast, t) if hasattr(np, "trapezoid") else np.trapz(5 * fast, t)
    assert table.loc[("faster", "cumulative_gmv"), "value"] == pytest.approx(
        expected_gmv, rel=1e-6
    )
    base_gmv = table.loc[("base", "cumulative_gmv"), "value"]
    pct = table.loc[("faster", "cumulative_gmv"), "diff_pct"]
    assert pct == pytest.approx((expected_gmv - base_gmv) / base_gmv * 100, rel=1e-6)
    # Logistic growth peaks at the end of the run: the peak time is the final time.
    assert table.loc[("faster", "peak_active_buyers_time"), "value"] == t[-1]


def test_user_metric_and_recovery_metric(small):
    metrics.register(
        "half_market_time",
        lambda ds: ds["time"].where(ds["Active Buyers"] >= 500).min("time"),
        description="first month with half the market",
        replace=True,
    )
    base = Scenario("base", model=str(small))
    ds = fw.compare(
        [base, base.derive("fast", **{"Growth Rate": 0.4})], metrics=["half_market_time"]
    )
    table = ds.flywheel.metrics
    # Logistic: K/2 is reached at t = ln(K/y0 - 1)/r, rounded up to the saved month.
    for name, r in (("base", 0.2), ("fast", 0.4)):
        assert table.loc[(name, "half_market_time"), "value"] == math.ceil(math.log(99) / r)


def test_months_to_recover_counts_from_the_policy_start():
    t = np.arange(0.0, 21.0)
    ref = np.full_like(t, 100.0)
    dip = np.where((t >= 5) & (t < 12), 80.0, 100.0)
    ds = xr.Dataset(
        {"Active Sellers": (("scenario", "time"), np.vstack([ref, dip]))},
        coords={
            "time": t,
            "scenario": ["ref", "dip"],
            "policy_start": ("scenario", [np.nan, 5.0]),
        },
    )
    value = metrics.get("months_to_recover")(ds, ds.isel(scenario=0))
    # Below 95% from month 5 to 11; back at month 12: 7 months after the start.
    assert float(value.sel(scenario="dip")) == 7.0
    assert math.isnan(float(value.sel(scenario="ref")))


def test_unknown_metric_lists_valid():
    with pytest.raises(ParameterError, match="did you mean 'min_trust'"):
        metrics.get("min_trus")


def test_plots_write_nonempty_files(small, tmp_path):
    base = Scenario("base", model=str(small))
    ds = fw.compare(
        [base, base.derive("ads", **{"Ad Budget": Policy(400, 5, 15)})],
        metrics=["final_active_buyers", "cumulative_gmv"],
    )
    for suffix in ("png", "svg"):
        fig = plot_comparison(ds, tmp_path / f"cmp.{suffix}")
        assert (tmp_path / f"cmp.{suffix}").stat().st_size > 1000
        assert len([ax for ax in fig.axes if ax.get_visible()]) == 2  # buyers and GMV exist
    plot_metrics(ds.flywheel.metrics, tmp_path / "metrics.png")
    assert (tmp_path / "metrics.png").stat().st_size > 1000


def test_critical_mass_two_fates(small):
    """With a market that decays without ads, a long enough push crosses critical mass."""
    text = SMALL.replace(
        "Growth Rate * Active Buyers * (1 - Active Buyers / Market)",
        "Growth Rate * Active Buyers * (Active Buyers / Threshold - 1)"
        " * (1 - Active Buyers / Market)",
    ).replace(
        "Ad Budget / Cost Per Buyer",
        "IF THEN ELSE(Time < Ad Stop Time, Ad Budget / Cost Per Buyer, 0)",
    )
    text += (
        "Threshold = 200\n\t~\tBuyer [1, 1000]\n\t~\tAllee threshold.\n\t|\n"
        "Ad Stop Time = 10\n\t~\tMonth [0, 40]\n\t~\tWhen ads stop.\n\t|\n"
    )
    path = small.parent / "allee.mdl"
    path.write_text(text)
    sc = Scenario("allee", params={"Ad Budget": 300}, model=str(path))
    ran = []
    found = fw.critical_mass("Ad Stop Time", 1, 15, scenario=sc, tol=0.01, on_run=ran.append)
    assert ran == ["allee"] * found.runs
    lo, hi = found.bracket
    assert lo < found.threshold < hi and hi - lo <= 0.01
    # Closed form of the push: buyers pass the Allee threshold (200) only if the push
    # lasts long enough; the fates just below and above the bracket differ.
    pd.testing.assert_frame_equal(
        found.decaying_run, fw.run_scenario(sc, params={"Ad Stop Time": lo})
    )
    pd.testing.assert_frame_equal(
        found.growing_run, fw.run_scenario(sc, params={"Ad Stop Time": hi})
    )
    below = fw.run_scenario(sc, params={"Ad Stop Time": lo - 0.5})
    above = fw.run_scenario(sc, params={"Ad Stop Time": hi + 0.5})
    assert below["Active Buyers"].iloc[-1] < below["Active Buyers"].loc[round(lo)]
    assert above["Active Buyers"].iloc[-1] > above["Active Buyers"].loc[math.ceil(hi)]
    with pytest.raises(ParameterError, match="no critical mass"):
        fw.critical_mass("Ad Stop Time", 0.5, 2, scenario=sc)


# -- a folder of the user's scenario files ------------------------------------------------
@pytest.fixture
def user_folder(tmp_path, monkeypatch):
    folder = tmp_path / "mine"
    folder.mkdir()
    monkeypatch.setenv("FLYWHEEL_SD_SCENARIOS", str(folder))

    def write(stem: str, text: str):
        (folder / f"{stem}.toml").write_text(text)
        return folder / f"{stem}.toml"

    return write


def test_one_broken_user_scenario_is_listed_and_hides_nothing(user_folder):
    user_folder("bad", 'name = "mine"\ndescription = 42\n')
    user_folder("good", 'name = "good"\ndescription = "A good one"\n')
    listed = scenarios.describe()
    assert listed["good"] == "A good one" and "baseline" in listed
    assert listed["mine"].startswith("BROKEN: ") and "bad.toml" in listed["mine"]
    assert "'description' must be a string" in listed["mine"]


def test_an_event_with_a_word_for_a_time_names_the_file(user_folder):
    path = user_folder("evt", 'name = "evt"\n[[events]]\nlabel = "a"\nstart = "soon"\n')
    with pytest.raises(ParameterError) as err:
        scenarios.get("evt")
    assert str(path) in str(err.value) and "'events'" in str(err.value)
    assert "\n" not in str(err.value)


def test_a_user_scenario_cannot_silently_replace_a_built_in(user_folder):
    builtin = scenarios.get("baseline").description
    path = user_folder("shadow", 'name = "baseline"\ndescription = "mine"\n')
    assert scenarios.get("baseline").description == builtin
    assert "replaces_builtin = true" in scenarios.broken()["shadow"]
    path.write_text('name = "baseline"\ndescription = "mine"\nreplaces_builtin = true\n')
    assert scenarios.get("baseline").description == "mine"


def test_a_missing_scenario_folder_is_an_error(monkeypatch, tmp_path):
    monkeypatch.setenv("FLYWHEEL_SD_SCENARIOS", str(tmp_path / "nowhere"))
    with pytest.raises(ParameterError) as err:
        scenarios.list()
    assert "FLYWHEEL_SD_SCENARIOS" in str(err.value) and "nowhere" in str(err.value)
