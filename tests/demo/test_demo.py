"""`peftbench demo`: the embedded default, through the real command line.

The quick variant checks the plumbing (data, cached base, baseline + methods, report, idempotent re-run).
The full variant is the demo exactly as `make demo` runs it, and checks its claim: every trained method
scores clearly above the untrained base on the unseen test tasks.
"""

from __future__ import annotations

import csv

import pytest

from peftbench.io import cache_dir
from tests.conftest import in_process, run_cli


def _rows(report_csv):
    with open(report_csv, newline="") as f:
        return {row["run"]: row for row in csv.DictReader(f)}


@pytest.mark.slow
def test_quick_demo_runs_end_to_end_and_is_idempotent(tmp_path):
    env = {"PEFTBENCH_CACHE": str(tmp_path / "cache")}
    out = tmp_path / "demo"
    proc = in_process("demo", "--quick", "--output-dir", str(out), "--no-progress", env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = _rows(out / "report.csv")
    assert set(rows) == {"untrained", "lora", "adapter_houlsby", "prompt", "full"}
    assert float(rows["untrained"]["trainable params"]) == 0
    assert 0 < float(rows["prompt"]["trainable % of base"]) < float(rows["lora"]["trainable % of base"]) < 100
    assert (out / "report.png").read_bytes()[:4] == b"\x89PNG"
    assert "| untrained |" in proc.stdout  # the table is printed
    (base,) = (tmp_path / "cache" / "bases").glob("tiny-t5-*")
    assert (base / "config.json").is_file() and (base / "tokenizer.json").is_file()

    again = in_process("demo", "--quick", "--output-dir", str(out), "--no-progress", env=env)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "(cached)" in again.stdout and again.stdout.count("already finished") == 4
    assert _rows(out / "report.csv") == rows


def test_demo_methods_option_rejects_unknown_names(cli, tmp_path):
    proc = cli("demo", "--quick", "--methods", "lora,nope", "--output-dir", str(tmp_path))
    assert proc.returncode == 2 and "unknown method 'nope'" in proc.stderr
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_full_demo_methods_beat_the_untrained_base(tmp_path):
    # The pre-trained base comes from the user's cache (~/.cache/peftbench or $PEFTBENCH_CACHE) when its key
    # (config, generator, architecture, transformers version) matches, as for `make demo`; else it is trained
    # and cached there. Features stay in this test's own cache: their key holds the data's path and mtimes,
    # which are new on every run, so sharing them would only add an entry to the user's cache each time.
    (tmp_path / "cache").mkdir()
    bases = cache_dir() / "bases"
    bases.mkdir(parents=True, exist_ok=True)
    (tmp_path / "cache" / "bases").symlink_to(bases, target_is_directory=True)
    env = {"PEFTBENCH_CACHE": str(tmp_path / "cache")}
    proc = run_cli("demo", "--output-dir", str(tmp_path / "demo"), "--no-progress", env=env, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = _rows(tmp_path / "demo" / "report.csv")
    base = float(rows.pop("untrained")["ROUGE-L"])
    assert set(rows) == {"lora", "adapter_houlsby", "prompt", "full"}
    for name, row in rows.items():
        assert float(row["ROUGE-L"]) >= base + 5, f"{name}: ROUGE-L {row['ROUGE-L']} vs untrained {base}"
        assert float(row["exact match"]) > 5
