"""Broadcasting versions of PySD's helper functions, for ensemble runs.

PySD's translated models call helpers (``if_then_else``, ``zidz``, ``pulse``, lookups, ...)
written for one run: they branch with Python ``if`` on a value, which fails (or, worse,
silently picks one branch) when the value is an array holding N ensemble members. For an
ensemble run only, `patch_namespace` swaps these names in the translated module's globals
for versions that broadcast over the ensemble axis (``np.where``/``xr.where`` based); on
scalars each delegates to PySD's original, so a member sees exactly what a single run does.

How the ensemble axis is carried (see `flywheel_sd._ensemble`):

* a value that is a number in a single run (a scalar variable) is a NumPy array of shape
  (N,) -- fast, and what most of a model computes;
* a subscripted value is an ``xarray.DataArray`` with an extra dimension `RUN`, so that it
  broadcasts against subscripts by name, never by position.

Where the two meet (``DataArray * ndarray``, ``np.maximum(DataArray, ndarray)``), xarray
would broadcast the NumPy array by position. While an ensemble of N runs in a thread
(`active`), hooks on ``DataArray`` arithmetic and ufuncs read a 1-D array of length N as a
``RUN`` vector, and hand results that only vary over ``RUN`` back as NumPy arrays. N is
padded so that no other axis of the model (subscript range, delay order, lookup table) has
length N. In generated code, ``float``, ``np.interp`` and ``xr.DataArray`` are replaced to
the same end.

The same hooks also skip xarray's index alignment where indexes are equal (it cannot change
the result, and it is most of the cost of an operation on small arrays): `simulate` turns
them on for single runs too (``active(None)``). Outside `active`, and in other threads,
the hooks do nothing.
"""

from __future__ import annotations

import builtins
import contextlib
import threading
from typing import Any

import numpy as np
import xarray as xr
from pysd.py_backend import functions as pysd_functions
from pysd.py_backend.lookups import Lookups
from xarray.core.dataarray import _LocIndexer

RUN = "_run"  # the ensemble dimension inside PySD's objects (renamed "run" in results)
SMALL_VENSIM = pysd_functions.SMALL_VENSIM


_state = threading.local()


@contextlib.contextmanager
def active(n: int | None):
    """Mark this thread as running an ensemble of `n` members (see the module doc).

    ``n=None`` is a single run: only the fast paths of the hooks apply (they skip
    xarray's index alignment where indexes are equal, which cannot change a result).
    """
    install_xarray_hooks()
    previous = _state.__dict__.copy()
    _state.on, _state.n = True, n
    _state.template = None if n is None else xr.DataArray(np.zeros(n), dims=[RUN])
    try:
        yield
    finally:
        _state.__dict__.clear()
        _state.__dict__.update(previous)


def as_run_array(x):
    """A 1-D NumPy array of the active ensemble's length, as a ``RUN`` DataArray."""
    n = getattr(_state, "n", None)
    if n is not None and type(x) is np.ndarray and x.ndim == 1 and x.shape[0] == n:
        template = _state.template
        if _FAST["on"]:
            try:
                return template._replace(xr.Variable((RUN,), x, fastpath=True))
            except (AttributeError, TypeError):
                _FAST["on"] = False
        return template.copy(deep=False, data=x)
    return x


def scalarize(x):
    """A DataArray that only varies over ``RUN``, as the NumPy array a scalar would be."""
    if isinstance(x, xr.DataArray) and x.dims == (RUN,):
        return x.values
    return x


_hook_lock = threading.Lock()
_FAST = {"on": True}  # switched off for good if xarray's internals ever differ


def _plain_indexes(da: xr.DataArray):
    """The indexes of `da` if it has no coordinates besides them, else None."""
    indexes = da._indexes
    return indexes if len(da._coords) == len(indexes) else None


