"""Load time and peak memory of a Moshi 7B-shaped checkpoint in each on-disk format.

For each format, writes a random checkpoint of Moshi 7B's shapes into a temporary folder, then
loads it in a fresh child process (`model.hub.locate_model` + `model.pipeline.Pipeline.load`, as
`talk` and the window do) and prints the seconds the load took and the child's own memory at its
peak and once loaded (RssAnon, sampled every 10 ms: the memory the load takes; the file pages a
read maps count in RSS too, but they are the kernel's cache, which it takes back as needed):

    kyutai        Kyutai's layout, bfloat16, fused attention keys (kyutai/moshiko-pytorch-bf16)
    q8            Kyutai's q8 layout: int8 linear weights + float32 scales (moshiko-pytorch-q8)
    transformers  the transformers format, bfloat16 in 5 GB shards + index (kmhf/hf-moshiko)
    finetune      moshi-finetune's full fine-tune: consolidated.safetensors + config.json
    lora          kyutai + a moshi-finetune LoRA (rank 128, every linear) merged at load

    python benchmarks/bench_load.py [--formats kyutai transformers ...] [--dtype bfloat16]
                                    [--folder DIR] [--keep]

Each checkpoint is 15.4 GB (q8: 8 GB) on disk; one is written at a time and deleted after its
load (unless --keep). Loading runs the LM at --dtype (bfloat16: what fits a 24 GB machine; the
CPU's default, float32, holds 31 GB). The transformers checkpoint's names and shapes come from
transformers' own MoshiForConditionalGeneration built on the meta device (transformers must be
installed: pip install -e '.[test]').
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's model/

import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

FORMATS = ("kyutai", "q8", "transformers", "finetune", "lora")

_CHILD = """
import json, re, sys, threading, time
sys.path.insert(0, {root!r})


def anonymous():  # bytes of the process's own memory (RssAnon), not the file pages it maps
    status = open("/proc/self/status").read()
    return int(re.search(r"RssAnon:\\s+(\\d+)", status).group(1)) * 1024


peak, done = [0], threading.Event()


def sample():
    while not done.is_set():
        peak[0] = max(peak[0], anonymous())
        time.sleep(0.01)


threading.Thread(target=sample, daemon=True).start()
t0 = time.perf_counter()
from model.files import with_lora
from model.hub import locate_model
from model.pipeline import Pipeline
files = with_lora(locate_model({folder!r}, download=False), {lora!r})
pipeline = Pipeline.load(files, "cpu", {dtype!r})
seconds = time.perf_counter() - t0
done.set()
print(json.dumps(dict(seconds=seconds, peak=max(peak[0], anonymous()), rss=anonymous())))
"""


def _random(shape, dtype, g):
    if len(shape) >= 2:
        return torch.randn(shape, generator=g).div_(shape[-1] ** 0.5).to(dtype)
    return torch.ones(shape, dtype=dtype)


def write_kyutai(folder: Path, quantized: bool = False, name: str | None = None) -> None:
    from model.tiny import write_random_checkpoint

    write_random_checkpoint(folder, {})  # Moshi 7B's config: config.json holds no LM keys
    if quantized:
        _quantize(folder)
    if name is not None:  # a full fine-tune: its own file name, said in config.json
        (folder / "model.safetensors").rename(folder / name)
        config = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps(dict(config, moshi_name=name)))


def _quantize(folder: Path) -> None:
    """Kyutai's q8 file from the bf16 one: every linear weight int8 with float32 row scales."""
    from model.checkpoint import read_safetensors
    from model.quant import SCALE_SUFFIX, quantize_weight

    state = read_safetensors(folder / "model.safetensors")
    out = {}
    for key in list(state):
        tensor = state.pop(key)
        if tensor.dim() == 2 and "emb" not in key:  # a linear weight, not an embedding
            q, scale = quantize_weight(tensor.float())
            out[key], out[key + SCALE_SUFFIX] = q, scale
        else:
            out[key] = tensor
    (folder / "model.safetensors").unlink()
    save_file(out, str(folder / "model.q8.safetensors"))
    config = json.loads((folder / "config.json").read_text())
    config.update(quantize=True, moshi_name="model.q8.safetensors")
    (folder / "config.json").write_text(json.dumps(config))


