"""BitFit: train only the bias terms, ``y = W x + b`` with ``W`` frozen and ``b`` trained.

T5 and LLaMA have no biases in their linear layers; as in the study's T5 runs, a zero-initialised bias is
added to each such layer (so the model's output is unchanged at start) and trained. The output head gets one
only with ``lm_head_bias`` (the study's code adds and trains a zero ``lm_head`` bias too; the paper trains the
model's own bias terms, and a language-model head has none). Layer-norm gains are not bias terms and stay
frozen unless ``train_layer_norms`` is set (Compacter's BitFit baseline trains them, which its 0.126% of T5-base
counts). Where the model's layer norms have biases (GPT-2), those are bias terms and train.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from peftbench.methods.registry import Anatomy, MethodSpec, freeze_all, register, unfreeze_layer_norms


@dataclass
class BitFitConfig:
    """Hyperparameters of BitFit."""

    add_missing_biases: bool = True
    """Add zero-initialised biases to bias-free linear layers (T5, LLaMA); without them such models train nothing."""
    lm_head_bias: bool = False
    """Also add and train a zero-initialised bias on the output head (the study's code does)."""
    train_layer_norms: bool = False
    """Also train the layer norms' gains (Compacter's BitFit baseline does)."""


def _output_layer(model: nn.Module) -> nn.Module | None:
    get = getattr(model, "get_output_embeddings", None)
    return get() if callable(get) else None


def apply(model: nn.Module, config: BitFitConfig) -> nn.Module:
    """Freezes all weights, adds missing linear biases if configured (the output head's only with ``lm_head_bias``),
    trains every bias and, with ``train_layer_norms``, the layer norms' gains."""
    freeze_all(model)
    head = _output_layer(model)
    for module in model.modules():
        wanted = config.lm_head_bias if module is head else config.add_missing_biases
        if wanted and isinstance(module, nn.Linear) and module.bias is None:
            w = module.weight
            module.bias = nn.Parameter(torch.zeros(module.out_features, dtype=w.dtype, device=w.device))
    for name, p in model.named_parameters():
        if name.endswith(".bias") or name == "bias":
            p.requires_grad_(True)
    if config.train_layer_norms:
        unfreeze_layer_norms(model)
    return model


register(
    MethodSpec(
        name="bitfit",
        config_cls=BitFitConfig,
        apply=apply,
        summary="bias terms only (zero biases added to bias-free linears)",
        paper="Ben Zaken et al. 2022, BitFit: Simple Parameter-efficient Fine-tuning (arXiv 2106.10199)",
        default_learning_rate=1e-3,
        formula="Σ_all[d_out] + Nb + (V if lm_head_bias else 0) + (N − Nb if train_layer_norms else 0)",
        anatomy=Anatomy(
            placement=(
                "the bias of every linear layer (zero biases added where absent: T5, LLaMA); the output head's with "
                "lm_head_bias"
            ),
            init="existing biases as trained; added ones 0: starts at the base model",
            activation="—",
            layer_norms="frozen (GPT-2's layer-norm biases train as biases; train_layer_norms: true trains the gains)",
            source=(
                "Ben Zaken et al. 2022 §2; the study's peft_trainer.py (which also adds a zero lm_head bias: "
                "lm_head_bias: true)"
            ),
        ),
    )
)
