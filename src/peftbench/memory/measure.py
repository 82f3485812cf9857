"""A run's own peak memory, measured the same way on CPU and GPU: the most bytes of tensor storage live at once.

On CUDA that is the caching allocator's own count: its peak is reset when the measurement starts
(``torch.cuda.reset_peak_memory_stats``) and read at the end (``max_memory_allocated``), kind
``"cuda_max_allocated"``. The CPU allocator keeps no such count that Python can read (torch 2.13 has no CPU
counterpart of ``torch.cuda.memory_stats``; only the profiler's ``profile_memory`` sees CPU allocations, at a cost
far too high for a training run), so on CPU a :class:`~torch.utils._python_dispatch.TorchDispatchMode` watches every
operator's outputs: each new storage is counted with its bytes and a weak reference whose callback uncounts it when
the storage is freed (storages keep their Python object while alive, so the callback fires at the free). Storages
live when measuring starts (the weights, buffers, gradients and optimizer state the caller names as ``roots``) are
the baseline, counted from the start; kind ``"tensor_bytes"``.

What the CPU count leaves out: memory a kernel allocates and frees inside itself (workspace that never becomes an
operator's output), Python and library memory, and tensors of wrapper subclasses (FSDP's DTensors: their local
shards are computed below the mode). The CUDA allocator sees kernel workspace too, so the two kinds agree on what
they count except for those temporaries (tests/memory/test_measure.py checks the CPU count against exact arithmetic
and against the profiler's allocation events).

The dispatch mode costs Python work on every operator, so a caller may track only some *windows*
(:meth:`PeakTracker.window`): frees are counted at all times, allocations only inside a window, and each window
first re-counts the roots (so weights, gradients or optimizer state made outside a window are in). The trainer
tracks a representative subset of its steps (:class:`StepSample`). On CUDA the allocator counts everything, windows
or not.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

__all__ = [
    "CUDA_MAX_ALLOCATED",
    "TENSOR_BYTES",
    "PeakMemory",
    "PeakTracker",
    "StepSample",
    "measure_peak",
    "tensor_roots",
]

TENSOR_BYTES = "tensor_bytes"
"""``peak_memory_kind`` on CPU: the most bytes of tensor storage live at once, counted by :class:`PeakTracker`."""
CUDA_MAX_ALLOCATED = "cuda_max_allocated"
"""``peak_memory_kind`` on CUDA: the caching allocator's ``max_memory_allocated`` since the measurement started."""
MB = 2**20


@dataclass(frozen=True)
class PeakMemory:
    """What a measurement found: bytes of tensor storage, the baseline included."""

    peak_bytes: int
    """The most bytes live at once while measuring (on CPU: inside the tracked windows)."""
    baseline_bytes: int
    """Bytes live when measuring started (on CPU: the roots at the first window)."""
    kind: str
    """:data:`TENSOR_BYTES` or :data:`CUDA_MAX_ALLOCATED`."""
    windows: int = 0
    """Windows tracked (on CPU; 0 on CUDA, where everything is)."""

    @property
    def peak_mb(self) -> float:
        return round(self.peak_bytes / MB, 1)

    @property
    def baseline_mb(self) -> float:
        return round(self.baseline_bytes / MB, 1)


class _Outputs(TorchDispatchMode):
    """Counts the storages of every operator's tensor outputs."""

    def __init__(self, tracker: PeakTracker) -> None:
        super().__init__()
        self._see = tracker._see

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        see = self._see
        if isinstance(out, torch.Tensor):
            see(out)
        elif isinstance(out, (tuple, list)):
            for o in out:
                if isinstance(o, torch.Tensor):
                    see(o)
                elif isinstance(o, (tuple, list)):
                    for x in o:
                        if isinstance(x, torch.Tensor):
                            see(x)
        return out