def write_transformers(folder: Path, shard_bytes: int = 5_000_000_000) -> None:
    """transformers' Moshi 7B (its default config, kmhf/hf-moshika's shapes), random bfloat16
    weights in shards of about 5 GB with model.safetensors.index.json, and a tokenizer.json."""
    import transformers

    from model.tiny import train_tokenizer

    folder.mkdir(parents=True)
    config = transformers.MoshiConfig(audio_encoder_config=transformers.MimiConfig().to_dict())
    with torch.device("meta"):
        model = transformers.MoshiForConditionalGeneration(config)
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    config.save_pretrained(str(folder))
    g = torch.Generator().manual_seed(0)
    weight_map, shard, size, index = {}, {}, 0, 0
    names = []

    def flush():
        nonlocal shard, size, index
        if shard:
            index += 1
            name = f"model-{index:05d}.safetensors"
            save_file(shard, str(folder / name))
            names.append(name)
            weight_map.update({k: name for k in shard})
            shard, size = {}, 0

    for key, shape in shapes.items():
        dtype = torch.float32 if key.startswith("audio_encoder.") else torch.bfloat16
        shard[key] = _random(shape, dtype, g)
        size += shard[key].numel() * shard[key].element_size()
        if size >= shard_bytes:
            flush()
    flush()
    for old in names:  # transformers' names: model-0000i-of-0000n.safetensors
        new = old.replace(".safetensors", f"-of-{index:05d}.safetensors")
        (folder / old).rename(folder / new)
        weight_map = {k: (new if v == old else v) for k, v in weight_map.items()}
    index_file = {"metadata": {}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index_file))
    spm = folder / "spm"
    spm.mkdir()
    train_tokenizer(spm / "tokenizer.model", 32000 // 100)
    tokenizer = transformers.LlamaTokenizer.from_pretrained(str(spm), legacy=False)
    tokenizer.save_pretrained(str(folder))
    shutil.rmtree(spm)


def measure(folder: Path, dtype: str, lora: str | None = None) -> dict:
    code = _CHILD.format(root=str(ROOT), folder=str(folder), dtype=dtype, lora=lora)
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False
    )
    if out.returncode != 0:
        return {"error": (out.stderr.strip().splitlines() or ["?"])[-1]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--formats", nargs="+", choices=FORMATS, default=list(FORMATS))
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--folder", type=Path, default=None, help="where to write (a temp dir)")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-load-", dir=args.folder))
    print(
        f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch "
        f"{torch.__version__}, LM at {args.dtype}, folder {root}"
    )
    print(f"{'format':<14}{'on disk':>10}{'write s':>9}{'load s':>9}{'peak':>11}{'after':>11}")
    for name in args.formats:
        folder = root / name
        t0 = time.perf_counter()
        lora = None
        if name == "transformers":
            write_transformers(folder)
        elif name == "q8":
            write_kyutai(folder, quantized=True)
        elif name == "finetune":
            write_kyutai(folder, name="consolidated.safetensors")
        elif name == "lora":
            write_kyutai(folder / "base")
            lora = str(_write_lora(folder / "lora"))
            folder = folder / "base"
        else:
            write_kyutai(folder)
        written = time.perf_counter() - t0
        disk = sum(p.stat().st_size for p in (root / name).rglob("*") if p.is_file())
        result = measure(folder, args.dtype, lora)
        if "error" in result:
            print(f"{name:<14}{disk / 1e9:>8.1f}GB{written:>9.0f}  failed: {result['error']}")
        else:
            print(
                f"{name:<14}{disk / 1e9:>8.1f}GB{written:>9.0f}{result['seconds']:>9.1f}"
                f"{result['peak'] / 1e9:>9.1f}GB{result['rss'] / 1e9:>9.1f}GB",
                flush=True,
            )
        if not args.keep:
            shutil.rmtree(root / name)
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)


def _write_lora(folder: Path) -> Path:
    """What moshi-finetune saves for a LoRA of rank 128 (its default) on every linear of Moshi
    7B, in bfloat16."""
    from model.tiny import write_random_lora

    return write_random_lora(folder, {}, rank=128, dtype=torch.bfloat16)


if __name__ == "__main__":
    main()
