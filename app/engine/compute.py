"""The seam between the engine and what computes Moshi's frames.

Two backends implement `Compute`: the model on this machine (`app.engine.local.LocalCompute`,
around `model.pipeline.Pipeline`) and Kyutai's server (`app.engine.remote.RemoteSession`). The
engine talks to either through this Protocol alone and never asks which one it has: a local model
is connected as soon as it is loaded, and has no link to report on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import numpy as np

if TYPE_CHECKING:
    from .messages import SetSampling
    from .remote import RemoteStats


class ComputedFrame(Protocol):
    """One frame's answer."""

    text: str  # the new piece of Moshi's inner monologue, "" if none
    pcm: np.ndarray | None  # Moshi's voice [1920] at 24 kHz; None until it starts
    ms: dict[str, float]  # time taken by each stage, for the stats


class Compute(Protocol):
    """What the engine thread drives, one call at a time, from its own thread."""

    def set_sampling(self, sampling: SetSampling) -> None:
        """Use these settings from the next frame (a server: from the next connection)."""

    def set_persona(self, voice: str | None, persona: str | None) -> None:
        """PersonaPlex's voice (a packaged voice's name, or a file) and persona (role text) for
        the next conversation (a server: from the next connection). Asked only where a run
        names them; a model that takes neither raises a UserError."""

    def warm_up(self) -> None:
        """Run what makes the first frames slow (kernel choice, CUDA graph capture) now, while
        the user waits for the model anyway; the conversation is left as it was."""

    def connect(self) -> None:
        """Start connecting; return at once."""

    def wait_ready(self, timeout: float) -> bool:
        """True once frames can be stepped; raises (a UserError) when they cannot be."""

    @property
    def waiting(self) -> bool:
        """Connected, but the far end is busy: the engine shows "waiting"."""

    @property
    def connected(self) -> bool:
        """Whether the compute is connected (or connecting): `reset` may close a link."""

    def step(self, pcm: np.ndarray) -> ComputedFrame:
        """The user's frame [1920] in (what Moshi hears); Moshi's answer out."""

    def reset(self) -> None:
        """A new conversation: forget everything heard and said."""

    def disconnect(self) -> None:
        """Close the link, if any; return at once."""

    def stats(self) -> RemoteStats | None:
        """The link's counters for the status bar, or None where there is no link."""