def _fast_binary(self, other, f, reflexive):
    """``self (op) other`` without xarray's alignment, when no alignment can change it:
    a number, or a DataArray whose shared indexes equal ours (else None: the slow path)."""
    if isinstance(other, (int, float, np.number)):
        variable = f(other, self.variable) if reflexive else f(self.variable, other)
        return self._replace(variable)
    if type(other) is not xr.DataArray:
        return None
    si, oi = _plain_indexes(self), _plain_indexes(other)
    if si is None or oi is None:
        return None
    for key in si.keys() & oi.keys():
        if si[key] is not oi[key] and not si[key].equals(oi[key]):
            return None
    variable = (f(other.variable, self.variable) if reflexive
                else f(self.variable, other.variable))
    coords = {**other._coords, **self._coords}
    return self._replace(variable, coords, name=None, indexes={**oi, **si})


def _fast_ufunc(self, ufunc, method, inputs, kwargs):
    """A ufunc of DataArrays (and numbers) whose shared indexes are equal, computed on
    the data broadcast by dimension name; else None."""
    if method != "__call__" or kwargs:
        return None
    if any(not isinstance(x, (xr.DataArray, int, float, np.number)) for x in inputs):
        return None
    arrays = [x for x in inputs if isinstance(x, xr.DataArray)]
    indexes, coords = {}, {}
    for x in arrays:
        xi = _plain_indexes(x)
        if xi is None:
            return None
        for key, index in xi.items():
            known = indexes.setdefault(key, index)
            if known is not index and not known.equals(index):
                return None
        coords.update(x._coords)
    variables = xr.core.variable.broadcast_variables(*[x.variable for x in arrays])
    it = iter(variables)
    data = ufunc(*[next(it).data if isinstance(x, xr.DataArray) else x for x in inputs])
    dims = variables[0].dims
    if not isinstance(data, np.ndarray) or data.shape != variables[0].shape:
        return None
    return arrays[0]._replace(xr.Variable(dims, data), coords, name=None, indexes=indexes)


def install_xarray_hooks() -> None:
    """Wrap ``DataArray`` arithmetic and ufuncs (once per process; inert when inactive).

    While active, they also skip xarray's index alignment where it cannot change the
    result (indexes equal), which is most of the cost of an operation on small arrays.
    """
    with _hook_lock:
        binary = xr.DataArray._binary_op
        if not getattr(binary, "_flywheel_hook", False):
            def _binary_op(self, other, f, reflexive=False, _original=binary):
                if not getattr(_state, "on", False):
                    return _original(self, other, f, reflexive)
                other = as_run_array(other)
                if _FAST["on"]:
                    try:
                        out = _fast_binary(self, other, f, reflexive)
                    except (AttributeError, TypeError):
                        _FAST["on"] = False
                        out = None
                    if out is not None:
                        return scalarize(out)
                return scalarize(_original(self, other, f, reflexive))

            _binary_op._flywheel_hook = True
            xr.DataArray._binary_op = _binary_op
        ufunc = xr.DataArray.__array_ufunc__
        if not getattr(ufunc, "_flywheel_hook", False):
            def __array_ufunc__(self, ufunc_, method, *inputs, _original=ufunc, **kwargs):
                if not getattr(_state, "on", False):
                    return _original(self, ufunc_, method, *inputs, **kwargs)
                inputs = tuple(as_run_array(x) for x in inputs)
                if _FAST["on"]:
                    try:
                        out = _fast_ufunc(self, ufunc_, method, inputs, kwargs)
                    except (AttributeError, TypeError):
                        _FAST["on"] = False
                        out = None
                    if out is not None:
                        return scalarize(out)
                return scalarize(_original(self, ufunc_, method, *inputs, **kwargs))

            __array_ufunc__._flywheel_hook = True
            xr.DataArray.__array_ufunc__ = __array_ufunc__
        loc_get = _LocIndexer.__getitem__
        if not getattr(loc_get, "_flywheel_hook", False):
            def __getitem__(self, key, _original=loc_get):
                # Generated code selects by position (``x.loc["Low"]``), meaning the
                # subscript dims; the ensemble's RUN dim may stand anywhere among them.
                da = self.data_array
                if (getattr(_state, "n", None) is not None and RUN in da.dims
                        and not isinstance(key, dict)):
                    labels = key if isinstance(key, tuple) else (key,)
                    key = dict(zip([d for d in da.dims if d != RUN], labels))
                return scalarize(_original(self, key))

            __getitem__._flywheel_hook = True
            _LocIndexer.__getitem__ = __getitem__


