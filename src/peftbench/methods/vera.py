"""VeRA: ``ΔW = Λ_b B Λ_d A`` with ``A``, ``B`` frozen random matrices shared by all layers and only the scaling
vectors ``Λ_b``, ``Λ_d`` trained. Implemented by peft, on LoRA's target modules (nn.Linear only)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from peftbench.methods.core.peft_wrap import task_type, wrap
from peftbench.methods.core.rank import check_rank
from peftbench.methods.core.registry import Anatomy, MethodSpec, SizeKnob, register


@dataclass
class VeraConfig:
    """Hyperparameters of VeRA."""

    r: int = 256
    """Rank of the shared frozen random projections (VeRA uses far larger ranks than LoRA)."""
    dropout: float = 0.0
    """Dropout on the update branch's input."""
    d_initial: float = 0.1
    """Initial value of the trained vector Λ_d (Λ_b starts at zero)."""
    target_modules: list[str] | None = None
    """Module names to adapt; None = peft's default for the architecture."""

    def __post_init__(self) -> None:
        check_rank("r", self.r)


def apply_vera(model: nn.Module, config: VeraConfig) -> nn.Module:
    """Wraps the model with peft VeRA."""
    from peft import VeraConfig as PeftVeraConfig

    return wrap(
        model,
        PeftVeraConfig(
            task_type=task_type(model),
            r=config.r,
            vera_dropout=config.dropout,
            d_initial=config.d_initial,
            target_modules=config.target_modules,
        ),
    )


register(
    MethodSpec(
        name="vera",
        merge="peft",
        config_cls=VeraConfig,
        apply=apply_vera,
        summary="scaling vectors around frozen random low-rank projections shared by all layers",
        paper="Kopiczko et al. 2024, VeRA: Vector-based Random Matrix Adaptation (arXiv 2310.11454)",
        default_learning_rate=1e-2,
        size_knob=SizeKnob("r"),
        formula="Σ_qv[r + d_out]",
        count_note="the shared random projections are frozen and regenerated from a seed, so not counted",
        anatomy=Anatomy(
            placement="Λ_b B Λ_d A x on LoRA's targets; A, B frozen, random, shared",
            init="Λ_b = 0, Λ_d = d_initial",
            activation="—",
            layer_norms="frozen",
            source="Kopiczko et al. 2024; peft VeraConfig",
        ),
    )
)
