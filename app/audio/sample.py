"""A short sound played on its own, outside a conversation: a voice's sample, for the window's
Voice menu. sounddevice's own player, which returns at once and plays in PortAudio's thread; a
new sample stops the one playing."""

from __future__ import annotations

import numpy as np

from .devices import _sounddevice, find_device


def pcm16_to_float(frames: bytes, channels: int) -> np.ndarray:
    """16-bit little-endian PCM -> [samples, channels] float32 in [-1, 1]."""
    return (np.frombuffer(frames, dtype="<i2").astype(np.float32) / 32768.0).reshape(-1, channels)


def play(audio: np.ndarray, rate: int, output_device: str | None = None) -> None:
    """Play `audio` ([samples] or [samples, channels] float32) on the output device (by name or
    index; None: the default). Returns at once. No device, or PortAudio missing: AudioError."""
    sd = _sounddevice()
    device = find_device(sd, output_device, "output")
    sd.play(audio, rate, device=device["index"])


def stop() -> None:
    """Stop what `play` is playing, if anything."""
    try:
        _sounddevice().stop()
    except Exception:  # noqa: BLE001 (nothing playing, or no PortAudio: nothing to stop)
        pass


def recording_problem(path: str) -> str:
    """Why the recording at `path` cannot be a voice prompt (unreadable, too short, too long),
    or "". Reads only its header."""
    import soundfile

    from model.voices import voice_length_problem

    try:
        info = soundfile.info(path)
    except (soundfile.LibsndfileError, RuntimeError, OSError) as e:
        return f"it cannot be read as audio ({e})"
    if info.frames == 0 or info.samplerate <= 0:
        return "it holds no audio"
    return voice_length_problem(info.frames / info.samplerate)
