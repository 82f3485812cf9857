"""Parallel adapters and Compacter / Compacter++ (written here): maths, counts, placement and errors."""

from __future__ import annotations

import pytest
import torch

from peftbench.config import ModelConfig
from peftbench.errors import PeftbenchError
from peftbench.methods import build_method_config, get_method, trainable_parameters
from peftbench.methods.compacter import PHMLinear, PHMRule
from peftbench.models import count_parameters, load_model


def _model(name: str = "tiny-t5"):
    model = load_model(ModelConfig(name=name))
    model.eval()
    return model


def _apply(method: str, model_name: str = "tiny-t5", **options):
    model = _model(model_name)
    return get_method(method).apply(model, build_method_config(method, options))


def _tokens(model_name: str) -> dict:
    ids = torch.tensor([[5, 17, 42, 9, 1], [7, 7, 33, 1, 0]])
    mask = (ids != 0).long()
    batch = {"input_ids": ids, "attention_mask": mask}
    if model_name == "tiny-t5":
        batch["decoder_input_ids"] = torch.tensor([[0, 11, 12], [0, 13, 14]])
    return batch


@pytest.mark.parametrize("model_name", ["tiny-t5", "tiny-llama", "tiny-gpt2"])
@pytest.mark.parametrize("method", ["adapter_parallel", "compacter", "compacter_pp"])
def test_starts_as_the_base_model_then_changes_it(model_name, method):
    """The parallel adapter's zero up-projection starts it exactly at the base model; Compacter's shared weights
    of scale 1e-4 start it close to it (the reference code's initialisation)."""
    base = _model(model_name)
    batch = _tokens(model_name)
    with torch.no_grad():
        expected = base(**batch).logits
    adapted = _apply(method, model_name)
    with torch.no_grad():
        start = adapted(**batch).logits
        if method == "adapter_parallel":
            assert torch.equal(start, expected)
        else:
            assert not torch.equal(start, expected)
            assert torch.allclose(start, expected, atol=1e-3)
        for p in trainable_parameters(adapted).values():
            p.add_(0.05 * torch.randn_like(p))
        assert not torch.allclose(adapted(**batch).logits, expected, atol=1e-4)


def test_phm_weight_is_a_sum_of_kronecker_products():
    torch.manual_seed(0)
    rule = PHMRule(4, 0.1, torch.float32, torch.device("cpu"))
    layer = PHMLinear(16, 8, rule, rank=2, dtype=torch.float32, device=torch.device("cpu"))
    expected = sum(torch.kron(rule.weight[i], layer.s[i] @ layer.t[i]) for i in range(4))
    assert torch.allclose(layer.weight(), expected, atol=1e-6)
    x = torch.randn(3, 16)
    assert torch.allclose(layer(x), x @ expected + layer.bias, atol=1e-5)
    # own weights: r (d_in + d_out); the rule is shared, not a parameter of the layer
    assert sum(p.numel() for p in layer.parameters()) == 2 * (16 + 8) + 8


@pytest.mark.parametrize(("method", "adapters_per_layer"), [("compacter", 2), ("compacter_pp", 1)])
@pytest.mark.parametrize("size", [8, 16])
def test_count_matches_the_papers_formula(method, adapters_per_layer, size):
    """Karimi Mahabadi et al. 2021, §3: Compacter has 4L(k + d) + n³ weights (rank 1), Compacter++ 2L(k + d) + n³.

    L counts the transformer layers holding adapters (tiny-t5: 2 encoder + 2 decoder blocks), k the
    bottleneck, d the hidden size; biases (k + d per adapter) come on top.
    """
    model = _apply(method, size=size, phm_dim=4, train_layer_norms=False)
    params = trainable_parameters(model)
    weights = sum(p.numel() for n, p in params.items() if not n.endswith(".bias"))
    biases = sum(p.numel() for n, p in params.items() if n.endswith(".bias"))
    L, d, k, n = 4, 128, size, 4
    assert weights == 2 * adapters_per_layer * L * (k + d) + n**3
    assert biases == adapters_per_layer * L * (k + d)
    assert sum(1 for n in params if n.endswith("phm_rule.weight")) == 1  # the slow weights exist once


def test_slow_weights_are_shared_and_trained_by_every_adapter():
    model = _apply("compacter", size=8)
    rule = model.compacter_phm_rule.weight
    layers = [m for m in model.modules() if isinstance(m, PHMLinear)]
    assert len(layers) == 16 and all(layer.rule.weight is rule for layer in layers)
    model.train()
    out = model(**_tokens("tiny-t5"), labels=torch.tensor([[11, 12, 1], [13, 14, 1]]))
    out.loss.backward()
    assert rule.grad is not None and torch.count_nonzero(rule.grad) > 0


def test_compacter_rank_and_reduction_factor():
    model = _apply("compacter_pp", phm_rank=2, reduction_factor=16, train_layer_norms=False)  # m = 128 // 16 = 8
    trainable, _ = count_parameters(model)
    assert trainable == 4**3 + 4 * (2 * 2 * (128 + 8) + 128 + 8)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"size": 6}, "multiple of phm_dim"),
        ({"phm_dim": 0}, "phm_dim"),
        ({"phm_rank": 0}, "phm_rank"),
        ({"size": 8, "reduction_factor": 16}, "not both"),
        ({"phm_init_std": 0}, "phm_init_std"),
    ],
)
def test_compacter_bad_options(options, message):
    with pytest.raises(PeftbenchError, match=message):
        build_method_config("compacter", options)


def test_compacter_phm_dim_must_divide_hidden_size():
    with pytest.raises(PeftbenchError, match="must divide the hidden size 128"):
        _apply("compacter", phm_dim=3, size=9)


@pytest.mark.parametrize(("placement", "blocks"), [("feed_forward", 4), ("attention", 4), ("both", 8)])
def test_parallel_adapter_placement_and_count(placement, blocks):
    model = _apply("adapter_parallel", placement=placement, size=16)
    trainable, _ = count_parameters(model)
    assert trainable == blocks * (2 * 128 * 16 + 128 + 16)  # T5: 4 self-attention, 4 feed-forward blocks


def test_parallel_adapter_adds_the_scaled_branch_to_the_sublayer():
    model = _apply("adapter_parallel", scaling=2.5)
    block = model.encoder.block[0].layer[1]  # T5LayerFF: h + dropout(F(LN(h)))
    adapter = block.parallel_adapter
    with torch.no_grad():
        adapter.up.weight.normal_()
    h = torch.randn(2, 3, 128)
    with torch.no_grad():
        x = block.layer_norm(h)
        branch = adapter.up(adapter.act(adapter.down(x)))
        ffn = block.DenseReluDense  # gated: wo(gelu(wi_0 x) * wi_1 x)
        base = ffn.wo(ffn.act(ffn.wi_0(x)) * ffn.wi_1(x))
        assert torch.allclose(block(h), h + base + 2.5 * branch, atol=1e-5)


def test_adapter_reduction_factor_and_placement():
    model = _apply("adapter_houlsby", reduction_factor=8, placement="attention", train_layer_norms=False)
    assert count_parameters(model)[0] == 4 * (2 * 128 * 16 + 128 + 16)  # m = 16, 4 self-attention blocks
    names = list(trainable_parameters(model))
    assert names and all(".layer.0.dropout.adapter." in n for n in names)
