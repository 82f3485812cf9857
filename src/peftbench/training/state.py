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
    """This run's peak tensor memory while training, in MB (2^20 bytes; :mod:`peftbench.memory.measure`): the CUDA
    allocator's ``max_memory_allocated`` since training started, or on CPU the most tensor-storage bytes live at
    once in the tracked steps. Results written before that recorded the process's peak resident set on CPU."""
    peak_memory_kind: str = ""
    """What ``peak_memory_mb`` is: ``"cuda_max_allocated"``, ``"tensor_bytes"`` (CPU), or in older results
    ``"cpu_peak_rss"`` (the process's peak resident set, earlier work in the process included)."""
    peak_memory_baseline_mb: float | None = None
    """Of ``peak_memory_mb``, what was live when training started (weights, buffers, restored optimizer state)."""
    memory_tracked_batches: int | None = None
    """On CPU, the batches whose steps the tracker watched (:class:`~peftbench.memory.measure.StepSample`)."""
    validation: list[tuple[int, float]] = field(default_factory=list)
    """(step, validation ROUGE-L) pairs, when validation tasks are configured."""
    best_step: int | None = None
    """Step of the weights kept in best/ (highest validation score; the first such step on ties)."""
    processes: int | None = None
    """Data-parallel processes that trained (the effective batch is per-device batch x accumulation x this);
    None in results written before it was recorded."""


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
    peak_memory_bytes: int = 0
    """Peak tensor memory of earlier attempts (a resumed run reports the larger of theirs and its own)."""

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
            peak_memory_bytes=int(state.get("peak_memory_bytes", 0)),
        )
