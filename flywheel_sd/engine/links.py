"""Links from the equations: re-evaluate one equation at recorded states with an input
changed, and the sign of a link (∂target/∂source) along a run.

Issue 11 (loop polarity) uses it; Loops-That-Matter link scores (issue 14) will too, so the
building blocks are general:

* `equations(model, params)` compiles the model into its scalar nodes (`Equations`): one
  node per variable element, plus hidden ones (SMOOTH/DELAY stages, macro copies): the
  compiler's own nodes, compiled afresh in this process (its program keeps nodes the run
  engine's folds away, so the two never share generated code);
* `record_states(eq, ...)` runs the model on the compiled engine (the same drivers and
  methods as `simulate`, its own program compiled to record the states: `recorder`) and
  returns a `RunState`: every node's value at every saved time;
* `evaluate(eq, state, target, replace)` re-evaluates the target's equation at the state,
  vectorised over time, with some inputs set to other values; a stock's "equation" is its
  net flow (the expression inside INTEG);
* `partial(eq, state, target, source)`: ∂target/∂source by a central difference with a
  relative step; for a stock target, ∂(net flow)/∂source: +1·(∂inflow/∂x) for an inflow,
  -1·(∂outflow/∂x) for an outflow, read from the flow expression, never from names;
* `link_sign` / `link_signs`: the sign of a link between two nodes or two variables (per
  element pair), routed through hidden nodes (a SMOOTH's stage sits between its input and
  output).

Signs are +1, -1 or 0: 0 where the equation does not respond to the input at that state
(a MIN/MAX or IF THEN ELSE on its other branch, a lookup on a flat segment). A 0 means
"inactive at this time"; it is not a change of sign.
"""

from __future__ import annotations

import functools
import itertools
import math
import types
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import _pysd_compat as compat
from ._ir import _PLACEHOLDER, Node, NotCompilable, Program, clean

#: Relative step of the central difference: h = REL_STEP * max(|x|, scale), where scale
#: is SCALE_FLOOR times the largest |x| along the run (a variable passing through 0 is
#: still perturbed on its own scale), or UNIT_SCALE for a variable that is 0 all along
#: (its scale is unknown: a step of REL_STEP in its own units).
REL_STEP = 1e-6
SCALE_FLOOR = 1e-3
UNIT_SCALE = 1.0

#: A change of the target no larger than this, relative to the target's size, is
#: round-off: the link is inactive (sign 0) there. A flat branch (MAX(0, x) below 0, a
#: flat lookup segment) changes nothing at all; inputs that do not touch x are evaluated
#: bit for bit alike, so only x's own terms add round-off.
ZERO_CHANGE = 1e-14


@dataclass(eq=False)
class Equations:
    """The scalar equations of a compiled model (one variant: constants given as time
    series change the program, see `flywheel_sd.engine.compiled.series_signature`)."""

    model: Any  # flywheel_sd.Model
    program: Program
    nodes: dict[str, Node]
    keys: dict[str, list[str]]  # Vensim name -> node keys of its elements, in order
    names: dict[str, str]  # clean name -> Vensim name
    vector: types.ModuleType  # the generated code over arrays (NumPy runtime)
    layout: Layout  # the rows and link numbers of the generated loop-analysis functions
    _functions: dict = field(default_factory=dict)
    _recorder: Any = None  # see `recorder`
    memo: dict = field(default_factory=dict)  # structures derived from them (element graph)

    def keys_of(self, name: str) -> list[str]:
        """The node keys of a variable (its elements, in subscript order), given its Vensim
        name, its Python name or one element's column (``"Active Sellers[High]"``)."""
        for candidate in (name, self.names.get(clean(name))):
            if candidate in self.keys:
                return list(self.keys[candidate])
        column = {n.column: k for k, n in self.nodes.items() if n.column}
        if name in column:
            return [column[name]]
        try:
            real = self.model.real_name(name)
        except Exception:  # noqa: BLE001 -- any lookup failure: the message below
            real = None
        if real in self.keys:
            return list(self.keys[real])
        raise KeyError(f"{name!r} is not a variable of {Path(self.model.path).name}")

    def label(self, key: str) -> str:
        """A node's output column, or its key for a hidden node."""
        node = self.nodes[key]
        return node.column or key

    def inputs(self, key: str) -> set[str]:
        """The nodes a node's run-time equation reads (a stock: its net flow's inputs)."""
        node = self.nodes[key]
        deps = node.flow_deps if node.kind == "stock" else node.deps
        return {d for d in deps if d in self.nodes}

    def is_stock(self, key: str) -> bool:
        return self.nodes[key].kind == "stock"

    def function(self, key: str):
        """The target's equation as ``f(t, c, values) -> array``: `values` maps each input
        key to its values (arrays over time, or any broadcastable shape)."""
        fn = self._functions.get(key)
        if fn is None:
            node = self.nodes[key]
            if node.kind == "stock":
                text = node.flow
            elif node.kind == "aux":
                text = node.expr
            else:  # a constant or INITIAL value: no run-time equation
                text = f"__v[{key!r}]"
            body = _PLACEHOLDER.sub(lambda m: f"__v[{m.group(1)!r}]", text)
            fn = eval(  # the compiler's own generated text
                compile(f"lambda t, c, __v: ({body})", f"<equation {key}>", "eval"),
                self.vector.__dict__,
            )
            self._functions[key] = fn
        return fn


