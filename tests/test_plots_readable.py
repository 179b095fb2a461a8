"""Figures and printed tables a person reads without the code (issue 12): SI tick labels
and no offset text, units in words taken from the model, one legend per figure naming the
policy windows, a metrics chart whose legend covers no bar and leaves out the reference,
`flywheel describe` within the terminal's width, and the metrics table printed whole in
one number format."""

from __future__ import annotations

import re

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from conformance_mdl import vensim

import flywheel_sd as fw
from flywheel_sd.cli import main
from flywheel_sd.plotting import plot_comparison, plot_metrics
from flywheel_sd.scenarios import Policy, Scenario

# A platform in the millions: buyers grow logistically towards 20 million; GMV and cash
# in the hundreds of millions of dollars; trust a dimensionless fraction.
BIG = vensim(
    "Active Buyers = INTEG(Buyer Growth, 10000) ~ Buyer [0,?] ~ Buyers on the platform.",
    "Buyer Growth = Growth Rate * Active Buyers * (1 - Active Buyers / Market)"
    " + Ad Budget / Cost Per Buyer ~ Buyer/Month ~ Net growth.",
    "Growth Rate = 0.3 ~ 1/Month [0, 1] ~ Fractional growth rate.",
    "Market = 2e+07 ~ Buyer [1, 1e+09] ~ Market size.",
    "Ad Budget = 0 ~ USD/Month [0, 1e+08] ~ Advertising.",
    "Cost Per Buyer = 10 ~ USD/Buyer [1, 100] ~ Cost per acquired buyer.",
    "GMV = Active Buyers * 25 ~ USD/Month ~ Sales.",
    "Buyer Trust = 0.5 + 0.4 * Active Buyers / Market ~ Dmnl ~ Buyers' confidence.",
    "Platform Cash = INTEG(GMV * 0.1 - Ad Budget, 1e+06) ~ USD ~ Cash on hand.",
    final_time=60,
)

LONG_COMMENT = (
    "A lever whose comment goes on and on, as model authors' comments do, explaining "
    "what it means, where its value comes from, which cases it was fitted to and why "
    "anyone would want to change it in a policy experiment of their own"
)
LOOPS = """
[[loop]]
id = "R1"
name = "Word of mouth"
path = ["Active Buyers", "Buyer Growth", "Active Buyers", "Buyer Growth", "Active Buyers",
        "Buyer Growth", "Active Buyers", "Buyer Growth", "Active Buyers", "Buyer Growth"]
description = "More buyers bring more buyers."
"""


@pytest.fixture
def big(write_mdl):
    return write_mdl(BIG, "big.mdl")


@pytest.fixture
def comparison(big):
    base = Scenario("base", model=str(big))
    ads = base.derive("ads", "An ad push", **{"Ad Budget": Policy(2e7, 5, 15)})
    ds = fw.compare([base, ads], metrics=["final_active_buyers", "cumulative_gmv"])
    return ds


@pytest.fixture
def figure(comparison):
    fig = plot_comparison(comparison)
    fig.canvas.draw()
    yield fig
    plt.close(fig)


def _visible_axes(fig):
    return [ax for ax in fig.axes if ax.get_visible()]


def test_no_axis_shows_an_offset_text(figure):
    for ax in _visible_axes(figure):
        for axis in (ax.xaxis, ax.yaxis):
            assert axis.get_offset_text().get_text() == "", (ax.get_title(), "offset")


def test_tick_labels_use_si_suffixes_for_millions(figure):
    by_title = {ax.get_title(): ax for ax in _visible_axes(figure)}
    buyers = [t.get_text() for t in by_title["Active buyers"].get_yticklabels()]
    assert any(label.endswith("M") for label in buyers), buyers
    assert not any("e+" in label or "e7" in label for label in buyers), buyers
    gmv = [t.get_text() for t in by_title["GMV"].get_yticklabels()]
    assert any(label.startswith("$") and label.endswith("M") for label in gmv), gmv


