"""Regenerate the parts of docs/model.md that come from the model file.

docs/model.md is prose written by hand, with marked sections that this script rewrites from
``models/platform_flywheel.mdl`` (through PySD's ``model.doc``) and
``models/platform_flywheel.loops.toml``, so they cannot drift from the model:

* ``size``      - how many stocks, lookups and constants the model has;
* ``stocks``    - each stock with its units, inflows, outflows and meaning;
* ``loops``     - R1-R5 and B1-B6, each as its chain of variables (and, for a
  "state-dependent" loop, its ``polarity_note``);
* ``levers``    - the policy levers with their ranges and defaults;
* ``variables`` - every variable, by sector: name, units, range, description.

A marked section is the text between ``<!-- BEGIN GENERATED: name -->`` and
``<!-- END GENERATED: name -->``. It also redraws the diagram, docs/img/platform_flywheel.png,
with `flywheel_sd.diagram.draw_diagram`.

Usage::

    python scripts/make_model_docs.py           # rewrite docs/model.md and the picture
    python scripts/make_model_docs.py --check   # exit 1 if docs/model.md is out of date
"""

from __future__ import annotations

import argparse
import math
import re
import sys
import tomllib
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
MODEL = REPO / "models" / "platform_flywheel.mdl"
LOOPS = MODEL.with_name(MODEL.stem + ".loops.toml")
DOC = REPO / "docs" / "model.md"
PICTURE = REPO / "docs" / "img" / "platform_flywheel.png"

#: Policy levers and scenario inputs, in the order the docs list them.
LEVERS = [
    ("Seller entry", ["Seller Deposit", "Deposit Start Time", "Deposit End Time",
                      "Qualification Strictness", "Qualification Strictness Late",
                      "Qualification Change Time", "Qualification Response to Trust"]),
    ("Commercial", ["Take Rate", "Price Level", "Ranking Weight on Quality",
                    "Enforcement Intensity"]),
    ("Advertising and money", ["Ad Budget", "Ad Stop Time", "Investor Funding",
                               "Funding Round Time", "Funding Round Duration",
                               "Initial Platform Cash", "Credit Line"]),
    ("Membership and capability", ["Membership Start Time", "Membership Fee",
                                   "Membership Benefit", "Logistics Investment",
                                   "Innovation Investment", "Marketplace Switch Time"]),
    ("Environment", ["Competitor Entry Time", "Competitor Strength", "Supply Cost Shock Time",
                     "Supply Cost Shock Size", "Addressable Market"]),
    ("Launch conditions", ["Initial Active Buyers", "Initial Active Sellers",
                           "Initial Buyer Trust"]),
]


def _load_sketch_module():
    sys.path.insert(0, str(HERE))
    try:
        import make_sketch
    finally:
        sys.path.pop(0)
    return make_sketch


