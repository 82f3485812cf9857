"""``train.gradient_checkpointing``: every method on a tiny T5 and a tiny LLaMA (and GPT-2 for the prefix) gets the
same loss and the same gradients with its transformer blocks checkpointed, and they really are recomputed in the
backward; a run through the recipe ends on the same weights with it; evaluation is unaffected."""

from __future__ import annotations

import copy
import os
import subprocess
import sys

import pytest
import torch
import yaml
from transformers import PreTrainedModel
from transformers.modeling_layers import GradientCheckpointingLayer

from peftbench.config import ExperimentConfig
from peftbench.configure import config_from_dict
from peftbench.io import load_tensors
from peftbench.methods import builtin_methods
from peftbench.models import is_encoder_decoder
from peftbench.recipe.rundir import config_hash
from peftbench.recipe.setup import build_model, enable_gradient_checkpointing
from tests.conftest import REPO, in_process, require_superni_mini, tiny_mini_config
from tests.support.processes import TORCHRUN, two_ranks
from tests.support.tiny import tiny_batch

METHODS = [spec.name for spec in builtin_methods()]
CASES = [(model, method) for model in ("tiny-t5", "tiny-llama") for method in METHODS]
CASES += [("tiny-gpt2", "prefix"), ("tiny-gpt2", "lora")]  # GPT-2 drops caches in its stack, not in its blocks
CASES += [("tiny-t5", {"name": "prefix", "scope": "all"})]  # peftbench's encoder and cross-attention prefixes
TIGHT = {"atol": 1e-5, "rtol": 1e-4}
"""Float tolerance: the backward accumulates some gradients (shared position bias, embeddings) in another order."""
AFTER_STEPS = {"atol": 1e-4, "rtol": 1e-3}
"""Weights after a few AdamW steps (lr 1e-3): Adam divides by the gradient's own scale, so a float-order difference
in a near-zero gradient moves a weight by a visible fraction of one step (1.5e-5 seen); a real difference is a
whole step or more."""


def _batch(model) -> dict[str, torch.Tensor]:
    batch = tiny_batch(model)
    if is_encoder_decoder(model):
        batch["labels"] = torch.tensor([[11, 12, 1], [13, 14, 1]])
    else:
        batch["labels"] = batch["input_ids"].clone()
    return batch


def _attention_calls(model) -> list[int]:
    """A counter of forward calls of the attention modules inside the transformer blocks (run again when a
    checkpointed block is recomputed in the backward; hooks on the blocks themselves stay outside the checkpoint)."""
    calls = [0]

    def count(*_):
        calls[0] += 1

    for block in model.modules():
        if isinstance(block, GradientCheckpointingLayer):
            for module in block.modules():
                if module is not block and type(module).__name__.endswith("Attention"):
                    module.register_forward_hook(count)
    return calls


def _pretrained(model) -> list[PreTrainedModel]:
    """The transformers models in ``model`` (T5's stacks embed with modules of their own)."""
    return [m for m in model.modules() if isinstance(m, PreTrainedModel) and m.get_input_embeddings() is not None]


