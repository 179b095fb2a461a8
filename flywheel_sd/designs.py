"""Designs of experiments for `flywheel_sd.sweep`: which parameter sets to run.

Building a design is separate from running it: each function here returns a `Design`, a
small object holding the table of runs (one row per run, one column per parameter) and
what SALib needs to analyse the results (`Design.problem`). Pass it to `sweep`.

Parameters are given as

* a mapping ``{"Take Rate": (0.05, 0.3), ...}`` of ranges, or
* names only, ``["Take Rate", "Ad Budget"]`` (or a mapping to ``None``), in which case the
  range is the one documented in the model (``Take Rate = ... ~ [0, 1]``); pass ``model=``
  (a `Model` or a path), else the project's default model is used.

Every random design is reproducible: ``seed`` is an int, a ``numpy.random.Generator`` or
None, and the int seed actually used is kept in ``Design.seed`` (drawn at random when none
was given), so any design can be rebuilt.

Examples
--------
>>> from flywheel_sd import designs
>>> d = designs.lhs({"Take Rate": (0.05, 0.3), "Ad Budget": (0, 2e6)}, n=100, seed=1)
>>> d.table.shape
(100, 2)
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from .errors import ParameterError

__all__ = [
    "Design",
    "from_table",
    "grid",
    "handle_seed",
    "lhs",
    "morris",
    "oat",
    "saltelli",
    "sobol",
]

Params = Mapping[str, Any] | Sequence[str]


def handle_seed(seed: int | np.random.Generator | None) -> np.random.Generator:
    """The one place that turns a seed into a ``numpy.random.Generator``."""
    if isinstance(seed, np.random.Generator):
        return seed
    if seed is None:
        return np.random.default_rng()
    if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
        return np.random.default_rng(_seed_int(seed))
    raise ParameterError(f"seed must be an int, a numpy.random.Generator or None, not {seed!r}")


def _seed_int(seed: int | np.random.Generator | None) -> int:
    """An int seed to record: `seed` itself, or one drawn from it (or from entropy)."""
    if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
        if seed < 0:
            raise ParameterError(f"seed must be non-negative, not {seed}")
        return int(seed)
    return int(handle_seed(seed).integers(2**31 - 1))


@dataclass(frozen=True, eq=False)
class Design:
    """A table of runs plus what was used to build it.

    Attributes
    ----------
    kind : str
        ``"grid"``, ``"lhs"``, ``"sobol"``, ``"morris"``, ``"saltelli"``, ``"oat"``,
        ``"table"`` or ``"posterior"`` (samples of `flywheel_sd.Calibration.design`).
    table : pandas.DataFrame
        One row per run, one column per parameter.
    bounds : dict
        Parameter -> (low, high) the design spans.
    seed : int or None
        The int seed the design was drawn with (None for grids and tables).
    options : dict
        Kind-specific settings (``num_levels`` of Morris, ``calc_second_order`` of
        Saltelli, ``base`` of one-at-a-time).
    """

    kind: str
    table: pd.DataFrame
    bounds: dict[str, tuple[float, float]]
    seed: int | None = None
    options: dict = field(default_factory=dict)

    def __post_init__(self):
        values = self.table.to_numpy(dtype=float) if len(self.table.columns) else None
        if values is None:
            raise ParameterError("a design needs at least one parameter")
        if len(self.table) == 0:
            raise ParameterError("the design has no runs")
        if not np.all(np.isfinite(values)):
            raise ParameterError("the design table holds non-finite values")

    @property
    def names(self) -> list[str]:
        return [str(c) for c in self.table.columns]

    def __len__(self) -> int:
        return len(self.table)

    def __repr__(self) -> str:
        seed = f", seed={self.seed}" if self.seed is not None else ""
        return f"<Design {self.kind}: {len(self)} runs x {len(self.names)} parameters{seed}>"

    @property
    def values(self) -> np.ndarray:
        """The table as a float array (runs x parameters)."""
        return self.table.to_numpy(dtype=float)

    @property
    def problem(self) -> dict:
        """The SALib problem: ``{"num_vars", "names", "bounds"}``."""
        return {
            "num_vars": len(self.names),
            "names": self.names,
            "bounds": [list(self.bounds[n]) for n in self.names],
        }

    def fingerprint(self) -> str:
        """A hash of the runs (names and values): equal tables, equal fingerprints."""
        h = hashlib.sha256()
        h.update(json.dumps(self.names).encode())
        h.update(np.ascontiguousarray(self.values).tobytes())
        return h.hexdigest()

    def describe(self) -> dict:
        """JSON-ready summary (kind, names, bounds, seed, options) for provenance."""
        return {
            "kind": self.kind,
            "names": self.names,
            "bounds": {n: list(map(float, self.bounds[n])) for n in self.names},
            "seed": self.seed,
            "options": _jsonable(self.options),
            "runs": len(self),
            "fingerprint": self.fingerprint(),
        }

    def bind(self, model, range_check: str = "error") -> Design:
        """This design with names checked against `model` (close-match errors) and made
        canonical (Vensim names); values checked against documented ranges."""
        names = [_check_name(model, n) for n in self.names]
        if len(set(names)) != len(names):
            raise ParameterError(f"a parameter appears twice in the design: {self.names}")
        values = self.values
        for j, name in enumerate(names):
            model.check_params({name: float(values[:, j].min())}, range_check)
            model.check_params({name: float(values[:, j].max())}, range_check)
        if names == self.names:
            return self
        table = self.table.copy()
        table.columns = names
        bounds = {new: self.bounds[old] for old, new in zip(self.names, names)}
        return Design(self.kind, table, bounds, self.seed, self.options)


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    return value


# -- parameters and ranges ------------------------------------------------------------------
#: More values than this in one design (runs x parameters) is a mistake (an n or a number of
#: levels far too large), refused before anything is allocated: 8e8 bytes of table.
MAX_VALUES = 10**8


def _check_size(runs: int, parameters: int, kind: str) -> None:
    if runs * max(parameters, 1) > MAX_VALUES:
        raise ParameterError(
            f"{kind} of {runs:.3g} runs x {parameters} parameter(s) is too large (more than "
            f"{MAX_VALUES:.0e} values); use a smaller n or fewer levels"
        )


def _items(params: Any) -> list[tuple[str, Any]]:
    """(name, spec) pairs from a mapping, a sequence of names or one name; names must be
    strings."""
    if isinstance(params, str):
        items: list[tuple[Any, Any]] = [(params, None)]
    elif isinstance(params, Mapping):
        items = list(params.items())
    elif isinstance(params, (list, tuple, pd.Index, np.ndarray)):
        items = [(p, None) for p in params]
    else:
        raise ParameterError(
            "parameters are a mapping of name -> (low, high), or a list of names, not "
            f"{_short(params)}"
        )
    seen: set[str] = set()
    for name, _ in items:
        if not isinstance(name, str):
            raise ParameterError(f"a parameter name is a string, not {_short(name)}")
        if name in seen:
            raise ParameterError(f"parameter {name!r} is given twice; give each parameter once")
        seen.add(name)
    return items


def _short(value: Any) -> str:
    text = " ".join(repr(value).split())
    return text if len(text) <= 60 else text[:57] + "..."


def _is_pair(value: Any) -> bool:
    if isinstance(value, (str, bytes, Mapping)):
        return False
    try:
        return len(value) == 2
    except TypeError:
        return False


def _float(value: Any, what: str) -> float:
    """`value` as a float, or a one-line ParameterError naming `what`."""
    if isinstance(value, (bool, np.bool_)):
        raise ParameterError(f"{what} must be a number, not {value!r}")
    try:
        return float(value)
    except (TypeError, ValueError, OverflowError):
        raise ParameterError(f"{what} must be a number, not {_short(value)}") from None


def _load_model(model):
    from .engine.model import Model, load

    if isinstance(model, Model):
        return model
    return load(model)


def _check_name(model, name: str) -> str:
    real = model.real_name(str(name))
    if real not in model.constants:
        raise ParameterError(
            f"{real!r} is not a constant of {model.path.name}; sweeps vary "
            "constants (FINAL TIME, TIME STEP, stocks and equations cannot "
            "be swept)"
        )
    return real


def _ranges(params: Params, model=None) -> dict[str, tuple[float, float]]:
    """Parameter -> (lo, hi): given ranges, or the model's documented ones."""
    items = _items(params)
    if not items:
        raise ParameterError("no parameters given")
    needs_model = model is not None or any(r is None for _, r in items)
    m = _load_model(model) if needs_model else None
    out: dict[str, tuple[float, float]] = {}
    for name, rng in items:
        real = _check_name(m, name) if m is not None else str(name)
        if real in out:
            raise ParameterError(f"parameter {real!r} is given twice")
        if rng is None and m is not None:  # (a name without a range always loads a model)
            if real not in m.ranges:
                raise ParameterError(
                    f"{real!r} has no documented range in {m.path.name}; give it as (low, high)"
                )
            lo, hi = m.ranges[real]
            if math.isnan(lo) or math.isnan(hi):
                raise ParameterError(
                    f"{real!r} has an open documented range "
                    f"[{'' if math.isnan(lo) else lo}, "
                    f"{'' if math.isnan(hi) else hi}]; give it as (low, high)"
                )
        else:
            if not _is_pair(rng):
                raise ParameterError(f"{real!r}: a range is (low, high), not {_short(rng)}")
            lo, hi = (_float(v, f"{real!r}: a range's end") for v in rng)
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise ParameterError(f"{real!r}: range ({lo}, {hi}) is not finite")
        if lo >= hi:
            raise ParameterError(f"{real!r}: empty range ({lo:g}, {hi:g}); low must be below high")
        if not math.isfinite(hi - lo):
            raise ParameterError(f"{real!r}: range ({lo:g}, {hi:g}) is too wide for floats")
        out[real] = (lo, hi)
    return out


