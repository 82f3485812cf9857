"""BitFit: train only the bias terms, ``y = W x + b`` with ``W`` frozen and ``b`` trained.

What trains: the bias of every linear layer and of every layer norm. BitFit's own count (0.08% of BERT-large,
benzakenelad/BitFit: every parameter named ``bias``) includes the layer norms' biases. T5 and LLaMA have no
biases, neither in their linear layers nor in their norms (RMS norms with a gain only), so a zero-initialised
bias is added to each (the model's output is unchanged at start) and trained, as Compacter's BitFit baseline does
for T5 (rabeehk/compacter: ``bias=True`` on every linear layer, a zero bias added to every ``T5LayerNorm``,
``y = g · x / rms(x) + b``). The study's BitFit adds the linear biases only (its ``peft_trainer.py`` adds a bias
to every module with a ``bias`` attribute, which T5's norms lack): ``layer_norm_biases: false``. The output head
gets a bias only with ``lm_head_bias`` (the study's code and Compacter's add and train one; a language-model head
has none of its own). Layer-norm gains are not bias terms and stay frozen unless ``train_layer_norms`` is set.
Where the model's norms have biases (GPT-2), those train and nothing is added.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from peftbench.methods.core.registry import (
    Anatomy,
    MethodSpec,
    freeze_all,
    is_layer_norm,
    register,
    unfreeze_layer_norms,
)


@dataclass
class BitFitConfig:
    """Hyperparameters of BitFit."""

    add_missing_biases: bool = True
    """Add zero-initialised biases to bias-free linear layers (T5, LLaMA); without them such models train nothing."""
    lm_head_bias: bool = False
    """Also add and train a zero-initialised bias on the output head (the study's code does)."""
    train_layer_norms: bool = False
    """Also train the layer norms' gains (not bias terms: neither BitFit nor Compacter's baseline trains them)."""
    layer_norm_biases: bool = True
    """Add a zero-initialised bias to bias-free layer norms (T5, LLaMA) and train it, as BitFit's count (norm
    biases included) and Compacter's T5 baseline do; false = the study's BitFit (linear biases only)."""


def _add_norm_bias(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
    """Forward hook of a norm given a bias by BitFit: ``norm(x) + b`` (``b`` cast to the output's dtype)."""
    return output + module.bias.to(output.dtype)


def add_layer_norm_biases(model: nn.Module) -> int:
    """Gives every bias-free layer norm of ``model`` a zero ``bias`` added to its output; returns how many."""
    added = 0
    for module in model.modules():
        if is_layer_norm(module) and getattr(module, "bias", None) is None and hasattr(module, "weight"):
            w = module.weight
            if "bias" in module.__dict__:  # e.g. a plain attribute None
                del module.__dict__["bias"]
            module.bias = nn.Parameter(torch.zeros(w.shape, dtype=w.dtype, device=w.device))
            module.register_forward_hook(_add_norm_bias)
            added += 1
    return added


def _output_layer(model: nn.Module) -> nn.Module | None:
    get = getattr(model, "get_output_embeddings", None)
    return get() if callable(get) else None


def apply(model: nn.Module, config: BitFitConfig) -> nn.Module:
    """Freezes all weights, adds missing linear biases if configured (the output head's only with ``lm_head_bias``)
    and, with ``layer_norm_biases``, missing layer-norm biases, trains every bias and, with ``train_layer_norms``,
    the layer norms' gains."""
    freeze_all(model)
    if config.layer_norm_biases:
        add_layer_norm_biases(model)
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
        merge="in_place",
        config_cls=BitFitConfig,
        apply=apply,
        summary="bias terms only, of linear layers and layer norms (zero biases added where absent)",
        revision=2,
        paper="Ben Zaken et al. 2022, BitFit: Simple Parameter-efficient Fine-tuning (arXiv 2106.10199)",
        default_learning_rate=1e-3,
        formula=(
            "Σ_all[d_out] + Nb + (V if lm_head_bias else 0) + (N − Nb if train_layer_norms else 0) "
            "+ (N if layer_norm_biases and Nb == 0 else 0)"
        ),
        anatomy=Anatomy(
            placement=(
                "the bias of every linear layer and layer norm (zero biases added where absent: T5, LLaMA; a norm's "
                "is added to its output, g · x / rms(x) + b); the output head's with lm_head_bias"
            ),
            init="existing biases as trained; added ones 0: starts at the base model",
            activation="—",
            layer_norms=(
                "frozen gains; their biases train (zero ones added to T5's and LLaMA's RMS norms; "
                "train_layer_norms: true trains the gains)"
            ),
            source=(
                "Ben Zaken et al. 2022 §2 (benzakenelad/BitFit: every parameter named bias, norms' included); "
                "rabeehk/compacter's T5 BitFit (zero norm biases added). The study's peft_trainer.py: linear biases "
                "only plus a zero lm_head bias: layer_norm_biases: false, lm_head_bias: true"
            ),
        ),
    )
)
