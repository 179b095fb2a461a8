"""Write the sketch (diagram) section of a Vensim model from its equations.

The equations of ``models/platform_flywheel.mdl`` are written by hand. The sketch, the part
Vensim draws as a stock-and-flow diagram, is generated here so that it always matches them:

* one view per sector: the sector is the Vensim group (``.Buyers``, ``.Sellers`` ...) that
  holds the variable's equation; the ``.Control`` group gets no view;
* stocks and flows sit where `SPINES` puts them; every flow gets a valve and pipes to its
  stocks, or to a cloud where the stock is outside the model;
* every other variable of the sector is placed greedily on a grid, next to the variables
  it is connected to;
* a variable used in a sector but defined in another appears there as a shadow variable
  (Vensim's grey ``<name>``);
* one influence arrow for each dependency inside a view.

Usage::

    python scripts/make_sketch.py [models/platform_flywheel.mdl]

It rewrites the file in place (everything from the first sketch marker on) and prints a
one-line summary. Run it after editing the equations, then commit both.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT = REPO / "models" / "platform_flywheel.mdl"
SKETCH_MARK = "\\\\\\---/// Sketch information - do not modify anything except names"
SKETCH_HEAD = "V300  Do not put anything below this section - it will be ignored"
VIEW_STYLE = (
    "$192-192-192,0,Times New Roman|12||0-0-0|0-0-0|0-0-255|-1--1--1|-1--1--1|96,96,100,0"
)
SKETCH_END = "///---\\\\\\\n:L<%^E!@\n9:Current\n15:0,0,0,0,0,0\n19:100,0\n27:0,\n34:0,\n" \
    "5:Active Buyers\n35:Date\n36:YYYY-MM-DD\n37:2000\n38:1\n39:1\n40:0\n41:0\n42:1\n24:0\n" \
    "25:120\n26:120\n"

CONTROL_GROUP = "Control"
COL = 190  # grid cell width, px
ROW = 66  # grid cell height, px
X0, Y0 = 120, 60

# Grid positions (column, row) of stocks, flows and clouds in each view. Clouds are
# written as ("cloud", column, row) under the flow's name with a role "from" or "to".
SPINES: dict[str, dict[str, tuple[float, float]]] = {
    "Buyers": {
        "Potential Buyers": (1, 5), "Buyer Adoption": (2.5, 5), "Active Buyers": (4, 5),
        "New Online Buyers": (1, 3),
        "Membership Joining": (5.5, 5), "Members": (7, 5),
        "Buyer Churn": (2.5, 7), "Member Lapse": (5.5, 7), "Member Churn": (4, 9),
    },
    "Sellers": {
        "Potential Sellers": (2, 7), "Seller Entry by Quality": (3.5, 7),
        "New Online Sellers": (0.5, 7),
        "Active Sellers": (5, 7), "Seller Exit by Quality": (3.5, 9),
        "Seller Confidence": (2, 12), "Confidence Recovery": (0.5, 12),
        "Confidence Loss": (3.5, 12),
    },
    "Traffic and Conversion": {
        "Paid Traffic": (3, 3), "Paid Traffic Adjustment": (1.5, 3),
        "Referral Traffic": (3, 6), "Referral Traffic Adjustment": (1.5, 6),
        "Returning Buyer Traffic": (3, 9), "Returning Traffic Adjustment": (1.5, 9),
    },
    "Trust": {
        "Buyer Trust": (3, 4), "Trust Building": (1.5, 4), "Trust Erosion": (4.5, 4),
    },
    "Money": {
        "Platform Cash": (4, 6),
        "Commission Revenue": (2.5, 3), "Membership Fee Revenue": (2.5, 4.5),
        "Investor Funding Inflow": (2.5, 6), "Follow on Funding": (2.5, 7.5),
        "First Party Gross Profit": (2.5, 1.5),
        "Ad Spend": (5.5, 1.5), "Logistics Spending": (5.5, 3), "Innovation Spending": (5.5, 4.5),
        "Operating Cost": (5.5, 6), "Membership Benefit Cost": (5.5, 7.5),
        "Recruitment Spend": (5.5, 9), "Deposit Forfeits": (4, 9.5),
        "Seller Deposits Held": (4, 12), "Deposit Collection": (2.5, 12),
        "Deposit Refunds": (5.5, 12),
        "Investor Confidence": (2, 14), "Investor Confidence Change": (0.8, 14),
        "Platform Exit": (5, 14), "Exit Rate": (3.8, 14),
        "Exit Value": (8, 14), "Value Realised on Exit": (6.8, 14),
    },
    "Capability and Competition": {
        "Platform Capability": (3, 2), "Capability Investment Rate": (1.5, 2),
        "Capability Obsolescence": (4.5, 2),
        "Logistics Capability": (3, 5), "Logistics Build Rate": (1.5, 5),
        "Logistics Depreciation": (4.5, 5),
        "Competitor Capability": (3, 8), "Competitor Investment Rate": (1.5, 8),
        "Competitor Obsolescence": (4.5, 8),
        "Rival Sellers": (3, 11), "Rival Seller Change": (1.5, 11),
        "Rival Buyers": (3, 13.5), "Rival Buyer Change": (1.5, 13.5),
    },
}
GRID_COLS = range(9)
GRID_ROWS = range(15)


@dataclass
class Element:
    name: str
    group: str
    equation: str
    deps: list[str] = field(default_factory=list)
    inflows: list[str] = field(default_factory=list)
    outflows: list[str] = field(default_factory=list)

    @property
    def is_stock(self) -> bool:
        return bool(re.match(r"\s*INTEG\s*\(", self.equation))


def split_model(text: str) -> tuple[str, str]:
    """Return (equations, old sketch) of a Vensim file."""
    i = text.find(SKETCH_MARK)
    return (text, "") if i < 0 else (text[:i], text[i:])


def parse_equations(equations: str) -> dict[str, Element]:
    """Elements by name, with their group, equation and in-model dependencies."""
    elements: dict[str, Element] = {}
    group = ""
    body = equations.split("\n", 1)[1] if equations.startswith("{UTF-8}") else equations
    for block in body.split("\n\t|"):
        block = block.strip()
        if not block:
            continue
        m = re.match(r"\*+\s*\n\s*\.(.+?)\s*\n", block)
        if m:
            group = m.group(1).strip()
            continue
        m = re.match(r"([^=(~:\n\[]+?)\s*(\[[^\]]*\])?\s*(:|=|\()", block)
        if not m or m.group(3) == ":":
            continue  # subscript range definitions
        name = m.group(1).strip()
        eq = block[m.end(0) - (1 if m.group(3) == "(" else 0):].split("~")[0].strip()
        if name in elements:
            continue
        elements[name] = Element(name, group, eq)
    names = sorted(elements, key=len, reverse=True)
    pattern = re.compile(
        r"(?<![\w])(" + "|".join(re.escape(n) for n in names) + r")(?![\w])"
    )
    for el in elements.values():
        eq = re.sub(r"\(\[\([^\]]*\]\s*(,\s*\([^)]*\))*\)", "", el.equation)  # lookup tables
        found = []
        for dep in pattern.findall(eq):
            if dep != el.name and dep not in found:
                found.append(dep)
        el.deps = found
        if el.is_stock:
            rate = _integ_rate(el.equation)
            for sign, term in re.findall(r"([+-]?)\s*([^+-]+)", rate):
                flow = re.sub(r"\[.*?\]", "", term).strip()
                if flow in elements:
                    (el.outflows if sign == "-" else el.inflows).append(flow)
    return elements


def _integ_rate(equation: str) -> str:
    """The rate (first argument) of an INTEG call."""
    inner = equation[equation.index("(") + 1:]
    depth = 0
    for i, ch in enumerate(inner):
        if ch in "([":
            depth += 1
        elif ch in ")]":
            depth -= 1
        elif ch == "," and depth == 0:
            return inner[:i].replace("\n", " ").replace("\t", " ")
    raise ValueError(f"not an INTEG call: {equation!r}")


@dataclass
class Item:
    kind: str  # stock, aux, flow, valve, cloud, shadow
    name: str
    x: float
    y: float
    ident: int = 0


def _px(col: float, row: float) -> tuple[int, int]:
    return int(X0 + col * COL), int(Y0 + row * ROW)


def layout_view(view: str, elements: dict[str, Element]) -> tuple[list[Item], list[tuple]]:
    """Items (with positions) and connections (pipes and arrows) of one view."""
    members = [n for n, el in elements.items() if el.group == view]
    spine = SPINES.get(view, {})
    missing = [n for n in spine if n not in elements or elements[n].group != view]
    if missing:
        raise ValueError(f"view {view!r}: spine names not in the sector: {missing}")
    stocks = {n: elements[n] for n in members if elements[n].is_stock}
    flow_ends: dict[str, dict[str, str | None]] = {}
    for stock in stocks.values():
        for f in stock.inflows:
            flow_ends.setdefault(f, {"from": None, "to": None})["to"] = stock.name
        for f in stock.outflows:
            flow_ends.setdefault(f, {"from": None, "to": None})["from"] = stock.name

    occupied: dict[tuple[int, int], str] = {}
    pos: dict[str, tuple[float, float]] = {}
    items: list[Item] = []
    by_name: dict[str, Item] = {}

    def take(cell):
        occupied[(round(cell[0] * 2), round(cell[1] * 2))] = "x"

    def is_free(cell):
        return (round(cell[0] * 2), round(cell[1] * 2)) not in occupied

    for name, cell in spine.items():
        pos[name] = cell
        take(cell)
        if name in flow_ends:
            take((cell[0], cell[1] + 0.5))  # the flow's label under the valve
    # a flow's missing end is a cloud, beyond the valve away from the stock
    clouds: list[tuple[str, str, tuple[float, float]]] = []
    for flow, ends in flow_ends.items():
        if flow not in pos:
            raise ValueError(f"view {view!r}: flow {flow!r} has no place in SPINES")
        for role in ("from", "to"):
            if ends[role] is None:
                other = ends["to" if role == "from" else "from"]
                fx, fy = pos[flow]
                sx, sy = pos[other]
                dx, dy = fx - sx, fy - sy
                if abs(dx) >= abs(dy):
                    cell = (fx + (1 if dx >= 0 else -1), fy)
                else:
                    cell = (fx, fy + (1.5 if dy >= 0 else -1.5))
                clouds.append((flow, role, cell))
                take(cell)

    # keep the pipes clear: no variable on a cell a pipe crosses
    for flow, ends in flow_ends.items():
        fx, fy = pos[flow]
        for role in ("from", "to"):
            if ends[role] is not None:
                ex, ey = pos[ends[role]]
            else:
                ex, ey = next(c for f, r, c in clouds if f == flow and r == role)
            steps = int(max(abs(ex - fx), abs(ey - fy)) * 2) + 1
            for k in range(steps + 1):
                take((fx + (ex - fx) * k / steps, fy + (ey - fy) * k / steps))

    # shadows: variables from other sectors used here
    shadows: list[str] = []
    for n in members:
        for d in elements[n].deps:
            if d in elements and elements[d].group not in (view, CONTROL_GROUP) \
                    and d not in shadows:
                shadows.append(d)
    to_place = [n for n in members if n not in pos] + shadows
    neighbours: dict[str, set[str]] = {n: set() for n in members + shadows}
    for n in members:
        for d in elements[n].deps:
            if d in neighbours:
                neighbours[n].add(d)
                neighbours[d].add(n)
    while to_place:
        def score(n):
            return (-sum(1 for m in neighbours[n] if m in pos), n in shadows, n)
        to_place.sort(key=score)
        n = to_place.pop(0)
        placed = [pos[m] for m in neighbours[n] if m in pos]
        if placed:
            tx = sum(p[0] for p in placed) / len(placed)
            ty = sum(p[1] for p in placed) / len(placed)
        else:
            tx, ty = 4, 0
        best = min(
            ((c, r) for c in GRID_COLS for r in GRID_ROWS if is_free((c, r))),
            key=lambda cell: ((cell[0] - tx) ** 2 + (1.2 * (cell[1] - ty)) ** 2,
                              cell[1], cell[0]),
        )
        pos[n] = best
        take(best)

    ident = 0

    def add(kind, name, cell):
        nonlocal ident
        ident += 1
        x, y = _px(*cell)
        item = Item(kind, name, x, y, ident)
        items.append(item)
        return item

    for n in members:
        el = elements[n]
        if el.is_stock:
            by_name[n] = add("stock", n, pos[n])
    cloud_items = {}
    for flow, role, cell in clouds:
        cloud_items[(flow, role)] = add("cloud", "", cell)
    valves = {}
    for flow in flow_ends:
        valves[flow] = add("valve", "", pos[flow])
        by_name[flow] = add("flow", flow, (pos[flow][0], pos[flow][1] + 0.5))
    for n in members:
        if n not in by_name:
            by_name[n] = add("aux", n, pos[n])
    for n in shadows:
        by_name[("shadow", n)] = add("shadow", n, pos[n])

    links: list[tuple] = []
    for flow, ends in flow_ends.items():
        valve = valves[flow]
        for role in ("to", "from"):
            end = by_name[ends[role]] if ends[role] else cloud_items[(flow, role)]
            links.append(("pipe", valve, end, role))
    for n in members:
        target = by_name[n]
        skip = set(elements[n].inflows + elements[n].outflows)
        for d in elements[n].deps:
            if d in skip:
                continue
            source = by_name.get(d) if elements.get(d) and elements[d].group == view \
                else by_name.get(("shadow", d))
            if source is not None:
                links.append(("arrow", source, target, None))
    return items, links


def sketch_view(view: str, elements: dict[str, Element]) -> str:
    items, links = layout_view(view, elements)
    lines = [SKETCH_MARK, SKETCH_HEAD, f"*{view}", VIEW_STYLE]
    ident = max(i.ident for i in items)
    for it in items:
        if it.kind == "stock":
            lines.append(f"10,{it.ident},{it.name},{it.x},{it.y},58,28,3,3,0,0,0,0,0,0")
        elif it.kind == "aux":
            lines.append(f"10,{it.ident},{it.name},{it.x},{it.y},60,22,8,3,0,0,-1,0,0,0")
        elif it.kind == "flow":
            lines.append(f"10,{it.ident},{it.name},{it.x},{it.y},60,22,40,3,0,0,-1,0,0,0")
        elif it.kind == "shadow":
            lines.append(
                f"10,{it.ident},{it.name},{it.x},{it.y},60,22,8,2,0,3,-1,0,0,0,"
                "128-128-128,0-0-0,|||128-128-128"
            )
        elif it.kind == "valve":
            lines.append(f"11,{it.ident},0,{it.x},{it.y},6,8,34,3,0,0,1,0,0,0")
        elif it.kind == "cloud":
            lines.append(f"12,{it.ident},48,{it.x},{it.y},10,8,0,3,0,0,-1,0,0,0")
    for kind, a, b, role in links:
        ident += 1
        if kind == "pipe":
            code = 4 if role == "to" else 100
            lines.append(
                f"1,{ident},{a.ident},{b.ident},{code},0,0,22,0,0,0,-1--1--1,,1|({b.x},{b.y})|"
            )
        else:
            mx, my = (a.x + b.x) // 2, (a.y + b.y) // 2
            lines.append(
                f"1,{ident},{a.ident},{b.ident},0,0,0,0,0,64,0,-1--1--1,,1|({mx},{my})|"
            )
    return "\n".join(lines)


def views_of(elements: dict[str, Element]) -> list[str]:
    seen: list[str] = []
    for el in elements.values():
        if el.group and el.group != CONTROL_GROUP and el.group not in seen:
            seen.append(el.group)
    return seen


def make_sketch(equations: str) -> str:
    elements = parse_equations(equations)
    views = views_of(elements)
    return "\n".join(sketch_view(v, elements) for v in views) + "\n" + SKETCH_END


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    path = Path(args[0]) if args else DEFAULT
    text = path.read_text(encoding="utf-8")
    equations, _ = split_model(text)
    new = equations.rstrip("\n") + "\n\n" + make_sketch(equations)
    path.write_text(new, encoding="utf-8")
    elements = parse_equations(equations)
    print(f"{path.name}: {len(views_of(elements))} views, "
          f"{sum(1 for e in elements.values() if e.group != CONTROL_GROUP)} variables")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
