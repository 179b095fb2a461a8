"""Start-up stays light: `import flywheel_sd` and `flywheel --help` import none of the heavy
libraries (they load when a function needs them), so both start in a fraction of a second.

Each check runs in a fresh interpreter and looks at ``sys.modules``: what is imported, not
how long it takes, so the tests do not depend on the machine's speed.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

# Needed by sweeps, sensitivity, plots and stores only.
OPTIONAL = ["dask", "distributed", "SALib", "matplotlib", "zarr", "h5netcdf", "tqdm"]
# Needed to load and run a model: imported on first use of fw.load, fw.simulate, ...
MODEL_STACK = ["pysd", "scipy", "xarray", "pandas"]


def imported_after(code: str) -> set[str]:
    """The top-level packages in sys.modules after running `code` in a fresh interpreter."""
    probe = (
        f"import sys\n{code}\nimport json\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr
    return set(json.loads(proc.stdout.strip().splitlines()[-1]))


def test_import_flywheel_sd_is_light():
    loaded = imported_after("import flywheel_sd")
    assert loaded.isdisjoint(OPTIONAL + MODEL_STACK), sorted(loaded & {*OPTIONAL, *MODEL_STACK})


@pytest.mark.parametrize("argv", [["--help"], ["sweep", "--help"], ["--version"]])
def test_flywheel_help_is_light(argv):
    code = (
        "import contextlib, io\nfrom flywheel_sd.cli import main\n"
        f"with contextlib.redirect_stdout(io.StringIO()):\n    assert main({argv!r}) == 0"
    )
    loaded = imported_after(code)
    assert loaded.isdisjoint(OPTIONAL + MODEL_STACK), sorted(loaded & {*OPTIONAL, *MODEL_STACK})


def test_python_dash_m_help_works():
    proc = subprocess.run(
        [sys.executable, "-m", "flywheel_sd", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0 and "SUBCOMMAND" in proc.stdout


def test_the_public_names_load_on_first_use():
    loaded = imported_after(
        "import flywheel_sd as fw\n"
        "from flywheel_sd import sweep, designs\n"
        "assert callable(fw.simulate) and callable(fw.load) and callable(sweep)\n"
        "assert fw.METHODS and designs.lhs and fw.scenarios.list()\n"
        "assert set(fw.__all__) <= set(dir(fw))\n"
        "assert all(getattr(fw, name) is not None for name in fw.__all__)\n"
    )
    assert {"pysd", "xarray"} <= loaded
    assert loaded.isdisjoint(["dask", "distributed", "matplotlib", "zarr"])


def test_all_lists_every_lazy_name():
    import flywheel_sd as fw

    assert set(fw.__all__) == {*fw._LAZY, "FlywheelError", "__version__"}


def test_an_unknown_name_is_an_attribute_error():
    import flywheel_sd as fw

    with pytest.raises(AttributeError, match="no_such_name"):
        fw.no_such_name  # noqa: B018 - the access is the test
