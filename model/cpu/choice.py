"""Which product each CPU linear uses, chosen by timing the candidates on this CPU.

A linear's product for a streaming step (one row of activations) has three roads: our kernel
(`model.cpu.native`, where it is built), MKL's W @ X (`model.cpu.products`, with wide weights read
in column blocks), and plain torch (`F.linear`). Which is fastest depends on the CPU: our kernel
reads weights fastest with AVX-512, but on an AVX2 machine it made Mimi slower than MKL. So when
a model is swapped for its CPU form, each weight shape not yet timed on this CPU is timed on its
own weight (the CPU time of one thread, best of 5 after a warm-up: a few milliseconds a shape,
whatever else runs), and the fastest road is kept:
a road is never chosen where plain torch is faster. The choices are cached in a file per CPU
model, PyTorch version and kernel build (in the user's cache folder), and made again when any of
those changes. `doctor` prints the table.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from .native import _cpu_identity, status, turned_off, weight_times_rows
from .products import weight_times, wide_blocks

ROADS = ("native", "mkl", "torch")
_choices: dict[str, dict] | None = None  # shape -> {"road": ..., "ms": {road: ms}}


def cache_file() -> Path:
    key = hashlib.sha256()
    for part in (_cpu_identity(), torch.__version__, status()):
        key.update(part.encode())
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "moshi-desktop" / f"cpu-products-{key.hexdigest()[:12]}.json"


def _load() -> dict[str, dict]:
    global _choices
    if _choices is None:
        try:
            _choices = json.loads(cache_file().read_text())
        except (OSError, ValueError):
            _choices = {}
    return _choices


def _save() -> None:
    path = cache_file()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(_choices, indent=1))
        tmp.replace(path)
    except OSError:
        pass  # chosen again next time


def _time(run) -> float:
    """The CPU time of one run (best of 5 after a warm-up), on one thread: what the product
    costs, whatever else the machine is doing (a wall clock would time the other programs)."""
    run()
    best = float("inf")
    for _ in range(5):
        start = time.thread_time()
        run()
        best = min(best, time.thread_time() - start)
    return 1000 * best


def _timings(weight: torch.Tensor) -> dict[str, float]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _timed_roads(weight.detach())
    finally:
        torch.set_num_threads(threads)


def _timed_roads(w: torch.Tensor) -> dict[str, float]:
    x = torch.randn(1, w.shape[1])
    cols = x.t()
    ms = {"torch": _time(lambda: F.linear(x, w))}
    with turned_off():
        blocks = wide_blocks(w)
        ms["mkl"] = _time(lambda: weight_times(w, cols, blocks))
    if weight_times_rows() is not None:
        ms["native"] = _time(lambda: weight_times(w, cols))
    return ms


def road_for(weight: torch.Tensor) -> str:
    """The fastest road for a linear with `weight` [out, in] (fp32, CPU) on this CPU."""
    with torch.no_grad():
        choices = _load()
        shape = "x".join(map(str, weight.shape))
        if shape not in choices:
            ms = _timings(weight)
            choices[shape] = {"road": min(ms, key=ms.get), "ms": ms}
            _save()
        return choices[shape]["road"]


def table() -> list[str]:
    """The choices made on this CPU so far: one line per weight shape."""
    rows = []

    def size(shape: str) -> int:
        return math.prod(int(n) for n in shape.split("x"))

    for shape, choice in sorted(_load().items(), key=lambda kv: -size(kv[0])):
        ms = "  ".join(f"{road} {choice['ms'][road]:.3f}" for road in ROADS if road in choice["ms"])
        rows.append(f"{shape:>12}: {choice['road']:6}  (ms: {ms})")
    return rows
