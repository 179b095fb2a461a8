"""Loops That Matter (issue 14): link scores, loop scores and loop dominance along a run.

The method as published: Schoenberg, Davidsen & Eberlein, "Understanding model behavior
using the Loops that Matter method", System Dynamics Review 36(2), 2020, with the
flow-to-stock link score corrected in Schoenberg, Hayward & Eberlein, "Improving Loops that
Matter", SDR 39(2), 2023.

Link scores are computed on the model's scalar equations (`flywheel_sd.engine.links`), on a
run recorded at every TIME STEP (SAVEPER is set to TIME STEP, so a difference Δ spans one dt).
With ``v`` a node's recorded values and ``v'`` the values one step earlier:

* **x -> z, z an auxiliary or flow** (z = f(x, y, ...)): Δz = z - z', Δx = x - x' and
  Δₓz = f(x, y', ...) - z' (z re-evaluated with x at its current value and every other input,
  TIME included, at the previous step's). LS = |Δₓz / Δz| · sign(Δₓz / Δx); 0 where Δz or
  Δx is 0.
* **flow -> stock**, the 2023 form: LS = |Δi / (ΔS_t - ΔS_{t-dt})|, +1 for an inflow, -1 for
  an outflow. The compiler gives a stock one equation, its net flow g (the expression inside
  INTEG), so the score of an input x of g is computed as the link x -> g times g -> S:
  LS = dt · |Δₓg / (ΔS_t - ΔS_{t-dt})| · sign(Δₓg / Δx). For g = inflows - outflows this is
  the published formula (Δₓg = ±Δi, sign ±1), and it also covers a rate written inline in
  the INTEG. The factor dt makes the score dimensionless (Δi is a rate, ΔS a quantity); the
  2023 paper's example runs at dt = 1, where it is invisible. The score is 0 where Δx is 0 or
  the stock's second difference is 0 (at equilibrium both differences vanish). On an Euler
  run the second difference is taken from the net flows (ΔS_t = dt · g_{t-dt}, the same
  number without the cancellation of differencing a large stock that barely moves); on
  other runs from the recorded stock values.
  ``timing="current"`` (default) takes the flow's change over the same step as the stock's
  second difference, Δi = i_t - i_{t-dt} (the paper's and Stella's convention).
  ``timing="previous"`` is Simlin's: the flows are aggregated into the net flow g, the link
  x -> g is scored at t (|Δₓg_t / Δg_t| · sign) and g -> S with the net flow's change over
  the step before, dt · |Δg_{t-dt} / (ΔS_t - ΔS_{t-dt})| (1 under Euler); Simlin documents it
  as a one-dt shift of the flow -> stock numerator. The two agree as dt -> 0.
* A link through hidden nodes (a SMOOTH's stages sit between its input and output; the
  compiler's hidden nodes have no column) is the product of the scores along the hidden path;
  where several hidden paths join the same two variables, the composite link score is the
  path score of largest magnitude at each time (the 2020 paper's rule for macros). The
  feedback loops internal to such hidden structure (a SMOOTH stage's own drain) are not
  loops of the model's variables and are left out, as Stella does.
* The first step (and, for flow -> stock links, the first two) has no previous value: scores
  are 0 there.

**Loop score:** the product of the link scores around a loop. Loops are found on the
element-level graph of the model's variables (one node per variable element, constants
left out; hidden nodes contracted into links):

* "exhaustive": every elementary cycle, by Johnson's algorithm, when there are at most
  `max_cycles` (the LTM papers enumerate below about a thousand);
* "strongest_path": beyond that, the strongest-path search of Eberlein & Schoenberg,
  "Finding the loops that matter" (2020), run at `search_times` saved times spread over the
  run (the paper runs it at every step; a subset is its own suggestion for speed), plus
  the loop index's loops. A heuristic: it finds the strong loops, not all of them;
* "given": the loops named in `loops` (loop index ids or chains of variable names).

A *loop* in the result is the set of element-level cycles that pass the same cycle of
variables (the cycles of a subscripted loop, through ``Active Sellers[High]`` and
``[Low]``, are one loop; the two directions round the same variables are two), and a loop
index entry takes every such cycle whose variables are its chain's or one of its ``also``
paths' (a found cycle matches an entry when their variable sets agree; the others are
named L1, L2, ... after the index's). A loop's score is the sum of its cycles' scores and
its relative score the sum of theirs (the LTM papers' composite relative loop score).

**Relative loop score:** a cycle's score divided by Σ|scores| of the cycles in its cycle
partition. Partitions here are the strongly connected components of the element graph
(every cycle lies in exactly one; cycles of different components share no variable).
The sum runs over the cycles considered: every cycle (exhaustive), the cycles found
(strongest path: shares among those), or only the loops passed in (then the shares are
relative to those loops alone).

**Dominance periods** (`dominance_periods`): at each time, the smallest set of loops whose
|relative scores| add up to at least 50% (the loops taken by decreasing |relative score|);
consecutive times with the same set form a period. Per partition, as the LTM papers define
dominance; with ``variable=`` for one stock or variable: only the loops through it, their
relative scores renormalised among themselves (`variable_scores`; a practical reading, not
a published LTM measure: see `dominance_periods`). `describe_dominance` tells the longest
periods (short spells smoothed away) in a few sentences, naming loops by id and name; a
reversal between reinforcing and balancing loops is always told, however short, unless it
is a flicker under 1% of the run.

**Across an ensemble** (`loop_dominance_ensemble`): one `loop_dominance` per parameter set
of a design or a sweep result, on the same loops in every run (the loop index's, by
default), summarised per loop and time as quantiles of the relative scores over the runs,
the share of runs in which the loop has the largest |relative score| of its partition, and
the share in which it alone explains at least half the change.

**The public name** is `flywheel_sd.loops` (`loops` here): one run to `loop_dominance`, a
sweep result or a model with a design to `loop_dominance_ensemble`.
"""

from __future__ import annotations

import difflib
import functools
import itertools
import json
import math
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ModelFileError

#: Default bound on the number of element-level cycles enumerated exhaustively.
MAX_CYCLES = 2000

#: At how many saved times (evenly spread) the strongest-path search looks for loops.
SEARCH_TIMES = 60

#: The share of the change a dominant set of loops explains, at least.
DOMINANCE = 0.5

TIMINGS = ("current", "previous")

#: How many plans of link and loop scores an element graph keeps (`ElementGraph.remember`).
PLANS_KEPT = 8


