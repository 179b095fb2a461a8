"""Compile PySD's abstract model into flat scalar code.

PySD parses the file (``VensimFile`` / ``XmileFile`` -> ``AbstractModel``); this module is
our own backend for that abstract syntax. Subscripts are unrolled at compile time: each
element of a subscripted variable becomes one scalar node, so ranges, sub-ranges, EXCEPT,
mappings and ``Range!`` reductions are resolved once. Nodes are sorted topologically and the
generated text defines plain functions over flat arrays:

* ``setup(c)``: the constants derived from other constants (stored in ``c``);
* ``init(c, y)``: INITIAL values (into ``c``) and the initial state ``y``;
* ``rhs(t, y, c, dy)``: the derivatives;
* ``record(t, y, c, row)``: every recorded variable.

Operations are emitted in PySD's order with NumPy's functions, so a Euler run reproduces
PySD's own to the last bit. Anything outside what we cover raises `NotCompilable` naming the
construct, and the caller runs the model on PySD instead.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from . import _pysd_compat as compat
from ._ir import (  # noqa: F401  (re-exported: callers import them from here)
    _PLACEHOLDER,
    CONTROL,
    EXACT,
    N_RESERVED,
    SMALL_VENSIM,
    SPECIALIZED_POINTS,
    Node,
    NotCompilable,
    Program,
    _is_number,
    _literal,
    clean,
    ref,
    specialized_lookup,
)
from ._stateful import StatefulStructures


class Compiler(StatefulStructures):
    """One pass over an abstract section. `series` maps Vensim names of constants that are
    overridden by a time series to their number of knots (a variant of the program)."""

    def __init__(self, section, series: dict | None = None, pysd_model=None, macros=()):
        self.section = section
        # macros are inlined at each call: one copy of their variables per call site
        self.macros = {m.name: m for m in macros}
        self._scopes: list[dict] = []  # inside a macro: its names -> node keys
        self._macro_calls: dict = {}  # (call, context) -> the copy's output key
        self._stateful: dict = {}  # (structure, context) -> (text, deps)
        # a callable giving the loaded PySD model, to read GET XLS/DIRECT and DATA values
        self._pysd_model_of = pysd_model
        self._pysd_model = None
        self.elements = {}
        self.final_dims = {}
        for element in section.elements:
            key = clean(element.name)
            self.elements[key] = element
            self.final_dims[key] = compat.final_dims(section, element)
        # read after the merges: merging partial definitions may add ranges ("Dims1")
        self.subs = compat.subscript_ranges(section)  # range -> elements
        self.mapping = compat.subscript_mappings(section)  # range -> [mapped ranges]
        self.range_of = {clean(r): r for r in self.subs}  # clean name -> range
        # a subscript range or element used as a value: its position(s) in its main range
        self.numbers = compat.subscript_numbers(section)
        self.series_req = {clean(k): v for k, v in (series or {}).items()}
        self.nodes: dict[str, Node] = {}
        self.lookups: dict[str, tuple] = {}  # key -> (xs, ys, mode)
        self._inline: dict[tuple, str] = {}  # an inline table is emitted once
        self.n_c = N_RESERVED
        self.c_default = [math.nan] * N_RESERVED
        self.n_states = 0
        self.state_names: list[str] = []
        self.hidden = itertools.count()
        self.events: list = []
        self.switches: list = []
        self.guards: list = []
        self.time_equality: str | None = None
        self.constant_checks: list = []  # (deps, message): must be constant in time
        self._current = ""
        self._phase = "run"

    # -- layout helpers ---------------------------------------------------------------
    def c_slot(self, default=math.nan, size=1) -> int:
        k = self.n_c
        self.n_c += size
        self.c_default += [default] * size
        return k

    def y_slot(self, name: str) -> int:
        k = self.n_states
        self.n_states += 1
        self.state_names.append(name)
        return k

    def elements_of(self, dims: list) -> list[tuple]:
        return list(itertools.product(*(self.subs[d] for d in dims))) if dims else [()]

    @staticmethod
    def key_of(name: str, combo: tuple) -> str:
        return f"{name}[{','.join(combo)}]" if combo else name

    # -- compile ----------------------------------------------------------------------
    def compile(self) -> Program:
        # lookups first (a call may come before the definition), then the literal
        # constants (a SMOOTH N/DELAY N order reads their values), then the rest
        def rank(component):
            if component.type == "Lookup" or compat.ast_kind(component.ast) in (
                "LookupsStructure",
                "GetLookupsStructure",
            ):
                return 0
            if _is_number(component.ast) or compat.ast_kind(component.ast) in (
                "ndarray",
                "GetConstantsStructure",
            ):
                return 1
            # last: a SMOOTH N/DELAY N whose order is an expression (of variables that
            # must be defined by then: the order is evaluated at INITIAL TIME now)
            return 3 if compat.has_computed_order(component.ast) else 2

        for phase in (0, 1, 2, 3):
            for key, element in self.elements.items():
                self._current = element.name
                if compat.is_control(element):
                    if phase == 1:
                        self._control(key, element)
                    continue
                for component in element.components:
                    if rank(component) == phase:
                        self._component(key, element, component)
        self._check_complete()
        return self._generate()

    def _control(self, key, element):
        slot = CONTROL.get(key)
        if slot is None:
            raise NotCompilable(f"control variable {element.name!r}")
        ast = element.components[0].ast
        if (
            key == "saveper"
            and compat.ast_kind(ast) == "ReferenceStructure"
            and ast.reference == "time_step"
            and not ast.subscripts
        ):
            # SAVEPER = TIME STEP: a NaN default, which CompiledModel.constants() sets to
            # the run's TIME STEP (an overridden TIME STEP included, as PySD does)
            self.nodes[key] = Node(key, element.name, "const", value=math.nan, slot=slot)
            return
        if not _is_number(ast):
            raise NotCompilable(
                f"{element.name} given by an expression (a control "
                "variable that may change during the run)"
            )
        self.c_default[slot] = float(ast)
        self.nodes[key] = Node(key, element.name, "const", value=float(ast), slot=slot)

    def _component(self, key, element, component):
        dims = self.final_dims[key]
        subs, excepts = component.subscripts
        positions = []
        for s in subs:
            if s in self.subs:
                positions.append([(e, s) for e in self.subs[s]])
            else:
                positions.append([(s, None)])
        excluded = set()
        for exc in excepts:
            for combo in itertools.product(*(self.subs.get(s, [s]) for s in exc)):
                excluded.add(tuple(combo))
        for choice in itertools.product(*positions) if positions else [()]:
            combo = tuple(e for e, _ in choice)
            if combo in excluded:
                continue
            ctx = {}
            for i, (e, rng) in enumerate(choice):
                ctx[dims[i]] = e
                if rng is not None:
                    ctx[rng] = e
            node_key = self.key_of(key, combo)
            column = self.key_of(element.name, combo)
            self._define(node_key, column, component, ctx)

    def _define(self, key, column, component, ctx):
        ast = component.ast
        kind = compat.ast_kind(ast)
        if key in self.nodes:
            raise NotCompilable(f"{column} defined twice")
        if kind in (
            "DataStructure",
            "GetDataStructure",
            "GetLookupsStructure",
            "GetConstantsStructure",
        ):
            self._external(key, column, kind, ctx)
            return
        if component.type == "Lookup" or kind == "LookupsStructure":
            self.lookups[key] = self._table(ast)
            return
        if _is_number(ast) or kind == "ndarray":
            value = (
                float(np.asarray(ast).reshape(-1)[self._flat_index(component.subscripts[0], ctx)])
                if kind == "ndarray"
                else float(ast)
            )
            name = clean(self._current)
            if name in self.series_req:
                n = self.series_req[name]
                node = Node(key, column, "aux", slot=self.c_slot(size=2 * n), value=value)
                node.expr = (
                    f"np.interp(t, c[{node.slot}:{node.slot + n}], "
                    f"c[{node.slot + n}:{node.slot + 2 * n}])"
                )
                node.deps = {"time"}
                self.nodes[key] = node
                return
            self.nodes[key] = Node(key, column, "const", value=value, slot=self.c_slot(value))
            return
        node = Node(key, column, "aux")
        self.nodes[key] = node
        if kind == "IntegStructure":
            node.kind = "stock"
            node.slot = self.y_slot(column)
            node.nonneg = bool(ast.non_negative)
            node.flow, node.flow_deps = self.expr(ast.flow, ctx)
            node.init_expr, node.init_deps = self.expr(ast.initial, ctx, phase="init")
            return
        if kind == "InitialStructure":
            node.kind = "initial"
            node.slot = self.c_slot()
            node.init_expr, node.init_deps = self.expr(ast.initial, ctx, phase="init")
            return
        node.expr, node.deps = self.expr(ast, ctx)
        node.init_expr, node.init_deps = self.expr(ast, ctx, phase="init")

    def _external(self, key, column, kind, ctx):
        """GET XLS/DIRECT CONSTANTS, LOOKUPS, DATA and DATA variables: the values PySD
        reads, embedded in the program (a constant, a lookup table, a series of Time)."""
        what = compat.VENSIM_KIND.get(kind, kind)
        if self._pysd_model_of is None:
            raise NotCompilable(f"{column} uses {what} (no PySD model to read it from)")
        if self._pysd_model is None:
            self._pysd_model = self._pysd_model_of()
        name = self._current
        combo = tuple(ctx[d] for d in self.final_dims[clean(name)])
        try:
            xs, ys, interp = compat.external_values(self._pysd_model, name, kind, combo)
        except Exception as err:  # noqa: BLE001 -- any reading problem: PySD path
            raise NotCompilable(
                f"{column} uses {what} that the compiler could not read "
                f"({type(err).__name__}: {err})"
            ) from None
        if xs is None:  # a constant
            self.nodes[key] = Node(key, column, "const", value=ys, slot=self.c_slot(ys))
            return
        order = np.argsort(xs, kind="stable")
        if len(xs) == 0 or (np.diff(xs[order]) == 0).any():
            raise NotCompilable(f"{column} uses {what} with repeated or no knots")
        if kind == "GetLookupsStructure":
            self.lookups[key] = (xs[order], ys[order], 0)
            return
        mode = _DATA_MODES.get(str(interp).replace(" ", "_"))
        if mode is None:
            raise NotCompilable(f"{column} uses {what} with interpolation {interp!r}")
        table = f"_data{next(self.hidden)}"
        self.lookups[table] = (xs[order], ys[order], mode)
        node = Node(key, column, "aux", deps={"time"}, init_deps={"time"})
        node.expr = node.init_expr = self._lookup_call(table, "t")
        self.nodes[key] = node
        # every knot is a kink or a jump of the series: a breakpoint of the adaptive methods
        for x in xs[order]:
            self.events.append(("step", ["0.0", _literal(x)], {"time"}))

    def _flat_index(self, subs, ctx) -> int:
        """The position of the element `ctx` selects in an array literal defined over
        the component's subscripts `subs` (single elements take no axis)."""
        index = 0
        for s in subs:
            if s in self.subs:
                index = index * len(self.subs[s]) + self.subs[s].index(ctx[s])
        return index

    def _check_complete(self):
        """Elements no equation defines: PySD's value of a variable with several
        equations (or read by GET XLS/DIRECT) starts as NaN over the merged subscripts, so
        they are NaN; a single equation's value keeps its own subscripts (no column)."""
        for key, dims in self.final_dims.items():
            element = self.elements[key]
            if compat.is_control(element) or compat.is_lookup(element):
                continue
            filled = len(element.components) > 1 or any(
                compat.ast_kind(c.ast) in _EXTERNAL for c in element.components
            )
            for combo in self.elements_of(dims):
                node_key = self.key_of(key, combo)
                if node_key not in self.nodes and filled:
                    self.nodes[node_key] = Node(
                        node_key,
                        self.key_of(element.name, combo),
                        "const",
                        value=math.nan,
                        slot=self.c_slot(math.nan),
                    )

    # -- expressions ------------------------------------------------------------------
    def expr(self, ast, ctx, phase="run") -> tuple[str, set]:
        saved = self._phase
        self._phase = phase
        deps: set = set()
        try:
            return self._e(ast, ctx, deps), deps
        finally:
            self._phase = saved

    def _e(self, ast, ctx, deps) -> str:
        kind = compat.ast_kind(ast)
        if _is_number(ast):
            return _literal(ast)
        handler = getattr(self, f"_e_{kind}", None)
        if handler is None:
            raise NotCompilable(f"{self._current} uses {compat.VENSIM_KIND.get(kind, kind)}")
        if kind not in _STATEFUL:
            return handler(ast, ctx, deps)
        # A stateful structure is built once per place (its run and init phases, which
        # both compile the equation, share its stocks), as PySD builds one object.
        scope = tuple(sorted(self._scopes[-1].items())) if self._scopes else ()
        memo = (id(ast), tuple(sorted(ctx.items())), scope)
        if memo not in self._stateful:
            own: set = set()
            self._stateful[memo] = (handler(ast, ctx, own), own)
        text, own = self._stateful[memo]
        deps.update(own)
        return text

    def _e_ndarray(self, ast, ctx, deps):
        raise NotCompilable(f"{self._current}: an array literal inside an expression")

    def _e_ArithmeticStructure(self, ast, ctx, deps):
        args = [self._e(a, ctx, deps) for a in ast.arguments]
        ops = list(ast.operators)
        if len(args) == 1:
            if ops[0] == "negative":
                return f"-({args[0]})"
            if ops[0] == ":NOT:":
                return f"_not({args[0]})"
            raise NotCompilable(f"{self._current}: unary operator {ops[0]}")
        # PySD writes a chain as Python text (``a - b + c``, ``30**-30**-x``), so Python's
        # precedence applies to it: a negative number before ``^`` is the operand of a
        # unary minus that binds looser than ``**`` (-2^2 is -4, as in PySD). Leave such a
        # literal bare; every other operand keeps its own parentheses.
        pieces = [
            a
            if (_is_number(raw) and float(raw) < 0 and i < len(ops) and ops[i] == "^")
            else f"({a})"
            for i, (a, raw) in enumerate(zip(args, ast.arguments))
        ]
        text = pieces[0]
        for op, piece in zip(ops, pieces[1:]):
            text += f" {_OPS[op]} {piece}"
        return f"({text})"

    def _e_LogicStructure(self, ast, ctx, deps) -> str:
        local: set = set()
        args = [self._e(a, ctx, local) for a in ast.arguments]
        deps.update(local)
        ops = list(ast.operators)
        if len(args) == 1:
            if ops[0] == ":NOT:":
                return f"_not({args[0]})"
            raise NotCompilable(f"{self._current}: unary operator {ops[0]}")
        if any(op in (":AND:", ":OR:") for op in ops):
            # PySD nests these right to left: a AND (b AND c)
            text = f"({args[-1]})"
            for op, arg in zip(reversed(ops), reversed(args[:-1])):
                text = (
                    f"{_LOGIC[op]}(({arg}), {text})"
                    if op in _LOGIC
                    else f"(({arg}) {_OPS[op]} {text})"
                )
            return text
        if len(args) != 2:
            raise NotCompilable(f"{self._current}: chained comparison")
        text = f"(({args[0]}) {_OPS[ops[0]]} ({args[1]}))"
        if "time" in local:
            if ops[0] in ("=", "<>") and self.time_equality is None:
                self.time_equality = self._current
            if self._phase == "run":
                self.switches.append((text, local - {"time"}))
        return text

    def _e_GameStructure(self, ast, ctx, deps):
        return self._e(ast.expression, ctx, deps)

    def _e_ReferenceStructure(self, ast, ctx, deps):
        name = ast.reference
        if name == "time":
            deps.add("time")
            return "t"
        if name in CONTROL:
            deps.add(name)
            return f"c[{CONTROL[name]}]"
        if self._scopes and name in self._scopes[-1]:
            if getattr(ast.subscripts, "subscripts", None):
                raise NotCompilable(f"{self._current}: a subscripted reference inside a macro")
            key = self._scopes[-1][name]
            deps.add(key)
            return ref(key)
        if name not in self.elements:
            if name in self.numbers:
                return self._subscript_number(name, ctx)
            raise NotCompilable(f"{self._current}: unknown reference {name!r}")
        combo = self._resolve(name, getattr(ast.subscripts, "subscripts", None), ctx)
        key = self.key_of(name, combo)
        deps.add(key)
        return ref(key)  # placeholder, replaced by the node's storage at generation

    def _subscript_number(self, name, ctx) -> str:
        """A subscript range used as a value (its element's position in the main range),
        or a subscript element (its position)."""
        rng, values = self.numbers[name]
        if rng is None:
            return _literal(values[0])
        element = self._resolve_one(rng, rng, ctx, rng)
        return _literal(values[self.subs[rng].index(element)])

    def _resolve(self, name, ref_subs, ctx) -> tuple:
        dims = self.final_dims[name]
        if not ref_subs:
            ref_subs = dims
        if len(ref_subs) != len(dims):
            raise NotCompilable(f"{self._current}: {name} takes {len(dims)} subscripts")
        out = []
        for dim, s in zip(dims, ref_subs):
            out.append(self._resolve_one(dim, s, ctx, name))
        return tuple(out)

    def _resolve_one(self, dim, s, ctx, name):
        if s in ctx:
            element = ctx[s]
        elif s in self.subs:
            element = self._via_mapping_or_family(s, ctx)
        else:
            element = s
        if element is None:
            raise NotCompilable(f"{self._current}: an array-valued reference to {name}[{s}]")
        if element not in self.subs[dim]:
            raise NotCompilable(f"{self._current}: {element!r} is not an element of {dim}")
        return element

    def _via_mapping_or_family(self, rng, ctx):
        """The element of `rng` that the context selects: through a subscript mapping, or
        through a context range that is a sub-range of (or contains) `rng`."""
        for other, element in ctx.items():
            if other.endswith("!") or other not in self.subs:
                continue
            if rng in self.mapping.get(other, []) or other in self.mapping.get(rng, []):
                index = self.subs[other].index(element)
                if index < len(self.subs[rng]):
                    return self.subs[rng][index]
        for other, element in ctx.items():
            if other in self.subs and element in self.subs[rng]:
                return element
        return None

    def _e_CallStructure(self, ast, ctx, deps) -> str:
        fname = ast.function.reference
        args = ast.arguments
        if fname in _REFUSED_CALLS:  # before the arguments, which they read as arrays
            raise NotCompilable(f"{self._current} uses {_REFUSED_CALLS[fname]}")
        if fname in self.macros:
            return self._macro_call(ast, fname, args, ctx, deps)
        if fname in self.elements:  # a lookup call
            combo = self._resolve(fname, getattr(ast.function.subscripts, "subscripts", None), ctx)
            key = self.key_of(fname, combo)
            if key not in self.lookups:
                self._lookup_table_of(fname, key)
            return self._lookup_call(key, self._e(args[0], ctx, deps))
        if fname in _REDUCTIONS:
            return self._reduction(fname, args[0], ctx, deps)
        if fname == "elmcount":
            rng = compat.reference_name(args[0])
            rng = self.range_of.get(rng, rng)
            if rng not in self.subs:
                raise NotCompilable(f"{self._current}: ELMCOUNT of {rng!r}")
            return _literal(len(self.subs[rng]))
        if fname == "active_initial":  # only the branch of the phase is read
            return self._e(args[1] if self._phase == "init" else args[0], ctx, deps)
        local: set = set()
        a = [self._e(x, ctx, local) for x in args]
        deps.update(local)
        if fname in _NUMPY:
            return _NUMPY[fname].format(*a)
        if fname == "if_then_else":
            return f"_ite({a[0]}, {a[1]}, {a[2]})"
        if fname == "xidz":
            return f"_xidz({a[0]}, {a[1]}, {a[2]})"
        if fname == "zidz":
            return f"_zidz({a[0]}, {a[1]})"
        if fname == "integer":
            return f"np.trunc({a[0]})"
        if fname == "quantum":
            return f"_quantum({a[0]}, {a[1]})"
        if fname == "modulo":
            return f"(({a[0]}) - _quantum({a[0]}, {a[1]}))"
        if fname == "log":
            return f"(np.log({a[0]})/np.log({a[1]}))"
        if fname in ("step", "pulse", "pulse_train", "ramp", "Xramp", "Xpulse", "Xpulse_train"):
            deps.add("time")
            if self._phase == "run":
                self.events.append((fname, a, local))
            return self._time_function(fname, a)
        raise NotCompilable(f"{self._current} uses {fname.upper().replace('_', ' ')}")

    def _macro_call(self, ast, fname, args, ctx, deps):
        """Inline a macro: its parameters become hidden auxiliaries holding the call's
        arguments, its variables hidden nodes of their own (stocks included), and the call
        reads the variable named like the macro. The run and the init phase of the caller
        share one copy."""
        memo = (id(ast), tuple(sorted(ctx.items())))
        if memo in self._macro_calls:
            out = self._macro_calls[memo]
            deps.add(out)
            return ref(out)
        section = self.macros[fname]
        if section.returns:
            raise NotCompilable(f"{self._current}: macro {fname} with several outputs")
        if section.subscripts or any(
            c.subscripts[0] or c.subscripts[1] for e in section.elements for c in e.components
        ):
            raise NotCompilable(f"{self._current}: a macro with subscripts ({fname})")
        if len(args) != len(section.params):
            raise NotCompilable(
                f"{self._current}: macro {fname} called with {len(args)} arguments"
            )
        prefix = f"_{fname}{next(self.hidden)}."
        scope = {}
        for param, arg in zip(section.params, args):
            key = prefix + clean(param)
            node = Node(key, None, "aux")
            node.expr, node.deps = self.expr(arg, ctx)
            node.init_expr, node.init_deps = self.expr(arg, ctx, phase="init")
            self.nodes[key] = node
            scope[clean(param)] = key
        for element in section.elements:
            scope[clean(element.name)] = prefix + clean(element.name)
        out = prefix + clean(fname)
        if out not in scope.values():
            raise NotCompilable(f"{self._current}: macro {fname} has no variable {fname}")
        self._macro_calls[memo] = out
        caller, self._scopes = self._current, [*self._scopes, scope]
        try:
            for element in section.elements:
                self._current = f"{caller} (macro {fname}: {element.name})"
                if compat.is_lookup(element):
                    raise NotCompilable(f"{self._current}: a lookup inside a macro")
                for component in element.components:
                    self._define(scope[clean(element.name)], None, component, {})
        finally:
            self._current, self._scopes = caller, self._scopes[:-1]
        deps.add(out)
        return ref(out)

    @staticmethod
    def _time_function(fname, a):
        if fname == "step":
            return f"_step(t, {a[0]}, {a[1]}, c[0], {EXACT})"
        if fname == "pulse":
            return f"_pulse(t, {a[0]}, 0.0, {a[1]}, np.nan, np.inf, c[0], {EXACT})"
        if fname == "Xpulse":
            return f"_pulse(t, {a[0]}, 0.0, np.nan, {a[1]}, np.inf, c[0], {EXACT})"
        if fname == "pulse_train":
            return f"_pulse(t, {a[0]}, {a[1]}, {a[2]}, np.nan, {a[3]}, c[0], {EXACT})"
        if fname == "Xpulse_train":
            return f"_pulse(t, {a[0]}, {a[1]}, np.nan, {a[2]}, np.inf, c[0], {EXACT})"
        if fname == "ramp":
            return f"_ramp(t, {a[0]}, {a[1]}, {a[2]})"
        return f"_ramp(t, {a[0]}, {a[1]}, np.inf)"

    def _reduction(self, fname, arg, ctx, deps):
        bang = [s for s in compat.bang_subscripts(arg) if s[:-1] in self.subs]
        if not bang:
            raise NotCompilable(f"{self._current}: {fname.upper()} without a Range! subscript")
        ranges = list(dict.fromkeys(bang))
        terms = []
        for combo in itertools.product(*(self.subs[r[:-1]] for r in ranges)):
            inner = dict(ctx)
            inner.update(zip(ranges, combo))
            terms.append(f"({self._e(arg, inner, deps)})")
        op = _REDUCTIONS[fname]
        if op in ("+", "*"):
            return "(" + f" {op} ".join(terms) + ")"
        text = terms[0]
        for term in terms[1:]:
            text = f"{op}({text}, {term})"
        return text

    def _e_InlineLookupsStructure(self, ast, ctx, deps):
        table = self._table(ast.lookups)
        signature = (tuple(table[0]), tuple(table[1]), table[2])
        key = self._inline.setdefault(signature, f"_inline{next(self.hidden)}")
        self.lookups[key] = table
        return self._lookup_call(key, self._e(ast.argument, ctx, deps))

    def _lookup_table_of(self, name, key):
        raise NotCompilable(f"{self._current}: lookup {name} not defined for {key}")

    def _table(self, lk):
        if compat.ast_kind(lk) != "LookupsStructure":
            raise NotCompilable(f"{self._current} uses {compat.ast_kind(lk)}")
        xs = np.asarray(lk.x, dtype=float)
        ys = np.asarray(lk.y, dtype=float)
        order = np.argsort(xs, kind="stable")
        mode = {"interpolate": 0, "hold_backward": 1, "extrapolate": 2}.get(lk.type)
        if mode is None:
            raise NotCompilable(f"{self._current}: lookup type {lk.type!r}")
        return xs[order], ys[order], mode

    def _lookup_call(self, key, x):
        index = list(self.lookups).index(key)
        xs, _, mode = self.lookups[key]
        if specialized_lookup(xs, mode):  # a function of its own, constants inlined
            return f"_lk{index}({x})"
        return f"_lookup({x}, LX{index}, LY{index}, {mode})"

    # -- generation -------------------------------------------------------------------
    def _generate(self) -> Program:
        from ._codegen import generate

        return generate(self)


