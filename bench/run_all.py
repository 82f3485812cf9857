"""Every benchmark, one result line each: `python bench/run_all.py [--quick] [--device cuda]`.

See docs/benchmarks.md for what each measures and the latest figures.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPTS = (
    "train_bench.py", "eval_bench.py", "shard_bench.py", "decoder_bench.py", "data_bench.py", "score_bench.py",
    "checkpoint_bench.py", "fsdp_checkpoint_bench.py", "stats_bench.py", "memory_bench.py",
    "method_step_bench.py",
)  # fmt: skip
MEASUREMENTS = ("fidelity_effects.py",)
"""Not benchmarks: measured effects of fidelity choices (docs/fidelity.md), printed as `name: value` lines."""


def main() -> int:
    failed = []
    for script in SCRIPTS + MEASUREMENTS:
        print(f"# {script}", flush=True)
        code = subprocess.call([sys.executable, str(HERE / script), *sys.argv[1:]], cwd=HERE)
        if code:
            failed.append(script)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
