"""`peftbench plan`: a table from shapes alone, whether it fits, and one-line errors for bad input."""

from __future__ import annotations

import pytest

from tests.conftest import in_process

ENV = {"HF_HUB_OFFLINE": "1"}


def test_plan_dev_preset_prints_the_table():
    proc = in_process("plan", "--preset", "lora", "--mode", "dev", "train.per_device_batch_size=2", env=ENV)
    assert proc.returncode == 0, proc.stderr
    for row in ("weights (frozen)", "trainable weights", "gradients", "optimizer state", "activations", "peak"):
        assert row in proc.stdout
    assert "train batch 2x" in proc.stdout


def test_plan_says_what_would_fit():
    proc = in_process("plan", "--preset", "lora", "--mode", "dev", "--gpu-memory", "1MiB", env=ENV)
    assert proc.returncode == 1, proc.stderr
    assert ("does not fit" in proc.stdout and "would fit" in proc.stdout) or "nothing planned" in proc.stdout
    ok = in_process("plan", "--preset", "lora", "--mode", "dev", "--gpu-memory", "80GiB", env=ENV)
    assert ok.returncode == 0 and "fits in 80.00 GiB" in ok.stdout


def test_plan_shipped_model_config_offline():
    proc = in_process(
        "plan", "--preset", "lora", "--mode", "dev", "model.name=google/t5-small-lm-adapt", "--world-size", "2", env=ENV
    )
    assert proc.returncode == 0, proc.stderr
    assert "google/t5-small-lm-adapt" in proc.stdout and "DDP over 2 devices" in proc.stdout


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--preset", "lora", "--mode", "dev", "--gpu-memory", "lots"], "memory size"),
        (["--preset", "loraa", "--mode", "dev"], "loraa"),
        (["--preset", "lora", "--mode", "dev", "--world-size", "0"], "--world-size"),
        ([], "CONFIG or --preset"),
        (["missing.yaml"], "does not exist"),
        (["--preset", "lora", "--mode", "dev", "model.name=no-such/model-xyz"], "no-such/model-xyz"),
    ],
)
def test_plan_bad_input_is_one_line(argv, needle):
    proc = in_process("plan", *argv, env=ENV)
    assert proc.returncode == 2, proc.stdout
    err = proc.stderr.strip()
    assert err.startswith("peftbench: error: ") and "\n" not in err and "Traceback" not in err, err
    assert needle in err, err
