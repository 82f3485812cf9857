"""Generation over an evaluation split: length-sorted batches, greedy by default, appended as they finish.

Resumable: predictions already in the output file are kept batch by batch (a batch counts as done only
when all of its lines are there, so a half-written batch is generated again), and a suspension signal
stops the loop after the current batch.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import json
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase

from peftbench.data.collate import GenerationBatch, generation_batch, generation_batches, prefix_generation_batch
from peftbench.data.tokenize import Features
from peftbench.evaluation.greedy import early_exit_supported, greedy_decode
from peftbench.evaluation.metrics import record_checksum
from peftbench.evaluation.ranks import all_gather, assign_rounds, broadcast, check_shardable, process_group
from peftbench.io import atomic_write_text, read_file_bytes
from peftbench.training.preemption import Preempted, StopFlag

log = logging.getLogger("peftbench")


def _existing_predictions(path: Path) -> tuple[dict[str, dict], bool]:
    """Valid lines already written, by id, and whether the file holds nothing else.

    Each line is decoded on its own, so a crash that tore the last line (inside a multi-byte UTF-8 character
    too), zeroed a block or left a line without its newline costs that line alone; every earlier valid line is
    kept. ``False`` means the file must be rewritten before anything is appended to it.
    """
    done: dict[str, dict] = {}
    if not path.exists():
        return done, True
    raw = read_file_bytes(path, "move it away to generate again")
    *lines, tail = raw.split(b"\n")
    clean = tail == b""
    for line in lines:
        try:
            record = json.loads(line.decode("utf-8"))
        except ValueError:  # torn, zeroed or not UTF-8 (UnicodeDecodeError is a ValueError)
            clean = False
            continue
        if isinstance(record, dict) and isinstance(record.get("id"), str) and isinstance(record.get("prediction"), str):
            done[record["id"]] = record
        else:
            clean = False
    return done, clean


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
    share_prefix: bool = True,
    on_batch: Callable[[int, int], None] | None = None,
    early_exit: bool = True,
    shard: bool = True,
) -> list[dict]:
    """Generates a prediction for every example, appending to ``out_path`` (JSONL) batch by batch.

    Lines are ``{"id", "task", "category", "prediction", "references"}`` — the format ``peftbench score``
    reads. Each batch's lines are flushed and fsynced before the next batch starts. Returns the records in
    batch order (the same order whether or not the evaluation was interrupted). With ``out_path=None``
    nothing is written (validation during training). Batches are formed from length-sorted prompts; with
    ``batch_by_tokens`` later (shorter) batches hold more examples, within the first batch's token budget.
    With ``share_prefix`` (decoder-only models, greedy, no virtual-token method), the prompt prefix shared
    by a task's examples is encoded once and its KV cache reused by each of the task's batches.
    ``on_batch(done, total)`` is called after each batch generated here (``done`` counts the batches of an
    earlier attempt too), before a suspension signal is acted on. With ``early_exit``, a sequence leaves its
    batch once it has ended (:mod:`peftbench.evaluation.greedy`; same predictions).

    With ``shard`` (the default) under a process group of several ranks, every rank must call this: the
    batches are split across them (:mod:`peftbench.evaluation.ranks`), every rank returns all the records,
    and rank 0 alone reads and writes ``out_path``, in the single-process order.
    """
    was_training = model.training
    model.eval()
    rank, world = process_group() if shard else (0, 1)
    if world > 1:
        check_shardable(model)
    out_path = Path(out_path) if out_path is not None and rank == 0 else None
    share_prefix = share_prefix and prefix_cache_supported(model, encoder_decoder, num_beams)
    plan = generation_batches(features, batch_size, batch_by_tokens, max_new_tokens, share_prefix)
    existing = _resume(out_path, features, [b.indices for b in plan]) if out_path is not None else {}
    existing = broadcast(existing, world)  # rank 0 alone reads the file; every rank follows it
    pending = [k for k, b in enumerate(plan) if features[b.indices[0]].id not in existing]
    costs = [_tokens(features, b, max_new_tokens) for b in (plan[k] for k in pending)]
    rounds = [[pending[j] if j is not None else None for j in slots] for slots in assign_rounds(costs, world)]
    if world > 1 and rank == 0:
        log.info("%s: %d batches to generate over %d ranks, in %d rounds", desc, len(pending), world, len(rounds))
    generated: dict[int, list[dict]] = {}
    done = len(plan) - len(pending)
    bar = tqdm(total=len(plan), initial=done, desc=desc, unit="batch", disable=not progress or rank != 0)
    batch_kwargs = {
        "pad_id": tokenizer.pad_token_id,
        "eos_id": tokenizer.eos_token_id,
        "max_new_tokens": max_new_tokens,
        "num_beams": num_beams,
        "encoder_decoder": encoder_decoder,
        "device": device,
        "early_exit": early_exit,
    }
    with open(out_path, "a", encoding="utf-8") if out_path is not None else contextlib.nullcontext() as out:
        prefix_cache: tuple[tuple[int, ...], Any] | None = None  # the current task's (prefix ids, KV cache)
        for number, slots in enumerate(rounds):
            mine = slots[rank]
            lines: list[dict] | None = None
            if mine is not None:
                chunk = [features[i] for i in plan[mine].indices]
                if plan[mine].prefix:
                    shared = tuple(chunk[0].prompt_ids[: plan[mine].prefix])
                    if prefix_cache is None or prefix_cache[0] != shared:
                        prefix_cache = (shared, encode_prefix(model, shared, device))
                cache = prefix_cache[1] if plan[mine].prefix and prefix_cache is not None else None
                lines = _generate_lines(model, tokenizer, chunk, plan[mine].prefix, cache, batch_kwargs)
            gathered = all_gather((mine, lines), world) if world > 1 else [(mine, lines)]
            for k, batch_lines in sorted((g for g in gathered if g[0] is not None), key=lambda g: g[0]):
                if out is not None:
                    _append_durably(out, batch_lines)
                generated[k] = batch_lines
                bar.update(1)
                done += 1
                if on_batch is not None:
                    on_batch(done, len(plan))
            stopping = stop is not None and stop.requested
            if world > 1:  # every rank stops after the same round, or none does
                stopping = any(all_gather(stopping, world))
            if stopping and number != len(rounds) - 1:
                raise Preempted("evaluation")
    bar.close()
    if was_training:
        model.train()
    return [r for k, b in enumerate(plan) for r in (generated.get(k) or [existing[features[i].id] for i in b.indices])]


def _generate_lines(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    chunk: list[Features],
    prefix: int,
    cache: Any,
    batch_kwargs: dict[str, Any],
) -> list[dict]:
    """One batch generated and decoded: its prediction records, in the batch's order."""
    output = generate_ids(model, chunk, prefix=prefix, prefix_cache=cache, **batch_kwargs)
    texts = tokenizer.batch_decode(output, skip_special_tokens=True, clean_up_tokenization_spaces=False)
    return [_record(f, clean_up_tokenization(t).strip()) for f, t in zip(chunk, texts, strict=True)]


