"""Our pipeline against Kyutai's original `moshi` package, on the same weights and frames.

    .venv/bin/python benchmarks/compare_reference.py --config small --random-weights --threads 2

Takes `moshi-desktop bench`'s arguments: times ours exactly as `bench` does, then, in the same
process, the original (its Mimi, its LM in `LMGen` with the same sampling, `moshi` 0.2.13 installed
with --no-deps as the tests install it) on the same frames, and prints both side by side with the
speedup (frames per second at the median frame, ours / original). `--json` prints one JSON line.
The original's peak host memory includes ours, timed first.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.commands.bench import (  # noqa: E402
    STAGES,
    _clock,
    _free,
    _log,
    _memory,
    _reset_device_peak,
    add_arguments,
    format_report,
    measure,
    summarize,
)
from app.errors import UsageError, UserError  # noqa: E402

_NOT_LM_KWARGS = (  # config.json keys that name files or settings, not LMModel arguments
    "moshi_name",
    "mimi_name",
    "tokenizer_name",
    "mimi_config_name",
    "model_type",
    "lm_gen_config",
    "quantize",
)


def _reference_lm_kwargs(files) -> dict[str, Any]:
    from moshi.models import loaders

    path = files.folder / "config.json"
    if not path.is_file():
        return dict(loaders._lm_kwargs)
    config = json.loads(path.read_text())
    return {k: v for k, v in config.items() if k not in _NOT_LM_KWARGS}


def load_reference(files, device, dtype, sampling):
    """Kyutai's original Mimi and LM (in an `LMGen` with `sampling`) from the same files."""
    from moshi.models import loaders
    from moshi.models.lm import LMGen

    mimi_config = None
    if files.config.mimi_config_name:
        path = files.folder / files.config.mimi_config_name
        if not path.is_file():
            raise UserError(f"cannot find the Mimi config at {path}")
        mimi_config = json.loads(path.read_text())
    mimi = loaders.get_mimi(
        str(files.mimi_weights),
        mimi_config,
        device=device,
        num_codebooks=files.mimi_config.num_codebooks,
    )
    lm = loaders.get_moshi_lm(
        str(files.lm_weights), lm_kwargs=_reference_lm_kwargs(files), device=device, dtype=dtype
    )
    gen = LMGen(
        lm.eval(),
        use_sampling=not sampling.greedy,
        temp=sampling.temperature,
        temp_text=sampling.text_temperature,
        top_k=sampling.top_k,
        top_k_text=sampling.text_top_k,
    )
    return mimi.eval(), gen


def _wrap_timed(
    fn: Callable, now: Callable[[], float], marks: dict[str, float], name: str
) -> Callable:
    def timed(*args, **kwargs):
        start = now()
        out = fn(*args, **kwargs)
        marks[name] = marks.get(name, 0.0) + 1000 * (now() - start)
        return out

    return timed


def time_reference(mimi, gen, audio: np.ndarray, warmup: int, device, seed: int):
    """The original's streaming loop (encode -> LMGen.step -> decode when a frame is out) over
    the same frames; its forward_text and depformer_step (the dep_q steps with their sampling)
    are timed through the callables its streaming state holds (CUDA-graphed on a GPU)."""
    import torch
    from moshi.utils.compile import no_compile

    now = _clock(device)
    samples: dict[str, list[float]] = {name: [] for name in ("total", *STAGES)}
    marks: dict[str, float] = {}
    torch.manual_seed(seed)
    with ExitStack() as stack:
        stack.enter_context(torch.inference_mode())
        if device.type != "cuda":  # it would try torch.compile
            stack.enter_context(no_compile())
        stack.enter_context(mimi.streaming(1))
        stack.enter_context(gen.streaming(1))
        state = getattr(gen, "_streaming_state", None)
        if state is not None and hasattr(state, "graphed_main"):
            state.graphed_main = _wrap_timed(state.graphed_main, now, marks, "temporal")
            if getattr(state, "graphed_depth", None) is not None:
                state.graphed_depth = _wrap_timed(state.graphed_depth, now, marks, "depformer")
        for index, pcm in enumerate(audio):
            marks.clear()
            t0 = now()
            frame = torch.from_numpy(pcm).to(device)[None, None]
            codes = mimi.encode(frame)  # [1, 8, 1]
            t1 = now()
            out = gen.step(codes)  # [1, 1 + dep_q, 1] or None
            if out is not None:
                out[0, :, 0].tolist()
            t2 = now()
            if out is not None:
                mimi.decode(out[:, 1:]).float().cpu().numpy()
            t3 = now()
            if index < warmup:
                continue
            samples["total"].append(1000 * (t3 - t0))
            samples["encode"].append(1000 * (t1 - t0))
            samples["lm"].append(1000 * (t2 - t1))
            samples["decode"].append(1000 * (t3 - t2) if out is not None else 0.0)
            for stage in ("temporal", "depformer"):
                if stage in marks:
                    samples[stage].append(marks[stage])
    return samples


def time_the_original(args: argparse.Namespace):
    """`measure`'s `then`: the original on the same files and frames, added to the report."""

    def then(files, device, dtype, sampling, audio, weight_bytes, report: dict[str, Any]) -> None:
        if files.config.quantize:
            raise UserError("the original is compared on float models: this one is int8 (q8)")
        _reset_device_peak(device)
        _log("loading the original ...")
        mimi, gen = load_reference(files, device, dtype, sampling)
        _log(f"timing the original: {args.warmup} + {args.frames} frames ...")
        samples = time_reference(mimi, gen, audio, args.warmup, device, args.seed)
        reference = summarize(samples, weight_bytes)
        reference.update(
            frames=args.frames, device=str(device), dtype=str(dtype).removeprefix("torch.")
        )
        reference.update(_memory(device))
        report["reference"] = reference
        report["speedup"] = reference["ms_per_frame_p50"] / report["ms_per_frame_p50"]
        del mimi, gen
        _free()

    return then


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    args.compare_reference = True  # bench's memory check for --config 7b counts the original too
    try:
        if args.dtype == "int8":
            raise UsageError("the original is compared on float models: not with --dtype int8")
        try:
            import moshi.models.loaders  # noqa: F401
        except ImportError as e:
            raise UserError(
                "this needs Kyutai's original `moshi` package, which cannot be imported here "
                f"({e}); install it with: pip install moshi==0.2.13 --no-deps einops"
            ) from e
        report = measure(args, then=time_the_original(args))
    except UserError as e:
        print(f"compare_reference: error: {e}", file=sys.stderr)
        return e.exit_code
    print(json.dumps(report) if args.json else format_report(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
