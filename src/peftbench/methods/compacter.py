"""Compacter and Compacter++ (Karimi Mahabadi et al. 2021): adapters whose projections are hypercomplex.

Each down (d → m) and up (m → d) projection of a bottleneck adapter is a PHM layer,
``W = Σᵢ₌₁ⁿ Aᵢ ⊗ Bᵢ`` with ``Aᵢ ∈ R^{n×n}`` the "slow" weights **shared by every adapter of the model** and
``Bᵢ = sᵢ tᵢᵀ ∈ R^{(d_in/n)×(d_out/n)}`` the "fast" rank-``r`` weights of that layer. A PHM layer therefore
has ``r·(d_in + d_out)`` own weights plus a bias, and the model ``n³`` shared ones: with rank 1 and
adapters after attention and feed-forward of ``L`` layers, Compacter has ``4L(d + m) + n³`` weights (the
paper's count) plus biases. Compacter++ keeps only the feed-forward adapters: ``2L(d + m) + n³``.

The up projection's ``t`` starts at zero, so the adapters start as the identity. Written here because no
maintained library provides Compacter for transformers >= 5. Placement and hooks are the bottleneck
adapters' (see ``adapters.py``); the shared ``A`` lives once, in the model's ``compacter_phm_rule``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from peftbench.errors import PeftbenchError
from peftbench.methods import MethodSpec, SizeKnob, register
from peftbench.methods.adapters import (
    ACTIVATIONS,
    OUTPUT_PROJECTIONS,
    bottleneck_size,
    check_common,
    hidden_size,
    insert_after_outputs,
    supports_for,
)
from peftbench.methods.precision import trainable_dtype


@dataclass
class CompacterConfig:
    """Hyperparameters of Compacter."""

    size: int | None = None
    """Bottleneck dimension ``m`` (a multiple of ``phm_dim``); None = hidden_size // reduction_factor."""
    reduction_factor: int = 32
    """Bottleneck as a fraction of the hidden size when ``size`` is unset (the paper: 32)."""
    phm_dim: int = 4
    """Number ``n`` of Kronecker terms; must divide the hidden size and the bottleneck (the paper: 4)."""
    phm_rank: int = 1
    """Rank ``r`` of the fast weights ``Bᵢ = sᵢ tᵢᵀ`` (the paper: 1)."""
    placement: str = "both"
    """After which sub-layers: attention, feed_forward or both (Compacter: both; Compacter++: feed_forward)."""
    non_linearity: str = "gelu"
    """Activation between the down and up projections (the paper: GELU)."""
    init_std: float = 1e-2
    """Standard deviation of the entries of the initial down projection ``W`` (the up one starts at 0)."""

    def __post_init__(self) -> None:
        check_common(self.size, self.reduction_factor, self.non_linearity, self.placement)
        for name in ("phm_dim", "phm_rank"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"compacter {name} must be a positive integer, got {value!r}")
        if self.size is not None and self.size % self.phm_dim:
            raise ValueError(f"compacter size {self.size} is not a multiple of phm_dim {self.phm_dim}")
        if not self.init_std > 0:
            raise ValueError(f"compacter init_std must be positive, got {self.init_std!r}")


@dataclass
class CompacterPlusPlusConfig(CompacterConfig):
    """Hyperparameters of Compacter++ (Compacter adapters after the feed-forward block only)."""

    placement: str = "feed_forward"
    """After which sub-layers: attention, feed_forward or both."""


class PHMRule(nn.Module):
    """The shared slow weights ``A`` of shape (n, n, n)."""

    def __init__(self, n: int, dtype: torch.dtype, device: torch.device) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n, n, n, dtype=dtype, device=device))
        with torch.no_grad():
            nn.init.normal_(self.weight, mean=0.0, std=1.0)


