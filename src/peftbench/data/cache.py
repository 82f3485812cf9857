"""The on-disk feature cache: tokenised SuperNI examples stored once, then read back (validated) by every run.

Loading the full default split (757 + 119 task files), encoding 87,600 Tk-Instruct prompts and tokenising
them takes tens of seconds; every run of a sweep needs the same result.
:func:`peftbench.data.pipeline.prepare_features` builds the tokenised train/validation/test features and keeps
them in ``<cache root>/<key>/`` (``tokens.safetensors`` with the token ids, ``meta.json`` with ids, references,
task lists and counts); this module names, writes and reads those entries.

The key covers everything the features depend on: the resolved data directory, the bytes of the split files, the
size and modification time (ns) of every listed task file, the data settings (:class:`~peftbench.config.DataConfig`:
instance selection, seed included, and prompt encoding), the tokenizer (its serialised vocabulary and rules, its
special tokens and the ids of a probe text), the length limits, the architecture kind, the source code of the
modules that build features (:data:`FEATURE_MODULES`: task files, selection, prompt encoding, tokenisation, the
pipeline and this module; an edit to any of them, even an uncommitted one, gives a new key), and the versions of
peftbench, transformers and tokenizers. Change any of them and a new entry is built; the old one stays until the
cache directory is deleted. Entries are written to a temporary directory and renamed into place (a killed process
leaves no partial entry; concurrent runs of a sweep may both build, one rename wins), and are checked on every read
(SHA-256 of the token file, offsets, id ranges); a damaged entry is logged, removed and rebuilt. A cache that cannot
be written only costs the rebuild next time.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import importlib
import itertools
import json
import logging
import os
import shutil
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load as load_arrays
from safetensors.numpy import save as save_arrays
from transformers import PreTrainedTokenizerBase

from peftbench.config import DataConfig
from peftbench.data.superni import read_task_list
from peftbench.data.tokenize import Features
from peftbench.errors import PeftbenchError

logger = logging.getLogger(__name__)

__all__ = [
    "CACHE_VERSION",
    "FEATURE_MODULES",
    "Lengths",
    "PreparedData",
    "cache_key",
    "code_fingerprint",
    "read_entry",
    "tokenizer_fingerprint",
    "write_entry",
]

CACHE_VERSION = 2
"""Bumped whenever the layout of an entry changes (the code that fills an entry is keyed by its source, see
:func:`code_fingerprint`)."""
FEATURE_MODULES = (
    "peftbench.data.tasks",
    "peftbench.data.superni",
    "peftbench.data.encoding",
    "peftbench.data.examples",
    "peftbench.data.tokenize",
    "peftbench.data.cache",
    "peftbench.data.pipeline",
)
"""The modules whose code builds the features: their source is part of the cache key."""

ROLES = ("train", "validation", "test")
TOKENS_FILE = "tokens.safetensors"
META_FILE = "meta.json"
_PROBE = "Definition: Héllo wörld, 123 — <tags> & ünïcode.\n\nNow complete the following example -\nInput: x\nOutput: "
"""Tokenised as part of the tokenizer's fingerprint: catches behaviour not visible in its vocabulary."""
_PATH_KWARGS = {"name_or_path", "is_local", "local_files_only", "vocab_file", "merges_file", "tokenizer_file"}


@dataclass(frozen=True)
class Lengths:
    """The token limits and architecture kind the features are made for."""

    max_source_length: int
    """Prompt token limit (truncation keeps the ``Output:`` cue)."""
    max_target_length: int
    """Target token limit, EOS included."""
    encoder_decoder: bool
    """Encoder-decoder prompts end with the tokenizer's closing special tokens; decoder-only ones do not."""
    demonstration_budget: int | None = None
    """Tk-Instruct's token budget for demonstration examples (only used when the encoding has some)."""


@dataclass
class PreparedData:
    """Tokenised examples of each role, the task lists and counts."""

    train: list[Features]
    validation: list[Features]
    test: list[Features]
    train_tasks: list[str]
    validation_tasks: list[str]
    test_tasks: list[str]
    stats: dict[str, int]
    cache_path: Path | None = None
    """The cache entry used or written (None when caching is off or failed)."""
    from_cache: bool = False
    """True when the features were read from the cache."""
    warnings: list[str] = field(default_factory=list)
    """Warnings of the load (skipped instances), replayed when read from the cache."""


# --------------------------------------------------------------------------------------------- the key


def tokenizer_fingerprint(tokenizer: PreTrainedTokenizerBase) -> str:
    """A hash of what determines a tokenizer's ids (not where it was loaded from)."""
    h = hashlib.sha256(f"{type(tokenizer).__module__}.{type(tokenizer).__qualname__}".encode())
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:  # a fast tokenizer: its whole serialised pipeline
        h.update(backend.to_str().encode())
    else:
        h.update(json.dumps(sorted(tokenizer.get_vocab().items()), ensure_ascii=False).encode())
        sp_model = getattr(tokenizer, "sp_model", None)
        if sp_model is not None and hasattr(sp_model, "serialized_model_proto"):
            h.update(sp_model.serialized_model_proto())
    kwargs = {k: repr(v) for k, v in sorted(tokenizer.init_kwargs.items()) if k not in _PATH_KWARGS}
    h.update(json.dumps(kwargs, sort_keys=True).encode())
    h.update(repr([tokenizer.all_special_tokens, tokenizer.all_special_ids, tokenizer.eos_token_id]).encode())
    h.update(repr([tokenizer.pad_token_id, len(tokenizer), tokenizer(_PROBE)["input_ids"]]).encode())
    return h.hexdigest()


