"""Tk-Instruct's evaluation loop, the baseline of ``eval_bench.py``: file order, a fixed batch, ``generate``."""

from __future__ import annotations

import torch

from peftbench.data.collate import generation_batch


def tk_instruct_style(model, tokenizer, features, batch_size, max_new_tokens, encoder_decoder, device) -> list[str]:
    """Batches in file order, each padded to its longest prompt (as Tk-Instruct's evaluation loop does)."""
    texts = []
    for i in range(0, len(features), batch_size):
        chunk = features[i : i + batch_size]
        batch = {k: v.to(device) for k, v in generation_batch(chunk, tokenizer.pad_token_id, encoder_decoder).items()}
        with torch.no_grad():
            out = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                                 pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)  # fmt: skip
        if not encoder_decoder:
            out = out[:, batch["input_ids"].shape[1] :]
        texts += [t.strip() for t in tokenizer.batch_decode(out, skip_special_tokens=True)]
    return texts
