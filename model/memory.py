"""What a model needs in memory once loaded, counted before it loads (on the meta device): the LM's
weights at the run dtype (int8 and int4 linears at their size), its KV cache for the whole
context, and Mimi in float32. Activations and the framework's own come on top (a few hundred MB).
"""

from __future__ import annotations

import torch

from .config import LMConfig

DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4}


def needed_bytes(cfg: LMConfig, dtype: str, device: torch.device, mimi_parameters: int) -> int:
    """Bytes the loaded model holds on `device` at `dtype` (a name of `Pipeline.load`)."""
    from .lm import LM

    cpu = device.type == "cpu"
    run = 4 if cpu and dtype in ("auto", "int8", "int4") else DTYPE_BYTES.get(dtype, 2)
    with torch.device("meta"):
        lm = LM(cfg)
    linears = 0
    transformers = {id(p) for part in (lm.transformer, getattr(lm, "depformer", None)) if part
                    for p in part.parameters()}  # fmt: skip
    for module in lm.modules():
        if isinstance(module, torch.nn.Linear):
            n = module.weight.numel()
            if dtype == "int4" and id(module.weight) in transformers:
                linears += n // 2 + n // 128 * 4  # 4 bits, a scale and a zero per 128
            elif dtype == "int8":
                linears += n + module.out_features * 4
            else:
                linears += n * run
    linear_ids = {id(m.weight) for m in lm.modules() if isinstance(m, torch.nn.Linear)}
    rest = sum(p.numel() for p in lm.parameters() if id(p) not in linear_ids) * run
    head_dim = cfg.dim // cfg.num_heads
    cache = 2 * cfg.num_layers * cfg.num_heads * cfg.context * head_dim * run
    return linears + rest + cache + 4 * mimi_parameters


def fits_problem(
    cfg: LMConfig, dtype: str, device: torch.device, free: int, mimi_parameters: int
) -> str:
    """Why the model will not fit the `free` bytes of `device`, naming smaller choices; ""."""
    need = needed_bytes(cfg, dtype, device, mimi_parameters)
    if need <= free:
        return ""
    others = {
        name: needed_bytes(cfg, name, device, mimi_parameters)
        for name in ("int8", "int4")
        if name != dtype
    }
    smaller = [f"{name} ({size / 1e9:.1f} GB)" for name, size in others.items() if size <= free]
    where = "the GPU" if device.type == "cuda" else "this machine"
    advice = f"choose {' or '.join(smaller)} as the data type" if smaller else "no data type fits"
    return (
        f"this model needs about {need / 1e9:.1f} GB at {dtype} and {where} has "
        f"{free / 1e9:.1f} GB free: {advice}, or run Moshi on a server (Settings → Where Moshi "
        "runs, or chat --server)"
    )


class NotEnoughMemory(RuntimeError):
    """The model would not fit the memory left on its device (said before loading it)."""


def free_bytes(device: torch.device) -> int | None:
    """Memory free on `device` now: a CUDA GPU's, or the RAM available (Linux); None unknown."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device.index or torch.cuda.current_device())[0]
    if device.type == "cpu":
        try:
            for line in open("/proc/meminfo"):
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
        except OSError:
            return None
    return None


def check_fits(cfg: LMConfig, dtype: str, device: torch.device, mimi_parameters: int) -> None:
    """NotEnoughMemory, naming what to choose instead, when the model would not fit."""
    free = free_bytes(device)
    if free is not None:
        problem = fits_problem(cfg, dtype, device, free, mimi_parameters)
        if problem:
            raise NotEnoughMemory(problem)
