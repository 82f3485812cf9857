"""From token ids to model inputs: batching and padding, for training and for generation.

Encoder-decoder: ``input_ids`` = prompt, ``labels`` = target + EOS.
Decoder-only: ``input_ids`` = prompt + target + EOS and ``labels`` masks the prompt with -100, so the
loss is computed on the target tokens only (training on the prompt too is what cost alpaca-lora 11
ROUGE-L points on SuperNI). Generation pads on the left for decoder-only models.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from peftbench.data.tokenize import IGNORE_INDEX, Features


def _pad(rows: list[list[int]], value: int, left: bool = False) -> torch.Tensor:
    width = max(len(r) for r in rows)
    padded = [([value] * (width - len(r)) + r) if left else (r + [value] * (width - len(r))) for r in rows]
    return torch.tensor(padded, dtype=torch.long)


def training_batch(features: Sequence[Features], pad_id: int, encoder_decoder: bool) -> dict[str, torch.Tensor]:
    """A padded training batch (right padding; labels are -100 on padding and, decoder-only, on prompts)."""
    if encoder_decoder:
        inputs = [f.prompt_ids for f in features]
        return {
            "input_ids": _pad(inputs, pad_id),
            "attention_mask": _pad([[1] * len(r) for r in inputs], 0),
            "labels": _pad([f.target_ids for f in features], IGNORE_INDEX),
        }
    inputs = [f.prompt_ids + f.target_ids for f in features]
    labels = [[IGNORE_INDEX] * len(f.prompt_ids) + f.target_ids for f in features]
    return {
        "input_ids": _pad(inputs, pad_id),
        "attention_mask": _pad([[1] * len(r) for r in inputs], 0),
        "labels": _pad(labels, IGNORE_INDEX),
    }


def generation_batch(features: Sequence[Features], pad_id: int, encoder_decoder: bool) -> dict[str, torch.Tensor]:
    """A padded prompt batch for ``generate`` (left padding for decoder-only models)."""
    inputs = [f.prompt_ids for f in features]
    left = not encoder_decoder
    return {
        "input_ids": _pad(inputs, pad_id, left=left),
        "attention_mask": _pad([[1] * len(r) for r in inputs], 0, left=left),
    }


def epoch_target(f: Features, seed: int, epoch: int) -> list[int]:
    """The target ``f`` trains on in ``epoch``: one of ``f.target_options`` drawn afresh each epoch, as
    Tk-Instruct's collator draws ``random.choice(output)`` per batch, but deterministic in (training seed,
    epoch, instance id) so that a resumed run trains on the same targets; ``target_ids`` when there is
    only one."""
    options = f.target_options
    if len(options) < 2:
        return f.target_ids
    return options[random.Random(f"{seed}:{epoch}:{f.id}").randrange(len(options))]


def with_epoch_targets(features: Sequence[Features], seed: int, epoch: int) -> list[Features]:
    """The features with ``target_ids`` set to each one's target of ``epoch`` (see :func:`epoch_target`)."""
    return [
        dataclasses.replace(f, target_ids=epoch_target(f, seed, epoch)) if len(f.target_options) > 1 else f
        for f in features
    ]


def training_length(f: Features, encoder_decoder: bool) -> int:
    """The cost proxy used to group batches: the longest sequence the example contributes."""
    return max(len(f.prompt_ids), len(f.target_ids)) if encoder_decoder else len(f.prompt_ids) + len(f.target_ids)


def length_grouped_batches(
    lengths: Sequence[int], batch_size: int, seed: int, epoch: int, group_by_length: bool = True, mega: int = 50
) -> list[list[int]]:
    """The epoch's batches of example indices, deterministic in (seed, epoch).

    Indices are shuffled; with ``group_by_length`` they are cut into mega-batches of ``mega`` batches, each
    sorted by length and split, so a batch holds similar lengths (little padding), and the batch order is
    shuffled again so that lengths do not drift through the epoch (the idea of HF's LengthGroupedSampler).
    """
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(len(lengths), generator=g).tolist()
    if not group_by_length:
        return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    batches: list[list[int]] = []
    span = batch_size * mega
    for start in range(0, len(order), span):
        chunk = sorted(order[start : start + span], key=lambda i: -lengths[i])
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    perm = torch.randperm(len(batches), generator=g).tolist()
    return [batches[i] for i in perm]


