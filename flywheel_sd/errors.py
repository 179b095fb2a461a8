"""The project's exceptions: one line each, saying what was wrong and what to do.

Every error raised on bad input or a failed run derives from `FlywheelError`, so a
caller (the CLI, a sweep) can catch them all and show the message without a traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class FlywheelError(Exception):
    """Base class of every error flywheel_sd raises on purpose."""


class ModelFileError(FlywheelError, ValueError):
    """A model file is missing, unreadable, or PySD cannot translate or load it."""


class ParameterError(FlywheelError, ValueError):
    """A parameter name, value, shape or range is wrong."""


class MethodError(FlywheelError, ValueError):
    """An unknown integration method, or options that do not fit it."""


class UnsupportedElementError(FlywheelError, ValueError):
    """The model has an element the chosen method cannot integrate correctly."""


class SolverError(FlywheelError, RuntimeError):
    """The integration failed; the message says where and what to try."""


class NonFiniteError(SolverError):
    """A model variable became NaN or infinite during the run."""


def unknown_name_message(kind: str, name: str, valid: Iterable[str]) -> str:
    """'unknown <kind> 'x'; did you mean ...?' with close matches, or the valid names."""
    valid = sorted(valid)
    close = difflib.get_close_matches(name, valid, n=3, cutoff=0.6)
    if not close:
        lowered = {v.lower(): v for v in valid}
        close = [lowered[m] for m in difflib.get_close_matches(name.lower(), lowered, 3, 0.6)]
    if close:
        return f"unknown {kind} {name!r}; did you mean {', '.join(map(repr, close))}?"
    if len(valid) <= 20:
        return f"unknown {kind} {name!r}; valid: {', '.join(valid)}"
    return f"unknown {kind} {name!r} ({len(valid)} valid names; none is close)"


class PySDPathWarning(UserWarning):
    """A model (or a run's options) uses something the compiled engine does not cover: it
    runs on PySD's own path instead, slower but with the same numbers. Shown once per
    model and reason."""


class CacheWarning(UserWarning):
    """The translation cache was damaged (the entry is rebuilt) or cannot be written (a
    temporary folder serves this process instead). One line, naming the cache path."""


class WideIntervalWarning(UserWarning):
    """Sensitivity indices whose confidence interval is wider than the index itself: too
    few runs to tell their size. One line, naming the parameters; raise ``n``."""


class DataError(FlywheelError, ValueError):
    """Calibration data that cannot be fitted: non-finite values, times outside the run,
    an unknown output or a malformed expression. One line, naming the series."""


class ConvergenceError(FlywheelError, RuntimeError):
    """An optimiser ran out of its budget without converging; the message (and the
    ``best`` and ``payoff`` attributes) give the best point found so far."""


class IdentifiabilityWarning(UserWarning):
    """A calibrated parameter is not identified by the data: its χ² profile stays flat
    over its whole range, or it correlates with another beyond |r| > 0.95. One line."""
