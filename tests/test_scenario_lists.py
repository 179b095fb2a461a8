"""A scenario file sets a subscripted constant with a list, one value per element of its
subscript range in the model's order (issue 11: wish_at_scale scales Seller Pool[High, Low]).
"""

from __future__ import annotations

import tomllib

import pytest
import xarray as xr

from flywheel_sd import scenarios
from flywheel_sd.errors import ParameterError


def test_a_list_sets_a_subscripted_constant_in_element_order(flywheel_model):
    sc = scenarios.get("wish_at_scale")
    assert sc.params["Seller Pool"] == (300000.0, 500000.0)
    sc.validate(flywheel_model)
    params, _ = sc.inputs(flywheel_model, 0.0, 120.0)
    pool = params["Seller Pool"]
    assert isinstance(pool, xr.DataArray)
    assert pool.dims == ("Quality",)
    assert pool.sel(Quality="High") == 300000 and pool.sel(Quality="Low") == 500000


def test_a_list_round_trips_through_a_file(flywheel_model, tmp_path):
    sc = scenarios.get("wish_at_scale")
    back = scenarios.load_file(sc.save(tmp_path / "again.toml"))
    assert back.params == sc.params
    written = tomllib.loads((tmp_path / "again.toml").read_text())
    assert written["params"]["Seller Pool"] == [300000.0, 500000.0]


@pytest.mark.parametrize(
    "value, message",
    [
        ("[1, 2, 3]", r"expected 2 values, one per element of Quality \(High, Low\), got 3"),
        ("[]", "a list sets a subscripted constant"),
        ("[1, true]", "a list sets a subscripted constant"),
        ('[1, "2"]', "a list sets a subscripted constant"),
    ],
)
def test_a_wrong_list_is_refused_in_one_line(flywheel_model, tmp_path, value, message):
    path = tmp_path / "bad.toml"
    path.write_text(f'name = "bad"\n[params]\n"Seller Pool" = {value}\n')
    with pytest.raises(ParameterError, match=message) as err:
        scenarios.load_file(path).validate(flywheel_model)
    assert "\n" not in str(err.value)
    assert "bad.toml" in str(err.value) and "Seller Pool" in str(err.value)


def test_a_list_on_a_scalar_constant_is_refused(flywheel_model, tmp_path):
    path = tmp_path / "scalar.toml"
    path.write_text('name = "scalar"\n[params]\n"Take Rate" = [0.1, 0.2]\n')
    sc = scenarios.load_file(path, validate=False)
    with pytest.raises(ParameterError, match="'Take Rate' has no subscript") as err:
        sc.validate(flywheel_model)
    assert "scalar.toml" in str(err.value)
    with pytest.raises(ParameterError, match="'Take Rate' has no subscript"):
        sc.inputs(flywheel_model, 0.0, 120.0)


def test_a_list_out_of_range_is_refused(flywheel_model, tmp_path):
    path = tmp_path / "big.toml"
    path.write_text('name = "big"\n[params]\n"Seller Pool" = [1e6, 2e7]\n')
    with pytest.raises(ParameterError, match="Seller Pool"):
        scenarios.load_file(path).validate(flywheel_model)
