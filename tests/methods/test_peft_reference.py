"""peft-backed methods against peft configured directly from the papers' descriptions.

peftbench builds its peft methods through its own options and defaults; the reference here is a peft model
configured by hand from what docs/methods.md says each method is (the paper's targets, scaling and encoder), with
every target module named explicitly rather than left to peft's per-architecture defaults. Both get the same base
weights and the same (random, non-zero) method weights; the trainable tensors must match by name and shape and the
logits must be equal. A wrong target list, scaling (alpha), encoder type or projection in peftbench fails here.
"""

from __future__ import annotations

import copy

import pytest
import torch
from peft import (
    AdaLoraConfig,
    IA3Config,
    LoraConfig,
    PrefixTuningConfig,
    PromptEncoderConfig,
    PromptTuningConfig,
    TaskType,
    VeraConfig,
    get_peft_model,
)

from peftbench.methods import build_method_config, get_method, trainable_parameters
from peftbench.models import is_encoder_decoder
from tests.support.tiny import tiny_batch, tiny_model

T5_TARGETS = {"qv": ["q", "v"], "kv": ["k", "v"], "ff": ["wo"], "all": ["q", "k", "v", "o", "wi_0", "wi_1", "wo"]}
LLAMA_TARGETS = {
    "qv": ["q_proj", "v_proj"], "kv": ["k_proj", "v_proj"], "ff": ["down_proj"],
    "all": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
}  # fmt: skip


def _reference(method: str, targets: dict[str, list[str]], task: TaskType, d: int):
    """The paper's method as peft configures it, every choice written out."""
    return {
        # Hu et al.: W + (α/r) B A on W_q, W_v; the study's α = r, dropout 0.1 (the preset's)
        "lora": LoraConfig(task_type=task, r=8, lora_alpha=8, target_modules=targets["qv"]),
        "dora": LoraConfig(task_type=task, r=8, lora_alpha=8, target_modules=targets["qv"], use_dora=True),
        # Zhang et al.: every weight matrix; init_r 12, target 8
        "adalora": AdaLoraConfig(task_type=task, init_r=12, target_r=8, lora_alpha=12, target_modules=targets["all"],
                                 total_step=1000),
        "vera": VeraConfig(task_type=task, r=256, target_modules=targets["qv"], d_initial=0.1),
        # Liu et al.: l_k, l_v on keys and values, l_ff on the feed-forward activation (input of W_2)
        "ia3": IA3Config(task_type=task, target_modules=targets["kv"] + targets["ff"],
                         feedforward_modules=targets["ff"]),
        "ia3_ff": IA3Config(task_type=task, target_modules=targets["ff"], feedforward_modules=targets["ff"]),
        # Lester et al.: t soft tokens before the input (one prompt, for T5's encoder)
        "prompt": PromptTuningConfig(task_type=task, num_virtual_tokens=20, num_transformer_submodules=1),
        # Liu et al. (P-tuning): a bidirectional LSTM + MLP prompt encoder of the model's width
        "ptuning": PromptEncoderConfig(task_type=task, num_virtual_tokens=20, encoder_reparameterization_type="LSTM",
                                       encoder_hidden_size=d, num_transformer_submodules=1),
        # Li & Liang: 8-token prefixes through the MLP reparameterisation (width 512)
        "prefix": PrefixTuningConfig(task_type=task, num_virtual_tokens=8, prefix_projection=True,
                                     encoder_hidden_size=512),
    }[method]  # fmt: skip


METHODS = ["lora", "dora", "adalora", "vera", "ia3", "ia3_ff", "prompt", "ptuning", "prefix"]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("model_name", ["tiny-t5", "tiny-llama"])
def test_peftbench_builds_the_method_peft_builds_from_the_paper(model_name, method):
    base = tiny_model(model_name)
    enc_dec = is_encoder_decoder(base)
    task = TaskType.SEQ_2_SEQ_LM if enc_dec else TaskType.CAUSAL_LM
    targets = T5_TARGETS if enc_dec else LLAMA_TARGETS
    options = {"dropout": 0.0} if method in ("lora", "dora", "adalora", "vera") else {}  # eval: dropout is off anyway
    ours = get_method(method).apply(copy.deepcopy(base), build_method_config(method, options))
    reference = get_peft_model(copy.deepcopy(base), _reference(method, targets, task, base.config.hidden_size))
    mine, theirs = trainable_parameters(ours), trainable_parameters(reference)
    assert {n: tuple(p.shape) for n, p in mine.items()} == {n: tuple(p.shape) for n, p in theirs.items()}
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in mine.items():
            p.copy_(torch.randn(p.shape, generator=generator) * 0.1 + (1.0 if "ia3_l" in name else 0.0))
            theirs[name].copy_(p)
    ours.eval(), reference.eval()
    with torch.no_grad():
        got, expected = ours(**tiny_batch(base)).logits, reference(**tiny_batch(base)).logits
    if (model_name, method) == ("tiny-t5", "prefix"):
        # peft's own T5 layout gives both decoder layers the first layer's prefix; peftbench one per layer
        # (tests/methods/test_prefix_layers.py; equal to AdapterHub's in tests/reference/test_adapterhub.py)
        assert not torch.allclose(got, expected)
        return
    assert torch.equal(got, expected), f"{method} on {model_name}: max |diff| {(got - expected).abs().max():.3g}"


def test_applying_a_peft_method_warns_the_python_api_user_of_nothing():
    """peft reads a model property transformers deprecates (a FutureWarning on every `peftbench.run` from Python);
    the CLI filters FutureWarnings, the API must not show one either."""
    import warnings

    from peftbench.configure import config_from_dict
    from peftbench.recipe.setup import build_model

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        build_model(config_from_dict({"model": {"name": "tiny-t5"}, "method": {"name": "lora"}}))
    assert [str(w.message) for w in caught if issubclass(w.category, FutureWarning)] == []
