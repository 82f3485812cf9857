"""`peftbench demo`: the embedded default, through the real command line.

The quick variant checks the plumbing (data, cached base, baseline + methods over two seeds, report, idempotent
re-run). The full variant is `make demo`'s run of the methods it claims, and checks the claim: every trained
method scores at least ``CLAIM_MARGIN`` ROUGE-L points above the untrained base on the unseen test tasks, except
prompt tuning (``UNCLAIMED``: it does not learn reliably at this scale; not run there). The margin is what held
for every training seed under every CPU kernel `bench/demo_spread.py` measured (docs/demo.md), not one seed's
margin on one CPU: no ordering among methods and no digits are asserted.
"""

from __future__ import annotations

import csv
import json

import pytest

from peftbench.demo.runner import CLAIM_MARGIN, DEMO_METHODS, SEED, UNCLAIMED, Claim, check_claims, run_name
from peftbench.io import cache_dir
from tests.conftest import in_process, run_cli


def _rows(report_csv):
    with open(report_csv, newline="") as f:
        return {row["run"]: row for row in csv.DictReader(f)}


@pytest.mark.slow
def test_quick_demo_runs_end_to_end_and_is_idempotent(tmp_path):
    env = {"PEFTBENCH_CACHE": str(tmp_path / "cache")}
    out = tmp_path / "demo"
    proc = in_process("demo", "--quick", "--output-dir", str(out), "--no-progress", "--seeds", "42,7", env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = _rows(out / "report.csv")
    methods = {"lora", "adapter_houlsby", "prompt", "full"}
    assert set(rows) == {"untrained"} | methods | {f"{m}-s7" for m in methods}
    assert {rows[m]["seed"] for m in methods} == {"42"} and {rows[f"{m}-s7"]["seed"] for m in methods} == {"7"}
    with open(out / "report_configurations.csv", newline="") as f:
        configurations = list(csv.DictReader(f))
    assert {c["method"]: c["seeds"] for c in configurations} == dict.fromkeys(methods, "7, 42")  # one config, 2 seeds
    assert "claim: every method (but prompt) >=" in proc.stdout and proc.stdout.count(" vs untrained: ") == 4
    (prompt,) = (line for line in proc.stdout.splitlines() if line.strip().startswith("prompt: ROUGE-L"))
    assert "not claimed: prompt tuning does not learn reliably" in prompt  # run and shown, never a failure
    assert proc.stdout.count("not checked (--quick trains 10 steps") == 3 and "NOT MET" not in proc.stdout
    assert float(rows["untrained"]["trainable params"]) == 0
    assert 0 < float(rows["prompt"]["trainable % of base"]) < float(rows["lora"]["trainable % of base"]) < 100
    assert (out / "report.png").read_bytes()[:4] == b"\x89PNG"
    assert "| untrained |" in proc.stdout  # the table is printed
    (base,) = (tmp_path / "cache" / "bases").glob("tiny-t5-*")
    assert (base / "config.json").is_file() and (base / "tokenizer.json").is_file()

    again = in_process("demo", "--quick", "--output-dir", str(out), "--no-progress", "--seeds", "42,7", env=env)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "(cached)" in again.stdout and again.stdout.count("already finished") == 8
    assert _rows(out / "report.csv") == rows

    # a damaged cached base (a bit flipped in its weights) is set aside, never used, and pre-trained again
    weights = base / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-5] ^= 1
    weights.write_bytes(bytes(data))
    third = in_process("demo", "--quick", "--output-dir", str(out), "--no-progress", env=env)
    assert third.returncode == 0, third.stderr[-3000:]
    assert "is damaged; set aside" in third.stdout and "(cached)" not in third.stdout
    assert len(list((tmp_path / "cache" / "bases").glob(f".{base.name}.damaged-*"))) == 1


