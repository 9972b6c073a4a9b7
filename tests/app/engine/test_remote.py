"""The remote backend against a small fake Moshi server: the protocol, and every way it can fail.

The fake server speaks Kyutai's protocol (handshake, Ogg/Opus audio both ways, text pieces) through
the websockets library; each test gives it a behaviour. The engine runs it with a silent microphone
paced in real time, as it would run the real server (tests/app/test_remote_server.py).
"""

from __future__ import annotations

import base64
import hashlib
import socket
import threading
import time

import numpy as np
import pytest

from app.audio.from_file import SilentAudio
from app.engine.messages import (
    AudioBlock,
    ErrorEvent,
    NewConversation,
    SetSampling,
    Start,
    StateChanged,
    Stats,
    Stop,
    TextPiece,
)
from app.engine.remote import (
    RemoteError,
    RemoteOptions,
    RemoteSession,
    persona_query,
    sampling_query,
    server_url,
)
from app.errors import UserError

sphn = pytest.importorskip("sphn")
pytest.importorskip("websockets")

FRAME = 1920
TONE = (0.3 * np.sin(2 * np.pi * 440 * np.arange(FRAME) / 24000)).astype(np.float32)  # Moshi's
FAST = RemoteOptions(
    open_timeout=2.0,
    waiting_after=0.2,
    slot_timeout=1.0,
    stall_timeout=1.0,
    ping_interval=0.5,
    ping_timeout=2.0,
    close_timeout=0.5,
)


# --- Addresses and query parameters --------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "url"),
    [
        ("localhost", "ws://localhost:8998/api/chat"),
        ("gpu-box:9000", "ws://gpu-box:9000/api/chat"),
        ("ws://10.0.0.2:8998", "ws://10.0.0.2:8998/api/chat"),
        ("wss://moshi.example.org/", "wss://moshi.example.org/api/chat"),
        ("https://moshi.example.org/proxy/chat", "wss://moshi.example.org/proxy/chat"),
        ("http://[::1]:8998", "ws://[::1]:8998/api/chat"),
        ("  ws://host:1/api/chat?worker_auth_id=7 ", "ws://host:1/api/chat?worker_auth_id=7"),
    ],
)
def test_server_addresses(text, url):
    assert server_url(text) == url


@pytest.mark.parametrize("text", ["", "ftp://host", "ws://", "ws://host:port", "user@host:8998"])
def test_not_a_server_address(text):
    with pytest.raises(UserError, match="not a server address"):
        server_url(text)


def test_sampling_goes_as_the_web_clients_query_parameters():
    sampling = SetSampling(temperature=0.6, top_k=100, text_temperature=0.0, text_top_k=10)
    assert sampling_query(sampling, seed=7) == {
        "text_temperature": "0",
        "text_topk": "10",
        "audio_temperature": "0.6",
        "audio_topk": "100",
        "text_seed": "7",
        "audio_seed": "7",
    }
    session = RemoteSession("ws://host:1/api/chat?text_topk=3&x=1")
    session.sampling = sampling
    assert session.connect_url.startswith(
        "ws://host:1/api/chat?x=1&text_temperature=0&text_topk=10"
    )


def test_a_voice_and_a_persona_go_as_personaplexs_query_parameters():
    """NVIDIA's PersonaPlex server reads voice_prompt (a file name among its voices) and
    text_prompt whenever either is sent."""
    assert persona_query(None, None) == {}
    assert persona_query("VARM1", None) == {"voice_prompt": "VARM1.pt", "text_prompt": ""}
    assert persona_query(None, "You are Alex.") == {
        "voice_prompt": "NATF2.pt",
        "text_prompt": "You are Alex.",
    }
    with pytest.raises(UserError, match="only with its own voices"):
        persona_query("/home/me/voice.wav", "")
    session = RemoteSession("ws://host:1/api/chat")
    session.set_persona("NATM0", "You enjoy having a good conversation.")
    assert session.connect_url == (
        "ws://host:1/api/chat?voice_prompt=NATM0.pt"
        "&text_prompt=You+enjoy+having+a+good+conversation."
    )


# --- Conversations -------------------------------------------------------------------------------


@pytest.fixture
def fake(fake_server):
    """The fake Moshi server of tests/app/conftest.py."""
    return fake_server


@pytest.fixture
def engine_for(start_engine):
    """An engine whose compute is a session with `url` and whose microphone is silence, paced as
    a real one; `engine.records` holds its records."""
    from app.conversation.record import Conversation

    def make(url, options=FAST):
        return start_engine(
            lambda config: RemoteSession(url, options=options),
            lambda config: SilentAudio(realtime=True),
            Conversation,
        )

    return make


def _until(engine, kind, predicate=lambda e: True, timeout=10.0):
    """The events up to and including the first of `kind` that matches `predicate`."""
    seen, deadline = [], time.monotonic() + timeout
    while True:
        event = engine.events.get(timeout=max(0.01, deadline - time.monotonic()))
        seen.append(event)
        if isinstance(event, kind) and predicate(event):
            return seen


