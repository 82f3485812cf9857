"""P-tuning, ``[E(P); E(x)]``: a soft prompt produced by a small trained encoder, before the input.

What trains: the prompt embeddings and the encoder (by default the paper's bidirectional two-layer LSTM followed by
a two-layer MLP; ``encoder: mlp`` is peft's MLP alone), both stored, so both counted; the model is frozen. Where:
before the input embeddings of the encoder (T5) or of the model (decoder-only). Implemented by peft.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from peftbench.methods.core.peft_wrap import task_type, wrap
from peftbench.methods.core.registry import Anatomy, MethodSpec, SizeKnob, register

_ENCODERS = {"mlp": "MLP", "lstm": "LSTM"}
"""encoder -> the name of peft's ``PromptEncoderReparameterizationType`` member."""


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
    from peft import PromptEncoderConfig, PromptEncoderReparameterizationType

    peft_config = PromptEncoderConfig(
        task_type=task_type(model),
        num_virtual_tokens=config.num_virtual_tokens,
        encoder_reparameterization_type=PromptEncoderReparameterizationType[_ENCODERS[config.encoder]],
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
