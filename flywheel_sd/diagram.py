"""Draw a model's stock-and-flow diagram from its Vensim sketch, with matplotlib.

Vensim stores the diagram of each view in the sketch section at the end of the ``.mdl``:
one line per element (variables ``10``, valves ``11``, clouds ``12``) with its position,
and one line per connector (``1``) naming the two elements it joins. `draw_diagram` reads
those lines and draws one panel per view, so the picture comes from the model file itself
and cannot drift from it.

A model without a sketch (or an XMILE or translated ``.py`` file) is drawn as its
dependency graph instead: stocks and the variables linking them, from PySD's
``dependencies``.
"""

from __future__ import annotations

import math
import os
import re
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["SketchView", "draw_diagram", "read_sketch"]

_MARK = "\\\\\\---///"
_END = "///---\\\\\\"


@dataclass
class SketchElement:
    ident: int
    kind: str  # "stock", "aux", "flow", "shadow", "valve", "cloud"
    name: str
    x: float
    y: float
    w: float
    h: float


@dataclass
class SketchView:
    """One Vensim view: its elements by id and its connectors (kind, from id, to id)."""

    name: str
    elements: dict[int, SketchElement] = field(default_factory=dict)
    links: list[tuple[str, int, int]] = field(default_factory=list)

    def extent(self) -> tuple[float, float, float, float]:
        xs = [e.x for e in self.elements.values()]
        ys = [e.y for e in self.elements.values()]
        return min(xs), max(xs), min(ys), max(ys)


def read_sketch(model_path: str | os.PathLike) -> list[SketchView]:
    """The views of a Vensim ``.mdl`` file's sketch section (empty if it has none)."""
    text = Path(model_path).read_text(encoding="utf-8", errors="replace")
    start = text.find(_MARK)
    if start < 0:
        return []
    sketch = text[start:]
    end = sketch.find(_END)
    if end >= 0:
        sketch = sketch[:end]
    views: list[SketchView] = []
    for line in sketch.splitlines():
        line = line.strip()
        if line.startswith("*"):
            views.append(SketchView(line[1:].strip()))
            continue
        if not views or not re.match(r"^\d+,", line):
            continue
        view = views[-1]
        fields = line.split(",")
        code = fields[0]
        try:
            if code == "10":
                ident, name = int(fields[1]), fields[2]
                x, y, w, h = (float(v) for v in fields[3:7])
                shape, bits = int(fields[7]), int(fields[8])
                if bits % 2 == 0:
                    kind = "shadow"
                elif shape == 3:
                    kind = "stock"
                elif shape == 40:
                    kind = "flow"
                else:
                    kind = "aux"
                view.elements[ident] = SketchElement(ident, kind, name.strip('"'), x, y, w, h)
            elif code in ("11", "12"):
                ident = int(fields[1])
                x, y, w, h = (float(v) for v in fields[3:7])
                kind = "valve" if code == "11" else "cloud"
                view.elements[ident] = SketchElement(ident, kind, "", x, y, w, h)
            elif code == "1":
                source, target, style = int(fields[2]), int(fields[3]), int(fields[4])
                kind = "pipe" if style in (4, 100) and fields[7] == "22" else "arrow"
                view.links.append((kind if style != 100 else "pipe_tail", source, target))
        except (IndexError, ValueError):
            continue  # a line this reader does not understand is skipped, not fatal
    return [v for v in views if v.elements]


