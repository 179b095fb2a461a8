"""flywheel_sd: system dynamics of e-commerce platform flywheels.

Vensim models loaded with PySD, integrated with SciPy's ODE solvers.
"""

from . import metrics as metrics
from . import scenarios as scenarios
from ._compare import CriticalMass as CriticalMass
from ._compare import compare as compare
from ._compare import critical_mass as critical_mass
from ._compare import run_scenario as run_scenario
from ._integrate import METHODS as METHODS
from ._integrate import simulate as simulate
from ._model import Model as Model
from ._model import RangeWarning as RangeWarning
from ._model import load as load
from .errors import FlywheelError as FlywheelError

__version__ = "0.1.0"

__all__ = [
    "METHODS", "CriticalMass", "FlywheelError", "Model", "RangeWarning", "compare",
    "critical_mass", "load", "metrics", "run_scenario", "scenarios", "simulate", "__version__",
]

from . import designs as designs
from ._ensemble import EnsembleFallbackWarning as EnsembleFallbackWarning
from ._sensitivity import fan_chart as fan_chart
from ._sensitivity import sensitivity as sensitivity
from ._sensitivity import tornado_chart as tornado_chart
from ._sweep import sweep as sweep

__all__ += ["EnsembleFallbackWarning", "designs", "fan_chart", "sensitivity", "sweep",
            "tornado_chart"]
