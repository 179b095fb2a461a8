"""`calibrate`: fit a model's constants to data, with χ² (profile-likelihood) bounds (issue 13).

Data flow: the data are normalised into *targets* (what to read from a run, at which model
times, the values and their sigma); a *batch* runs a population of parameter sets at once on
the compiled engine (`flywheel_sd.engine.ensemble.run_members`, one integration per member,
each equal to its single run) and turns its outputs into the weighted residual matrix. The
optimisers only ever see that matrix:

1. a global start over the bounds, evaluated as batches: SciPy's differential evolution
   (``vectorized=True``: a generation is one batch) or a Latin hypercube;
2. a local polish: ``scipy.optimize.least_squares`` within the bounds, whose Jacobian is
   one batch of central differences (Powell for the robust payoff);
3. uncertainty: per parameter, the profile likelihood (the other parameters re-fitted at
   each value) is followed to where the payoff rises by the χ² threshold (3.84 for one
   degree of freedom at 95 %, as Vensim's payoff sensitivity); the correlation matrix
   comes from the Jacobian at the optimum; optionally, posterior samples from emcee, whose
   walkers are one batch per step.

The payoff is ``Σ r²`` with ``r = w (model - data) / sigma`` ("wsse", Vensim's ``*C`` with
weight 1/sigma), the same on the log scale ("log", for series spanning orders of magnitude;
sigma is then relative), or ``Σ |r|`` ("robust", Vensim's ``*CR``; its χ² threshold is
halved: the Laplace likelihood with scale sigma). Without any sigma, the noise scale is estimated
from the residuals (``payoff / (N - k)``) and the threshold scaled by it.
"""

from __future__ import annotations

import ast
import math
import re
import time as _time
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from .engine.model import Model
from .errors import (
    ConvergenceError,
    DataError,
    FlywheelError,
    IdentifiabilityWarning,
    ParameterError,
    unknown_name_message,
)

__all__ = ["CHI2_95", "METHODS", "PAYOFFS", "Calibration", "calibrate"]

PAYOFFS = ("wsse", "log", "robust")
METHODS = ("de+least_squares", "lhs+least_squares", "least_squares")
#: χ²(1) quantile at 95 %: the payoff rise that bounds one parameter's interval.
CHI2_95 = 3.841458820694124
#: |correlation| above which two parameters are reported as not separately identified.
CORRELATION_LIMIT = 0.95
#: A residual that stands for a failed run (non-finite outputs): large but finite, so the
#: optimisers move away from it instead of stopping.
PENALTY = 1e6
_SIMULATE_OPTIONS = ("final_time", "time_step", "saveper", "rtol", "atol", "max_step")
_FUNCTIONS: dict[str, Callable[[Any], Any]] = {
    "log": np.log,
    "exp": np.exp,
    "sqrt": np.sqrt,
    "abs": np.abs,
}


# -- the result -------------------------------------------------------------------------
@dataclass
class Calibration:
    """What `calibrate` found.

    Attributes
    ----------
    params : dict
        The best value of each calibrated parameter (Vensim names).
    payoff : float
        The payoff at the best point (see the module's doc for its definition).
    payoff_kind : str
        ``"wsse"``, ``"log"`` or ``"robust"``.
    bounds : pandas.DataFrame
        One row per parameter: ``low``, ``best``, ``high`` (the χ² interval: where the
        profile payoff rises by `threshold`), ``prior_low``, ``prior_high`` (the search
        bounds), ``low_open``/``high_open`` (True where the profile stays below the
        threshold up to the search bound, so the interval is the bound), ``std`` (the
        Jacobian's standard error).
    correlation : pandas.DataFrame
        Parameter correlation from the Jacobian at the optimum.
    residuals : dict of str -> pandas.DataFrame
        Per series, indexed by model time: ``data``, ``model``, ``sigma``, ``residual``
        (model - data, on the log scale for the "log" payoff) and ``weighted`` (the
        residual the payoff sums).
    fit : pandas.DataFrame
        Per series: ``n``, ``payoff`` (its share), ``rmse`` and ``r2`` (data units).
    run : pandas.DataFrame
        The run at the best parameters (the outputs the data read).
    threshold : float
        The payoff rise that bounds the intervals (3.84 times the noise scale for "wsse"
        and "log", half that for "robust").
    sigma_estimated : bool
        True when no sigma was given, so the noise scale was estimated from the residuals.
    n_runs : int
        Model runs made (global start, polish, Jacobians, profiles, MCMC).
    elapsed : float
        Seconds.
    samples : xarray.Dataset or None
        Posterior samples (dims ``chain``, ``draw``; one variable per parameter), when
        ``mcmc_steps`` was given.
    """

    params: dict[str, float]
    payoff: float
    payoff_kind: str
    bounds: pd.DataFrame
    correlation: pd.DataFrame
    residuals: dict[str, pd.DataFrame]
    fit: pd.DataFrame
    run: pd.DataFrame
    threshold: float
    sigma_estimated: bool
    method: str
    n_runs: int
    elapsed: float
    message: str = ""
    samples: Any = None
    extra: dict = field(default_factory=dict)

    def to_scenario(self, name: str, description: str = ""):
        """The calibrated parameters as a scenario (`flywheel_sd.scenarios.Scenario`): the
        calibrated scenario's own settings plus the best values, or the model with the
        best values. Save it with ``.save("name.toml")``; run it with ``run_scenario``."""
        from .scenarios import Scenario

        text = description or f"calibrated ({self.payoff_kind} payoff {self.payoff:.6g})"
        base = self.extra.get("scenario")
        if base is not None:
            return base.derive(name, text, **self.params)
        return Scenario(name, text, params=dict(self.params), model=self.extra.get("model"))

    def posterior_table(self, burn: float = 0.5, thin: int = 1) -> pd.DataFrame:
        """The posterior samples as a table of runs (one column per parameter), after
        discarding the first `burn` fraction of each chain: a design for `sweep` (fan
        charts of calibrated futures). Needs ``mcmc_steps``."""
        if self.samples is None:
            raise ParameterError("no posterior samples: calibrate with mcmc_steps > 0")
        if not (0 <= burn < 1) or thin < 1:
            raise ParameterError(f"burn must be in [0, 1) and thin >= 1, not {burn}, {thin}")
        n = self.samples.sizes["draw"]
        kept = self.samples.isel(draw=slice(int(burn * n), None, thin))
        return pd.DataFrame({p: kept[p].values.ravel() for p in self.params}).reset_index(
            drop=True
        )

    def design(self, burn: float = 0.5, thin: int = 1, n: int | None = None):
        """The posterior samples as a `flywheel_sd.designs.Design` (kind ``"posterior"``),
        which `sweep` runs as it is: ``fw.sweep(scenario, result.design(n=200),
        outputs=[...], method="euler")`` gives the runs of calibrated futures, and
        ``fw.fan_chart`` of that sweep their bands. The rows are `posterior_table`'s
        (`burn`, `thin`); `n` keeps that many of them, evenly spaced over the chains. The
        design's bounds are the calibration's search bounds. Sweep with the calibration's
        integrator (``extra["integrator"]``, Euler by default) and the scenario (or model) it
        was fitted on."""
        from .designs import Design

        table = self.posterior_table(burn, thin)
        if n is not None:
            if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
                raise ParameterError(f"n must be a positive int, not {n!r}")
            if n > len(table):
                raise ParameterError(
                    f"n = {n} is more than the {len(table)} posterior samples kept "
                    f"(burn {burn}, thin {thin})"
                )
            rows = np.unique(np.linspace(0, len(table) - 1, int(n)).round().astype(int))
            table = table.iloc[rows].reset_index(drop=True)
        prior = self.bounds[["prior_low", "prior_high"]].astype(float)
        bounds = {
            p: (float(prior["prior_low"][p]), float(prior["prior_high"][p])) for p in self.params
        }
        options = {"burn": burn, "thin": thin, "payoff": self.payoff_kind, "method": self.method}
        return Design("posterior", table, bounds, options=options)

    @property
    def posterior(self):
        """`design()` with its defaults: every posterior sample after the first half of
        each chain, as a design for `sweep` (``fw.sweep(scenario, result.posterior)``)."""
        return self.design()

    def __str__(self) -> str:
        lines = [
            f"calibration ({self.method}, payoff {self.payoff_kind}): payoff {self.payoff:.6g} "
            f"after {self.n_runs} runs in {self.elapsed:.1f} s",
        ]
        for name, row in self.bounds.iterrows():
            lo = "≤" if row["low_open"] else " "
            hi = "≥" if row["high_open"] else " "
            lines.append(
                f"  {name}: {row['best']:.6g}  [{lo}{row['low']:.6g}, {hi}{row['high']:.6g}]"
            )
        return "\n".join(lines)