def _append_durably(out: Any, records: list[dict]) -> None:
    """A batch's lines appended, flushed and fsynced (on disk before the next batch starts)."""
    out.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    out.flush()
    os.fsync(out.fileno())


def _resume(out_path: Path, features: Sequence[Features], batches: list[list[int]]) -> dict[str, dict]:
    """Predictions of whole batches already in ``out_path``, by id; the file is rewritten (atomically) without the
    lines of half-written batches, stray records and damaged lines, so that nothing is appended after a torn line
    (a batch counts as done only when all of its lines are there)."""
    existing, clean = _existing_predictions(out_path)
    by_id = {f.id: f for f in features}
    intact = {i: r for i, r in existing.items() if i not in by_id or _intact(r, by_id[i])}
    clean, existing = clean and len(intact) == len(existing), intact
    done_ids = {features[i].id for idx in batches if all(features[i].id in existing for i in idx) for i in idx}
    if not clean or set(existing) != done_ids:
        kept = [existing[features[i].id] for idx in batches for i in idx if features[i].id in done_ids]
        atomic_write_text(out_path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in kept))
    return {i: existing[i] for i in done_ids}


def _tokens(features: Sequence[Features], batch: GenerationBatch, max_new_tokens: int) -> int:
    """A batch's cost for balancing ranks: its padded prompt tokens (past a shared prefix) and new tokens."""
    longest = max(len(features[i].prompt_ids) for i in batch.indices) - batch.prefix
    return len(batch.indices) * (longest + max_new_tokens) + batch.prefix