def test_one_legend_per_figure_naming_the_policy_window(figure):
    assert len(figure.legends) == 1
    assert all(ax.get_legend() is None for ax in figure.axes)
    texts = [t.get_text() for t in figure.legends[0].get_texts()]
    assert "base" in texts and "ads" in texts
    windows = [t for t in texts if "Ad Budget" in t]
    assert len(windows) == 1, texts
    assert "5" in windows[0] and "15" in windows[0] and "(ads)" in windows[0]


def test_legend_sits_outside_the_panels(figure):
    box = figure.legends[0].get_window_extent()
    for ax in _visible_axes(figure):
        assert not box.overlaps(ax.get_window_extent()), ax.get_title()


def test_axis_labels_say_units_in_words_from_the_model(comparison):
    # The fallback units of the panels are nonsense: the model's own units must win.
    panels = [
        ("Active buyers", "Active Buyers", "Widget"),
        ("Buyer trust", "Buyer Trust", "Widget"),
        ("GMV", "GMV", "Widget"),
    ]
    fig = plot_comparison(comparison, panels=panels)
    labels = {ax.get_title(): ax.get_ylabel() for ax in _visible_axes(fig)}
    plt.close(fig)
    assert labels == {
        "Active buyers": "buyers",
        "Buyer trust": "fraction (0\N{EN DASH}1)",
        "GMV": "US$ / month",
    }


def test_no_vensim_jargon_in_axis_labels(figure):
    for ax in _visible_axes(figure):
        for label in (ax.get_xlabel(), ax.get_ylabel()):
            assert "Dmnl" not in label and "USD" not in label, label


def _ezbuy_like_table() -> pd.DataFrame:
    """A metrics table like ezbuy's: the reference named so that it does not sort first,
    bars that fill the axes from 0 down to -100%."""
    scenarios = ["zz_reference", "stagnation", "early", "late"]
    pct = {
        "cumulative_gmv": [0, -84.8, -73.9, -84.7],
        "final_active_buyers": [0, -99.9, -85.8, -99.9],
    }
    rows = []
    for i, scenario in enumerate(scenarios):
        for metric, changes in pct.items():
            rows.append((scenario, metric, 100 + changes[i], changes[i], changes[i], "USD"))
    return pd.DataFrame(
        rows, columns=["scenario", "metric", "value", "diff", "diff_pct", "units"]
    ).set_index(["scenario", "metric"])


def _legend(fig):
    legends = list(fig.legends) + [ax.get_legend() for ax in fig.axes if ax.get_legend()]
    assert len(legends) == 1, legends
    return legends[0]


def test_metrics_chart_legend_covers_no_bar():
    fig = plot_metrics(_ezbuy_like_table())
    fig.canvas.draw()
    box = _legend(fig).get_window_extent()
    bars = [patch for ax in fig.axes for patch in ax.patches if patch.get_width() != 0]
    assert bars
    for bar in bars:
        assert not box.overlaps(bar.get_window_extent()), bar
    plt.close(fig)


def test_metrics_chart_draws_the_others_and_leaves_out_the_reference():
    fig = plot_metrics(_ezbuy_like_table())
    fig.canvas.draw()
    ax = fig.axes[0]
    drawn = [c.get_label() for c in ax.containers]
    assert drawn == ["stagnation", "early", "late"]  # in the table's order, no reference
    texts = [t.get_text() for t in _legend(fig).get_texts()]
    assert "zz_reference" not in texts  # no entry that looks like a scenario with no bars
    assert [t.get_text() for t in ax.get_yticklabels()] == [
        "cumulative_gmv",
        "final_active_buyers",
    ]
    plt.close(fig)


def test_describe_fits_the_terminal_width(write_mdl, capsys, monkeypatch):
    model = write_mdl(
        vensim(
            "Active Buyers = INTEG(Buyer Growth, 10) ~ Buyer [0,?] ~ " + LONG_COMMENT + ".",
            "Buyer Growth = Growth Rate * Active Buyers ~ Buyer/Month ~ Net growth.",
            "Growth Rate = 0.02 ~ 1/Month [0, 1] ~ " + LONG_COMMENT + ".",
            "Cost per Member = 6 ~ USD/(Buyer*Month) [0, 100] ~ " + LONG_COMMENT + ".",
        ),
        "wordy.mdl",
    )
    model.with_name("wordy.loops.toml").write_text(LOOPS)
    for width in (60, 100):
        monkeypatch.setenv("COLUMNS", str(width))
        assert main(["describe", "--model", str(model)]) == 0
        out = capsys.readouterr().out
        lines = out.splitlines()
        assert max(len(line) for line in lines) <= width, [
            line for line in lines if len(line) > width
        ]
        flat = " ".join(out.split())
        assert "in a policy experiment of their own" in flat  # wrapped, not cut
        assert "..." not in out


