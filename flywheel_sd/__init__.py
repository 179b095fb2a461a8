"""flywheel_sd: system dynamics of e-commerce platform flywheels.

Vensim models loaded with PySD, integrated with SciPy's ODE solvers.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from .errors import FlywheelError as FlywheelError

__version__ = "0.1.0"

# Public name -> the module that defines it (None: the name is a submodule). They are
# imported on first use (PEP 562), so `import flywheel_sd` and `flywheel --help` do not pay
# for PySD, SciPy, xarray and pandas, which take most of a second to import.
_LAZY: dict[str, str | None] = {
    "metrics": None,
    "scenarios": None,
    "designs": None,
    "CriticalMass": "._compare",
    "compare": "._compare",
    "critical_mass": "._compare",
    "run_scenario": "._compare",
    "METHODS": "._integrate",
    "simulate": "._integrate",
    "Model": "._model",
    "RangeWarning": "._model",
    "load": "._model",
    "EnsembleFallbackWarning": "._ensemble",
    "fan_chart": "._sensitivity",
    "sensitivity": "._sensitivity",
    "tornado_chart": "._sensitivity",
    "sweep": "._sweep",
}

__all__ = [
    "METHODS", "CriticalMass", "EnsembleFallbackWarning", "FlywheelError", "Model",
    "RangeWarning", "__version__", "compare", "critical_mass", "designs", "fan_chart", "load",
    "metrics", "run_scenario", "scenarios", "sensitivity", "simulate", "sweep",
    "tornado_chart",
]


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = _LAZY[name]
    if module is None:
        value = importlib.import_module(f".{name}", __name__)
    else:
        value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value  # later lookups skip this hook
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


if TYPE_CHECKING:  # what the names are, for type checkers and IDEs
    from . import designs as designs
    from . import metrics as metrics
    from . import scenarios as scenarios
    from ._compare import CriticalMass as CriticalMass
    from ._compare import compare as compare
    from ._compare import critical_mass as critical_mass
    from ._compare import run_scenario as run_scenario
    from ._ensemble import EnsembleFallbackWarning as EnsembleFallbackWarning
    from ._integrate import METHODS as METHODS
    from ._integrate import simulate as simulate
    from ._model import Model as Model
    from ._model import RangeWarning as RangeWarning
    from ._model import load as load
    from ._sensitivity import fan_chart as fan_chart
    from ._sensitivity import sensitivity as sensitivity
    from ._sensitivity import tornado_chart as tornado_chart
    from ._sweep import sweep as sweep
