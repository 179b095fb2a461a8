"""Loop dominance across an ensemble (issue 14): `flywheel_sd.ltm.loop_dominance_ensemble`.

On logistic growth X' = r X - r X²/K (births and crowding, two loops), the reinforcing loop
dominates until X crosses K/2, at the inflection t*(r, K, X0) = ln((K - X0) / X0) / r, and
the balancing loop after it (tests/test_ltm.py proves this for one run). So over a design of
(r, K), the share of members in which the reinforcing loop dominates at time t must be the
share of members with t < t*, computed here from the closed form, independently of the
scores; LTM attributes the switch half a step late (tests/test_ltm.py), so members whose t*
lies within one step of t may fall either way.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from _shared import load_text
from conformance_mdl import vensim

import flywheel_sd as fw
from flywheel_sd.errors import FlywheelError
from flywheel_sd.ltm import loop_dominance, loop_dominance_ensemble

X0, DT = 10.0, 1 / 16
TIMES = np.arange(1.0, 20.0, 0.25)
TIGHT = {"method": "RK45", "rtol": 1e-10, "atol": 1e-10}


@pytest.fixture(scope="module")
def logistic(tmp_path_factory):
    return load_text(
        tmp_path_factory,
        "logistic.mdl",
        vensim(
            f"X = INTEG(Births - Crowding, {X0})",
            "Births = r * X",
            "Crowding = r * X * X / K",
            "r = 0.5 ~ 1/Month [0.1, 2]",
            "K = 1000 ~ units [100, 10000]",
            time_step=DT,
            saveper=DT,
        ),
    )


@pytest.fixture(scope="module")
def design():
    return fw.designs.lhs({"r": (0.3, 0.8), "K": (500, 2000)}, n=24, seed=14)


@pytest.fixture(scope="module")
def ensemble(logistic, design):
    return loop_dominance_ensemble(logistic, design, times=TIMES, keep_runs=True, **TIGHT)


def test_the_share_where_r_dominates_is_the_share_before_the_inflection(ensemble, design):
    # L1 is the births loop, L2 the crowding loop (tests/test_ltm.py)
    assert list(ensemble["loop_variables"].values) == ["X -> Births", "X -> Crowding"]
    assert list(ensemble["summary"].values) == ["reinforcing", "balancing"]
    r, k = design.table["r"].to_numpy(), design.table["K"].to_numpy()
    t_star = np.log((k - X0) / X0) / r
    assert t_star.min() < TIMES[-1] and t_star.max() > TIMES[0]  # the switch is in view
    share = ensemble["dominant_share"].sel(loop="L1").to_numpy()
    exact = 0
    for j, t in enumerate(ensemble["time"].to_numpy()):
        surely = np.mean(t_star > t + DT)  # R dominates these members at t
        maybe = np.mean(t_star > t - DT)  # ... and perhaps these (t* within a step of t)
        assert surely - 1e-12 <= share[j] <= maybe + 1e-12, t
        exact += math.isclose(share[j], np.mean(t < t_star))
    assert exact >= 0.9 * len(TIMES)  # the bracket is rarely needed
    # every member has one dominant loop at every scored time
    np.testing.assert_allclose(ensemble["dominant_share"].sum("loop"), 1.0)
    # one loop explains at least half: the dominant one (two loops, shares add up to 1)
    np.testing.assert_array_equal(ensemble["majority_share"], ensemble["dominant_share"])
    np.testing.assert_array_equal(ensemble["reinforcing_share"].sel(loop="L1"), 1.0)
    np.testing.assert_array_equal(ensemble["reinforcing_share"].sel(loop="L2"), 0.0)
    assert ensemble.attrs["n_runs"] == 24 and ensemble.attrs["n_failed"] == 0


def test_quantiles_are_ordered_and_are_the_runs_quantiles(ensemble):
    q = ensemble["relative_score_quantile"]
    assert list(q["quantile"].values) == [0.05, 0.25, 0.5, 0.75, 0.95]
    assert (q.diff("quantile") >= 0).all()
    np.testing.assert_allclose(
        q.sel(quantile=0.5), ensemble["relative_score"].median("run"), rtol=1e-12
    )
    # each member's R share is 1 / (1 + (X + X') / K): between 0 and 1
    assert float(q.sel(loop="L1").min()) >= 0 and float(q.sel(loop="L1").max()) <= 1


def test_one_member_is_the_single_run(logistic):
    one = loop_dominance_ensemble(logistic, {"r": [0.6], "K": [1500]}, keep_runs=True)
    run = loop_dominance(logistic, params={"r": 0.6, "K": 1500})
    np.testing.assert_array_equal(one["relative_score"].isel(run=0), run["relative_score"])
    np.testing.assert_array_equal(
        one["relative_score_quantile"].sel(quantile=0.05), run["relative_score"]
    )


def test_a_sweep_result_gives_its_runs(logistic, design, ensemble):
    result = fw.sweep(logistic, design, outputs=["X"], progress=False)
    again = loop_dominance_ensemble(logistic, result, times=TIMES, **TIGHT)
    np.testing.assert_array_equal(again["dominant_share"], ensemble["dominant_share"])
    np.testing.assert_allclose(
        again["relative_score_quantile"], ensemble["relative_score_quantile"], rtol=1e-12
    )
    # a sweep read back from netCDF keeps parameters whose names hold spaces as data
    # variables, not coordinates: they are found either way
    stored = loop_dominance_ensemble(
        logistic, result.reset_coords(["r", "K"]), times=TIMES, **TIGHT
    )
    np.testing.assert_array_equal(stored["dominant_share"], ensemble["dominant_share"])
    other = result.copy()
    other.attrs = {**result.attrs, "model_sha256": "0" * 64}
    with pytest.raises(FlywheelError, match="the sweep ran another model"):
        loop_dominance_ensemble(logistic, other)


@pytest.mark.parametrize(
    ("source", "kwargs", "message"),
    [
        ({"rr": [0.5]}, {}, "'rr'.*did you mean 'r'"),
        ({"r": [0.5]}, {"loops": ["R9"]}, "'R9' is not a loop of the index"),
        ({"r": [0.5]}, {"loops": [["X", "Birth"]]}, "'Birth' is not a variable.*Births"),
        ({"r": [0.5]}, {"times": [25.0]}, "times must lie within the run, 0 to 20, not 25"),
        ({"r": [0.5]}, {"quantiles": [1.5]}, "quantiles must lie in"),
        ({"r": [50.0]}, {}, r"r = 50 is outside its documented range \[0.1, 2\]"),
        ("lhs", {}, "expected a design"),
    ],
)
def test_bad_input_is_one_line(logistic, source, kwargs, message):
    with pytest.raises(FlywheelError, match=message) as err:
        loop_dominance_ensemble(logistic, source, **kwargs)
    assert "\n" not in str(err.value)


def test_a_dataset_that_is_not_a_sweep(logistic):
    import xarray as xr

    with pytest.raises(FlywheelError, match="not a flywheel_sd sweep result"):
        loop_dominance_ensemble(logistic, xr.Dataset())


def test_bundled_model_over_two_uncertain_constants(flywheel_model):
    design = fw.designs.lhs(
        {"Maximum Conversion Rate": (0.06, 0.18), "Referral Visits per Buyer": (1, 6)},
        n=4,
        seed=14,
    )
    ds = loop_dominance_ensemble(flywheel_model, design, times=[12, 36, 60])
    assert ds.attrs["discovery"] == "given"  # the loop index's loops, the same in each run
    assert list(ds["loop"].values[:2]) == ["R1", "R2"] and ds.sizes["loop"] == 11
    assert ds["time"].values.tolist() == [12, 36, 60]
    # one partition: exactly one loop dominates each run at each time
    np.testing.assert_allclose(ds["dominant_share"].sum("loop"), 1.0)
    assert (ds["majority_share"] <= ds["dominant_share"]).all()


# -- the dominant loops as a causal-loop diagram ---------------------------------------------
def diagram_parts(fig):
    """The figure's texts (node labels, signs, loop labels) and arrows (colour, width)."""
    from matplotlib.patches import FancyArrowPatch

    ax = fig.axes[0]
    texts = [t.get_text() for t in ax.texts]
    arrows = [p for p in ax.patches if isinstance(p, FancyArrowPatch)]
    return texts, arrows


