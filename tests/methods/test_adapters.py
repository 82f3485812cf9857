"""Bottleneck adapters (Houlsby, Pfeiffer), Compacter and parallel adapters, pinned to where their papers and
reference code put them.

The placement tests do not look at module names: hooks on the real blocks of a gated T5, a GQA LLaMA and a
GPT-2 (dropout on, in training mode) capture the tensors the *base* modules produce, before any adapter hook
runs (``prepend=True``), and the block's final output; the test then checks the output against the paper's
formula computed from those tensors and the adapter's weights with ``torch.nn.functional`` (not the adapter's
own forward):

- Houlsby (adapter-bert ``modeling.py``: ``adapter(dropout(dense(x)))``, then residual): ``h + A(D(F))``;
- Pfeiffer (adapter-hub ``SeqBnConfig``, ``original_ln_before=True``): ``A(h + D(F))``, feed-forward only;
- Compacter (rabeehk/compacter: adapter on the feed-forward output, then dropout and residual): ``h + D(F + A(F))``;
- parallel (He et al.'s ``modeling_bart.py``: branch on the FFN input, added after ``dropout(fc2)``):
  ``h + D(F(x)) + s·B(x)`` with ``x = LN(h)``;

where ``A(x) = x + B(x)`` and ``B(x) = W_up f(W_down x + b_down) + b_up``.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as tf
from safetensors.torch import load_file, save_file
from transformers import (
    BartConfig,
    BartForConditionalGeneration,
    ByT5Tokenizer,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    T5Config,
    T5ForConditionalGeneration,
)

from peftbench.errors import PeftbenchError
from peftbench.methods import build_method_config, get_method, is_layer_norm, trainable_parameters
from peftbench.methods.adapters import AdapterConfig
from peftbench.methods.core.bottleneck import BottleneckAdapter, adapter_parameter_count

D = 64
SIZE = 8
SEED = 1234
DROPOUT = 0.3


def _t5(dropout: float = 0.0):
    return T5ForConditionalGeneration(
        T5Config(
            vocab_size=384, d_model=D, d_ff=128, num_layers=2, num_decoder_layers=2, num_heads=4, d_kv=16,
            dropout_rate=dropout, feed_forward_proj="gated-gelu", tie_word_embeddings=False,
            decoder_start_token_id=0, pad_token_id=0, eos_token_id=1,
        )
    )  # fmt: skip


def _llama(dropout: float = 0.0):
    return LlamaForCausalLM(
        LlamaConfig(
            vocab_size=384, hidden_size=D, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, pad_token_id=0, eos_token_id=1, bos_token_id=None, max_position_embeddings=512,
        )
    )  # fmt: skip


def _gpt2(dropout: float = 0.0):
    return GPT2LMHeadModel(
        GPT2Config(
            vocab_size=384, n_embd=D, n_layer=2, n_head=4, n_positions=128, resid_pdrop=dropout,
            embd_pdrop=dropout, attn_pdrop=dropout, pad_token_id=0, eos_token_id=1, bos_token_id=1,
        )
    )  # fmt: skip


BUILDERS = {"t5": _t5, "llama": _llama, "gpt2": _gpt2}
# (architecture, method) -> number of adapters inserted.
EXPECTED_ADAPTERS = {
    ("t5", "adapter_houlsby"): 8,  # (2 encoder + 2 decoder layers) x (self-attention + feed-forward)
    ("t5", "adapter_pfeiffer"): 4,
    ("llama", "adapter_houlsby"): 4,
    ("llama", "adapter_pfeiffer"): 2,
    ("gpt2", "adapter_houlsby"): 4,
    ("gpt2", "adapter_pfeiffer"): 2,
}
CASES = sorted(EXPECTED_ADAPTERS)
ACT = {"relu": tf.relu, "gelu": tf.gelu, "gelu_new": lambda t: tf.gelu(t, approximate="tanh"), "silu": tf.silu}


@pytest.fixture(scope="module")
def tok():
    return ByT5Tokenizer()


def _build(arch: str, dropout: float = 0.0):
    torch.manual_seed(SEED)
    model = BUILDERS[arch](dropout)
    model.eval()
    return model


def _apply(model, method: str, **options):
    options = {"size": SIZE, **options}
    return get_method(method).apply(model, build_method_config(method, options))


def _batch(arch: str, tok) -> dict[str, torch.Tensor]:
    prompts = ["translate: hello world", "sum: 2 + 2"]
    targets = ["bonjour le monde", "4"]
    if arch == "t5":
        enc = tok(prompts, padding=True, return_tensors="pt")
        labels = tok(targets, padding=True, return_tensors="pt").input_ids
        labels[labels == tok.pad_token_id] = -100
        return {"input_ids": enc.input_ids, "attention_mask": enc.attention_mask, "labels": labels}
    enc = tok([p + " " + t for p, t in zip(prompts, targets, strict=True)], padding=True, return_tensors="pt")
    labels = enc.input_ids.clone()
    labels[enc.attention_mask == 0] = -100
    return {"input_ids": enc.input_ids, "attention_mask": enc.attention_mask, "labels": labels}


def _logits(model, batch) -> torch.Tensor:
    with torch.no_grad():
        return model(**batch).logits


# --- the papers' formulas, from the adapter's weights --------------------------------------------------------


def _branch(adapter, x: torch.Tensor, act: str) -> torch.Tensor:
    """B(x) = W_up f(W_down x + b_down) + b_up."""
    hidden = ACT[act](tf.linear(x, adapter.down.weight, adapter.down.bias))
    return tf.linear(hidden, adapter.up.weight, adapter.up.bias)


def _phm_weight(layer) -> torch.Tensor:
    """W = Σᵢ Aᵢ ⊗ (sᵢ tᵢ), with torch.kron (the code under test uses einsum)."""
    n = layer.rule.weight.shape[0]
    return sum(torch.kron(layer.rule.weight[i], layer.s[i] @ layer.t[i]) for i in range(n))


def _compacter(adapter, x: torch.Tensor) -> torch.Tensor:
    """x + up(gelu_new(down(x))) with PHM down and up projections."""
    hidden = ACT["gelu_new"](x @ _phm_weight(adapter.down) + adapter.down.bias)
    return x + hidden @ _phm_weight(adapter.up) + adapter.up.bias


class Capture:
    """Records tensors flowing through base modules; ``raw`` hooks run before any adapter hook."""

    def __init__(self) -> None:
        self.t: dict[str, torch.Tensor] = {}

    def _keep(self, key: str, value) -> None:
        value = value[0] if isinstance(value, tuple) else value
        self.t.setdefault(key, value.detach().clone())  # the first call (layer 0's when a module repeats)

    def raw_output(self, module, key: str) -> None:
        module.register_forward_hook(lambda m, a, o: self._keep(key, o), prepend=True)

    def final_output(self, module, key: str) -> None:
        module.register_forward_hook(lambda m, a, o: self._keep(key, o))

    def input(self, module, key: str) -> None:
        def hook(m, args, kwargs):
            self._keep(key, args[0] if args else kwargs["hidden_states"])

        module.register_forward_pre_hook(hook, with_kwargs=True, prepend=True)


def _perturb(model) -> None:
    """Moves every adapter weight off its initialisation so that each term of the formula matters."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "adapter" in name or "phm_rule" in name:
                p.add_(0.2 * torch.randn_like(p))


