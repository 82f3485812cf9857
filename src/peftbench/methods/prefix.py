"""Prefix tuning: trained key/value vectors prepended in self-attention, ``attn(q, [P_k; K], [P_v; V])``.

Where they act (peft's implementation, which peftbench uses): in a decoder-only model, the self-attention of every
layer; in T5, **the decoder's self-attention only** (every decoder layer). The encoder's self-attention and the
decoder's cross-attention get no prefix, although Li & Liang (§4.1) prefix the encoder and the decoder of their
encoder-decoder model; the study's code reaches the same decoder-only placement in effect. peft sizes the T5
prefix by ``num_layers`` (the encoder's depth, equal to the decoder's in every T5 checkpoint).

Each prefix vector has the width of one layer's keys (or values): ``num_key_value_heads · head_dim``, smaller
than the hidden size under grouped-query attention. With ``projection`` on (the default, as Li & Liang), the
prefix is produced by a two-layer MLP (Embedding → Linear → tanh → Linear) from an embedding of that width (the
reparameterisation of Li & Liang); that MLP is trained and stored, so it is counted. ``projection: false`` is the
study's "none" setting.
"""

from __future__ import annotations

from dataclasses import dataclass

from peft import PrefixTuningConfig
from torch import nn

from peftbench.methods._peft import task_type, wrap
from peftbench.methods.registry import Anatomy, MethodSpec, SizeKnob, register


@dataclass
class PrefixConfig:
    """Hyperparameters of prefix tuning."""

    num_virtual_tokens: int = 8
    """Prefix length per layer (the study: 8)."""
    projection: bool = True
    """Reparameterise the prefix through an MLP, as Li & Liang do (§4.3: training the prefix directly is unstable);
    the study sweeps none / 1024 / 512 / 256 (false is its "none")."""
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
        revision=2,
        config_cls=PrefixConfig,
        apply=apply,
        summary="trained key/value prefixes in self-attention (T5: the decoder's only)",
        paper="Li & Liang 2021, Prefix-Tuning: Optimizing Continuous Prompts for Generation (arXiv 2101.00190)",
        default_learning_rate=1e-2,
        size_knob=SizeKnob("num_virtual_tokens"),
        formula="t·D + D·h + h + (h + 1)·2·Lp·D if projection else t·2·Lp·D",
        count_note=(
            "counts what is trained and stored: the prefix embedding and, with projection on, the "
            "reparameterisation MLP (at inference only layers x 2 x tokens x d values are needed)"
        ),
        anatomy=Anatomy(
            placement=(
                "key/value prefixes of t tokens in self-attention: T5 the decoder's only (peft; the study's effective "
                "placement; Li & Liang also prefix the encoder, not offered); decoder-only every layer"
            ),
            init=(
                "Embedding → Linear → tanh → Linear (Li & Liang's reparameterisation, peft's prefix_projection), "
                "PyTorch's default inits; projection: false trains the prefix directly, embedding ~ normal(0, 1)"
            ),
            activation="tanh (projection only)",
            layer_norms="frozen",
            source="Li & Liang 2021 §4; peft PrefixTuningConfig. The study: 8 tokens, projection none/1024/512/256",
        ),
    )
)