def _is_vector(value: Any) -> bool:
    return isinstance(value, (np.ndarray, xr.DataArray)) and value.ndim > 0


def _where(condition, a, b):
    if any(isinstance(v, xr.DataArray) for v in (condition, a, b)):
        return scalarize(xr.where(as_run_array(condition), as_run_array(a), as_run_array(b)))
    return np.where(condition, a, b)


# -- logic and arithmetic helpers ----------------------------------------------------------
def if_then_else(condition, val_if_true, val_if_false):
    """IF THEN ELSE over an ensemble: one branch when all members agree, else ``where``."""
    if _is_vector(condition):
        flags = condition.values if isinstance(condition, xr.DataArray) else condition
        if flags.all():
            return val_if_true()
        if not flags.any():
            return val_if_false()
        with np.errstate(all="ignore"):
            return _where(condition, val_if_true(), val_if_false())
    return val_if_true() if condition else val_if_false()


def xidz(numerator, denominator, x):
    if not (_is_vector(denominator) or _is_vector(numerator) or _is_vector(x)):
        return pysd_functions.xidz(numerator, denominator, x)
    with np.errstate(all="ignore"):
        return _where(np.abs(denominator) < SMALL_VENSIM, x, numerator / denominator)


def zidz(numerator, denominator):
    if not (_is_vector(denominator) or _is_vector(numerator)):
        return pysd_functions.zidz(numerator, denominator)
    with np.errstate(all="ignore"):
        return _where(np.abs(denominator) < SMALL_VENSIM, 0.0, numerator / denominator)


def integer(x):
    if isinstance(x, xr.DataArray):
        return pysd_functions.integer(x)
    if _is_vector(x):
        return np.trunc(x)
    return pysd_functions.integer(x)


def quantum(a, b):
    if not (_is_vector(a) or _is_vector(b)):
        return pysd_functions.quantum(a, b)
    with np.errstate(all="ignore"):
        return _where(b < SMALL_VENSIM, a, b * integer(a / b))


def modulo(x, m):
    return x - quantum(x, m)


def to_float(x):
    """``float(...)`` in generated code, letting an ensemble value through."""
    if _is_vector(x) and x.size > 1:
        x = scalarize(x)
        return x.astype(float) if isinstance(x, np.ndarray) else x
    return builtins.float(x)


def _reducer(original, numpy_func):
    """SUM/PROD/VMIN/VMAX over subscripts: straight to NumPy when only the ensemble axis
    remains (the common case, a total over a range), else PySD's own."""

    def reduce(x, dim=None):
        if isinstance(x, xr.DataArray) and RUN in x.dims and dim is not None:
            rest = [d for d in x.dims if d not in dim]
            if rest == [RUN] and set(dim) <= set(x.dims):
                axes = tuple(i for i, d in enumerate(x.dims) if d != RUN)
                return numpy_func(x.values, axis=axes)
        return scalarize(original(x, dim)) if dim is not None else original(x)

    reduce.__name__ = original.__name__
    return reduce


def _pulse_on(t, start, repeat_time, width, end, small):
    """Where a PULSE / PULSE TRAIN is on, for array arguments."""
    with np.errstate(all="ignore"):
        single = (start - small <= t) & (t < start + width)
        train = (start <= t) & ((t - start + small) % np.where(repeat_time == 0, 1, repeat_time)
                                < width)
        if end is not None:
            train = train & (t < end)
    if _is_vector(repeat_time) or repeat_time != 0:
        return _where(repeat_time == 0, single, train)
    return single


