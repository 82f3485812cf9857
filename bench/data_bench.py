"""Data pipeline at full scale: loading + encoding + tokenisation of the default split, cold and cached.

    python bench/data_bench.py [--quick] [--tokenizer NAME_OR_PATH] [--data-dir DIR]

Generates a synthetic SuperNI checkout at the real default split's size (757 training and 119 test tasks x
100 instances, realistic lengths: bench/superni_scale.py) unless ``--data-dir`` names one, and a 32k-token
byte-level BPE tokenizer trained on it unless ``--tokenizer`` names one (e.g. a local t5-base). Each
measurement runs in a fresh process (so peak memory is its own) and produces the features of the study's
setting: T5-style encoder-decoder, 1024 source / 128 target tokens, definition-only prompts.

- baseline: ``load_examples`` and one tokenizer call per text (what peftbench did before, and what a script
  tokenising example by example does);
- cold: ``prepare_features`` with an empty cache (load, encode, batched tokenisation, write the entry);
- cached: ``prepare_features`` reading that entry;
- cold, definition + 2 positive examples (Tk-Instruct's best encoding; demonstrations are measured with the
  tokenizer to drop those that do not fit, as Tk-Instruct does).

All phases must produce identical token ids (asserted by a digest). ``--device`` is accepted for run_all.py
and ignored: this pipeline runs on CPU. "Cold" means no feature cache; the task files are in the OS page
cache (they were just written).
"""

from __future__ import annotations

import hashlib
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import parser, report

HERE = Path(__file__).resolve()


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _digest(features: list) -> str:
    h = hashlib.sha256()
    for f in features:
        h.update(f"{f.id}|{f.task}|{f.category}|{f.prompt_ids}|{f.target_ids}|{f.references}\n".encode())
    return h.hexdigest()


def phase(name: str, data_dir: str, tokenizer_name: str, cache: str) -> dict:
    """One measurement, in this process (called in a fresh subprocess by ``main``)."""
    from transformers import AutoTokenizer

    from peftbench.config import DataConfig
    from peftbench.data.cache import Lengths
    from peftbench.data.examples import load_examples
    from peftbench.data.pipeline import prepare_features
    from peftbench.data.tokenize import Features, tokenize_prompt, tokenize_target

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_name)
    config = DataConfig(data_dir, num_pos_examples=2 if name == "cold_def2pos" else 0)
    lengths = Lengths(1024, 128, True, demonstration_budget=1024)
    before = _rss_mib()
    start = time.perf_counter()
    if name == "baseline":
        data = load_examples(config)
        features = [
            Features(ex.id, ex.task, ex.category, tokenize_prompt(tokenizer, ex.source, 1024, True),
                     tokenize_target(tokenizer, ex.target, 128), tuple(ex.references))
            for ex in data.train + data.validation + data.test
        ]  # fmt: skip
        from_cache = False
    else:
        prepared = prepare_features(config, tokenizer, lengths, cache_dir=cache)
        features = prepared.train + prepared.validation + prepared.test
        from_cache = prepared.from_cache
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "examples": len(features),
        "tokens": sum(len(f.prompt_ids) + len(f.target_ids) for f in features),
        "from_cache": from_cache,
        "rss_before_mib": before,
        "peak_rss_mib": _rss_mib(),
        "digest": _digest(features),
    }


def _run_phase(name: str, data_dir: Path, tokenizer: str, cache: Path) -> dict:
    out = subprocess.run(
        [sys.executable, str(HERE), "--phase", name, "--data-dir", str(data_dir), "--tokenizer", tokenizer,
         "--cache", str(cache)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if out.returncode:
        sys.exit(f"phase {name} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--data-dir", help="an existing SuperNI checkout (default: generate one)")
    p.add_argument("--tokenizer", help="tokenizer name or path (default: train a 32k BPE on the data)")
    p.add_argument("--phase", help=__import__("argparse").SUPPRESS)
    p.add_argument("--cache", help=__import__("argparse").SUPPRESS)
    args = p.parse_args()
    if args.phase:
        print(json.dumps(phase(args.phase, args.data_dir, args.tokenizer, args.cache)))
        return

    work = Path(tempfile.mkdtemp(prefix="peftbench-data-bench-"))
    try:
        if args.data_dir:
            data_dir = Path(args.data_dir)
        else:
            import superni_scale

            sizes = (76, 12, 100) if args.quick else (757, 119, 100)
            data_dir = superni_scale.generate(work / "superni", *sizes)
            print(f"generated {sizes[0]} + {sizes[1]} tasks x {sizes[2]} instances in {data_dir}", flush=True)
        tokenizer = args.tokenizer
        if tokenizer is None:
            import superni_scale

            from peftbench.models import train_tokenizer

            tokenizer = str(work / "tokenizer")
            train_tokenizer(superni_scale.corpus(data_dir), vocab_size=32_000).save_pretrained(tokenizer)

        cache = work / "cache"
        baseline = _run_phase("baseline", data_dir, tokenizer, cache)
        colds = []
        for _ in range(1 if args.quick else 2):
            shutil.rmtree(cache, ignore_errors=True)
            colds.append(_run_phase("cold", data_dir, tokenizer, cache))
        cached = [_run_phase("cached", data_dir, tokenizer, cache) for _ in range(3)]
        shutil.rmtree(cache, ignore_errors=True)
        def2pos = _run_phase("cold_def2pos", data_dir, tokenizer, cache)

        cold = min(colds, key=lambda r: r["seconds"])
        hot = min(cached, key=lambda r: r["seconds"])
        assert not cold["from_cache"] and all(r["from_cache"] for r in cached), "cache was not used as expected"
        assert baseline["digest"] == cold["digest"] == hot["digest"], "cached features differ from a fresh build"
        n = cold["examples"]
        print(f"{n:,} examples, {cold['tokens'] / n:.0f} tokens each on average (prompt + target)", flush=True)
        report(f"data cold ({n:,} examples)", cold["seconds"], "s", baseline["seconds"] / cold["seconds"],
               "load + per-example tokenisation", goal="<= 60 s")  # fmt: skip
        report("data cached", hot["seconds"], "s", cold["seconds"] / hot["seconds"], "cold", goal="<= 2 s")
        report("data cold, definition + 2 positive examples", def2pos["seconds"], "s",
               def2pos["seconds"] / cold["seconds"], "definition only")  # fmt: skip
        for name, r in (("baseline", baseline), ("cold", cold), ("cached", hot)):
            report(f"data peak memory {name}", r["peak_rss_mib"], "MiB", r["peak_rss_mib"] / baseline["peak_rss_mib"],
                   f"baseline; {r['rss_before_mib']:.0f} MiB before loading")  # fmt: skip
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
