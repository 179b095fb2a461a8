"""The what-if explorer: move a lever, see the flywheel answer (issue 15).

``fw.explore("wish_deposit")`` returns a Panel (HoloViz) layout: a slider for every lever
(its documented range and unit, grouped by the model's sectors; a subscripted constant has
one per element, ``Name[elem]``), a policy window where the model switches the lever with
window constants, a scenario picker, live Bokeh plots of the headline outputs with the
reference scenario as a ghost line, the scenarios picked to compare overlaid as labelled
lines, and the policy windows shaded and labelled, the metrics table and its change from
the reference, which loop dominates at a chosen time (Loops That Matter, `flywheel_sd.ltm`),
"Save as scenario" and "Download CSV". ``flywheel explore`` serves it in the browser.

Panel is an optional dependency (``pip install "flywheel_sd[explore]"``); importing
flywheel_sd never imports it.

Latency: a slider reports its value when it is released (``value_throttled``), and every
request only bumps a counter; the run that follows reads the widgets as they are then, so
requests that pile up while a run is going are answered by one run with the newest values
and no stale run is ever queued (`Explorer.stats` counts the skipped ones). Runs go through
`flywheel_sd.simulate` on the compiled engine, whose Numba code is loaded when the explorer
starts. The figure goes out first; the metrics table follows (`METRICS_DELAY`), and then the
loop analysis, which costs more than the run and the figure together: in a served app it
runs on one worker thread and its result is posted back to the session, and an analysis
overtaken by a newer run is skipped or not shown.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import re
import sys
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import FlywheelError, ParameterError

if TYPE_CHECKING:
    import pandas as pd

    from .engine.model import Model
    from .scenarios import Scenario

__all__ = ["Explorer", "Lever", "explore", "levers"]

INSTALL_HINT = 'the explorer needs Panel: pip install "flywheel_sd[explore]"'

#: The curve of the explored run and the ghost of the reference run.
CURRENT_COLOR = "#1f77b4"
GHOST_COLOR = "#8c8c8c"
WINDOW_COLORS = ("#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2")
#: The lines of the scenarios compared with the explored run (at most this many at once).
COMPARE_COLORS = ("#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf")
#: Milliseconds between a served figure update and the metrics table's: the event loop
#: sends the figure to the browser first (the table takes tens of milliseconds to compute).
METRICS_DELAY = 30
#: Most policy windows shaded at once (each figure keeps this many shades to reuse).
MAX_WINDOWS = 6
#: The loops drawn one by one in the loop-dominance chart (the rest are summed as "other").
LOOP_BANDS = 5
LOOP_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#c7c7c7")

# SI tick labels in the browser, as plotting.SIFormatter draws them in matplotlib figures.
_SI_TICKS_JS = """
const a = Math.abs(tick);
const sign = tick < 0 ? "-" : "";
const units = [[1e12, "T"], [1e9, "B"], [1e6, "M"], [1e3, "k"]];
for (const [scale, letter] of units) {
  if (a >= scale) {
    return sign + prefix + parseFloat((a / scale).toPrecision(3)).toString() + letter;
  }
}
return sign + prefix + parseFloat(a.toPrecision(3)).toString();
"""


def _panel():
    """The `panel` module, or a one-line error naming the extra that brings it."""
    try:
        import panel
    except ImportError:
        raise FlywheelError(INSTALL_HINT) from None
    return panel


def _label(pn, text: str) -> dict[str, str]:
    """A widget's label keyword: ``label`` from Panel 1.8 on (``name`` is deprecated
    there), ``name`` before."""
    return {"label": text} if "label" in pn.widgets.Select.param else {"name": text}


def _primary(pn) -> dict[str, str]:
    """A primary button's keyword: ``color`` from Panel 1.8 on, ``button_type`` before."""
    return (
        {"color": "primary"} if "color" in pn.widgets.Button.param else {"button_type": "primary"}
    )


# -- levers ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Lever:
    """A constant of the model as the explorer offers it."""

    name: str
    sector: str
    units: str
    description: str
    default: float
    low: float  # the documented range, NaN where open
    high: float
    start: str | None = None  # the constants that hold its policy window (policy_companions)
    end: str | None = None
    window_defaults: tuple[float, float] = (math.nan, math.nan)  # their model values
    constant: str = ""  # an element of a subscripted constant: that constant ("" if scalar)
    element: tuple[str, ...] = ()  # and its subscript elements, one per dimension

    @property
    def base(self) -> str:
        """The model constant this lever sets (its name, or the subscripted constant's)."""
        return self.constant or self.name

    @property
    def bounds(self) -> tuple[float, float]:
        """The slider's ends: the documented range, or a span around the default where the
        model documents none."""
        low, high = self.low, self.high
        if math.isnan(low):
            low = 0.0 if self.default >= 0 else 2 * self.default
        if math.isnan(high):
            high = max(2 * abs(self.default), low + 1.0)
        return low, high

    @property
    def step(self) -> float:
        low, high = self.bounds
        span = high - low
        if not span > 0:
            return 1.0
        return float(10 ** math.floor(math.log10(span / 200)))

    def check(self, value: float) -> tuple[float, str]:
        """`value` clamped to the documented range, and a message saying so ("" when it
        was in range)."""
        if not math.isfinite(value):
            return self.default, f"{self.name}: {value!r} is not a finite number; reset"
        from .metrics import format_number

        for bound, outside, word in (
            (self.low, value < self.low, "below"),
            (self.high, value > self.high, "above"),
        ):
            if not math.isnan(bound) and outside:
                low, high = (format_number(v) for v in (self.low, self.high))
                return bound, (
                    f"{self.name}: {format_number(value)} is {word} its documented range "
                    f"[{low}, {high}]{_unit_suffix(self.units)}; set to {format_number(bound)}"
                )
        return value, ""


def _unit_suffix(units: str) -> str:
    from .metrics import readable_units

    words = readable_units(units)
    return f" {words}" if words else ""


def sectors(model: Model) -> dict[str, str]:
    """Vensim name -> the group (sector) its equation is in, for a Vensim model file
    (``.Buyers``, ``.Sellers`` ...), in the order of the file; empty for other formats."""
    path = Path(model.path)
    if path.suffix.lower() != ".mdl":
        return {}
    text = path.read_text(encoding="utf-8", errors="replace")
    headers = [
        (m.start(), m.group(1).strip())
        for m in re.finditer(r"\*{3,}\s*\n\s*\.([^\n]+?)\s*\n\s*\*{3,}", text)
    ]
    found: list[tuple[int, str, str]] = []
    for name in model.namespace:
        pattern = r"^[ \t]*" + r"[ _]+".join(map(re.escape, name.split())) + r"[ \t]*[\[=(]"
        m = re.search(pattern, text, flags=re.MULTILINE | re.IGNORECASE)
        if m is None:
            continue
        group = [g for pos, g in headers if pos < m.start()]
        if group:
            found.append((m.start(), name, group[-1]))
    return {name: group for _, name, group in sorted(found)}


_LEVERS: dict[tuple[str, int], list[Lever]] = {}
_REFERENCES: dict[tuple, pd.DataFrame] = {}  # reference runs by model file and scenario


def levers(model: Model) -> list[Lever]:
    """`_levers` of `model`, read once per model file version (every browser session of
    ``flywheel explore`` asks)."""
    path = Path(model.path)
    key = (str(path), path.stat().st_mtime_ns)
    if key not in _LEVERS:
        _LEVERS[key] = _levers(model)
    return list(_LEVERS[key])


def element_name(constant: str, element: tuple[str, ...]) -> str:
    """``Name[elem]`` (``Name[a,b]`` for two dimensions), as the runs' columns name them."""
    return f"{constant}[{','.join(element)}]"


