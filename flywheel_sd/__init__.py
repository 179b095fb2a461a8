"""flywheel_sd: system dynamics of e-commerce platform flywheels.

Vensim models loaded with PySD, integrated with SciPy's ODE solvers.
"""

from ._integrate import METHODS as METHODS
from ._integrate import simulate as simulate
from ._model import Model as Model
from ._model import RangeWarning as RangeWarning
from ._model import load as load
from .errors import FlywheelError as FlywheelError

__version__ = "0.1.0"

__all__ = ["METHODS", "FlywheelError", "Model", "RangeWarning", "load", "simulate", "__version__"]
