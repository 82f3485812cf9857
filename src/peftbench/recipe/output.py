"""What a run shows and returns: console lines (:func:`say`), the run's log file (:func:`run_log`), and its
:class:`RunResult`."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

log = logging.getLogger("peftbench")


@dataclass
class RunResult:
    """Where a run lives and what it scored."""

    run_dir: Path
    metrics: dict[str, Any]
    skipped: bool = False
    """True when the run had already finished and nothing was done."""


def say(message: str, quiet: bool = False) -> None:
    """Logs a message and shows it on the console (above any progress bar)."""
    log.info(message)
    if not quiet:
        tqdm.write(message)


@contextlib.contextmanager
def run_log(path: Path) -> Iterator[None]:
    """Sends peftbench's log records to ``path`` for the duration of the block."""
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    log.addHandler(handler)
    old_level = log.level
    log.setLevel(logging.INFO)
    try:
        yield
    finally:
        log.removeHandler(handler)
        log.setLevel(old_level)
        handler.close()