def _levers(model: Model) -> list[Lever]:
    """The model's constants as levers: documented range, units, description and sector;
    the constants that hold a lever's policy window (`policy_companions`) belong to that
    lever and are not levers of their own. A subscripted constant gives a lever per element
    (``Name[elem]``), each with the constant's documented range and unit."""
    import numpy as np
    import xarray as xr

    from .scenarios import policy_companions

    doc = model.doc.set_index("Real Name")

    def text(name: str, column: str) -> str:
        value = doc.at[name, column] if column in doc.columns and name in doc.index else ""
        return " ".join(value.split()) if isinstance(value, str) else ""

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pysd_model = model.pysd_model()
        pysd_model.initialize()
    defaults: dict[str, float] = {}
    arrays: dict[str, xr.DataArray] = {}
    for name in model.constants:
        try:
            value = getattr(pysd_model.components, model.namespace[name])()
        except Exception:  # noqa: BLE001, S112 - a constant that needs data files: no slider
            continue
        if isinstance(value, (int, float, np.number)) and math.isfinite(float(value)):
            defaults[name] = float(value)
        elif (
            isinstance(value, xr.DataArray)
            and value.ndim >= 1
            and np.issubdtype(value.dtype, np.number)
            and bool(np.all(np.isfinite(value.values)))
        ):
            arrays[name] = value
    of_sector = sectors(model)
    found = []
    claimed: set[str] = set()
    for name in model.constants:
        if name in arrays:
            found += _element_levers(model, name, arrays[name], of_sector.get(name, "Levers"))
            continue
        if name not in defaults:
            continue
        start, end = policy_companions(model, name)
        start = start if start in defaults and start not in claimed else None
        end = end if end in defaults and end not in claimed else None
        claimed.update(n for n in (start, end) if n)
        low, high = model.ranges.get(name, (math.nan, math.nan))
        found.append(
            Lever(
                name=name,
                sector=of_sector.get(name, "Levers"),
                units=text(name, "Units"),
                description=text(name, "Comment"),
                default=defaults[name],
                low=float(low),
                high=float(high),
                start=start,
                end=end,
                window_defaults=(
                    defaults[start] if start else math.nan,
                    defaults[end] if end else math.nan,
                ),
            )
        )
    order = {name: k for k, name in enumerate(of_sector)}  # the file's order
    found.sort(key=lambda lever: order.get(lever.base, len(order)))
    return [lever for lever in found if lever.name not in claimed]


def _element_levers(model: Model, name: str, value, sector: str) -> list[Lever]:
    """A lever per element of the subscripted constant `name` (model value `value`), in
    the order of its subscript ranges' elements."""
    import itertools

    doc = model.doc.set_index("Real Name")

    def text(column: str) -> str:
        cell = doc.at[name, column] if column in doc.columns and name in doc.index else ""
        cell = cell.iloc[0] if hasattr(cell, "iloc") else cell
        return " ".join(cell.split()) if isinstance(cell, str) else ""

    low, high = model.ranges.get(name, (math.nan, math.nan))
    coords = [[str(e) for e in value.coords[d].values] for d in value.dims]
    out = []
    for element in itertools.product(*coords):
        default = float(value.sel(dict(zip(value.dims, element))).values)
        out.append(
            Lever(
                name=element_name(name, element),
                sector=sector,
                units=text("Units"),
                description=text("Comment"),
                default=default,
                low=float(low),
                high=float(high),
                constant=name,
                element=tuple(element),
            )
        )
    return out


# -- the app -----------------------------------------------------------------------------
def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return text if isinstance(err, FlywheelError) else f"{type(err).__name__}: {text}"


def _warm(model: Model, params: Mapping | None = None) -> None:
    """Load the model's Numba code now, so that the first slider move runs compiled."""
    try:
        from .engine import NotCompilable
    except ImportError:
        return
    from .engine.simulate import simulate

    try:
        if os.environ.get("FLYWHEEL_SD_JIT", "auto") != "off":  # off: plain Python
            model.compiled(dict(params or {})).module("numba")
    except (NotCompilable, ImportError):
        pass  # PySD path, or no Numba: runs work, only slower
    except Exception:  # noqa: BLE001, S110 - warming is an optimisation; a run reports errors
        pass
    # The first call loads the compiled functions; the explorer's own run shows any error.
    with contextlib.suppress(Exception):
        simulate(model, dict(params or {}))


def _scenario(name: str | Scenario | None, model_path: Path | None) -> Scenario:
    """The scenario `name` (built-in, the user's, or a .toml file), moved onto the model
    file `model_path` if given; None: baseline, or that model's own parameters."""
    from . import scenarios
    from .scenarios import Scenario

    if isinstance(name, Scenario):
        sc = name
    elif name is None or (model_path is not None and name == model_path.stem):
        if model_path is None:
            return scenarios.get("baseline")
        return Scenario(model_path.stem, "the model's own parameters", model=str(model_path))
    elif model_path is None:
        return scenarios.get(name)
    elif str(name).endswith(".toml") or Path(name).is_file():
        sc = scenarios.load_file(name, validate=False)
    else:
        files = scenarios._files()
        if name not in files:
            scenarios.get(name)  # raises, listing the valid names
        sc = scenarios.load_file(files[name], validate=False)
    if model_path is not None:
        sc = replace(sc, model=str(model_path))
    sc.validate()
    return sc


def _scenario_folder() -> Path:
    """Where "Save as scenario" writes: the first $FLYWHEEL_SD_SCENARIOS folder (so the
    picker lists the saved scenario), else the current directory."""
    folders = [p for p in os.environ.get("FLYWHEEL_SD_SCENARIOS", "").split(os.pathsep) if p]
    return Path(folders[0]) if folders else Path.cwd()


