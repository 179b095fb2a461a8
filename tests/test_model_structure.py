"""Structure of models/platform_flywheel.mdl: conventions, levers, loops, views, invariants.

Design brief (shared/design/flywheel-model.md) section 2 and issue 3: every variable has units
and a description, every constant a documented range holding its default, the loop chains
are real cycles, the sketch has one view per sector, the buyer chain conserves the
addressable market, stocks that cannot be negative never are, trust stays in [0, 1].
"""

from __future__ import annotations

import importlib.util
import json
import math
import shutil
import sys
import warnings

import numpy as np
import pytest
from _model_fixtures import (  # noqa: F401 - fixtures, used by name
    MODEL_FILE,
    REPO,
    STRESS,
    baseline_fixture,
    loops,
    stress_runs_fixture,
)

import flywheel_sd as fw

QUALITY = ("High", "Low")  # the model's seller classes, in its order

#: Stocks the brief requires (section 2, "Stocks (at least)").
REQUIRED_STOCKS = [
    "Potential Buyers",
    "Active Buyers",
    "Members",
    "Potential Sellers",
    "Active Sellers",
    # traffic by source (issue 11): visits bought with ads are never relabelled as buyers'
    "Paid Traffic",
    "Referral Traffic",
    "Returning Buyer Traffic",
    "Buyer Trust",
    "Platform Cash",
    "Seller Deposits Held",
    "Platform Capability",
    "Competitor Capability",
    # money that binds (issue 11): investors' willingness, exit and the value it realises
    "Investor Confidence",
    "Platform Exit",
    "Exit Value",
]

#: Levers other code depends on, by exact name (issue 3), and outputs scenario metrics read.
REQUIRED_LEVERS = [
    "Seller Deposit",
    "Deposit Start Time",
    "Deposit End Time",
    "Qualification Strictness",
    "Qualification Change Time",
    "Qualification Strictness Late",
    "Take Rate",
    "Ad Budget",
    "Ad Stop Time",
    "Investor Funding",
    "Funding Round Time",
    "Ranking Weight on Quality",
    "Enforcement Intensity",
    "Membership Start Time",
    "Membership Fee",
    "Membership Benefit",
    "Logistics Investment",
    "Innovation Investment",
    "Competitor Entry Time",
    "Competitor Strength",
    "Supply Cost Shock Time",
    "Supply Cost Shock Size",
    "Price Level",
    "Initial Active Buyers",
    "Initial Active Sellers",
    "Addressable Market",
    "Marketplace Switch Time",
    "Initial Buyer Trust",
    # issue 11: seller recruitment at launch, investor patience, the value of an exit
    "Seller Recruitment Budget",
    "Recruitment Stop Time",
    "Investor Patience",
    "Revenue Multiple",
]
REQUIRED_OUTPUTS = [
    "GMV",
    "Orders",
    "Low Quality Seller Share",
    "Seller Entry",
    "Total Active Sellers",
    "Platform Choice Share",
    "Effective Selection",
    "Average Buyer Churn Fraction",
    "Ad Spend",
    "Conversion Rate",
    "Platform Valuation",
    "Spending Fraction",
]

#: One view per sector (design brief section 2, issue 3).
VIEWS = {
    "buyers",
    "sellers",
    "traffic_and_conversion",
    "trust",
    "money",
    "capability_and_competition",
}
CONTROL = {"INITIAL TIME", "FINAL TIME", "TIME STEP", "SAVEPER"}
MAY_BE_NEGATIVE = {"Platform Cash"}  # debt: the brief wants cash negative early


def _doc(model):
    doc = model.doc
    return doc[doc["Type"].notna() & (doc["Real Name"] != "Time")]


def test_model_loads_with_required_stocks(flywheel_model):
    stocks = flywheel_model.stocks
    assert len(stocks) >= 10
    missing = [s for s in REQUIRED_STOCKS if s not in stocks]
    assert not missing, f"missing stocks: {missing}"