def draw_diagram(
    model_path: str | os.PathLike,
    out_path: str | os.PathLike,
    *,
    views: list[str] | None = None,
    ncols: int = 2,
    dpi: int = 150,
) -> Path:
    """Draw the model's stock-and-flow diagram, one panel per view, and save it.

    Parameters
    ----------
    model_path : path
        A Vensim ``.mdl`` file. Without a sketch section (or for other formats), the
        dependency graph of the model as PySD loads it is drawn instead.
    out_path : path
        Image to write; the format follows the extension (``.png``, ``.svg``, ``.pdf``).
    views : list of str, optional
        Names of the views to draw (default: all, in file order).
    ncols : int
        Panels per row.
    dpi : int
        Resolution of raster output.

    Returns
    -------
    Path
        `out_path`.

    Raises
    ------
    ValueError
        A requested view does not exist.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    model_path, out_path = Path(model_path), Path(out_path)
    sketch = read_sketch(model_path) if model_path.suffix.lower() == ".mdl" else []
    if not sketch:
        fig = _draw_dependency_graph(model_path, plt)
    else:
        if views is not None:
            known = {v.name for v in sketch}
            unknown = [v for v in views if v not in known]
            if unknown:
                raise ValueError(
                    f"{model_path.name}: no view named {unknown}; views: {sorted(known)}"
                )
            sketch = [v for v in sketch if v.name in views]
        ncols = min(ncols, len(sketch))
        nrows = math.ceil(len(sketch) / ncols)
        aspect = max(
            (y1 - y0 + 120) / (x1 - x0 + 180) for x0, x1, y0, y1 in (v.extent() for v in sketch)
        )
        panel = 11.0
        fig, axes = plt.subplots(
            nrows,
            ncols,
            squeeze=False,
            figsize=(panel * ncols, panel * min(max(aspect, 0.35), 1.2) * nrows + 0.8),
        )
        for ax, view in zip(axes.flat, sketch):
            _draw_view(ax, view)
        for ax in list(axes.flat)[len(sketch) :]:
            ax.set_visible(False)
        fig.suptitle(f"{model_path.name}: stock-and-flow diagram (from the sketch)", fontsize=16)
        _add_key(fig)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path, dpi=dpi)
    plt.close(fig)
    return out_path


def _add_key(fig) -> None:
    """What the symbols mean, in one legend below the panels."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    handles = [
        Patch(label="stock: a quantity that accumulates", **_STOCK),
        Line2D(
            [],
            [],
            marker="o",
            markersize=8,
            markerfacecolor="white",
            markeredgecolor="#1f4e79",
            label="flow into or out of a stock (valve; its rate named in blue)",
            **_PIPE,
        ),
        Line2D([], [], color="#c0504d", lw=1.0, label="causal link (tail drives head)"),
        Patch(facecolor="#f2f2f2", edgecolor="#888888", label="cloud: outside the model"),
        Line2D([], [], ls="none", label="<name>: a variable shown in another view"),
    ]
    height = fig.get_figheight()
    fig.legend(
        handles=handles,
        loc="lower center",
        ncols=len(handles),
        frameon=False,
        fontsize=11,
        handlelength=2.5,
    )
    fig.tight_layout(rect=(0, 0.5 / height, 1, 1))


_STOCK: dict[str, Any] = {"facecolor": "#dbe9f6", "edgecolor": "#1f4e79", "linewidth": 1.4}
_PIPE: dict[str, Any] = {"color": "#5b8fc7", "linewidth": 3.2}


def _label(name: str, width: int = 18) -> str:
    return "\n".join(textwrap.wrap(name, width)) or name