def equations(model, params: Mapping | None = None) -> Equations:
    """The scalar equations of `model` (a `flywheel_sd.Model` or a model file), in the
    program variant `params` need (a `pandas.Series` value makes a constant a series).

    Raises
    ------
    NotCompilable
        The compiler does not cover the model (the message names the construct).
    """
    from .compiled import series_signature
    from .model import Model, load

    model = model if isinstance(model, Model) else load(model)
    source = Path(model.path)
    if source.suffix.lower() not in (".mdl", ".xmile", ".stmx", ".xml"):
        raise NotCompilable("a PySD-translated .py has no abstract model to compile")
    series = series_signature(dict(params or {}))
    memo = (str(source), model.sha256, tuple(sorted(series.items())))
    cached = _MEMO.get(memo)
    if cached is not None and cached.model is model:
        return cached
    program, nodes, keys, names = _compiled_equations(model, series)
    layout = Layout.of(nodes)
    eq = Equations(
        model=model,
        program=program,
        nodes=nodes,
        keys=keys,
        names=names,
        vector=_vector_module(program, layout_text(nodes, layout, vector=True)),
        layout=layout,
    )
    if len(_MEMO) >= 16:
        _MEMO.clear()
    _MEMO[memo] = eq
    return eq


#: (model file, its sha256, series variant) -> Equations: a model is parsed once per
#: variant in a process (parsing costs most of `equations`).
_MEMO: dict[tuple, Equations] = {}


def _compiled_equations(model, series: dict) -> tuple[Program, dict, dict, dict]:
    """The compiler's program, nodes, keys and names for a model variant: from the model's
    cache folder, or parsed and compiled now and written there (parsing the default model
    takes about a second, reading it back milliseconds)."""
    import hashlib
    import pickle

    from .compiled import COMPILER_VERSION, _write_atomic
    from .compiler import Compiler

    variant = hashlib.sha256(repr(sorted(series.items())).encode()).hexdigest()[:10]
    path = Path(model.py_file).parent / f"compiled_v{COMPILER_VERSION}_equations_{variant}.pkl"
    try:
        with open(path, "rb") as f:
            found = pickle.load(f)
        if isinstance(found, tuple) and len(found) == 4 and isinstance(found[0], Program):
            return found
    except (OSError, EOFError, pickle.UnpicklingError, AttributeError, TypeError):
        pass  # missing or unreadable: compile again (the cache heals)
    abstract = compat.parse(Path(model.path))
    compiler = Compiler(
        abstract.sections[0], series, model.pysd_model, macros=abstract.sections[1:]
    )
    program = compiler.compile()
    keys: dict[str, list[str]] = {}
    names: dict[str, str] = {}
    for key, element in compiler.elements.items():
        if compat.is_control(element) or compat.is_lookup(element):
            continue
        found = [
            compiler.key_of(key, combo)
            for combo in compiler.elements_of(compiler.final_dims[key])
            if compiler.key_of(key, combo) in compiler.nodes
        ]
        if found:
            keys[element.name] = found
            names[key] = element.name
    out = (program, dict(compiler.nodes), keys, names)
    _write_atomic(path, pickle.dumps(out))
    return out


