"""The remote backend: Moshi runs on Kyutai's own server, reached over one WebSocket.

Kyutai's Python server (`python -m moshi.server`) and its Rust server speak one protocol (facts
file, section 5.4): a WebSocket, by default at ``/api/chat``, carrying binary messages whose first
byte is their kind:

    0x00  handshake: the server has a slot for this conversation. The Python server holds one
          conversation at a time; until the handshake comes, the client waits for a slot.
    0x01  audio: Ogg/Opus pages, 24 kHz mono, both ways (encoded and decoded by Kyutai's sphn)
    0x02  a piece of Moshi's text, UTF-8
    0x05  an error, UTF-8
    Other kinds are ignored, and so are text frames and empty messages.

Sampling settings travel as the query parameters Kyutai's web client sends (text_temperature,
text_topk, audio_temperature, audio_topk, text_seed, audio_seed), when connecting: the Rust server
honours them, the Python server ignores them. NVIDIA's PersonaPlex server takes its voice and
persona the same way (`voice_prompt`, `text_prompt`: `persona_query`).

`RemoteSession` computes frames for the engine (app.engine) in place of a local pipeline, and never
makes the engine wait on the network: the engine thread calls `step` once per 80 ms frame, which
queues the user's frame and takes one frame of Moshi's voice from a jitter buffer. Two threads per
connection do the network work:

- the receiver connects, waits for the handshake, decodes Moshi's audio into the jitter buffer
  (`app.audio.buffers.PlaybackBuffer`: bounded, it drops the oldest audio rather than let latency grow)
  and keeps each text piece until the audio it came with is played;
- the sender Opus-encodes the user's frames from a bounded queue (when the network does not take
  them, the oldest are dropped and counted) and sends them.

Every failure is a `RemoteError`, one sentence saying what happened and what to do, raised on the
engine thread by `wait_ready` or `step`; the engine keeps the conversation's record and can
connect again. websockets (its threading client, with keepalive pings that measure the round trip)
and sphn are imported only when a connection is made.
"""

from __future__ import annotations

import queue
import socket
import ssl
import threading
import time
from collections import deque
from contextlib import ExitStack
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import numpy as np

from model.config import FRAME_SIZE, SAMPLE_RATE
from model.voices import DEFAULT_VOICE, is_voice_name

from ..audio.buffers import PlaybackBuffer
from ..errors import UserError
from .messages import SetSampling

DEFAULT_PORT = 8998  # moshi.server's
DEFAULT_PATH = "/api/chat"
DEFAULT_SERVER = f"ws://localhost:{DEFAULT_PORT}{DEFAULT_PATH}"

HANDSHAKE, AUDIO, TEXT, ERROR = 0x00, 0x01, 0x02, 0x05

SAMPLING_NOTE = (
    "With a server, sampling settings are sent when connecting: Kyutai's Rust server honours "
    "them, its Python server (moshi.server) ignores them."
)
_AGAIN = "The conversation so far is kept: start again to reconnect."


class RemoteError(UserError):
    """The server cannot be reached or used; the message says why and what to do."""


def server_url(text: str) -> str:
    """`text` as the WebSocket URL to connect to.

    ws:// and wss:// are taken as they are, http:// and https:// as ws:// and wss://; without a
    scheme, ws:// and, without a port, moshi.server's 8998. An empty path is /api/chat.
    Raises UserError for anything that is not a server address.
    """
    raw = text.strip()
    has_scheme = "://" in raw
    parts = urlsplit(raw if has_scheme else "ws://" + raw)
    scheme = {"ws": "ws", "http": "ws", "wss": "wss", "https": "wss"}.get(parts.scheme.lower())
    try:
        port = parts.port
    except ValueError:
        port = -1
    if scheme is None or not parts.hostname or port == -1 or parts.username or parts.fragment:
        raise UserError(
            f"not a server address: {text.strip()!r}; use ws://HOST:PORT or wss://HOST "
            f"(Kyutai's moshi.server listens on ws://HOST:{DEFAULT_PORT}{DEFAULT_PATH})"
        )
    netloc = parts.netloc
    if not has_scheme and port is None:
        netloc = f"{netloc}:{DEFAULT_PORT}"
    path = parts.path if parts.path not in ("", "/") else DEFAULT_PATH
    return urlunsplit((scheme, netloc, path, parts.query, ""))


