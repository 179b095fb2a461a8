"""The ``flywheel`` command: run, compare, sweep and describe flywheel models from a shell.

``flywheel SUBCOMMAND ...`` and ``python -m flywheel_sd SUBCOMMAND ...`` are the same. Every
subcommand works on the default model and on ``--model path/to/any.mdl``.

Exit status: 0 on success, 2 on bad usage (unknown scenario, parameter or metric, a
malformed option, a missing or unparsable file), 1 when a run fails. Errors are one line
on stderr; ``--debug`` shows the traceback. Tables print for a terminal; ``--json`` prints
them as JSON. Long work shows a progress bar on a terminal (``--quiet`` hides it).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import shutil
import sys
import traceback
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
PROG = "flywheel"
_RUN_SUFFIXES = (".csv", ".nc")
_SWEEP_SUFFIXES = (".nc", ".zarr")


class UsageError(Exception):
    """Bad command-line usage: exit status 2."""


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line and no exit (main decides the status)."""

    def error(self, message: str):  # noqa: D102 - argparse's hook
        raise UsageError(f"{message} (see '{self.prog} --help')")


# -- entry point ---------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``flywheel`` command with `argv` (default: ``sys.argv[1:]``); return the exit
    status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("MPLBACKEND", "Agg")  # scripts and servers have no display
    debug = "--debug" in argv
    try:
        args = build_parser().parse_args(argv)
        debug = args.debug
        with _one_line_warnings():
            return args.handler(args)
    except SystemExit as stop:  # --help, --version
        return stop.code if isinstance(stop.code, int) else EXIT_OK
    except KeyboardInterrupt:
        _fail("interrupted", debug)
        return 130
    except BrokenPipeError:  # `flywheel describe | head`: the reader left; stop quietly
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except Exception as err:  # noqa: BLE001 - the CLI's last line of defence
        status, message = _classify(err)
        _fail(message, debug)
        return status


def _classify(err: BaseException) -> tuple[int, str]:
    from .errors import FlywheelError, SolverError

    text = " ".join(str(err).split())
    # The API's hints name keyword arguments; on the command line they are options.
    text = text.replace("pass range_check='warn' or 'off'", "pass --range-check warn or off")
    text = text.replace("pass resume=True", "pass --resume")
    if isinstance(err, UsageError):
        return EXIT_USAGE, text
    if isinstance(err, (SolverError, SweepFailed)):
        return EXIT_FAILED, f"run failed: {text}"
    if isinstance(err, FlywheelError):
        # The project's errors on bad input are ValueErrors; on failed work, RuntimeErrors
        # (a solver that gives up, a sweep whose worker died).
        failed_work = isinstance(err, RuntimeError) and not isinstance(err, ValueError)
        return (EXIT_FAILED, f"failed: {text}") if failed_work else (EXIT_USAGE, text)
    if isinstance(err, FileNotFoundError):
        return EXIT_USAGE, f"no such file: {err.filename or text}"
    if isinstance(err, OSError):
        return EXIT_FAILED, f"{type(err).__name__}: {text}"
    return EXIT_FAILED, (f"failed: {type(err).__name__}: {text}"
                         " (rerun with --debug for the traceback)")


def _fail(message: str, debug: bool) -> None:
    if debug:
        traceback.print_exc(file=sys.stderr)
    print(f"{PROG}: error: {message}", file=sys.stderr)


@contextlib.contextmanager
def _one_line_warnings():
    """Show warnings as 'flywheel: warning: ...' (filters are left as they are)."""
    original = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        print(f"{PROG}: warning: {' '.join(str(message).split())}", file=sys.stderr)

    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = original


