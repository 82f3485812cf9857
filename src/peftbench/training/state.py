"""What training knows about itself: its :class:`Progress` (a checkpoint's trainer state, which a resumed run
continues from) and its :class:`TrainResult` (what a finished training reports into ``metrics.json``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["Progress", "TrainResult"]


@dataclass
class TrainResult:
    """What training reports."""

    steps: int
    epochs: float
    train_time_s: float
    learning_rate: float
    lr_scheduler: str
    warmup_steps: int
    losses: list[tuple[int, float]] = field(default_factory=list)
    """(step, mean loss since the previous log) pairs."""
    peak_memory_mb: float = 0.0
    """Peak memory while training: CUDA allocator peak (reset at the start), else the process's peak RSS."""
    peak_memory_kind: str = ""
    """Which of the two ``peak_memory_mb`` is."""
    validation: list[tuple[int, float]] = field(default_factory=list)
    """(step, validation ROUGE-L) pairs, when validation tasks are configured."""
    best_step: int | None = None
    """Step of the weights kept in best/ (highest validation score; the first such step on ties)."""


@dataclass
class Progress:
    """Where training stands: what a checkpoint records as its trainer state and a resumed run continues from."""

    step: int = 0
    """Optimizer steps done."""
    epoch: int = 0
    """The current epoch (from 0)."""
    batches_done: int = 0
    """Batches of the current epoch done (per process)."""
    running: float = 0.0
    """Training loss summed over this rank's batches since the last logging step."""
    running_per_rank: list[float] = field(default_factory=list)
    """Every rank's ``running`` at a checkpoint (index = rank; empty for one process): each resumes with its own."""
    seen: int = 0
    """Batches in ``running``."""
    losses: list[tuple[int, float]] = field(default_factory=list)
    """(step, mean training loss) at every logging step."""
    train_time_s: float = 0.0
    """Training time of earlier attempts (a resumed run adds its own)."""
    best: tuple[int, float] | None = None
    """(step, score) of the best validation so far."""
    validation: list[tuple[int, float]] = field(default_factory=list)
    """(step, validation score) of every validation."""

    def to_state(self) -> dict[str, Any]:
        """The JSON-ready trainer state a checkpoint stores."""
        return asdict(self)

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Progress:
        """Reads a checkpoint's trainer state (checkpoints written before validation existed lack its fields)."""
        best = state.get("best")
        return cls(
            step=state["step"],
            epoch=state["epoch"],
            batches_done=state["batches_done"],
            running=state["running"],
            seen=state["seen"],
            losses=[(int(s), float(v)) for s, v in state["losses"]],
            train_time_s=state["train_time_s"],
            best=(int(best[0]), float(best[1])) if best else None,
            validation=[(int(s), float(v)) for s, v in state.get("validation", [])],
            running_per_rank=[float(v) for v in state.get("running_per_rank", [])],
        )
