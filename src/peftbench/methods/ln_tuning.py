"""LN tuning: train only the layer norms' gains (and biases), ``y = γ ⊙ norm(x) + β`` with γ, β trained.

Implemented by peft, which trains a copy of each targeted layer norm and leaves the original frozen.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from peftbench.methods.core.peft_wrap import task_type, wrap
from peftbench.methods.core.registry import Anatomy, MethodSpec, register


@dataclass
class LNTuningConfig:
    """Hyperparameters of LN tuning."""

    target_modules: list[str] | None = None
    """Layer-norm module names; None = peft's default (T5: layer_norm, final_layer_norm; LLaMA: every norm)."""


def apply(model: nn.Module, config: LNTuningConfig) -> nn.Module:
    """Wraps the model with peft LN tuning."""
    from peft import LNTuningConfig as PeftLNTuningConfig

    return wrap(model, PeftLNTuningConfig(task_type=task_type(model), target_modules=config.target_modules))


register(
    MethodSpec(
        name="ln_tuning",
        merge="peft",
        config_cls=LNTuningConfig,
        apply=apply,
        summary="layer-norm gains (and biases) only",
        paper="Zhao et al. 2024, Tuning LayerNorm in Attention: Towards Efficient Multi-Modal LLM Finetuning "
        "(arXiv 2312.11420)",
        default_learning_rate=1e-3,
        formula="N",
        anatomy=Anatomy(
            placement="trained copies of the layer norms (gains, and biases where present)",
            init="the base model's norms",
            activation="—",
            layer_norms="trained (only them)",
            source="Zhao et al. 2024; peft LNTuningConfig",
        ),
    )
)
