"""Fixtures shared by the tests of app/: engines that are closed after the test, a fake Moshi
server."""

from __future__ import annotations

import socket
import threading

import numpy as np
import pytest

FRAME = 1920
TONE = (0.3 * np.sin(2 * np.pi * 440 * np.arange(FRAME) / 24000)).astype(np.float32)


class FakeServer:
    """A WebSocket server on 127.0.0.1 speaking Kyutai's protocol (moshi-facts 5.4) at /api/chat
    (other paths: HTTP 404). Each connection runs `behaviour(server, ws)`, by default `talk`;
    `paths` records the paths (with queries) asked for, `connections` counts them, and `done` is
    set when the test ends, so behaviours that wait stop waiting."""

    def __init__(self) -> None:
        from websockets.sync.server import serve

        self.behaviour = lambda server, ws: server.talk(ws)
        self.done = threading.Event()
        self.connections = 0
        self.paths: list[str] = []
        self.server = serve(self._handle, "127.0.0.1", 0, process_request=self._route)
        self.port = self.server.socket.getsockname()[1]
        self.url = f"ws://127.0.0.1:{self.port}/api/chat"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @staticmethod
    def talk(ws, *, die_after: int | None = None, extras=()) -> None:
        """Moshi's part: a handshake, then for each whole frame heard, a frame of tone and a word
        (`w0 `, `w1 `, ...). `extras` are sent after the handshake; after `die_after` frames the
        connection drops without a closing handshake."""
        import sphn

        reader, writer = sphn.OpusStreamReader(24000), sphn.OpusStreamWriter(24000)
        ws.send(b"\x00")
        for extra in extras:
            ws.send(extra)
        heard, n = 0, 0
        for message in ws:
            heard += reader.append_bytes(message[1:]).shape[-1]
            while heard >= FRAME:
                heard -= FRAME
                ws.send(b"\x01" + writer.append_pcm(TONE))
                ws.send(b"\x02" + f"w{n} ".encode())
                n += 1
                if die_after is not None and n >= die_after:
                    ws.socket.shutdown(socket.SHUT_RDWR)
                    return

    def _route(self, connection, request):
        self.paths.append(request.path)
        if not request.path.startswith("/api/chat"):
            return connection.respond(404, "Not Found\n")
        return None

    def _handle(self, ws) -> None:
        self.connections += 1
        try:
            self.behaviour(self, ws)
        except Exception:  # the client went away: the behaviour's business ends here
            pass

    def close(self) -> None:
        self.done.set()
        self.server.shutdown()


@pytest.fixture
def fake_server():
    """A `FakeServer`, closed at the end of the test."""
    pytest.importorskip("websockets")
    pytest.importorskip("sphn")
    server = FakeServer()
    yield server
    server.close()


@pytest.fixture
def start_engine():
    """start_engine(load, open_audio, new_record=None): an `app.engine.engine.Engine` over those,
    started, and closed when the test ends; `engine.records` holds the records it made."""
    from app.engine.engine import Engine

    engines = []

    def start(load, open_audio, new_record=None):
        records = []

        def record(model="", settings=None):
            records.append(new_record())
            return records[-1]

        engine = Engine(load, open_audio, new_record=record if new_record else None)
        engine.records = records
        engine.start()
        engines.append(engine)
        return engine

    yield start
    for engine in engines:
        engine.close()
