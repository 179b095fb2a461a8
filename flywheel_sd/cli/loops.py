"""``flywheel loops``: which feedback loops dominate a run, by Loops That Matter (issue 14)."""

from __future__ import annotations

from typing import Any

from ._common import (
    EXIT_OK,
    UsageError,
    check_plot,
    print_json,
    print_table,
    print_wrote,
    scenario_for,
)

#: The behaviour drawn above the loop scores by --plot when --variable is not given.
PLOTTED = "Active Buyers"


def cmd_loops(args) -> int:
    """The dominance periods of a run (`flywheel_sd.ltm.dominance_periods`; with --variable
    NAME those of the loops through NAME, their shares renormalised among them), and with
    --at the relative loop scores at one time; --plot draws them under a variable's behaviour,
    --diagram the dominant loops at --at as a causal-loop diagram; --sweep N or --design FILE
    add the share of an ensemble's runs in which each loop dominates
    (`flywheel_sd.ltm.loop_dominance_ensemble`)."""
    import matplotlib.pyplot as plt

    from .. import run_scenario
    from ..errors import FlywheelError
    from ..loop_index import loop_index_path, read_loop_index
    from ..ltm import dominance_periods, loop_dominance, loops_through
    from ..plotting import loop_label, plot_dominant_loops, plot_loop_dominance

    plot = check_plot(args.plot)
    diagram = check_plot(getattr(args, "diagram", None), "--diagram")
    if diagram is not None and args.at is None:
        raise UsageError("--diagram needs --at T: the time whose dominant loops to draw")
    sc = scenario_for(args, args.scenario)
    model = sc.load_model()
    settings = model.time_settings()
    t0, t1 = settings["initial_time"], settings["final_time"]
    if args.at is not None and not t0 <= args.at <= t1:
        raise UsageError(f"--at {args.at:g} is outside the run's times {t0:g} to {t1:g}")
    ensemble_of = _ensemble_input(args, model, t0, t1)
    variable = None
    if plot is not None:
        try:
            variable = model.real_name(args.variable or PLOTTED)
        except (KeyError, FlywheelError) as err:
            text = " ".join(str(err.args[0] if err.args else err).split())
            text = text.replace("unknown parameter", "unknown variable")
            raise UsageError(f"--variable: {text}") from None
    loops = None
    if args.index_only:
        where = loop_index_path(model)
        if not where.is_file():
            raise UsageError(f"--index-only: {model.path.name} has no loop index ({where.name})")
        loops = list(read_loop_index(where))
    try:
        ds = loop_dominance(model, loops, run=sc)
    except KeyError as err:  # an index naming a variable the model lacks
        raise UsageError(str(err.args[0]) if err.args else str(err)) from None
    of = None  # --variable: the variable whose loops count, as the model spells it
    if args.variable is not None:
        try:
            of = loops_through(ds, args.variable)[0]
        except FlywheelError as err:
            raise UsageError(f"--variable: {' '.join(str(err).split())}") from None
    periods = dominance_periods(ds, variable=of)
    at = _scores_at(ds, args.at, of) if args.at is not None else None
    ensemble = None
    if ensemble_of is not None:
        ensemble = _ensemble(sc, model, args, *ensemble_of)

    wrote = []
    if diagram is not None:
        try:
            fig = plot_dominant_loops(ds, args.at, diagram, variable=args.variable or PLOTTED)
        except FlywheelError as err:  # no loop active at --at
            raise UsageError(f"--diagram: {err}") from None
        plt.close(fig)
        wrote.append(diagram)
    if plot is not None:
        assert variable is not None
        run = run_scenario(sc, return_columns=[variable])
        plt.close(
            plot_loop_dominance(
                ds,
                run,
                variable,
                plot,
                title=f"Loop dominance in {sc.name}: what drives {variable}",
                only_through=of is not None,  # --variable: its loops, as the periods count
            )
        )
        wrote.append(plot)

    names = {str(k): loop_label(ds, str(k), limit=70) for k in ds["loop"].values}
    if args.json:
        print_json(
            {
                "scenario": sc.name,
                "model": str(model.path),
                "discovery": ds.attrs.get("discovery"),
                "note": periods.attrs.get("note") or ds.attrs.get("note", ""),
                "variable": of,  # --variable: the periods and --at are of its loops
                "loops": [
                    {
                        "id": str(k),
                        "name": str(ds["loop_name"].sel(loop=k).values),
                        "variables": str(ds["loop_variables"].sel(loop=k).values),
                        "polarity": str(ds["summary"].sel(loop=k).values),
                        "partition": int(ds["partition"].sel(loop=k).values),
                    }
                    for k in ds["loop"].values
                ],
                "periods": periods.to_dict(orient="records"),
                "at": at,
                "wrote": [str(w) for w in wrote],
                # with --sweep or --design only
                **({"ensemble": _ensemble_json(ensemble)} if ensemble is not None else {}),
            }
        )
        return EXIT_OK
    if of is None:
        title = (
            f"dominance periods of {sc.name} on {model.path.name} ({ds.sizes['loop']} loops, "
            f"{ds.attrs.get('discovery')}; the loops that together explain at least half the "
            "change, strongest first)"
        )
    else:
        n_through = len(loops_through(ds, of)[1])
        title = (
            f"dominance periods of {of} in {sc.name} on {model.path.name} ({n_through} of "
            f"{ds.sizes['loop']} loops pass through it, {ds.attrs.get('discovery')}; the loops "
            f"through {of} that together explain at least half the change those loops "
            "explain, strongest first)"
        )
    if not periods.empty or of is None:
        print_table(_periods_text(periods, names), title, wrap=False)
    for note in (periods.attrs.get("note"), ds.attrs.get("note")):
        if note:
            print(f"note: {note}")
            break
    if at is not None:
        inactive = sum(r["relative_score"] == 0 for r in at["scores"])
        what = "relative loop scores" if of is None else f"shares of the loops through {of}"
        print()
        print_table(
            _at_text(at, names),
            f"{what} at t = {at['time']:g} (sorted by size; + reinforcing, "
            f"- balancing; {inactive} loops inactive then, not listed)"
            if inactive
            else f"{what} at t = {at['time']:g} (sorted by size; + reinforcing, - balancing)",
            wrap=False,
        )
    if ensemble is not None:
        print()
        print_table(_ensemble_text(ensemble), _ensemble_title(ensemble), wrap=False)
    print_wrote(wrote)
    return EXIT_OK