def _run_training_forward(model, arch: str, tok) -> None:
    model.train()
    torch.manual_seed(0)
    with torch.no_grad():
        model(**_batch(arch, tok))


def _assert_dropout_applied(raw: torch.Tensor, dropped: torch.Tensor) -> None:
    """``dropped`` is ``raw`` through an active dropout: some entries zeroed, the rest scaled by 1/(1 - p)."""
    kept = dropped != 0
    assert 0 < kept.float().mean() < 1
    torch.testing.assert_close(dropped[kept], raw[kept] / (1 - DROPOUT))


def _close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=1e-5)


def test_houlsby_on_t5_reads_the_dropped_out_sublayer_output_before_the_residual(tok):
    model = _apply(_build("t5", DROPOUT), "adapter_houlsby", non_linearity="gelu")
    _perturb(model)
    for i in (1, 0):  # feed-forward, then self-attention, of the first encoder block
        sub = model.encoder.block[0].layer[i]
        inner = sub.DenseReluDense if i == 1 else sub.SelfAttention
        cap = Capture()
        cap.input(sub, "h")
        cap.raw_output(inner, "F")
        cap.raw_output(sub.dropout, "DF")
        cap.final_output(sub, "out")
        _run_training_forward(model, "t5", tok)
        t = cap.t
        _assert_dropout_applied(t["F"], t["DF"])
        _close(t["out"], t["h"] + t["DF"] + _branch(sub.dropout.adapter, t["DF"], "gelu"))
    decoder = model.decoder.block[0].layer
    assert type(decoder[1]).__name__ == "T5LayerCrossAttention"
    assert not any(hasattr(m, "adapter") for m in decoder[1].modules())  # cross-attention gets none
    assert hasattr(decoder[0].dropout, "adapter") and hasattr(decoder[2].dropout, "adapter")


