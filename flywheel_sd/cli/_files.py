"""Files the subcommands write: comparison figures and netCDF."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from ._common import UsageError, to_json, units_of


def save_comparison_plot(ds, model, path: Path) -> None:
    import matplotlib.pyplot as plt

    from ..plotting import plot_comparison

    panels = _panels_for(ds, model)
    fig = plot_comparison(ds, path) if panels is None else plot_comparison(ds, path, panels)
    plt.close(fig)


def _panels_for(ds, model) -> Sequence | None:
    """The comparison panels, or the model's stocks when it has none of them."""
    from ..plotting import PANELS

    if any(_has(ds, variable) for _, variable, _ in PANELS):
        return None
    units = units_of(model)
    stocks = [s for s in model.stocks if _has(ds, s)][:12]
    if not stocks:
        raise UsageError("nothing to plot: the output has none of the model's stocks")
    return [(s, s, units.get(s, "")) for s in stocks]


def _has(ds, variable: str) -> bool:
    from ..metrics import total

    try:
        total(ds, variable)
        return True
    except KeyError:
        return False


def write_netcdf(ds, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # netCDF cannot list a coordinate whose name has a space (swept "Take Rate"): keep it as
    # a variable on `run`, as xarray would, but without its warning.
    spaced = [c for c in ds.coords if " " in str(c) and c not in ds.dims]
    # Written beside and then moved into place, so that a write cut short leaves no
    # truncated file (and a file that was there stays whole until the new one is complete).
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        _netcdf_safe(ds.reset_coords(spaced)).to_netcdf(tmp, engine=_netcdf_engine())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _netcdf_safe(ds):
    """Attributes netCDF can store: strings and numbers (the rest as JSON)."""
    ds = ds.copy()
    for holder in (ds, *ds.variables.values()):
        for key, value in list(holder.attrs.items()):
            if value is None or isinstance(value, (list, tuple, dict, bool)):
                holder.attrs[key] = to_json(value)
    return ds


def _netcdf_engine() -> str:
    """netCDF4 or h5netcdf when their libraries import, else SciPy's netCDF-3 writer."""
    import importlib.util

    for engine, module in (("netcdf4", "netCDF4"), ("h5netcdf", "h5py")):
        if importlib.util.find_spec(module) is not None:
            return engine
    return "scipy"