@pytest.mark.parametrize(("at", "first"), [(4.0, "L1"), (14.0, "L2")])
def test_the_diagram_shows_the_dominant_loop_widest(logistic, tmp_path, at, first):
    import matplotlib.pyplot as plt

    from flywheel_sd.plotting import plot_dominant_loops

    ds = loop_dominance(logistic)
    rel = ds["relative_score"].sel(time=at)
    out = tmp_path / "cld.png"
    fig = plot_dominant_loops(ds, at, out)
    try:
        assert out.stat().st_size > 10_000
        texts, arrows = diagram_parts(fig)
        assert {"X", "Births", "Crowding"} <= set(texts)
        share = {k: abs(float(rel.sel(loop=k))) for k in ("L1", "L2")}
        assert f"L1\nR {share['L1']:.0%}" in texts and f"L2\nB {share['L2']:.0%}" in texts
        title = fig._suptitle.get_text()
        assert title.startswith(f"Dominant feedback loops at month {at:g}: shares of the change")
        assert title.index(first) < title.index({"L1": "L2", "L2": "L1"}[first])
        # the signs: X -> Births +, Births -> X +, X -> Crowding +, Crowding -> X - (an outflow)
        assert sorted(t for t in texts if t in ("+", "\N{MINUS SIGN}")) == [
            "+",
            "+",
            "+",
            "\N{MINUS SIGN}",
        ]
        # two arrows per loop, the dominant loop's wider
        widths = sorted({round(a.get_linewidth(), 6) for a in arrows})
        assert len(arrows) == 4 and len(widths) == 2
        legend = [t.get_text() for t in fig.legends[0].get_texts()]
        assert any(t.startswith("+ :") for t in legend)
        assert any(t.startswith("\N{MINUS SIGN} :") for t in legend)
        strong = max(share, key=share.__getitem__)
        assert strong == first
    finally:
        plt.close(fig)


