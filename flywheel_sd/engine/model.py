"""Load a Vensim/XMILE model through PySD, with a per-user translation cache.

PySD writes its translated ``.py`` beside the model file. We never let it write into the
source tree: the model is copied into a cache folder keyed by its content hash, and
translated there once. A second `load` of an unchanged file imports the cached ``.py``.
"""

from __future__ import annotations

import atexit
import hashlib
import math
import os
import re
import shutil
import tempfile
import threading
import warnings
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pysd
import xarray as xr

from ..errors import CacheWarning, ModelFileError, ParameterError, unknown_name_message

# flywheel_sd/models links to the top-level models/ in a checkout and is a copy in a wheel.
DEFAULT_MODEL = Path(__file__).parent.parent / "models" / "platform_flywheel.mdl"
_TRANSLATABLE = {".mdl": pysd.read_vensim, ".xmile": pysd.read_xmile, ".stmx": pysd.read_xmile}
_ROOT_LINE = "_root = Path(__file__).parent"
_CACHE_FORMAT = b"3"  # bump when the post-processing of translations changes (3: marker)
_MACRO_FILE = re.compile(r"_root\.joinpath\((\"[^\"]*\.py\")\)")


def cache_dir() -> Path:
    """Where translations are kept: $FLYWHEEL_SD_CACHE, else the user's cache folder.

    If that folder cannot be written, a temporary folder serves the rest of the process
    (with a `CacheWarning` saying so)."""
    configured = _configured_cache_dir()
    return _fallback.get(str(configured), configured)