def _vector_module(program: Program, functions: str) -> types.ModuleType:
    from ._codegen import RUNTIME_VECTOR
    from .modules import module_text

    body = RUNTIME_VECTOR + program.body + "\n\n_vector_lookups(globals())\n" + functions
    return _exec_module("_flywheel_links_vector", module_text(body, "python"))


# -- the generated loop-analysis functions ------------------------------------------------
@dataclass(eq=False)
class Layout:
    """Where the generated functions keep things: ``rows[key]`` is a node's row of the
    run's table (every node's value at every saved time), ``flow_rows[stock]`` the row of
    a stock's net flow; ``links[(target, source)]`` numbers every link between two
    time-varying nodes (a row of the partial changes)."""

    rows: dict[str, int]
    flow_rows: dict[str, int]
    links: dict[tuple[str, str], int]

    @property
    def n_rows(self) -> int:
        return len(self.rows) + len(self.flow_rows)

    @classmethod
    def of(cls, nodes: Mapping[str, Node]) -> Layout:
        from graphlib import TopologicalSorter

        # sorted: the generated text (and so Numba's disk cache) must not depend on the
        # process's string hashing
        deps = {
            k: sorted(d for d in n.deps if d in nodes) if n.kind == "aux" else []
            for k, n in nodes.items()
        }
        order = list(TopologicalSorter(deps).static_order())
        rows = {k: i for i, k in enumerate(order)}
        stocks = [k for k in order if nodes[k].kind == "stock"]
        flow_rows = {k: len(rows) + i for i, k in enumerate(stocks)}
        dynamic = {k for k, n in nodes.items() if n.kind in ("aux", "stock")}
        links: dict[tuple[str, str], int] = {}
        for z in order:
            node = nodes[z]
            if z in dynamic:
                inputs = node.flow_deps if node.kind == "stock" else node.deps
                for x in sorted(d for d in inputs if d in dynamic):
                    links[(z, x)] = len(links)
        return cls(rows, flow_rows, links)


#: Rows and links per generated function: Numba's compile time grows faster than a
#: function's length (several of its passes are quadratic), so many small functions
#: compile sooner than one large one.
ROWS_PER_FUNCTION = 24
LINKS_PER_FUNCTION = 16


