"""A scenario is data: a name, a description, parameter overrides, optionally a model file.

Overrides are constants, time-bound policies (`Policy`: a value from `start` to `end`, the
model's own value outside), or time series (`pandas.Series` over time). Scenarios are read
from and written to TOML files (TOML: Python reads it without a dependency, it has comments
and no indentation traps, and it maps one-to-one onto this data).
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import tomli_w
import xarray as xr

from ..engine.model import Model, load
from ..errors import FlywheelError, ParameterError


@dataclass(frozen=True)
class Policy:
    """`value` holds from `start` to `end` (exclusive); the model's own value elsewhere."""

    value: float
    start: float
    end: float = math.inf

    def __post_init__(self):
        for key in ("value", "start"):
            if not isinstance(getattr(self, key), (int, float)) or not math.isfinite(
                getattr(self, key)
            ):
                raise ParameterError(
                    f"policy {key} must be a finite number, not {getattr(self, key)!r}"
                )
        if not isinstance(self.end, (int, float)) or math.isnan(self.end):
            raise ParameterError(f"policy end must be a number, not {self.end!r}")
        if self.end <= self.start:
            raise ParameterError(
                f"policy ends (t={self.end:g}) before it starts (t={self.start:g})"
            )

    def series(self, base: Any, t0: float, t1: float) -> pd.Series:
        """The policy as a step-shaped time series (right-continuous, as STEP is)."""
        value = base * 0 + self.value if isinstance(base, xr.DataArray) else self.value
        times, values = [], []
        if self.start > t0:
            times += [t0, self.start]
            values += [base, base]
        times.append(min(max(self.start, t0), t1))
        values.append(value)
        if self.end < t1:
            times += [self.end, self.end]
            values += [value, base]
        times.append(t1)
        values.append(values[-1])
        return pd.Series(values, index=np.asarray(times, dtype=float))

    def to_dict(self) -> dict:
        out = {"value": self.value, "start": self.start}
        if math.isfinite(self.end):
            out["end"] = self.end
        return out


#: How the name of a constant that holds a policy's start or end time ends: a lever's
#: companions are "<stem> Start Time" and "<stem> End Time" (or "<stem> Stop Time"), the
#: stem a run of words of the lever's name (Seller Deposit: Deposit Start Time and Deposit
#: End Time; Ad Budget: Ad Stop Time; Membership Fee: Membership Start Time).
START_SUFFIXES = (" Start Time",)
END_SUFFIXES = (" End Time", " Stop Time")


def policy_companions(model: Model, lever: str) -> tuple[str | None, str | None]:
    """The constants of `model` that say when `lever`'s policy starts and ends (None where
    there is none). A companion is named "<stem>" + one of `START_SUFFIXES` or
    `END_SUFFIXES`, the stem a run of the lever's words, and the model switches the lever
    with it: some equation reads the lever and the companion, directly or through a switch
    variable that reads nothing but such time constants and Time (Effective Deposit =
    Seller Deposit * Deposit Policy Active). So Ad Budget has Ad Stop Time, which stops its
    spending, but Ad Cost Shock Size does not. Of the stems that name any, the one naming
    most wins, then the longest, then the last (the head noun). Constants named "... Time"
    (times and durations) have none."""
    real = model.real_name(lever)
    if real.lower().endswith(" time"):
        return None, None  # a time or a duration (Deposit Refund Time) is not such a lever
    constants = {name.lower(): name for name in model.constants if name != real}
    words = real.split()
    switched = None
    best: tuple = ()
    for size in range(len(words), 0, -1):
        for first in range(len(words) - size + 1):
            stem = " ".join(words[first : first + size]).lower()
            start = _first(constants, stem, START_SUFFIXES)
            end = _first(constants, stem, END_SUFFIXES)
            if start is None and end is None:
                continue
            switched = _switched_by(model, real) if switched is None else switched
            start = start if start in switched else None
            end = end if end in switched else None
            rank = ((start is not None) + (end is not None), size, first)
            if rank[0] and (not best or rank > best[0]):
                best = (rank, start, end)
    return (best[1], best[2]) if best else (None, None)


