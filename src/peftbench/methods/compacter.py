"""Compacter and Compacter++ (Karimi Mahabadi et al. 2021): adapters whose projections are hypercomplex.

Each down (d → m) and up (m → d) projection of a bottleneck adapter is a PHM layer,
``W = Σᵢ₌₁ⁿ Aᵢ ⊗ Bᵢ`` with ``Aᵢ ∈ R^{n×n}`` the "slow" weights **shared by every adapter of the model** and
``Bᵢ = sᵢ tᵢᵀ ∈ R^{(d_in/n)×(d_out/n)}`` the "fast" rank-``r`` weights of that layer. A PHM layer therefore
has ``r·(d_in + d_out)`` own weights plus a bias, and the model ``n³`` shared ones: with rank 1 and
adapters after attention and feed-forward of ``L`` layers, Compacter has ``4L(d + m) + n³`` weights (the
paper's count) plus biases. Compacter++ keeps only the feed-forward adapters: ``2L(d + m) + n³``.

As in the reference code (rabeehk/compacter, ``configs/compacter.json``): the adapter reads the sub-layer's
output before its dropout, ``h + D(F + A(F))`` (T5's ``adapter_controller`` runs on the feed-forward output, then
dropout and the residual); GELU in its tanh form (``gelu_new``); the shared ``A`` ~ normal(0, 1e-4)
(``phm_init_range``), every slice of ``s`` and ``t`` Glorot-uniform with gain √2, biases zero; and the model's
layer norms are trained (``unfreeze_layer_norms``), which is how the paper's 0.073% of T5-base comes out. With
``A`` that small the adapters start close to, not exactly at, the identity.

Written here because no maintained library provides Compacter for transformers >= 5. The shared ``A`` lives once,
in the model's ``compacter_phm_rule``; each adapter is a child ``adapter`` of the output projection it follows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from peftbench.errors import PeftbenchError
from peftbench.methods.core.bottleneck import (
    ACTIVATIONS,
    Sites,
    bottleneck_size,
    by_family,
    check_common,
    hidden_size,
    insert_adapters,
    modules_ending,
    placement_sites,
    supports_for,
)
from peftbench.methods.core.precision import trainable_dtype
from peftbench.methods.core.registry import Anatomy, MethodSpec, SizeKnob, register, unfreeze_layer_norms

# model_type -> (the self-attention output projection, the feed-forward output projection): F before dropout.
OUTPUT_PROJECTIONS: dict[str, tuple[Sites, Sites]] = by_family(
    t5=(modules_ending(".SelfAttention.o"), modules_ending(".DenseReluDense.wo")),
    llama=(modules_ending(".self_attn.o_proj"), modules_ending(".mlp.down_proj")),
    gpt2=(modules_ending(".attn.c_proj"), modules_ending(".mlp.c_proj")),
)


@dataclass
class CompacterConfig:
    """Hyperparameters of Compacter."""

    size: int | None = None
    """Bottleneck dimension ``m`` (a multiple of ``phm_dim``); None = hidden_size // reduction_factor."""
    reduction_factor: int | None = None
    """Bottleneck as hidden_size // reduction_factor (set this or ``size``, not both); None with ``size`` unset
    = 32, the paper's."""
    phm_dim: int = 4
    """Number ``n`` of Kronecker terms; must divide the hidden size and the bottleneck (the paper: 4)."""
    phm_rank: int = 1
    """Rank ``r`` of the fast weights ``Bᵢ = sᵢ tᵢᵀ`` (the paper: 1)."""
    placement: str = "both"
    """After which sub-layers: attention, feed_forward or both (Compacter: both; Compacter++: feed_forward)."""
    non_linearity: str = "gelu_new"
    """Activation between the down and up projections (the reference code: gelu_new, GELU's tanh form)."""
    phm_init_std: float = 1e-4
    """Standard deviation of the shared slow weights ``A`` at initialisation (the reference's phm_init_range)."""
    train_layer_norms: bool = True
    """Train the model's layer norms with the adapters (the paper's configs do)."""

    def __post_init__(self) -> None:
        check_common(self.size, self.reduction_factor, self.non_linearity, self.placement)
        for name in ("phm_dim", "phm_rank"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"compacter {name} must be a positive integer, got {value!r}")
        if self.size is not None and self.size % self.phm_dim:
            raise ValueError(f"compacter size {self.size} is not a multiple of phm_dim {self.phm_dim}")
        if (
            isinstance(self.phm_init_std, bool)
            or not isinstance(self.phm_init_std, (int, float))
            or not (0 < self.phm_init_std < float("inf"))
        ):
            raise ValueError(f"compacter phm_init_std must be a positive number, got {self.phm_init_std!r}")

    def bottleneck(self, d: int) -> int:
        """The bottleneck ``m`` on hidden size ``d``."""
        return bottleneck_size(self.size, self.reduction_factor, d, default_reduction=32)


@dataclass
class CompacterPlusPlusConfig(CompacterConfig):
    """Hyperparameters of Compacter++ (Compacter adapters after the feed-forward block only)."""

    placement: str = "feed_forward"
    """After which sub-layers: attention, feed_forward or both."""


class PHMRule(nn.Module):
    """The shared slow weights ``A`` of shape (n, n, n)."""

    def __init__(self, n: int, std: float, dtype: torch.dtype, device: torch.device) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n, n, n, dtype=dtype, device=device))
        with torch.no_grad():
            nn.init.normal_(self.weight, mean=0.0, std=std)


