"""``flywheel explore``: the what-if explorer, served on localhost (issue 15)."""

from __future__ import annotations

import sys

from ._common import EXIT_OK, UsageError, model_path


def cmd_explore(args) -> int:
    """Serve `flywheel_sd.explorer` until interrupted; every browser session gets its own
    explorer. One is built before the server starts, so that a bad name is a usage error
    and the first page is quick (engine warm, reference run done)."""
    from ..errors import FlywheelError
    from ..explorer import Explorer, _panel

    if not 0 < args.port < 65536:
        raise UsageError(f"--port must be between 1 and 65535, not {args.port}")
    pn = _panel()  # a one-line error naming the extra if Panel is missing
    model = model_path(args)
    scenario = args.scenario
    # One explorer now: it checks the names, warms the engine and runs the reference,
    # which the sessions then share; its loops are analysed in the worker process that
    # analyses the sessions' (started now, in the background).
    compare = list(args.compare)
    first = Explorer(scenario, model=model, reference=args.reference, compare=compare, loops=False)
    sc = first.scenario
    first.warm_loops()

    def app():
        try:
            return Explorer(
                scenario, model=model, reference=args.reference, compare=compare
            ).layout
        except FlywheelError as err:  # shown in the page, not a blank one
            return pn.pane.Alert(" ".join(str(err).split()), alert_type="danger")

    url = f"http://localhost:{args.port}"
    if not args.quiet:
        print(f"flywheel explore: serving {sc.name} at {url} (Ctrl-C stops)", file=sys.stderr)
    pn.serve(
        app,
        port=args.port,
        address="localhost",
        websocket_origin=[f"localhost:{args.port}", f"127.0.0.1:{args.port}"],
        show=args.show,
        title="flywheel explore",
        threaded=False,
        print=False,
    )
    return EXIT_OK
