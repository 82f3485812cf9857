"""The trainable-parameter formulas of docs/methods.md are evaluated and checked against real counts.

Every ``MethodSpec.formula`` is written in a small notation (``peftbench.methods.core.formula``, which
``peftbench check-method`` uses too). It is evaluated with symbols computed from a model's *config numbers*
(``architecture_symbols``: layer counts, widths, vocabulary, ties), never by walking the model's modules, and
compared with the trainable parameters ``spec.apply`` leaves on a meta-device skeleton (counted as
``MethodCounter`` counts). Two independent paths to one number: a formula that is wrong, or a method that trains
something the docs do not say, fails here. A second test checks the hand-made shape description itself: its ``P``
must equal the skeleton's total parameter count.
"""

from __future__ import annotations

import copy
import functools
from dataclasses import fields
from typing import Any

import pytest
import torch
from accelerate import init_empty_weights
from torch import nn
from transformers import PreTrainedModel, T5Config, T5ForConditionalGeneration

from peftbench.config import ModelConfig
from peftbench.methods import MethodSpec, build_method_config, builtin_methods
from peftbench.methods.core.formula import (
    FormulaError,
    architecture_symbols,
    evaluate,
    formula_count,
    near_square,
)
from peftbench.models import model_skeleton


def test_the_notation():
    targets = {"x": [(12, 6), (4, 9)]}
    assert evaluate("2·3 − 1 + 2² + 2³", {}, targets) == 17
    assert evaluate("Σ_x[d_in + d_out]", {}, targets) == 31
    assert evaluate("r·Σ_x[a·b·c·e]", {"r": 2}, targets) == 2 * (12 * 6 + 4 * 9)
    assert evaluate("Σ_x[a·10 + b] + Σ_x[c·10 + e]", {}, targets) == (23 + 33) + (34 + 22)
    assert evaluate("(t if p == 'mlp' else 0) + max(1, 2)/2", {"t": 5, "p": "mlp"}, targets) == 6
    assert near_square(128) == (8, 16) and near_square(384) == (16, 24) and near_square(13) == (1, 13)
    with pytest.raises(FormulaError):
        evaluate("every parameter of the model", {}, targets)
    with pytest.raises(FormulaError):
        evaluate("__import__('os')", {}, targets)


# ---------------------------------------------------------------------------------------------------------------
# Models (meta device) and option sets
# ---------------------------------------------------------------------------------------------------------------

T5_BASE = T5Config(
    vocab_size=32128, d_model=768, d_ff=3072, d_kv=64, num_heads=12, num_layers=12, num_decoder_layers=12,
    feed_forward_proj="relu", tie_word_embeddings=True,
)  # fmt: skip
RELU_T5_TIED = T5Config(
    vocab_size=100, d_model=128, d_ff=160, d_kv=32, num_heads=4, num_layers=2, num_decoder_layers=3,
    feed_forward_proj="relu", tie_word_embeddings=True, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1,
)  # fmt: skip
CUSTOM = {"relu-t5-tied": RELU_T5_TIED, "t5-base-shape": T5_BASE}
MODELS = ("tiny-t5", "tiny-llama", "tiny-gpt2", *CUSTOM)


@functools.cache
def skeleton(name: str) -> PreTrainedModel:
    """The model on the meta device (presets as ``MethodCounter`` builds them; the others from their config)."""
    if name in CUSTOM:
        with torch.device("meta"):
            return T5ForConditionalGeneration(CUSTOM[name])
    return model_skeleton(ModelConfig(name=name))


def count_trainable(spec: MethodSpec, model: nn.Module, method_config: Any) -> int:
    """What ``MethodCounter.count`` does: apply to a copy of the meta skeleton, sum the requires_grad numels."""
    model = copy.deepcopy(model)
    with init_empty_weights(include_buffers=False):
        model = spec.apply(model, method_config)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# Non-default option sets per method (besides the defaults). Keys a method's config does not (yet) have are dropped.
OPTION_SETS: dict[str, list[dict[str, Any]]] = {
    "lora": [{"r": 3}],
    "dora": [{"r": 3}],
    "adalora": [{"init_r": 4}],
    "loha": [{"r": 3}],
    "lokr": [{"r": 2}, {"r": 64}],  # the low-rank branch on the tiny models, and the full one on T5-base
    "vera": [{"r": 16}],
    "adapter_houlsby": [{"placement": "attention"}, {"train_layer_norms": False}, {"reduction_factor": 16}],
    "adapter_pfeiffer": [{"train_layer_norms": True}, {"size": 8}],
    "adapter_parallel": [{"placement": "both", "size": 8}],
    "compacter": [{"size": 8}, {"phm_rank": 2, "placement": "feed_forward"}],
    "compacter_pp": [{"size": 8}],
    "prefix": [
        {"projection": False},
        {"projection": True, "projection_hidden_size": 16},
        {"num_virtual_tokens": 3},
        {"scope": "all"},
        {"scope": "all", "projection": False},
    ],
    "prompt": [{"num_virtual_tokens": 7}],
    "ptuning": [{"encoder": "lstm"}, {"encoder_hidden_size": 16}, {"encoder": "lstm", "encoder_hidden_size": 16}],
    "bitfit": [{"lm_head_bias": True}, {"train_layer_norms": True}, {"lm_head_bias": True, "train_layer_norms": True}],
}


def option_sets(spec: MethodSpec) -> list[dict[str, Any]]:
    """The defaults, then the method's non-default sets restricted to the options its config accepts."""
    known = {f.name for f in fields(spec.config_cls)}
    sets: list[dict[str, Any]] = [{}]
    for options in OPTION_SETS.get(spec.name, []):
        kept = {k: v for k, v in options.items() if k in known}
        if kept not in sets:
            sets.append(kept)
    return sets


def _cases():
    for spec in builtin_methods():
        for options in option_sets(spec):
            label = ",".join(f"{k}={v}" for k, v in options.items()) or "defaults"
            for model in MODELS:
                yield pytest.param(spec, model, options, id=f"{spec.name}-{model}-{label}")


@pytest.mark.parametrize("model", MODELS)
def test_base_total_from_config_numbers_matches_the_skeleton(model):
    net = skeleton(model)
    assert architecture_symbols(net.config)["P"] == sum(p.numel() for p in net.parameters())


@pytest.mark.parametrize(("spec", "model", "options"), list(_cases()))
def test_formula_equals_the_trainable_count(spec, model, options):
    net = skeleton(model)
    reason = spec.supports(net.config)
    if reason:  # declined in one line, and only where expected (peft's LoHa/LoKr cannot wrap GPT-2's Conv1D)
        assert "\n" not in reason and spec.name in ("loha", "lokr") and net.config.model_type == "gpt2", reason
        return
    method_config = build_method_config(spec.name, options)
    counted = count_trainable(spec, net, method_config)
    expected = formula_count(spec, net.config, method_config)  # as check-method evaluates it
    assert expected == counted, f"{spec.formula!r} gives {expected}, {spec.name} trains {counted} on {model}"
