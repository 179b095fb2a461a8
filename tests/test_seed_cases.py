"""Each seed case shows the signature that design/flywheel-model.md section 3 requires.

Thresholds are stated here, in the test; nothing is compared with numbers copied from a run.
Every scenario is read against `baseline` at the same time unless a line says otherwise.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import flywheel_sd as fw

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def runs():
    """All built-in seed cases, compared once with baseline first."""
    names = [
        "baseline",
        "wish_growth",
        "wish_deposit",
        "ezbuy_stagnation",
        "ezbuy_early_transformation",
        "ezbuy_late_transformation",
        "amazon_prime",
        "amazon_marketplace",
        "ebay_qualification",
        "penalty_overreach",
        "market_mismatch",
        "competitor_entry",
    ]
    # Only the variables the signatures read, at a tolerance (1e-4) far below the 2%+
    # margins asserted: recording every output dominates the run time of this model.
    columns = [
        "Seller Entry",
        "Total Active Sellers",
        "Active Sellers",
        "Low Quality Seller Share",
        "Buyer Trust",
        "Active Buyers",
        "GMV",
        "Ad Spend",
        "Members",
        "Average Buyer Churn Fraction",
        "Platform Cash",
        "Effective Selection",
        "Conversion Rate",
        "Platform Choice Share",
        "Platform Valuation",
        "Exit Value",
        "Platform Exit",
        "Third Party Share",
        "Rival Buyers",
        "Rival Sellers",
    ]
    return fw.compare(
        names,
        metrics=["final_active_buyers", "cumulative_gmv", "min_trust"],
        return_columns=columns,
        **FAST,
    )


FAST = {"rtol": 1e-4, "atol": 1e-3}


def series(ds, scenario, variable):
    return ds[variable].sel(scenario=scenario).to_series()


def window(s, start, end):
    return s[(s.index >= start) & (s.index < end)]


def test_wish_deposit_while_it_holds(runs):
    """The deposit against the same Wish platform without it (wish_growth): the brief's
    signature of the policy itself (issue 11 moves the Wish comparison off baseline, since
    Wish is not the healthy baseline platform)."""
    wish, dep = "wish_growth", "wish_deposit"
    entry_w, entry_d = series(runs, wish, "Seller Entry"), series(runs, dep, "Seller Entry")
    # While the deposit holds (months 60-74, the first month excepted), entry falls by half.
    assert (window(entry_d, 61, 74) <= 0.5 * window(entry_w, 61, 74)).all()
    assert (
        series(runs, dep, "Total Active Sellers")[74]
        < series(runs, wish, "Total Active Sellers")[74]
    )
    # Fewer low-quality sellers, so trust at least as high, while it holds and a year after.
    share_w = series(runs, wish, "Low Quality Seller Share")
    share_d = series(runs, dep, "Low Quality Seller Share")
    assert share_d[74] < share_w[74]
    trust_diff = window(
        series(runs, dep, "Buyer Trust") - series(runs, wish, "Buyer Trust"), 60, 87
    )
    assert trust_diff.min() >= -1e-3
    # Entry recovers within six months of the removal, to 80% of the no-deposit platform's.
    assert entry_d[80] >= 0.8 * entry_w[80]
    # Hysteresis: buyers and GMV at month 120 stay below the no-deposit platform's.
    for variable in ("Active Buyers", "GMV"):
        assert series(runs, dep, variable)[120] < series(runs, wish, variable)[120]


@pytest.fixture(scope="module")
def wish_to_180():
    """Baseline and wish_deposit to month 180 (issue 11: still below baseline there)."""
    return fw.compare(
        ["baseline", "wish_deposit"],
        return_columns=["Active Buyers", "GMV", "Ad Spend", "Perceived Ad Return", "Buyer Trust"],
        final_time=180,
        **FAST,
    )


def test_wish_reverses_and_stays_down(wish_to_180):
    """Issue 11: a lasting reversal, for reasons named in the model. Buyers and GMV peak,
    then fall at least 15% from the peak by month 120 and stay at most 60% of baseline's at
    months 120 and 180; the ad budget collapses (to under half) once ads get dear in month 90
    because bought buyers no longer pay for themselves (perceived LTV/CAC below 1), and
    trust stays below baseline's throughout."""
    runs = wish_to_180
    for variable in ("Active Buyers", "GMV"):
        wish, base = series(runs, "wish_deposit", variable), series(runs, "baseline", variable)
        assert wish[120] <= 0.85 * wish.max(), f"{variable}: no reversal from the peak"
        assert wish.idxmax() < 120
        for month in (120, 180):
            assert wish[month] <= 0.6 * base[month], (variable, month)
    ads = series(runs, "wish_deposit", "Ad Spend")
    assert window(ads, 100, 181).max() < 0.5 * window(ads, 80, 90).min()
    assert window(series(runs, "wish_deposit", "Perceived Ad Return"), 100, 181).max() < 1
    trust_gap = series(runs, "wish_deposit", "Buyer Trust") - series(
        runs, "baseline", "Buyer Trust"
    )
    assert window(trust_gap, 12, 181).max() < 0