def test_time_settings_are_months_to_120(flywheel_model):
    settings = flywheel_model.time_settings()
    assert settings == {
        "initial_time": 0.0,
        "final_time": 120.0,
        "time_step": 0.0625,
        "saveper": 1.0,
    }
    units = dict(zip(_doc(flywheel_model)["Real Name"], _doc(flywheel_model)["Units"]))
    assert {units[name] for name in CONTROL} == {"Month"}


def test_file_is_utf8_vensim_text():
    text = MODEL_FILE.read_text(encoding="utf-8")
    assert text.startswith("{UTF-8}")
    assert "\\\\\\---/// Sketch information" in text


def test_every_variable_has_units_and_a_description(flywheel_model):
    doc = _doc(flywheel_model)
    no_units = [
        n
        for n, u in zip(doc["Real Name"], doc["Units"])
        if not isinstance(u, str) or not u.strip()
    ]
    no_comment = [
        n
        for n, c in zip(doc["Real Name"], doc["Comment"])
        if not isinstance(c, str) or len(c.strip()) < 3
    ]
    assert not no_units, f"variables without units: {no_units}"
    assert not no_comment, f"variables without a description: {no_comment}"


def test_units_use_the_model_dimensions(flywheel_model):
    # Day: delivery time only, read by a lookup and never mixed with Month in arithmetic
    allowed = {"Buyer", "Seller", "Visit", "Order", "USD", "Month", "Day", "Dmnl"}
    bad = {}
    for name, units in zip(_doc(flywheel_model)["Real Name"], _doc(flywheel_model)["Units"]):
        words = set(
            filter(
                None,
                (
                    w.strip()
                    for w in units.replace("(", " ")
                    .replace(")", " ")
                    .replace("*", " ")
                    .replace("/", " ")
                    .split()
                ),
            )
        )
        words.discard("1")
        if not words <= allowed:
            bad[name] = units
    assert not bad, f"units outside the model's dimensions: {bad}"


