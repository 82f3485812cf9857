"""The CPU peak-tensor-memory tracker (peftbench.memory.measure) against independent references: exact arithmetic on
known tensors, and the profiler's own allocation events replayed over a real training step."""

from __future__ import annotations

import pytest
import torch
from torch.profiler import ProfilerActivity, profile

from peftbench.memory.measure import TENSOR_BYTES, PeakTracker, StepSample, measure_peak, tensor_roots


def test_known_tensors_exact_bytes():
    with measure_peak("cpu") as tracker:
        a = torch.empty(1000, dtype=torch.float32)  # 4000 live
        b = torch.empty(500, dtype=torch.float64)  # 8000
        del a  # 4000
        c = torch.zeros(3000, dtype=torch.uint8)  # 7000
        view = c[10:]  # a view: no new storage
        c.add_(1)  # in place: no new storage
        d = b * 2  # 11000: the peak
        del b, d, c, view  # 0
        e = torch.ones(2, 3, dtype=torch.int16)  # 12
        assert tracker.live_bytes == 12
        del e
        assert tracker.live_bytes == 0
    result = tracker.result()
    assert (result.peak_bytes, result.baseline_bytes, result.kind) == (11000, 0, TENSOR_BYTES)


def test_roots_are_the_baseline_and_frees_count_outside_windows():
    weight = torch.zeros(256, dtype=torch.float32)  # 1024 bytes, live before tracking
    tracker = PeakTracker("cpu", lambda: [weight]).start()
    with tracker.window():
        x = torch.ones(100, dtype=torch.float64)  # 800 -> 1824
        y = x + 1  # 800 -> 2624
        del y  # 1824
    del x  # freed outside the window: 1024
    z = torch.ones(10_000)  # allocated outside any window: not counted
    with tracker.window():
        w = torch.ones(50, dtype=torch.float64)  # 400 -> 1424
        del w
    result = tracker.close()
    assert (result.peak_bytes, result.baseline_bytes, result.windows) == (2624, 1024, 2)
    del z


def test_step_sample_picks_the_first_and_the_record_batches():
    sample = StepSample(first=2)
    shapes = [(4, 10), (4, 5), (4, 8), (4, 12), (2, 20), (4, 11), (8, 12), (4, 3)]
    picked = [sample({"input_ids": torch.zeros(s)}) for s in shapes]
    # first two; then (4, 12): more elements; (2, 20): longer; (8, 12): more elements
    assert picked == [True, True, False, True, True, False, True, False]


def _tiny_t5():
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(0)
    config = T5Config(
        vocab_size=1000, d_model=64, d_ff=128, num_layers=2, num_heads=4, d_kv=16, decoder_start_token_id=0,
        pad_token_id=0,
    )  # fmt: skip
    return T5ForConditionalGeneration(config)


def _profiled_peak(prof) -> tuple[int, int]:
    """The profiler's allocation events, replayed in order: (peak, end) bytes above what was live at the start."""
    events = sorted(
        (e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"), key=lambda e: e.start_ns()
    )
    live = peak = 0
    for e in events:
        live += e.nbytes()
        peak = max(peak, live)
    return peak, live


@pytest.mark.parametrize("step_number", [1, 2])
def test_training_step_peak_matches_the_profilers_allocation_events(step_number):
    """A real forward / backward / AdamW step of a tiny T5: the tracker's peak above its baseline (weights, and from
    the second step on the optimizer state) against the CPU allocator's events as the profiler records them. The
    tracker does not see memory a kernel allocates and frees inside itself, which here is none worth a kilobyte."""
    model = _tiny_t5()
    optimizer = torch.optim.AdamW(model.parameters())
    source, labels = torch.randint(0, 1000, (8, 64)), torch.randint(0, 1000, (8, 16))

    def step() -> None:
        model(input_ids=source, labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(step_number - 1):
        step()
    tracker = PeakTracker("cpu", tensor_roots(model, optimizer=optimizer))
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof, tracker.window():
        step()
    result = tracker.close()
    profiled, end = _profiled_peak(prof)
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    assert profiled > 5 * weights  # activations and gradients dominate: a real comparison
    tracked = result.peak_bytes - result.baseline_bytes
    assert tracked == pytest.approx(profiled, rel=1e-3, abs=4096)
    if step_number == 1:  # AdamW's state (two moments per weight) made during the step, and left live
        assert end == pytest.approx(2 * weights, abs=1024)
        assert result.baseline_bytes == weights
    else:
        assert result.baseline_bytes == pytest.approx(3 * weights, abs=1024)