def _configured_cache_dir() -> Path:
    if os.environ.get("FLYWHEEL_SD_CACHE"):
        return Path(os.environ["FLYWHEEL_SD_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "flywheel_sd"


_fallback: dict[str, Path] = {}  # configured cache that cannot be written -> temp folder
_fallback_lock = threading.Lock()
_MARKER = "translation.sha256"  # written last: "<sha256>  <file>" per translated file


def _fall_back(configured: Path, err: OSError) -> Path:
    """Use (once per process) a temporary cache instead of `configured`, which cannot be
    written."""
    with _fallback_lock:
        if str(configured) in _fallback:
            return _fallback[str(configured)]
        tmp = Path(tempfile.mkdtemp(prefix="flywheel_sd-cache-"))
        atexit.register(shutil.rmtree, tmp, True)
        _fallback[str(configured)] = tmp
    warnings.warn(
        CacheWarning(
            f"the translation cache {configured} cannot be written ({_first_line(err)}); "
            f"using {tmp} for this process; set FLYWHEEL_SD_CACHE to a writable folder"
        ),
        stacklevel=5,
    )
    return tmp


def _entry_problem(folder: Path, py_name: str) -> str | None:
    """What is wrong with the cache entry `folder` (None when it is complete and intact):
    its marker must list `py_name` and every file it lists must match its checksum."""
    try:
        lines = (folder / _MARKER).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return "it has no completed-marker"
    except (OSError, UnicodeDecodeError) as err:
        return f"its marker cannot be read: {_first_line(err)}"
    # "digest  name" lines, as sha256sum writes them
    listed = {
        name: digest for digest, name in (line.split("  ", 1) for line in lines if "  " in line)
    }
    if py_name not in listed:
        return f"its marker does not list {py_name}"
    for name, digest in listed.items():
        try:
            actual = hashlib.sha256((folder / name).read_bytes()).hexdigest()
        except OSError:
            return f"{name} is missing or unreadable"
        if actual != digest:
            return f"{name} does not match its checksum"
    return None


def _discard(folder: Path) -> None:
    """Move a damaged entry aside (atomic, so a concurrent loader never sees half of it)
    and delete it."""
    trash = folder.with_name(f".discarded-{folder.name}-{os.getpid()}-{threading.get_ident()}")
    try:
        folder.rename(trash)
    except FileNotFoundError:
        return  # another loader discarded it first
    shutil.rmtree(trash, ignore_errors=True)


def _translate(source: Path) -> Path:
    """Return the cached PySD translation of `source`, translating it on a miss.

    An entry is used only if its completed-marker (written last) lists checksums its files
    match; a damaged or partial entry is discarded and translated again, with a
    `CacheWarning`. A cache that cannot be written falls back to a temporary folder."""
    text = source.read_bytes()
    key = hashlib.sha256(
        text + pysd.__version__.encode() + str(source.parent).encode() + _CACHE_FORMAT
    ).hexdigest()[:20]
    py_name = source.stem + ".py"
    for _ in range(3):  # a concurrent loader or a failing cache may need another turn
        root = cache_dir()
        target_dir = root / f"{source.stem}-{key}"
        py_file = target_dir / py_name
        if os.path.lexists(target_dir):
            problem = _entry_problem(target_dir, py_name)
            if problem is None:
                return py_file
        else:
            problem = None
        try:
            if problem is not None:
                _discard(target_dir)
                warnings.warn(
                    CacheWarning(
                        f"the cached translation {target_dir} is damaged ({problem}); "
                        "discarded, translating the model again"
                    ),
                    stacklevel=4,
                )
            root.mkdir(parents=True, exist_ok=True)
            work = Path(tempfile.mkdtemp(prefix=".translating-", dir=root))
        except OSError as err:
            if root != _configured_cache_dir():
                raise ModelFileError(
                    f"{source}: the translation cache {root} cannot be written "
                    f"({_first_line(err)}); set FLYWHEEL_SD_CACHE to a writable folder"
                ) from err
            _fall_back(root, err)
            continue
        try:
            _translate_into(source, text, work)
            try:
                work.rename(target_dir)  # atomic: a concurrent loader sees all or nothing
            except OSError:
                if _entry_problem(target_dir, py_name) is not None:
                    continue  # there, but damaged: discard it on the next turn
            return py_file
        finally:
            if work.exists():
                shutil.rmtree(work, ignore_errors=True)
    raise ModelFileError(
        f"{source}: its translation could not be stored in the cache {cache_dir()}; "
        "set FLYWHEEL_SD_CACHE to a writable folder"
    )


def _translate_into(source: Path, text: bytes, work: Path) -> None:
    """Translate a copy of `source` in the folder `work`, and write the completed-marker
    (last)."""
    copy = work / source.name
    copy.write_bytes(text)
    translate = _TRANSLATABLE[source.suffix.lower()]
    try:
        try:
            translate(str(copy), initialize=False)
        except FileNotFoundError:
            # Subscripts read from external files (GET XLS SUBSCRIPT) are looked up
            # beside the model at translation time: let the copy see its siblings.
            _link_siblings(source, work)
            translate(str(copy), initialize=False)
    except Exception as err:  # PySD raises many kinds (parsimonious, KeyError, ...)
        raise ModelFileError(
            f"{source}: PySD could not translate this model ({_first_line(err)})"
        ) from err
    for link in work.iterdir():
        if link.is_symlink():
            link.unlink()
    sums = []
    for translated in sorted(work.glob("*.py")):  # the model, and one file per macro
        code = _relocate(translated.read_text(), source.parent).encode()
        translated.write_bytes(code)
        sums.append(f"{hashlib.sha256(code).hexdigest()}  {translated.name}\n")
    (work / _MARKER).write_text("".join(sums), encoding="utf-8")


def _first_line(err: BaseException) -> str:
    """'Type: first line of the message', for one-line error messages."""
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0]}" if text else type(err).__name__


def _link_siblings(source: Path, work: Path) -> None:
    for sibling in source.parent.iterdir():
        target = work / sibling.name
        if sibling.name != source.name and not target.exists():
            target.symlink_to(sibling)


def _relocate(code: str, data_dir: Path) -> str:
    """Point a translation moved into the cache back at the model's own folder for external
    data (GET XLS DATA, ...), while its macros (``.py`` files beside it) stay in the cache."""
    code = _MACRO_FILE.sub(r"Path(__file__).parent.joinpath(\1)", code)
    return code.replace(_ROOT_LINE, f"_root = Path({str(data_dir)!r})")


def load(path: str | os.PathLike | None = None, *, data_files=None) -> Model:
    """Load a model: a Vensim ``.mdl`` (or XMILE), or a PySD-translated ``.py``.

    With no path, load the project's default model, ``models/platform_flywheel.mdl``.
    Translation is cached per user by content hash (see `cache_dir`).

    Parameters
    ----------
    path : str or path-like, optional
        The model file.
    data_files : path, list of paths or dict, optional
        Data files for the model's DATA variables, as ``pysd.load(data_files=...)``
        takes them (a dict maps a file to the variables it holds).

    Raises
    ------
    ModelFileError
        The file is missing, of an unknown kind, or PySD cannot translate or import it.

    Notes
    -----
    Within one thread, loading an unchanged file again returns the same `Model` (the
    scenario, compare and command-line layers each ask for the model they need, and PySD's
    load is the slow part). Any change to the file's content, or to a data file's size or
    modification time, loads it anew. The memo is per thread because a Model's PySD object
    serves one run at a time.
    """
    source = Path(DEFAULT_MODEL if path is None else path).expanduser().resolve()
    key = _memo_key(source, data_files)
    if key is None:  # missing or unreadable: let Model raise its usual error
        return Model(source, data_files=data_files)
    memo = _loaded.__dict__.setdefault("models", {})
    model = memo.pop(key, None)
    if model is None or _stale(model):  # new, or its translation was removed or damaged
        model = Model(source, data_files=data_files)
    memo[key] = model  # most recently used last
    while len(memo) > _MEMO_SIZE:
        del memo[next(iter(memo))]
    return model


