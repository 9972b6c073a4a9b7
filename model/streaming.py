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
- ``saved = save_streaming(model)`` copies every state where it stands, and
  ``restore_streaming(model, saved)`` puts it back, in place as a reset does (PersonaPlex keeps the
  state its prompt leaves, to start the next conversation there).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn


class State:
    """A module's streaming state. Subclasses hold tensors and say how to reset them in place."""

    def reset(self) -> None:
        raise NotImplementedError

    def save(self) -> dict[str, Any]:
        """A copy of this state where it stands (its tensors cloned)."""
        return {
            name: value.clone() if isinstance(value, torch.Tensor) else copy.deepcopy(value)
            for name, value in vars(self).items()
        }

    def restore(self, saved: dict[str, Any]) -> None:
        """Back to `saved` (from `save`), in place: tensors keep their identity."""
        for name, value in saved.items():
            current = getattr(self, name)
            if isinstance(current, torch.Tensor):
                current.copy_(value)
            else:
                setattr(self, name, copy.deepcopy(value))


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


def save_streaming(model: nn.Module) -> list[dict[str, Any]]:
    """A copy of every streaming state of `model`, for `restore_streaming`."""
    states = [module.state for module in _streaming_modules(model)]
    if any(state is None for state in states):
        raise RuntimeError("save_streaming() called on a model that is not streaming")
    return [state.save() for state in states]


def restore_streaming(model: nn.Module, saved: list[dict[str, Any]]) -> None:
    """Every streaming state of `model` back to what `save_streaming` copied, in place."""
    modules = list(_streaming_modules(model))
    if len(modules) != len(saved) or any(m.state is None for m in modules):
        raise RuntimeError("restore_streaming() needs the model that was saved, streaming")
    for module, state in zip(modules, saved):
        module.state.restore(state)


@contextmanager
def streaming(model: nn.Module, batch_size: int = 1) -> Iterator[None]:
    start_streaming(model, batch_size)
    try:
        yield
    finally:
        stop_streaming(model)
