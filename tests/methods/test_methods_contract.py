"""The contract every registered method meets, on a tiny T5 and a tiny LLaMA.

For each method × model: a few training steps lower the loss; only the method's parameters change (the
property ``peftbench check-method`` asserts, :func:`peftbench.recipe.contract.training_problem`, plus what the
papers train of the base model);
the reported trainable count equals the parameters with requires_grad and what is saved; and saving,
then loading in a fresh process, reproduces the logits and greedy predictions exactly.
"""

from __future__ import annotations

import copy
import json
import select
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from peftbench.configure import config_from_dict
from peftbench.data.collate import generation_batch, generation_batches, training_batch
from peftbench.data.tokenize import Features, tokenize_example, tokenize_prompt
from peftbench.evaluation.generate import encode_prefix, generate_ids, prefix_cache_supported
from peftbench.io import load_tensors, save_tensors
from peftbench.methods import builtin_methods, get_method, is_layer_norm, trainable_parameters
from peftbench.models import count_parameters, is_encoder_decoder
from peftbench.recipe.contract import training_problem
from peftbench.recipe.rundir import save_trainable
from peftbench.recipe.setup import build_model

MODELS = ("tiny-t5", "tiny-llama", "tiny-gpt2")
METHODS = [spec.name for spec in builtin_methods()]
PAIRS = [
    ("Definition: Copy the input.\n\nNow complete the following example -\nInput: red fox.\nOutput: ", "red fox"),
    ("Definition: Answer yes or no.\n\nNow complete the following example -\nInput: a cat.\nOutput: ", "yes"),
    ("Definition: Add the numbers.\n\nNow complete the following example -\nInput: 2 and 3.\nOutput: ", "5"),
    ("Definition: Say the first word.\n\nNow complete the following example -\nInput: blue sky.\nOutput: ", "blue"),
]
STEPS = 8
LR = 5e-3
LR_FULL = 1e-3  # full fine-tuning's dev preset: at 5e-3 a tiny LLaMA's loss spikes by step 8


def _config(model: str, method: str):
    return config_from_dict({"model": {"name": model}, "method": {"name": method}, "seed": 7})


def _features(tokenizer, enc_dec: bool) -> list[Features]:
    return [
        Features(str(i), "t", "c", *tokenize_example(tokenizer, s, t, 128, 16, enc_dec), (t,))
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


SHARED_DEFINITION = "Definition: Repeat the words of the input in the same order, then stop.\n\n"
SHARED_INPUTS = ["red fox", "a cat sat", "2 and 3", "blue", "the old man and the sea", "yes no"]


def _with_step_logits(model, chunk, **kwargs) -> tuple[list[list[int]], list[torch.Tensor]]:
    """``generate_ids``' ids and the next-token logits of every generation step (from the output layer)."""
    seen: list[torch.Tensor] = []
    hook = model.get_output_embeddings().register_forward_hook(lambda m, i, o: seen.append(o[:, -1].clone()))
    try:
        ids = generate_ids(model, chunk, **kwargs).tolist()
    finally:
        hook.remove()
    return ids, seen


def _shared_prefix_predictions(model, tokenizer, enc_dec: bool) -> tuple[list, list, bool]:
    """Generated ids and per-step logits with the task's shared prompt prefix encoded once vs without, and
    whether it was used (logits, not only ids: a random tiny model answers every prompt alike)."""
    feats = [
        Features(str(i), "shared", "c",
                 tokenize_prompt(tokenizer, f"{SHARED_DEFINITION}Now complete the following example -\nInput: {x}.\n"
                                 "Output: ", 512, enc_dec), [tokenizer.eos_token_id], (x,))
        for i, x in enumerate(SHARED_INPUTS)
    ]  # fmt: skip
    # A random tiny model's next-token logits hardly depend on the context; scaled-up weight matrices make
    # them depend on it, so a wrong mask or position in the shared-prefix path shows in the logits.
    model = copy.deepcopy(model).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.ndim == 2 and "embed" not in name and "lm_head" not in name:
                param.mul_(8.0)
    supported = prefix_cache_supported(model, enc_dec, 1)
    plan = generation_batches(feats, 4, True, 6, share_prefix=supported)
    common = {"pad_id": tokenizer.pad_token_id, "eos_id": tokenizer.eos_token_id, "max_new_tokens": 6,
              "num_beams": 1, "encoder_decoder": enc_dec, "device": "cpu"}  # fmt: skip
    plain, shared = [], []
    for batch in plan:
        chunk = [feats[i] for i in batch.indices]
        plain.append(_with_step_logits(model, chunk, prefix=0, prefix_cache=None, **common))
        if batch.prefix:
            cache = encode_prefix(model, chunk[0].prompt_ids[: batch.prefix], "cpu")
            shared.append(_with_step_logits(model, chunk, prefix=batch.prefix, prefix_cache=cache, **common))
    used = any(b.prefix for b in plan)
    return plain, shared if used else plain, used


def _train(root: Path, model_name: str, method: str) -> dict:
    """Trains one method on one model; keeps what the tests below check."""
    torch.manual_seed(0)
    cfg = _config(model_name, method)
    model, tokenizer = build_model(cfg)
    enc_dec = is_encoder_decoder(model)
    feats = _features(tokenizer, enc_dec)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=LR_FULL if method == "full" else LR, weight_decay=0.0)
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
    return {
        "losses": losses,
        "changed": changed,
        "trainable": set(trainable_parameters(model)),
        "counts": count_parameters(model),
        "numel": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "saved": load_tensors(run_dir / "trainable.safetensors"),
        "predictions": _predictions(model, tokenizer, feats, enc_dec),
        "shared_prefix": _shared_prefix_predictions(model, tokenizer, enc_dec),
        "run_dir": run_dir,
        "logits": logits,
    }


