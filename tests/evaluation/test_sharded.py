"""Evaluation split across ranks (``evaluation/ranks.py``): the same ``predictions.jsonl`` as one process.

Fast: the assignment of batches to ranks. Slow (real ``torchrun`` with 2 CPU processes over gloo, as
``tests/training/test_distributed.py``): ``peftbench evaluate`` on 2 ranks writes a file byte-identical to
a 1-process evaluation of the same weights, and a 2-rank ``peftbench train`` stopped by SIGTERM during its
test evaluation resumes without losing or repeating a line.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time

import pytest
import yaml

from peftbench.evaluation.ranks import assign_rounds
from tests.conftest import in_process, require_superni_mini, tiny_mini_config
from tests.support.processes import two_ranks
from tests.support.slow import slow_env

ONE_THREAD = {"OMP_NUM_THREADS": "1"}  # the same kernels in every process (1- and 2-rank runs alike)


def test_rounds_deal_every_batch_once_in_order_and_balance_tokens():
    costs = [100, 90, 90, 80, 40, 40, 40, 35, 10]
    rounds = assign_rounds(costs, 2)
    dealt = [k for slots in rounds for k in sorted(k for k in slots if k is not None)]
    assert dealt == list(range(len(costs)))  # each once, rounds in order
    assert all(len(slots) == 2 for slots in rounds) and rounds[-1].count(None) == 1
    loads = [sum(costs[k] for slots in rounds if (k := slots[r]) is not None) for r in range(2)]
    assert abs(loads[0] - loads[1]) <= max(costs)
    assert assign_rounds(costs, 2) == rounds  # deterministic: every rank computes the same
    assert assign_rounds(costs, 1) == [[k] for k in range(len(costs))]  # one process: the plan's order
    assert assign_rounds([], 3) == []


def _config(data_dir, out, name: str) -> dict:
    # LLaMA: a random tiny T5 ends every answer at once; LLaMA's are 8 tokens, and its shared prefixes are used
    cfg = tiny_mini_config(data_dir, out, model="tiny-llama", run_name=name)
    cfg["data"]["max_eval_instances_per_task"] = 2  # 12 tasks x 2 = 24 test examples: several rounds of batch 4
    cfg["eval"] = {"batch_size": 4, "max_new_tokens": 8}
    return cfg


@pytest.fixture(scope="module")
def one_process_run(tmp_path_factory):
    data_dir = require_superni_mini()
    root = tmp_path_factory.mktemp("sharded")
    path = root / "one.yaml"
    path.write_text(yaml.safe_dump(_config(data_dir, root / "runs", "one")))
    proc = in_process("train", str(path), "--no-progress", env=ONE_THREAD)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root, path, root / "runs" / "one"


@pytest.mark.slow
@pytest.mark.xdist_group("sharded")
def test_two_rank_evaluate_writes_the_one_process_predictions(one_process_run, tmp_path):
    _, _, one = one_process_run
    two = tmp_path / "two"
    shutil.copytree(one, two)
    (two / "predictions.jsonl").unlink()
    proc = two_ranks("evaluate", str(two), "--no-progress")
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-3000:]
    expected = (one / "predictions.jsonl").read_bytes()
    assert len(expected.splitlines()) == 24 and expected.count(b'"prediction": ""') < 24
    assert (two / "predictions.jsonl").read_bytes() == expected
    a, b = (json.loads((d / "metrics.json").read_text()) for d in (one, two))
    assert a["overall"] == b["overall"]
    assert "over 2 ranks" in (two / "train.log").read_text()


@pytest.mark.slow
@pytest.mark.xdist_group("sharded")
def test_two_rank_run_preempted_during_evaluation_resumes_without_losing_or_repeating_a_line(one_process_run, tmp_path):
    _, path, _ = one_process_run
    args = ("train", str(path), f"output_dir={tmp_path / 'runs'}", "run_name=two", "--no-progress")
    proc = two_ranks(*args, env=slow_env(evaluation_batch_s=0.5))
    predictions = tmp_path / "runs" / "two" / "predictions.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and not (predictions.is_file() and len(predictions.read_text().splitlines()) >= 4):
        assert proc.poll() is None, proc.communicate()[0][-3000:]
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGTERM)  # as Slurm does: every process of the job
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode != 0, out[-3000:]
    partial = predictions.read_text().splitlines()
    assert 4 <= len(partial) < 24, out[-3000:]
    assert not (tmp_path / "runs" / "two" / "metrics.json").exists()

    again = two_ranks(*args)
    out, _ = again.communicate(timeout=600)
    assert again.returncode == 0, out[-3000:]
    lines = predictions.read_text().splitlines()
    assert lines[: len(partial)] == partial  # kept, not regenerated
    ids = [json.loads(line)["id"] for line in lines]
    assert len(ids) == len(set(ids)) == 24
    # the 2-rank training's weights differ from 1 rank's in the last bits: compare with a 1-process
    # evaluation of these very weights, which must give the same file
    copy = tmp_path / "copy"
    shutil.copytree(tmp_path / "runs" / "two", copy)
    proc = in_process("evaluate", str(copy), "--no-progress", env=ONE_THREAD)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (copy / "predictions.jsonl").read_text().splitlines() == lines


def _validation_worker(rank: int, world: int, init_file: str, out_dir: str, data_dir: str) -> None:
    """One rank of a 2-process group generating as validation does: ``out_path=None``, every rank returns all."""
    import torch
    import torch.distributed as dist

    from peftbench.configure import config_from_dict
    from peftbench.evaluation.generate import generate_predictions
    from peftbench.models import is_encoder_decoder
    from peftbench.recipe.setup import build_model, prepare_data

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        cfg = config_from_dict(_config(data_dir, out_dir, "validation"))
        model, tokenizer = build_model(cfg)
        features = prepare_data(cfg, tokenizer, model).test
        records = generate_predictions(model.eval(), tokenizer, features, None, batch_size=4, max_new_tokens=8,
                                       encoder_decoder=is_encoder_decoder(model), progress=False)  # fmt: skip
        with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
            json.dump(records, f)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.xdist_group("sharded")
def test_two_rank_generation_without_a_file_returns_every_record_on_every_rank(superni_mini, tmp_path):
    """Validation during training generates with ``out_path=None`` on every rank: each rank must get all the
    records, in the 1-process order, or the validation ROUGE-L (and the best-checkpoint choice) would differ."""
    import torch.multiprocessing as mp

    from peftbench.configure import config_from_dict
    from peftbench.evaluation.generate import generate_predictions
    from peftbench.models import is_encoder_decoder
    from peftbench.recipe.setup import build_model, prepare_data

    mp.spawn(_validation_worker, args=(2, str(tmp_path / "init"), str(tmp_path), str(superni_mini)), nprocs=2)
    cfg = config_from_dict(_config(str(superni_mini), str(tmp_path), "validation"))
    model, tokenizer = build_model(cfg)
    features = prepare_data(cfg, tokenizer, model).test
    one = generate_predictions(model.eval(), tokenizer, features, None, batch_size=4, max_new_tokens=8,
                               encoder_decoder=is_encoder_decoder(model), progress=False)  # fmt: skip
    assert len(one) == 24 and any(r["prediction"] for r in one)  # LLaMA answers: not all empty
    for rank in (0, 1):
        assert json.loads((tmp_path / f"rank{rank}.json").read_text()) == one, rank