def _parts(items: list, size: int) -> list[list]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def layout_text(nodes: Mapping[str, Node], layout: Layout, *, vector: bool) -> str:
    """The generated functions of a loop analysis, over a table ``V`` (rows: `layout`,
    columns: saved times):

    * ``_ltm_nodes(times, Y, c, V)``: every node's value, and every stock's net flow, from
      the recorded states ``Y`` (times x states), a row at a time in dependency order;
    * ``_ltm_links(times, c, V, out, at, A, B, D)``: for each link j with ``out[j] >= 0``
      (x -> z), ``D[out[j], k] = Δₓz · sign(Δx) / A[at[j], k] · B[at[j], k]`` at every
      time k >= 1, where Δₓz is z's equation (a stock's: its net flow) with x at time k
      and every other input, TIME included, at k-1, minus its value at k-1 (the link
      score's numerator; `flywheel_sd.ltm.LinkScorer` gives A and B).

    ``vector=False``: scalar loops over time (the Numba backend); ``vector=True``: the same
    lines once over whole rows (NumPy; K and P are slices).
    """
    rows, flow_rows = layout.rows, layout.flow_rows

    def fill(text: str, default: str, now: str = "") -> str:
        def cell(m):
            key = m.group(1)
            return f"V[{rows[key]}, {'K' if key == now else default}]"

        return _PLACEHOLDER.sub(cell, text)

    def loop(first: int, line: str, clock: str) -> list[str]:
        """`line` at every time from `first` (a row: reads and writes run along memory)."""
        if vector:
            return [line]
        head = [f"for K in range({first}, times.shape[0]):"]
        if first:
            head.append("    P = K - 1")
        head.append(f"    t = times[{clock}]")
        return [*head, "    " + line]

    lines = []
    for key, row in rows.items():
        node = nodes[key]
        if node.kind == "stock":
            value = f"Y[K, {node.slot}]"
            value = f"np.maximum({value}, 0.0)" if node.nonneg else value
        elif node.kind == "aux":
            value = fill(node.expr, "K")
        else:
            value = f"c[{node.slot}]"
        lines.append(f"V[{row}, K] = {value}")
    lines += [f"V[{row}, K] = {fill(nodes[key].flow, 'K')}" for key, row in flow_rows.items()]
    out: list[str] = []
    parts = _parts(lines, ROWS_PER_FUNCTION)  # in order: a part reads the rows before it
    for n, part in enumerate(parts):
        out += ["", "", "@_jit", f"def _ltm_nodes_{n}(times, Y, c, V):"]
        if vector:
            out += ["    K = slice(None)", "    t = times"]
        for line in part:
            out += ["    " + s for s in loop(0, line, "K")]
    out += ["", "", "@_jit", "def _ltm_nodes(times, Y, c, V):"]
    out += [f"    _ltm_nodes_{n}(times, Y, c, V)" for n in range(len(parts))] or ["    pass"]

    pairs = list(layout.links)
    chunks = _parts(pairs, LINKS_PER_FUNCTION)
    signature = "(times, c, V, out, at, A, B, D)"
    for n, chunk in enumerate(chunks):
        out += ["", "", "@_jit", f"def _ltm_links_{n}{signature}:"]
        if vector:
            out += ["    K = slice(1, None)", "    P = slice(0, -1)", "    t = times[P]"]
        for z, x in chunk:
            node = nodes[z]
            expr = node.flow if node.kind == "stock" else node.expr
            before = flow_rows[z] if node.kind == "stock" else rows[z]
            j = layout.links[(z, x)]
            change = f"(({fill(expr, 'P', now=x)}) - V[{before}, P])"
            sign = f"np.sign(V[{rows[x]}, K] - V[{rows[x]}, P])"
            line = f"D[o, K] = {change} * {sign} / A[a, K] * B[a, K]"
            out += [f"    if out[{j}] >= 0:", f"        o, a = out[{j}], at[{j}]"]
            out += ["        " + s for s in loop(1, line, "P")]
    out += ["", "", "@_jit", f"def _ltm_links{signature}:"]
    out += [f"    _ltm_links_{n}{signature}" for n in range(len(chunks))] or ["    pass"]
    return "\n".join(out) + "\n"


def _exec_module(name: str, text: str) -> types.ModuleType:
    mod = types.ModuleType(name)
    exec(compile(text, f"<{name}>", "exec"), mod.__dict__)  # noqa: S102 -- generated code
    return mod


# -- run states ---------------------------------------------------------------------------
@dataclass(eq=False)
class RunState:
    """Every node's value at the saved times of one run: `values[key]` is an array over
    `times` (a stock's value as its equations see it: non-negative stocks clipped at 0),
    a row of `table` (laid out by the equations' `Layout`, stocks' net flows included)."""

    times: np.ndarray
    rows: Mapping[str, int]  # node key -> its row of `table` (Layout.rows)
    c: np.ndarray  # the run's constants after setup and init (control values included)
    table: np.ndarray  # rows: Layout.rows and Layout.flow_rows; columns: times
    functions: types.ModuleType  # the generated module whose _ltm_* functions to use

    @functools.cached_property
    def values(self) -> dict[str, np.ndarray]:
        return {key: self.table[row] for key, row in self.rows.items()}

    def __len__(self) -> int:
        return len(self.times)

    def link_terms(
        self,
        eq: Equations,
        pairs: Sequence[tuple[str, str]],
        at: Sequence[int],
        a,
        b,
        out: np.ndarray | None = None,
    ) -> np.ndarray:
        """Δₓz · sign(Δx) / a · b for each link (target, source) of `pairs` at every saved
        time (a row per pair; 0 at the first time), with the rows ``a[at[i]]`` and
        ``b[at[i]]`` for pair i: see `layout_text`. Written into `out` if given (C-ordered,
        pairs x times)."""
        links = eq.layout.links
        slot = np.full(len(links), -1, dtype=np.int64)  # each link's row of the output
        rows = np.zeros(len(links), dtype=np.int64)
        numbers = [links[pair] for pair in pairs]
        slot[numbers] = np.arange(len(numbers))
        rows[numbers] = at
        terms = np.empty((len(numbers), len(self.times))) if out is None else out
        with np.errstate(all="ignore"):
            self.functions._ltm_links(
                self.times, self.c, self.table, slot, rows, np.asarray(a), np.asarray(b), terms
            )
        terms[:, :1] = 0.0
        return terms


