"""The contract every registered method meets, on a tiny T5 and a tiny LLaMA.

For each method × model: a few training steps lower the loss; only the method's parameters change;
the reported trainable count equals the parameters with requires_grad and what is saved; and saving,
then loading in a fresh process, reproduces the logits and greedy predictions exactly.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from peftbench.config import config_from_dict
from peftbench.data.collate import Features, generation_batch, tokenize_prompt, tokenize_target, training_batch
from peftbench.experiments.run import build_model, save_trainable
from peftbench.io import load_tensors, save_tensors
from peftbench.methods import all_methods, trainable_parameters
from peftbench.models import count_parameters, is_encoder_decoder

MODELS = ("tiny-t5", "tiny-llama")
METHODS = [spec.name for spec in all_methods()]
PAIRS = [
    ("Definition: Copy the input.\n\nNow complete the following example -\nInput: red fox.\nOutput: ", "red fox"),
    ("Definition: Answer yes or no.\n\nNow complete the following example -\nInput: a cat.\nOutput: ", "yes"),
    ("Definition: Add the numbers.\n\nNow complete the following example -\nInput: 2 and 3.\nOutput: ", "5"),
    ("Definition: Say the first word.\n\nNow complete the following example -\nInput: blue sky.\nOutput: ", "blue"),
]
STEPS = 8
LR = 5e-3


def _config(model: str, method: str):
    return config_from_dict({"model": {"name": model}, "method": {"name": method}, "seed": 7})


def _features(tokenizer, enc_dec: bool) -> list[Features]:
    return [
        Features(str(i), "t", "c", tokenize_prompt(tokenizer, s, 128, enc_dec), tokenize_target(tokenizer, t, 16), (t,))
        for i, (s, t) in enumerate(PAIRS)
    ]


def _logits(model, tokenizer, feats, enc_dec):
    model.eval()
    with torch.no_grad():
        return model(**training_batch(feats, tokenizer.pad_token_id, enc_dec)).logits


def _predictions(model, tokenizer, feats, enc_dec) -> list[str]:
    model.eval()
    batch = generation_batch(feats, tokenizer.pad_token_id, enc_dec)
    with torch.no_grad():
        out = model.generate(**batch, max_new_tokens=6, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    if not enc_dec:
        out = out[:, batch["input_ids"].shape[1] :]
    return tokenizer.batch_decode(out, skip_special_tokens=True)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict:
    """Trains every method on every model once; keeps what the tests below check."""
    root = tmp_path_factory.mktemp("contract")
    results = {}
    for model_name in MODELS:
        for method in METHODS:
            torch.manual_seed(0)
            cfg = _config(model_name, method)
            model, tokenizer = build_model(cfg)
            enc_dec = is_encoder_decoder(model)
            feats = _features(tokenizer, enc_dec)
            before = {n: p.detach().clone() for n, p in model.named_parameters()}
            params = [p for p in model.parameters() if p.requires_grad]
            opt = torch.optim.AdamW(params, lr=LR, weight_decay=0.0)
            batch = training_batch(feats, tokenizer.pad_token_id, enc_dec)
            losses = []
            model.train()
            for _ in range(STEPS):
                loss = model(**batch).loss
                loss.backward()
                opt.step()
                opt.zero_grad()
                losses.append(loss.item())
            after = dict(model.named_parameters())
            changed = {n for n, p in after.items() if not torch.equal(p.detach(), before[n])}
            run_dir = root / f"{model_name}-{method}"
            run_dir.mkdir()
            save_trainable(model, run_dir / "trainable.safetensors", cfg)
            logits = _logits(model, tokenizer, feats, enc_dec)
            save_tensors({"logits": logits}, run_dir / "logits.safetensors")
            results[(model_name, method)] = {
                "losses": losses,
                "changed": changed,
                "trainable": set(trainable_parameters(model)),
                "counts": count_parameters(model),
                "numel": sum(p.numel() for p in model.parameters() if p.requires_grad),
                "saved": load_tensors(run_dir / "trainable.safetensors"),
                "predictions": _predictions(model, tokenizer, feats, enc_dec),
                "run_dir": run_dir,
                "logits": logits,
            }
    return results


CASES = [(m, meth) for m in MODELS for meth in METHODS]


@pytest.mark.parametrize(("model", "method"), CASES)
def test_loss_goes_down(trained, model, method):
    losses = trained[(model, method)]["losses"]
    assert losses[-1] < losses[0], f"{method} on {model}: loss {losses[0]:.4f} -> {losses[-1]:.4f}"


@pytest.mark.parametrize(("model", "method"), CASES)
def test_only_method_parameters_change(trained, model, method):
    r = trained[(model, method)]
    assert r["changed"], "nothing trained"
    assert r["changed"] <= r["trainable"], f"frozen parameters changed: {sorted(r['changed'] - r['trainable'])[:5]}"
    if method != "full":
        # A PEFT method leaves the whole base model frozen: every trainable tensor is the method's own.
        base_names = {n for n, _ in build_model(_config(model, method), apply_method=False)[0].named_parameters()}
        method_names = {n.replace("base_model.model.", "") for n in r["trainable"]}
        if method == "bitfit":  # trains existing biases and the zero biases it adds
            assert all(n.endswith(".bias") for n in method_names)
        else:
            assert not (method_names & base_names), sorted(method_names & base_names)[:5]


@pytest.mark.parametrize(("model", "method"), CASES)
def test_reported_count_is_requires_grad_count_and_saved_count(trained, model, method):
    r = trained[(model, method)]
    trainable, total = r["counts"]
    assert trainable == r["numel"] > 0
    assert trainable <= total
    assert sum(t.numel() for t in r["saved"].values()) == trainable
    assert set(r["saved"]) == r["trainable"]


def test_save_then_load_in_fresh_process_reproduces_outputs(trained, tmp_path):
    """One subprocess rebuilds every (model, method) from config + saved weights and generates."""
    jobs = [{"model": m, "method": meth, "run_dir": str(trained[(m, meth)]["run_dir"])} for m, meth in CASES]
    (tmp_path / "jobs.json").write_text(json.dumps(jobs))
    script = textwrap.dedent(
        f"""
        import json, sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        import test_methods_contract as c
        from peftbench.experiments.run import build_model, load_trainable
        from peftbench.io import save_tensors
        from peftbench.models import is_encoder_decoder
        from pathlib import Path
        out = {{}}
        for job in json.load(open({str(tmp_path / "jobs.json")!r})):
            model, tok = build_model(c._config(job["model"], job["method"]))
            load_trainable(model, Path(job["run_dir"]) / "trainable.safetensors")
            enc_dec = is_encoder_decoder(model)
            feats = c._features(tok, enc_dec)
            logits = c._logits(model, tok, feats, enc_dec)
            save_tensors({{"logits": logits}}, Path(job["run_dir"]) / "reloaded.safetensors")
            out[job["model"] + "/" + job["method"]] = c._predictions(model, tok, feats, enc_dec)
        print(json.dumps(out))
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    reloaded = json.loads(proc.stdout.strip().splitlines()[-1])
    for m, meth in CASES:
        r = trained[(m, meth)]
        again = load_tensors(r["run_dir"] / "reloaded.safetensors")["logits"]
        assert torch.equal(again, r["logits"]), f"{meth} on {m}: logits differ after reload"
        assert reloaded[f"{m}/{meth}"] == r["predictions"], f"{meth} on {m}: predictions differ after reload"


