"""Prompt tuning, ``[P; E(x)]``, and P-tuning, ``[MLP(P); E(x)]``: trained embeddings before the input.

What trains: the prompt embeddings (and P-tuning's encoder); the model itself is frozen. Where: before the input
embeddings of the encoder (T5) or of the model (decoder-only), in training and generation alike. P-tuning
produces the prompt through a small encoder, by default the paper's bidirectional two-layer LSTM followed by a
two-layer MLP (``encoder: mlp`` is peft's MLP alone), trained and stored, so it is counted."""

from __future__ import annotations

from dataclasses import dataclass

from peft import PromptEncoderConfig, PromptEncoderReparameterizationType, PromptTuningConfig, PromptTuningInit
from torch import nn

from peftbench.methods._peft import task_type, wrap
from peftbench.methods.registry import Anatomy, MethodSpec, SizeKnob, register

_INITS = {"random": PromptTuningInit.RANDOM, "sample_vocab": PromptTuningInit.SAMPLE_VOCAB}


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


_ENCODERS = {"mlp": PromptEncoderReparameterizationType.MLP, "lstm": PromptEncoderReparameterizationType.LSTM}


@dataclass
class PtuningConfig:
    """Hyperparameters of P-tuning."""

    num_virtual_tokens: int = 20
    """Soft-prompt length."""
    encoder: str = "lstm"
    """Prompt encoder: 'lstm' (the paper's: a two-layer bidirectional LSTM, then a two-layer MLP with ReLU;
    THUDM/P-tuning) or 'mlp' (peft's default: two hidden layers, no LSTM)."""
    encoder_hidden_size: int | None = None
    """Hidden width of the prompt encoder; None = the model's hidden size."""

    def __post_init__(self) -> None:
        if self.num_virtual_tokens < 1:
            raise ValueError(f"num_virtual_tokens must be >= 1, got {self.num_virtual_tokens}")
        if self.encoder not in _ENCODERS:
            raise ValueError(f"encoder must be one of {sorted(_ENCODERS)}, got {self.encoder!r}")
        if self.encoder_hidden_size is not None and self.encoder_hidden_size < 1:
            raise ValueError(f"encoder_hidden_size must be >= 1, got {self.encoder_hidden_size}")


def apply_ptuning(model: nn.Module, config: PtuningConfig) -> nn.Module:
    """Wraps the model with peft P-tuning (a prompt encoder before the input)."""
    peft_config = PromptEncoderConfig(
        task_type=task_type(model),
        num_virtual_tokens=config.num_virtual_tokens,
        encoder_reparameterization_type=_ENCODERS[config.encoder],
        encoder_hidden_size=config.encoder_hidden_size,
        num_transformer_submodules=1,  # as for prompt tuning: one prompt, fed to the encoder
    )
    return wrap(model, peft_config)


register(
    MethodSpec(
        name="ptuning",
        revision=2,
        config_cls=PtuningConfig,
        apply=apply_ptuning,
        summary="soft prompt produced by a trained MLP/LSTM encoder, before the input",
        paper="Liu et al. 2021, GPT Understands, Too (P-tuning, arXiv 2103.10385)",
        default_learning_rate=1e-3,
        size_knob=SizeKnob("num_virtual_tokens"),
        formula="t·d + (d·h + h + h·h + h + h·d + d if encoder == 'mlp' else 10·h·d + 36·h² + 34·h + d)",
        count_note="counts the prompt embedding and the prompt encoder (both trained and stored)",
        anatomy=Anatomy(
            placement=(
                "t soft tokens from a prompt encoder, before the input embeddings: a bidirectional 2-layer LSTM then "
                "Linear → ReLU → Linear (the paper's; encoder: mlp is peft's MLP-only default)"
            ),
            init="PyTorch's defaults for the embedding, LSTM and linear layers (peft PromptEncoder)",
            activation="ReLU (in the MLP)",
            layer_norms="frozen",
            source="Liu et al. 2021 §3 (THUDM/P-tuning: bidirectional LSTM + MLP); peft PromptEncoderConfig(LSTM)",
        ),
    )
)
