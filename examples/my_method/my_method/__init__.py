"""scaled_lora: LoRA with rank-stabilised scaling, ``h = W x + (alpha / sqrt(r)) · B A x`` (Kalajdzievski 2023, rsLoRA).

A worked example of a method from outside peftbench: installing this package (its entry point in the group
``peftbench.methods``) or naming it in a config (``method.module: my_method``) registers it as a built-in is.
"""

from __future__ import annotations

from dataclasses import dataclass

from peft import LoraConfig, TaskType, get_peft_model
from torch import nn

from peftbench.methods import Anatomy, MethodSpec, SizeKnob, register


@dataclass
class ScaledLoraConfig:
    """Hyperparameters of scaled LoRA (LoRA's names, so a sweep's LoRA axes such as method.r apply as they are)."""

    r: int = 8
    """Rank of the update."""
    alpha: int | None = None
    """Scaling numerator; the update is scaled by alpha / sqrt(r). None means alpha = r."""
    dropout: float = 0.0
    """Dropout on the branch's input."""
    target_modules: list[str] | None = None
    """Module names to adapt; None = peft's default for the architecture (T5: q, v; LLaMA: q_proj, v_proj)."""

    def __post_init__(self) -> None:
        if self.r < 1:
            raise ValueError(f"r must be >= 1, got {self.r}")


def apply(model: nn.Module, config: ScaledLoraConfig) -> nn.Module:
    """Wraps the model with peft LoRA (rsLoRA scaling); peft freezes everything else."""
    task = TaskType.SEQ_2_SEQ_LM if model.config.is_encoder_decoder else TaskType.CAUSAL_LM
    alpha = config.alpha if config.alpha is not None else config.r
    peft_config = LoraConfig(
        task_type=task, r=config.r, lora_alpha=alpha, lora_dropout=config.dropout,
        target_modules=config.target_modules, use_rslora=True,
    )  # fmt: skip
    return get_peft_model(model, peft_config)


def count(model_config, config: ScaledLoraConfig) -> int:
    """r · (d_in + d_out) on every query and value projection (default targets only)."""
    c = model_config
    if c.is_encoder_decoder:  # T5: encoder self-attention, decoder self- and cross-attention
        inner = c.num_heads * c.d_kv
        return 2 * config.r * (c.d_model + inner) * (c.num_layers + 2 * c.num_decoder_layers)
    head = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    q, v = c.num_attention_heads * head, c.num_key_value_heads * head
    return config.r * ((c.hidden_size + q) + (c.hidden_size + v)) * c.num_hidden_layers


SPEC = register(
    MethodSpec(
        name="scaled_lora",
        config_cls=ScaledLoraConfig,
        apply=apply,
        summary="LoRA with alpha/sqrt(r) scaling on q, v",
        paper="Kalajdzievski 2023, A Rank Stabilization Scaling Factor for Fine-Tuning with LoRA (arXiv 2312.03732)",
        default_learning_rate=5e-4,
        merge="peft",
        size_knob=SizeKnob("r"),
        formula="Σ_qv[r·(d_in + d_out)]",
        count=count,
        anatomy=Anatomy(
            placement="W x + (α/√r)·B A x on the query and value projections",
            init="A Kaiming-uniform, B = 0: starts at the base model",
            activation="—",
            layer_norms="frozen",
            source="rsLoRA; peft LoraConfig(use_rslora=True)",
        ),
    )
)
