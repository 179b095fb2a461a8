"""From the compiler's nodes to the text of the generated module.

Classifies each node (constant, derived constant, INITIAL value, state, time-varying),
orders each phase topologically, drops what no derivative and no output needs, and writes
the functions. The runtime helpers (`RUNTIME_SCALAR`, `RUNTIME_VECTOR`) are the only text
that differs between the scalar backends (Python floats, Numba) and the vector one (NumPy,
members on the last axis).
"""

from __future__ import annotations

import re
from graphlib import CycleError, TopologicalSorter

import numpy as np

from ._ir import NotCompilable, Program, specialized_lookup

_PLACEHOLDER = re.compile("\x02([^\x03]*)\x03")

# Helpers shared by the scalar backends; written so Numba compiles them.
RUNTIME_SCALAR = """
@_jit
def _clamp(dy, y):
    return 0.0 if (y <= 0 and dy < 0) else dy


@_jit
def _ite(cond, a, b):
    return a if cond else b


@_jit
def _and(a, b):
    return bool(a) and bool(b)


@_jit
def _or(a, b):
    return bool(a) or bool(b)


@_jit
def _not(a):
    return not a


@_jit
def _xidz(a, b, x):
    return x if abs(b) < 1e-6 else a / b


@_jit
def _zidz(a, b):
    return 0.0 if abs(b) < 1e-6 else a / b


@_jit
def _quantum(a, b):
    return a if b < 1e-6 else b * np.trunc(a / b)


@_jit
def _step(t, value, tstep, dt, exact):
    if exact:
        return value * (t >= tstep)
    return value * (t + dt / 2 > tstep)


@_jit
def _pulse(t, start, repeat, width, magnitude, end, dt, exact):
    # PySD's PULSE on the Euler grid; exact edges for the adaptive methods
    small = 0.0 if exact else 1e-6
    if np.isnan(width):
        width = dt if exact else 0.5 * dt
    out = 1.0 if np.isnan(magnitude) else magnitude / dt
    if repeat == 0:
        return out if start - small <= t < start + width else 0.0
    if start <= t < end:
        return out if (t - start + small) % repeat < width else 0.0
    return 0.0


@_jit
def _ramp(t, slope, start, finish):
    final = min(finish, t)
    return (t + 1e-6 > start) * slope * (final - start)


@_jit
def _lookup(x, xs, ys, mode):
    if x != x:  # NaN in, NaN out, as numpy.interp
        return x
    # mode: 0 interpolate, 1 hold backward, 2 extrapolate, 3 look forward (data),
    # 4 raw (data: NaN off the knots)
    if mode == 4:
        for k in range(xs.shape[0]):
            if xs[k] == x:
                return ys[k]
        return np.nan
    if x > xs[-1]:
        if mode == 2:
            return ys[-1] + (ys[-1] - ys[-2]) / (xs[-1] - xs[-2]) * (x - xs[-1])
        return ys[-1]
    if x < xs[0]:
        if mode == 2:
            return ys[0] + (ys[1] - ys[0]) / (xs[1] - xs[0]) * (x - xs[0])
        return ys[0]
    # x is inside [xs[0], xs[-1]]: find j with xs[j] <= x < xs[j + 1]
    j = 0
    n = xs.shape[0]
    while j < n - 1 and xs[j + 1] <= x:
        j += 1
    if mode == 1 or j == n - 1 or xs[j] == x:
        return ys[j]
    if mode == 3:
        return ys[j + 1]
    # numpy.interp's arithmetic, so results equal PySD's to the last bit
    slope = (ys[j + 1] - ys[j]) / (xs[j + 1] - xs[j])
    out = slope * (x - xs[j]) + ys[j]
    if out != out:
        out = slope * (x - xs[j + 1]) + ys[j + 1]
        if out != out and ys[j] == ys[j + 1]:
            out = ys[j]
    return out
"""