def _switched_by(model: Model, lever: str) -> set[str]:
    """The time constants (named as `START_SUFFIXES` and `END_SUFFIXES` say) that switch
    `lever` in `model`: read by an equation that reads the lever, directly or through a
    variable that reads only such constants and Time."""
    from ..engine import _pysd_compat as compat

    py_to_real = {py: real for real, py in model.namespace.items()}
    suffixes = tuple(s.lower() for s in START_SUFFIXES + END_SUFFIXES)
    times = {py for py, real in py_to_real.items() if real.lower().endswith(suffixes)}
    deps = {
        name: set(used)
        for name, used in compat.dependencies(model.pysd_model()).items()
        if isinstance(used, dict) and all(isinstance(n, int) for n in used.values())
    }
    switches = {
        name: used & times
        for name, used in deps.items()
        if used & times and used <= times | {"time"}
    }
    lever_py = model.namespace[lever]
    out: set[str] = set()
    for used in deps.values():
        if lever_py in used:
            out |= used & times
            for name in used & set(switches):
                out |= switches[name]
    return {py_to_real[py] for py in out}


def _first(constants: dict[str, str], stem: str, suffixes: tuple[str, ...]) -> str | None:
    """The first constant named `stem` + a suffix (`constants`: lower-case name -> name)."""
    for suffix in suffixes:
        if stem + suffix.lower() in constants:
            return constants[stem + suffix.lower()]
    return None


def policy_inputs(
    model: Model, lever: str, policy: Policy, t0: float, t1: float
) -> tuple[dict[str, Any], list[float]]:
    """What a time-bound `policy` on `lever` sets for a run from `t0` to `t1`, and the
    switch times to pass as breakpoints: the one translation of a policy, for scenario
    files, ``--set NAME=VALUE@START:END`` and `Scenario.derive` alike.

    Where the model holds the lever's policy window in companion constants
    (`policy_companions`), the policy sets them, so that the model's own switching applies
    (the Seller Deposit's window also refunds the deposits held when it ends): with both a
    start and an end constant, the lever is the policy's value for the whole run and the
    constants make the window; with one of them, that one is set and the lever is a step
    series as below. An open end, or one after `t1`, leaves the end constant at its
    model value if that is after `t1`, else sets one after `t1`. Without companions, the
    lever is a step series: the policy's value from start to end, its model value
    elsewhere."""
    real = model.real_name(lever)
    start_name, end_name = policy_companions(model, real)
    out: dict[str, Any] = {}
    # A time before the run is the run's start; one after its end is "never".
    for name, time in ((start_name, policy.start), (end_name, policy.end)):
        if name is not None:
            out[name] = max(float(time), float(t0)) if time <= t1 else _never(model, name, t1, t0)
    base = model.default_value(real)
    if start_name is not None and end_name is not None:
        out[real] = base * 0 + policy.value if isinstance(base, xr.DataArray) else policy.value
        return out, []
    out[real] = policy.series(base, t0, t1)
    return out, [t for t in (policy.start, policy.end) if t0 < t < t1]


def _never(model: Model, name: str, t1: float, t0: float) -> float:
    """A value of the end-time constant `name` after `t1`: its model value if that is, else
    the top of its documented range if that is, else one run length after `t1`."""
    default = model.default_value(name)
    if isinstance(default, (int, float)) and default > t1:
        return float(default)
    high = model.ranges.get(name, (math.nan, math.nan))[1]
    if math.isfinite(high) and high > t1:
        return float(high)
    return float(t1 + max(t1 - t0, 1.0))


