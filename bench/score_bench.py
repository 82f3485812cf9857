"""Scoring: `peftbench score` on 11,900 predictions vs a per-example loop calling rouge_score.

    python bench/score_bench.py [--quick]

The baseline is what the official SuperNI script does: for every prediction and every reference, a fresh
exact-match normalisation and a `rouge_score` ROUGE-L (Porter stemmer), max over references, averaged.
Both must give identical numbers (asserted). The records imitate the real test set: 119 tasks x 100
instances, half of them classification-like (short labels, many repeated) and half generation-like.
"""

from __future__ import annotations

import random
import string

from _common import best_time, parser, report
from rouge_score import rouge_scorer

from peftbench.evaluation.metrics import score_predictions

WORD_TEXT = (
    "the model answers questions about movies books science history sports food travel music weather "
    "positive negative neutral yes no true false entailment contradiction because therefore however "
    "translate summarize the following sentence into a short title and list every named entity in it"
)
WORDS = WORD_TEXT.split()
LABELS = ["Positive", "Negative", "Yes", "No", "True", "False", "entailment", "neutral", "contradiction"]


def make_records(tasks: int = 119, per_task: int = 100, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    records = []
    for t in range(tasks):
        classification = t % 2 == 0
        for i in range(per_task):
            if classification:
                refs = [rng.choice(LABELS)]
                pred = rng.choice(LABELS) if rng.random() < 0.5 else refs[0]
            else:
                refs = [" ".join(rng.choices(WORDS, k=rng.randint(3, 25))) for _ in range(rng.randint(1, 3))]
                pred = " ".join(rng.choices(WORDS, k=rng.randint(2, 30)))
            records.append({"id": f"task{t}-{i}", "task": f"task{t}", "category": f"cat{t % 12}",
                            "prediction": pred, "references": refs})  # fmt: skip
    return records


def _normalize(s: str) -> str:
    s = s.lower()
    s = "".join(ch for ch in s if ch not in set(string.punctuation))
    return " ".join(s.split())


def baseline(records: list[dict]) -> tuple[float, float]:
    """The official per-example loop (compute_metrics in the SuperNI / Tk-Instruct evaluation script)."""
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    em = rouge = 0.0
    for r in records:
        pred = r["prediction"] or ""
        em += max(float(_normalize(pred) == _normalize(ref)) for ref in r["references"])
        rouge += max(scorer.score(prediction=pred, target=ref)["rougeL"].fmeasure for ref in r["references"])
    n = len(records)
    return round(100 * em / n, 4), round(100 * rouge / n, 4)


def main() -> list[str]:
    args = parser(__doc__.splitlines()[0]).parse_args()
    records = make_records(per_task=20 if args.quick else 100)
    base_t, (base_em, base_rl) = best_time(lambda: baseline(records), repeat=1 if args.quick else 2)
    ours_t, ours = best_time(lambda: score_predictions(records), repeat=1 if args.quick else 2)
    assert (ours["overall"]["exact_match"], ours["overall"]["rougeL"]) == (base_em, base_rl), (ours, base_em, base_rl)
    n = len(records)
    return [report(f"score {n} predictions", n / ours_t, "predictions/s", base_t / ours_t,
                   f"per-example rouge_score loop ({n / base_t:,.0f}/s); identical scores")]  # fmt: skip


if __name__ == "__main__":
    main()
