"""Prompts and training sequences with real tokenizer classes equal the tokenizer's encoding of the whole text.

The reference is the tokenizer itself: ``tokenizer(source + target)`` for a decoder-only training sequence,
``tokenizer(source)`` / ``tokenizer(target)`` for T5. Byte-level tokenizers (the tiny presets' ByT5) cannot
show the difference; a subword tokenizer can: SentencePiece and GPT-2's BPE put a word's leading space inside
the word's token, so tokenising ``"...\\nOutput: "`` apart from its target leaves a lone space token that the
whole text never has (issue 26: 761/761 LLaMA test prompts differed). The texts are the demo's generated tasks
and, when present, the real SuperNI sample.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from peftbench.config import DataConfig
from peftbench.data.examples import load_examples
from peftbench.data.tokenize import featurize, special_affixes
from peftbench.demodata.writer import generate_demo_data
from tests.conftest import SUPERNI_MINI
from tests.support.real_tokenizers import gpt2_tokenizer, llama_tokenizer, sentencepiece_backend, t5_tokenizer


def _examples(root: Path, split: str, pos: int) -> list:
    data = load_examples(DataConfig(str(root), split=split, num_validation_tasks=1, num_pos_examples=pos))
    return data.train + data.test


@pytest.fixture(scope="module")
def corpora(tmp_path_factory) -> dict[str, list]:
    demo = generate_demo_data(tmp_path_factory.mktemp("demo") / "data", seed=0, train_instances=20,
                              test_instances=10, pretrain_instances=1)  # fmt: skip
    found = {"demo": _examples(demo, "demo", 2)}
    if SUPERNI_MINI.exists():
        found["superni-mini"] = _examples(SUPERNI_MINI, "mini", 0)
        found["superni-mini def+2pos"] = _examples(SUPERNI_MINI, "mini", 2)
    return found


@pytest.fixture(scope="module")
def tokenizers(corpora, tmp_path_factory) -> dict[str, tuple]:
    """name -> (tokenizer, encoder_decoder), all trained on the corpora's texts."""
    texts = [t for examples in corpora.values() for ex in examples[::3] for t in (ex.source, ex.target)]
    root = tmp_path_factory.mktemp("tokenizers")
    llama = llama_tokenizer(texts, root / "llama")
    t5 = t5_tokenizer(texts, root / "t5")
    gpt2 = gpt2_tokenizer(texts, root / "gpt2")
    gpt2.pad_token = gpt2.eos_token  # as peftbench.models.load_tokenizer does
    backend_llama = sentencepiece_backend(root / "llama" / "tokenizer.model", True, False)
    backend_llama = sentencepiece_backend(root / "llama" / "tokenizer.model", True, False)
    return {
        "LlamaTokenizer": (llama, False),
        "T5Tokenizer": (t5, True),
        "T5Tokenizer legacy=False": (t5_tokenizer(texts, root / "t5-new", legacy=False), True),
        "GPT2Tokenizer": (gpt2, False),
        "SentencePieceBackend (LLaMA model)": (backend_llama, False),
        "SentencePieceBackend (T5 model)": (sentencepiece_backend(root / "t5" / "tokenizer.model", False, True), True),
        "T5Tokenizer as decoder-only": (t5, False),
    }  # fmt: skip


NAMES = [
    "LlamaTokenizer", "T5Tokenizer", "T5Tokenizer legacy=False", "GPT2Tokenizer",
    "SentencePieceBackend (LLaMA model)", "SentencePieceBackend (T5 model)", "T5Tokenizer as decoder-only",
]  # fmt: skip


def _closing(tokenizer) -> int:
    return len(special_affixes(tokenizer)[1])


@pytest.mark.parametrize("name", NAMES)
def test_untruncated_features_equal_the_whole_text_encoded(name, tokenizers, corpora):
    tokenizer, enc_dec = tokenizers[name]
    eos = tokenizer.eos_token_id
    for corpus, examples in corpora.items():
        features = featurize(examples, tokenizer, 100_000, 100_000, enc_dec)
        for f, ex in zip(features, examples, strict=True):
            if enc_dec:
                assert f.prompt_ids == tokenizer(ex.source)["input_ids"], (corpus, ex.id)
                assert f.target_ids == tokenizer(ex.target, add_special_tokens=False)["input_ids"] + [eos]
                continue
            # decoder-only: the training sequence is source + target encoded whole (without closing specials),
            # then EOS, and the generation prompt is a prefix of it ending at the cue's colon
            whole = tokenizer(ex.source + ex.target)["input_ids"]
            whole = whole[: len(whole) - _closing(tokenizer)]
            assert f.prompt_ids + f.target_ids == [*whole, eos], (corpus, ex.id)
            assert tokenizer.decode(f.prompt_ids, skip_special_tokens=True).endswith("Output:")
            for option, ids in zip(getattr(ex, "targets", ()), f.target_options, strict=False):
                whole = tokenizer(ex.source + option)["input_ids"]
                assert f.prompt_ids + ids == [*whole[: len(whole) - _closing(tokenizer)], eos]


@pytest.mark.parametrize("name", NAMES)
def test_truncated_prompts_keep_the_cue_as_the_whole_text_encodes_it(name, tokenizers, corpora):
    tokenizer, enc_dec = tokenizers[name]
    examples = corpora["demo"]
    features = featurize(examples, tokenizer, 48, 8, enc_dec)
    cut = 0
    for f, ex in zip(features, examples, strict=True):
        prompt = ex.source if enc_dec else ex.source.rstrip(" ")
        whole = tokenizer(prompt)["input_ids"]
        if not enc_dec:
            whole = whole[: len(whole) - _closing(tokenizer)]
        if len(whole) <= 48:
            assert f.prompt_ids == whole
            continue
        cut += 1
        assert len(f.prompt_ids) == 48
        # the prompt ends with the whole text's last tokens (the cue as it tokenises in context, and the
        # closing specials) and starts with its first ones (the definition), cut in between
        assert f.prompt_ids[-3:] == whole[-3:], (ex.id, tokenizer.convert_ids_to_tokens(f.prompt_ids[-4:]))
        assert f.prompt_ids[:20] == whole[:20]
        text = tokenizer.decode(f.prompt_ids, skip_special_tokens=True)
        assert text.rstrip().endswith("Output:"), text[-30:]
    assert cut > len(examples) // 2
