"""The realtime engine, driven through its command queue, watched through its events."""

import queue
import threading
from dataclasses import dataclass, field

import numpy as np
import pytest
import soundfile

from app.engine.engine import Engine
from app.engine.local import LocalCompute
from app.engine.messages import (
    AudioBlock,
    ErrorEvent,
    Mute,
    NewConversation,
    Notice,
    SetHalfDuplex,
    SetSampling,
    Start,
    StateChanged,
    Stats,
    Stop,
    TextPiece,
)
from model.generate import SamplingSettings

FRAME = 1920


class QueueAudio:
    """Frames the test pushes; Moshi's frames collected. `finished` once `end()` is called."""

    def __init__(self, realtime: bool = False):
        self.frames: queue.Queue = queue.Queue()
        self.played: list[np.ndarray] = []
        self.realtime = realtime
        self.finished = False
        self.started = self.stopped = 0

    def push(self, *frames):
        for f in frames:
            self.frames.put(f)

    def end(self):
        self.finished = True

    def start(self):
        self.started += 1

    def stop(self):
        self.stopped += 1

    def read_frame(self, timeout):
        try:
            return self.frames.get(timeout=timeout) if timeout else self.frames.get_nowait()
        except queue.Empty:
            return None

    def write_frame(self, pcm):
        self.played.append(pcm)

    def stats(self):
        return None


@dataclass
class Result:
    text: str
    pcm: np.ndarray | None
    ms: dict = field(default_factory=lambda: {"encode": 1.0, "lm": 1.0, "decode": 1.0})


class SpyPipeline:
    """Records what it is given; answers with a loud or silent frame."""

    def __init__(self, loud=False, fail_at=None):
        self.heard: list[np.ndarray] = []
        self.sampling_seen: list = []
        self.sampling = SamplingSettings()
        self.resets = 0
        self.loud, self.fail_at = loud, fail_at

    def step(self, pcm):
        if self.fail_at is not None and len(self.heard) == self.fail_at:
            raise RuntimeError("CUDA error: something broke")
        self.heard.append(np.array(pcm))
        self.sampling_seen.append(self.sampling)
        first = len(self.heard) == 1
        out = None if first else np.full(FRAME, 0.5 if self.loud else 0.0, np.float32)
        return Result("" if first else "hi", out)

    def reset(self):
        self.resets += 1
        self.heard.clear()

    def warm_up(self):
        pass


class Record:
    def __init__(self):
        self.frames = []
        self.closed = False

    def add_frame(self, index, user, moshi, text=""):
        self.frames.append((index, user, moshi, text))

    def close(self):
        self.closed = True


def _frame(value: float) -> np.ndarray:
    return np.full(FRAME, value, np.float32)


def _wait_for(engine, kind, predicate=lambda e: True, timeout=20.0):
    """Events up to and including the first of `kind` matching `predicate`."""
    seen = []
    while True:
        event = engine.events.get(timeout=timeout)
        seen.append(event)
        if isinstance(event, kind) and predicate(event):
            return seen


@pytest.fixture
def make_engine(start_engine):
    def make(pipeline, audio, record=True):
        return start_engine(
            lambda config: LocalCompute(pipeline), lambda config: audio, Record if record else None
        )

    return make


def test_frames_in_equal_frames_out_with_the_real_pipeline(make_engine, tiny_checkpoint):
    from model.pipeline import Pipeline

    audio = QueueAudio()
    rng = np.random.default_rng(0)
    frames = [0.1 * rng.standard_normal(FRAME).astype(np.float32) for _ in range(15)]
    audio.push(*frames)
    audio.end()
    engine = make_engine(Pipeline.load(tiny_checkpoint, "cpu", seed=0), audio)
    engine.send(Start())
    events = _wait_for(engine, StateChanged, lambda e: e.state == "finished")
    states = [e.state for e in events if isinstance(e, StateChanged)]
    assert states == ["loading", "running", "finished"]
    blocks = [e for e in events if isinstance(e, AudioBlock)]
    assert len(blocks) == 15 and len(audio.played) == 14  # Moshi's first frame comes one late
    assert [b.time for b in blocks] == pytest.approx([0.08 * i for i in range(15)])
    assert all(np.array_equal(b.user, f) for b, f in zip(blocks, frames))
    record = engine.records[0]
    assert [f[0] for f in record.frames] == list(range(15))
    texts = [e for e in events if isinstance(e, TextPiece)]
    assert all(a.time <= b.time for a, b in zip(texts, texts[1:]))
    assert any(isinstance(e, Stats) for e in events)