def _scaled(unit: np.ndarray, bounds: dict) -> pd.DataFrame:
    lo = np.array([b[0] for b in bounds.values()])
    hi = np.array([b[1] for b in bounds.values()])
    return pd.DataFrame(lo + unit * (hi - lo), columns=list(bounds))


def _check_n(n, what: str = "n") -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ParameterError(f"{what} must be a positive integer, not {n!r}")
    return int(n)


def _power_of_two(n: int, kind: str) -> int:
    n = _check_n(n)
    if n & (n - 1):
        below = 1 << (n.bit_length() - 1)
        raise ParameterError(
            f"{kind} needs n to be a power of two (got {n}; use {below} or {below * 2})"
        )
    return n


# -- the designs ----------------------------------------------------------------------------
def grid(
    params: Mapping[str, Any] | Sequence[str], levels: int | Mapping[str, int] = 5, *, model=None
) -> Design:
    """Full-factorial grid.

    Parameters
    ----------
    params : mapping or sequence of names
        Name -> explicit values (a list or array), or -> ``(low, high)`` (a tuple), spaced
        evenly at `levels` points; names alone use the documented range.
    levels : int or mapping
        Points per ranged parameter (default 5).
    model : Model or path, optional
        For documented ranges and name checks.
    """
    items = _items(params)
    ranged = {k: v for k, v in items if v is None or isinstance(v, tuple)}
    bounds_ranged = _ranges(ranged, model) if ranged else {}
    if model is not None and not ranged:
        _ranges({k: (0, 1) for k, _ in items}, model)  # name checks only
    m = _load_model(model) if model is not None else None
    axes: dict[str, np.ndarray] = {}
    bounds: dict[str, tuple[float, float]] = {}
    ranged_iter = iter(bounds_ranged.items())
    for name, spec in items:
        if spec is None or isinstance(spec, tuple):
            real, (lo, hi) = next(ranged_iter)
            k = levels.get(name, levels.get(real, 5)) if isinstance(levels, Mapping) else levels
            k = _check_n(k, "levels")
            _check_size(k, 1, f"a grid axis of {real!r}")
            axes[real] = np.linspace(lo, hi, k) if k > 1 else np.array([(lo + hi) / 2])
            bounds[real] = (lo, hi)
        else:
            real = _check_name(m, name) if m is not None else str(name)
            if isinstance(spec, (str, bytes, Mapping, set, frozenset)):
                raise ParameterError(
                    f"{real!r}: grid values are a list of numbers or (low, high), not "
                    f"{_short(spec)}"
                )
            try:
                values = np.asarray(spec, dtype=float).ravel()
            except (TypeError, ValueError, OverflowError):
                raise ParameterError(
                    f"{real!r}: grid values are a list of numbers or (low, high), not "
                    f"{_short(spec)}"
                ) from None
            if values.size == 0:
                raise ParameterError(f"{real!r}: no values given")
            if not np.all(np.isfinite(values)):
                raise ParameterError(f"{real!r}: values must be finite")
            axes[real] = values
            bounds[real] = (float(values.min()), float(values.max()))
    _check_size(math.prod(len(v) for v in axes.values()), len(axes), "a grid")
    rows = list(itertools.product(*axes.values()))
    table = pd.DataFrame(rows, columns=list(axes), dtype=float)
    return Design("grid", table, bounds, None, {"levels": {k: len(v) for k, v in axes.items()}})


