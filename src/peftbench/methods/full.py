"""Full fine-tuning: every weight of the model trains. The reference every PEFT method is measured against."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from peftbench.methods.core.registry import Anatomy, MethodSpec, register


@dataclass
class FullConfig:
    """Full fine-tuning has no hyperparameters of its own."""


def apply(model: nn.Module, config: FullConfig) -> nn.Module:
    """Marks every parameter trainable."""
    for p in model.parameters():
        p.requires_grad_(True)
    return model


register(
    MethodSpec(
        name="full",
        merge="always",
        config_cls=FullConfig,
        apply=apply,
        summary="all weights",
        paper="(reference) Wang et al. 2022, Super-NaturalInstructions / Tk-Instruct",
        default_learning_rate=5e-5,
        lr_scheduler="constant",
        warmup_ratio=0.0,
        formula="P",
        fp32_trainable=False,
        anatomy=Anatomy(
            placement="every weight of the model",
            init="the base model's weights",
            activation="—",
            layer_norms="trained (every weight)",
            source="Tk-Instruct (yizhongw/Tk-Instruct) and the study: constant learning rate, no warm-up",
        ),
    )
)
