"""Running the ``flywheel`` command in-process, shared by the CLI test modules.

Import the fixture by its function name (``from _cli import cli_fixture``); tests ask for it
as ``cli``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

from flywheel_sd.cli import main


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self):
        return json.loads(self.out)


@pytest.fixture(name="cli")
def cli_fixture(capsys):
    """``cli(*argv)`` runs ``flywheel argv...`` and returns its exit code, stdout and stderr."""

    def call(*argv) -> Result:
        code = main([str(a) for a in argv])
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return call


def one_line_error(result: Result, code: int | None = None) -> str:
    """The one line ``flywheel: error: ...`` of a failed command (and its exit code, if
    given); no traceback."""
    if code is not None:
        assert result.code == code, (result.code, result.out, result.err)
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result.err
    assert lines[0].startswith("flywheel: error: ")
    assert "Traceback" not in result.err
    return lines[0]
