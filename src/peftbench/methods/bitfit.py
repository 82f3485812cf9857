"""BitFit: train only the bias terms, ``y = W x + b`` with ``W`` frozen and ``b`` trained.

T5 and LLaMA have no biases in their linear layers; as in the study's T5 runs, a zero-initialised bias is
added to each such layer (so the model's output is unchanged at start) and trained.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from peftbench.methods import MethodSpec, freeze_all, register


@dataclass
class BitFitConfig:
    """Hyperparameters of BitFit."""

    add_missing_biases: bool = True
    """Add zero-initialised biases to bias-free linear layers (T5, LLaMA); without them such models train nothing."""


def _output_layer(model: nn.Module) -> nn.Module | None:
    get = getattr(model, "get_output_embeddings", None)
    return get() if callable(get) else None


def apply(model: nn.Module, config: BitFitConfig) -> nn.Module:
    """Freezes all weights, adds missing linear biases if configured, and trains every bias."""
    freeze_all(model)
    head = _output_layer(model)
    if config.add_missing_biases:
        for module in model.modules():
            if isinstance(module, nn.Linear) and module.bias is None and module is not head:
                w = module.weight
                module.bias = nn.Parameter(torch.zeros(module.out_features, dtype=w.dtype, device=w.device))
    for name, p in model.named_parameters():
        if name.endswith(".bias") or name == "bias":
            p.requires_grad_(True)
    return model


register(
    MethodSpec(
        name="bitfit",
        config_cls=BitFitConfig,
        apply=apply,
        summary="bias terms only (zero biases added to bias-free linears)",
        paper="Ben Zaken et al. 2022, BitFit: Simple Parameter-efficient Fine-tuning (arXiv 2106.10199)",
        default_learning_rate=1e-3,
        formula="Σ over linear layers d_out (+ layer-norm biases where the model has them)",
    )
)
