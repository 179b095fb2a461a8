"""SMOOTH, DELAY, DELAY N, TREND, FORECAST, INITIAL and INTEG inside expressions: each
becomes hidden stock nodes (one per stage) with PySD's own formulas, and an expression
for its output. A mixin of `compiler.Compiler`."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from . import _pysd_compat as compat
from ._ir import _PLACEHOLDER, CONTROL, N_RESERVED, Node, NotCompilable, _is_number, ref


class StatefulStructures:
    """The stateful structures of `compiler.Compiler` (``_e_SmoothStructure``, ...)."""

    # what this mixin uses of `compiler.Compiler` (set in its __init__, for the type checker)
    nodes: dict[str, Node]
    elements: dict
    hidden: Iterator[int]
    guards: list
    constant_checks: list
    c_default: list
    _current: str

    if TYPE_CHECKING:

        def c_slot(self, default: Any = ..., size: int = ...) -> int: ...

        def y_slot(self, name: str) -> int: ...

        @staticmethod
        def key_of(name: str, combo: tuple) -> str: ...

        def expr(self, ast, ctx, phase: str = ...) -> tuple[str, set]: ...

        def _resolve(self, name, ref_subs, ctx) -> tuple: ...

    # -- stateful structures ----------------------------------------------------------
    def _hidden_stock(self, label, flow, flow_deps, init, init_deps) -> str:
        key = f"_{label}{next(self.hidden)}"
        node = Node(
            key,
            None,
            "stock",
            slot=self.y_slot(f"{self._current} ({label})"),
            flow=flow,
            flow_deps=flow_deps,
            init_expr=init,
            init_deps=init_deps,
        )
        self.nodes[key] = node
        return key

    def _order(self, ast_order, what, ctx) -> int:
        """The order of a SMOOTH N/DELAY N: a number, or an expression of the file's
        constants, which PySD evaluates once at initialisation. The layout is fixed here
        with the file's values; a run that changes the order (an overridden constant)
        is refused by a guard and goes to the PySD path."""
        if _is_number(ast_order):
            order = float(ast_order)
        else:
            order = self._static(ast_order, ctx, what)
            code, code_deps = self._inline_init(*self.expr(ast_order, ctx, phase="init"))
            shown = what if what != "SMOOTH" else "SMOOTH N"
            self.guards.append(
                (
                    f"({code}) == {order!r}",
                    code_deps,
                    f"{self._current}: {shown} order differs from the file's",
                )
            )
        if order != int(order) or order < 1:
            raise NotCompilable(f"{self._current}: {what} of order {order:g}")
        return int(order)

    def _inline_init(self, text, deps) -> tuple[str, set]:
        """`text` (an init-phase expression) with the auxiliaries it reads replaced by
        their own init-phase expressions, down to constants and Time."""
        out_deps: set = set()

        def expand(match):
            key = match.group(1)
            node = self.nodes.get(key)
            if node is None or node.kind in ("stock", "initial"):
                raise NotCompilable(f"{self._current}: an order that depends on {key}")
            if node.kind == "const":
                out_deps.add(key)
                return match.group(0)
            inner, inner_deps = (
                (node.init_expr, node.init_deps) if node.init_expr else (node.expr, node.deps)
            )
            out_deps.update(inner_deps & {"time"})
            return "(" + _PLACEHOLDER.sub(expand, inner) + ")"

        out_deps.update(d for d in deps if d == "time" or d in CONTROL)
        return _PLACEHOLDER.sub(expand, text), out_deps

    def _static(self, ast, ctx, what) -> float:
        """The value of an expression of literal constants, from the file's values."""
        if _is_number(ast):
            return float(ast)
        kind = compat.ast_kind(ast)
        if kind == "ReferenceStructure" and ast.reference in self.elements:
            combo = self._resolve(ast.reference, getattr(ast.subscripts, "subscripts", None), ctx)
            node = self.nodes.get(self.key_of(ast.reference, combo))
            if node is not None and node.kind == "const" and node.slot >= N_RESERVED:
                return node.value
        elif kind == "ArithmeticStructure":
            values = [self._static(a, ctx, what) for a in ast.arguments]
            if len(values) == 1 and ast.operators[0] == "negative":
                return -values[0]
            if len(values) > 1:
                out = values[0]
                for op, v in zip(ast.operators, values[1:]):
                    out = {
                        "+": out + v,
                        "-": out - v,
                        "*": out * v,
                        "/": out / v if v else math.nan,
                    }.get(op, math.nan)
                if not math.isnan(out):
                    return out
        return self._evaluate_init(ast, ctx, what)

    def _evaluate_init(self, ast, ctx, what) -> float:
        """An expression at INITIAL TIME (e.g. ``2 + STEP(1, 10)``, or a variable defined
        so), evaluated now with the file's values and the runtime helpers."""
        text, deps = self.expr(ast, ctx, phase="init")
        return self._run_init(text, deps, what, {})

    def _run_init(self, text, deps, what, memo) -> float:
        from ._codegen import RUNTIME_SCALAR

        values = {}
        for dep in deps:
            if dep == "time" or dep in CONTROL:
                continue
            if dep not in memo:
                node = self.nodes.get(dep)
                if node is None:
                    raise NotCompilable(
                        f"{self._current}: {what} with an order that "
                        "depends on a variable not known at compile time"
                    )
                if node.kind == "const":
                    memo[dep] = float(node.value)
                else:
                    use_init = node.kind in ("stock", "initial") or node.init_expr
                    memo[dep] = self._run_init(
                        node.init_expr if use_init else node.expr,
                        node.init_deps if use_init else node.deps,
                        what,
                        memo,
                    )
            values[dep] = repr(memo[dep])
        c = list(self.c_default[:N_RESERVED])
        if math.isnan(c[3]):
            c[3] = c[0]
        namespace: dict = {"np": np, "math": math, "_jit": lambda f: f}
        exec(RUNTIME_SCALAR, namespace)  # noqa: S102 -- our own helper text
        namespace.update(c=np.array(c, dtype=float), t=np.float64(c[1]))
        code = _PLACEHOLDER.sub(lambda m: f"np.float64({values[m.group(1)]})", text)
        with np.errstate(all="ignore"):
            return float(eval(code, namespace))  # generated from the AST

    def _stages(self, label, order, init, init_deps, flow_of):
        keys = [f"_{label}{next(self.hidden)}" for _ in range(order)]
        for i, key in enumerate(keys):
            flow, flow_deps = flow_of(i, keys)
            self.nodes[key] = Node(
                key,
                None,
                "stock",
                slot=self.y_slot(f"{self._current} ({label} {i + 1})"),
                flow=flow,
                flow_deps=flow_deps,
                init_expr=init,
                init_deps=set(init_deps),
            )
        return keys

    def _e_SmoothStructure(self, ast, ctx, deps, label="smooth"):
        order = self._order(ast.order, "SMOOTH", ctx)
        x, xd = self.expr(ast.input, ctx)
        tau, td = self.expr(ast.smooth_time, ctx)
        init, idep = self.expr(ast.initial, ctx, phase="init")

        def flow_of(i, keys):
            target = x if i == 0 else f"{ref(keys[i - 1])}"
            tdeps = set(xd) if i == 0 else {keys[i - 1]}
            # PySD: (targets - state) * order / smooth_time
            return (f"((({target}) - {ref(keys[i])}) * {order} / ({tau}))", tdeps | td | {keys[i]})

        keys = self._stages(label, order, init, idep, flow_of)
        deps.add(keys[-1])
        return f"{ref(keys[-1])}"

    def _e_SmoothNStructure(self, ast, ctx, deps):
        return self._e_SmoothStructure(ast, ctx, deps)

    def _e_DelayStructure(self, ast, ctx, deps, what="DELAY"):
        order = self._order(ast.order, what, ctx)
        x, xd = self.expr(ast.input, ctx)
        tau, td = self.expr(ast.delay_time, ctx)
        init, idep = self.expr(ast.initial, ctx, phase="init")
        tau0, t0d = self.expr(ast.delay_time, ctx, phase="init")
        # PySD lowers the order while order * TIME STEP > delay time at initialisation (the
        # smallest over a subscripted delay's elements). The layout is fixed here: for a
        # scalar delay, with the file's values; a run that would choose another order (or
        # a subscripted delay that needs lowering) goes to the PySD path.
        lowered = self._lowered_order(order, tau0, t0d, what) if not ctx else order
        message = f"{self._current}: DELAY order above delay time / TIME STEP"
        if lowered == order:
            self.guards.append((f"not ({order} * c[0] > ({tau0}))", t0d, message))
        else:
            check = f"({lowered} * c[0] <= ({tau0})) and ({lowered + 1} * c[0] > ({tau0}))"
            self.guards.append((check, t0d, message + " (lowered otherwise than in the file)"))
            order = lowered

        def flow_of(i, keys):
            out_i = f"({ref(keys[i])} / ({tau}))"
            inflow = x if i == 0 else f"({ref(keys[i - 1])} / ({tau}))"
            fdeps = set(td) | {keys[i]} | (set(xd) if i == 0 else {keys[i - 1]})
            return f"((({inflow}) - {out_i}) * {order})", fdeps

        keys = self._stages("delay", order, f"({init}) * ({tau0})", idep | t0d, flow_of)
        deps.update(td | {keys[-1]})
        return f"({ref(keys[-1])} / ({tau}))"

    def _lowered_order(self, order, tau0, t0d, what) -> int:
        """The order PySD uses for a delay time `tau0` at the file's TIME STEP."""
        try:
            tau = self._run_init(tau0, t0d, what, {})
        except NotCompilable:
            return order
        dt = self.c_default[0]
        lowered = order
        while lowered * dt > tau:
            lowered -= 1
        return lowered if lowered >= 1 else order

    def _e_DelayNStructure(self, ast, ctx, deps):
        _tau, td = self.expr(ast.delay_time, ctx)
        self.constant_checks.append(
            (td, f"{self._current} uses DELAY N with a time-varying delay time")
        )
        return self._e_DelayStructure(ast, ctx, deps, "DELAY N")

    def _e_TrendStructure(self, ast, ctx, deps):
        x, xd = self.expr(ast.input, ctx)
        avg, ad = self.expr(ast.average_time, ctx)
        x0, x0d = self.expr(ast.input, ctx, phase="init")
        avg0, a0d = self.expr(ast.average_time, ctx, phase="init")
        tr0, tr0d = self.expr(ast.initial_trend, ctx, phase="init")
        key = f"_trend{next(self.hidden)}"
        self.nodes[key] = Node(
            key,
            None,
            "stock",
            slot=self.y_slot(f"{self._current} (trend)"),
            flow=f"((({x}) - {ref(key)}) / ({avg}))",
            flow_deps=xd | ad | {key},
            init_expr=f"({x0}) / (1 + ({tr0}) * ({avg0}))",
            init_deps=x0d | a0d | tr0d,
        )
        deps.update(xd | ad | {key})
        return f"_zidz(({x}) - {ref(key)}, ({avg}) * np.abs({ref(key)}))"

    def _e_ForecastStructure(self, ast, ctx, deps):
        x, xd = self.expr(ast.input, ctx)
        avg, ad = self.expr(ast.average_time, ctx)
        hor, hd = self.expr(ast.horizon, ctx)
        x0, x0d = self.expr(ast.input, ctx, phase="init")
        tr0, tr0d = self.expr(ast.initial_trend, ctx, phase="init")
        key = f"_forecast{next(self.hidden)}"
        self.nodes[key] = Node(
            key,
            None,
            "stock",
            slot=self.y_slot(f"{self._current} (forecast)"),
            flow=f"((({x}) - {ref(key)}) / ({avg}))",
            flow_deps=xd | ad | {key},
            init_expr=f"({x0}) / (1 + ({tr0}))",
            init_deps=x0d | tr0d,
        )
        deps.update(xd | ad | hd | {key})
        return f"(({x}) * (1 + _zidz(({x}) - {ref(key)}, ({avg}) * {ref(key)}) * ({hor})))"

    def _e_InitialStructure(self, ast, ctx, deps):
        key = f"_initial{next(self.hidden)}"
        init, idep = self.expr(ast.initial, ctx, phase="init")
        self.nodes[key] = Node(
            key, None, "initial", slot=self.c_slot(), init_expr=init, init_deps=idep
        )
        deps.add(key)
        return f"{ref(key)}"

    def _e_IntegStructure(self, ast, ctx, deps):
        flow, fd = self.expr(ast.flow, ctx)
        init, idep = self.expr(ast.initial, ctx, phase="init")
        key = self._hidden_stock("integ", flow, fd, init, idep)
        deps.add(key)
        return f"{ref(key)}"
