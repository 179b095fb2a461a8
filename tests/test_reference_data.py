"""The reference data shipped with the package (issue 11, plausibility; issue 13, calibration):
flywheel_sd.reference_data() returns every series with its units and sources, and the numbers
are the ones the design brief (section 4) quotes, which is the independent text the CSV was
typed from."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import flywheel_sd as fw
from flywheel_sd.data import COLUMNS
from flywheel_sd.errors import FlywheelError

SERIES = {
    "wish_revenue",
    "wish_mau",
    "wish_merchants",
    "amazon_third_party_share",
    "prime_members",
    "ebay_gmv",
}
DATA = Path(fw.__file__).parent / "data"


def test_every_series_has_units_and_sources():
    frame = fw.reference_data()
    assert tuple(frame.columns) == COLUMNS
    assert set(frame["series"]) == SERIES
    for column in ("unit", "source", "sampling"):
        assert (frame[column].str.strip() != "").all(), column
    assert set(frame["sampling"]) <= {"annual", "quarter", "point"}
    # one unit per series
    assert (frame.groupby("series")["unit"].nunique() == 1).all()
    # each source is cited in SOURCES.md
    sources = (DATA / "SOURCES.md").read_text(encoding="utf-8")
    for source in set(frame["source"]):
        assert f"**{source}.**" in sources, source


def test_values_are_finite_and_periods_are_ordered():
    frame = fw.reference_data()
    assert np.isfinite(frame["value"]).all()
    assert (frame["value"] > 0).all()
    assert (frame["period_end"] >= frame["period_start"]).all()
    points = frame["sampling"] == "point"
    assert (frame.loc[points, "period_end"] == frame.loc[points, "period_start"]).all()
    assert (frame.loc[~points, "period_end"] > frame.loc[~points, "period_start"]).all()
    annual = frame[frame["sampling"] == "annual"]
    assert (annual["period_start"].dt.strftime("%m-%d") == "01-01").all()
    assert (annual["period_end"].dt.strftime("%m-%d") == "12-31").all()
    assert (annual["period_start"].dt.year == annual["period_end"].dt.year).all()
    notes = frame["note"][frame["note"] != ""]
    assert notes.str.match(r"^(lower bound|approximate): ").all()


def test_amazon_third_party_share_rises_from_3_to_58_percent():
    amazon = fw.reference_data("amazon_third_party_share")
    assert len(amazon) == 20
    assert (amazon["sampling"] == "annual").all()
    assert list(amazon["period_start"].dt.year) == list(range(1999, 2019))
    assert (amazon["unit"] == "fraction").all()
    values = amazon["value"].to_numpy()
    assert values[0] == pytest.approx(0.03)
    assert values[-1] == pytest.approx(0.58)
    assert (np.diff(values) >= 0).all()  # never falls (flat 1999-2000, 2005-2006)
    # the brief's list, in percent
    brief = [3, 3, 6, 17, 22, 25, 28, 28, 29, 30, 31, 34, 38, 42, 46, 49, 51, 54, 56, 58]
    assert values == pytest.approx(np.array(brief) / 100)


def test_wish_and_other_figures_are_the_briefs():
    revenue = fw.reference_data("wish_revenue").set_index(
        fw.reference_data("wish_revenue")["period_start"].dt.year
    )["value"]
    assert revenue.to_dict() == pytest.approx(
        {2017: 1.10e9, 2018: 1.73e9, 2019: 1.90e9, 2020: 2.54e9, 2021: 2.08e9, 2022: 0.57e9}
    )
    mau = fw.reference_data("wish_mau")
    assert list(mau["value"]) == pytest.approx([100e6, 90e6, 27e6])
    assert list(mau["sampling"]) == ["point", "quarter", "annual"]
    ipo = mau.iloc[0]
    assert ipo["period_start"] == pd.Timestamp("2020-11-01") == ipo["period_end"]
    assert ipo["note"].startswith("lower bound")
    q2 = mau.iloc[1]
    assert (q2["period_start"], q2["period_end"]) == (
        pd.Timestamp("2021-04-01"),
        pd.Timestamp("2021-06-30"),
    )
    merchants = fw.reference_data("wish_merchants")
    assert list(merchants["value"]) == [500e3]
    assert merchants["note"].iloc[0].startswith("lower bound")
    prime = fw.reference_data("prime_members")
    assert list(prime["value"]) == pytest.approx([100e6, 150e6, 200e6])
    assert list(prime["period_start"].dt.strftime("%Y-%m")) == ["2018-04", "2020-01", "2021-04"]
    assert [n.startswith("lower bound") for n in prime["note"]] == [True, False, True]
    ebay = fw.reference_data(["ebay_gmv"])
    assert list(ebay["value"]) == pytest.approx([89.8e9, 85.5e9])
    assert (ebay["unit"] == "USD").all()


def test_several_series_and_a_fresh_frame_each_call():
    both = fw.reference_data(["wish_revenue", "ebay_gmv"])
    assert set(both["series"]) == {"wish_revenue", "ebay_gmv"}
    assert list(both.index) == list(range(len(both)))
    both.loc[0, "value"] = math.nan  # a caller's edit does not leak into the next call
    assert np.isfinite(fw.reference_data(["wish_revenue", "ebay_gmv"])["value"]).all()


def test_unknown_series_names_close_matches_in_one_line():
    with pytest.raises(FlywheelError, match=r"did you mean 'wish_revenue'") as err:
        fw.reference_data("wish_revenu")
    assert "\n" not in str(err.value)
    assert "reference series 'wish_revenu'" in str(err.value)
    with pytest.raises(FlywheelError, match="amazon_third_party_share"):
        fw.reference_data(["wish_mau", "amazon_3p_share"])
    # nothing close: the valid names are listed
    with pytest.raises(FlywheelError, match=r"valid: amazon_third_party_share, ebay_gmv"):
        fw.reference_data("zzz")


def test_the_data_ship_with_the_package():
    text = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    assert '"data/*.csv"' in text
    assert '"data/*.md"' in text
    assert (DATA / "reference_series.csv").is_file()
