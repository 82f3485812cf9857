"""Trainable weights are fp32 over a bf16 / fp16 base, for every method (issue 11, part 3).

For each method × tiny T5 / tiny LLaMA × bf16 / fp16: the method's parameters are fp32 and the frozen base keeps
its dtype; one AdamW step at lr 1e-5 moves every weight that has a gradient (in bf16, a weight near 1 moves only
in steps of 2⁻⁷ and such an update is lost); what ``save_trainable`` writes is fp32 and loads back into a freshly
built model. Full fine-tuning, which trains the base weights themselves, is refused in half precision.
A T5 saved and loaded through ``from_pretrained`` (gated-GELU feed-forward, as t5-lm-adapt) keeps ``wo`` in fp32
at fp16, which used to crash Compacter.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import ByT5Tokenizer, T5Config, T5ForConditionalGeneration

from peftbench.configure import config_from_dict
from peftbench.data.collate import training_batch
from peftbench.data.tokenize import Features, tokenize_example
from peftbench.errors import PeftbenchError
from peftbench.io import load_tensors
from peftbench.launch.presets import preset_config
from peftbench.methods import builtin_methods, get_method, trainable_parameters
from peftbench.models import is_encoder_decoder
from peftbench.recipe.contract import fp32_problem
from peftbench.recipe.run import run_experiment
from peftbench.recipe.rundir import load_trainable, save_trainable
from peftbench.recipe.setup import build_model, check_master_weights

METHODS = [spec.name for spec in builtin_methods()]
HALF = {"bfloat16": torch.bfloat16, "float16": torch.float16}
PAIRS = [
    ("Definition: Copy the input.\nInput: red fox.\nOutput: ", "red fox"),
    ("Definition: Answer yes or no.\nInput: a cat.\nOutput: ", "yes"),
]
LR = 1e-5
# AdamW's first update of an element is lr·g/(|g| + eps): at |g| > 1e-7 it is over 0.9·lr, which an fp32 weight
# below ~10 in magnitude always registers. Smaller gradients are left out of the element-wise check.
GRAD_MIN = 1e-7
ADAPTER_FAMILY = ["adapter_houlsby", "adapter_pfeiffer", "adapter_parallel", "compacter", "compacter_pp"]


def _config(model: str, method: str, dtype: str, **extra):
    return config_from_dict({"model": {"name": model, "dtype": dtype}, "method": {"name": method}, "seed": 7, **extra})


def _batch(model, tokenizer) -> dict[str, torch.Tensor]:
    enc_dec = is_encoder_decoder(model)
    features = [
        Features(str(i), "t", "c", *tokenize_example(tokenizer, s, t, 64, 8, enc_dec), (t,))
        for i, (s, t) in enumerate(PAIRS)
    ]
    return training_batch(features, tokenizer.pad_token_id, enc_dec)


def _step(model, params: dict[str, torch.nn.Parameter], optimizer, batch) -> dict[str, torch.Tensor]:
    """One forward/backward/AdamW step; returns the gradients it used."""
    optimizer.zero_grad(set_to_none=False)
    loss = model(**batch).loss
    assert torch.isfinite(loss), loss
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in params.items()}
    optimizer.step()
    return grads


def _assert_moved(params, before, grads, names, require_large: bool = True) -> None:
    """Every element of ``names`` whose gradient exceeds GRAD_MIN changed in the step; every tensor has a
    gradient (above GRAD_MIN when ``require_large``, else any non-zero one)."""
    for name in names:
        moved = params[name].detach() != before[name]
        has_grad = grads[name].abs() > GRAD_MIN
        assert (has_grad if require_large else grads[name] != 0).any(), f"{name}: no gradient"
        lost = (has_grad & ~moved).sum().item()
        assert lost == 0, f"{name}: {lost} of {int(has_grad.sum())} elements with a gradient did not move"


def _update_below_resolution(p: torch.Tensor, state: dict) -> bool:
    """True when AdamW's last update of ``p`` is non-zero everywhere yet smaller than the fp32 spacing at ``p``."""
    step = float(state["step"])
    m = state["exp_avg"] / (1 - 0.9**step)
    v = state["exp_avg_sq"] / (1 - 0.999**step)
    update = (LR * m / (v.sqrt() + 1e-8)).abs()
    w = p.detach()
    spacing = (torch.nextafter(w, torch.full_like(w, torch.inf)) - w).abs()
    return bool(((update > 0) & (update < spacing)).all())


