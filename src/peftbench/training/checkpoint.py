"""Checkpoints that survive being killed at any instant, and are validated before they are trusted.

A checkpoint is written by one function, ``save_checkpoint``, into a temporary directory; every file is
fsynced, a ``manifest.json`` (each file's size and SHA-256, step, world size, seed, config hash, versions)
is written last, and only then is the directory renamed to ``checkpoint-<step>``. On start,
``latest_valid_checkpoint`` checks the checkpoints newest first and moves any that fail a check into
``quarantine/`` with a one-line reason (nothing is deleted), falling back to the next older one.

A sharded (FSDP) run's checkpoint holds the trainable weights and the optimizer state as a
``torch.distributed.checkpoint`` directory, ``sharded/`` (each rank's ``__<rank>_0.distcp`` and ``.metadata``),
instead of ``trainable.safetensors`` and ``optimizer.pt``; every rank writes its file into the same temporary
directory, and rank 0 writes the rest, the manifest (covering every rank's files) and renames.

Tensors are stored as safetensors (the trainable weights through :mod:`peftbench.weights`); the optimizer
and scheduler states go through ``torch.save`` and are read back with ``weights_only=True``; everything
else is JSON. Nothing is ever unpickled.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from peftbench.errors import PeftbenchError
from peftbench.io import file_sha256, fsync_dir, fsync_file, load_tensors, read_json_file, save_tensors
from peftbench.weights import read_trainable, write_trainable

log = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
QUARANTINE = "quarantine"
MANIFEST = "manifest.json"
PREFIX = "checkpoint-"
WEIGHTS = "trainable.safetensors"
OPTIMIZER = "optimizer.pt"
SCHEDULER = "scheduler.pt"
STATE = "trainer_state.json"
SCALER = "scaler.pt"
METHOD_STATE = "method_state.safetensors"
SHARDS = "sharded"
"""A sharded checkpoint's ``torch.distributed.checkpoint`` directory."""


def shard_files(world_size: int) -> list[str]:
    """The files a sharded checkpoint must hold: DCP's metadata and one file per rank."""
    return [f"{SHARDS}/.metadata", *(f"{SHARDS}/__{rank}_0.distcp" for rank in range(world_size))]


def rng_file(rank: int) -> str:
    """Name of one rank's RNG-state file."""
    return f"rng_state_rank{rank}.json"


@dataclass
class Checkpoint:
    """A validated checkpoint on disk."""

    path: Path
    step: int
    manifest: dict[str, Any]


# --------------------------------------------------------------------------------------------------
# RNG state as JSON (no pickles)


def capture_rng_state() -> dict[str, Any]:
    """The Python, NumPy, torch CPU and every CUDA device's RNG state of this process, JSON-ready."""
    py = random.getstate()
    np_state = np.random.get_state()
    return {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
        "torch_cpu": torch.get_rng_state().tolist(),
        "cuda": [s.tolist() for s in torch.cuda.get_rng_state_all()] if torch.cuda.is_available() else [],
    }


