"""The LyCORIS updates peft maintains: LoHa, ``ΔW = (B₁A₁) ⊙ (B₂A₂)`` (Hadamard product of two low-rank
matrices), and LoKr, ``ΔW = W₁ ⊗ (B A)`` (Kronecker product of a small matrix and a low-rank one).

On LoRA's target modules (peft's per-architecture default: T5 q, v; LLaMA q_proj, v_proj); nn.Linear only."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from peftbench.methods.core.peft_wrap import task_type, wrap
from peftbench.methods.core.rank import RankConfig, linear_only
from peftbench.methods.core.registry import Anatomy, MethodSpec, SizeKnob, register


@dataclass
class LohaConfig(RankConfig):
    """Hyperparameters of LoHa."""


@dataclass
class LokrConfig(RankConfig):
    """Hyperparameters of LoKr."""


def _lycoris(peft_config_name: str):
    def apply(model: nn.Module, config: RankConfig) -> nn.Module:
        import peft

        peft_config_cls = getattr(peft, peft_config_name)
        return wrap(
            model,
            peft_config_cls(
                task_type=task_type(model),
                r=config.r,
                alpha=config.alpha if config.alpha is not None else config.r,
                rank_dropout=config.dropout,
                target_modules=config.target_modules,
            ),
        )

    apply.__doc__ = f"Wraps the model with peft {peft_config_name.removesuffix('Config')}."
    return apply


apply_loha = _lycoris("LoHaConfig")
apply_lokr = _lycoris("LoKrConfig")


register(
    MethodSpec(
        name="loha",
        merge="peft",
        config_cls=LohaConfig,
        apply=apply_loha,
        summary="Hadamard product of two low-rank updates (attention projections)",
        paper="Hyeon-Woo et al. 2022, FedPara: Low-Rank Hadamard Product (arXiv 2108.06098); LyCORIS",
        default_learning_rate=5e-4,
        supports=linear_only("LoHa"),
        size_knob=SizeKnob("r"),
        formula="Σ_qv[2·r·(d_in + d_out)]",
        anatomy=Anatomy(
            placement="(B₁A₁) ⊙ (B₂A₂) on LoRA's targets (nn.Linear only)",
            init="peft's: one factor zero, the update starts at 0",
            activation="—",
            layer_norms="frozen",
            source="Hyeon-Woo et al. 2022; peft LoHaConfig",
        ),
    )
)
register(
    MethodSpec(
        name="lokr",
        merge="peft",
        config_cls=LokrConfig,
        apply=apply_lokr,
        summary="Kronecker product of a small matrix and a low-rank one (attention projections)",
        paper="Yeh et al. 2024, Navigating Text-To-Image Customization: LyCORIS (arXiv 2309.14859)",
        default_learning_rate=5e-4,
        supports=linear_only("LoKr"),
        size_knob=SizeKnob("r", monotone=False),
        count_note="peft factorises d_out = a·b and d_in = c·e near-square; the count is not monotone in r",
        formula="Σ_qv[a·c + (r·(b + e) if r < max(b, e)/2 else b·e)]",
        anatomy=Anatomy(
            placement="W₁ ⊗ (B A) on LoRA's targets (nn.Linear only)",
            init="peft's: W₁ = 0, the update starts at 0",
            activation="—",
            layer_norms="frozen",
            source="LyCORIS; peft LoKrConfig",
        ),
    )
)
