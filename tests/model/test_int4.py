"""model/int4.py: group-wise int4 weight-only linears, quantized as the weights load, run by torch's
CPU int4 kernel; against the float model on small random weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model.checkpoint import load_lm
from model.cpu.private import int4_problem
from model.files import resolve_folder
from model.int4 import Int4Linear, dequantize_int4, group_size_for, quantize_int4
from model.tiny import TINY_LM, TINY_MIMI, write_random_checkpoint

pytestmark = pytest.mark.skipif(
    bool(int4_problem(torch.device("cpu"))), reason="this PyTorch has no CPU int4 kernel"
)


def test_quantization_round_trips_within_a_step_of_each_group():
    w = torch.randn(64, 256)
    codes, sz = quantize_int4(w, 128)
    assert codes.min() >= 0 and codes.max() <= 15 and sz.shape == (2, 64, 2)
    back = dequantize_int4(codes, sz)
    step = (w.reshape(64, 2, 128).amax(-1) - w.reshape(64, 2, 128).amin(-1)) / 15
    assert ((back - w).abs().reshape(64, 2, 128) <= step[..., None] / 2 + 1e-6).all()
    assert group_size_for(4096) == 128 and group_size_for(352) == 32 and group_size_for(66) is None


def test_the_linear_is_the_dequantized_product_in_bfloat16():
    w = torch.randn(96, 256) / 16
    linear = Int4Linear(256, 96, 64, target=torch.device("cpu"), activation_dtype=torch.float32)
    for name, value in linear.pack(w).items():
        setattr(linear, name, torch.nn.Parameter(value, requires_grad=False))
    x = torch.randn(3, 256)
    codes, sz = quantize_int4(w, 64)
    expected = x @ dequantize_int4(codes, sz).T
    y = linear(x)
    assert y.dtype == torch.float32
    assert torch.allclose(y, expected, atol=0.05, rtol=0.02)  # bfloat16 inside


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    lm = {**TINY_LM, "dim": 256, "num_heads": 4, "depformer_dim": 128}
    lm["depformer_dim_feedforward"] = 512
    return write_random_checkpoint(
        tmp_path_factory.mktemp("int4"), lm, TINY_MIMI, dtype=torch.float32
    )


def test_the_logits_stay_close_to_the_float_models(checkpoint):
    """The temporal transformer's text logits and a depth step's audio logits, int4 against
    float32, on the same tokens: the difference is bounded by a small part of their spread."""
    files = resolve_folder(checkpoint)
    ref = load_lm(files, "cpu", torch.float32)
    q = load_lm(files, "cpu", torch.float32, int4=True)
    # every linear of the temporal transformer; the depth transformer's where a group fits
    assert not any(isinstance(m, torch.nn.Linear) for m in q.transformer.modules())
    assert any(isinstance(m, Int4Linear) for m in q.depformer.modules())
    assert isinstance(q.text_linear, torch.nn.Linear)  # the heads stay float
    tokens = torch.randint(0, 64, (1, 17, 8))
    tokens[:, 0] = torch.randint(0, 200, (1, 8))
    with torch.no_grad():
        (_, t_ref), (_, t_q) = ref.forward_temporal(tokens), q.forward_temporal(tokens)
    spread = t_ref.std()
    assert (t_q - t_ref).abs().max() < 0.25 * spread
    assert (t_q.argmax(-1) == t_ref.argmax(-1)).float().mean() > 0.8


def test_talk_runs_in_int4_on_the_cpu(checkpoint, tmp_path):
    import soundfile

    from app.cli import main

    t = np.arange(24000) / 24000
    soundfile.write(
        tmp_path / "in.wav", (0.3 * np.sin(2 * np.pi * 220 * t)).astype("float32"), 24000
    )
    argv = ["talk", str(tmp_path / "in.wav"), str(tmp_path / "out.wav"), "--model", str(checkpoint)]
    assert main([*argv, "--device", "cpu", "--dtype", "int4", "--greedy"]) == 0
    assert soundfile.info(str(tmp_path / "out.wav")).duration > 1


def test_int4_is_refused_where_no_kernel_exists():
    assert "no int4 kernel for mps" in int4_problem(torch.device("mps"))
    from model.int4 import int4_linears
    from model.lm import LM

    with torch.device("meta"):
        lm = LM()
        with pytest.raises(ValueError, match="int4 cannot run here: .*choose int8 or bfloat16"):
            int4_linears(lm, torch.device("mps"), torch.bfloat16)
