"""CPU fp32 speed: the model's modules swapped for CPU forms that compute the same things faster.

`model.conv`, `model.transformer` and `model.mimi` are written as the math, with public PyTorch
ops; that is the path on a GPU and in other dtypes. On the CPU in fp32 a streaming step is bound
by reading each weight once for a frame or two of activations, and there `speed_up(model)` swaps,
in place, the way `model.quant.quantize_linears` swaps Linear for Int8Linear:

    nn.Linear                  -> linear.Linear          W @ X for a few rows (products.py)
    mimi.Codebook              -> linear.CentroidsFirst  the distances as W @ X
    nn.Conv1d                  -> conv.Conv1d            a product for few frames, oneDNN for more
    nn.ConvTranspose1d         -> conv.ConvTranspose1d   the same, transposed
    conv.StreamingConv1d       -> conv.StreamingConv1d   its input tail time-major, as oneDNN's

Each form holds the Parameters and buffers of the module it replaces, under the same names (state
dicts are unchanged), and keeps whatever else it reads (a weight's wide blocks, oneDNN's reorders)
as its own attributes: nothing is hidden on a Parameter. Every private PyTorch op sits in
`private.py`, beside the public op it falls back to; our own C++ kernel in `native.py`.
`tests/model/cpu/` holds each form to the module it replaces.

    load -> speed_up(mimi), speed_up(lm) -> start streaming          (model/pipeline.py)
"""

from __future__ import annotations

from torch import nn

from .. import conv as plain
from ..mimi import Codebook, Mimi
from . import conv, linear
from .products import cpu_fp32


def speed_up(model: nn.Module) -> nn.Module:
    """Swap every module of `model` that has a CPU form for it, in place, where its weights are
    fp32 on the CPU (others are left as they are: int8 linears, bf16, a GPU); returns `model`.
    Call it after loading the weights: the forms lay out and copy the weights they are given."""
    step_laid = _read_by_few_frames(model)
    _swap(model, step_laid)
    return model


def _swap(module: nn.Module, step_laid: set[nn.Module]) -> None:
    for name, child in module.named_children():
        fast = _cpu_form(child, step_laid)
        if fast is not None:
            setattr(module, name, fast)
            child = fast
        _swap(child, step_laid)


def _cpu_form(module: nn.Module, step_laid: set[nn.Module]) -> nn.Module | None:
    """`module`'s CPU form, or None where it has none (or is one already)."""
    kind = type(module)
    if kind not in _FORMS:
        return None
    if not all(cpu_fp32(t) for t in [*module.parameters(), *module.buffers()]):
        return None
    if kind is nn.ConvTranspose1d:
        return conv.ConvTranspose1d.of(module, step_layout=module in step_laid)
    return _FORMS[kind](module)


_FORMS = {
    nn.Linear: linear.Linear.of,
    Codebook: linear.CentroidsFirst.of,
    nn.Conv1d: conv.Conv1d.of,
    nn.ConvTranspose1d: conv.ConvTranspose1d.of,
    plain.StreamingConv1d: conv.StreamingConv1d.of,
}


def _read_by_few_frames(model: nn.Module) -> set[nn.Module]:
    """The transposed convs of each Mimi's decoder that a streaming step gives few frames (up to
    FEW_FRAMES): their product reads the weight fastest laid out [C_out K, C_in] in memory. The
    others keep the layout PyTorch's and oneDNN's kernels want."""
    few: set[nn.Module] = set()
    for mimi in (m for m in model.modules() if isinstance(m, Mimi)):
        frames = 1  # a streaming step's input: one frame of codes
        for module in [mimi.upsample.convtr, *mimi.decoder.model]:
            if isinstance(module, plain.StreamingConvTranspose1d):
                convtr = module.convtr.convtr
                if frames <= conv.FEW_FRAMES:
                    few.add(convtr)
                frames *= convtr.stride[0]
    return few