class _TrainedPairs(dict):
    """(model, method) -> what ``_train`` keeps, trained on first look-up: ``-k lora`` trains LoRA's pairs only."""

    def __init__(self, root: Path):
        super().__init__()
        self.root = root

    def __missing__(self, pair: tuple[str, str]) -> dict:
        self[pair] = result = _train(self.root, *pair)
        return result


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> _TrainedPairs:
    """Every (model, method) pair a test asks for, trained once per module (per xdist worker: each pair's
    tests share an ``xdist_group``, so ``--dist loadgroup`` trains a pair on one worker only)."""
    return _TrainedPairs(tmp_path_factory.mktemp("contract"))


# peft's LoHa and LoKr wrap nn.Linear only, and GPT-2's projections are Conv1D: they refuse it in one line.
CASES = [(m, meth) for m in MODELS for meth in METHODS if not (m == "tiny-gpt2" and meth in ("loha", "lokr"))]


def _grouped(cases) -> list:
    """The pairs as parameters, each in its own xdist group so that all of a pair's tests share one training."""
    return [pytest.param(m, meth, marks=pytest.mark.xdist_group(f"contract-{m}-{meth}")) for m, meth in cases]


@pytest.mark.parametrize(("model", "method"), _grouped(CASES))
def test_loss_goes_down(trained, model, method):
    losses = trained[(model, method)]["losses"]
    assert losses[-1] < losses[0], f"{method} on {model}: loss {losses[0]:.4f} -> {losses[-1]:.4f}"


@pytest.mark.parametrize(("model", "method"), _grouped(CASES))
def test_only_method_parameters_change(trained, model, method):
    r = trained[(model, method)]
    base = build_model(_config(model, method), apply_method=False)[0]
    # check-method's property, on this longer training (``peftbench check-method`` runs the same function)
    assert training_problem(get_method(method), base, r["trainable"], r["changed"]) is None
    # ... and what the spec declares is what the papers train of the base model:
    base_names = {n for n, _ in base.named_parameters()}
    method_names = {n.replace("base_model.model.", "") for n in r["trainable"]} & base_names
    norms = {f"{m}.{p}" for m, mod in base.named_modules() if is_layer_norm(mod) for p, _ in mod.named_parameters()}
    if method == "full":
        assert method_names == base_names
    elif method == "bitfit":  # trains existing biases (and the zero biases it adds)
        assert all(n.endswith(".bias") for n in method_names)
    elif method in ("adapter_houlsby", "compacter", "compacter_pp"):  # and the model's layer norms (papers)
        assert method_names == norms
    else:
        assert not method_names, sorted(method_names)[:5]