def _check_method(model_name: str, method: str, dtype: str, tmp_path: Path) -> None:
    half = HALF[dtype]
    cfg = _config(model_name, method, dtype)
    torch.manual_seed(0)
    model, tokenizer = build_model(cfg)
    keep_fp32 = set(getattr(model, "_keep_in_fp32_modules", None) or ()) if half == torch.float16 else set()
    params = trainable_parameters(model)
    assert params
    problem = fp32_problem(model)  # the check `peftbench check-method` runs (one contract)
    assert problem is None, problem
    for name, p in model.named_parameters():
        if not p.requires_grad:
            expected = torch.float32 if any(k in name.split(".") for k in keep_fp32) else half
            assert p.dtype == expected, f"frozen {name} is {p.dtype}, expected {expected}"

    model.train()
    batch = _batch(model, tokenizer)
    initial = {n: p.detach().clone() for n, p in params.items()}
    optimizer = torch.optim.AdamW(list(params.values()), lr=LR, weight_decay=0.0)
    assert all(s["exp_avg"].dtype == torch.float32 for s in optimizer.state.values())  # empty before the step
    grads = _step(model, params, optimizer, batch)
    assert all(s["exp_avg"].dtype == torch.float32 for s in optimizer.state.values())
    with_grad = [n for n, g in grads.items() if (g.abs() > GRAD_MIN).any()]
    assert with_grad, "no trainable tensor got a gradient"
    _assert_moved(params, initial, grads, with_grad)
    # A tensor without gradient on step one sits behind a zero-initialised partner (an adapter's down projection
    # behind its zero up projection, LoRA's A behind B = 0, VeRA's λ_d behind λ_b = 0, LoHa/LoKr factors,
    # AdaLoRA's ranknum behind E = 0): a property of the method's init. After the partner moves, step two
    # gives them a gradient, and it must move them (that gradient is of the order of lr, hence require_large=False).
    waiting = [n for n in params if n not in with_grad]
    if waiting:
        after_one = {n: params[n].detach().clone() for n in waiting}
        grads = _step(model, params, optimizer, batch)
        _assert_moved(params, after_one, grads, waiting, require_large=False)
    for name, p in params.items():
        if torch.equal(p.detach(), initial[name]):
            # Only an update below fp32 resolution may leave a tensor as it was: AdaLoRA's ranknum (= r, which
            # peft leaves trainable) gets a step-two gradient of the order of lr·lr.
            assert _update_below_resolution(p, optimizer.state[p]), f"{name} did not change"

    path = tmp_path / "trainable.safetensors"
    assert save_trainable(model, path, cfg) == len(params)
    saved = load_tensors(path)
    assert {n: t.dtype for n, t in saved.items()} == dict.fromkeys(params, torch.float32)
    fresh, _ = build_model(cfg)
    load_trainable(fresh, path)
    for name, p in trainable_parameters(fresh).items():
        assert p.dtype == torch.float32 and torch.equal(p.detach(), saved[name]), name


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("model_name", ["tiny-t5", "tiny-llama"])
def test_trainables_fp32_and_one_step_moves_them(model_name: str, method: str, dtype: str, tmp_path: Path) -> None:
    if not get_method(method).fp32_trainable:  # full fine-tuning: refused in half precision
        with pytest.raises(PeftbenchError) as err:
            run_experiment(_config(model_name, method, dtype, output_dir=str(tmp_path)), progress=False, quiet=True)
        assert "\n" not in str(err.value) and "model.dtype: float32" in str(err.value)
        assert not any(tmp_path.iterdir())  # refused before a run directory exists
        return
    _check_method(model_name, method, dtype, tmp_path)


