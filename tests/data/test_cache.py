"""The feature cache: same features as a fresh build, invalidated by every input, damage detected, never fatal."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import replace
from pathlib import Path

import pytest
from transformers import ByT5Tokenizer

from peftbench.config import DataConfig
from peftbench.data.cache import META_FILE, TOKENS_FILE, Lengths, PreparedData, cache_key
from peftbench.data.examples import load_examples
from peftbench.data.pipeline import prepare_features
from peftbench.data.tokenize import featurize, tokenize_example
from peftbench.models import train_tokenizer

TOK = ByT5Tokenizer()
LENGTHS = Lengths(max_source_length=96, max_target_length=8, encoder_decoder=True, demonstration_budget=200)


def _task(name: str, category: str, n: int, definition: str = "Copy the input word.") -> dict:
    return {
        "Categories": [category],
        "Definition": [definition],
        "Input_language": ["English"],
        "Output_language": ["English"],
        "Instruction_language": ["English"],
        "Positive Examples": [{"input": "cat", "output": "cat", "explanation": "copied"}] * 2,
        "Negative Examples": [{"input": "dog", "output": "cat", "explanation": "wrong"}],
        "Instances": [
            {"id": f"{name}-{i}", "input": f"word{i} " * (1 + i % 7), "output": [f"out{i}", f"alt{i}"]}
            for i in range(n)
        ],
    }


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    root = tmp_path / "superni"
    (root / "tasks").mkdir(parents=True)
    split = root / "splits" / "default"
    split.mkdir(parents=True)
    train = [f"task{i:03d}_train" for i in range(4)]
    test = [f"task{i:03d}_test" for i in range(4, 6)]
    for i, name in enumerate(train + test):
        task = _task(name, "Misc." if name in train else f"Category {i}", 6)
        (root / "tasks" / f"{name}.json").write_text(json.dumps(task))
    (split / "train_tasks.txt").write_text("\n".join(train) + "\n")
    (split / "test_tasks.txt").write_text("\n".join(test) + "\n")
    return root


def _config(data_dir: Path, **kwargs) -> DataConfig:
    return DataConfig(str(data_dir), num_validation_tasks=1, **kwargs)


def _prepare(data_dir: Path, cache: Path | None, tokenizer=TOK, lengths=LENGTHS, **kw) -> PreparedData:
    return prepare_features(_config(data_dir, **kw), tokenizer, lengths, cache_dir=cache)


def _same(a: PreparedData, b: PreparedData) -> None:
    assert (a.train, a.validation, a.test) == (b.train, b.validation, b.test)
    assert (a.train_tasks, a.validation_tasks, a.test_tasks, a.stats) == (
        b.train_tasks, b.validation_tasks, b.test_tasks, b.stats,
    )  # fmt: skip


def test_cached_features_equal_a_fresh_build(data_dir: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    fresh = _prepare(data_dir, None)
    cold = _prepare(data_dir, cache)
    hot = _prepare(data_dir, cache)
    assert fresh.cache_path is None and not cold.from_cache and hot.from_cache
    assert cold.cache_path == hot.cache_path and cold.cache_path.parent == cache
    assert len(fresh.train) == 18 and len(fresh.validation) == 6 and len(fresh.test) == 12
    _same(fresh, cold)
    _same(fresh, hot)
    # Every training instance has two outputs: both targets' tokens are stored (the trainer draws one per epoch).
    assert all(len(f.target_options) == 2 and f.target_options[0] == f.target_ids for f in hot.train)
    assert all(f.target_options == () for f in hot.validation + hot.test)
    assert sorted(p.name for p in cache.iterdir()) == [cold.cache_path.name]  # no temporary leftovers
    assert sorted(p.name for p in cold.cache_path.iterdir()) == [META_FILE, TOKENS_FILE]


def test_batched_featurize_matches_one_call_per_text(data_dir: Path) -> None:
    data = load_examples(_config(data_dir, num_pos_examples=2))
    examples = data.train + data.test
    bpe = train_tokenizer([ex.source for ex in examples] + [ex.target for ex in examples], vocab_size=400)
    for tokenizer in (TOK, bpe):
        for enc_dec in (True, False):
            features = featurize(examples, tokenizer, 64, 4, enc_dec)  # 64 tokens: most prompts are truncated
            assert any(len(f.prompt_ids) == 64 for f in features)
            for f, ex in zip(features, examples, strict=True):
                assert (f.prompt_ids, f.target_ids) == tokenize_example(tokenizer, ex.source, ex.target, 64, 4, enc_dec)
                assert (f.id, f.task, f.category, f.references) == (ex.id, ex.task, ex.category, ex.references)


def _touch_later(path: Path) -> None:
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


def test_every_input_is_part_of_the_key(data_dir: Path) -> None:
    base = cache_key(_config(data_dir), TOK, LENGTHS)
    assert cache_key(_config(data_dir), ByT5Tokenizer(), LENGTHS) == base  # deterministic
    assert cache_key(_config(data_dir, cache=False), TOK, LENGTHS) == base  # the switch is not an input
    bpe = train_tokenizer(["Definition: copy the input word. Output: cat dog"], vocab_size=300)
    variants = {
        "seed": cache_key(_config(data_dir, seed=7), TOK, LENGTHS),
        "selection": cache_key(_config(data_dir, max_train_instances_per_task=3), TOK, LENGTHS),
        "encoding": cache_key(_config(data_dir, add_task_name=True), TOK, LENGTHS),
        "demonstrations": cache_key(_config(data_dir, num_pos_examples=1), TOK, LENGTHS),
        "tokenizer": cache_key(_config(data_dir), bpe, LENGTHS),
        "source length": cache_key(_config(data_dir), TOK, replace(LENGTHS, max_source_length=95)),
        "target length": cache_key(_config(data_dir), TOK, replace(LENGTHS, max_target_length=9)),
        "architecture": cache_key(_config(data_dir), TOK, replace(LENGTHS, encoder_decoder=False)),
        "budget": cache_key(_config(data_dir), TOK, replace(LENGTHS, demonstration_budget=100)),
    }
    assert base not in variants.values() and len(set(variants.values())) == len(variants)
    special = ByT5Tokenizer()
    special.add_special_tokens({"additional_special_tokens": ["<sep>"]})
    assert cache_key(_config(data_dir), special, LENGTHS) != base


def test_changed_task_file_rebuilds_with_the_new_content(data_dir: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first = _prepare(data_dir, cache)
    path = data_dir / "tasks" / "task004_test.json"
    task = json.loads(path.read_text())
    task["Definition"] = ["Copy the input word, carefully."]
    path.write_text(json.dumps(task))
    second = _prepare(data_dir, cache)
    assert not second.from_cache and second.cache_path != first.cache_path
    assert second.test != first.test
    _same(second, _prepare(data_dir, None))
    # Same size, newer modification time: also a new entry (contents are not hashed, their stat is).
    _touch_later(data_dir / "tasks" / "task000_train.json")
    assert not _prepare(data_dir, cache).from_cache
    assert _prepare(data_dir, cache).from_cache


def test_changed_split_file_rebuilds(data_dir: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first = _prepare(data_dir, cache)
    split = data_dir / "splits" / "default"
    (split / "excluded_tasks.txt").write_text("task001_train\n")
    second = _prepare(data_dir, cache)
    assert not second.from_cache and "task001_train" not in second.train_tasks + second.validation_tasks
    assert second.stats["excluded_tasks"] == 1 and first.stats["excluded_tasks"] == 0


def test_changed_encoding_or_tokenizer_rebuilds(data_dir: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    plain = _prepare(data_dir, cache)
    named = _prepare(data_dir, cache, add_task_name=True)
    assert not named.from_cache and named.test != plain.test
    assert _prepare(data_dir, cache, add_task_name=True).from_cache
    bpe = train_tokenizer(["Definition: Copy the input word. Now complete the following example word1"], 300)
    other = _prepare(data_dir, cache, tokenizer=bpe)
    assert not other.from_cache and other.test != plain.test
    assert len(list(cache.iterdir())) == 3


@pytest.mark.parametrize("damage", ["flip a token byte", "truncate meta", "delete tokens", "bad ids"])
def test_damaged_entry_is_rebuilt(data_dir: Path, tmp_path: Path, damage: str, caplog) -> None:
    cache = tmp_path / "cache"
    cold = _prepare(data_dir, cache)
    tokens, meta = cold.cache_path / TOKENS_FILE, cold.cache_path / META_FILE
    if damage == "flip a token byte":
        blob = bytearray(tokens.read_bytes())
        blob[-3] ^= 0xFF
        tokens.write_bytes(bytes(blob))
    elif damage == "truncate meta":
        meta.write_bytes(meta.read_bytes()[:100])
    elif damage == "delete tokens":
        tokens.unlink()
    else:  # a consistent file (checksum updated) with ids the tokenizer does not have
        import hashlib

        from safetensors.numpy import load, save

        arrays = load(tokens.read_bytes())
        arrays["test.prompt"][0] = 10_000
        blob = save(arrays)
        tokens.write_bytes(blob)
        info = json.loads(meta.read_text())
        info["tokens_sha256"] = hashlib.sha256(blob).hexdigest()
        meta.write_text(json.dumps(info))
    with caplog.at_level(logging.WARNING):
        again = _prepare(data_dir, cache)
    assert not again.from_cache and "damaged" in caplog.text and "rebuilding" in caplog.text
    _same(again, cold)
    assert _prepare(data_dir, cache).from_cache  # the rebuilt entry is good


def test_unwritable_cache_only_warns(data_dir: Path, tmp_path: Path, caplog) -> None:
    blocked = tmp_path / "not-a-directory"
    blocked.write_text("a file where the cache directory should be")
    with caplog.at_level(logging.WARNING):
        data = _prepare(data_dir, blocked / "cache")
    assert data.cache_path is None and "cannot write the feature cache" in caplog.text
    _same(data, _prepare(data_dir, None))


def test_load_warnings_are_repeated_from_the_cache(data_dir: Path, tmp_path: Path, caplog) -> None:
    path = data_dir / "tasks" / "task005_test.json"
    task = json.loads(path.read_text())
    task["Instances"][0]["output"] = []  # no reference at all: skipped with a warning
    path.write_text(json.dumps(task))
    cache = tmp_path / "cache"
    with caplog.at_level(logging.WARNING):
        cold = _prepare(data_dir, cache)
    cold_warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        hot = _prepare(data_dir, cache)
    assert hot.from_cache and cold.stats["skipped_instances"] == hot.stats["skipped_instances"] == 1
    assert cold_warnings and [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING] == cold_warnings


def test_entry_written_by_another_process_first_is_kept(data_dir: Path, tmp_path: Path) -> None:
    from peftbench.data.cache import write_entry

    cache = tmp_path / "cache"
    cold = _prepare(data_dir, cache)
    before = (cold.cache_path / TOKENS_FILE).stat().st_mtime_ns
    assert write_entry(cache, cold.cache_path.name, cold, logging.getLogger("test")) == cold.cache_path
    assert (cold.cache_path / TOKENS_FILE).stat().st_mtime_ns == before
    assert [p.name for p in cache.iterdir()] == [cold.cache_path.name]


def test_run_config_switch_and_location(data_dir: Path, tmp_path: Path, monkeypatch) -> None:
    """`data.cache` (on by default) uses $PEFTBENCH_CACHE/features, gives the same features, and is not
    part of the config hash (it does not change results)."""
    from peftbench.configure import config_from_dict
    from peftbench.recipe.rundir import config_hash
    from peftbench.recipe.setup import build_model, prepare_data

    monkeypatch.setenv("PEFTBENCH_CACHE", str(tmp_path / "home-cache"))
    raw = {"model": {"name": "tiny-t5"}, "data": {"data_dir": str(data_dir), "max_source_length": 64}}
    on = config_from_dict(raw)
    off = config_from_dict({**raw, "data": {**raw["data"], "cache": False}})
    assert on.data.cache and not off.data.cache and config_hash(on) == config_hash(off)
    model, tokenizer = build_model(on, apply_method=False)
    uncached = prepare_data(off, tokenizer, model)
    assert uncached.cache_path is None and not (tmp_path / "home-cache").exists()
    cold, hot = prepare_data(on, tokenizer, model), prepare_data(on, tokenizer, model)
    assert cold.cache_path is not None and cold.cache_path.parent == tmp_path / "home-cache" / "features"
    assert hot.from_cache and hot.cache_path == cold.cache_path
    _same(hot, uncached)
    assert max(len(f.prompt_ids) for f in hot.train) == 64


def test_changed_feature_code_rebuilds(data_dir: Path, tmp_path: Path, monkeypatch) -> None:
    """The key covers the source of the modules that build features: an edit to the prompt encoding or the
    collation is never served old features (issue 11, part 5)."""
    from peftbench.data import cache as cache_module

    cache = tmp_path / "cache"
    cold = _prepare(data_dir, cache)
    hot = _prepare(data_dir, cache)
    assert hot.from_cache and hot.cache_path == cold.cache_path  # unchanged code: the entry is reused
    real = cache_module._code_files()
    modules = {"tasks.py", "superni.py", "encoding.py", "examples.py", "tokenize.py", "cache.py", "pipeline.py"}
    assert {p.name for p in real} >= modules
    for changed in ("encoding.py", "tokenize.py"):
        copy = tmp_path / changed
        original = next(p for p in real if p.name == changed)
        copy.write_bytes(original.read_bytes() + b"\n# an edit\n")
        monkeypatch.setattr(
            cache_module, "_code_files", lambda copy=copy: [copy if p.name == copy.name else p for p in real]
        )
        edited = _prepare(data_dir, cache)
        assert not edited.from_cache and edited.cache_path not in (None, cold.cache_path)
        _same(edited, cold)
        assert _prepare(data_dir, cache).from_cache
    monkeypatch.setattr(cache_module, "_code_files", lambda: real)
    assert _prepare(data_dir, cache).cache_path == cold.cache_path
