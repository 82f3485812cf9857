"""Bottleneck adapters (Houlsby and Pfeiffer placement) on tiny random T5, LLaMA and GPT-2 models."""

from __future__ import annotations

import pytest
import torch
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
from peftbench.methods import build_method_config, get_method, trainable_parameters
from peftbench.methods.adapters import AdapterConfig, BottleneckAdapter, adapter_parameter_count

D = 64
SIZE = 8
SEED = 1234


def _t5():
    return T5ForConditionalGeneration(
        T5Config(
            vocab_size=384,
            d_model=D,
            d_ff=128,
            num_layers=2,
            num_decoder_layers=2,
            num_heads=4,
            d_kv=16,
            dropout_rate=0.0,
            decoder_start_token_id=0,
            pad_token_id=0,
            eos_token_id=1,
        )
    )


def _llama():
    return LlamaForCausalLM(
        LlamaConfig(
            vocab_size=384,
            hidden_size=D,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            pad_token_id=0,
            eos_token_id=1,
            bos_token_id=None,
            max_position_embeddings=512,
        )
    )


def _gpt2():
    return GPT2LMHeadModel(
        GPT2Config(
            vocab_size=384,
            n_embd=D,
            n_layer=2,
            n_head=4,
            n_positions=128,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            pad_token_id=0,
            eos_token_id=1,
            bos_token_id=1,
        )
    )


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


@pytest.fixture(scope="module")
def tok():
    return ByT5Tokenizer()


def _build(arch: str):
    torch.manual_seed(SEED)
    model = BUILDERS[arch]()
    model.eval()
    return model


def _apply(model, method: str, **options):
    return get_method(method).apply(model, build_method_config(method, {"size": SIZE, **options}))


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


def test_parameter_count_formula():
    assert adapter_parameter_count(64, 8) == 2 * 64 * 8 + 64 + 8 == 1096
    adapter = BottleneckAdapter(64, 8)
    assert sum(p.numel() for p in adapter.parameters()) == adapter_parameter_count(64, 8)


@pytest.mark.parametrize(("arch", "method"), CASES)
def test_trainable_count_and_names(arch, method):
    model = _apply(_build(arch), method)
    trainable = trainable_parameters(model)
    expected = EXPECTED_ADAPTERS[(arch, method)] * adapter_parameter_count(D, SIZE)
    assert sum(p.numel() for p in trainable.values()) == expected
    assert trainable and all("adapter" in name for name in trainable)
    frozen_adapters = [n for n, p in model.named_parameters() if "adapter" in n and not p.requires_grad]
    assert frozen_adapters == []


def test_houlsby_placement_on_t5():
    model = _apply(_build("t5"), "adapter_houlsby")
    adapted = sorted({n.split(".adapter.")[0] for n in trainable_parameters(model)})
    assert len(adapted) == 8
    assert not any("EncDecAttention" in n for n in adapted)  # decoder cross-attention gets none
    assert sum(n.endswith("SelfAttention.o") for n in adapted) == 4
    assert sum(n.endswith("DenseReluDense.wo") for n in adapted) == 4


@pytest.mark.parametrize(("arch", "method"), CASES)
def test_output_unchanged_at_init(arch, method, tok):
    model = _build(arch)
    batch = _batch(arch, tok)
    before = _logits(model, batch)
    _apply(model, method)
    assert torch.equal(_logits(model, batch), before)


@pytest.mark.parametrize(("arch", "method"), CASES)
def test_training_lowers_loss_and_changes_only_adapters(arch, method, tok):
    model = _build(arch)
    base_state = {k: v.clone() for k, v in model.state_dict().items()}
    _apply(model, method)
    batch = _batch(arch, tok)
    params = trainable_parameters(model)
    start = {k: p.detach().clone() for k, p in params.items()}
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
        assert torch.equal(state[name], value), name
    assert set(state) - set(base_state) == set(params)
    assert any(not torch.equal(params[k].detach(), v) for k, v in start.items() if ".up." in k)


