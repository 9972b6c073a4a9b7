"""Test-wide setup, run before any test module (and so before Qt or huggingface_hub) is imported.

- Qt draws offscreen: no display is needed.
- Hugging Face's cache, Qt's settings (QSettings) and app data go to one temporary folder per test
  session, so no test reads or writes the user's real cache or settings, and the hub is offline:
  a test that tries to download fails at once instead of reaching the network.
"""

import hashlib
import http.server
import os
import re
import shutil
import tempfile
import threading
from urllib.parse import unquote

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
# A fixed thread count (model/cpu/threads.py follows OMP_NUM_THREADS where it is set): a run's
# numbers do not depend on what else the machine is doing, so two runs can be compared exactly.
os.environ.setdefault("OMP_NUM_THREADS", str(len(os.sched_getaffinity(0))))

_SESSION_HOME = tempfile.mkdtemp(prefix="moshi-desktop-tests-")
os.environ["HF_HOME"] = os.path.join(_SESSION_HOME, "huggingface")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["XDG_CONFIG_HOME"] = os.path.join(_SESSION_HOME, "config")
os.environ["XDG_DATA_HOME"] = os.path.join(_SESSION_HOME, "data")
os.environ["XDG_STATE_HOME"] = os.path.join(_SESSION_HOME, "state")  # the log (app/logs.py)


def pytest_unconfigure(config: object) -> None:
    shutil.rmtree(_SESSION_HOME, ignore_errors=True)


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def fork_voice_pt(tmp_path_factory: pytest.TempPathFactory):
    """voice_b.pt, the voice prompt NVIDIA's PersonaPlex fork saved for a voice recording
    (tests/model/data/personaplex/record.py). Its tensors are kept in the repository as JSON
    (voice_b.json: dtype, shape and values, exact), not as a pickle; torch.save writes them here
    as the fork's .pt."""
    import json

    import torch

    data = os.path.join(os.path.dirname(__file__), "model", "data", "personaplex", "voice_b.json")
    with open(data, encoding="utf-8") as f:
        entries = json.load(f)
    tensors = {
        key: torch.tensor(e["values"], dtype=getattr(torch, e["dtype"])).reshape(e["shape"])
        for key, e in entries.items()
    }
    path = tmp_path_factory.mktemp("voice") / "voice_b.pt"
    torch.save(tensors, path)
    return path


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory):
    """A tiny random Moshi in Kyutai's folder layout (fused attention keys, as released)."""
    from model.tiny import write_tiny_checkpoint

    return write_tiny_checkpoint(tmp_path_factory.mktemp("tiny-moshi"), layout="fused")


class _FakeHubHandler(http.server.BaseHTTPRequestHandler):
    """Answers huggingface_hub's file requests: /{owner}/{repo}/resolve/{revision}/{path}."""

    def do_HEAD(self) -> None:
        self._serve(with_body=False)

    def do_GET(self) -> None:
        self._serve(with_body=True)

    def _serve(self, with_body: bool) -> None:
        hub = self.server
        match = re.match(r"^/([^/]+/[^/]+)/resolve/([^/]+)/(.+)$", unquote(self.path))
        folder = hub.repos.get(match.group(1)) if match else None
        if folder is None:
            return self._error("RepoNotFound")
        if match.group(1) in hub.gated:
            return self._error("GatedRepo")
        path = folder / match.group(3)
        if not path.is_file():
            return self._error("EntryNotFound")
        data = path.read_bytes()
        span = re.match(r"bytes=(\d+)-(\d*)", self.headers.get("Range", "bytes=0-"))
        start, end = int(span.group(1)), int(span.group(2)) if span.group(2) else None
        hub.requests.append((self.command, match.group(3), start))
        hub.ranges.append((self.command, match.group(3), start, end))
        if end is not None:  # a part only, as huggingface_hub asks for a safetensors header
            data = data[: end + 1]
        self.send_response(206 if start or end is not None else 200)
        self.send_header("X-Repo-Commit", "0123456789abcdef0123456789abcdef01234567")
        self.send_header("ETag", '"' + hashlib.sha256(data).hexdigest() + '"')
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(len(data) - start))
        if start or end is not None:
            total = path.stat().st_size
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{total}")
        self.end_headers()
        if with_body:
            for i in range(start, len(data), 65536):  # in pieces, as a real server streams
                self.wfile.write(data[i : i + 65536])

    def _error(self, code: str) -> None:
        self.send_response(403 if code == "GatedRepo" else 404)
        self.send_header("X-Error-Code", code)
        if code == "EntryNotFound":  # the hub names the commit it looked in
            self.send_header("X-Repo-Commit", "0123456789abcdef0123456789abcdef01234567")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def fake_hub(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory):
    """A Hugging Face hub on 127.0.0.1 serving `hub.repos` ({repo id: folder}), online mode on,
    and an empty cache of its own. `hub.requests` records (method, file, first byte), and
    `hub.ranges` (method, file, first byte, last byte or None); the repositories in `hub.gated`
    answer as gated ones do to a user without access. `hub.use_endpoint(url)` points
    huggingface_hub elsewhere."""
    from huggingface_hub import constants

    hub = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _FakeHubHandler)
    hub.repos, hub.requests, hub.ranges, hub.gated = {}, [], [], set()
    # a short poll: shutdown() waits for it, at the end of every test that uses the hub
    thread = threading.Thread(target=hub.serve_forever, args=(0.02,), daemon=True)
    thread.start()

    def use_endpoint(endpoint: str) -> None:
        """Point huggingface_hub at `endpoint` for this test."""
        monkeypatch.setattr(constants, "ENDPOINT", endpoint)
        monkeypatch.setattr(
            constants,
            "HUGGINGFACE_CO_URL_TEMPLATE",
            endpoint + "/{repo_id}/resolve/{revision}/{filename}",
        )

    hub.use_endpoint = use_endpoint
    use_endpoint(f"http://127.0.0.1:{hub.server_address[1]}")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    cache = tmp_path_factory.mktemp("hf-cache")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HUGGINGFACE_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 65536)
    hub.cache = cache
    yield hub
    hub.shutdown()
    hub.server_close()


@pytest.fixture(scope="module")
def one_thread():
    """For modules of tiny models: one thread runs them faster than two, and far faster (20x
    here) when other processes share the CPU and a second thread has to wait for its turn."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
