"""The ``flywheel`` parser, built from one table of subcommands, and `main`, which runs a
subcommand and turns what goes wrong into an exit status and a one-line message."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import sys
import traceback
import warnings
from collections.abc import Callable, Sequence

from . import calibrate, compare, describe, explore, loops, run, sweep
from ._common import EXIT_FAILED, EXIT_OK, EXIT_USAGE, PROG, SweepFailed, UsageError
from ._options import Option, add_common, add_group, number, option, param_range, positive_int

DESCRIPTION = (
    "The ``flywheel`` command: run, compare, sweep and describe flywheel models from a shell."
)


@dataclasses.dataclass(frozen=True)
class Command:
    """One subcommand: its name and help, the function that runs it, the shared option
    groups it takes (see `_options.GROUPS`; --model, --json, --quiet and --debug go to
    every subcommand) and its own options."""

    name: str
    help: str
    description: str
    run: Callable[[argparse.Namespace], int]
    groups: tuple[str, ...] = ()
    options: tuple[Option, ...] = ()


_SCENARIO_AROUND = (
    "scenario to {} around (default: baseline, or the --model file's own parameters)"
)

COMMANDS = (
    Command(
        "run",
        "run one scenario",
        "Run one scenario (default: baseline, or the --model file's own parameters) and "
        "print a summary of its stocks.",
        run.cmd_run,
        ("simulation", "set"),
        (
            option("scenario", nargs="?", help="scenario name or .toml file"),
            option(
                "--columns",
                nargs="+",
                metavar="NAME",
                help="variables to report and save (default: all)",
            ),
            option("--out", metavar="PATH", help="save the run: results.csv or results.nc"),
            option("--plot", metavar="PATH", help="save a figure (.png, .svg, .pdf)"),
        ),
    ),
    Command(
        "scenarios",
        "list the scenarios",
        "List the built-in scenarios (and those in $FLYWHEEL_SD_SCENARIOS) with one-line "
        "descriptions.",
        describe.cmd_scenarios,
    ),
    Command(
        "compare",
        "compare scenarios with metrics",
        "Run scenarios side by side; print each metric and its change from the first scenario.",
        compare.cmd_compare,
        ("simulation", "set"),
        (
            option("scenarios", nargs="+", metavar="SCENARIO", help="scenario names or files"),
            option(
                "--metrics",
                nargs="+",
                metavar="NAME",
                help="metrics to report (default: all that apply)",
            ),
            option("--plot", metavar="PATH", help="save the small-multiples comparison"),
            option("--metrics-plot", metavar="PATH", help="save a bar chart of the metrics"),
            option(
                "--out",
                metavar="PATH",
                help="save the metrics table (.csv) or the whole comparison (.nc)",
            ),
        ),
    ),
    Command(
        "sweep",
        "run a parameter sweep",
        "Sample parameters with a design and run every set, writing results chunk by chunk "
        "to a store.",
        sweep.cmd_sweep,
        ("simulation", "design", "set", "executor"),
        (
            option("--scenario", help=_SCENARIO_AROUND.format("sweep")),
            option(
                "--outputs",
                nargs="+",
                metavar="NAME",
                help="variables whose time series to keep (default: the stocks, or none "
                "with --metrics)",
            ),
            option(
                "--metrics",
                nargs="+",
                metavar="NAME",
                help="scalar metrics per run (see 'flywheel compare --help')",
            ),
            option("--chunk-size", type=positive_int, metavar="N", help="runs per chunk"),
            option(
                "--store",
                metavar="PATH",
                help="save results chunk by chunk: out.zarr (a folder), or out.nc (written "
                "when the sweep completes; chunks kept in out.nc.parts/ until then)",
            ),
            option(
                "--resume",
                action="store_true",
                help="continue an interrupted sweep in --store, computing only the missing chunks",
            ),
        ),
    ),
    Command(
        "sensitivity",
        "Sobol or Morris indices of a metric",
        "Sensitivity indices of a scalar metric to parameters.",
        sweep.cmd_sensitivity,
        ("solver", "set", "executor"),
        (
            option(
                "--param",
                action="append",
                required=True,
                metavar="NAME[=LOW:HIGH]",
                type=param_range,
                help="a parameter and its range (default: its documented range); repeat for each",
            ),
            option("--metric", required=True, help="a metric name (see 'flywheel compare')"),
            option(
                "--method",
                dest="analysis",
                choices=("sobol", "morris"),
                default="sobol",
                help="the analysis (default: sobol)",
            ),
            option(
                "--n",
                type=positive_int,
                help="Sobol: base sample size, a power of two (default 64; runs = n * "
                "(parameters + 2)); Morris: trajectories (default 10; runs = n * "
                "(parameters + 1))",
            ),
            option("--seed", type=int, default=0, help="random seed (default 0)"),
            option("--scenario", help=_SCENARIO_AROUND.format("analyse")),
            option("--plot", metavar="PATH", help="save a bar chart of the indices"),
        ),
    ),
    Command(
        "critical-mass",
        "find a launch's critical mass by bisection",
        "The smallest value of a lever at which the platform keeps growing after the push stops.",
        compare.cmd_critical_mass,
        ("simulation",),
        (
            option("--lever", required=True, help="the lever, e.g. 'Ad Budget'"),
            option("--low", type=number, required=True, help="lower end of the bracket"),
            option("--high", type=number, required=True, help="upper end of the bracket"),
            option(
                "--scenario",
                default="launch_ad_burn",
                help="scenario to start from (default: launch_ad_burn)",
            ),
            option(
                "--variable",
                default="Active Buyers",
                help="what must keep growing (default: Active Buyers)",
            ),
            option(
                "--push-end",
                default="Ad Stop Time",
                help="when the push ends: a time, or the parameter that holds it (default: "
                "Ad Stop Time)",
            ),
            option(
                "--tol",
                type=number,
                help="bracket width to stop at (default: (high - low) / 1000)",
            ),
            option(
                "--max-runs", type=positive_int, default=40, help="most runs to spend (default 40)"
            ),
        ),
    ),
    Command(
        "describe",
        "stocks, loops and levers",
        "The model's stocks, feedback loops (from <model>.loops.toml beside the model, if "
        "any) and levers with their ranges and units.",
        describe.cmd_describe,
    ),
    Command(
        "explore",
        "the interactive what-if explorer",
        "Serve the what-if explorer on localhost: a slider per lever, live plots against a "
        "reference scenario, metrics, save as scenario (needs the explore extra: pip "
        'install "flywheel_sd[explore]").',
        explore.cmd_explore,
        (),
        (
            option("scenario", nargs="?", help="scenario to start from (default: baseline)"),
            option(
                "--reference",
                metavar="SCENARIO",
                help="scenario drawn as the ghost line (default: baseline)",
            ),
            option(
                "--compare",
                metavar="SCENARIO",
                nargs="+",
                default=(),
                help="scenarios overlaid from the start (more can be picked in the page)",
            ),
            option("--port", type=positive_int, default=5006, help="port (default 5006)"),
            option("--show", action="store_true", help="open the page in a browser"),
        ),
    ),
    Command(
        "calibrate",
        "fit parameters to data",
        "Fit constants of a scenario (or the --model file) to data, with chi-square "
        "profile-likelihood bounds: a parameter table, the fit per series, identifiability "
        "notes.",
        calibrate.cmd_calibrate,
        (),
        (
            option("scenario", nargs="?", help="scenario name or .toml file"),
            option(
                "--data",
                required=True,
                metavar="CSV",
                help="the data: columns series, period_start, period_end, value[, sigma, "
                "sampling] (the reference_data layout), or time, value[, sigma] (one series "
                "named by the file's stem)",
            ),
            option(
                "--param",
                action="append",
                required=True,
                metavar="NAME[=LOW:HIGH]",
                type=param_range,
                help="a constant to fit and its search range (default: its documented "
                "range); repeat for each",
            ),
            option(
                "--series",
                action="append",
                metavar="NAME",
                help="fit only this series of the data file (default: all); repeatable",
            ),
            option(
                "--map",
                action="append",
                metavar="SERIES=EXPR",
                help="what a data series is in the model: an output or an expression, e.g. "
                "'Revenue=Platform Revenue*12' (default: the series' own name); repeatable",
            ),
            option(
                "--sum",
                action="append",
                metavar="SERIES",
                help="compare this period series with the model's integral over each period "
                "(flows: annual revenue) instead of its mean; repeatable",
            ),
            option(
                "--time-map",
                metavar="MONTH=DATE",
                help="put dated data on the model's clock: model month MONTH is DATE (e.g. "
                "60=2018-10-01), or DATE alone for month 0",
            ),
            option(
                "--payoff",
                choices=("wsse", "log", "robust"),
                default="wsse",
                help="weighted squares (default), squares of logs (sigma relative), or "
                "absolute values",
            ),
            option(
                "--method",
                choices=("de+least_squares", "lhs+least_squares", "least_squares"),
                default="de+least_squares",
                help="global start then local polish (default: de+least_squares)",
            ),
            option("--seed", type=int, default=0, help="random seed (default 0)"),
            option(
                "--mcmc",
                type=positive_int,
                metavar="STEPS",
                help="also sample the posterior with emcee (saved with --out)",
            ),
            option(
                "--out",
                metavar="PATH",
                help="save bounds, correlation, fit, data points and fitted run (.nc)",
            ),
            option(
                "--scenario-out",
                metavar="PATH",
                help="save the calibrated scenario (.toml)",
            ),
            option("--plot", metavar="PATH", help="save the data against the fitted run"),
        ),
    ),
    Command(
        "loops",
        "which feedback loops dominate a run",
        "Loops That Matter along one run: the periods in which a loop (or the fewest loops "
        "together) explains at least half the change, with their polarity; --at T lists "
        "every loop's relative score at T.",
        loops.cmd_loops,
        (),
        (
            option("scenario", nargs="?", help="scenario name or .toml file"),
            option(
                "--at",
                type=number,
                metavar="T",
                help="also list the relative loop scores at time T, largest first",
            ),
            option(
                "--index-only",
                action="store_true",
                help="score only the loops of the model's loop index (<model>.loops.toml); "
                "shares are then among those loops",
            ),
            option(
                "--plot",
                metavar="PATH",
                help="save a stacked chart of the relative loop scores over time",
            ),
            option(
                "--variable",
                metavar="NAME",
                help="dominance for one stock or variable: only the loops through it count, "
                "their shares renormalised among them; with --plot also the behaviour drawn "
                "above the loop scores (default there: Active Buyers)",
            ),
            option(
                "--diagram",
                metavar="PATH",
                help="with --at: save a causal-loop diagram of the 3 dominant loops at T",
            ),
            option(
                "--sweep",
                type=positive_int,
                metavar="N",
                help="across an ensemble: an LHS of N runs over the --param ranges; prints "
                "the share of runs in which each loop of the loop index dominates",
            ),
            option(
                "--design",
                metavar="FILE",
                help="across an ensemble: the runs of a table (.csv, one column per "
                "parameter) or of a 'flywheel sweep' result (.nc)",
            ),
            option(
                "--param",
                action="append",
                type=param_range,
                metavar="NAME[=LOW:HIGH]",
                help="with --sweep: an uncertain constant and its range (default: its "
                "documented range); repeat for each",
            ),
            option(
                "--times",
                type=number,
                nargs="+",
                metavar="T",
                help="with --sweep or --design: the times of the share table (default: "
                "five evenly spaced)",
            ),
            option("--seed", type=int, default=0, help="with --sweep: random seed (default 0)"),
        ),
    ),
    Command(
        "diagram",
        "draw the model's structure",
        "Draw the model's stock-and-flow structure to a file.",
        describe.cmd_diagram,
        (),
        (
            option("--out", required=True, metavar="PATH", help="figure file (.png, .svg)"),
            option(
                "--views",
                nargs="+",
                metavar="VIEW",
                help="draw only these views of the sketch (default: all)",
            ),
            option("--dpi", type=positive_int, help="resolution of a raster figure"),
        ),
    ),
)


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line and no exit (main decides the status)."""

    def error(self, message: str):  # argparse calls this on bad usage
        raise UsageError(f"{message} (see '{self.prog} --help')")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``flywheel`` command."""
    from .. import __version__

    parser = _Parser(
        prog=PROG,
        description=DESCRIPTION,
        epilog="Run 'flywheel SUBCOMMAND --help' for a subcommand's options.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    add_common(parser, top=True)
    sub = parser.add_subparsers(
        title="subcommands", dest="command", metavar="SUBCOMMAND", required=True
    )
    for command in COMMANDS:
        p = sub.add_parser(command.name, help=command.help, description=command.description)
        add_common(p, top=False)
        for entry in command.options:
            entry.add_to(p)
        for group in command.groups:
            add_group(p, group)
        p.set_defaults(handler=command.run)
    return parser


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
    """The exit status and one-line message for an error."""
    from ..errors import FlywheelError, SolverError

    text = " ".join(str(err).split())
    # The API's hints name keyword arguments; on the command line they are options.
    text = text.replace("pass range_check='warn' or 'off'", "pass --range-check warn or off")
    text = text.replace("pass resume=True", "pass --resume")
    text = text.replace("use a new store path", "use a new --store path")
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
    return EXIT_FAILED, (
        f"failed: {type(err).__name__}: {text} (rerun with --debug for the traceback)"
    )


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
