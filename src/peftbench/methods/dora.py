"""DoRA: ``W' = m · (W + B A) / ‖W + B A‖``, LoRA's direction plus a trained magnitude per output.

Implemented by peft (``LoraConfig(use_dora=True)``) on LoRA's target modules."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from peftbench.methods.core.peft_wrap import task_type, wrap
from peftbench.methods.core.rank import RankConfig
from peftbench.methods.core.registry import Anatomy, MethodSpec, SizeKnob, register


@dataclass
class DoraConfig(RankConfig):
    """Hyperparameters of DoRA (weight-decomposed LoRA)."""


def apply_dora(model: nn.Module, config: DoraConfig) -> nn.Module:
    """Wraps the model with peft LoRA in DoRA mode."""
    from peft import LoraConfig as PeftLoraConfig

    return wrap(
        model,
        PeftLoraConfig(
            task_type=task_type(model),
            r=config.r,
            lora_alpha=config.alpha if config.alpha is not None else config.r,
            lora_dropout=config.dropout,
            target_modules=config.target_modules,
            use_dora=True,
        ),
    )


register(
    MethodSpec(
        name="dora",
        merge="peft",
        config_cls=DoraConfig,
        apply=apply_dora,
        summary="LoRA direction plus a trained magnitude per output (attention projections)",
        paper="Liu et al. 2024, DoRA: Weight-Decomposed Low-Rank Adaptation (arXiv 2402.09353)",
        default_learning_rate=5e-4,
        size_knob=SizeKnob("r"),
        formula="Σ_qv[r·(d_in + d_out) + d_out]",
        anatomy=Anatomy(
            placement="LoRA's targets, W' = m·(W + B A)/‖W + B A‖ per output",
            init="as LoRA; m = the column norms of W",
            activation="—",
            layer_norms="frozen",
            source="Liu et al. 2024; peft LoraConfig(use_dora=True)",
        ),
    )
)
