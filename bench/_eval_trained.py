"""Evaluation throughput on trained models, whose answers end early: ``bench/eval_bench.py --mode trained`` (this
module is its library, not a script).

The bench builds its own trained model, once (cached under ``$PEFTBENCH_CACHE/bench/eval-trained``): the demo's
data, the demo's pre-trained tiny base (``peftbench demo``'s, cached in ``bases/``), and a LoRA adapter
instruction-tuned on the demo's training tasks. It then greedy-decodes the demo's unseen test tasks three ways,
asserting identical predictions:
- Tk-Instruct style: file order, a fixed batch, ``generate`` (every row decoded until the longest ends);
- peftbench with finished sequences kept in the batch (``early_exit=False``: sorting and token budgets only);
- peftbench as it runs (finished sequences leave the batch).
"""

from __future__ import annotations

import dataclasses

import torch
from _common import best_time, report, sync
from _tk_instruct import tk_instruct_style

from peftbench.demo.runner import method_config, pretrained_base
from peftbench.demodata import DATA, generate_demo_data
from peftbench.evaluation.generate import clean_up_tokenization, generate_predictions
from peftbench.io import cache_dir
from peftbench.recipe.run import run_experiment
from peftbench.recipe.rundir import load_trainable
from peftbench.recipe.runfiles import WEIGHTS_FILE
from peftbench.recipe.setup import build_model, prepare_data

MAX_NEW_TOKENS = 128
"""Tk-Instruct's generation limit on SuperNI (its max_target_length)."""
BATCH = 16


def trained_model(model_name: str, quick: bool, steps: int):
    """The demo base with an instruction-tuned LoRA adapter, and the demo test split's features."""
    work = cache_dir() / "bench" / "eval-trained"
    data_dir = generate_demo_data(work / "data", **DATA)
    base = pretrained_base(model_name, data_dir, quick, progress=False)
    cfg = method_config("lora", base, data_dir, work / "runs", quick)
    cfg.run_name = f"lora-{model_name}-{10 if quick else steps}{'-quick' if quick else ''}"
    cfg.train = dataclasses.replace(cfg.train, max_steps=10 if quick else steps)
    cfg.data = dataclasses.replace(cfg.data, max_eval_instances_per_task=10 if quick else 100)
    result = run_experiment(cfg, progress=False, quiet=True)  # a finished run is reused
    model, tokenizer = build_model(cfg)
    load_trainable(model, result.run_dir / WEIGHTS_FILE)
    features = prepare_data(cfg, tokenizer, model, progress=False).test
    return model, tokenizer, features


def tk_style(model, tokenizer, features, device, enc_dec: bool) -> list[str]:
    texts = tk_instruct_style(model, tokenizer, features, BATCH, MAX_NEW_TOKENS, enc_dec, device)
    return [clean_up_tokenization(t).strip() for t in texts]


def measure_trained(model_name: str, device: str, quick: bool, steps: int = 600) -> list[str]:
    torch.manual_seed(0)
    model, tokenizer, features = trained_model(model_name, quick, steps)
    model.to(device).eval()
    enc_dec = bool(model.config.is_encoder_decoder)

    def ours(early_exit: bool):
        def run():
            records = generate_predictions(
                model, tokenizer, features, None, batch_size=BATCH, max_new_tokens=MAX_NEW_TOKENS,
                encoder_decoder=enc_dec, device=device, progress=False, early_exit=early_exit,
            )  # fmt: skip
            sync(device)
            return {r["id"]: r["prediction"] for r in records}

        return run

    def theirs():
        texts = tk_style(model, tokenizer, features, device, enc_dec)
        sync(device)
        return {f.id: t for f, t in zip(features, texts, strict=True)}

    repeat = 1 if quick else 2
    base_t, base = best_time(theirs, repeat)
    kept_t, kept = best_time(ours(False), repeat)
    fast_t, fast = best_time(ours(True), repeat)
    for name, got in (("early exit", fast), ("finished kept", kept)):
        differ = sum(got[k] != base[k] for k in base)
        assert differ == 0, f"{model_name} {name}: {differ} of {len(base)} predictions differ from Tk-Instruct style"
    n = len(features)
    new = [len(tokenizer(fast[f.id], add_special_tokens=False)["input_ids"]) + 1 for f in features]  # + EOS
    longest = [max(new[i : i + BATCH]) for i in range(0, n, BATCH)]
    prefix = f"eval trained {model_name}+lora ({n} demo test prompts)"
    padded = sum(longest) * BATCH / max(sum(new), 1)
    return [
        report(
            f"{prefix} answer length",
            sum(new) / n,
            "tokens",
            padded,
            f"the longest of its file-order batch ({max(new)} at most), longer",
        ),
        report(
            f"{prefix} finished sequences leave the batch",
            n / fast_t,
            "examples/s",
            kept_t / fast_t,
            f"the same batches with finished sequences kept ({n / kept_t:.1f}/s); identical predictions",
        ),
        report(
            f"{prefix}",
            n / fast_t,
            "examples/s",
            base_t / fast_t,
            f"Tk-Instruct-style file-order batches ({n / base_t:.1f}/s); identical predictions",
            goal=">= 3x",
        ),
    ]