RUNTIME_VECTOR = '''
def _clamp(dy, y):
    return np.where((y <= 0) & (dy < 0), 0.0, dy)


def _ite(cond, a, b):
    return np.where(cond, a, b)


_and = np.logical_and
_or = np.logical_or
_not = np.logical_not


def _xidz(a, b, x):
    with np.errstate(all="ignore"):
        return np.where(np.abs(b) < 1e-6, x, a / b)


def _zidz(a, b):
    with np.errstate(all="ignore"):
        return np.where(np.abs(b) < 1e-6, 0.0, a / b)


def _quantum(a, b):
    with np.errstate(all="ignore"):
        return np.where(b < 1e-6, a, b * np.trunc(a / b))


def _step(t, value, tstep, dt, exact):
    if np.ravel(exact)[0]:  # c[4] is one row of equal flags
        return value * (t >= tstep)
    return value * (t + dt / 2 > tstep)


def _pulse(t, start, repeat, width, magnitude, end, dt, exact):
    exact = np.ravel(exact)[0]
    small = 0.0 if exact else 1e-6
    width = np.where(np.isnan(width), dt if exact else 0.5 * dt, width)
    out = np.where(np.isnan(magnitude), 1.0, magnitude / dt)
    with np.errstate(all="ignore"):
        single = np.where((start - small <= t) & (t < start + width), out, 0.0)
        train = np.where((start <= t) & (t < end)
                         & (np.mod(t - start + small, repeat) < width), out, 0.0)
    return np.where(repeat == 0, single, train)


def _ramp(t, slope, start, finish):
    return (t + 1e-6 > start) * slope * (np.minimum(finish, t) - start)


def _vector_lookups(namespace):
    """The per-table scalar lookups (``_lk3``) as calls of the vector `_lookup`."""
    for name in [n for n in namespace if n.startswith("_lk") and n[3:].isdigit()]:
        i = name[3:]
        xs, ys, mode = namespace["LX" + i], namespace["LY" + i], namespace["LM" + i]
        namespace[name] = (lambda xs, ys, mode: lambda x: _lookup(x, xs, ys, mode))(
            xs, ys, mode)


def _lookup(x, xs, ys, mode):
    x = np.asarray(x, dtype=float)
    if mode == 4:  # raw data: NaN off the knots
        index = np.clip(np.searchsorted(xs, x), 0, len(xs) - 1)
        return np.where(xs[index] == x, ys[index], np.nan)
    if mode == 3:  # look forward
        index = np.clip(np.searchsorted(xs, x, side="left"), 0, len(xs) - 1)
        return np.where(x > xs[-1], ys[-1], ys[index])
    if mode == 1:
        index = np.clip(np.searchsorted(xs, x, side="right") - 1, 0, len(xs) - 1)
        return np.where(x < xs[0], ys[0], ys[index])
    out = np.interp(x, xs, ys)
    if mode == 2:
        low = ys[0] + (ys[1] - ys[0]) / (xs[1] - xs[0]) * (x - xs[0])
        high = ys[-1] + (ys[-1] - ys[-2]) / (xs[-1] - xs[-2]) * (x - xs[-1])
        out = np.where(x < xs[0], low, np.where(x > xs[-1], high, out))
    return out
'''