def lhs(
    params: Params, n: int, *, seed: int | np.random.Generator | None = None, model=None
) -> Design:
    """Latin hypercube of `n` runs (``scipy.stats.qmc.LatinHypercube``)."""
    from scipy.stats import qmc

    bounds = _ranges(params, model)
    n = _check_n(n)
    _check_size(n, len(bounds), "a Latin hypercube")
    s = _seed_int(seed)
    unit = qmc.LatinHypercube(len(bounds), rng=np.random.default_rng(s)).random(n)
    return Design("lhs", _scaled(unit, bounds), bounds, s)


def sobol(
    params: Params,
    n: int,
    *,
    seed: int | np.random.Generator | None = None,
    scramble: bool = True,
    model=None,
) -> Design:
    """Scrambled Sobol sequence of `n` runs, `n` a power of two (``scipy.stats.qmc``)."""
    from scipy.stats import qmc

    n = _power_of_two(n, "a Sobol design")
    bounds = _ranges(params, model)
    _check_size(n, len(bounds), "a Sobol design")
    s = _seed_int(seed)
    engine = qmc.Sobol(len(bounds), scramble=scramble, rng=np.random.default_rng(s))
    unit = engine.random_base2(int(math.log2(n)))
    return Design("sobol", _scaled(unit, bounds), bounds, s, {"scramble": scramble})


