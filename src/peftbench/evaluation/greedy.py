"""Greedy decoding in which a finished sequence leaves the batch.

transformers' ``generate`` keeps a sequence that has produced its end-of-sequence token in the batch, feeding
it padding until the longest one ends; SuperNI answers are mostly a few tokens, so most of a batch's decoding
steps are spent on finished rows. :func:`greedy_decode` is the same greedy loop over the model's forward pass
(the same inputs, position ids, attention masks and KV cache as ``generate`` builds for it), except that after
every step the rows that just ended are removed from the batch: from the next input, the attention mask, the
position ids, the encoder's output and mask (encoder-decoder) and every layer of the KV cache
(``Cache.batch_select_indices``). Each row's tokens are those ``generate`` gives (asserted for every method in
``tests/evaluation/test_generation_fidelity.py`` and ``tests/evaluation/test_early_exit.py``).

Used for greedy search (``num_beams: 1``) on transformers models whose generation config adds no logits
processor or stopping rule (repetition penalties, forced or suppressed tokens, minimum lengths, stop strings,
static caches); anything else goes to ``generate`` (:func:`early_exit_supported`).
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import nn

_NEUTRAL = {
    "repetition_penalty": 1.0,
    "encoder_repetition_penalty": 1.0,
    "no_repeat_ngram_size": 0,
    "encoder_no_repeat_ngram_size": 0,
    "bad_words_ids": None,
    "min_length": 0,
    "min_new_tokens": None,
    "forced_bos_token_id": None,
    "forced_eos_token_id": None,
    "suppress_tokens": None,
    "begin_suppress_tokens": None,
    "sequence_bias": None,
    "exponential_decay_length_penalty": None,
    "guidance_scale": None,
    "stop_strings": None,
    "max_time": None,
    "cache_implementation": None,
    "prefill_chunk_size": None,
    "watermarking_config": None,
    "forced_decoder_ids": None,
}
"""Generation-config fields that change greedy search when set, with their neutral values."""


def early_exit_supported(model: nn.Module, num_beams: int) -> bool:
    """Whether :func:`greedy_decode` gives what ``model.generate`` gives: greedy search, a transformers model
    with a KV cache argument, and a generation config without logits processors or extra stopping rules."""
    config = getattr(model, "generation_config", None)
    if num_beams != 1 or config is None or not hasattr(model, "config"):
        return False
    for name, neutral in _NEUTRAL.items():
        value = getattr(config, name, neutral)
        if value is not None and value != neutral and not (name == "cache_implementation" and value == "dynamic"):
            return False
    return _cache_keyword(model) is not None


def _cache_keyword(model: nn.Module) -> str | None:
    params = inspect.signature(model.forward).parameters
    return next((name for name in ("cache", "past_key_values") if name in params), None)


def _new_cache(model: nn.Module, encoder_decoder: bool) -> Any:
    from transformers import DynamicCache, EncoderDecoderCache

    text = model.config.get_text_config(decoder=True)
    if encoder_decoder:
        return EncoderDecoderCache(DynamicCache(config=text), DynamicCache(config=text))
    return DynamicCache(config=text)


def _encoder_decoder_start(
    model: nn.Module, input_ids: torch.Tensor | None, inputs_embeds: torch.Tensor | None, attention_mask: torch.Tensor
) -> tuple[dict[str, Any], Any]:
    """The encoder run once, and the decoder's first input: the decoder start token on every row."""
    encoder_inputs = {"input_ids": input_ids} if input_ids is not None else {"inputs_embeds": inputs_embeds}
    encoder_outputs = model.get_encoder()(**encoder_inputs, attention_mask=attention_mask, return_dict=True)
    start = model.generation_config.decoder_start_token_id
    if start is None:
        start = model.config.decoder_start_token_id
    rows = attention_mask.shape[0]
    ids = torch.full((rows, 1), int(start), dtype=torch.long, device=attention_mask.device)
    return {"decoder_input_ids": ids}, encoder_outputs