def test_the_diagram_of_the_bundled_model_is_simplified(flywheel_model, tmp_path):
    import matplotlib.pyplot as plt

    from flywheel_sd.plotting import CLD_NODES, plot_dominant_loops

    ds = loop_dominance(flywheel_model, ["R1", "R2", "B1"])
    fig = plot_dominant_loops(ds, 12, tmp_path / "cld.png")
    try:
        texts, arrows = diagram_parts(fig)
        nodes = {t.replace("\n", " ") for t in texts if len(t) > 1 and "%" not in t}
        assert {"Active Buyers", "Active Sellers", "Potential Buyers"} <= nodes
        assert len(nodes) <= CLD_NODES
        dashed = [a for a in arrows if a.get_linestyle() != "-"]
        assert dashed  # R1's 24 variables do not all fit: some arrows pass variables left out
    finally:
        plt.close(fig)


def test_the_diagram_needs_link_scores_and_an_active_loop(logistic, ensemble):
    from flywheel_sd.plotting import plot_dominant_loops

    with pytest.raises(FlywheelError, match="needs the result of loop_dominance"):
        plot_dominant_loops(ensemble, 5.0)
    with pytest.raises(FlywheelError, match="no loop is active at t = 0"):
        plot_dominant_loops(loop_dominance(logistic), 0.0)


# -- flywheel loops --diagram, --sweep, --design ---------------------------------------------
INDEX = (
    '[R1]\nname = "Births"\npolarity = "reinforcing"\nchain = ["X", "Births"]\n'
    '[B1]\nname = "Crowding"\npolarity = "balancing"\nchain = ["X", "Crowding"]\n'
)
CLI_TIMES = [4.0, 8.0, 12.0, 16.0]


@pytest.fixture(scope="module")
def indexed(tmp_path_factory):
    """The logistic model with a loop index naming its loops R1 and B1."""
    folder = tmp_path_factory.mktemp("indexed")
    path = folder / "logistic.mdl"
    path.write_text(
        vensim(
            f"X = INTEG(Births - Crowding, {X0})",
            "Births = r * X",
            "Crowding = r * X * X / K",
            "r = 0.5 ~ 1/Month [0.1, 2]",
            "K = 1000 ~ units [100, 10000]",
            time_step=DT,
            saveper=DT,
        )
    )
    (folder / "logistic.loops.toml").write_text(INDEX)
    return path


def flywheel(capsys, *argv):
    from flywheel_sd.cli import main

    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_sweep_and_design_give_the_library_shares(indexed, tmp_path, capsys):
    design = fw.designs.lhs({"r": (0.3, 0.8), "K": (500, 2000)}, n=12, seed=3, model=None)
    expected = loop_dominance_ensemble(indexed, design, times=CLI_TIMES)
    assert list(expected["loop"].values) == ["R1", "B1"]  # the index's loops
    argv = ["loops", "--model", indexed, "--times", *CLI_TIMES, "--json"]
    code, out, _ = flywheel(
        capsys, *argv, "--sweep", 12, "--param", "r=0.3:0.8", "--param", "K=500:2000", "--seed", 3
    )
    assert code == 0
    data = json.loads(out)["ensemble"]
    assert data["runs"] == 12 and data["times"] == CLI_TIMES
    for k in ("R1", "B1"):
        np.testing.assert_allclose(
            data["loops"][k]["dominant_share"], expected["dominant_share"].sel(loop=k)
        )
    table = tmp_path / "runs.csv"
    design.table.to_csv(table, index=False)
    code, out, _ = flywheel(capsys, *argv, "--design", table)
    assert code == 0
    again = json.loads(out)["ensemble"]  # the same runs (to the CSV's 17 digits)
    for k in ("R1", "B1"):
        assert again["loops"][k]["dominant_share"] == data["loops"][k]["dominant_share"]
        for q, values in data["loops"][k]["quantiles"].items():
            np.testing.assert_allclose(again["loops"][k]["quantiles"][q], values, rtol=1e-9)
    # the text table: one row per loop, one column per time
    code, out, _ = flywheel(
        capsys, "loops", "--model", indexed, "--design", table, "--times", 4, 16
    )
    assert code == 0
    assert "share of 12 runs (over r, K) in which each loop dominates" in out
    row = next(line for line in out.splitlines() if line.startswith("R1 "))
    share = expected["dominant_share"].sel(loop="R1", time=4.0)
    assert f"{float(share):.0%}" in row


