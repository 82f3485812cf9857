"""A peftbench callback plugin that only the tests install: it sleeps at a run's steps, checkpoint files and
evaluation batches, so that a test can signal or kill the run in a chosen phase. Its directory is on the
PYTHONPATH of the processes that ``tests.support.slow.slow_env`` is given to, with the seconds to sleep."""

from __future__ import annotations

import os
import time
from pathlib import Path

from peftbench.training.callbacks import Callback

STEP = "SLOW_PLUGIN_STEP_S"
CHECKPOINT_FILE = "SLOW_PLUGIN_CHECKPOINT_FILE_S"
EVALUATION_BATCH = "SLOW_PLUGIN_EVALUATION_BATCH_S"


def _seconds(name: str) -> float:
    return float(os.environ.get(name) or 0)


class Slow(Callback):
    """Sleeps the seconds its environment variables give after each step, checkpoint file and test batch."""

    def __init__(self) -> None:
        self.step_s = _seconds(STEP)
        self.checkpoint_file_s = _seconds(CHECKPOINT_FILE)
        self.evaluation_batch_s = _seconds(EVALUATION_BATCH)

    def on_step_end(self, step: int, total: int) -> None:
        time.sleep(self.step_s)

    def on_checkpoint_file(self, path: Path) -> None:
        time.sleep(self.checkpoint_file_s)

    def on_evaluation_batch(self, done: int, total: int) -> None:
        time.sleep(self.evaluation_batch_s)