class PeakTracker:
    """Peak tensor memory of one device from :meth:`start` on; :meth:`result` reads it.

    ``roots`` returns the tensors that are live when tracking starts and outlive single operators (weights,
    buffers, gradients, optimizer state: :func:`tensor_roots`); on CPU they are counted at every window's start,
    so the baseline is theirs. Not thread-safe: the dispatch mode sees the ops of the thread that opened the window.
    """

    def __init__(self, device: torch.device | str, roots: Callable[[], Iterable[torch.Tensor]] = tuple) -> None:
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        self._roots = roots
        self._live: dict[int, tuple[int, weakref.ref]] = {}  # data_ptr -> (bytes, weak reference to the storage)
        self.live_bytes = 0
        self.peak_bytes = 0
        self.baseline_bytes: int | None = None
        self.windows = 0
        self._started = False
        self._final: PeakMemory | None = None

    def start(self) -> PeakTracker:
        """Starts measuring: on CUDA resets the allocator's peak; on CPU nothing is counted until a window opens."""
        if self.cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.baseline_bytes = torch.cuda.memory_allocated(self.device)
        self._started = True
        return self

    @contextlib.contextmanager
    def window(self) -> Iterator[None]:
        """Counts the allocations of the operators run inside (CPU); the roots are counted first."""
        if not self._started:
            self.start()
        if self.cuda:
            yield
            return
        self.windows += 1
        for t in self._roots():
            self._see(t)
        if self.baseline_bytes is None:
            self.baseline_bytes = self.live_bytes
        with _Outputs(self):
            yield

    def result(self) -> PeakMemory:
        """The peak so far (the baseline when nothing was tracked); after :meth:`close`, the peak until then."""
        if self._final is not None:
            return self._final
        if self.cuda:
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
            return PeakMemory(peak, self.baseline_bytes or 0, CUDA_MAX_ALLOCATED)
        baseline = self.baseline_bytes or 0
        return PeakMemory(max(self.peak_bytes, baseline), baseline, TENSOR_BYTES, self.windows)

    def close(self) -> PeakMemory:
        """The result; forgets the storages counted (their callbacks go with them)."""
        self._final = self.result()
        self._live.clear()
        self.live_bytes = 0
        return self._final

    def _see(self, t: torch.Tensor) -> None:
        """Counts ``t``'s storage if it is new (or grew)."""
        if t.device.type != self.device.type:
            return
        try:
            storage = t.untyped_storage()
            ptr = storage.data_ptr()  # FSDP's unsharded views can hold a storage already freed ("invalid")
            nbytes = storage.nbytes()
        except (RuntimeError, NotImplementedError):  # a wrapper subclass (DTensor): no storage of its own
            return
        if ptr == 0:
            return
        known = self._live.get(ptr)
        if known is not None:
            if known[0] == nbytes:
                return
            self.live_bytes -= known[0]  # resized in place
        self._live[ptr] = (nbytes, weakref.ref(storage, self._freed_callback(ptr)))
        self.live_bytes += nbytes
        if self.live_bytes > self.peak_bytes:
            self.peak_bytes = self.live_bytes

    def _freed_callback(self, ptr: int) -> Callable[[weakref.ref], None]:
        live = self._live

        def freed(ref: weakref.ref) -> None:
            known = live.get(ptr)
            if known is not None and known[1] is ref:
                del live[ptr]
                self.live_bytes -= known[0]

        return freed


@contextlib.contextmanager
def measure_peak(
    device: torch.device | str, roots: Callable[[], Iterable[torch.Tensor]] = tuple
) -> Iterator[PeakTracker]:
    """Tracks everything inside as one window; ``tracker.result()`` after the block is its peak."""
    tracker = PeakTracker(device, roots).start()
    try:
        with tracker.window():
            yield tracker
    finally:
        tracker.close()


def tensor_roots(
    *modules: nn.Module, optimizer: torch.optim.Optimizer | None = None, extra: Iterable[torch.Tensor] = ()
) -> Callable[[], Iterator[torch.Tensor]]:
    """The long-lived tensors of a training run, listed afresh at each call: the modules' parameters, their
    gradients and buffers, and the optimizer's state."""

    def roots() -> Iterator[torch.Tensor]:
        for module in modules:
            for p in module.parameters():
                yield p
                if p.grad is not None:
                    yield p.grad
            yield from module.buffers()
        if optimizer is not None:
            for state in optimizer.state.values():
                yield from (v for v in state.values() if isinstance(v, torch.Tensor))
        yield from extra

    return roots


@dataclass
class StepSample:
    """Which training batches the CPU tracker watches: the first ``first`` batches (the first optimizer steps:
    AdamW makes its state at the first step, and from the second on that state is live through the forward and
    backward passes) and every batch larger than all the batches before it, in padded elements or in sequence
    length (activations grow with both; attention with the length squared). The step of the longest batch is
    among them; in a random batch order about ln(n) of n batches break a record, so a run of a few hundred steps
    tracks about ten. Frees are counted throughout, and each window starts by counting the weights, gradients and
    optimizer state, so the windows' peak is the run's peak as long as it falls in a step of the largest batch."""

    first: int = 2
    seen: int = 0
    most_elements: int = 0
    longest: int = 0

    def __call__(self, batch: dict[str, torch.Tensor]) -> bool:
        """Whether to track this batch (call once per batch, in order)."""
        tensors = [v for v in batch.values() if isinstance(v, torch.Tensor)]
        elements = sum(v.numel() for v in tensors)
        length = max((v.shape[-1] for v in tensors if v.dim() > 0), default=0)
        self.seen += 1
        record = elements > self.most_elements or length > self.longest
        self.most_elements, self.longest = max(self.most_elements, elements), max(self.longest, length)
        return self.seen <= self.first or record
