"""Callbacks: your own code, called at fixed points of a run, that watches the run without changing it.

A callback subclasses :class:`Callback` and overrides the methods it needs (the others do nothing). In
your own Python, pass callbacks to ``run_experiment(cfg, callbacks=[...])``. For the processes peftbench
starts itself (``peftbench train``, a sweep's local runs and Slurm jobs, every rank under ``torchrun``),
install them as a plugin: a package whose metadata declares an entry point in the group
``peftbench.callbacks`` that names a class or function taking no argument and returning a ``Callback``::

    [project.entry-points."peftbench.callbacks"]
    heartbeat = "my_package.peftbench_plugin:Heartbeat"

Every ``run_experiment`` loads the installed plugins (and logs their names in ``train.log``) before the
callbacks it is given. Callbacks observe: one that changes the model, the data or any random state breaks
the guarantee that a resumed run equals an uninterrupted one.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from importlib.metadata import entry_points
from pathlib import Path

from peftbench.errors import PeftbenchError

log = logging.getLogger(__name__)

PLUGIN_GROUP = "peftbench.callbacks"
"""The entry-point group of callback plugins."""


class Callback:
    """Hooks into a run; every method does nothing until overridden."""

    def on_step_end(self, step: int, total: int) -> None:
        """After optimizer step ``step`` of ``total`` (on every process), before the step's validation,
        checkpoint and reaction to a suspension signal."""

    def on_checkpoint_file(self, path: Path) -> None:
        """After each file of a checkpoint is written into its temporary directory (the manifest last), before
        the directory is renamed into place; on the process that writes checkpoints."""

    def on_evaluation_batch(self, done: int, total: int) -> None:
        """After the test evaluation's batch ``done`` of ``total`` is written to ``predictions.jsonl``, before
        a suspension signal stops the evaluation."""


class CallbackList(Callback):
    """Several callbacks, called in order as one."""

    def __init__(self, callbacks: Iterable[Callback] = ()) -> None:
        self.callbacks = tuple(callbacks)

    def on_step_end(self, step: int, total: int) -> None:
        for callback in self.callbacks:
            callback.on_step_end(step, total)

    def on_checkpoint_file(self, path: Path) -> None:
        for callback in self.callbacks:
            callback.on_checkpoint_file(path)

    def on_evaluation_batch(self, done: int, total: int) -> None:
        for callback in self.callbacks:
            callback.on_evaluation_batch(done, total)


def installed_callbacks() -> list[Callback]:
    """One callback from each installed plugin (:data:`PLUGIN_GROUP` entry points, in name order); a plugin
    that fails to load, or returns anything but a ``Callback``, is a one-line ``PeftbenchError``."""
    callbacks = []
    for entry in sorted(entry_points(group=PLUGIN_GROUP), key=lambda e: e.name):
        origin = f" of {entry.dist.name}" if entry.dist is not None else ""
        where = f"callback plugin {entry.name!r} ({entry.value}{origin})"
        try:
            callback = entry.load()()
        except Exception as exc:
            raise PeftbenchError(f"{where} failed to load: {type(exc).__name__}: {exc}") from exc
        if not isinstance(callback, Callback):
            raise PeftbenchError(f"{where} gave a {type(callback).__name__}, not a peftbench Callback")
        log.info("%s is active", where)
        callbacks.append(callback)
    return callbacks
