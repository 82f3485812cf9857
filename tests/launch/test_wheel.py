"""An installed peftbench works outside the checkout: the sdist and the wheel ship every config, and a wheel
installed into a fresh virtual environment runs a preset, plans the study sweep and runs the quick demo from a
directory with no configs/ in it, with the worked example of docs/own-method.md (examples/my_method) installed
beside it as a package whose entry point adds its method to the demo (about 1 minute, most of it the demo).

The new environment gets this one's dependencies (torch, transformers, ...) through a .pth file naming this
environment's site-packages, so nothing is downloaded; peftbench itself is imported from the installed wheel,
never from the checkout's src/ (a .pth file on that path is not processed, so the editable install is not seen).
"""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow

CHECKOUT_CONFIGS = REPO / "configs"
EXAMPLE = REPO / "examples" / "my_method"


def _run(command: list[str], cwd: Path, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{command} exited {proc.returncode}:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc


def shipped_configs() -> dict[str, bytes]:
    """Every file in a folder of the checkout's configs/: what the package must hold, by its path in the package."""
    return {
        f"peftbench/configs/{p.relative_to(CHECKOUT_CONFIGS).as_posix()}": p.read_bytes()
        for p in sorted(CHECKOUT_CONFIGS.glob("*/**/*"))
        if p.is_file()
    }


def build_wheel(tmp_path: Path) -> Path:
    """An sdist of a copy of the checkout's sources, then a wheel built from that sdist (as pip builds from PyPI)."""
    source = tmp_path / "source"
    source.mkdir()
    for path in [REPO / "pyproject.toml", REPO / "README.md", *REPO.glob("LICEN[CS]E*")]:
        shutil.copy2(path, source)
    shutil.copytree(REPO / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    hook = "import setuptools.build_meta as b; print(b.build_sdist('dist'))"
    sdist = source / "dist" / _run([sys.executable, "-c", hook], cwd=source).stdout.strip().splitlines()[-1]
    with tarfile.open(sdist) as tar:
        in_sdist = {name.split("/src/", 1)[-1] for name in tar.getnames() if "/src/peftbench/configs/" in name}
    assert sorted(set(shipped_configs()) - in_sdist) == [], "config files missing from the sdist"
    wheels = tmp_path / "wheels"
    _run([sys.executable, "-m", "pip", "wheel", str(sdist), "--no-deps", "--no-build-isolation", "-q", "-w",
          str(wheels)], cwd=tmp_path)  # fmt: skip
    (wheel,) = wheels.glob("peftbench-*.whl")
    return wheel


def test_installed_wheel_runs_presets_sweeps_and_the_demo_outside_the_checkout(tmp_path):
    wheel = build_wheel(tmp_path)
    with zipfile.ZipFile(wheel) as zf:
        in_wheel = {name: zf.read(name) for name in zf.namelist() if name.startswith("peftbench/configs/")}
    expected = shipped_configs()
    assert len(expected) >= 25 and sorted(set(expected) - set(in_wheel)) == [], "config files missing from the wheel"
    assert [name for name in expected if in_wheel[name] != expected[name]] == [], "the wheel's configs differ"

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=tmp_path)
    python = venv / "bin" / "python"
    # Installed before the .pth below exists, so pip sees no other peftbench in the new environment.
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", "--no-index",
          str(wheel)], cwd=tmp_path)  # fmt: skip
    # The worked example of docs/own-method.md, installed as a package: its entry point registers scaled_lora.
    example_source = shutil.copytree(EXAMPLE, tmp_path / "my_method", ignore=shutil.ignore_patterns("__pycache__"))
    _run([sys.executable, "-m", "pip", "wheel", str(example_source), "--no-deps", "--no-build-isolation", "-q", "-w",
          str(tmp_path / "wheels")], cwd=tmp_path)  # fmt: skip
    (example,) = (tmp_path / "wheels").glob("my_method-*.whl")
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", "--no-index",
          str(example)], cwd=tmp_path)  # fmt: skip
    purelib = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=tmp_path)
    (Path(purelib.stdout.strip()) / "_peftbench_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    work = tmp_path / "work"  # the user's directory: no configs/, not the checkout
    work.mkdir()
    env = {key: value for key, value in os.environ.items()
           if key not in ("PYTHONPATH", "PEFTBENCH_CONFIGS", "VIRTUAL_ENV", "PYTHONHOME",
                          "PEFTBENCH_DISABLE_PLUGIN_AUTOLOAD")}  # fmt: skip
    env.update(HF_HUB_OFFLINE="1", PEFTBENCH_CACHE=str(tmp_path / "cache"), PATH=f"{venv / 'bin'}{os.pathsep}"
               f"{env.get('PATH', '')}", PYTHONUNBUFFERED="1", TOKENIZERS_PARALLELISM="false")  # fmt: skip
    where = (
        "import peftbench\n"
        "from peftbench.launch.presets import configs_dir, launch_command, preset_config, sweep_file\n"
        "command = launch_command(preset_config('full'), ['train', 'c.yaml'])\n"
        "print(peftbench.__file__, configs_dir(), command[command.index('--config_file') + 1], sweep_file('study'),"
        " sep='\\n')\n"
    )
    package, configs, accelerate, study = _run([str(python), "-c", where], cwd=work, env=env).stdout.split()
    inside = venv.resolve()
    assert Path(package).resolve().is_relative_to(inside), f"peftbench imported from {package}, not the wheel"
    assert Path(configs).resolve().is_relative_to(inside) and Path(configs).name == "configs"
    assert Path(accelerate).is_file() and Path(accelerate).resolve().is_relative_to(inside)
    assert Path(accelerate).name == "deepspeed_zero3.yaml"
    assert Path(study) == Path(configs) / "sweeps" / "study.yaml"

    peftbench = str(venv / "bin" / "peftbench")
    printed = _run([peftbench, "run", "lora", "--mode", "dev", "--print-config"], cwd=work, env=env).stdout
    assert "name: lora" in printed and "name: tiny-t5" in printed

    planned = _run([peftbench, "sweep", "study", "--dry-run"], cwd=work, env=env).stdout
    assert "full-" in planned and "lora-r512-" in planned and " runs (" in planned  # the study's grid

    listed = _run([peftbench, "methods"], cwd=work, env=env).stdout
    assert "scaled_lora: LoRA with alpha/sqrt(r) scaling" in listed
    assert "from: package my-method (entry point scaled_lora = my_method)" in listed

    # The installed plugin trains, is evaluated and reported beside LoRA, with nothing naming its module.
    demo = _run([peftbench, "demo", "--quick", "--methods", "lora,scaled_lora", "--output-dir", "demo",
                 "--no-progress"], cwd=work, env=env, timeout=400)  # fmt: skip
    with open(work / "demo" / "report.csv", newline="") as f:
        rows = {row["run"]: row for row in csv.DictReader(f)}
    assert set(rows) == {"untrained", "lora", "scaled_lora"}, demo.stdout[-2000:]
    assert rows["scaled_lora"]["method"] == "scaled_lora" and float(rows["scaled_lora"]["trainable params"]) > 0
    assert not (work / "configs").exists()
