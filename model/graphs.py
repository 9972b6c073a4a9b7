"""CUDA graphs: one stage of a frame (Mimi encode, the LM step, Mimi decode) replayed as one launch.

A streaming step on a GPU is hundreds of small kernels; launching them one by one from Python
costs more than running them. A CUDA graph records the kernels of one call and replays them all
at once. That needs what the streaming modules promise (`model/streaming.py`): every state in a
tensor that stays where it is, the same shapes every call, and no host synchronisation inside
the step (`tests/model/test_graphs.py` checks the last two on the CPU).

`Graphed(fn)` runs `fn` as it is for `warmup` calls, captures it on the next (on copies of its
inputs, which become the graph's fixed inputs) and replays it, and from then on copies each
call's inputs into the fixed ones and replays. Its outputs are the graph's own tensors,
overwritten by the next replay: use them before calling again. Anything `fn` decides in Python
(a temperature, a branch) is frozen into the capture: `reset()` captures again on a later call.

Graphs are on for CUDA devices unless `NO_CUDA_GRAPH=1` is set (or `enabled=False`). A stage whose
capture fails (an op that cannot be captured, an older torch) warns and runs without a graph.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence

import torch


def graphs_wanted(device: torch.device | str) -> bool:
    """CUDA graphs for this device: CUDA, and not turned off with NO_CUDA_GRAPH=1."""
    off = os.environ.get("NO_CUDA_GRAPH", "").strip().lower() in ("1", "true", "yes", "on")
    return torch.device(device).type == "cuda" and not off


class Graphed:
    def __init__(
        self,
        fn: Callable[..., torch.Tensor | tuple[torch.Tensor, ...]],
        *,
        enabled: bool,
        warmup: int = 1,
        generators: Sequence[torch.Generator] = (),
        capture: Callable[[Callable[[], object]], Callable[[], None]] | None = None,
    ):
        """`generators`: random generators `fn` draws from, registered with the graph so each
        replay draws fresh numbers. `capture`: how to record a call (the CUDA graph by default;
        tests give a stand-in that records nothing and re-runs the call, to check the rest)."""
        self.fn = fn
        self.enabled = enabled
        self.warmup = warmup
        self.generators = tuple(generators)
        self._capture = capture or self._cuda_capture
        self._calls_left = warmup
        self._replay: Callable[[], None] | None = None
        self._inputs: tuple[torch.Tensor, ...] = ()
        self._outputs: object = None

    @property
    def captured(self) -> bool:
        return self._replay is not None

    def reset(self) -> None:
        """Forget the graph: the next call runs eagerly and the one after captures again."""
        self._replay, self._inputs, self._outputs = None, (), None
        self._calls_left = self.warmup

    def __call__(self, *inputs: torch.Tensor):
        if not self.enabled:
            return self.fn(*inputs)
        if self._replay is None:
            if self._calls_left > 0:
                self._calls_left -= 1
                return self.fn(*inputs)
            self._inputs = tuple(x.clone() for x in inputs)
            try:
                self._replay = self._capture(self._record)
            except Exception as e:  # an op, a driver or a torch version that cannot capture
                warnings.warn(
                    f"running {getattr(self.fn, '__qualname__', self.fn)} without a CUDA graph: "
                    f"capturing it failed ({e})",
                    RuntimeWarning,
                    stacklevel=2,
                )
                self.reset()
                self.enabled = False
                return self.fn(*inputs)
        else:
            if len(inputs) != len(self._inputs):
                raise ValueError(f"captured with {len(self._inputs)} inputs, got {len(inputs)}")
            for i, (fixed, x) in enumerate(zip(self._inputs, inputs)):
                if x.shape != fixed.shape or x.dtype != fixed.dtype:
                    raise ValueError(
                        f"input {i} was captured as {tuple(fixed.shape)} {fixed.dtype}, "
                        f"got {tuple(x.shape)} {x.dtype}: a graph replays fixed shapes"
                    )
                fixed.copy_(x)
        self._replay()
        return self._outputs

    def _record(self) -> None:
        self._outputs = self.fn(*self._inputs)

    def _cuda_capture(self, record: Callable[[], object]) -> Callable[[], None]:
        graph = torch.cuda.CUDAGraph()
        for generator in self.generators:
            graph.register_generator_state(generator)
        with torch.cuda.graph(graph):  # records on a side stream; nothing runs yet
            record()
        return graph.replay