@pytest.mark.parametrize(("model", "method"), _grouped(CASES))
def test_reported_count_is_requires_grad_count_and_saved_count(trained, model, method):
    r = trained[(model, method)]
    trainable, total = r["counts"]
    assert trainable == r["numel"] > 0
    assert trainable <= total
    assert sum(t.numel() for t in r["saved"].values()) == trainable
    assert set(r["saved"]) == r["trainable"]


RELOADER = """
import json, os, sys
sys.path.insert(0, {tests!r})
results = os.fdopen(os.dup(1), "w")  # one line per job; anything else printed goes to stderr
os.dup2(2, 1)
import test_methods_contract as c
from peftbench.recipe.rundir import load_trainable
from peftbench.recipe.setup import build_model
from peftbench.io import save_tensors
from peftbench.models import is_encoder_decoder
from pathlib import Path
for line in sys.stdin:
    job = json.loads(line)
    model, tok = build_model(c._config(job["model"], job["method"]))
    load_trainable(model, Path(job["run_dir"]) / "trainable.safetensors")
    enc_dec = is_encoder_decoder(model)
    feats = c._features(tok, enc_dec)
    logits = c._logits(model, tok, feats, enc_dec)
    save_tensors({{"logits": logits}}, Path(job["run_dir"]) / "reloaded.safetensors")
    print(json.dumps(c._predictions(model, tok, feats, enc_dec)), file=results, flush=True)
"""


@pytest.fixture(scope="module")
def fresh_process(tmp_path_factory):
    """A fresh Python process that rebuilds a (model, method) from config + saved weights and generates; one for
    the whole module (per xdist worker), fed one pair at a time. Returns ``reload(model, method, run_dir)`` ->
    the reloaded predictions (the reloaded logits are written to ``run_dir / "reloaded.safetensors"``)."""
    stderr_path = tmp_path_factory.mktemp("fresh") / "stderr.txt"
    script = RELOADER.format(tests=str(Path(__file__).parent))
    with open(stderr_path, "w") as stderr:
        proc = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=stderr, text=True)  # fmt: skip

    def reload(model: str, method: str, run_dir: Path) -> list[str]:
        proc.stdin.write(json.dumps({"model": model, "method": method, "run_dir": str(run_dir)}) + "\n")
        proc.stdin.flush()
        ready, _, _ = select.select([proc.stdout], [], [], 600)
        line = proc.stdout.readline() if ready else ""
        assert line, f"the fresh process gave no answer (exit {proc.poll()}): {stderr_path.read_text()[-3000:]}"
        return json.loads(line)

    try:
        yield reload
    finally:
        proc.stdin.close()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.mark.slow
@pytest.mark.parametrize(("model", "method"), _grouped(CASES))
def test_save_then_load_in_fresh_process_reproduces_outputs(trained, fresh_process, model, method):
    """A process that never saw the trained model rebuilds it from config + saved weights: same logits and
    greedy predictions."""
    r = trained[(model, method)]
    reloaded = fresh_process(model, method, r["run_dir"])
    again = load_tensors(r["run_dir"] / "reloaded.safetensors")["logits"]
    assert torch.equal(again, r["logits"]), f"{method} on {model}: logits differ after reload"
    assert reloaded == r["predictions"], f"{method} on {model}: predictions differ after reload"


def test_every_method_is_covered():
    assert {
        "full", "lora", "prefix", "prompt", "ia3", "bitfit", "adapter_houlsby", "adapter_pfeiffer",
        "adapter_parallel", "compacter", "compacter_pp", "dora", "adalora", "loha", "lokr", "vera", "ia3_ff",
        "ln_tuning", "ptuning",
    } <= set(METHODS)  # fmt: skip


