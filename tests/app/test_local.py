"""The local backend: what the window's Start loads."""

import model.pipeline
from app.local import RunConfig, load_pipeline
from model.graphs import Graphed


def test_the_model_comes_warmed_up_for_a_live_conversation(tiny_checkpoint, monkeypatch):
    """Loading ends with every stage captured (as on a GPU: here a stand-in capture), so a
    conversation's first frames run at full speed, and its frame count starts at zero."""
    monkeypatch.setattr(model.pipeline, "graphs_wanted", lambda device: True)
    monkeypatch.setattr(Graphed, "_cuda_capture", lambda self, record: record)
    pipeline = load_pipeline(RunConfig(model=str(tiny_checkpoint), device="cpu", seed=0))
    assert all(stage.captured for stage in (pipeline._encode, pipeline._advance, pipeline._decode))
    assert pipeline.frames == 0