def test_cli_diagram(indexed, tmp_path, capsys):
    out = tmp_path / "cld.png"
    code, text, _ = flywheel(capsys, "loops", "--model", indexed, "--at", 5, "--diagram", out)
    assert code == 0 and out.stat().st_size > 10_000
    assert f"wrote {out}" in text


BAD_CLI = {
    "--diagram without --at": (["--diagram", "{tmp}/x.png"], "--diagram needs --at T"),
    "--diagram at t = 0": (["--diagram", "{tmp}/x.png", "--at", "0"], "no loop is active"),
    "--sweep without --param": (["--sweep", "4"], "--sweep needs the uncertain constants"),
    "--param without --sweep": (["--param", "r"], "--param is for an ensemble"),
    "--times without an ensemble": (["--times", "3"], "--times is for an ensemble"),
    "--sweep and --design": (["--sweep", "4", "--design", "{tmp}/d.csv"], "not both"),
    "unknown --param": (["--sweep", "4", "--param", "rr"], "did you mean 'r'"),
    "--param out of range": (["--sweep", "4", "--param", "r=0:5"], "documented range"),
    "--times outside": (["--sweep", "4", "--param", "r", "--times", "30"], "outside the run"),
    "missing --design": (["--design", "{tmp}/none.csv"], "no such file"),
    "--design of another kind": (["--design", "{tmp}/d.txt"], "expected a .csv table"),
    "--design not a sweep": (["--design", "{tmp}/empty.nc"], "not a flywheel_sd sweep result"),
}


@pytest.mark.parametrize(("extra", "match"), list(BAD_CLI.values()), ids=list(BAD_CLI))
def test_cli_bad_input_exits_2_in_one_line(indexed, tmp_path, capsys, extra, match):
    import xarray as xr

    (tmp_path / "d.csv").write_text("r\n0.5\n")
    (tmp_path / "d.txt").write_text("r\n0.5\n")
    xr.Dataset({"a": ("x", [1.0])}).to_netcdf(tmp_path / "empty.nc")
    argv = [a.format(tmp=tmp_path) for a in extra]
    code, _, err = flywheel(capsys, "loops", "--model", indexed, *argv)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert lines[0].startswith("flywheel: error: ") and match in lines[0]


def test_the_diagram_of_a_one_variable_loop(tmp_path_factory):
    """P = INTEG(r P (1 - P/K)): one loop, P -> P, reinforcing before the inflection and
    balancing after it; drawn as an arrow out of P and back, with the link's sign."""
    import matplotlib.pyplot as plt

    from flywheel_sd.plotting import plot_dominant_loops

    model = load_text(
        tmp_path_factory,
        "inline.mdl",
        vensim(
            f"P = INTEG(r * P * (1 - P / K), {X0})",
            "r = 0.5",
            "K = 1000",
            time_step=DT,
            saveper=DT,
        ),
    )
    ds = loop_dominance(model)
    for at, letter, sign in ((5.0, "R", "+"), (15.0, "B", "\N{MINUS SIGN}")):
        fig = plot_dominant_loops(ds, at)
        try:
            texts, arrows = diagram_parts(fig)
            assert "P" in texts and f"L1\n{letter} 100%" in texts and sign in texts
            assert len(arrows) == 1
        finally:
            plt.close(fig)


def test_fw_loops_of_a_sweep_result_or_a_design_is_the_ensemble(logistic, design, ensemble):
    """`flywheel_sd.loops` over a sweep result (model read from it) or a model and a design:
    the same per-loop distribution and dominant shares as `loop_dominance_ensemble`."""
    import xarray as xr

    result = fw.sweep(logistic, design, outputs=["X"], progress=False)
    for got in (
        fw.loops(result, times=TIMES, **TIGHT),
        fw.loops(logistic, design, times=TIMES, **TIGHT),
        fw.loops(logistic, ensemble=design, times=TIMES, **TIGHT),
    ):
        np.testing.assert_array_equal(got["dominant_share"], ensemble["dominant_share"])
        np.testing.assert_allclose(
            got["relative_score_quantile"], ensemble["relative_score_quantile"], rtol=1e-12
        )
    with pytest.raises(FlywheelError, match="a design needs the model it varies") as err:
        fw.loops(design)
    assert "\n" not in str(err.value)
    with pytest.raises(FlywheelError, match="not a flywheel_sd sweep result"):
        fw.loops(xr.Dataset())
    with pytest.raises(FlywheelError, match="pass a sweep result alone"):
        fw.loops(result, design)