@torch.no_grad()
def generate_ids(
    model: nn.Module,
    chunk: Sequence[Features],
    *,
    prefix: int,
    prefix_cache: Any,
    pad_id: int,
    eos_id: int,
    max_new_tokens: int,
    num_beams: int,
    encoder_decoder: bool,
    device: torch.device | str,
    early_exit: bool = True,
) -> torch.Tensor:
    """The generated token ids (continuations only) of one batch; with ``prefix`` > 0 the batch's first
    ``prefix`` prompt tokens come from ``prefix_cache`` (:func:`encode_prefix`) instead of being encoded. With
    ``early_exit`` (and where :func:`~peftbench.evaluation.greedy.early_exit_supported`), greedy decoding drops
    each sequence from the batch once it has ended (:func:`~peftbench.evaluation.greedy.greedy_decode`)."""
    extra: dict[str, Any] = {}
    if prefix:
        batch = {k: v.to(device) for k, v in prefix_generation_batch(chunk, prefix, pad_id).items()}
        cache = copy.deepcopy(prefix_cache)  # generate appends to it
        cache.batch_repeat_interleave(len(chunk))
        extra[_cache_argument(model)] = cache
    else:
        batch = {k: v.to(device) for k, v in generation_batch(chunk, pad_id, encoder_decoder).items()}
    prompt_length = batch["input_ids"].shape[1]
    generator = model
    kind = _virtual_token_method(model)
    if kind is not None:
        generator, batch = _inject_virtual_tokens(model, kind, batch, num_beams)
    if early_exit and early_exit_supported(_base_model(generator), num_beams):
        cache_key = _cache_argument(generator)
        return greedy_decode(
            _base_model(generator),
            attention_mask=batch["attention_mask"],
            input_ids=batch.get("input_ids"),
            inputs_embeds=batch.get("inputs_embeds"),
            cache=batch.get(cache_key, extra.get(cache_key)),
            max_new_tokens=max_new_tokens,
            eos_id=eos_id,
            pad_id=pad_id,
            encoder_decoder=encoder_decoder,
        )
    output = generator.generate(
        **batch,
        **extra,
        max_new_tokens=max_new_tokens,
        num_beams=num_beams,
        do_sample=False,
        pad_token_id=pad_id,
        eos_token_id=eos_id,
    )
    if encoder_decoder or "input_ids" not in batch:  # generate returns only new tokens for inputs_embeds
        return output
    return output[:, prompt_length:]  # decoder-only: prompt + new


def _virtual_token_method(model: nn.Module) -> str | None:
    """peft's prompt-learning type of ``model`` ("PREFIX_TUNING", "PROMPT_TUNING", "P_TUNING"), else None."""
    peft_config = getattr(model, "active_peft_config", None)
    if peft_config is None or not getattr(peft_config, "is_prompt_learning", False):
        return None
    return str(getattr(peft_config.peft_type, "value", peft_config.peft_type))


