"""Fixtures for the CPU forms' tests."""

from __future__ import annotations

import pytest

from model.cpu import native


@pytest.fixture(params=["native", "mkl"])
def products(request):
    """The product paths under test: our kernel for one or two columns (`model.cpu.native`, where
    it is built), or MKL's for all (with wide weights read in blocks). A CPU form made inside the
    test is made for its path."""
    if request.param == "mkl":
        with native.turned_off():
            yield
    elif native.weight_times_rows() is None:
        pytest.skip(f"native kernel: {native.status()}")
    else:
        yield