def test_ezbuy_stagnation(runs):
    gmv = series(runs, "ezbuy_stagnation", "GMV")
    peak_time = gmv.idxmax()
    # GMV peaks inside the run, then declines to at most 80% of the peak.
    assert 0 < peak_time < 120 and gmv[120] <= 0.8 * gmv.max()
    buyers = series(runs, "ezbuy_stagnation", "Active Buyers")
    assert buyers[120] <= 0.7 * buyers.max(), "buyers well below their peak"
    # The reverse flywheel: cash pressure cuts ad spending below baseline's after the shock.
    ads = window(series(runs, "ezbuy_stagnation", "Ad Spend"), 48, 121)
    ads_base = window(series(runs, "baseline", "Ad Spend"), 48, 121)
    assert ads.sum() < 0.9 * ads_base.sum()
    # An early switch to a marketplace does better than a late one; a late one does not
    # save the platform (buyers still well below their peak).
    early = series(runs, "ezbuy_early_transformation", "Active Buyers")
    late = series(runs, "ezbuy_late_transformation", "Active Buyers")
    assert early[120] > late[120] and early[120] > buyers[120]
    assert late[120] <= 0.7 * late.max()


def test_ezbuy_ends_in_a_sale_far_below_its_peak_value(runs):
    """Issue 11: out of money and investors' patience, the stagnating platform exits (is
    sold), and the value realised is far below what it was worth at its peak (Ezbuy: fair
    value US$29.1M against a headline US$85.55M; here at most a fifth of the peak
    valuation). The healthy baseline never exits."""
    exit_ = series(runs, "ezbuy_stagnation", "Platform Exit")
    assert exit_[120] > 0.5 and exit_[36] == 0
    value = series(runs, "ezbuy_stagnation", "Exit Value")[120]
    peak = series(runs, "ezbuy_stagnation", "Platform Valuation").max()
    assert 0 < value <= 0.2 * peak
    assert series(runs, "baseline", "Platform Exit").max() == 0


def test_amazon_prime(runs):
    members = series(runs, "amazon_prime", "Members")
    assert members[120] > 5 * max(members[24], 1.0), "members grow after the launch"
    churn = series(runs, "amazon_prime", "Average Buyer Churn Fraction")
    churn_base = series(runs, "baseline", "Average Buyer Churn Fraction")
    assert churn[120] < churn_base[120], "buyer churn falls"
    for variable in ("Active Buyers", "Total Active Sellers", "GMV", "Platform Cash"):
        assert (
            series(runs, "amazon_prime", variable)[120] > series(runs, "baseline", variable)[120]
        ), variable


def test_amazon_third_party_share_rises(runs):
    """Issue 11: a retailer that opens to third-party sellers sees their share of orders
    rise (Amazon: 3% in 1999 to 58% in 2018): here from under a fifth in the first year to
    more than half by month 120, and never falling by more than a hundredth after month 24.
    A pure marketplace (baseline) is all third-party."""
    share = series(runs, "amazon_marketplace", "Third Party Share")
    assert window(share, 0, 13).max() < 0.2 and share[120] > 0.5
    assert np.diff(window(share, 24, 121).to_numpy()).min() > -0.01
    assert (series(runs, "baseline", "Third Party Share") == 1).all()


def test_ebay_qualification(runs):
    sellers = series(runs, "ebay_qualification", "Total Active Sellers")
    base = series(runs, "baseline", "Total Active Sellers")
    # A short-term dip: within a year of the change sellers fall at least 2% below baseline.
    assert (window(sellers / base, 60, 72) < 0.98).any()
    assert (
        series(runs, "ebay_qualification", "Buyer Trust")[120]
        > series(runs, "baseline", "Buyer Trust")[120]
    )
    assert (
        series(runs, "ebay_qualification", "Low Quality Seller Share")[120]
        < series(runs, "baseline", "Low Quality Seller Share")[120]
    )
    # Higher quality, lower volume: GMV lower or equal (1% slack), but no collapse (>= 70%).
    ratio = series(runs, "ebay_qualification", "GMV")[120] / series(runs, "baseline", "GMV")[120]
    assert 0.7 <= ratio <= 1.01


def test_penalty_overreach(runs):
    for variable, at_most in (
        ("Total Active Sellers", 0.8),
        ("Effective Selection", 0.9),
        ("Active Buyers", 0.95),
    ):
        ratio = (
            series(runs, "penalty_overreach", variable)[120]
            / series(runs, "baseline", variable)[120]
        )
        assert ratio <= at_most, (variable, ratio)


