"""Our CPU kernel for a weight times one or two rows (`model.cpu.native`, `csrc/products.cpp`):
built where a C++ compiler is, right on every shape, the same sums whatever else it computes, and
out of the way (with its reason) where it cannot be built.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from model.cpu import native
from model.cpu.products import weight_times, wide_blocks

ROOT = Path(__file__).resolve().parents[3]
BUILDABLE = platform.machine().lower() in ("x86_64", "amd64") and shutil.which("c++") is not None


@pytest.fixture
def kernel():
    if not BUILDABLE:
        pytest.skip("the kernel is built on x86-64 with a C++ compiler")
    built = native.weight_times_rows()
    assert built is not None, native.status()
    return built


@pytest.fixture
def fresh_build(monkeypatch):
    """native's state as in a new process (restored afterwards)."""
    monkeypatch.setattr(native, "_kernel", None)
    monkeypatch.setattr(native, "_status", None)


@pytest.mark.parametrize("rows", [1, 2, 3, 4])
@pytest.mark.parametrize(
    "out_features, in_features",
    [(1, 1), (5, 15), (7, 16), (37, 83), (2048, 258), (64, 2048), (9, 4100), (3, 8192)],
)
def test_the_kernel_is_the_product(kernel, rows, out_features, in_features):
    g = torch.Generator().manual_seed(out_features * in_features + rows)
    w = torch.randn(out_features, in_features, generator=g)
    x = torch.randn(rows, in_features, generator=g)

    expected = (w.double() @ x.double().t()).float()
    # fp32 sums of `in_features` unit-sized products: errors grow like its square root
    atol = 4e-6 * in_features**0.5
    torch.testing.assert_close(kernel(w, x), expected, rtol=1e-5, atol=atol)


@pytest.mark.parametrize("in_features", [512, 3584])  # x in the L1 cache, and not
def test_a_row_gets_the_same_sums_alone_beside_another_and_on_any_threads(kernel, in_features):
    w = torch.randn(1031, in_features)  # rows split unevenly between threads
    x = torch.randn(2, in_features)
    both = kernel(w, x)

    assert torch.equal(kernel(w, x[:1]), both[:, :1])
    assert torch.equal(kernel(w, x[1:].contiguous()), both[:, 1:])
    assert torch.equal(kernel(w[5:].contiguous(), x), both[5:])
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert torch.equal(kernel(w, x), both)
    finally:
        torch.set_num_threads(threads)


def test_the_kernel_refuses_what_it_does_not_compute(kernel):
    w = torch.randn(8, 16)
    with pytest.raises(RuntimeError, match="1 to 4 rows"):
        kernel(w, torch.randn(5, 16))
    with pytest.raises(RuntimeError, match="width"):
        kernel(w, torch.randn(2, 17))
    with pytest.raises(RuntimeError, match="fp32"):
        kernel(w.double(), torch.randn(2, 16).double())
    with pytest.raises(RuntimeError, match="contiguous"):
        kernel(torch.randn(16, 8).t(), torch.randn(2, 16))


@pytest.mark.parametrize("batch", [False, True])
@pytest.mark.parametrize("columns", [1, 2])
def test_streaming_products_take_the_kernel(kernel, columns, batch):
    w = torch.randn(300, 700)
    cols = torch.randn(columns, 700).t()  # [I, N], column-major, as a step gives them
    if batch:
        cols = cols[None]

    y = weight_times(w, cols)

    rows = cols.reshape(700, columns).t().contiguous()
    expected = kernel(w, rows)
    assert torch.equal(y, expected[None] if batch else expected)


def test_a_wide_weight_is_not_copied_into_blocks_when_the_kernel_reads_it(kernel):
    w = torch.randn(64, 2048)
    assert wide_blocks(w) is None
    with native.turned_off():
        assert wide_blocks(w) is not None


@pytest.mark.slow
def test_built_afresh_past_a_lock_left_by_a_build_that_died(monkeypatch, tmp_path):
    if not BUILDABLE:
        pytest.skip("the kernel is built on x86-64 with a C++ compiler")
    monkeypatch.delenv("NO_NATIVE_KERNEL", raising=False)
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    folder = native.build_folder()
    folder.mkdir(parents=True)
    lock = folder / "lock"
    lock.touch()
    old = time.time() - native.STALE_LOCK_S - 60
    os.utime(lock, (old, old))

    # A new process (this one has the kernel loaded already): builds into the empty cache.
    probe = "from model.cpu import native; print(native.status())"
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("built"), done.stdout + done.stderr
    assert not lock.exists()
    assert any(folder.glob("*.so"))


def test_turned_off_by_the_environment(monkeypatch, fresh_build):
    monkeypatch.setenv("NO_NATIVE_KERNEL", "1")
    assert native.weight_times_rows() is None
    assert "NO_NATIVE_KERNEL" in native.status()
    w, cols = torch.randn(64, 2048), torch.randn(2, 2048).t()
    torch.testing.assert_close(weight_times(w, cols), w @ cols, rtol=1e-5, atol=1e-4)


def test_a_failed_build_falls_back_with_its_reason(monkeypatch, fresh_build):
    def no_compiler():
        raise RuntimeError("Error building extension: c++: command not found\nmore output")

    monkeypatch.delenv("NO_NATIVE_KERNEL", raising=False)
    monkeypatch.setattr(native.platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(native, "_load", no_compiler)
    with pytest.warns(RuntimeWarning, match="c\\+\\+: command not found"):
        assert native.weight_times_rows() is None
    assert "c++: command not found" in native.status()
    assert "MKL" in native.status()

    w, cols = torch.randn(64, 2048), torch.randn(2, 2048).t()
    torch.testing.assert_close(weight_times(w, cols), w @ cols, rtol=1e-5, atol=1e-4)
    assert wide_blocks(w) is not None  # the MKL path reads wide weights in blocks again


def test_a_kernel_that_computes_wrong_is_not_used(monkeypatch, fresh_build):
    monkeypatch.delenv("NO_NATIVE_KERNEL", raising=False)
    monkeypatch.setattr(native.platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(native, "_load", lambda: lambda w, x: torch.zeros(w.shape[0], x.shape[0]))
    with pytest.warns(RuntimeWarning, match="disagrees"):
        assert native.weight_times_rows() is None


def test_not_built_on_other_machines(monkeypatch, fresh_build):
    monkeypatch.delenv("NO_NATIVE_KERNEL", raising=False)
    monkeypatch.setattr(native.platform, "machine", lambda: "arm64")
    assert native.weight_times_rows() is None
    assert "arm64" in native.status()


def test_not_built_in_the_desktop_bundle(monkeypatch, fresh_build):
    monkeypatch.delenv("NO_NATIVE_KERNEL", raising=False)
    monkeypatch.setattr(native.sys, "frozen", True, raising=False)
    assert native.weight_times_rows() is None
    assert "bundle" in native.status()