def sampling_query(sampling: object | None, seed: int | None) -> dict[str, str]:
    """The query parameters of Kyutai's web client for `sampling` (anything with temperature,
    top_k, text_temperature and text_top_k, as app.engine.messages.SetSampling) and `seed`."""
    query = {}
    if sampling is not None:
        query = {
            "text_temperature": f"{sampling.text_temperature:g}",
            "text_topk": str(sampling.text_top_k),
            "audio_temperature": f"{sampling.temperature:g}",
            "audio_topk": str(sampling.top_k),
        }
    if seed is not None:
        query["text_seed"] = query["audio_seed"] = str(seed)
    return query


def persona_query(voice: str | None, persona: str | None) -> dict[str, str]:
    """The query parameters of NVIDIA's PersonaPlex server for a voice (one of its own, by
    name: NATF2 is sent as `voice_prompt=NATF2.pt`) and a persona (`text_prompt`). Its server
    reads both whenever one is sent (a missing one is an error there), so a persona without a
    voice takes the default voice, and a voice without a persona sends an empty one. Kyutai's
    servers ignore them. A voice file cannot be sent: a UserError."""
    if voice is None and persona is None:
        return {}
    voice = voice or DEFAULT_VOICE
    if not is_voice_name(voice):
        raise UserError(
            f"a server speaks only with its own voices ({DEFAULT_VOICE}, say), not with the "
            f"file {voice}: choose one of its voices, or run the model here to use a recording"
        )
    return {"voice_prompt": f"{voice}.pt", "text_prompt": persona or ""}


def with_query(url: str, query: dict[str, str]) -> str:
    """`url` with `query` added (replacing parameters of the same names)."""
    parts = urlsplit(url)
    kept = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in query]
    return urlunsplit(parts._replace(query=urlencode(kept + list(query.items()))))


def _where(url: str) -> str:
    """The URL without its query: how messages name the server."""
    return urlunsplit(urlsplit(url)._replace(query=""))


@dataclass(frozen=True)
class RemoteOptions:
    """Timeouts (seconds) and buffer sizes of a connection."""

    open_timeout: float = 10.0  # to open the socket and upgrade it to a WebSocket
    waiting_after: float = 1.0  # no handshake after this long: the server is busy
    slot_timeout: float = 60.0  # give up waiting for a slot
    stall_timeout: float = 5.0  # nothing received for this long: the link stalled
    ping_interval: float = 2.0  # keepalive pings, which also measure the round trip
    ping_timeout: float = 10.0
    close_timeout: float = 2.0
    send_queue: int = 6  # frames of the user's voice waiting to be sent, at most
    latency: float = 0.08  # the jitter buffer's start and ceiling (see PlaybackBuffer)
    max_latency: float = 0.4
    text_wait: float = 1.0  # a text piece whose audio has not played after this long shows anyway


@dataclass(frozen=True)
class RemoteStats:
    """What matters about the link, for the status bar."""

    rtt_ms: float = 0.0  # WebSocket ping round trip, including the server's own delay in answering
    buffer_ms: float = 0.0  # Moshi's audio received and waiting when the last frame was played
    missed_ms: float = 0.0  # silence played because Moshi's audio came late, in total
    output_dropped_ms: float = 0.0  # Moshi's audio dropped to keep the latency bounded
    input_dropped_ms: float = 0.0  # the user's audio not sent because the network fell behind
    reconnects: int = 0  # connections after the first in this conversation
    ignored_messages: int = 0  # of unknown kinds


@dataclass
class RemoteStep:
    """One frame's answer, as `model.pipeline.Pipeline.step` gives it."""

    text: str
    pcm: np.ndarray | None  # None until Moshi's voice starts
    ms: dict[str, float] = field(default_factory=dict)