def record_states(
    eq: Equations,
    params: Mapping | None = None,
    *,
    method: str = "RK45",
    rtol: float = 1e-6,
    atol: float = 1e-6,
    max_step: float | None = None,
    final_time: float | None = None,
    time_step: float | None = None,
    saveper: float | None = None,
    breakpoints: Sequence[float] = (),
    backend: str | None = None,
) -> RunState:
    """Run the model as `flywheel_sd.simulate` does on the compiled engine (same drivers,
    same method and options) and return every node's values.

    `eq` must be the variant for `params` (``equations(model, params)``). The run records
    the state vector itself (`recorder`), on the backend `run.choose_backend` picks
    (`backend` "python" or "numba" to choose); every other node follows from the states.
    """
    import pandas as pd

    from . import run
    from .simulate import FIXED_METHODS, check_method

    method = check_method(method)
    checked: dict = eq.model.check_params(dict(params or {}), "error")
    cm = recorder(eq)
    backend = run.choose_backend(cm, backend)
    mod = cm.module(backend)
    c = cm.constants(
        checked, {"final_time": final_time, "time_step": time_step, "saveper": saveper}
    )
    if method in FIXED_METHODS:
        times, y, _ = run.fixed_step(cm, mod, c.copy(), method, None)
    else:
        extra = [float(t) for t in breakpoints]
        for value in checked.values():
            if isinstance(value, pd.Series):
                extra += [float(t) for t in value.index]
        times, y, _ = run.adaptive(cm, mod, c, method, rtol, atol, max_step, extra, None)
        c[4] = 1.0  # the adaptive run's exact-time flag
    run.initial_state(mod, c, cm.program)  # c as the run saw it: setup and INITIALs done
    functions = mod if backend == "numba" else eq.vector  # NumPy: whole rows at once
    return state_from(eq, times, y, c, functions)


_STATE_RECORDER = """

@_jit
def record(t, y, c, row):  # loop analysis: the state itself (every node follows from it)
    for i in range(y.shape[0]):
        row[i] = y[i]


N_OUT = {n_states}
"""


def recorder(eq: Equations):
    """The equations' program compiled to record its state vector at the saved times (a
    `CompiledModel` whose "columns" are the states), cached beside the model's own
    compiled code: Numba's compiled form is kept on disk and warmed in the background
    as the run engine's is."""
    import dataclasses
    import hashlib

    from .compiled import COMPILER_VERSION, CompiledModel

    cm = eq._recorder
    if cm is None:
        program = eq.program
        body = (
            program.body
            + _STATE_RECORDER.format(n_states=program.n_states)
            + layout_text(eq.nodes, eq.layout, vector=False)
        )
        states = dataclasses.replace(
            program,
            body=body,
            columns=list(program.state_names),  # a failed run's diagnosis names a state
            eval_order=list(range(program.n_states)),
            column_of={},
        )
        digest = hashlib.sha256(body.encode()).hexdigest()[:10]
        dims = {name: eq.model.dims_of(name) for name in program.params}
        folder = Path(eq.model.py_file).parent
        cm = CompiledModel(states, folder, f"compiled_v{COMPILER_VERSION}_states_{digest}", dims)
        eq._recorder = cm
    return cm


def state_from(
    eq: Equations,
    times: np.ndarray,
    y: np.ndarray,
    c: np.ndarray,
    functions: types.ModuleType | None = None,
) -> RunState:
    """Every node's values (and every stock's net flow) from the states `y` (times x
    states) and the constants `c`, by the generated `_ltm_nodes` of `functions` (default:
    the equations' NumPy module, over the whole run at once)."""
    functions = functions or eq.vector
    times = np.ascontiguousarray(times, dtype=float)
    table = np.empty((eq.layout.n_rows, len(times)))
    with np.errstate(all="ignore"):
        functions._ltm_nodes(times, np.ascontiguousarray(y, dtype=float), c, table)
    return RunState(times, eq.layout.rows, np.asarray(c), table, functions)


