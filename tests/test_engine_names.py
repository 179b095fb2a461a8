"""Real-world names through the compiled engine: non-ASCII variable and subscript names
(German, Chinese), a lookup, a SUM over a range, and Vensim's ``\\`` line continuation
inside an equation. The compiled run must keep every name intact and equal PySD's run."""

from __future__ import annotations

import numpy as np
import pandas as pd

import flywheel_sd as fw

UNICODE = (
    "{UTF-8}\n"
    "Bestand Größe[Region] = INTEG(Zuflßß[Region], 10)\n\t~\tStück\n\t~\t\t|\n\n"
    "Region: Nord, Süd, 东部\n\t~\t\n\t~\t\t|\n\n"
    "Zuflßß[Region] = Rate * \\\n\t\tBestand Größe[Region] * Wirkung(Bestand Größe[Region]"
    " / 100)\n\t~\tStück/Month\n\t~\t\t|\n\n"
    "Wirkung(\n\t[(0,0)-(10,2)],(0,1),(1,0.5),(10,0.1))\n\t~\tDmnl\n\t~\t\t|\n\n"
    "Rate = 0.1\n\t~\t1/Month\n\t~\t\t|\n\n"
    "客户 = SUM(Bestand Größe[Region!]) * 2\n\t~\tStück\n\t~\t\t|\n\n"
    "INITIAL TIME = 0\n\t~\tMonth\n\t~\t\t|\n\nFINAL TIME = 10\n\t~\tMonth\n\t~\t\t|\n\n"
    "TIME STEP = 0.25\n\t~\tMonth\n\t~\t\t|\n\nSAVEPER = 1\n\t~\tMonth\n\t~\t\t|\n"
)


def test_non_ascii_names_and_continuations_compile_intact(tmp_path):
    path = tmp_path / "größe.mdl"
    path.write_text(UNICODE, encoding="utf-8")
    model = fw.load(path)
    compiled = fw.simulate(model, method="euler", engine="compiled")
    reference = fw.simulate(model, method="euler", engine="pysd")
    assert compiled.attrs["engine"].startswith("compiled")
    assert {"Bestand Größe[东部]", "Zuflßß[Süd]", "客户"} <= set(compiled.columns)
    pd.testing.assert_frame_equal(compiled, reference, check_exact=True, check_dtype=False)
    # the names work as parameters too
    doubled = fw.simulate(model, {"Rate": 0.2}, method="euler", engine="compiled")
    assert np.all(doubled["客户"].iloc[1:].to_numpy() > compiled["客户"].iloc[1:].to_numpy())
