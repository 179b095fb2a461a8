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


def cmd_loops(args) -> int:
    """The dominance periods of a run (`flywheel_sd.ltm.dominance_periods`), and with --at
    the relative loop scores at one time; --plot draws them under a variable's behaviour."""
    import matplotlib.pyplot as plt

    from .. import run_scenario
    from ..errors import FlywheelError
    from ..loops import loop_index_path, read_loop_index
    from ..ltm import dominance_periods, loop_dominance
    from ..plotting import loop_label, plot_loop_dominance

    plot = check_plot(args.plot)
    sc = scenario_for(args, args.scenario)
    model = sc.load_model()
    settings = model.time_settings()
    t0, t1 = settings["initial_time"], settings["final_time"]
    if args.at is not None and not t0 <= args.at <= t1:
        raise UsageError(f"--at {args.at:g} is outside the run's times {t0:g} to {t1:g}")
    variable = None
    if plot is not None:
        try:
            variable = model.real_name(args.variable)
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
    periods = dominance_periods(ds)
    at = _scores_at(ds, args.at) if args.at is not None else None

    wrote = []
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
                "note": ds.attrs.get("note", ""),
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
            }
        )
        return EXIT_OK
    title = (
        f"dominance periods of {sc.name} on {model.path.name} ({ds.sizes['loop']} loops, "
        f"{ds.attrs.get('discovery')}; the loops that together explain at least half the "
        "change, strongest first)"
    )
    print_table(_periods_text(periods, names), title, wrap=False)
    if ds.attrs.get("note"):
        print(f"note: {ds.attrs['note']}")
    if at is not None:
        inactive = sum(r["relative_score"] == 0 for r in at["scores"])
        print()
        print_table(
            _at_text(at, names),
            f"relative loop scores at t = {at['time']:g} (sorted by size; + reinforcing, "
            f"- balancing; {inactive} loops inactive then, not listed)"
            if inactive
            else f"relative loop scores at t = {at['time']:g} (sorted by size; + reinforcing, "
            "- balancing)",
            wrap=False,
        )
    print_wrote(wrote)
    return EXIT_OK


def _scores_at(ds, t: float) -> dict[str, Any]:
    """The relative loop scores at the saved time nearest `t`, largest |score| first."""
    snap = ds.sel(time=t, method="nearest")
    rows = [
        {
            "loop": str(k),
            "relative_score": float(snap["relative_score"].sel(loop=k)),
            "polarity": {1: "reinforcing", -1: "balancing"}.get(
                int(snap["polarity"].sel(loop=k)), "inactive"
            ),
        }
        for k in ds["loop"].values
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
