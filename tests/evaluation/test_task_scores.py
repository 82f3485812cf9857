"""Scores grouped by task, and Holm's correction (peftbench.evaluation.task_scores)."""

from __future__ import annotations

import numpy as np
import pytest

from peftbench.evaluation.task_scores import TaskScores, holm


def test_holm_on_the_textbook_example():
    """Holm's procedure on four p-values (the worked example of the Holm-Bonferroni method, e.g. Wikipedia):
    sorted 0.005, 0.01, 0.03, 0.04 against 0.05/4, 0.05/3, 0.05/2, 0.05/1 rejects the first two only."""
    adjusted = holm([0.01, 0.04, 0.03, 0.005])
    assert adjusted.tolist() == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert (adjusted <= 0.05).tolist() == [True, False, False, True]
    assert holm([0.5]).tolist() == [0.5] and holm([0.3, 0.4]).tolist() == [0.6, 0.6] and holm([]).size == 0


def test_subset_and_task_means():
    scores = TaskScores.from_tasks([np.array([[1.0], [2.0]]), np.array([[3.0, 5.0], [4.0, 6.0]])])
    assert scores.mean().tolist() == [3.0, 4.0]  # instances weighted: (1 + 3 + 5) / 3
    assert scores.task_means().tolist() == [[1.0, 4.0], [2.0, 5.0]]
    assert scores.subset([1]).values.tolist() == [[3.0, 5.0], [4.0, 6.0]]
    with pytest.raises(ValueError):
        scores.minus(scores.subset([1]))
