"""Suspension signals: ask the run to stop at the next step boundary, after saving.

Slurm sends SIGUSR1 (with ``--signal``) or SIGTERM before it kills a job; other schedulers send SIGTERM;
a user presses Ctrl-C (SIGINT). The first such signal only sets a flag: the training loop saves a
checkpoint at the next optimizer-step boundary (the evaluation loop after the current batch) and the
process exits with ``EXIT_PREEMPTED``. A second SIGINT aborts at once.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

log = logging.getLogger(__name__)

EXIT_PREEMPTED = 75
"""Exit status of a run that saved and stopped on a signal: "preempted, resume me" (EX_TEMPFAIL).
Success is 0, a user error 2, any other failure 1."""

SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)


class Preempted(Exception):
    """Raised once the run has saved its state after a suspension signal."""

    def __init__(self, where: str) -> None:
        saved = "nothing to save yet" if where == "start-up" else "state saved"
        super().__init__(f"preempted during {where}; {saved} — run the same command again to resume")


@contextmanager
def stop_during_startup() -> Iterator[None]:
    """Until a run installs its own handlers, a suspension signal ends the process as pre-empted (exit 75)
    at once: nothing has been computed yet, so there is nothing to save. Restores the old handlers after."""

    def _handle(signum: int, frame: FrameType | None) -> None:
        raise Preempted("start-up")

    try:
        previous = {s: signal.signal(s, _handle) for s in SIGNALS}
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


class StopFlag:
    """Set by a suspension signal; read by the loops at their boundaries."""

    def __init__(self) -> None:
        self.signal: int | None = None

    @property
    def requested(self) -> bool:
        """True once a suspension signal arrived."""
        return self.signal is not None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGINT and self.signal == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: abort now
        if self.signal is None:
            self.signal = signum
            log.warning("received %s: stopping at the next step boundary, after saving", signal.Signals(signum).name)


@contextmanager
def stop_on_signals() -> Iterator[StopFlag]:
    """Installs the suspension handlers for the block (main thread only) and restores the previous ones."""
    flag = StopFlag()
    try:
        previous = {s: signal.signal(s, flag._handle) for s in SIGNALS}
    except ValueError:  # not the main thread: signals cannot be caught here
        yield flag
        return
    try:
        yield flag
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
