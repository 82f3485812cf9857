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

import types
from dataclasses import dataclass

import torch
from peft import PrefixTuningConfig
from torch import nn
from transformers.cache_utils import DynamicCache, EncoderDecoderCache

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
    """Wraps the model with peft prefix tuning (T5: with :func:`encoder_decoder_prompt`, one prefix per layer)."""
    peft_config = PrefixTuningConfig(
        task_type=task_type(model),
        num_virtual_tokens=config.num_virtual_tokens,
        prefix_projection=config.projection,
        encoder_hidden_size=config.projection_hidden_size,
    )
    wrapped = wrap(model, peft_config)
    if getattr(model.config, "is_encoder_decoder", False):
        # a bound method, so that copy.deepcopy(model) gives a copy computing with its own prefix
        wrapped.get_prompt = types.MethodType(encoder_decoder_prompt, wrapped)
    return wrapped


def encoder_decoder_prompt(
    self, batch_size: int, task_ids: torch.Tensor | None = None, **_: object
) -> EncoderDecoderCache:
    """The prefix of a T5 model as its initial cache: decoder layer ``i`` gets the ``i``-th key/value pair.

    peft 0.21's ``get_prompt`` concatenates the prefix encoder's output with itself along the layer axis before
    cutting it into per-layer groups of (self key, self value, cross key, cross value), so decoder layer ``i`` gets
    pair ``2i mod n``: with an even number of decoder layers, layers ``i`` and ``i + n/2`` share one prefix and half
    of the trained prefix (the odd pairs) is never used (``tests/reference/test_adapterhub.py`` found it against
    AdapterHub; ``tests/methods/test_prefix_layers.py`` pins this layout). The cross-attention part is dropped by
    peft anyway (its cross-attention cache is emptied), so only the self-attention prefixes are built here, one per
    decoder layer, from the same encoder output peft computes.
    """
    cfg = self.active_peft_config
    encoder = self.prompt_encoder[self.active_adapter]
    tokens = self.prompt_tokens[self.active_adapter][: cfg.num_virtual_tokens]
    tokens = tokens.unsqueeze(0).expand(batch_size, -1).to(encoder.embedding.weight.device)
    kv = encoder.embedding.weight.repeat(batch_size, 1, 1) if cfg.inference_mode else encoder(tokens)
    if self.base_model_torch_dtype is not None:
        kv = kv.to(self.base_model_torch_dtype)
    heads = cfg.num_attention_heads
    kv = kv.view(batch_size, cfg.num_virtual_tokens, cfg.num_layers * 2, heads, cfg.token_dim // heads)
    pairs = kv.permute([2, 0, 3, 1, 4]).split(2)  # per layer: (2, batch, heads, tokens, head_dim)
    self_cache = DynamicCache()
    for layer, (keys, values) in enumerate(pairs):
        self_cache.update(keys, values, layer)
    return EncoderDecoderCache(self_cache, DynamicCache())


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