def restore_rng_state(state: dict[str, Any]) -> None:
    """Restores what ``capture_rng_state`` captured; any failure is an error, never ignored."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(torch.tensor(state["torch_cpu"], dtype=torch.uint8))
    cuda = state.get("cuda") or []
    if cuda:
        if not torch.cuda.is_available() or torch.cuda.device_count() < len(cuda):
            raise PeftbenchError(f"checkpoint holds RNG states for {len(cuda)} CUDA device(s), this process has fewer")
        torch.cuda.set_rng_state_all([torch.tensor(s, dtype=torch.uint8) for s in cuda])


# --------------------------------------------------------------------------------------------------
# Writing


def new_checkpoint_dir(run_dir: Path, step: int) -> Path:
    """A fresh, empty temporary directory for checkpoint ``step`` (a sharded save: every rank writes into it)."""
    root = run_dir / CHECKPOINTS
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".tmp-{PREFIX}{step:08d}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    return tmp


def save_checkpoint(
    run_dir: Path,
    step: int,
    *,
    trainable: dict[str, torch.Tensor] | None,
    optimizer: torch.optim.Optimizer | None,
    scheduler: Any,
    trainer_state: dict[str, Any],
    rng_states: list[dict[str, Any]],
    config_hash: str,
    seed: int,
    keep: int,
    versions: dict[str, str],
    scaler: Any = None,
    method_state: dict[str, torch.Tensor] | None = None,
    on_file_written: Callable[[Path], None] | None = None,
    sharded_tmp: Path | None = None,
) -> Path:
    """Writes checkpoint ``step`` atomically and keeps only the newest ``keep`` ones; returns its path.

    ``rng_states`` holds one entry per rank (index = rank), gathered by the caller. ``on_file_written`` is
    called with each file's path once it is written into the temporary directory, the manifest last.
    ``sharded_tmp`` is the temporary directory (from :func:`new_checkpoint_dir`) into which every rank has already
    written its shard of the weights and optimizer state (``sharded/``); ``trainable`` and ``optimizer`` are
    then None, and the manifest lists the shards with the rest.
    """
    root = run_dir / CHECKPOINTS
    final = root / f"{PREFIX}{step:08d}"
    tmp = sharded_tmp if sharded_tmp is not None else new_checkpoint_dir(run_dir, step)

    def written(name: str) -> None:
        if on_file_written is not None:
            on_file_written(tmp / name)

    if sharded_tmp is not None:
        for name in _files(tmp):
            written(name)
    if trainable is not None:
        write_trainable(trainable, tmp / WEIGHTS)
        written(WEIGHTS)
    if optimizer is not None:
        torch.save(optimizer.state_dict(), tmp / OPTIMIZER)
        written(OPTIMIZER)
    torch.save(scheduler.state_dict(), tmp / SCHEDULER)
    written(SCHEDULER)
    if scaler is not None:  # fp16 gradient scaler
        torch.save(scaler.state_dict(), tmp / SCALER)
        written(SCALER)
    if method_state is not None:  # e.g. AdaLoRA's importance scores and rank pattern
        save_tensors(method_state, tmp / METHOD_STATE)
        written(METHOD_STATE)
    for rank, state in enumerate(rng_states):
        (tmp / rng_file(rank)).write_text(json.dumps(state))
        written(rng_file(rank))
    (tmp / STATE).write_text(json.dumps(trainer_state, indent=1))
    written(STATE)
    files = _files(tmp)
    for name in files:
        fsync_file(tmp / name)
    if sharded_tmp is not None:
        fsync_dir(tmp / SHARDS, strict=True)
    manifest = {
        "step": step,
        "world_size": len(rng_states),
        "sharded": sharded_tmp is not None,
        "seed": seed,
        "config_hash": config_hash,
        "versions": versions,
        "files": {name: {"size": (tmp / name).stat().st_size, "sha256": file_sha256(tmp / name)} for name in files},
    }
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
    fsync_file(tmp / MANIFEST)
    written(MANIFEST)
    if final.exists():  # a checkpoint of the same step from an earlier attempt: keep it, aside
        _quarantine(final, run_dir, "replaced by a newer save of the same step")
    os.replace(tmp, final)
    fsync_dir(root, strict=True)
    for old in checkpoint_dirs(run_dir)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)  # rotation of older *valid* checkpoints
    return final


def _files(directory: Path) -> list[str]:
    """Every file under ``directory``, as sorted relative POSIX paths."""
    return sorted(p.relative_to(directory).as_posix() for p in directory.rglob("*") if p.is_file())


BEST = "best"
BEST_INFO = "best.json"


def save_best(run_dir: Path, step: int, score: float, metric: str, trainable: dict[str, torch.Tensor]) -> Path:
    """Keeps the weights with the best validation score so far as ``best/step-<N>/`` (weights and
    ``best.json``: step, metric, score, the weights' SHA-256), written to a temporary directory and renamed.

    The training state (checkpointed) names the best step, so a resumed run reads exactly that entry. Older
    entries are removed by :func:`prune_best` only once no kept checkpoint names them, so a run that falls
    back to an older checkpoint still finds the best weights its state names.
    """
    root = run_dir / BEST
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    write_trainable(trainable, tmp / WEIGHTS)
    fsync_file(tmp / WEIGHTS)
    info = {"step": step, "metric": metric, "score": score, "sha256": file_sha256(tmp / WEIGHTS)}
    (tmp / BEST_INFO).write_text(json.dumps(info, indent=1))
    fsync_file(tmp / BEST_INFO)
    final = root / _best_name(step)
    if final.exists():  # a replayed step after resuming: the same weights again
        shutil.rmtree(final)
    os.replace(tmp, final)
    fsync_dir(root, strict=True)
    return final


def prune_best(run_dir: Path, current: int | None) -> None:
    """Removes ``best/step-*`` entries that neither the current best step nor any kept checkpoint names."""
    root = run_dir / BEST
    if not root.is_dir():
        return
    keep = {current}
    for path in checkpoint_dirs(run_dir):
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError, IndexError):
            best = json.loads((path / STATE).read_text())["best"]
            keep.add(int(best[0]) if best else None)
    for entry in root.glob("step-*"):
        if not any(step is not None and entry.name == _best_name(step) for step in keep):
            shutil.rmtree(entry, ignore_errors=True)


def _best_name(step: int) -> str:
    return f"step-{step:08d}"


def load_best(run_dir: Path, step: int) -> tuple[dict[str, torch.Tensor], float]:
    """The best weights saved at ``step`` and their validation score, after checking them against their
    ``best.json`` (step and SHA-256); a one-line ``PeftbenchError`` when they are missing or damaged."""
    path = run_dir / BEST / _best_name(step)
    try:
        info = read_json_file(path / BEST_INFO)
        if int(info["step"]) != step:
            raise ValueError(f"{path / BEST_INFO} records step {info['step']}")
        if file_sha256(path / WEIGHTS) != info["sha256"]:
            raise ValueError(f"{path / WEIGHTS} does not match the SHA-256 in {BEST_INFO}")
        return read_trainable(path / WEIGHTS), float(info["score"])
    except (OSError, ValueError, KeyError, TypeError, PeftbenchError) as exc:
        reason = f"{path / BEST_INFO} has no {exc}" if isinstance(exc, KeyError) else str(exc)
        raise PeftbenchError(
            f"the best weights (validation step {step}) cannot be used: {reason}; set eval.weights=last or train again"
        ) from None


# --------------------------------------------------------------------------------------------------
# Validating and loading


def checkpoint_dirs(run_dir: Path) -> list[Path]:
    """Finished checkpoint directories, oldest first (temporary ones are not included)."""
    root = run_dir / CHECKPOINTS
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith(PREFIX))


def validate_checkpoint(path: Path, config_hash: str, world_size: int, sharded: bool | None = None) -> str | None:
    """None if ``path`` is a complete, intact checkpoint of this config; else a one-line reason. ``sharded``:
    whether this run is sharded (a checkpoint of the other kind cannot be resumed); None accepts either."""
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        return "no manifest (the save did not finish)"
    try:
        manifest = read_json_file(manifest_path)
        files = manifest["files"]
        saved_world = int(manifest["world_size"])
        int(manifest["step"])
        if not isinstance(files, dict) or not all(
            isinstance(m, dict) and isinstance(m.get("size"), int) and isinstance(m.get("sha256"), str)
            for m in files.values()
        ):
            raise ValueError("its file list is malformed")
    except (PeftbenchError, ValueError, KeyError, TypeError) as exc:
        return f"unreadable manifest ({exc})"
    if manifest.get("config_hash") != config_hash:
        raise PeftbenchError(
            f"{path} was written by a run with a different config (hash {manifest.get('config_hash')} != "
            f"{config_hash}); resume with the original config, or use another run_name/output_dir"
        )
    if saved_world != world_size:
        raise PeftbenchError(
            f"{path} was saved by {saved_world} process(es) and this run has {world_size}; resuming with another "
            "world size would change the data order and RNG streams — relaunch with the original number"
        )
    saved_sharded = bool(manifest.get("sharded", False))
    if sharded is not None and saved_sharded != sharded:
        kinds = ("a sharded (FSDP)", "an unsharded") if saved_sharded else ("an unsharded", "a sharded (FSDP)")
        raise PeftbenchError(
            f"{path} was saved by {kinds[0]} run and this is {kinds[1]} one; relaunch it the way it was started"
        )
    state_files = shard_files(saved_world) if saved_sharded else [WEIGHTS, OPTIMIZER]
    required = {*state_files, SCHEDULER, STATE, *(rng_file(r) for r in range(saved_world))}
    missing = sorted(required - set(files))
    if missing:
        return f"manifest does not list {', '.join(missing)}"
    for name, meta in files.items():
        f = path / name
        if ".." in Path(name).parts or Path(name).is_absolute() or not f.is_file():
            return f"{name} is missing"
        if f.stat().st_size != meta["size"]:
            return f"{name} has {f.stat().st_size} bytes, the manifest says {meta['size']}"
        if file_sha256(f) != meta["sha256"]:
            return f"{name} does not match its SHA-256 checksum"
    return None


def _quarantine(path: Path, run_dir: Path, reason: str) -> Path:
    target_root = run_dir / QUARANTINE
    target_root.mkdir(parents=True, exist_ok=True)
    target = target_root / f"{path.name}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    os.replace(path, target)
    (target / "QUARANTINE_REASON.txt").write_text(reason + "\n")
    log.warning("quarantined %s: %s", path.name, reason)
    return target


def latest_valid_checkpoint(
    run_dir: Path, config_hash: str, world_size: int, sharded: bool | None = None
) -> Checkpoint | None:
    """The newest valid checkpoint; invalid ones (and leftovers of interrupted saves) go to quarantine/."""
    root = run_dir / CHECKPOINTS
    if root.is_dir():
        for leftover in sorted(p for p in root.iterdir() if p.name.startswith(".tmp-")):
            _quarantine(leftover, run_dir, "temporary directory of an interrupted save")
    for path in reversed(checkpoint_dirs(run_dir)):
        reason = validate_checkpoint(path, config_hash, world_size, sharded)
        if reason is None:
            manifest = json.loads((path / MANIFEST).read_text())
            return Checkpoint(path, int(manifest["step"]), manifest)
        _quarantine(path, run_dir, reason)
    return None


def load_checkpoint(ckpt: Checkpoint, rank: int) -> dict[str, Any]:
    """The pieces of a validated checkpoint for one rank; a sharded one's weights and optimizer state are its
    ``shards`` directory, for :func:`peftbench.training.fsdp.load_shards`."""
    sharded = bool(ckpt.manifest.get("sharded", False))
    return {
        "shards": ckpt.path / SHARDS if sharded else None,
        "trainable": None if sharded else read_trainable(ckpt.path / WEIGHTS),
        "optimizer": None if sharded else torch.load(ckpt.path / OPTIMIZER, weights_only=True, map_location="cpu"),
        "scheduler": torch.load(ckpt.path / SCHEDULER, weights_only=True, map_location="cpu"),
        "trainer_state": json.loads((ckpt.path / STATE).read_text()),
        "rng": json.loads((ckpt.path / rng_file(rank)).read_text()),
        "scaler": torch.load(ckpt.path / SCALER, weights_only=True) if (ckpt.path / SCALER).is_file() else None,
        "method_state": load_tensors(ckpt.path / METHOD_STATE) if (ckpt.path / METHOD_STATE).is_file() else None,
    }