def test_every_method_is_covered():
    assert {"full", "lora", "prefix", "prompt", "ia3", "bitfit", "adapter_houlsby", "adapter_pfeiffer"} <= set(METHODS)


def _expected_count(model: str, method: str) -> int:
    """Trainable parameters worked out by hand from the tiny presets' shapes (not from the code under test).

    tiny-t5: d_model 128, inner attention 4x32 = 128, d_ff 256, 2 encoder + 2 decoder layers (6 attention
    blocks: 2 encoder self, 2 decoder self, 2 cross). tiny-llama: hidden 128, 4 query heads and 2 key/value
    heads of 32 (k/v width 64), intermediate 256, 3 layers.
    """
    d = 128
    if model == "tiny-t5":
        attn_blocks, ffn_blocks, dec_layers, ff = 6, 4, 2, 256
        return {
            "lora": 8 * (d + d) * 2 * attn_blocks,  # r (d_in + d_out) on q and v of every attention block
            "prompt": 20 * d,  # one soft prompt of 20 vectors
            "prefix": 8 * dec_layers * 2 * d,  # 8 tokens x decoder layers x (key, value) x d
            "ia3": attn_blocks * 2 * d + ffn_blocks * ff,  # k, v outputs; wo input
            "bitfit": attn_blocks * 4 * d + ffn_blocks * (ff + d),  # zero biases on q k v o, wi, wo
            "adapter_houlsby": (attn_blocks - 2 + ffn_blocks) * (2 * d * 64 + d + 64),  # no cross-attention
            "adapter_pfeiffer": ffn_blocks * (2 * d * 64 + d + 64),
        }.get(method, -1)
    layers, kv, ff = 3, 64, 256
    return {
        "lora": layers * 8 * ((d + d) + (d + kv)),
        "prompt": 20 * d,
        "prefix": 8 * layers * 2 * kv,
        "ia3": layers * (kv + kv + ff),
        "bitfit": layers * (d + kv + kv + d + ff + ff + d),
        "adapter_houlsby": layers * 2 * (2 * d * 64 + d + 64),
        "adapter_pfeiffer": layers * (2 * d * 64 + d + 64),
    }.get(method, -1)


@pytest.mark.parametrize(("model", "method"), [c for c in CASES if c[1] != "full"])
def test_trainable_count_matches_hand_computed_formula(trained, model, method):
    expected = _expected_count(model, method)
    assert expected > 0, f"no formula for {method}; add one"
    assert trained[(model, method)]["counts"][0] == expected
