"""Slowing down a run in a process a test starts, to signal or kill it in a chosen phase.

Production has no test hooks: a run calls the :class:`~peftbench.training.callbacks.Callback` of every
installed plugin. ``slow_env`` gives a child process the plugin in ``slow_plugin/`` (its module and a
``.dist-info`` declaring the ``peftbench.callbacks`` entry point, found through ``PYTHONPATH``) and the
seconds it sleeps. The variables pass from the child to its own children (torchrun's ranks, a sweep's runs,
a Slurm job: sbatch exports the submitting environment), as long as their environment keeps them.
"""

from __future__ import annotations

import os
from pathlib import Path

from tests.support.slow_plugin.peftbench_test_slow import CHECKPOINT_FILE, EVALUATION_BATCH, STEP

PLUGIN_DIR = Path(__file__).parent / "slow_plugin"


def slow_env(*, step_s: float = 0.0, checkpoint_file_s: float = 0.0, evaluation_batch_s: float = 0.0) -> dict[str, str]:
    """Environment variables to add to a child's: the plugin on ``PYTHONPATH`` (before this process's own
    entries, which stay), and its sleeps after each optimizer step, checkpoint file and test batch."""
    path = os.pathsep.join(p for p in (str(PLUGIN_DIR), os.environ.get("PYTHONPATH", "")) if p)
    return {
        "PYTHONPATH": path,
        STEP: str(step_s),
        CHECKPOINT_FILE: str(checkpoint_file_s),
        EVALUATION_BATCH: str(evaluation_batch_s),
    }