def _scores_at(ds, t: float, variable: str | None = None) -> dict[str, Any]:
    """The relative loop scores at the saved time nearest `t`, largest |score| first (with
    `variable`: of the loops through it, renormalised among them)."""
    from ..ltm import variable_scores

    snap = ds.sel(time=t, method="nearest")
    scores = snap["relative_score"]
    if variable is not None:
        scores = variable_scores(ds, variable).sel(time=t, method="nearest")
    rows = [
        {
            "loop": str(k),
            "relative_score": float(scores.sel(loop=k)),
            "polarity": {1: "reinforcing", -1: "balancing"}.get(
                int(snap["polarity"].sel(loop=k)), "inactive"
            ),
        }
        for k in scores["loop"].values
    ]
    rows.sort(key=lambda r: -abs(float(r["relative_score"])))  # type: ignore[arg-type]
    return {"time": float(snap["time"]), "scores": rows}


def _periods_text(periods, names: dict[str, str]):
    """The periods as printed: one row each, the dominant loops by id, the first named."""
    frame = periods.copy()
    frame["from"] = [f"{v:g}" for v in frame["start"]]
    frame["to"] = [f"{v:g}" for v in frame["end"]]
    frame["share"] = [f"{v:.0%}" for v in frame["share"]]
    frame["strongest loop"] = [names.get(s.split("+")[0], "") for s in frame["loops"]]
    columns = ["from", "to", "loops", "polarity", "share", "strongest loop"]
    if frame["partition"].nunique() > 1:  # loops that share no variable: apart
        columns.insert(2, "partition")
    return frame[columns].set_index("from")


def _at_text(at: dict, names: dict[str, str]):
    import pandas as pd

    frame = pd.DataFrame(at["scores"])
    if frame.empty:
        return frame
    frame = frame[frame["relative_score"] != 0]  # inactive at that time: left out
    frame["share"] = [f"{v:+.1%}" for v in frame["relative_score"]]
    frame["loop name"] = [names[k] for k in frame["loop"]]
    return frame[["loop", "share", "polarity", "loop name"]].set_index("loop")