def _states(events):
    return [e.state for e in events if isinstance(e, StateChanged)]


def _error(engine):
    events = _until(engine, StateChanged, lambda e: e.state == "error")
    return next(e.message for e in events if isinstance(e, ErrorEvent)), events


def test_a_conversation_with_unknown_messages_in_it(fake, engine_for):
    garbage = [b"\x07\x01colored", b"\x42??", b"", "a text frame", b"\x04{}", b"\x06"]
    fake.behaviour = lambda fake, ws: fake.talk(ws, extras=garbage)
    engine = engine_for(fake.url)
    engine.send(SetSampling(temperature=0.5, top_k=50, text_temperature=0.6, text_top_k=10))
    engine.send(Start())
    events = _until(engine, TextPiece, lambda e: e.text == "w7 ")
    events += _until(engine, Stats)
    stats = events[-1]
    engine.send(Stop())
    events += _until(engine, StateChanged, lambda e: e.state == "stopped")

    assert _states(events)[:3] == ["loading", "connecting", "running"]
    pieces = [e.text for e in events if isinstance(e, TextPiece)]
    assert pieces[:8] == [f"w{i} " for i in range(8)]  # in order, none lost
    blocks = [e for e in events if isinstance(e, AudioBlock)]
    assert any(np.abs(b.moshi).max() > 0.2 for b in blocks)  # Moshi's voice came back
    assert stats.remote.ignored_messages == len(garbage)
    assert stats.remote.rtt_ms > 0 and stats.remote.reconnects == 0
    assert fake.paths == [
        "/api/chat?text_temperature=0.6&text_topk=10&audio_temperature=0.5&audio_topk=50"
    ]
    record = engine.records[0]
    assert record.text.startswith("w0 w1 w2") and record.frames == len(blocks)


# --- Failures -------------------------------------------------------------------------------------


def test_refused(engine_for):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    engine = engine_for(f"ws://127.0.0.1:{port}")
    engine.send(Start())
    message, _ = _error(engine)
    assert message.startswith(f"Cannot connect to 127.0.0.1:{port}: connection refused")
    assert engine.records == []  # nothing was said: no conversation to keep


def test_wrong_path(fake, engine_for):
    engine = engine_for(fake.url.replace("/api/chat", "/chat"))
    engine.send(Start())
    message, _ = _error(engine)
    assert "was not found (HTTP 404" in message and "/api/chat" in message


def test_tls_to_a_server_without_tls(fake, engine_for):
    engine = engine_for(fake.url.replace("ws://", "wss://"))
    engine.send(Start())
    message, _ = _error(engine)
    assert message.startswith("TLS error") and "use ws://" in message


def test_a_busy_server_keeps_us_waiting_then_gives_a_slot(fake, engine_for):
    def busy_then_free(fake, ws):
        fake.done.wait(0.6)
        fake.talk(ws)

    fake.behaviour = busy_then_free
    engine = engine_for(fake.url)
    engine.send(Start())
    events = _until(engine, TextPiece)
    assert _states(events) == ["loading", "connecting", "waiting", "running"]


def test_a_busy_server_that_never_frees_a_slot(fake, engine_for):
    fake.behaviour = lambda fake, ws: fake.done.wait(10)
    engine = engine_for(fake.url)
    engine.send(Start())
    message, events = _error(engine)
    assert "waiting" in _states(events)
    assert "busy with another conversation" in message and "try again later" in message


def test_stop_while_waiting_for_a_slot_does_not_hang(fake, engine_for):
    fake.behaviour = lambda fake, ws: fake.done.wait(10)
    engine = engine_for(fake.url)
    engine.send(Start())
    _until(engine, StateChanged, lambda e: e.state == "waiting")
    started = time.monotonic()
    engine.send(Stop())
    _until(engine, StateChanged, lambda e: e.state == "stopped")
    assert time.monotonic() - started < 1.0


def test_the_server_dies_mid_call_then_we_reconnect(fake, engine_for):
    fake.behaviour = lambda fake, ws: fake.talk(ws, die_after=5)
    engine = engine_for(fake.url)
    engine.send(Start())
    message, events = _error(engine)
    assert message.startswith("The connection to the server was lost")
    assert "conversation so far is kept" in message
    record = engine.records[0]
    frames, text = record.frames, record.text
    assert frames > 0 and text.startswith("w0 ")

    fake.behaviour = lambda fake, ws: fake.talk(ws)
    engine.send(Start())  # reconnects; the same conversation goes on
    _until(engine, TextPiece, lambda e: e.text == "w3 ")
    stats = _until(engine, Stats)[-1]
    assert engine.records == [record] and record.frames > frames
    assert record.text.startswith(text) and stats.remote.reconnects == 1
    assert stats.elapsed > frames * 0.08  # the clock goes on too
    assert fake.connections == 2