# -- the parser ----------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``flywheel`` command."""
    from . import __version__

    parser = _Parser(prog=PROG, description=__doc__.split("\n\n")[0],
                     epilog="Run 'flywheel SUBCOMMAND --help' for a subcommand's options.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    _add_common(parser, top=True)
    common = argparse.ArgumentParser(add_help=False)
    _add_common(common, top=False)
    simulation = argparse.ArgumentParser(add_help=False)
    _add_simulation(simulation)

    sub = parser.add_subparsers(title="subcommands", dest="command", metavar="SUBCOMMAND",
                                required=True)

    p = sub.add_parser("run", parents=[common, simulation], help="run one scenario",
                       description="Run one scenario (default: baseline, or the --model "
                                   "file's own parameters) and print a summary of its stocks.")
    p.add_argument("scenario", nargs="?", help="scenario name or .toml file")
    _add_set(p)
    p.add_argument("--columns", nargs="+", metavar="NAME",
                   help="variables to report and save (default: all)")
    p.add_argument("--out", metavar="PATH", help="save the run: results.csv or results.nc")
    p.add_argument("--plot", metavar="PATH", help="save a figure (.png, .svg, .pdf)")
    p.set_defaults(handler=cmd_run)

    p = sub.add_parser("scenarios", parents=[common], help="list the scenarios",
                       description="List the built-in scenarios (and those in "
                                   "$FLYWHEEL_SD_SCENARIOS) with one-line descriptions.")
    p.set_defaults(handler=cmd_scenarios)

    p = sub.add_parser("compare", parents=[common, simulation],
                       help="compare scenarios with metrics",
                       description="Run scenarios side by side; print each metric and its "
                                   "change from the first scenario.")
    p.add_argument("scenarios", nargs="+", metavar="SCENARIO", help="scenario names or files")
    p.add_argument("--metrics", nargs="+", metavar="NAME",
                   help="metrics to report (default: all that apply)")
    _add_set(p, "for every scenario")
    p.add_argument("--plot", metavar="PATH", help="save the small-multiples comparison")
    p.add_argument("--metrics-plot", metavar="PATH", help="save a bar chart of the metrics")
    p.add_argument("--out", metavar="PATH",
                   help="save the metrics table (.csv) or the whole comparison (.nc)")
    p.set_defaults(handler=cmd_compare)

    p = sub.add_parser("sweep", parents=[common, simulation], help="run a parameter sweep",
                       description="Sample parameters with a design and run every set, "
                                   "writing results chunk by chunk to a store.")
    _add_design(p)
    p.add_argument("--scenario", help="scenario to sweep around (default: baseline, or the "
                                      "--model file's own parameters)")
    _add_set(p, "in every run")
    p.add_argument("--outputs", nargs="+", metavar="NAME",
                   help="variables whose time series to keep (default: the stocks, or none "
                        "with --metrics)")
    p.add_argument("--metrics", nargs="+", metavar="NAME",
                   help="scalar metrics per run (see 'flywheel compare --help')")
    _add_executor(p)
    p.add_argument("--chunk-size", type=_positive_int, metavar="N", help="runs per chunk")
    p.add_argument("--store", metavar="PATH",
                   help="save results chunk by chunk: out.zarr (a folder), or out.nc "
                        "(written when the sweep completes; chunks kept in out.nc.parts/ "
                        "until then)")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted sweep in --store, computing only the "
                        "missing chunks")
    p.set_defaults(handler=cmd_sweep)

    solver = argparse.ArgumentParser(add_help=False)
    _add_simulation(solver, "--solver")
    p = sub.add_parser("sensitivity", parents=[common, solver],
                       help="Sobol or Morris indices of a metric",
                       description="Sensitivity indices of a scalar metric to parameters.")
    p.add_argument("--param", action="append", required=True, metavar="NAME[=LOW:HIGH]",
                   type=_param_range, help="a parameter and its range (default: its "
                                           "documented range); repeat for each")
    p.add_argument("--metric", required=True, help="a metric name (see 'flywheel compare')")
    p.add_argument("--method", dest="analysis", choices=("sobol", "morris"), default="sobol",
                   help="the analysis (default: sobol)")
    p.add_argument("--n", type=_positive_int,
                   help="Sobol: base sample size, a power of two (default 64; runs = "
                        "n * (parameters + 2)); Morris: trajectories (default 10; runs = "
                        "n * (parameters + 1))")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--scenario", help="scenario to analyse around (default: baseline, or "
                                      "the --model file's own parameters)")
    _add_set(p, "in every run")
    _add_executor(p)
    p.add_argument("--plot", metavar="PATH", help="save a bar chart of the indices")
    p.set_defaults(handler=cmd_sensitivity)

    p = sub.add_parser("critical-mass", parents=[common, simulation],
                       help="find a launch's critical mass by bisection",
                       description="The smallest value of a lever at which the platform "
                                   "keeps growing after the push stops.")
    p.add_argument("--lever", required=True, help="the lever, e.g. 'Ad Budget'")
    p.add_argument("--low", type=_float, required=True, help="lower end of the bracket")
    p.add_argument("--high", type=_float, required=True, help="upper end of the bracket")
    p.add_argument("--scenario", default="launch_ad_burn",
                   help="scenario to start from (default: launch_ad_burn)")
    p.add_argument("--variable", default="Active Buyers",
                   help="what must keep growing (default: Active Buyers)")
    p.add_argument("--push-end", default="Ad Stop Time",
                   help="when the push ends: a time, or the parameter that holds it "
                        "(default: Ad Stop Time)")
    p.add_argument("--tol", type=_float, help="bracket width to stop at "
                                              "(default: (high - low) / 1000)")
    p.add_argument("--max-runs", type=_positive_int, default=40,
                   help="most runs to spend (default 40)")
    p.set_defaults(handler=cmd_critical_mass)

    p = sub.add_parser("describe", parents=[common], help="stocks, loops and levers",
                       description="The model's stocks, feedback loops (from "
                                   "<model>.loops.toml beside the model, if any) and "
                                   "levers with their ranges and units.")
    p.set_defaults(handler=cmd_describe)

    p = sub.add_parser("diagram", parents=[common], help="draw the model's structure",
                       description="Draw the model's stock-and-flow structure to a file.")
    p.add_argument("--out", required=True, metavar="PATH", help="figure file (.png, .svg)")
    p.add_argument("--views", nargs="+", metavar="VIEW",
                   help="draw only these views of the sketch (default: all)")
    p.add_argument("--dpi", type=_positive_int, help="resolution of a raster figure")
    p.set_defaults(handler=cmd_diagram)
    return parser


def _add_common(parser, top: bool) -> None:
    """--model, --json, --quiet, --debug: accepted before or after the subcommand."""
    default = (lambda value: value) if top else (lambda value: argparse.SUPPRESS)
    parser.add_argument("--model", metavar="PATH", default=default(None),
                        help="model file (.mdl, .xmile or PySD .py); default: the "
                             "platform flywheel")
    parser.add_argument("--json", action="store_true", default=default(False),
                        help="print results as JSON")
    parser.add_argument("-q", "--quiet", action="store_true", default=default(False),
                        help="no progress bar")
    parser.add_argument("--debug", action="store_true", default=default(False),
                        help="show tracebacks")


def _add_simulation(parser, method_flag: str = "--method") -> None:
    parser.add_argument(method_flag, dest="method", metavar="M",
                        help="integration method: RK45 (default), RK23, DOP853, LSODA, BDF, "
                             "Radau, euler, rk4")
    parser.add_argument("--rtol", type=_positive_float, help="relative tolerance")
    parser.add_argument("--atol", type=_positive_float, help="absolute tolerance")
    parser.add_argument("--final-time", type=_float, metavar="T",
                        help="end the run at T instead of FINAL TIME")
    parser.add_argument("--range-check", choices=("error", "warn", "off"),
                        help="a parameter outside its documented range: error (default), "
                             "warn or off")