def test_demo_methods_option_rejects_unknown_names(cli, tmp_path):
    proc = cli("demo", "--quick", "--methods", "lora,nope", "--output-dir", str(tmp_path))
    assert proc.returncode == 2 and "unknown method 'nope'" in proc.stderr
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("seeds", ["a,b", "1.5", ",", "42,x"])
def test_demo_seeds_option_rejects_non_integers_in_one_line(cli, tmp_path, seeds):
    proc = cli("demo", "--quick", "--seeds", seeds, "--output-dir", str(tmp_path))
    assert proc.returncode == 2 and "--seeds" in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "runs").exists()


def test_the_claim_needs_the_margin_for_every_seed_not_on_average():
    assert Claim("m", {1: 10.0, 2: 4.0 + CLAIM_MARGIN}, base=4.0).holds  # exactly the margin counts
    # a mean far above the base does not hide one seed that fell to the base (prompt tuning at lr 1 did this)
    assert not Claim("m", {1: 30.0, 2: 30.0, 3: 4.5}, base=4.0).holds
    assert not Claim("m", {}, base=0.0).holds
    assert "NOT MET" in Claim("m", {1: 4.5}, base=4.0).line() and "holds" in Claim("m", {1: 9.0}, base=4.0).line()
    assert "not claimed" in Claim("prompt", {1: 1.0}, base=1.0).line()  # shown, never a failure
    assert "not checked" in Claim("m", {1: 4.5}, base=4.0, quick=True).line()  # --quick: 10 steps, no verdict
    assert "NOT MET" not in Claim("m", {1: 4.5}, base=4.0, quick=True).line()


def test_check_claims_reads_each_seeds_run(tmp_path):
    def finished(name, rouge):
        (tmp_path / name).mkdir()
        (tmp_path / name / "metrics.json").write_text(json.dumps({"overall": {"rougeL": rouge}}))

    finished("untrained", 1.0)
    finished(run_name("lora", SEED), 9.0)
    finished(run_name("lora", 7), 3.5)
    assert run_name("lora", SEED) == "lora" and run_name("lora", 7) == "lora-s7"
    (claim,) = check_claims(tmp_path, ["lora"], [SEED, 7])
    assert claim.scores == {SEED: 9.0, 7: 3.5} and claim.base == 1.0 and not claim.holds


@pytest.mark.slow
def test_full_demo_methods_beat_the_untrained_base(tmp_path):
    # `make demo`'s run of the methods it claims. Prompt tuning (UNCLAIMED) is left out: every method's run starts
    # from the same saved base with the same seed, so the others score the same without it (measured: lora, Houlsby
    # and full gave 11.48 / 10.87 / 15.31 with and without it, OMP_NUM_THREADS=1), and its 600 steps would assert
    # nothing; the quick demo checks that its row and its "not claimed" line are there.
    # The pre-trained base comes from the user's cache (~/.cache/peftbench or $PEFTBENCH_CACHE) when its key
    # (config, generator, architecture, transformers version) matches, as for `make demo`; else it is trained
    # and cached there. Features stay in this test's own cache: their key holds the data's path and mtimes,
    # which are new on every run, so sharing them would only add an entry to the user's cache each time.
    (tmp_path / "cache").mkdir()
    bases = cache_dir() / "bases"
    bases.mkdir(parents=True, exist_ok=True)
    (tmp_path / "cache" / "bases").symlink_to(bases, target_is_directory=True)
    env = {"PEFTBENCH_CACHE": str(tmp_path / "cache")}
    claimed = [m for m in DEMO_METHODS if m not in UNCLAIMED]
    assert len(claimed) == 3
    args = ("--methods", ",".join(claimed), "--output-dir", str(tmp_path / "demo"), "--no-progress")
    proc = run_cli("demo", *args, env=env, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = _rows(tmp_path / "demo" / "report.csv")
    base = float(rows.pop("untrained")["ROUGE-L"])
    assert set(rows) == set(claimed)
    for name, row in rows.items():
        assert float(row["ROUGE-L"]) >= base + CLAIM_MARGIN, f"{name}: ROUGE-L {row['ROUGE-L']} vs untrained {base}"
    assert proc.stdout.count(": holds") == 3 and "NOT MET" not in proc.stdout  # the demo says so too
