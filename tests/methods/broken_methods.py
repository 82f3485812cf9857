"""Deliberately broken methods that ``peftbench check-method`` must refuse (loaded with ``method.module``).

``half_lora`` keeps its trainable weights in the base's bf16 (it opts out of fp32 with ``fp32_trainable=False``,
which only full fine-tuning may). ``cached_shift`` adds a trained vector to the input embeddings but skips it on the
one-token steps of cached generation, so evaluation does not generate what training optimised. ``leaky_lora`` is
LoRA that forgets to freeze the output head: a base-model weight its spec does not declare trains too.
``counting_shift`` scales its trained vector by a buffer that counts training forward passes, state outside the
weights that each rank keeps for itself: two ranks do not train as one process with gradient accumulation does.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from peft import LoraConfig, TaskType, get_peft_model
from torch import nn

from peftbench.methods import MethodSpec, freeze_all, register


@dataclass
class Empty:
    """No options."""


def _half_lora(model: nn.Module, config: Empty) -> nn.Module:
    task = TaskType.SEQ_2_SEQ_LM if model.config.is_encoder_decoder else TaskType.CAUSAL_LM
    model = get_peft_model(model, LoraConfig(task_type=task, r=4, lora_alpha=4))
    dtype = next(p.dtype for p in model.parameters() if not p.requires_grad)
    for p in model.parameters():
        if p.requires_grad:
            p.data = p.data.to(dtype)
    return model


def _cached_shift(model: nn.Module, config: Empty) -> nn.Module:
    freeze_all(model)
    embeddings = model.get_input_embeddings()
    embeddings.register_parameter("shift", nn.Parameter(torch.zeros(embeddings.embedding_dim)))

    def hook(module, args, out):
        return out + module.shift.to(out.dtype) if out.shape[1] > 1 else out  # the bug: not on cached steps

    embeddings.register_forward_hook(hook)
    return model


def _leaky_lora(model: nn.Module, config: Empty) -> nn.Module:
    task = TaskType.SEQ_2_SEQ_LM if model.config.is_encoder_decoder else TaskType.CAUSAL_LM
    model = get_peft_model(model, LoraConfig(task_type=task, r=4, lora_alpha=4))
    model.get_output_embeddings().weight.requires_grad_(True)  # the bug
    return model


def _counting_shift(model: nn.Module, config: Empty) -> nn.Module:
    freeze_all(model)
    embeddings = model.get_input_embeddings()
    embeddings.register_parameter("shift", nn.Parameter(torch.zeros(embeddings.embedding_dim)))
    embeddings.register_buffer("calls", torch.zeros(()))

    def hook(module, args, out):
        if module.training:
            module.calls += 1  # the bug: per-process state that shapes the update
        return out + (module.shift * module.calls).to(out.dtype)

    embeddings.register_forward_hook(hook)
    return model


BROKEN = (
    ("half_lora", _half_lora, False),
    ("cached_shift", _cached_shift, True),
    ("leaky_lora", _leaky_lora, True),
    ("counting_shift", _counting_shift, True),
)
for name, apply, fp32 in BROKEN:
    register(
        MethodSpec(
            name=name, config_cls=Empty, apply=apply, summary="broken on purpose", paper="-",
            default_learning_rate=1e-3, fp32_trainable=fp32,
        )
    )  # fmt: skip