def test_the_model_warms_up_with_the_users_settings_before_the_conversation(
    make_engine, tiny_checkpoint, monkeypatch
):
    """Every stage is captured while loading (here with a stand-in for the CUDA graph capture),
    after the sampling settings sent before Start: none is captured during the conversation."""
    from model.graphs import Graphed
    from model.pipeline import Pipeline

    captured = []
    monkeypatch.setattr(
        Graphed, "_cuda_capture", lambda self, record: captured.append(self.fn.__name__) or record
    )
    audio = QueueAudio()
    audio.push(*[_frame(0.1)] * 6)
    audio.end()
    pipeline = Pipeline.load(tiny_checkpoint, "cpu", seed=0, cuda_graphs=True)
    engine = make_engine(pipeline, audio)
    engine.send(SetSampling(top_k=7, text_top_k=3))  # another top-k: another step to capture
    engine.send(Start())
    _wait_for(engine, StateChanged, lambda e: e.state == "running")
    assert sorted(captured) == ["advance", "decode", "encode"]
    _wait_for(engine, StateChanged, lambda e: e.state == "finished")
    assert pipeline.sampling.top_k == 7
    assert len(captured) == 3
    assert [f[0] for f in engine.records[0].frames] == list(range(6))


def test_stop_start_and_new_conversation(make_engine):
    audio, pipeline = QueueAudio(), SpyPipeline()
    engine = make_engine(pipeline, audio)
    engine.send(Start())
    audio.push(_frame(0.1), _frame(0.1))
    _wait_for(engine, AudioBlock, lambda e: e.time > 0.07)
    engine.send(Stop())
    _wait_for(engine, StateChanged, lambda e: e.state == "stopped")
    assert audio.stopped == 1
    engine.send(Start())
    audio.push(_frame(0.1))
    block = _wait_for(engine, AudioBlock)[-1]
    assert block.time == pytest.approx(0.16)  # the same conversation goes on
    engine.send(NewConversation())
    audio.push(_frame(0.1))
    block = _wait_for(engine, AudioBlock)[-1]
    assert block.time == 0 and pipeline.resets == 1
    assert engine.records[0].closed and len(engine.records) == 2


def test_sampling_change_applies_to_the_next_frame(make_engine):
    audio, pipeline = QueueAudio(), SpyPipeline()
    engine = make_engine(pipeline, audio)
    engine.send(Start())
    audio.push(_frame(0.0))
    _wait_for(engine, AudioBlock)
    engine.send(SetSampling(temperature=0.0, top_k=5, text_temperature=0.3, text_top_k=7))
    audio.push(_frame(0.0))
    _wait_for(engine, AudioBlock)
    assert pipeline.sampling_seen[0] == SamplingSettings()
    assert pipeline.sampling_seen[-1] == SamplingSettings(0.0, 5, 0.3, 7)


