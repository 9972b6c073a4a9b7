"""Streaming Mimi speed: ms per 80 ms frame to encode and to decode, ours beside Kyutai's original.

Both run the full-size Mimi on the same random weights (the codebooks filled in at random) and the
same audio, one frame (1920 samples in, 8 codes out; 8 codes in, 1920 samples out) per call, after
a warm-up. The original is timed only where the `moshi` package is importable.

A streaming frame reads every weight once, so it can go no faster than reading them: the last line
gives Mimi's weight bytes per frame, how fast this machine reads memory (a sum over 512 MB), and the
time that takes, to judge a measured frame against the machine it ran on. On a shared VM the read
speed changes from run to run (31 to 55 GB/s on issue 7's 2-core machine; MKL's products of a few
columns read at most about 33 there, even from cache, our kernel 31-51), and the floor with it.

    python benchmarks/bench_mimi.py [--frames 100] [--warmup 10] [--threads N] [--device cpu]
                                    [--plain]

Ours runs with its CPU forms swapped in (`model.cpu.speed_up`), as `Pipeline.load` runs it;
`--plain` times the modules as they are written instead. NO_NATIVE_KERNEL=1 times ours with MKL's
products instead of our kernel (`model/cpu/native.py`).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's model/

from model.checkpoint import load_weights  # noqa: E402
from model.config import FRAME_SIZE  # noqa: E402
from model.cpu import native, speed_up  # noqa: E402
from model.mimi import Mimi  # noqa: E402
from model.streaming import streaming  # noqa: E402

COLUMNS = ("encode p50", "encode mean", "decode p50", "decode mean")


def random_codebooks(state: dict[str, torch.Tensor], seed: int = 0) -> dict[str, torch.Tensor]:
    """`state` with every codebook drawn at random (a fresh codebook is all zeros)."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for key, value in state.items():
        if key.endswith("_codebook.embedding_sum"):
            value = torch.randn(value.shape, generator=g)
        elif key.endswith("_codebook.cluster_usage"):
            value = torch.rand(value.shape, generator=g) + 0.5
        out[key] = value.detach().clone()
    return out


def build(device: str, plain: bool = False) -> dict[str, torch.nn.Module]:
    """Ours (with its CPU forms unless `plain`) and, if `moshi` is installed, the original,
    holding the same weights."""
    torch.manual_seed(0)
    try:
        from moshi.models import loaders
    except ImportError:
        print("moshi is not installed: timing ours only")
        loaders = None
    ours = Mimi().eval()
    models = {"ours": ours}
    if loaders is None:
        load_weights(ours, random_codebooks(ours.state_dict()))
    else:
        original = loaders.get_mimi(None, device="cpu")
        state = random_codebooks(original.state_dict())
        original.load_state_dict(state)
        load_weights(ours, state)
        models["original"] = original.eval().to(device)
    ours.to(device)
    if not plain:
        speed_up(ours)
    return models


def weight_bytes_per_frame(mimi: Mimi) -> int:
    """Bytes of weights one streaming frame reads: every parameter (convs, transformers,
    projections) and the codebooks in use (the acoustic levels past `num_codebooks` are not)."""
    params = sum(p.numel() * p.element_size() for p in mimi.parameters())
    q = mimi.quantizer
    levels = [
        *q.rvq_first.vq.layers[: q.n_semantic],
        *q.rvq_rest.vq.layers[: q.num_codebooks - q.n_semantic],
    ]
    centroids = [level._codebook.embedding_sum for level in levels]
    return params + sum(c.numel() * c.element_size() for c in centroids)


def read_bandwidth(device: str, megabytes: int = 512, repeats: int = 5) -> float:
    """This machine's memory read speed in GB/s: a sum over `megabytes`, the median of `repeats`."""
    x = torch.ones(megabytes * 2**20 // 4, device=device)
    sync = torch.cuda.synchronize if x.is_cuda else (lambda: None)
    seconds = []
    for _ in range(repeats + 1):  # the first pass warms up
        sync()
        t0 = time.perf_counter()
        x.sum()
        sync()
        seconds.append(time.perf_counter() - t0)
    return x.numel() * 4 / statistics.median(seconds[1:]) / 1e9


def time_stream(
    model: torch.nn.Module, audio: torch.Tensor, warmup: int
) -> tuple[list[float], list[float]]:
    """Stream `audio` [1, 1, T] frame by frame: per-frame encode and decode times, in ms."""
    sync = torch.cuda.synchronize if audio.is_cuda else (lambda: None)
    stream = streaming(model, 1) if isinstance(model, Mimi) else model.streaming(1)
    encode_ms, decode_ms = [], []
    with torch.inference_mode(), stream:
        for i in range(audio.shape[-1] // FRAME_SIZE):
            frame = audio[..., i * FRAME_SIZE : (i + 1) * FRAME_SIZE]
            sync()
            t0 = time.perf_counter()
            codes = model.encode(frame)  # [1, 8, 1]
            sync()
            t1 = time.perf_counter()
            model.decode(codes)  # [1, 1, 1920]
            sync()
            t2 = time.perf_counter()
            if i >= warmup:
                encode_ms.append(1000 * (t1 - t0))
                decode_ms.append(1000 * (t2 - t1))
    return encode_ms, decode_ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=100, help="frames timed (80 ms each)")
    parser.add_argument("--warmup", type=int, default=10, help="frames run before timing")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch intra-op threads (default: torch's own choice)",
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--plain", action="store_true", help="ours without its CPU forms")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    models = build(args.device, args.plain)
    speed = read_bandwidth(args.device)
    g = torch.Generator().manual_seed(1)
    n = args.warmup + args.frames
    audio = (0.1 * torch.randn(1, 1, n * FRAME_SIZE, generator=g)).to(args.device)
    print(
        f"Mimi streaming, {args.frames} frames after {args.warmup} warm-up, device "
        f"{args.device}, {torch.get_num_threads()} threads, torch {torch.__version__}"
    )
    if args.device == "cpu":
        forms = "plain modules" if args.plain else "CPU forms (model/cpu)"
        print(f"ours: {forms}; our CPU kernel (model/cpu/native.py): {native.status()}")
    print(f"{'':10}" + "".join(f"{h:>13}" for h in COLUMNS) + "   (ms per 80 ms frame)")
    results = {}
    for name, model in models.items():
        enc, dec = time_stream(model, audio, args.warmup)
        results[name] = (
            statistics.median(enc),
            statistics.fmean(enc),
            statistics.median(dec),
            statistics.fmean(dec),
        )
        print(f"{name:10}" + "".join(f"{v:>13.2f}" for v in results[name]))
    if "original" in results:
        ratio = [o / r for o, r in zip(results["ours"], results["original"])]
        print(
            f"{'ours/orig':10} "
            + "".join(f"{v:>12.2f}x" for v in ratio)
            + "   (below 1: ours is faster)"
        )
    ours = models["ours"]
    assert isinstance(ours, Mimi)
    weights = weight_bytes_per_frame(ours)
    floor = weights / speed / 1e6  # ms
    total = results["ours"][0] + results["ours"][2]
    print(
        f"floor: a frame reads {weights / 1e6:.0f} MB of weights; this machine reads memory at "
        f"{speed:.1f} GB/s, so {floor:.1f} ms a frame at least (ours, encode + decode p50: "
        f"{total:.1f} ms, {total / floor:.2f}x that)"
    )


if __name__ == "__main__":
    main()
