"""Named scenarios: the built-in seed cases and your own.

Built-ins are the TOML files beside this module. Add your own without Python: put TOML
files in a folder named by ``$FLYWHEEL_SD_SCENARIOS`` (several folders: separate them with
``os.pathsep``), or pass a file path wherever a scenario name is taken.
"""

from __future__ import annotations

import builtins
import os
from pathlib import Path

from ..errors import ParameterError, unknown_name_message
from ._scenario import Policy, Scenario, from_dict, read_toml

__all__ = ["Policy", "Scenario", "list", "get", "load_file", "describe"]

BUILTIN_DIR = Path(__file__).resolve().parent


def _folders() -> builtins.list[Path]:
    extra = [Path(p) for p in os.environ.get("FLYWHEEL_SD_SCENARIOS", "").split(os.pathsep) if p]
    return [BUILTIN_DIR, *extra]


def _files() -> dict[str, Path]:
    """Scenario name -> file; a user's file overrides a built-in of the same name."""
    out = {}
    for folder in _folders():
        for path in sorted(folder.glob("*.toml")):
            out[read_toml(path).get("name", path.stem)] = path
    return out


def list() -> builtins.list[str]:  # noqa: A001 - the public API name
    """Names of the available scenarios, built-ins first as they are ordered on disk."""
    return builtins.list(_files())


def describe() -> dict[str, str]:
    """Scenario name -> the first line of its description."""
    out = {}
    for name, path in _files().items():
        text = read_toml(path).get("description", "").strip()
        out[name] = text.splitlines()[0] if text else ""
    return out


def load_file(path: str | Path, *, validate: bool = True) -> Scenario:
    """Read a scenario file (following `extends`), and check it against its model."""
    path = Path(path).resolve()
    return _load(path, validate, seen=())


def _load(path: Path, validate: bool, seen: tuple) -> Scenario:
    data = read_toml(path)
    base = None
    if "extends" in data:
        parent = data["extends"]
        if parent in seen:
            raise ParameterError(f"{path}: 'extends' forms a cycle through {parent!r}")
        files = _files()
        if parent not in files:
            raise ParameterError(f"{path}: 'extends': "
                                 + unknown_name_message("scenario", parent, files))
        base = _load(files[parent], validate=False, seen=(*seen, data.get("name")))
    scenario = from_dict(data, source=str(path), base=base)
    if validate:
        scenario.validate()
    return scenario


def get(name: str | Scenario | Path) -> Scenario:
    """A scenario by name (or a TOML file path), checked against its model.

    Raises
    ------
    ParameterError
        Unknown name (listing the valid ones), or a file whose key or value is wrong
        (naming the file, the key and the problem).
    """
    if isinstance(name, Scenario):
        name.validate()
        return name
    text = str(name)
    if text.endswith(".toml") or isinstance(name, Path):
        return load_file(text)
    files = _files()
    if text not in files:
        raise ParameterError(unknown_name_message("scenario", text, files))
    return load_file(files[text])