def test_mute_and_half_duplex_keep_no_voice_moshi_did_not_hear(make_engine):
    """Privacy: what Moshi does not hear is neither computed, drawn nor recorded."""
    audio, pipeline = QueueAudio(), SpyPipeline(loud=True)
    engine = make_engine(pipeline, audio)
    engine.send(Mute(True))
    engine.send(Start())
    audio.push(_frame(0.3))
    block = _wait_for(engine, AudioBlock)[-1]
    assert not pipeline.heard[-1].any()
    assert not block.user.any()  # the You lane draws silence
    assert not engine.records[0].frames[-1][1].any()  # and the record keeps none

    engine.send(Mute(False))
    engine.send(SetHalfDuplex(True))
    audio.push(_frame(0.3), _frame(0.3), _frame(0.3))
    blocks = _wait_for(engine, AudioBlock, lambda e: e.time > 0.2)
    # frame 1: Moshi is not yet speaking, heard; it answers loudly, so frames 2, 3 are muted
    assert pipeline.heard[1].max() == pytest.approx(0.3)
    assert not pipeline.heard[2].any() and not pipeline.heard[3].any()
    recorded = [user for _, user, _, _ in engine.records[0].frames]
    assert recorded[1].max() == pytest.approx(0.3)
    assert not recorded[2].any() and not recorded[3].any()
    assert not blocks[-1].user.any()


def test_non_finite_samples_are_heard_as_silence_and_counted(make_engine):
    audio, pipeline = QueueAudio(), SpyPipeline()
    engine = make_engine(pipeline, audio)
    engine.send(Start())
    bad = _frame(0.1)
    bad[:100], bad[100:103] = np.nan, [np.inf, -np.inf, np.nan]
    audio.push(bad, *[_frame(0.0)] * 4)
    stats = _wait_for(engine, Stats)[-1]
    assert np.isfinite(pipeline.heard[0]).all() and not pipeline.heard[0][:103].any()
    assert pipeline.heard[0][103:].max() == pytest.approx(0.1)
    assert stats.silenced_samples == 103


def test_frames_dropped_while_behind_leave_a_gap_in_the_timeline(make_engine):
    """Times are wall-clock times: a stretch the engine skipped is a gap, not squeezed out."""
    entered, gate = threading.Event(), threading.Event()

    class Busy(SpyPipeline):
        def step(self, pcm):
            entered.set()
            gate.wait(10)  # the first frame takes long: the next ones pile up meanwhile
            return super().step(pcm)

    audio, pipeline = QueueAudio(realtime=True), Busy()
    engine = make_engine(pipeline, audio)
    engine.send(Start())
    audio.push(_frame(0.0))
    assert entered.wait(10)  # the engine is computing the first frame
    audio.push(*[_frame(0.1)] * 4)  # three are dropped, the newest is stepped
    gate.set()
    _wait_for(engine, AudioBlock)
    block = _wait_for(engine, AudioBlock)[-1]
    assert block.time == pytest.approx(4 * 0.08)
    assert [index for index, *_ in engine.records[0].frames] == [0, 4]


def test_a_worker_exception_is_an_event_and_the_engine_starts_again(make_engine):
    audio, pipeline = QueueAudio(), SpyPipeline(fail_at=1)
    engine = make_engine(pipeline, audio)
    engine.send(Start())
    audio.push(_frame(0.0), _frame(0.0))
    events = _wait_for(engine, StateChanged, lambda e: e.state == "error")
    error = next(e for e in events if isinstance(e, ErrorEvent))
    assert error.message == "RuntimeError: CUDA error: something broke"
    assert audio.stopped == 1
    pipeline.fail_at = None
    engine.send(Start())
    audio.push(_frame(0.0))
    _wait_for(engine, AudioBlock)
    assert engine.state == "running"


def test_load_failure_is_an_event(make_engine):
    from app.errors import UserError

    def broken(config):
        raise UserError("cannot load the model: model folder not found: /nowhere")

    engine = Engine(broken, lambda config: QueueAudio())
    engine.start()
    try:
        engine.send(Start())
        events = _wait_for(engine, StateChanged, lambda e: e.state == "error")
        assert ErrorEvent("cannot load the model: model folder not found: /nowhere") in events
    finally:
        engine.close()


def test_when_behind_real_time_old_input_is_dropped_and_counted(make_engine):
    audio, pipeline = QueueAudio(realtime=True), SpyPipeline()
    audio.push(*[_frame(i / 100) for i in range(12)])  # a backlog: the model fell behind
    engine = make_engine(pipeline, audio)
    engine.send(Start())
    _wait_for(engine, AudioBlock)
    assert pipeline.heard[0][0] == pytest.approx(0.11)  # only the newest frame was stepped
    for _ in range(3):
        audio.push(_frame(0.0))
        _wait_for(engine, AudioBlock)
    audio.push(_frame(0.0))
    stats = _wait_for(engine, Stats)[-1]
    assert stats.dropped_frames == 11