def generate(comp) -> Program:
    nodes = comp.nodes
    for key, node in nodes.items():
        for dep in node.deps | node.init_deps | node.flow_deps:
            if dep != "time" and dep not in nodes:
                raise NotCompilable(f"{node.column or key} reads {dep}, which no equation defines")
    dynamic = _dynamic(nodes)
    for deps, message in comp.constant_checks:  # constant in time (derived ones too)
        if not all(d in nodes and d not in dynamic for d in deps):
            raise NotCompilable(message)
    storage = {}
    derived = []
    for key, node in nodes.items():
        if node.kind == "stock":
            storage[key] = f"y{node.slot}"
        elif node.kind in ("const", "initial"):
            storage[key] = f"c[{node.slot}]"
        elif key in dynamic:
            storage[key] = f"v{len(storage)}"
        else:  # an expression of constants: computed once, in setup
            node.slot = comp.c_slot()
            storage[key] = f"c[{node.slot}]"
            derived.append(key)

    def fill(text: str) -> str:
        return _PLACEHOLDER.sub(lambda m: storage[m.group(1)], text)

    lines = ["# Generated by flywheel_sd.engine from PySD's abstract model. Do not edit.", ""]
    for index, (xs, ys, mode) in enumerate(comp.lookups.values()):
        if specialized_lookup(xs, mode):
            lines += _lookup_function(index, xs, ys, mode)
        lines.append(f"LX{index} = np.array({_floats(xs)})")
        lines.append(f"LM{index} = {mode}")
        lines.append(f"LY{index} = np.array({_floats(ys)})")
    stocks = sorted((n for n in nodes.values() if n.kind == "stock"), key=lambda n: n.slot)
    lines.append(f"N_STATES = {comp.n_states}")
    lines.append(f"NONNEG = np.array({[n.nonneg for n in stocks]!r}, dtype=np.bool_)")

    # setup: derived constants in dependency order
    order = _sorted({k: nodes[k].deps & set(derived) for k in derived})
    lines += ["", "", "@_jit", "def setup(c):"]
    lines += [f"    {storage[k]} = {fill(nodes[k].expr)}" for k in order] or ["    pass"]

    # init: INITIAL values and the initial state, evaluated at INITIAL TIME
    lines += _init_function(comp, nodes, storage, fill)

    columns, column_nodes = _columns(comp)
    flows = {n.key: n for n in stocks}
    needed_rhs = _closure(
        nodes, dynamic, set().union(*(n.flow_deps for n in stocks)) if stocks else set()
    )
    lines += ["", "", "@_jit", "def rhs(t, y, c, dy):"]
    lines += _prelude(stocks) + _aux_lines(nodes, dynamic, needed_rhs, storage, fill)
    for node in flows.values():
        lines.append(f"    dy[{node.slot}] = {fill(node.flow)}")
        if node.nonneg:
            lines.append(f"    dy[{node.slot}] = _clamp(dy[{node.slot}], y[{node.slot}])")
    if not stocks:
        lines.append("    pass")

    needed_out = _closure(nodes, dynamic, set(column_nodes))
    lines += ["", "", "@_jit", "def record(t, y, c, row):"]
    aux = _aux_lines(nodes, dynamic, needed_out, storage, fill)
    lines += _prelude(stocks) + aux
    for i, key in enumerate(column_nodes):
        lines.append(f"    row[{i}] = {storage[key]}")
    lines.append(f"\n\nN_OUT = {len(columns)}")
    lines.append(f"N_C = {comp.n_c}")

    python_side = _python_side(comp, nodes, storage, fill)
    lines += python_side
    return Program(
        body="\n".join(lines) + "\n",
        n_c=comp.n_c,
        n_states=comp.n_states,
        c_default=list(comp.c_default),
        params=_params(comp),
        columns=columns,
        eval_order=_evaluation_order(nodes, column_nodes, dynamic),
        column_of=_column_of(comp, columns),
        state_names=list(comp.state_names),
        nonneg=[n.nonneg for n in stocks],
        series=_series(comp),
        time_equality=comp.time_equality,
        subscripts=comp.subs,
        state_deps=_state_dependencies(nodes, stocks),
        event_slots=_slots_read(python_side, "def events(", "def guards("),
        guard_slots=_slots_read(python_side, "def guards(", None),
    )


def _slots_read(lines, start, stop) -> list[int]:
    """The c slots that the generated functions from `start` to `stop` read: which
    constants a member's breakpoints (events, switches) or guards depend on."""
    text = "\n".join(lines)
    text = text[text.index(start) : text.index(stop) if stop else None]
    return sorted({int(k) for k in re.findall(r"c\[(\d+)\]", text)} - {0, 1, 2, 3, 4})


def _state_dependencies(nodes, stocks) -> list[list[int]]:
    """For each state, the states its derivative reads (through auxiliaries): the sparsity
    pattern of the Jacobian, for the implicit solvers."""
    out = []
    for stock in stocks:
        seen, todo, states = set(), list(stock.flow_deps), set()
        while todo:
            key = todo.pop()
            if key in seen or key not in nodes:
                continue
            seen.add(key)
            node = nodes[key]
            if node.kind == "stock":
                states.add(node.slot)
            elif node.kind == "aux":
                todo.extend(node.deps)
        out.append(sorted(states))
    return out


