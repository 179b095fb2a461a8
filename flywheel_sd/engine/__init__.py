"""Compiled-model engine: generated flat-code modules and their integration drivers.

Data flow: PySD parses the model (``_pysd_compat.parse``) -> `compiler` unrolls it into
scalar nodes -> `_codegen` writes the module text -> `modules` writes and imports it for a
backend (Python or Numba) -> `run` (single runs) and the sweep's ensembles call its
``setup``/``init``/``rhs``/``record`` and the `drivers`.
"""

from .compiled import CompiledModel as CompiledModel
from .compiled import compiled as compiled
from .compiler import NotCompilable as NotCompilable

__all__ = ["CompiledModel", "NotCompilable", "compiled"]