def _fmt(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    value = float(value)
    if value == int(value) and abs(value) < 1e6:
        return f"{int(value):,}"
    return f"{value:g}"


def _range(limits) -> str:
    if not isinstance(limits, tuple) or len(limits) < 2:
        return ""
    lo, hi = _fmt(limits[0]), _fmt(limits[1])
    return f"[{lo}, {hi}]" if (lo or hi) else ""


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _default(model, name: str) -> str:
    value = model.default_value(name)
    values = getattr(value, "values", None)
    if values is not None and getattr(values, "ndim", 0) > 0:
        coords = [str(c) for c in value.coords[value.dims[0]].values]
        return ", ".join(f"{c}: {_fmt(v)}" for c, v in zip(coords, values.ravel()))
    return _fmt(value)


def render(model) -> dict[str, str]:
    """The generated sections, by marker name."""
    doc = model.doc
    doc = doc[doc["Type"].notna() & (doc["Real Name"] != "Time")].set_index("Real Name")
    make_sketch = _load_sketch_module()
    equations, _ = make_sketch.split_model(MODEL.read_text(encoding="utf-8"))
    elements = make_sketch.parse_equations(equations)
    sections = {}

    stock_names = [n for n, el in elements.items() if el.is_stock]
    subscripted = [n for n in stock_names if isinstance(doc.loc[n, "Subscripts"], list)]
    n_smooth = int(((doc["Type"] == "Stateful") & (doc["Subtype"] != "Integ")).sum())
    n_lookups = int(doc["Subtype"].str.lower().eq("with lookup").sum())
    n_constants = int((doc["Type"] == "Constant").sum())
    sections["size"] = (
        f"- **Size.** {len(stock_names)} stocks ({len(subscripted)} of them subscripted by seller quality "
        f"High/Low), {n_smooth} smoothing stocks, {n_lookups} lookups, {n_constants} constants "
        f"and {len(doc)} variables in all."
    )

    rows = ["| Stock | Sector | Units | Inflows | Outflows | Meaning |",
            "|---|---|---|---|---|---|"]
    for name, el in elements.items():
        if not el.is_stock:
            continue
        subs = doc.loc[name, "Subscripts"]
        shown = f"{name}[{', '.join(subs)}]" if isinstance(subs, list) else name
        rows.append(
            f"| **{shown}** | {el.group} | {doc.loc[name, 'Units']} | "
            f"{', '.join(el.inflows) or '-'} | {', '.join(el.outflows) or '-'} | "
            f"{_cell(doc.loc[name, 'Comment']).removeprefix('Stock. ').removeprefix('Stock, ')} |"
        )
    smooths = [n for n in doc.index if doc.loc[n, "Type"] == "Stateful"
               and doc.loc[n, "Subtype"] != "Integ"]
    rows.append("")
    rows.append("Smoothing stocks (first-order SMOOTH): " + ", ".join(sorted(smooths)) + ".")
    sections["stocks"] = "\n".join(rows)

    from flywheel_sd.loop_index import read_loop_index

    loops = tomllib.loads(LOOPS.read_text(encoding="utf-8"))
    read_loop_index(loops)  # the format: polarities, a note for each state-dependent loop
    out = []
    for key, loop in loops.items():
        chain = " → ".join(loop["chain"] + [loop["chain"][0]])
        out.append(f"**{key} {loop['name']}** ({loop['polarity']}). {_cell(loop['description'])}")
        if loop.get("polarity_note"):  # issue 11: when a state-dependent loop flips
            out[-1] += f" *Polarity:* {_cell(loop['polarity_note'])}"
        out.append("")
        out.append(f"> {chain}")
        for extra in loop.get("also", []):
            out.append(">")
            out.append(f"> and: {' → '.join(extra + [extra[0]])}")
        out.append("")
    sections["loops"] = "\n".join(out).rstrip()

    out = []
    for group, names in LEVERS:
        out.append(f"**{group}**")
        out.append("")
        out.append("| Lever | Units | Range | Default | Meaning |")
        out.append("|---|---|---|---|---|")
        for name in names:
            out.append(f"| {name} | {doc.loc[name, 'Units']} | "
                       f"{_range(doc.loc[name, 'Limits'])} | {_default(model, name)} | "
                       f"{_cell(doc.loc[name, 'Comment'])} |")
        out.append("")
    sections["levers"] = "\n".join(out).rstrip()

    out = []
    groups: dict[str, list[str]] = {}
    for name, el in elements.items():
        groups.setdefault(el.group or "Other", []).append(name)
    for group, names in groups.items():
        out.append(f"#### {group}")
        out.append("")
        out.append("| Variable | Units | Range | Description |")
        out.append("|---|---|---|---|")
        for name in sorted(names, key=str.lower):
            if name not in doc.index:
                continue
            subs = doc.loc[name, "Subscripts"]
            shown = f"{name}[{', '.join(subs)}]" if isinstance(subs, list) else name
            out.append(f"| {shown} | {doc.loc[name, 'Units']} | "
                       f"{_range(doc.loc[name, 'Limits'])} | {_cell(doc.loc[name, 'Comment'])} |")
        out.append("")
    sections["variables"] = "\n".join(out).rstrip()
    return sections


def apply(text: str, sections: dict[str, str]) -> str:
    """`text` with each marked section replaced."""
    for name, body in sections.items():
        pattern = re.compile(
            rf"(<!-- BEGIN GENERATED: {name} -->\n)(?:.*?\n)?(<!-- END GENERATED: {name} -->)",
            re.DOTALL,
        )
        if not pattern.search(text):
            raise SystemExit(f"{DOC}: no marked section {name!r}")
        text = pattern.sub(lambda m, body=body: m.group(1) + body + "\n" + m.group(2), text)
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="exit 1 if docs/model.md is out of date; write nothing")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO))
    import flywheel_sd

    model = flywheel_sd.load(MODEL)
    text = DOC.read_text(encoding="utf-8")
    new = apply(text, render(model))
    if args.check:
        if new != text:
            print(f"{DOC}: out of date; run python scripts/make_model_docs.py")
            return 1
        print(f"{DOC}: up to date")
        return 0
    DOC.write_text(new, encoding="utf-8")
    from flywheel_sd.diagram import draw_diagram

    draw_diagram(MODEL, PICTURE, dpi=100)
    print(f"wrote {DOC.relative_to(REPO)} and {PICTURE.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