def _expected_count(model: str, method: str) -> int:
    """Trainable parameters worked out by hand from the tiny presets' shapes (not from the code under test).

    tiny-t5: d_model 128, inner attention 4x32 = 128, gated feed-forward (wi_0, wi_1: 128 -> 256, wo), 2 encoder
    + 2 decoder layers (6 attention blocks: 2 encoder self, 2 decoder self, 2 cross), 12 layer norms of 128.
    tiny-llama: hidden 128, 4 query heads and 2 key/value heads of 32 (k/v width 64), intermediate 256, 3 layers,
    7 RMS norms. tiny-gpt2: n_embd 128, 3 layers, MLP 512, Conv1D projections with biases, 7 layer norms with
    biases.
    """
    d = 128
    adapter = 2 * d * 64 + d + 64  # one bottleneck adapter of size 64
    pfeiffer = 2 * d * 8 + d + 8  # Pfeiffer's default bottleneck: 128 // 16 = 8
    phm = 2 * (d + 4) + d + 4  # one Compacter adapter: m = 128 // 32 = 4, n = 4, rank 1, with biases
    # P-tuning's prompt encoder (the paper's): a 2-layer bidirectional LSTM of width h = d (per direction and layer
    # 4h x input + 4h x h weights and two 4h biases; the second layer's input is 2h), then Linear 2h -> 2h, ReLU,
    # Linear 2h -> d
    lstm = (
        2 * (4 * d * d + 4 * d * d + 8 * d)
        + 2 * (4 * d * 2 * d + 4 * d * d + 8 * d)
        + (2 * d * 2 * d + 2 * d)
        + (2 * d * d + d)
    )

    def prefix(layers: int, width: int) -> int:  # Li & Liang's MLP (h = 512) from an embedding of 8 tokens
        return 8 * width + (width * 512 + 512) + (512 * 2 * layers * width + 2 * layers * width)

    if model == "tiny-gpt2":
        layers, ff, norms = 3, 512, 7 * 2 * d
        return {
            "lora": layers * 8 * (d + 3 * d),  # the fused c_attn, 128 -> 384
            "prompt": 20 * d,
            "prefix": prefix(layers, d),
            "ia3": layers * (3 * d + ff),  # c_attn output, mlp.c_proj input
            "bitfit": layers * (3 * d + d + ff + d + 2 * d) + d,  # every existing bias, layer norms' included
            "adapter_houlsby": layers * 2 * adapter + norms,
            "adapter_pfeiffer": layers * pfeiffer,
            "adapter_parallel": layers * adapter,
            "compacter": 4**3 + layers * 2 * phm + norms,
            "compacter_pp": 4**3 + layers * phm + norms,
            "dora": layers * (8 * (d + 3 * d) + 3 * d),
            "adalora": layers * 12 * ((d + 3 * d + 1) + (d + d + 1) + (d + ff + 1) + (ff + d + 1)),
            "vera": layers * (256 + 3 * d),
            "ptuning": 20 * d + lstm,
            "ia3_ff": layers * ff,
            "ln_tuning": norms,
        }.get(method, -1)
    if model == "tiny-t5":
        attn_blocks, ffn_blocks, dec_layers, ff, norms = 6, 4, 2, 256, 12 * d
        return {
            "lora": 8 * (d + d) * 2 * attn_blocks,  # r (d_in + d_out) on q and v of every attention block
            "prompt": 20 * d,  # one soft prompt of 20 vectors
            "prefix": prefix(dec_layers, d),  # keys and values of the decoder layers
            "ia3": attn_blocks * 2 * d + ffn_blocks * ff,  # k, v outputs; wo input
            # zero biases on q k v o, wi_0, wi_1, wo and on every layer norm
            "bitfit": attn_blocks * 4 * d + ffn_blocks * (2 * ff + d) + norms,
            # no cross-attention adapter; the layer norms train too
            "adapter_houlsby": (attn_blocks - 2 + ffn_blocks) * adapter + norms,
            "adapter_pfeiffer": ffn_blocks * pfeiffer,
            "adapter_parallel": ffn_blocks * adapter,  # beside each feed-forward block
            "compacter": 4**3 + (attn_blocks - 2 + ffn_blocks) * phm + norms,  # n^3 shared + 8 adapters + norms
            "compacter_pp": 4**3 + ffn_blocks * phm + norms,
            "dora": attn_blocks * 2 * (8 * (d + d) + d),  # LoRA on q, v plus a magnitude per output
            # every weight matrix: q, k, v, o and wi_0, wi_1, wo; init_r (d_in + d_out + 1) each
            "adalora": 12 * (attn_blocks * 4 * (d + d + 1) + ffn_blocks * 3 * (d + ff + 1)),
            "loha": attn_blocks * 2 * 2 * 8 * (d + d),  # two rank-8 factor pairs on q, v
            # 128 = 8 x 16: w1 (8 x 8) plus w2 (16 x 16), full because r = 8 >= 16 / 2
            "lokr": attn_blocks * 2 * (8 * 8 + 16 * 16),
            "vera": attn_blocks * 2 * (256 + d),  # lambda_d (r = 256) and lambda_b (d_out) on q, v
            "ptuning": 20 * d + lstm,
            "ia3_ff": ffn_blocks * ff,
            "ln_tuning": (2 * 2 + 2 * 3 + 2) * d,  # 2 norms per encoder block, 3 per decoder block, 2 final
        }.get(method, -1)
    layers, kv, ff, norms = 3, 64, 256, 7 * d
    return {
        "lora": layers * 8 * ((d + d) + (d + kv)),
        "prompt": 20 * d,
        "prefix": prefix(layers, kv),
        "ia3": layers * (kv + kv + ff),
        "bitfit": layers * (d + kv + kv + d + ff + ff + d) + norms,
        "adapter_houlsby": layers * 2 * adapter + norms,
        "adapter_pfeiffer": layers * pfeiffer,
        "adapter_parallel": layers * adapter,
        "compacter": 4**3 + layers * 2 * phm + norms,
        "compacter_pp": 4**3 + layers * phm + norms,
        "dora": layers * (8 * (d + d) + d + 8 * (d + kv) + kv),
        # every weight matrix: q, k, v, o, gate, up, down
        "adalora": layers * 12 * (2 * (d + d + 1) + 2 * (d + kv + 1) + 3 * (d + ff + 1)),
        "loha": layers * 2 * 8 * ((d + d) + (d + kv)),
        # q: 128x128 -> w1 8x8 + w2 16x16; v: 64x128 -> w1 8x8 + w2 8x16 (full: r = 8 >= 16 / 2)
        "lokr": layers * ((8 * 8 + 16 * 16) + (8 * 8 + 8 * 16)),
        "vera": layers * ((256 + d) + (256 + kv)),
        "ptuning": 20 * d + lstm,
        "ia3_ff": layers * ff,
        "ln_tuning": (2 * layers + 1) * d,
    }.get(method, -1)


