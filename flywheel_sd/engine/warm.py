"""``python -m flywheel_sd.engine.warm MODULE.py``: compile a generated module's Numba
functions into its on-disk cache, in a background process (see
`CompiledModel.warm_in_background`), so later processes run compiled code at once."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np


def warm(path: Path) -> None:
    from .modules import import_module

    mod = import_module(path, "numba")
    n_c = mod.N_C
    c = np.zeros(n_c)
    c[0], c[2], c[3] = 1.0, 1.0, 1.0
    y = np.zeros(mod.N_STATES)
    out = np.zeros((2, mod.N_OUT))
    with np.errstate(all="ignore"):
        mod.setup(c)
        mod.init(c, y)
        mod.euler(c, y, 0.0, 1.0, np.array([True, True]), out)
        stats = np.zeros(8, dtype=np.int64)
        mod.rk45(c, y, np.array([0.0, 1.0]), np.array([0.0, 1.0]), 1e-6, 1e-6, np.inf, out, stats)
        # the members drivers, with the argument types engine.ensemble passes
        C = np.repeat(c[None, :], 2, axis=0)
        Y0 = np.zeros((2, mod.N_STATES))
        status = np.zeros(2, dtype=np.int64)
        sel = np.zeros(1, dtype=np.int64)
        OUT = np.zeros((2, 2, 1))
        mod.init_members(C, Y0, status)
        mod.fixed_members(C, Y0, 0.0, 1.0, np.array([True, True]), 2, sel, OUT, status, False)
        mod.adaptive_members(
            C,
            Y0,
            np.array([0.0, 1.0]),
            np.array([0.0, 1.0]),
            1e-6,
            1e-6,
            np.inf,
            sel,
            OUT,
            np.zeros((2, 8), dtype=np.int64),
            False,
        )


def main(argv=None) -> int:
    path = Path((argv or sys.argv[1:])[0])
    marker = path.with_suffix(".warming")
    try:
        warm(path)
    except Exception as err:  # noqa: BLE001 - any failure: remembered, never retried
        marker.write_text(f"failed: {type(err).__name__}: {err}\n", encoding="utf-8")
        return 1
    marker.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
