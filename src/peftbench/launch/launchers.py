"""Running a sweep's runs: on this machine (one after another, or N at a time) or on Slurm via submitit.

Both launch ``peftbench train`` on each run's resolved config, so a run behaves exactly as when started by
hand: it skips work already finished, resumes from its newest valid checkpoint, and exits with 75 when
pre-empted. On Slurm, each run is one job that asks for ``USR1`` ``signal_delay_s`` seconds before its time
limit; on that signal (or ``scancel --signal=USR1``) the run saves, and the job requeues itself so that
the run continues on its own.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from peftbench.config import dump_config
from peftbench.errors import PeftbenchError
from peftbench.io import atomic_write_text
from peftbench.launch.preflight import memory_preflight, preflight
from peftbench.launch.presets import launch_command
from peftbench.launch.sweep import SweepRun
from peftbench.recipe.runfiles import run_status
from peftbench.training.preemption import EXIT_PREEMPTED, stop_on_signals

SWEEP_DIR = ".sweep"
"""Per output directory: each run's config file, launcher log and Slurm job files."""


@dataclass
class Outcome:
    """What became of one run."""

    run: SweepRun
    status: str
    """finished, skipped (already finished), preempted, failed or submitted."""
    detail: str = ""


def _sweep_dir(run: SweepRun) -> Path:
    path = Path(run.config.output_dir) / SWEEP_DIR
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_run_config(run: SweepRun) -> Path:
    """The run's resolved config as a file ``peftbench train`` reads."""
    path = _sweep_dir(run) / f"{run.name}.yaml"
    atomic_write_text(path, f"# peftbench train {path}   (written by peftbench sweep)\n" + dump_config(run.config))
    return path


def _last_error(log: Path) -> str:
    try:
        lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    errors = [line for line in lines if line.startswith("peftbench: error:")]
    return (errors or lines or [""])[-1][:200]


def launch_local(
    runs: list[SweepRun], *, jobs: int = 1, progress: bool = True, gpu_memory: int | None = None
) -> list[Outcome]:
    """Runs every unfinished run as a ``peftbench train`` subprocess, at most ``jobs`` at a time.

    Before any run starts, the devices, data and models of the unfinished runs are checked (one line naming every
    problem; :mod:`peftbench.launch.preflight`). A suspension signal to the sweep (SIGTERM, SIGUSR1, Ctrl-C)
    is passed on to the running runs, which
    save and stop; no new run starts. Returns one outcome per run, in the sweep's order.
    """
    if jobs < 1:
        raise PeftbenchError("--jobs must be >= 1")
    outcomes: dict[str, Outcome] = {}
    pending = []
    for run in runs:
        if run_status(run.run_dir) == "finished":
            outcomes[run.name] = Outcome(run, "skipped", "already finished")
        else:
            pending.append(run)
    # devices, data, models, memory (against gpu_memory or this machine's GPU): one line before any run starts
    preflight([run.config for run in pending], gpu_memory=gpu_memory)
    running: dict[subprocess.Popen, tuple[SweepRun, Path]] = {}
    bar = tqdm(total=len(runs), initial=len(outcomes), desc="sweep", unit="run", disable=not progress)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    signalled: set[subprocess.Popen] = set()
    with stop_on_signals() as stop:
        while pending or running:
            while pending and len(running) < jobs and not stop.requested:
                run = pending.pop(0)
                config_path = write_run_config(run)
                log_path = _sweep_dir(run) / f"{run.name}.log"
                with log_path.open("ab") as log:
                    command = launch_command(run.config, ["train", str(config_path), "--no-progress"])
                    running[subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)] = (run, log_path)
            if stop.requested:
                for proc in running:
                    if proc.poll() is None and proc not in signalled:
                        proc.send_signal(signal.SIGTERM)  # once: the run saves at its next step and exits 75
                        signalled.add(proc)
                pending.clear()
            for proc in [p for p in running if p.poll() is not None]:
                run, log_path = running.pop(proc)
                code = proc.returncode
                if code == 0:
                    outcomes[run.name] = Outcome(run, "finished")
                elif code == EXIT_PREEMPTED:
                    outcomes[run.name] = Outcome(run, "preempted", "rerun the sweep to resume")
                else:
                    outcomes[run.name] = Outcome(run, "failed", f"exit {code}: {_last_error(log_path)} ({log_path})")
                bar.update(1)
                bar.set_postfix(_counts(outcomes.values()))
            time.sleep(0.2)
    bar.close()
    for run in runs:
        outcomes.setdefault(run.name, Outcome(run, "preempted", "not started: the sweep was stopped"))
    return [outcomes[run.name] for run in runs]


