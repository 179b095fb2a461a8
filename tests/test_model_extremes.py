"""Extreme-condition tests in the manner of Sterman, *Business Dynamics*, ch. 21.

Each pushes one input to an extreme (inside its documented range) and checks the model's
output over the whole horizon, not at one time: a model that only works for normal inputs
is not a model of the system.
"""

from __future__ import annotations

import numpy as np
import pytest

import flywheel_sd as fw

pytestmark = pytest.mark.slow

# "Zero" here means below a millionth of an order, buyer or seller: stocks that start at
# zero and whose inflows are exactly zero stay at zero, whatever the solver.
ZERO = 1e-6


def run(model, params, columns):
    return fw.simulate(model, params, return_columns=columns)


def test_no_buyers_means_no_orders(flywheel_model):
    """An empty market: no buyer ever appears, so no order is ever placed."""
    out = run(
        flywheel_model,
        {"Addressable Market": 0},
        ["Total Buyers", "Orders", "GMV", "Buyer Adoption"],
    )
    assert (out.abs() <= ZERO).all().all(), out.abs().max().to_dict()


def test_no_sellers_means_no_orders_and_no_buyer_growth(flywheel_model):
    """With no sellers there is nothing to buy: no orders, no conversion, and buyers
    cannot grow from selection (they only churn away)."""
    out = run(
        flywheel_model,
        {"Initial Active Sellers": 0},
        [
            "Total Active Sellers",
            "Seller Entry",
            "Orders",
            "Conversion Rate",
            "Buyer Adoption",
            "Total Buyers",
        ],
    )
    for column in (
        "Total Active Sellers",
        "Seller Entry",
        "Orders",
        "Conversion Rate",
        "Buyer Adoption",
    ):
        assert (out[column].abs() <= ZERO).all(), column
    buyers = out["Total Buyers"].to_numpy()
    assert np.all(np.diff(buyers) <= ZERO), "buyers grew without sellers"
    assert buyers[-1] < 0.01 * buyers[0], "buyers should churn away"


def test_enormous_deposit_stops_seller_entry(flywheel_model):
    """A deposit at the top of its range (USD 100,000 per seller, from month 0) stops entry."""
    top = flywheel_model.ranges["Seller Deposit"][1]
    out = run(flywheel_model, {"Seller Deposit": top}, ["Seller Entry", "Total Active Sellers"])
    assert (out["Seller Entry"].abs() <= ZERO).all()
    sellers = out["Total Active Sellers"].to_numpy()
    assert np.all(np.diff(sellers) <= ZERO), "sellers grew without entry"


def test_no_ads_and_no_initial_buyers_means_nothing_happens(flywheel_model):
    """No buyers to talk and no ads to reach prospects: no buyer, visit or order, ever."""
    out = run(
        flywheel_model,
        {"Ad Budget": 0, "Initial Active Buyers": 0},
        [
            "Total Buyers",
            "Traffic",
            "Orders",
            "GMV",
            "Buyer Adoption",
            "Seller Entry",
            "Commission Revenue",
        ],
    )
    assert (out.abs() <= ZERO).all().all(), out.abs().max().to_dict()


def test_take_rate_of_one_drives_sellers_out(flywheel_model):
    """A platform that keeps the whole sale leaves sellers only losses: none joins, and the
    active sellers leave (down to a tenth of launch within two years, none left by 120)."""
    out = run(
        flywheel_model,
        {"Take Rate": 1},
        ["Seller Entry", "Total Active Sellers", "Seller Profit[High]", "Seller Profit[Low]"],
    )
    assert (out["Seller Entry"].abs() <= ZERO).all()
    assert (out[["Seller Profit[High]", "Seller Profit[Low]"]] < 0).all().all()
    sellers = out["Total Active Sellers"]
    assert np.all(np.diff(sellers.to_numpy()) <= ZERO)
    assert sellers[24] < 0.1 * sellers[0] and sellers[120] < 1e-3 * sellers[0]


def test_zero_trust_is_not_a_trap(flywheel_model):
    """Buyers who do not trust the platform buy nothing at first; but reviews and the
    listings prospects see move trust toward the quality on offer even without purchases
    (issue 11, "zero is a trap"), so buyers start to grow. (Whether the platform then
    survives is up to its money: at zero trust, ads earn back little at first.)"""
    out = run(
        flywheel_model,
        {"Initial Buyer Trust": 0},
        ["Buyer Trust", "Conversion Rate", "Active Buyers"],
    )
    assert out["Conversion Rate"].iloc[0] <= ZERO, "no conversion at zero trust"
    assert out["Buyer Trust"][24] > 0.3, "trust builds without a purchase history"
    start = flywheel_model.default_value("Initial Active Buyers")
    assert out["Active Buyers"].max() > 5 * start, "buyers grow from a standing start"


def test_recruiting_sellers_starts_a_platform_that_has_none(flywheel_model):
    """Seed 000: a new platform recruits any seller at first. With no sellers nothing can be
    bought; a recruitment budget (US$200k a month for two years) brings sellers, and then
    buyers, from nothing."""
    columns = ["Total Active Sellers", "Active Buyers"]
    none = run(flywheel_model, {"Initial Active Sellers": 0}, columns)
    recruited = run(
        flywheel_model,
        {"Initial Active Sellers": 0, "Seller Recruitment Budget": 2e5},
        columns,
    )
    assert none["Total Active Sellers"].abs().max() <= ZERO
    assert recruited["Total Active Sellers"][24] > 1000
    start = flywheel_model.default_value("Initial Active Buyers")
    assert none["Active Buyers"][120] < 0.01 * start
    assert recruited["Active Buyers"][120] > 10 * start