class RemoteSession:
    """Kyutai's Moshi server as the engine's compute (see the module docstring).

    Engine thread: `connect`, then `wait_ready` until True, then `step` once per frame;
    `disconnect` at the end. `sampling` and `seed` are sent with each connection.
    """

    def __init__(
        self, url: str, *, seed: int | None = None, options: RemoteOptions | None = None
    ) -> None:
        self.url = server_url(url)
        self.seed = seed
        self.sampling: SetSampling | None = None
        self.persona: tuple[str | None, str | None] = (None, None)  # PersonaPlex's
        self.options = options or RemoteOptions()
        self._link: _Link | None = None
        self._connects = 0
        self._missed = 0  # samples of silence played while waiting for Moshi's voice
        self._earlier = RemoteStats()  # the counters of this conversation's closed links
        self._buffered = 0  # samples of Moshi's voice waiting when the last frame was taken

    def set_sampling(self, sampling: SetSampling) -> None:
        """Sent as query parameters with the next connection."""
        self.sampling = sampling

    def set_persona(self, voice: str | None, persona: str | None) -> None:
        """Sent as query parameters with the next connection (`persona_query`)."""
        persona_query(voice, persona)  # a voice file: said now, not at the connection
        self.persona = (voice, persona)

    def warm_up(self) -> None:
        """The server warms its own model up."""

    @property
    def connected(self) -> bool:
        return self._link is not None

    @property
    def connect_url(self) -> str:
        query = {**sampling_query(self.sampling, self.seed), **persona_query(*self.persona)}
        return with_query(self.url, query)

    def connect(self) -> None:
        """Start connecting (returns at once); `wait_ready` tells when the server is ready."""
        self.disconnect()
        self._connects += 1
        self._link = _Link(self.connect_url, self.options)
        self._link.start()

    def wait_ready(self, timeout: float) -> bool:
        """True once the server has a slot for us; False if not within `timeout` seconds.
        Raises RemoteError when connecting failed."""
        return self._live().wait_ready(timeout)

    @property
    def waiting(self) -> bool:
        """Connected, but the server has not said it has a slot: it is busy with someone else."""
        link = self._link
        return link is not None and link.waiting

    def step(self, pcm: np.ndarray) -> RemoteStep:
        """Send the user's frame # [1920]; Moshi's next frame and the text that came with it."""
        link = self._live()
        link.check()
        link.send(pcm)
        out = np.zeros((FRAME_SIZE, 1), np.float32)
        playback = link.playback
        before = playback.played
        self._buffered = playback.ring.size  # before this frame is taken from it
        playback.fill(out)
        got = playback.played - before
        text = link.take_text()
        if before == 0 and got == 0:
            return RemoteStep(text, None)  # Moshi's voice has not started yet
        self._missed += FRAME_SIZE - got
        return RemoteStep(text, out[:, 0])

    def reset(self) -> None:
        """A new conversation: the server must forget this one, so the link closes (the engine
        connects again) and the counters start again."""
        self.disconnect()
        self._connects = self._missed = 0
        self._earlier = RemoteStats()

    def disconnect(self) -> None:
        """Close the connection (returns at once; the closing handshake runs in the background)."""
        link, self._link = self._link, None
        if link is not None:
            self._buffered = 0
            self._earlier = self._totals(link.stats())
            link.close()

    def stats(self) -> RemoteStats:
        link = self._link
        return self._totals(link.stats()) if link is not None else self._earlier

    def _totals(self, current: RemoteStats) -> RemoteStats:
        """This conversation's counters: `current` link's added to the earlier links'."""
        earlier = self._earlier
        return RemoteStats(
            rtt_ms=current.rtt_ms or earlier.rtt_ms,
            buffer_ms=self._buffered * 1000 / SAMPLE_RATE,
            missed_ms=self._missed * 1000 / SAMPLE_RATE,
            output_dropped_ms=earlier.output_dropped_ms + current.output_dropped_ms,
            input_dropped_ms=earlier.input_dropped_ms + current.input_dropped_ms,
            reconnects=max(0, self._connects - 1),
            ignored_messages=earlier.ignored_messages + current.ignored_messages,
        )

    def _live(self) -> _Link:
        if self._link is None:
            raise RemoteError(f"not connected to {_where(self.url)}")
        return self._link


