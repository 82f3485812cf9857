"""What the LoRA family's methods share: a rank option and its check, and the refusal of GPT-2's Conv1D
projections where peft wraps ``nn.Linear`` only."""

from __future__ import annotations

from dataclasses import dataclass

CONV1D_MODELS = ("gpt2",)
"""Models whose projections are transformers' Conv1D, which peft's LoHa, LoKr and VeRA do not wrap."""


def check_rank(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


@dataclass
class RankConfig:
    """The options DoRA, LoHa and LoKr share."""

    r: int = 8
    """Rank of the update (LoKr: of its low-rank Kronecker factor, full when r >= half its larger side)."""
    alpha: int | None = None
    """Scaling numerator (the update is scaled by alpha / r); None means alpha = r."""
    dropout: float = 0.0
    """Dropout on the update branch."""
    target_modules: list[str] | None = None
    """Module names to adapt; None = peft's default for the architecture."""

    def __post_init__(self) -> None:
        check_rank("r", self.r)


def linear_only(name: str):
    def supports(model_config) -> str | None:
        model_type = getattr(model_config, "model_type", None)
        if model_type in CONV1D_MODELS:
            return f"peft's {name} wraps nn.Linear layers only; {model_type} uses Conv1D projections"
        return None

    return supports