def _lookup_function(index, xs, ys, mode) -> list[str]:
    """`_lookup` for one table, its points written as literals: the same decisions and the
    same arithmetic as `_lookup` (numpy.interp's), so the same numbers to the last bit."""
    x = [repr(float(v)) for v in xs]
    y = [repr(float(v)) for v in ys]
    lines = ["", "", "@_jit", f"def _lk{index}(x):", "    if x != x:", "        return x"]
    high = (
        y[-1]
        if mode != 2
        else f"{y[-1]} + ({y[-1]} - {y[-2]}) / ({x[-1]} - {x[-2]}) * (x - {x[-1]})"
    )
    low = y[0] if mode != 2 else f"{y[0]} + ({y[1]} - {y[0]}) / ({x[1]} - {x[0]}) * (x - {x[0]})"
    lines += [
        f"    if x > {x[-1]}:",
        f"        return {high}",
        f"    if x < {x[0]}:",
        f"        return {low}",
    ]
    for j in range(len(x) - 1):
        lines.append(f"    if x < {x[j + 1]}:")
        if mode == 1:
            lines.append(f"        return {y[j]}")
            continue
        lines += [
            f"        if x == {x[j]}:",
            f"            return {y[j]}",
            f"        slope = ({y[j + 1]} - {y[j]}) / ({x[j + 1]} - {x[j]})",
            f"        out = slope * (x - {x[j]}) + {y[j]}",
            "        if out != out:",
            f"            out = slope * (x - {x[j + 1]}) + {y[j + 1]}",
            "        return out",
        ]
    # x is the last point (or equals the last points of a repeated one)
    lines.append(f"    return {y[-1]}")
    return lines


def _floats(values) -> str:
    return "[" + ", ".join(repr(float(v)) for v in np.asarray(values, dtype=float)) + "]"


def _all_constant(nodes, deps) -> bool:
    return all(d in nodes and nodes[d].kind == "const" for d in deps)


def _dynamic(nodes) -> set:
    """Nodes whose value changes during a run: states, Time, INITIAL values (known only
    after init), and everything that reads them."""
    deps = {k: n.deps for k, n in nodes.items()}
    dynamic = {k for k, n in nodes.items() if n.kind in ("stock", "initial")}
    dynamic |= {k for k, d in deps.items() if "time" in d}
    changed = True
    while changed:
        changed = False
        for key, d in deps.items():
            if key not in dynamic and nodes[key].kind == "aux" and d & dynamic:
                dynamic.add(key)
                changed = True
    return dynamic


def _sorted(graph: dict) -> list:
    """A dependency order of `graph` (node -> its inputs), the same in every process (sets
    of strings iterate in an order that changes with the process's string hashing, and
    generated text that changes defeats Numba's disk cache)."""
    ordered = {k: sorted(graph[k]) for k in sorted(graph)}
    try:
        return list(TopologicalSorter(ordered).static_order())
    except CycleError as err:
        names = " -> ".join(str(k) for k in err.args[1][:6])
        raise NotCompilable(f"a simultaneous equation (algebraic loop): {names}") from err


def _closure(nodes, dynamic, roots) -> set:
    """The time-varying auxiliaries that `roots` need, transitively."""
    out, todo = set(), [r for r in roots if r in dynamic]
    while todo:
        key = todo.pop()
        if key in out or key not in nodes:
            continue
        out.add(key)
        if nodes[key].kind == "aux":
            todo.extend(d for d in nodes[key].deps if d in dynamic)
    return {k for k in out if nodes[k].kind == "aux"}


def _prelude(stocks) -> list:
    return [
        f"    y{n.slot} = np.maximum(y[{n.slot}], 0.0)"
        if n.nonneg
        else f"    y{n.slot} = y[{n.slot}]"
        for n in stocks
    ]


def _aux_lines(nodes, dynamic, needed, storage, fill) -> list:
    graph = {k: nodes[k].deps & needed for k in needed}
    return [f"    {storage[k]} = {fill(nodes[k].expr)}" for k in _sorted(graph)]


def _evaluation_order(nodes, column_nodes, dynamic) -> list:
    """Output columns in the order their values are computed (states and constants first),
    so the first non-finite one in this order is a root cause."""
    needed = _closure(nodes, dynamic, set(column_nodes))
    order = _sorted({k: nodes[k].deps & needed for k in needed})
    rank = {k: i for i, k in enumerate(order)}
    return sorted(range(len(column_nodes)), key=lambda i: rank.get(column_nodes[i], -1))