# -- data -------------------------------------------------------------------------------
@dataclass
class _Target:
    label: str
    variables: list[str]
    vector_fn: Callable[[dict[str, np.ndarray]], np.ndarray] | None
    frame_fn: Callable[[pd.DataFrame], Any] | None
    times: np.ndarray
    values: np.ndarray
    sigma: np.ndarray
    weight: float
    sigma_given: bool
    ends: np.ndarray | None = None  # period rows: model time each period ends
    aggregate: str = "mean"  # over a period: "mean" (levels) or "sum" (flows' integral)
    # ("mean", weight): the period's mean weighted by another output (a share of a flow)
    weight_fn: Callable[[dict[str, np.ndarray]], np.ndarray] | None = None


def _recorded(model: Model) -> list[str]:
    """Names of the variables a run can report."""
    skip = {"TIME", "Time"}
    return [n for n in model.namespace if n not in skip]


_BOUNDARY = r"(?<![\w]){}(?![\w])"


def _parse_expression(text: str, names: list[str]):
    """(variables, fn over {variable: array}) for a small expression over outputs: names
    (Vensim, any case), numbers, + - * / ** ^, parentheses, log/exp/sqrt/abs."""
    placeholders: dict[str, str] = {}
    work = text
    for name in sorted(names, key=len, reverse=True):
        pattern = re.compile(_BOUNDARY.format(re.escape(name)), re.IGNORECASE)
        if pattern.search(work):
            token = f"__fwv{len(placeholders)}__"
            placeholders[token] = name
            work = pattern.sub(token, work)
    work = work.replace("^", "**")
    try:
        tree = ast.parse(work.strip(), mode="eval")
    except SyntaxError:
        tree = None
    unknown = _unknown_in(text, tree, placeholders)
    if unknown == _MALFORMED:
        raise DataError(
            f"data {text!r}: not an expression over outputs (names, numbers, + - * / ^, "
            "parentheses, log/exp/sqrt/abs)"
        )
    if unknown is not None:
        raise DataError(
            f"data {text!r}: " + unknown_name_message("output", unknown, names)
        ) from None
    assert tree is not None

    def evaluate(node: ast.AST, env: Mapping[str, Any]) -> Any:
        if isinstance(node, ast.Expression):
            return evaluate(node.body, env)
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
            return float(node.value)
        if isinstance(node, ast.Name):
            return env[placeholders[node.id]]
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            value = evaluate(node.operand, env)
            return -value if isinstance(node.op, ast.USub) else value
        if isinstance(node, ast.BinOp):
            a, b = evaluate(node.left, env), evaluate(node.right, env)
            ops: dict[type, Callable[[Any, Any], Any]] = {
                ast.Add: np.add,
                ast.Sub: np.subtract,
                ast.Mult: np.multiply,
                ast.Div: np.divide,
                ast.Pow: np.power,
            }
            return ops[type(node.op)](a, b)
        if isinstance(node, ast.Call):
            assert isinstance(node.func, ast.Name)
            return _FUNCTIONS[node.func.id](evaluate(node.args[0], env))
        raise AssertionError(node)  # _unknown_in accepted only the nodes above

    return list(placeholders.values()), lambda env: evaluate(tree, env)


_MALFORMED = "\x00malformed"


def _unknown_in(text: str, tree, placeholders: dict[str, str]) -> str | None:
    """The first part of `text` that is not a known output, number or operator; None if
    the expression is well formed."""
    if tree is not None:
        ok = True
        for node in ast.walk(tree):
            if isinstance(node, ast.Name):
                if node.id not in placeholders and node.id not in _FUNCTIONS:
                    return node.id
            elif isinstance(node, ast.Call):
                ok = (
                    isinstance(node.func, ast.Name)
                    and node.func.id in _FUNCTIONS
                    and len(node.args) == 1
                    and not node.keywords
                )
            elif isinstance(node, ast.Constant):
                ok = isinstance(node.value, (int, float)) and not isinstance(node.value, bool)
            elif not isinstance(
                node,
                (
                    ast.Expression,
                    ast.BinOp,
                    ast.UnaryOp,
                    ast.Load,
                    ast.Add,
                    ast.Sub,
                    ast.Mult,
                    ast.Div,
                    ast.Pow,
                    ast.USub,
                    ast.UAdd,
                ),
            ):
                ok = False
            if not ok:
                break
        if ok and placeholders:
            return None
    for part in re.split(r"[-+*/^(),]", text):
        part = part.strip()
        if not part or re.fullmatch(r"[0-9.eE]+", part) or part in _FUNCTIONS:
            continue
        if not any(part.lower() == name.lower() for name in placeholders.values()):
            return part
    return _MALFORMED


