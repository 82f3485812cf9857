"""Training throughput: peftbench's loop vs a bare PyTorch loop and vs a plain transformers Trainer + peft.

    python bench/train_bench.py [--quick] [--device cuda]

One epoch of LoRA on the real SuperNI training prompts of ../shared/data/superni-mini (up to 1024 tokens),
tiny random T5, per-device batch 8, from the same initial weights in each case:

- peftbench: `fit` (accelerate, length-grouped batches, loss summed on device, checkpoints off);
- the floor: a bare forward / backward / step loop over the very same batches;
- a plain `Seq2SeqTrainer` with a peft model, as a user would write it: shuffled examples padded to the
  longest of each batch by `DataCollatorForSeq2Seq`.

Throughput is real (non-padding) source + target tokens per second. Goals: peftbench's time per real
token <= 1.02x the floor's, and >= 1.3x the Trainer's real tokens/s.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch
from _common import parser, report, sync

from peftbench.configure import config_from_dict
from peftbench.recipe.setup import build_model, prepare_data
from peftbench.training.trainer import Schedule, epoch_loader, fit

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "superni-mini"


def _setup(quick: bool, device: str):
    cfg = config_from_dict({
        "model": {"name": "tiny-t5"}, "method": {"name": "lora"}, "seed": 0,
        "data": {"data_dir": str(DATA), "split": "mini", "max_train_instances_per_task": 8 if quick else 30,
                 "max_eval_instances_per_task": 1, "max_source_length": 1024, "max_target_length": 64},
        "train": {"num_epochs": 1, "per_device_batch_size": 8, "learning_rate": 1e-3, "logging_steps": 10,
                  "save_steps": 0, "eval_steps": 0},
    })  # fmt: skip
    torch.manual_seed(0)
    model, tokenizer = build_model(cfg)
    features = prepare_data(cfg, tokenizer, model).train
    return cfg, tokenizer, features


def _fresh(cfg, device):
    torch.manual_seed(0)
    model, _ = build_model(cfg)
    return model.to(device)


def run_peftbench(cfg, features, device) -> float:
    from accelerate import Accelerator

    model = _fresh(cfg, device)
    accelerator = Accelerator(cpu=device == "cpu")
    start = time.perf_counter()
    fit(model, features, cfg.train, Schedule.of(cfg.train), accelerator, seed=cfg.seed,
        pad_id=0, encoder_decoder=True, progress=False)  # fmt: skip
    sync(device)
    return time.perf_counter() - start


def run_bare(cfg, features, device) -> float:
    from transformers import get_scheduler

    model = _fresh(cfg, device)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.train.learning_rate, weight_decay=0.0)
    loader = epoch_loader(features, cfg.train, cfg.seed, 0, 0, True)
    sched = get_scheduler("linear", opt, num_warmup_steps=round(0.03 * len(loader)), num_training_steps=len(loader))
    start = time.perf_counter()
    for batch in loader:
        batch = {k: v.to(device) for k, v in batch.items()}
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
    sync(device)
    return time.perf_counter() - start


def run_trainer(cfg, tokenizer, features, device, work: Path) -> float:
    import datasets
    from transformers import DataCollatorForSeq2Seq, Seq2SeqTrainer, Seq2SeqTrainingArguments

    model = _fresh(cfg, device)
    rows = [{"input_ids": f.prompt_ids, "attention_mask": [1] * len(f.prompt_ids), "labels": f.target_ids}
            for f in features]  # fmt: skip
    args = Seq2SeqTrainingArguments(
        output_dir=str(work), per_device_train_batch_size=8, num_train_epochs=1, learning_rate=1e-3,
        lr_scheduler_type="linear", warmup_steps=round(0.03 * -(-len(rows) // 8)), logging_steps=10,
        save_strategy="no", report_to=[],
        use_cpu=device == "cpu", seed=0, dataloader_num_workers=0, disable_tqdm=True,
    )  # fmt: skip
    collator = DataCollatorForSeq2Seq(tokenizer, model=model, padding="longest")
    trainer = Seq2SeqTrainer(model=model, args=args, train_dataset=datasets.Dataset.from_list(rows),
                             data_collator=collator)  # fmt: skip
    start = time.perf_counter()
    trainer.train()
    sync(device)
    return time.perf_counter() - start


def main() -> list[str]:
    import tempfile

    args = parser(__doc__.splitlines()[0]).parse_args()
    if not (DATA / "tasks").is_dir():
        print(f"train: skipped, SuperNI sample not found at {DATA}", file=sys.stderr)
        return []
    cfg, tokenizer, features = _setup(args.quick, args.device)
    real = sum(len(f.prompt_ids) + len(f.target_ids) for f in features)
    with tempfile.TemporaryDirectory() as work:
        times = {"floor": [], "ours": [], "trainer": []}
        for _ in range(1 if args.quick else 3):  # interleaved, best of each
            times["floor"].append(run_bare(cfg, features, args.device))
            times["ours"].append(run_peftbench(cfg, features, args.device))
            times["trainer"].append(run_trainer(cfg, tokenizer, features, args.device, Path(work)))
    floor, ours, trainer = (min(times[k]) for k in ("floor", "ours", "trainer"))
    name = f"train tiny-t5 lora ({len(features)} examples, {real:,} real tokens)"
    return [
        report(name, real / ours, "real tokens/s", ours / floor, f"bare loop on the same batches "
               f"({real / floor:,.0f}/s), time per real token", goal="<= 1.02x"),
        report(name, real / ours, "real tokens/s", trainer / ours, f"plain Seq2SeqTrainer + peft "
               f"({real / trainer:,.0f}/s)", goal=">= 1.3x"),
    ]  # fmt: skip


if __name__ == "__main__":
    main()
