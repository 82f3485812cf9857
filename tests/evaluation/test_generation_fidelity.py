"""Evaluation generates what the trained model computes, for every method.

The independent reference is the model's own forward pass: a cache-free greedy loop, one example at a
time, the whole sequence fed at every step (for peft's prompt-learning methods, the PeftModel's forward,
which is what training optimises). The evaluation path is ``generate_predictions`` exactly as a run calls
it: length-sorted, padded, token-budget batches, the KV cache, and (decoder-only) the shared task prefix.

Before the check, the method's trainable weights are perturbed so that they matter, and the frozen weight
matrices and the output head are scaled up so that the logits are decisive (a random tiny model's
next-token distribution is nearly flat and hardly depends on the context). The test also checks that the
perturbation changes the forward pass, so that agreeing with the reference means the method was used. The check
itself is :func:`peftbench.recipe.contract.check_generation`, which ``peftbench check-method`` runs too.
"""

from __future__ import annotations

import pytest
import torch

from peftbench.configure import config_from_dict
from peftbench.errors import PeftbenchError
from peftbench.methods import builtin_methods
from peftbench.recipe.contract import check_generation
from peftbench.recipe.setup import build_model

MODELS = ("tiny-t5", "tiny-llama", "tiny-gpt2")
METHODS = [spec.name for spec in builtin_methods()]


def _build(model_name: str, method: str, options: dict | None = None):
    torch.manual_seed(0)
    cfg = config_from_dict({"model": {"name": model_name}, "method": {"name": method, **(options or {})}, "seed": 7})
    try:
        return build_model(cfg)
    except PeftbenchError as exc:  # a method the architecture does not support (LoHa/LoKr on GPT-2's Conv1D)
        if model_name == "tiny-gpt2" and "cannot be used" in str(exc):
            return None
        raise


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("model_name", MODELS)
def test_evaluation_generates_what_the_forward_pass_computes(model_name, method):
    _check_generation(model_name, method)


def test_prefix_on_all_t5_attentions_generates_what_the_forward_pass_computes():
    """``scope: all``: the encoder's prefix enters through hooks, the cross-attention's through the initial cache."""
    _check_generation("tiny-t5", "prefix", {"scope": "all"})


def _check_generation(model_name: str, method: str, options: dict | None = None) -> None:
    built = _build(model_name, method, options)
    if built is None:
        assert method in ("loha", "lokr"), f"{method} unexpectedly unsupported on {model_name}"
        return
    model, tokenizer = built
    problem = check_generation(model, tokenizer)  # the check `peftbench check-method` runs (one contract)
    assert problem is None, f"{method} on {model_name}: {problem}"