@dataclass(frozen=True)
class Scenario:
    """A named set of parameter overrides on a model (None: the default model)."""

    name: str
    description: str = ""
    params: Mapping[str, Any] = field(default_factory=dict)
    model: str | None = None
    events: tuple = ()  # (label, start, end) windows to mark on plots, beyond the Policies
    source: str | None = None  # the file it was read from, for error messages

    def derive(self, name: str, description: str = "", **params: Any) -> Scenario:
        """A new scenario: this one plus more overrides (keyword names use Python names)."""
        merged = {**self.params, **params}
        return replace(
            self,
            name=name,
            description=description or self.description,
            params=merged,
            source=None,
        )

    def load_model(self) -> Model:
        return load(self.model)

    # -- checks and run inputs --------------------------------------------------------
    def _where(self, key: str | None = None) -> str:
        where = self.source or f"scenario {self.name!r}"
        return f"{where}: {key!r}" if key else where

    def validate(self, model: Model | None = None, range_check: str = "error") -> Model:
        """Check every override against the model; raise naming the file, key and problem."""
        from ..engine.simulate import check_run_control

        model = model or self.load_model()
        for key, value in self.params.items():
            try:
                if isinstance(value, Policy):
                    model.check_params({key: value.value}, range_check)
                else:
                    model.check_params({key: subscripted(model, key, value)}, range_check)
            except FlywheelError as err:
                raise ParameterError(f"{self._where(key)}: {err}") from None
        if any(isinstance(value, Policy) for value in self.params.values()):
            times = model.time_settings()
            resolved = self._resolved(model, times["initial_time"], times["final_time"])
        else:  # (no policy: no need to read the model's times)
            resolved = self._resolved(model, math.nan, math.nan)
        for key, value in self.params.items():
            if not isinstance(value, Policy):
                continue
            for name in policy_companions(model, key):
                if name is None:
                    continue
                try:
                    model.check_params({name: resolved[name]}, range_check)
                except FlywheelError as err:
                    raise ParameterError(f"{self._where(key)}: its {err}") from None
        self._check_time_pairs(model, resolved)
        try:
            check_run_control(model, self.params)
        except FlywheelError as err:
            raise ParameterError(f"{self._where()}: {err}") from None
        return model

    def _resolved(
        self, model: Model, t0: float, t1: float, breaks: list[float] | None = None
    ) -> dict[str, Any]:
        """Vensim name -> what this scenario sets, policies translated (`policy_inputs`):
        a policy sets its lever's companion constants over any value given for them (the
        later --set on a scenario, or a policy beside its window's constants); two
        policies that would set one constant to different values are an error. The
        policies' switch times are added to `breaks`."""
        params: dict[str, Any] = {}
        policies: dict[str, Any] = {}
        set_by: dict[str, str] = {}
        for key, value in self.params.items():
            if not isinstance(value, Policy):
                try:
                    params[model.real_name(key)] = subscripted(model, key, value)
                except FlywheelError as err:
                    raise ParameterError(f"{self._where(key)}: {err}") from None
                continue
            values, switches = policy_inputs(model, key, value, t0, t1)
            if breaks is not None:
                breaks += switches
            for name, v in values.items():
                if name in set_by and set_by[name] != key:
                    before = policies[name]
                    if not (isinstance(before, float) and isinstance(v, float)):
                        raise ParameterError(
                            f"{self._where(key)}: its policy sets {name!r}, which the policy "
                            f"on {set_by[name]!r} sets too; give one of them"
                        )
                    if before != v:
                        raise ParameterError(
                            f"{self._where(key)}: its policy sets {name!r} to {v:g}, but the "
                            f"policy on {set_by[name]!r} sets it to {before:g}"
                        )
                policies[name] = v
                set_by.setdefault(name, key)
        return {**params, **policies}

    def _check_time_pairs(self, model: Model, resolved: dict[str, Any]) -> None:
        """A lever's "... End Time" must not come before its "... Start Time"."""
        touched = set(resolved)
        for real in model.namespace:
            if not real.endswith(" Start Time"):
                continue
            end_name = real[: -len("Start Time")] + "End Time"
            if end_name not in model.namespace or not touched & {real, end_name}:
                continue
            start = resolved[real] if real in resolved else model.default_value(real)
            end = resolved[end_name] if end_name in resolved else model.default_value(end_name)
            if isinstance(start, (int, float)) and isinstance(end, (int, float)) and end < start:
                raise ParameterError(
                    f"{self._where(end_name)}: ends (t={end:g}) before {real!r} (t={start:g})"
                )

    def inputs(self, model: Model, t0: float, t1: float) -> tuple[dict, list[float]]:
        """Parameters for `simulate` (Vensim names), and the policy switch times to pass
        as breakpoints; each policy as `policy_inputs` translates it."""
        breaks: list[float] = []
        params = self._resolved(model, t0, t1, breaks)
        return params, sorted(set(breaks))

    def windows(self) -> list[tuple[str, float, float]]:
        """(label, start, end) of each policy window: the events, then each `Policy`."""
        policies = [(k, v.start, v.end) for k, v in self.params.items() if isinstance(v, Policy)]
        return [tuple(e) for e in self.events] + policies

    def policy_start(self) -> float:
        """When the first policy window opens (NaN for none)."""
        starts = [start for _, start, _ in self.windows()]
        return min(starts) if starts else math.nan

    # -- files ------------------------------------------------------------------------
    def to_dict(self) -> dict:
        params: dict[str, Any] = {}
        for key, value in self.params.items():
            if isinstance(value, Policy):
                params[key] = value.to_dict()
            elif isinstance(value, pd.Series):
                params[key] = {
                    "time": [float(t) for t in value.index],
                    "value": [float(v) for v in value.values],
                }
            elif isinstance(value, tuple):  # one value per subscript element
                params[key] = [float(v) for v in value]
            elif isinstance(value, xr.DataArray):
                raise ParameterError(
                    f"{self._where(key)}: subscripted values cannot be "
                    "written to a scenario file yet"
                )
            else:
                params[key] = float(value)
        out: dict[str, Any] = {"name": self.name, "description": self.description}
        if self.model:
            out["model"] = self.model
        out["params"] = params
        if self.events:
            out["events"] = [
                {"label": label, "start": start, "end": end} for label, start, end in self.events
            ]
        return out

    def save(self, path: str | Path) -> Path:
        """Write the scenario as TOML."""
        path = Path(path)
        path.write_text(tomli_w.dumps(self.to_dict()))
        return path


