"""Loop polarity from the equations (issue 11): link signs are the signs of ∂target/∂source
evaluated along a run (`flywheel_sd.engine.links`), a loop's polarity their product over
time (`flywheel_sd.loop_index.loop_polarity`).

Small models with known derivatives first (the expected signs and values come from the
analytic derivative), then every loop of the bundled model's loop index against its
declared polarity along the baseline run. Each check is also shown to fail: a flipped
declaration disagrees.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from _model_fixtures import LOOPS_FILE, loops
from _shared import load_text
from conformance_mdl import vensim

import flywheel_sd as fw
from flywheel_sd.engine import links
from flywheel_sd.errors import ModelFileError
from flywheel_sd.loop_index import (
    LoopPolarity,
    loop_polarity,
    read_loop_index,
    run_state,
)

R, G = 0.1, 0.002  # growth rates
K = 1000.0  # carrying capacity
TAU = 4.0
GOAL = 50.0


def loop(chain, polarity, note=""):
    entry = {"name": "test loop", "polarity": polarity, "chain": chain}
    if note:
        entry["polarity_note"] = note
    return entry


def model_of(tmp_path_factory, name, *equations, **control):
    return load_text(tmp_path_factory, f"{name}.mdl", vensim(*equations, **control))


def assert_all(values, expected):
    np.testing.assert_array_equal(np.asarray(values), np.full(len(values), expected))


# -- analytic models ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def exponential(tmp_path_factory):
    return model_of(
        tmp_path_factory,
        "exponential",
        "Stock = INTEG(Growth, 1)",
        "Growth = r * Stock",
        f"r = {R}",
    )


def test_exponential_growth_is_one_reinforcing_loop(exponential):
    eq, state = run_state(exponential)
    # dGrowth/dStock = r, and Growth is the stock's inflow: d(net flow)/dGrowth = +1
    np.testing.assert_allclose(links.partial(eq, state, "growth", "stock"), R, rtol=1e-8)
    np.testing.assert_allclose(links.partial(eq, state, "stock", "growth"), 1.0, rtol=1e-8)
    result = loop_polarity(exponential, {"R": loop(["Stock", "Growth"], "reinforcing")})
    lp = result["R"]
    assert_all(lp.sign, 1)
    assert lp.summary == "reinforcing" and lp.agrees
    assert lp.spans() == {"reinforcing": [(0.0, 20.0)]}
    assert lp.flipping_links() == []
    assert [link.kind for link in lp.links] == ["flow", "aux"]  # Growth -> Stock first
    for link in lp.links:
        assert_all(link.combined, 1)


def test_a_flipped_declaration_disagrees(exponential):
    for declared in ("balancing", "state-dependent"):
        index = {"R": loop(["Stock", "Growth"], declared, note="never")}
        lp = loop_polarity(exponential, index)["R"]
        assert lp.summary == "reinforcing"
        assert not lp.agrees, declared
        assert "DISAGREES" in lp.describe()


def test_first_order_goal_seeking_is_balancing(tmp_path_factory):
    model = model_of(
        tmp_path_factory,
        "goal",
        "Level = INTEG(Adjustment, 0)",
        "Adjustment = (Goal - Level) / Tau",
        f"Goal = {GOAL}",
        f"Tau = {TAU}",
    )
    eq, state = run_state(model)
    np.testing.assert_allclose(links.partial(eq, state, "adjustment", "level"), -1 / TAU)
    lp = loop_polarity(model, {"B": loop(["Level", "Adjustment"], "balancing")})["B"]
    assert_all(lp.links[1].combined, -1)  # Level -> Adjustment
    assert_all(lp.links[0].combined, 1)  # Adjustment -> Level: an inflow
    assert_all(lp.sign, -1)
    assert lp.summary == "balancing" and lp.agrees


@pytest.fixture(scope="module")
def logistic(tmp_path_factory):
    return model_of(
        tmp_path_factory,
        "logistic",
        "Population = INTEG(Births - Deaths, 10)",
        "Births = r * Population",
        "Crowding = Population / K",
        "Deaths = r * Population * Crowding",
        f"r = {R}",
        f"K = {K}",
        final_time=60,
    )


def test_logistic_growth_reinforcing_births_balancing_crowding(logistic):
    eq, state = run_state(logistic)
    p = state.values["population"]
    crowding = p / K
    np.testing.assert_allclose(links.partial(eq, state, "births", "population"), R, rtol=1e-7)
    np.testing.assert_allclose(links.partial(eq, state, "crowding", "population"), 1 / K)
    np.testing.assert_allclose(links.partial(eq, state, "deaths", "crowding"), R * p, rtol=1e-7)
    np.testing.assert_allclose(
        links.partial(eq, state, "deaths", "population"), R * crowding, rtol=1e-7
    )
    # the stock's net flow is Births - Deaths: +1 for the inflow, -1 for the outflow
    np.testing.assert_allclose(links.partial(eq, state, "population", "births"), 1.0)
    np.testing.assert_allclose(links.partial(eq, state, "population", "deaths"), -1.0)
    index = {
        "R": loop(["Population", "Births"], "reinforcing"),
        "B": loop(["Population", "Crowding", "Deaths"], "balancing"),
        "B2": loop(["Population", "Deaths"], "balancing"),
    }
    result = loop_polarity(logistic, index)
    assert_all(result["R"].sign, 1)
    assert_all(result["B"].sign, -1)
    assert_all(result["B2"].sign, -1)
    assert result.disagreements() == []
    signs = {link.name: link.combined for link in result["B"].links}
    assert_all(signs["Deaths -> Population"], -1)
    assert_all(signs["Population -> Crowding"], 1)
    assert_all(signs["Crowding -> Deaths"], 1)
    assert result["B"].links[0].kind == "flow"


def test_a_loop_through_an_outflow_is_balancing(tmp_path_factory):
    model = model_of(
        tmp_path_factory,
        "outflow",
        "Inventory = INTEG(Production - Shipments, 100)",
        "Production = 5",
        "Shipments = Inventory / Delay",
        "Delay = 3",
    )
    eq, state = run_state(model)
    np.testing.assert_allclose(links.partial(eq, state, "shipments", "inventory"), 1 / 3)
    np.testing.assert_allclose(links.partial(eq, state, "inventory", "shipments"), -1.0)
    lp = loop_polarity(model, {"B": loop(["Inventory", "Shipments"], "balancing")})["B"]
    assert_all(lp.links[0].combined, -1)  # Shipments -> Inventory: an outflow
    assert_all(lp.sign, -1)
    assert lp.agrees


@pytest.fixture(scope="module")
def hump(tmp_path_factory):
    """Net = g X (K - X): dNet/dX = g (K - 2X) changes sign at X = K/2."""
    return model_of(
        tmp_path_factory,
        "hump",
        "X = INTEG(Net, 10)",
        "Net = g * X * (K - X)",
        f"g = {G / 10}",
        f"K = {K}",
        final_time=60,
    )


def test_a_link_whose_sign_flips_with_state_makes_a_state_dependent_loop(hump):
    eq, state = run_state(hump)
    x = state.values["x"]
    g = G / 10
    np.testing.assert_allclose(
        links.partial(eq, state, "net", "x"), g * (K - 2 * x), rtol=1e-6, atol=1e-9
    )
    expected = np.sign(K - 2 * x)
    assert (expected > 0).any() and (expected < 0).any()  # the run crosses K/2
    index = {"S": loop(["X", "Net"], "state-dependent", note="balancing above K/2")}
    lp = loop_polarity(hump, index)["S"]
    np.testing.assert_array_equal(lp.sign, expected)
    growth, net = lp.links  # Net -> X (the inflow), X -> Net
    assert_all(growth.combined, 1)
    np.testing.assert_array_equal(net.combined, expected)
    assert lp.summary == "state-dependent" and lp.agrees
    assert lp.flipping_links() == ["X -> Net"]
    # the analytic crossing time of the logistic X(t) = K / (1 + (K/X0 - 1) exp(-g K t))
    crossing = np.log(K / 10 - 1) / (g * K)
    (r_start, r_end), (b_start, b_end) = lp.spans()["reinforcing"][0], lp.spans()["balancing"][0]
    assert r_start == 0 and r_end < crossing < b_start and b_end == 60
    for declared in ("reinforcing", "balancing"):
        wrong = loop_polarity(hump, {"S": loop(["X", "Net"], declared)})["S"]
        assert not wrong.agrees


def test_a_switched_off_link_is_inactive_not_a_sign_change(tmp_path_factory):
    """MIN(r X, Cap): once the cap binds, growth no longer responds to X (sign 0)."""
    model = model_of(
        tmp_path_factory,
        "capped",
        "X = INTEG(Growth, 1)",
        "Growth = MIN(r * X, Cap)",
        f"r = {R}",
        "Cap = 0.5",
        final_time=40,
    )
    _, state = run_state(model)
    x = state.values["x"]
    expected = np.where(R * x < 0.5, 1, 0)
    assert (expected == 1).any() and (expected == 0).any()
    lp = loop_polarity(model, {"R": loop(["X", "Growth"], "reinforcing")})["R"]
    np.testing.assert_array_equal(lp.sign, expected)
    np.testing.assert_array_equal(lp.links[1].combined, expected)  # X -> Growth
    assert_all(lp.links[0].combined, 1)  # Growth -> X
    assert lp.summary == "reinforcing" and lp.agrees
    assert lp.flipping_links() == []
    assert set(lp.spans()) == {"reinforcing", "inactive"}
    assert lp.inactive_links() == ["X -> Growth"]


def test_links_through_a_smooth_and_per_element(tmp_path_factory):
    """A SMOOTH's hidden stage sits between its input and output; subscripted links are
    per element, and elements of opposite sign make the loop state-dependent (mixed)."""
    model = model_of(
        tmp_path_factory,
        "elements",
        "region: north, south",
        "Stock[region] = INTEG(Growth[region], 10)",
        "Perceived[region] = SMOOTH(Stock[region], 2)",
        "Growth[region] = rate[region] * Perceived[region]",
        "rate[region] = 0.05, -0.05",
        final_time=10,
    )
    index = {"L": loop(["Stock", "Perceived", "Growth"], "state-dependent", note="by region")}
    lp = loop_polarity(model, index)["L"]
    smooth = lp.links[1]  # Stock -> Perceived, through the hidden stage
    assert set(smooth.pairs) == {
        ("perceived[north]", "stock[north]"),
        ("perceived[south]", "stock[south]"),
    }
    assert all(len(path) == 3 for paths in smooth.paths.values() for path in paths)
    assert_all(smooth.combined, 1)
    eq, state = run_state(model)
    for path in smooth.paths[("perceived[north]", "stock[north]")]:
        for source, target in itertools.pairwise(path):  # into the stage: its inflow
            assert_all(links.link_sign(eq, state, target, source), 1)
    growth = lp.links[2]  # Perceived -> Growth: the sign of rate[region]
    assert_all(growth.pairs[("growth[north]", "perceived[north]")], 1)
    assert_all(growth.pairs[("growth[south]", "perceived[south]")], -1)
    assert growth.mixed.all()
    signs = {cycle.elements[0]: cycle.sign for cycle in lp.cycles}
    assert set(signs) == {"Stock[north]", "Stock[south]"}
    assert_all(signs["Stock[north]"], 1)
    assert_all(signs["Stock[south]"], -1)
    assert lp.mixed.all() and lp.summary == "state-dependent" and lp.agrees
    assert lp.flipping_links() == ["Perceived -> Growth"]


def test_recorded_states_are_the_runs_values(logistic):
    eq, state = run_state(logistic)
    frame = fw.simulate(logistic)
    for key, node in eq.nodes.items():
        if node.column in frame.columns:
            np.testing.assert_array_equal(state.values[key], frame[node.column].to_numpy())
    # evaluate re-evaluates one equation with an input replaced, nothing else
    births = links.evaluate(eq, state, "births", {"population": np.full(len(state), 2.0)})
    np.testing.assert_allclose(births, 2 * R)


def test_the_loop_index_format_is_checked(tmp_path):
    chain = ["Stock", "Growth"]
    with pytest.raises(ModelFileError, match="polarity_note"):
        read_loop_index({"S": loop(chain, "state-dependent")})
    with pytest.raises(ModelFileError, match="polarity must be one of"):
        read_loop_index({"S": loop(chain, "positive")})
    with pytest.raises(ModelFileError, match="chain"):
        read_loop_index({"S": {"polarity": "balancing", "chain": []}})
    path = tmp_path / "m.loops.toml"
    path.write_text(
        '[S]\nname = "s"\npolarity = "state-dependent"\n'
        'polarity_note = "flips when X passes K/2"\nchain = ["X", "Net"]\n'
    )
    spec = read_loop_index(path)["S"]
    assert spec.polarity == "state-dependent" and spec.polarity_note.startswith("flips")
    # the bundled index reads (and keeps its backwards-compatible form)
    assert set(read_loop_index(LOOPS_FILE)) == set(loops())


def test_a_chain_that_is_not_a_path_is_refused(exponential):
    with pytest.raises(ModelFileError, match="not a link"):
        loop_polarity(exponential, {"X": loop(["Stock", "r"], "reinforcing")})


# -- the bundled model ------------------------------------------------------------------------
#: Loops whose computed polarity along the baseline disagrees with the index today; for the
#: model author (models/platform_flywheel.mdl and its .loops.toml are not edited here).
KNOWN_DISAGREEMENTS: dict[str, str] = {}  # loop key -> why its computed sign differs


@pytest.fixture(scope="module")
def baseline_state(flywheel_model):
    return run_state(flywheel_model, "baseline")


def check_declared(flywheel_model, lp: LoopPolarity) -> str:
    """Assert `lp` (computed along the baseline) matches its declaration; a loop inactive
    along the baseline is checked along the first bundled scenario where it is active.
    Returns where it was checked."""
    where = "baseline"
    if lp.summary == "inactive":
        for name in fw.scenarios.list():
            other = loop_polarity(flywheel_model, {lp.key: lp.spec}, name)[lp.key]
            if other.summary != "inactive":
                lp, where = other, name
                break
        else:
            pytest.fail(f"{lp.key}: inactive along every bundled scenario")
    assert lp.agrees, f"along {where}: {lp.describe()}"
    if lp.declared == "state-dependent":
        assert lp.positive.any() and lp.negative.any()
    return where


@pytest.mark.parametrize(
    "key",
    [
        pytest.param(
            key,
            marks=pytest.mark.xfail(
                strict=True, raises=AssertionError, reason=KNOWN_DISAGREEMENTS[key]
            ),
        )
        if key in KNOWN_DISAGREEMENTS
        else key
        for key in loops()
    ],
)
def test_bundled_loop_polarity_matches_its_declaration(flywheel_model, baseline_state, key):
    eq, state = baseline_state
    lp = loop_polarity(flywheel_model, LOOPS_FILE, state, equations=eq, keys=[key])[key]
    check_declared(flywheel_model, lp)


def test_bundled_check_fails_for_a_flipped_declaration(flywheel_model, baseline_state):
    eq, state = baseline_state
    index = read_loop_index(LOOPS_FILE)
    flipped = {
        key: {
            "name": spec.name,
            "polarity": "balancing" if spec.polarity == "reinforcing" else "reinforcing",
            "chain": list(spec.chain),
            "also": [list(p) for p in spec.also],
        }
        for key, spec in index.items()
    }
    result = loop_polarity(flywheel_model, flipped, state, equations=eq)
    checked = [lp for lp in result.values() if lp.summary in ("reinforcing", "balancing")]
    assert checked
    for lp in checked:
        if lp.key in KNOWN_DISAGREEMENTS:  # flipped, a known disagreement agrees
            check_declared(flywheel_model, lp)
            continue
        with pytest.raises(AssertionError):
            check_declared(flywheel_model, lp)


def test_round_off_is_not_a_sign(tmp_path_factory):
    """Z = (X + c) - X does not depend on X: the central difference sees only round-off,
    which must read as inactive (0), not as a sign."""
    model = model_of(
        tmp_path_factory, "roundoff", "X = INTEG(Z, 1.3)", "Z = (X + c) - X", "c = 0.1"
    )
    lp = loop_polarity(model, {"L": loop(["X", "Z"], "reinforcing")})["L"]
    assert_all(lp.links[1].combined, 0)
    assert lp.summary == "inactive" and not lp.agrees


@pytest.mark.parametrize("take_rate, sign", [(0.15, 1), (0.5, -1)])
def test_r1_order_to_profit_link_flips_when_the_take_rate_exceeds_the_margin(
    flywheel_model, take_rate, sign
):
    """The index's note on R1: once the take rate exceeds a seller class's gross margin
    (0.40 High, 0.45 Low), each extra order loses that seller money, so the link Orders per
    Seller -> Seller Profit turns negative for both classes (derived from the equations,
    along the run at that take rate)."""
    from flywheel_sd.engine.links import equations, link_signs, record_states

    params = {"Take Rate": take_rate}
    eq = equations(flywheel_model, params)
    state = record_states(eq, params)
    link = link_signs(eq, state, "Orders per Seller", "Seller Profit")
    assert len(link.pairs) == 2  # one per seller class
    for signs in link.pairs.values():
        assert (signs == sign).all()