def test_houlsby_on_llama_and_gpt2(tok):
    llama = _apply(_build("llama"), "adapter_houlsby", non_linearity="gelu")
    _perturb(llama)
    layer = llama.model.layers[0]
    cap = Capture()
    cap.input(layer, "h")
    cap.raw_output(layer.self_attn.o_proj, "Fa")
    cap.input(layer.post_attention_layernorm, "h_mid")
    cap.raw_output(layer.mlp.down_proj, "F")
    cap.final_output(layer, "out")
    _run_training_forward(llama, "llama", tok)
    t = cap.t
    _close(t["h_mid"], t["h"] + t["Fa"] + _branch(layer.self_attn.o_proj.adapter, t["Fa"], "gelu"))
    _close(t["out"], t["h_mid"] + t["F"] + _branch(layer.mlp.down_proj.adapter, t["F"], "gelu"))

    gpt2 = _apply(_build("gpt2", DROPOUT), "adapter_houlsby", non_linearity="gelu")
    _perturb(gpt2)
    block = gpt2.transformer.h[0]
    cap = Capture()
    cap.input(block.ln_2, "h_mid")
    cap.raw_output(block.mlp.c_proj, "F")
    cap.raw_output(block.mlp.dropout, "DF")
    cap.final_output(block, "out")
    _run_training_forward(gpt2, "gpt2", tok)
    t = cap.t
    _assert_dropout_applied(t["F"], t["DF"])
    _close(t["out"], t["h_mid"] + t["DF"] + _branch(block.mlp.dropout.adapter, t["DF"], "gelu"))


@pytest.mark.parametrize("arch", ["t5", "llama", "gpt2"])
def test_pfeiffer_reads_the_feed_forward_output_with_its_residual(arch, tok):
    model = _apply(_build(arch, DROPOUT), "adapter_pfeiffer")
    _perturb(model)
    cap = Capture()
    if arch == "t5":
        block = model.encoder.block[0].layer[1]
        cap.input(block, "h")
        cap.raw_output(block.DenseReluDense, "F")
        cap.raw_output(block.dropout, "DF")
    elif arch == "llama":
        block = model.model.layers[0]
        cap.input(block.post_attention_layernorm, "h")
        cap.raw_output(block.mlp, "DF")  # no dropout in LLaMA
    else:
        block = model.transformer.h[0]
        cap.input(block.ln_2, "h")
        cap.raw_output(block.mlp.c_proj, "F")
        cap.raw_output(block.mlp, "DF")
    cap.final_output(block, "out")
    _run_training_forward(model, arch, tok)
    t = cap.t
    if "F" in t:
        _assert_dropout_applied(t["F"], t["DF"])
    residual = t["h"] + t["DF"]
    _close(t["out"], residual + _branch(block.adapter, residual, "relu"))
    assert not any(hasattr(m, "adapter") for n, m in model.named_modules() if "attn" in n or "Attention" in n)


@pytest.mark.parametrize("arch", ["t5", "llama"])
def test_compacter_reads_the_sublayer_output_before_dropout(arch, tok):
    model = _apply(_build(arch, DROPOUT), "compacter", size=8)
    _perturb(model)
    cap = Capture()
    if arch == "t5":
        block = model.encoder.block[0].layer[1]
        proj = block.DenseReluDense.wo
        cap.input(block, "h")
        cap.raw_output(proj, "F")
        cap.input(block.dropout, "into_dropout")
        cap.raw_output(block.dropout, "dropped")
    else:
        block = model.model.layers[0]
        proj = block.mlp.down_proj
        cap.input(block.post_attention_layernorm, "h")
        cap.raw_output(proj, "F")
    cap.final_output(block, "out")
    _run_training_forward(model, arch, tok)
    t = cap.t
    adapted = _compacter(proj.adapter, t["F"])
    if arch == "t5":
        _close(t["into_dropout"], adapted)
        _assert_dropout_applied(t["into_dropout"], t["dropped"])
        _close(t["out"], t["h"] + t["dropped"])
    else:
        _close(t["out"], t["h"] + adapted)