# -- cycles ---------------------------------------------------------------------------------
def strongly_connected(graph: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """The strongly connected components of a directed graph (node -> successors), by
    Tarjan's algorithm (iterative); each component's nodes in discovery order."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    out: list[list[str]] = []
    counter = itertools.count()
    for root in graph:
        if root in index:
            continue
        index[root] = low[root] = next(counter)
        stack.append(root)
        on_stack.add(root)
        work: list[tuple[str, Iterator[str]]] = [(root, iter(graph.get(root, ())))]
        while work:
            node, successors = work[-1]
            advanced = False
            for nxt in successors:
                if nxt not in index:
                    index[nxt] = low[nxt] = next(counter)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(graph.get(nxt, ()))))
                    advanced = True
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            if advanced:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                out.append(component[::-1])
    return out


class TooManyCycles(Exception):
    """More elementary cycles than the limit given to `simple_cycles`."""


def simple_cycles(graph: Mapping[str, Iterable[str]], limit: int | None = None) -> list[list[str]]:
    """Every elementary cycle of a directed graph (node -> successors), by Johnson's
    algorithm (SIAM J. Comput. 4(1), 1975): each cycle as a list of nodes, the edge from
    the last back to the first closing it. Self-loops are cycles of one node.

    Raises
    ------
    TooManyCycles
        More than `limit` cycles.
    """
    order = {node: i for i, node in enumerate(graph)}
    succ = {n: [m for m in dict.fromkeys(graph[n]) if m in order] for n in graph}
    out: list[list[str]] = []

    def found(cycle: list[str]) -> None:
        out.append(cycle)
        if limit is not None and len(out) > limit:
            raise TooManyCycles(f"more than {limit} cycles")

    for n in succ:
        if n in succ[n]:
            found([n])
    # Johnson: for each start node s (in order), the cycles through s in the subgraph of
    # nodes >= s, restricted to s's strongly connected component there.
    components = [c for c in strongly_connected(succ) if len(c) > 1]
    while components:
        component = components.pop()
        start = min(component, key=order.__getitem__)
        members = set(component)
        sub = {n: [m for m in succ[n] if m in members and m != n] for n in component}
        blocked = {start}
        blockers: dict[str, set[str]] = defaultdict(set)
        closed: set[str] = set()
        path = [start]
        work: list[tuple[str, list[str]]] = [(start, list(sub[start]))]
        while work:
            node, todo = work[-1]
            if todo:
                nxt = todo.pop()
                if nxt == start:
                    found(list(path))
                    closed.update(path)
                elif nxt not in blocked:
                    path.append(nxt)
                    work.append((nxt, list(sub[nxt])))
                    closed.discard(nxt)
                    blocked.add(nxt)
                    continue
            if not todo:
                if node in closed:
                    _unblock(node, blocked, blockers)
                else:
                    for m in sub[node]:
                        blockers[m].add(node)
                work.pop()
                path.pop()
        rest = {n: [m for m in sub[n] if m in members and m != start] for n in members - {start}}
        ordered = {n: rest[n] for n in component if n in rest}
        components += [c for c in strongly_connected(ordered) if len(c) > 1]
    return out


def _unblock(node: str, blocked: set[str], blockers: dict[str, set[str]]) -> None:
    todo = {node}
    while todo:
        n = todo.pop()
        if n in blocked:
            blocked.discard(n)
            todo |= blockers[n]
            blockers[n].clear()


# -- link scores ----------------------------------------------------------------------------
def _lag(v: np.ndarray, k: int = 1) -> np.ndarray:
    """Values k steps earlier along the last axis (the first k repeat the first value: a
    difference of 0)."""
    if k == 0:
        return v
    return np.concatenate([np.repeat(v[..., :1], k, axis=-1), v[..., :-k]], axis=-1)


@dataclass(eq=False)
class LinkScorer:
    """Link scores of single nodes along one run (see the module docstring): cached per
    (target, source) node pair; `prepare` scores many links at once."""

    eq: Any  # flywheel_sd.engine.links.Equations
    state: Any  # flywheel_sd.engine.links.RunState
    timing: str = "current"
    _cache: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)
    _weights: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    euler: bool = False  # the run is Euler's: take ΔS from the net flows
    nonfinite: int = 0  # link values that came out NaN or infinite (set to 0)

    def __post_init__(self) -> None:
        if self.timing not in TIMINGS:
            raise ValueError(f"timing must be one of {', '.join(TIMINGS)}, not {self.timing!r}")
        times = self.state.times
        steps = np.diff(times)
        if len(steps) and np.ptp(steps) > 1e-9 * abs(steps[0]):
            raise ValueError("link scores need a run saved on an even time grid")
        self.dt = float(steps[0]) if len(steps) else 1.0

    def second_difference(self, stocks: Sequence[str]) -> np.ndarray:
        """ΔS_t - ΔS_{t-dt} of each stock (rows). From the recorded stock values; on an
        Euler run from the net flows, ΔS_t = dt · g_{t-dt} (equal in exact arithmetic,
        without the cancellation of differencing a large stock that barely changes)."""
        if self.euler:
            g = self.net_flows(stocks)
            return self.dt * (_lag(g) - _lag(g, 2))
        s = self.rows(stocks)
        return (s - _lag(s)) - (_lag(s) - _lag(s, 2))

    def rows(self, keys: Sequence[str]) -> np.ndarray:
        """The recorded values of nodes (one row each)."""
        rows = self.eq.layout.rows
        return self.state.table[[rows[k] for k in keys]]

    def net_flows(self, stocks: Sequence[str]) -> np.ndarray:
        flow_rows = self.eq.layout.flow_rows
        return self.state.table[[flow_rows[k] for k in stocks]]

    def weights(self, targets: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(A, B) of each target (rows): a link x -> z scores Δₓz · sign(Δx) / A · B (the
        module docstring's formulas: A = |Δz|, B = 1 for an auxiliary z; A = |second
        difference|, B = dt for a stock; A infinite where the score is 0 by definition)."""
        new = [k for k in dict.fromkeys(targets) if k not in self._weights]
        if new == list(targets):  # all new, no repeats: the block as computed
            return self._weigh(new)
        if new:
            self._weigh(new)
        found = [self._weights[k] for k in targets]
        return np.array([w[0] for w in found]), np.array([w[1] for w in found])

    def _weigh(self, keys: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """`weights` of `keys`, computed (and kept): in blocks, auxiliaries then stocks (as
        `matrix` orders its targets; other orders are put back)."""
        aux = [k for k in keys if not self.eq.is_stock(k)]
        stocks = [k for k in keys if self.eq.is_stock(k)]
        n = len(aux)
        a_all, b_all = np.empty((2, len(keys), len(self.state.times)))
        with np.errstate(all="ignore"):
            if aux:  # A = |z_t - z_{t-1}|
                z, a = self.rows(aux), a_all[:n]
                # differenced as one flat row (a few times sooner than row by row); the
                # first column, across rows, is set next
                np.subtract(z.ravel()[1:], z.ravel()[:-1], out=a.ravel()[1:])
                a[:, :1] = 0.0
                np.abs(a, out=a)
                np.copyto(a, np.inf, where=a == 0)
                b_all[:n] = 1.0
            if stocks:
                second = self.second_difference(stocks)
                a, b = a_all[n:], b_all[n:]
                if self.timing == "current":
                    np.abs(second, out=a)
                    a[second == 0] = np.inf
                    b[:] = self.dt
                else:  # x -> net flow at t, net flow -> stock over the step before
                    g = self.net_flows(stocks)
                    change = g - _lag(g)
                    np.abs(change, out=a)
                    b[:] = self.dt * np.abs(_lag(change) / second)
                    a[(change == 0) | (second == 0)] = np.inf
                    b[second == 0] = 0.0
                a[:, :2] = np.inf
        order = aux + stocks
        self._weights.update(zip(order, zip(a_all, b_all)))
        if order != keys:
            position = {k: i for i, k in enumerate(order)}
            back = [position[k] for k in keys]
            a_all, b_all = a_all[back], b_all[back]
        return a_all, b_all

    def matrix(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
        """The link scores of `pairs` ((target, source) node keys, each source a direct
        input of its target; no repeats), a row each. Links not scored before are scored
        together, in one call of the generated code (`RunState.link_terms`), and kept for
        later calls."""
        out = np.empty((len(pairs), len(self.state.times)))
        todo = [i for i, p in enumerate(pairs) if p not in self._cache]
        for i in set(range(len(pairs))) - set(todo):
            out[i] = self._cache[pairs[i]]
        if todo:
            fresh = [pairs[i] for i in todo]
            unknown = [p for p in fresh if p not in self.eq.layout.links]
            if unknown:
                target, source = unknown[0]
                raise KeyError(f"{self.eq.label(target)} does not read {self.eq.label(source)}")
            # auxiliaries first: `_weigh` fills its blocks in place
            targets = sorted(dict.fromkeys(t for t, _ in fresh), key=self.eq.is_stock)
            a, b = self.weights(targets)
            at = {k: i for i, k in enumerate(targets)}
            every = len(todo) == len(pairs)
            terms = self.state.link_terms(
                self.eq, fresh, [at[t] for t, _ in fresh], a, b, out=out if every else None
            )
            if not np.isfinite(terms.sum()):  # one pass; rarely true, then find them
                bad = ~np.isfinite(terms)
                self.nonfinite += int(bad.sum())
                terms[bad] = 0.0
            if not every:
                out[todo] = terms
            self._cache.update(zip(fresh, terms))
        return out


def path_links(path: Sequence[str]) -> list[tuple[str, str]]:
    """The links (target, source) along a path of nodes (source first)."""
    return [(target, source) for source, target in itertools.pairwise(path)]


# -- the element graph ----------------------------------------------------------------------
@dataclass(eq=False)
class ElementGraph:
    """The model's variable elements (nodes with an output column, constants left out) and
    the links between them, hidden nodes contracted: ``paths[(z, x)]`` lists the dependency
    paths (source first) from x to z whose inner nodes are hidden."""

    eq: Any
    nodes: list[str]
    paths: dict[tuple[str, str], list[list[str]]]
    variable: dict[str, str]  # node key -> Vensim name
    chains: dict[tuple[str, ...], list[tuple[str, ...]]] = field(default_factory=dict)
    _cycles: dict[int, list[list[str]] | TooManyCycles] = field(default_factory=dict)
    plans: dict[tuple, Any] = field(default_factory=dict)  # see `remember`

    @functools.cached_property
    def successors(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {n: [] for n in self.nodes}
        for z, x in self.paths:
            out[x].append(z)
        return out

    def simple_cycles(self, limit: int) -> list[list[str]]:
        """`simple_cycles` of the graph (found once per limit; TooManyCycles likewise)."""
        found = self._cycles.get(limit)
        if found is None:
            try:
                found = simple_cycles(self.successors, limit)
            except TooManyCycles as err:
                found = err
            self._cycles[limit] = found
        if isinstance(found, TooManyCycles):
            raise TooManyCycles(*found.args)
        return [list(c) for c in found]

    def remember(self, key: tuple, plan: Any) -> Any:
        """Keep a plan built from the graph (`link_plan`, `_loop_plan`) for later runs: the
        latest few (an ensemble's runs share theirs; each strongest-path search may find
        other loops)."""
        if len(self.plans) >= PLANS_KEPT:
            del self.plans[next(iter(self.plans))]
        self.plans[key] = plan
        return plan

    @functools.cached_property
    def component(self) -> dict[str, int]:
        """Each node's strongly connected component (its cycle partition)."""
        return {k: i for i, c in enumerate(strongly_connected(self.successors)) for k in c}


def element_graph(eq) -> ElementGraph:
    """The element-level dependency graph of a model's equations (see `ElementGraph`),
    built once per equations."""
    from .engine.links import hidden_paths

    if "element_graph" in eq.memo:
        return eq.memo["element_graph"]

    dynamic = {"aux", "stock"}
    visible = [k for k, n in eq.nodes.items() if n.column and n.kind in dynamic]
    variable = {k: name for name, keys in eq.keys.items() for k in keys}
    paths: dict[tuple[str, str], list[list[str]]] = {}
    for z in visible:
        for path in hidden_paths(eq, z, visible):
            if all(eq.nodes[k].kind in dynamic for k in path[1:-1]):
                paths.setdefault((z, path[0]), []).append(path)
    graph = eq.memo["element_graph"] = ElementGraph(eq, visible, paths, variable)
    return graph


@dataclass(frozen=True, eq=False)
class LinkPlan:
    """How the scores of element links follow from the scores of single links: a link
    through hidden nodes is the product of the scores along each of its hidden paths, and
    where several paths join the same two nodes the path of largest |score| at each time
    (the 2020 paper's rule for macros). Index arrays, built once per set of links."""

    links: list[tuple[str, str]]  # element links (z, x)
    pairs: list[tuple[str, str]]  # the single links (target, source) on their paths
    paths: Groups  # each path's rows of `pairs`
    first: np.ndarray  # each link's first path
    several: np.ndarray  # the links with more than one path
    choices: np.ndarray  # (several, most paths): their paths; -1 pads (a score of 0)


def link_plan(graph: ElementGraph, links: Sequence[tuple[str, str]]) -> LinkPlan:
    """The `LinkPlan` of element links of `graph` (kept: `ElementGraph.remember`)."""
    key = ("links", tuple(links))
    plan = graph.plans.get(key)
    if plan is None:
        paths = [p for link in links for p in graph.paths[link]]
        pairs = list(dict.fromkeys(pair for p in paths for pair in path_links(p)))
        row = {pair: i for i, pair in enumerate(pairs)}
        counts = [len(graph.paths[link]) for link in links]
        first = np.cumsum([0, *counts], dtype=np.intp)[:-1]
        several = np.flatnonzero(np.array(counts, dtype=np.intp) > 1)
        choices = np.full((len(several), max(counts, default=1)), -1, dtype=np.intp)
        for i, link in enumerate(several):
            choices[i, : counts[link]] = range(first[link], first[link] + counts[link])
        steps = groups([row[pair] for pair in path_links(p)] for p in paths)
        plan = LinkPlan(list(links), pairs, steps, first, several, choices)
        graph.remember(key, plan)
    return plan


@dataclass(frozen=True, eq=False)
class Groups:
    """Groups of row numbers (none empty), laid out to combine each group's rows in order
    with whole-array steps: the first rows, then per position k >= 1 the groups that have a
    k-th row and those rows; or, where there are fewer groups than positions, a group at
    a time (`each`)."""

    first: np.ndarray  # each group's first row
    later: list[tuple[np.ndarray | slice, np.ndarray]]  # per position k >= 1
    identity: bool  # every group is the one row of its own number
    each: list[np.ndarray] | None = None  # the groups' rows, if a group at a time

    def reduce(self, ufunc: np.ufunc, values: np.ndarray) -> np.ndarray:
        """Per group, `ufunc` over its rows of `values`, left to right (as a loop would: the
        same product or sum to the last bit)."""
        if self.identity:
            return values
        if self.each is not None:  # NumPy reduces along the first axis row after row
            out = np.empty((len(self.each), values.shape[1]))
            for i, rows in enumerate(self.each):
                ufunc.reduce(values[rows], axis=0, out=out[i])
            return out
        out = values[self.first]
        scratch = np.empty_like(out[: len(self.later[0][1])] if self.later else out[:0])
        for having, rows in self.later:
            if isinstance(having, slice):  # in place, through one scratch array
                taken = np.take(values, rows, axis=0, out=scratch[: len(rows)], mode="clip")
                ufunc(out[having], taken, out=out[having])
            else:
                out[having] = ufunc(out[having], values[rows])
        return out


def groups(members: Iterable[Iterable[int]]) -> Groups:
    """`Groups` of the row numbers in `members` (each non-empty)."""
    lists = [list(m) for m in members]
    first = np.array([m[0] for m in lists], dtype=np.intp)
    longest = max(map(len, lists), default=0)
    if len(lists) < longest:  # fewer groups than positions: a group at a time
        each = [np.array(m, dtype=np.intp) for m in lists]
        return Groups(first, [], False, each)
    later: list[tuple[np.ndarray | slice, np.ndarray]] = []
    for k in range(1, longest):
        having = [i for i, m in enumerate(lists) if len(m) > k]
        rows = np.array([lists[i][k] for i in having], dtype=np.intp)
        prefix = having == list(range(len(having)))  # a slice: no copy in and out
        later.append((slice(0, len(having)) if prefix else np.array(having, np.intp), rows))
    identity = not later and bool((first == np.arange(len(first))).all())
    return Groups(first, later, identity)


def composite_scores(scorer: LinkScorer, plan: LinkPlan) -> np.ndarray:
    """The scores of the plan's element links (a row each)."""
    paths = plan.paths.reduce(np.multiply, scorer.matrix(plan.pairs))
    if not len(plan.several):
        return paths
    out = paths[plan.first]
    candidates = np.concatenate([paths, np.zeros((1, paths.shape[1]))])[plan.choices]
    pick = np.argmax(np.abs(candidates), axis=1)
    out[plan.several] = np.take_along_axis(candidates, pick[:, None, :], axis=1)[:, 0]
    return out


def strongest_paths(
    graph: ElementGraph, scorer: LinkScorer, n_times: int = SEARCH_TIMES
) -> list[list[str]]:
    """Loops found by the strongest-path search of Eberlein & Schoenberg, "Finding the
    loops that matter" (2020): at each of `n_times` saved times (evenly spread), from each
    stock, a depth-first walk along the links in order of decreasing |link score| that
    records a loop when it returns to the stock and abandons a path reaching a variable it
    has reached before (from this stock, at this time) with a larger |score|. A heuristic:
    it finds strong loops, not all loops, and may miss a strongest loop's close sibling.
    Each loop once, as a list of element nodes (a stock first). The search is compiled
    with Numba when the run was (`_search_all`)."""
    times = len(scorer.state.times)
    number = {k: i for i, k in enumerate(graph.nodes)}
    edges = list(graph.paths)
    source = np.array([number[x] for _, x in edges], dtype=np.int64)
    target = np.array([number[z] for z, _ in edges], dtype=np.int64)
    magnitude = np.abs(composite_scores(scorer, link_plan(graph, edges)))
    stocks = np.array([number[n] for n in graph.nodes if graph.eq.is_stock(n)], dtype=np.int64)
    picks = np.unique(np.linspace(2, times - 1, min(n_times, max(times - 2, 0))).astype(int))
    # per time, the links out of each node by decreasing |score| (ties: in graph order),
    # as compressed rows: those of node i are order[j, start[j, i]:start[j, i + 1]]
    n_nodes, n_edges = len(graph.nodes), len(edges)
    order = np.zeros((len(picks), n_edges), dtype=np.int64)
    at_pick, edge = np.nonzero(magnitude[:, picks].T > 0)  # by time, then link
    strength = magnitude[edge, picks[at_pick]]
    ranked = np.lexsort((edge, -strength, source[edge], at_pick))
    at_pick, edge = at_pick[ranked], edge[ranked]
    row_start = np.searchsorted(at_pick, np.arange(len(picks)))
    order[at_pick, np.arange(len(edge)) - row_start[at_pick]] = edge
    counts = np.bincount(at_pick * n_nodes + source[edge], minlength=len(picks) * n_nodes)
    start = np.zeros((len(picks), n_nodes + 1), dtype=np.int64)
    start[:, 1:] = counts.reshape(len(picks), n_nodes).cumsum(axis=1)
    args: tuple[Any, ...] = (
        order.ravel(),
        start.ravel(),
        target,
        magnitude[:, picks].T.ravel(),
        stocks,
    )
    # scratch: best, visiting, stack, position, strength
    scratch: tuple[Any, ...] = (
        np.zeros(n_nodes + 1),
        np.zeros(n_nodes, dtype=np.bool_),
        np.zeros(n_nodes + 1, dtype=np.int64),
        np.zeros(n_nodes + 1, dtype=np.int64),
        np.zeros(n_nodes + 1),
    )
    search: Any = _search_all
    if scorer.state.functions is scorer.eq.vector:  # a plain-Python run: lists index sooner
        args, scratch = tuple(a.tolist() for a in args), tuple(a.tolist() for a in scratch)
    else:
        search = _compiled_search()
    walked, ends = search(*args, len(picks), n_nodes, n_edges, *scratch)
    # the walks (each once, in the order found) as the rows of a table padded with -1
    walked, ends = np.asarray(walked, dtype=np.int64), np.asarray(ends, dtype=np.int64)
    lengths = np.diff(ends, prepend=0)
    table = np.full((len(ends), int(lengths.max(initial=0))), -1, dtype=np.int64)
    table[np.arange(table.shape[1]) < lengths[:, None]] = walked
    ranked = np.lexsort(table.T[::-1])  # equal walks together, in the order found
    new = np.ones(len(ranked), dtype=bool)
    new[1:] = (table[ranked[1:]] != table[ranked[:-1]]).any(axis=1)
    seen: set[tuple[int, ...]] = set()
    out: list[list[str]] = []
    for i in np.sort(ranked[new]):
        walk = tuple(table[i, : lengths[i]].tolist())
        first = walk.index(min(walk))
        key = walk[first:] + walk[:first]  # a loop is found from each of its stocks
        if key not in seen:
            seen.add(key)
            out.append([graph.nodes[i] for i in walk])
    return out


def _search_all(
    order, start, target, magnitude, stocks, n_rows, n_nodes, n_edges,
    best, visiting, stack, position, strength,
):  # fmt: skip
    """Every strongest-path search (see `strongest_paths`): for each time (a row of the
    flattened `order`, `start` and `magnitude`) and each stock, a depth-first walk; returns
    the loops found as the node numbers of each walk's stack (the stock first), one walk
    after another in the order found (`walked`), and where each ends (`ends`). Plain loops
    over flat sequences (NumPy arrays or lists) and the scratch sequences `best` ...
    `strength`, so that Numba compiles it as it is."""
    walked, ends = [0], [0]  # typed for Numba: lists of integers
    walked.pop()
    ends.pop()
    for row in range(n_rows):
        first, links, weight = row * (n_nodes + 1), row * n_edges, row * n_edges
        for s in range(len(stocks)):
            home = stocks[s]
            for i in range(n_nodes):
                best[i] = 0.0
                visiting[i] = False
            depth = 0
            stack[0], position[0], strength[0] = home, start[first + home], 1.0
            best[home] = 1.0
            visiting[home] = True
            while depth >= 0:
                node = stack[depth]
                if position[depth] == start[first + node + 1]:
                    visiting[node] = False
                    depth -= 1
                    continue
                e = order[links + position[depth]]
                position[depth] += 1
                nxt = target[e]
                score = strength[depth] * magnitude[weight + e]
                if visiting[nxt]:
                    if nxt == home:
                        for i in range(depth + 1):
                            walked.append(stack[i])
                        ends.append(len(walked))
                    continue
                if score < best[nxt]:
                    continue
                best[nxt] = score
                depth += 1
                stack[depth], position[depth], strength[depth] = nxt, start[first + nxt], score
                visiting[nxt] = True
    return np.array(walked), np.array(ends)


@functools.cache
def _compiled_search():
    """`_search_all` compiled by Numba (cached on disk)."""
    import numba

    return numba.njit(cache=True, nogil=True)(_search_all)


# -- loop dominance -------------------------------------------------------------------------
@dataclass(eq=False)
class _Loop:
    key: str
    cycles: list[tuple[str, ...]]
    name: str = ""
    declared: str = ""


def loop_dominance(
    model_or_run: Any,
    loops: Sequence[str | Sequence[str]] | None = None,
    *,
    run: Any = None,
    params: Mapping | None = None,
    equations: Any = None,
    index: str | Path | Mapping | bool | None = None,
    max_cycles: int = MAX_CYCLES,
    search_times: int = SEARCH_TIMES,
    timing: str = "current",
    method: str = "euler",
    **simulate_options: Any,
):
    """Loops That Matter along one run: link scores, loop scores, relative loop scores and
    each loop's polarity over time (see the module docstring for the definitions).

    Parameters
    ----------
    model_or_run : Model, path, or RunState
        A model the compiled engine covers (or its file); or a
        `flywheel_sd.engine.links.RunState` recorded on an even grid (pass its `equations`).
    loops : sequence, optional
        The loops to score: ids of the loop index and/or chains (lists of variable names,
        each reading the one before, the first the last). Default: every loop, found by
        exhaustive enumeration (if there are at most `max_cycles` element cycles; else the
        strongest-path search's loops plus the loop index's).
    run : None, str, Scenario or mapping
        As `flywheel_sd.loop_index.loop_polarity` takes it: the scenario or parameters of the run.
    params : mapping, optional
        Parameters of the run, over `run`'s (a mapping's, or a scenario's).
    index : path, mapping, bool or None
        The loop index matched by name (None: ``<model>.loops.toml`` if it exists; False:
        none).
    max_cycles : int
        The most element-level cycles enumerated exhaustively; beyond, the strongest-path
        search finds the loops.
    search_times : int
        At how many times (evenly spread over the run) the strongest-path search runs.
    timing : "current" or "previous"
        The flow -> stock numerator's step (see the module docstring).
    method, simulate_options
        The run's integration method (default Euler: LTM is defined on the model's dt) and
        options (``final_time``, ``time_step``, ...). SAVEPER is always TIME STEP.

    Returns
    -------
    xarray.Dataset
        ``link_score`` (link, time), ``loop_score``, ``relative_score`` and ``polarity``
        (loop, time); per loop ``loop_variables``, ``loop_name``, ``declared``, ``summary``,
        ``partition`` and ``n_cycles``; attrs ``discovery`` ("exhaustive",
        "strongest_path" or "given"), ``n_cycles_found``, ``timing``, ``dt``, ``method``,
        ``seconds``, ``note`` (why the result is empty, or how the loops were found).

    Raises
    ------
    KeyError
        An unknown loop id or variable name (the message lists close matches).
    """
    from .engine import links as lk
    from .engine.model import Model, load
    from .loop_index import loop_index_path, read_loop_index, run_state

    started = time.perf_counter()
    if isinstance(model_or_run, lk.RunState):
        if equations is None:
            raise ValueError("a RunState needs the `equations` it was recorded with")
        model = equations.model
    else:
        model = model_or_run if isinstance(model_or_run, Model) else load(model_or_run)
    if params:
        if run is not None and not isinstance(run, Mapping):  # a scenario: params on top
            from .loop_index import _run_inputs

            run, breaks = _run_inputs(model, run)
            simulate_options["breakpoints"] = [*breaks, *simulate_options.get("breakpoints", ())]
        run = {**(run or {}), **params}
    if isinstance(model_or_run, lk.RunState):
        eq, state = run_state(model, model_or_run, equations=equations)
    else:
        settings = model.time_settings()
        step = simulate_options.pop("time_step", None) or settings["time_step"]
        simulate_options.pop("saveper", None)
        eq, state = run_state(
            model,
            run,
            equations=equations,
            method=method,
            time_step=step,
            saveper=step,
            **simulate_options,
        )
    spec_index: dict = {}
    if index is not False:
        where = loop_index_path(model) if index in (None, True) else index
        if not isinstance(where, Mapping) and not Path(str(where)).is_file():
            if index not in (None, True):
                raise ModelFileError(f"{where}: no such loop index")
        else:
            spec_index = read_loop_index(where)  # type: ignore[arg-type]
    graph = element_graph(eq)
    from .engine.simulate import check_method

    euler = check_method(method) == "euler" and not isinstance(model_or_run, lk.RunState)
    scorer = LinkScorer(eq, state, timing, euler=euler)
    if len(state.times) > 1 and not math.isclose(scorer.dt, float(state.c[0]), rel_tol=1e-9):
        raise ValueError(
            f"link scores need a run saved at every TIME STEP ({float(state.c[0]):g}), "
            f"not every {scorer.dt:g}: record it with saveper = time_step"
        )
    note = ""
    found: list[list[str]] = []
    if loops is None:
        try:
            found = graph.simple_cycles(max_cycles)
            discovery = "exhaustive"
        except TooManyCycles:
            discovery = "strongest_path"
            found = strongest_paths(graph, scorer, search_times)
            known = set(map(_rotate, found))
            for spec in spec_index.values():  # the index's loops are always reported
                for path in spec.paths:
                    try:
                        cycles = _chain_cycles(graph, path)
                    except KeyError as err:
                        raise ModelFileError(f"loop {spec.key}: {err.args[0]}") from None
                    found += [list(c) for c in cycles if _rotate(c) not in known]
                    known.update(map(_rotate, cycles))
            note = (
                f"more than {max_cycles} element cycles: loops found by the strongest-path "
                f"search at {min(search_times, len(state.times))} times, plus the loop "
                "index's; relative scores are shares among these loops"
            )
        chosen = _group_cycles(graph, found, spec_index)
    else:
        discovery = "given"
        chosen = _named_loops(graph, loops, spec_index)
    if not chosen and not note:
        note = "the model has no feedback loops"
    ds = _dataset(graph, scorer, chosen, state.times)
    ds.attrs.update(
        discovery=discovery,
        n_cycles_found=len(found),
        timing=timing,
        dt=scorer.dt,
        method=method,
        model=Path(model.path).name,
        model_path=str(model.path),
        nonfinite_link_values=scorer.nonfinite,
        # the backend of the run and the generated analysis code
        engine="compiled (numpy)" if state.functions is eq.vector else "compiled (numba)",
        note=note,
        variables=json.dumps(sorted(eq.keys)),  # for dominance_periods(variable=)
        seconds=time.perf_counter() - started,
    )
    return ds


def _cycles_of(chosen: Sequence[_Loop]) -> Iterator[tuple[str, ...]]:
    """The element cycles of the loops chosen."""
    for loop in chosen:
        yield from loop.cycles


def _rotate(cycle: Sequence[str]) -> tuple[str, ...]:
    """A cycle's canonical rotation: starting at its smallest node."""
    i = cycle.index(min(cycle))  # a cycle passes each node once
    return tuple(cycle[i:]) + tuple(cycle[:i])


def _group_cycles(graph: ElementGraph, cycles, spec_index) -> list[_Loop]:
    """Group element cycles by the cycle of variables they pass (the element cycles of a
    subscripted loop are one loop; the two directions round the same variables are two);
    name the groups from the loop index, where a group's variables are an entry's chain's
    or one of its ``also`` paths' (an entry takes every group it matches)."""
    by_vars: dict[tuple[str, ...], list[tuple[str, ...]]] = {}
    for cycle in cycles:
        names = _rotate([graph.variable[k] for k in cycle])
        by_vars.setdefault(names, []).append(_rotate(cycle))
    match: dict[frozenset[str], str] = {}
    for key, spec in spec_index.items():
        for path in spec.paths:
            match.setdefault(frozenset(path), key)
    named: dict[str, _Loop] = {}
    unnamed: list[_Loop] = []
    for names, members in sorted(
        by_vars.items(), key=lambda kv: (len(set(kv[0])), sorted(set(kv[0])), kv[0])
    ):
        key = match.get(frozenset(names))
        if key is not None:
            spec = spec_index[key]
            if key not in named:
                named[key] = _Loop(key, [], spec.name, spec.polarity)
            named[key].cycles += members
        else:
            unnamed.append(_Loop("", members))
    out = [named[k] for k in spec_index if k in named]
    for i, loop in enumerate(unnamed, start=len(out) + 1):
        loop.key = f"L{i}"
        out.append(loop)
    return out


def _named_loops(graph: ElementGraph, loops, spec_index) -> list[_Loop]:
    out: list[_Loop] = []
    for i, item in enumerate(loops, start=1):
        if isinstance(item, str):
            if item not in spec_index:
                close = difflib.get_close_matches(item, list(spec_index), n=3, cutoff=0.5)
                hint = f" (close: {', '.join(close)})" if close else ""
                raise KeyError(f"{item!r} is not a loop of the index{hint}")
            spec = spec_index[item]
            cycles = [c for p in spec.paths for c in _chain_cycles(graph, p)]
            out.append(_Loop(item, cycles, spec.name, spec.polarity))
        else:
            out.append(_Loop(f"L{i}", _chain_cycles(graph, list(item))))
    return out


def _chain_cycles(graph: ElementGraph, chain: Sequence[str]) -> list[tuple[str, ...]]:
    """The element cycles along a chain of variable names (each reads the one before, the
    first reads the last)."""
    found = graph.chains.get(tuple(chain))
    if found is None:
        found = graph.chains[tuple(chain)] = _walk_chain(graph, chain)
    return list(found)


def _walk_chain(graph: ElementGraph, chain: Sequence[str]) -> list[tuple[str, ...]]:
    eq = graph.eq
    members = set(graph.nodes)
    keys: list[list[str]] = []
    for name in chain:
        try:
            found = [k for k in eq.keys_of(name) if k in members]
        except KeyError:
            close = difflib.get_close_matches(name, list(eq.keys), n=3)
            hint = f" (close: {', '.join(close)})" if close else ""
            raise KeyError(f"{name!r} is not a variable of the model{hint}") from None
        if not found:
            raise KeyError(f"{name!r} is a constant: it is in no feedback loop")
        keys.append(found)
    n = len(chain)
    out: list[tuple[str, ...]] = []

    def walk(trail: list[str]) -> None:
        depth = len(trail)
        if depth == n:
            if (trail[0], trail[-1]) in graph.paths:
                out.append(tuple(trail))
            return
        for nxt in keys[depth]:
            if (nxt, trail[-1]) in graph.paths and nxt not in trail:
                walk([*trail, nxt])

    for start in keys[0]:
        walk([start])
    if not out:
        raise KeyError(f"{' -> '.join(chain)} is not a closed path of the model")
    return out


@dataclass(frozen=True, eq=False)
class _LoopPlan:
    """How the loops' scores follow from their element links' (`_dataset`): index arrays
    and the result's labels, built once per set of loops."""

    links: LinkPlan  # the element links round the loops' cycles
    cycles: Groups  # each cycle's rows of links.links
    partition: np.ndarray  # (cycles,): each cycle's partition (a group of `together`)
    together: Groups  # the cycles of each partition
    loops: Groups  # each loop's distinct cycles
    labels: dict[str, Any]  # the result's coordinates that do not depend on the run
    attrs: dict[str, str]
    _grids: dict[bytes, Any] = field(default_factory=dict)

    def coordinates(self, times: np.ndarray):
        """The labels and `times` as `xarray.Coordinates`, built once per time grid (their
        indexes are most of the cost of a Dataset). Their arrays are read-only: results
        share them."""
        import xarray as xr

        key = times.tobytes()
        found = self._grids.get(key)
        if found is None:
            if len(self._grids) >= PLANS_KEPT:
                self._grids.clear()
            found = self._grids[key] = xr.Coordinates({"time": times, **self.labels})
            for variable in found.variables.values():
                variable.values.flags.writeable = False
        return found.copy()


def _loop_plan(graph: ElementGraph, chosen: Sequence[_Loop]) -> _LoopPlan:
    """The `_LoopPlan` of the loops `chosen` (kept by the graph: `ElementGraph.remember`)."""
    key = ("loops", tuple((x.key, x.name, x.declared, tuple(x.cycles)) for x in chosen))
    plan = graph.plans.get(key)
    if plan is not None:
        return plan
    eq = graph.eq
    found = list(dict.fromkeys(_cycles_of(chosen)))
    links = list(dict.fromkeys((z, c[i - 1]) for c in found for i, z in enumerate(c)))
    row = {link: i for i, link in enumerate(links)}
    # numbered longest first (the cycles with a k-th link are the first few: `Groups`
    # multiplies them in place); sums still run in the order found
    cycles = sorted(found, key=len, reverse=True)
    number = {c: i for i, c in enumerate(cycles)}
    component = graph.component
    partitions = sorted({component[c[0]] for c in cycles})
    renumber = {p: i for i, p in enumerate(partitions)}
    partition = [renumber[component[c[0]]] for c in cycles]
    members = [
        [number[c] for c in found if renumber[component[c[0]]] == k]
        for k in range(len(partitions))
    ]

    def variables(loop: _Loop) -> str:
        first = loop.cycles[0]
        stocks = [i for i, k in enumerate(first) if eq.is_stock(k)]
        start = stocks[0] if stocks else 0
        ordered = first[start:] + first[:start]
        return " -> ".join(graph.variable[k] for k in ordered)

    link_keys = links
    coords = {
        "loop": [loop.key for loop in chosen],
        "loop_variables": ("loop", [variables(loop) for loop in chosen]),
        "loop_name": ("loop", [loop.name for loop in chosen]),
        "declared": ("loop", [loop.declared for loop in chosen]),
        "partition": (
            "loop",
            [partition[number[loop.cycles[0]]] if loop.cycles else -1 for loop in chosen],
        ),
        "n_cycles": ("loop", [len(set(loop.cycles)) for loop in chosen]),
        "link": [f"{eq.label(x)} -> {eq.label(z)}" for z, x in link_keys],
        "link_source": ("link", [eq.label(x) for _, x in link_keys]),
        "link_target": ("link", [eq.label(z) for z, _ in link_keys]),
    }
    attrs = {
        "stocks": json.dumps(
            sorted({graph.variable[k] for c in cycles for k in c if eq.is_stock(k)})
        ),
        # for dominance_periods(variable=): the variables of every cycle of each loop (an
        # index loop's `also` paths too)
        "loop_members": json.dumps(
            {
                loop.key: sorted({graph.variable[k] for c in loop.cycles for k in c})
                for loop in chosen
            }
        ),
    }
    plan = _LoopPlan(
        links=link_plan(graph, links),
        cycles=groups([row[(z, c[i - 1])] for i, z in enumerate(c)] for c in cycles),
        partition=np.array(partition, dtype=np.intp),
        together=groups(members),
        loops=groups([number[c] for c in dict.fromkeys(loop.cycles)] for loop in chosen),
        labels=coords,
        attrs=attrs,
    )
    return graph.remember(key, plan)


def _dataset(graph: ElementGraph, scorer: LinkScorer, chosen: list[_Loop], times):
    """The loop scores of `loop_dominance` as a Dataset (its attrs `stocks` and
    `loop_members` set; the caller adds the rest)."""
    import xarray as xr

    plan = _loop_plan(graph, chosen)
    links = composite_scores(scorer, plan.links)
    cycles = plan.cycles.reduce(np.multiply, links)  # a cycle's score: its links' product
    totals = plan.together.reduce(np.add, np.abs(cycles))[plan.partition]
    with np.errstate(all="ignore"):
        relative = np.where(totals > 0, cycles / totals, 0.0)
    score = plan.loops.reduce(np.add, cycles)
    polarity = np.sign(score).astype(np.int8)
    positive, negative = (polarity > 0).any(axis=1), (polarity < 0).any(axis=1)
    summary = np.select(
        [positive & negative, positive, negative],
        ["state-dependent", "reinforcing", "balancing"],
        "inactive",
    )
    ds = xr.Dataset(
        {
            "loop_score": (("loop", "time"), score),
            "relative_score": (("loop", "time"), plan.loops.reduce(np.add, relative)),
            "polarity": (("loop", "time"), polarity),
            "link_score": (("link", "time"), links),
            "summary": ("loop", summary),
        },
        coords=plan.coordinates(np.asarray(times, float)),
        attrs=dict(plan.attrs),
    )
    return ds.set_coords("summary")


PERIOD_COLUMNS = ["partition", "start", "end", "loops", "share", "polarity"]


def _normal(name: str) -> str:
    """A Vensim name compared as Vensim does: case, underscores and spacing ignored."""
    return " ".join(str(name).replace("_", " ").lower().split())


def loops_through(ds, variable: str) -> tuple[str, list[str]]:
    """The variable's name as the model spells it, and the ids of the loops of `ds` (a
    `loop_dominance` result) that pass through it: through any of its elements, on any of
    the loop's paths.

    Raises
    ------
    ParameterError
        `variable` is neither a variable of the model nor of a loop (the message, one line,
        lists close matches).
    """
    from .errors import ParameterError, unknown_name_message

    keys = [str(k) for k in ds["loop"].values]
    members: dict[str, list[str]]
    if "loop_members" in ds.attrs:
        members = {str(k): list(v) for k, v in json.loads(ds.attrs["loop_members"]).items()}
    else:  # a dataset without it (built by hand): the variables of each loop's first cycle
        members = {str(k): str(v).split(" -> ") for k, v in zip(keys, ds["loop_variables"].values)}
    known = {v for vs in members.values() for v in vs}
    known |= set(json.loads(ds.attrs.get("variables", "[]")))
    by_normal = {_normal(v): v for v in sorted(known)}
    name = by_normal.get(_normal(variable))
    if name is None:
        raise ParameterError(unknown_name_message("variable", str(variable), sorted(known)))
    return name, [k for k in keys if name in members.get(k, ())]


def variable_scores(ds, variable: str):
    """The relative scores of the loops through `variable`, renormalised among themselves:
    per partition and time, each such loop's relative score divided by the sum of their
    |relative scores| (0 where none is active). Within a partition the partition's total
    cancels, so this is also the loop's score over the sum of |loop scores| of the loops
    through the variable. See `dominance_periods` for the convention.

    Returns
    -------
    xarray.DataArray
        (loop, time), the loops through the variable only (none: an empty loop dimension);
        attrs ``variable`` (the name as the model spells it).
    """
    name, through = loops_through(ds, variable)
    sub = ds["relative_score"].sel(loop=through)
    rel = sub.to_numpy().astype(float)
    parts = ds["partition"].sel(loop=through).to_numpy()
    out = np.zeros_like(rel)
    for p in np.unique(parts):
        rows = parts == p
        total = np.abs(rel[rows]).sum(axis=0)
        with np.errstate(all="ignore"):
            out[rows] = np.where(total > 0, rel[rows] / total, 0.0)
    result = sub.copy(data=out)
    result.attrs = {"variable": name}
    return result


def dominance_periods(ds, threshold: float = DOMINANCE, *, variable: str | None = None):
    """The time spans in which a loop, or the smallest set of loops, explains at least
    `threshold` of the change: per partition and time, the loops taken by decreasing
    |relative score| until their |relative scores| add up to `threshold`. Consecutive times
    with the same set make one period; times where no loop is active are left out.

    Parameters
    ----------
    ds : xarray.Dataset
        The result of `loop_dominance`.
    threshold : float
        The share of the change the set explains, at least (the LTM papers' 50 %).
    variable : str, optional
        Dominance for one stock or any variable: only the loops that pass through it count,
        their relative scores renormalised among themselves (`variable_scores`), so the
        shares are of the change that those loops explain. The LTM papers define the
        relative loop score, and dominance (a loop set explaining at least 50% of the
        change), for the whole model or cycle partition, not for a stock (Schoenberg,
        Davidsen & Eberlein 2020); Simlin (pysimlin ``Run.dominant_periods``, from
        ``calculate_dominant_periods`` in its engine's ``ltm_dominance.rs``) likewise
        computes dominant periods per partition only and has no per-variable view
        (``Loop.contains_variable`` only tests membership). So the per-variable view here
        is the common practical reading, the loops through the variable competing among
        themselves, and not a published LTM measure; the per-stock measures of the
        literature are other methods (the pathway participation metric, loop impact).
        A variable in no loop gives an empty table whose ``attrs["note"]`` says so.

    Returns
    -------
    pandas.DataFrame
        One row per period: ``partition``, ``start``, ``end`` (saved times), ``loops``
        (ids joined by "+", strongest first at the period's first time), ``share`` (the
        set's mean Σ|relative score| over the period) and ``polarity`` ("reinforcing",
        "balancing" or "mixed": the signs of the set's relative scores). ``attrs``:
        ``variable`` (its name, or None) and ``note``.

    Raises
    ------
    ParameterError
        An unknown `variable` (the message lists close matches), or a threshold outside
        (0, 1].
    """
    import pandas as pd

    from .errors import ParameterError

    if not 0 < threshold <= 1:
        raise ParameterError(f"threshold must lie in (0, 1], not {threshold!r}")
    empty = pd.DataFrame(columns=PERIOD_COLUMNS)
    if variable is not None:
        scores = variable_scores(ds, variable)
        name = scores.attrs["variable"]
        if scores.sizes["loop"] == 0:
            empty.attrs.update(variable=name, note=f"{name} is in no feedback loop of these")
            return empty
        keys = scores["loop"].to_numpy()
        partitions = ds["partition"].sel(loop=keys).to_numpy()
        rel_all = scores.to_numpy()
    else:
        name = None
        if ds.sizes.get("loop", 0) == 0:
            empty.attrs.update(variable=None, note=ds.attrs.get("note", "no loops"))
            return empty
        partitions = ds["partition"].to_numpy()
        keys = ds["loop"].to_numpy()
        rel_all = ds["relative_score"].to_numpy()
    out = _periods(ds["time"].to_numpy(), partitions, keys, rel_all, threshold)
    out.attrs.update(variable=name, note="")
    return out


def _periods(times, partitions, keys, rel_all, threshold: float):
    import pandas as pd

    rows: list[dict] = []
    for p in sorted(set(partitions.tolist())):
        members = np.flatnonzero(partitions == p)
        rel = rel_all[members]
        mags = np.abs(rel)
        # per time, loops by decreasing |score| (ties: in order) until their shares add up
        # to the threshold (cumsum adds in order, as a running total does)
        order = np.argsort(-mags, axis=0, kind="stable")
        running = np.cumsum(np.take_along_axis(mags, order, axis=0), axis=0)
        reached = running >= threshold - 1e-12
        count = np.where(reached.any(axis=0), reached.argmax(axis=0) + 1, len(members))
        active = mags.sum(axis=0) > 0
        sign = np.sign(rel).astype(int)
        current: tuple | None = None
        for j, t in enumerate(times):
            if not active[j]:
                current = None
                continue
            chosen = order[: count[j], j].tolist()
            total = float(running[count[j] - 1, j])
            names = frozenset(chosen)
            signs = set(sign[chosen, j].tolist())
            if current is not None and current[0] == names:
                row = rows[-1]
                row["end"] = float(t)
                row["_shares"].append(total)
                row["_signs"] |= signs
                continue
            current = (names,)
            rows.append(
                {
                    "partition": int(p),
                    "start": float(t),
                    "end": float(t),
                    "loops": "+".join(str(keys[members[i]]) for i in chosen),
                    "_shares": [total],
                    "_signs": set(signs),
                }
            )
    for row in rows:
        row["share"] = float(np.mean(row.pop("_shares")))
        signs = row.pop("_signs") - {0}
        row["polarity"] = (
            "reinforcing" if signs == {1} else "balancing" if signs == {-1} else "mixed"
        )
    return pd.DataFrame(rows, columns=PERIOD_COLUMNS)


def describe_dominance(
    periods,
    names: Mapping[str, Any] | Any = None,
    *,
    unit: str = "month",
    min_length: float | None = None,
    min_reversal: float | None = None,
    most: int = 3,
) -> str:
    """Which loops dominate when, in a few plain sentences, from `dominance_periods`.

    Short spells make the periods of a run ragged (the lead can pass back and forth for a
    step or two), so they are smoothed first: the shortest period under `min_length`
    (default: 5% of the time covered) is dropped, neighbours with the same loops then join,
    and so on until every period left is at least `min_length` long. The `most` longest of
    those are told in order of time, one sentence each, and a last sentence says how much
    of the time the rest covers. Each loop is named by its id and, where `names` knows it,
    its name: `names` maps ids to names (or to loop index entries, which have a ``name``),
    or is the dataset of `loop_dominance` (its ``loop_name``). With several partitions, the
    one covering the most time is told.

    A reversal is always told, however short: the periods led by reinforcing loops and
    those led by balancing loops ("mixed" periods count for neither) make polarity
    stretches; stretches shorter than `min_reversal` (default: 1% of the time covered) are
    smoothed away first (a flicker of a step or two), and neighbours with the same
    polarity join. Every stretch left that no sentence above tells (none of its polarity
    overlaps it) gets its own sentence, naming its loops ("Then balancing loops take over
    from month 34 to 36, mostly B3 ..."); the smoothing never joins two periods across
    such a stretch. More than `most` of them in a row are summed up in one sentence that
    counts the reversals.
    """
    if names is not None and hasattr(names, "coords") and "loop_name" in names.coords:
        names = {str(k): str(v) for k, v in zip(names["loop"].values, names["loop_name"].values)}
    names = dict(names or {})

    def label(key: str, polarity: str = "") -> str:
        name = names.get(key)
        name = getattr(name, "name", name)
        said = [str(name)[:1].lower() + str(name)[1:]] if name else []
        said += [polarity] if polarity else []
        return f"{key} ({', '.join(said)})" if said else key

    def loops_text(keys: str, polarity: str) -> str:
        if "+" not in keys:
            return label(keys, polarity)
        parts = [label(k) for k in keys.split("+")]
        if len(parts) == 1:
            return parts[0]
        return ", ".join(parts[:-1]) + " and " + parts[-1] + " together"

    def listing(keys: list[str]) -> str:
        shown = [label(k) for k in keys]
        return ", ".join(shown[:-1]) + " and " + shown[-1] if len(shown) > 1 else "".join(shown)

    if periods is None or len(periods) == 0:
        return "No loop is active in this run, so none dominates."
    rows = periods.to_dict(orient="records")
    by_partition: dict[int, list[dict]] = defaultdict(list)
    for row in rows:
        by_partition[int(row["partition"])].append(dict(row))

    def length(row: dict) -> float:
        return float(row["end"]) - float(row["start"])

    spans = {p: sum(length(r) for r in rs) for p, rs in by_partition.items()}
    part = max(spans, key=lambda p: (spans[p], -p))
    raw = [dict(r) for r in by_partition[part]]
    rows = [dict(r) for r in raw]
    covered = float(rows[-1]["end"]) - float(rows[0]["start"])
    floor = 0.05 * covered if min_length is None else float(min_length)
    stretches = _polarity_stretches(
        raw, 0.01 * covered if min_reversal is None else float(min_reversal)
    )

    def reversal_between(a: dict, b: dict) -> bool:
        """Whether a stretch of another polarity than `a`'s or `b`'s lies between them."""
        return any(
            s["polarity"] not in (a["polarity"], b["polarity"])
            and s["start"] < float(b["start"])
            and s["end"] > float(a["end"])
            for s in stretches
        )

    while len(rows) > 1:
        i = min(range(len(rows)), key=lambda j: length(rows[j]))
        if length(rows[i]) >= floor:
            break
        del rows[i]
        if (
            0 < i < len(rows)
            and rows[i - 1]["loops"] == rows[i]["loops"]
            and float(rows[i]["start"]) - float(rows[i - 1]["end"]) < floor
            and not reversal_between(rows[i - 1], rows[i])
        ):
            a, b = length(rows[i - 1]), length(rows[i])
            if a + b > 0:
                rows[i - 1]["share"] = (a * rows[i - 1]["share"] + b * rows[i]["share"]) / (a + b)
            rows[i - 1]["end"] = rows[i]["end"]
            if rows[i - 1]["polarity"] != rows[i]["polarity"]:
                rows[i - 1]["polarity"] = "mixed"
            del rows[i]
    told = sorted(sorted(rows, key=length, reverse=True)[: max(most, 1)], key=lambda r: r["start"])

    # the polarity stretches no told period shows: each its own item, or a run of more
    # than `most` of them in a row one item
    items: list[tuple[float, float, str, Any]] = [
        (float(r["start"]), float(r["end"]), "period", r) for r in told
    ]
    untold = [
        s
        for s in stretches
        if not any(
            r["polarity"] == s["polarity"]
            and float(r["start"]) <= s["end"]
            and float(r["end"]) >= s["start"]
            for r in told
        )
    ]
    runs: list[list[dict]] = []
    for s in untold:
        apart = runs and any(runs[-1][-1]["end"] < float(r["start"]) < s["start"] for r in told)
        if runs and not apart and runs[-1][-1]["index"] == s["index"] - 1:
            runs[-1].append(s)
        else:
            runs.append([s])
    for run in runs:
        if len(run) <= max(most, 1):
            items += [(s["start"], s["end"], "stretch", s) for s in run]
        else:
            items.append((run[0]["start"], run[-1]["end"], "swing", run))
    items.sort(key=lambda item: item[0])

    sentences = []
    said: set[str] = set()
    for k, (start_t, end_t, kind, what) in enumerate(items):
        start, end = round(start_t), round(end_t)
        when = f"from {unit} {start} to {end}"
        lead = "" if k == 0 else "After that, " if k == len(items) - 1 else "Then "
        if kind == "period":
            row = what
            verb = "dominate" if "+" in row["loops"] else "dominates"
            pol = row["polarity"] if row["polarity"] in ("reinforcing", "balancing") else ""
            if row["loops"] in said:
                text = lead + f"{row['loops'].replace('+', ' and ')} {verb} again {when}"
            else:
                text = lead + f"{loops_text(row['loops'], pol)} {verb} {when}"
            said.add(row["loops"])
            share = float(row["share"])
        elif kind == "stretch":
            verb = "dominate" if k == 0 else "take over"
            text = lead + f"{what['polarity']} loops {verb} {when}, mostly {listing(what['top'])}"
            share = what["share"]
        else:
            top: dict[str, float] = defaultdict(float)
            for s in what:
                for key, weight in s["weights"].items():
                    top[key] += weight
            keys = sorted(top, key=lambda key: -top[key])[:3]
            flips = sum(s["index"] > 0 for s in what) + (what[-1]["index"] < len(stretches) - 1)
            text = lead + (
                f"{when} the lead swings between reinforcing and balancing loops "
                f"({flips} reversals), mostly {listing(keys)}."
            )
            sentences.append(f"{text[0].upper()}{text[1:]}")
            continue
        sentences.append(
            f"{text[0].upper()}{text[1:]}, explaining about {round(100 * share)}% of the change."
        )
    inside = [(a, b) for a, b, _, _ in items]
    told_time, reach = 0.0, -math.inf  # the time the sentences cover (their union)
    for a, b in sorted(inside):
        told_time += max(0.0, b - max(a, reach))
        reach = max(reach, b)
    rest = covered - told_time
    if covered > 0 and rest / covered >= 0.05:
        time_of: dict[str, float] = defaultdict(float)
        for r in raw:
            if not any(a <= r["start"] and r["end"] <= b for a, b in inside):
                for key in str(r["loops"]).split("+"):
                    time_of[key] += length(r)
        spells = listing(sorted(time_of, key=lambda k: -time_of[k])[:3]) if time_of else ""
        sentences.append(
            f"In the rest of the run ({round(100 * rest / covered)}% of the time) the lead "
            f"changes hands in shorter spells{', mostly of ' + spells if spells else ''}."
        )
    return " ".join(sentences)


def _polarity_stretches(rows: list[dict], floor: float) -> list[dict]:
    """The stretches of time led by reinforcing, or by balancing, loops: consecutive
    periods (`dominance_periods` rows, in time order) of one polarity, "mixed" ones
    skipped; a stretch shorter than `floor` is dropped (the shortest first) and its
    neighbours join if they share a polarity. Each: ``start``, ``end``, ``polarity``,
    ``weights`` (loop id -> time it is among the dominant loops), ``top`` (the two loops
    of most time), ``share`` (the mean share, weighted by time) and ``index`` (its place
    among the stretches)."""
    starts = sorted(float(r["start"]) for r in rows)
    gaps = [b - a for a, b in itertools.pairwise(starts) if b > a]
    step = min(gaps) if gaps else 1.0  # a one-step period spans this much time

    out: list[dict] = []
    for r in rows:
        if r["polarity"] not in ("reinforcing", "balancing"):
            continue
        if not out or out[-1]["polarity"] != r["polarity"]:
            out.append({"start": float(r["start"]), "polarity": r["polarity"], "rows": []})
        out[-1]["end"] = float(r["end"])
        out[-1]["rows"].append(r)
    while len(out) > 1:
        i = min(range(len(out)), key=lambda j: out[j]["end"] - out[j]["start"])
        if out[i]["end"] - out[i]["start"] >= floor:
            break
        del out[i]
        if 0 < i < len(out) and out[i - 1]["polarity"] == out[i]["polarity"]:
            out[i - 1]["end"] = out[i]["end"]
            out[i - 1]["rows"] += out[i]["rows"]
            del out[i]
    for index, s in enumerate(out):
        weights: dict[str, float] = defaultdict(float)
        total = shares = 0.0
        for r in s["rows"]:
            if r["polarity"] != s["polarity"]:
                continue
            w = float(r["end"]) - float(r["start"]) + step
            total += w
            shares += w * float(r["share"])
            for key in str(r["loops"]).split("+"):
                weights[key] += w
        s.update(
            index=index,
            weights=dict(weights),
            top=sorted(weights, key=lambda k: -weights[k])[:2],
            share=shares / total if total else 0.0,
        )
        del s["rows"]
    return out


# -- across an ensemble ---------------------------------------------------------------------
#: The quantiles of the relative scores `loop_dominance_ensemble` reports.
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


def loop_dominance_ensemble(
    model_or_scenario: Any,
    design_or_sweep: Any,
    loops: Sequence[str | Sequence[str]] | None = None,
    *,
    times: Sequence[float] | None = None,
    quantiles: Sequence[float] = QUANTILES,
    threshold: float = DOMINANCE,
    keep_runs: bool = False,
    index: str | Path | Mapping | bool | None = None,
    method: str = "euler",
    **simulate_options: Any,
):
    """Loop dominance across an ensemble of runs: for each parameter set, the relative loop
    scores of `loop_dominance` (one run each, Euler at TIME STEP by default), summarised per
    loop and time as their distribution over the runs and the share of runs in which each
    loop dominates.

    Parameters
    ----------
    model_or_scenario : Model, path or scenario
        As `flywheel_sd.sweep` takes it; a scenario's parameters are the base of every run.
    design_or_sweep : Design, DataFrame, mapping or xarray.Dataset
        A design (`flywheel_sd.designs`, or a table of runs), whose runs are made here; or
        the result of `flywheel_sd.sweep` (its design's parameter values per run are taken,
        its failed runs left out; it must come from the same model and scenario).
    loops : sequence, optional
        As `loop_dominance` takes them. Default: the loops of the model's loop index
        (``<model>.loops.toml``), the same loops in every run, so they compare across runs
        (relative scores are then shares among these loops). A model without an index: the
        loops found by exhaustive enumeration (which must find the same loops in every run).
    times : sequence of float, optional
        The times to report, each taken at the nearest saved time (default: every TIME STEP).
    quantiles : sequence of float
        The quantiles of the relative scores over the runs (default 5, 25, 50, 75, 95 %).
    threshold : float
        The share of the change a loop must explain to count in ``majority_share``.
    keep_runs : bool
        Keep every run's relative scores (``relative_score``, dims run, loop, time).
    index, method, simulate_options
        As `loop_dominance` takes them (``time_step``, ``final_time``, ``rtol``, ...).

    Returns
    -------
    xarray.Dataset
        ``relative_score_quantile`` (quantile, loop, time); ``dominant_share`` (loop, time):
        the share of runs in which the loop has the largest |relative score| of its
        partition (ties: the first loop; times where no loop of the partition is active
        count for none); ``majority_share`` (loop, time): the share of runs in which it alone
        explains at least `threshold` of the change (|relative score| >= threshold);
        ``reinforcing_share`` (loop, time): the share of runs in which its score is
        positive. Per loop the coordinates of `loop_dominance` (``loop_variables``,
        ``loop_name``, ``declared``, ``partition``; ``summary`` over every run); attrs
        ``n_runs``, ``n_failed``, ``failed`` (JSON: run -> reason), ``parameters`` (JSON),
        ``seconds``, ``seconds_per_run``, ``method``, ``model``, ``note``.

    Raises
    ------
    FlywheelError
        Every bad input, in one line: an unknown parameter, loop or variable name (with
        close matches), times outside the run, a Dataset that is not a sweep of this model
        and scenario, an empty design, or every run failing.
    """

    import pandas as pd
    import xarray as xr

    from . import designs as designs_mod
    from .errors import FlywheelError, ParameterError
    from .loop_index import loop_index_path, read_loop_index
    from .sweeps.sweep import _resolve_target

    started = time.perf_counter()
    model, base, breaks, scenario = _resolve_target(model_or_scenario, "error")
    if not 0 < threshold <= 1:
        raise ParameterError(f"threshold must lie in (0, 1], not {threshold!r}")
    qs = [float(q) for q in quantiles]
    if not qs or not all(0 <= q <= 1 for q in qs):
        raise ParameterError(f"quantiles must lie in [0, 1], not {list(quantiles)!r}")
    table = _ensemble_table(model, design_or_sweep, scenario, designs_mod, pd)
    if loops is None and index is not False:
        where = loop_index_path(model) if index in (None, True) else index
        if isinstance(where, Mapping) or Path(str(where)).is_file():
            loops = list(read_loop_index(where))  # type: ignore[arg-type]
        elif index not in (None, True):
            raise ModelFileError(f"{where}: no such loop index")
    base = {k: v for k, v in base.items() if model.real_name(k) not in table.columns}
    settings = model.time_settings()
    step = simulate_options.pop("time_step", None) or settings["time_step"]
    options = dict(simulate_options)
    options["breakpoints"] = [*breaks, *options.get("breakpoints", ())]

    first: Any = None
    scores: list[np.ndarray | None] = []
    signs: list[np.ndarray | None] = []
    failed: dict[int, str] = {}
    for i, row in enumerate(table.to_dict(orient="records")):
        try:
            ds = loop_dominance(
                model,
                loops,
                params={**base, **row},
                index=index,
                method=method,
                time_step=step,
                **options,
            )
        except KeyError as err:  # an unknown loop or variable: the same for every run
            raise ParameterError(" ".join(str(err.args[0] if err.args else err).split())) from None
        except FlywheelError as err:
            if isinstance(err, ParameterError | ModelFileError):
                raise
            failed[i] = " ".join(str(err).split())
            scores.append(None)
            signs.append(None)
            continue
        except ValueError as err:
            raise ParameterError(" ".join(str(err).split())) from None
        if first is None:
            first = ds
            if ds.sizes["loop"] == 0:
                break
        elif list(ds["loop_variables"].values) != list(first["loop_variables"].values):
            raise ParameterError(
                f"run {i} finds other loops than run 0 (discovery {ds.attrs['discovery']}): "
                "pass `loops` (or give the model a loop index) to compare the same loops"
            )
        scores.append(ds["relative_score"].to_numpy())
        signs.append(ds["polarity"].to_numpy())
    if first is None:
        reason = next(iter(failed.values()), "")
        raise ParameterError(f"every run of the ensemble failed (run 0: {reason})")
    all_times = first["time"].to_numpy()
    if times is None:
        pick = np.arange(len(all_times))
    else:
        wanted = np.atleast_1d(np.asarray(times, float))
        outside = wanted[(wanted < all_times[0] - 1e-9) | (wanted > all_times[-1] + 1e-9)]
        if len(outside) or not len(wanted):
            raise ParameterError(
                f"times must lie within the run, {all_times[0]:g} to {all_times[-1]:g}"
                + (f", not {outside[0]:g}" if len(outside) else "")
            )
        pick = np.abs(all_times[None, :] - wanted[:, None]).argmin(axis=1)
    ok = [i for i, s in enumerate(scores) if s is not None]
    n_loops = first.sizes["loop"]
    rel = np.array([scores[i][:, pick] for i in ok]).reshape(len(ok), n_loops, len(pick))  # type: ignore[index]
    pol = np.array([signs[i][:, pick] for i in ok]).reshape(rel.shape)  # type: ignore[index]
    partitions = first["partition"].to_numpy()
    dominant = np.zeros(rel.shape, bool)
    mags = np.abs(rel)
    for p in np.unique(partitions):
        members = np.flatnonzero(partitions == p)
        part = mags[:, members, :]
        top = part.argmax(axis=1)  # (run, time)
        active = part.max(axis=1) > 0
        for j, m in enumerate(members):
            dominant[:, m, :] = (top == j) & active
    quantile = (
        np.quantile(rel, qs, axis=0) if len(ok) else np.full((len(qs), n_loops, len(pick)), np.nan)
    )

    def summary(p: np.ndarray) -> str:
        pos, neg = bool((p > 0).any()), bool((p < 0).any())
        if pos and neg:
            return "state-dependent"
        return "reinforcing" if pos else "balancing" if neg else "inactive"

    keep = ("loop_variables", "loop_name", "declared", "partition", "n_cycles")
    out = xr.Dataset(
        {
            "relative_score_quantile": (("quantile", "loop", "time"), quantile),
            "dominant_share": (("loop", "time"), dominant.mean(axis=0)),
            "majority_share": (("loop", "time"), (mags >= threshold - 1e-12).mean(axis=0)),
            "reinforcing_share": (("loop", "time"), (pol > 0).mean(axis=0)),
        },
        coords={
            "quantile": qs,
            "loop": first["loop"].to_numpy(),
            "time": all_times[pick],
            **{c: ("loop", first[c].to_numpy()) for c in keep},
            "summary": ("loop", [summary(pol[:, k, :]) for k in range(n_loops)]),
        },
    )
    if keep_runs:
        out["relative_score"] = (("run", "loop", "time"), rel)
        coords: dict[str, Any] = {"run": np.asarray(ok)}
        coords.update({str(c): ("run", table[c].to_numpy()[ok]) for c in table.columns})
        out = out.assign_coords(coords)
    seconds = time.perf_counter() - started
    note = first.attrs.get("note", "")
    if failed:
        note = (note + "; " if note else "") + f"{len(failed)} runs failed and are left out"
    out.attrs.update(
        n_runs=len(ok),
        n_failed=len(failed),
        failed=json.dumps({str(k): v for k, v in failed.items()}),
        parameters=json.dumps(list(map(str, table.columns))),
        scenario=scenario or "",
        model=Path(model.path).name,
        method=method,
        dt=float(first.attrs["dt"]),
        discovery=first.attrs["discovery"],
        threshold=threshold,
        seconds=seconds,
        seconds_per_run=seconds / max(len(table), 1),
        note=note,
    )
    return out


def _ensemble_table(model, source, scenario, designs_mod, pd):
    """The parameter values of each run (canonical names): a design's table, or a sweep
    result's design parameters (its ok runs)."""

    import xarray as xr

    from .errors import ParameterError

    if isinstance(source, xr.Dataset):
        try:
            info = json.loads(source.attrs["design"])
            names = list(info["names"])
        except (KeyError, TypeError, ValueError):
            raise ParameterError(
                "this Dataset is not a flywheel_sd sweep result (no 'design' in its attrs)"
            ) from None
        if source.attrs.get("model_sha256") not in (None, "", model.sha256):
            raise ParameterError(
                f"the sweep ran another model ({Path(str(source.attrs.get('model'))).name}), "
                f"not {Path(model.path).name}"
            )
        ran = str(source.attrs.get("scenario") or "")
        if ran != (scenario or ""):
            raise ParameterError(
                f"the sweep ran scenario {ran or '(none)'!r}: pass "
                f"{ran or 'the model'} as model_or_scenario, not {scenario or 'the model'!r}"
            )
        missing = [n for n in names if n not in source.variables]  # coords, or data vars
        if missing or "run" not in source.dims:
            raise ParameterError(f"the sweep result lacks its parameter {missing[:1] or 'run'}")
        ok = np.ones(source.sizes["run"], bool)
        if "status" in source:
            ok = source["status"].to_numpy() == 1
        frame = pd.DataFrame({n: source[n].to_numpy()[ok] for n in names})
        if frame.empty:
            raise ParameterError("the sweep has no successful run")
        design = designs_mod.from_table(frame)
    elif isinstance(source, designs_mod.Design):
        design = source
    elif isinstance(source, pd.DataFrame | Mapping):
        design = designs_mod.from_table(source)
    else:
        raise ParameterError(
            "expected a design (flywheel_sd.designs), a table of runs or a sweep result, "
            f"not {type(source).__name__}"
        )
    return design.bind(model).table.reset_index(drop=True)


# -- the public entry point -----------------------------------------------------------------
def loops(
    model_or_run: Any,
    loops: Any = None,
    *,
    ensemble: Any = None,
    **options: Any,
):
    """Loops That Matter: which feedback loops drive a run, or an ensemble of runs
    (`flywheel_sd.loops`, issue 14).

    One function for both: a single run goes to `loop_dominance`, an ensemble (a sweep
    result or a design) to `loop_dominance_ensemble`; their documentation has the details.

    Parameters
    ----------
    model_or_run : Model, path, scenario, RunState or xarray.Dataset
        One run: a model or its file (its own parameters, or ``run=``/``params=``), a
        scenario (by name or a `Scenario`: its parameters and switch times), or a
        `flywheel_sd.engine.links.RunState` recorded already (with ``equations=``).
        An ensemble: the result of `flywheel_sd.sweep` (its model and scenario are read
        from it), or, with `ensemble`, the model or scenario the runs vary.
    loops : sequence, optional
        The loops to score (loop index ids and/or chains of variable names); default as
        `loop_dominance` and `loop_dominance_ensemble` choose. A design, table of runs or
        sweep result here is taken as `ensemble` (``loops(model, design)``): they cannot
        be a list of loops.
    ensemble : Design, DataFrame, mapping or xarray.Dataset, optional
        The runs of an ensemble: a design (`flywheel_sd.designs`, or a table of runs) or a
        sweep result of `model_or_run`.
    options
        Passed on: ``run``, ``params``, ``index``, ``method``, ``timing``, ... for one run;
        ``times``, ``quantiles``, ``threshold``, ``keep_runs``, ... for an ensemble.

    Returns
    -------
    xarray.Dataset
        One run: link scores, loop scores, relative loop scores and polarity over time, and
        each loop's variables and polarity (`loop_dominance`). An ensemble: per loop and
        time, the quantiles of the relative scores over the runs and the share of runs in
        which each loop dominates (`loop_dominance_ensemble`). `dominance_periods` turns
        a single run's result into the spans each loop set dominates (per partition, or
        with ``variable=`` for one stock or variable).

    Raises
    ------
    FlywheelError
        A design without its model, a Dataset that is not a sweep result, and whatever
        the two functions raise (unknown loop or variable names with close matches, ...).
    """
    import xarray as xr

    from .designs import Design
    from .engine import links as lk
    from .engine.model import Model
    from .errors import ParameterError

    if ensemble is None and (isinstance(loops, Design | xr.Dataset | Mapping) or _is_table(loops)):
        ensemble, loops = loops, None
    if isinstance(model_or_run, xr.Dataset):
        if ensemble is not None:
            raise ParameterError("pass a sweep result alone, or a model and its ensemble")
        if "design" not in model_or_run.attrs or not model_or_run.attrs.get("model"):
            raise ParameterError(
                "this Dataset is not a flywheel_sd sweep result (no 'design' or 'model' in "
                "its attrs)"
            )
        target = model_or_run.attrs.get("scenario") or model_or_run.attrs["model"]
        return loop_dominance_ensemble(target, model_or_run, loops, **options)
    if isinstance(model_or_run, Design) or _is_table(model_or_run):
        raise ParameterError(
            "a design needs the model it varies: loops(model_or_scenario, design)"
        )
    if ensemble is not None:
        return loop_dominance_ensemble(model_or_run, ensemble, loops, **options)
    if isinstance(model_or_run, (Model, lk.RunState)) or _is_model_file(model_or_run):
        return loop_dominance(model_or_run, loops, **options)
    from . import scenarios

    scenario = scenarios.get(model_or_run)  # a name, a .toml file or a Scenario
    if options.get("run") is not None:
        raise ParameterError(
            f"pass either a scenario ({scenario.name}) or run=, not both "
            "(params= adds parameters to the scenario's)"
        )
    options.pop("run", None)
    return loop_dominance(scenario.load_model(), loops, run=scenario, **options)


def _is_table(value: Any) -> bool:
    import pandas as pd

    return isinstance(value, pd.DataFrame)


def _is_model_file(value: Any) -> bool:
    import os

    if not isinstance(value, (str, os.PathLike)):
        return False
    path = Path(value)
    suffix = path.suffix.lower()
    return suffix in (".mdl", ".py", ".xmile", ".stmx") or (path.is_file() and suffix != ".toml")