def _code_files() -> list[Path]:
    """The source files of :data:`FEATURE_MODULES`."""
    return [Path(importlib.import_module(name).__file__ or name) for name in FEATURE_MODULES]


def code_fingerprint() -> str:
    """A hash of the source of the modules that build features (the bytes of their files), so that an edit to
    the selection, the prompt encoding, the tokenisation or the cache layout never reuses old features."""
    h = hashlib.sha256()
    for path in _code_files():
        try:
            raw = path.read_bytes()
        except OSError:  # e.g. a zipped install: the installed version still tells versions apart
            raw = b"unreadable"
        h.update(f"{path.name}: {len(raw)}\n".encode() + raw)
    return h.hexdigest()


def _file_state(path: Path) -> list[Any]:
    try:
        st = path.stat()
    except OSError:
        return [path.name, None]
    return [path.name, st.st_size, st.st_mtime_ns]


def cache_key(config: DataConfig, tokenizer: PreTrainedTokenizerBase, lengths: Lengths) -> str:
    """The entry name for these inputs; any change of data files, selection, encoding, tokenizer, limits or the
    code that builds features gives another key. Reads the split files and stats the task files they list (no
    task file is read)."""
    import tokenizers
    import transformers

    from peftbench.version import __version__

    data_dir = Path(config.data_dir).resolve()
    split_dir = data_dir / "splits" / config.split
    h = hashlib.sha256()
    listed: list[str] = []
    for name in ("train_tasks.txt", "test_tasks.txt", "excluded_tasks.txt"):
        path = split_dir / name
        try:
            raw = path.read_bytes()
        except OSError:
            h.update(f"{name}: absent\n".encode())
            continue
        h.update(f"{name}: {len(raw)}\n".encode() + raw)
        if name != "excluded_tasks.txt":
            with contextlib.suppress(PeftbenchError):  # a bad split file is reported by the loader
                listed += read_task_list(path)
    tasks_dir = data_dir / "tasks"
    files = [_file_state(tasks_dir / f"{name}.json") for name in listed]
    # location and the cache switch aside, every data setting (selection and encoding) shapes the features
    settings = {k: v for k, v in asdict(config).items() if k not in ("data_dir", "cache")}
    payload = {
        "version": CACHE_VERSION,
        "software": [__version__, transformers.__version__, tokenizers.__version__],
        "code": code_fingerprint(),
        "data_dir": str(data_dir),
        "split_files": h.hexdigest(),
        "task_files": files,
        "data": settings,
        "lengths": asdict(lengths),
        "tokenizer": tokenizer_fingerprint(tokenizer),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:24]


# --------------------------------------------------------------------------------------------- store


