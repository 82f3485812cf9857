"""Prefix tuning: trained key/value vectors prepended in self-attention, ``attn(q, [P_k; K], [P_v; V])``.

What trains: the prefixes (and their MLP); the model is frozen. Where: in a decoder-only model, the self-attention
of every layer; in T5, by default (``scope: decoder``, peft's and the study's effective placement) **the decoder's
self-attention only**, one prefix per decoder layer (peft's own T5 layout shares one between layers i and i + n/2:
:func:`encoder_decoder_prompt`). ``scope: all`` is Li & Liang's placement (§4.1): the encoder's self-attention and
the decoder's cross-attention get prefixes too, each group from its own prefix encoder
(:class:`EncoderAndCrossPrefixes`), as their BART code and AdapterHub's ``PrefixTuningConfig`` do; equal to the
latter with T5's relative position bias zeroed (``tests/reference``: AdapterHub shifts the real keys by the prefix
length in that bias, peftbench counts the prefix as past tokens). peft sizes the T5 prefix by ``num_layers`` (the
encoder's depth, equal to the decoder's in every T5 checkpoint).

Each prefix vector has the width of one layer's keys (or values): ``num_key_value_heads · head_dim``, smaller
than the hidden size under grouped-query attention. With ``projection`` on (the default, as Li & Liang), the
prefix is produced by a two-layer MLP (Embedding → Linear → tanh → Linear) from an embedding of that width (the
reparameterisation of Li & Liang); that MLP is trained and stored, so it is counted. ``projection: false`` is the
study's "none" setting.
"""

from __future__ import annotations

import types
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from peftbench.methods.core.peft_wrap import task_type, wrap
from peftbench.methods.core.registry import Anatomy, MethodSpec, SizeKnob, register

if TYPE_CHECKING:  # imported where used: listing the methods needs neither peft nor transformers
    from peft import PrefixTuningConfig
    from transformers.cache_utils import DynamicCache, EncoderDecoderCache


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
    scope: str = "decoder"
    """Encoder-decoder models: 'decoder' prefixes the decoder's self-attention (peft; the study's placement),
    'all' also the encoder's self-attention and the decoder's cross-attention, each from a prefix encoder of its
    own (Li & Liang §4.1; their BART code and AdapterHub's ``PrefixTuningConfig``). Decoder-only models have one
    self-attention per layer, prefixed either way."""

    def __post_init__(self) -> None:
        if self.num_virtual_tokens < 1:
            raise ValueError(f"num_virtual_tokens must be >= 1, got {self.num_virtual_tokens}")
        if self.scope not in ("decoder", "all"):
            raise ValueError(f"scope must be 'decoder' or 'all', got {self.scope!r}")


def apply(model: nn.Module, config: PrefixConfig) -> nn.Module:
    """Wraps the model with peft prefix tuning (T5: with :func:`encoder_decoder_prompt`, one prefix per layer)."""
    from peft import PrefixTuningConfig

    d_kv = getattr(model.config, "d_kv", None)  # T5: attention width num_heads × d_kv, not always d_model
    peft_config = PrefixTuningConfig(
        task_type=task_type(model),
        num_virtual_tokens=config.num_virtual_tokens,
        prefix_projection=config.projection,
        encoder_hidden_size=config.projection_hidden_size,
        # t5-small-lm-adapt: 6 heads × 64 = 384 != d_model 512 (peft's default token_dim, which cannot be split
        # into 6 heads); equal to d_model for T5-base/large/XL and the tiny preset, so nothing changes there
        token_dim=model.config.num_heads * d_kv if d_kv else None,
    )
    wrapped = wrap(model, peft_config)
    if getattr(model.config, "is_encoder_decoder", False):
        # a bound method, so that copy.deepcopy(model) gives a copy computing with its own prefix
        wrapped.get_prompt = types.MethodType(encoder_decoder_prompt, wrapped)
        if config.scope == "all":
            wrapped.prefix_groups = EncoderAndCrossPrefixes(wrapped.active_peft_config, wrapped.get_base_model())
    return wrapped


