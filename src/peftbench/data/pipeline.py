"""A run's data, from files to token ids: select instances, encode prompts, tokenise, through the feature cache.

:func:`prepare_features` is the one entry point a run uses: :func:`peftbench.data.superni.load_superni` selects
the instances, :func:`peftbench.data.examples.encode_selection` builds the Tk-Instruct prompts (measuring
demonstrations with the model's tokenizer, as Tk-Instruct does), :func:`peftbench.data.tokenize.featurize`
tokenises them, and :mod:`peftbench.data.cache` keeps the result on disk, keyed by everything it depends on.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path

from transformers import PreTrainedTokenizerBase

from peftbench.config import DataConfig
from peftbench.data.cache import ROLES, InvalidEntry, Lengths, PreparedData, cache_key, no_gc, read_entry, write_entry
from peftbench.data.examples import encode_selection
from peftbench.data.superni import load_superni
from peftbench.data.tokenize import featurize

__all__ = ["prepare_features"]

logger = logging.getLogger(__name__)


class _Recorder(logging.Handler):
    """Collects the warnings a load emits, so a cache hit can repeat them."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextlib.contextmanager
def _recording(log: logging.Logger) -> Iterator[_Recorder]:
    recorder = _Recorder()
    log.addHandler(recorder)
    try:
        yield recorder
    finally:
        log.removeHandler(recorder)


def _build(
    config: DataConfig,
    tokenizer: PreTrainedTokenizerBase,
    lengths: Lengths,
    log: logging.Logger,
    progress: bool,
) -> PreparedData:
    def lengths_fn(texts: list[str]) -> list[int]:  # Tk-Instruct: len(tokenizer(text)["input_ids"])
        return [len(ids) for ids in tokenizer(texts, return_attention_mask=False)["input_ids"]]

    with _recording(log) as recorder, no_gc():
        selection = load_superni(config, log=log)
        data = encode_selection(
            selection, config, lengths_fn=lengths_fn, max_source_length=lengths.demonstration_budget
        )
    with no_gc():
        features = {
            role: featurize(
                getattr(data, role),
                tokenizer,
                lengths.max_source_length,
                lengths.max_target_length,
                lengths.encoder_decoder,
                progress=progress,
                desc=f"tokenizing {role}",
            )
            for role in ROLES
        }
    return PreparedData(
        **features,
        train_tasks=data.train_tasks,
        validation_tasks=data.validation_tasks,
        test_tasks=data.test_tasks,
        stats=data.stats,
        warnings=recorder.messages,
    )


def prepare_features(
    config: DataConfig,
    tokenizer: PreTrainedTokenizerBase,
    lengths: Lengths,
    *,
    cache_dir: str | Path | None = None,
    log: logging.Logger | None = None,
    progress: bool = False,
) -> PreparedData:
    """Loads, encodes and tokenises a SuperNI split, through the on-disk cache when ``cache_dir`` is set.

    Args:
        config: The data settings (location, selection, prompt encoding), already checked.
        tokenizer: The model's tokenizer.
        lengths: Token limits and architecture kind.
        cache_dir: Root of the feature cache; None loads without caching.
        log: Logger for warnings and the cache messages; defaults to this module's logger.
        progress: Show tokenisation progress bars (only a cold build tokenises).

    Returns:
        The features (identical with and without the cache), task lists, counts, and where the entry is.

    Raises:
        PeftbenchError: Bad data (see :func:`peftbench.data.superni.load_superni`); a cache problem never raises.
    """
    log = log if log is not None else logger
    if cache_dir is None:
        return _build(config, tokenizer, lengths, log, progress)
    root = Path(cache_dir)
    key = cache_key(config, tokenizer, lengths)
    entry = root / key
    if entry.is_dir():
        try:
            with no_gc():
                data = read_entry(entry, len(tokenizer))
        except InvalidEntry as why:
            log.warning("feature cache entry %s is damaged (%s); removing and rebuilding it", entry, why)
            shutil.rmtree(entry, ignore_errors=True)
        else:
            for message in data.warnings:
                log.warning("%s", message)
            log.info("data: read the tokenised examples from the cache %s", entry)
            return data
    data = _build(config, tokenizer, lengths, log, progress)
    data.cache_path = write_entry(root, key, data, log)
    if data.cache_path is not None:
        log.info("data: tokenised examples cached in %s", data.cache_path)
    return data