class _Link:
    """One connection: its two threads, its buffers, and what went wrong."""

    def __init__(self, url: str, options: RemoteOptions) -> None:
        self.url, self.options = url, options
        self.ready = threading.Event()
        self.changed = threading.Event()  # ready, or failed
        self.closing = threading.Event()
        self.error: str | None = None
        self.ws = None
        self.opened_at: float | None = None  # the socket is open; the handshake may be pending
        self.last_received: float | None = None
        self.outbox: queue.Queue = queue.Queue(maxsize=options.send_queue)
        self.playback = PlaybackBuffer(
            SAMPLE_RATE, latency=options.latency, max_latency=options.max_latency
        )
        self.text: deque = deque(maxlen=1000)  # (samples received when it came, time, piece)
        self.received = 0  # samples of Moshi's voice decoded
        self.unsent = 0  # frames of the user's voice dropped before sending
        self.ignored = 0
        self.started = time.monotonic()
        self.receiver = threading.Thread(target=self._receive, name="moshi-remote", daemon=True)

    def start(self) -> None:
        self.receiver.start()

    # --- the engine thread ---------------------------------------------------------------------

    def wait_ready(self, timeout: float) -> bool:
        self.changed.wait(timeout)
        self.check()
        if self.ready.is_set():
            return True
        opened = self.opened_at
        if opened is not None and time.monotonic() - opened > self.options.slot_timeout:
            self.close()
            raise RemoteError(
                f"The server at {_where(self.url)} is busy with another conversation (Kyutai's "
                "Python server holds one at a time) and no slot opened within "
                f"{self.options.slot_timeout:g} s: try again later."
            )
        return False

    @property
    def waiting(self) -> bool:
        opened = self.opened_at
        return (
            not self.ready.is_set()
            and self.error is None
            and opened is not None
            and time.monotonic() - opened > self.options.waiting_after
        )

    def check(self) -> None:
        """Raise the link's failure, if any; a link that has gone quiet is a failure too."""
        if self.error is not None:
            raise RemoteError(self.error)
        last = self.last_received
        if last is not None and time.monotonic() - last > self.options.stall_timeout:
            self.close()
            raise RemoteError(
                f"Nothing came from the server for {self.options.stall_timeout:g} s: the network "
                f"or the server stalled. {_AGAIN}"
            )

    def send(self, pcm: np.ndarray) -> None:
        """Queue the user's frame; when the queue is full (the network is behind), drop the
        oldest."""
        frame = np.asarray(pcm, np.float32).reshape(-1)
        while True:
            try:
                self.outbox.put_nowait(frame)
                return
            except queue.Full:
                try:
                    self.outbox.get_nowait()
                    self.unsent += 1
                except queue.Empty:
                    pass

    def take_text(self) -> str:
        """The pieces whose audio has now been played (or dropped), or that waited too long."""
        consumed = self.playback.played + self.playback.dropped
        now = time.monotonic()
        pieces = []
        while self.text and (
            self.text[0][0] <= consumed or now - self.text[0][1] > self.options.text_wait
        ):
            pieces.append(self.text.popleft()[2])
        return "".join(pieces)

    def stats(self) -> RemoteStats:
        ws = self.ws
        ms = 1000 / SAMPLE_RATE
        return RemoteStats(
            rtt_ms=1000 * getattr(ws, "latency", 0.0) if ws is not None else 0.0,
            output_dropped_ms=self.playback.dropped * ms,
            input_dropped_ms=self.unsent * FRAME_SIZE * ms,
            ignored_messages=self.ignored,
        )

    def close(self) -> None:
        """Stop both threads; the closing handshake runs on a thread of its own."""
        if self.closing.is_set():
            return
        self.closing.set()
        ws = self.ws
        if ws is not None:
            threading.Thread(target=ws.close, name="moshi-remote-close", daemon=True).start()

    # --- the receiver thread -------------------------------------------------------------------

    def _fail(self, message: str) -> None:
        if self.error is None and not self.closing.is_set():
            self.error = message
        self.changed.set()

    def _receive(self) -> None:
        try:
            import sphn
            from websockets.exceptions import ConnectionClosed
            from websockets.sync.client import connect
        except ImportError as e:
            self._fail(
                f"the remote backend needs the packages websockets and sphn ({e}): "
                "pip install websockets sphn"
            )
            return
        o = self.options
        with ExitStack() as stack:  # `with connect(...) as ws`, with its failures told apart
            try:
                ws = stack.enter_context(
                    connect(
                        self.url,
                        open_timeout=o.open_timeout,
                        ping_interval=o.ping_interval,
                        ping_timeout=o.ping_timeout,
                        close_timeout=o.close_timeout,
                        compression=None,  # Opus does not compress further
                        user_agent_header="moshi-desktop",
                    )
                )
            except Exception as e:
                self._fail(describe_connect_error(self.url, e, o.open_timeout))
                return
            self.ws = ws
            self.opened_at = time.monotonic()
            if self.closing.is_set():
                return
            sender = threading.Thread(
                target=self._send, args=(ws, sphn.OpusStreamWriter(SAMPLE_RATE)), daemon=True
            )
            sender.start()
            reader = sphn.OpusStreamReader(SAMPLE_RATE)
            try:
                while not self.closing.is_set() and self.error is None:
                    self._handle(ws, ws.recv(), reader)
            except ConnectionClosed as e:
                self._fail(self._describe_close(e))
            except Exception as e:  # a bug here must end the link with a message, not hang it
                self._fail(f"the connection to the server failed: {type(e).__name__}: {e}")
            finally:
                self.closing.set()

    def _handle(self, ws, message: bytes | str, reader) -> None:
        if isinstance(message, str) or not message:
            self.ignored += 1
            return
        self.last_received = time.monotonic()
        kind, payload = message[0], message[1:]
        if kind == HANDSHAKE:
            self._handshake(ws)
        elif kind == AUDIO:
            self._handshake(ws)  # a server that skips the handshake has a slot all the same
            try:
                pcm = reader.append_bytes(payload)
            except ValueError as e:
                self._fail(
                    f"the server sent audio that cannot be decoded ({e}): is "
                    f"{_where(self.url)} Kyutai's Moshi server?"
                )
                return
            if pcm.size:
                self.playback.push(np.asarray(pcm, np.float32).reshape(-1, 1))
                self.received += pcm.size
        elif kind == TEXT:
            piece = payload.decode("utf-8", errors="replace")
            self.text.append((self.received, time.monotonic(), piece))
        elif kind == ERROR:
            text = payload.decode("utf-8", errors="replace").strip() or "no details"
            self._fail(f"The server reported an error: {text}. {_AGAIN}")
        else:
            self.ignored += 1

    def _handshake(self, ws) -> None:
        if not self.ready.is_set():
            self.ready.set()
            self.changed.set()
            try:
                ws.ping()  # a first round-trip measure, before the keepalive's
            except Exception:
                pass

    def _describe_close(self, closed: Exception) -> str:
        from websockets.exceptions import ConnectionClosedOK

        sent, rcvd = getattr(closed, "sent", None), getattr(closed, "rcvd", None)
        if sent is not None and "keepalive ping timeout" in (sent.reason or ""):
            return (
                f"The server stopped answering (no reply within {self.options.ping_timeout:g} s): "
                f"the network or the server stalled. {_AGAIN}"
            )
        before = "" if self.ready.is_set() else " before the conversation started"
        if isinstance(closed, ConnectionClosedOK) or rcvd is not None:
            why = f" ({rcvd.reason})" if rcvd is not None and rcvd.reason else ""
            return f"The server closed the connection{before}{why}. {_AGAIN}"
        return (
            f"The connection to the server was lost{before} (the server stopped, or the network "
            f"dropped). {_AGAIN}"
        )

    # --- the sender thread ---------------------------------------------------------------------

    def _send(self, ws, writer) -> None:
        while not self.closing.is_set():
            try:
                pcm = self.outbox.get(timeout=0.2)
            except queue.Empty:
                continue
            data = writer.append_pcm(pcm)
            if len(data):
                try:
                    ws.send(bytes([AUDIO]) + data)
                except Exception:
                    return  # the receiver reports the closed connection


