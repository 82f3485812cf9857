"""From encoded text to model inputs: tokenisation with cue-preserving truncation, batching, padding.

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
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase

IGNORE_INDEX = -100
CUE = "Output:"
"""The end of every prompt; truncation cuts the text before it, never the cue itself."""


@dataclass(frozen=True)
class Features:
    """One tokenised example."""

    id: str
    task: str
    category: str
    prompt_ids: list[int]
    """Tokens the model sees at generation time (with the tokenizer's special tokens)."""
    target_ids: list[int]
    """Target tokens, ending with EOS (training: the default target, ``target_options[0]`` when there are
    several; each epoch trains on the one :func:`with_epoch_targets` draws)."""
    references: tuple[str, ...]
    target_options: tuple[list[int], ...] = ()
    """Training examples with several non-empty outputs: the tokens of each (as ``target_ids``), the targets
    the per-epoch draw picks from. Empty for a single target and for evaluation examples."""


def special_affixes(tokenizer: PreTrainedTokenizerBase) -> tuple[list[int], list[int]]:
    """The special tokens the tokenizer puts before and after a text (e.g. LLaMA's BOS, T5's EOS)."""
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a")["input_ids"]
    for i in range(len(full) - len(plain) + 1):
        if full[i : i + len(plain)] == plain:
            return list(full[:i]), list(full[i + len(plain) :])
    return [], []


def _split_cue(source: str) -> tuple[str, str]:
    """A prompt's text before its final ``Output:`` cue (the part truncation may cut) and the cue."""
    cut = source.rfind(CUE)
    if cut > 0 and source[cut - 1] == "\n":
        cut -= 1  # keep the line break before the cue with it
    return (source[:cut], source[cut:]) if cut >= 0 else (source, "")


def split_prompt(source: str, encoder_decoder: bool) -> tuple[str, str]:
    """The prompt text a model is given and the text that starts its target.

    Encoder-decoder: the whole source, nothing. Decoder-only: the source without its trailing spaces
    (``...Output:``), which begin the target instead (``" ham"``), so that the prompt's tokens are a prefix of
    the tokens of ``source + target`` tokenised whole. A subword tokenizer marks a word's leading space in
    the word's token (SentencePiece ``▁ham``, GPT-2 ``Ġham``): tokenising ``"Output: "`` alone would end the
    prompt with a lone space token that ``"Output: ham"`` never contains.
    """
    if encoder_decoder:
        return source, ""
    prompt = source.rstrip(" ")
    return prompt, source[len(prompt) :]


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def _fit(
    prompt_ids: list[int],
    body_ids: list[int] | None,
    affixes: tuple[list[int], list[int]],
    max_length: int,
    encoder_decoder: bool,
) -> list[int]:
    """The prompt's tokens with the special affixes, cut to ``max_length`` before the cue when too long.

    ``prompt_ids`` are the tokens of the whole prompt; ``body_ids`` those of its text before the cue alone
    (needed only when the prompt is too long). The cue's tokens are the prompt's tokens after the body's, as
    the whole text tokenises (a tokenizer may merge the body's last character with the cue's line break, or
    mark the cue's line break differently at the start of a text), so an untruncated prompt is exactly the
    whole text's tokens.
    """
    prefix, suffix = affixes
    if not encoder_decoder:
        suffix = []
    if body_ids is None or not _needs_cut(prompt_ids, affixes, max_length, encoder_decoder):
        return prefix + prompt_ids + suffix
    cut = _common_prefix(body_ids, prompt_ids)
    body, cue = prompt_ids[:cut], prompt_ids[cut:]
    room = max(max_length - len(prefix) - len(suffix) - len(cue), 0)
    return prefix + body[:room] + cue + suffix


def _needs_cut(
    prompt_ids: list[int], affixes: tuple[list[int], list[int]], max_length: int, encoder_decoder: bool
) -> bool:
    """Whether :func:`_fit` must cut the prompt (a decoder-only prompt has no closing special tokens)."""
    closing = len(affixes[1]) if encoder_decoder else 0
    return len(affixes[0]) + len(prompt_ids) + closing > max_length


def _target(
    prompt_ids: list[int], whole_ids: list[int] | None, alone_ids: list[int], max_length: int, eos: int
) -> list[int]:
    """Target tokens ending with EOS, at most ``max_length``. Decoder-only (``whole_ids`` = the tokens of
    prompt + target as one text): the whole text's tokens after the prompt's, when the prompt's tokens are
    its prefix (always, for SentencePiece and byte-level BPE, which never merge across the space before the
    target); otherwise, and for encoder-decoder models, the target tokenised alone."""
    ids = alone_ids
    if whole_ids is not None and _common_prefix(prompt_ids, whole_ids) == len(prompt_ids):
        ids = whole_ids[len(prompt_ids) :]
    return [*ids[: max_length - 1], eos]


def tokenize_prompt(
    tokenizer: PreTrainedTokenizerBase, source: str, max_length: int, encoder_decoder: bool
) -> list[int]:
    """Tokenises a prompt to at most ``max_length`` tokens, keeping its final ``Output:`` cue.

    The prompt is tokenised whole (decoder-only: without its trailing spaces, :func:`split_prompt`); when too
    long, the text before the cue is cut from the end (the definition and demonstrations come first in
    Tk-Instruct prompts, so this keeps the instruction) and the cue's tokens are always the last.
    Encoder inputs get the tokenizer's special tokens (T5: a closing EOS); decoder-only prompts keep only
    the leading ones (e.g. BOS), since the target follows them.
    """
    return tokenize_example(tokenizer, source, "", max_length, 1, encoder_decoder)[0]


def tokenize_target(tokenizer: PreTrainedTokenizerBase, target: str, max_length: int) -> list[int]:
    """Target tokens (tokenised alone, the encoder-decoder case) truncated to ``max_length`` including the
    closing EOS. Decoder-only targets depend on the prompt: :func:`tokenize_example`."""
    ids = tokenizer(target, add_special_tokens=False)["input_ids"]
    return [*ids[: max_length - 1], tokenizer.eos_token_id]


def tokenize_example(
    tokenizer: PreTrainedTokenizerBase,
    source: str,
    target: str,
    max_source_length: int,
    max_target_length: int,
    encoder_decoder: bool,
) -> tuple[list[int], list[int]]:
    """One example's prompt and target tokens, as :func:`featurize` builds them.

    Untruncated, the prompt is the tokenizer's encoding of the prompt text whole (``tokenizer(source)``,
    special tokens included; decoder-only without its closing special tokens), and a decoder-only training
    sequence ``prompt + target`` is the encoding of ``source + target`` whole, then EOS.
    """
    prompt, lead = split_prompt(source, encoder_decoder)
    affixes = special_affixes(tokenizer)
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    body_ids = None
    if _needs_cut(prompt_ids, affixes, max_source_length, encoder_decoder):
        body_ids = tokenizer(_split_cue(prompt)[0], add_special_tokens=False)["input_ids"]
    whole = None if encoder_decoder else tokenizer(prompt + lead + target, add_special_tokens=False)["input_ids"]
    alone = tokenizer(target, add_special_tokens=False)["input_ids"]
    return (
        _fit(prompt_ids, body_ids, affixes, max_source_length, encoder_decoder),
        _target(prompt_ids, whole, alone, max_target_length, tokenizer.eos_token_id),
    )


def _ids(tokenizer: PreTrainedTokenizerBase, texts: list[str]) -> list[list[int]]:
    return tokenizer(texts, add_special_tokens=False, return_attention_mask=False)["input_ids"] if texts else []


FEATURIZE_CHUNK = 2048
"""Texts per tokenizer call in :func:`featurize` (a fast tokenizer encodes a batch on all cores)."""


def featurize(
    examples: Sequence,
    tokenizer: PreTrainedTokenizerBase,
    max_source_length: int,
    max_target_length: int,
    encoder_decoder: bool,
    progress: bool = False,
    desc: str = "tokenizing",
) -> list[Features]:
    """Tokenises ``peftbench.data.examples.Example`` objects: the same ids as :func:`tokenize_example` one
    by one, in batched tokenizer calls (a fast tokenizer then uses every core; the full default split loads
    and tokenises 2.6x faster than one call per text, ``bench/data_bench.py``)."""
    affixes = special_affixes(tokenizer)
    eos = tokenizer.eos_token_id
    features: list[Features] = []
    bar = tqdm(total=len(examples), desc=desc, unit="ex", disable=not progress, leave=False)
    for start in range(0, len(examples), FEATURIZE_CHUNK):
        chunk = examples[start : start + FEATURIZE_CHUNK]
        parts = [split_prompt(ex.source, encoder_decoder) for ex in chunk]
        prompts = _ids(tokenizer, [prompt for prompt, _ in parts])
        long = [i for i, ids in enumerate(prompts) if _needs_cut(ids, affixes, max_source_length, encoder_decoder)]
        bodies: dict[int, list[int]] = dict(
            zip(long, _ids(tokenizer, [_split_cue(parts[i][0])[0] for i in long]), strict=True)
        )
        several = [tuple(getattr(ex, "targets", ())) for ex in chunk]
        several = [options if len(options) > 1 else () for options in several]
        # every target text of the chunk: the default target, then the options; one tokenizer call for each kind
        texts = [(i, t) for i, ex in enumerate(chunk) for t in (ex.target, *several[i])]
        alone = _ids(tokenizer, [t for _, t in texts])
        whole: list[list[int] | None] = [None] * len(texts)
        if not encoder_decoder:
            whole = list(_ids(tokenizer, [parts[i][0] + parts[i][1] + t for i, t in texts]))
        targets = iter(
            _target(prompts[i], w, a, max_target_length, eos) for (i, _), w, a in zip(texts, whole, alone, strict=True)
        )
        for i, ex in enumerate(chunk):
            target_ids = next(targets)
            features.append(
                Features(
                    id=ex.id,
                    task=ex.task,
                    category=ex.category,
                    prompt_ids=_fit(prompts[i], bodies.get(i), affixes, max_source_length, encoder_decoder),
                    target_ids=target_ids,
                    references=tuple(ex.references),
                    target_options=tuple(next(targets) for _ in several[i]),
                )
            )
        bar.update(len(chunk))
    bar.close()
    return features


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
