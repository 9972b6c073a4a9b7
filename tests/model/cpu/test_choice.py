"""model/cpu/choice.py: each linear's product is the one timed fastest on this CPU, remembered."""

from __future__ import annotations

import torch
from torch import nn

from model.cpu import choice, linear


def test_the_fastest_road_is_kept_and_remembered(tmp_path, monkeypatch):
    monkeypatch.setattr(choice, "cache_file", lambda: tmp_path / "choices.json")
    monkeypatch.setattr(choice, "_choices", None)
    timed = []

    def timings(weight):
        timed.append(tuple(weight.shape))
        return {"torch": 1.0, "mkl": 0.5, "native": 2.0} if weight.shape[0] == 8 else {
            "torch": 0.2, "mkl": 0.5, "native": 0.4}  # fmt: skip

    monkeypatch.setattr(choice, "_timings", timings)
    a, b = nn.Linear(16, 8, bias=False), nn.Linear(16, 4, bias=False)
    assert linear.Linear.of(a).road == "mkl" and linear.Linear.of(b).road == "torch"
    assert linear.Linear.of(nn.Linear(16, 8, bias=False)).road == "mkl"
    assert timed == [(8, 16), (4, 16)]  # each shape timed once
    monkeypatch.setattr(choice, "_choices", None)  # a new process: read from the file
    assert choice.road_for(torch.zeros(8, 16)) == "mkl" and len(timed) == 2
    assert choice.table()[0].startswith("        8x16: mkl")


def test_every_road_gives_the_linears_product(tmp_path, monkeypatch):
    monkeypatch.setattr(choice, "cache_file", lambda: tmp_path / "choices.json")
    monkeypatch.setattr(choice, "_choices", None)
    plain = nn.Linear(2048, 64)
    x = torch.randn(1, 2048)
    for road in choice.ROADS:
        fast = linear.Linear.of(plain)
        fast.road = road
        fast.remake_copies()
        assert torch.allclose(fast(x), plain(x), atol=1e-4), road
