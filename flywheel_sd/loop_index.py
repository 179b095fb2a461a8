"""Feedback loops of a model: the loop index beside it, and each loop's polarity computed
from the equations along a run (issue 11).

The loop index is ``<model>.loops.toml``: one table per loop, keyed by its id::

    [R1]
    name = "Cross-side network effect"
    polarity = "reinforcing"            # or "balancing", or "state-dependent"
    polarity_note = "..."               # required for "state-dependent": when it flips
    description = "..."
    chain = ["Active Buyers", "Buyer Visits", ...]   # each reads the one before; the
                                                     # first reads the last
    also = [["Potential Sellers", "Seller Entry by Quality"]]   # optional: more paths

(``[[loop]]``/``[[loops]]`` arrays of tables with an ``id`` are read too.)

`loop_polarity` computes, for every loop and every saved time of a run, the product of its
links' signs, each link's sign being that of ∂target/∂source from the target's equation at
that state (`flywheel_sd.engine.links`): +1 reinforcing, -1 balancing, 0 inactive (some
link does not respond at that time: a MIN/MAX or IF THEN ELSE on its other branch, a flat
lookup segment). A link into a stock counts +1 for an inflow and -1 for an outflow.

Subscripts: a link between subscripted variables is evaluated per element pair (only the
pairs the target's equation connects), so a loop through subscripted variables is a set of
element-level cycles (``Active Sellers[High]`` ... and ``Active Sellers[Low]`` ...; a SUM
joins them). Each cycle has its own sign over time; the loop's sign at a time is the sign
all its active cycles share, and the times when they disagree are marked ``mixed`` (both
signs occur then). `LoopPolarity.cycles` keeps every cycle's sign. `also` paths are cycles
of the same loop.

Summary over the run: "reinforcing" (never negative, sometimes positive), "balancing"
(never positive, sometimes negative), "state-dependent" (both signs occur: over time, or
between element cycles) and "inactive" (always 0).

Issue 14 (Loops That Matter: link scores, loop scores, relative loop scores and dominance
periods) is `flywheel_sd.ltm` (`flywheel_sd.loops`, `loop_dominance`, `dominance_periods`);
it names the loops it finds from this index. (This module was ``flywheel_sd.loops`` before
that name became the function.)
"""

from __future__ import annotations

import time
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ModelFileError

POLARITIES = ("reinforcing", "balancing", "state-dependent")
SUMMARIES = (*POLARITIES, "inactive")

#: Element-level cycles per loop beyond which `loop_polarity` refuses (a loop through many
#: subscripted variables with full coupling multiplies their element counts).
MAX_CYCLES = 4096


# -- the loop index -----------------------------------------------------------------------
@dataclass(frozen=True)
class LoopSpec:
    """One loop of the index."""

    key: str
    name: str
    polarity: str  # one of POLARITIES
    chain: tuple[str, ...]
    also: tuple[tuple[str, ...], ...] = ()
    description: str = ""
    polarity_note: str = ""

    @property
    def paths(self) -> list[tuple[str, ...]]:
        """The chain, then every `also` path."""
        return [self.chain, *self.also]


def loop_index_path(model) -> Path:
    """``<model>.loops.toml`` beside a model (a `flywheel_sd.Model` or its file)."""
    source = Path(getattr(model, "path", model))
    return source.with_name(source.stem + ".loops.toml")


def read_loop_index(source: str | Path | Mapping) -> dict[str, LoopSpec]:
    """Read and check a loop index: a ``.loops.toml`` file, or its parsed content.

    Raises
    ------
    ModelFileError
        The file is missing or not TOML, or a loop lacks a chain, has an unknown polarity,
        or is "state-dependent" without a ``polarity_note``; the message names the loop.
    """
    where = "loop index"
    if isinstance(source, Mapping):
        data: Mapping = source
    else:
        path = Path(source)
        where = str(path)
        try:
            stat = path.stat()
            memo = (str(path.resolve()), stat.st_mtime_ns, stat.st_size)
            if memo in _READ:
                return dict(_READ[memo])
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as err:
            raise ModelFileError(f"{path}: cannot read the loop index ({err})") from None
        except tomllib.TOMLDecodeError as err:
            raise ModelFileError(
                f"{path}: not valid TOML ({' '.join(str(err).split())})"
            ) from None
    entries = data.get("loop", data.get("loops"))
    if isinstance(entries, Mapping):
        items = [(str(k), v) for k, v in entries.items()]
    elif isinstance(entries, list):
        items = [(str(e.get("id", "")) if isinstance(e, Mapping) else "", e) for e in entries]
    else:
        items = [(str(k), v) for k, v in data.items() if isinstance(v, (Mapping, LoopSpec))]
    out: dict[str, LoopSpec] = {}
    for key, entry in items:
        if isinstance(entry, LoopSpec):
            out[key] = entry
            continue
        if not isinstance(entry, Mapping) or not key:
            raise ModelFileError(f"{where}: every loop needs an id and a table")
        out[key] = _spec(where, key, entry)
    if not isinstance(source, Mapping):
        _READ.clear()  # one index at a time is what a process reads again and again
        _READ[memo] = dict(out)
    return out


