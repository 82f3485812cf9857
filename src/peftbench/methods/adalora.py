"""AdaLoRA: ``ΔW = P Λ Q``, an SVD-shaped update whose rank budget is pruned from ``init_r`` to ``target_r``
during training by importance scores.

It adapts every weight matrix of every layer as its paper does (peft's ``all-linear``: T5's q, k, v, o of self- and
cross-attention and wi or the gated wi_0, wi_1, and wo; LLaMA's q/k/v/o_proj and gate/up/down_proj; GPT-2's c_attn,
c_proj, c_fc; never the output head). Implemented by peft; the rank schedule is driven by :class:`AdaLoraHooks`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from peftbench.errors import PeftbenchError
from peftbench.methods.core.peft_wrap import task_type, wrap
from peftbench.methods.core.rank import check_rank
from peftbench.methods.core.registry import Anatomy, MethodSpec, SizeKnob, register


@dataclass
class AdaLoraConfig:
    """Hyperparameters of AdaLoRA."""

    init_r: int = 12
    """Starting rank of every update (what is trained and stored; the size knob)."""
    target_r: int | None = None
    """Average rank kept at the end; None = round(2/3 · init_r), peft's default ratio (8 of 12)."""
    alpha: int | None = None
    """Scaling numerator; None means alpha = init_r."""
    dropout: float = 0.0
    """Dropout on the update branch's input."""
    target_modules: list[str] | None = None
    """Module names to adapt; None = every linear layer but the output head (the paper's choice: "all weight
    matrices"; peft's own default would skip T5's gated wi_0/wi_1 and adapt only q, v on LLaMA)."""
    tinit: int | None = None
    """Optimizer steps of warm-up before rank pruning starts; None = 10% of the run (:data:`TINIT_SHARE`)."""
    tfinal: int | None = None
    """Optimizer steps at the end with the final ranks fixed; None = 50% of the run (:data:`TFINAL_SHARE`)."""
    delta_t: int | None = None
    """Prune every this many steps; None = a 500th of the run, between 1 and 100 (:func:`schedule`)."""
    beta1: float = 0.85
    """Smoothing of the importance scores (the paper's 0.85)."""
    beta2: float = 0.85
    """Smoothing of their uncertainty (the paper's 0.85)."""
    orth_reg_weight: float = 0.1
    """Weight of the orthogonality regulariser added to the loss (γ: 0.1 in most of the paper's scripts)."""

    def __post_init__(self) -> None:
        check_rank("init_r", self.init_r)
        if self.target_r is not None:
            check_rank("target_r", self.target_r)
            if self.target_r > self.init_r:
                raise ValueError(f"target_r ({self.target_r}) must not exceed init_r ({self.init_r})")
        if (self.tinit or 0) < 0 or (self.tfinal or 0) < 0 or (self.delta_t is not None and self.delta_t < 1):
            raise ValueError("tinit and tfinal must be >= 0 and delta_t >= 1")

    def final_rank(self) -> int:
        """The average rank AdaLoRA prunes to."""
        return self.target_r if self.target_r is not None else max(1, round(2 * self.init_r / 3))

    def schedule(self, total_steps: int) -> tuple[int, int, int]:
        """``(tinit, tfinal, delta_t)`` in a run of ``total_steps`` optimizer steps: the options given, else the
        paper's proportions. Its scripts (QingruZhang/AdaLoRA ``NLU/scripts``, ``NLG_QA/scripts``) warm up for
        4-18% of the run (median 12%), fix the ranks for the last 31-63% (median 49%) and prune every 100 steps
        in runs of 16k steps or more (10 at 4.5-6.7k, 1 at 3.5k): so warm-up 10%, final phase 50% and a pruning
        interval of a 500th of the run, between 1 and 100."""
        tinit = self.tinit if self.tinit is not None else round(TINIT_SHARE * total_steps)
        tfinal = self.tfinal if self.tfinal is not None else round(TFINAL_SHARE * total_steps)
        delta_t = self.delta_t if self.delta_t is not None else min(100, max(1, total_steps // 500))
        return tinit, tfinal, delta_t


TINIT_SHARE = 0.1
"""AdaLoRA's warm-up before pruning, as a share of the run's steps (the paper's scripts: 4-18%)."""
TFINAL_SHARE = 0.5
"""AdaLoRA's final fixed-rank phase, as a share of the run's steps (the paper's scripts: 31-63%)."""


# peft requires the run's length when the model is wrapped; the real one is set when training starts.
_PLACEHOLDER_STEPS = 1_000_000_000


def apply_adalora(model: nn.Module, config: AdaLoraConfig) -> nn.Module:
    """Wraps the model with peft AdaLoRA (the rank schedule is driven by ``AdaLoraHooks`` during training)."""
    from peft import AdaLoraConfig as PeftAdaLoraConfig

    wrapped = wrap(
        model,
        PeftAdaLoraConfig(
            task_type=task_type(model),
            init_r=config.init_r,
            target_r=config.final_rank(),
            lora_alpha=config.alpha if config.alpha is not None else config.init_r,
            lora_dropout=config.dropout,
            target_modules=config.target_modules if config.target_modules is not None else "all-linear",
            tinit=0,  # set with the run's length by AdaLoraHooks (AdaLoraConfig.schedule)
            tfinal=0,
            deltaT=1,
            beta1=config.beta1,
            beta2=config.beta2,
            orth_reg_weight=config.orth_reg_weight,
            total_step=_PLACEHOLDER_STEPS,
        ),
    )
    wrapped._peftbench_adalora = config  # type: ignore[attr-defined]  # read by AdaLoraHooks
    return wrapped


class AdaLoraHooks:
    """Runs AdaLoRA's importance update and rank pruning after every optimizer step; checkpoints its state."""

    _STATS = ("ipt", "exp_avg_ipt", "exp_avg_unc")

    def __init__(self, model: nn.Module, total_steps: int) -> None:
        self.tuner = model.base_model
        adapter = self.tuner.trainable_adapter_name
        self.config = self.tuner.peft_config[adapter]
        options = getattr(model, "_peftbench_adalora", None) or AdaLoraConfig()
        tinit, tfinal, delta_t = options.schedule(total_steps)
        if tinit >= total_steps - tfinal:
            raise PeftbenchError(
                f"adalora: tinit ({tinit}) + tfinal ({tfinal}) leave no pruning phase in a run of {total_steps} "
                f"steps; lower them"
            )
        self.config.tinit, self.config.tfinal, self.config.deltaT = tinit, tfinal, delta_t
        self.config.total_step = total_steps
        self.allocator = self.tuner.rankallocator

    def after_step(self, step: int) -> None:
        self.tuner.update_and_allocate(step)

    def state_dict(self) -> dict[str, torch.Tensor]:
        state = {}
        for stat in self._STATS:
            for name, tensor in getattr(self.allocator, stat).items():
                state[f"{stat}/{name}"] = tensor.detach().contiguous()
        for name, mask in (self.config.rank_pattern or {}).items():
            state[f"rank_pattern/{name}"] = torch.tensor(mask, dtype=torch.bool)
        return state

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.allocator.reset_ipt()
        devices = {name: p.device for name, p in self.tuner.model.named_parameters()}
        pattern = {}
        for key, tensor in state.items():
            kind, name = key.split("/", 1)
            if kind == "rank_pattern":
                pattern[name] = tensor.tolist()
            elif kind in self._STATS:
                getattr(self.allocator, kind)[name] = tensor.to(devices.get(name, tensor.device))
        self.config.rank_pattern = pattern or None


register(
    MethodSpec(
        name="adalora",
        merge="peft",
        revision=2,
        config_cls=AdaLoraConfig,
        apply=apply_adalora,
        summary="SVD-shaped updates of every weight matrix, ranks pruned by importance during training",
        paper="Zhang et al. 2023, Adaptive Budget Allocation for Parameter-Efficient Fine-Tuning (arXiv 2303.10512)",
        default_learning_rate=5e-4,
        size_knob=SizeKnob("init_r", conflicts=("target_r",)),
        formula="Σ_all[init_r·(d_in + d_out + 1)]",
        count_note="counts the init_r ranks trained and stored; pruned ranks are zeroed, not removed",
        training_hooks=AdaLoraHooks,
        anatomy=Anatomy(
            placement=(
                "P Λ Q on every weight matrix but the output head (T5: q, k, v, o, wi_0/wi_1 or wi, wo; LLaMA: "
                "q/k/v/o_proj, gate/up/down_proj; GPT-2: c_attn, c_proj, c_fc)"
            ),
            init="P, Q ~ normal(0, 0.02), Λ = 0: starts at the base model",
            activation="—",
            layer_norms="frozen",
            source=(
                "Zhang et al. 2023 §3.3, §4 (all weight matrices); peft AdaLoraConfig(target_modules='all-linear'). "
                "Schedule as in the paper's scripts: warm-up 10% of the run, cubic pruning, the last 50% at fixed "
                "ranks, pruning every T/500 steps (1-100), orthogonality weight 0.1, β1 = β2 = 0.85"
            ),
        ),
    )
)