def test_market_mismatch(runs):
    conversion = series(runs, "market_mismatch", "Conversion Rate")
    assert conversion.max() < 0.5 * series(runs, "baseline", "Conversion Rate").max()
    buyers = series(runs, "market_mismatch", "Active Buyers")
    assert buyers.max() < 0.2 * series(runs, "baseline", "Active Buyers").max(), "never takes off"


def test_competitor_entry(runs):
    share = series(runs, "competitor_entry", "Platform Choice Share")
    share_base = series(runs, "baseline", "Platform Choice Share")
    assert share[120] < 0.9 * share_base[120], "share is lost"
    assert (
        series(runs, "competitor_entry", "Active Buyers")[120]
        < series(runs, "baseline", "Active Buyers")[120]
    )


@pytest.mark.parametrize("scenario, entry", [("competitor_entry", 48), ("ezbuy_stagnation", 36)])
def test_the_rival_grows_its_own_buyers_and_sellers(runs, scenario, entry):
    """Issue 11: a rival platform, not a constant. Nothing before it enters; after, its own
    buyers and sellers grow (each at least three times its level six months after entry by
    month 120), while the platform's buyers end below baseline's."""
    for variable in ("Rival Buyers", "Rival Sellers"):
        rival = series(runs, scenario, variable)
        assert window(rival, 0, entry).abs().max() == 0, variable
        assert rival[120] > 3 * rival[entry + 6] > 0, variable
    ours = series(runs, scenario, "Active Buyers")[120]
    assert ours < series(runs, "baseline", "Active Buyers")[120]
    assert (series(runs, "baseline", "Rival Buyers") == 0).all()


def test_launch_ad_burn_has_two_fates():
    """Past critical mass the platform keeps growing after the ads stop; below it, it decays."""
    found = fw.critical_mass(
        "Ad Budget",
        0,
        1_000_000,
        scenario="launch_ad_burn",
        tol=20_000,
        return_columns=["Active Buyers"],
        **FAST,
    )
    low, high = found.bracket
    assert low < found.threshold < high and high - low <= 20_000
    stop = fw.scenarios.get("launch_ad_burn").params["Ad Stop Time"]
    below, above = found.decaying_run["Active Buyers"], found.growing_run["Active Buyers"]
    assert below[120] < below[stop] and above[120] > above[stop]
    # The fates part: by month 120 the decaying launch ends at most 75% of the growing one.
    assert below[120] <= 0.75 * above[120]


def test_comparison_metrics_are_against_baseline(runs):
    table = runs.flywheel.metrics
    assert np.all(table.xs("baseline", level="scenario")["diff"] == 0)
    assert (
        table.xs("market_mismatch", level="scenario").loc["final_active_buyers", "diff_pct"] < -50
    )


def test_launch_fate_is_set_by_ad_duration_too():
    """Issue 11: two fates set by levers, not by one uncertain constant. With a mid-sized ad
    budget (US$600k a month, below the budget threshold when ads stop at month 24), how
    long the ads run decides: bisection on Ad Stop Time finds a threshold inside 6-90
    months, with a decaying launch below it and a growing one above."""
    base = fw.scenarios.get("launch_ad_burn")
    scenario = dataclasses.replace(base, params={**base.params, "Ad Budget": 6e5})
    found = fw.critical_mass(
        "Ad Stop Time", 6, 90, scenario=scenario, tol=1, return_columns=["Active Buyers"], **FAST
    )
    low, high = found.bracket
    assert 6 < low < found.threshold < high < 90 and high - low <= 1
    below, above = found.decaying_run["Active Buyers"], found.growing_run["Active Buyers"]
    assert below[120] <= 0.75 * above[120]


def test_a_cliff_in_an_uncertain_constant_is_crossed_back_by_a_lever(flywheel_model):
    """Issue 11: critical mass is real, but a strategist's conclusion should turn on levers.
    Maximum Conversion Rate 0.08 (a third below the default, still a plausible estimate)
    puts the baseline platform past a cliff: it ends below a tenth of baseline's buyers.
    Twice the ad budget (US$4M a month, inside its range) brings it back to at least half."""
    columns = ["Active Buyers"]
    base = fw.simulate(flywheel_model, return_columns=columns)["Active Buyers"][120]
    low = {"Maximum Conversion Rate": 0.08}
    failing = fw.simulate(flywheel_model, low, return_columns=columns)["Active Buyers"][120]
    rescued = fw.simulate(flywheel_model, {**low, "Ad Budget": 4e6}, return_columns=columns)
    assert failing < 0.1 * base
    assert rescued["Active Buyers"][120] >= 0.5 * base
