"""Generation over an evaluation split: length-sorted batches, greedy by default, appended as they finish."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase

from peftbench.data.collate import Features, generation_batch, sorted_batches


@torch.no_grad()
def generate_predictions(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    features: Sequence[Features],
    out_path: str | Path,
    *,
    batch_size: int,
    max_new_tokens: int,
    num_beams: int = 1,
    encoder_decoder: bool,
    device: torch.device | str = "cpu",
    progress: bool = True,
    desc: str = "evaluate",
) -> list[dict]:
    """Generates a prediction for every example and appends it to ``out_path`` (JSONL) batch by batch.

    Lines are ``{"id", "task", "category", "prediction", "references"}`` — the format ``peftbench score``
    reads. Each batch's lines are flushed and fsynced before the next batch starts.
    """
    model.eval()
    lengths = [len(f.prompt_ids) for f in features]
    batches = list(sorted_batches(lengths, batch_size))
    records: list[dict] = []
    pad_id = tokenizer.pad_token_id
    with open(out_path, "a", encoding="utf-8") as out:
        for idx in tqdm(batches, desc=desc, unit="batch", disable=not progress):
            chunk = [features[i] for i in idx]
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
            out.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in lines))
            out.flush()
            os.fsync(out.fileno())
            records.extend(lines)
    return records


def _record(f: Features, prediction: str) -> dict:
    return {
        "id": f.id,
        "task": f.task,
        "category": f.category,
        "prediction": prediction,
        "references": list(f.references),
    }