def pulse(time, start, repeat_time=0, width=None, magnitude=None, end=None):
    """PySD's (Euler) PULSE, broadcasting over the ensemble."""
    args = (start, repeat_time, width, magnitude, end)
    if not any(_is_vector(a) for a in args):
        return pysd_functions.pulse(time, start, repeat_time, width, magnitude, end)
    dt = time.time_step()
    width = 0.5 * dt if width is None else width
    out = magnitude / dt if magnitude is not None else 1.0
    return _where(_pulse_on(time(), start, repeat_time, width, end, SMALL_VENSIM), out, 0.0)


def exact_time_functions(time) -> dict:
    """STEP and PULSE switching exactly at their times, for adaptive methods.

    The ensemble twin of `flywheel_sd._system.exact_time_functions` (same semantics).
    """

    def step(_time, value, tstep):
        return value * (time() >= tstep)

    def exact_pulse(_time, start, repeat_time=0, width=None, magnitude=None, end=None):
        dt = time.time_step()
        width = dt if width is None else width
        out = magnitude / dt if magnitude is not None else 1
        args = (start, repeat_time, width, magnitude, end)
        if not any(_is_vector(a) for a in args):
            t = time()
            if repeat_time == 0:
                return out if start <= t < start + width else 0
            if start <= t and (end is None or t < end):
                return out if (t - start) % repeat_time < width else 0
            return 0
        return _where(_pulse_on(time(), start, repeat_time, width, end, 0.0), out, 0.0)

    return {"step": step, "pulse": exact_pulse}


# -- lookups -------------------------------------------------------------------------------
def _interp(x: np.ndarray, xs: np.ndarray, ys: np.ndarray, mode: str) -> np.ndarray:
    """PySD's lookup semantics on an array: linear inside, held (or extrapolated) outside."""
    n = len(xs)
    if mode == "hold_backward":
        idx = np.clip(np.searchsorted(xs, x, side="right") - 1, 0, n - 1)
        return ys[idx]
    if mode != "extrapolate" or n < 2:
        return np.interp(x, xs, ys)
    i = np.clip(np.searchsorted(xs, x, side="right") - 1, 0, n - 2)
    x0, x1 = xs[i], xs[i + 1]
    return ys[i] + (x - x0) * (ys[i + 1] - ys[i]) / (x1 - x0)


class VectorLookup:
    """Stands in for a PySD ``Lookups`` object; broadcasts over the ensemble axis."""

    def __init__(self, original: Lookups):
        self.original = original

    def __getattr__(self, name):
        return getattr(self.original, name)

    def __call__(self, x, final_subs=None):
        if not _is_vector(x) or (isinstance(x, xr.DataArray) and RUN not in x.dims):
            return self.original(x, final_subs)
        data = self.original.data
        if not isinstance(data, xr.DataArray):  # the user replaced the lookup by a constant
            return self.original(x, final_subs)
        mode = getattr(self.original, "interp", "interpolate")
        xs = data["lookup_dim"].values.astype(float)
        others = [d for d in data.dims if d != "lookup_dim"]
        if isinstance(x, np.ndarray):
            if not others:
                return _interp(x, xs, data.values.astype(float), mode)
            x = as_run_array(x)
            if not isinstance(x, xr.DataArray):
                raise TypeError("subscripted lookup called with a plain array")
        if not others:
            out = x.copy(data=_interp(x.values, xs, data.values.astype(float), mode))
        else:
            template = data.isel(lookup_dim=0, drop=True)
            xb = xr.broadcast(x, template)[0]
            lead = [d for d in xb.dims if d not in others]
            xb = xb.transpose(*lead, *others)
            ys = data.transpose(*others, "lookup_dim").values.astype(float)
            flat_x = xb.values.reshape(xb.shape[: len(lead)] + (-1,))
            flat_y = ys.reshape(-1, len(xs))
            res = np.empty_like(flat_x, dtype=float)
            for j in range(flat_y.shape[0]):
                res[..., j] = _interp(flat_x[..., j], xs, flat_y[j], mode)
            out = xb.copy(data=res.reshape(xb.shape))
        if final_subs:
            out = (xr.DataArray(0.0, final_subs, list(final_subs)) + out)
            out = out.transpose(RUN, *[d for d in out.dims if d != RUN]) if RUN in out.dims else out
        return scalarize(out)