def _add_set(parser, what: str = "") -> None:
    parser.add_argument("--set", action="append", type=_setting, default=[],
                        metavar="NAME=VALUE",
                        help=f"override a parameter {what} (repeatable); "
                             "NAME=VALUE@START:END sets it only from START to END".strip())


def _add_executor(parser) -> None:
    parser.add_argument("--executor", choices=("ensemble", "processes", "dask"),
                        help="where runs go: ensemble (this process, vectorized; default), "
                             "processes (a local pool) or dask")
    parser.add_argument("--scheduler", metavar="ADDR",
                        help="Dask scheduler address, e.g. tcp://host:8786 (implies "
                             "--executor dask; without it, dask starts a LocalCluster)")
    parser.add_argument("--workers", type=_positive_int, metavar="N",
                        help="processes for --executor processes or a local Dask cluster")


def _add_design(parser) -> None:
    parser.add_argument("--param", action="append", required=True, type=_param_range,
                        metavar="NAME=LOW:HIGH[:N]",
                        help="a swept parameter (repeatable); LOW:HIGH default to its "
                             "documented range; N = grid levels")
    parser.add_argument("--design", choices=("grid", "lhs", "sobol", "morris", "saltelli"),
                        default="lhs", help="sampling design (default: lhs)")
    parser.add_argument("--n", type=_positive_int,
                        help="number of samples (grid: levels per parameter unless :N given)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")


# -- argument types (a ValueError/TypeError here becomes a one-line usage error) ------------
def _float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"not a finite number: {text!r}")
    return value


def _positive_float(text: str) -> float:
    value = _float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text!r}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text!r}")
    return value


def _setting(text: str) -> tuple[str, Any]:
    """NAME=VALUE, or NAME=VALUE@START[:END] for a time-bound policy."""
    name, sep, value = text.partition("=")
    name = name.strip()
    if not sep or not name or not value.strip():
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    value, at, window = value.partition("@")
    number = _setting_number(text, value)
    if not at:
        return name, number
    start, colon, end = window.partition(":")
    from .errors import ParameterError
    from .scenarios import Policy

    try:
        policy = Policy(number, _setting_number(text, start),
                        _setting_number(text, end) if colon and end.strip() else math.inf)
    except ParameterError as err:
        raise argparse.ArgumentTypeError(f"{text!r}: {err}") from None
    return name, policy


def _setting_number(text: str, part: str) -> float:
    try:
        value = float(part)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected NAME=VALUE or NAME=VALUE@START:END with numbers, got {text!r}"
        ) from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r}: the value is not finite")
    return value


@dataclasses.dataclass(frozen=True)
class ParamRange:
    """A parameter named on the command line, with an optional range and grid levels."""

    name: str
    low: float | None = None
    high: float | None = None
    levels: int | None = None


def _param_range(text: str) -> ParamRange:
    """NAME, NAME=LOW:HIGH or NAME=LOW:HIGH:N."""
    name, sep, spec = text.partition("=")
    name = name.strip()
    if not name:
        raise argparse.ArgumentTypeError(f"expected NAME=LOW:HIGH[:N], got {text!r}")
    if not sep:
        return ParamRange(name)
    parts = spec.split(":")
    if len(parts) not in (2, 3):
        raise argparse.ArgumentTypeError(f"expected NAME=LOW:HIGH[:N], got {text!r}")
    try:
        low, high = float(parts[0]), float(parts[1])
        levels = int(parts[2]) if len(parts) == 3 else None
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected NAME=LOW:HIGH[:N] with numbers, got {text!r}") from None
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise argparse.ArgumentTypeError(f"{text!r}: the range is empty; need LOW < HIGH")
    if levels is not None and levels < 2:
        raise argparse.ArgumentTypeError(f"{text!r}: a grid needs at least 2 levels")
    return ParamRange(name, low, high, levels)


# -- shared helpers ------------------------------------------------------------------------
def _check_suffix(path: str | None, allowed: Sequence[str], what: str) -> Path | None:
    if path is None:
        return None
    out = Path(path)
    if out.suffix.lower() not in allowed:
        raise UsageError(f"{what} {path!r}: expected a file ending in {', '.join(allowed)}")
    return out


def _check_plot(path: str | None) -> Path | None:
    if path is None:
        return None
    from matplotlib.figure import Figure

    allowed = sorted("." + s for s in Figure().canvas.get_supported_filetypes())
    return _check_suffix(path, allowed, "plot file")


def _model_path(args) -> Path | None:
    if args.model is None:
        return None
    path = Path(args.model).expanduser()
    if not path.is_file():
        raise UsageError(f"{args.model}: no such model file")
    return path.resolve()


def _load_model(args):
    from . import load

    return load(_model_path(args))


def _scenario(args, name: str | None):
    """The scenario `name` (a built-in, a user's or a .toml file), moved onto --model."""
    from . import scenarios
    from .scenarios import Scenario

    model = _model_path(args)
    if name is None:
        if model is None:
            return scenarios.get("baseline")
        return Scenario(name=model.stem, description="the model's own parameters",
                        model=str(model))
    if model is None:
        return scenarios.get(name)
    if name.endswith(".toml") or Path(name).is_file():
        sc = scenarios.load_file(name, validate=False)
    else:
        files = scenarios._files()  # name -> file, without checking it against its own model
        if name not in files:
            scenarios.get(name)  # raises, listing the valid names
        sc = scenarios.load_file(files[name], validate=False)
    sc = dataclasses.replace(sc, model=str(model))
    sc.validate()
    return sc