class PHMLinear(nn.Module):
    """``y = x W + b`` with ``W = Σᵢ Aᵢ ⊗ (sᵢ tᵢ)``; ``A`` is shared and held by reference, not as a child."""

    def __init__(
        self, d_in: int, d_out: int, rule: PHMRule, rank: int, std: float, zero: bool,
        dtype: torch.dtype, device: torch.device,
    ) -> None:  # fmt: skip
        super().__init__()
        n = rule.weight.shape[0]
        self.d_in, self.d_out = d_in, d_out
        self.s = nn.Parameter(torch.empty(n, d_in // n, rank, dtype=dtype, device=device))
        self.t = nn.Parameter(torch.empty(n, rank, d_out // n, dtype=dtype, device=device))
        self.bias = nn.Parameter(torch.zeros(d_out, dtype=dtype, device=device))
        object.__setattr__(self, "rule", rule)  # a plain reference: the shared weights are registered once
        # Entries of W are sums of n·rank products A·s·t; this std gives them standard deviation ``std``.
        factor_std = (std**2 / (n * rank)) ** 0.25
        with torch.no_grad():
            nn.init.normal_(self.s, mean=0.0, std=factor_std)
            if zero:
                nn.init.zeros_(self.t)
            else:
                nn.init.normal_(self.t, mean=0.0, std=factor_std)

    def weight(self) -> torch.Tensor:
        """The (d_in, d_out) matrix ``Σᵢ Aᵢ ⊗ Bᵢ``."""
        fast = self.s @ self.t  # (n, d_in/n, d_out/n)
        kron = torch.einsum("iab,icd->acbd", self.rule.weight, fast)
        return kron.reshape(self.d_in, self.d_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(self.bias.dtype) @ self.weight() + self.bias


class CompacterAdapter(nn.Module):
    """``h + up(act(down(h)))`` with PHM down and up projections, computed in the adapter's dtype (fp32 next to
    a half-precision base) and returned in ``h``'s."""

    def __init__(self, d: int, m: int, rule: PHMRule, config: CompacterConfig, weight: torch.Tensor) -> None:
        super().__init__()
        kwargs = {"rank": config.phm_rank, "std": config.init_std, "dtype": rule.weight.dtype, "device": weight.device}
        self.down = PHMLinear(d, m, rule, zero=False, **kwargs)
        self.act = ACTIVATIONS[config.non_linearity]()
        self.up = PHMLinear(m, d, rule, zero=True, **kwargs)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        x = h.to(self.up.bias.dtype)
        return (x + self.up(self.act(self.down(x)))).to(h.dtype)


def _apply(name: str):
    def apply(model: nn.Module, config: CompacterConfig) -> nn.Module:
        d = hidden_size(model)
        m = config.size if config.size is not None else bottleneck_size(None, config.reduction_factor, d, 0)
        n = config.phm_dim
        if d % n or m % n or m < n:
            raise PeftbenchError(
                f"{name}: phm_dim {n} must divide the hidden size {d} and the bottleneck {m} (set method.size)"
            )
        if hasattr(model, "compacter_phm_rule"):
            raise PeftbenchError(f"{name}: the model already has Compacter adapters (apply called twice?)")
        # Every adapter shares ``rule``, so all take its dtype: fp32 over a half-precision base (T5 in fp16 keeps
        # its ``wo`` layers in fp32, so the dtype of the adapted layer is not one dtype across the model).
        weight = model.get_input_embeddings().weight
        rule = PHMRule(n, trainable_dtype(weight.dtype), weight.device)

        def make(width: int, proj_weight: torch.Tensor) -> nn.Module:
            return CompacterAdapter(width, m, rule, config, proj_weight)

        model = insert_after_outputs(model, name, config.placement, make)  # freezes the base model first
        model.compacter_phm_rule = rule  # registered once, after the freeze: trainable
        return model

    apply.__doc__ = f"Inserts {name} adapters after the configured sub-layer outputs; trains only them."
    return apply


_PAPER = "Karimi Mahabadi et al. 2021, Compacter: Efficient Low-Rank Hypercomplex Adapter Layers (arXiv 2106.04647)"
_KNOB = SizeKnob("size", step=lambda config: config.phm_dim)
_NOTE = "n³ shared slow weights plus, per adapter, 2·r·(d + m) fast weights and d + m biases"

register(
    MethodSpec(
        name="compacter",
        config_cls=CompacterConfig,
        apply=_apply("compacter"),
        summary="hypercomplex (Kronecker) adapters after self-attention and feed-forward outputs",
        paper=_PAPER,
        default_learning_rate=3e-3,
        supports=supports_for("compacter", OUTPUT_PROJECTIONS),
        count_note=_NOTE,
        size_knob=_KNOB,
        formula="n³ + adapters · (2·r·(d + m) + d + m); 2 per layer (= 4L(d + m) + n³ weights at r = 1)",
    )
)
register(
    MethodSpec(
        name="compacter_pp",
        config_cls=CompacterPlusPlusConfig,
        apply=_apply("compacter_pp"),
        summary="Compacter adapters after feed-forward outputs only (Compacter++)",
        paper=_PAPER,
        default_learning_rate=3e-3,
        supports=supports_for("compacter_pp", OUTPUT_PROJECTIONS),
        count_note=_NOTE,
        size_knob=_KNOB,
        formula="n³ + adapters · (2·r·(d + m) + d + m); 1 per layer (= 2L(d + m) + n³ weights at r = 1)",
    )
)
