"""Plausibility against real series (issue 11): the unfitted model beside Wish's revenue, users
and merchants (scenario wish_at_scale) and Amazon's third-party share (amazon_marketplace),
read through flywheel_sd.data.plausibility (time maps and period readings documented there and
in docs/plausibility.md).

What an unfitted model can honestly claim is the right order of magnitude and the right shape,
not the numbers: every figure is checked to within a factor F = 3 (half an order of magnitude
on a log scale, about sqrt(10)), whatever the misfit turns out to be. A figure the model misses
by more is an expected failure with the measured numbers in its reason (strict: it is reported
when the model starts meeting it), not a reason to widen F.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

import flywheel_sd as fw
from flywheel_sd.data import plausibility as pl
from flywheel_sd.scenarios import Policy

pytestmark = pytest.mark.slow

#: Within this factor of each published figure (see the module's doc for why 3).
F = 3.0
#: wish_at_scale is wish_deposit with every extensive constant times this (its description).
SCALE = 10.0
#: Units of the extensive constants: counts of buyers or sellers, money, money flows.
EXTENSIVE_UNITS = {"Buyer", "Seller", "USD", "USD/Month"}

#: (series, year of period_start) -> why the model misses it by more than F, measured.
MISSES = {
    ("amazon_third_party_share", 2001): "model 20% against 6% (3.33x)",
}
AMAZON_REASON = (
    "amazon_marketplace's third-party sellers pour in as the young platform's buyers grow "
    "in its second and third years (third-party share 3% in 2000, 20% in 2001, 34% in "
    "2002), where Amazon's was 3% and 6% in 2000 and 2001 and reached 17% in 2002, once "
    "its Marketplace (November 2000) had run for a year: the model's marketplace arrives a "
    "year early; {}"
)


def _points():
    rows = fw.reference_data([c.series for c in pl.COMPARISONS])
    out = []
    for _, row in rows.iterrows():
        key = (row["series"], row["period_start"].year)
        ident = f"{row['series']}-{row['period_start']:%Y-%m}"
        marks = []
        if key in MISSES:
            reason = MISSES[key]
            if row["series"] == "amazon_third_party_share":
                reason = AMAZON_REASON.format(reason)
            marks = [pytest.mark.xfail(strict=True, reason=reason)]
        out.append(pytest.param(row["series"], row["period_start"], id=ident, marks=marks))
    return out


@pytest.fixture(scope="module")
def frames():
    return pl.runs()


@pytest.fixture(scope="module")
def table(frames):
    return pl.plausibility(frames=frames)


@pytest.mark.parametrize("series, start", _points())
def test_the_model_is_within_a_factor_of_each_figure(table, series, start):
    row = table[(table["series"] == series) & (table["period_start"] == start)]
    assert len(row) == 1
    row = row.iloc[0]
    assert np.isfinite(row["model"]) and row["model"] > 0
    assert row["factor"] <= F, (
        f"{series} {start:%Y-%m}: model {row['model']:.4g} against {row['value']:.4g} "
        f"({row['factor']:.2f}x, allowed {F:g}x)"
    )


def test_every_compared_figure_is_read_from_the_run(table):
    data = fw.reference_data([c.series for c in pl.COMPARISONS])
    assert len(table) == len(data)
    assert np.isfinite(table["model"]).all()
    # annual figures are read over twelve model months, the Q2 2021 MAU over three
    spans = table["model_end"] - table["model_start"]
    annual = table["sampling"] == "annual"
    assert np.allclose(spans[annual], 12)
    assert np.allclose(spans[table["sampling"] == "quarter"], 3)
    assert (spans[table["sampling"] == "point"] == 0).all()


def _annual(frames, comparison: pl.Comparison, years) -> pd.Series:
    run = frames[comparison.scenario]
    values = pl.annual(
        run,
        pl.TIME_MAPS[comparison.scenario],
        comparison.variable,
        comparison.kind,
        comparison.weight,
    )
    return values.loc[list(years)]


def test_model_wish_revenue_peaks_in_2020_or_2021(frames):
    revenue = _annual(frames, pl.COMPARISONS[0], range(2017, 2023))
    assert revenue.idxmax() in (2020, 2021), revenue.to_dict()


@pytest.mark.xfail(
    strict=True,
    reason=(
        "the unfitted Wish declines too little after the dearer ads: annual revenue 1.81B "
        "(2021, the peak) to 1.63B (2022), 10% down, where Wish fell from 2.54B (2020) to "
        "0.57B (2022), 78% down; dearer ads alone cannot make it, since by 2021 paid visits "
        "are a few percent of the model's traffic. The fitted case (wish_fitted: deliveries "
        "two weeks longer from mid-2021) does: test_the_fitted_wish_falls_a_third..."
    ),
)
def test_model_wish_revenue_in_2022_is_a_third_below_its_peak(frames):
    revenue = _annual(frames, pl.COMPARISONS[0], range(2017, 2023))
    assert revenue.loc[2022] <= (2 / 3) * revenue.max(), revenue.to_dict()


def test_model_amazon_share_rises_from_the_first_year_to_the_last(frames):
    share = _annual(frames, pl.COMPARISONS[3], range(1999, 2019))
    assert share.loc[2018] > share.loc[1999], share.to_dict()
    assert share.loc[2018] > 2 * share.loc[1999]


@pytest.mark.parametrize(
    "name", ["wish_at_scale", "amazon_marketplace", *(f.name for f in pl.FITS)]
)
def test_the_scenarios_stay_inside_the_documented_ranges(flywheel_model, name):
    sc = fw.scenarios.get(name)
    sc.validate(flywheel_model)  # raises on any value out of range
    ranges = flywheel_model.ranges
    for key, value in sc.params.items():
        real = flywheel_model.real_name(key)
        assert real in ranges, f"{real}: no documented range"
        low, high = ranges[real]
        values = value if isinstance(value, tuple) else (value,)
        if isinstance(value, Policy):
            values = (value.value,)
        for v in values:
            assert (math.isnan(low) or v >= low) and (math.isnan(high) or v <= high), (
                f"{name}: {real} = {v:g} outside [{low:g}, {high:g}]"
            )


def _value(model, sc, name):
    params, _ = sc.inputs(model, 0.0, 120.0)
    value = params[name] if name in params else model.default_value(name)
    return np.asarray(value, dtype=float)


def test_wish_at_scale_scales_every_extensive_constant_by_one_factor(flywheel_model):
    model = flywheel_model
    scaled = fw.scenarios.get("wish_at_scale")
    parent = fw.scenarios.get("wish_deposit")
    doc = model.doc.set_index("Real Name")
    extensive = [c for c in model.constants if str(doc.loc[c, "Units"]).strip() in EXTENSIVE_UNITS]
    assert len(extensive) >= 12
    own = {  # what wish_at_scale sets differently from wish_deposit
        model.real_name(k)
        for k, v in scaled.params.items()
        if k not in parent.params or parent.params[k] != v
    }
    for name in extensive:
        before, after = _value(model, parent, name), _value(model, scaled, name)
        if np.all(before == 0):
            assert name not in own or np.all(after == 0), name
            continue
        assert name in own, f"{name} ({doc.loc[name, 'Units']}) is extensive but not scaled"
        assert np.allclose(after, SCALE * before, rtol=1e-12), (name, before, after)
    # nothing else changed: the intensive constants are wish_deposit's
    assert own <= set(extensive), sorted(own - set(extensive))


def test_wish_at_scale_is_wish_deposit_ten_times_over(frames):
    scaled = frames["wish_at_scale"]
    parent = fw.run_scenario("wish_deposit", saveper=1.0, return_columns=list(scaled.columns))
    ratio = scaled / parent.loc[scaled.index]
    assert np.allclose(ratio.to_numpy(), SCALE, rtol=1e-4)
    # the Wish story: growth to the dearer ads (month 90), decline after them
    revenue = scaled["Platform Revenue"]
    assert revenue.loc[90] > 2 * revenue.loc[12]
    assert revenue.loc[111] < revenue.loc[90]
    assert revenue.loc[80:100].idxmax() <= 92


# -- the fitted cases (flywheel_sd.data.plausibility.FITS, written by scripts/fit_cases.py) --
@pytest.fixture(scope="module")
def fitted_frames():
    return pl.runs(fitted=True)


@pytest.fixture(scope="module")
def fitted_table(fitted_frames):
    return pl.plausibility(frames=fitted_frames, fitted=True)


@pytest.mark.parametrize("case", pl.FITS, ids=[f.name for f in pl.FITS])
def test_a_fitted_case_is_within_the_factor_of_every_figure_it_was_fitted_to(fitted_table, case):
    rows = fitted_table[fitted_table["series"].isin(case.series)]
    assert len(rows) == len(fw.reference_data(list(case.series)))
    assert (rows["scenario"] == case.name).all()
    worst = rows.loc[rows["factor"].idxmax()]
    assert worst["factor"] <= F, (
        f"{case.name}: {worst['series']} {worst['period_start']:%Y-%m}: model "
        f"{worst['model']:.4g} against {worst['value']:.4g} ({worst['factor']:.2f}x)"
    )


def test_the_fitted_wish_falls_a_third_from_a_2020_or_2021_peak_by_2022(fitted_frames):
    revenue = _annual(fitted_frames, pl.COMPARISONS[0], range(2017, 2023))
    assert revenue.idxmax() in (2020, 2021), revenue.to_dict()
    assert revenue.loc[2022] <= (2 / 3) * revenue.max(), revenue.to_dict()


def test_the_fitted_amazon_share_rises_every_year_from_2001(fitted_frames):
    share = _annual(fitted_frames, pl.COMPARISONS[3], range(2001, 2019))
    assert (np.diff(share.to_numpy()) > 0).all(), share.to_dict()


@pytest.mark.parametrize("case", pl.FITS, ids=[f.name for f in pl.FITS])
def test_a_fresh_fit_lands_where_the_stored_fitted_scenario_is(monkeypatch, case):
    """The stored fit is current: fitting again (same data, bounds and seed) on today's model
    gives 95% bounds that hold every stored value. A model change that moves the fit fails
    here until scripts/fit_cases.py is run again."""
    monkeypatch.setenv("FLYWHEEL_SD_JIT", "eager")
    cal = pl.fit(case)
    stored = fw.scenarios.get(case.name).params
    assert set(cal.params) <= set(stored)  # (stored: the fit on top of its base's)
    for name, row in cal.bounds.iterrows():
        assert row["low"] <= stored[name] <= row["high"], (
            f"{case.name}: stored {name} = {stored[name]:.6g} outside the fresh fit's "
            f"[{row['low']:.6g}, {row['high']:.6g}]: run scripts/fit_cases.py"
        )