def _inject_virtual_tokens(
    model: nn.Module, kind: str, batch: dict[str, torch.Tensor], num_beams: int
) -> tuple[nn.Module, dict]:
    """The base model and generation inputs that carry a peft prompt-learning method's virtual tokens.

    peft 0.21's ``generate`` does not work with transformers 5's generation loop (which names the KV cache
    ``cache`` and no longer passes ``cache_position``): a prefix goes under the old ``past_key_values`` key and
    is dropped, and soft prompts are prepended again at every decoding step of a decoder-only model. So the
    virtual tokens are injected here exactly as peft's *forward* (the training path) injects them, and the
    base model generates: a soft prompt (prompt tuning, P-tuning) becomes ``inputs_embeds = [P; E(x)]`` with
    the mask extended by ones; a prefix becomes the initial KV cache (``get_prompt``), with the decoder-only
    mask extended by ones so that positions count the prefix, as in the forward pass.
    ``tests/evaluation/test_generation_fidelity.py`` checks every method against a cache-free greedy loop over the
    forward pass.
    """
    config = model.active_peft_config
    base = model.get_base_model()
    n_virtual = config.num_virtual_tokens
    input_ids, mask = batch["input_ids"], batch["attention_mask"]
    size = input_ids.shape[0]
    ones = torch.ones(size, n_virtual, dtype=mask.dtype, device=mask.device)
    if kind == "PREFIX_TUNING":
        cache = model.get_prompt(batch_size=size * num_beams)  # generate does not expand a given cache for beams
        with_mask = mask if base.config.is_encoder_decoder else torch.cat([ones, mask], dim=1)
        return base, {"input_ids": input_ids, "attention_mask": with_mask, _cache_argument(base): cache}
    embeds = model.word_embeddings(input_ids)
    prompts = model.get_prompt(batch_size=size)[:, :n_virtual].to(embeds.dtype)
    return base, {"inputs_embeds": torch.cat([prompts, embeds], dim=1), "attention_mask": torch.cat([ones, mask], 1)}


def _base_model(model: nn.Module) -> nn.Module:
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def _cache_argument(model: nn.Module) -> str:
    """The KV-cache keyword of this transformers version (``cache``; ``past_key_values`` before 5.x renamed it)."""
    return "cache" if "cache" in inspect.signature(_base_model(model).forward).parameters else "past_key_values"


def prefix_cache_supported(model: nn.Module, encoder_decoder: bool, num_beams: int) -> bool:
    """Whether a shared prompt prefix can be encoded once and reused: decoder-only, greedy, position ids taken
    from the attention mask (so padding between prefix and rest is invisible), and no method that adds
    virtual tokens or its own past key values (peft's prompt, prefix and p-tuning)."""
    if encoder_decoder or num_beams != 1 or _virtual_token_method(model) is not None:
        return False
    return "position_ids" in inspect.signature(_base_model(model).forward).parameters


@torch.no_grad()
def encode_prefix(model: nn.Module, prefix: Sequence[int], device: torch.device | str) -> Any:
    """The KV cache of one prompt prefix (batch 1)."""
    ids = torch.tensor([list(prefix)], dtype=torch.long, device=device)
    out = model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=True)
    return out["cache"] if "cache" in out else out["past_key_values"]


def clean_up_tokenization(text: str) -> str:
    """Tk-Instruct's decoding clean-up: transformers 4.18's ``clean_up_tokenization`` (on by default then, for
    every tokenizer), which joins English contractions and punctuation to the preceding word ("do n't ." ->
    "don't."). transformers 5 leaves it off by default and ignores it for BPE tokenizers, so it is applied here
    explicitly, whatever the tokenizer, as Tk-Instruct's predictions were made."""
    for spaced, joined in _CLEAN_UP:
        text = text.replace(spaced, joined)
    return text


_CLEAN_UP = (
    (" .", "."),
    (" ?", "?"),
    (" !", "!"),
    (" ,", ","),
    (" ' ", "'"),
    (" n't", "n't"),
    (" 'm", "'m"),
    (" 's", "'s"),
    (" 've", "'ve"),
    (" 're", "'re"),
)
"""transformers 4.18 ``PreTrainedTokenizerBase.clean_up_tokenization``, in its order."""


def _record(f: Features, prediction: str) -> dict:
    record = {
        "id": f.id,
        "task": f.task,
        "category": f.category,
        "prediction": prediction,
        "references": list(f.references),
    }
    record["checksum"] = record_checksum(record)
    return record


def _intact(record: dict, feature: Features) -> bool:
    """Whether a line read back is the one written for ``feature``: its fields match the example and its
    checksum (lines written before checksums were recorded have none) matches its content."""
    if "checksum" in record and record["checksum"] != record_checksum(record):
        return False
    return (
        record.get("task") == feature.task
        and record.get("category") == feature.category
        and record.get("references") == list(feature.references)
    )