class PHMLinear(nn.Module):
    """``y = x W + b`` with ``W = Σᵢ Aᵢ ⊗ (sᵢ tᵢ)``; ``A`` is shared and held by reference, not as a child."""

    def __init__(
        self, d_in: int, d_out: int, rule: PHMRule, rank: int, dtype: torch.dtype, device: torch.device
    ) -> None:
        super().__init__()
        n = rule.weight.shape[0]
        self.d_in, self.d_out = d_in, d_out
        self.s = nn.Parameter(torch.empty(n, d_in // n, rank, dtype=dtype, device=device))
        self.t = nn.Parameter(torch.empty(n, rank, d_out // n, dtype=dtype, device=device))
        self.bias = nn.Parameter(torch.zeros(d_out, dtype=dtype, device=device))
        object.__setattr__(self, "rule", rule)  # a plain reference: the shared weights are registered once
        with torch.no_grad():  # the reference's "glorot-uniform": each slice Glorot-uniform with gain √2
            for factor in (self.s, self.t):
                for i in range(n):
                    nn.init.xavier_uniform_(factor[i], gain=math.sqrt(2))

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

    def __init__(self, d: int, m: int, rule: PHMRule, config: CompacterConfig) -> None:
        super().__init__()
        kwargs = {"rank": config.phm_rank, "dtype": rule.weight.dtype, "device": rule.weight.device}
        self.down = PHMLinear(d, m, rule, **kwargs)
        self.act = ACTIVATIONS[config.non_linearity]()
        self.up = PHMLinear(m, d, rule, **kwargs)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        x = h.to(self.up.bias.dtype)
        return (x + self.up(self.act(self.down(x)))).to(h.dtype)


def _apply(name: str):
    def apply(model: nn.Module, config: CompacterConfig) -> nn.Module:
        d = hidden_size(model)
        m = config.bottleneck(d)
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
        sites = placement_sites(model, name, config.placement, OUTPUT_PROJECTIONS)
        rule = PHMRule(n, config.phm_init_std, trainable_dtype(weight.dtype), weight.device)

        def make(_: torch.Tensor) -> nn.Module:
            return CompacterAdapter(d, m, rule, config)

        model = insert_adapters(model, name, sites, make)  # freezes the base model first
        model.compacter_phm_rule = rule  # registered once, after the freeze: trainable
        if config.train_layer_norms:
            unfreeze_layer_norms(model)
        return model

    apply.__doc__ = (
        f"Inserts {name} adapters after the configured sub-layer outputs; trains them and, with train_layer_norms "
        "(the default), the model's layer norms. The shared rule lives on the embeddings' device, and so do the "
        "adapters: a model split across devices is not supported."
    )
    return apply


_PAPER = "Karimi Mahabadi et al. 2021, Compacter: Efficient Low-Rank Hypercomplex Adapter Layers (arXiv 2106.04647)"
_KNOB = SizeKnob("size", step=lambda config: config.phm_dim, conflicts=("reduction_factor",))
_NOTE = "n³ shared slow weights plus, per adapter, 2·r·(d + m) fast weights and d + m biases; layer norms if trained"

register(
    MethodSpec(
        name="compacter",
        revision=1,
        config_cls=CompacterConfig,
        apply=_apply("compacter"),
        summary="hypercomplex (Kronecker) adapters on the self-attention and feed-forward outputs (before dropout), "
        "layer norms trained",
        paper=_PAPER,
        default_learning_rate=3e-3,
        supports=supports_for("compacter", OUTPUT_PROJECTIONS),
        count_note=_NOTE,
        size_knob=_KNOB,
        formula="n³ + A·(2·r·(d + m) + d + m) + (N if train_layer_norms else 0)",
        anatomy=Anatomy(
            placement=(
                "after every self-attention and feed-forward output projection, before dropout: h + D(F + A(F)); PHM "
                "projections Σ Aᵢ ⊗ (sᵢ tᵢ), A shared by all adapters"
            ),
            init="A ~ normal(0, 1e-4), every slice of s, t Glorot-uniform (gain √2), biases 0: near the identity",
            activation="GELU, tanh form (gelu_new)",
            layer_norms="trained (train_layer_norms: false freezes them)",
            source="Karimi Mahabadi et al. 2021 §3; rabeehk/compacter configs/compacter.json",
        ),
    )
)
register(
    MethodSpec(
        name="compacter_pp",
        revision=1,
        config_cls=CompacterPlusPlusConfig,
        apply=_apply("compacter_pp"),
        summary="Compacter adapters on the feed-forward outputs only (Compacter++), layer norms trained",
        paper=_PAPER,
        default_learning_rate=3e-3,
        supports=supports_for("compacter_pp", OUTPUT_PROJECTIONS),
        count_note=_NOTE,
        size_knob=_KNOB,
        formula="n³ + A·(2·r·(d + m) + d + m) + (N if train_layer_norms else 0)",
        anatomy=Anatomy(
            placement="as compacter, after the feed-forward output projections only",
            init="as compacter",
            activation="GELU, tanh form (gelu_new)",
            layer_norms="trained (train_layer_norms: false freezes them)",
            source="Karimi Mahabadi et al. 2021 §3; rabeehk/compacter configs/compacter++.json",
        ),
    )
)
