"""LoRA: a frozen weight ``W`` plus a trained low-rank update, ``h = W x + (alpha / r) · B A x``.

What trains: ``A`` and ``B`` only; the base model is frozen. Where: the query and value projections of every
attention block (T5: ``q``, ``v`` of the encoder's and decoder's self-attention and of the cross-attention; LLaMA:
``q_proj``, ``v_proj``; GPT-2: the fused ``c_attn``, so q, k and v share one update, a difference from LoRA's
GPT-2 code listed in docs/methods.md). ``A`` (r × d_in) starts random and ``B`` (d_out × r) at zero, so training
starts from the base model. Implemented by peft; the study uses alpha = r on q and v, dropout 0.1 on the input.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from peftbench.methods.core.peft_wrap import task_type, wrap
from peftbench.methods.core.registry import Anatomy, MethodSpec, SizeKnob, register


@dataclass
class LoraConfig:
    """Hyperparameters of LoRA."""

    r: int = 8
    """Rank of the update (the study sweeps 8 … 512)."""
    alpha: int | None = None
    """Scaling numerator; the update is scaled by alpha / r. None means alpha = r, as in the study."""
    dropout: float = 0.0
    """Dropout on the LoRA branch's input."""
    target_modules: list[str] | None = None
    """Module names to adapt; None = peft's default for the architecture (T5: q, v; LLaMA: q_proj, v_proj)."""

    def __post_init__(self) -> None:
        if self.r < 1:
            raise ValueError(f"r must be >= 1, got {self.r}")


def apply(model: nn.Module, config: LoraConfig) -> nn.Module:
    """Wraps the model with peft LoRA on the target modules."""
    from peft import LoraConfig as PeftLoraConfig

    peft_config = PeftLoraConfig(
        task_type=task_type(model),
        r=config.r,
        lora_alpha=config.alpha if config.alpha is not None else config.r,
        lora_dropout=config.dropout,
        target_modules=config.target_modules,
    )
    return wrap(model, peft_config)


register(
    MethodSpec(
        name="lora",
        merge="peft",
        config_cls=LoraConfig,
        apply=apply,
        summary="low-rank updates of attention projections",
        paper="Hu et al. 2022, LoRA: Low-Rank Adaptation of Large Language Models (arXiv 2106.09685)",
        default_learning_rate=5e-4,
        size_knob=SizeKnob("r"),
        formula="Σ_qv[r·(d_in + d_out)]",
        anatomy=Anatomy(
            placement=(
                "W x + (α/r)·B A x on the query and value projections (T5: q, v of self- and cross-attention; LLaMA: "
                "q_proj, v_proj; GPT-2: the fused c_attn)"
            ),
            init="A Kaiming-uniform, B = 0: starts at the base model",
            activation="—",
            layer_norms="frozen",
            source="Hu et al. 2022 §4; peft LoraConfig. The study: r = α on q, v (as here)",
        ),
    )
)