def test_every_constant_has_a_range_holding_its_default(flywheel_model):
    doc = _doc(flywheel_model)
    constants = doc[doc["Type"] == "Constant"]
    assert len(constants) > 50
    problems = []
    for _, row in constants.iterrows():
        lim = row["Limits"]
        if not (
            isinstance(lim, tuple)
            and len(lim) >= 2
            and all(v is not None and math.isfinite(v) for v in lim[:2])
            and lim[0] < lim[1]
        ):
            problems.append(f"{row['Real Name']}: no [min,max] range ({lim})")
            continue
        value = np.asarray(
            getattr(
                flywheel_model.default_value(row["Real Name"]),
                "values",
                flywheel_model.default_value(row["Real Name"]),
            ),
            float,
        )
        if np.any(value < lim[0]) or np.any(value > lim[1]):
            problems.append(f"{row['Real Name']} = {value} outside {lim[:2]}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("name", REQUIRED_LEVERS)
def test_required_lever_is_a_constant_with_a_range(flywheel_model, name):
    assert name in flywheel_model.constants
    assert name in flywheel_model.ranges


@pytest.mark.parametrize("name", REQUIRED_OUTPUTS)
def test_required_output_exists(flywheel_model, name):
    assert name in flywheel_model.namespace


def test_nonlinear_effects_are_lookups_with_documented_shapes(flywheel_model):
    doc = _doc(flywheel_model)
    effects = doc[doc["Real Name"].str.startswith("Effect of")]
    assert len(effects) >= 15
    shape_words = ("increasing", "decreasing", "s-shaped", "concave", "convex", "flat")
    # an effect is a WITH LOOKUP, or reads a standalone lookup shared by several effects
    tables = set(doc[doc["Type"] == "Lookup"]["Py Name"])
    deps = flywheel_model.pysd_model().dependencies
    for _, row in effects.iterrows():
        reads_table = bool(tables & set(deps.get(row["Py Name"], {})))
        assert row["Subtype"].lower() == "with lookup" or reads_table, row["Real Name"]
        assert any(w in row["Comment"].lower() for w in shape_words), row["Real Name"]


def test_seller_stocks_are_subscripted_by_quality(flywheel_model):
    doc = _doc(flywheel_model).set_index("Real Name")
    for name in ("Potential Sellers", "Active Sellers"):
        assert doc.loc[name, "Subscripts"] == ["Quality"]
    assert flywheel_model.pysd_model().subscripts["Quality"] == ["High", "Low"]


# -- loops -----------------------------------------------------------------------------------
def _direct_dependencies(deps: dict, py_name: str) -> set[str]:
    """What `py_name` reads, seeing through PySD's stateful objects (_integ_x, _smooth_x)."""
    out: set[str] = set()
    for dep in deps.get(py_name, {}):
        inner = deps.get(dep)
        if dep.startswith("_") and isinstance(inner, dict) and "step" in inner:
            out |= set(inner["step"])  # a stock or smooth reads its rate's inputs
        elif not dep.startswith("__"):
            out.add(dep)
    return out


def test_loop_index_has_the_eleven_loops_of_the_brief():
    index = loops()
    assert set(index) == {"R1", "R2", "R3", "R4", "R5", "B1", "B2", "B3", "B4", "B5", "B6"}
    for key, loop in index.items():
        expected = "reinforcing" if key.startswith("R") else "balancing"
        assert loop["polarity"] in (expected, "state-dependent")
        assert loop["name"] and loop["description"] and len(loop["chain"]) >= 2


@pytest.mark.parametrize("key", sorted(loops()))
def test_loop_chain_is_a_closed_path(flywheel_model, key):
    deps = flywheel_model.pysd_model().dependencies
    namespace = flywheel_model.namespace
    for chain in [loops()[key]["chain"], *loops()[key].get("also", [])]:
        unknown = [name for name in chain if name not in namespace]
        assert not unknown, f"{key}: not model variables: {unknown}"
        py = [namespace[name] for name in chain]
        broken = [
            f"{chain[i - 1]} -> {chain[i]}"
            for i in range(len(py))
            if py[i - 1] not in _direct_dependencies(deps, py[i])
        ]
        assert not broken, f"{key}: not dependency edges: {broken}"


# -- sketch and views ------------------------------------------------------------------------
@pytest.mark.slow
def test_translates_without_warnings_into_one_module_per_view(tmp_path):
    import pysd

    copy = tmp_path / MODEL_FILE.name
    shutil.copy(MODEL_FILE, copy)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = pysd.read_vensim(str(copy), split_views=True, initialize=False)
    modules = json.loads(next(tmp_path.glob("modules_*/_modules.json")).read_text())
    assert set(modules) == VIEWS
    in_views = {v for names in modules.values() for v in names}
    control = {"time", "initial_time", "final_time", "time_step", "saveper"}
    outside = [p for p in model.doc["Py Name"] if p not in in_views and p not in control]
    assert not outside, f"variables in no view: {outside}"
    assert not list(REPO.joinpath("models").glob("*.py")), "translation wrote into models/"


def _load_script(name):
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while defining
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    return module


def test_sketch_is_generated_from_the_equations():
    """The committed sketch is what scripts/make_sketch.py makes of the equations."""
    sketch = _load_script("make_sketch")
    equations, committed = sketch.split_model(MODEL_FILE.read_text(encoding="utf-8"))
    assert committed.strip() == sketch.make_sketch(equations).strip(), (
        "sketch out of date: run python scripts/make_sketch.py"
    )


# -- invariants over whole runs --------------------------------------------------------------
def _runs(baseline, stress_runs):
    return {"baseline": baseline, **stress_runs}


@pytest.mark.slow
@pytest.mark.parametrize("run", ["baseline", *STRESS])
def test_buyer_chain_conserves_the_addressable_market(baseline, stress_runs, run):
    frame = _runs(baseline, stress_runs)[run]
    total = frame["Potential Buyers"] + frame["Active Buyers"] + frame["Members"]
    market = frame["Addressable Market"]
    # The flows cancel exactly in the sum; only rounding error may remain.
    np.testing.assert_allclose(total, market, rtol=1e-9, atol=1e-6)


@pytest.mark.slow
def test_the_online_market_grows_both_sides_at_its_rate(flywheel_model, monkeypatch):
    """With Online Market Growth Rate g, the buyer chain (Potential + Active + Members) and
    each seller class (Potential + Active) obey dS/dt = g S, since every other flow only
    moves people between those stocks: Euler at step dt gives exactly S0 (1 + g dt)^n."""
    monkeypatch.setenv("FLYWHEEL_SD_JIT", "eager")
    g = 0.01
    buyers = ["Potential Buyers", "Active Buyers", "Members"]
    sellers = [f"{s}[{q}]" for s in ("Potential Sellers", "Active Sellers") for q in QUALITY]
    frame = fw.simulate(
        flywheel_model,
        {"Online Market Growth Rate": g},
        method="euler",
        return_columns=buyers + sellers,
    )
    dt = flywheel_model.time_settings()["time_step"]
    steps = np.round(frame.index.to_numpy() / dt)
    growth = (1 + g * dt) ** steps
    market = float(flywheel_model.default_value("Addressable Market"))
    np.testing.assert_allclose(frame[buyers].sum(axis=1), market * growth, rtol=1e-9)
    pool = np.asarray(flywheel_model.default_value("Seller Pool"), dtype=float)
    for i, q in enumerate(QUALITY):
        total = frame[f"Potential Sellers[{q}]"] + frame[f"Active Sellers[{q}]"]
        np.testing.assert_allclose(total, pool[i] * growth, rtol=1e-9)


@pytest.mark.slow
@pytest.mark.parametrize("run", ["baseline", *STRESS])
def test_stocks_never_go_negative_and_trust_stays_in_0_1(
    flywheel_model, baseline, stress_runs, run
):
    frame = _runs(baseline, stress_runs)[run]
    stocks = [s for s in flywheel_model.stocks if s not in MAY_BE_NEGATIVE]
    columns = [c for c in frame.columns if c.split("[")[0] in stocks]
    assert len(columns) >= len(stocks)
    lowest = frame[columns].min()
    # Tolerance: the solver's absolute tolerance (1e-6) on stocks that decay toward zero.
    assert (lowest >= -1e-6).all(), lowest[lowest < -1e-6].to_dict()
    trust = frame["Buyer Trust"]
    assert trust.min() >= 0 and trust.max() <= 1
    for share in ("Low Quality Seller Share", "Platform Choice Share", "Seller Confidence"):
        assert frame[share].between(0, 1).all(), share


# -- documentation ---------------------------------------------------------------------------
@pytest.mark.slow
def test_model_docs_are_generated_from_the_model(flywheel_model):
    """docs/model.md's generated sections are what scripts/make_model_docs.py makes now."""
    docs = _load_script("make_model_docs")
    text = docs.DOC.read_text(encoding="utf-8")
    assert docs.apply(text, docs.render(flywheel_model)) == text, (
        "docs/model.md out of date: run python scripts/make_model_docs.py"
    )


def test_model_docs_show_every_loop_and_the_picture():
    text = (REPO / "docs" / "model.md").read_text(encoding="utf-8")
    for key, loop in loops().items():
        assert f"**{key} {loop['name']}**" in text
        assert " → ".join(loop["chain"]) in text
    assert "](img/platform_flywheel.png)" in text
    assert (REPO / "docs" / "img" / "platform_flywheel.png").stat().st_size > 10_000


@pytest.mark.slow
def test_cliffs_doc_is_what_the_scan_finds(tmp_path, monkeypatch):
    """docs/cliffs.md is scripts/find_cliffs.py's output for the current model (every line
    but the scan time), so the thresholds and rescues it states are the model's. The scan's
    ~700 runs use the Numba backend, as the script does."""
    monkeypatch.setenv("FLYWHEEL_SD_JIT", "eager")
    module = _load_script("find_cliffs")
    out = tmp_path / "cliffs.md"
    assert module.main(["--out", str(out)]) == 0

    def table(text: str) -> list[str]:
        return [line for line in text.splitlines() if not line.startswith("Scan time")]

    committed = REPO.joinpath("docs", "cliffs.md").read_text()
    assert table(out.read_text()) == table(committed), (
        "docs/cliffs.md out of date: run python scripts/find_cliffs.py"
    )
