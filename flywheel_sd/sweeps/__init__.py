"""Many runs of one model: `sweep` (chunks of runs, executors, stores that resume),
`chunk` (one chunk on the compiled engine, or run by run on PySD), `store` (where results
go) and `sensitivity` (Sobol, Morris, tornado and fan charts). Designs are in
`flywheel_sd.designs`."""
