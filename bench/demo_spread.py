"""The demo's claim under other CPU kernels and training seeds: `python bench/demo_spread.py`.

PyTorch picks its CPU kernels by instruction set (``ATEN_CPU_CAPABILITY``: ``default``, ``avx2``, ``avx512``), and
other kernels round differently; a 1 M-parameter model pre-trained for 3,000 steps turns those last bits into a
different base and different trained methods. This script runs the whole demo (``peftbench demo --seeds ...``)
once per capability, each in its own cache so the base is pre-trained under that capability too, and prints:

- one line per capability and method with the test ROUGE-L of every training seed (the spread a user should
  expect; docs/demo.md records it with the CPU model),
- one line per capability, ``claim under <capability>: holds`` or ``NOT MET``: every claimed method (all but
  ``peftbench.demo.runner.UNCLAIMED``) at least ``CLAIM_MARGIN`` points above the untrained base for every seed (what
  the demo claims and ``tests/demo/test_demo.py`` asserts for seed 42).

Exit status 1 when the claim fails under any capability. Not a timed benchmark: about 8 minutes per capability
on 2 cores with 3 seeds (``--shared-base`` reuses the base cached by ``make demo`` instead: about 2 minutes less
each, but then only the instruction tuning runs under the forced kernels).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from peftbench.demo.runner import CLAIM_MARGIN, DEMO_METHODS, check_claims
from peftbench.io import cache_dir


def cpu_model() -> str:
    """The CPU's model name as /proc/cpuinfo gives it (empty where there is none)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def capability_in_effect(env: dict[str, str]) -> str:
    """The capability torch reports in a process started with ``env`` (an unsupported request falls back)."""
    code = "import torch; print(torch.backends.cpu.get_cpu_capability())"
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True).stdout.strip()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--capabilities", default="default,avx2,avx512", help="ATEN_CPU_CAPABILITY values to run")
    p.add_argument("--seeds", default="42,43,44", help="training seeds per method (default: 42,43,44)")
    p.add_argument("--methods", default=",".join(DEMO_METHODS))
    p.add_argument("--output-dir", type=Path, default=Path("runs/demo-spread"))
    p.add_argument("--shared-base", action="store_true", help="reuse the user's cached base (not re-pre-trained)")
    p.add_argument("--quick", action="store_true", help="the quick demo (plumbing only; the claim is not expected)")
    args = p.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    methods = args.methods.split(",")
    print(f"CPU: {cpu_model() or 'unknown'}; seeds {args.seeds}; methods {args.methods}", flush=True)
    failed, seen = [], set()
    for requested in args.capabilities.split(","):
        out = args.output_dir / requested
        env = {**os.environ, "ATEN_CPU_CAPABILITY": requested, "HF_HUB_OFFLINE": "1"}
        if not args.shared_base:
            env["PEFTBENCH_CACHE"] = str(out / "cache")
        else:
            env["PEFTBENCH_CACHE"] = str(cache_dir())
        actual = capability_in_effect(env)
        if actual in seen:
            print(f"capability {requested}: torch runs {actual!r} here, already measured; skipped", flush=True)
            continue
        seen.add(actual)
        cmd = [sys.executable, "-m", "peftbench", "demo", "--output-dir", str(out), "--seeds", args.seeds,
               "--methods", args.methods, "--no-progress", *(["--quick"] if args.quick else [])]  # fmt: skip
        start = time.perf_counter()
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            print(f"capability {actual}: the demo failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}")
            failed.append(actual)
            continue
        claims = check_claims(out / "runs", methods, seeds)
        print(f"capability {actual} ({wall:.0f} s): untrained ROUGE-L {claims[0].base:.2f}", flush=True)
        for claim in claims:
            scores = " ".join(f"s{s}={v:.2f}" for s, v in claim.scores.items())
            note = "" if claim.claimed else " (not claimed)"
            margin = min(claim.scores.values()) - claim.base
            print(f"  {actual} {claim.method}: {scores} min margin {margin:+.2f}{note}")
        holds = all(c.holds for c in claims if c.claimed)
        print(f"claim under {actual} (every claimed method >= {CLAIM_MARGIN:g} above untrained, every seed): "
              f"{'holds' if holds else 'NOT MET'}", flush=True)  # fmt: skip
        if not holds:
            failed.append(actual)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
