"""The ``peftbench`` command line. Subcommands live in one dict, ``COMMANDS``, that a test keeps in sync."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

from peftbench import commands
from peftbench.errors import PeftbenchError
from peftbench.training.preemption import EXIT_PREEMPTED, Preempted, stop_during_startup


def _quiet_libraries() -> None:
    """Silences library chatter that is not for our users (deprecation notes, tokenizer fork warnings)."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", message=".*torch_dtype.*")
    warnings.filterwarnings("ignore", message="Unsupported layer type")  # peft, about LN tuning's norms: supported
    # transformers' warnings and its weight-loading bars (peftbench shows its own), through the variables both
    # libraries read when first imported: a command that needs no model (status, methods) does not import them
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if "transformers" in sys.modules:  # already imported (main called from Python): set it directly
        import transformers

        transformers.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()


COMMANDS: dict[str, tuple[Callable[[argparse.Namespace], int], str]] = {
    "train": (commands.cmd_train, "train one experiment, then evaluate it on the full test split"),
    "run": (
        commands.cmd_run,
        "train + evaluate a named preset: the study's setting for METHOD (--mode full) or a CPU-sized one",
    ),
    "sweep": (
        commands.cmd_sweep,
        "run a grid of presets (methods x hyperparameters x seeds x task counts), locally or on Slurm",
    ),
    "evaluate": (commands.cmd_evaluate, "(re)evaluate a finished run from its saved trainable weights"),
    "score": (commands.cmd_score, "score a predictions JSONL file with the official SuperNI metrics"),
    "export": (
        commands.cmd_export,
        "export a run's trained weights: a peft adapter, a merged plain model (--merge) or a peftbench adapter",
    ),
    "report": (commands.cmd_report, "tabulate and plot every finished run below a directory"),
    "status": (commands.cmd_status, "list runs with their state, last valid checkpoint and headline metrics"),
    "methods": (commands.cmd_methods, "list the registered PEFT methods (and their sizes for a model)"),
    "check-method": (
        commands.cmd_check_method,
        "run the method contract (what every built-in passes) on a method, e.g. your own: docs/own-method.md",
    ),
    "plan": (
        commands.cmd_plan,
        "plan a run's per-device peak memory (training and evaluation) from shapes alone: no weights, no GPU",
    ),
    "demo": (commands.cmd_demo, "the embedded default: generate data, pre-train a tiny base, compare methods, report"),
}


GPU_MEMORY_HELP = (
    "memory per GPU (e.g. 80GiB): refuse, before any process starts, a run whose planned peak (`peftbench plan`) "
    "exceeds it; default: the GPU detected here, none on a machine without one"
)