@pytest.mark.parametrize("arch", ["t5", "llama", "gpt2"])
def test_parallel_adapter_reads_the_sublayer_input_and_bypasses_its_dropout(arch, tok):
    model = _apply(_build(arch, DROPOUT), "adapter_parallel", scaling=2.5)
    _perturb(model)
    cap = Capture()
    if arch == "t5":
        block = model.encoder.block[0].layer[1]
        cap.input(block, "h")
        cap.input(block.DenseReluDense, "x")  # LN(h), as the block computed it
        cap.raw_output(block.DenseReluDense, "F")
        cap.raw_output(block.dropout, "DF")
        adapter = block.parallel_adapter
    elif arch == "llama":
        block = model.model.layers[0]
        cap.input(block.post_attention_layernorm, "h")
        cap.input(block.mlp, "x")
        cap.raw_output(block.mlp, "DF")
        adapter = block.mlp.parallel_adapter
    else:
        block = model.transformer.h[0]
        cap.input(block.ln_2, "h")
        cap.input(block.mlp, "x")
        cap.raw_output(block.mlp.c_proj, "F")
        cap.raw_output(block.mlp, "DF")
        adapter = block.mlp.parallel_adapter
    cap.final_output(block, "out")
    _run_training_forward(model, arch, tok)
    t = cap.t
    if "F" in t:
        _assert_dropout_applied(t["F"], t["DF"])
    _close(t["out"], t["h"] + t["DF"] + 2.5 * _branch(adapter, t["x"], "relu"))


# --- initialisation and what trains -------------------------------------------------------------------------


def _truncated_normal_std(std: float) -> float:
    """Standard deviation of N(0, std²) truncated at ±2·std."""
    a = 2.0
    pdf = math.exp(-a * a / 2) / math.sqrt(2 * math.pi)
    mass = math.erf(a / math.sqrt(2))
    return std * math.sqrt(1 - 2 * a * pdf / mass)


def test_houlsby_init_is_a_near_identity_truncated_normal():
    torch.manual_seed(0)
    adapter = BottleneckAdapter(512, 64, "gelu", "houlsby")
    for layer in (adapter.down, adapter.up):
        w = layer.weight
        assert w.abs().max() <= 2e-2 + 1e-7  # truncated at two standard deviations
        assert w.std().item() == pytest.approx(_truncated_normal_std(1e-2), rel=0.05)
        assert torch.count_nonzero(layer.bias) == 0
    h = torch.randn(4, 512)
    assert 0 < (adapter(h) - h).abs().max() < 0.05 * h.abs().max()  # near, not exactly, the identity


def test_bert_and_lora_inits():
    torch.manual_seed(0)
    bert = BottleneckAdapter(512, 64, "relu", "bert")
    for layer in (bert.down, bert.up):
        assert layer.weight.std().item() == pytest.approx(0.02, rel=0.05)
    lora = BottleneckAdapter(512, 64, "relu", "lora")
    bound = 1 / math.sqrt(512)  # Kaiming-uniform with a = √5: U(±1/√fan_in)
    assert lora.down.weight.abs().max() <= bound
    assert lora.down.weight.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.05)
    assert torch.count_nonzero(lora.up.weight) == 0
    h = torch.randn(3, 512)
    assert torch.equal(lora(h), h)  # starts as the identity


def test_compacter_init_follows_the_reference():
    model = _apply(_build("t5"), "compacter", size=8)
    rule = model.compacter_phm_rule.weight
    assert 0 < rule.abs().max() < 6e-4  # normal(0, 1e-4)
    layer = model.encoder.block[0].layer[1].DenseReluDense.wo.adapter.down
    _, fan_out, rank = layer.s.shape  # each slice (d_in/n, r) Glorot-uniform with gain √2
    bound = math.sqrt(2) * math.sqrt(6 / (fan_out + rank))
    assert layer.s.abs().max() <= bound and layer.s.std() > 0.2 * bound
    assert torch.count_nonzero(layer.bias) == 0


