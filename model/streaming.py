"""The one streaming convention every stateful module follows.

A streaming module carries state from one call to the next: the input tail of a causal conv, the
overlap of a transposed conv, the keys, values and position of an attention layer. Outside streaming,
every call is one-shot: it starts from a fresh state and keeps nothing.

- ``with streaming(model, batch_size):`` gives every streaming submodule its state, as tensors on the
  module's device; leaving the block drops it. ``start_streaming``/``stop_streaming`` do the same
  without a block, for a model that streams for its whole life (the app's engine).
- ``reset_streaming(model)`` puts every state back to its start *in place*: tensors keep their
  identity and shape, so a step captured in a CUDA graph stays valid after a reset.
- Within a step nothing reads a tensor back to the host and no state changes shape.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn


class State:
    """A module's streaming state. Subclasses hold tensors and say how to reset them in place."""

    def reset(self) -> None:
        raise NotImplementedError


class StreamingModule(nn.Module):
    """A module whose calls continue from ``self.state`` while streaming."""

    def __init__(self) -> None:
        super().__init__()
        self.state: State | None = None

    def init_state(self, batch_size: int) -> State:
        """Allocate this module's state at its start, on the module's device."""
        raise NotImplementedError

    @property
    def is_streaming(self) -> bool:
        return self.state is not None


def _streaming_modules(model: nn.Module) -> Iterator[StreamingModule]:
    return (m for m in model.modules() if isinstance(m, StreamingModule))


def start_streaming(model: nn.Module, batch_size: int) -> None:
    for module in _streaming_modules(model):
        module.state = module.init_state(batch_size)


def stop_streaming(model: nn.Module) -> None:
    for module in _streaming_modules(model):
        module.state = None


def reset_streaming(model: nn.Module) -> None:
    for module in _streaming_modules(model):
        if module.state is None:
            raise RuntimeError("reset_streaming() called on a model that is not streaming")
        module.state.reset()


@contextmanager
def streaming(model: nn.Module, batch_size: int = 1) -> Iterator[None]:
    start_streaming(model, batch_size)
    try:
        yield
    finally:
        stop_streaming(model)