def test_a_slow_reader_never_stalls_the_engine(tiny_checkpoint):
    audio, pipeline = QueueAudio(), SpyPipeline()
    engine = Engine(lambda config: LocalCompute(pipeline), lambda config: audio, max_events=5)
    engine.start()
    try:
        engine.send(Start())
        audio.push(*[_frame(0.0) for _ in range(40)])
        audio.end()
        done = threading.Event()
        while not done.is_set():  # read nothing until the engine has stepped every frame
            if len(pipeline.heard) == 40:
                done.set()
            else:
                done.wait(0.01)
        assert engine.dropped_events > 0
    finally:
        engine.close()


def test_cannot_keep_up_warns_once(make_engine, monkeypatch):
    import app.engine.engine

    audio, pipeline = QueueAudio(realtime=True), SpyPipeline()
    clock = iter(np.arange(0, 1000, 0.1))  # every step appears to take 100 ms
    monkeypatch.setattr(app.engine.engine.time, "perf_counter", lambda: next(clock))
    engine = make_engine(pipeline, audio)
    engine.send(Start())
    events = []
    for _ in range(60):
        audio.push(_frame(0.0))
        events += _wait_for(engine, AudioBlock)
    notices = [e for e in events if isinstance(e, Notice)]
    assert len(notices) == 1 and "cannot run Moshi in real time" in notices[0].message
    assert all(s.rtf > 1 for s in events if isinstance(s, Stats))


def test_export_runs_on_the_engine_thread_and_failures_keep_the_record(make_engine, tmp_path):
    from app.engine.messages import Export, Exported
    from app.errors import UserError

    audio, pipeline = QueueAudio(), SpyPipeline()
    engine = make_engine(pipeline, audio)
    engine.send(Export(str(tmp_path / "early.txt")))
    assert isinstance(_wait_for(engine, ErrorEvent)[-1], ErrorEvent)  # nothing to export yet

    engine.send(Start())
    audio.push(_frame(0.1))
    _wait_for(engine, AudioBlock)
    record = engine.records[0]
    exported = []

    def export(path):
        if "full" in path:
            raise UserError(f"cannot write {path}: no space left on device")
        exported.append(path)

    record.export = export
    engine.send(Export("/disk/full.wav"))
    assert _wait_for(engine, ErrorEvent)[-1].message.endswith("no space left on device")
    engine.send(Export(str(tmp_path / "ok.wav")))
    assert _wait_for(engine, Exported)[-1] == Exported(str(tmp_path / "ok.wav"))
    assert engine.state == "running" and engine.record is record


def test_a_new_model_is_loaded_on_the_next_start(make_engine):
    from types import SimpleNamespace

    audio = QueueAudio()
    loaded = []

    def load(config):
        loaded.append(config.model_key)
        return LocalCompute(SpyPipeline())

    engine = Engine(load, lambda config: audio)
    engine.start()
    try:
        engine.send(Start(SimpleNamespace(model_key="moshiko")))
        audio.push(_frame(0.0), _frame(0.0))
        _wait_for(engine, AudioBlock, lambda e: e.time > 0)
        engine.send(Stop())
        engine.send(Start(SimpleNamespace(model_key="moshiko")))  # same model: no reload
        engine.send(Stop())
        engine.send(Start(SimpleNamespace(model_key="moshika")))
        audio.push(_frame(0.0))
        block = _wait_for(engine, AudioBlock)[-1]
        assert loaded == ["moshiko", "moshika"] and block.time == 0
    finally:
        engine.close()