def _param_from_toml(where: str, key: str, value: Any) -> Any:
    if isinstance(value, (bool, str)):
        raise ParameterError(
            f"{where}: {key!r}: expected a number, a policy "
            "{value, start, end} or a series {time, value}, "
            f"not {_short(value)}"
        )
    if isinstance(value, (int, float)):
        if not math.isfinite(value):
            raise ParameterError(f"{where}: {key!r}: value is not finite")
        return float(value)
    if isinstance(value, list):  # a subscripted constant: one value per element
        if not value or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            for v in value
        ):
            raise ParameterError(
                f"{where}: {key!r}: a list sets a subscripted constant and must hold finite "
                f"numbers, one per subscript element, not {_short(value)}"
            )
        return tuple(float(v) for v in value)
    if not isinstance(value, dict):
        raise ParameterError(f"{where}: {key!r}: unsupported value {_short(value)}")
    keys = set(value)
    try:
        if keys <= {"value", "start", "end"} and {"value", "start"} <= keys:
            return Policy(
                _number(value["value"], "value"),
                _number(value["start"], "start"),
                _number(value.get("end", math.inf), "end"),
            )
        if keys == {"time", "value"}:
            for field in ("time", "value"):
                if not isinstance(value[field], list) or not all(
                    isinstance(v, (int, float)) and not isinstance(v, bool) for v in value[field]
                ):
                    raise ParameterError(f"{field} must be a list of numbers")
            times = np.asarray(value["time"], dtype=float)
            values = np.asarray(value["value"], dtype=float)
            if times.shape != values.shape or len(times) == 0:
                raise ParameterError("time and value must be lists of the same length")
            if not (np.all(np.isfinite(times)) and np.all(np.isfinite(values))):
                raise ParameterError("times and values must be finite")
            if np.any(np.diff(times) < 0):
                raise ParameterError("times must be sorted")
            return pd.Series(values, index=times)
    except (ParameterError, TypeError, ValueError, OverflowError) as err:
        raise ParameterError(f"{where}: {key!r}: {_one_line(err)}") from None
    raise ParameterError(
        f"{where}: {key!r}: expected {{value, start[, end]}} or "
        f"{{time, value}}, got keys {_short(sorted(keys))}"
    )


def subscripted(model: Model, key: str, value: Any) -> Any:
    """`value`, or for a tuple (a scenario file's list) the DataArray over the one subscript
    range of constant `key`, in the model's element order (``"Seller Pool" = [30000, 50000]``
    is High = 30000, Low = 50000)."""
    if not isinstance(value, tuple):
        return value
    dims = model.dims_of(key)
    if len(dims) != 1:
        shown = f"subscripts [{', '.join(dims)}]" if dims else "no subscript"
        raise ParameterError(
            f"a list sets a constant with one subscript range; "
            f"{model.real_name(key)!r} has {shown}"
        )
    elements = model.subscripts[dims[0]]
    if len(value) != len(elements):
        raise ParameterError(
            f"expected {len(elements)} values, one per element of {dims[0]} "
            f"({', '.join(elements)}), got {len(value)}"
        )
    return xr.DataArray(list(value), dims=[dims[0]], coords={dims[0]: elements})


