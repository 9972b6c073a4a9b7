"""model/memory.py: what a model needs once loaded, counted before it loads; a model that would
not fit is refused with what fits instead."""

from __future__ import annotations

import pytest
import torch

from model import memory
from model.config import LMConfig

MIMI = 96_000_000  # Kyutai's Mimi's parameters, about


def test_moshi_7b_in_each_dtype_on_a_gpu():
    gpu = torch.device("cuda")
    need = {
        d: memory.needed_bytes(LMConfig(), d, gpu, MIMI) / 1e9 for d in ("bfloat16", "int8", "int4")
    }
    assert need["bfloat16"] == pytest.approx(17.33, abs=0.02)  # weights, 3000-step cache, Mimi
    assert need["int8"] == pytest.approx(9.97, abs=0.02)
    assert need["int4"] < 7.0
    message = memory.fits_problem(LMConfig(), "bfloat16", gpu, int(8e9), MIMI)
    assert "needs about 17.3 GB at bfloat16 and the GPU has 8.0 GB free" in message
    assert "choose int4 (6.8 GB)" in message and "server" in message
    assert memory.fits_problem(LMConfig(), "int8", gpu, int(12e9), MIMI) == ""


def test_loading_says_so_before_it_starts(tiny_checkpoint, monkeypatch):
    from app.engine.local import load_files
    from app.errors import UserError
    from model.files import resolve_folder

    monkeypatch.setattr(memory, "free_bytes", lambda device: 1_000_000)
    with pytest.raises(UserError, match="cannot load the model on cpu: this model needs about"):
        load_files(resolve_folder(tiny_checkpoint), "cpu", "auto")
