"""Activation (gradient) checkpointing of a model with its method applied (``train.gradient_checkpointing``): what
a run trains with and what the memory plan (:mod:`peftbench.memory.plan`) plans with, one function for both."""

from __future__ import annotations

import functools

from torch import nn
from torch.utils.checkpoint import checkpoint
from transformers import PreTrainedModel
from transformers.cache_utils import Cache
from transformers.modeling_layers import GradientCheckpointingLayer

from peftbench.errors import PeftbenchError


def enable_gradient_checkpointing(model: nn.Module) -> None:
    """Turns on activation checkpointing of every transformer block of ``model`` (a method applied or not), for
    training (``train.gradient_checkpointing``): each block keeps only its inputs in the forward and runs again in
    the backward (``torch.utils.checkpoint``, non-reentrant: it works with frozen inputs and inside FSDP2 units,
    whose hooks stay outside the checkpoint). transformers checkpoints a block only in training mode with gradients
    enabled, so evaluation and generation (eval mode, no grad) run as before, key/value cache included.

    The input embeddings' output is made to require grad (``enable_input_require_grads``), as peft does for
    checkpointed models. Prefix tuning's key/value prefix is a cache the model is called with, which transformers
    drops from checkpointed blocks (and GPT-2 from all its blocks); for it the blocks keep the cache, and each
    block's recomputation first puts the cache back as the block found it in the forward (:func:`_checkpoint`),
    so that the block appends its keys and values to the prefix once, not twice."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if not isinstance(base, PreTrainedModel) or not base.supports_gradient_checkpointing:
        raise PeftbenchError(f"{type(base).__name__} does not support gradient checkpointing")
    base.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    base.enable_input_require_grads()  # done by transformers for input_ids models; explicit for every model
    keeps_cache = _prefix_cache(model)
    for module in base.modules():
        if isinstance(module, GradientCheckpointingLayer):
            module._gradient_checkpointing_func = _checkpoint
            if keeps_cache:
                module._can_checkpoint_with_cache = True  # the prefix, put back before each recomputation
        elif keeps_cache and module is not base and isinstance(module, PreTrainedModel):
            module.gradient_checkpointing = False  # stacks that drop the cache (GPT-2); the blocks still checkpoint
    if not any(getattr(m, "gradient_checkpointing", False) for m in base.modules()):
        raise PeftbenchError(f"{type(base).__name__}: no transformer block was set to checkpoint")


def _prefix_cache(model: nn.Module) -> bool:
    """Whether the method hands the model a key/value cache in training (peft prefix tuning)."""
    config = getattr(model, "active_peft_config", None)
    return str(getattr(config, "peft_type", "")).endswith("PREFIX_TUNING")


_checkpoint_block = functools.partial(checkpoint, use_reentrant=False)


def _checkpoint(function, *args):
    """``torch.utils.checkpoint`` (non-reentrant) of one block's forward that puts every cache among its arguments
    back as it was before the block ran, each time the forward runs: a recomputation then sees the prefix the first
    forward saw (its length, its cross-attention flags) instead of the keys and values the block appended."""
    keywords = getattr(function, "keywords", None) or {}
    caches = [value for value in (*args, *keywords.values()) if isinstance(value, Cache)]
    if not caches:
        return _checkpoint_block(function, *args)
    saved = [_cache_state(cache) for cache in caches]

    def run(*inputs):
        for state in saved:
            _restore_cache(state)
        return function(*inputs)

    return _checkpoint_block(run, *args)


def _cache_state(cache: Cache) -> list[tuple[object, dict]]:
    """The attributes of ``cache``, its sub-caches (encoder-decoder) and their layers, containers copied (the
    tensors are replaced, never changed in place, by dynamic caches)."""
    objects = [cache, getattr(cache, "self_attention_cache", None), getattr(cache, "cross_attention_cache", None)]
    objects = [o for o in objects if o is not None]
    objects += [layer for o in list(objects) for layer in getattr(o, "layers", ())]
    return [(o, {k: v.copy() if isinstance(v, (dict, list)) else v for k, v in vars(o).items()}) for o in objects]


def _restore_cache(state: list[tuple[object, dict]]) -> None:
    for obj, attributes in state:
        vars(obj).clear()
        vars(obj).update({k: v.copy() if isinstance(v, (dict, list)) else v for k, v in attributes.items()})