#: The last loop index file read, by (path, mtime, size): analyses read it once per run.
_READ: dict[tuple, dict[str, LoopSpec]] = {}


def _spec(where: str, key: str, entry: Mapping) -> LoopSpec:
    def bad(message: str) -> ModelFileError:
        return ModelFileError(f"{where}: loop {key}: {message}")

    polarity = entry.get("polarity")
    if polarity not in POLARITIES:
        raise bad(f"polarity must be one of {', '.join(POLARITIES)}, not {polarity!r}")
    note = entry.get("polarity_note", "")
    if not isinstance(note, str):
        raise bad("polarity_note must be a string")
    if polarity == "state-dependent" and not note.strip():
        raise bad('a "state-dependent" loop needs a polarity_note saying when it flips')

    def path(value, what) -> tuple[str, ...]:
        if (
            not isinstance(value, list)
            or not value
            or not all(isinstance(v, str) and v for v in value)
        ):
            raise bad(f"{what} must be a non-empty list of variable names")
        return tuple(value)

    also = entry.get("also", [])
    if not isinstance(also, list):
        raise bad("also must be a list of chains")
    return LoopSpec(
        key=key,
        name=str(entry.get("name", "")),
        polarity=polarity,
        chain=path(entry.get("chain"), "chain"),
        also=tuple(path(a, "each path in also") for a in also),
        description=" ".join(str(entry.get("description", "")).split()),
        polarity_note=" ".join(note.split()),
    )


# -- computed polarity ----------------------------------------------------------------------
@dataclass(eq=False)
class Cycle:
    """One element-level cycle of a loop: its nodes (output columns, or hidden keys) in
    causal order, and its sign over time (the product of its element links' signs)."""

    elements: tuple[str, ...]
    sign: np.ndarray