_OPS = {
    "^": "**",
    "*": "*",
    "/": "/",
    "+": "+",
    "-": "-",
    "=": "==",
    "<>": "!=",
    ">=": ">=",
    ">": ">",
    "<=": "<=",
    "<": "<",
}
_LOGIC = {":AND:": "_and", ":OR:": "_or"}
_EXTERNAL = ("DataStructure", "GetDataStructure", "GetLookupsStructure", "GetConstantsStructure")
_REFUSED_CALLS = {
    name: name.upper().replace("_", " ")
    for name in (
        "vector_select",
        "vector_sort_order",
        "vector_rank",
        "vector_reorder",
        "invert_matrix",
        "get_time_value",
        "random_uniform",
        "random_normal",
        "random_poisson",
        "random_exponential",
        "random_0_1",
    )
}
_STATEFUL = (
    "SmoothStructure",
    "SmoothNStructure",
    "DelayStructure",
    "DelayNStructure",
    "TrendStructure",
    "ForecastStructure",
    "InitialStructure",
    "IntegStructure",
)
_DATA_MODES = {"interpolate": 0, "hold_backward": 1, "look_forward": 3, "raw": 4}
_NUMPY = {
    "abs": "np.abs({0})",
    "power": "np.power({0}, {1})",
    "min": "np.minimum({0}, {1})",
    "max": "np.maximum({0}, {1})",
    "exp": "np.exp({0})",
    "sin": "np.sin({0})",
    "cos": "np.cos({0})",
    "tan": "np.tan({0})",
    "arcsin": "np.arcsin({0})",
    "arccos": "np.arccos({0})",
    "arctan": "np.arctan({0})",
    "sinh": "np.sinh({0})",
    "cosh": "np.cosh({0})",
    "tanh": "np.tanh({0})",
    "sqrt": "np.sqrt({0})",
    "ln": "np.log({0})",
    "pi": "np.pi",
}
_REDUCTIONS = {"sum": "+", "prod": "*", "vmin": "np.minimum", "vmax": "np.maximum"}
