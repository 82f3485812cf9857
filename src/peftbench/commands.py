"""What each ``peftbench`` subcommand does, given its parsed arguments (:mod:`peftbench.cli` parses them and
maps each name to one of these in ``COMMANDS``). Each returns the exit status; user errors raise
``PeftbenchError``, which the command line prints as one line."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from peftbench.errors import PeftbenchError


def cmd_train(args: argparse.Namespace) -> int:
    from peftbench.configure import load_config
    from peftbench.recipe.run import run_experiment

    cfg = load_config(args.config, args.overrides)
    if args.print_config:
        from peftbench.config import dump_config

        print(dump_config(cfg), end="")
        return 0
    run_experiment(cfg, progress=not args.no_progress)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from peftbench.launch.presets import in_distributed_launch, preset_config, relaunch
    from peftbench.recipe.run import run_experiment

    cfg = preset_config(args.method, args.mode, args.overrides)
    if args.print_config:
        from peftbench.config import dump_config

        print(dump_config(cfg), end="")
        return 0
    gpu_memory = _gpu_memory(args)
    if cfg.launch.num_processes > 1 and not in_distributed_launch():
        from peftbench.launch.preflight import preflight

        # devices, data, model, memory: one line before any process starts, not one per process
        preflight([cfg], gpu_memory=gpu_memory)
        argv = ["run", args.method, "--mode", args.mode, *args.overrides]
        return relaunch(cfg, argv + (["--no-progress"] if args.no_progress else []))
    if not in_distributed_launch():
        from peftbench.launch.preflight import detected_gpu_memory, memory_preflight

        memory = gpu_memory if gpu_memory is not None else detected_gpu_memory()
        if memory is not None:  # the planned peak against the GPU: refused before the model is loaded
            memory_preflight([cfg], memory)
    run_experiment(cfg, progress=not args.no_progress)
    return 0


def _gpu_memory(args: argparse.Namespace) -> int | None:
    """``--gpu-memory SIZE`` in bytes (None when not given)."""
    from peftbench.memory.figures import parse_bytes

    return parse_bytes(args.gpu_memory) if args.gpu_memory is not None else None


def cmd_sweep(args: argparse.Namespace) -> int:
    from peftbench.launch.launchers import exit_status, launch_local, launch_slurm, summary
    from peftbench.launch.presets import sweep_file
    from peftbench.launch.sweep import estimated_trainable, expand, load_sweep, plan_table

    sweep = load_sweep(sweep_file(args.sweep), args.overrides)
    runs = expand(sweep)
    if args.dry_run:
        print(plan_table(runs, *estimated_trainable(runs)))
        return 0
    memory = _gpu_memory(args)
    if args.launcher == "slurm":
        outcomes = launch_slurm(runs, sweep.slurm, wait=args.wait, progress=not args.no_progress, gpu_memory=memory)
    else:
        outcomes = launch_local(runs, jobs=args.jobs, progress=not args.no_progress, gpu_memory=memory)
    print(summary(outcomes))
    return exit_status(outcomes)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from peftbench.recipe.run import evaluate_run

    evaluate_run(args.run_dir, progress=not args.no_progress)
    _close_process_group()
    return 0


def _close_process_group() -> None:
    """Under torchrun, destroys the process group before the process exits, as training does (``end_training``): a
    rank exiting with gloo's threads still running was once aborted at exit ("terminate called without an active
    exception", tests/evaluation/test_sharded.py in a loaded CI run)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def cmd_score(args: argparse.Namespace) -> int:
    from peftbench.evaluation.metrics import read_predictions, score_predictions, write_metrics

    records = read_predictions(args.predictions)
    metrics = score_predictions(records, xlingual=args.xlingual, xlingual_tokenizer=args.xlingual_tokenizer)
    if args.output:
        write_metrics(metrics, args.output)
    print(json.dumps(metrics, indent=2, ensure_ascii=False))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from peftbench.reporting.build import write_report

    files = write_report(args.runs_dir, args.output, intervals=not args.no_intervals, bootstrap=args.bootstrap)
    if files.summary:
        print("best configuration per method:\n" + files.summary + "\n")
    if files.differences:
        print("which differences are real (see report.md for how they were tested):\n" + files.differences + "\n")
    print(files.table)
    for line in files.notes:
        print(f"note: {line}")
    for line in files.left_out:
        print(f"not counted: {line}")
    written = [
        files.markdown,
        files.html,
        files.csv,
        files.configurations_csv,
        files.differences_csv,
        files.categories_csv,
        *files.plots,
    ]
    written = [p for p in written if p is not None]
    print("\nwrote " + ", ".join(str(p) for p in written))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from peftbench.exporter import export_run

    result = export_run(args.run_dir, args.out, merge=args.merge)
    base = result.manifest["base"]
    print(
        f"wrote {result.out} ({result.kind}: {_EXPORT_KINDS[result.kind]}; base {base['name']}, weights sha256 "
        f"{base['sha256'][:12]})"
    )
    return 0


