"""Predictions are decoded as Tk-Instruct decoded them (transformers 4.18: clean-up of tokenization spaces on)."""

from __future__ import annotations

import torch
from transformers import ByT5Tokenizer

from peftbench.data.tokenize import Features
from peftbench.evaluation.generate import clean_up_tokenization, generate_predictions
from peftbench.evaluation.metrics import exact_match

TEXTS = ["do n't", "I 'm here , ok .", "it 's what we 've got ! right ?", "they 're ' quoted ' .", "plain text"]


def test_clean_up_matches_transformers_own_clean_up():
    """transformers' ``clean_up_tokenization`` is the reference (the same ten replacements since 4.x)."""
    tokenizer = ByT5Tokenizer()
    for text in TEXTS:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert clean_up_tokenization(text) == tokenizer.decode(ids, clean_up_tokenization_spaces=True)
    assert clean_up_tokenization("do n't") == "don't"


class _Replay(torch.nn.Module):
    """A stand-in model whose ``generate`` returns fixed token ids (the decoding step alone is under test)."""

    def __init__(self, outputs: torch.Tensor) -> None:
        super().__init__()
        self.outputs = outputs

    def generate(self, input_ids, **kwargs):
        return self.outputs[: input_ids.shape[0]]


def test_predictions_are_cleaned_up_as_tk_instruct_did():
    tokenizer = ByT5Tokenizer()
    new = [tokenizer("do n't .")["input_ids"], tokenizer("yes")["input_ids"]]
    width = max(map(len, new))
    outputs = torch.tensor([[0, *ids, *[0] * (width - len(ids))] for ids in new])  # decoder start, text, EOS, pad
    feats = [Features(str(i), "t", "c", [5 + i, 1], [1], ("don't",)) for i in range(2)]
    records = generate_predictions(
        _Replay(outputs), tokenizer, feats, None, batch_size=2, max_new_tokens=8, encoder_decoder=True,
        progress=False, batch_by_tokens=False,
    )  # fmt: skip
    predictions = sorted(r["prediction"] for r in records)
    assert predictions == ["don't.", "yes"]
    assert exact_match("don't.", "don't") == 1.0  # the official scorer on Tk-Instruct's decoding
    assert exact_match("do n't .", "don't") == 0.0  # ... and on the raw decoding