def test_printed_metrics_table_shows_every_column(comparison):
    table = comparison.flywheel.metrics
    before = pd.get_option("display.max_columns"), pd.get_option("display.width")
    with pd.option_context("display.max_columns", 3, "display.width", 60):
        text = str(table)
        shown = repr(table)
    # ... and the user's pandas options are as they were.
    assert (pd.get_option("display.max_columns"), pd.get_option("display.width")) == before
    for column in ("value", "diff", "diff_pct", "units"):
        assert column in text and column in shown
    assert "..." not in text
    # Still a DataFrame with the raw numbers.
    assert isinstance(table, pd.DataFrame)
    assert table.loc[("base", "cumulative_gmv"), "diff"] == 0
    assert np.isfinite(table.loc[("ads", "cumulative_gmv"), "value"])


def test_printed_metrics_table_has_one_number_format(comparison):
    text = str(comparison.flywheel.metrics)
    assert "e+" not in text and "e-0" not in text, text
    final = comparison.flywheel.metrics.loc[("base", "final_active_buyers"), "value"]
    assert final > 1e6
    assert re.search(r"\b\d+(\.\d+)?M\b", text), text  # 19.99M, not 1.999e+07
    assert "%" in text  # the change in percent, signed


def test_number_format_examples():
    from flywheel_sd.metrics import format_number, format_percent

    assert format_number(13_256_757.28) == "13.26M"
    assert format_number(7913.2) == "7,913"
    assert format_number(29_000) == "29k"
    assert format_number(0.6758231) == "0.6758"
    assert format_number(-22_579_430) == "-22.58M"
    assert format_number(18_233_090_000) == "18.23B"
    assert format_number(float("nan")) == "-"
    assert format_number(-448_900_000, signed=True) == "-448.9M"
    assert format_number(1_200_000_000, 2, prefix="$") == "$1.2B"
    assert format_percent(-84.83) == "-84.8%"


def test_time_axis_and_windows_in_the_models_time_unit(write_mdl):
    model = write_mdl(
        vensim(
            "Active Buyers = INTEG(Buyer Growth, 10) ~ Buyer ~ Buyers.",
            "Buyer Growth = Growth Rate * Active Buyers ~ Buyer/Day ~ Growth.",
            "Growth Rate = 0.01 ~ 1/Day [0, 1] ~ Rate.",
            time_units="Day",
        ),
        "daily.mdl",
    )
    base = Scenario("base", model=str(model))
    ds = fw.compare([base, base.derive("push", **{"Growth Rate": Policy(0.05, 5, 15)})])
    # As `flywheel run` builds it: no units on the variables, the model named in attrs.
    for var in ds.data_vars:
        ds[var].attrs.pop("units", None)
    ds.attrs["model"] = str(model)
    fig = plot_comparison(ds, panels=[("Active buyers", "Active Buyers", "Widget")])
    ax = _visible_axes(fig)[0]
    assert ax.get_xlabel() == "time (days)"
    assert ax.get_ylabel() == "buyers"  # from the model file, not the panel's fallback
    texts = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "Growth Rate, days 5\N{EN DASH}15 (push)" in texts, texts
    plt.close(fig)


