"""A conversation through Kyutai's own server: `moshi.server` from the `moshi` package, started by the
test on 127.0.0.1 with a tiny random checkpoint on the CPU, and `moshi-desktop chat --server`.

The server's warm-up calls `torch.cuda.synchronize()` even on the CPU, which fails without CUDA: the
server's process replaces it with a no-op before it imports `moshi.server` (which runs its `main()`
on import). The server's loader resolves `mimi_config_name` in config.json against the Hugging Face
hub unless it is a `file://` path, so the server gets a copy of config.json that says so.
"""

from __future__ import annotations

import importlib.util
import json
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile

from app.cli import main

pytestmark = pytest.mark.slow

_SERVE = """
import sys
import torch
torch.cuda.synchronize = lambda *args, **kwargs: None  # the warm-up calls it even on the CPU
sys.argv = ["moshi.server", *sys.argv[1:]]
import moshi.server  # runs the server
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def moshi_server(tiny_checkpoint, tmp_path_factory):
    """The URL of Kyutai's server running the tiny checkpoint."""
    for module in ("moshi", "aiohttp", "sphn"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"needs {module} (pip install -e '.[test]' and --no-deps moshi==0.2.13)")
    folder = tmp_path_factory.mktemp("moshi-server")
    config = json.loads((tiny_checkpoint / "config.json").read_text())
    config["mimi_config_name"] = "file://" + str(tiny_checkpoint / config["mimi_config_name"])
    (folder / "config.json").write_text(json.dumps(config))
    port = _free_port()
    log = (folder / "server.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-c", _SERVE, "--host", "127.0.0.1", "--port", str(port)]
        + ["--static", "none", "--device", "cpu", "--config-path", str(folder / "config.json")]
        + ["--moshi-weight", str(tiny_checkpoint / "model.safetensors")]
        + ["--mimi-weight", str(tiny_checkpoint / "tokenizer-e351c8d8-checkpoint125.safetensors")]
        + ["--tokenizer", str(tiny_checkpoint / "tokenizer_spm_32k_3.model")],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, (
                "moshi.server stopped:\n" + (folder / "server.log").read_text()
            )
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "moshi.server did not start within 120 s"
                time.sleep(0.2)
        yield f"ws://127.0.0.1:{port}/api/chat"
    finally:
        server.kill()  # it keeps nothing; a graceful stop takes aiohttp seconds
        server.wait()
        log.close()


def test_chat_through_kyutais_server(moshi_server, tmp_path, capsys):
    seconds = 2.0
    t = np.arange(int(seconds * 24000)) / 24000
    voice = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    soundfile.write(tmp_path / "in.wav", voice, 24000)
    exports = [tmp_path / f"conversation.{kind}" for kind in ("json", "txt", "wav")]
    status = main(
        ["chat", "--server", moshi_server, "--input-file", str(tmp_path / "in.wav")]
        + ["--output-file", str(tmp_path / "moshi.wav"), "--trailing-silence", "1"]
        + ["--export", *map(str, exports)]
    )
    captured = capsys.readouterr()
    assert status == 0, captured.err
    assert f"Connected to {moshi_server}." in captured.err

    frames = 25 + 13  # ceil(2 s / 80 ms) + ceil(1 s / 80 ms): the file, then the silence
    stereo, rate = soundfile.read(exports[2])
    assert rate == 24000 and stereo.shape == (frames * 1920, 2)
    assert np.allclose(stereo[: len(voice), 0], voice, atol=1e-4)  # left: the user, in time
    moshi, _ = soundfile.read(tmp_path / "moshi.wav")
    assert np.abs(moshi).max() > 0.01  # Moshi's voice came back through Opus
    assert np.abs(stereo[:, 1]).max() > 0.01

    record = json.loads(exports[0].read_text())
    text = "".join(piece["text"] for piece in record["pieces"])
    assert text.strip() and text.strip() in captured.out.replace("\n", "")
    assert record["model"] == moshi_server
    assert exports[1].read_text().strip()