def _model_times(index: pd.Index, time_map, label: str) -> np.ndarray:
    """The model times of a data index: numbers as they are, dates through `time_map`."""
    if isinstance(index, pd.DatetimeIndex) or (
        len(index) and isinstance(index[0], (pd.Timestamp, np.datetime64))
    ):
        if time_map is None:
            raise DataError(
                f"data {label!r} is indexed by dates: pass time_map (e.g. {{60: '2018-10-01'}}, "
                "month 60 is that date) to put them on the model's time axis"
            )
        dates = pd.DatetimeIndex(index)
        if callable(time_map):
            return np.asarray(time_map(dates), dtype=float)
        from .data.plausibility import model_month

        if isinstance(time_map, Mapping):
            if len(time_map) != 1:
                raise DataError(
                    "time_map as a mapping holds one pair {model month: date}, "
                    f"not {len(time_map)}"
                )
            ((month, date),) = time_map.items()
            origin = pd.Timestamp(date) - pd.DateOffset(months=int(month))
            if float(month) != int(month):
                raise DataError(f"time_map's model month must be whole, not {month!r}")
        else:
            origin = pd.Timestamp(time_map)
        return np.array([model_month(d, origin) for d in dates], dtype=float)
    try:
        return np.asarray(index, dtype=float)
    except (TypeError, ValueError) as err:
        raise DataError(
            f"data {label!r}: its index must be model times (numbers) or dates"
        ) from err


def _period_ends(label: str, frame: pd.DataFrame) -> pd.Index:
    """The end of each period row: the day after period_end for dates (a calendar year
    2017-01-01..2017-12-31 is [2017-01-01, 2018-01-01)), as `flywheel_sd.data.plausibility`
    reads reference rows; a point (``sampling == "point"``) ends where it starts."""
    ends = frame["period_end"]
    if pd.api.types.is_datetime64_any_dtype(ends):
        ends = ends + pd.Timedelta(days=1)
    if "sampling" in frame.columns:
        ends = ends.where(frame["sampling"] != "point", frame["period_start"])
    return pd.Index(ends)


def _series_and_sigma(label: str, spec) -> tuple[pd.Series, Any]:
    if isinstance(spec, pd.DataFrame) and {"period_start", "period_end"} <= set(spec.columns):
        if "value" not in spec.columns:
            raise DataError(f"data {label!r}: a DataFrame needs a 'value' column")
        series = pd.Series(spec["value"].to_numpy(), index=pd.Index(spec["period_start"]))
        given: Any = spec["sigma"].to_numpy() if "sigma" in spec.columns else None
        return series, given
    if isinstance(spec, tuple) and len(spec) == 2:
        series, sigma = spec
    elif isinstance(spec, pd.DataFrame):
        if "value" not in spec.columns:
            raise DataError(f"data {label!r}: a DataFrame needs a 'value' column")
        series = spec["value"]
        sigma = spec["sigma"] if "sigma" in spec.columns else None
    else:
        series, sigma = spec, None
    if not isinstance(series, pd.Series):
        raise DataError(
            f"data {label!r}: expected a pandas Series (or (series, sigma), or a DataFrame "
            f"with 'value' and 'sigma'), not {type(series).__name__}"
        )
    return series, sigma


def _targets(
    model: Model, data, weights, time_map, payoff, span, outputs, aggregate=None
) -> list[_Target]:
    items = list(data.items()) if isinstance(data, Mapping) else list(data)
    if not items:
        raise DataError("no data to calibrate to")
    names = _recorded(model)
    labels = []
    targets = []
    for key, spec in items:
        if callable(key):
            label = getattr(key, "__name__", "callable")
            variables = outputs
            vector_fn, frame_fn = None, key
        elif isinstance(key, str):
            label = key
            variables, vector_fn = _parse_expression(key, names)
            for v in variables:
                if model.dims_of(v):
                    raise DataError(
                        f"data {label!r}: {v!r} is subscripted; fit one element with a "
                        f"callable, e.g. lambda run: run['{v}[...]']"
                    )
            frame_fn = None
        else:
            raise DataError(f"data keys are output names, expressions or callables, not {key!r}")
        labels.append(label)
        series, sigma = _series_and_sigma(label, spec)
        if len(series) == 0:
            raise DataError(f"data {label!r} is empty")
        values = np.asarray(series.values, dtype=float)
        times = _model_times(series.index, time_map, label)
        ends = None
        if isinstance(spec, pd.DataFrame) and "period_end" in spec.columns:
            ends = _model_times(_period_ends(label, spec), time_map, label)
            if not np.all(np.isfinite(ends)) or np.any(ends < times):
                raise DataError(f"data {label!r}: a period ends before it starts")
        bad = ~np.isfinite(values)
        if bad.any():
            raise DataError(
                f"data {label!r}: {bad.sum()} of {len(values)} values are not finite "
                f"(first at time {series.index[np.flatnonzero(bad)[0]]}); drop them"
            )
        if not np.all(np.isfinite(times)):
            raise DataError(f"data {label!r}: its times must be finite numbers")
        t0, t1 = span
        last = times if ends is None else ends
        outside = (times < t0 - 1e-9) | (last > t1 + 1e-9)
        if outside.all():
            raise DataError(
                f"data {label!r} (times {times.min():g} to {times.max():g}) does not overlap "
                f"the run's times {t0:g} to {t1:g}"
                + ("; dates need a time_map" if time_map is None else "; check time_map")
            )
        if outside.any():
            raise DataError(
                f"data {label!r}: {outside.sum()} of {len(times)} points lie outside the "
                f"run's times {t0:g} to {t1:g} (first at {times[outside][0]:g}); trim the "
                "series or change FINAL TIME"
            )
        if payoff == "log" and np.any(values <= 0):
            raise DataError(f"data {label!r}: the log payoff needs positive values")
        sigma_given = sigma is not None
        if sigma is None:
            s = np.ones_like(values)
        elif isinstance(sigma, pd.Series):
            s = np.asarray(sigma.reindex(series.index).values, dtype=float)
        else:
            s = np.broadcast_to(np.asarray(sigma, dtype=float), values.shape).copy()
        if not (np.all(np.isfinite(s)) and np.all(s > 0)):
            raise DataError(f"data {label!r}: sigma must be positive and finite")
        targets.append(
            _Target(label, list(variables or []), vector_fn, frame_fn, times, values, s, 1.0,
                    sigma_given, ends)
        )  # fmt: skip
    for key, w in (weights or {}).items():
        if key not in labels:
            raise ParameterError(unknown_name_message("weights key", str(key), labels))
        if not (isinstance(w, (int, float)) and math.isfinite(w) and w > 0):
            raise ParameterError(f"weight of {key!r} must be a positive number, not {w!r}")
        targets[labels.index(key)].weight = float(w)
    for key, how in (aggregate or {}).items():
        if key not in labels:
            raise ParameterError(unknown_name_message("aggregate key", str(key), labels))
        target = targets[labels.index(key)]
        if isinstance(how, (tuple, list)) and len(how) == 2 and how[0] == "mean":
            if target.vector_fn is None:
                raise DataError(
                    f"data {key!r}: a weighted mean needs an output or expression as its key, "
                    "not a callable"
                )
            weight_vars, target.weight_fn = _parse_expression(str(how[1]), names)
            for v in weight_vars:
                if model.dims_of(v):
                    raise DataError(f"data {key!r}: the weight {v!r} is subscripted")
            target.variables += [v for v in weight_vars if v not in target.variables]
            how = "mean"
        elif how not in ("mean", "sum"):
            raise ParameterError(
                f"aggregate of {key!r} is 'mean', 'sum' or ('mean', WEIGHT), not {how!r}"
            )
        if target.ends is None:
            raise DataError(
                f"data {key!r}: aggregate needs periods (a DataFrame with period_start, "
                "period_end and value)"
            )
        if how == "sum" and np.any(target.ends <= target.times):
            raise DataError(f"data {key!r}: a sum over a period needs periods, not points")
        target.aggregate = how
    if len(set(labels)) != len(labels):
        raise DataError("two data series have the same name")
    return targets