def describe_connect_error(url: str, error: Exception, open_timeout: float) -> str:
    """One sentence for a failure to open the WebSocket at `url`."""
    from websockets.exceptions import InvalidHandshake, InvalidStatus, InvalidURI

    parts = urlsplit(url)
    host = parts.hostname or ""
    address = f"{host}:{parts.port or (443 if parts.scheme == 'wss' else 80)}"
    where = _where(url)
    if isinstance(error, InvalidStatus):
        response = error.response
        status = f"HTTP {response.status_code} {response.reason_phrase}".strip()
        if response.status_code == 404:
            return (
                f"{where} was not found ({status}): check the path; Kyutai's server listens at "
                f"{DEFAULT_PATH}."
            )
        if response.status_code in (429, 503):
            return f"The server at {where} is busy ({status}): try again later."
        return f"The server at {where} refused the connection ({status})."
    if isinstance(error, ssl.SSLCertVerificationError):
        return (
            f"TLS error: the certificate of {host} cannot be verified ({error.verify_message}); "
            "for a self-signed certificate, point SSL_CERT_FILE at it."
        )
    if isinstance(error, ssl.SSLError):
        return (
            f"TLS error talking to {address} ({error.reason or error}): if the server was "
            "started without --ssl, use ws:// instead of wss://."
        )
    if isinstance(error, ConnectionRefusedError):
        return (
            f"Cannot connect to {address}: connection refused. Is the server running there? "
            f"(moshi.server listens on localhost:{DEFAULT_PORT} unless started with --host "
            "and --port.)"
        )
    if isinstance(error, socket.gaierror):
        return f"Cannot find the server {host!r} ({error.strerror}): check the address."
    if isinstance(error, TimeoutError):
        return (
            f"No answer from {address} within {open_timeout:g} s: check the address, the port "
            "and the network."
        )
    if isinstance(error, InvalidURI):
        return f"not a server address: {where} ({error})."
    if isinstance(error, InvalidHandshake):
        return (
            f"{address} did not answer as a WebSocket server ({error}): check the address; if "
            "the server was started with --ssl, use wss://."
        )
    if isinstance(error, OSError):
        return f"Cannot connect to {address}: {error.strerror or error}."
    return f"Cannot connect to {where}: {type(error).__name__}: {error}"