def morris(
    params: Params,
    trajectories: int = 10,
    *,
    num_levels: int = 4,
    seed: int | np.random.Generator | None = None,
    model=None,
) -> Design:
    """Morris elementary-effects design: ``trajectories * (parameters + 1)`` runs (SALib).

    References
    ----------
    Morris, M. D. (1991). Factorial sampling plans for preliminary computational
    experiments. Technometrics 33(2), 161-174. doi:10.1080/00401706.1991.10484804
    """
    from SALib.sample import morris as morris_sample

    bounds = _ranges(params, model)
    trajectories = _check_n(trajectories, "trajectories")
    num_levels = _check_n(num_levels, "num_levels")
    if num_levels < 2 or num_levels % 2:
        raise ParameterError(f"num_levels must be an even number >= 2, not {num_levels}")
    _check_size(trajectories * (len(bounds) + 1), len(bounds), "a Morris design")
    s = _seed_int(seed)
    problem = {
        "num_vars": len(bounds),
        "names": list(bounds),
        "bounds": [list(b) for b in bounds.values()],
    }
    x = morris_sample.sample(problem, trajectories, num_levels=num_levels, seed=s)
    table = pd.DataFrame(x, columns=list(bounds))
    return Design(
        "morris", table, bounds, s, {"num_levels": num_levels, "trajectories": trajectories}
    )