@pytest.mark.parametrize(("model", "method"), _grouped([c for c in CASES if c[1] != "full"]))
def test_trainable_count_matches_hand_computed_formula(trained, model, method):
    expected = _expected_count(model, method)
    assert expected > 0, f"no formula for {method}; add one"
    assert trained[(model, method)]["counts"][0] == expected


@pytest.mark.parametrize(("model", "method"), _grouped(CASES))
def test_shared_prefix_generation_gives_the_same_predictions(trained, model, method):
    """Encoding a task's shared prompt prefix once (decoder-only) changes no prediction; it is used by every
    method except those with virtual tokens, and never for encoder-decoder models."""
    plain, shared, used = trained[(model, method)]["shared_prefix"]
    assert sum(len(ids) for ids, _ in plain) == len(SHARED_INPUTS) and len(shared) == len(plain)
    for (plain_ids, plain_logits), (shared_ids, shared_logits) in zip(plain, shared, strict=True):
        assert shared_ids == plain_ids
        assert len(shared_logits) == len(plain_logits) > 0
        for a, b in zip(plain_logits, shared_logits, strict=True):
            # Float noise only (batch-1 prefix vs full-batch GEMMs, amplified by the scaled-up weights: up to ~1e-4
            # of the logits' scale, for IA3 on GPT-2); a wrong mask or position moves logits by O(1).
            torch.testing.assert_close(b, a, atol=3e-4 * a.abs().max().item(), rtol=1e-4)
    virtual_tokens = method in ("prompt", "prefix", "ptuning")
    assert used == (model in ("tiny-llama", "tiny-gpt2") and not virtual_tokens)
