"""Every use of PySD's translator internals by the compiler, in one place.

The compiler reads PySD's abstract model (a documented structure) and borrows two private
helpers from PySD's Python builder: its subscript manager (ranges, copied and sub-ranges,
mappings) and the merge rule that gives a variable's final subscripts. They are tested
against the PySD versions ``pyproject.toml`` allows (``tests/test_pysd_compat.py``).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

VENSIM_KIND = {
    "DataStructure": "DATA variables",
    "GetDataStructure": "GET XLS DATA",
    "GetLookupsStructure": "GET XLS LOOKUPS",
    "GetConstantsStructure": "GET XLS CONSTANTS",
    "DelayFixedStructure": "DELAY FIXED",
    "SampleIfTrueStructure": "SAMPLE IF TRUE",
    "AllocateAvailableStructure": "ALLOCATE AVAILABLE",
    "AllocateByPriorityStructure": "ALLOCATE BY PRIORITY",
    "SubscriptsReferenceStructure": "a subscript used as a value",
}


def parse(path: Path):
    """PySD's abstract model of a Vensim or XMILE file (its main section first)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if path.suffix.lower() == ".mdl":
            from pysd.translators.vensim.vensim_file import VensimFile

            source = VensimFile(path)
            source.parse()
        else:
            from pysd.translators.xmile.xmile_file import XmileFile

            source = XmileFile(path)
            source.parse()
        return source.get_abstract_model()


def _manager(section):
    manager = getattr(section, "_flywheel_subscripts", None)
    if manager is None:
        from pysd.builders.python.subscripts import SubscriptManager

        manager = SubscriptManager(section.subscripts, Path(section.path).parent)
        section._flywheel_subscripts = manager
    return manager


def subscript_ranges(section) -> dict[str, list[str]]:
    """Range name -> its elements (copied and nested sub-ranges resolved)."""
    return {k: list(v) for k, v in _manager(section).subscripts.items()}


def subscript_mappings(section) -> dict[str, list[str]]:
    """Range name -> the ranges it maps to (Vensim's ``A: a1, a2 -> B``)."""
    out = {}
    for name, targets in _manager(section).mapping.items():
        names = []
        for target in targets or []:
            names.append(
                target if isinstance(target, str) else getattr(target, "name", None) or str(target)
            )
        out[name] = names
    return out


def subscript_numbers(section) -> dict[str, tuple]:
    """A subscript range or element used as a value (``x[dim] = dim``), as PySD's
    ``subscript2num`` gives it: clean name -> (range, positions of its elements in their
    main range, 1-based) for a range, (None, [position]) for an element."""
    manager = _manager(section)
    out: dict = {}
    for main, subranges in manager.subranges.items():
        elements = list(manager.subscripts[main])
        out[_clean(main)] = (main, [float(i) for i in range(1, len(elements) + 1)])
        for i, element in enumerate(elements, start=1):
            out[_clean(element)] = (None, [float(i)])
        for sub in subranges:
            out[_clean(sub)] = (
                sub,
                [float(elements.index(e) + 1) for e in manager.subscripts[sub]],
            )
    return out


def _clean(name: str) -> str:
    return name.replace(" ", "_").lower()


def final_dims(section, element) -> list[str]:
    """The subscript ranges a variable is defined over, merged across its equations."""
    subs = [component.subscripts[0] for component in element.components]
    if not any(subs):
        return []
    return list(_manager(section).make_merge_list(subs, element.name))


def is_control(element) -> bool:
    return type(element).__name__ == "AbstractControlElement"


def is_lookup(element) -> bool:
    return any(getattr(c, "type", "") == "Lookup" for c in element.components)


def ast_kind(ast) -> str:
    if isinstance(ast, np.ndarray):
        return "ndarray"
    return type(ast).__name__


def reference_name(ast) -> str:
    """The name in a bare reference (ELMCOUNT's argument)."""
    if ast_kind(ast) == "ReferenceStructure":
        return ast.reference if not ast.subscripts else ast.subscripts.subscripts[0]
    raise ValueError(f"not a reference: {ast!r}")


def _nodes(ast):
    """Every node of an abstract syntax tree, depth first."""
    yield ast
    for value in getattr(ast, "__dict__", {}).values():
        for item in value if isinstance(value, (list, tuple)) else [value]:
            if hasattr(item, "__dict__"):
                yield from _nodes(item)


def bang_subscripts(ast) -> list[str]:
    """Every ``Range!`` subscript used inside `ast`, in order of appearance."""
    return [
        s
        for node in _nodes(ast)
        if ast_kind(node) == "SubscriptsReferenceStructure"
        for s in node.subscripts
        if s.endswith("!")
    ]


def has_computed_order(ast) -> bool:
    """Whether `ast` holds a SMOOTH N or DELAY N whose order is not a number."""
    return any(
        ast_kind(node) in ("SmoothNStructure", "DelayNStructure")
        and not isinstance(node.order, (int, float, np.integer, np.floating))
        for node in _nodes(ast)
    )


_EXTERNAL_KEYS = {
    "GetConstantsStructure": "__external__",
    "GetLookupsStructure": "__lookup__",
    "GetDataStructure": "__data__",
    "DataStructure": "__data__",
}


