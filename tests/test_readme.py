"""The README's two set-up commands exist as written, so the README and CI cannot drift apart.

The two commands are the README's fenced one-liners that start with ``python3 -m venv .venv``:
the one that runs pytest is the test command (CI's `.ci/run` must run exactly it); the other is
the main job, whose pieces (console script, scenarios, CLI arguments) must all exist.
"""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path

import pytest

import flywheel_sd as fw
from flywheel_sd.cli import build_parser, main

REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text()
TEST_COMMAND = (
    'python3 -m venv .venv && .venv/bin/pip install -q -e ".[test]" && '
    ".venv/bin/python -m pytest -q"
)
MAIN_COMMAND = (
    "python3 -m venv .venv && .venv/bin/pip install -q -e . && "
    ".venv/bin/flywheel compare baseline wish_deposit --plot out/compare.png"
)


def fenced_blocks(text: str) -> list[tuple[str, str]]:
    """(language, body) of every fenced code block."""
    return [
        (m.group(1), m.group(2))
        for m in re.finditer(r"^```(\w*)\n(.*?)^```", text, flags=re.DOTALL | re.MULTILINE)
    ]


def setup_commands() -> dict[str, str]:
    found = [
        body.strip()
        for _, body in fenced_blocks(README)
        if body.strip().startswith("python3 -m venv .venv")
    ]
    assert len(found) == 2, f"expected two set-up commands in the README, found {found}"
    for command in found:
        assert "\n" not in command, f"a set-up command is one line: {command!r}"
    tests = [c for c in found if "pytest" in c]
    assert len(tests) == 1
    (main_job,) = [c for c in found if c is not tests[0]]
    return {"tests": tests[0], "main": main_job}


def test_the_readme_shows_both_commands_as_specified():
    commands = setup_commands()
    assert commands["tests"] == TEST_COMMAND
    assert commands["main"] == MAIN_COMMAND


def test_ci_runs_the_readme_test_command():
    ci = (REPO / ".ci" / "run").read_text().splitlines()
    assert setup_commands()["tests"] in [line.strip() for line in ci]


def main_job_argv() -> list[str]:
    """The arguments the main job gives the ``flywheel`` console script."""
    steps = [shlex.split(step) for step in setup_commands()["main"].split("&&")]
    (flywheel,) = [s for s in steps if Path(s[0]).name == "flywheel"]
    assert flywheel[0] == ".venv/bin/flywheel"
    return flywheel[1:]


def test_the_console_script_is_declared():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["scripts"]["flywheel"] == "flywheel_sd.cli:main"


def test_the_main_job_names_existing_scenarios_and_valid_arguments():
    argv = main_job_argv()
    args = build_parser().parse_args(argv)
    assert args.command == "compare"
    available = fw.scenarios.list()
    assert all(name in available for name in args.scenarios)
    assert args.plot and Path(args.plot).suffix == ".png"


@pytest.mark.slow
def test_the_main_job_prints_the_metrics_table_and_writes_the_plot(tmp_path, capsys):
    argv = main_job_argv()
    plot = tmp_path / Path(argv[argv.index("--plot") + 1])
    argv[argv.index("--plot") + 1] = str(plot)
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "cumulative_gmv" in out and "wish_deposit %chg" in out
    assert plot.stat().st_size > 0


def test_python_examples_compile():
    for language, body in fenced_blocks(README):
        if language == "python":
            compile(body, "README.md", "exec")


def test_shell_examples_use_real_subcommands_and_options():
    """Each `flywheel ...` line of the shell examples parses (sweep and sensitivity
    included), so the README does not advertise options the CLI lacks."""
    parser = build_parser()
    for language, body in fenced_blocks(README):
        if language != "sh":
            continue
        for line in body.replace("\\\n", " ").splitlines():
            line = line.split("  #")[0].strip()
            if line.startswith("flywheel "):
                parser.parse_args(shlex.split(line)[1:])


def test_links_point_at_files_in_the_repository():
    for target in re.findall(r"\]\(([^)#]+)\)", README):
        if "://" in target:
            continue
        assert (REPO / target).exists(), f"README links to a missing file: {target}"