@dataclass(eq=False)
class LoopPolarity:
    """A loop's polarity along a run (see the module's docstring)."""

    key: str
    spec: LoopSpec | None
    times: np.ndarray
    cycles: list[Cycle]
    links: list[Any]  # flywheel_sd.engine.links.LinkSigns, chain order (also paths after)
    positive: np.ndarray = field(init=False)  # active cycles of sign +1, per time
    negative: np.ndarray = field(init=False)  # active cycles of sign -1, per time
    sign: np.ndarray = field(init=False)  # per time: +1, -1, 0 (at mixed times: net sign)
    mixed: np.ndarray = field(init=False)  # per time: active cycles of both signs

    def __post_init__(self) -> None:
        stack = np.array([c.sign for c in self.cycles], dtype=np.int64).reshape(
            len(self.cycles), len(self.times)
        )
        self.positive = (stack > 0).sum(axis=0)
        self.negative = (stack < 0).sum(axis=0)
        self.mixed = (self.positive > 0) & (self.negative > 0)
        self.sign = np.sign(self.positive - self.negative).astype(np.int8)

    @property
    def declared(self) -> str | None:
        return self.spec.polarity if self.spec else None

    @property
    def summary(self) -> str:
        """ "reinforcing", "balancing", "state-dependent" or "inactive" over the run."""
        pos, neg = bool(self.positive.any()), bool(self.negative.any())
        if pos and neg:
            return "state-dependent"
        return "reinforcing" if pos else "balancing" if neg else "inactive"

    @property
    def agrees(self) -> bool:
        """Whether the computed summary is the declared polarity (True if none declared)."""
        return self.declared is None or self.declared == self.summary

    def spans(self) -> dict[str, list[tuple[float, float]]]:
        """Time spans (first, last saved time) of each state: "reinforcing", "balancing",
        "inactive" and "mixed" (active element cycles of both signs)."""
        from .engine.links import spans

        code = np.where(self.mixed, 2, self.sign)
        names = {1: "reinforcing", -1: "balancing", 0: "inactive", 2: "mixed"}
        out: dict[str, list[tuple[float, float]]] = {}
        for start, end, value in spans(self.times, code):
            out.setdefault(names[value], []).append((start, end))
        return out

    def flipping_links(self) -> list[str]:
        """The links whose sign takes both values (over time, or between element pairs):
        what makes a loop state-dependent."""
        return [link.name for link in self.links if link.flips()]

    def inactive_links(self) -> list[str]:
        """The links that are inactive (sign 0 for every element pair) at some time: what
        switches the loop off there."""
        return [link.name for link in self.links if (link.combined == 0).any()]

    def link_spans(self, name: str) -> list[tuple[float, float, int]]:
        """A link's combined sign over time, as (first, last, sign) spans."""
        from .engine.links import spans

        link = next(link for link in self.links if link.name == name)
        return spans(self.times, link.combined)

    def describe(self) -> str:
        """One paragraph: computed vs declared, the spans, the flipping links."""
        text = f"{self.key}: computed {self.summary}"
        if self.declared:
            text += f", declared {self.declared}" + ("" if self.agrees else " (DISAGREES)")
        parts = [
            f"{state} {', '.join(_span(a, b) for a, b in spans)}"
            for state, spans in self.spans().items()
        ]
        text += "; " + "; ".join(parts)
        if self.summary == "inactive" or "inactive" in self.spans():
            quiet = []
            for name in self.inactive_links():
                off = [_span(a, b) for a, b, s in self.link_spans(name) if s == 0]
                quiet.append(f"{name} (0 {', '.join(off)})")
            text += "; inactive links: " + "; ".join(quiet)
        flips = self.flipping_links()
        if flips:
            shown = []
            for name in flips:
                parts = [f"{_sign(s)} {_span(a, b)}" for a, b, s in self.link_spans(name)]
                shown.append(f"{name} ({', '.join(parts)})")
            text += "; links with both signs: " + "; ".join(shown)
        return text


def _span(a: float, b: float) -> str:
    return f"t={a:g}" if a == b else f"t={a:g}..{b:g}"


def _sign(s: int) -> str:
    return {1: "+", -1: "-", 0: "0"}[int(s)]


class LoopPolarities(dict):
    """`loop_polarity`'s answer: loop id -> `LoopPolarity`, plus `seconds` (its cost)."""

    seconds: float = 0.0

    def table(self):
        """One row per loop: declared, computed, agrees, flipping links."""
        import pandas as pd

        rows = [
            {
                "loop": key,
                "declared": lp.declared,
                "computed": lp.summary,
                "agrees": lp.agrees,
                "flipping_links": "; ".join(lp.flipping_links()),
            }
            for key, lp in self.items()
        ]
        return pd.DataFrame(rows).set_index("loop")

    def disagreements(self) -> list[LoopPolarity]:
        return [lp for lp in self.values() if not lp.agrees]