def _draw_view(ax, view: SketchView) -> None:
    from matplotlib.patches import Circle, Ellipse, FancyArrowPatch, Rectangle

    els = view.elements
    for e in els.values():
        if e.kind == "stock":
            ax.add_patch(Rectangle((e.x - e.w, e.y - e.h), 2 * e.w, 2 * e.h, zorder=3, **_STOCK))
            ax.text(
                e.x,
                e.y,
                _label(e.name, 14),
                ha="center",
                va="center",
                fontsize=7.5,
                fontweight="bold",
                zorder=4,
            )
        elif e.kind == "valve":
            ax.add_patch(
                Circle(
                    (e.x, e.y), 7, facecolor="white", edgecolor="#1f4e79", linewidth=1.2, zorder=4
                )
            )
        elif e.kind == "cloud":
            ax.add_patch(
                Ellipse((e.x, e.y), 26, 16, facecolor="#f2f2f2", edgecolor="#888888", zorder=3)
            )
        elif e.kind == "flow":
            ax.text(
                e.x,
                e.y,
                _label(e.name),
                ha="center",
                va="top",
                fontsize=6.5,
                color="#1f4e79",
                zorder=4,
            )
        elif e.kind == "shadow":
            ax.text(
                e.x,
                e.y,
                "<" + _label(e.name) + ">",
                ha="center",
                va="center",
                fontsize=6,
                color="#8a8a8a",
                style="italic",
                zorder=4,
            )
        else:
            ax.text(e.x, e.y, _label(e.name), ha="center", va="center", fontsize=6.2, zorder=4)
    for kind, a, b in view.links:
        if a not in els or b not in els:
            continue
        src, dst = els[a], els[b]
        if kind.startswith("pipe"):
            if kind == "pipe":  # valve -> the stock or cloud the flow fills
                start, end, head = (src.x, src.y), (dst.x, dst.y), "-|>"
            else:  # valve -> the stock or cloud the flow drains
                start, end, head = (dst.x, dst.y), (src.x, src.y), "-"
            shrink_b = 30 if (kind == "pipe" and dst.kind == "stock") else 8
            shrink_a = 30 if (kind != "pipe" and dst.kind == "stock") else 8
            ax.add_patch(
                FancyArrowPatch(
                    start,
                    end,
                    arrowstyle=head,
                    mutation_scale=14,
                    shrinkA=shrink_a,
                    shrinkB=shrink_b,
                    zorder=2,
                    **_PIPE,
                )
            )
        else:
            ax.add_patch(
                FancyArrowPatch(
                    (src.x, src.y),
                    (dst.x, dst.y),
                    arrowstyle="-|>",
                    mutation_scale=7,
                    connectionstyle="arc3,rad=0.12",
                    shrinkA=14,
                    shrinkB=14,
                    color="#c0504d",
                    linewidth=0.6,
                    alpha=0.75,
                    zorder=1,
                )
            )
    x0, x1, y0, y1 = view.extent()
    ax.set_xlim(x0 - 90, x1 + 90)
    ax.set_ylim(y1 + 60, y0 - 60)  # Vensim's y axis points down
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_title(view.name, fontsize=13, fontweight="bold")


def _draw_dependency_graph(model_path: Path, plt):
    """Fallback: stocks and their direct drivers on a circle, from PySD's dependencies."""
    from matplotlib.patches import FancyArrowPatch

    from .engine.model import load

    model = load(model_path)
    pysd_model = model.pysd_model()
    deps = pysd_model.dependencies
    real = {py: name for name, py in model.namespace.items()}
    nodes: dict[str, set[str]] = {}
    for py, d in deps.items():
        if py.startswith("_") or py not in real or not isinstance(d, dict):
            continue
        flat: set[str] = set()
        for k in d:
            if k.startswith("_") and k in deps and isinstance(deps[k], dict):
                for part in ("initial", "step"):
                    flat.update(deps[k].get(part, {}))
            elif not k.startswith("_"):
                flat.add(k)
        nodes[py] = {k for k in flat if k in real}
    keep = [py for py in nodes if nodes[py] or any(py in v for v in nodes.values())]
    keep = [
        py
        for py in keep
        if py not in ("time", "time_step", "initial_time", "final_time", "saveper")
    ]
    n = max(len(keep), 1)
    pos = {
        py: (math.cos(2 * math.pi * i / n), math.sin(2 * math.pi * i / n))
        for i, py in enumerate(sorted(keep))
    }
    fig, ax = plt.subplots(figsize=(12, 12))
    stocks = set(model.stocks)
    for py, (x, y) in pos.items():
        name = real[py]
        box = {"boxstyle": "square", "fc": "#dbe9f6", "ec": "#1f4e79"} if name in stocks else None
        ax.text(x * 1.05, y * 1.05, _label(name), ha="center", va="center", fontsize=6, bbox=box)
    for py, sources in nodes.items():
        for s in sources:
            if py in pos and s in pos:
                ax.add_patch(
                    FancyArrowPatch(
                        pos[s],
                        pos[py],
                        arrowstyle="-|>",
                        mutation_scale=6,
                        color="#c0504d",
                        linewidth=0.4,
                        alpha=0.6,
                    )
                )
    ax.set_xlim(-1.3, 1.3)
    ax.set_ylim(-1.3, 1.3)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_title(f"{model_path.name}: dependency graph (no sketch in the file)")
    return fig
