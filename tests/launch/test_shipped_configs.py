"""The configs `peftbench run` and `peftbench sweep` read ship as package data (``peftbench/configs/``).

The checkout's top-level ``configs/`` is the user-facing copy: every folder of it (presets, methods, sweeps,
accelerate configs) is in the package byte for byte (``make configs`` copies it over); its top-level files are
`peftbench train` examples and are not shipped. tests/launch/test_wheel.py builds and installs the wheel.
"""

from __future__ import annotations

import glob
import importlib.resources
import shutil
from pathlib import Path

import pytest

from peftbench.errors import PeftbenchError
from peftbench.launch.presets import (
    available_sweeps,
    configs_dir,
    launch_command,
    preset_config,
    shipped_path,
    sweep_file,
)
from tests.conftest import REPO

CHECKOUT = REPO / "configs"
PACKAGE = REPO / "src" / "peftbench" / "configs"


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def checkout_copy() -> dict[str, bytes]:
    """Every file in a folder of the checkout's configs/ (what the package must hold)."""
    return {name: data for name, data in _files(CHECKOUT).items() if "/" in name}


@pytest.fixture(autouse=True)
def _no_override(monkeypatch):
    monkeypatch.delenv("PEFTBENCH_CONFIGS", raising=False)


def test_package_configs_are_the_checkouts_byte_for_byte():
    package, checkout = _files(PACKAGE), checkout_copy()
    assert {"presets/defaults.yaml", "methods/lora.yaml", "sweeps/study.yaml", "accelerate/ddp.yaml"} <= set(checkout)
    fix = "configs/ is the user-facing copy of src/peftbench/configs/: run `make configs` to copy it over"
    assert sorted(set(checkout) - set(package)) == [], f"missing from the package; {fix}"
    assert sorted(set(package) - set(checkout)) == [], f"only in the package; {fix}"
    assert [name for name in checkout if package[name] != checkout[name]] == [], f"the copies differ; {fix}"


def test_pyproject_package_data_covers_every_shipped_config():
    tomllib = pytest.importorskip("tomllib")
    patterns = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["peftbench"]
    root = REPO / "src" / "peftbench"
    matched = {Path(m).as_posix() for pattern in patterns for m in glob.glob(pattern, root_dir=root, recursive=True)}
    assert sorted(f"configs/{name}" for name in _files(PACKAGE) if f"configs/{name}" not in matched) == []


def test_presets_are_read_from_the_package():
    assert configs_dir() == Path(str(importlib.resources.files("peftbench") / "configs"))
    assert configs_dir().resolve() == PACKAGE.resolve()
    assert available_sweeps() == sorted(Path(name).stem for name in _files(PACKAGE) if name.startswith("sweeps/"))


def test_configs_paths_resolve_to_the_shipped_files_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no configs/ here
    command = launch_command(preset_config("lora", "full"), ["train", "c.yaml"])
    accelerate = Path(command[command.index("--config_file") + 1])
    assert accelerate == configs_dir() / "accelerate" / "ddp.yaml" and accelerate.is_file()
    assert sweep_file("study") == sweep_file("configs/sweeps/study.yaml") == configs_dir() / "sweeps" / "study.yaml"
    assert shipped_path("configs/accelerate/fsdp.yaml") == configs_dir() / "accelerate" / "fsdp.yaml"
    # what exists here, absolute paths and other names are left alone (load_sweep names a missing file)
    (tmp_path / "configs" / "sweeps").mkdir(parents=True)
    (tmp_path / "configs" / "sweeps" / "study.yaml").write_text("mode: dev\nmethods: [lora]\n")
    (tmp_path / "mine.yaml").write_text("mode: dev\nmethods: [lora]\n")
    assert sweep_file("configs/sweeps/study.yaml") == Path("configs/sweeps/study.yaml")
    assert sweep_file("mine.yaml") == Path("mine.yaml") and sweep_file("nope") == Path("nope")
    assert sweep_file("sweeps/study.yaml") == Path("sweeps/study.yaml")
    assert shipped_path("/abs/configs/x.yaml") == Path("/abs/configs/x.yaml")


def test_peftbench_configs_still_overrides_the_shipped_files(tmp_path, monkeypatch):
    mine = tmp_path / "my-configs"
    shutil.copytree(PACKAGE, mine)
    lora = mine / "methods" / "lora.yaml"
    lora.write_text(lora.read_text().replace("  r: 64", "  r: 12", 1))
    monkeypatch.setenv("PEFTBENCH_CONFIGS", str(mine))
    monkeypatch.chdir(tmp_path)
    assert configs_dir() == mine and preset_config("lora").method["r"] == 12
    command = launch_command(preset_config("lora", "full"), ["train", "c.yaml"])
    assert command[command.index("--config_file") + 1] == str(mine / "accelerate" / "ddp.yaml")
    assert sweep_file("dev") == mine / "sweeps" / "dev.yaml"
    monkeypatch.setenv("PEFTBENCH_CONFIGS", str(tmp_path / "nowhere"))
    with pytest.raises(PeftbenchError, match="set PEFTBENCH_CONFIGS"):
        configs_dir()