def loop_polarity(
    model,
    loops_index: str | Path | Mapping | None = None,
    run: Any = None,
    *,
    equations: Any = None,
    keys: Sequence[str] | None = None,
    **simulate_options: Any,
) -> LoopPolarities:
    """Each loop's polarity along a run, from the equations.

    Parameters
    ----------
    model : Model or path
        Any model the compiled engine covers.
    loops_index : path, mapping or None
        The loop index (a ``.loops.toml`` file, its parsed content, or ``{id: LoopSpec}``);
        default: ``<model>.loops.toml`` beside the model.
    run : None, str, Scenario, mapping or RunState
        The run along which links are evaluated: None for the model's own parameters; a
        scenario (by name: its parameters and policy switch times); a mapping of
        parameters; or a `flywheel_sd.engine.links.RunState` recorded already (then pass
        the `equations` it was recorded with).
    equations : flywheel_sd.engine.links.Equations, optional
        The model's equations, if built already (their variant must fit the run).
    keys : sequence of str, optional
        Only these loops.
    simulate_options
        Method and options of the run (``method``, ``rtol``, ``atol``, ``final_time``,
        ...), as `flywheel_sd.simulate` takes them; the default is its RK45.

    Returns
    -------
    LoopPolarities
        Loop id -> `LoopPolarity` (per time: sign, cycle counts, mixed; summary, spans,
        flipping links), in the index's order; ``.table()`` and ``.disagreements()``.
    """
    from .engine import links as lk
    from .engine.model import Model, load

    started = time.perf_counter()
    model = model if isinstance(model, Model) else load(model)
    index = read_loop_index(loop_index_path(model) if loops_index is None else loops_index)
    if keys is not None:
        missing = [k for k in keys if k not in index]
        if missing:
            raise KeyError(f"not loops of the index: {missing}")
        index = {k: index[k] for k in keys}
    eq, state = run_state(model, run, equations=equations, **simulate_options)
    out = LoopPolarities()
    cache: dict[tuple[str, str], Any] = {}
    for key, spec in index.items():
        cycles: list[Cycle] = []
        link_list: list[Any] = []
        for path in spec.paths:
            path_links = []
            for i, target in enumerate(path):
                source = path[i - 1]
                if (source, target) not in cache:
                    try:
                        cache[(source, target)] = lk.link_signs(eq, state, source, target)
                    except KeyError as err:
                        raise ModelFileError(
                            f"loop {key}: {source} -> {target} is not a link of the model "
                            f"({err.args[0]})"
                        ) from None
                path_links.append(cache[(source, target)])
            link_list += [x for x in path_links if not any(x is y for y in link_list)]
            cycles += _cycles(key, eq, path_links, len(state))
        out[key] = LoopPolarity(key, spec, state.times, cycles, link_list)
    out.seconds = time.perf_counter() - started
    return out


def run_state(model, run: Any = None, *, equations: Any = None, **simulate_options: Any):
    """The equations of `model` and the run along which to evaluate its links: ``(eq,
    state)``, a `flywheel_sd.engine.links.Equations` and a `~.links.RunState`.

    `run` is as `loop_polarity` takes it (None, a scenario, a mapping of parameters, or a
    `RunState` already recorded with `equations`); `simulate_options` as `simulate` takes
    them (``method``, ``rtol``, ``final_time``, ...).
    """
    from .engine import links as lk
    from .engine.model import Model, load

    model = model if isinstance(model, Model) else load(model)
    if isinstance(run, lk.RunState):
        eq = equations or lk.equations(model)
        if set(run.rows) != set(eq.nodes):
            raise ValueError("the run state was not recorded with these equations")
        return eq, run
    params, breaks = _run_inputs(model, run)
    eq = equations or lk.equations(model, params)
    options = dict(simulate_options)
    options["breakpoints"] = [*breaks, *options.get("breakpoints", ())]
    return eq, lk.record_states(eq, params, **options)


def _run_inputs(model, run) -> tuple[dict, list[float]]:
    if run is None:
        return {}, []
    if isinstance(run, Mapping):
        return dict(run), []
    from . import scenarios

    sc = scenarios.get(run)
    times = model.time_settings()
    return sc.inputs(model, times["initial_time"], times["final_time"])


def _cycles(key, eq, path_links, n_times) -> list[Cycle]:
    """The element-level cycles through `path_links` (link i goes from path[i-1] to
    path[i]; link 0 closes the loop), each with its sign over time."""
    # edges[i]: source element -> [(target element, sign)] of link i+1 (mod n), so a
    # walk starts at an element of path[0] and takes links 1, 2, ..., n-1, then 0
    n = len(path_links)
    order = [path_links[(i + 1) % n] for i in range(n)]
    edges: list[dict[str, list[tuple[str, np.ndarray]]]] = []
    for link in order:
        table: dict[str, list[tuple[str, np.ndarray]]] = {}
        for (z, x), sign in link.pairs.items():
            table.setdefault(x, []).append((z, sign))
        edges.append(table)
    starts = sorted({x for (_, x) in order[0].pairs})
    out: list[Cycle] = []

    def walk(start, node, depth, trail, sign):
        if len(out) > MAX_CYCLES:
            raise ValueError(f"loop {key}: more than {MAX_CYCLES} element-level cycles")
        for nxt, s in edges[depth].get(node, []):
            if depth == n - 1:
                if nxt == start:
                    out.append(Cycle(tuple(eq.label(k) for k in trail), sign * s))
            else:
                walk(start, nxt, depth + 1, [*trail, nxt], sign * s)

    for start in starts:
        walk(start, start, 0, [start], np.ones(n_times, dtype=np.int64))
    if not out:
        raise ModelFileError(f"loop {key}: its elements form no closed path")
    return out
