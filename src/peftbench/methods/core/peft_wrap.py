"""Shared glue for methods that come from the `peft` library."""

from __future__ import annotations

from peft import PeftConfig, TaskType, get_peft_model
from torch import nn


def task_type(model: nn.Module) -> TaskType:
    """peft's task type for a transformers model: seq2seq for encoder-decoders, causal LM otherwise."""
    is_enc_dec = bool(getattr(model.config, "is_encoder_decoder", False))
    return TaskType.SEQ_2_SEQ_LM if is_enc_dec else TaskType.CAUSAL_LM


def wrap(model: nn.Module, config: PeftConfig) -> nn.Module:
    """Wraps ``model`` with a peft method; peft freezes the base model and marks its own parameters."""
    return get_peft_model(model, config)