def _simulate_options(args) -> dict[str, Any]:
    from . import METHODS

    options: dict[str, Any] = {}
    if args.method is not None:
        canonical = {m.lower(): m for m in METHODS}
        if args.method.lower() not in canonical:
            raise UsageError(f"unknown method {args.method!r}; valid: {', '.join(METHODS)}")
        options["method"] = canonical[args.method.lower()]
    for key in ("rtol", "atol", "final_time", "range_check"):
        if getattr(args, key, None) is not None:
            options[key] = getattr(args, key)
    constants = {k: v for k, v in getattr(args, "set", None) or () if not _is_policy(v)}
    if constants:  # checked by simulate, which honours --range-check
        options["params"] = constants
    return options


def _is_policy(value) -> bool:
    from .scenarios import Policy

    return isinstance(value, Policy)


def _with_policies(args, sc):
    """`sc` plus the time-bound --set overrides (policies live in the scenario, so that
    their switch times become breakpoints and their windows are shaded on plots)."""
    policies = {k: v for k, v in getattr(args, "set", None) or () if _is_policy(v)}
    if not policies:
        return sc
    return dataclasses.replace(sc, params={**sc.params, **policies}, source=None)


def _progress(args, total: int | None, desc: str):
    from tqdm.auto import tqdm

    # disable=None: quiet when stderr is not a terminal.
    return tqdm(total=total, desc=desc, unit="run", file=sys.stderr, leave=False,
                disable=True if args.quiet or args.json else None)


def _units(model) -> dict[str, str]:
    doc = model.doc
    units = zip(doc["Real Name"], doc["Units"], strict=True)
    return {real: (u if isinstance(u, str) else "") for real, u in units}


