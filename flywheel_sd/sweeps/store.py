"""Where a sweep's results go: in memory, or a store on disk written chunk by chunk.

`_MemoryWriter` collects finished chunks and assembles the Dataset; `_StoreWriter` writes
each finished chunk to ``data.zarr`` and a marker under ``chunks/``, and on resume reads
which chunks are done (see `flywheel_sd.sweeps.sweep` for the layout of a store).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, SupportsFloat, cast

import numpy as np
import pandas as pd
import xarray as xr

from ..errors import ParameterError
from .chunk import (
    STATUS_FAILED,
    STATUS_OK,
)

if TYPE_CHECKING:
    from .sweep import _ChunkOut, _Plan

STATUS_MEANINGS = "not_run ok failed"


# -- results: in memory ----------------------------------------------------------------------
class _MemoryWriter:
    def __init__(self, plan: _Plan):
        self.plan = plan
        n, t = plan.n_runs, len(plan.times)
        self.columns = {c: np.full((n, t), np.nan) for c in plan.output_columns}
        self.metrics = {name: np.full(n, np.nan) for name, _ in plan.metrics}
        self.status = np.zeros(n, dtype=np.int8)
        self.errors: dict[int, str] = {}
        self.done: set[int] = set()

    def write(self, out: _ChunkOut) -> None:
        a = out.start
        b = a + len(out.status)
        for c, arr in out.columns.items():
            self.columns[c][a:b] = arr
        for name, arr in out.metrics.items():
            self.metrics[name][a:b] = arr
        self.status[a:b] = out.status
        self.errors.update({a + i: msg for i, msg in out.errors.items()})
        self.done.add(out.index)

    def result(self, summary: dict) -> xr.Dataset:
        plan = self.plan
        data: dict[str, tuple] = {c: (("run", "time"), a) for c, a in self.columns.items()}
        data.update({m: ("run", a) for m, a in self.metrics.items()})
        ds = xr.Dataset(data, coords=_coords(plan))
        ds["status"] = ("run", self.status)
        ds["error"] = ("run", _error_array(plan.n_runs, self.errors))
        _decorate(ds, plan, summary)
        return ds


def _coords(plan: _Plan) -> dict:
    coords: dict[str, Any] = {"run": np.arange(plan.n_runs), "time": plan.times}
    for j, name in enumerate(plan.design.names):
        coords[name] = ("run", plan.design.values[:, j])
    return coords


def _error_array(n: int, errors: Mapping[int, str]) -> np.ndarray:
    arr = np.full(n, "", dtype=object)
    for i, msg in errors.items():
        arr[int(i)] = msg
    return arr


def _decorate(ds: xr.Dataset, plan: _Plan, summary: dict) -> None:
    import pysd

    from .. import __version__

    ds["status"].attrs.update(
        flag_values=[0, STATUS_OK, STATUS_FAILED], flag_meanings=STATUS_MEANINGS
    )
    o = plan.options
    design = plan.design.describe()
    ds.attrs.update(
        {
            "title": f"flywheel_sd sweep of {plan.model.path.name}",
            "model": str(plan.model.path),
            "model_sha256": plan.model.sha256,
            "scenario": plan.scenario or "",
            "method": o.method,
            "rtol": o.rtol if o.method not in ("euler", "rk4") else "",
            "atol": o.atol if o.method not in ("euler", "rk4") else "",
            "max_step": o.max_step if o.max_step is not None else "",
            "time_step": o.time_step if o.time_step is not None else "",
            "breakpoints": json.dumps(list(o.breakpoints)),
            "base_params": json.dumps(_describe_params(plan.base)),
            "design_kind": plan.design.kind,
            "design_seed": plan.design.seed if plan.design.seed is not None else "",
            "design": json.dumps(design),
            "executor": plan.executor,
            "chunk_size": plan.chunk_size,
            "n_runs": plan.n_runs,
            "n_failed": int((ds["status"] == STATUS_FAILED).sum()),
            "ensemble_chunks": summary.get("ensemble_chunks", 0),
            "per_run_chunks": summary.get("per_run_chunks", 0),
            "fallback": summary.get("fallback", ""),
            "nfev": summary.get("nfev", 0),
            "run_warnings": json.dumps(summary.get("warnings", [])),
            "flywheel_sd_version": __version__,
            "pysd_version": pysd.__version__,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
        }
    )


def _plain(value):
    if isinstance(value, tuple):
        return list(value)
    return value


def _describe_params(params: Mapping) -> dict:
    out: dict[str, Any] = {}
    for k, v in params.items():
        if isinstance(v, pd.Series):
            out[k] = {
                "series": [
                    # np.isscalar admits complex, which float() refuses as it always did
                    [float(t), float(cast(SupportsFloat, x))]
                    if np.isscalar(x)
                    else [float(t), str(x)]
                    for t, x in zip(v.index, v)
                ]
            }
        elif isinstance(v, xr.DataArray):
            out[k] = {"array": np.asarray(v.values).tolist(), "dims": list(v.dims)}
        elif isinstance(v, (int, float, np.integer, np.floating)):
            out[k] = float(v)
        else:
            out[k] = repr(v)
    return out


# -- results: a store on disk ---------------------------------------------------------------
class _StoreWriter:
    """Zarr data + JSON markers; see the module doc for the layout."""

    def __init__(self, plan: _Plan, done: set[int]):
        self.plan = plan
        assert plan.store is not None  # a sweep with a store
        self.root = plan.store
        self.data = self.root / "data.zarr"
        self.markers = self.root / "chunks"
        self.done = done

    def write(self, out: _ChunkOut) -> None:
        n = len(out.status)
        data: dict[str, tuple] = {c: (("run", "time"), a) for c, a in out.columns.items()}
        data.update({m: ("run", a) for m, a in out.metrics.items()})
        data["status"] = ("run", np.asarray(out.status, dtype=np.int8))
        part = xr.Dataset(data)
        part.to_zarr(
            self.data,
            region={"run": slice(out.start, out.start + n)},
            consolidated=False,
            mode="r+",
        )
        marker = {
            "index": out.index,
            "start": out.start,
            "stop": out.start + n,
            "errors": {str(out.start + i): msg for i, msg in out.errors.items()},
            "stats": _json_safe(out.stats),
        }
        _atomic_write(self.markers / f"{out.index:06d}.json", json.dumps(marker))
        self.done.add(out.index)

    def result(self, summary: dict) -> xr.Dataset:
        summary = dict(summary)
        errors: dict[int, str] = {}
        totals = {"ensemble_chunks": 0, "per_run_chunks": 0, "nfev": 0}
        fallback = summary.get("fallback", "")
        for path in sorted(self.markers.glob("*.json")):
            marker = json.loads(path.read_text())
            errors.update({int(i): m for i, m in marker["errors"].items()})
            stats = marker.get("stats", {})
            if stats.get("mode") == "per-run":
                totals["per_run_chunks"] += 1
            else:
                totals["ensemble_chunks"] += 1
            totals["nfev"] += int(stats.get("nfev") or 0)
            fallback = fallback or stats.get("fallback", "")
        summary.update(totals, fallback=fallback)
        ds = xr.open_zarr(self.data, consolidated=False)
        ds = ds.set_coords([n for n in self.plan.design.names if n in ds.data_vars])
        for name in self.plan.design.names:
            ds[name] = ds[name].load()
        ds["error"] = ("run", _error_array(self.plan.n_runs, errors))
        ds["status"] = ds["status"].load()
        _decorate(ds, self.plan, summary)
        ds.attrs["store"] = str(self.root)
        return ds


_USE_ANOTHER = "use a new store path or delete it"


def check_resumable(root: Path) -> dict | None:
    """The metadata (``sweep.json``) of the store folder `root` if it holds a flywheel_sd
    sweep that can be resumed; None if there is nothing to resume (no folder, an empty one,
    or one whose creation was cut short). A file, a folder that is not a sweep store, or a
    damaged store (``sweep.json`` or ``data.zarr`` unreadable) raises `ParameterError` in
    one line. Reads only the metadata; changes nothing."""
    root = Path(root)
    if not root.exists():
        return None
    if not root.is_dir():
        raise ParameterError(f"store {root} is a file, not a sweep store folder; {_USE_ANOTHER}")
    meta_path = root / "sweep.json"
    if not meta_path.is_file():
        if not any(root.iterdir()) or _unfinished_creation(root):
            return None
        raise ParameterError(
            f"store {root} exists and is not a flywheel_sd sweep; choose an empty or new folder"
        )
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise ParameterError(
            f"store {root} is damaged (its sweep.json is unreadable: "
            f"{_reason(err)}); {_USE_ANOTHER}"
        ) from None
    if (
        not isinstance(meta, dict)
        or not str(meta.get("format", "")).startswith("flywheel_sd sweep")
        or not isinstance(meta.get("design"), dict)
    ):
        raise ParameterError(f"store {root} is not a flywheel_sd sweep store; {_USE_ANOTHER}")
    try:
        with xr.open_zarr(root / "data.zarr", consolidated=False) as ds:
            sizes = dict(ds.sizes)
            has_status = "status" in ds.variables
    except Exception as err:  # noqa: BLE001 - zarr raises many kinds on a damaged store
        raise ParameterError(
            f"store {root} is damaged (its data.zarr is unreadable: "
            f"{_reason(err)}); {_USE_ANOTHER}"
        ) from None
    runs = meta["design"].get("runs")
    if not has_status or (isinstance(runs, int) and sizes.get("run") != runs):
        raise ParameterError(
            f"store {root} is damaged (its data.zarr does not hold the "
            f"sweep's {runs} runs); {_USE_ANOTHER}"
        )
    return meta


def read_finished(path: Path) -> xr.Dataset:
    """The sweep exported to the netCDF file `path` (the ``.nc`` variant of a store: the
    chunks are kept in ``<name>.nc.parts/`` until the sweep completes, then written to
    `path`), loaded. A file that is not a flywheel_sd sweep, or a damaged or truncated one,
    raises `ParameterError` in one line. The file is not changed."""
    path = Path(path)
    try:
        with xr.open_dataset(path) as ds:
            ds = ds.load()
    except Exception as err:  # noqa: BLE001 - xarray, h5py and SciPy raise many kinds
        if _looks_like_netcdf(path):
            raise ParameterError(
                f"store {path} is damaged or truncated ({_reason(err)}); {_USE_ANOTHER}"
            ) from None
        raise ParameterError(f"{path} is not a flywheel_sd sweep store; {_USE_ANOTHER}") from None
    title = str(ds.attrs.get("title", ""))
    if not title.startswith("flywheel_sd sweep") or "status" not in ds or "design" not in ds.attrs:
        raise ParameterError(f"{path} is not a flywheel_sd sweep store; {_USE_ANOTHER}")
    return ds


def _looks_like_netcdf(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError:
        return False
    return head.startswith((b"CDF", b"\x89HDF"))


def _reason(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= 120 else text[:117] + "..."


def _open_store(plan: _Plan, resume: bool) -> _StoreWriter:
    root = plan.store
    assert root is not None  # a sweep with a store
    meta_path = root / "sweep.json"
    settings = _json_safe(plan.settings())
    design = plan.design.describe()
    if root.exists() and not root.is_dir():
        raise ParameterError(f"store {root} is a file, not a sweep store folder; {_USE_ANOTHER}")
    if root.exists() and not meta_path.is_file() and _unfinished_creation(root):
        shutil.rmtree(root / "data.zarr", ignore_errors=True)  # cut short while created
    if root.exists() and any(root.iterdir()):
        if not meta_path.is_file():
            raise ParameterError(
                f"store {root} exists and is not a flywheel_sd sweep; choose "
                "an empty or new folder"
            )
        if not resume:
            raise ParameterError(
                f"store {root} holds a sweep already; pass resume=True to "
                "continue it, or choose another folder"
            )
        meta = check_resumable(root) or {}
        if meta.get("design", {}).get("fingerprint") != design["fingerprint"]:
            old = meta.get("design", {})
            raise ParameterError(
                f"store {root} holds a different design ({old.get('kind')}, "
                f"{old.get('runs')} runs of {old.get('names')}) than this sweep "
                f"({design['kind']}, {design['runs']} runs of {design['names']}); choose "
                "another store"
            )
        stored = meta.get("settings", {})
        differ = sorted(k for k in set(stored) | set(settings) if stored.get(k) != settings.get(k))
        if differ:
            raise ParameterError(
                f"store {root} holds this design run with other settings "
                f"({', '.join(differ)} differ); choose another store"
            )
        done = set()
        for path in (root / "chunks").glob("*.json"):
            try:
                done.add(int(json.loads(path.read_text())["index"]))
            except (ValueError, KeyError, json.JSONDecodeError):
                continue  # a marker cut short: its chunk is computed again
        return _StoreWriter(plan, done)
    root.mkdir(parents=True, exist_ok=True)
    _create_zarr(plan, root / "data.zarr")
    (root / "chunks").mkdir(exist_ok=True)
    _atomic_write(
        meta_path,
        json.dumps(
            {"format": "flywheel_sd sweep 1", "design": design, "settings": settings}, indent=1
        ),
    )
    return _StoreWriter(plan, set())


def _unfinished_creation(root: Path) -> bool:
    """A store whose creation was cut short: data.zarr (and chunks/) but no markers."""
    entries = {p.name for p in root.iterdir()}
    if not entries or not entries <= {"data.zarr", "chunks"}:
        return False
    return not any((root / "chunks").glob("*.json")) if "chunks" in entries else True


def _create_zarr(plan: _Plan, path: Path) -> None:
    import dask.array as da

    n, t, c = plan.n_runs, len(plan.times), plan.chunk_size
    data: dict[str, tuple] = {
        col: (("run", "time"), da.full((n, t), np.nan, chunks=(c, t)))
        for col in plan.output_columns
    }
    data.update({m: ("run", da.full(n, np.nan, chunks=c)) for m, _ in plan.metrics})
    data["status"] = ("run", da.zeros(n, dtype=np.int8, chunks=c))
    coords = _coords(plan)
    # parameter names have spaces, which netCDF/Zarr cannot list as coordinates: store them
    # as variables, and make them coordinates again on reading (`_StoreWriter.result`)
    for name in plan.design.names:
        data[name] = coords.pop(name)
    ds = xr.Dataset(data, coords=coords)
    encoding = {
        v: {"chunks": (c, t) if ds[v].ndim == 2 else (c,)}
        for v in data
        if v not in plan.design.names
    }
    ds.to_zarr(path, mode="w-", compute=False, consolidated=False, encoding=encoding)


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _json_safe(value):
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return repr(value)