@pytest.mark.parametrize(
    ("method", "options", "layer_norms"),
    [
        ("adapter_houlsby", {}, True),
        ("adapter_houlsby", {"train_layer_norms": False}, False),
        ("adapter_pfeiffer", {}, False),
        ("adapter_pfeiffer", {"train_layer_norms": True}, True),
        ("compacter", {}, True),
        ("compacter_pp", {"train_layer_norms": False}, False),
        ("adapter_parallel", {}, False),
    ],
)
@pytest.mark.parametrize("arch", ["t5", "llama", "gpt2"])
def test_which_layer_norms_train(method, options, layer_norms, arch):
    model = _apply(_build(arch), method, **options)
    norms = [p for m in model.modules() if is_layer_norm(m) for p in m.parameters(recurse=False)]
    assert norms and all(p.requires_grad == layer_norms for p in norms)
    others = [n for n, p in model.named_parameters() if p.requires_grad and "adapter" not in n and "phm_rule" not in n]
    assert bool(others) == layer_norms


# --- counts, training, saving, generation ---------------------------------------------------------------------


def test_parameter_count_formula():
    assert adapter_parameter_count(64, 8) == 2 * 64 * 8 + 64 + 8 == 1096
    adapter = BottleneckAdapter(64, 8)
    assert sum(p.numel() for p in adapter.parameters()) == adapter_parameter_count(64, 8)


@pytest.mark.parametrize(("arch", "method"), CASES)
def test_trainable_count_and_names(arch, method):
    model = _apply(_build(arch), method, train_layer_norms=False)
    trainable = trainable_parameters(model)
    expected = EXPECTED_ADAPTERS[(arch, method)] * adapter_parameter_count(D, SIZE)
    assert sum(p.numel() for p in trainable.values()) == expected
    assert trainable and all("adapter" in name for name in trainable)


@pytest.mark.parametrize(("arch", "method"), CASES)
def test_training_lowers_loss_and_changes_only_what_trains(arch, method, tok):
    model = _build(arch)
    base_state = {k: v.clone() for k, v in model.state_dict().items()}
    _apply(model, method)
    batch = _batch(arch, tok)
    params = trainable_parameters(model)
    optimizer = torch.optim.AdamW(params.values(), lr=1e-2)
    model.train()
    losses = []
    for _ in range(6):
        loss = model(**batch).loss
        losses.append(loss.item())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        final = model(**batch).loss.item()
    assert final < losses[0] - 1e-3
    state = model.state_dict()
    for name, value in base_state.items():
        if name not in params:
            assert torch.equal(state[name], value), name
    assert set(state) - set(base_state) == {n for n in params if "adapter" in n}


@pytest.mark.parametrize(("arch", "method"), CASES)
def test_safetensors_roundtrip(arch, method, tok, tmp_path):
    model = _apply(_build(arch), method)
    _perturb(model)
    batch = _batch(arch, tok)
    expected = _logits(model, batch)
    path = tmp_path / "trainable.safetensors"
    save_file({n: p.contiguous() for n, p in model.named_parameters() if p.requires_grad}, str(path))

    torch.manual_seed(99)  # a different initialisation of the adapters
    fresh = get_method(method).apply(_build(arch), build_method_config(method, {"size": SIZE}))
    assert not torch.equal(_logits(fresh, batch), expected)
    result = fresh.load_state_dict(load_file(str(path)), strict=False)
    assert result.unexpected_keys == []
    assert [k for k in result.missing_keys if "adapter" in k] == []
    assert torch.equal(_logits(fresh, batch), expected)


