"""Prompt tuning: trained embeddings prepended to the input, ``[P; E(x)]``; the model itself is frozen."""

from __future__ import annotations

from dataclasses import dataclass

from peft import PromptTuningConfig, PromptTuningInit
from torch import nn

from peftbench.methods import MethodSpec, register
from peftbench.methods._peft import task_type, wrap

_INITS = {"random": PromptTuningInit.RANDOM, "sample_vocab": PromptTuningInit.SAMPLE_VOCAB}


@dataclass
class PromptConfig:
    """Hyperparameters of prompt tuning."""

    num_virtual_tokens: int = 20
    """Soft-prompt length (the study sweeps 8, 32, 128, 256)."""
    init: str = "sample_vocab"
    """Initialisation: 'random' or 'sample_vocab' (copies of randomly chosen vocabulary embeddings)."""

    def __post_init__(self) -> None:
        if self.num_virtual_tokens < 1:
            raise ValueError(f"num_virtual_tokens must be >= 1, got {self.num_virtual_tokens}")
        if self.init not in _INITS:
            raise ValueError(f"init must be one of {sorted(_INITS)}, got {self.init!r}")


def apply(model: nn.Module, config: PromptConfig) -> nn.Module:
    """Wraps the model with peft prompt tuning."""
    peft_config = PromptTuningConfig(
        task_type=task_type(model),
        num_virtual_tokens=config.num_virtual_tokens,
        prompt_tuning_init=_INITS[config.init],
        # peft sizes the table for encoder and decoder on seq2seq models but only ever feeds the first
        # num_virtual_tokens rows (to the encoder); the rest would be counted and saved yet never train.
        num_transformer_submodules=1,
    )
    return wrap(model, peft_config)


register(
    MethodSpec(
        name="prompt",
        config_cls=PromptConfig,
        apply=apply,
        summary="trained soft-prompt embeddings before the input",
        paper="Lester et al. 2021, The Power of Scale for Parameter-Efficient Prompt Tuning (arXiv 2104.08691)",
        default_learning_rate=3e-2,
    )
)