def test_new_conversation_connects_again(fake, engine_for):
    engine = engine_for(fake.url)
    engine.send(Start())
    _until(engine, TextPiece, lambda e: e.text == "w1 ")
    engine.send(NewConversation())
    events = _until(engine, TextPiece, lambda e: e.text == "w1 ")
    assert _states(events) == ["connecting", "running"]  # the server's state starts afresh too
    assert len(engine.records) == 2 and engine.records[1].text.startswith("w0 w1")
    assert fake.connections == 2


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (
            b"\x05model crashed: CUDA out of memory",
            "The server reported an error: model crashed: CUDA out of memory.",
        ),
        (
            b"\x01" + b"this is not an Ogg page. " * 4,
            "the server sent audio that cannot be decoded",
        ),
    ],
    ids=["an error message", "audio that is not Ogg/Opus"],
)
def test_a_message_that_ends_the_call(fake, engine_for, message, expected):
    def send(fake, ws):
        ws.send(b"\x00")
        ws.recv()
        ws.send(message)
        fake.done.wait(10)

    fake.behaviour = send
    engine = engine_for(fake.url)
    engine.send(Start())
    assert _error(engine)[0].startswith(expected)


def test_a_server_that_closes_the_connection(fake, engine_for):
    def close(fake, ws):
        ws.send(b"\x00")
        ws.recv()
        ws.close(1001, "going away")

    fake.behaviour = close
    engine = engine_for(fake.url)
    engine.send(Start())
    message, _ = _error(engine)
    assert message.startswith("The server closed the connection (going away).")


def _stalled_server(done: threading.Event) -> int:
    """A server that upgrades to a WebSocket, sends the handshake, then neither reads nor writes:
    a stalled socket (not even pings are answered). Returns its port."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve():
        connection, _ = listener.accept()
        request = b""
        while b"\r\n\r\n" not in request:
            request += connection.recv(4096)
        key = next(
            line.split(b":", 1)[1].strip()
            for line in request.split(b"\r\n")
            if line.lower().startswith(b"sec-websocket-key")
        )
        accept = base64.b64encode(
            hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest()
        )
        connection.sendall(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n"
        )
        connection.sendall(b"\x82\x01\x00")  # a binary frame holding the handshake, 0x00
        done.wait(10)
        connection.close()
        listener.close()

    threading.Thread(target=serve, daemon=True).start()
    return listener.getsockname()[1]


def test_a_stalled_socket(engine_for):
    done = threading.Event()
    try:
        engine = engine_for(f"ws://127.0.0.1:{_stalled_server(done)}")
        engine.send(Start())
        started = time.monotonic()
        message, events = _error(engine)
        assert "running" in _states(events)
        assert message.startswith("Nothing came from the server for 1 s")
        assert time.monotonic() - started < 5
    finally:
        done.set()


# --- Bounded buffers ------------------------------------------------------------------------------


def test_a_burst_from_the_server_never_grows_the_latency(fake):
    def burst(fake, ws):
        writer = sphn.OpusStreamWriter(24000)
        ws.send(b"\x00")
        for i in range(40):  # 3.2 s of Moshi at once, after a network hiccup
            ws.send(b"\x01" + writer.append_pcm(TONE))
            ws.send(b"\x02" + f"b{i} ".encode())
        fake.done.wait(10)

    fake.behaviour = burst
    session = RemoteSession(fake.url, options=FAST)
    session.connect()
    try:
        while not session.wait_ready(0.1):
            pass
        time.sleep(0.5)  # let the burst arrive
        steps = [session.step(np.zeros(FRAME, np.float32)) for _ in range(12)]
        stats = session.stats()
    finally:
        session.disconnect()
    bound_ms = 1000 * (FAST.max_latency + 0.12) + 80  # the jitter buffer's ceiling, one frame
    assert stats.buffer_ms <= bound_ms
    assert stats.output_dropped_ms >= 3200 - bound_ms - 12 * 80
    text = "".join(s.text for s in steps)
    assert text.startswith("b0 b1 ")  # the text of dropped audio still shows, in order
    assert text.split() == sorted(text.split(), key=lambda w: int(w[1:]))


def test_when_the_network_is_behind_the_oldest_input_is_dropped():
    from app.engine.remote import _Link

    link = _Link("ws://127.0.0.1:1/api/chat", FAST)  # never started: nothing is sent
    for i in range(10):
        link.send(np.full(FRAME, i, np.float32))
    assert link.outbox.qsize() == FAST.send_queue and link.unsent == 10 - FAST.send_queue
    assert link.outbox.get_nowait()[0] == 10 - FAST.send_queue  # the newest are kept
    assert link.stats().input_dropped_ms == (10 - FAST.send_queue) * 80


def test_step_before_connecting_is_an_error():
    with pytest.raises(RemoteError, match="not connected"):
        RemoteSession("localhost").step(np.zeros(FRAME, np.float32))
