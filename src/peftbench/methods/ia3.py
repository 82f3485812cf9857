"""IA3: trained vectors that rescale activations, ``k' = l_k ⊙ k``, ``v' = l_v ⊙ v``, ``h' = l_ff ⊙ h``.

The vectors start at one, so training starts from the base model. Implemented by peft.
"""

from __future__ import annotations

from dataclasses import dataclass

from peft import IA3Config as PeftIA3Config
from torch import nn

from peftbench.methods import MethodSpec, register
from peftbench.methods._peft import task_type, wrap


@dataclass
class IA3Config:
    """Hyperparameters of IA3."""

    target_modules: list[str] | None = None
    """Modules to rescale; None = peft's default (T5: k, v, wo; LLaMA: k_proj, v_proj, down_proj)."""
    feedforward_modules: list[str] | None = None
    """Which targets are feed-forward layers (scaled on their input); None = peft's default."""


def apply(model: nn.Module, config: IA3Config) -> nn.Module:
    """Wraps the model with peft IA3."""
    peft_config = PeftIA3Config(
        task_type=task_type(model),
        target_modules=config.target_modules,
        feedforward_modules=config.feedforward_modules,
    )
    return wrap(model, peft_config)


register(
    MethodSpec(
        name="ia3",
        config_cls=IA3Config,
        apply=apply,
        summary="learned rescaling of keys, values and feed-forward activations",
        paper="Liu et al. 2022, Few-Shot Parameter-Efficient Fine-Tuning is Better and Cheaper (arXiv 2205.05638)",
        default_learning_rate=3e-3,
    )
)
