"""Generation over an evaluation split: length-sorted batches, greedy by default, appended as they finish.

Resumable: predictions already in the output file are kept batch by batch (a batch counts as done only
when all of its lines are there, so a half-written batch is generated again), and a suspension signal
stops the loop after the current batch.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase

from peftbench.data.collate import Features, generation_batch, sorted_batches
from peftbench.io import atomic_write_text
from peftbench.training.preemption import Preempted, StopFlag


def _existing_predictions(path: Path) -> dict[str, dict]:
    """Valid lines already written, by id (a torn last line from a crash is ignored)."""
    done: dict[str, dict] = {}
    if not path.is_file():
        return done
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and isinstance(record.get("id"), str):
            done[record["id"]] = record
    return done


@torch.no_grad()
def generate_predictions(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    features: Sequence[Features],
    out_path: str | Path | None,
    *,
    batch_size: int,
    max_new_tokens: int,
    num_beams: int = 1,
    encoder_decoder: bool,
    device: torch.device | str = "cpu",
    progress: bool = True,
    desc: str = "evaluate",
    stop: StopFlag | None = None,
    batch_by_tokens: bool = True,
) -> list[dict]:
    """Generates a prediction for every example, appending to ``out_path`` (JSONL) batch by batch.

    Lines are ``{"id", "task", "category", "prediction", "references"}`` — the format ``peftbench score``
    reads. Each batch's lines are flushed and fsynced before the next batch starts. Returns the records in
    batch order (the same order whether or not the evaluation was interrupted). With ``out_path=None``
    nothing is written (validation during training). Batches are formed from length-sorted prompts; with
    ``batch_by_tokens`` later (shorter) batches hold more examples, within the first batch's token budget.
    """
    was_training = model.training
    model.eval()
    out_path = Path(out_path) if out_path is not None else None
    lengths = [len(f.prompt_ids) for f in features]
    batches = list(sorted_batches(lengths, batch_size, by_tokens=batch_by_tokens, extra=max_new_tokens))
    existing = _existing_predictions(out_path) if out_path is not None else {}
    done_ids = {features[i].id for idx in batches if all(features[i].id in existing for i in idx) for i in idx}
    if (
        out_path is not None and existing and set(existing) != done_ids
    ):  # drop lines of half-written batches and stray records
        kept = [existing[features[i].id] for idx in batches for i in idx if features[i].id in done_ids]
        atomic_write_text(out_path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in kept))
    pause = float(os.environ.get("PEFTBENCH_TEST_SLOW_STEPS", "0") or 0)  # test-only, see training
    records: list[dict] = []
    pad_id = tokenizer.pad_token_id
    todo = sum(1 for idx in batches if features[idx[0]].id not in done_ids)
    bar = tqdm(total=len(batches), initial=len(batches) - todo, desc=desc, unit="batch", disable=not progress)
    with open(out_path, "a", encoding="utf-8") if out_path is not None else contextlib.nullcontext() as out:
        for idx in batches:
            chunk = [features[i] for i in idx]
            if chunk[0].id in done_ids:
                records.extend(existing[f.id] for f in chunk)
                continue
            batch = {k: v.to(device) for k, v in generation_batch(chunk, pad_id, encoder_decoder).items()}
            output = model.generate(
                **batch,
                max_new_tokens=max_new_tokens,
                num_beams=num_beams,
                do_sample=False,
                pad_token_id=pad_id,
                eos_token_id=tokenizer.eos_token_id,
            )
            if not encoder_decoder:  # decoder-only output = prompt + continuation
                output = output[:, batch["input_ids"].shape[1] :]
            texts = tokenizer.batch_decode(output, skip_special_tokens=True)
            lines = [_record(f, text.strip()) for f, text in zip(chunk, texts, strict=True)]
            if out is not None:
                out.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in lines))
                out.flush()
                os.fsync(out.fileno())
            records.extend(lines)
            bar.update(1)
            if pause:
                time.sleep(pause)
            if stop is not None and stop.requested and idx is not batches[-1]:
                raise Preempted("evaluation")
    bar.close()
    if was_training:
        model.train()
    return records


def _record(f: Features, prediction: str) -> dict:
    return {
        "id": f.id,
        "task": f.task,
        "category": f.category,
        "prediction": prediction,
        "references": list(f.references),
    }
