"""Shared glue for methods that come from the `peft` library (imported when a method is applied, so that listing
the methods or reading a run's config needs neither peft nor transformers)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import nn

if TYPE_CHECKING:
    from peft import PeftConfig, TaskType


def task_type(model: nn.Module) -> TaskType:
    """peft's task type for a transformers model: seq2seq for encoder-decoders, causal LM otherwise."""
    from peft import TaskType

    is_enc_dec = bool(getattr(model.config, "is_encoder_decoder", False))
    return TaskType.SEQ_2_SEQ_LM if is_enc_dec else TaskType.CAUSAL_LM


def wrap(model: nn.Module, config: PeftConfig) -> nn.Module:
    """Wraps ``model`` with a peft method; peft freezes the base model and marks its own parameters."""
    import warnings

    from peft import get_peft_model

    with warnings.catch_warnings():  # peft reads a property transformers deprecates: nothing for our users to do
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        return get_peft_model(model, config)
