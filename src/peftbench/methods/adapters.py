"""Bottleneck adapters, as Houlsby et al. (2019) and Pfeiffer et al. (2021) define them.

An adapter is ``A(x) = x + W_up f(W_down x + b_down) + b_up`` with ``W_down`` mapping the hidden size ``d``
to a bottleneck ``m`` and ``W_up`` back; each has ``2·d·m + d + m`` parameters. The two flavours differ in
what the adapter reads and what they train:

- **Houlsby** (``adapter_houlsby``): after the self-attention and after the feed-forward sub-layer of every
  layer (T5's cross-attention gets none), on the sub-layer's output *after its dropout and before the residual
  connection*: a block ``h + D(F(LN(h)))`` becomes ``h + A(D(F(LN(h))))`` (adapter-bert's ``modeling.py``:
  ``adapter(dropout(dense(x)))``, then the residual and layer norm). GELU in the tanh form of the reference
  code's ``gelu``, weights drawn from a normal truncated at two standard deviations (std 1e-2, the paper's
  near-identity initialisation, §3.6; the reference code's default ``init_scale`` is 1e-3, ``init_std``), and
  the model's layer norms trained with the adapters (the paper's Fig. 2).
- **Pfeiffer** (``adapter_pfeiffer``, adapter-hub's ``SeqBnConfig``, ``original_ln_before=True``): after the
  feed-forward sub-layer only, on its output *after the residual has been added*: ``h + D(F(LN(h)))`` becomes
  ``A(h + D(F(LN(h))))``. ReLU, reduction factor 16, BERT-style initialisation (normal, std 0.02, both
  projections), layer norms frozen (adapter-hub's defaults).

Both are written here because the ``adapters`` library pins an older transformers and peft has no such
method. Each adapter is a child ``adapter`` of the module whose output it reads (Houlsby on T5 and GPT-2: the
sub-layer's dropout module, so names read ``....dropout.adapter.down.weight``; on LLaMA, which has no dropout:
its output projection; Pfeiffer: the feed-forward sub-layer, or the whole decoder layer where the feed-forward
block ends it) and runs in a forward hook on that module; the base modules and their weights are left as they
were. Each adapter lives on the device of the layer it follows. The adapter module, its options' checks and its
insertion are :mod:`peftbench.methods.core.bottleneck`'s, shared with parallel adapters and Compacter.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from peftbench.errors import PeftbenchError
from peftbench.methods.core.bottleneck import (
    SIZE_KNOB,
    BottleneckAdapter,
    Sites,
    bottleneck_size,
    by_family,
    check_common,
    check_init,
    children_of,
    hidden_size,
    insert_adapters,
    modules_ending,
    modules_of_class,
    placement_sites,
    supports_for,
)
from peftbench.methods.core.registry import Anatomy, MethodSpec, register, unfreeze_layer_norms


@dataclass
class AdapterConfig:
    """Hyperparameters of Houlsby adapters."""

    size: int | None = None
    """Bottleneck dimension ``m`` (the study sweeps 8 to 512); None = hidden_size // reduction_factor if that is
    set, else 64 (Houlsby et al.'s "Adapters (64)")."""
    reduction_factor: int | None = None
    """Bottleneck as hidden_size // reduction_factor (set this or ``size``, not both)."""
    placement: str = "both"
    """After which sub-layers: attention, feed_forward or both (Houlsby: both)."""
    non_linearity: str = "gelu_new"
    """Activation between the projections: relu, gelu, gelu_new (GELU's tanh form, adapter-bert's ``gelu``), silu
    (= swish) or tanh."""
    init: str = "houlsby"
    """Initialisation: houlsby (truncated normal, both projections), bert (normal 0.02, both) or lora (Kaiming
    down, zero up)."""
    init_std: float | None = None
    """Standard deviation for the houlsby and bert schemes; None = theirs (1e-2 and 0.02)."""
    train_layer_norms: bool = True
    """Train the model's layer norms with the adapters (Houlsby et al. Fig. 2; the study's code does not)."""

    def __post_init__(self) -> None:
        check_common(self.size, self.reduction_factor, self.non_linearity, self.placement)
        check_init(self.init, self.init_std)

    def bottleneck(self, d: int) -> int:
        """The bottleneck ``m`` on hidden size ``d``."""
        return bottleneck_size(self.size, self.reduction_factor, d, default=64)


@dataclass
class PfeifferConfig:
    """Hyperparameters of Pfeiffer adapters (adapter-hub's ``SeqBnConfig``)."""

    size: int | None = None
    """Bottleneck dimension ``m``; None = hidden_size // reduction_factor."""
    reduction_factor: int | None = None
    """Bottleneck as hidden_size // reduction_factor; None (with ``size`` unset) = 16, adapter-hub's default."""
    non_linearity: str = "relu"
    """Activation between the projections: relu, gelu, gelu_new, silu (= swish) or tanh."""
    init: str = "bert"
    """Initialisation: bert (normal 0.02, both projections), houlsby or lora."""
    init_std: float | None = None
    """Standard deviation for the houlsby and bert schemes; None = theirs."""
    train_layer_norms: bool = False
    """Train the model's layer norms too (adapter-hub: no; the Compacter paper's Pfeiffer baseline: yes)."""

    def __post_init__(self) -> None:
        check_common(self.size, self.reduction_factor, self.non_linearity, None)
        check_init(self.init, self.init_std)

    def bottleneck(self, d: int) -> int:
        """The bottleneck ``m`` on hidden size ``d``."""
        return bottleneck_size(self.size, self.reduction_factor, d, default_reduction=16)


# Houlsby: the sub-layer's output after its dropout, before the residual (attention sites, feed-forward sites).
SUBLAYER_OUTPUTS: dict[str, tuple[Sites, Sites]] = by_family(
    t5=(children_of("LayerSelfAttention", "dropout"), children_of("LayerFF", "dropout")),
    llama=(modules_ending(".self_attn.o_proj"), modules_ending(".mlp.down_proj")),  # LLaMA has no dropout
    gpt2=(modules_ending(".attn.resid_dropout"), modules_ending(".mlp.dropout")),
)
# Pfeiffer: the feed-forward sub-layer's output with its residual added (T5: the T5LayerFF block; decoder-only:
# the decoder layer, which the feed-forward block ends).
FEED_FORWARD_BLOCKS: dict[str, Sites] = by_family(
    t5=modules_of_class("LayerFF"), llama=modules_of_class("DecoderLayer"), gpt2=modules_of_class("GPT2Block")
)


def apply_houlsby(model: nn.Module, config: AdapterConfig) -> nn.Module:
    """Inserts Houlsby adapters on the chosen sub-layers' outputs (after dropout, before the residual); trains them
    and, with ``train_layer_norms``, the model's layer norms."""
    d = hidden_size(model)
    m = config.bottleneck(d)
    sites = placement_sites(model, "adapter_houlsby", config.placement, SUBLAYER_OUTPUTS)

    def make(weight: torch.Tensor) -> nn.Module:
        return BottleneckAdapter(d, m, config.non_linearity, config.init, config.init_std, weight.dtype, weight.device)

    model = insert_adapters(model, "adapter_houlsby", sites, make)
    if config.train_layer_norms:
        unfreeze_layer_norms(model)
    return model


def apply_pfeiffer(model: nn.Module, config: PfeifferConfig) -> nn.Module:
    """Inserts Pfeiffer adapters on the feed-forward sub-layers' outputs after their residual; trains them (and,
    with ``train_layer_norms``, the model's layer norms)."""
    reason = supports_for("adapter_pfeiffer", FEED_FORWARD_BLOCKS)(getattr(model, "config", None))
    if reason is not None:
        raise PeftbenchError(reason)
    d = hidden_size(model)
    m = config.bottleneck(d)

    def make(weight: torch.Tensor) -> nn.Module:
        return BottleneckAdapter(d, m, config.non_linearity, config.init, config.init_std, weight.dtype, weight.device)

    model = insert_adapters(model, "adapter_pfeiffer", [FEED_FORWARD_BLOCKS[model.config.model_type]], make)
    if config.train_layer_norms:
        unfreeze_layer_norms(model)
    return model


_COUNT_NOTE = "adapters × (2·d·m + d + m): down and up projections with biases, plus the layer norms if trained"

register(
    MethodSpec(
        name="adapter_houlsby",
        revision=1,
        config_cls=AdapterConfig,
        apply=apply_houlsby,
        summary="bottleneck adapters on the self-attention and feed-forward outputs (after dropout, before the "
        "residual), layer norms trained",
        paper="Houlsby et al. 2019, Parameter-Efficient Transfer Learning for NLP (arXiv 1902.00751)",
        default_learning_rate=5e-4,
        supports=supports_for("adapter_houlsby", SUBLAYER_OUTPUTS),
        count_note=_COUNT_NOTE,
        size_knob=SIZE_KNOB,
        formula="A·(2·d·m + d + m) + (N if train_layer_norms else 0)",
        anatomy=Anatomy(
            placement=(
                "after every self-attention and feed-forward sub-layer (not T5's cross-attention), on its output "
                "after dropout and before the residual: h + A(D(F))"
            ),
            init=(
                "both projections ~ normal(0, 1e-2) truncated at ±2σ, biases 0 (near-identity); option init: bert, lora"
            ),
            activation="GELU (tanh form, adapter-bert's gelu)",
            layer_norms="trained (train_layer_norms: false freezes them)",
            source=(
                "Houlsby et al. 2019 §2, Fig. 2, §3.6 (std 1e-2; adapter-bert's init_scale default is 1e-3: init_std); "
                "google-research/adapter-bert modeling.py. The study's adapter: "
                "size 32, SiLU, init bert, layer norms frozen (its code applies SiLU twice, not reproduced)"
            ),
        ),
    )
)
register(
    MethodSpec(
        name="adapter_pfeiffer",
        revision=1,
        config_cls=PfeifferConfig,
        apply=apply_pfeiffer,
        summary="bottleneck adapter on each feed-forward block's output after its residual (h + F)",
        paper="Pfeiffer et al. 2021, AdapterFusion: Non-Destructive Task Composition (arXiv 2005.00247)",
        default_learning_rate=5e-4,
        supports=supports_for("adapter_pfeiffer", FEED_FORWARD_BLOCKS),
        count_note=_COUNT_NOTE,
        size_knob=SIZE_KNOB,
        formula="F·(2·d·m + d + m) + (N if train_layer_norms else 0)",
        anatomy=Anatomy(
            placement="after every feed-forward sub-layer, on its output with the residual added: A(h + D(F))",
            init="both projections ~ normal(0, 0.02), biases 0 (init: houlsby, lora)",
            activation="ReLU",
            layer_norms="frozen (train_layer_norms: true trains them, as the Compacter paper's Pfeiffer baseline)",
            source="Pfeiffer et al. 2021 §2; adapter-hub SeqBnConfig (original_ln_before=True, reduction factor 16)",
        ),
    )
)
