"""Finished sequences leave the batch (``evaluation/greedy.py``) and the tokens are ``generate``'s.

The end-of-sequence id is chosen among the tokens the model actually produces, so that the rows of a batch
end at different steps (a random tiny model rarely produces its real EOS): each batch is decoded by
``generate`` (every row until the longest ends) and by the early-exit loop, with the plain prompt batch, the
shared-prefix KV cache (decoder-only) and peft's virtual-token methods, and the token ids must be equal.
"""

from __future__ import annotations

import collections

import pytest
import torch

from peftbench.configure import config_from_dict
from peftbench.data.collate import generation_batches
from peftbench.evaluation import greedy
from peftbench.evaluation.generate import _base_model, encode_prefix, generate_ids
from peftbench.models import is_encoder_decoder
from peftbench.recipe.contract import decisive, generation_features, perturb
from peftbench.recipe.setup import build_model

NEW_TOKENS = 8


def _build(model_name: str, method: str):
    torch.manual_seed(0)
    model, tokenizer = build_model(config_from_dict({"model": {"name": model_name}, "method": {"name": method}}))
    model.eval()
    decisive(model)
    perturb(model, seed=1)
    return model, tokenizer


def _decode(model, feats, batch, eos: int, pad: int, enc_dec: bool, early_exit: bool) -> torch.Tensor:
    chunk = [feats[i] for i in batch.indices]
    cache = encode_prefix(model, chunk[0].prompt_ids[: batch.prefix], "cpu") if batch.prefix else None
    return generate_ids(
        model, chunk, prefix=batch.prefix, prefix_cache=cache, pad_id=pad, eos_id=eos, max_new_tokens=NEW_TOKENS,
        num_beams=1, encoder_decoder=enc_dec, device="cpu", early_exit=early_exit,
    )  # fmt: skip


@pytest.mark.parametrize("method", ["lora", "prompt", "prefix", "full"])
@pytest.mark.parametrize("model_name", ["tiny-t5", "tiny-llama", "tiny-gpt2"])
def test_early_exit_gives_generates_tokens_with_rows_ending_at_different_steps(model_name, method):
    model, tokenizer = _build(model_name, method)
    enc_dec = is_encoder_decoder(model)
    assert greedy.early_exit_supported(_base_model(model), 1)
    feats = generation_features(tokenizer, enc_dec) * 2  # 10 prompts: batches of several rows
    share = not enc_dec and method in ("lora", "full")
    plan = generation_batches(feats, 4, False, NEW_TOKENS, share_prefix=share)
    assert not share or any(b.prefix for b in plan), "the shared-prefix path is not exercised"
    pad = tokenizer.pad_token_id
    # As EOS, the token whose first occurrence is at the most different steps across rows (or never).
    free = [_decode(model, feats, b, -1, pad, enc_dec, early_exit=True) for b in plan]  # -1: never ends
    rows = [row.tolist() for out in free for row in out]
    first = collections.defaultdict(set)
    for token in {t for row in rows for t in row}:
        first[token] = {row.index(token) if token in row else -1 for row in rows}
    eos = max(first, key=lambda t: (len(first[t]), -t))
    steps_seen = set()
    for batch, out in zip(plan, free, strict=True):
        plain = _decode(model, feats, batch, eos, pad, enc_dec, early_exit=False)
        fast = _decode(model, feats, batch, eos, pad, enc_dec, early_exit=True)
        if enc_dec:
            plain = plain[:, 1:]  # generate's output starts with the decoder start token
        assert torch.equal(fast, plain), f"{model_name} {method}: {fast.tolist()} != {plain.tolist()}"
        steps_seen |= {int((row == eos).nonzero()[0]) if (row == eos).any() else -1 for row in out}
    assert len(steps_seen) > 1, "every row ended at the same step: the test proves nothing"