_loaded = threading.local()


def _stale(model: Model) -> bool:
    """Whether a remembered model's translation is gone or damaged (load it anew: the
    cache heals)."""
    if not model.py_file.is_file():
        return True
    if model.py_file == model.path:  # a .py loaded as it is: no cache entry
        return False
    return _entry_problem(model.py_file.parent, model.py_file.name) is not None


_MEMO_SIZE = 8


def _memo_key(source: Path, data_files) -> tuple | None:
    """What `load` must see unchanged to reuse a model: the file's content, the data
    files' sizes and modification times, and the translation cache in use."""
    try:
        digest = hashlib.sha256(source.read_bytes()).hexdigest()
        data = _absolute_data_files(data_files)
        names = [] if data is None else [data] if isinstance(data, str) else sorted(data)
        stats = tuple((n, os.stat(n).st_size, os.stat(n).st_mtime_ns) for n in names)
    except OSError:
        return None
    return str(source), digest, repr(data), stats, str(cache_dir())


def _absolute_data_files(data_files):
    if data_files is None:
        return None
    if isinstance(data_files, dict):
        return {str(Path(f).expanduser().resolve()): v for f, v in data_files.items()}
    if isinstance(data_files, (str, os.PathLike)):
        return str(Path(data_files).expanduser().resolve())
    return [str(Path(f).expanduser().resolve()) for f in data_files]


def _unpickle(path: str, data_files) -> Model:
    return Model(path, data_files=data_files)