def _decoder_only_start(
    input_ids: torch.Tensor | None, inputs_embeds: torch.Tensor | None, full_mask: torch.Tensor, cache: Any
) -> tuple[dict[str, Any], torch.Tensor | None, torch.Tensor]:
    """The first step's inputs (the prompt past what the cache holds), its attention mask (``None`` without
    padding, as generate passes it) and position ids (counted over the mask, as generate counts them)."""
    positions = (full_mask.long().cumsum(-1) - 1).masked_fill(full_mask == 0, 0)
    past = cache.get_seq_length() if cache is not None else 0
    step_inputs: dict[str, Any]
    if input_ids is not None:
        # as generate: ids that repeat the cached tokens (the mask as long as the ids) are sliced past them
        new = input_ids[:, past:] if full_mask.shape[1] == input_ids.shape[1] else input_ids
        step_inputs = {"input_ids": new}
    else:
        assert inputs_embeds is not None
        new = inputs_embeds[:, past:]
        step_inputs = {"inputs_embeds": new}
    # generate drops an all-ones mask (no padding): attention then takes its unmasked path
    mask = None if bool((full_mask == 1).all()) else full_mask
    return step_inputs, mask, positions[:, -new.shape[1] :]


@torch.no_grad()
def greedy_decode(
    model: nn.Module,
    *,
    attention_mask: torch.Tensor,
    input_ids: torch.Tensor | None = None,
    inputs_embeds: torch.Tensor | None = None,
    cache: Any = None,
    max_new_tokens: int,
    eos_id: int,
    pad_id: int,
    encoder_decoder: bool,
) -> torch.Tensor:
    """The new token ids of a batch, ``(rows, longest)``, padded with ``pad_id`` after each row's EOS, as
    ``model.generate(..., do_sample=False, num_beams=1)`` returns them (decoder-only: without the prompt;
    encoder-decoder: without the decoder start token). Inputs are those ``generate`` would take: prompt ids
    or embeddings, their 2-D attention mask and, optionally, a KV cache that already holds a prefix (decoder-only:
    the mask then covers the cached tokens too). Finished rows leave the batch after each step."""
    keyword = _cache_keyword(model)
    assert keyword is not None
    rows = (input_ids if input_ids is not None else inputs_embeds).shape[0]
    device = attention_mask.device
    tokens = torch.full((rows, max_new_tokens), pad_id, dtype=torch.long, device=device)
    active = torch.arange(rows, device=device)  # original row of each row still decoding
    cache = cache if cache is not None else _new_cache(model, encoder_decoder)
    encoder_outputs: Any = None
    if encoder_decoder:
        step_inputs, encoder_outputs = _encoder_decoder_start(model, input_ids, inputs_embeds, attention_mask)
        mask, positions = attention_mask, None
    else:
        step_inputs, mask, positions = _decoder_only_start(input_ids, inputs_embeds, attention_mask, cache)
    logits_to_keep = "logits_to_keep" in inspect.signature(model.forward).parameters
    length = 0
    for step in range(max_new_tokens):
        kwargs: dict[str, Any] = {keyword: cache, "use_cache": True, "return_dict": True}
        if encoder_decoder:
            kwargs.update(encoder_outputs=encoder_outputs, attention_mask=mask)
        else:
            kwargs.update(attention_mask=mask, position_ids=positions)
        if logits_to_keep:
            kwargs["logits_to_keep"] = 1
        out = model(**step_inputs, **kwargs)
        cache = out.get(keyword, cache)
        next_tokens = out.logits[:, -1].to(dtype=torch.float32).argmax(dim=-1)
        tokens[active, step] = next_tokens
        length = step + 1
        finished = next_tokens == eos_id
        if step + 1 == max_new_tokens or bool(finished.all()):
            break
        if bool(finished.any()):  # the finished rows leave the batch, its cache and its masks
            keep = (~finished).nonzero().squeeze(1)
            active, next_tokens = active[keep], next_tokens[keep]
            cache.batch_select_indices(keep)
            if encoder_decoder:
                encoder_outputs["last_hidden_state"] = encoder_outputs["last_hidden_state"][keep]
                mask = mask[keep]
            else:
                positions = positions[keep]
                mask = mask[keep] if mask is not None else None
        ids = next_tokens[:, None]
        if encoder_decoder:
            step_inputs = {"decoder_input_ids": ids}
        else:
            step_inputs = {"input_ids": ids}
            positions = positions[:, -1:] + 1
            if mask is not None:
                mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=1)
    return tokens[:, :length]
