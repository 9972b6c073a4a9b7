"""A CPU kernel of our own, built on first use for this machine: a weight times one or two rows.

A streaming step multiplies each weight by a frame or two of activations, so its cost is reading the
weight once from memory. MKL's kernels for that shape read 28-37 GB/s with this project's 2 cores;
`model/cpu/csrc/products.cpp` reads each row of the weight front to back, once, and reaches 31-51
(`benchmarks/bench_products.py`). In interleaved A/B runs it took 0.8 to 1.2 ms off a Mimi frame of
about 25, and Mimi no longer needs its wide weights copied into blocks (126 MB).

The kernel is compiled by PyTorch's extension builder (a C++ compiler and ninja) for this CPU
(`-march=native`) the first time a process asks for it, into PyTorch's extension cache
(`~/.cache/torch_extensions`, or `$TORCH_EXTENSIONS_DIR`): about 8 s once, then it loads at once.
It is built only on x86-64, where it was measured, and must agree with `torch.mm` on a test product
before it is used. Where it cannot be had (no compiler, another CPU, the PyInstaller bundle,
`NO_NATIVE_KERNEL=1`, a build error) `weight_times_rows()` is None, the products take MKL's paths
(`model/cpu/products.py`), and `status()` says why.
"""

from __future__ import annotations

import hashlib
import os
import platform
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

SOURCE = Path(__file__).with_name("csrc") / "products.cpp"
FLAGS = ["-O3", "-march=native", "-fopenmp"]
MAX_ROWS = 2  # more rows read slower than MKL's product (measured at 4)
STALE_LOCK_S = 300  # a build lock older than this was left by a build that died

_lock = threading.Lock()
_kernel: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None
_status: str | None = None  # None: not tried yet
_off = 0  # depth of `turned_off()`


def weight_times_rows() -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None:
    """The kernel: (weight [O, I], rows [N, I]) -> weight @ rows^T [O, N], both fp32, contiguous,
    on the CPU, 1 <= N <= MAX_ROWS. Built on the first call (seconds, once per machine); None
    where it cannot be (see `status()`)."""
    if _status is None:
        _build()
    return None if _off else _kernel


@contextmanager
def turned_off() -> Iterator[None]:
    """Products take MKL's paths inside: to compare the two (benchmarks, tests)."""
    global _off
    _off += 1
    try:
        yield
    finally:
        _off -= 1


def status() -> str:
    """What `weight_times_rows()` gives, in a sentence (built, or why not); tries the build."""
    weight_times_rows()
    assert _status is not None
    return _status


def will_build() -> bool:
    """Whether the first use in this process will compile the kernel (seconds): it is wanted
    here and not built yet for this machine. For a "building the CPU kernel" note."""
    if _status is not None or _not_here() is not None:
        return False
    folder = build_folder()
    return not (folder / f"{folder.name}.so").exists()


def _not_here() -> str | None:
    """Why the kernel is not to be built here (a status), or None."""
    machine = platform.machine().lower()
    if os.environ.get("NO_NATIVE_KERNEL", "").strip().lower() in ("1", "true", "yes", "on"):
        return "off (NO_NATIVE_KERNEL is set): MKL's products"
    if getattr(sys, "frozen", False):
        return "not built in the desktop bundle (it carries no C++ headers): MKL's products"
    if machine not in ("x86_64", "amd64"):
        return f"not built on {machine} (measured on x86-64 only): MKL's products"
    return None


def _build() -> None:
    global _kernel, _status
    with _lock:
        if _status is not None:
            return
        _status = _not_here()
        if _status is None:
            try:
                _kernel = _load()
                _check(_kernel)
                _status = "built for this CPU: streaming products read the weight once"
            except Exception as error:  # noqa: BLE001 - any failure falls back, with its reason
                _kernel = None
                reason = str(error).strip().splitlines()
                _status = f"unavailable ({reason[0] if reason else type(error).__name__})"
                _status += ": MKL's products"
                warnings.warn(f"native CPU kernel {_status}", RuntimeWarning, stacklevel=3)


def _load() -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    from torch.utils.cpp_extension import load  # imports setuptools: only when building

    folder = build_folder()
    folder.mkdir(parents=True, exist_ok=True)
    # PyTorch's builder waits, forever, for the lock of a build in progress; one whose process was
    # killed never lets go.
    lock = folder / "lock"
    if lock.exists() and time.time() - lock.stat().st_mtime > STALE_LOCK_S:
        lock.unlink(missing_ok=True)
    path = os.environ.get("PATH", "")
    try:
        # PyTorch's builder runs `ninja`; the pip package's lies beside the venv's Python,
        # which is not on PATH when the app is started by its full path.
        import ninja

        os.environ["PATH"] = os.pathsep.join([ninja.BIN_DIR, path])
    except ImportError:
        pass  # a system ninja, if any
    try:
        load(
            folder.name,
            [str(SOURCE)],
            build_directory=str(folder),
            extra_cflags=FLAGS,
            extra_ldflags=["-fopenmp"],
            is_python_module=False,
            verbose=False,
        )
    finally:
        os.environ["PATH"] = path
    return torch.ops.moshi_desktop.weight_times_rows


def build_folder() -> Path:
    """Where the kernel is built and kept: one folder per source, flags, PyTorch and CPU (a home
    folder shared between machines must not load a kernel built for another CPU's instructions),
    in PyTorch's extension cache."""
    from torch.utils.cpp_extension import get_default_build_root

    key = hashlib.sha256()
    for part in (SOURCE.read_bytes(), " ".join(FLAGS).encode(), torch.__version__.encode()):
        key.update(part)
    key.update(_cpu_identity().encode())
    root = os.environ.get("TORCH_EXTENSIONS_DIR") or get_default_build_root()
    return Path(root) / f"moshi_desktop_products_{key.hexdigest()[:12]}"


def _cpu_identity() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor()
    wanted = ("model name", "flags")
    return "\n".join(sorted({line for line in lines if line.split(":")[0].strip() in wanted}))


def _check(kernel: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> None:
    """The kernel agrees with a float64 product, on a shape with every kind of remainder."""
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(37, 83, generator=generator)
    for n in range(1, MAX_ROWS + 1):
        rows = torch.randn(n, 83, generator=generator)
        expected = (weight.double() @ rows.double().t()).float()
        got = kernel(weight, rows)
        if got.shape != expected.shape or not torch.allclose(got, expected, rtol=1e-5, atol=1e-5):
            raise RuntimeError("the built kernel disagrees with torch.mm")