def _counts(outcomes) -> dict[str, int]:
    counts: dict[str, int] = {}
    for outcome in outcomes:
        counts[outcome.status] = counts.get(outcome.status, 0) + 1
    return counts


def summary(outcomes: list[Outcome]) -> str:
    """A few lines: counts, then every run that did not finish, with why."""
    counts = _counts(outcomes)
    lines = ["sweep: " + ", ".join(f"{n} {status}" for status, n in counts.items())]
    for outcome in outcomes:
        if outcome.status not in ("finished", "skipped"):
            lines.append(f"  {outcome.status}: {outcome.run.name}" + (f" — {outcome.detail}" if outcome.detail else ""))
    return "\n".join(lines)


def exit_status(outcomes: list[Outcome]) -> int:
    """0 when every run finished, 1 when one failed, 75 when some were pre-empted (rerun to resume)."""
    statuses = {o.status for o in outcomes}
    if "failed" in statuses:
        return 1
    if "preempted" in statuses:
        return EXIT_PREEMPTED
    return 0


# --------------------------------------------------------------------------------------------------
# Slurm


class SlurmTrain:
    """The function a Slurm job runs: one peftbench run, in-process, requeued by submitit when pre-empted.

    ``submitit.helpers.Checkpointable``'s ``checkpoint`` makes submitit requeue the same call. peftbench's own
    handlers catch the signal while the run trains or evaluates (so it saves first); once the run has
    saved and raised ``Preempted``, the signal is raised again for submitit's handler, which requeues.
    """

    def __call__(self, config: dict[str, Any]) -> dict[str, Any]:
        import submitit

        from peftbench.configure import config_from_dict
        from peftbench.recipe.run import run_experiment
        from peftbench.training.preemption import Preempted

        env = submitit.JobEnvironment()
        if env.num_tasks > 1:  # one process per task: torch.distributed's variables for accelerate
            submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
        cfg = config_from_dict(config)
        try:
            return run_experiment(cfg, progress=False).metrics
        except Preempted:
            if env.global_rank == 0:
                signal.raise_signal(_requeue_signal())  # submitit: checkpoint() -> scontrol requeue -> exit
            time.sleep(600)  # the handler ends the process
            raise

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """Requeue the same call (the run resumes from its newest valid checkpoint)."""
        import submitit

        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)


def _requeue_signal() -> signal.Signals:
    return getattr(signal, "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR1"))


_SBATCH_KEYS = ("partition", "account", "qos", "constraint", "cpus_per_task", "mem_gb", "exclude", "comment")


