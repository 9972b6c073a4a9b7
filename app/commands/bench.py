"""`moshi-desktop bench`: how fast the whole pipeline runs, per 80 ms frame and stage by stage.

N frames (after W warm-up frames) of a synthetic voice-like input (a chirp with a syllable-rate
envelope plus noise, fixed seed) stream through the pipeline the app uses, `Pipeline.step`:

    Mimi encode -> temporal transformer -> depformer (dep_q codebooks, each sampled) -> Mimi decode

Each frame's total is the wall time of `Pipeline.step`. The encode, LM and decode times are the
ones the pipeline reports; the LM stage is split by wrapping the LM's `forward_temporal` (the
temporal stage) and, from the first `forward_depth` call to the end of the generator's step, the
depformer stage: its dep_q steps with their sampling. The LM stage also holds the text sampling and
the token bookkeeping. On CUDA the wrappers synchronise the device around what they time (which
costs a little); elsewhere nothing is synchronised.

Reported per stage and in total: ms per frame at p50, p90 and p99; the real-time factor (total p50
/ 80 ms: below 1 keeps up with a live conversation); peak and current host memory; peak CUDA
memory; the LM weights read per frame (every LM weight but the embedding tables, of which one row
per token is read) and the bandwidth that achieves (weights / (temporal + depformer) p50).

Where the pipeline replays CUDA graphs (a CUDA device, without --no-cuda-graphs or
NO_CUDA_GRAPH=1), it is timed twice: first without graphs, stage by stage, then with them, where
the LM step is one graph and only the encode / LM / decode stages are told apart.

`benchmarks/compare_reference.py` takes the same arguments, and then runs Kyutai's original
`moshi` package on the same weights in the same process (`measure`'s `then`), and the table shows
both with the speedup.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np

from model.catalog import DEFAULT_REPO
from model.config import FRAME_SECONDS, FRAME_SIZE, SAMPLE_RATE, LMConfig

from ..errors import UsageError, UserError
from .arguments import add_model_arguments, load_pipeline

FRAME_MS = 1000 * FRAME_SIZE / SAMPLE_RATE  # 80 ms
STAGES = ("encode", "temporal", "depformer", "lm", "decode")

# The random-weight configurations, as Kyutai's config.json keys over model/tiny.py's TINY_LM
# (which holds every key of Moshi 7B's config.json).
SMALL_LM = {
    "dim": 512,
    "num_heads": 8,
    "num_layers": 4,
    "context": 3000,
    "text_card": 32000,
    "card": 2048,
    "depformer_dim": 256,
    "depformer_num_heads": 4,
    "depformer_num_layers": 2,
    "depformer_dim_feedforward": 1056,  # 4.125 x 256, as Moshi 7B's depformer
}
# Moshi 7B's sizes, from its configuration's one home (model.config's defaults).
MOSHI_7B_LM = {key: getattr(LMConfig(), key) for key in SMALL_LM}
CONFIGS = ("tiny", "small", "7b")


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "bench",
        help="time the whole pipeline per 80 ms frame, stage by stage",
        description=__doc__.split("\n\n")[0].removeprefix("`moshi-desktop bench`: "),
    )
    add_arguments(parser)
    parser.set_defaults(handler=run)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """bench's arguments (also benchmarks/compare_reference.py's)."""
    add_model_arguments(parser)
    for action in parser._actions:
        if action.dest == "model":  # --model and --config exclude each other
            action.default = None
            action.help = (
                f"the model to time: a Hugging Face repository id (default {DEFAULT_REPO}) or a "
                "local folder in Kyutai's layout; not with --config"
            )
    parser.add_argument(
        "--config",
        choices=CONFIGS,
        help="time a model with random weights instead (needs --random-weights), written to a "
        "temporary folder in Kyutai's layout and loaded as a released one. "
        "tiny: model/tiny.py's test model (LM dim 32, a narrow Mimi), for tests. "
        "small: an LM of dim 512, 8 heads, 4 layers, context 3000, Moshi's text vocabulary "
        "(32000) and codebooks (2048), a depformer of dim 256, 4 heads, 2 layers (92M "
        "parameters, 45M of them embedding tables), with the full-size Mimi. "
        "7b: Moshi 7B's shape (7.7B parameters; a 15.4 GB checkpoint is written to the "
        "temporary folder, TMPDIR), with the full-size Mimi: for a GPU; on the CPU only with "
        "--device cpu and the memory for it",
    )
    parser.add_argument(
        "--personaplex",
        action="store_true",
        help="with --config: a PersonaPlex of that shape (its depth transformer predicts 16 "
        "codebooks), and time its prompt phase too: a 10 s voice and the assistant persona, "
        "from the recording, from the voice's saved state, and from the state kept after the "
        "prompt (what the next conversation with them takes)",
    )
    parser.add_argument(
        "--random-weights",
        action="store_true",
        help="confirms that --config's model has random weights (its output is noise)",
    )
    parser.add_argument(
        "--frames", type=int, default=100, help="frames timed, 80 ms each (default 100)"
    )
    parser.add_argument(
        "--warmup", type=int, default=10, help="frames run before timing (default 10)"
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="sampling seed (default 0); the input is fixed"
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object (the last line of stdout) instead of the table",
    )


# --- Input, clocks, memory ------------------------------------------------------------------------


def synthetic_input(frames: int, seed: int = 0) -> np.ndarray:
    """[frames, 1920] float32 at 24 kHz: a 100 Hz -> 2 kHz chirp repeating every 2 s, under a
    3 Hz (syllable-rate) envelope, plus a little white noise."""
    n = frames * FRAME_SIZE
    t = np.arange(n) / SAMPLE_RATE
    tau = t % 2.0
    chirp = np.sin(2 * np.pi * (100 * tau + 475 * tau**2))  # 100 Hz + 950 Hz/s
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 3 * t)
    noise = np.random.default_rng(seed).standard_normal(n)
    return (0.3 * envelope * chirp + 0.03 * noise).astype(np.float32).reshape(frames, FRAME_SIZE)


def _clock(device) -> Callable[[], float]:
    """perf_counter in seconds; on CUDA once the device has finished what was queued."""
    import torch

    if device.type != "cuda":
        return time.perf_counter

    def now() -> float:
        torch.cuda.synchronize(device)
        return time.perf_counter()

    return now


def host_memory_mb() -> tuple[float | None, float | None]:
    """(peak, current) resident memory of this process in MB (1e6 bytes), None where unknown."""
    peak = rss = None
    try:
        import resource

        maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        peak = maxrss / 1e6 if sys.platform == "darwin" else maxrss * 1024 / 1e6  # bytes / KiB
    except ImportError:  # Windows
        pass
    try:
        with open("/proc/self/statm") as f:
            rss = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6
    except (OSError, ValueError, AttributeError):
        pass
    if peak is None or rss is None:
        try:
            import psutil

            info = psutil.Process().memory_info()
            rss = info.rss / 1e6 if rss is None else rss
            if peak is None and hasattr(info, "peak_wset"):
                peak = info.peak_wset / 1e6
        except ImportError:
            pass
    return peak, rss


def lm_weight_bytes_per_frame(lm) -> int:
    """Bytes of LM weights one frame reads: every parameter and buffer (int8 scales included)
    except the embedding tables, of which only the rows of the tokens embedded are read: 1 + n_q
    rows in the temporal transformer, one per depformer step."""
    import torch

    embeddings = [m for m in lm.modules() if isinstance(m, torch.nn.Embedding)]
    skip = {id(m.weight) for m in embeddings}
    tensors = [*lm.parameters(), *lm.buffers()]
    total = sum(t.numel() * t.element_size() for t in tensors if id(t) not in skip)
    cfg = lm.cfg
    row = embeddings[0].weight.element_size() if embeddings else 0
    return total + row * ((1 + cfg.n_q) * cfg.dim + cfg.dep_q * cfg.depformer_dim)


# --- Timing ---------------------------------------------------------------------------------------


def _percentiles(values: list[float]) -> tuple[float, float, float] | tuple[None, None, None]:
    if not values:
        return None, None, None
    p50, p90, p99 = np.percentile(np.asarray(values, dtype=np.float64), [50, 90, 99])
    return float(p50), float(p90), float(p99)


def summarize(samples: dict[str, list[float]], weight_bytes: int | None) -> dict[str, Any]:
    """Per-frame samples in ms (`total` and each stage) -> the report's numbers."""
    out: dict[str, Any] = {}
    p50, p90, p99 = _percentiles(samples["total"])
    out.update(ms_per_frame_p50=p50, ms_per_frame_p90=p90, ms_per_frame_p99=p99)
    out["ms_per_frame_mean"] = float(np.mean(samples["total"]))
    out["rtf"] = p50 / FRAME_MS
    out["fps"] = 1000 / p50 if p50 > 0 else math.inf
    for stage in STAGES:
        p50_, p90_, p99_ = _percentiles(samples.get(stage, []))
        out.update({f"{stage}_ms_p50": p50_, f"{stage}_ms_p90": p90_, f"{stage}_ms_p99": p99_})
    out["lm_weight_bytes_per_frame"] = weight_bytes
    lm_ms = [out[f"{s}_ms_p50"] for s in ("temporal", "depformer")]
    out["lm_bandwidth_gb_s"] = (
        weight_bytes / (sum(lm_ms) / 1000) / 1e9
        if weight_bytes and None not in lm_ms and sum(lm_ms) > 0
        else None
    )
    return out