def _step(model, batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One training-mode forward and backward (the same RNG state every time: dropout stays on)."""
    model.zero_grad(set_to_none=True)
    model.train()
    torch.manual_seed(1)
    loss = model(**batch).loss
    loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    return loss.detach(), {n: g.clone() if g is not None else None for n, g in grads.items()}


def _build(model_name: str, method):
    method = method if isinstance(method, dict) else {"name": method}
    torch.manual_seed(0)
    return build_model(config_from_dict({"model": {"name": model_name}, "method": method, "seed": 7}))[0]


@pytest.mark.parametrize(("model_name", "method"), CASES, ids=lambda c: c if isinstance(c, str) else c["name"] + "-all")
def test_same_loss_and_gradients_with_checkpointed_blocks(model_name, method):
    model = _build(model_name, method)
    batch = _batch(model)
    calls = _attention_calls(model)
    loss, grads = _step(model, batch)
    plain_calls, calls[0] = calls[0], 0
    assert plain_calls > 0 and all(g is not None for g in grads.values())

    enable_gradient_checkpointing(model)
    blocks = [m for m in model.modules() if isinstance(m, GradientCheckpointingLayer)]
    assert blocks and all(b.gradient_checkpointing for b in blocks)
    embedded = []
    for embedding in {id(m.get_input_embeddings()): m.get_input_embeddings() for m in _pretrained(model)}.values():
        embedding.register_forward_hook(lambda m, i, out: embedded.append(out.requires_grad))
    checkpointed_loss, checkpointed_grads = _step(model, batch)
    assert embedded and all(embedded)  # enable_input_require_grads, as peft does for checkpointed models
    assert calls[0] == 2 * plain_calls  # every block ran again in the backward
    torch.testing.assert_close(checkpointed_loss, loss, **TIGHT)
    assert checkpointed_grads.keys() == grads.keys()
    for name, grad in grads.items():
        assert checkpointed_grads[name] is not None, name
        torch.testing.assert_close(checkpointed_grads[name], grad, **TIGHT, msg=lambda m, n=name: f"{n}: {m}")
    assert grads and any(g.abs().sum() > 0 for g in grads.values())

    # evaluation: eval mode without gradients runs the blocks once, with the cache, as before
    calls[0] = 0
    model.eval()
    with torch.no_grad():
        out = model(**{k: v for k, v in batch.items() if k != "labels"}, use_cache=True)
    assert calls[0] == plain_calls and out.logits.shape[0] == 2


def test_checkpointing_leaves_generation_alone():
    model = _build("tiny-llama", "prefix")
    batch = tiny_batch(model)
    model.eval()
    with torch.no_grad():
        before = model.generate(**batch, max_new_tokens=4, do_sample=False, pad_token_id=0)
    enable_gradient_checkpointing(model)
    model.train()  # even in training mode: no gradients, so no checkpointing and the cache is kept
    model.eval()
    with torch.no_grad():
        after = model.generate(**batch, max_new_tokens=4, do_sample=False, pad_token_id=0)
    assert torch.equal(before, after)


def test_the_setting_is_not_part_of_the_config_hash(monkeypatch):
    off = config_from_dict({"method": {"name": "lora"}})
    on = copy.deepcopy(off)
    on.train.gradient_checkpointing = True
    assert off.train.gradient_checkpointing is False
    assert config_hash(on) == config_hash(off)  # the same results, the same run directory (a run may resume with it)
    hashed = config_hash(off)
    to_dict = ExperimentConfig.to_dict

    def before_the_field(cfg):  # the config as it was before train.gradient_checkpointing existed
        d = to_dict(cfg)
        del d["train"]["gradient_checkpointing"]
        return d

    monkeypatch.setattr(ExperimentConfig, "to_dict", before_the_field)
    assert config_hash(off) == hashed  # existing runs keep their hash


@pytest.mark.slow
def test_a_run_ends_on_the_same_weights_with_checkpointing(tmp_path):
    data_dir = require_superni_mini()
    weights = {}
    for flag in (False, True):
        cfg = tiny_mini_config(data_dir, tmp_path / str(flag) / "runs", "tiny-llama", "adapter_houlsby")
        cfg["train"]["gradient_checkpointing"] = flag
        path = tmp_path / f"{flag}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        proc = in_process("train", str(path), "train.learning_rate=1e-3", "--no-progress")
        assert proc.returncode == 0, proc.stderr[-3000:]
        (run_dir,) = (tmp_path / str(flag) / "runs").iterdir()
        weights[flag] = load_tensors(run_dir / "trainable.safetensors")
        assert yaml.safe_load((run_dir / "config.yaml").read_text())["train"]["gradient_checkpointing"] is flag
    assert weights[True].keys() == weights[False].keys()
    for name, tensor in weights[False].items():
        torch.testing.assert_close(weights[True][name], tensor, **AFTER_STEPS)


FSDP_SCRIPT = """
import sys, torch, torch.distributed as dist
from peftbench.configure import config_from_dict
from peftbench.io import save_tensors
from peftbench.recipe.setup import build_model, enable_gradient_checkpointing
from peftbench.training.fsdp import Sharding, gather_trainable, shard_model
from tests.support.tiny import tiny_batch
dist.init_process_group("gloo")
rank, checkpointed = dist.get_rank(), sys.argv[2] == "on"
torch.manual_seed(0)
model = build_model(config_from_dict({"model": {"name": "tiny-llama"}, "method": {"name": sys.argv[3]}}))[0]
if checkpointed:
    enable_gradient_checkpointing(model)
shard_model(model, Sharding(), "no", torch.device("cpu"))
batch = {k: v[rank : rank + 1] for k, v in tiny_batch(model).items()}
batch["labels"] = batch["input_ids"]
optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
model.train()
for _ in range(3):
    torch.manual_seed(1)
    model(**batch).loss.backward()
    optimizer.step()
    optimizer.zero_grad()
weights = gather_trainable(model)
if rank == 0:
    save_tensors(weights, sys.argv[1])
dist.destroy_process_group()
"""


@pytest.mark.slow
@pytest.mark.xdist_group("gradient_checkpointing_ranks")
@pytest.mark.parametrize(
    "method", ["prefix"]
)  # the hardest case: a cache kept across recomputation; bitfit's hooks: tested in one process
def test_checkpointed_blocks_inside_fsdp_units_train_the_same(tmp_path, method):
    """2 CPU ranks (gloo), every block a fully_shard unit (peftbench's FSDP2 sharding): the same gathered weights
    after 3 AdamW steps with and without gradient checkpointing (FSDP's hooks stay outside the checkpoint, and the
    recomputation gathers the block's weights again)."""
    script = tmp_path / "fsdp_steps.py"
    script.write_text(FSDP_SCRIPT)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    procs = {
        flag: subprocess.Popen(
            [sys.executable, *TORCHRUN, str(script), str(tmp_path / f"{flag}.st"), flag, method],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        for flag in ("off", "on")
    }
    for proc in procs.values():
        out, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, out[-3000:]
    off, on = (load_tensors(tmp_path / f"{flag}.st") for flag in ("off", "on"))
    assert on.keys() == off.keys() and on
    for name, tensor in off.items():
        torch.testing.assert_close(on[name], tensor, **AFTER_STEPS)


@pytest.mark.slow
@pytest.mark.xdist_group("gradient_checkpointing_ranks")
@pytest.mark.parametrize(
    ("launch", "model_name", "method"),
    [("ddp", "tiny-llama", "prefix")],  # adapters and T5: the single-process equality covers them
)
def test_checkpointed_blocks_train_the_same_on_two_ranks(tmp_path, launch, model_name, method):
    """2 CPU ranks (gloo) through the recipe, DDP: the same final weights with and without gradient checkpointing.
    (Through the recipe with FSDP too, once the trainer's memory sampling runs under FSDP: see the report.)"""
    data_dir = require_superni_mini()
    env = {"ACCELERATE_USE_FSDP": "true"} if launch == "fsdp" else {}
    procs = {}
    for flag in (False, True):
        cfg = tiny_mini_config(data_dir, tmp_path / "runs", model_name, method, run_name=str(flag))
        cfg["train"].update(gradient_checkpointing=flag, learning_rate=1e-3)
        path = tmp_path / f"{flag}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        procs[flag] = two_ranks("train", str(path), "--no-progress", env=env)
    for proc in procs.values():  # side by side: 4 processes of 1 thread each
        out, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, out[-3000:]
    off, on = (load_tensors(tmp_path / "runs" / str(flag) / "trainable.safetensors") for flag in (False, True))
    assert on.keys() == off.keys() and on
    for name, tensor in off.items():
        torch.testing.assert_close(on[name], tensor, **AFTER_STEPS)
