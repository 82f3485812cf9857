"""Writing files so that a crash never leaves a half-written one in place, and reading them back so that a torn
or corrupted copy leads to one line, never a traceback (:func:`read_text_file`, :func:`read_json_file`)."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save

from peftbench.errors import PeftbenchError


class DamagedFileError(PeftbenchError):
    """A file peftbench wrote and reads back is not what it wrote: torn by a crash, corrupted, emptied, or replaced
    by a directory. The message is one line naming the file, what is wrong and what to do."""

    def __init__(self, path: str | Path, reason: str, advice: str = "") -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{path} is damaged ({reason})" + (f"; {advice}" if advice else ""))


def read_file_bytes(path: str | Path, advice: str = "") -> bytes:
    """The bytes of a file peftbench wrote. Raises :class:`DamagedFileError` when it is a directory or cannot be read
    (``FileNotFoundError`` passes through: a missing file is the caller's case)."""
    path = Path(path)
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise
    except IsADirectoryError:
        raise DamagedFileError(path, "a directory, not a file", advice) from None
    except OSError as exc:
        raise DamagedFileError(path, f"unreadable: {exc.strerror or exc}", advice) from None


def read_text_file(path: str | Path, advice: str = "") -> str:
    """The UTF-8 text of a file peftbench wrote; :class:`DamagedFileError` as :func:`read_file_bytes`, and when it
    is not valid UTF-8."""
    data = read_file_bytes(path, advice)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DamagedFileError(path, f"not valid UTF-8 at byte {exc.start}", advice) from None


def read_json_file(path: str | Path, advice: str = "", kind: type = dict) -> Any:
    """A JSON document peftbench wrote, which must be a ``kind`` (a dict unless said otherwise). Raises
    :class:`DamagedFileError` (one line) for anything else: empty, torn, not UTF-8, not JSON, another type."""
    text = read_text_file(path, advice)
    if not text.strip():
        raise DamagedFileError(path, "empty", advice)
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise DamagedFileError(path, f"not valid JSON: {getattr(exc, 'msg', exc)}", advice) from None
    if not isinstance(value, kind):
        raise DamagedFileError(path, f"expected a JSON {_JSON_NAMES.get(kind, kind.__name__)}", advice)
    return value


_JSON_NAMES = {dict: "object", list: "array"}


def fsync_dir(path: Path, strict: bool = False) -> None:
    """Makes a directory's entries (a rename into it) durable. ``strict``: an error is raised, not ignored (a
    checkpoint must not be trusted without it; a plain atomic write is still atomic on a filesystem that cannot
    fsync a directory)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        if strict:
            raise
        return
    try:
        os.fsync(fd)
    except OSError:
        if strict:
            raise
    finally:
        os.close(fd)


def fsync_file(path: Path) -> None:
    """Flushes a written file's data to disk."""
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def _umask() -> int:
    """The process's umask (read without changing it where Linux shows it)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def temporary_dir(parent: Path, prefix: str) -> Path:
    """A new directory in ``parent`` to fill and then rename into place, with the permissions ``mkdir`` would give
    it (``mkdtemp`` alone makes it 0700)."""
    tmp = Path(tempfile.mkdtemp(dir=parent, prefix=prefix, suffix=".tmp"))
    os.chmod(tmp, 0o777 & ~_umask())
    return tmp


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Writes ``data`` to ``path`` via a temporary sibling, fsync and rename; readers never see a partial file.
    The file gets the permissions ``open`` would give it (0666 less the umask; a temporary file alone is 0600,
    which hid results from the rest of a group on shared clusters)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_dir():
        raise DamagedFileError(path, "a directory where peftbench writes a file", "move it away and run again")
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Writes UTF-8 ``text`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    """Writes ``obj`` as indented JSON atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def file_sha256(path: str | Path) -> str:
    """The SHA-256 of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def save_tensors(tensors: dict[str, torch.Tensor], path: str | Path, metadata: dict[str, str] | None = None) -> None:
    """Saves tensors as safetensors atomically (contiguous CPU copies, so views and ties are fine)."""
    plain = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    atomic_write_bytes(path, save(plain, metadata=metadata))


def load_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    """Loads a safetensors file (never unpickles)."""
    return load_file(str(path))


def tensor_metadata(path: str | Path) -> dict[str, str]:
    """The string metadata of a safetensors file (empty when it has none)."""
    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata() or {})


def cache_dir() -> Path:
    """peftbench's cache root: ``$PEFTBENCH_CACHE``, default ``~/.cache/peftbench`` (tokenised features, the demo's
    data and pre-trained bases)."""
    return Path(os.environ.get("PEFTBENCH_CACHE", Path.home() / ".cache" / "peftbench"))