# -- parameters -------------------------------------------------------------------------
def _bounds(model: Model, params) -> tuple[list[str], np.ndarray, np.ndarray]:
    if isinstance(params, str):
        params = [params]
    items = list(params.items()) if isinstance(params, Mapping) else [(p, None) for p in params]
    if not items:
        raise ParameterError("no parameters to calibrate")
    constants = model.constants
    names, lo, hi = [], [], []
    for name, given in items:
        real = _constant_name(model, str(name), constants)
        documented = model.ranges.get(real, (math.nan, math.nan))
        if given is None:
            a, b = documented
            if math.isnan(a) or math.isnan(b):
                raise ParameterError(
                    f"{real!r} has no documented range{' on one side' if a == a or b == b else ''}"
                    "; give its bounds: params={" + repr(real) + ": (low, high)}"
                )
        else:
            try:
                a, b = (float(v) for v in given)
            except (TypeError, ValueError) as err:
                raise ParameterError(
                    f"bounds of {real!r} must be (low, high), not {given!r}"
                ) from err
            da, db = documented
            if (not math.isnan(da) and a < da) or (not math.isnan(db) and b > db):
                raise ParameterError(
                    f"bounds [{a:g}, {b:g}] of {real!r} go outside its documented range "
                    f"[{_g(da)}, {_g(db)}]"
                )
        if not (math.isfinite(a) and math.isfinite(b) and a < b):
            raise ParameterError(
                f"bounds of {real!r} must be finite with low < high, not [{a}, {b}]"
            )
        if real in names:
            raise ParameterError(f"{real!r} is given twice")
        names.append(real)
        lo.append(a)
        hi.append(b)
    return names, np.array(lo), np.array(hi)


def _g(value: float) -> str:
    return "" if math.isnan(value) else f"{value:g}"


def _constant_name(model: Model, name: str, constants: list[str]) -> str:
    lowered = {c.lower(): c for c in constants}
    py = {model.namespace[c]: c for c in constants}
    real = lowered.get(name.lower()) or py.get(name)
    if real is None:
        if name in model.namespace or name.lower() in {n.lower() for n in model.namespace}:
            raise ParameterError(f"{name!r} is not a constant of the model: it cannot be fitted")
        raise ParameterError(
            f"{model.path.name}: " + unknown_name_message("parameter", name, constants)
        )
    if model.dims_of(real):
        raise ParameterError(f"{real!r} is subscripted; calibrate scalar constants only")
    return real