def _pairs(encoder: nn.Module, cfg: PrefixTuningConfig, batch_size: int) -> tuple[torch.Tensor, ...]:
    """A prefix encoder's output as one ``(2, batch, heads, tokens, head_dim)`` key/value pair per layer."""
    device = next(encoder.parameters()).device
    tokens = torch.arange(cfg.num_virtual_tokens, device=device).unsqueeze(0).expand(batch_size, -1)
    heads = cfg.num_attention_heads
    kv = encoder(tokens).view(batch_size, cfg.num_virtual_tokens, cfg.num_layers * 2, heads, cfg.token_dim // heads)
    return kv.permute([2, 0, 3, 1, 4]).split(2)


def _pad_mask(mask: torch.Tensor | None, length: int) -> torch.Tensor | None:
    """An attention mask with ``length`` leading key columns every query may attend to (the prefix)."""
    if mask is None:
        return None
    shape = (*mask.shape[:-1], length)
    visible = (
        torch.ones(shape, dtype=torch.bool, device=mask.device)
        if mask.dtype == torch.bool
        else (torch.zeros(shape, dtype=mask.dtype, device=mask.device))
    )
    return torch.cat([visible, mask], dim=-1)


class EncoderAndCrossPrefixes(nn.Module):
    """The prefixes of ``scope: all`` beyond peft's decoder self-attention one: T5's encoder self-attention and its
    decoder's cross-attention, each from a prefix encoder of its own (the same form as peft's: an embedding, through
    the MLP with ``projection``).

    Encoder: the encoder stack passes no cache to its layers, so a forward pre-hook on each encoder self-attention
    hands it a new cache holding that layer's prefix; T5 then treats the prefix as past tokens, as it does the
    decoder's (relative positions of the real tokens unchanged, the prefix before them). The prefixes are computed
    once per encoder forward and, in training with gradients, kept after it: a block checkpointed by
    ``train.gradient_checkpointing`` runs again in the backward and must see the same prefix (a fresh cache per
    call, so that a second run does not append to the first one's keys). Cross-attention: the prefix fills
    the cross-attention cache that :func:`encoder_decoder_prompt` returns, marked not yet updated, so T5 appends the
    encoder's keys and values after it. Both get the attention mask widened by the prefix's columns.
    """

    def __init__(self, cfg: PrefixTuningConfig, model: nn.Module) -> None:
        from peft.tuners.prefix_tuning import PrefixEncoder

        super().__init__()
        self.encoder_prefix = PrefixEncoder(cfg)
        self.cross_prefix = PrefixEncoder(cfg)
        self.cfg = cfg
        self._pairs: list[tuple[torch.Tensor, torch.Tensor]] | None = None
        model.encoder.register_forward_pre_hook(self._build_encoder_cache, with_kwargs=True)
        model.encoder.register_forward_hook(self._drop_encoder_cache)
        for block in model.encoder.block:
            block.layer[0].SelfAttention.register_forward_pre_hook(self._encoder_attention, with_kwargs=True)
        for block in model.decoder.block:
            block.layer[1].EncDecAttention.register_forward_pre_hook(self._cross_attention, with_kwargs=True)

    def cross_cache(self, batch_size: int) -> DynamicCache:
        from transformers.cache_utils import DynamicCache

        cache = DynamicCache()
        for layer, (keys, values) in enumerate(_pairs(self.cross_prefix, self.cfg, batch_size)):
            cache.update(keys, values, layer)
        return cache

    def _build_encoder_cache(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        inputs = kwargs.get("input_ids", args[0] if args else None)
        if inputs is None:
            inputs = kwargs["inputs_embeds"]
        pairs = _pairs(self.encoder_prefix, self.cfg, inputs.shape[0])
        self._pairs = [(keys.to(module.dtype), values.to(module.dtype)) for keys, values in pairs]

    def _drop_encoder_cache(self, module: nn.Module, args: tuple, output: object) -> None:
        if not (module.training and torch.is_grad_enabled()):  # else a checkpointed block's recomputation needs them
            self._pairs = None

    def _encoder_attention(self, module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        if self._pairs is not None:
            from transformers.cache_utils import DynamicCache

            cache = DynamicCache()
            cache.update(*self._pairs[module.layer_idx], module.layer_idx)
            kwargs["cache"] = cache
            kwargs["mask"] = _pad_mask(kwargs.get("mask"), self.cfg.num_virtual_tokens)
        return args, kwargs

    def _cross_attention(self, module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        kwargs["mask"] = _pad_mask(kwargs.get("mask"), self.cfg.num_virtual_tokens)
        return args, kwargs


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
    from transformers.cache_utils import DynamicCache, EncoderDecoderCache

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
    groups = getattr(self, "prefix_groups", None)
    if groups is None:
        return EncoderDecoderCache(self_cache, DynamicCache())
    cache = EncoderDecoderCache(self_cache, groups.cross_cache(batch_size))
    for layer in range(cfg.num_layers):
        cache.is_updated[layer] = False  # T5 appends the encoder's keys and values after the prefix
    return cache


register(
    MethodSpec(
        name="prefix",
        revision=2,
        config_cls=PrefixConfig,
        apply=apply,
        summary="trained key/value prefixes in self-attention (T5: the decoder's; scope all: every attention)",
        paper="Li & Liang 2021, Prefix-Tuning: Optimizing Continuous Prompts for Generation (arXiv 2101.00190)",
        default_learning_rate=1e-2,
        size_knob=SizeKnob("num_virtual_tokens"),
        formula="G·(t·D + D·h + h + (h + 1)·2·Lp·D if projection else t·2·Lp·D)",
        count_note=(
            "counts what is trained and stored: the prefix embedding and, with projection on, the "
            "reparameterisation MLP (at inference only layers x 2 x tokens x d values are needed)"
        ),
        anatomy=Anatomy(
            placement=(
                "key/value prefixes of t tokens in self-attention: T5 the decoder's (peft; the study's effective "
                "placement), one per layer; scope: all adds the encoder's self-attention and the cross-attention "
                "(Li & Liang), each group its own; decoder-only every layer"
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