_OBJECT_PREFIX = {
    "GetConstantsStructure": "_ext_constant_",
    "GetLookupsStructure": "_ext_lookup_",
    "GetDataStructure": "_ext_data_",
    "DataStructure": "_data_",
}


def external_values(pysd_model, name: str, kind: str, combo: tuple):
    """What PySD reads for element `combo` of the variable `name` defined by GET XLS/
    DIRECT CONSTANTS, LOOKUPS or DATA or by a DATA variable (from the model's data
    files): ``(None, value, None)`` for a constant, ``(xs, ys, interp)`` for a lookup or a
    data series (interp: PySD's interpolation keyword). Read through PySD's own External
    and TabData objects of the loaded model, so values match its run() exactly."""
    import xarray as xr

    py_name = pysd_model.namespace[name]
    # PySD's builder names the objects so (an element mixing GET XLS CONSTANTS and DATA
    # has one of each)
    obj = getattr(pysd_model.components, _OBJECT_PREFIX[kind] + py_name)
    if getattr(obj, "data", None) is None and hasattr(obj, "initialize"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            obj.initialize()
    data = obj.data
    if data is None:
        raise ValueError(f"{name}: PySD has no data for it (data_files not given?)")
    axis = {"__external__": None, "__lookup__": "lookup_dim", "__data__": "time"}[
        _EXTERNAL_KEYS[kind]
    ]
    if isinstance(data, xr.DataArray):
        dims = [d for d in data.dims if d != axis]
        if len(dims) != len(combo):
            raise ValueError(
                f"{name}: {len(dims)} dimensions in PySD's data, {len(combo)} subscripts"
            )
        if dims:
            data = data.sel(dict(zip(dims, combo)))
        if axis is None:
            return None, float(data), None
        xs = np.asarray(data[axis].values, dtype=float)
        ys = np.asarray(data.values, dtype=float).reshape(-1)
    else:
        if axis is None:
            return None, float(data), None
        raise ValueError(f"{name}: PySD's data is not a series")
    return xs, ys, getattr(obj, "interp", "interpolate")


def real_names(section) -> list[str]:
    return [element.name for element in section.elements]


def time_grid(
    t0: float, t1: float, dt: float, saveper: float, return_timestamps=None
) -> tuple[int, np.ndarray, np.ndarray]:
    """PySD's fixed-step clock: the number of steps, which step times it records (a bool
    per step time, the final one included) and the recorded times as its output index
    shows them (rounded as ``Time.round()`` does). Walked on PySD's own `Time` object, so
    the grid cannot drift from ``run()``."""
    from pysd.py_backend.components import Time

    time = Time()
    time.set_control_vars(initial_time=t0, final_time=t1, time_step=dt, saveper=saveper)
    time.add_return_timestamps(return_timestamps)
    save, index = [], []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # return times off the grid: PySD drops them too
        while True:
            inside = time.in_bounds()
            if time.in_return():
                save.append(True)
                index.append(float(time.round()))
            else:
                save.append(False)
            if not inside:
                break
            time.update(time() + dt)
    return len(save) - 1, np.array(save, dtype=bool), np.array(index, dtype=float)


# -- the PySD path: private names of PySD's runtime objects ---------------------------------
# The PySD path (pysd_path.py, simulate.py's `_Run`) drives a loaded PySD model directly.
# These are the private attributes it needs, each behind one function, so a PySD release
# that renames one breaks here, and `tests/test_pysd_compat.py` says which.


def dynamic_elements(container) -> list:
    """The stateful elements a PySD model (or macro) integrates."""
    return list(container._dynamicstateful_elements)


def dependencies(pysd_model) -> dict:
    """Python name -> the names it depends on (PySD's dependency table)."""
    return pysd_model._dependencies


def set_state(element, value) -> None:
    """Write a stateful element's state without PySD's checks (the hot path)."""
    element._state = value


def components_namespace(pysd_model) -> dict:
    """The translated module's namespace (its component functions, by Python name)."""
    return vars(pysd_model.components._components)


def clock(time) -> float:
    """The value a PySD `Time` object holds."""
    return time._time


def set_clock(time, value) -> None:
    """Set a PySD `Time` object's value, which may be an array (vectorised evaluation)."""
    time._time = value


def configure_run(
    pysd_model, params, return_columns, return_timestamps, final_time, time_step, saveper
) -> None:
    """Configure a PySD model exactly as ``Model.run()`` does before its loop."""
    pysd_model._stepper_mode = False
    pysd_model._config_simulation(
        params or None,
        return_columns,
        return_timestamps,
        "original",
        final_time,
        time_step,
        saveper,
        cache_output=True,
        progress=False,
    )


def set_control_vars(pysd_model, return_timestamps, final_time, time_step, saveper) -> None:
    """Apply a run's control-variable overrides to a PySD model."""
    pysd_model._set_control_vars(return_timestamps, final_time, time_step, saveper)


def subscript_dict(pysd_model) -> dict:
    """Subscript range -> its elements, as the loaded PySD model holds them."""
    return pysd_model._subscript_dict