# -- running populations ----------------------------------------------------------------
class _Batch:
    """Runs a population of parameter sets (rows) and returns the targets' residuals."""

    def __init__(self, model, base, names, options, targets, payoff) -> None:
        from .sweeps.chunk import column_names, expected_times

        self.model, self.base, self.names, self.options = model, base, names, options
        self.targets, self.payoff = targets, payoff
        self.times = expected_times(model, options)
        variables: list[str] = []
        for t in targets:
            variables += [v for v in t.variables if v not in variables]
        self.variables = [model.real_name(v) for v in variables]
        self.columns = column_names(model, self.variables)
        self.n_runs = 0
        self._compiled = self._setup_compiled()
        # interpolation matrices: model values at the data times from the saved times
        self.interp = [
            _interp_matrix(self.times, t.times)
            if t.ends is None
            else _period_matrix(self.times, t.times, t.ends, t.aggregate)
            for t in targets
        ]
        self.scale = [t.weight / t.sigma for t in targets]

    def _setup_compiled(self):
        from .engine import NotCompilable
        from .engine import run as single

        try:
            cm = self.model.compiled(self.base)
            backend = single.choose_backend(cm, None, runs=1000)
            mod = cm.module(backend)
            params = self.model.check_params(self.base, "off")
            index = []
            for real in self.variables:
                cols = cm.program.column_of.get(real)
                if cols is None:
                    raise NotCompilable(f"{real!r} is not a recorded variable")
                index += cols
            for name in self.names:
                if name not in cm.program.params:
                    raise NotCompilable(f"{name!r} is not a constant of the compiled model")
        except NotCompilable as reason:
            from .sweeps.chunk import EnsembleFallbackWarning

            warnings.warn(
                f"calibration runs member by member on the PySD path (slow): the compiled "
                f"engine does not cover it ({reason})",
                EnsembleFallbackWarning,
                stacklevel=4,
            )
            return None
        o = self.options
        ts = o.return_timestamps
        settings = {
            "method": o.method,
            "rtol": o.rtol,
            "atol": o.atol,
            "max_step": o.max_step,
            "control": {"final_time": o.final_time, "time_step": o.time_step,
                        "saveper": o.saveper},
            "return_timestamps": list(ts) if isinstance(ts, tuple) else ts,
            "breakpoints": list(o.breakpoints),
            "columns": index,
        }  # fmt: skip
        lockstep = backend == "python" and not cm.program.series
        return cm, mod, params, settings, lockstep

    def outputs(self, X: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """{column: (n, n_times)} and the ok mask of the population X (n, k)."""
        X = np.atleast_2d(np.asarray(X, dtype=float))
        self.n_runs += len(X)
        if self._compiled is not None:
            from .engine.ensemble import run_members

            cm, mod, params, settings, lockstep = self._compiled
            if len(X) == 1 and settings["method"] in ("euler", "rk4"):
                return self._single(X[0])
            _, out, ok, _, _ = run_members(
                cm, mod, params, self.names, X, lockstep=lockstep, **settings
            )
            return {c: out[:, :, j] for j, c in enumerate(self.columns)}, ok
        from .sweeps.chunk import STATUS_OK, run_chunk

        result = run_chunk(
            self.model, self.base, self.names, X, self.options, self.variables, self.times,
            vectorize=False,
        )  # fmt: skip
        return result.columns, result.status == STATUS_OK

    def _single(self, x: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """One fixed-step member on the single-run driver: a batch of one pays the
        members loop's thread start-up (milliseconds on a busy machine) for nothing."""
        from .engine import NotCompilable
        from .engine import run as single
        from .engine.ensemble import constants_matrix

        cm, mod, params, settings, _ = self._compiled
        index = settings["columns"]
        c = constants_matrix(cm, params, self.names, x[None, :], settings["control"])[0]
        try:
            _, out, _ = single.fixed_step(
                cm, mod, c, settings["method"], settings["return_timestamps"]
            )
        except (FlywheelError, NotCompilable):  # a failed run: no outputs, as in a batch
            nan = np.full((1, len(self.times)), np.nan)
            return dict.fromkeys(self.columns, nan), np.zeros(1, dtype=bool)
        return {col: out[None, :, i] for col, i in zip(self.columns, index)}, np.ones(
            1, dtype=bool
        )

    def predictions(self, X: np.ndarray) -> list[np.ndarray]:
        """Per target, the model's values at the data times, (n, n_points)."""
        cols, ok = self.outputs(X)
        n = len(ok)
        preds = []
        for target, W in zip(self.targets, self.interp):
            if target.frame_fn is not None:
                rows = []
                for m in range(n):
                    frame = pd.DataFrame(
                        {c: v[m] for c, v in cols.items()},
                        index=pd.Index(self.times, name="time"),
                    )
                    rows.append(_frame_values(target, frame, self.times))
                full = np.array(rows).reshape(n, len(self.times))
            else:
                assert target.vector_fn is not None
                with np.errstate(all="ignore"):
                    full = np.broadcast_to(
                        np.asarray(target.vector_fn(cols), dtype=float), (n, len(self.times))
                    )
            if target.weight_fn is not None:  # (∫ y w) / (∫ w) over each period
                with np.errstate(all="ignore"):
                    w = np.broadcast_to(
                        np.asarray(target.weight_fn(cols), dtype=float), (n, len(self.times))
                    )
                    pred = ((full * w) @ W.T) / (w @ W.T)
            else:
                pred = full @ W.T
            pred[~ok] = np.nan
            preds.append(pred)
        return preds

    def residuals(self, X: np.ndarray) -> np.ndarray:
        """Weighted residuals, (n, N): what the payoff sums (squared or absolute)."""
        parts = []
        for target, pred, scale in zip(self.targets, self.predictions(X), self.scale):
            with np.errstate(all="ignore"):
                if self.payoff == "log":
                    diff = np.log(np.maximum(pred, 1e-300)) - np.log(target.values)
                else:
                    diff = pred - target.values
            parts.append(diff * scale)
        r = np.concatenate(parts, axis=1)
        r[~np.isfinite(r)] = PENALTY
        return r


def _frame_values(target: _Target, frame: pd.DataFrame, times: np.ndarray) -> np.ndarray:
    assert target.frame_fn is not None
    value = target.frame_fn(frame)
    if isinstance(value, pd.Series):
        value = value.reindex(frame.index)
    out = np.asarray(value, dtype=float)
    if out.shape != times.shape:
        raise DataError(
            f"data {target.label!r}: the callable must return one value per run time "
            f"({len(times)}), not shape {out.shape}"
        )
    return out


def _period_matrix(grid: np.ndarray, starts, ends, aggregate: str) -> np.ndarray:
    """W with W @ y = the integral ("sum") or mean ("mean") of y, linearly interpolated
    between the run's times, over each [start, end] (the trapezoidal rule on the run's
    times inside, as `flywheel_sd.data.plausibility.period_value`); a point is y there."""
    W = np.zeros((len(starts), len(grid)))
    for i, (a, b) in enumerate(zip(starts, ends)):
        if b <= a:
            W[i] = _interp_matrix(grid, np.array([a]))[0]
            continue
        nodes = np.concatenate([[a], grid[(grid > a) & (grid < b)], [b]])
        at = _interp_matrix(grid, nodes)
        widths = np.diff(nodes)
        W[i] = ((at[:-1] + at[1:]) * (widths[:, None] / 2)).sum(axis=0)
        if aggregate == "mean":
            W[i] /= b - a
    return W


def _interp_matrix(grid: np.ndarray, at: np.ndarray) -> np.ndarray:
    """W with W @ y = y linearly interpolated from `grid` at the times `at`."""
    W = np.zeros((len(at), len(grid)))
    for i, t in enumerate(at):
        j = int(np.searchsorted(grid, t, side="right")) - 1
        j = min(max(j, 0), len(grid) - 1)
        if j == len(grid) - 1 or abs(grid[j] - t) < 1e-9:
            W[i, j] = 1.0
        else:
            f = (t - grid[j]) / (grid[j + 1] - grid[j])
            W[i, j], W[i, j + 1] = 1 - f, f
    return W


# -- the optimisation -------------------------------------------------------------------
class _Problem:
    """The payoff over the unit cube u ∈ [0, 1]^k (x = lo + u (hi - lo))."""

    def __init__(self, batch: _Batch, lo: np.ndarray, hi: np.ndarray, payoff: str):
        self.batch, self.lo, self.hi, self.kind = batch, lo, hi, payoff
        self.span = hi - lo
        o = batch.options
        self.h = 1e-6 if o.method in ("euler", "rk4") else max(1e-6, math.sqrt(o.rtol))
        self.best_u: np.ndarray | None = None
        self.best_f = math.inf

    def x(self, U: np.ndarray) -> np.ndarray:
        return self.lo + np.clip(U, 0.0, 1.0) * self.span

    def residuals(self, U: np.ndarray) -> np.ndarray:
        U = np.atleast_2d(U)
        R = self.batch.residuals(self.x(U))
        f = self.value(R)
        i = int(np.argmin(f))
        if f[i] < self.best_f:
            self.best_f, self.best_u = float(f[i]), np.array(U[i], dtype=float)
        return R

    def value(self, R: np.ndarray) -> np.ndarray:
        return np.abs(R).sum(axis=1) if self.kind == "robust" else (R**2).sum(axis=1)

    def payoffs(self, U: np.ndarray) -> np.ndarray:
        return self.value(self.residuals(U))

    def jacobian(self, u: np.ndarray, free: np.ndarray | None = None):
        """Central differences of the residuals in u (one batch), columns `free`. The step
        is 1e-6 of each parameter's range for fixed-step runs (smooth in the parameters);
        adaptive runs carry step-control noise of about rtol, so they take sqrt(rtol)."""
        free = np.arange(len(u)) if free is None else free
        h = self.h
        plus = np.repeat(u[None, :], len(free), axis=0)
        minus = plus.copy()
        for j, p in enumerate(free):
            plus[j, p] = min(u[p] + h, 1.0)
            minus[j, p] = max(u[p] - h, 0.0)
        R = self.residuals(np.vstack([plus, minus]))
        step = plus[np.arange(len(free)), free] - minus[np.arange(len(free)), free]
        return ((R[: len(free)] - R[len(free) :]) / step[:, None]).T


def _local(problem: _Problem, u0: np.ndarray, free: np.ndarray, fixed: dict[int, float],
           max_nfev: int | None, tight: bool = True):  # fmt: skip
    """Minimise over the `free` coordinates (others held at `fixed`); (u, payoff, ok)."""
    from scipy.optimize import least_squares, minimize

    minimize_: Any = minimize  # SciPy's stubs reject callables typed by inference
    least_squares_: Any = least_squares

    def full(v):
        u = np.array(u0, dtype=float)
        u[free] = v
        for i, val in fixed.items():
            u[i] = val
        return u

    start = np.clip(np.asarray(u0, dtype=float)[free], 0.0, 1.0)
    tol = 1e-12 if tight else 1e-8
    if problem.kind == "robust":
        res = minimize_(
            lambda v: float(problem.payoffs(full(v)[None, :])[0]),
            start,
            method="Powell",
            bounds=[(0.0, 1.0)] * len(free),
            options={"xtol": 1e-10 if tight else 1e-7, "ftol": tol,
                     "maxfev": max_nfev or 4000 * len(free)},
        )  # fmt: skip
        return full(res.x), float(res.fun), bool(res.success)
    res = least_squares_(
        lambda v: problem.residuals(full(v)[None, :])[0],
        start,
        jac=lambda v: problem.jacobian(full(v), free),
        bounds=(0.0, 1.0),
        method="trf",
        ftol=tol,
        xtol=tol,
        gtol=tol,
        max_nfev=max_nfev or 100 * len(free),
    )
    return full(res.x), float(2 * res.cost), res.status > 0


def _global(problem: _Problem, method: str, k: int, seed, u0, popsize: int, maxiter: int):
    """Candidate starting points for the polish, best first."""
    if method == "least_squares":
        return [u0]
    if method == "de+least_squares":
        from scipy.optimize import differential_evolution

        evolve: Any = differential_evolution

        init: Any = "latinhypercube"
        if u0 is not None:
            rng = np.random.default_rng(seed)
            pop = rng.random((max(popsize * k, 5), k))
            pop[0] = u0
            init = pop
        res = evolve(
            lambda U: problem.payoffs(np.asarray(U).T),
            [(0.0, 1.0)] * k,
            vectorized=True,
            updating="deferred",
            popsize=popsize,
            maxiter=maxiter,
            tol=1e-3,
            seed=seed,
            polish=False,
            init=init,
        )
        return [np.asarray(res.x)]
    from scipy.stats import qmc

    U = qmc.LatinHypercube(d=k, seed=seed).random(max(popsize * k, 20))
    if u0 is not None:
        U = np.vstack([u0[None, :], U])
    f = problem.payoffs(U)
    order = np.argsort(f)
    return [U[i] for i in order[:3]]


def _profile(problem: _Problem, u_best: np.ndarray, f_best: float, i: int, side: int,
             delta: float, guess: float):  # fmt: skip
    """Where the profile payoff of coordinate i rises by `delta` on `side` (u units);
    (u, open): open is True if it stays below up to the bound."""
    from scipy.optimize import brentq

    k = len(u_best)
    free = np.array([j for j in range(k) if j != i], dtype=int)
    warm = {"u": u_best.copy()}

    def excess(v: float) -> float:
        if len(free) == 0:
            u = u_best.copy()
            u[i] = v
            return float(problem.payoffs(u[None, :])[0]) - f_best - delta
        u, f, _ = _local(problem, warm["u"], free, {i: v}, None, tight=False)
        if f > f_best + delta and not np.array_equal(warm["u"], u_best):
            # a warm start can strand the others at a bound; the optimum's is the check
            u2, f2, _ = _local(problem, u_best, free, {i: v}, None, tight=False)
            if f2 < f:
                u, f = u2, f2
        warm["u"] = u
        return f - f_best - delta

    edge = 1.0 if side > 0 else 0.0
    step = max(min(guess, 0.5), 1e-6)
    inner, v = u_best[i], u_best[i]
    for _ in range(40):
        v = float(np.clip(v + side * step, 0.0, 1.0)) if v != edge else edge
        if excess(v) > 0:
            break
        if v == edge:
            return edge, True
        inner, step = v, step * 2
    else:  # pragma: no cover - 40 doublings of a step ≥ 1e-6 pass any edge
        return edge, True
    warm["u"] = u_best.copy()
    root = brentq(excess, min(inner, v), max(inner, v), xtol=1e-6, rtol=1e-10, maxiter=60)
    return float(root), False


def calibrate(
    model_or_scenario: Any,
    data: Mapping | Iterable,
    params: Mapping[str, Any] | Iterable[str] | str,
    *,
    weights: Mapping[str, float] | None = None,
    payoff: str = "wsse",
    method: str = "de+least_squares",
    time_map: Any = None,
    seed: int | None = None,
    start: Mapping[str, float] | None = None,
    integrator: str = "euler",
    outputs: Iterable[str] | None = None,
    aggregate: Mapping[str, Any] | None = None,
    popsize: int = 15,
    maxiter: int = 100,
    max_nfev: int | None = None,
    profile: bool = True,
    mcmc_steps: int = 0,
    mcmc_walkers: int | None = None,
    identifiability: bool = True,
    **simulate_options: Any,
) -> Calibration:
    """Fit constants of a model (or scenario) to data; bounds by the χ² profile likelihood.

    Parameters
    ----------
    model_or_scenario : Model, model file, scenario or scenario name
        What to run; a scenario's own parameters and policies stay as its base.
    data : mapping (or pairs) of output -> series
        Keys: a model output (Vensim name, any case), a small expression over outputs
        (``"Platform Revenue*12"``, ``"GMV / Orders"``; + - * / ^, log, exp, sqrt, abs), or a
        callable taking the run's DataFrame (every recorded variable, or `outputs`) and
        returning one value per run time (e.g. a 12-month rolling sum for annual flows).
        Values: a pandas Series indexed by model time, or by dates with `time_map`; a pair
        (series, sigma) with sigma a number, an array or a Series over the same index; or a
        DataFrame with ``value`` and ``sigma`` columns. The model is interpolated linearly
        at the data times, which must lie within the run. Periods: a DataFrame shaped like
        `flywheel_sd.reference_data` (``period_start``, ``period_end``, ``value``, optional
        ``sigma`` and ``sampling``) is compared with the model's mean over each period, or
        its integral with `aggregate` "sum" (annual revenue from a monthly flow), or its mean
        weighted by another output with ``("mean", "GMV")`` (a yearly share of sales, as
        `flywheel_sd.data.plausibility` reads a share); a date
        period ends the day after ``period_end``.
    params : names, or mapping name -> (low, high) or None
        The constants to fit. Bounds default to the documented ranges (``model.ranges``);
        given bounds must lie within them.
    weights : mapping label -> float, optional
        A factor on each series' residuals (the key as in `data`, a callable's __name__).
    payoff : {"wsse", "log", "robust"}
        Σ (w (model - data)/sigma)², the same on log values (sigma relative), or
        Σ |w (model - data)/sigma|.
    method : {"de+least_squares", "lhs+least_squares", "least_squares"}
        Global start (differential evolution with each generation one batch of runs, or the
        best of a Latin hypercube evaluated as one batch) then ``least_squares`` within the
        bounds (Powell for "robust"); "least_squares" polishes `start` only.
    time_map : date, {month: date} or callable, optional
        The calendar date of model month 0, or one pair (``{60: "2018-10-01"}``), or a
        function of a DatetimeIndex returning model times. Models on a monthly clock.
    seed : int, optional
        Seeds the global start (and MCMC): the same seed gives the same result.
    start : mapping name -> value, optional
        A starting point: included in the global start and polished as well as its best
        point (the better polish wins); the only start of "least_squares", whose default is
        the middle of the bounds.
    integrator : str
        The integration method of each run (default Euler, as Vensim; see `simulate`).
    outputs : names, optional
        Variables a callable in `data` reads (default: every recorded variable).
    aggregate : mapping label -> "mean", "sum" or ("mean", WEIGHT), optional
        How period data read the model (default "mean"; "sum" for flows; the mean weighted
        by the output or expression WEIGHT for a share of a flow).
    popsize, maxiter : int
        Global start: population per parameter and generations (DE); LHS uses popsize * k
        points (at least 20).
    max_nfev : int, optional
        Budget of the polish; running out raises `ConvergenceError` with the best point.
    profile : bool
        Compute the χ² profile bounds (else the bounds are the Jacobian's ±1.96 sigma).
    mcmc_steps, mcmc_walkers : int
        With ``mcmc_steps > 0``, sample the posterior (uniform prior on the bounds, the
        payoff's likelihood) with emcee; the samples are in ``result.samples``.
    identifiability : bool
        Warn (`IdentifiabilityWarning`) about flat profiles and |correlation| > 0.95.
    **simulate_options
        final_time, time_step, saveper, rtol, atol, max_step, as `simulate` takes them.

    Raises
    ------
    ParameterError, DataError, ConvergenceError (FlywheelError subclasses), one line each.
    """
    from .engine.simulate import check_method, simulate
    from .sweeps.chunk import RunOptions
    from .sweeps.sweep import _resolve_target

    began = _time.perf_counter()
    if payoff not in PAYOFFS:
        raise ParameterError(unknown_name_message("payoff", str(payoff), PAYOFFS))
    if method not in METHODS:
        raise ParameterError(unknown_name_message("calibration method", str(method), METHODS))
    for key in simulate_options:
        if key not in _SIMULATE_OPTIONS:
            raise ParameterError(unknown_name_message("calibrate option", key, _SIMULATE_OPTIONS))
    integrator = check_method(integrator)
    model, base, breaks, scenario_name = _resolve_target(model_or_scenario, "off")
    scenario_obj = None
    if scenario_name is not None:
        if hasattr(model_or_scenario, "derive"):
            scenario_obj = model_or_scenario
        else:
            from . import scenarios

            scenario_obj = scenarios.get(model_or_scenario)
    names, lo, hi = _bounds(model, params)
    base = {k: v for k, v in base.items() if model.real_name(k) not in names}
    settings = model.time_settings()
    final = simulate_options.get("final_time")
    span = (settings["initial_time"], settings["final_time"] if final is None else float(final))
    items = list(data.items()) if isinstance(data, Mapping) else list(data)
    out_vars = list(outputs) if outputs is not None else None
    if out_vars is None and any(callable(key) for key, _ in items):
        out_vars = [n for n in _recorded(model) if n in _all_recorded(model)]
    targets = _targets(model, items, weights, time_map, payoff, span, out_vars, aggregate)
    options = RunOptions(
        method=integrator,
        rtol=float(simulate_options.get("rtol", 1e-6)),
        atol=float(simulate_options.get("atol", 1e-6)),
        max_step=simulate_options.get("max_step"),
        final_time=simulate_options.get("final_time"),
        time_step=simulate_options.get("time_step"),
        saveper=simulate_options.get("saveper"),
        breakpoints=tuple(sorted(set(breaks))),
    )
    batch = _Batch(model, base, names, options, targets, payoff)
    problem = _Problem(batch, lo, hi, payoff)
    k = len(names)
    u0 = None
    if start is not None:
        u0 = np.full(k, 0.5)
        for key, value in start.items():
            real = _constant_name(model, str(key), model.constants)
            if real not in names:
                raise ParameterError(f"start gives {real!r}, which is not calibrated")
            j = names.index(real)
            if not lo[j] <= float(value) <= hi[j]:
                raise ParameterError(
                    f"start {real} = {value:g} is outside its bounds [{lo[j]:g}, {hi[j]:g}]"
                )
            u0[j] = (float(value) - lo[j]) / (hi[j] - lo[j])
    elif method == "least_squares":
        u0 = np.full(k, 0.5)

    # 1-2. global start, local polish
    candidates = _global(problem, method, k, seed, u0, popsize, maxiter)
    if u0 is not None and not any(np.array_equal(u0, c) for c in candidates):
        candidates.append(u0)  # a given start is polished too: the global start's best
        # point (by its unpolished payoff) may polish to a worse optimum than the start
    best: tuple[np.ndarray, float, bool] | None = None
    for cand in candidates:
        u, f, ok = _local(problem, cand, np.arange(k), {}, max_nfev)
        if best is None or f < best[1]:
            best = (u, f, ok)
    assert best is not None
    u_best, f_best, converged = best
    if problem.best_u is not None and problem.best_f < f_best:
        u_best, f_best = problem.best_u, problem.best_f
    x_best = problem.x(u_best[None, :])[0]
    if not converged:
        shown = ", ".join(f"{n} = {v:.6g}" for n, v in zip(names, x_best))
        err = ConvergenceError(
            f"the local optimiser did not converge within its budget (max_nfev={max_nfev}); "
            f"best so far: payoff {f_best:.6g} at {shown}"
        )
        err.best = dict(zip(names, map(float, x_best)))  # type: ignore[attr-defined]
        err.payoff = f_best  # type: ignore[attr-defined]
        raise err

    # 3. uncertainty
    n_points = sum(len(t.values) for t in targets)
    sigma_given = any(t.sigma_given for t in targets)
    q = CHI2_95 / 2 if payoff == "robust" else CHI2_95
    if sigma_given:
        scale = 1.0
    elif payoff == "robust":
        scale = f_best / max(n_points, 1)
    else:
        scale = f_best / max(n_points - k, 1)
    threshold = q * scale
    J = problem.jacobian(u_best)  # d r / d u: well scaled, whatever the units of x
    # Gauss-Newton: the Fisher information is JᵀJ per unit noise variance (Σ r²) or per
    # squared Laplace scale (Σ |r|); x = lo + u * span
    # (a tiny ridge keeps a singular JᵀJ invertible: a direction the data do not
    # constrain then gets a huge variance, so the correlation shows it, as it should)
    jtj = J.T @ J
    ridge = 1e-12 * max(float(np.trace(jtj)) / k, 1e-300)
    cov_u = np.linalg.inv(jtj + ridge * np.eye(k)) * (
        scale * scale if payoff == "robust" else scale
    )
    cov = cov_u * np.outer(problem.span, problem.span)
    std = np.sqrt(np.clip(np.diag(cov), 0, None))
    with np.errstate(all="ignore"):
        corr = cov / np.outer(std, std)
    corr[~np.isfinite(corr)] = np.nan
    np.fill_diagonal(corr, 1.0)
    rows = []
    for i in range(k):
        if profile:
            guess = std[i] * math.sqrt(q) / problem.span[i] if std[i] > 0 else 0.1
            guess = guess if math.isfinite(guess) and guess > 0 else 0.1
            ends = [_profile(problem, u_best, f_best, i, s, threshold, guess) for s in (-1, 1)]
            (ul, lopen), (uh, hopen) = ends
            low, high = lo[i] + ul * problem.span[i], lo[i] + uh * problem.span[i]
        else:
            half = math.sqrt(q) * std[i]
            low, high = max(lo[i], x_best[i] - half), min(hi[i], x_best[i] + half)
            lopen, hopen = low <= lo[i], high >= hi[i]
        rows.append((low, x_best[i], high, lo[i], hi[i], lopen, hopen, std[i]))
    bounds = pd.DataFrame(
        rows,
        index=pd.Index(names, name="parameter"),
        columns=["low", "best", "high", "prior_low", "prior_high", "low_open", "high_open",
                 "std"],
    )  # fmt: skip
    correlation = pd.DataFrame(corr, index=names, columns=names)
    if identifiability:
        _warn_identifiability(bounds, correlation)

    samples = None
    if mcmc_steps:
        beta = 1 / scale if payoff == "robust" else 1 / (2 * scale)  # log L = -beta payoff
        samples = _mcmc(problem, u_best, names, mcmc_steps, mcmc_walkers, seed, beta)

    # the fitted run and the residuals
    best_params = dict(zip(names, map(float, x_best)))
    run = simulate(
        model,
        {**base, **best_params},
        method=integrator,
        return_columns=batch.variables or None,
        range_check="off",
        breakpoints=list(options.breakpoints),
        **simulate_options,
    )
    preds = batch.predictions(x_best[None, :])
    residuals, fit_rows = {}, []
    R = batch.residuals(x_best[None, :])[0]
    pos = 0
    for target, pred in zip(targets, preds):
        model_values = pred[0]
        if payoff == "log":
            raw = np.log(np.maximum(model_values, 1e-300)) - np.log(target.values)
        else:
            raw = model_values - target.values
        weighted = R[pos : pos + len(raw)]
        pos += len(raw)
        residuals[target.label] = pd.DataFrame(
            {"data": target.values, "model": model_values, "sigma": target.sigma,
             "residual": raw, "weighted": weighted},
            index=pd.Index(target.times, name="time"),
        )  # fmt: skip
        if target.ends is not None:
            residuals[target.label].insert(0, "end", target.ends)
        err_ = model_values - target.values
        ss_tot = float(np.sum((target.values - target.values.mean()) ** 2))
        fit_rows.append(
            (
                len(raw),
                float(problem.value(weighted[None, :])[0]),
                float(np.sqrt(np.mean(err_**2))),
                1 - float(np.sum(err_**2)) / ss_tot if ss_tot > 0 else math.nan,
            )
        )
    fit = pd.DataFrame(
        fit_rows, index=[t.label for t in targets], columns=["n", "payoff", "rmse", "r2"]
    )
    return Calibration(
        params=best_params,
        payoff=float(f_best),
        payoff_kind=payoff,
        bounds=bounds,
        correlation=correlation,
        residuals=residuals,
        fit=fit,
        run=run,
        threshold=float(threshold),
        sigma_estimated=not sigma_given,
        method=method,
        n_runs=batch.n_runs,
        elapsed=_time.perf_counter() - began,
        samples=samples,
        extra={"scenario": scenario_obj, "model": str(model.path), "integrator": integrator},
    )


def _all_recorded(model: Model) -> set[str]:
    from .engine import NotCompilable

    try:
        return set(model.compiled().program.column_of)
    except NotCompilable:
        return set(model.namespace)


def _warn_identifiability(bounds: pd.DataFrame, correlation: pd.DataFrame) -> None:
    flat = [n for n, row in bounds.iterrows() if row["low_open"] and row["high_open"]]
    names = list(correlation.index)
    r = correlation.to_numpy(dtype=float)
    pairs = [
        f"{names[i]} ~ {names[j]} (r = {r[i, j]:+.3f})"
        for i in range(len(names))
        for j in range(i + 1, len(names))
        if abs(r[i, j]) > CORRELATION_LIMIT
    ]
    if flat:
        warnings.warn(
            f"not identified: the profile of {', '.join(map(repr, flat))} stays within the "
            "χ² threshold over its whole range (the data do not constrain it)",
            IdentifiabilityWarning,
            stacklevel=3,
        )
    if pairs:
        warnings.warn(
            f"not separately identified (|correlation| > {CORRELATION_LIMIT}): "
            + "; ".join(pairs),
            IdentifiabilityWarning,
            stacklevel=3,
        )


def _mcmc(problem: _Problem, u_best, names, steps, walkers, seed, beta):
    """Posterior samples with emcee: log p = -beta * payoff on the bounds (uniform prior);
    the walkers of a step are one batch of runs."""
    import emcee
    import xarray as xr

    k = len(names)
    n_walkers = walkers or max(2 * k + 2, 16)
    if n_walkers < 2 * k or n_walkers % 2:
        raise ParameterError(f"mcmc_walkers must be even and at least {2 * k}, not {n_walkers}")
    rng = np.random.default_rng(seed)

    def log_prob(U: np.ndarray) -> np.ndarray:
        U = np.atleast_2d(U)
        out = np.full(len(U), -np.inf)
        inside = np.all((U >= 0) & (U <= 1), axis=1)
        if inside.any():
            out[inside] = -beta * problem.payoffs(U[inside])
        return out

    p0 = np.clip(u_best + 1e-3 * rng.standard_normal((n_walkers, k)), 0, 1)
    sampler = emcee.EnsembleSampler(n_walkers, k, log_prob, vectorize=True)
    if seed is not None:
        sampler.random_state = np.random.RandomState(int(seed)).get_state()
    sampler.run_mcmc(p0, steps, progress=False)
    chain = sampler.get_chain()  # (steps, walkers, k)
    X = problem.lo + chain * problem.span
    return xr.Dataset(
        {n: (("draw", "chain"), X[:, :, j]) for j, n in enumerate(names)},
        attrs={
            "acceptance": float(np.mean(sampler.acceptance_fraction)),
            "note": ("uniform prior on the calibration bounds; discard a burn-in before use"),
        },
    ).transpose("chain", "draw")