class Model:
    """A loaded system-dynamics model: its file, its PySD translation and its metadata.

    The object pickles by re-creating itself from its file (a PySD model does not
    pickle), so it can be shipped to parallel workers.
    """

    def __init__(self, path: str | os.PathLike, *, data_files=None):
        source = Path(path).expanduser().resolve()
        self.data_files = _absolute_data_files(data_files)
        if not source.is_file():
            raise ModelFileError(f"{source}: no such model file")
        suffix = source.suffix.lower()
        if suffix == ".py":
            py_file = source
        elif suffix in _TRANSLATABLE:
            py_file = _translate(source)
        else:
            raise ModelFileError(
                f"{source}: unknown model file type {source.suffix!r}; "
                "expected .mdl, .xmile, .stmx or a PySD-translated .py"
            )
        self.path = source
        self.py_file = py_file
        self._pysd: Any = None
        self._pysd_dirty = True
        self.pysd_model()  # fail now, not on first use, if the translation does not import

    def __reduce__(self):
        return (_unpickle, (str(self.path), self.data_files))

    def __repr__(self) -> str:
        return f"<flywheel_sd.Model {self.path.name}: {len(self.stocks)} stocks>"

    @cached_property
    def sha256(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest()

    # -- the compiled form -------------------------------------------------------------
    def compiled(self, params: dict | None = None):
        """The model compiled to flat array code, in the variant `params` need (constants
        given as time series). Raises `flywheel_sd.engine.NotCompilable` with the reason
        where the compiler does not cover the model."""
        from . import compiled
        from .compiled import series_signature

        return compiled(self, series_signature(params or {}))

    # -- the PySD object --------------------------------------------------------------
    def pysd_model(self, fresh: bool = False):
        """The underlying ``pysd`` model, reloaded if a previous run modified it."""
        if self._pysd is None or fresh or self._pysd_dirty:
            try:
                self._pysd = pysd.load(
                    str(self.py_file), data_files=self.data_files, initialize=False
                )
            except Exception as err:
                raise ModelFileError(
                    f"{self.path}: PySD could not load the translation ({_first_line(err)})"
                ) from err
            self._pysd_dirty = False
        return self._pysd

    def _checkout(self):
        """A clean PySD model for one run; the next call reloads it."""
        model = self.pysd_model()
        self._pysd_dirty = True
        return model

    # -- metadata ---------------------------------------------------------------------
    @cached_property
    def doc(self) -> pd.DataFrame:
        """PySD's documentation table: Real Name, Py Name, Units, Limits, Type, Comment..."""
        return self.pysd_model().doc

    @cached_property
    def namespace(self) -> dict[str, str]:
        """Vensim name -> Python name, for every model element."""
        return dict(self.pysd_model().namespace)

    @cached_property
    def _py_to_real(self) -> dict[str, str]:
        return {py: real for real, py in self.namespace.items()}

    def _names_of(self, type_: str) -> list[str]:
        doc = self.doc
        return list(doc.loc[doc["Type"] == type_, "Real Name"])

    @cached_property
    def stocks(self) -> list[str]:
        doc = self.doc
        mask = (doc["Type"] == "Stateful") & (doc["Subtype"].isin(["Integ", "NonNegativeInteg"]))
        return list(doc.loc[mask, "Real Name"])

    @cached_property
    def constants(self) -> list[str]:
        control = {"INITIAL TIME", "FINAL TIME", "TIME STEP", "SAVEPER"}
        return [n for n in self._names_of("Constant") if n.upper() not in control]

    @cached_property
    def ranges(self) -> dict[str, tuple[float, float]]:
        """Documented [min, max] of each constant that has one (NaN where open)."""
        out = {}
        constants = set(self.constants)
        for _, row in self.doc.iterrows():
            lim = row.get("Limits")
            if row["Real Name"] in constants and isinstance(lim, tuple) and len(lim) == 2:
                lo, hi = (float(v) if v is not None else math.nan for v in lim)
                if not (math.isnan(lo) and math.isnan(hi)):
                    out[row["Real Name"]] = (lo, hi)
        return out

    def time_settings(self) -> dict[str, float]:
        """INITIAL TIME, FINAL TIME, TIME STEP and SAVEPER as the model file sets them."""
        keys = ("initial_time", "final_time", "time_step", "saveper")
        try:  # from the compiled program: no PySD initialisation
            from . import NotCompilable

            c = self.compiled().control_values()
            return dict(zip(keys, (c[1], c[2], c[0], c[3])))
        except NotCompilable:
            pass
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = self.pysd_model()
            model.initialize()  # the control variables read the model's Time object
        time = model.time
        return {key: float(getattr(time, key)()) for key in keys}

    def default_value(self, name: str) -> Any:
        """A constant's value as the model file sets it."""
        real = self.real_name(name)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = self.pysd_model()
            model.initialize()
            return getattr(model.components, self.namespace[real])()

    def real_name(self, name: str) -> str:
        """The Vensim name for `name` (Vensim or Python name, any case)."""
        if name in self.namespace:
            return name
        if name in self._py_to_real:
            return self._py_to_real[name]
        lowered = name.lower()
        for real, py in self.namespace.items():
            if real.lower() == lowered or py.lower() == lowered:
                return real
        raise ParameterError(
            f"{self.path.name}: " + unknown_name_message("parameter", name, self.namespace)
        )

    # -- parameters -------------------------------------------------------------------
    def check_params(self, params: dict | None, range_check: str = "error") -> dict:
        """Validate `params` and return them keyed by Vensim name.

        Checks names (with close-match suggestions), types, shapes, finiteness and
        the documented ranges (`range_check`: "error", "warn" or "off").
        """
        if range_check not in ("error", "warn", "off"):
            raise ParameterError(
                f"range_check must be 'error', 'warn' or 'off', not {range_check!r}"
            )
        out = {}
        for name, value in (params or {}).items():
            real = self.real_name(str(name))
            if real in self.stocks:
                # PySD would replace the stock by the value: frozen, never integrated
                raise ParameterError(
                    f"{real!r} is a stock: a value for it would hold it fixed for the whole "
                    "run instead of integrating it; set the constant its initial value "
                    "comes from (see `flywheel describe`)"
                )
            _check_value(real, value)
            self._check_dims(real, value)
            if range_check != "off" and real in self.ranges:
                _check_range(real, value, self.ranges[real], range_check)
            out[real] = value
        return out

    @cached_property
    def subscripts(self) -> dict[str, list[str]]:
        """Subscript range -> its elements."""
        return {k: list(v) for k, v in self.pysd_model().subscripts.items()}

    def dims_of(self, name: str) -> list[str]:
        """The subscript ranges a variable is defined over ([] for a scalar)."""
        return list(self._dims.get(self.real_name(name), ()))

    @cached_property
    def _dims(self) -> dict[str, tuple[str, ...]]:
        out: dict[str, tuple[str, ...]] = {}
        for real, dims in zip(self.doc["Real Name"], self.doc["Subscripts"]):
            if real not in out:  # the first row of a name, as a lookup by name finds
                out[real] = tuple(dims) if isinstance(dims, (list, tuple)) else ()
        return out

    def _check_dims(self, name: str, value: Any) -> None:
        """An xarray value must use the variable's subscript ranges and their elements."""
        arrays = [value] if isinstance(value, xr.DataArray) else []
        if isinstance(value, pd.Series):
            arrays = [v for v in value.values if isinstance(v, xr.DataArray)][:1]
        if not arrays:
            return
        expected = self.dims_of(name)
        for array in arrays:
            shown = f"[{', '.join(expected)}]" if expected else "none (a scalar)"
            extra = [d for d in array.dims if d not in expected]
            if extra:
                raise ParameterError(
                    f"{name}: the value has dimension(s) {', '.join(map(repr, extra))} "
                    f"that the variable does not; its subscripts are {shown}"
                )
            for dim in array.dims:
                elements = self.subscripts.get(str(dim))  # a dim of `expected`: a str
                given = [str(c) for c in array.coords[dim].values] if dim in array.coords else None
                if elements is not None and given != [str(e) for e in elements]:
                    raise ParameterError(
                        f"{name}: dimension {dim!r} must have the elements "
                        f"{elements} in that order, got {given}"
                    )


def _short(value: Any) -> str:
    text = " ".join(repr(value).split())
    return text if len(text) <= 60 else text[:57] + "..."


def _finite_values(value: Any) -> np.ndarray:
    if isinstance(value, pd.Series):
        values = [v.values if isinstance(v, xr.DataArray) else v for v in value.values]
        return np.asarray(values, dtype=float)
    if isinstance(value, xr.DataArray):
        return np.asarray(value.values, dtype=float)
    return np.asarray(value, dtype=float)


def _check_value(name: str, value: Any) -> None:
    if callable(value) and not isinstance(value, (pd.Series, xr.DataArray)):
        return  # a user function replacing an equation: checked when it runs
    if value is None or isinstance(value, (bool, np.bool_, str, bytes)):
        raise ParameterError(f"{name}: expected a number, got {_short(value)}")
    if isinstance(value, (list, tuple, np.ndarray)) and not isinstance(value, xr.DataArray):
        raise ParameterError(
            f"{name}: a plain list/array has no subscript names; pass a number, an "
            "xarray.DataArray with the variable's dimensions, or a pandas.Series over time"
        )
    if isinstance(value, pd.Series):
        index = np.asarray(value.index, dtype=float)
        if len(index) == 0:
            raise ParameterError(f"{name}: the time series is empty")
        if not np.all(np.isfinite(index)) or np.any(np.diff(index) < 0):
            raise ParameterError(f"{name}: the time series index must be finite and sorted")
    try:
        values = _finite_values(value)
    except (TypeError, ValueError) as err:
        raise ParameterError(f"{name}: expected a number, got {_short(value)}") from err
    if not np.all(np.isfinite(values)):
        bad = values[~np.isfinite(values)].ravel()[0]
        where = (
            f"{np.count_nonzero(~np.isfinite(values))} of {values.size} values are"
            if values.size > 1
            else "value is"
        )
        raise ParameterError(f"{name}: {where} not finite ({bad})")


def _check_range(name: str, value: Any, bounds: tuple[float, float], mode: str) -> None:
    if callable(value) and not isinstance(value, (pd.Series, xr.DataArray)):
        return
    lo, hi = bounds
    values = _finite_values(value)
    bad = (not math.isnan(lo) and np.any(values < lo)) or (
        not math.isnan(hi) and np.any(values > hi)
    )
    if bad:
        shown = f"{values.min():g}..{values.max():g}" if values.size > 1 else f"{values.item():g}"
        span = f"[{'' if math.isnan(lo) else f'{lo:g}'}, {'' if math.isnan(hi) else f'{hi:g}'}]"
        msg = f"{name} = {shown} is outside its documented range {span}"
        if mode == "error":
            raise ParameterError(msg + " (pass range_check='warn' or 'off' to run it anyway)")
        warnings.warn(msg, RangeWarning, stacklevel=4)


class RangeWarning(UserWarning):
    """A parameter was set outside its documented range (with range_check='warn')."""
