"""A model compiled to flat array code: its program, its generated modules, its constants.

The program (layout and code text) and the generated modules are cached next to PySD's
translation of the model, in the folder keyed by the model's content hash, so a second
process reads them in milliseconds. A model the compiler does not cover is remembered
there too, with the reason, and runs on the PySD path.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import pickle
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np

from . import modules
from .compiler import NotCompilable, Program

COMPILER_VERSION = "11"
_MEMO: dict = {}
_LOCK = threading.Lock()


class CompiledModel:
    """A compiled variant of a model (a variant differs in which constants are given as
    time series, and with how many knots)."""

    def __init__(self, program: Program, folder: Path, stem: str, dims: dict):
        self.program = program
        self.folder = folder
        self.stem = stem
        self.dims = dims  # Vensim name -> subscript ranges (for DataArray values)
        self._modules: dict = {}
        self.single_runs = 0  # one-off runs in this process (see run.choose_backend)
        self.strategy: dict = {}  # (method, runs) -> NumPy lock-step beats Numba?

    # -- generated modules ------------------------------------------------------------
    def path(self, backend: str) -> Path:
        return self.folder / f"{self.stem}_{backend}.py"

    def module(self, backend: str):
        """The generated module for `backend`, written once: "python" or "numba" (scalar
        code), or "numpy" (the same code over rows of members, for lock-step ensembles)."""
        mod = self._modules.get(backend)
        if mod is None and backend == "numpy":
            from ._codegen import RUNTIME_VECTOR

            body = RUNTIME_VECTOR + self.program.body + "\n\n_vector_lookups(globals())\n"
            mod = modules.load_module(self.path(backend), body, "python")
            self._modules[backend] = mod
        elif mod is None:
            mod = modules.load_module(self.path(backend), _body(self.program), backend)
            self._modules[backend] = mod
        return mod

    def numba_is_warm(self) -> bool:
        """Whether Numba's on-disk cache of this model's drivers exists (a fresh process
        then runs compiled code at once instead of compiling for seconds)."""
        cache = self.folder / "__pycache__"
        return any(cache.glob(f"{self.stem}_numba.euler-*.nbi")) if cache.exists() else False

    def warm_in_background(self) -> None:
        """Compile the Numba module in a detached process, once, so that later runs find
        the on-disk cache; this process meanwhile runs on the Python backend."""
        if (
            not modules.numba_available()
            or os.environ.get("FLYWHEEL_SD_JIT") == "off"
            or os.name != "posix"
        ):
            return
        marker = self.folder / f"{self.stem}_numba.warming"
        try:
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except OSError:
            return  # another process is warming it, or has tried
        os.close(fd)
        modules.write_module(self.path("numba"), _body(self.program), "numba")
        # through a shell that backgrounds it and exits: the warmer outlives this process
        # and is never a child to wait for
        subprocess.run(
            [
                "sh",
                "-c",
                '"$@" </dev/null >/dev/null 2>&1 &',
                "sh",
                sys.executable,
                "-m",
                "flywheel_sd.engine.warm",
                str(self.path("numba")),
            ],
            check=False,
            timeout=10,
        )

    def control_values(self) -> list[float]:
        """TIME STEP, INITIAL TIME, FINAL TIME and SAVEPER as the file sets them (after
        setup, so a SAVEPER given as TIME STEP is resolved)."""
        c = self.constants({}, {})
        with np.errstate(all="ignore"):
            self.module("python").setup(c)
        return [float(v) for v in c[:4]]

    # -- constants --------------------------------------------------------------------
    def constants(self, params: dict, control: dict) -> np.ndarray:
        """The c vector of one run: the file's constants, then `params` (Vensim names,
        validated), then the control variables in `control` (final_time, ...)."""
        p = self.program
        c = np.array(p.c_default, dtype=float)
        c[4] = 0.0  # PySD's time functions on the fixed-step grid; adaptive runs set 1
        for name, value in params.items():
            self.set_param(c, name, value)
        for key, slot in (
            ("time_step", 0),
            ("initial_time", 1),
            ("final_time", 2),
            ("saveper", 3),
        ):
            if control.get(key) is not None:
                c[slot] = float(control[key])
        if math.isnan(c[3]):
            c[3] = c[0]  # SAVEPER defaults to TIME STEP
        return c

    def set_param(self, c: np.ndarray, name: str, value) -> None:
        import pandas as pd

        p = self.program
        if name in p.series:
            slot, n = p.series[name]
            series = value if isinstance(value, pd.Series) else None
            if series is None or len(series) != n:
                raise NotCompilable(f"{name}: time series variant mismatch")
            c[slot : slot + n] = np.asarray(series.index, dtype=float)
            c[slot + n : slot + 2 * n] = np.asarray(series.values, dtype=float)
            return
        slots = p.params.get(name)
        if slots is None:
            raise NotCompilable(f"{name!r} is not a constant of the model")
        c[slots] = self.values_for(name, value, len(slots))

    def values_for(self, name: str, value, size: int) -> np.ndarray:
        """A parameter value as floats in the variable's element order."""
        import xarray as xr

        if isinstance(value, xr.DataArray):
            dims = [d for d in self.dims.get(name, []) if d in value.dims]
            array = value.transpose(*dims).values if dims else value.values
            return (
                np.broadcast_to(np.asarray(array, dtype=float).ravel(), (size,))
                if array.size in (1, size)
                else _shape_error(name)
            )
        if callable(value):
            raise NotCompilable(f"{name} is given as a function")
        return np.full(size, float(value))


