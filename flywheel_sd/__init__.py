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
    "CriticalMass": ".scenarios.compare",
    "compare": ".scenarios.compare",
    "critical_mass": ".scenarios.compare",
    "run_scenario": ".scenarios.compare",
    "METHODS": ".engine.simulate",
    "simulate": ".engine.simulate",
    "Model": ".engine.model",
    "RangeWarning": ".engine.model",
    "load": ".engine.model",
    "EnsembleFallbackWarning": ".sweeps.chunk",
    "fan_chart": ".sweeps.sensitivity",
    "sensitivity": ".sweeps.sensitivity",
    "tornado_chart": ".sweeps.sensitivity",
    "sweep": ".sweeps.sweep",
    "reference_data": ".data",
    "explore": ".explorer",  # needs the explore extra (Panel); see flywheel_sd/explorer.py
    "Calibration": ".calibration",
    "calibrate": ".calibration",
    "loops": ".ltm",  # Loops That Matter; the loop index is flywheel_sd.loop_index
    "dominance_periods": ".ltm",
}

__all__ = [
    "METHODS",
    "Calibration",
    "CriticalMass",
    "EnsembleFallbackWarning",
    "FlywheelError",
    "Model",
    "RangeWarning",
    "__version__",
    "calibrate",
    "compare",
    "critical_mass",
    "designs",
    "dominance_periods",
    "explore",
    "fan_chart",
    "load",
    "loops",
    "metrics",
    "reference_data",
    "run_scenario",
    "scenarios",
    "sensitivity",
    "simulate",
    "sweep",
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
    from .calibration import Calibration as Calibration
    from .calibration import calibrate as calibrate
    from .data import reference_data as reference_data
    from .engine.model import Model as Model
    from .engine.model import RangeWarning as RangeWarning
    from .engine.model import load as load
    from .engine.simulate import METHODS as METHODS
    from .engine.simulate import simulate as simulate
    from .explorer import explore as explore
    from .ltm import dominance_periods as dominance_periods
    from .ltm import loops as loops
    from .scenarios.compare import CriticalMass as CriticalMass
    from .scenarios.compare import compare as compare
    from .scenarios.compare import critical_mass as critical_mass
    from .scenarios.compare import run_scenario as run_scenario
    from .sweeps.chunk import EnsembleFallbackWarning as EnsembleFallbackWarning
    from .sweeps.sensitivity import fan_chart as fan_chart
    from .sweeps.sensitivity import sensitivity as sensitivity
    from .sweeps.sensitivity import tornado_chart as tornado_chart
    from .sweeps.sweep import sweep as sweep