class Explorer:
    """The explorer's state, widgets and callbacks; `layout` is the Panel object to show.

    Parameters
    ----------
    scenario : str, Scenario or None
        The scenario to start from (default: baseline, or the ``model`` file's own
        parameters).
    model : path, optional
        A model file: the levers come from its constants and documented ranges.
    reference : str, optional
        The scenario drawn as the ghost line (default: baseline, or the model's own
        parameters).
    compare : sequence of str, optional
        Scenarios overlaid from the start (the "Compare with" picker; at most six).
    loops : bool
        Whether the loop panel analyses each run (its check box; default True).
    """

    def __init__(
        self,
        scenario: str | Scenario | None = None,
        *,
        model: str | os.PathLike | None = None,
        reference: str | None = None,
        compare: Sequence[str] = (),
        loops: bool = True,
    ):
        pn = _panel()
        from . import scenarios
        from .engine.model import load
        from .plotting import PANELS, model_units, time_units

        self._pn = pn
        self.model_path = Path(model).expanduser().resolve() if model is not None else None
        if self.model_path is not None and not self.model_path.is_file():
            raise ParameterError(f"{model}: no such model file")
        self.scenario = _scenario(scenario, self.model_path)
        self.model = load(self.scenario.model)
        times = self.model.time_settings()
        self.t0, self.t1 = float(times["initial_time"]), float(times["final_time"])
        self.levers = {lever.name: lever for lever in levers(self.model)}
        self._elements: dict[str, list[str]] = {}  # subscripted constant -> element levers
        for lever in self.levers.values():
            if lever.constant:
                self._elements.setdefault(lever.constant, []).append(lever.name)
        self.panels = [p for p in PANELS if p[1] in self.model.namespace]
        import xarray as xr

        self._units = model_units(xr.Dataset(attrs={"model": str(self.model.path)}))
        self._time_unit = time_units(self._units)
        self.stats = {"requests": 0, "runs": 0, "skipped": 0, "failed": 0}
        self.last_run_seconds = math.nan
        self.last_metrics_seconds = math.nan
        self.drawn_at = math.nan
        self.current: pd.DataFrame | None = None  # the last good run
        self.reference_run: pd.DataFrame | None = None
        self.compared_runs: dict[str, pd.DataFrame] = {}  # name -> run, as overlaid
        self._runs: dict[str, tuple] = {}  # scenario name -> (file stamps, file, its run)
        self._requested = 0
        self._done = 0
        self._scheduled = False
        self._kept: dict[str, Any] = {}  # overrides no widget edits (series, subscripts)
        self._defaults: dict[str, float] = {
            name: value
            for lever in self.levers.values()
            for name, value in zip((lever.start, lever.end), lever.window_defaults)
            if name
        }
        doc = pn.state.curdoc
        self._doc = doc if doc is not None and doc.session_context is not None else None

        self._build_widgets(scenarios.list())
        self._build_figures()
        self.loops_switch.value = loops
        self._apply_scenario(self.scenario)
        default_reference = "baseline" if self.model_path is None else self.model_path.stem
        if reference is not None:  # an unknown name: the error lists the valid ones
            reference = _scenario(reference, self.model_path).name
            if reference not in self.reference_select.options:
                self.reference_select.options = [*self.reference_select.options, reference]
        self.reference_select.value = reference or default_reference
        if isinstance(compare, str):
            compare = [compare]
        if len(compare) > len(COMPARE_COLORS):
            raise ParameterError(f"compare: at most {len(COMPARE_COLORS)} scenarios at once")
        chosen = [_scenario(name, self.model_path).name for name in compare]
        extra = [name for name in chosen if name not in self.compare_select.options]
        self.compare_select.options = [*self.compare_select.options, *extra]
        self.compare_select.value = chosen
        self.reference_select.param.watch(lambda _e: self.request_run(), "value")
        self.compare_select.param.watch(lambda _e: self.request_run(), "value")
        self.scenario_select.param.watch(self._on_scenario, "value")
        windows = self._events(self._params())
        self.loop_time.value = self._clip(windows[0][2]) if windows else self.t1
        _warm(self.model, self._params())
        self.request_run()

    # -- widgets ---------------------------------------------------------------------
    def _build_widgets(self, names: list[str]) -> None:
        pn = self._pn
        from .metrics import readable_units

        options = list(names)
        own = self.model_path.stem if self.model_path is not None else None
        if own is not None and own not in options:
            options.insert(0, own)
        if self.scenario.name not in options:
            options.insert(0, self.scenario.name)
        self.scenario_select = pn.widgets.Select(
            **_label(pn, "Scenario"), options=options, value=self.scenario.name, width=220
        )
        self.reference_select = pn.widgets.Select(
            **_label(pn, "Ghost line (reference)"), options=list(options), width=220
        )
        self.compare_select = pn.widgets.MultiChoice(
            **_label(pn, "Compare with (overlaid)"),
            options=list(options),
            value=[],
            max_items=len(COMPARE_COLORS),
            placeholder="scenarios to overlay",
            width=300,
        )
        self.message = pn.pane.Alert("", alert_type="warning", visible=False, margin=(5, 10))
        self.status = pn.pane.Markdown("", margin=(0, 10), styles={"color": "#555"})
        self.widgets: dict[str, Any] = {}
        self.windows: dict[str, Any] = {}
        by_sector: dict[str, list] = {}
        unit_one, unit_many = self._time_unit
        for lever in self.levers.values():
            low, high = lever.bounds
            words = readable_units(lever.units, lever.name)
            widget = pn.widgets.EditableFloatSlider(
                **_label(pn, f"{lever.name} ({words})" if words else lever.name),
                start=low,
                end=high,
                step=lever.step,
                format="0,0.[0000]",
                value=min(max(lever.default, low), high),
                sizing_mode="stretch_width",
            )
            widget.param.watch(lambda e, n=lever.name: self._on_lever(n, e.new), "value_throttled")
            self.widgets[lever.name] = widget
            cards: list = [widget]
            if lever.description:  # the model's documentation of the lever, on hover
                tip = pn.widgets.TooltipIcon(value=lever.description, margin=(12, 0, 0, 0))
                cards = [pn.Row(widget, tip, sizing_mode="stretch_width")]
            if lever.start or lever.end:
                window = self._window_widget(lever, unit_many or unit_one)
                window.param.watch(lambda _e: self.request_run(), "value_throttled")
                self.windows[lever.name] = window
                cards.append(window)
            by_sector.setdefault(lever.sector, []).extend(cards)
        self.sectors = list(by_sector)
        self.accordion = pn.Accordion(
            *[
                (sector, pn.Column(*items, sizing_mode="stretch_width"))
                for sector, items in by_sector.items()
            ],
            active=[0] if by_sector else [],
            sizing_mode="stretch_width",
        )
        self.save_name = pn.widgets.TextInput(**_label(pn, "Scenario name"), width=170)
        self.save_folder = pn.widgets.TextInput(
            **_label(pn, "Folder"), value=str(_scenario_folder()), width=170
        )
        self.save_button = pn.widgets.Button(
            **_label(pn, "Save as scenario"), **_primary(pn), width=170
        )
        self.save_button.on_click(lambda _e: self._save_clicked())
        self.download = pn.widgets.FileDownload(
            callback=self._csv_file,
            filename="flywheel_explore.csv",
            label="Download CSV",
            width=170,
        )

    def _window_widget(self, lever: Lever, unit: str):
        """The policy window of `lever`: start and end when the model holds both, else the
        one constant it holds."""
        pn = self._pn
        label = f"{lever.name}: policy window" + (f" ({unit})" if unit else "")
        if lever.start and lever.end:
            return pn.widgets.RangeSlider(
                **_label(pn, label),
                start=self.t0,
                end=self.t1,
                step=1.0,
                value=(self.t0, self.t1),
                sizing_mode="stretch_width",
            )
        which = "starts" if lever.start else "ends"
        return pn.widgets.FloatSlider(
            **_label(pn, f"{lever.name}: policy {which} at" + (f" ({unit})" if unit else "")),
            start=self.t0,
            end=self.t1,
            step=1.0,
            value=self.t1 if lever.start else self.t0,
            sizing_mode="stretch_width",
        )

    # -- figures ---------------------------------------------------------------------
    def _build_figures(self) -> None:
        import xarray as xr
        from bokeh.layouts import gridplot
        from bokeh.models import ColumnDataSource, CustomJSTickFormatter, LabelSet
        from bokeh.plotting import figure

        from .metrics import readable_units
        from .plotting import is_money, units_of

        empty: dict[str, list] = {"time": []}
        for i in range(len(self.panels)):
            empty[f"cur_{i}"] = []
            empty[f"ref_{i}"] = []
        self.source = ColumnDataSource(data=empty, name="explorer-data")
        # one row per compared scenario: its times, its values in each panel, name, colour
        self.compare_source = ColumnDataSource(
            data={
                "xs": [],
                "name": [],
                "color": [],
                **{f"ys_{i}": [] for i in range(len(self.panels))},
            },
            name="explorer-compared",
        )
        self.figures = []
        self.window_source = ColumnDataSource(
            data={k: [] for k in ("left", "right", "label", "short", "color", "y")},
            name="explorer-windows",
        )
        ds = xr.Dataset()
        x_range = None
        unit = self._time_unit[1]
        for i, (title, variable, fallback) in enumerate(self.panels):
            units = units_of(ds, variable, fallback, self._units)
            options: dict[str, Any] = {"x_range": x_range} if x_range is not None else {}
            fig = figure(
                title=title,
                height=230,
                width=310,
                tools="pan,box_zoom,reset,save",
                toolbar_location=None,
                x_axis_label=f"time ({unit})" if unit else "time",
                y_axis_label=readable_units(units, f"{variable} {title}"),
                name=f"panel:{variable}",
                **options,
            )
            x_range = fig.x_range
            # the policy windows: data, so that moving one changes a source, not the
            # document's models (which would make Bokeh walk its whole model graph)
            fig.vstrip(
                x0="left",
                x1="right",
                source=self.window_source,
                fill_color="color",
                fill_alpha=0.13,
                line_alpha=0,
            )
            fig.add_layout(
                LabelSet(
                    x="left",
                    y="y",
                    y_units="screen",
                    text="short",
                    text_color="color",
                    text_font_size="7.5pt",
                    source=self.window_source,
                )
            )
            fig.line(
                "time",
                f"ref_{i}",
                source=self.source,
                color=GHOST_COLOR,
                line_dash="dashed",
                line_width=1.6,
                alpha=0.8,
                legend_label="reference",
            )
            fig.multi_line(
                xs="xs",
                ys=f"ys_{i}",
                source=self.compare_source,
                line_color="color",
                line_width=1.8,
                alpha=0.9,
                legend_field="name",
            )
            fig.line(
                "time",
                f"cur_{i}",
                source=self.source,
                color=CURRENT_COLOR,
                line_width=2.2,
                legend_label="explored",
            )
            fig.legend.location = "top_left"
            fig.legend.label_text_font_size = "8pt"
            fig.legend.background_fill_alpha = 0.6
            fig.legend.visible = i == 0
            fig.yaxis.formatter = CustomJSTickFormatter(
                code=_SI_TICKS_JS, args={"prefix": "$" if is_money(units) else ""}
            )
            self.figures.append(fig)
        grid = gridplot(self.figures, ncols=3, toolbar_location=None)
        self._build_loop_panel()
        self.plots = self._pn.pane.Bokeh(grid)
        self.windows_note = self._pn.pane.Markdown("", margin=(0, 10))
        self.metrics_pane = self._pn.pane.DataFrame(
            None, index=False, sizing_mode="stretch_width", margin=(0, 10)
        )

    def _build_loop_panel(self) -> None:
        """Which loop dominates: a time slider, the dominant loops at that time (id, name,
        polarity, share of the change), the shares over the run as stacked bands, and the
        run told in a few sentences (`flywheel_sd.ltm`)."""
        from bokeh.models import ColumnDataSource, Span
        from bokeh.plotting import figure

        pn = self._pn
        unit_one, unit_many = self._time_unit
        step = float(self.model.time_settings()["saveper"])
        self.loop_time = pn.widgets.FloatSlider(
            **_label(pn, f"Dominant loops at {unit_one or 'time'}"),
            start=self.t0,
            end=self.t1,
            step=step if step > 0 else 1.0,
            value=self.t1,
            width=290,
        )
        self.loop_time.param.watch(lambda _e: self._show_loops(), "value")
        self.loops_switch = pn.widgets.Checkbox(
            **_label(pn, "Analyse the loops after every run"), value=True, width=290
        )
        self.loops_switch.param.watch(
            lambda e: self._request_loops(self.current) if e.new else None, "value"
        )
        self.loop_note = pn.pane.Markdown("", width=290, margin=(0, 10))
        self.loop_table = pn.pane.DataFrame(
            None, index=False, width=290, margin=(0, 10), styles={"font-size": "85%"}
        )
        self.loop_story = pn.pane.Markdown(
            "", width=290, margin=(0, 10), styles={"font-size": "85%", "color": "#444"}
        )
        self.loop_status = pn.pane.Markdown(
            "", width=290, margin=(0, 10), styles={"font-size": "85%", "color": "#555"}
        )
        self.loop_source = ColumnDataSource(
            data={"xs": [], "ys": [], "color": [], "label": []}, name="explorer-loops"
        )
        fig = figure(
            title="Share of the change by loop",
            height=220,
            width=290,
            tools="",
            toolbar_location=None,
            x_range=(self.t0, self.t1),
            y_range=(0, 1),
            x_axis_label=f"time ({unit_many})" if unit_many else "time",
            y_axis_label="|relative loop score|",
        )
        fig.patches(
            "xs",
            "ys",
            source=self.loop_source,
            fill_color="color",
            line_alpha=0,
            fill_alpha=0.85,
            legend_field="label",
        )
        self.loop_marker = Span(
            location=self.t1, dimension="height", line_color="#333", line_dash="dashed"
        )
        fig.add_layout(self.loop_marker)
        legend = fig.legend[0]
        legend.orientation = "horizontal"
        legend.label_text_font_size = "7.5pt"
        legend.glyph_width = legend.glyph_height = 12
        legend.spacing = 2
        legend.padding = 2
        fig.add_layout(legend, "below")  # under the chart, not over the bands
        self.loop_figure = fig
        self.loops_ds: Any = None  # the last loop analysis (ltm.loop_dominance's Dataset)
        self.loop_periods: Any = None  # and its ltm.dominance_periods
        self.loops_for: pd.DataFrame | None = None  # the run it analysed
        self.last_loops_seconds = math.nan
        self._loops_token: object = None
        self._explored: Scenario | None = None

    # -- the layout --------------------------------------------------------------------
    @property
    def layout(self):
        pn = self._pn
        name = Path(self.model.path).name
        header = pn.Row(
            pn.pane.Markdown(f"### flywheel explore: {name}", margin=(5, 10)),
            self.scenario_select,
            self.reference_select,
            self.compare_select,
            self.status,
        )
        sidebar = pn.Column(
            pn.pane.Markdown("**Levers** (documented range; type a value or drag)"),
            self.accordion,
            pn.pane.Markdown("**Save and share**"),
            self.save_name,
            self.save_folder,
            pn.Row(self.save_button),
            pn.Row(self.download),
            width=370,
            height=900,
            scroll=True,
        )
        loops = pn.Column(
            pn.pane.Markdown(
                "**Which loop dominates** (Loops That Matter, on the explored run)",
                width=290,
                margin=(0, 10),
            ),
            self.loop_time,
            self.loop_note,
            self.loop_table,
            pn.pane.Bokeh(self.loop_figure),
            self.loop_story,
            self.loops_switch,
            self.loop_status,
            width=310,
        )
        main = pn.Column(
            self.message,
            self.plots,
            self.windows_note,
            pn.pane.Markdown("**Metrics** (change from the reference)", margin=(0, 10)),
            self.metrics_pane,
        )
        # the loop panel beside the plots: a third column (a row of the plots and the panel
        # inside `main` makes Bokeh lay the grid out at a few pixels)
        return pn.Column(header, pn.Row(sidebar, main, loops))

    # -- scenario in, params out ----------------------------------------------------------
    def _apply_scenario(self, sc: Scenario) -> None:
        """Set the widgets to what `sc` sets (the model's values elsewhere)."""
        from .scenarios import Policy

        resolved = sc._resolved(self.model, self.t0, self.t1)
        raw = {self.model.real_name(k): v for k, v in sc.params.items()}
        kept: dict[str, Any] = {}
        values = {name: lever.default for name, lever in self.levers.items()}
        for name, value in resolved.items():
            original = raw.get(name)
            if name in self.levers and isinstance(original, Policy):
                lever = self.levers[name]
                values[name] = float(original.value)
                if not (lever.start or lever.end):
                    kept[name] = original  # a step the model does not switch: window kept
            elif name in self.levers and isinstance(value, (int, float)):
                values[name] = float(value)
            elif name in self._elements and self._element_values(name, value, values):
                pass  # a subscripted constant: its elements' widgets hold the values
            elif name not in self._companions():
                kept[name] = original if original is not None else value
        self._kept = kept
        for name, widget in self.widgets.items():
            lever = self.levers[name]
            low, high = lever.bounds
            value = values[name]
            widget.param.update(start=min(low, value), end=max(high, value), value=value)
        for name, window in self.windows.items():
            lever = self.levers[name]
            start = resolved.get(lever.start) if lever.start else None
            end = resolved.get(lever.end) if lever.end else None
            start = float(start) if start is not None else self._default(lever.start)
            end = float(end) if end is not None else self._default(lever.end)
            if lever.start and lever.end:
                window.value = (self._clip(start), self._clip(end))
            else:
                window.value = self._clip(start if lever.start else end)
        changed = [
            lever.sector
            for name, lever in self.levers.items()
            if abs(values[name] - lever.default) > 1e-12 * max(1.0, abs(lever.default))
        ]
        if changed:
            self.accordion.active = [self.sectors.index(changed[0])]
        self.save_name.value = f"{sc.name}_explored"

    def _element_values(self, name: str, value: Any, values: dict[str, float]) -> bool:
        """Put the values that `value` (a number, or a DataArray over the constant's
        subscripts) gives the element levers of constant `name` into `values`; False if
        it is neither (a series: kept as the scenario has it)."""
        import numpy as np
        import xarray as xr

        found = {}
        for lever_name in self._elements[name]:
            lever = self.levers[lever_name]
            if isinstance(value, (int, float, np.number)):
                found[lever_name] = float(value)
                continue
            if not isinstance(value, xr.DataArray):
                return False
            where = {
                d: e for d, e in zip(self.model.dims_of(name), lever.element) if d in value.dims
            }
            try:
                found[lever_name] = float(value.sel(where).values)
            except (KeyError, TypeError, ValueError):
                return False
        values.update(found)
        return True

    def _companions(self) -> set[str]:
        return {n for lever in self.levers.values() for n in (lever.start, lever.end) if n}

    def _default(self, name: str | None) -> float:
        """The model's value of a window constant (read once: reading it initialises the
        PySD model)."""
        if name is None:
            return math.nan
        if name not in self._defaults:
            self._defaults[name] = float(self.model.default_value(name))
        return self._defaults[name]

    def _clip(self, t: float) -> float:
        return min(max(t, self.t0), self.t1) if math.isfinite(t) else self.t1

    def _window_times(self, lever: Lever) -> dict[str, float]:
        """The window constants of `lever` as its window widget sets them: an end at the
        run's end is "never" (the model's own end if that is later)."""
        window = self.windows[lever.name]
        out: dict[str, float] = {}
        if lever.start and lever.end:
            start, end = (_tidy(v) for v in window.value)
        elif lever.start:
            start, end = _tidy(window.value), math.nan
        else:
            start, end = math.nan, _tidy(window.value)
        if lever.start:
            default = self._default(lever.start)
            out[lever.start] = default if start >= self.t1 and default > self.t1 else start
        if lever.end:
            default = self._default(lever.end)
            out[lever.end] = default if end >= self.t1 and default > self.t1 else end
        return out

    def _params(self) -> dict[str, Any]:
        """What the explored scenario sets (Vensim names): the levers whose value differs
        from the model's, their windows, and the overrides no widget edits."""
        from .scenarios import Policy

        params: dict[str, Any] = {}
        for name, value in self._kept.items():
            if isinstance(value, Policy) and name in self.widgets:
                value = Policy(float(self.widgets[name].value), value.start, value.end)
            params[name] = value
        for name, widget in self.widgets.items():
            lever = self.levers[name]
            if name in params or lever.constant:
                continue
            value = _tidy(widget.value)
            if value != lever.default:
                params[name] = value
            if name in self.windows:
                for companion, t in self._window_times(lever).items():
                    if t != self._default(companion):
                        params[companion] = t
        for constant, names in self._elements.items():
            if constant in params:
                continue  # the scenario's own value (a series) is kept
            values = [_tidy(self.widgets[n].value) for n in names]
            if values != [self.levers[n].default for n in names]:
                params[constant] = self._subscripted_value(constant, names, values)
        return params

    def _subscripted_value(self, constant: str, names: list[str], values: list[float]) -> Any:
        """A subscripted constant's value from its element levers: a tuple (one value per
        element, as a scenario file's list holds it) for one subscript range, else a
        DataArray over its ranges."""
        import numpy as np
        import xarray as xr

        dims = self.model.dims_of(constant)
        if len(dims) == 1:
            return tuple(values)
        elements = [
            list(dict.fromkeys(self.levers[n].element[k] for n in names)) for k in range(len(dims))
        ]
        array = np.array(values, dtype=float).reshape([len(e) for e in elements])
        return xr.DataArray(array, dims=dims, coords=dict(zip(dims, elements)))

    def explored_scenario(self, name: str | None = None, description: str = "") -> Scenario:
        """The scenario the widgets describe now (the windows of the levers that differ
        from the model's values as events, so that plots of it shade them)."""
        from .scenarios import Scenario

        params = self._params()
        return Scenario(
            name=name or f"{self.scenario.name}_explored",
            description=description
            or f"Explored from {self.scenario.name} with flywheel explore.",
            params=params,
            model=str(self.model_path) if self.model_path is not None else None,
            events=tuple(self._events(params)),
        )

    def _events(self, params: Mapping[str, Any]) -> list[tuple[str, float, float]]:
        """(label, start, end) of the windows of levers set away from the model's value
        (a window that spans the whole run is none), then the scenario's own events that
        do not coincide with one of them."""
        from .metrics import format_number

        out = []
        for name, lever in self.levers.items():
            if name not in self.windows or name not in params:
                continue
            times = self._window_times(lever)
            start = times.get(lever.start, self.t0) if lever.start else self.t0
            end = times.get(lever.end, math.inf) if lever.end else math.inf
            end = math.inf if end > self.t1 else end
            if end <= start or (start <= self.t0 and end >= self.t1):
                continue  # no window, or the whole run: a changed constant, not a policy
            value = format_number(float(params[name]))
            out.append((f"{name} = {value}{_unit_suffix(lever.units)}", start, end))
        spans = {(s, e) for _, s, e in out}
        out += [e for e in self.scenario.events if (e[1], e[2]) not in spans]
        return out

    # -- callbacks ---------------------------------------------------------------------------
    def _on_lever(self, name: str, value: Any) -> None:
        """A slider released or a value typed: clamp what is out of range (saying so),
        then ask for a run."""
        problem = self._clamp(name, value)
        self.request_run(keep_message=bool(problem))

    def _clamp(self, name: str, value: Any) -> str:
        """Set lever `name`'s widget to `value` clamped to the documented range, with a
        message if that changed it; return the message ("" if none)."""
        lever = self.levers[name]
        checked, problem = lever.check(_number(value))
        if problem:
            low, high = lever.bounds
            self.widgets[name].param.update(start=low, end=high, value=checked)
            self.show_message(problem, "warning")
        return problem

    def _clamp_all(self) -> bool:
        """Clamp every lever whose widget holds a value outside its documented range (a
        typed value can reach the widget after the event that checked it): no run ever
        gets one. True if any was."""
        problems = [
            self._clamp(name, widget.value)
            for name, widget in self.widgets.items()
            if self.levers[name].check(_number(widget.value))[1]
        ]
        return any(problems)

    def _on_scenario(self, event) -> None:
        try:
            sc = _scenario(event.new, self.model_path)
        except FlywheelError as err:
            self.show_message(_one_line(err), "danger")
            return
        self.scenario = sc
        self._apply_scenario(sc)
        _warm(self.model, self._params())
        self.request_run()

    def move(self, lever: str, value: float) -> None:
        """Set a lever as a user does (the value a released slider or a typed number
        sends), through the app's own callbacks."""
        import param

        widget = self.widgets[lever]
        with param.edit_constant(widget):
            widget.param.update(value=value, value_throttled=value)

    def move_window(self, lever: str, start: float | None = None, end: float | None = None):
        """Set a lever's policy window as a user does."""
        import param

        widget = self.windows[lever]
        if isinstance(widget.value, tuple):
            old_start, old_end = widget.value
            value: Any = (
                old_start if start is None else start,
                old_end if end is None else end,
            )
        else:
            value = start if start is not None else end
        with param.edit_constant(widget):
            widget.param.update(value=value, value_throttled=value)

    def show_message(self, text: str, kind: str = "warning") -> None:
        self.message.param.update(object=text, alert_type=kind, visible=bool(text))

    def request_run(self, keep_message: bool = False) -> None:
        """Ask for a run with the widgets' values. In a served app the run happens on the
        next tick of the event loop and reads the widgets then: requests made meanwhile are
        answered by that one run (never a queue of stale runs). Elsewhere it runs now."""
        self._requested += 1
        self.stats["requests"] += 1
        self._keep_message = keep_message or getattr(self, "_keep_message", False)
        if self._doc is None:
            self._drain()
        elif not self._scheduled:
            self._scheduled = True
            self._doc.add_next_tick_callback(self._drain)

    def _drain(self) -> None:
        self._scheduled = False
        target = self._requested
        if target == self._done:
            return
        self.stats["skipped"] += target - self._done - 1
        self._done = target
        keep = self._clamp_all() or self._keep_message
        self._keep_message = False
        started = time.perf_counter()
        try:
            reference = self._reference()
            explored = self.explored_scenario()
            frame = self._run(explored)
        except Exception as err:  # noqa: BLE001 - any failed run is shown; the app goes on
            self.stats["failed"] += 1
            self.show_message(
                f"run failed: {_one_line(err)} (showing the last good run)", "danger"
            )
            return
        compared, problems = self._compared()
        keep = keep or bool(problems)
        self.current, self.reference_run, self.compared_runs = frame, reference, compared
        self._explored = explored
        self._draw(frame, reference, compared)
        self.last_run_seconds = time.perf_counter() - started
        self.stats["runs"] += 1
        engine = frame.attrs.get("engine", "")
        self.status.object = f"run + redraw {1000 * self.last_run_seconds:.0f} ms ({engine})"
        if problems:
            self.show_message("; ".join(problems), "warning")
        elif not keep:
            self.show_message("")
        # The metrics table follows on the next tick: the figure does not wait for it, and
        # a newer run that arrives meanwhile makes this table stale, so it is skipped.
        # So does the loop analysis, which takes longer than the run and the figure
        # together: in a served app it runs on a worker thread (see `_request_loops`).
        if self._doc is None:
            self._after_figure(frame)
        elif hasattr(self._doc, "add_timeout_callback"):  # after the figure is sent
            self._doc.add_timeout_callback(lambda: self._after_figure(frame), METRICS_DELAY)
        else:
            self._doc.add_next_tick_callback(lambda: self._after_figure(frame))

    def _after_figure(self, frame: pd.DataFrame) -> None:
        self._update_metrics(frame)
        self._request_loops(frame)

    def _update_metrics(self, frame: pd.DataFrame) -> None:
        if frame is not self.current or self.reference_run is None:
            return
        started = time.perf_counter()
        try:
            self.metrics_pane.object = self.metrics_table(
                frame, self.reference_run, self.compared_runs
            )
        except Exception as err:  # noqa: BLE001 - a metric that fails must not stop the app
            self.show_message(f"metrics not computed: {_one_line(err)}", "warning")
        self.last_metrics_seconds = time.perf_counter() - started

    # -- loop dominance -----------------------------------------------------------------
    def _request_loops(self, frame: pd.DataFrame | None) -> None:
        """Analyse the loops of `frame` (the run just drawn) if it is still the current one.
        Without a served session this happens now. In a served app it happens after the
        figure has gone out: a worker thread hands it to a worker process (so that the
        analysis, plain Python, does not slow the session's event loop down) and posts the
        result back to the session. Only the newest request counts: a job that is
        overtaken before it starts is skipped, and one overtaken while it runs is not
        shown."""
        if frame is None or frame is not self.current or not self.loops_switch.value:
            return
        if self.loops_for is frame:
            return  # analysed already (the switch turned off and on again)
        token = self._loops_token = object()
        sc = self._explored or self.explored_scenario()
        if self._doc is None:
            self._loops_done(token, frame, self._analyse(sc))
            return
        self.loop_status.object = "analysing the loops of this run..."
        doc = self._doc

        def job() -> None:
            if token is not self._loops_token:
                return  # overtaken before it started
            result = self._analyse(sc, far=True)
            doc.add_next_tick_callback(lambda: self._loops_done(token, frame, result))

        _loop_pool().submit(job)

    def _analyse(self, sc: Scenario, far: bool = False) -> Any:
        """`ltm.loop_dominance` of scenario `sc`'s run, on the model's loop index's loops
        where it has one (else every loop found); an exception if it fails. `far`: in the
        worker process (in this process where none can be started)."""
        started = time.perf_counter()
        try:
            params, breaks = sc.inputs(self.model, self.t0, self.t1)
            ids = self._loop_ids()
            if far:
                ds = _far_loop_dominance(str(self.model.path), ids, params, breaks)
            else:
                ds = _loop_dominance(self.model, ids, params, breaks)
            ds.attrs["explorer_seconds"] = time.perf_counter() - started
            return ds
        except Exception as err:  # noqa: BLE001 - shown in the loop panel; the app goes on
            return err

    def warm_loops(self) -> None:
        """Start the worker process of a served app's loop analyses and analyse the current
        run there, in the background (the first page's loop panel then fills sooner)."""
        sc = self._explored or self.explored_scenario()
        _loop_pool().submit(self._analyse, sc, far=True)

    def _loop_ids(self) -> list[str] | None:
        """The ids of the loops in the model's loop index (``<model>.loops.toml`` beside the
        model file: the loops with names), or None (every loop, as `ltm` finds them)."""
        from .loop_index import loop_index_path, read_loop_index

        if not hasattr(self, "_ids"):
            try:
                self._ids = list(read_loop_index(loop_index_path(self.model))) or None
            except FlywheelError:  # no index, or not a valid one: every loop, as ltm finds them
                self._ids = None
        return self._ids

    def _loops_done(self, token: object, frame: pd.DataFrame, result: Any) -> None:
        if token is not self._loops_token:
            return  # a newer run's analysis is on its way
        from . import ltm

        if isinstance(result, BaseException):
            self.loops_ds = self.loop_periods = None
            self.loops_for = frame
            self.loop_status.object = ""
            self.loop_note.object = f"Loop dominance not computed: {_one_line(result)}"
            self.loop_table.object = None
            self.loop_story.object = ""
            self.loop_source.data = {"xs": [], "ys": [], "color": [], "label": []}
            return
        self.loops_ds, self.loops_for = result, frame
        self.loop_periods = ltm.dominance_periods(result)
        self.last_loops_seconds = float(result.attrs.get("explorer_seconds", math.nan))
        self.loop_status.object = f"loops analysed in {1000 * self.last_loops_seconds:.0f} ms"
        unit = self._time_unit[0] or "time"
        self.loop_story.object = (
            ltm.describe_dominance(self.loop_periods, result, unit=unit)
            if result.sizes.get("loop", 0)
            else ""
        )
        self._draw_loop_shares(result)
        self._show_loops()

    def dominant_loops(self, t: float | None = None):
        """The loops at time `t` (default: the time slider's) of the last analysis, as the
        panel shows them: ``loop``, ``name``, ``polarity`` (from the sign of its relative
        score then), ``share`` (its |relative score|) and ``dominant`` (in the smallest set
        explaining half the change, `ltm.dominance_periods`); the dominant ones first, then
        the strongest others. None before an analysis; empty when no loop is active."""
        import numpy as np
        import pandas as pd

        ds, periods = self.loops_ds, self.loop_periods
        if ds is None:
            return None
        t = float(self.loop_time.value if t is None else t)
        times = ds["time"].to_numpy()
        columns = ["loop", "name", "polarity", "share", "dominant"]
        if ds.sizes.get("loop", 0) == 0 or len(times) == 0:
            return pd.DataFrame(columns=[*columns, "named"])
        j = int(np.argmin(np.abs(times - t)))
        at = periods[(periods["start"] <= times[j]) & (periods["end"] >= times[j])]
        dominant = [key for keys in at["loops"] for key in str(keys).split("+")]
        rel = ds["relative_score"].to_numpy()[:, j]
        keys = [str(k) for k in ds["loop"].to_numpy()]
        names = [  # a loop without a name in the index: its variables
            str(n) or str(v)
            for n, v in zip(ds["loop_name"].to_numpy(), ds["loop_variables"].to_numpy())
        ]
        named = {k for k, n in zip(keys, ds["loop_name"].to_numpy()) if str(n)}
        order = sorted(range(len(keys)), key=lambda i: (keys[i] not in dominant, -abs(rel[i])))
        rows = [
            {
                "loop": keys[i],
                "name": names[i],
                "named": keys[i] in named,
                "polarity": "reinforcing" if rel[i] > 0 else "balancing",
                "share": float(abs(rel[i])),
                "dominant": keys[i] in dominant,
            }
            for i in order
            if keys[i] in dominant or abs(rel[i]) >= 0.01
        ]
        return pd.DataFrame(rows[: max(len(dominant), 6)], columns=[*columns, "named"])

    def _show_loops(self) -> None:
        """The loop panel at the time slider's time, from the last analysis."""
        from .metrics import format_number

        t = float(self.loop_time.value)
        self.loop_marker.location = t
        ds = self.loops_ds
        if ds is None:
            return
        unit = self._time_unit[0] or "time"
        when = f"At {unit} {format_number(t)}"
        table = self.dominant_loops(t)
        if ds.sizes.get("loop", 0) == 0:
            why = ds.attrs.get("note") or "no loop was found"
            self.loop_note.object = f"No loop dominance to show: {why}."
            self.loop_table.object = None
            return
        chosen = table[table["dominant"]]
        if chosen.empty:
            self.loop_note.object = f"{when} no loop is active (its variables do not change)."
        else:
            said = [
                f"**{r.loop}**"
                + (f" ({r.name[:1].lower()}{r.name[1:]}, {r.polarity})" if r.named else "")
                + ("" if r.named else f" ({r.polarity})")
                for r in chosen.itertuples()
            ]
            verb = "dominates" if len(said) == 1 else "together dominate"
            share = round(100 * float(chosen["share"].sum()))
            self.loop_note.object = (
                f"{when}, {' and '.join(said)} {verb}, explaining {share}% of the change."
            )
        shown = table.assign(  # a dominant loop's id ticked (the column would not fit)
            loop=[
                f"{k} \N{CHECK MARK}" if d else k for k, d in zip(table["loop"], table["dominant"])
            ],
            share=[f"{100 * v:.0f}%" for v in table["share"]],
        ).drop(columns=["named", "dominant"])
        self.loop_table.object = shown

    def _draw_loop_shares(self, ds) -> None:
        """The stacked |relative scores| of the strongest loops over the run (in the loop
        partition of the strongest loop), the rest summed as "other"."""
        import numpy as np

        empty: dict[str, list] = {"xs": [], "ys": [], "color": [], "label": []}
        if ds.sizes.get("loop", 0) == 0 or ds.sizes.get("time", 0) == 0:
            self.loop_source.data = empty
            return
        rel = np.abs(ds["relative_score"].to_numpy())
        partition = ds["partition"].to_numpy()
        strongest = int(np.argmax(rel.mean(axis=1)))
        members = np.flatnonzero(partition == partition[strongest])
        members = members[np.argsort(-rel[members].mean(axis=1), kind="stable")]
        times = ds["time"].to_numpy()
        # means over blocks of steps (about 150 blocks): the lead passes back and forth
        # for a step or two, which would only be noise at this size
        block = max(1, len(times) // 150)
        n = len(times) // block * block

        def mean(values):
            return values[..., :n].reshape(*values.shape[:-1], -1, block).mean(axis=-1)

        t = mean(times)
        bands = [(str(ds["loop"].values[i]), mean(rel[i])) for i in members[:LOOP_BANDS]]
        if len(members) > LOOP_BANDS:
            bands.append(("other", mean(rel[members[LOOP_BANDS:]]).sum(axis=0)))
        lower = np.zeros(len(t))
        data = empty
        for k, (label, values) in enumerate(bands):
            upper = lower + values
            data["xs"].append(np.concatenate([t, t[::-1]]))
            data["ys"].append(np.concatenate([upper, lower[::-1]]))
            data["color"].append(LOOP_COLORS[min(k, len(LOOP_COLORS) - 1)])
            data["label"].append(label)
            lower = upper
        self.loop_source.data = data

    def _run(self, sc: Scenario) -> pd.DataFrame:
        from .scenarios.compare import _run

        return _run(sc, self.model)

    def _reference(self) -> pd.DataFrame:
        """The reference run, run once per scenario version (and shared by the sessions of
        a served app)."""
        return self._scenario_run(str(self.reference_select.value))

    def _compared(self) -> tuple[dict[str, pd.DataFrame], list[str]]:
        """The runs of the scenarios picked to compare (name -> run), and a one-line
        problem per scenario that did not run (it is left out of the plots)."""
        runs: dict[str, pd.DataFrame] = {}
        problems = []
        for name in self.compare_select.value:
            try:
                runs[str(name)] = self._scenario_run(str(name))
            except Exception as err:  # noqa: BLE001 - one bad scenario must not stop the rest
                problems.append(f"{name} not compared: {_one_line(err)}")
        return runs, problems

    def _scenario_run(self, name: str) -> pd.DataFrame:
        """The run of scenario `name` on the explorer's model. A lever move does not read
        the scenario again: its run is kept until the model file or the scenario's file
        changes (checked by their modification times)."""
        kept = self._runs.get(name)
        if kept is not None and kept[0] == self._stamp(kept[1]):
            return kept[2]
        sc = _scenario(name, self.model_path)
        run = self._run_once(sc)
        self._runs[name] = (self._stamp(sc.source), sc.source, run)
        return run

    def _stamp(self, source: str | None) -> tuple:
        """The modification times of the model file and of a scenario file."""
        files = [Path(self.model.path), *([Path(source)] if source else [])]
        try:
            return tuple(f.stat().st_mtime_ns for f in files)
        except OSError:
            return (math.nan,)  # gone: never equal, so read again (and fail clearly)

    def _run_once(self, sc: Scenario) -> pd.DataFrame:
        """The run of `sc`, run once per model file and scenario version (and shared by the
        sessions of a served app)."""
        path = Path(self.model.path)
        try:
            key = (str(path), path.stat().st_mtime_ns, sc.name, repr(sc.to_dict()))
        except FlywheelError:  # values a file cannot hold: no cache
            return self._run(sc)
        if key not in _REFERENCES:
            _REFERENCES[key] = self._run(sc)
        return _REFERENCES[key]

    # -- drawing ---------------------------------------------------------------------
    def _draw(
        self,
        frame: pd.DataFrame,
        reference: pd.DataFrame,
        compared: Mapping[str, pd.DataFrame] | None = None,
    ) -> None:
        import numpy as np

        from .plotting import _window_label

        times = np.asarray(frame.index, dtype=float)
        ref_times = np.asarray(reference.index, dtype=float)
        data: dict[str, Any] = {"time": times}
        for i, (_title, variable, _units) in enumerate(self.panels):
            data[f"cur_{i}"] = _column(frame, variable)
            data[f"ref_{i}"] = np.interp(times, ref_times, _column(reference, variable))
        self.source.data = data
        runs = list((compared or {}).items())
        overlaid: dict[str, list] = {
            "xs": [np.asarray(run.index, dtype=float) for _, run in runs],
            "name": [name for name, _ in runs],
            "color": [COMPARE_COLORS[k % len(COMPARE_COLORS)] for k in range(len(runs))],
        }
        for i, (_title, variable, _units) in enumerate(self.panels):
            overlaid[f"ys_{i}"] = [_column(run, variable) for _, run in runs]
        if overlaid["name"] or self.compare_source.data["name"]:
            self.compare_source.data = overlaid
        windows = self._events(self._params())[:MAX_WINDOWS]
        shown = {
            "left": [start for _, start, _ in windows],
            "right": [min(end, self.t1) for _, _, end in windows],
            "label": [label for label, _, _ in windows],
            "short": [label.split(" = ")[0] for label, _, _ in windows],
            "color": [WINDOW_COLORS[k % len(WINDOW_COLORS)] for k in range(len(windows))],
            "y": [4 + 13 * k for k in range(len(windows))],
        }
        if shown != self.window_source.data:
            self.window_source.data = shown
        lines = [
            _window_label(label, start, end, "", self._time_unit) for label, start, end in windows
        ]
        self.windows_note.object = (
            "Shaded: " + "; ".join(lines) if lines else "No policy window is set."
        )
        self.drawn_at = time.perf_counter()  # when the new figure data was in place

    def metrics_table(
        self,
        frame: pd.DataFrame,
        reference: pd.DataFrame,
        compared: Mapping[str, pd.DataFrame] | None = None,
    ):
        """The metrics of the explored run beside the reference's, with the change; then
        a column per compared scenario: its value and its change from the reference."""
        import pandas as pd

        from .metrics import format_number, format_percent, readable_units
        from .scenarios.compare import attach_metrics, metrics_table

        ref_name = str(self.reference_select.value)
        names = [ref_name, "explored"]
        frames = [reference, frame]
        for name, run in (compared or {}).items():
            label = name if name not in names else f"{name} (compared)"
            names.append(label)
            frames.append(run)
        ds = attach_metrics(_dataset(frames, names))
        table = metrics_table(ds)
        rows = []
        for metric in table.loc[ref_name].index:
            ref = table.at[(ref_name, metric), "value"]
            now = table.loc[("explored", metric)]
            row = {
                "metric": metric,
                ref_name: format_number(ref),
                "explored": format_number(now["value"]),
                "change": format_number(now["diff"], signed=True),
                "change %": format_percent(now["diff_pct"]),
            }
            for label in names[2:]:
                other = table.loc[(label, metric)]
                row[label] = (
                    f"{format_number(other['value'])} ({format_percent(other['diff_pct'])})"
                )
            row["units"] = readable_units(str(now["units"]), metric) or "-"
            rows.append(row)
        return pd.DataFrame(rows)

    # -- save and share ------------------------------------------------------------------
    def save_scenario(self, name: str | None = None, folder: str | os.PathLike | None = None):
        """Write the explored scenario to ``<folder>/<name>.toml`` (default folder: the
        first $FLYWHEEL_SD_SCENARIOS folder, else the current directory); return the
        path. ``flywheel run PATH`` (or the name, from that folder) reads it back."""
        from . import scenarios

        name = (name or "").strip() or f"{self.scenario.name}_explored"
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
            raise ParameterError(
                f"scenario name {name!r}: use letters, digits, '_', '-' and '.' only"
            )
        path = Path(folder or _scenario_folder()).expanduser().resolve() / f"{name}.toml"
        existing = scenarios._files().get(name)
        if existing is not None and existing.resolve() != path:
            raise ParameterError(f"a scenario named {name!r} exists ({existing}); choose another")
        sc = self.explored_scenario(name)
        sc.validate(self.model)
        path.parent.mkdir(parents=True, exist_ok=True)
        sc.save(path)
        scenarios.load_file(path)  # it reads back, or this raises
        self._runs.pop(name, None)
        options = list(self.scenario_select.options)
        if name in scenarios.list() and name not in options:
            self.scenario_select.options = [*options, name]
            self.reference_select.options = [*options, name]
            self.compare_select.options = [*options, name]
        return path

    def _save_clicked(self) -> None:
        try:
            path = self.save_scenario(self.save_name.value, self.save_folder.value)
        except (FlywheelError, OSError) as err:
            self.show_message(f"not saved: {_one_line(err)}", "danger")
            return
        self.show_message(f"saved {path}; run it with: flywheel run {path}", "success")

    def csv(self) -> str:
        """The explored run, the reference run and the compared runs as CSV: a
        ``scenario`` column, then time and every variable."""
        import pandas as pd

        frames = []
        runs = [
            ("explored", self._run(self.explored_scenario())),
            (str(self.reference_select.value), self._reference()),
        ]
        runs += [(name, self._scenario_run(str(name))) for name in self.compare_select.value]
        for name, frame in runs:
            numeric = frame.apply(pd.to_numeric, errors="coerce")
            numeric.index.name = "time"
            frames.append(numeric.reset_index().assign(scenario=name))
        table = pd.concat(frames, ignore_index=True)
        columns = ["scenario", *[c for c in table.columns if c != "scenario"]]
        return table[columns].to_csv(index=False)

    def _csv_file(self) -> io.StringIO:
        try:
            return io.StringIO(self.csv())
        except Exception as err:  # noqa: BLE001 - shown in the app, not a crashed download
            self.show_message(f"CSV not written: {_one_line(err)}", "danger")
            return io.StringIO("")


_POOL: list = []
_PROCESSES: list = []  # the worker process's pool; None in it where none could start


def _loop_pool():
    """The one worker thread that dispatches loop analyses for every session of a served
    app (it waits on the worker process, which does the work)."""
    if not _POOL:
        from concurrent.futures import ThreadPoolExecutor

        _POOL.append(ThreadPoolExecutor(max_workers=1, thread_name_prefix="flywheel-loops"))
    return _POOL[0]


def _loop_dominance(model: Model, ids: list[str] | None, params: dict, breaks: list[float]):
    """`ltm.loop_dominance` of a run of `model` with `params`, on loops `ids` (None: every
    loop found), without the link scores (the panel shows loops)."""
    from . import ltm

    ds = ltm.loop_dominance(model, ids, run=params, breakpoints=breaks)
    return ds.drop_dims("link")


def _in_worker(path: str, ids: list[str] | None, params: dict, breaks: list[float]):
    """`_loop_dominance` in the worker process (the model loaded there once); a failure
    comes back as a one-line FlywheelError (any exception may not survive pickling)."""
    from .engine.model import load

    try:
        return _loop_dominance(load(path), ids, params, breaks)
    except Exception as err:  # noqa: BLE001 - reported in the loop panel
        return FlywheelError(_one_line(err))


def _far_loop_dominance(path: str, ids: list[str] | None, params: dict, breaks: list[float]):
    """`_loop_dominance` in the one worker process (started on first use, with "spawn":
    a fork of a served app's threads is not safe); in this process where none starts."""
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    if not _PROCESSES:
        import multiprocessing

        try:
            context = multiprocessing.get_context("spawn")
            _PROCESSES.append(ProcessPoolExecutor(max_workers=1, mp_context=context))
        except (OSError, ValueError, NotImplementedError):
            _PROCESSES.append(None)
        else:  # stopped before the interpreter tears its modules down
            import atexit

            atexit.register(_PROCESSES[0].shutdown, wait=True, cancel_futures=True)
    pool = _PROCESSES[0]
    if pool is not None:
        try:
            result = pool.submit(_in_worker, path, ids, params, breaks).result()
        except (BrokenProcessPool, OSError):
            _PROCESSES[0] = None  # from now on, here
        else:
            if isinstance(result, BaseException):
                raise result
            return result
    from .engine.model import load

    return _loop_dominance(load(path), ids, params, breaks)


def _dataset(frames: list[pd.DataFrame], names: list[str]):
    """Runs as a Dataset (scenario, time), as `frames_to_dataset` stacks them but built
    from arrays at once (that one aligns each variable: a second for hundreds of them).
    The runs share their times (one model, one SAVEPER); the later ones are interpolated
    onto the first's where they do not."""
    import numpy as np
    import xarray as xr

    times = np.asarray(frames[0].index, dtype=float)
    columns = [c for c in frames[0].columns if all(c in f.columns for f in frames[1:])]
    arrays = []
    for frame in frames:
        try:
            values = frame[columns].to_numpy(dtype=float)
        except (TypeError, ValueError):  # a column of text or objects: NaN where not numbers
            values = frame[columns].apply(_numeric).to_numpy(dtype=float)
        own = np.asarray(frame.index, dtype=float)
        if own.shape != times.shape or not np.array_equal(own, times):
            values = np.column_stack([np.interp(times, own, v) for v in values.T])
        arrays.append(values)
    stack = np.stack(arrays)
    return xr.Dataset(
        {str(c): (("scenario", "time"), stack[:, :, j]) for j, c in enumerate(columns)},
        coords={"scenario": list(names), "time": times},
    )


def _numeric(column):
    import pandas as pd

    return pd.to_numeric(column, errors="coerce")


def _tidy(value: Any) -> float:
    """A widget's number without the float noise of slider steps (5 x 5.0 months can
    arrive as 25.000000000000004): twelve significant digits."""
    return float(f"{float(value):.12g}")


def _number(value: Any) -> float:
    """`value` as a float (NaN if it is none)."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _column(frame: pd.DataFrame, variable: str):
    """`variable` of a run as floats (the sum of its subscripted columns if it has some)."""
    import numpy as np

    if variable in frame.columns:
        return np.asarray(frame[variable], dtype=float)
    parts = [c for c in frame.columns if str(c).startswith(variable + "[")]
    if not parts:
        return np.full(len(frame), np.nan)
    return np.asarray(frame[parts].astype(float).sum(axis=1))


def explore(
    scenario: str | Scenario | None = "baseline",
    *,
    model: str | os.PathLike | None = None,
    reference: str | None = None,
    compare: Sequence[str] = (),
):
    """The what-if explorer as a Panel layout (shows inline in a notebook; ``flywheel
    explore`` serves it).

    Parameters
    ----------
    scenario : str, Scenario or None
        The scenario to start from (default: baseline; with ``model``, None starts from
        that model's own parameters).
    model : path, optional
        A model file: the levers come from its constants and documented ranges.
    reference : str, optional
        The scenario drawn as the ghost line (default: baseline, or the model's own
        parameters).
    compare : sequence of str, optional
        Scenarios overlaid on the plots and added to the metrics table (at most six).

    Raises
    ------
    FlywheelError
        Panel is not installed (``pip install "flywheel_sd[explore]"``), or the scenario or
        model is not usable.
    """
    if model is not None and scenario == "baseline":
        scenario = None
    explorer = Explorer(scenario, model=model, reference=reference, compare=compare)
    if "ipykernel" in sys.modules:  # in a notebook: Panel's front-end, loaded once
        pn = _panel()
        if not getattr(pn.extension, "_loaded", False):
            pn.extension()
    return explorer.layout