def _shape_error(name):
    raise NotCompilable(f"{name}: value does not cover its subscripts")


def _body(program: Program) -> str:
    from ._codegen import RUNTIME_SCALAR

    return RUNTIME_SCALAR + program.body


def series_signature(params: dict) -> dict:
    """The variant a run needs: constants given as time series, with their knot counts."""
    import pandas as pd

    return {name: len(v) for name, v in params.items() if isinstance(v, pd.Series)}


def compiled(model, series: dict | None = None) -> CompiledModel:
    """The compiled form of `model` (a `flywheel_sd.Model`), from the cache or compiled now.

    Raises
    ------
    NotCompilable
        The model (or this variant) uses something the compiler does not cover.
    """
    series = dict(sorted((series or {}).items()))
    folder = Path(model.py_file).parent
    variant = (
        hashlib.sha256(repr(sorted(series.items())).encode()).hexdigest()[:10]
        if series
        else "base"
    )
    stem = f"compiled_v{COMPILER_VERSION}_{variant}"
    memo_key = (str(folder), stem)
    with _LOCK:
        found = _MEMO.get(memo_key)
    if isinstance(found, CompiledModel):
        return found
    if isinstance(found, str):
        raise NotCompilable(found)
    pickled = folder / f"{stem}.pkl"
    refused = folder / f"{stem}.refused"
    try:
        if refused.exists():
            raise NotCompilable(refused.read_text(encoding="utf-8").strip())
        program = _read_program(pickled)
        if program is None:
            _remove_other_versions(folder)
            program = _compile(model, series, refused)
            _write_atomic(pickled, pickle.dumps(program))
    except NotCompilable as err:
        with _LOCK:
            _MEMO[memo_key] = str(err)
        raise
    dims = {name: model.dims_of(name) for name in program.params}
    result = CompiledModel(program, folder, stem, dims)
    with _LOCK:
        _MEMO[memo_key] = result
    return result


def _compile(model, series: dict, refused: Path) -> Program:
    from . import _pysd_compat as compat
    from .compiler import Compiler

    source = Path(model.path)
    if source.suffix.lower() not in (".mdl", ".xmile", ".stmx", ".xml"):
        raise NotCompilable("a PySD-translated .py has no abstract model to compile")
    try:
        abstract = compat.parse(source)
        return Compiler(
            abstract.sections[0], series, model.pysd_model, macros=abstract.sections[1:]
        ).compile()
    except NotCompilable as err:
        if not series:  # a refused variant may still compile without its time series
            _write_atomic(refused, str(err).encode("utf-8"))
        raise
    except (KeyError, ValueError, TypeError, AttributeError, IndexError) as err:
        # a construct whose abstract syntax we read wrongly: never guess, use PySD
        message = f"the compiler could not read it ({type(err).__name__}: {err})"
        _write_atomic(refused, message.encode("utf-8"))
        raise NotCompilable(message) from err


def _remove_other_versions(folder: Path) -> None:
    """Drop what an older (or newer) compiler version left in the model's cache folder:
    programs, generated modules, refusals and their Numba caches."""
    mine = f"compiled_v{COMPILER_VERSION}_"
    for place in (folder, folder / "__pycache__"):
        if not place.is_dir():
            continue
        for path in place.glob("compiled_v*"):
            if not path.name.startswith(mine):
                # in use elsewhere, or read-only: harmless, only space
                with contextlib.suppress(OSError):
                    path.unlink()


def _read_program(path: Path) -> Program | None:
    try:
        with open(path, "rb") as f:
            program = pickle.load(f)
    except (OSError, EOFError, pickle.UnpicklingError, AttributeError, TypeError):
        return None  # missing or unreadable: compile again (the cache heals)
    return program if isinstance(program, Program) else None


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)  # a read-only cache: work from memory
