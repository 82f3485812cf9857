"""From encoded text to token ids: tokenisation with cue-preserving truncation, one :class:`Features` per example.

Encoder-decoder: the prompt and the target + EOS are tokenised apart. Decoder-only: the prompt ends at ``Output:``
and the target (with its leading space) follows it in one sequence, tokenised as the whole text, so the generation
prompt is a prefix of the training sequence. Batching and padding are :mod:`peftbench.data.collate`'s.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

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
