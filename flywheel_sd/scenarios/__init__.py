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
from ._scenario import (
    Policy,
    Scenario,
    from_dict,
    policy_companions,
    policy_inputs,
    read_toml,
)

__all__ = [
    "Policy",
    "Scenario",
    "broken",
    "describe",
    "get",
    "list",
    "load_file",
    "policy_companions",
    "policy_inputs",
]

BUILTIN_DIR = Path(__file__).resolve().parent


def _folders() -> builtins.list[Path]:
    extra = [Path(p) for p in os.environ.get("FLYWHEEL_SD_SCENARIOS", "").split(os.pathsep) if p]
    for folder in extra:
        if not folder.is_dir():
            raise ParameterError(
                f"FLYWHEEL_SD_SCENARIOS names {str(folder)!r}, which is not a "
                "folder; set it to folders of scenario files (separated by "
                f"{os.pathsep!r}) or unset it"
            )
    return [BUILTIN_DIR, *extra]


def _catalogue() -> tuple[dict[str, Path], dict[str, str]]:
    """Scenario name -> file, and name -> error for files that cannot be read (listed as
    broken, so one bad file never hides the others). A user's scenario may take a
    built-in's name only with ``replaces_builtin = true``."""
    files: dict[str, Path] = {}
    broken: dict[str, str] = {}
    builtin: dict[str, Path] = {}
    for folder in _folders():
        for path in sorted(folder.glob("*.toml")):
            try:
                data = read_toml(path)
                name = data.get("name", path.stem)
                if not isinstance(name, str):
                    raise ParameterError(f"{path}: 'name' must be a string, not {name!r}")
                if folder == BUILTIN_DIR:
                    builtin[name] = path
                elif name in builtin and data.get("replaces_builtin") is not True:
                    raise ParameterError(
                        f"{path}: the name {name!r} is a built-in scenario's "
                        f"({builtin[name].name}); rename it, or add "
                        "'replaces_builtin = true' to replace the built-in"
                    )
            except ParameterError as err:
                broken[path.stem] = str(err)
                continue
            files[name] = path
    return files, broken


def _files() -> dict[str, Path]:
    """Scenario name -> file (readable ones)."""
    return _catalogue()[0]


def list() -> builtins.list[str]:  # noqa: A001 - the public API name
    """Names of the available scenarios, built-ins first as they are ordered on disk."""
    return builtins.list(_files())


def broken() -> dict[str, str]:
    """Scenario files that cannot be read: file stem -> the one-line error."""
    return _catalogue()[1]


def describe() -> dict[str, str]:
    """Scenario name -> the first sentence of its description, whole however many lines
    it spans in the file (a broken file: its error)."""
    files, errors = _catalogue()
    out = {}
    for name, path in files.items():
        try:
            text = from_dict(read_toml(path), source=str(path)).description.strip()
        except ParameterError as err:
            out[name] = f"BROKEN: {err}"
            continue
        out[name] = _first_sentence(text)
    for stem, message in errors.items():
        out[stem] = f"BROKEN: {message}"
    return out


# Words whose full stop ends no sentence ("e.g. Wish", "U.S. sellers").
_ABBREVIATIONS = ("e.g.", "i.e.", "etc.", "vs.", "cf.", "approx.", "no.", "st.", "u.s.")


def _first_sentence(text: str) -> str:
    """The first sentence of `text`, its lines joined: up to the first ".", "!" or "?"
    followed by a space and a capital letter (or a quote, bracket or digit), unless the
    word before is an abbreviation; all of `text` when it has one sentence."""
    import re

    flat = " ".join(text.split())
    for end in re.finditer(r"[.!?][)\"']?(?=\s+[A-Z0-9\"'(\[])", flat):
        word = flat[: end.end()].rsplit(" ", 1)[-1].lower()
        if word.endswith(_ABBREVIATIONS) or re.fullmatch(r"[a-z]\.", word):
            continue  # "e.g.", or an initial ("J. Smith")
        return flat[: end.end()]
    return flat


def load_file(path: str | Path, *, validate: bool = True) -> Scenario:
    """Read a scenario file (following `extends`), and check it against its model."""
    path = Path(path).resolve()
    return _load(path, validate, seen=())


def _load(path: Path, validate: bool, seen: tuple) -> Scenario:
    data = read_toml(path)
    base = None
    if "extends" in data:
        parent = data["extends"]
        if not isinstance(parent, str):
            raise ParameterError(
                f"{path}: 'extends' must be a scenario's name (a string), not {parent!r}"
            )
        if parent in seen:
            raise ParameterError(f"{path}: 'extends' forms a cycle through {parent!r}")
        files = _files()
        if parent not in files:
            raise ParameterError(
                f"{path}: 'extends': " + unknown_name_message("scenario", parent, files)
            )
        base = _load(files[parent], validate=False, seen=(*seen, data.get("name")))
    scenario = from_dict(data, source=str(path), base=base)
    if validate:
        scenario.validate()
    return scenario


def get(name: str | os.PathLike[str] | Scenario) -> Scenario:
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
    files, errors = _catalogue()
    if text in errors and text not in files:
        raise ParameterError(errors[text])
    if text not in files:
        raise ParameterError(unknown_name_message("scenario", text, files))
    return load_file(files[text])