def test_a_failing_autosave_is_said_once_and_the_conversation_can_still_be_exported(
    start_engine, tmp_path, monkeypatch
):
    from app.conversation import record
    from app.conversation.record import Conversation
    from app.engine.messages import Autosave, Export, Exported

    monkeypatch.setattr(record, "_open_append", lambda path: open("/dev/full", "wb", buffering=16))
    monkeypatch.setattr(record, "FLUSH_SECONDS", 0.0)
    audio = QueueAudio()
    engine = start_engine(
        lambda config: LocalCompute(SpyPipeline()),
        lambda config: audio,
        new_record=lambda *about: Conversation.create(tmp_path / "autosave"),
    )
    engine.send(Start())
    audio.push(*[_frame(0.1)] * 12)
    events = _wait_for(engine, AudioBlock, lambda e: e.time > 0.85)
    notices = [e for e in events if isinstance(e, Notice)]
    assert len(notices) == 1 and "no longer saved to disk" in notices[0].message
    said = [e.folder for e in events if isinstance(e, Autosave)]
    assert len(said) == 2 and said[0].startswith(str(tmp_path / "autosave")) and said[1] is None
    assert "disk is full" in notices[0].message and "export" in notices[0].message
    engine.send(Export(str(tmp_path / "elsewhere.wav")))
    _wait_for(engine, Exported)
    stereo, _ = soundfile.read(tmp_path / "elsewhere.wav")
    assert len(stereo) == 12 * FRAME  # nothing lost


def test_the_record_names_the_model_and_how_it_ran(tmp_path):
    """Every export says what made it: model, revision, device, dtype, sampling, seed, version."""
    import json

    import app
    from app.conversation.record import Conversation
    from app.engine.run import RunConfig

    audio = QueueAudio()
    engine = Engine(
        lambda config: LocalCompute(SpyPipeline()),
        lambda config: audio,
        new_record=lambda model, settings: Conversation(model=model, settings=settings),
    )
    engine.start()
    try:
        engine.send(SetSampling(temperature=0.5, top_k=9, text_temperature=0.6, text_top_k=4))
        config = RunConfig(
            model="kyutai/moshika-pytorch-bf16", revision="v1", lora="/loras/a", device="cpu"
        )
        engine.send(Start(RunConfig(**{**vars(config), "dtype": "float32", "seed": 7})))
        audio.push(_frame(0.1), _frame(0.1))
        _wait_for(engine, AudioBlock, lambda e: e.time > 0)
        engine.record.export(tmp_path / "talk.json")
    finally:
        engine.close()
    exported = json.loads((tmp_path / "talk.json").read_text())
    assert exported["model"] == "kyutai/moshika-pytorch-bf16"
    assert exported["settings"] == {
        "revision": "v1",
        "device": "cpu",
        "dtype": "float32",
        "seed": 7,
        "temperature": 0.5,
        "top_k": 9,
        "text_temperature": 0.6,
        "text_top_k": 4,
        "lora": "/loras/a",
        "echo_cancellation": False,  # what processed the user's voice (app/audio/echo.py)
        "noise_suppression": "off",
        "app_version": app.__version__,
    }


def test_a_missing_microphone_is_said_before_the_model_loads(start_engine):
    from app.audio.devices import NoAudioDevice

    loads = []

    def no_microphone(config):
        raise NoAudioDevice("No microphone found: plug one in, or choose one in Settings.")

    engine = start_engine(
        lambda config: loads.append(config) or LocalCompute(SpyPipeline()), no_microphone
    )
    engine.send(Start())
    events = _wait_for(engine, StateChanged, lambda e: e.state == "error")
    assert ErrorEvent("No microphone found: plug one in, or choose one in Settings.") in events
    assert loads == [] and StateChanged("loading") not in events  # no model load was waited for


def test_loading_says_what_else_it_will_do(start_engine):
    engine = Engine(
        lambda config: LocalCompute(SpyPipeline()),
        lambda config: QueueAudio(),
        loading_note=lambda config: "building the CPU kernel for this computer, once",
    )
    engine.start()
    try:
        engine.send(Start())
        loading = _wait_for(engine, StateChanged)[-1]
    finally:
        engine.close()
    assert loading == StateChanged("loading", "building the CPU kernel for this computer, once")
