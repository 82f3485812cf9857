"""Prompt tuning, ``[P; E(x)]``: trained embeddings before the input (P-tuning, their encoder-made variant, is
:mod:`peftbench.methods.ptuning`).

What trains: the prompt embeddings; the model itself is frozen. Where: before the input
embeddings of the encoder (T5) or of the model (decoder-only), in training and generation alike."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from peftbench.methods.core.peft_wrap import task_type, wrap
from peftbench.methods.core.registry import Anatomy, MethodSpec, SizeKnob, register

_INITS = {"random": "RANDOM", "sample_vocab": "SAMPLE_VOCAB"}
"""init -> the name of peft's ``PromptTuningInit`` member."""


@dataclass
class PromptConfig:
    """Hyperparameters of prompt tuning."""

    num_virtual_tokens: int = 20
    """Soft-prompt length (the study sweeps 8, 32, 128, 256)."""
    init: str = "random"
    """Initialisation: 'random' (N(0, 1), peft's RANDOM; the study's choice) or 'sample_vocab' (copies of the
    embeddings of tokens drawn uniformly from the whole vocabulary). Lester et al.'s best, copies of the 5,000 most
    common tokens' embeddings, needs token frequencies peftbench does not have and is not implemented."""

    def __post_init__(self) -> None:
        if self.num_virtual_tokens < 1:
            raise ValueError(f"num_virtual_tokens must be >= 1, got {self.num_virtual_tokens}")
        if self.init not in _INITS:
            raise ValueError(f"init must be one of {sorted(_INITS)}, got {self.init!r}")


def apply(model: nn.Module, config: PromptConfig) -> nn.Module:
    """Wraps the model with peft prompt tuning."""
    from peft import PromptTuningConfig, PromptTuningInit

    peft_config = PromptTuningConfig(
        task_type=task_type(model),
        num_virtual_tokens=config.num_virtual_tokens,
        prompt_tuning_init=PromptTuningInit[_INITS[config.init]],
        # peft sizes the table for encoder and decoder on seq2seq models but only ever feeds the first
        # num_virtual_tokens rows (to the encoder); the rest would be counted and saved yet never train.
        num_transformer_submodules=1,
    )
    return wrap(model, peft_config)


register(
    MethodSpec(
        name="prompt",
        revision=1,
        config_cls=PromptConfig,
        apply=apply,
        summary="trained soft-prompt embeddings before the input",
        paper="Lester et al. 2021, The Power of Scale for Parameter-Efficient Prompt Tuning (arXiv 2104.08691)",
        default_learning_rate=3e-2,
        size_knob=SizeKnob("num_virtual_tokens"),
        formula="t·d",
        anatomy=Anatomy(
            placement="t soft tokens before the input embeddings (T5: the encoder's)",
            init="random normal(0, 1) (the study's; peft RANDOM); init: sample_vocab copies vocabulary embeddings",
            activation="—",
            layer_norms="frozen",
            source=(
                "Lester et al. 2021 §2; peft PromptTuningConfig. Lester et al.'s 5,000-most-common-token init is not "
                "implemented; the study also prompts T5's decoder during training only, not reproduced"
            ),
        ),
    )
)
