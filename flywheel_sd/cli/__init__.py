"""The ``flywheel`` command: run, compare, sweep and describe flywheel models from a shell.

``flywheel SUBCOMMAND ...`` and ``python -m flywheel_sd SUBCOMMAND ...`` are the same. Every
subcommand works on the default model and on ``--model path/to/any.mdl``.

Exit status: 0 on success, 2 on bad usage (unknown scenario, parameter or metric, a
malformed option, a missing or unparsable file), 1 when a run fails. Errors are one line
on stderr; ``--debug`` shows the traceback. Tables print for a terminal; ``--json`` prints
them as JSON. Long work shows a progress bar on a terminal (``--quiet`` hides it).

The subcommands are listed, with their options, in one table: `_app.COMMANDS`. Each lives in
the module of its group (`run`, `compare`, `sweep`, `describe`); every module imports the
heavy libraries inside its functions, so that ``flywheel --help`` starts fast.
"""

from ._app import COMMANDS, build_parser, main
from ._common import EXIT_FAILED, EXIT_OK, EXIT_USAGE, UsageError
from .describe import read_loops

__all__ = [
    "COMMANDS",
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_USAGE",
    "UsageError",
    "build_parser",
    "main",
    "read_loops",
]
