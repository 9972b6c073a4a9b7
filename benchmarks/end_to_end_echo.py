"""End to end: `chat --input-file` with Moshi's own voice fed back into its microphone through the
simulated room (benchmarks/room.py), the loop closed in software, with the canceller on and off.

The user's part is synthetic speech in a wav file; chat runs a tiny random Moshi (model/tiny.py:
no download) with `--input-file`, and its audio opener is swapped for `room.RoomAudio`, which
plays the same file as the user's voice plus the echo of every frame Moshi says (living room, 100
ms delay). The figure is the share of 80 ms frames whose first-codebook Mimi codes of what Moshi
heard (the export's left channel: the record keeps the voice after the canceller) equal those of
the clean file. A tiny random Mimi's own first codebook gives one code to everything, so its
first codebook is fitted here (k-means, 16 centroids) to the clean input's projected latents: a
random encoder with a data-fitted codebook, a stand-in for the trained Mimi (none offline), which
shows whether the canceller brings what Moshi hears back to the clean input, not Moshi's accuracy.

    python benchmarks/end_to_end_echo.py [--seconds 8]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's app/ and model/
sys.path.insert(0, str(Path(__file__).resolve().parent))

import room as sim  # noqa: E402


def latents(audio: np.ndarray, model_folder: Path) -> np.ndarray:
    """What the checkpoint's Mimi gives its first codebook for each frame of `audio` (24 kHz):
    the latent through the first quantizer's input projection # [T, D]."""
    import torch

    from app.engine.local import locate
    from model.checkpoint import load_mimi

    mimi = load_mimi(locate(str(model_folder), None, True))
    seen = {}
    encode = mimi.quantizer.encode

    def keep(latent):
        seen["latent"] = latent
        return encode(latent)

    mimi.quantizer.encode = keep
    with torch.no_grad():
        mimi.encode(torch.from_numpy(np.ascontiguousarray(audio, np.float32))[None, None])
        x = mimi.quantizer.rvq_first.input_proj(seen["latent"])  # [1, D, T]
    return x[0].T.numpy().astype(np.float64)


def fit_codebook(x: np.ndarray, bins: int = 16, seed: int = 0) -> np.ndarray:
    """k-means centroids [bins, D] of `x` [T, D] (20 Lloyd iterations from random frames)."""
    rng = np.random.default_rng(seed)
    centroids = x[rng.choice(len(x), bins, replace=False)]
    for _ in range(20):
        codes = nearest(x, centroids)
        for k in range(bins):
            if np.any(codes == k):
                centroids[k] = x[codes == k].mean(axis=0)
    return centroids


def nearest(x: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    return ((x[:, None, :] - centroids[None]) ** 2).sum(-1).argmin(axis=1)


def agreement(aec: bool, seconds: float = 8.0, folder: Path | None = None) -> float:
    """Share of frames whose first codes of what Moshi heard equal the clean input's."""
    import soundfile

    import app.commands.chat as chat
    from app.audio.echo import with_processing
    from app.cli import main
    from model.config import FRAME_SIZE
    from model.tiny import write_tiny_checkpoint

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        folder = folder or write_tiny_checkpoint(tmp / "tiny", layout="fused")
        frames = int(seconds * sim.RATE) // FRAME_SIZE
        user = sim.voice(frames * FRAME_SIZE / sim.RATE, 2, (95, 140))
        soundfile.write(tmp / "in.wav", user, sim.RATE)
        noise = np.random.default_rng(0).standard_normal(len(user)) * 1e-4
        h = sim.rir(sim.ROOMS["living room"], 3)

        def open_room(args):
            audio = sim.RoomAudio(user, noise, h, 0.1, 0.7)
            return with_processing(audio, chat._echo_cancellation(args), args.noise_suppression)

        original, chat._open_audio = chat._open_audio, open_room
        data = os.environ.get("XDG_DATA_HOME")
        os.environ["XDG_DATA_HOME"] = str(tmp)  # the autosave goes in the temp folder
        try:
            export = tmp / "heard.wav"
            flag = "--aec" if aec else "--no-aec"
            args = ["chat", "--model", str(folder), "--input-file", str(tmp / "in.wav"), flag]
            status = main([*args, "--seed", "1", "--export", str(export)])
        finally:
            chat._open_audio = original
            if data is None:
                os.environ.pop("XDG_DATA_HOME")
            else:
                os.environ["XDG_DATA_HOME"] = data
        if status != 0:
            raise RuntimeError(f"chat failed ({status})")
        heard = soundfile.read(export, dtype="float32")[0][: len(user), 0]
        clean, got = latents(user, folder), latents(heard, folder)
    codebook = fit_codebook(clean)
    agree = nearest(clean, codebook) == nearest(got, codebook)
    return float(np.mean(agree[1:]))  # the first frame holds no echo yet


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=8.0)
    args = parser.parse_args(argv)
    on, off = agreement(True, args.seconds), agreement(False, args.seconds)
    print(
        f"end to end (chat --input-file, loop closed in a simulated room): first-codebook "
        f"agreement with the clean input {100 * on:.0f}% with the canceller, {100 * off:.0f}% "
        "without"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
