"""Prefix tuning on T5: every decoder layer gets its own prefix, and every trained prefix parameter is used.

peft 0.21's ``get_prompt`` gives T5's decoder layer ``i`` the prefix pair ``2i mod n`` (it concatenates the prefix
with itself along the layer axis before cutting per-layer groups), so with an even number of decoder layers, layers
``i`` and ``i + n/2`` share a prefix and half of what is trained never reaches the model. peftbench builds the cache
itself (``methods/prefix.py::encoder_decoder_prompt``). Checked here against the prefix encoder's own output and by
the gradients of a real loss: a parameter that never reaches the model has no gradient.
"""

from __future__ import annotations

import pytest
import torch

from peftbench.config import ModelConfig
from peftbench.methods import build_method_config, get_method, trainable_parameters
from peftbench.models import load_model


def _prefix_t5(projection: bool, scope: str = "decoder"):
    torch.manual_seed(0)
    model = load_model(ModelConfig(name="tiny-t5"))
    options = {"num_virtual_tokens": 4, "projection": projection, "scope": scope}
    return get_method("prefix").apply(model, build_method_config("prefix", options))


@pytest.mark.parametrize("projection", [True, False])
def test_each_decoder_layer_gets_its_own_prefix_pair(projection):
    model = _prefix_t5(projection)
    cfg = model.active_peft_config
    n, t = cfg.num_layers, cfg.num_virtual_tokens
    assert n % 2 == 0  # the case peft gets wrong
    encoder = model.prompt_encoder["default"]
    with torch.no_grad():
        flat = encoder(torch.arange(t).unsqueeze(0))  # (1, t, n * 2 * token_dim): [layer][key|value][heads][dim]
        cache = model.get_prompt(batch_size=1).self_attention_cache
    per_layer = flat.view(1, t, n, 2, cfg.num_attention_heads, -1)
    for layer in range(n):
        keys = per_layer[:, :, layer, 0].transpose(1, 2)  # (1, heads, t, head_dim)
        values = per_layer[:, :, layer, 1].transpose(1, 2)
        assert torch.equal(cache.layers[layer].keys, keys), layer
        assert torch.equal(cache.layers[layer].values, values), layer
    assert not torch.equal(cache.layers[0].keys, cache.layers[n // 2].keys)


@pytest.mark.parametrize("scope", ["decoder", "all"])
@pytest.mark.parametrize("projection", [True, False])
def test_every_trained_prefix_parameter_gets_a_gradient(projection, scope):
    """Each (layer, key/value) block of every prefix group reaches the loss; ``scope: all`` has three groups (the
    encoder's self-attention, the decoder's self-attention, the cross-attention), three times the parameters."""
    model = _prefix_t5(projection, scope)
    model.train()
    ids = torch.tensor([[5, 17, 42, 9, 1], [7, 7, 33, 1, 0]])
    loss = model(
        input_ids=ids, attention_mask=(ids != 0).long(), labels=torch.tensor([[11, 12, 1], [13, 1, -100]])
    ).loss
    loss.backward()
    cfg = model.active_peft_config
    width = cfg.num_layers * 2 * cfg.token_dim  # the prefix of every layer, keys and values, flat
    checked: set[str] = set()
    for name, p in trainable_parameters(model).items():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
        for axis, size in enumerate(p.shape):
            if size == width:  # the flat prefix (no projection) or the projection's output layer
                blocks = p.grad.abs().movedim(axis, 0).reshape(2 * cfg.num_layers, -1).sum(dim=1)
                dead = torch.nonzero(blocks == 0).flatten().tolist()
                assert not dead, f"{name}: the (layer, key/value) blocks {dead} get no gradient"
                checked.add(".".join(name.split(".")[:2]))  # the group: prompt_encoder.default, prefix_groups.*
    assert len(checked) == (3 if scope == "all" else 1), checked


def test_scope_all_prefixes_reach_the_encoder_and_the_cross_attention():
    """With ``scope: all`` the encoder's output depends on the encoder prefix (with ``decoder`` it cannot), and the
    decoder's output on the cross-attention prefix."""
    ids = torch.tensor([[5, 17, 42, 9, 1], [7, 7, 33, 1, 0]])
    for scope in ("decoder", "all"):
        model = _prefix_t5(True, scope).eval()
        encoder = model.get_base_model().encoder
        with torch.no_grad():
            before = encoder(input_ids=ids, attention_mask=(ids != 0).long()).last_hidden_state
            if scope == "all":
                model.prefix_groups.encoder_prefix.embedding.weight.add_(1.0)
            after = encoder(input_ids=ids, attention_mask=(ids != 0).long()).last_hidden_state
        assert torch.equal(before, after) == (scope == "decoder")
    decoder_in = torch.tensor([[0, 11, 12], [0, 13, 14]])
    with torch.no_grad():
        first = model(input_ids=ids, attention_mask=(ids != 0).long(), decoder_input_ids=decoder_in).logits
        model.prefix_groups.cross_prefix.embedding.weight.add_(1.0)
        second = model(input_ids=ids, attention_mask=(ids != 0).long(), decoder_input_ids=decoder_in).logits
    assert not torch.allclose(first, second)


@pytest.mark.parametrize("scope", ["decoder", "all"])
def test_t5_whose_attention_is_narrower_than_d_model(scope):
    """T5 v1.1 small (google/t5-small-lm-adapt: d_model 512, 6 heads × d_kv 64 = 384): each layer's prefix keys and
    values are num_heads × d_kv wide, not d_model (peft's default, which cannot be split into the heads: the run
    crashed). The trained count is Li & Liang's with that width, and the prefix changes the output."""
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(0)
    config = T5Config(vocab_size=64, d_model=48, d_ff=64, num_layers=2, num_heads=2, d_kv=16, dropout_rate=0.0,
                      decoder_start_token_id=0, pad_token_id=0, feed_forward_proj="gated-gelu")  # fmt: skip
    base = T5ForConditionalGeneration(config).eval()
    ids, labels = torch.randint(2, 64, (2, 7)), torch.randint(2, 64, (2, 3))
    before = base(input_ids=ids, labels=labels).logits
    spec = get_method("prefix")
    model = spec.apply(
        base, build_method_config("prefix", {"num_virtual_tokens": 4, "projection": False, "scope": scope})
    )
    groups = 3 if scope == "all" else 1
    assert (
        sum(p.numel() for p in model.parameters() if p.requires_grad) == groups * 4 * 2 * 2 * 2 * 16
    )  # tokens·layers·k,v·heads·d_kv
    for p in model.parameters():
        if p.requires_grad:
            torch.nn.init.normal_(p)
    after = model(input_ids=ids, labels=labels).logits
    assert after.shape == before.shape and not torch.allclose(after, before)
