"""Atomic writes: the file appears whole or not at all, with the permissions a plain ``open`` gives it."""

from __future__ import annotations

import os
import stat

import pytest

from peftbench.io import atomic_write_bytes, atomic_write_json, load_tensors, save_tensors


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_written_files_follow_the_umask_like_open(tmp_path, umask):
    old = os.umask(umask)
    try:
        atomic_write_bytes(tmp_path / "a.bin", b"x")
        atomic_write_json(tmp_path / "metrics.json", {"a": 1})
        with open(tmp_path / "plain.txt", "w") as f:  # the reference: what open() gives under this umask
            f.write("x")
    finally:
        os.umask(old)
    expected = stat.S_IMODE((tmp_path / "plain.txt").stat().st_mode)
    assert expected == 0o666 & ~umask
    for name in ("a.bin", "metrics.json"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == expected, name


def test_a_rewrite_replaces_the_file_and_leaves_no_temporary(tmp_path):
    import torch

    save_tensors({"w": torch.ones(2)}, tmp_path / "w.safetensors")
    save_tensors({"w": torch.zeros(3)}, tmp_path / "w.safetensors")
    assert torch.equal(load_tensors(tmp_path / "w.safetensors")["w"], torch.zeros(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.safetensors"]


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_directories_filled_then_renamed_follow_the_umask_like_mkdir(tmp_path, umask):
    from peftbench.io import temporary_dir

    old = os.umask(umask)
    try:
        made = temporary_dir(tmp_path, prefix=".out.")
        (tmp_path / "plain").mkdir()  # the reference: what mkdir gives under this umask
    finally:
        os.umask(old)
    assert made.parent == tmp_path and made.name.startswith(".out.")
    assert stat.S_IMODE(made.stat().st_mode) == stat.S_IMODE((tmp_path / "plain").stat().st_mode) == 0o777 & ~umask
