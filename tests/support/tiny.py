"""A tiny preset model in eval mode and a fixed batch for it (padded rows; T5 gets decoder inputs)."""

from __future__ import annotations

import torch

from peftbench.config import ModelConfig
from peftbench.models import is_encoder_decoder, load_model


def tiny_model(name: str):
    torch.manual_seed(0)
    return load_model(ModelConfig(name=name)).eval()


def tiny_batch(model) -> dict[str, torch.Tensor]:
    ids = torch.tensor([[5, 17, 42, 9, 1], [7, 7, 33, 1, 1]])
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    if is_encoder_decoder(model):
        batch["decoder_input_ids"] = torch.tensor([[0, 11, 12], [0, 13, 14]])
    return batch