@pytest.mark.parametrize("arch", ["t5", "llama", "gpt2"])
@pytest.mark.parametrize("method", ["adapter_houlsby", "adapter_pfeiffer"])
def test_generate_with_kv_cache(arch, method, tok):
    tok.padding_side = "left" if arch != "t5" else "right"
    enc = tok(["hello there", "hi"], padding=True, return_tensors="pt")
    kwargs = {"max_new_tokens": 5, "do_sample": False, "pad_token_id": 0, "eos_token_id": None}
    kwargs |= {"return_dict_in_generate": True, "output_scores": True}

    def generate(model, use_cache=True):
        with torch.no_grad():
            out = model.generate(**enc, use_cache=use_cache, **kwargs)
        return out.sequences, torch.stack(out.scores)

    model = _build(arch)
    base_seq, base_scores = generate(model)
    _apply(model, method, init="lora")  # a zero up-projection: exactly the base model
    seq, scores = generate(model)
    # Scores only to float noise: the CPU GEMM of the LM head on the last position can round differently for
    # bitwise-equal inputs at other addresses (the full forward is compared exactly elsewhere).
    assert torch.equal(seq, base_seq)
    assert torch.allclose(scores, base_scores, rtol=0, atol=1e-6)
    _perturb(model)
    cached_seq, cached_scores = generate(model, use_cache=True)
    uncached_seq, uncached_scores = generate(model, use_cache=False)
    prompt_len = 0 if arch == "t5" else enc.input_ids.shape[1]
    assert cached_seq.shape == (2, prompt_len + 5 + (arch == "t5"))
    assert torch.equal(cached_seq, uncached_seq)
    assert torch.allclose(cached_scores, uncached_scores, atol=1e-4)
    assert not torch.allclose(cached_scores, base_scores, atol=1e-3)  # the adapters take part


@pytest.mark.parametrize("method", ["adapter_houlsby", "adapter_pfeiffer"])
def test_supports(method):
    spec = get_method(method)
    for arch in ("t5", "llama", "gpt2"):
        assert spec.supports(_build(arch).config) is None
    for model_type in ("mt5", "umt5", "mistral", "qwen2"):
        assert spec.supports(type("Cfg", (), {"model_type": model_type})()) is None
    bart = BartConfig(
        vocab_size=384, d_model=32, encoder_layers=1, decoder_layers=1, encoder_ffn_dim=64, decoder_ffn_dim=64
    )
    reason = spec.supports(bart)
    assert isinstance(reason, str) and "\n" not in reason
    assert method in reason and "bart" in reason and "t5" in reason
    with pytest.raises(PeftbenchError, match="bart"):
        spec.apply(BartForConditionalGeneration(bart), build_method_config(method, {"size": SIZE}))


def test_specs_metadata():
    for method in ("adapter_houlsby", "adapter_pfeiffer"):
        spec = get_method(method)
        assert spec.default_learning_rate == 5e-4
        assert spec.lr_scheduler == "linear" and spec.warmup_ratio == 0.03
    assert "1902.00751" in get_method("adapter_houlsby").paper
    assert "2005.00247" in get_method("adapter_pfeiffer").paper
    houlsby = build_method_config("adapter_houlsby")
    assert (houlsby.placement, houlsby.non_linearity, houlsby.init, houlsby.train_layer_norms) == (
        "both", "gelu_new", "houlsby", True,
    )  # fmt: skip
    assert houlsby.bottleneck(768) == 64
    pfeiffer = build_method_config("adapter_pfeiffer")
    assert (pfeiffer.non_linearity, pfeiffer.init, pfeiffer.train_layer_norms) == ("relu", "bert", False)
    assert pfeiffer.bottleneck(768) == 48  # reduction factor 16


@pytest.mark.parametrize(
    "options",
    [
        {"size": 0},
        {"size": -4},
        {"size": 2.5},
        {"non_linearity": "softmax"},
        {"init": "xavier"},
        {"init_std": 0.0},
        {"init_std": float("nan")},
        {"placement": "everywhere"},
        {"reduction_factor": 0},
        {"size": 8, "reduction_factor": 4},
    ],
)
def test_bad_config(options):
    with pytest.raises(ValueError, match="adapter"):
        AdapterConfig(**options)
    with pytest.raises(PeftbenchError):
        build_method_config("adapter_houlsby", options)


@pytest.mark.parametrize("method", ["adapter_houlsby", "adapter_pfeiffer", "adapter_parallel"])
def test_each_adapter_lives_on_its_layers_device(method):
    """A model split across devices (here: one decoder block on ``meta``) gets each adapter beside its layer."""
    model = _build("t5")
    model.decoder.block[1].to("meta")
    model = _apply(model, method)
    devices = {n.split(".adapter")[0]: p.device.type for n, p in model.named_parameters() if "adapter" in n}
    assert devices and all((kind == "meta") == name.startswith("decoder.block.1.") for name, kind in devices.items())
    assert "meta" in devices.values() and "cpu" in devices.values()


def test_apply_twice_is_rejected():
    model = _apply(_build("llama"), "adapter_pfeiffer")
    with pytest.raises(PeftbenchError, match="already"):
        _apply(model, "adapter_pfeiffer")