_EXPORT_KINDS = {
    "peft": "PeftModel.from_pretrained(base, OUT) loads it",
    "model": "a plain model, AutoModel*.from_pretrained(OUT) loads it",
    "peftbench": "peftbench.load_trained(base, OUT) loads it",
}


def cmd_methods(args: argparse.Namespace) -> int:
    from peftbench.methods.core.table import methods_markdown, methods_table

    if args.markdown:
        print(methods_markdown(), end="")
        return 0
    if args.cost:
        from peftbench.launch.cost import cost_table

        if not args.model:
            raise PeftbenchError("--cost needs --model (the memory is planned on a model)")
        print(cost_table(args.model, args.mode, progress=not args.no_progress))
        return 0
    print(methods_table(args.model, args.budget))
    return 0


def cmd_check_method(args: argparse.Namespace) -> int:
    from peftbench.method_check import check_method

    return check_method(args.name, args.model, module=args.module, only=args.only)


def cmd_status(args: argparse.Namespace) -> int:
    from peftbench.launch.status import status_table

    print(status_table(args.runs_dir))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from peftbench.demo.runner import run_demo

    methods = [m.strip() for m in args.methods.split(",") if m.strip()] if args.methods else None
    seeds = None
    if args.seeds:
        try:
            seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
        except ValueError:
            raise PeftbenchError(f"--seeds takes comma-separated integers, got {args.seeds!r}") from None
        if not seeds:
            raise PeftbenchError("--seeds names no seed")
    run_demo(
        args.output_dir,
        model=args.model,
        methods=methods,
        quick=args.quick,
        progress=not args.no_progress,
        seeds=seeds,
    )
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    from peftbench.memory.figures import gib, parse_bytes
    from peftbench.memory.plan import plan_memory

    gpu = parse_bytes(args.gpu_memory) if args.gpu_memory is not None else None
    if args.world_size is not None and args.world_size < 1:
        raise PeftbenchError(f"--world-size must be >= 1, got {args.world_size}")
    if args.preset and args.config is not None:  # `plan --preset lora key=value`: the first override, not a file
        if "=" not in str(args.config):
            raise PeftbenchError("plan takes a CONFIG or --preset METHOD, not both")
        args.overrides = [str(args.config), *args.overrides]
    if args.preset:
        from peftbench.launch.presets import preset_config

        cfg = preset_config(args.preset, args.mode, args.overrides)
    elif args.config:
        from peftbench.configure import load_config
        from peftbench.launch.presets import available_presets

        if not Path(args.config).exists() and str(args.config) in available_presets():
            raise PeftbenchError(f"no config file {args.config}; for the {args.config} preset: --preset {args.config}")
        cfg = load_config(args.config, args.overrides)
    else:
        raise PeftbenchError("plan needs a CONFIG or --preset METHOD")
    plan = plan_memory(cfg, world_size=args.world_size, alternatives=args.checkpointing)
    if gpu is not None and plan.peak_bytes > gpu and not args.checkpointing:  # what would fit needs it too
        plan = plan_memory(cfg, world_size=args.world_size, alternatives=True)
    print(plan.table())
    if gpu is not None:
        advice = plan.fits(gpu)
        print(f"\nfits in {gib(gpu)} per device" if advice is None else f"\ndoes not fit: {advice}")
        return 0 if advice is None else 1
    return 0