def _number(value: Any, what: str) -> float:
    """A policy's or event's number: an int or float (true/false and text are not)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ParameterError(f"{what} must be a number, not {_short(value)}")
    return float(value)


def _short(value: Any) -> str:
    text = " ".join(repr(value).split())
    return text if len(text) <= 80 else text[:77] + "..."


#: The keys a scenario file may hold. `replaces_builtin = true` lets a user's scenario take
#: the name of a built-in one (otherwise that is an error, not a silent replacement).
TOP_LEVEL_KEYS = (
    "name",
    "description",
    "model",
    "params",
    "extends",
    "events",
    "replaces_builtin",
)


def from_dict(data: Mapping, source: str | None = None, base: Scenario | None = None) -> Scenario:
    """Build a scenario from parsed TOML (`base`: the scenario it extends)."""
    where = source or "scenario"
    unknown = set(data) - set(TOP_LEVEL_KEYS)
    if unknown:
        raise ParameterError(
            f"{where}: unknown top-level key(s) {sorted(unknown)}; "
            f"expected {', '.join(TOP_LEVEL_KEYS)}"
        )
    if "name" not in data or not isinstance(data["name"], str):
        raise ParameterError(f"{where}: 'name' (a string) is required")
    for key in ("description", "model", "extends"):
        if key in data and not isinstance(data[key], str):
            raise ParameterError(f"{where}: {key!r} must be a string, not {data[key]!r}")
    if "replaces_builtin" in data and not isinstance(data["replaces_builtin"], bool):
        raise ParameterError(f"{where}: 'replaces_builtin' must be true or false")
    raw = data.get("params", {})
    if not isinstance(raw, dict):
        raise ParameterError(f"{where}: [params] must be a table")
    params = dict(base.params) if base else {}
    params.update({k: _param_from_toml(where, k, v) for k, v in raw.items()})
    model = data.get("model", base.model if base else None)
    if model and "\x00" in model:
        raise ParameterError(f"{where}: 'model': {model!r} is not a file path (it holds a NUL)")
    if model and source and not Path(model).is_absolute():
        try:
            model = str((Path(source).parent / model).resolve())
        except (OSError, RuntimeError) as err:  # a symlink loop, an unreadable folder
            raise ParameterError(f"{where}: 'model': cannot resolve {model!r} ({err})") from None
    if "events" in data and not isinstance(data["events"], list):
        raise ParameterError(
            f"{where}: 'events' must be a list of {{label, start, end}} ([[events]] tables), "
            f"not {data['events']!r}"
        )
    events = (
        tuple(_event(where, e) for e in data.get("events", ()))
        if "events" in data
        else (base.events if base else ())
    )
    return Scenario(
        name=data["name"],
        description=data.get("description", ""),
        params=params,
        model=model,
        events=events,
        source=source,
    )


def _event(where: str, event: Any) -> tuple[str, float, float]:
    if (
        not isinstance(event, dict)
        or set(event) - {"label", "start", "end"}
        or "start" not in event
    ):
        raise ParameterError(
            f"{where}: 'events': each needs start (and label, end), got {_short(event)}"
        )
    if not isinstance(event.get("label", ""), str):
        raise ParameterError(
            f"{where}: 'events': a label is a string, not {_short(event['label'])}"
        )
    try:
        start, end = _number(event["start"], "start"), _number(event.get("end", math.inf), "end")
    except ParameterError:
        raise ParameterError(
            f"{where}: 'events': {event.get('label', '')!r}: start and end "
            f"must be numbers, got {_short(event.get('start'))} and "
            f"{_short(event.get('end', 'none'))}"
        ) from None
    if not math.isfinite(start) or math.isnan(end):
        raise ParameterError(
            f"{where}: 'events': {event.get('label', '')!r}: start must be a finite number"
        )
    if end <= start:
        raise ParameterError(
            f"{where}: 'events': {event.get('label', '')!r} ends "
            f"(t={end:g}) before it starts (t={start:g})"
        )
    return (str(event.get("label", "")), start, end)


def read_toml(path: str | Path) -> dict:
    """A scenario file's data; any file that cannot be read as TOML (missing, a folder,
    unreadable, not UTF-8, nested past the parser's depth) is refused in one line."""
    path = Path(path)
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ParameterError(f"{path}: no such scenario file") from None
    except UnicodeDecodeError as err:
        raise ParameterError(
            f"{path}: not a TOML file (TOML is UTF-8 text; byte {err.start} is not)"
        ) from None
    except OSError as err:
        raise ParameterError(f"{path}: cannot read it ({err.strerror or err})") from None
    except RecursionError:
        raise ParameterError(f"{path}: not valid TOML (nested too deeply)") from None
    except tomllib.TOMLDecodeError as err:
        raise ParameterError(f"{path}: not valid TOML ({_one_line(err)})") from None


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split())
