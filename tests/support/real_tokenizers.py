"""Real tokenizer classes built offline: the formats of T5, LLaMA and GPT-2, trained on the fly.

No hub download: a SentencePiece model trained here (``sentencepiece``), saved as ``tokenizer.model`` and
loaded through transformers' own classes, as a user's checkpoint directory would be:

* LLaMA: a BPE model with byte fallback, identity normalisation and a dummy prefix (LLaMA's trainer
  settings), loaded by ``LlamaTokenizer`` with ``legacy=False`` and BOS on;
* T5: a unigram model with T5's ids (pad 0, EOS 1, unk 2) and NFKC normalisation, loaded by ``T5Tokenizer``;
* GPT-2: a byte-level BPE trained with ``tokenizers``, saved as ``vocab.json`` + ``merges.txt`` and loaded by
  ``GPT2Tokenizer``;
* the generic SentencePiece-library backend (``SentencePieceBackend``, the "slow" path of transformers 5,
  which has no separate slow ``LlamaTokenizer`` / ``T5Tokenizer``: ``LlamaTokenizerFast is LlamaTokenizer``)
  over the same two models.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from transformers import GPT2Tokenizer, LlamaTokenizer, PreTrainedTokenizerBase, T5Tokenizer


def _sentencepiece(texts: list[str], out: Path, kind: str, vocab_size: int) -> Path:
    import sentencepiece as spm

    out.mkdir(parents=True, exist_ok=True)
    common = {"vocab_size": vocab_size, "hard_vocab_limit": False, "character_coverage": 1.0, "minloglevel": 2}
    if kind == "llama":
        extra = {
            "model_type": "bpe", "byte_fallback": True, "split_digits": True, "normalization_rule_name": "identity",
            "remove_extra_whitespaces": False, "add_dummy_prefix": True, "unk_id": 0, "bos_id": 1, "eos_id": 2,
            "pad_id": -1,
        }  # fmt: skip
    else:
        extra = {"model_type": "unigram", "pad_id": 0, "eos_id": 1, "unk_id": 2, "bos_id": -1}
    spm.SentencePieceTrainer.train(sentence_iterator=iter(texts), model_prefix=str(out / "tokenizer"), **common | extra)
    return out / "tokenizer.model"


def llama_tokenizer(texts: Iterable[str], out: Path, vocab_size: int = 800) -> PreTrainedTokenizerBase:
    _sentencepiece(list(texts), out, "llama", vocab_size)
    return LlamaTokenizer.from_pretrained(str(out), legacy=False, add_bos_token=True, add_eos_token=False)


def t5_tokenizer(
    texts: Iterable[str], out: Path, vocab_size: int = 800, legacy: bool = True
) -> PreTrainedTokenizerBase:
    _sentencepiece(list(texts), out, "t5", vocab_size)
    return T5Tokenizer.from_pretrained(str(out), legacy=legacy, extra_ids=0)


def sentencepiece_backend(model_file: Path, llama: bool, legacy: bool) -> PreTrainedTokenizerBase:
    from transformers.tokenization_utils_sentencepiece import SentencePieceBackend

    specials = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"} if llama else {
        "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>"}  # fmt: skip
    return SentencePieceBackend(vocab_file=str(model_file), legacy=legacy, **specials)


def gpt2_tokenizer(texts: Iterable[str], out: Path, vocab_size: int = 800) -> PreTrainedTokenizerBase:
    from tokenizers import ByteLevelBPETokenizer

    out.mkdir(parents=True, exist_ok=True)
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(list(texts), vocab_size=vocab_size, special_tokens=["<|endoftext|>"], show_progress=False)
    bpe.save_model(str(out))
    return GPT2Tokenizer.from_pretrained(str(out))
