"""Benchmark the compiled engine: issue #10's table, measured side by side in one run.

Usage::

    python benchmarks/bench_compiled.py                  # the default model, then SIR
    python benchmarks/bench_compiled.py --model path/to/model.mdl --repeats 21
    python benchmarks/bench_compiled.py --no-sir --pysd-repeats 1 --process-repeats 3

For each model (the project's ``models/platform_flywheel.mdl`` and, when
``$FLYWHEEL_TEST_MODELS`` is set, the SDXorg sample ``samples/SIR/SIR.mdl``, read in place)
it prints, with their inputs:

1. one Euler run on the compiled engine (Numba, warm; every variable recorded at SAVEPER)
   against ``pysimlin`` (the Simlin engine, a Rust VM) running the same file: the run only
   (``flywheel_sd.engine.run.fixed_step`` against ``Model.simulate()`` + ``Sim.run_to_end()``,
   loading excluded on both sides), and each including its Python-side output assembly
   (``simulate(method="euler")``, a pandas frame, against ``Model.run(analyze_loops=False)
   .results``, a pandas frame). Goal: at least 20x.
2. that Euler run against PySD's ``run()`` (``pysd.load`` + ``Model.run()``). Goal: 10,000x.
3. one RK45 run (rtol 1e-6, atol 1e-6) against one Euler run, both compiled. Goal: <= 3x.
4. ``import flywheel_sd``, and ``flywheel run`` (the default model: ``baseline``) in a fresh
   process with the model cached (translation, program and Numba's on-disk cache warm).
   Goals: < 0.5 s and < 2 s.
5. Numba's first compile (a fresh, empty cache folder, ``FLYWHEEL_SD_CACHE``) against a
   second process reading the cache it left.

Timings interleave the contenders repetition by repetition (A B A B ...) and report the
median of each and the median of the pairwise ratios, so a drift in the shared machine's
speed affects both sides alike. Whole-process figures are wall-clock seconds of child
processes started with ``subprocess`` (medians).

A model the compiler does not cover runs on the PySD path; the benchmark then says why and,
where the refused construct is ``SAVEPER = TIME STEP`` (refused before COMPILER_VERSION 2),
times a variant of the file written to a temporary folder with SAVEPER given as a number
for figures 1-3 and 5; the variant is named in the output.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
PROJECT_MODEL = REPO / "models" / "platform_flywheel.mdl"
VENV_BIN = Path(sys.executable).parent
GOALS = {"pysimlin": 20.0, "pysd": 10_000.0, "rk45": 3.0, "import": 0.5, "cli": 2.0}


# -- timing helpers -------------------------------------------------------------------------
def interleaved(funcs: dict, repeats: int, warmup: int = 1) -> dict[str, list[float]]:
    """Seconds of each call, the functions taken in turn each repetition."""
    for _ in range(warmup):
        for func in funcs.values():
            func()
    times: dict[str, list[float]] = {name: [] for name in funcs}
    for _ in range(repeats):
        for name, func in funcs.items():
            started = time.perf_counter()
            result = func()
            elapsed = time.perf_counter() - started
            times[name].append(result if getattr(func, "median_of_calls", False) else elapsed)
    return times


def warm(func, calls: int = 5):
    """`func` as one untimed call, then `calls` timed ones; returns their median seconds
    (the caller times the whole and reads this instead: see `interleaved`)."""

    def run():
        func()
        times = []
        for _ in range(calls):
            started = time.perf_counter()
            func()
            times.append(time.perf_counter() - started)
        return statistics.median(times)

    run.median_of_calls = True
    return run


def med(values) -> float:
    return statistics.median(values)


def pair_ratio(times: dict, a: str, b: str) -> float:
    """Median over repetitions of time[a] / time[b]."""
    return med([x / y for x, y in zip(times[a], times[b])])


def fmt_t(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds * 1e6:.0f} us"


def verdict(value: float, goal: float, larger_is_better: bool) -> str:
    met = value >= goal if larger_is_better else value <= goal
    sign = ">=" if larger_is_better else "<="
    return f"goal {sign} {goal:g}: {'met' if met else 'MISSED'}"


def child(code: str, env: dict) -> dict:
    """Run `code` in a fresh interpreter; it prints one JSON object as its last line."""
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False
    )
    if done.returncode:
        raise RuntimeError(f"child failed ({done.returncode}): {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def wall(argv: list[str], env: dict) -> float:
    started = time.perf_counter()
    done = subprocess.run(
        argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, check=False
    )
    elapsed = time.perf_counter() - started
    if done.returncode:
        raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr[-2000:]}")
    return elapsed


# -- the model under test -------------------------------------------------------------------
def compilable_variant(path: Path, folder: Path) -> tuple[Path, str | None]:
    """`path` itself if the compiler covers it; else a variant in `folder` with the refused
    construct replaced (only ``SAVEPER = TIME STEP`` is known), and the reason."""
    import flywheel_sd as fw
    from flywheel_sd.engine import NotCompilable

    try:
        fw.load(path).compiled()
        return path, None
    except NotCompilable as err:
        reason = str(err)
    text = path.read_text(encoding="utf-8", errors="replace")
    step = re.search(r"^\s*TIME STEP\s*=\s*([0-9.eE+-]+)", text, re.MULTILINE)
    saveper = re.compile(r"^(\s*SAVEPER\s*=\s*)TIME STEP", re.MULTILINE)
    if "SAVEPER given by an expression" not in reason or not step or not saveper.search(text):
        return path, reason
    variant = folder / f"{path.stem}_numeric_saveper{path.suffix}"
    variant.write_text(saveper.sub(lambda m: m.group(1) + step.group(1), text), encoding="utf-8")
    return variant, reason


class Contenders:
    """Every way of running one model file, loaded once (loading is not timed)."""

    def __init__(self, path: Path, compiled_path: Path):
        import pysd
        import simlin

        import flywheel_sd as fw
        from flywheel_sd.engine import run

        self.run = run
        self.model = fw.load(path)
        self.cmodel = fw.load(compiled_path)
        self.cm = self.cmodel.compiled()
        self.mod = self.cm.module("numba")
        self.c = self.cm.constants({}, {})
        self.simlin = simlin.load(str(path))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.pysd = pysd.load(str(self.model.py_file))
        # compile (or read from Numba's cache) before timing anything
        self.euler()
        self.rk45()

    # the compiled engine, run only
    def euler(self):
        return self.run.fixed_step(self.cm, self.mod, self.cm.constants({}, {}), "euler", None)

    def rk45(self):
        return self.run.adaptive(
            self.cm, self.mod, self.cm.constants({}, {}), "RK45", 1e-6, 1e-6, None, [], None
        )

    # ... and with the pandas frame simulate() returns
    def simulate_euler(self):
        import flywheel_sd as fw

        frame = fw.simulate(self.cmodel, method="euler")
        assert frame.attrs["engine"] == "compiled (numba)", frame.attrs["engine"]
        return frame

    # pysimlin: a new Sim (its per-run state) and the run; loading the file is not timed
    def simlin_run(self):
        sim = self.simlin.simulate(enable_ltm=False)
        sim.run_to_end()
        return sim

    def simlin_frame(self):
        return self.simlin.run(analyze_loops=False).results

    def pysd_run(self):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return self.pysd.run()


def bench_runs(path: Path, args, folder: Path) -> dict:
    compiled_path, refused = compilable_variant(path, folder)
    k = Contenders(path, compiled_path)
    out = {
        "model": path.name,
        "refused": refused,
        "variant": compiled_path if compiled_path != path else None,
    }
    _, out_array, stats = k.euler()
    out["shape"] = out_array.shape
    out["steps"] = stats["n_steps"]
    out["simlin_shape"] = k.simlin_frame().shape
    out["rk45_nfev"] = k.rk45()[2]["nfev"]
    out["euler_nfev"] = stats["nfev"]

    t = interleaved(
        {
            "euler": k.euler,
            "simlin": k.simlin_run,
            "simulate": k.simulate_euler,
            "simlin_frame": k.simlin_frame,
            "rk45": k.rk45,
        },
        args.repeats,
        warmup=2,
    )
    out["t"] = {name: med(v) for name, v in t.items()}
    out["r_simlin"] = pair_ratio(t, "simlin", "euler")
    out["r_simlin_frame"] = pair_ratio(t, "simlin_frame", "simulate")
    out["r_rk45"] = pair_ratio(t, "rk45", "euler")

    # after each PySD run (seconds of xarray work that evict every cache), the compiled run
    # is warmed again by one untimed call and timed as the median of five, as above
    tp = interleaved(
        {"pysd": k.pysd_run, "euler": warm(k.euler), "simulate": warm(k.simulate_euler)},
        args.pysd_repeats,
        warmup=0,
    )
    out["t"]["pysd"] = med(tp["pysd"])
    out["r_pysd"] = pair_ratio(tp, "pysd", "euler")
    out["r_pysd_frame"] = pair_ratio(tp, "pysd", "simulate")
    return out


# -- whole processes ------------------------------------------------------------------------
IMPORT_CODE = """
import json, time
t = time.perf_counter()
import flywheel_sd
print(json.dumps({"import": time.perf_counter() - t}))
"""

FIRST_COMPILE_CODE = """
import json, sys, time
timings = {}
t = time.perf_counter()
import flywheel_sd as fw
from flywheel_sd.engine import run
model = fw.load(%r)
timings["load (translate or read)"] = time.perf_counter() - t
t = time.perf_counter()
cm = model.compiled()
timings["compiled() (program)"] = time.perf_counter() - t
t = time.perf_counter()
mod = cm.module("numba")
timings["module('numba') (import)"] = time.perf_counter() - t
c = cm.constants({}, {})
t = time.perf_counter()
run.fixed_step(cm, mod, c, "euler", None)
timings["first euler run"] = time.perf_counter() - t
t = time.perf_counter()
run.adaptive(cm, mod, c, "RK45", 1e-6, 1e-6, None, [], None)
timings["first RK45 run"] = time.perf_counter() - t
t = time.perf_counter()
run.fixed_step(cm, mod, c, "euler", None)
timings["second euler run"] = time.perf_counter() - t
print(json.dumps(timings))
"""


def bench_processes(
    path: Path, compiled_path: Path, cache: str, args, cli_args: list[str]
) -> dict:
    """Import time and the CLI run in fresh processes, the model cached in `cache` (the
    CLI runs `path`; Numba is warmed for `compiled_path`, `path` or its variant)."""
    env = dict(os.environ, FLYWHEEL_SD_CACHE=cache)
    env.pop("FLYWHEEL_SD_JIT", None)  # the default: "auto"
    cli = [str(VENV_BIN / "flywheel"), "run", *cli_args]
    bare = [sys.executable, "-c", "pass"]
    # warm the cache: translation, program, Numba (eagerly, in this child)
    child(FIRST_COMPILE_CODE % str(compiled_path), dict(env, FLYWHEEL_SD_JIT="eager"))
    wall(cli, env)
    off = dict(env, FLYWHEEL_SD_JIT="off")
    imports, import_walls, cli_walls, cli_off, bares = [], [], [], [], []
    for _ in range(args.process_repeats):
        imports.append(child(IMPORT_CODE, env)["import"])
        import_walls.append(wall([sys.executable, "-c", "import flywheel_sd"], env))
        cli_walls.append(wall(cli, env))
        cli_off.append(wall(cli, off))
        bares.append(wall(bare, env))
    return {
        "import": med(imports),
        "import_wall": med(import_walls),
        "cli": med(cli_walls),
        "cli_off": med(cli_off),
        "python": med(bares),
        "cli_argv": "flywheel run " + " ".join(cli_args),
    }


def bench_first_compile(path: Path) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-compiled-cold-") as fresh:
        env = dict(os.environ, FLYWHEEL_SD_CACHE=fresh, FLYWHEEL_SD_JIT="eager")
        cold = child(FIRST_COMPILE_CODE % str(path), env)
        warm = child(FIRST_COMPILE_CODE % str(path), env)
    return {"cold": cold, "warm": warm}


# -- report ---------------------------------------------------------------------------------
def report(r: dict, p: dict | None, fc: dict | None, args) -> None:
    t = r["t"]
    print(f"\n=== {r['model']} ===")
    if r["refused"]:
        print(
            f"  the compiler refuses the file ({r['refused']}): simulate() runs it on the "
            "PySD path"
        )
        if r["variant"]:
            print(
                f"  figures 1-3 and 5 time the compiled engine on {r['variant']} (that "
                "construct replaced by its value); pysimlin and PySD run the file itself"
            )
    rows, cols = r["shape"]
    print(
        f"  Euler: {r['steps']} steps, {rows} saved times x {cols} variables recorded "
        f"(pysimlin's frame {r['simlin_shape'][0]} x {r['simlin_shape'][1]}); medians of "
        f"{args.repeats} interleaved repetitions, PySD of {args.pysd_repeats}"
    )
    print(
        f"  1. Euler vs pysimlin, run only:        compiled {fmt_t(t['euler'])}, pysimlin "
        f"{fmt_t(t['simlin'])} -> {r['r_simlin']:.1f}x faster "
        f"({verdict(r['r_simlin'], GOALS['pysimlin'], True)})"
    )
    print(
        f"     with the pandas frame:              simulate() {fmt_t(t['simulate'])}, "
        f"Model.run().results {fmt_t(t['simlin_frame'])} -> {r['r_simlin_frame']:.1f}x"
    )
    print(
        f"  2. Euler vs PySD run():                compiled {fmt_t(t['euler'])}, PySD "
        f"{fmt_t(t['pysd'])} -> {r['r_pysd']:,.0f}x faster "
        f"({verdict(r['r_pysd'], GOALS['pysd'], True)}); simulate() with its frame: "
        f"{r['r_pysd_frame']:,.0f}x"
    )
    print(
        f"  3. RK45 (rtol 1e-6) vs Euler:          RK45 {fmt_t(t['rk45'])} "
        f"({r['rk45_nfev']} RHS evaluations), Euler {fmt_t(t['euler'])} "
        f"({r['euler_nfev']}) -> {r['r_rk45']:.2f}x "
        f"({verdict(r['r_rk45'], GOALS['rk45'], False)})"
    )
    if p:
        print(
            f"  4. import flywheel_sd (in-process, fresh interpreter): {p['import']:.3f} s "
            f"({verdict(p['import'], GOALS['import'], False)}); whole process "
            f"`python -c 'import flywheel_sd'` {p['import_wall']:.3f} s"
        )
        if r["refused"]:
            print("     (the CLI runs the file itself: on the PySD path)")
        print(
            f"     {p['cli_argv']} (whole process, cached): {p['cli']:.2f} s "
            f"({verdict(p['cli'], GOALS['cli'], False)}); with FLYWHEEL_SD_JIT=off "
            f"(plain-Python backend, no Numba import) {p['cli_off']:.2f} s; a bare "
            f"`python -c pass` {p['python']:.3f} s; medians of {args.process_repeats}"
        )
    if fc:
        print(
            "  5. Numba first compile (fresh FLYWHEEL_SD_CACHE) vs a second process "
            "(cache warm), FLYWHEEL_SD_JIT=eager:"
        )
        for key in fc["cold"]:
            print(f"     {key:<28} {fc['cold'][key]:8.3f} s   then {fc['warm'][key]:8.3f} s")


def revision() -> str:
    """The checkout measured: commit, and whether flywheel_sd/ has uncommitted changes."""
    try:
        head = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--", "flywheel_sd"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "not a git checkout"
    return f"commit {head}" + (" + uncommitted changes in flywheel_sd/" if dirty else "")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model",
        action="append",
        type=Path,
        help="model file (repeatable); default: the project's, then SIR",
    )
    parser.add_argument("--repeats", type=int, default=31, help="fast runs (default 31)")
    parser.add_argument(
        "--pysd-repeats",
        type=int,
        default=3,
        help="PySD runs (default 3; ~15 s each on the default model)",
    )
    parser.add_argument("--process-repeats", type=int, default=5)
    parser.add_argument("--no-sir", action="store_true")
    parser.add_argument(
        "--no-processes", action="store_true", help="skip figures 4 and 5 (the fresh processes)"
    )
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    paths = list(args.model or [PROJECT_MODEL])
    suite = os.environ.get("FLYWHEEL_TEST_MODELS")
    if not args.model and not args.no_sir:
        if suite and (Path(suite) / "samples" / "SIR" / "SIR.mdl").is_file():
            paths.append(Path(suite) / "samples" / "SIR" / "SIR.mdl")
        else:
            print("SIR: skipped (set FLYWHEEL_TEST_MODELS to the SDXorg test-models folder)")
    import numba
    import pysd
    import simlin

    print(
        f"{platform.node()}: {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; Python "
        f"{sys.version.split()[0]}, numba {numba.__version__}, pysd {pysd.__version__}, "
        f"pysimlin {simlin.__version__}, numpy {np.__version__}; "
        f"{time.strftime('%Y-%m-%d %H:%M')}; {revision()}"
    )
    with tempfile.TemporaryDirectory(prefix="bench-compiled-") as cache:
        os.environ["FLYWHEEL_SD_CACHE"] = cache
        os.environ["FLYWHEEL_SD_JIT"] = "eager"
        folder = Path(cache) / "variants"
        folder.mkdir()
        for path in paths:
            path = path.resolve()
            r = bench_runs(path, args, folder)
            p = fc = None
            if not args.no_processes:
                cli_args = (
                    ["baseline"] if path == PROJECT_MODEL.resolve() else ["--model", str(path)]
                )
                p = bench_processes(path, r["variant"] or path, cache, args, cli_args)
                fc = bench_first_compile(r["variant"] or path)
            report(r, p, fc, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