def saltelli(
    params: Params,
    n: int,
    *,
    calc_second_order: bool = False,
    seed: int | np.random.Generator | None = None,
    scramble: bool = True,
    model=None,
) -> Design:
    """Saltelli's scheme for Sobol indices: ``n * (parameters + 2)`` runs, or
    ``n * (2 * parameters + 2)`` with second-order indices; `n` a power of two (SALib).

    References
    ----------
    Saltelli, A. (2002). Making best use of model evaluations to compute sensitivity
    indices. Computer Physics Communications 145(2), 280-297.
    doi:10.1016/S0010-4655(02)00280-1
    """
    from SALib.sample import sobol as sobol_sample

    n = _power_of_two(n, "a Saltelli design")
    bounds = _ranges(params, model)
    if not isinstance(calc_second_order, (bool, np.bool_)):
        raise ParameterError(f"calc_second_order must be True or False, not {calc_second_order!r}")
    k = len(bounds)
    _check_size(n * (2 * k + 2 if calc_second_order else k + 2), k, "a Saltelli design")
    s = _seed_int(seed)
    problem = {
        "num_vars": len(bounds),
        "names": list(bounds),
        "bounds": [list(b) for b in bounds.values()],
    }
    x = sobol_sample.sample(
        problem, n, calc_second_order=calc_second_order, scramble=scramble, seed=s
    )
    table = pd.DataFrame(x, columns=list(bounds))
    return Design(
        "saltelli",
        table,
        bounds,
        s,
        {"calc_second_order": calc_second_order, "n": n, "scramble": scramble},
    )


def oat(params: Params, *, base: Mapping[str, float] | None = None, model=None) -> Design:
    """One at a time: the base run, then each parameter at its low and at its high end
    with the others at base (``1 + 2 * parameters`` runs), for tornado charts.

    The base is the model's own value of each parameter, unless given in `base`.
    """
    bounds = _ranges(params, model)
    names = list(bounds)
    if base is not None and not isinstance(base, Mapping):
        raise ParameterError(f"base is a mapping of name -> value, not {_short(base)}")
    base = dict(base or {})
    m = None
    centre = {}
    for name in names:
        given = next((v for k, v in base.items() if k == name), None)
        if given is None:
            m = m or _load_model(model)
            value = m.default_value(name)
            try:
                given = float(value)
            except (TypeError, ValueError) as err:
                raise ParameterError(
                    f"{name!r} is subscripted; give its base value in base="
                ) from err
        centre[name] = _float(given, f"the base value of {name!r}")
        if not math.isfinite(centre[name]):
            raise ParameterError(f"the base value of {name!r} must be finite, not {given!r}")
    rows = [[centre[n] for n in names]]
    labels = [("base", "")]
    for name in names:
        for end, value in (("low", bounds[name][0]), ("high", bounds[name][1])):
            row = [centre[n] for n in names]
            row[names.index(name)] = value
            rows.append(row)
            labels.append((end, name))
    table = pd.DataFrame(rows, columns=names, dtype=float)
    return Design(
        "oat",
        table,
        bounds,
        None,
        {"base": centre, "varied": [lab[1] for lab in labels], "end": [lab[0] for lab in labels]},
    )


def from_table(table: pd.DataFrame | Mapping[str, Sequence[float]]) -> Design:
    """A design from your own table of runs (a DataFrame, or name -> values)."""
    if not isinstance(table, (pd.DataFrame, Mapping)):
        raise ParameterError(
            f"a design table is a DataFrame or a mapping of name -> values, not {_short(table)}"
        )
    try:
        frame = pd.DataFrame(table).reset_index(drop=True)
    except (TypeError, ValueError) as err:  # ragged columns, scalars without an index
        raise ParameterError(f"not a table of runs ({' '.join(str(err).split())})") from None
    try:
        frame = frame.astype(float)
    except (TypeError, ValueError, OverflowError) as err:
        raise ParameterError(
            f"a design table holds numbers only ({' '.join(str(err).split())})"
        ) from None
    bounds = {str(c): (float(frame[c].min()), float(frame[c].max())) for c in frame.columns}
    frame.columns = [str(c) for c in frame.columns]
    return Design("table", frame, bounds)