# -- re-evaluation and partial derivatives ------------------------------------------------
def evaluate(
    eq: Equations, state: RunState, target: str, replace: Mapping[str, Any] | None = None
) -> np.ndarray:
    """The target node's equation re-evaluated at every time of `state`, with the inputs in
    `replace` (node key -> value or array over time) set to those values and every other
    input at its recorded value. For a stock, its net flow (the INTEG's rate).

    Only the target's own equation is re-evaluated: nothing downstream or upstream of the
    replaced inputs changes (a ceteris-paribus link evaluation).
    """
    values: Mapping[str, Any] = state.values
    if replace:
        unknown = [k for k in replace if k not in eq.nodes]
        if unknown:
            raise KeyError(f"not nodes of the model: {unknown}")
        values = {**state.values, **replace}
    with np.errstate(all="ignore"):
        out = eq.function(target)(state.times, state.c, values)
    return np.broadcast_to(np.asarray(out, dtype=float), state.times.shape).copy()


def step_size(x: np.ndarray, rel_step: float = REL_STEP) -> np.ndarray:
    """The central difference's step for input values `x` over a run."""
    x = np.asarray(x, dtype=float)
    finite = np.abs(x[np.isfinite(x)])
    largest = float(finite.max()) if finite.size else 0.0
    scale = SCALE_FLOOR * largest if largest > 0 else UNIT_SCALE
    return rel_step * np.maximum(np.abs(np.nan_to_num(x)), scale)


def partial(
    eq: Equations,
    state: RunState,
    target: str,
    source: str,
    rel_step: float = REL_STEP,
) -> np.ndarray:
    """∂target/∂source along the run (an array over `state.times`) by a central
    difference: the target's equation evaluated with the source at x+h and x-h. A stock
    target: the derivative of its net flow (inflows count +1, outflows -1)."""
    return _difference(eq, state, target, source, rel_step)[0]


def _difference(eq, state, target, source, rel_step):
    if source not in eq.inputs(target):
        raise KeyError(f"{eq.label(target)} does not read {eq.label(source)}")
    x = state.values[source]
    h = step_size(x, rel_step)
    up = evaluate(eq, state, target, {source: x + h})
    down = evaluate(eq, state, target, {source: x - h})
    change = up - down
    with np.errstate(all="ignore"):
        derivative = change / (2 * h)
    size = np.maximum(np.abs(up), np.abs(down))
    return derivative, change, size


def link_sign(
    eq: Equations, state: RunState, target: str, source: str, rel_step: float = REL_STEP
) -> np.ndarray:
    """The sign (+1, -1, 0) of ∂target/∂source over the run, for a direct input `source`
    of `target` (node keys). 0 where the target does not respond (round-off excluded: a
    change below ZERO_CHANGE of the target's size), or where the value is not finite."""
    derivative, change, size = _difference(eq, state, target, source, rel_step)
    sign = np.sign(np.nan_to_num(derivative, nan=0.0, posinf=1.0, neginf=-1.0))
    quiet = np.abs(change) <= ZERO_CHANGE * size
    sign[quiet | ~np.isfinite(change)] = 0.0
    return sign.astype(np.int8)


def hidden_paths(eq: Equations, target: str, sources: Sequence[str]) -> list[list[str]]:
    """The dependency paths from any of `sources` to `target` (node keys) whose inner nodes
    are hidden (no output column): a direct input gives ``[source, target]``; a SMOOTH
    between them gives ``[source, stage, target]``. Each path is listed source first."""
    wanted = set(sources)
    out: list[list[str]] = []

    def walk(key, path, seen):
        for dep in sorted(eq.inputs(key)):
            if dep in wanted:
                out.append([dep, *path])
            elif eq.nodes[dep].column is None and dep not in seen:
                walk(dep, [dep, *path], seen | {dep})

    walk(target, [target], {target})
    return out