@pytest.mark.parametrize(("arch", "method"), CASES)
def test_safetensors_roundtrip(arch, method, tok, tmp_path):
    model = _apply(_build(arch), method)
    with torch.no_grad():  # move the adapters away from their (identity) init
        for p in trainable_parameters(model).values():
            p.add_(torch.randn_like(p) * 0.05)
    batch = _batch(arch, tok)
    expected = _logits(model, batch)
    path = tmp_path / "trainable.safetensors"
    save_file({n: p for n, p in model.named_parameters() if p.requires_grad}, str(path))

    fresh = _apply(_build(arch), method)
    assert not torch.equal(_logits(fresh, batch), expected)
    result = fresh.load_state_dict(load_file(str(path)), strict=False)
    assert result.unexpected_keys == []
    assert [k for k in result.missing_keys if "adapter" in k] == []
    assert torch.equal(_logits(fresh, batch), expected)


@pytest.mark.parametrize("arch", ["t5", "llama", "gpt2"])
def test_generate_with_kv_cache(arch, tok):
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
    _apply(model, "adapter_houlsby")
    seq, scores = generate(model)
    # Identity at init. Scores only to float noise: the CPU GEMM of the LM head on the last position can
    # round differently for bitwise-equal inputs at other addresses (the full forward is compared exactly).
    assert torch.equal(seq, base_seq)
    assert torch.allclose(scores, base_scores, rtol=0, atol=1e-6)
    with torch.no_grad():
        for name, p in trainable_parameters(model).items():
            if ".up." in name:
                p.add_(torch.randn_like(p) * 0.5)
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
        spec.apply(BartForConditionalGeneration(bart), AdapterConfig(size=SIZE))


def test_specs_metadata():
    for method in ("adapter_houlsby", "adapter_pfeiffer"):
        spec = get_method(method)
        assert issubclass(spec.config_cls, AdapterConfig)
        assert spec.default_learning_rate == 5e-4
        assert spec.lr_scheduler == "linear" and spec.warmup_ratio == 0.03
    assert "1902.00751" in get_method("adapter_houlsby").paper
    assert "2005.00247" in get_method("adapter_pfeiffer").paper
    assert build_method_config("adapter_houlsby").placement == "both"
    assert build_method_config("adapter_pfeiffer").placement == "feed_forward"


@pytest.mark.parametrize(
    "options",
    [
        {"size": 0},
        {"size": -4},
        {"size": 2.5},
        {"non_linearity": "softmax"},
        {"init_std": 0.0},
        {"init_std": float("nan")},
        {"placement": "everywhere"},
        {"reduction_factor": 0},
    ],
)
def test_bad_config(options):
    with pytest.raises(ValueError, match="adapter"):
        AdapterConfig(**options)
    with pytest.raises(PeftbenchError):
        build_method_config("adapter_houlsby", options)


@pytest.mark.parametrize("non_linearity", ["relu", "gelu", "silu", "swish", "tanh"])
def test_non_linearities_and_init(non_linearity):
    torch.manual_seed(0)
    adapter = BottleneckAdapter(D, SIZE, non_linearity, init_std=0.02)
    h = torch.randn(3, D)
    assert torch.equal(adapter(h), h)
    assert torch.count_nonzero(adapter.up.weight) == 0 and torch.count_nonzero(adapter.up.bias) == 0
    assert torch.count_nonzero(adapter.down.bias) == 0
    assert 0.01 < adapter.down.weight.std().item() < 0.03
    torch.manual_seed(0)
    again = BottleneckAdapter(D, SIZE, non_linearity, init_std=0.02)
    assert torch.equal(again.down.weight, adapter.down.weight)  # seeded default generator only


def test_apply_twice_is_rejected():
    model = _apply(_build("llama"), "adapter_pfeiffer")
    with pytest.raises(PeftbenchError, match="already"):
        _apply(model, "adapter_pfeiffer")