def _flat(rows: Sequence[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    offsets = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum([len(r) for r in rows], out=offsets[1:])
    flat = np.fromiter(itertools.chain.from_iterable(rows), dtype=np.int32, count=int(offsets[-1]))
    return flat, offsets


def _encode(data: PreparedData) -> tuple[bytes, dict[str, Any]]:
    arrays: dict[str, np.ndarray] = {}
    roles: dict[str, Any] = {}
    for role in ROLES:
        feats: list[Features] = getattr(data, role)
        category = {f.task: f.category for f in feats}
        task_names = sorted(category)
        index = {name: i for i, name in enumerate(task_names)}
        arrays[f"{role}.prompt"], arrays[f"{role}.prompt_offsets"] = _flat([f.prompt_ids for f in feats])
        arrays[f"{role}.target"], arrays[f"{role}.target_offsets"] = _flat([f.target_ids for f in feats])
        options = [ids for f in feats for ids in f.target_options]
        arrays[f"{role}.options"], arrays[f"{role}.options_offsets"] = _flat(options)
        arrays[f"{role}.option_counts"] = np.array([len(f.target_options) for f in feats], dtype=np.int32)
        arrays[f"{role}.task"] = np.array([index[f.task] for f in feats], dtype=np.int32)
        roles[role] = {
            "tasks": task_names,
            "categories": [category[name] for name in task_names],
            "ids": [f.id for f in feats],
            "references": [list(f.references) for f in feats],
        }
    blob = save_arrays(arrays)
    meta = {
        "version": CACHE_VERSION,
        "tokens_sha256": hashlib.sha256(blob).hexdigest(),
        "stats": data.stats,
        "task_lists": {role: getattr(data, f"{role}_tasks") for role in ROLES},
        "warnings": data.warnings,
        "roles": roles,
    }
    return blob, meta


def write_entry(root: Path, key: str, data: PreparedData, log: logging.Logger) -> Path | None:
    """Writes the entry atomically (temporary directory + rename); None when the cache is not writable."""
    final = root / key
    tmp = root / f".tmp-{key}-{uuid.uuid4().hex[:8]}"
    try:
        blob, meta = _encode(data)
        tmp.mkdir(parents=True)
        for name, content in ((TOKENS_FILE, blob), (META_FILE, json.dumps(meta, ensure_ascii=False).encode())):
            with open(tmp / name, "wb") as f:
                f.write(content)
                f.flush()
                os.fsync(f.fileno())
        try:
            os.rename(tmp, final)
        except OSError:
            if not final.is_dir():
                raise
            shutil.rmtree(tmp, ignore_errors=True)  # another process wrote the same entry first
        return final
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        log.warning("cannot write the feature cache in %s (%s); continuing without it", root, exc.strerror or exc)
        return None


class InvalidEntry(Exception):
    pass


def _rows(flat: np.ndarray, offsets: np.ndarray, ints: np.ndarray) -> list[list[int]]:
    """Rows of token ids as lists. Every row refers to the same int objects (``ints[i]`` is ``i``): 8 bytes a
    token instead of 36 (an int object each), and faster."""
    shared = ints[flat]
    return [row.tolist() for row in np.split(shared, offsets[1:-1])] if len(offsets) > 1 else []


@contextlib.contextmanager
def no_gc() -> Iterator[None]:
    """Pauses the cyclic garbage collector: building ~10^5 small lists triggers it hundreds of times for
    nothing (no cycles are created), which doubles the read time."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def read_entry(path: Path, vocab_size: int) -> PreparedData:
    """The features of a cache entry, after checking it; raises ``InvalidEntry`` with the reason."""
    try:
        meta = json.loads((path / META_FILE).read_text(encoding="utf-8"))
        blob = (path / TOKENS_FILE).read_bytes()
    except (OSError, ValueError) as exc:
        raise InvalidEntry(f"unreadable: {exc}") from None
    if not isinstance(meta, dict) or meta.get("version") != CACHE_VERSION:
        raise InvalidEntry("written by another cache version")
    if hashlib.sha256(blob).hexdigest() != meta.get("tokens_sha256"):
        raise InvalidEntry(f"{TOKENS_FILE} does not match its checksum")
    try:
        arrays = load_arrays(blob)
        ints = np.array(range(vocab_size), dtype=object)
        features = {role: _read_role(role, meta["roles"][role], arrays, vocab_size, ints) for role in ROLES}
        lists = meta["task_lists"]
        return PreparedData(
            **features,
            train_tasks=list(lists["train"]),
            validation_tasks=list(lists["validation"]),
            test_tasks=list(lists["test"]),
            stats=dict(meta["stats"]),
            cache_path=path,
            from_cache=True,
            warnings=list(meta.get("warnings", [])),
        )
    except InvalidEntry:
        raise
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise InvalidEntry(f"malformed ({type(exc).__name__}: {exc})") from None


def _read_role(
    role: str, info: dict[str, Any], arrays: dict[str, np.ndarray], vocab_size: int, ints: np.ndarray
) -> list[Features]:
    """One role's features from its columns (``info``: ids, references, tasks, categories; ``arrays``: the
    flattened token ids with their offsets), each column checked; raises ``InvalidEntry`` with the reason."""
    ids, refs, tasks, cats = info["ids"], info["references"], info["tasks"], info["categories"]
    task_index = arrays[f"{role}.task"]
    n = len(ids)
    counts = arrays[f"{role}.option_counts"]
    if len(counts) != n or (n and int(counts.min()) < 0):
        raise InvalidEntry(f"{role} option counts are inconsistent")
    rows = {"prompt": n, "target": n, "options": int(counts.sum())}
    columns = {}
    for part, count in rows.items():
        flat, offsets = arrays[f"{role}.{part}"], arrays[f"{role}.{part}_offsets"]
        if len(offsets) != count + 1 or offsets[0] != 0 or offsets[-1] != len(flat) or np.any(np.diff(offsets) < 0):
            raise InvalidEntry(f"{role} {part} offsets are inconsistent")
        if len(flat) and (int(flat.min()) < 0 or int(flat.max()) >= vocab_size):
            raise InvalidEntry(f"{role} {part} ids outside the tokenizer's vocabulary")
        columns[part] = _rows(flat, offsets, ints)
    if len(refs) != n or len(task_index) != n or len(cats) != len(tasks):
        raise InvalidEntry(f"{role} columns have different lengths")
    if n and (int(task_index.min()) < 0 or int(task_index.max()) >= len(tasks)):
        raise InvalidEntry(f"{role} task index out of range")
    names = [tasks[i] for i in task_index.tolist()]
    categories = dict(zip(tasks, cats, strict=True))
    option_rows = iter(columns["options"])
    options = [tuple(next(option_rows) for _ in range(c)) for c in counts.tolist()]
    return [
        Features(i, t, categories[t], p, g, tuple(r), o)
        for i, t, p, g, r, o in zip(ids, names, columns["prompt"], columns["target"], refs, options, strict=True)
    ]