def path_sign(eq: Equations, state: RunState, path: Sequence[str]) -> np.ndarray:
    """The sign of a dependency path (source first) over the run: the product of its
    links' signs (each hop ∂next/∂previous; into a stock, the sign in its net flow)."""
    sign = np.ones(len(state), dtype=np.int8)
    for source, target in itertools.pairwise(path):
        sign = sign * link_sign(eq, state, target, source)
    return sign


@dataclass(eq=False)
class LinkSigns:
    """The sign of a link between two variables along a run, per pair of elements.

    ``pairs[(target_key, source_key)]`` is the sign over time of that element pair (its
    paths through hidden nodes combined: the sign they agree on, 0 where they disagree or
    none is active). ``combined`` is one sign per time for the whole link: +1 or -1 where
    every active pair has that sign, 0 where no pair is active, and ``mixed`` marks the
    times where active pairs disagree (there ``combined`` is the sign of their sum).
    """

    source: str
    target: str
    kind: str  # "flow" (into a stock: the sign in its net flow) or "aux"
    times: np.ndarray
    pairs: dict[tuple[str, str], np.ndarray]
    paths: dict[tuple[str, str], list[list[str]]]
    combined: np.ndarray = field(init=False)
    mixed: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        stack = (
            np.array(list(self.pairs.values()))
            if self.pairs
            else np.zeros((0, len(self.times)), dtype=np.int8)
        )
        positive = (stack > 0).any(axis=0)
        negative = (stack < 0).any(axis=0)
        self.mixed = np.asarray(positive & negative)
        self.combined = np.where(
            self.mixed, np.sign(stack.sum(axis=0)), positive.astype(int) - negative.astype(int)
        ).astype(np.int8)

    @property
    def name(self) -> str:
        return f"{self.source} -> {self.target}"

    def flips(self) -> bool:
        """Whether both signs occur (over time, or between elements)."""
        return bool(any((s > 0).any() for s in self.pairs.values())) and bool(
            any((s < 0).any() for s in self.pairs.values())
        )


def link_signs(
    eq: Equations, state: RunState, source: str, target: str, rel_step: float = REL_STEP
) -> LinkSigns:
    """The signs of the link `source` -> `target` between two variables (Vensim names, or
    node keys / columns of single elements), for each element pair the target's equation
    connects (directly, or through hidden nodes such as a SMOOTH's stage).

    Raises
    ------
    KeyError
        A name is not a variable, or no element of `target` depends on `source`.
    """
    sources = eq.keys_of(source)
    targets = eq.keys_of(target)
    pairs: dict[tuple[str, str], np.ndarray] = {}
    routes: dict[tuple[str, str], list[list[str]]] = {}
    for z in targets:
        by_source: dict[str, list[list[str]]] = {}
        for path in hidden_paths(eq, z, sources):
            by_source.setdefault(path[0], []).append(path)
        for x, paths in by_source.items():
            signs = np.array([path_sign(eq, state, p) for p in paths])
            positive, negative = (signs > 0).any(axis=0), (signs < 0).any(axis=0)
            pairs[(z, x)] = np.where(positive & negative, 0, np.sign(signs.sum(axis=0))).astype(
                np.int8
            )
            routes[(z, x)] = paths
    if not pairs:
        raise KeyError(f"{target!r} does not depend on {source!r}")
    kind = "flow" if all(eq.is_stock(z) for z, _ in pairs) else "aux"
    return LinkSigns(source, target, kind, state.times, pairs, routes)


def spans(times: np.ndarray, values: np.ndarray) -> list[tuple[float, float, int]]:
    """Runs of equal values over time: (first time, last time, value) for each run."""
    out: list[tuple[float, float, int]] = []
    if len(values) == 0:
        return out
    start = 0
    for i in range(1, len(values) + 1):
        if i == len(values) or values[i] != values[start]:
            out.append((float(times[start]), float(times[i - 1]), int(values[start])))
            start = i
    return out


def is_finite_state(state: RunState) -> bool:
    """Whether every recorded value is finite (a run that blew up gives no signs)."""
    return all(bool(np.isfinite(v).all()) for v in state.values.values()) and math.isfinite(
        float(state.times[-1])
    )