def _clean(value: Any) -> Any:
    """JSON-safe: NaN/inf -> null, NumPy scalars -> Python, tuples -> lists."""
    import numpy as np

    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, np.ndarray):
        return [_clean(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def _print_json(obj: Any) -> None:
    print(json.dumps(_clean(obj), indent=2))


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        return f"{value:,.4g}" if abs(value) < 1e15 else f"{value:.4g}"
    return str(value)


def _print_table(frame, title: str | None = None, wrap: bool = True) -> None:
    """A DataFrame as text; wide tables wrap at the terminal's width unless `wrap` is off."""
    if title:
        print(title)
    if frame.empty:
        print("  (none)")
        return
    width = shutil.get_terminal_size((120, 24)).columns if wrap else None
    frame = frame.copy()
    for column in frame.columns:  # words read better left-aligned (numbers stay right)
        values = frame[column]
        if values.dtype == object and values.map(type).eq(str).all() and \
                values.str.contains(r"[A-Za-z]").any():
            size = max(frame[column].str.len().max(), len(str(column)))
            frame[column] = frame[column].str.ljust(size)
    print(frame.to_string(float_format=_fmt, line_width=width, na_rep="-"))


def _records(frame) -> list[dict]:
    return frame.reset_index().to_dict(orient="records")


def _panels_for(ds, model) -> Sequence | None:
    """The comparison panels, or the model's stocks when it has none of them."""
    from .metrics import total
    from .plotting import PANELS

    for _, variable, _ in PANELS:
        try:
            total(ds, variable)
            return None
        except KeyError:
            continue
    units = _units(model)
    stocks = [s for s in model.stocks if _has(ds, s)][:12]
    if not stocks:
        raise UsageError("nothing to plot: the output has none of the model's stocks")
    return [(s, s, units.get(s, "")) for s in stocks]


def _has(ds, variable: str) -> bool:
    from .metrics import total

    try:
        total(ds, variable)
        return True
    except KeyError:
        return False


def _save_comparison_plot(ds, model, path: Path) -> None:
    import matplotlib.pyplot as plt

    from .plotting import plot_comparison

    panels = _panels_for(ds, model)
    fig = plot_comparison(ds, path) if panels is None else plot_comparison(ds, path, panels)
    plt.close(fig)


def _netcdf_safe(ds):
    """Attributes netCDF can store: strings and numbers (the rest as JSON)."""
    ds = ds.copy()
    for holder in (ds, *ds.variables.values()):
        for key, value in list(holder.attrs.items()):
            if value is None or isinstance(value, (list, tuple, dict, bool)):
                holder.attrs[key] = json.dumps(_clean(value))
    return ds


def _netcdf_engine() -> str:
    """netCDF4 or h5netcdf when their libraries import, else SciPy's netCDF-3 writer."""
    import importlib.util

    for engine, module in (("netcdf4", "netCDF4"), ("h5netcdf", "h5py")):
        if importlib.util.find_spec(module) is not None:
            return engine
    return "scipy"


def _write_netcdf(ds, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # netCDF cannot list a coordinate whose name has a space (swept "Take Rate"): keep it as
    # a variable on `run`, as xarray would, but without its warning.
    spaced = [c for c in ds.coords if " " in str(c) and c not in ds.dims]
    _netcdf_safe(ds.reset_coords(spaced)).to_netcdf(path, engine=_netcdf_engine())


# -- subcommands ---------------------------------------------------------------------------
def cmd_run(args) -> int:
    """``flywheel run``: one scenario; a summary of its stocks; optional file and figure."""
    from . import run_scenario
    from ._compare import frames_to_dataset

    out = _check_suffix(args.out, _RUN_SUFFIXES, "output file")
    plot = _check_plot(args.plot)
    sc = _with_policies(args, _scenario(args, args.scenario))
    model = sc.load_model()
    options = _simulate_options(args)
    if args.columns:
        options["return_columns"] = [model.real_name(c) for c in args.columns]
    frame = run_scenario(sc, **options)

    wrote = []  # files first: a closed pipe on stdout must not lose them
    if out is not None or plot is not None:
        ds = frames_to_dataset([frame], [sc.name])
        ds.attrs.update(policy_windows=json.dumps({sc.name: sc.windows()}),
                        method=str(frame.attrs.get("method", "")), model=str(model.path),
                        model_sha256=model.sha256)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.suffix.lower() == ".csv":
            frame.to_csv(out, index_label="time")
        else:
            _write_netcdf(ds.isel(scenario=0), out)
        wrote.append(out)
    if plot is not None:
        _save_comparison_plot(ds, model, plot)
        wrote.append(plot)

    table = _run_summary(frame, model, args.columns)
    if args.json:
        _print_json({"scenario": sc.name, "model": str(model.path),
                     "method": frame.attrs.get("method"), "summary": _records(table),
                     "wrote": [str(w) for w in wrote]})
    else:
        _print_table(table, f"{sc.name} on {model.path.name} "
                            f"({frame.attrs.get('method')}, t = {frame.index[0]:g} to "
                            f"{frame.index[-1]:g})")
        for path in wrote:
            print(f"wrote {path}")
    return EXIT_OK


def _run_summary(frame, model, columns):
    """Initial, final, min and max of the stocks (or of the chosen columns)."""
    import pandas as pd

    units = _units(model)
    wanted = [model.real_name(c) for c in columns] if columns else model.stocks
    rows = []
    for name in wanted:
        for col in frame.columns:
            if col == name or str(col).startswith(name + "["):
                series = pd.to_numeric(frame[col], errors="coerce")
                rows.append({"variable": col, "units": units.get(name, ""),
                             "initial": float(series.iloc[0]), "final": float(series.iloc[-1]),
                             "min": float(series.min()), "max": float(series.max())})
    return pd.DataFrame(rows, columns=["variable", "units", "initial", "final", "min",
                                       "max"]).set_index("variable")


def cmd_scenarios(args) -> int:
    """``flywheel scenarios``: the scenarios with one-line descriptions; with --model, whether
    each one fits that model."""
    import pandas as pd

    from . import scenarios

    described = scenarios.describe()
    table = pd.DataFrame({"scenario": list(described), "description": list(described.values())})
    if args.model is not None:
        model = _load_model(args)
        files = scenarios._files()  # name -> file, not yet checked against a model
        table[f"fits {model.path.name}"] = [
            _fits(scenarios.load_file(files[name], validate=False), model) for name in described
        ]
    table = table.set_index("scenario")
    if args.json:
        _print_json(_records(table))
    else:
        _print_table(table)
    return EXIT_OK


def _fits(sc, model) -> str:
    """'yes', or 'no: ...' with the overrides the model lacks or the first problem."""
    from .errors import FlywheelError

    unknown = []
    for key in sc.params:
        try:
            model.real_name(key)
        except FlywheelError:
            unknown.append(key)
    if unknown:
        more = f" (+{len(unknown) - 3} more)" if len(unknown) > 3 else ""
        return f"no: lacks {', '.join(unknown[:3])}{more}"
    try:
        dataclasses.replace(sc, model=str(model.path)).validate(model)
    except FlywheelError as err:
        return f"no: {_sentence(str(err).split(': ')[-1], 60)}"
    return "yes"


def cmd_compare(args) -> int:
    """``flywheel compare``: the metrics table of two or more scenarios."""
    import matplotlib.pyplot as plt

    from . import compare, metrics
    from .plotting import plot_metrics

    out = _check_suffix(args.out, (".csv", ".nc"), "output file")
    plot, metrics_plot = _check_plot(args.plot), _check_plot(args.metrics_plot)
    chosen = [metrics.get(m).name for m in args.metrics] if args.metrics else None
    resolved = [_with_policies(args, _scenario(args, name)) for name in args.scenarios]
    options = _simulate_options(args)
    with _progress(args, len(resolved), "compare") as bar:
        ds = compare(resolved, metrics=chosen, on_run=lambda _: bar.update(1), **options)
    table = ds.flywheel.metrics if "metrics" in ds else None
    if table is None and (metrics_plot is not None or (out and out.suffix.lower() == ".csv")):
        raise UsageError("no metric applies to this model's outputs; save the runs as .nc")
    model = resolved[0].load_model()
    wrote = []  # files first: a closed pipe on stdout must not lose them
    if out is not None:
        if out.suffix.lower() == ".csv":
            out.parent.mkdir(parents=True, exist_ok=True)
            table.to_csv(out)
        else:
            _write_netcdf(ds, out)
        wrote.append(out)
    if plot is not None:
        _save_comparison_plot(ds, model, plot)
        wrote.append(plot)
    if metrics_plot is not None:
        plt.close(plot_metrics(table, metrics_plot))
        wrote.append(metrics_plot)

    if args.json:
        _print_json({"scenarios": [sc.name for sc in resolved],
                     "metrics": _records(table) if table is not None else [],
                     "wrote": [str(w) for w in wrote]})
        return EXIT_OK
    if table is not None:
        _print_table(_metrics_wide(table))
    else:
        print("no metric applies to this model's outputs; use --out results.nc for the runs")
    for path in wrote:
        print(f"wrote {path}")
    return EXIT_OK


def _metrics_wide(table):
    """One row per metric: units, each scenario's value, and each later scenario's change
    from the first in percent."""
    import pandas as pd

    values = table["value"].unstack("scenario")
    pct = table["diff_pct"].unstack("scenario")
    names = list(dict.fromkeys(table.index.get_level_values("scenario")))
    metrics_order = list(dict.fromkeys(table.index.get_level_values("metric")))
    units = table["units"].groupby(level="metric").first()
    wide = pd.DataFrame(index=pd.Index(metrics_order, name="metric"))
    wide["units"] = units.reindex(metrics_order)
    for i, name in enumerate(names):
        wide[name] = values[name].reindex(metrics_order)
        if i:
            wide[f"{name} %chg"] = [("-" if v != v else f"{v:+.1f}%")
                                    for v in pct[name].reindex(metrics_order)]
    return wide


def cmd_critical_mass(args) -> int:
    """``flywheel critical-mass``: bisect a lever for the launch's critical mass."""
    from . import critical_mass

    if not args.low < args.high:
        raise UsageError(f"--low ({args.low:g}) must be below --high ({args.high:g})")
    if args.tol is not None and args.tol <= 0:
        raise UsageError(f"--tol must be positive, not {args.tol:g}")
    sc = _scenario(args, args.scenario)
    options = _simulate_options(args)
    try:
        push_end: float | str = float(args.push_end)
    except ValueError:
        push_end = args.push_end
    extra: dict[str, Any] = {"variable": args.variable, "push_end": push_end,
                             "max_runs": args.max_runs}
    if args.tol is not None:
        extra["tol"] = args.tol
    tol = args.tol if args.tol is not None else (args.high - args.low) * 1e-3
    width = abs(args.high - args.low)
    expected = 2 + (math.ceil(math.log2(width / tol)) if tol and width > tol else 0)
    bar = _progress(args, min(args.max_runs, expected), "critical mass")
    with bar:
        found = critical_mass(args.lever, args.low, args.high, scenario=sc,
                              on_run=lambda _: bar.update(1), **extra, **options)
    result = {"scenario": sc.name, "lever": found.lever, "threshold": found.threshold,
              "decays_at": found.bracket[0], "grows_at": found.bracket[1],
              "runs": found.runs, "criterion": found.criterion}
    if args.json:
        _print_json(result)
    else:
        _print_record(result, f"critical mass of {sc.name}")
    return EXIT_OK


def _print_record(record: dict, title: str | None = None) -> None:
    if title:
        print(title)
    width = max(len(str(k)) for k in record)
    for key, value in record.items():
        print(f"  {str(key).ljust(width)}  {_fmt(value)}")


def cmd_describe(args) -> int:
    """``flywheel describe``: stocks, loops and levers of the model."""
    model = _load_model(args)
    stocks, loops, levers = _describe(model)
    loops_file = _loops_file(model)
    if args.json:
        _print_json({"model": str(model.path), "stocks": _records(stocks),
                     "loops": loops, "loops_file": str(loops_file) if loops_file else None,
                     "levers": _records(levers)})
        return EXIT_OK
    for table in (stocks, levers):
        table["meaning"] = table["meaning"].map(lambda text: _sentence(text, 72))
    times = model.time_settings()
    print(f"{model.path.name}: {len(stocks)} stocks, {len(loops)} loops, {len(levers)} levers; "
          f"t = {times['initial_time']:g} to {times['final_time']:g}, "
          f"TIME STEP {times['time_step']:g}, SAVEPER {times['saveper']:g}")
    print()
    _print_table(stocks, "Stocks", wrap=False)
    print()
    if loops:
        import pandas as pd

        table = pd.DataFrame(loops).set_index("loop").drop(columns="description")
        _print_table(table, f"Loops ({loops_file.name})", wrap=False)
    else:
        print(f"Loops: none documented (no {model.path.stem}.loops.toml beside the model)")
    print()
    _print_table(levers, "Levers (constants; range = documented [min, max])", wrap=False)
    return EXIT_OK


def _describe(model):
    import numpy as np
    import pandas as pd
    import xarray as xr

    doc = model.doc.set_index("Real Name")

    def text(name, column):
        value = doc.at[name, column] if column in doc.columns else ""
        return value if isinstance(value, str) else ""

    stocks = pd.DataFrame(
        [{"stock": s, "units": text(s, "Units"), "meaning": _sentence(text(s, "Comment"))}
         for s in model.stocks], columns=["stock", "units", "meaning"]).set_index("stock")

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pysd_model = model.pysd_model()
        pysd_model.initialize()
    rows = []
    for name in model.constants:
        try:
            value = getattr(pysd_model.components, model.namespace[name])()
        except Exception:  # noqa: BLE001 - a constant that needs data files, say
            value = None
        if isinstance(value, xr.DataArray):
            shown = ", ".join(f"{'/'.join(map(str, np.atleast_1d(k)))}={_fmt(float(v))}"
                              for k, v in value.to_series().items())
        elif isinstance(value, (int, float, np.number)):
            shown = _fmt(float(value))
        else:
            shown = "" if value is None else str(value)
        low, high = model.ranges.get(name, (math.nan, math.nan))
        rows.append({"lever": name, "default": shown, "min": low, "max": high,
                     "units": text(name, "Units"), "meaning": _sentence(text(name, "Comment"))})
    levers = pd.DataFrame(rows, columns=["lever", "default", "min", "max", "units",
                                         "meaning"]).set_index("lever")
    return stocks, read_loops(model), levers


def _sentence(text: str, limit: int | None = None) -> str:
    """The first informative sentence of a comment, cut to `limit` characters."""
    sentences = [s.strip().rstrip(".") for s in " ".join(text.split()).split(". ")]
    sentences = [s for s in sentences if s]
    while len(sentences) > 1 and (sentences[0].lower().startswith("stock")
                                  and len(sentences[0]) < 16):
        sentences.pop(0)  # "Stock." or "Stock, 0-1." says less than what follows
    first = sentences[0] if sentences else ""
    return first if limit is None or len(first) <= limit else first[: limit - 3] + "..."


def _loops_file(model) -> Path | None:
    source = Path(getattr(model, "path", model))
    path = source.with_name(source.stem + ".loops.toml")
    return path if path.is_file() else None


def read_loops(model) -> list[dict]:
    """The feedback loops documented beside a model, in ``<model>.loops.toml``.

    Parameters
    ----------
    model : Model or path
        A loaded model or its file.

    Returns
    -------
    list of dict
        One per loop: ``loop`` (its id, e.g. R1), ``name``, ``polarity``, ``path`` (the
        chain of variables) and ``description``. Empty if there is no loop index. The file
        holds ``[[loop]]`` or ``[[loops]]`` tables, or one table per loop keyed by its id.
    """
    import tomllib

    path = _loops_file(model)
    if path is None:
        return []
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise UsageError(f"{path}: not valid TOML ({' '.join(str(err).split())})") from None
    entries = data.get("loop", data.get("loops"))
    if isinstance(entries, dict):
        entries = [{"id": key, **value} for key, value in entries.items()
                   if isinstance(value, dict)]
    if entries is None:
        entries = [{"id": key, **value} for key, value in data.items()
                   if isinstance(value, dict)]
    rows = []
    for entry in entries or []:
        if not isinstance(entry, dict):
            continue
        ident = str(entry.get("id", entry.get("code", entry.get("key", ""))))
        polarity = entry.get("polarity", entry.get("type", ""))
        if not polarity and ident[:1] in "RB":
            polarity = {"R": "reinforcing", "B": "balancing"}[ident[:1]]
        chain = entry.get("path", entry.get("variables", entry.get("links", entry.get(
            "chain", ""))))
        if isinstance(chain, list):
            chain = " -> ".join(map(str, chain))
        rows.append({"loop": ident, "name": str(entry.get("name", entry.get("title", ""))),
                     "polarity": str(polarity), "path": str(chain),
                     "description": " ".join(str(entry.get("description", "")).split())})
    return rows


def cmd_diagram(args) -> int:
    """``flywheel diagram``: the model's structure picture."""
    out = _check_plot(args.out)
    try:
        from .diagram import draw_diagram
    except ImportError as err:
        raise UsageError("this installation cannot draw diagrams "
                         f"(flywheel_sd.diagram: {err})") from None
    from ._model import DEFAULT_MODEL

    model = _model_path(args) or DEFAULT_MODEL
    out.parent.mkdir(parents=True, exist_ok=True)
    options: dict[str, Any] = {}
    if args.views:
        options["views"] = args.views
    if args.dpi:
        options["dpi"] = args.dpi
    try:
        result = draw_diagram(model, out, **options)
    except ValueError as err:  # an unknown view
        raise UsageError(" ".join(str(err).split())) from None
    try:
        import matplotlib.pyplot as plt

        if hasattr(result, "savefig"):
            plt.close(result)
    except ImportError:
        pass
    if args.json:
        _print_json({"model": str(model), "out": str(out)})
    else:
        print(f"wrote {out}")
    return EXIT_OK


def _executor(args) -> dict[str, Any]:
    executor = args.executor
    if args.scheduler is not None:
        if executor not in (None, "dask"):
            raise UsageError(f"--scheduler needs --executor dask, not {executor}")
        executor = "dask"
    out: dict[str, Any] = {"executor": executor or "ensemble"}
    if args.scheduler is not None:
        out["scheduler"] = args.scheduler
    if args.workers is not None:
        out["workers"] = args.workers
    return out


def _sweep_target(args):
    """The scenario a sweep or sensitivity runs around, with every --set in it."""
    sc = _scenario(args, args.scenario)
    settings = dict(args.set or ())
    if settings:
        sc = dataclasses.replace(sc, params={**sc.params, **settings}, source=None)
        sc.validate()
    return sc


def _design(args, model):
    from . import designs

    params = {p.name: (p.low, p.high) if p.low is not None else None for p in args.param}
    levels = {p.name: p.levels for p in args.param if p.levels}
    kind = args.design
    if levels and kind != "grid":
        raise UsageError(f"NAME=LOW:HIGH:N sets grid levels; --design {kind} takes --n")
    if kind == "grid":
        return designs.grid(params, {name: levels.get(name, args.n or 5) for name in params},
                            model=model)
    if kind == "lhs":
        return designs.lhs(params, args.n or 64, seed=args.seed, model=model)
    if kind == "sobol":
        return designs.sobol(params, args.n or 64, seed=args.seed, model=model)
    if kind == "morris":
        return designs.morris(params, args.n or 10, seed=args.seed, model=model)
    return designs.saltelli(params, args.n or 64, seed=args.seed, model=model)


def _sweep_store(args) -> tuple[Path | None, Path | None]:
    """(the folder the sweep writes chunk by chunk, the .nc file to export at the end)."""
    store = _check_suffix(args.store, _SWEEP_SUFFIXES, "sweep store")
    if store is None:
        return None, None
    if store.suffix.lower() == ".zarr":
        return store, None
    if store.exists() and not args.resume:
        raise UsageError(f"{store} exists; pass --resume to keep it, or choose another path")
    return store.with_name(store.name + ".parts"), store


def cmd_sweep(args) -> int:
    """``flywheel sweep``: sample a design, run it, store the results."""
    from . import sweep

    folder, export = _sweep_store(args)
    sc = _sweep_target(args)
    model = sc.load_model()
    design = _design(args, model)
    options = _simulate_options(args)
    options.pop("params", None)  # --set is in the scenario
    if export is not None and export.exists() and not folder.exists():
        import xarray as xr

        with xr.open_dataset(export) as ds:  # finished earlier: nothing left to run
            ds = ds.load()
        stored = json.loads(ds.attrs.get("design", "{}")).get("fingerprint")
        if stored != design.fingerprint():
            raise UsageError(f"{export} holds a different sweep; choose another path")
        return _report_sweep(args, ds, export, resumed=True)
    ds = sweep(sc, design, outputs=args.outputs, metrics=args.metrics, store=folder,
               chunk_size=args.chunk_size, progress=not (args.quiet or args.json),
               resume=args.resume, **_executor(args), **options)
    if export is not None:
        _write_netcdf(ds.load(), export)
        shutil.rmtree(folder, ignore_errors=True)
    return _report_sweep(args, ds, export or folder)


def _report_sweep(args, ds, store: Path | None, resumed: bool = False) -> int:
    import numpy as np
    import pandas as pd

    status = np.asarray(ds["status"].values)
    ok = status == 1
    n, n_ok = int(status.size), int(ok.sum())
    errors = np.asarray(ds["error"].values) if "error" in ds else np.array([""] * n)
    failures = [{"run": int(i), "error": str(errors[i])} for i in np.flatnonzero(~ok)]
    metric_names = [m for m in (args.metrics or []) if m in ds]
    if metric_names:
        columns = {m: np.asarray(ds[m].values, dtype=float)[ok] for m in metric_names}
        what = "the metrics"
    else:
        columns = {str(v): np.asarray(ds[v].isel(time=-1).values, dtype=float)[ok]
                   for v in ds.data_vars if "time" in ds[v].dims}
        what = f"the final values (t = {float(ds['time'][-1]):g})" if "time" in ds.dims else ""
    rows = []
    for name, values in columns.items():
        values = values[np.isfinite(values)]
        if values.size:
            q = np.percentile(values, [0, 5, 50, 95, 100])
            rows.append({"variable": name, "min": q[0], "p5": q[1], "median": q[2],
                         "p95": q[3], "max": q[4]})
    table = pd.DataFrame(rows, columns=["variable", "min", "p5", "median", "p95", "max"])
    table = table.set_index("variable")
    head = {"model": ds.attrs.get("model", ""), "summary_of": what,
            "scenario": ds.attrs.get("scenario", ""),
            "design": ds.attrs.get("design_kind", ""), "runs": n, "ok": n_ok,
            "failed": n - n_ok, "method": ds.attrs.get("method", ""),
            "executor": ds.attrs.get("executor", ""),
            "store": str(store) if store is not None else None}
    if args.json:
        _print_json({**head, "summary": _records(table), "failures": failures})
    else:
        print(f"sweep of {Path(head['model']).name} ({head['scenario'] or 'own parameters'}): "
              f"{n} runs ({head['design']}), {n_ok} ok, {n - n_ok} failed; method "
              f"{head['method']}, executor {head['executor']}"
              + (" (already complete)" if resumed else ""))
        for failure in failures[:5]:
            print(f"  run {failure['run']} failed: {failure['error']}")
        if len(failures) > 5:
            print(f"  ... and {len(failures) - 5} more (see the 'error' variable)")
        if n_ok and what:
            _print_table(table, f"{what}, over the runs that succeeded:")
        if store is not None:
            print(f"wrote {store}")
    if n and not n_ok:
        raise SweepFailed(f"every run failed; the first: {failures[0]['error']}")
    return EXIT_OK


class SweepFailed(Exception):
    """Every run of a sweep failed: exit status 1."""


def cmd_sensitivity(args) -> int:
    """``flywheel sensitivity``: Sobol or Morris indices of one metric, from a Saltelli or
    Morris sweep."""
    import numpy as np

    from . import designs, metrics, sweep
    from . import sensitivity as analyse
    metric = metrics.get(args.metric).name  # an unknown metric fails before any run
    plot = _check_plot(args.plot)
    if any(p.levels for p in args.param):
        raise UsageError("NAME=LOW:HIGH:N sets grid levels; sensitivity takes --n")
    sc = _sweep_target(args)
    model = sc.load_model()
    params = {p.name: (p.low, p.high) if p.low is not None else None for p in args.param}
    if args.analysis == "sobol":
        design = designs.saltelli(params, args.n or 64, seed=args.seed, model=model)
    else:
        design = designs.morris(params, args.n or 10, seed=args.seed, model=model)
    options = _simulate_options(args)
    options.pop("params", None)  # --set is in the scenario
    ds = sweep(sc, design, metrics=[metric], progress=not (args.quiet or args.json),
               **_executor(args), **options)
    status = np.asarray(ds["status"].values)
    if (status != 1).any():
        first = str(np.asarray(ds["error"].values)[np.flatnonzero(status != 1)[0]])
        raise SweepFailed(f"{int((status != 1).sum())} of {status.size} runs failed, and "
                          f"{args.analysis} needs every run; the first: {first}")
    table = analyse(ds, metric, method=args.analysis, seed=args.seed)
    table = table.sort_values("ST" if args.analysis == "sobol" else "mu_star", ascending=False)
    wrote = []
    if plot is not None:
        _plot_indices(table, args.analysis, metric, plot)
        wrote.append(plot)
    head = {"model": str(model.path), "scenario": sc.name, "metric": metric,
            "method": args.analysis, "runs": int(status.size)}
    if args.json:
        _print_json({**head, "indices": _records(table), "wrote": [str(w) for w in wrote]})
        return EXIT_OK
    what = ("Sobol indices (S1 first order, ST total; _conf: half-width of the "
            f"{table.attrs.get('conf_level', 0.95):.0%} interval)" if args.analysis == "sobol"
            else "Morris elementary effects (mu_star: mean absolute effect)")
    _print_table(table, f"{what} of {metric} on {model.path.name} ({sc.name}), "
                        f"{status.size} runs:")
    for path in wrote:
        print(f"wrote {path}")
    return EXIT_OK


def _plot_indices(table, method: str, metric: str, path: Path) -> None:
    import numpy as np
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 0.45 * len(table) + 1.8), layout="constrained")
    ax = fig.subplots()
    pos = np.arange(len(table))[::-1]
    if method == "sobol":
        ax.barh(pos + 0.2, table["ST"], height=0.4, xerr=table["ST_conf"], label="total (ST)")
        ax.barh(pos - 0.2, table["S1"], height=0.4, xerr=table["S1_conf"],
                label="first order (S1)")
        ax.set_xlabel(f"Sobol index of {metric}")
    else:
        ax.barh(pos, table["mu_star"], xerr=table["mu_star_conf"], label="mu*")
        ax.set_xlabel(f"Morris mu* of {metric}")
    ax.set_yticks(pos, list(table.index))
    ax.axvline(0, color="black", lw=0.8)
    ax.legend(fontsize=8, frameon=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