def sorted_batches(
    lengths: Sequence[int], batch_size: int, by_tokens: bool = False, extra: int = 0, budget: int | None = None
) -> Iterator[list[int]]:
    """Evaluation batches: indices sorted longest first (out-of-memory shows up on the first batch).

    With ``by_tokens``, a batch of shorter sequences holds more of them: each batch takes as many as fit in
    the token budget of the first one, ``batch_size x (longest + extra)`` (``extra`` = tokens generated per
    example, so the budget bounds the KV cache too), or in ``budget`` when given; never fewer than
    ``batch_size``.
    """
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    if not by_tokens or not order:
        for i in range(0, len(order), batch_size):
            yield order[i : i + batch_size]
        return
    if budget is None:
        budget = batch_size * (lengths[order[0]] + extra)
    start = 0
    while start < len(order):
        size = max(batch_size, budget // (lengths[order[start]] + extra))  # the batch's longest is its first
        yield order[start : start + size]
        start += size


@dataclass(frozen=True)
class GenerationBatch:
    """Indices of one evaluation batch and the prompt prefix its examples share (0 = none)."""

    indices: list[int]
    prefix: int = 0
    """Leading prompt tokens identical in every example of the batch (encoded once, then reused)."""


MIN_SHARED_PREFIX = 16
"""Shorter shared prefixes are not worth a separate prefix pass."""


def generation_batches(
    features: Sequence[Features],
    batch_size: int,
    by_tokens: bool,
    extra: int,
    share_prefix: bool = False,
    min_task_examples: int | None = None,
) -> list[GenerationBatch]:
    """The evaluation batches, longest prompts first (see :func:`sorted_batches`).

    With ``share_prefix``, the examples of each task are batched together when their prompts share a
    prefix of at least :data:`MIN_SHARED_PREFIX` tokens (SuperNI: the definition and the instance header,
    about three quarters of a prompt), so that the prefix is encoded once per task; the batches of a task
    are consecutive. Only a task with at least ``min_task_examples`` examples (default: half a batch, at least
    2) is batched on its own: a task's
    batches decode step by step like any other, so many small per-task batches would cost more decoding
    steps than the shared prefix saves (a split of 12 tasks x 2 examples decoded 4x as many steps, issue 17).
    Examples of the other tasks are batched across tasks as usual. Token budgets are those of the whole split.
    """
    lengths = [len(f.prompt_ids) for f in features]
    if not lengths:
        return []
    budget = batch_size * (max(lengths) + extra)
    minimum = min_task_examples if min_task_examples is not None else max(2, batch_size // 2)
    groups: dict[str, list[int]] = {}
    for i, f in enumerate(features):
        groups.setdefault(f.task if share_prefix else "", []).append(i)
    # Units are sorted longest first: a task sharing a prefix (all its batches, kept together) or one batch.
    units: list[tuple[tuple[int, int], list[GenerationBatch]]] = []
    rest: list[int] = []
    for members in groups.values():
        prefix = _shared_prefix([features[i].prompt_ids for i in members]) if share_prefix else 0
        if len(members) < minimum or prefix < MIN_SHARED_PREFIX:
            rest += members
            continue
        batches = [
            GenerationBatch([members[j] for j in b], prefix)
            for b in sorted_batches([lengths[i] for i in members], batch_size, by_tokens, extra, budget)
        ]
        units.append(((-lengths[batches[0].indices[0]], members[0]), batches))
    rest.sort()
    for b in sorted_batches([lengths[i] for i in rest], batch_size, by_tokens, extra, budget):
        idx = [rest[j] for j in b]
        units.append(((-lengths[idx[0]], idx[0]), [GenerationBatch(idx)]))
    units.sort(key=lambda unit: unit[0])
    return [batch for _, batches in units for batch in batches]


def _shared_prefix(rows: Sequence[list[int]]) -> int:
    """Length of the longest common prefix of token rows, leaving at least one token of each row."""
    low, high = min(rows), max(rows)  # lexicographic extremes: their common prefix is everyone's
    n = 0
    for a, b in zip(low, high, strict=False):
        if a != b:
            break
        n += 1
    return min(n, min(len(r) for r in rows) - 1)


def prefix_generation_batch(features: Sequence[Features], prefix: int, pad_id: int) -> dict[str, torch.Tensor]:
    """A decoder-only prompt batch whose first ``prefix`` tokens are shared: ``prefix + padding + rest``.

    The padding sits between the shared prefix and each prompt's own tokens (masked out); position ids
    follow the attention mask, so every prompt sees the same positions as unpadded.
    """
    rests = [f.prompt_ids[prefix:] for f in features]
    width = max(len(r) for r in rests)
    shared = features[0].prompt_ids[:prefix]
    return {
        "input_ids": torch.tensor([shared + [pad_id] * (width - len(r)) + r for r in rests], dtype=torch.long),
        "attention_mask": torch.tensor(
            [[1] * prefix + [0] * (width - len(r)) + [1] * len(r) for r in rests], dtype=torch.long
        ),
    }