def _init_function(comp, nodes, storage, fill) -> list:
    """Initial values: every node takes its init-phase expression (ACTIVE INITIAL's initial
    value, a stock its initial value), so the order follows the init dependencies."""
    targets = [k for k, n in nodes.items() if n.kind in ("stock", "initial")]
    graph: dict[str, set[str]] = {}
    todo = list(targets)
    while todo:
        key = todo.pop()
        if key in graph or key not in nodes:
            continue
        node = nodes[key]
        if node.kind == "const" or (storage[key].startswith("c[") and node.kind == "aux"):
            graph[key] = set()
            continue
        deps = node.init_deps if node.kind in ("stock", "initial") or node.init_expr else node.deps
        graph[key] = {d for d in deps if d in nodes}
        todo.extend(graph[key])
    local: dict[str, str] = {}
    lines = ["", "", "@_jit", "def init(c, y):", "    t = c[1]"]
    for key in _sorted(graph):
        node = nodes[key]
        if node.kind == "const" or (node.kind == "aux" and storage[key].startswith("c[")):
            continue
        text = _PLACEHOLDER.sub(
            lambda m: local.get(m.group(1), storage[m.group(1)]), node.init_expr or node.expr
        )
        name = f"i{len(local)}"
        local[key] = name
        lines.append(f"    {name} = {text}")
        if node.kind == "stock":
            lines.append(f"    y[{node.slot}] = {name}")
        elif node.kind == "initial":
            lines.append(f"    c[{node.slot}] = {name}")
    return lines


def _columns(comp) -> tuple[list, list]:
    """PySD's default output columns: the control variables, then every other variable in
    the file's order (lookups excluded); subscripted ones flattened as ``Name[a,b]``."""
    control: list[tuple[str | None, str]] = []
    others: list[tuple[str | None, str]] = []
    for key in comp.elements:
        if _is_lookup_element(comp, key):
            continue
        keys = [comp.key_of(key, combo) for combo in comp.elements_of(comp.final_dims[key])]
        entries = [(comp.nodes[k].column, k) for k in keys if k in comp.nodes]
        (
            control if key in ("initial_time", "final_time", "time_step", "saveper") else others
        ).extend(entries)
    chosen = control + others
    return [c for c, _ in chosen], [k for _, k in chosen]


def _is_lookup_element(comp, key) -> bool:
    from ._pysd_compat import is_lookup

    return is_lookup(comp.elements[key])


def _column_of(comp, columns) -> dict:
    out: dict = {}
    index = {c: i for i, c in enumerate(columns)}
    for key, element in comp.elements.items():
        cols = [
            comp.nodes[k].column
            for k in (comp.key_of(key, combo) for combo in comp.elements_of(comp.final_dims[key]))
            if k in comp.nodes
        ]
        if cols and all(c in index for c in cols):
            out[element.name] = [index[c] for c in cols]
    return out


def _params(comp) -> dict:
    """Vensim name -> c slots of its leaf constants (element order), for overrides."""
    out = {}
    for key, element in comp.elements.items():
        keys = [comp.key_of(key, combo) for combo in comp.elements_of(comp.final_dims[key])]
        nodes = [comp.nodes.get(k) for k in keys]
        if nodes and all(n is not None and n.kind == "const" for n in nodes):
            out[element.name] = [n.slot for n in nodes]
    return out


def _series(comp) -> dict:
    out = {}
    for key, n in comp.series_req.items():
        node = comp.nodes.get(key)
        if node is not None:
            out[comp.elements[key].name] = (node.slot, n)
    return out


def _python_side(comp, nodes, storage, fill) -> list:
    """Plain-Python helpers run once per run: breakpoint events and switches, guards."""
    lines = ["", "", "def events(c):", "    out = []"]
    for fname, args, deps in comp.events:
        if _all_constant(nodes, deps - {"time"}):
            lines.append(f"    out.append(({fname!r}, ({', '.join(fill(a) for a in args)},)))")
    lines.append("    return out")
    switches = [fill(text) for text, deps in comp.switches if _all_constant(nodes, deps)]
    lines += ["", "", "def switches(t, c):", f"    return [{', '.join(switches)}]"]
    lines += ["", "", "def guards(c):", "    t = c[1]", "    out = []"]
    for code, deps, message in comp.guards:
        # evaluated after setup, at INITIAL TIME (as PySD initialises its objects)
        if not all(
            d in nodes and nodes[d].kind != "initial" and storage[d].startswith("c[")
            for d in deps - {"time"}
        ):
            raise NotCompilable(message + " (delay time not constant)")
        lines.append(f"    if not ({fill(code)}):")
        lines.append(f"        out.append({message!r})")
    lines.append("    return out")
    return lines