# -- across an ensemble (--sweep N, --design FILE) ------------------------------------------
def _ensemble_input(args, model, t0: float, t1: float):
    """(design or sweep result, times) of --sweep N / --design FILE, checked before any run;
    None without them."""
    from pathlib import Path

    import numpy as np

    from .. import designs
    from ..errors import FlywheelError

    sweep_n, design_file = getattr(args, "sweep", None), getattr(args, "design", None)
    params, times = getattr(args, "param", None), getattr(args, "times", None)
    if sweep_n is not None and design_file is not None:
        raise UsageError("give --sweep N or --design FILE, not both")
    if sweep_n is None and design_file is None:
        for given, name in ((params, "--param"), (times, "--times")):
            if given:
                raise UsageError(f"{name} is for an ensemble: add --sweep N or --design FILE")
        return None
    if times:
        outside = [t for t in times if not t0 <= t <= t1]
        if outside:
            raise UsageError(f"--times {outside[0]:g} is outside the run's times {t0:g} to {t1:g}")
    else:
        times = [float(t) for t in np.linspace(t0, t1, 6)[1:]]
    if sweep_n is not None:
        if not params:
            raise UsageError("--sweep needs the uncertain constants: --param NAME[=LOW:HIGH]")
        ranges = {p.name: (p.low, p.high) if p.low is not None else None for p in params}
        try:
            return designs.lhs(ranges, sweep_n, seed=args.seed, model=model), times
        except FlywheelError as err:
            raise UsageError(f"--param: {err}") from None
    if params:
        raise UsageError("--param is for --sweep; --design FILE holds its own parameters")
    path = Path(str(design_file))
    if not path.is_file():
        raise UsageError(f"--design {path}: no such file")
    try:
        if path.suffix.lower() == ".csv":
            import pandas as pd

            return designs.from_table(pd.read_csv(path)), times
        if path.suffix.lower() == ".nc":
            import xarray as xr

            with xr.open_dataset(path) as opened:
                return opened.load(), times
    except (OSError, ValueError) as err:
        raise UsageError(f"--design {path}: {' '.join(str(err).split())}") from None
    raise UsageError(f"--design {path}: expected a .csv table of runs or a sweep result (.nc)")


def _ensemble(sc, model, args, source, times) -> Any:
    """`loop_dominance_ensemble` over `source` at `times` (the loop index's loops)."""
    import xarray as xr

    from ..errors import FlywheelError
    from ..ltm import loop_dominance_ensemble

    target: Any = sc
    alone = isinstance(source, xr.Dataset) and not source.attrs.get("scenario")
    if alone and args.scenario is None:  # a sweep of the model alone
        target = model
    try:
        return loop_dominance_ensemble(target, source, times=times)
    except FlywheelError as err:
        option = "--sweep" if getattr(args, "sweep", None) else "--design"
        raise UsageError(f"{option}: {' '.join(str(err).split())}") from None


def _ensemble_title(ens) -> str:
    import json

    names = ", ".join(json.loads(ens.attrs["parameters"]))
    failed = f", {ens.attrs['n_failed']} failed" if ens.attrs["n_failed"] else ""
    return (
        f"share of {ens.attrs['n_runs']} runs (over {names}{failed}) in which each loop "
        "dominates: has the largest |relative score| of the loops; in brackets its median "
        f"relative score (+ reinforcing, - balancing); {ens.attrs['seconds']:.1f} s"
    )


def _ensemble_text(ens):
    import pandas as pd

    rows = {}
    for k in ens["loop"].values:
        cells = {}
        for t in ens["time"].values:
            share = float(ens["dominant_share"].sel(loop=k, time=t))
            median = float(ens["relative_score_quantile"].sel(quantile=0.5, loop=k, time=t))
            cells[f"t = {t:g}"] = f"{share:4.0%} ({median:+.2f})"
        rows[str(k)] = cells
    frame = pd.DataFrame.from_dict(rows, orient="index")
    frame.index.name = "loop"
    return frame


def _ensemble_json(ens) -> dict[str, Any]:
    import json

    return {
        "runs": int(ens.attrs["n_runs"]),
        "failed": int(ens.attrs["n_failed"]),
        "parameters": json.loads(ens.attrs["parameters"]),
        "times": [float(t) for t in ens["time"].values],
        "seconds": float(ens.attrs["seconds"]),
        "loops": {
            str(k): {
                "dominant_share": ens["dominant_share"].sel(loop=k).values.tolist(),
                "majority_share": ens["majority_share"].sel(loop=k).values.tolist(),
                "quantiles": {
                    f"{q:g}": ens["relative_score_quantile"]
                    .sel(quantile=q, loop=k)
                    .values.tolist()
                    for q in ens["quantile"].values
                },
            }
            for k in ens["loop"].values
        },
    }
