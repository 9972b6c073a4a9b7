"""Test-wide setup, run before any test module (and so before Qt or huggingface_hub) is imported.

- Qt draws offscreen: no display is needed.
- Hugging Face's cache, Qt's settings (QSettings) and app data go to one temporary folder per test
  session, so no test reads or writes the user's real cache or settings, and the hub is offline:
  a test that tries to download fails at once instead of reaching the network.
"""

import os
import shutil
import tempfile

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

_SESSION_HOME = tempfile.mkdtemp(prefix="moshi-desktop-tests-")
os.environ["HF_HOME"] = os.path.join(_SESSION_HOME, "huggingface")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["XDG_CONFIG_HOME"] = os.path.join(_SESSION_HOME, "config")
os.environ["XDG_DATA_HOME"] = os.path.join(_SESSION_HOME, "data")


def pytest_unconfigure(config: object) -> None:
    shutil.rmtree(_SESSION_HOME, ignore_errors=True)


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory):
    """A tiny random Moshi in Kyutai's folder layout (fused attention keys, as released)."""
    from model.tiny import write_tiny_checkpoint

    return write_tiny_checkpoint(tmp_path_factory.mktemp("tiny-moshi"), layout="fused")