# -- numpy / xarray proxies for xarray mode --------------------------------------------------
class _NumpyProxy:
    """``np`` for generated code: NumPy, except that ``interp`` keeps an xarray's dims."""

    def __getattr__(self, name):
        value = getattr(np, name)
        self.__dict__[name] = value
        return value

    @staticmethod
    def interp(x, xp, fp, left=None, right=None, period=None):
        if isinstance(x, xr.DataArray) and x.ndim:
            return scalarize(x.copy(data=np.interp(x.values, xp, fp, left, right, period)))
        return np.interp(x, xp, fp, left, right, period)


class _DataArrayMeta(type):
    def __instancecheck__(cls, obj):
        return isinstance(obj, xr.DataArray)

    def __call__(cls, data=None, coords=None, dims=None, *args, **kwargs):
        data = as_run_array(data)
        if isinstance(data, xr.DataArray) and RUN in data.dims and dims is not None:
            # generated code wrapping an ensemble value into its declared subscripts
            want = [dims] if isinstance(dims, str) else list(dims)
            rest = set(data.dims) - {RUN}
            if rest == set(want):
                out = data.transpose(RUN, *want)
                if isinstance(coords, dict):
                    new = {d: coords[d] for d in want if d in coords and not (
                        d in out.coords and np.array_equal(out.coords[d].values,
                                                           np.asarray(coords[d])))}
                    if new:
                        out = out.assign_coords(new)
                return out
            if rest < set(want):
                template = xr.DataArray(0.0, coords, want)
                return (template + data).transpose(RUN, *want)
        if data is None:
            return xr.DataArray(None, coords, dims, *args, **kwargs)
        return xr.DataArray(data, coords, dims, *args, **kwargs)


class _DataArrayFactory(metaclass=_DataArrayMeta):
    pass


class _XarrayProxy:
    """``xr`` for generated code: xarray, except ``DataArray(...)`` of an ensemble value."""

    DataArray = _DataArrayFactory

    def __getattr__(self, name):
        value = getattr(xr, name)
        self.__dict__[name] = value
        return value


# -- patching ------------------------------------------------------------------------------
_FUNCTIONS = {
    "if_then_else": if_then_else, "xidz": xidz, "zidz": zidz, "integer": integer,
    "quantum": quantum, "modulo": modulo, "pulse": pulse,
    # NaN-skipping, as xarray's reductions that PySD uses are
    "sum": _reducer(pysd_functions.sum, np.nansum),
    "prod": _reducer(pysd_functions.prod, np.nanprod),
    "vmin": _reducer(pysd_functions.vmin, np.fmin.reduce),
    "vmax": _reducer(pysd_functions.vmax, np.fmax.reduce),
}


def patch_namespace(namespace: dict, mode: str, extra: dict | None = None) -> dict:
    """Swap broadcasting helpers into a translated module's globals.

    Returns the replaced entries, for `restore_namespace`. `extra` adds more (the exact
    STEP/PULSE of the adaptive methods).
    """
    saved: dict[str, Any] = {}

    def put(name, value, always=False):
        if name in namespace or always:
            saved[name] = namespace.get(name, _MISSING)
            namespace[name] = value

    for name, func in {**_FUNCTIONS, **(extra or {})}.items():
        put(name, func)
    put("float", to_float, always=True)
    for name, value in list(namespace.items()):
        if isinstance(value, Lookups):
            put(name, VectorLookup(value))
    if mode == "xarray":
        put("np", _NumpyProxy())
        put("xr", _XarrayProxy())
    return saved


def replace(namespace: dict, functions: dict) -> dict:
    """Replace the entries of `namespace` named in `functions`; return what was there."""
    saved = {}
    for name, func in functions.items():
        if name in namespace:
            saved[name] = namespace[name]
            namespace[name] = func
    return saved


def restore_namespace(namespace: dict, saved: dict) -> None:
    for name, value in saved.items():
        if value is _MISSING:
            namespace.pop(name, None)
        else:
            namespace[name] = value


_MISSING = object()