class _Parser(argparse.ArgumentParser):
    """argparse with the project's one-line error format."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"peftbench: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with one subparser per entry of ``COMMANDS``."""
    from peftbench.version import __version__

    parser = _Parser(
        prog="peftbench",
        description="Compare parameter-efficient fine-tuning methods for instruction tuning on SuperNI.",
    )
    parser.add_argument("--version", action="version", version=f"peftbench {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=_Parser)
    p = {name: sub.add_parser(name, help=help_, description=help_) for name, (_, help_) in COMMANDS.items()}

    p["train"].add_argument("config", type=Path, help="experiment YAML (see configs/)")
    p["train"].add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p["train"].add_argument(
        "overrides", nargs="*", metavar="key=value", help="dotted overrides, e.g. train.learning_rate=1e-4 method.r=16"
    )
    p["run"].add_argument("method", help="a method with a preset in configs/methods/ (see `peftbench methods`)")
    p["run"].add_argument(
        "--mode",
        choices=("dev", "full"),
        default="full",
        help="full: the study's setting (default); dev: a tiny model and data, about a minute on CPU",
    )
    p["run"].add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p["run"].add_argument("--gpu-memory", metavar="SIZE", help=GPU_MEMORY_HELP)
    p["run"].add_argument(
        "overrides", nargs="*", metavar="key=value", help="dotted overrides, e.g. train.learning_rate=1e-4 method.r=16"
    )
    p["sweep"].add_argument(
        "sweep", type=Path, help="sweep YAML, or a shipped sweep by name: study, dev (configs/sweeps/)"
    )
    p["sweep"].add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="dotted overrides applied to every run (part of each run's config hash), e.g. model.name=/models/t5-xl",
    )
    p["sweep"].add_argument("--launcher", choices=("local", "slurm"), default="local", help="default: local")
    p["sweep"].add_argument("--dry-run", action="store_true", help="print the runs (and their sizes), run nothing")
    p["sweep"].add_argument("--gpu-memory", metavar="SIZE", help=GPU_MEMORY_HELP)
    p["sweep"].add_argument("--jobs", type=int, default=1, help="local: runs at the same time (default 1)")
    p["sweep"].add_argument("--wait", action="store_true", help="slurm: wait for every job, then summarise")
    p["evaluate"].add_argument("run_dir", type=Path, help="a run directory written by `peftbench train`")
    p["score"].add_argument(
        "predictions", type=Path, help="JSONL lines with id, task, prediction, references[, category]"
    )
    p["score"].add_argument("-o", "--output", type=Path, help="also write the metrics JSON to this file")
    p["score"].add_argument("--xlingual", action="store_true", help="cross-lingual track: ROUGE-L over GPT-2 tokens")
    p["score"].add_argument(
        "--xlingual-tokenizer", default="gpt2", help="tokenizer name or path for --xlingual (default: gpt2)"
    )
    p["export"].add_argument("run_dir", type=Path, help="a finished run directory")
    p["export"].add_argument("out", type=Path, help="the export directory to create (must not exist or be empty)")
    p["export"].add_argument(
        "--merge",
        action="store_true",
        help="fold the update into the base weights and write a plain model (full fine-tuning, LoRA family, IA3, "
        "LN tuning, BitFit)",
    )
    p["report"].add_argument("runs_dir", type=Path, help="directory searched (recursively) for finished runs")
    p["report"].add_argument(
        "-o", "--output", "--output-dir", type=Path, help="where to write report.{md,csv,png} (default: RUNS_DIR)"
    )
    p["report"].add_argument(
        "--no-intervals", action="store_true", help="no 95%% intervals and no tests of differences between methods"
    )
    # Before the intervals became analytic: --bootstrap 0 meant --no-intervals; other counts and --seed do nothing.
    p["report"].add_argument("--bootstrap", type=int, default=None, metavar="N", help=argparse.SUPPRESS)
    p["report"].add_argument("--seed", type=int, default=None, help=argparse.SUPPRESS)
    p["status"].add_argument("runs_dir", type=Path, help="directory searched (recursively) for run directories")
    p["methods"].add_argument("--model", help="also count trainable parameters on this model (preset, hub name, path)")
    p["methods"].add_argument(
        "--cost",
        action="store_true",
        help="per method on --model: trainable parameters, optimizer and checkpoint bytes, planned peak memory",
    )
    p["methods"].add_argument("--mode", choices=("dev", "full"), default="full", help="--cost: the presets' mode")
    p["methods"].add_argument(
        "--budget", help="with --model: the size each method gets for this budget ('0.1%%' of the model, or a count)"
    )
    p["methods"].add_argument(
        "--markdown", action="store_true", help="print docs/methods.md (generated from the registry)"
    )
    p["demo"].add_argument("--output-dir", type=Path, default=Path("runs/demo"), help="default: runs/demo")
    p["demo"].add_argument("--model", default="tiny-t5", help="tiny preset to use: tiny-t5 (default) or tiny-llama")
    p["demo"].add_argument("--methods", help="comma-separated methods (default: lora,adapter_houlsby,prompt,full)")
    p["demo"].add_argument("--quick", action="store_true", help="a much shorter demo (for smoke tests)")
    p["demo"].add_argument(
        "--seeds", help="comma-separated training seeds, each method trained once per seed (default: 42)"
    )
    p["plan"].add_argument("config", type=Path, nargs="?", help="experiment YAML (or --preset METHOD)")
    p["plan"].add_argument(
        "--checkpointing",
        action="store_true",
        help="also plan the run with train.gradient_checkpointing=true and show the activation memory it saves",
    )
    p["plan"].add_argument("--preset", metavar="METHOD", help="plan a named preset (as `peftbench run METHOD`)")
    p["plan"].add_argument(
        "--mode", choices=("dev", "full"), default="full", help="with --preset: full (default) or dev"
    )
    p["plan"].add_argument(
        "--gpu-memory", metavar="SIZE", help="also say whether it fits in SIZE per GPU (e.g. 80GiB) and what would"
    )
    p["plan"].add_argument(
        "--world-size", type=int, metavar="N", help="devices (default launch.num_processes); FSDP or DDP per the config"
    )
    p["plan"].add_argument(
        "overrides", nargs="*", metavar="key=value", help="dotted overrides, e.g. train.per_device_batch_size=4"
    )
    p["check-method"].add_argument("name", help="a registered method (a built-in, a plugin's, or --module's)")
    p["check-method"].add_argument(
        "--model", choices=("tiny-t5", "tiny-llama", "both"), default="both", help="the tiny model(s) to check on"
    )
    p["check-method"].add_argument("--module", help="a module to import first that registers the method")
    p["check-method"].add_argument(
        "--only",
        metavar="CHECK[,CHECK]",
        help="run these properties only (the anchors of docs/own-method.md, e.g. "
        "generation,resume; export needs resume)",
    )
    for name in ("train", "run", "sweep", "evaluate", "demo", "methods"):
        p[name].add_argument("--no-progress", action="store_true", help="hide progress bars")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``peftbench`` command; user errors print one line and exit with status 2."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # key=value overrides may come after options (`run lora --mode dev seed=3`); anything else is an error.
    if extra and hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
        args.overrides = [*args.overrides, *extra]
    elif extra:
        parser.exit(
            2, f"peftbench: error: unrecognized arguments: {' '.join(extra)} (see `peftbench {args.command} --help`)\n"
        )
    guard = stop_during_startup() if args.command in ("train", "run", "demo") else contextlib.nullcontext()
    try:
        with guard:
            _quiet_libraries()
            return COMMANDS[args.command][0](args)
    except PeftbenchError as exc:
        print(f"peftbench: error: {exc}", file=sys.stderr)
        return 2
    except Preempted as exc:
        print(f"peftbench: {exc}", file=sys.stderr)
        return EXIT_PREEMPTED
    except KeyboardInterrupt:
        print("peftbench: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
