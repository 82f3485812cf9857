"""The report's inference on synthetic scores with known truth: `python bench/stats_bench.py [--reps N]`.

Per-task mean scores are drawn from the model the report must cope with: a task effect shared by every method
(sd 15), a task x method interaction (sd 3), instance noise (sd 20 per instance, 100 instances per task, part
shared by the methods on the same instance), and a per-seed offset of each trained model (sd 0, 0.5 or 1.0
points). Each line names a figure, the value measured over ``--reps`` synthetic studies, and the goal:

- coverage of the 95% interval of a method's score (119 and 12 tasks, 3 seeds, seed sd 0.5),
- the false-positive rate of one comparison of two equal methods (3 seeds; seed sd 0, 0.5, 1.0),
- the family-wise error with 6 equal methods (15 comparisons, Holm; 3 seeds, seed sd 0.5),
- the power at +1 and +2 points (119 tasks, 3 seeds, seed sd 0.5), and the mean minimum detectable difference.

``seeds+tasks`` is :mod:`peftbench.evaluation.inference` (what the report uses); ``tasks only`` is the earlier
design, for comparison: seed-averaged scores, a test over tasks that ignores seed variance (the t procedure with
the seed part left out, which behaves like the sign-flip test over tasks). Seconds to a minute; not a test.
"""

from __future__ import annotations

import itertools

import numpy as np
from _common import parser

from peftbench.evaluation.inference import Estimate, difference, score
from peftbench.evaluation.task_scores import holm

TASK_SD, INTERACTION_SD, INSTANCE_SD, SHARED = 15.0, 3.0, 20.0, 0.5
"""Task effect, task x method interaction, instance noise (points) and the share of the instance variance that
the methods have in common on the same instance."""
INSTANCES = 100


def study(rng: np.random.Generator, tasks: int, seeds: int, seed_sd: float, deltas: list[float]) -> np.ndarray:
    """Per-task mean scores of len(deltas) methods: shape (methods, seeds, tasks), method k's truth is 40 + delta."""
    task = rng.normal(0, TASK_SD, tasks)
    instance_sd = INSTANCE_SD / np.sqrt(INSTANCES)
    shared = rng.normal(0, instance_sd * np.sqrt(SHARED), tasks)  # the same instances for every method
    out = np.empty((len(deltas), seeds, tasks))
    for k, delta in enumerate(deltas):
        interaction = rng.normal(0, INTERACTION_SD, tasks)
        offsets = rng.normal(0, seed_sd, (seeds, 1))
        own = rng.normal(0, instance_sd * np.sqrt(1 - SHARED), (seeds, tasks))  # each trained model's own errors
        out[k] = 40 + delta + task + shared + interaction + offsets + own
    return out


def tasks_only(a: np.ndarray, b: np.ndarray) -> Estimate:
    """The earlier design: seed-averaged scores, variance over tasks only."""
    return difference(a.mean(axis=0, keepdims=True), b.mean(axis=0, keepdims=True))


def line(name: str, value: float, goal: str) -> None:
    print(f"{name}: {value:.3f} [goal {goal}]", flush=True)


def main() -> int:
    p = parser(__doc__.split("\n\n")[0])  # --device is accepted and unused: numpy only
    p.add_argument("--reps", type=int, default=2000, help="synthetic studies per figure (default 2000; --quick: 200)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    rng = np.random.default_rng(args.seed)
    reps = 200 if args.quick else args.reps

    for tasks, goal in ((119, "0.93-0.97"), (12, ">= 0.90"), (6, ">= 0.90: a category of 6 tasks")):
        hits = 0
        for _ in range(reps):
            (y,) = study(rng, tasks, 3, 0.5, [0.0])
            low, high = score(y).interval()
            hits += low <= 40 <= high
        line(f"coverage of the 95% interval, {tasks} tasks, 3 seeds, seed sd 0.5 (seeds+tasks)", hits / reps, goal)

    for seed_sd in (0.0, 0.5, 1.0):
        ours = earlier = 0
        for _ in range(reps):
            a, b = study(rng, 119, 3, seed_sd, [0.0, 0.0])
            ours += difference(a, b).p_value() <= 0.05
            earlier += tasks_only(a, b).p_value() <= 0.05
        line(f"false-positive rate, seed sd {seed_sd}, 3 seeds (seeds+tasks)", ours / reps, "<= 0.07")
        earlier_name = f"false-positive rate, seed sd {seed_sd}, 3 seeds (tasks only)"
        line(earlier_name, earlier / reps, "none: the earlier design")

    family = family_earlier = 0
    for _ in range(reps):
        ys = study(rng, 119, 3, 0.5, [0.0] * 6)
        pairs = list(itertools.combinations(range(6), 2))
        family += (holm([difference(ys[i], ys[j]).p_value() for i, j in pairs]) <= 0.05).any()
        family_earlier += (holm([tasks_only(ys[i], ys[j]).p_value() for i, j in pairs]) <= 0.05).any()
    line("family-wise error, 6 equal methods, Holm, 3 seeds, seed sd 0.5 (seeds+tasks)", family / reps, "<= 0.07")
    line("family-wise error, 6 equal methods, Holm, 3 seeds, seed sd 0.5 (tasks only)", family_earlier / reps,
         "none: the earlier design")  # fmt: skip

    for delta in (1.0, 2.0):
        found, mdd = 0, []
        for _ in range(reps):
            a, b = study(rng, 119, 3, 0.5, [delta, 0.0])
            d = difference(a, b)
            found += d.p_value() <= 0.05 and d.estimate > 0
            mdd.append(d.minimum_detectable())
        line(f"power at +{delta:g} points, 119 tasks, 3 seeds, seed sd 0.5 (seeds+tasks)", found / reps, "stated")
    line("minimum detectable difference (80% power, alpha 0.05), 119 tasks, 3 seeds, seed sd 0.5", float(np.mean(mdd)),
         "stated")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
