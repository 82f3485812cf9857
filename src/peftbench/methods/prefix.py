"""Prefix tuning: trained key/value vectors prepended to every attention layer, ``attn(q, [P_k; K], [P_v; V])``.

With ``projection`` on, the prefix is produced by a two-layer MLP from a small embedding
(the reparameterisation of Li & Liang); that MLP is trained and stored, so it is counted.
"""

from __future__ import annotations

from dataclasses import dataclass

from peft import PrefixTuningConfig
from torch import nn

from peftbench.methods import MethodSpec, SizeKnob, register
from peftbench.methods._peft import task_type, wrap


@dataclass
class PrefixConfig:
    """Hyperparameters of prefix tuning."""

    num_virtual_tokens: int = 8
    """Prefix length per layer (the study: 8)."""
    projection: bool = False
    """Reparameterise the prefix through an MLP (the study sweeps none / 1024 / 512 / 256)."""
    projection_hidden_size: int = 512
    """Hidden size of the reparameterisation MLP when ``projection`` is on."""

    def __post_init__(self) -> None:
        if self.num_virtual_tokens < 1:
            raise ValueError(f"num_virtual_tokens must be >= 1, got {self.num_virtual_tokens}")


def apply(model: nn.Module, config: PrefixConfig) -> nn.Module:
    """Wraps the model with peft prefix tuning."""
    peft_config = PrefixTuningConfig(
        task_type=task_type(model),
        num_virtual_tokens=config.num_virtual_tokens,
        prefix_projection=config.projection,
        encoder_hidden_size=config.projection_hidden_size,
    )
    return wrap(model, peft_config)


register(
    MethodSpec(
        name="prefix",
        config_cls=PrefixConfig,
        apply=apply,
        summary="trained key/value prefixes in every attention layer",
        paper="Li & Liang 2021, Prefix-Tuning: Optimizing Continuous Prompts for Generation (arXiv 2101.00190)",
        default_learning_rate=1e-2,
        size_knob=SizeKnob("num_virtual_tokens"),
        formula="t·D + D·h + h + (h + 1)·2·Lp·D if projection else t·2·Lp·D",
        count_note=(
            "counts what is trained and stored: the prefix embedding and, with projection on, the "
            "reparameterisation MLP (at inference only layers x 2 x tokens x d values are needed)"
        ),
    )
)