# -- printed tables and sensitivity charts ------------------------------------------------
def test_cli_tables_print_numbers_as_format_number():
    """`flywheel compare` and `flywheel run` tables: "18.23B" and "50k" beside "7,913",
    never "1.823e+10" or "5e+04"; NaN is "-" and infinity "inf" (as documented)."""
    from flywheel_sd.cli._common import fmt, print_table

    assert fmt(1.823e10) == "18.23B"
    assert fmt(5e4) == "50k"
    assert fmt(2.9e4) == "29k"
    assert fmt(7913.2) == "7,913"
    assert fmt(np.float64(-22_579_430.0)) == "-22.58M"
    assert fmt(float("nan")) == "-"
    assert fmt(float("inf")) == "inf"
    frame = pd.DataFrame({"initial": [5e4, 0.5], "final": [1.823e10, 2.9e4]}, index=["a", "b"])
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        print_table(frame)
    assert "e+" not in out.getvalue() and "18.23B" in out.getvalue(), out.getvalue()


def _overlaps_any(box, artists) -> list:
    return [a for a in artists if box.overlaps(a.get_window_extent())]


@pytest.fixture
def big_oat(big):
    """A one-at-a-time sweep of the big platform: cumulative GMV in the billions."""
    from flywheel_sd import designs

    model = fw.load(big)
    design = designs.oat(
        ["Growth Rate", "Cost Per Buyer", "Ad Budget"],
        model=model,
        base={"Growth Rate": 0.3, "Cost Per Buyer": 10, "Ad Budget": 1e6},
    )
    return fw.sweep(model, design, metrics=["cumulative_gmv"], method="euler", progress=False)


def test_tornado_chart_reads_without_the_code(big_oat):
    fig = fw.tornado_chart(big_oat, "cumulative_gmv")
    fig.draw_without_rendering()  # a bare Figure's canvas draws nothing
    ax = fig.axes[0]
    base = float(big_oat["cumulative_gmv"][0])
    assert base > 1e9
    assert ax.xaxis.get_offset_text().get_text() == ""  # no "1e10" beside the axis
    ticks = [t.get_text() for t in ax.get_xticklabels() if t.get_text()]
    assert all("e+" not in t and "e1" not in t for t in ticks), ticks
    assert any(t.startswith(("$", "-$")) and t.endswith("B") for t in ticks), ticks
    label = ax.get_xlabel().replace("\\$", "$")  # "\$": a dollar sign, not math mode
    assert "e+" not in label and "US$" in label, label
    from flywheel_sd.metrics import format_number

    assert format_number(base, prefix="$") in label, label  # the base run's value, readable
    assert "cumulative_gmv" in ax.get_title() and "Tornado:" not in ax.get_title()
    # The parameters' ranges in readable numbers with their units.
    ticklabels = [t.get_text().replace("\\$", "$") for t in ax.get_yticklabels()]
    assert any("US$ / month" in t for t in ticklabels), ticklabels
    assert not any("e+" in t for t in ticklabels), ticklabels
    legend = _legend(fig)
    assert not _overlaps_any(legend.get_window_extent(), ax.patches)
    plt.close(fig)


def test_fan_chart_reads_without_the_code(big):
    from flywheel_sd import designs

    model = fw.load(big)
    ds = fw.sweep(
        model,
        designs.lhs({"Growth Rate": (0.1, 0.4)}, 12, seed=0, model=model),
        outputs=["Active Buyers"],
        method="euler",
        progress=False,
    )
    fig = fw.fan_chart(ds, "Active Buyers")
    fig.draw_without_rendering()  # a bare Figure's canvas draws nothing
    ax = fig.axes[0]
    assert ax.yaxis.get_offset_text().get_text() == ""  # no "1e7"
    ticks = [t.get_text() for t in ax.get_yticklabels() if t.get_text()]
    assert any(t.endswith("M") for t in ticks) and not any("e+" in t for t in ticks), ticks
    assert ax.get_xlabel() == "time (months)"
    assert ax.get_ylabel() == "buyers"
    title = ax.get_title()
    assert "Active Buyers" in title and "12 runs" in title and "median" in title, title
    legend = _legend(fig)
    assert not legend.get_window_extent().overlaps(ax.get_window_extent())
    texts = [t.get_text() for t in legend.get_texts()]
    assert any("of runs" in t for t in texts), texts
    plt.close(fig)


