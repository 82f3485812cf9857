"""One run, end to end: set up (model, method, data), train or resume, choose the test weights, test
(:func:`peftbench.recipe.run.run_experiment`); the run directory it writes (``rundir``) and reads back
(``runfiles``, which status, sweeps and the report share)."""
