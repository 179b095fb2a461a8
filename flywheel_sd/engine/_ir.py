"""The compiler's data: nodes, the program it produces, and the placeholders that tie
expression text to nodes (shared by `compiler`, `_stateful` and `_codegen`)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import numpy as np

SMALL_VENSIM = 1e-6  # PySD's tolerance in XIDZ, ZIDZ, QUANTUM, PULSE and RAMP
CONTROL = {"initial_time": 1, "final_time": 2, "time_step": 0, "saveper": 3}
N_RESERVED = 5  # c[0..3]: TIME STEP, INITIAL TIME, FINAL TIME, SAVEPER; c[4]: exact time flag
EXACT = "c[4]"


class NotCompilable(Exception):
    """The model uses something the compiler does not cover (the message names it)."""


@dataclass
class Node:
    """One scalar value of the model: a variable's element, or a hidden stateful stage."""

    key: str  # unique, e.g. "active_sellers[High]"
    column: str | None  # the output column ("Active Sellers[High]"), None if hidden
    kind: str  # "const", "aux", "stock", "initial"
    expr: str = ""  # run-time expression (aux, derived const)
    init_expr: str = ""  # initial value (stocks) or init-phase expression
    deps: set = field(default_factory=set)
    init_deps: set = field(default_factory=set)
    flow: str = ""  # stocks: the derivative expression
    flow_deps: set = field(default_factory=set)
    nonneg: bool = False
    value: float = math.nan  # leaf constants: the file's value
    slot: int = -1  # c index (consts, initials) or y index (stocks)


@dataclass
class Program:
    """What the generator produced: the module body, and the layout of c, y and outputs.

    The body defines ``setup``, ``init``, ``rhs`` and ``record`` (jitted), plus the plain
    ``events(c)``, ``switches(t, c)`` and ``guards(c)`` used once per run.
    """

    body: str
    n_c: int
    n_states: int
    c_default: list  # float per c slot (NaN for computed ones)
    params: dict  # Vensim name -> c slots of its elements (leaf constants)
    columns: list  # output columns, in PySD's default order
    eval_order: list  # column indices in the order record() computes them
    column_of: dict  # Vensim name -> output column indices
    state_names: list  # per state slot, the variable it belongs to
    nonneg: list
    series: dict  # Vensim name -> (c slot of its knots, number of knots)
    time_equality: str | None  # a variable that tests Time = x (adaptive methods refuse it)
    subscripts: dict
    state_deps: list = field(default_factory=list)  # Jacobian sparsity, by state
    event_slots: list = field(default_factory=list)  # c slots breakpoints depend on
    guard_slots: list = field(default_factory=list)  # c slots the guards depend on


_PLACEHOLDER = re.compile("\x02([^\x03]*)\x03")


#: Tables up to this many points get a function of their own with the points as literals
#: (an if-chain the compiler can inline: the default model's Euler run 2.3x sooner than
#: with one generic `_lookup`); longer ones, and data modes, use `_lookup`.
SPECIALIZED_POINTS = 32


def specialized_lookup(xs, mode) -> bool:
    return mode in (0, 1, 2) and 2 <= len(xs) <= SPECIALIZED_POINTS


def ref(key: str) -> str:
    """A placeholder for a node's storage (c[k], a state or a local), filled in by the
    generator once every node is classified."""
    return f"\x02{key}\x03"


def clean(name: str) -> str:
    return name.lower().replace(" ", "_")


def _is_number(ast) -> bool:
    return isinstance(ast, (int, float, np.integer, np.floating)) and not isinstance(ast, bool)


def _literal(value) -> str:
    value = float(value)
    if math.isnan(value):
        return "np.nan"
    if math.isinf(value):
        return "np.inf" if value > 0 else "(-np.inf)"
    return repr(value)
