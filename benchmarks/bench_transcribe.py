"""How fast `transcribe` runs on this machine, for Kyutai STT's shapes with random weights.

For each shape (stt-1b-en_fr: 16 layers of dim 2048, context 750, vocabulary 8000; stt-2.6b-en:
48 layers, 32 heads; both read all 32 of Mimi's codebooks, with the full-size Mimi), writes a
random checkpoint in Kyutai's layout (bfloat16, as published) to a temporary folder, loads it as
`transcribe` does (`model.stt.Transcriber`) at --dtype, steps --frames frames of a synthetic voice
after a warm-up, and prints per frame the milliseconds (Mimi encode and the LM step, p50 and p90),
the real-time factor (p50 / 80 ms: below 1 keeps up with the audio) and the peak memory
(ru_maxrss, with the checkpoint's writing).

    python benchmarks/bench_transcribe.py [--shapes 1b 2.6b] [--dtype float32|int8|bfloat16]
                                          [--device cpu|cuda] [--threads N] [--frames 50]
                                          [--json]
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from app.commands.bench import synthetic_input  # noqa: E402
from model.config import FRAME_SECONDS  # noqa: E402

SHAPES = {  # the published config.json's LM keys (tests/model/data/family/stt-1b-en_fr.json)
    "1b": dict(dim=2048, num_heads=16, num_layers=16, context=750, text_card=8000,
               extra_heads_num_heads=4, audio_delay_seconds=0.5, prefix=0.0),
    "2.6b": dict(dim=2048, num_heads=32, num_layers=48, context=375, text_card=4000,
                 extra_heads_num_heads=0, audio_delay_seconds=2.5, prefix=1.0),
}  # fmt: skip


def write(shape: str, folder: Path) -> Path:
    from model.tiny import TINY_STT_LM, write_random_checkpoint

    sizes = dict(SHAPES[shape])
    delay, prefix = sizes.pop("audio_delay_seconds"), sizes.pop("prefix")
    lm = {**TINY_STT_LM, **sizes, "card": 2048, "max_period": 100000}
    folder = write_random_checkpoint(folder, lm, None, model_type="stt")
    config = json.loads((folder / "config.json").read_text())
    config["stt_config"] = {"audio_delay_seconds": delay, "audio_silence_prefix_seconds": prefix}
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def measure(shape: str, dtype: str, frames: int, warmup: int, device: str = "cpu") -> dict:
    from model.files import resolve_folder
    from model.stt import Transcriber

    with tempfile.TemporaryDirectory(prefix="moshi-stt-bench-") as tmp:
        print(f"writing a random {shape} speech-to-text model ...", file=sys.stderr)
        folder = write(shape, Path(tmp))
        transcriber = Transcriber.load(resolve_folder(folder), device, dtype)
        dev = transcriber.device

        def now() -> float:
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            return time.perf_counter()

        audio = synthetic_input(warmup + frames)
        encode, step = [], []
        mimi, model = transcriber.mimi, transcriber.model
        with torch.inference_mode():
            for i, frame in enumerate(audio):
                t0 = now()
                codes = mimi.encode(torch.from_numpy(frame).reshape(1, 1, -1).to(dev))
                t1 = now()
                model.step(codes[:, :, 0])
                t2 = now()
                if i >= warmup:
                    encode.append(1000 * (t1 - t0))
                    step.append(1000 * (t2 - t1))
        total = np.add(encode, step)
        params = sum(p.numel() for p in transcriber.lm.parameters())
        transcriber.close()
    return {
        "shape": shape,
        "dtype": dtype,
        "device": str(dev),
        "lm_parameters": params,
        "threads": torch.get_num_threads(),
        "encode_ms_p50": float(np.median(encode)),
        "lm_ms_p50": float(np.median(step)),
        "total_ms_p50": float(np.median(total)),
        "total_ms_p90": float(np.percentile(total, 90)),
        "rtf": float(np.median(total)) / (1000 * FRAME_SECONDS),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", nargs="+", choices=SHAPES, default=["1b"])
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "int8"])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--threads", type=int)
    parser.add_argument("--frames", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    for shape in args.shapes:
        r = measure(shape, args.dtype, args.frames, args.warmup, args.device)
        if args.json:
            print(json.dumps(r))
            continue
        print(
            f"stt {shape} ({r['lm_parameters'] / 1e9:.2f}B, LM {r['dtype']}, "
            f"{r['threads']} threads, {platform.processor() or platform.machine()}): "
            f"Mimi encode {r['encode_ms_p50']:.1f} ms + LM {r['lm_ms_p50']:.1f} ms = "
            f"{r['total_ms_p50']:.1f} ms a frame (p90 {r['total_ms_p90']:.1f}), real-time "
            f"factor {r['rtf']:.2f}, peak RSS {r['peak_rss_mb']:,.0f} MB"
        )


if __name__ == "__main__":
    main()