def test_sobol_chart_has_a_title_and_its_legend_covers_no_bar(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    from flywheel_sd.cli.sweep import _plot_indices

    saved = []
    savefig = Figure.savefig

    def keep(self, *args, **kwargs):  # the figure `flywheel sensitivity --plot` writes
        saved.append(self)
        return savefig(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", keep)

    table = pd.DataFrame(
        {
            "S1": [0.62, 0.21, 0.02],
            "S1_conf": [0.3, 0.25, 0.2],
            "ST": [0.95, 0.55, 0.05],
            "ST_conf": [0.35, 0.3, 0.2],
        },
        index=pd.Index(["Seller Deposit", "Take Rate", "Qualification Strictness"]),
    )
    table.attrs.update(metric="cumulative_gmv", method="sobol", runs=512, conf_level=0.95)
    _plot_indices(table, "sobol", "cumulative_gmv", tmp_path / "sobol.png")
    (fig,) = saved
    fig.draw_without_rendering()  # a bare Figure's canvas draws nothing
    ax = fig.axes[0]
    title = ax.get_title() or (fig._suptitle.get_text() if fig._suptitle else "")
    assert "cumulative_gmv" in title and "Sobol" in title and "512 runs" in title, title
    legend = _legend(fig)
    box = legend.get_window_extent()
    assert not _overlaps_any(box, ax.patches)
    assert not box.overlaps(ax.get_window_extent())  # nor the error bars, inside the axes
    texts = [t.get_text() for t in legend.get_texts()] + [legend.get_title().get_text()]
    assert any("95%" in t for t in texts), texts  # says what the error bars are
    assert (tmp_path / "sobol.png").stat().st_size > 1000


def test_scenario_descriptions_are_whole_sentences(tmp_path, monkeypatch):
    """`describe()` (flywheel scenarios, the README's one line each) gives the first
    sentence, however many lines it spans in the file; never one cut mid-sentence."""
    folder = tmp_path / "mine"
    folder.mkdir()
    monkeypatch.setenv("FLYWHEEL_SD_SCENARIOS", str(folder))
    (folder / "long.toml").write_text(
        'name = "long"\ndescription = """A deposit of US$2,000, e.g. for new sellers, held\n'
        'from month 60 to 74 and then dropped. A second sentence."""\n'
    )
    described = fw.scenarios.describe()
    assert described["long"] == (
        "A deposit of US$2,000, e.g. for new sellers, held from month 60 to 74 and then dropped."
    )
    for name, text in described.items():
        assert text.endswith((".", "!", "?")), (name, text)  # the built-ins: whole too
    assert described["wish_deposit"].startswith("Wish's US$2,000 seller deposit")
    assert not described["wish_deposit"].endswith(", on")


def test_a_panel_set_of_ones_own_in_one_row_with_its_title(comparison):
    """Notebooks draw their own variables with plot_comparison: a title of their own, the
    panels in one row; the default title still names the scenarios."""
    panels = [
        ("Active buyers", "Active Buyers", "Buyer"),
        ("Buyer trust", "Buyer Trust", "Dmnl"),
        ("GMV", "GMV", "USD/Month"),
    ]
    fig = plot_comparison(comparison, panels=panels, ncols=3, title="What the push does")
    axes = _visible_axes(fig)
    assert fig._suptitle.get_text() == "What the push does"
    assert [ax.get_title() for ax in axes] == ["Active buyers", "Buyer trust", "GMV"]
    assert len({round(ax.get_position().y0, 3) for ax in axes}) == 1  # one row
    plt.close(fig)
    fig = plot_comparison(comparison, panels=panels)
    assert fig._suptitle.get_text() == "Scenarios compared: base, ads"  # not a panel's title
    plt.close(fig)


def test_separate_runs_plot_like_a_comparison(big):
    from flywheel_sd.plotting import plot_runs

    base = Scenario("base", model=str(big))
    push = base.derive("push", **{"Ad Budget": Policy(2e7, 5, 15)})
    runs = {"without ads": fw.run_scenario(base), "with a push": fw.run_scenario(push)}
    fig = plot_runs(runs, panels=[("Active buyers", "Active Buyers", "Widget")], title="Two runs")
    fig.canvas.draw()
    ax = _visible_axes(fig)[0]
    assert ax.get_ylabel() == "buyers"  # units from the model that ran them
    assert ax.get_xlabel() == "time (months)"
    texts = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "without ads" in texts and "with a push" in texts
    assert "Ad Budget, months 5\N{EN DASH}15 (with a push)" in texts, texts
    assert ax.yaxis.get_offset_text().get_text() == ""
    plt.close(fig)
    # A window every run shares is named once, not by listing every run; run names with a
    # dollar sign each stay text (two in one label would read as math).
    half = base.derive("half", **{"Ad Budget": Policy(1e7, 5, 15)})
    runs = {"US$20M push": runs["with a push"], "US$10M push": fw.run_scenario(half)}
    fig = plot_runs(runs, panels=[("Active buyers", "Active Buyers", "Buyer")])
    texts = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "Ad Budget, months 5\N{EN DASH}15 (every scenario)" in texts, texts
    assert "US$20M push" in texts
    plt.close(fig)
    from flywheel_sd.plotting import _literal

    assert _literal("a (US$1 push, US$2 push)") == r"a (US\$1 push, US\$2 push)"
    assert _literal("US$2,000 deposit") == "US$2,000 deposit"


def test_indices_chart_on_an_axes_keeps_its_legend_off_the_bars():
    from flywheel_sd.sweeps.sensitivity import indices_chart

    table = pd.DataFrame(
        {"mu_star": [3e9, 1e9], "mu_star_conf": [5e8, 3e8]}, index=["Take Rate", "Seller Deposit"]
    )
    table.attrs.update(metric="cumulative_gmv", method="morris", runs=60, conf_level=0.95)
    fig, ax = plt.subplots(figsize=(8, 3), layout="constrained")
    indices_chart(table, ax=ax)
    fig.canvas.draw()
    assert ax.xaxis.get_offset_text().get_text() == ""
    ticks = [t.get_text() for t in ax.get_xticklabels() if t.get_text()]
    assert any(t.startswith("$") and t.endswith("B") for t in ticks), ticks
    assert "Morris" in ax.get_title() and "cumulative_gmv" in ax.get_title()
    legend = _legend(fig)
    assert not legend.get_window_extent().overlaps(ax.get_window_extent())
    assert [t.get_text() for t in ax.get_yticklabels()] == ["Take Rate", "Seller Deposit"]
    plt.close(fig)


def test_cli_run_table_in_one_number_format_with_units_in_words(big, capsys):
    columns = ["Active Buyers", "Buyer Trust", "Platform Cash"]
    assert main(["run", "--model", str(big), "--quiet", "--columns", *columns]) == 0
    out = capsys.readouterr().out
    assert "e+" not in out and "Dmnl" not in out and "USD" not in out, out
    assert "fraction (0\N{EN DASH}1)" in out and "buyers" in out and "US$" in out, out
    assert re.search(r"\b\d+(\.\d+)?M\b", out), out  # 19.99M, not 1.999e+07
    assert main(["run", "--model", str(big), "--quiet", "--json", "--columns", *columns]) == 0
    assert '"units": "Dmnl"' in capsys.readouterr().out  # JSON keeps the model's units


def test_critical_mass_prints_a_bracket_whose_ends_read_apart():
    """Four significant digits would print a fine bracket as one number twice."""
    from flywheel_sd.cli.compare import _bracket_text

    shown = _bracket_text(
        {"threshold": 656_250.5, "decays_at": 656_250.0, "grows_at": 656_251.0, "runs": 20}
    )
    assert len({shown["threshold"], shown["decays_at"], shown["grows_at"]}) == 3, shown
    assert all("e+" not in shown[k] for k in ("threshold", "decays_at", "grows_at"))
    coarse = _bracket_text(
        {"threshold": 656_250.0, "decays_at": 625_000.0, "grows_at": 687_500.0, "runs": 6}
    )
    assert (coarse["decays_at"], coarse["grows_at"], coarse["runs"]) == ("625k", "687.5k", 6)


def test_units_already_plural_stay_so():
    """'people' is not 'peoples' (SIR-style models count people)."""
    from flywheel_sd.metrics import readable_units

    assert readable_units("people") == "people"
    assert readable_units("Person/Day") == "people / day"
    assert readable_units("Buyer") == "buyers"