@pytest.fixture(scope="module")
def gated_t5(tmp_path_factory) -> str:
    """A tiny T5 with t5-lm-adapt's gated-GELU feed-forward, saved so that it loads through ``from_pretrained``."""
    path = tmp_path_factory.mktemp("gated-t5")
    config = T5Config(
        vocab_size=384, d_model=128, d_ff=256, num_layers=2, num_decoder_layers=2, num_heads=4, d_kv=32,
        dropout_rate=0.0, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1,
        feed_forward_proj="gated-gelu", tie_word_embeddings=False,
    )  # fmt: skip
    torch.manual_seed(0)
    T5ForConditionalGeneration(config).save_pretrained(path)
    ByT5Tokenizer().save_pretrained(path)
    return str(path)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
@pytest.mark.parametrize("method", [*ADAPTER_FAMILY, "bitfit", "ln_tuning", "lora", "ia3"])
def test_gated_t5_from_pretrained(gated_t5: str, method: str, dtype: str, tmp_path: Path) -> None:
    base, _ = build_model(_config(gated_t5, method, dtype), apply_method=False)
    wo = {p.dtype for n, p in base.named_parameters() if n.endswith(".wo.weight")}
    assert wo == {torch.float32 if dtype == "float16" else HALF[dtype]}  # transformers keeps wo fp32 in fp16
    _check_method(gated_t5, method, dtype, tmp_path)


@pytest.mark.parametrize("model_name", ["tiny-t5", "tiny-llama"])
def test_half_precision_forward_unchanged_at_init(model_name: str) -> None:
    """Upcasting does not change what a half-precision model computes before training: adapters started as the
    identity (``init: lora``; Houlsby's and Compacter's layer norms train, so they are upcast too), BitFit's
    biases at zero, LN tuning's norms as copies. (Compacter's reference initialisation is near, not at, the
    identity, so it takes no part here.)"""
    base, tokenizer = build_model(_config(model_name, "lora", "bfloat16"), apply_method=False)
    batch = _batch(base, tokenizer)
    with torch.no_grad():
        reference = base.eval()(**batch).logits
    identity = {"init": "lora"}
    for method, options in [
        ("adapter_houlsby", identity),
        ("adapter_pfeiffer", {**identity, "train_layer_norms": True}),
        ("adapter_parallel", {}),
        ("bitfit", {"lm_head_bias": True, "train_layer_norms": True}),
        ("ln_tuning", {}),
    ]:
        model, _ = build_model(
            config_from_dict(
                {"model": {"name": model_name, "dtype": "bfloat16"}, "method": {"name": method, **options}, "seed": 7}
            )
        )
        assert any(p.dtype == torch.float32 for p in model.parameters() if p.requires_grad), method
        with torch.no_grad():
            logits = model.eval()(**batch).logits
        assert logits.dtype == reference.dtype, method
        assert torch.equal(logits, reference), method


def test_full_fine_tuning_needs_master_weights() -> None:
    cfg = _config("tiny-t5", "full", "bfloat16", train={"mixed_precision": "bf16"})
    with pytest.raises(PeftbenchError, match=r"model\.dtype: float32 with train\.mixed_precision: bf16"):
        check_master_weights(cfg, deepspeed=False)
    check_master_weights(cfg, deepspeed=True)  # DeepSpeed keeps fp32 master weights under mixed precision
    no_mixed = _config("tiny-t5", "full", "bfloat16")
    with pytest.raises(PeftbenchError):
        check_master_weights(no_mixed, deepspeed=True)  # DeepSpeed without mixed precision trains in bf16
    check_master_weights(_config("tiny-t5", "full", "float32"), deepspeed=False)
    check_master_weights(_config("tiny-t5", "lora", "bfloat16"), deepspeed=False)
    # The study's full fine-tuning preset: fp32 weights without mixed precision (the study's), DeepSpeed ZeRO-3.
    preset = preset_config("full")
    assert "deepspeed" in preset.launch.accelerate_config and preset.train.mixed_precision == "no"
    check_master_weights(preset, deepspeed=True)
    check_master_weights(preset, deepspeed=False)  # fp32 weights are their own master weights
