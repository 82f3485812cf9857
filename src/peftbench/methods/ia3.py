"""IA3: trained vectors that rescale activations, ``k' = l_k ⊙ k``, ``v' = l_v ⊙ v``, ``h' = l_ff ⊙ h``.

What trains: the vectors only. Where: ``l_k``, ``l_v`` rescale the outputs of the key and value projections of
every attention block (T5: ``k``, ``v`` of self- and cross-attention; LLaMA: ``k_proj``, ``v_proj``; GPT-2: the
fused ``c_attn``, so q too), ``l_ff`` the input of each feed-forward output projection (T5 ``wo``, LLaMA
``down_proj``, GPT-2 ``mlp.c_proj``: the paper's ``(l_ff ⊙ γ(W₁x)) W₂``). The vectors start at one, so training
starts from the base model. Implemented by peft. ``ia3_ff`` is the variant that rescales only the feed-forward
activations.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from peftbench.methods.core.peft_wrap import task_type, wrap
from peftbench.methods.core.registry import Anatomy, MethodSpec, register


@dataclass
class IA3Config:
    """Hyperparameters of IA3."""

    target_modules: list[str] | None = None
    """Modules to rescale; None = peft's default (T5: k, v, wo; LLaMA: k_proj, v_proj, down_proj)."""
    feedforward_modules: list[str] | None = None
    """Which targets are feed-forward layers (scaled on their input); None = peft's default."""


def apply(model: nn.Module, config: IA3Config) -> nn.Module:
    """Wraps the model with peft IA3."""
    from peft import IA3Config as PeftIA3Config

    peft_config = PeftIA3Config(
        task_type=task_type(model),
        target_modules=config.target_modules,
        feedforward_modules=config.feedforward_modules,
    )
    return wrap(model, peft_config)


register(
    MethodSpec(
        name="ia3",
        merge="peft",
        config_cls=IA3Config,
        apply=apply,
        summary="learned rescaling of keys, values and feed-forward activations",
        paper="Liu et al. 2022, Few-Shot Parameter-Efficient Fine-Tuning is Better and Cheaper (arXiv 2205.05638)",
        default_learning_rate=3e-3,
        formula="Σ_kv[d_out] + Σ_ff[d_in]",
        anatomy=Anatomy(
            placement=(
                "rescales the outputs of the key and value projections (every attention block) and the input of the "
                "feed-forward output projection (GPT-2: c_attn and mlp.c_proj)"
            ),
            init="ones: starts at the base model",
            activation="—",
            layer_norms="frozen",
            source="Liu et al. 2022 §3.3; peft IA3Config",
        ),
    )
)


@dataclass
class IA3FeedForwardConfig:
    """Hyperparameters of IA3 on the feed-forward activations only."""

    feedforward_modules: list[str] | None = None
    """Feed-forward output projections whose input is rescaled; None = peft's default (T5: wo; LLaMA: down_proj)."""


def _ff_modules() -> dict[str, list[str]]:
    """peft's feed-forward modules per model type."""
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_IA3_FEEDFORWARD_MODULES_MAPPING

    return TRANSFORMERS_MODELS_TO_IA3_FEEDFORWARD_MODULES_MAPPING


def _ff_supports(model_config) -> str | None:
    model_type = getattr(model_config, "model_type", None)
    if model_type in _ff_modules():
        return None
    return f"peft knows no feed-forward modules for {model_type}; set method.feedforward_modules"


def apply_ff(model: nn.Module, config: IA3FeedForwardConfig) -> nn.Module:
    """Wraps the model with peft IA3 restricted to the feed-forward layers."""
    modules = config.feedforward_modules
    if modules is None:
        reason = _ff_supports(model.config)
        if reason:
            raise ValueError(reason)
        modules = list(_ff_modules()[model.config.model_type])
    from peft import IA3Config as PeftIA3Config

    peft_config = PeftIA3Config(task_type=task_type(model), target_modules=modules, feedforward_modules=modules)
    return wrap(model, peft_config)


register(
    MethodSpec(
        name="ia3_ff",
        merge="peft",
        config_cls=IA3FeedForwardConfig,
        apply=apply_ff,
        summary="learned rescaling of feed-forward activations only",
        paper="Liu et al. 2022, Few-Shot Parameter-Efficient Fine-Tuning is Better and Cheaper (arXiv 2205.05638)",
        default_learning_rate=3e-3,
        formula="Σ_ff[d_in]",
        anatomy=Anatomy(
            placement="rescales the input of the feed-forward output projection",
            init="ones: starts at the base model",
            activation="—",
            layer_norms="frozen",
            source="Liu et al. 2022 §3.3 (feed-forward vectors only); peft IA3Config",
        ),
    )
)
