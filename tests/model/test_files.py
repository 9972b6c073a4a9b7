"""model/files.py: the model's facts without torch: repository ids, headers, and the file names
config.json gives (which must stay in the model's folder). The catalog: test_catalog.py."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from model.config import MIMI_NAME, MOSHI_NAME, TOKENIZER_NAME
from model.files import (
    CheckpointError,
    dtype_name,
    format_bytes,
    is_repo_id,
    read_header,
    resolve_folder,
)

ROOT = Path(__file__).resolve().parents[2]


def test_the_facts_import_without_torch():
    """The window and the command line read these before any model runs: no torch."""
    code = (
        "import sys, model.files, model.config, model.hub, model.catalog, model.family; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'safetensors')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        ("kyutai/moshiko-pytorch-bf16", True),
        ("a/b", True),
        ("owner_1/name.v2", True),
        ("kyutai", False),
        ("kyutai/", False),
        ("/moshi", False),
        ("a/b/c", False),
        ("a b/c", False),
        ("-a/b", False),
        ("a/b.", False),
        ("a--b/c", False),
        ("a/b..c", False),
        ("a/" + "x" * 97, False),
    ],
)
def test_is_repo_id(text: str, ok: bool) -> None:
    assert is_repo_id(text) is ok


def test_a_local_folder_named_like_a_repository_is_a_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "kyutai" / "moshi").mkdir(parents=True)
    assert not is_repo_id("kyutai/moshi") and is_repo_id("kyutai/other")


def _safetensors(path: Path, header: dict, data: bytes) -> Path:
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)
    return path


def test_a_header_is_read_without_the_data(tmp_path):
    path = _safetensors(
        tmp_path / "w.safetensors",
        {"a": {"dtype": "BF16", "shape": [2, 3], "data_offsets": [0, 12]}, "__metadata__": {}},
        bytes(12),
    )
    (info,) = read_header(path).values()
    assert (info.dtype, info.shape, info.numel, dtype_name(info.dtype)) == (
        "BF16",
        (2, 3),
        6,
        "bfloat16",
    )


def test_a_truncated_file_and_a_wrong_size_are_refused(tmp_path):
    entry = {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}
    with pytest.raises(CheckpointError, match="is truncated"):
        read_header(_safetensors(tmp_path / "t.safetensors", {"a": entry}, bytes(8)))
    entry = {"dtype": "F32", "shape": [4], "data_offsets": [0, 8]}
    with pytest.raises(CheckpointError, match="8 bytes for 4 values of float32"):
        read_header(_safetensors(tmp_path / "s.safetensors", {"a": entry}, bytes(8)))


@pytest.mark.parametrize(
    ("size", "text"), [(15_400_000_000, "15.4 GB"), (2_500_000, "2.5 MB"), (999, "999 B")]
)
def test_sizes_read_as_the_model_cards_write_them(size, text):
    assert format_bytes(size) == text


# --- File names in config.json stay in the model's folder ------------------------------------------


def _folder_naming(folder: Path, **names: str) -> Path:
    """A model folder whose files are empty and whose config.json gives `names`."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in (MOSHI_NAME, MIMI_NAME, TOKENIZER_NAME):
        (folder / name).write_bytes(b"")
    (folder / "config.json").write_text(json.dumps(names))
    return folder


@pytest.mark.parametrize(
    "name",
    [
        "file:///dev/zero",
        "/dev/zero",
        "../outside.model",
        "sub/../../outside.model",
        "..\\outside.model",
        "C:\\outside.model",
        "\\\\server\\share\\outside.model",
    ],
)
def test_a_name_outside_the_folder_is_refused(tmp_path, name):
    (tmp_path / "outside.model").write_bytes(b"")
    folder = _folder_naming(tmp_path / "model", tokenizer_name=name)
    with pytest.raises(CheckpointError) as err:
        resolve_folder(folder)
    assert str(err.value) == (
        f"config.json in {folder} names tokenizer_name = {name!r}, which is outside the "
        "model's folder: file names must stay inside it"
    )


def test_a_folder_linked_to_outside_is_refused(tmp_path):
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "tok.model").write_bytes(b"")
    folder = _folder_naming(tmp_path / "model", tokenizer_name="linked/tok.model")
    (folder / "linked").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    with pytest.raises(CheckpointError, match="tokenizer_name = 'linked/tok.model', which is out"):
        resolve_folder(folder)


def test_files_linked_as_in_a_hugging_face_snapshot_are_used(tmp_path):
    """huggingface_hub's cache links each file of snapshots/<commit>/ to ../../blobs/<hash>:
    the folder `download` names may be given to --model."""
    blobs, snapshot = tmp_path / "blobs", tmp_path / "snapshots" / "0123"
    blobs.mkdir()
    snapshot.mkdir(parents=True)
    for i, name in enumerate((MOSHI_NAME, MIMI_NAME, TOKENIZER_NAME, "sub/tok.model")):
        (blobs / f"blob{i}").write_bytes(b"")
        (snapshot / name).parent.mkdir(exist_ok=True)
        (snapshot / name).symlink_to(blobs / f"blob{i}")
    (snapshot / "config.json").write_text(json.dumps({"tokenizer_name": "sub/./tok.model"}))
    files = resolve_folder(snapshot)
    assert files.tokenizer == snapshot / "sub/tok.model" and files.tokenizer.is_file()
    assert files.lm_weights.resolve() == blobs / "blob0"