def launch_slurm(
    runs: list[SweepRun],
    options: dict[str, Any],
    *,
    wait: bool = False,
    poll_s: float = 2.0,
    progress: bool = True,
    gpu_memory: int | None = None,
) -> list[Outcome]:
    """Submits one Slurm job per unfinished run (through submitit); with ``wait``, waits for all of them.

    ``options`` (the sweep's ``slurm:`` section): ``partition``, ``account``, ``qos``, ``constraint``,
    ``cpus_per_task``, ``mem_gb``, ``exclude``, ``comment``, ``signal_delay_s`` (default 120) and
    ``additional`` (any other sbatch option, as a mapping).
    """
    os.environ.setdefault("SUBMITIT_PREEMPT_SIGNAL", "USR1")  # read by submitit at import, here and in jobs
    try:
        import submitit
    except ImportError:
        raise PeftbenchError("the slurm launcher needs submitit (pip install submitit)") from None
    unknown = sorted(set(options) - {*_SBATCH_KEYS, "signal_delay_s", "additional"})
    if unknown:
        raise PeftbenchError(
            f"slurm: unknown option(s) {', '.join(unknown)}; use {', '.join(_SBATCH_KEYS)}, signal_delay_s, additional"
        )
    if gpu_memory is not None:  # planned per-device peaks against the GPUs asked for, before anything is queued
        memory_preflight([run.config for run in runs if run_status(run.run_dir) != "finished"], gpu_memory)
    outcomes: dict[str, Outcome] = {}
    jobs: dict[str, Any] = {}
    for run in runs:
        if run_status(run.run_dir) == "finished":
            outcomes[run.name] = Outcome(run, "skipped", "already finished")
            continue
        launch = run.config.launch
        executor = submitit.SlurmExecutor(folder=_sweep_dir(run) / "slurm" / "%j", max_num_timeout=100)
        params: dict[str, Any] = {
            "job_name": run.name,
            "time": launch.time_limit_min,
            "nodes": 1,
            "ntasks_per_node": launch.num_processes,
            "signal_delay_s": int(options.get("signal_delay_s", 120)),
            "additional_parameters": {"requeue": True, **(options.get("additional") or {})},
            **{k: options[k] for k in _SBATCH_KEYS if k in options},
        }
        if launch.gpus_per_process > 0:
            params["gpus_per_node"] = launch.num_processes * launch.gpus_per_process
        executor.update_parameters(**params)
        try:
            jobs[run.name] = executor.submit(SlurmTrain(), run.config.to_dict())
        except Exception as exc:  # sbatch refused (bad partition, no Slurm, ...)
            first = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
            raise PeftbenchError(f"slurm: cannot submit {run.name}: {first}") from None
        tqdm.write(f"submitted {run.name}: Slurm job {jobs[run.name].job_id}")
    if not wait:
        for name, job in jobs.items():
            run = next(r for r in runs if r.name == name)
            outcomes[name] = Outcome(run, "submitted", f"job {job.job_id}")
        return [outcomes[run.name] for run in runs]
    bar = tqdm(total=len(runs), initial=len(outcomes), desc="sweep (slurm)", unit="run", disable=not progress)
    waiting = dict(jobs)
    absent: dict[str, int] = {}
    while waiting:
        queued = _queued_job_ids()
        for name, job in list(waiting.items()):
            if job.job_id in queued:
                absent.pop(name, None)
                continue
            run = next(r for r in runs if r.name == name)
            status = run_status(run.run_dir)
            absent[name] = absent.get(name, 0) + 1
            # A requeued job leaves squeue for a moment before it is pending again: only a finished run, or a job
            # absent from several polls in a row, has really ended.
            if status != "finished" and absent[name] < REQUEUE_POLLS:
                continue
            if status == "finished":
                outcomes[name] = Outcome(run, "finished", f"job {job.job_id}")
            else:
                detail = f"job {job.job_id}; see {job.paths.stderr}"
                outcomes[name] = Outcome(run, "preempted" if status == "preempted" else "failed", detail)
            del waiting[name]
            bar.update(1)
        if waiting:
            time.sleep(poll_s)
    bar.close()
    return [outcomes[run.name] for run in runs]


REQUEUE_POLLS = 3
"""Polls in a row a job must be missing from squeue before a sweep that waits counts an unfinished run as ended."""


def _queued_job_ids() -> set[str]:
    """Job ids Slurm still holds (pending, running, requeued, completing)."""
    out = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True, timeout=60, check=False)
    if out.returncode != 0:
        raise PeftbenchError(f"slurm: squeue failed: {out.stderr.strip()[:200]}")
    return {line.strip() for line in out.stdout.splitlines() if line.strip()}
