"""BitFit: which biases train, and where they act, on a gated T5, a GQA LLaMA and GPT-2.

Pinned against the models' own computation: a linear layer's output with its bias must be ``W x + b`` for the
input the hooked base module received (``torch.nn.functional.linear`` on the captured input), and the output
head's bias (the study's variant) must shift the logits by exactly ``b``.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as tf

from peftbench.methods import build_method_config, get_method, is_layer_norm, trainable_parameters
from tests.support.tiny import tiny_batch, tiny_model

MODELS = ["tiny-t5", "tiny-llama", "tiny-gpt2"]


def _bitfit(model, **options):
    return get_method("bitfit").apply(model, build_method_config("bitfit", options))


@pytest.mark.parametrize("name", MODELS)
def test_trains_every_linear_bias_and_nothing_else(name):
    model = _bitfit(tiny_model(name))
    head = model.get_output_embeddings()
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear) and m is not head]
    assert all(m.bias is not None and m.bias.requires_grad for m in linears)
    assert head.bias is None  # the output head keeps no bias unless lm_head_bias
    trainable = trainable_parameters(model)
    assert all(n.endswith(".bias") for n in trainable)
    gains = [m.weight for m in model.modules() if is_layer_norm(m)]
    assert not any(g.requires_grad for g in gains)
    if name == "tiny-gpt2":  # GPT-2's layer norms have biases: bias terms, so they train
        assert any(m.bias.requires_grad for m in model.modules() if is_layer_norm(m))


@pytest.mark.parametrize("name", MODELS)
def test_added_biases_start_at_zero_then_act_as_w_x_plus_b(name):
    base = tiny_model(name)
    batch = tiny_batch(base)
    with torch.no_grad():
        expected = base(**batch).logits
    model = _bitfit(tiny_model(name), lm_head_bias=True)
    with torch.no_grad():
        start = model(**batch).logits
        for p in trainable_parameters(model).values():
            p.add_(0.1 * torch.randn_like(p))
    # Zero biases: the base model (to float noise; a GEMM with a bias may round differently from one without).
    torch.testing.assert_close(start, expected, atol=1e-5, rtol=0)
    head = model.get_output_embeddings()
    layer = next(
        m for n, m in model.named_modules() if n.endswith(("SelfAttention.q", "self_attn.q_proj", "attn.c_attn"))
    )
    seen: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def keep(key: str):
        def hook(module, args, out) -> None:  # returns None: observes, does not replace the output
            seen.setdefault(key, (args[0].clone(), out.clone()))

        return hook

    layer.register_forward_hook(keep("layer"))
    head.register_forward_hook(keep("head"))
    with torch.no_grad():
        model(**batch)
    x, y = seen["layer"]
    weight = layer.weight if isinstance(layer, torch.nn.Linear) else layer.weight.T  # Conv1D stores (in, out)
    torch.testing.assert_close(y, tf.linear(x, weight) + layer.bias)
    hx, logits = seen["head"]
    torch.testing.assert_close(logits, hx @ head.weight.T + head.bias)  # the head's bias shifts every logit


def test_layer_norm_gains_train_only_when_asked():
    model = _bitfit(tiny_model("tiny-t5"), train_layer_norms=True)
    gains = [m.weight for m in model.modules() if is_layer_norm(m)]
    assert gains and all(g.requires_grad for g in gains)


@pytest.mark.parametrize("name", ["tiny-t5", "tiny-llama"])
def test_bias_free_layer_norms_get_a_trained_bias_added_after_the_gain(name):
    """BitFit's count includes the layer norms' biases; T5's and LLaMA's RMS norms have none, so one is added, as
    Compacter's T5 does (``T5LayerNorm``: ``weight * x / sqrt(mean(x²) + eps) + bias``), zero at first. Checked
    against that formula on each norm's captured input; ``layer_norm_biases: false`` (the study's) adds none."""
    model = _bitfit(tiny_model(name))
    norms = [m for m in model.modules() if is_layer_norm(m)]
    assert norms and all(m.bias.requires_grad and not m.weight.requires_grad for m in norms)
    assert sum(m.bias.numel() for m in norms) == sum(m.weight.numel() for m in norms)
    with torch.no_grad():
        for m in norms:
            m.bias.normal_()
    seen = []

    def check(module, args, output):
        x = args[0].float()
        eps = getattr(module, "variance_epsilon", None) or getattr(module, "eps", 1e-6)
        expected = module.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)) + module.bias
        seen.append(torch.allclose(output, expected.to(output.dtype), atol=1e-5))

    handles = [m.register_forward_hook(check) for m in norms]
    with torch.no_grad():
        model(**tiny_batch(model))
    for h in handles:
        h.remove()
    assert len(seen) >= len(norms) and all(seen)
    study = _bitfit(tiny_model(name), layer_norm_biases=False)
    assert not any(getattr(m, "bias", None) is not None for m in study.modules() if is_layer_norm(m))