def _memory(device) -> dict[str, Any]:
    import torch

    peak, rss = host_memory_mb()
    out: dict[str, Any] = {"peak_host_mb": peak, "rss_mb": rss, "peak_device_mb": None}
    if device.type == "cuda":
        out["peak_device_mb"] = torch.cuda.max_memory_allocated(device) / 1e6
    return out


def _reset_device_peak(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


@contextmanager
def _timed_lm(pipeline, now: Callable[[], float], marks: dict[str, float]) -> Iterator[None]:
    """Wrap this pipeline's LM and generator (instance attributes, removed on exit) so that each
    step leaves `marks["temporal"]` and `marks["depformer"]` in ms."""
    lm, generator = pipeline.lm, pipeline.generator
    temporal, depth, step = lm.forward_temporal, lm.forward_depth, generator.step

    def timed_temporal(*args, **kwargs):
        start = now()
        out = temporal(*args, **kwargs)
        marks["temporal"] = marks.get("temporal", 0.0) + 1000 * (now() - start)
        return out

    def timed_depth(*args, **kwargs):
        if (args[0] if args else kwargs.get("step")) == 0:
            marks["depth_start"] = now()
        return depth(*args, **kwargs)

    def timed_step(*args, **kwargs):
        out = step(*args, **kwargs)
        if "depth_start" in marks:
            marks["depformer"] = 1000 * (now() - marks.pop("depth_start"))
        return out

    lm.forward_temporal, lm.forward_depth, generator.step = timed_temporal, timed_depth, timed_step
    try:
        yield
    finally:
        del lm.forward_temporal, lm.forward_depth, generator.step


def time_ours(pipeline, audio: np.ndarray, warmup: int) -> dict[str, list[float]]:
    """Stream `audio` [frames, 1920] through `pipeline` from a fresh state; per-frame ms of the
    frames after `warmup`. A pipeline replaying CUDA graphs runs its LM step as one graph: its
    temporal and depformer stages are not told apart."""
    import torch

    now = _clock(pipeline.device)
    samples: dict[str, list[float]] = {name: [] for name in ("total", *STAGES)}
    marks: dict[str, float] = {}
    split = nullcontext() if pipeline.cuda_graphs else _timed_lm(pipeline, now, marks)
    with torch.inference_mode(), split:
        for index, frame in enumerate(audio):
            marks.clear()
            start = now()
            result = pipeline.step(frame)
            total = 1000 * (now() - start)
            if index < warmup:
                continue
            samples["total"].append(total)
            for stage in ("encode", "lm", "decode"):
                samples[stage].append(result.ms[stage])
            for stage in ("temporal", "depformer"):
                if stage in marks:
                    samples[stage].append(marks[stage])
    return samples


# --- The command ----------------------------------------------------------------------------------


def _check_arguments(args: argparse.Namespace) -> None:
    if args.config and not args.random_weights:
        raise UsageError(
            f"--config {args.config} is a model with random weights: add --random-weights "
            "(or time real weights with --model)"
        )
    if args.random_weights and not args.config:
        raise UsageError("--random-weights needs --config tiny, small or 7b")
    if getattr(args, "personaplex", False) and not args.config:
        raise UsageError("--personaplex needs --config: it times a PersonaPlex of random weights")
    if args.config and args.model is not None:
        raise UsageError("--model and --config exclude each other: time one model")
    if args.frames < 1:
        raise UsageError("--frames must be 1 or more")
    if args.warmup < 0:
        raise UsageError("--warmup must be 0 or more")
    if args.threads is not None and args.threads < 1:
        raise UsageError("--threads must be 1 or more")


def _moshi_7b_parameters(personaplex: bool = False) -> int:
    """Moshi 7B's parameters (PersonaPlex's: its depth transformer for 16 codebooks)."""
    import torch

    from model.config import LMConfig
    from model.lm import LM

    with torch.device("meta"):
        return LM(LMConfig(dep_q=16 if personaplex else 8)).parameter_count()


def _check_7b(args: argparse.Namespace, device) -> None:
    """Refuse Moshi 7B with random weights where it cannot run: no room for its checkpoint, or
    the CPU unless asked for by name and with the RAM for it."""
    from model.pipeline import resolve_dtype

    from .doctor import available_memory

    params = _moshi_7b_parameters(getattr(args, "personaplex", False))
    checkpoint = 2 * params  # bfloat16, as released
    if device.type == "cpu":
        if args.device != "cpu":
            raise UserError(
                "--config 7b is Moshi 7B's full size, for a GPU, and no GPU is in use here: on "
                f"the CPU it needs about {4 * params / 1e9:.0f} GB of RAM in float32 and seconds "
                "per 80 ms frame; time --config small instead, or pass --device cpu to run it "
                "anyway"
            )
        dtype = resolve_dtype(args.dtype, device)
        per_weight = 1 if args.dtype == "int8" else dtype.itemsize
        needed = max(1.3 * checkpoint, per_weight * params)  # writing the checkpoint; ours
        if getattr(args, "compare_reference", False):  # the original reads it all, then casts
            needed = max(needed, checkpoint + dtype.itemsize * params)
        needed += 2e9  # Mimi, activations, the rest of the process
        available, where = available_memory(device)
        if available is not None and available < needed:
            raise UserError(
                f"--config 7b on the CPU needs about {needed / 1e9:.0f} GB of RAM, and {where} "
                f"has {available / 1e9:.0f} GB"
            )
    tmp = tempfile.gettempdir()
    free = shutil.disk_usage(tmp).free
    if free < checkpoint + 1e9:
        raise UserError(
            f"--config 7b writes a {checkpoint / 1e9:.1f} GB checkpoint to {tmp}, which has "
            f"{free / 1e9:.1f} GB free; point TMPDIR at a folder with more room"
        )


def _write_random(config: str, folder: Path, personaplex: bool = False) -> Path:
    from model.config import PERSONAPLEX_MODEL_TYPE
    from model.tiny import (
        TINY_LM,
        write_random_checkpoint,
        write_tiny_checkpoint,
        write_tiny_personaplex,
    )

    if config == "tiny":
        return write_tiny_personaplex(folder) if personaplex else write_tiny_checkpoint(folder)
    overrides = SMALL_LM if config == "small" else MOSHI_7B_LM
    lm = {**TINY_LM, **overrides}
    if personaplex:
        del lm["dep_q"]  # PersonaPlex's 16
        return write_random_checkpoint(folder, lm, None, model_type=PERSONAPLEX_MODEL_TYPE)
    return write_random_checkpoint(folder, lm, None)


PROMPT_VOICE_SECONDS = 10.0  # the voice prompt timed: NVIDIA's voices are about this long


def time_prompt(pipeline) -> dict[str, Any]:
    """PersonaPlex's prompt phase, what passes before the user can speak: the voice (a 10 s
    recording, synthetic) and the assistant persona, from the recording (Mimi encodes it, then
    a step a frame), from the voice's saved state (as a packaged .pt voice), and from the state
    kept after the prompt (the next conversation with the same voice and persona)."""
    from model.persona import SILENCE_FRAMES, VoicePrompt, persona_tokens
    from model.voices import DEFAULT_PERSONA

    now = _clock(pipeline.device)
    frames = math.ceil(PROMPT_VOICE_SECONDS * SAMPLE_RATE / FRAME_SIZE)
    voice = VoicePrompt.from_audio(synthetic_input(frames, seed=1).reshape(-1))
    steps = {
        "voice": frames,
        "persona": len(persona_tokens(pipeline.tokenizer, DEFAULT_PERSONA)),
        "silence": 2 * SILENCE_FRAMES,
    }

    def prompt() -> float:
        pipeline.reset()
        start = now()
        pipeline.prepare()
        return 1000 * (now() - start)

    def from_saved_voice() -> float:
        pipeline.forget_prompt_states()
        return prompt()

    pipeline.set_persona(voice, DEFAULT_PERSONA)
    from_recording = prompt()  # the voice's saved state is kept from here on
    saved = [from_saved_voice() for _ in range(3)]
    kept = [prompt() for _ in range(3)]
    pipeline.reset()
    total = sum(steps.values())
    return {
        "steps": steps,
        "from_recording_ms": from_recording,
        "from_saved_voice_ms": float(np.median(saved)),
        "from_kept_state_ms": float(np.median(kept)),
        "ms_per_step": float(np.median(saved)) / total,
        "prompt_seconds": total * FRAME_SECONDS,  # of the model's time, as if played
    }


def _describe(pipeline) -> dict[str, Any]:
    import torch

    from model.cpu import native
    from model.quant import int8_linear_names

    lm, mimi, device = pipeline.lm, pipeline.mimi, pipeline.device
    int8 = bool(int8_linear_names(lm))
    dtype = str(lm.dtype).removeprefix("torch.")
    cfg = lm.cfg
    info = {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or platform.machine(),
        "dtype": "int8" if int8 else dtype,
        "activation_dtype": dtype,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cpu_kernel": native.status() if device.type == "cpu" else None,
        "lm_parameters": sum(p.numel() for p in lm.parameters()),
        "mimi_parameters": sum(p.numel() for p in mimi.parameters()),
        "lm_shape": f"dim {cfg.dim}, {cfg.num_layers} layers, {cfg.num_heads} heads; depformer "
        f"dim {cfg.depformer_dim}, {cfg.depformer_num_layers} layers, {cfg.dep_q} steps",
        "sampling": vars(pipeline.sampling).copy(),
    }
    return info


def _free() -> None:
    """Give back what the models dropped just before held (on CUDA too)."""
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def run(args: argparse.Namespace) -> int:
    report = measure(args)
    print(json.dumps(report) if args.json else format_report(report))
    return 0


Then = Callable[..., None]
"""Called after ours is timed, with the model's files, device, dtype and sampling, the input
frames, the LM weight bytes per frame and the report so far; it may add to the report."""


def measure(args: argparse.Namespace, then: Then | None = None) -> dict[str, Any]:
    """Time our pipeline as `args` say; the report `format_report` prints."""
    import torch

    from model.pipeline import resolve_device

    _check_arguments(args)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    try:
        device = resolve_device(args.device)
    except RuntimeError as e:
        raise UserError(str(e)) from e
    if args.config == "7b":
        _check_7b(args, device)

    report: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="moshi-bench-") as tmp:
        if args.config:
            _log(f"writing a random {args.config} model to {tmp} ...")
            personaplex = getattr(args, "personaplex", False)
            args.model = str(_write_random(args.config, Path(tmp), personaplex))
            report["model"] = f"random {args.config}" + (" PersonaPlex" if personaplex else "")
        else:
            args.model = args.model or DEFAULT_REPO
            report["model"] = args.model
        report["config"] = args.config

        _reset_device_peak(device)
        pipeline = load_pipeline(args)
        files = pipeline.files
        report.update(_describe(pipeline))
        report.update(frames=args.frames, warmup=args.warmup)
        if pipeline.personaplex:
            _log("timing the prompt phase (voice and persona) ...")
            report["prompt"] = time_prompt(pipeline)
        weight_bytes = lm_weight_bytes_per_frame(pipeline.lm)
        audio = synthetic_input(args.warmup + args.frames)
        graphs = pipeline.cuda_graphs
        if graphs:  # time both: eager (stage by stage), then with CUDA graphs
            pipeline.cuda_graphs = False
            _log(f"timing ours without CUDA graphs: {args.warmup} + {args.frames} frames ...")
            report["eager"] = summarize(time_ours(pipeline, audio, args.warmup), weight_bytes)
            report["eager"].update(_memory(device), frames=args.frames)
            _reset_device_peak(device)
            pipeline.reset(seed=args.seed)
            pipeline.cuda_graphs = True
        _log(f"timing ours: {args.warmup} + {args.frames} frames ...")
        ours = summarize(time_ours(pipeline, audio, args.warmup), weight_bytes)
        ours.update(_memory(device), cuda_graphs=graphs)
        report.update(ours)
        dtype, sampling = pipeline.lm.dtype, pipeline.sampling
        pipeline.close()
        del pipeline
        _free()

        if then is not None:
            then(files, device, dtype, sampling, audio, weight_bytes, report)
    return report


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- The table ------------------------------------------------------------------------------------


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def format_report(report: dict[str, Any]) -> str:
    """The table; with the original's columns where `report` holds a "reference" run."""
    ref = report.get("reference")
    s = report["sampling"]
    lines = [
        f"moshi-desktop bench: {report['model']}, LM {report['lm_parameters'] / 1e6:.1f}M "
        f"parameters ({report['lm_shape']}), Mimi {report['mimi_parameters'] / 1e6:.1f}M",
        f"device {report['device']} ({report['device_name']}), {report['threads']} threads, "
        f"LM {report['dtype']}"
        + (f" (activations {report['activation_dtype']})" if report["dtype"] == "int8" else "")
        + f", Mimi float32, torch {report['torch']}",
        *([f"CPU kernel: {report['cpu_kernel']}"] if report.get("cpu_kernel") else []),
        f"{report['frames']} frames of 80 ms after {report['warmup']} warm-up; synthetic input "
        f"(chirp + noise); sampling "
        + (
            "greedy"
            if s["greedy"]
            else f"temperature {s['temperature']}, top-k {s['top_k']}; text "
            f"{s['text_temperature']}, top-k {s['text_top_k']}"
        ),
        "",
    ]
    header = f"{'ms per frame':32}{'p50':>9}{'p90':>9}{'p99':>9}"
    if ref:
        header += f"   {'original p50':>12}{'p90':>9}{'p99':>9}{'orig/ours':>11}"
    lines.append(header)
    rows = [
        ("Mimi encode", "encode"),
        ("temporal transformer", "temporal"),
        ("depformer (steps + sampling)", "depformer"),
        ("LM step (both + text sampling)", "lm"),
        ("Mimi decode", "decode"),
        ("total", "ms_per_frame"),
    ]
    for label, key in rows:
        name = key if key == "ms_per_frame" else f"{key}_ms"
        line = f"  {label:30}" + "".join(
            f"{_ms(report[f'{name}_{p}']):>9}" for p in ("p50", "p90", "p99")
        )
        if ref:
            line += f"   {_ms(ref[f'{name}_p50']):>12}" + "".join(
                f"{_ms(ref[f'{name}_{p}']):>9}" for p in ("p90", "p99")
            )
            ours_p50, ref_p50 = report[f"{name}_p50"], ref[f"{name}_p50"]
            line += f"{ref_p50 / ours_p50:>10.2f}x" if ours_p50 and ref_p50 else f"{'-':>11}"
        lines.append(line)
    lines.append("")

    def both(label: str, fmt: Callable[[dict[str, Any]], str]) -> None:
        line = f"{label:44}{fmt(report):>15}"
        if ref:
            line += f"   original {fmt(ref):>12}"
        lines.append(line)

    def mb(value: float | None) -> str:
        return "-" if value is None else f"{value:,.0f} MB"

    eager = report.get("eager")
    if eager:
        lines.append("  the same without CUDA graphs (--no-cuda-graphs):")
        for label, key in rows:
            name = key if key == "ms_per_frame" else f"{key}_ms"
            lines.append(
                f"  {label:30}"
                + "".join(f"{_ms(eager[f'{name}_{p}']):>9}" for p in ("p50", "p90", "p99"))
            )
        lines.append("")

    prompt = report.get("prompt")
    if prompt:
        steps = prompt["steps"]
        lines += [
            f"  prompt phase before the user speaks ({sum(steps.values())} steps: "
            f"{steps['voice']} of a {PROMPT_VOICE_SECONDS:.0f} s voice, {steps['persona']} of "
            f"the persona, {steps['silence']} of silence; {prompt['prompt_seconds']:.1f} s if "
            "played in real time):",
            f"  {'from the voice recording':30}{prompt['from_recording_ms']:>9.0f} ms",
            f"  {'from its saved state (.pt)':30}{prompt['from_saved_voice_ms']:>9.0f} ms "
            f"({prompt['ms_per_step']:.2f} ms a step)",
            f"  {'from the state kept after it':30}{prompt['from_kept_state_ms']:>9.1f} ms",
            "",
        ]
    both("real-time factor (total p50 / 80 ms)", lambda r: f"{r['rtf']:.3f}")
    both("frames per second (1000 / total p50)", lambda r: f"{r['fps']:.1f}")
    both("peak host memory (ru_maxrss)", lambda r: mb(r["peak_host_mb"]))
    both("host memory now (RSS)", lambda r: mb(r["rss_mb"]))
    if report["peak_device_mb"] is not None:
        both("peak CUDA memory (max_memory_allocated)", lambda r: mb(r["peak_device_mb"]))
    weights = report["lm_weight_bytes_per_frame"]
    lines.append(f"{'LM weights read per frame':44}{weights / 1e6:>12,.3g} MB")
    both(
        "achieved bandwidth (weights / LM p50)",
        lambda r: "-" if r["lm_bandwidth_gb_s"] is None else f"{r['lm_bandwidth_gb_s']:.3g} GB/s",
    )
    if ref:
        lines.append(
            f"\nours runs {report['speedup']:.2f}x the original's frames per second "
            f"({report['fps']:.1f} vs {ref['fps']:.1f} at the median frame); the original's "
            "peak host memory includes ours, timed first in this process"
        )
    return "\n".join(lines)
