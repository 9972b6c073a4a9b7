"""model/inspect.py: a model's files checked against its architecture from the headers alone.

The full-size cases use Moshi 7B's real layout written as SPARSE files: a genuine safetensors
header with every tensor's name, shape and dtype, then the file truncated to the length the header
gives, so the 15 GB of data cost no disk and read as zeros. The text tokenizer for them is a real
SentencePiece model with 32000 pieces: a tiny trained one with 31800 plain pieces appended to its
serialized proto (training a 32000-piece model needs a large corpus and minutes).
"""

from __future__ import annotations

import json
import shutil
import struct
import time
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from model.checkpoint import fuse_attention
from model.config import MIMI_NAME, MOSHI_NAME, TOKENIZER_NAME, LMConfig, MimiConfig
from model.files import FAIL, OK, WARN, read_header, resolve_folder
from model.inspect import inspect_model, linear_weight_names
from model.lm import LM
from model.mimi import Mimi
from model.text import TextTokenizer
from model.tiny import train_tokenizer, write_tiny_checkpoint

MOSHI_7B_PARAMETERS = 7_687_729_152  # moshi-facts §1.6, counted on the original's model
Q8_NAME = "model.q8.safetensors"
_CODES = {torch.bfloat16: "BF16", torch.float32: "F32", torch.int8: "I8", torch.int32: "I32"}
_SIZES = {"BF16": 2, "F16": 2, "F32": 4, "I8": 1, "I32": 4}

# --- Writing sparse checkpoints -----------------------------------------------------------------


def write_sparse_safetensors(path: Path, tensors: dict[str, tuple[str, tuple[int, ...]]]) -> int:
    """A safetensors file holding `tensors` ({name: (dtype code, shape)}) whose data is a hole.

    Returns the file's length. Nothing but the header is written: the data reads as zeros and
    takes no disk."""
    header, offset = {}, 0
    for name, (code, shape) in tensors.items():
        size = _SIZES[code]
        for d in shape:
            size *= d
        header[name] = {
            "dtype": code,
            "shape": list(shape),
            "data_offsets": [offset, offset + size],
        }
        offset += size
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # safetensors pads its header to 8 bytes
    total = 8 + len(raw) + offset
    with path.open("wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        f.truncate(total)
    return total


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def write_tokenizer(path: Path, vocab_size: int) -> None:
    """A valid SentencePiece model with exactly `vocab_size` pieces, in milliseconds."""
    train_tokenizer(path, 200)
    extra = bytearray()
    for i in range(200, vocab_size):
        piece = f"\u2581extra{i}".encode()
        # ModelProto.pieces (field 1): SentencePiece{piece (1): string, score (2): float,
        # type (3): NORMAL}. Repeated fields may come anywhere in a message: they append.
        entry = b"\x0a" + _varint(len(piece)) + piece + b"\x15" + struct.pack("<f", -100.0)
        entry += b"\x18\x01"
        extra += b"\x0a" + _varint(len(entry)) + entry
    with path.open("ab") as f:
        f.write(extra)


def full_size_layout(
    layout: str = "fused", quantized: bool = False
) -> tuple[dict[str, tuple[str, tuple[int, ...]]], dict[str, tuple[str, tuple[int, ...]]]]:
    """Moshi 7B's LM (bf16, or q8) and Mimi (fp32) as {name: (dtype code, shape)}, built from
    our models on the meta device in Kyutai's on-disk naming (q8: always split attention keys,
    as Kyutai's export writes them)."""
    with torch.device("meta"):
        lm, mimi = LM(LMConfig()), Mimi(MimiConfig())
    lm_state, mimi_state = lm.state_dict(), mimi.state_dict()
    if layout == "fused":
        mimi_state = fuse_attention(mimi_state)
        if not quantized:
            lm_state = fuse_attention(lm_state)
    if quantized:  # what Kyutai's export writes: split names, int8 linears + float32 row scales
        linears = linear_weight_names(lm)
        lm_tensors = {}
        for name, t in lm_state.items():
            if name in linears:
                lm_tensors[name] = ("I8", tuple(t.shape))
                lm_tensors[name + "_scb"] = ("F32", (t.shape[0],))
            else:
                lm_tensors[name] = ("BF16", tuple(t.shape))
    else:
        lm_tensors = {k: ("BF16", tuple(v.shape)) for k, v in lm_state.items()}
    mimi_tensors = {k: ("F32", tuple(v.shape)) for k, v in mimi_state.items()}
    return lm_tensors, mimi_tensors


def write_full_size(
    folder: Path,
    layout: str = "fused",
    quantized: bool = False,
    lm_tensors: dict | None = None,
    mimi_tensors: dict | None = None,
) -> Path:
    """A sparse Moshi 7B folder: LM, Mimi, a 32000-piece tokenizer and, for q8, a config.json
    as Kyutai's export writes it."""
    folder.mkdir(parents=True, exist_ok=True)
    default_lm, default_mimi = full_size_layout(layout, quantized)
    moshi_name = Q8_NAME if quantized else MOSHI_NAME
    if quantized:
        config = {**LMConfig().__dict__, "quantize": True, "moshi_name": moshi_name}
        (folder / "config.json").write_text(json.dumps(config))
    write_sparse_safetensors(folder / moshi_name, lm_tensors or default_lm)
    write_sparse_safetensors(folder / MIMI_NAME, mimi_tensors or default_mimi)
    write_tokenizer(folder / TOKENIZER_NAME, 32000)
    return folder


@pytest.fixture(scope="module")
def moshi_7b(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_full_size(tmp_path_factory.mktemp("moshi-7b"))


def messages(report, level: str | None = None) -> str:
    return "\n".join(c.message for c in report.checks if level is None or c.level == level)


def _bytes_read() -> int | None:
    """Bytes this process has read through read() calls so far (Linux only)."""
    try:
        text = Path("/proc/self/io").read_text()
    except OSError:
        return None
    return int(next(line.split()[1] for line in text.splitlines() if line.startswith("rchar:")))


@pytest.fixture
def no_tensor_loading(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every way this code base loads tensor data fails the test."""
    import safetensors
    import safetensors.torch

    import model.checkpoint

    def refuse(*args, **kwargs):
        raise AssertionError("tensor data was loaded")

    monkeypatch.setattr(safetensors.torch, "load_file", refuse)
    monkeypatch.setattr(safetensors.torch, "load", refuse)
    monkeypatch.setattr(safetensors, "safe_open", refuse)
    monkeypatch.setattr(model.checkpoint, "read_safetensors", refuse)
    monkeypatch.setattr(model.checkpoint, "load_file", refuse)


# --- The helpers themselves ---------------------------------------------------------------------


def test_sparse_files_are_valid_safetensors_and_take_no_disk(moshi_7b: Path) -> None:
    path = moshi_7b / MOSHI_NAME
    assert path.stat().st_size > 15e9
    if hasattr(path.stat(), "st_blocks"):
        assert path.stat().st_blocks * 512 < 10e6  # a hole, not 15 GB of zeros
    with safe_open(str(path), "pt") as f:  # safetensors itself accepts the header
        keys = set(f.keys())
        assert len(keys) == 355  # moshi-facts §2.4: the released file's key count
        # Shapes from moshi-facts §2.4, not from our model:
        shape = f.get_slice("transformer.layers.0.self_attn.in_proj_weight").get_shape()
        assert shape == [12288, 4096]
        shape = f.get_slice("depformer.layers.5.self_attn.in_proj_weight").get_shape()
        assert shape == [24576, 1024]
        assert f.get_slice("text_emb.weight").get_shape() == [32001, 4096]
        assert f.get_slice("depformer.layers.0.gating.7.linear_in.weight").get_shape() == [
            5632,
            1024,
        ]
    assert TextTokenizer(moshi_7b / TOKENIZER_NAME).vocab_size == 32000


def test_read_header_agrees_with_safetensors(tiny_checkpoint: Path) -> None:
    path = tiny_checkpoint / MOSHI_NAME
    header = read_header(path)
    with safe_open(str(path), "pt") as f:
        assert set(header) == set(f.keys())
        for name in f.keys():
            sliced = f.get_slice(name)
            assert list(header[name].shape) == sliced.get_shape()
            assert header[name].dtype == sliced.get_dtype()


# --- Tiny checkpoints ---------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["fused", "split"])
def test_tiny_checkpoint_passes(layout: str, tiny_checkpoint: Path, tmp_path: Path) -> None:
    folder = (
        tiny_checkpoint if layout == "fused" else write_tiny_checkpoint(tmp_path, layout=layout)
    )
    if layout == "split":
        assert any("in_projs" in k for k in read_header(folder / MOSHI_NAME))
    report = inspect_model(resolve_folder(folder))
    assert report.ok, messages(report)
    assert [c.level for c in report.checks] == [OK] * len(report.checks)
    assert report.lm_parameters == LM(resolve_folder(folder).config.lm).parameter_count()
    assert "names and shapes match" in messages(report)
    assert "200 pieces" in messages(report)


def test_tokenizer_of_another_model_fails(tiny_checkpoint: Path, tmp_path: Path) -> None:
    folder = tmp_path / "m"
    shutil.copytree(tiny_checkpoint, folder)
    train_tokenizer(folder / TOKENIZER_NAME, 150)
    report = inspect_model(resolve_folder(folder))
    assert not report.ok
    assert "150 pieces, but the LM's text_card is 200" in messages(report, FAIL)


def test_truncated_and_garbage_files_fail(tiny_checkpoint: Path, tmp_path: Path) -> None:
    folder = tmp_path / "m"
    shutil.copytree(tiny_checkpoint, folder)
    lm = folder / MOSHI_NAME
    lm.write_bytes(lm.read_bytes()[:-1000])
    (folder / MIMI_NAME).write_bytes(b"<html>not found</html>")
    report = inspect_model(resolve_folder(folder))
    failed = messages(report, FAIL)
    assert f"{MOSHI_NAME} is truncated" in failed
    assert f"{MIMI_NAME} is not a safetensors file" in failed
    assert len([c for c in report.checks if c.level == FAIL]) == 2


def test_header_whose_byte_ranges_do_not_fit_the_shapes_fails(tmp_path: Path) -> None:
    from model.files import CheckpointError

    path = tmp_path / "bad.safetensors"
    raw = json.dumps({"w": {"dtype": "BF16", "shape": [2, 3], "data_offsets": [0, 10]}}).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + bytes(10))
    with pytest.raises(CheckpointError, match="w has 10 bytes for 6 values of bfloat16"):
        read_header(path)


# --- Full size, header only ---------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["fused", "split"])
def test_full_size_7b_checks_from_headers_in_seconds(
    layout: str, moshi_7b: Path, tmp_path: Path, no_tensor_loading: None
) -> None:
    folder = moshi_7b if layout == "fused" else write_full_size(tmp_path / "split", "split")
    files = resolve_folder(folder)
    before, start = _bytes_read(), time.perf_counter()
    report = inspect_model(files)
    elapsed = time.perf_counter() - start
    after = _bytes_read()

    assert report.ok, messages(report)
    assert report.lm_parameters == MOSHI_7B_PARAMETERS
    assert "LM: 7.69 B parameters" in messages(report)
    assert "bfloat16; names and shapes match" in messages(report)
    assert "32000 pieces" in messages(report)
    assert report.mimi_values == 96_151_393  # moshi-facts §1.6: 96.15 M with the codebooks
    assert elapsed < 10, f"{elapsed:.1f} s"
    if before is not None:
        assert after - before < 20e6  # headers and the tokenizer, never the 15 GB of data


def test_memory_estimate_matches_the_arithmetic(moshi_7b: Path) -> None:
    report = inspect_model(resolve_folder(moshi_7b))
    need = report.memory_needed(torch.bfloat16)
    assert need.lm_weights == MOSHI_7B_PARAMETERS * 2
    # moshi-facts §6: 32 layers x 2 x 3000 x 4096 x 2 B, plus the depth transformer's one frame
    assert need.kv_cache == 32 * 2 * 3000 * 4096 * 2 + 6 * 2 * 8 * 1024 * 2
    assert 0.38e9 < need.mimi < 0.41e9  # 96.15 M values + two 250-step caches, float32
    assert 18e9 < need.total < 20e9
    assert report.memory_needed(torch.float32).total > 1.9 * need.total


def test_one_wrong_shape_is_named_with_expected_and_found(tmp_path: Path) -> None:
    lm, mimi = full_size_layout()
    lm["transformer.layers.7.self_attn.out_proj.weight"] = ("BF16", (4096, 4095))
    mimi["decoder.model.14.conv.conv.weight"] = ("F32", (1, 64, 4))
    report = inspect_model(
        resolve_folder(write_full_size(tmp_path, lm_tensors=lm, mimi_tensors=mimi))
    )
    assert not report.ok
    failed = messages(report, FAIL)
    assert (
        "transformer.layers.7.self_attn.out_proj.weight: expected shape (4096, 4096), "
        "found (4096, 4095)" in failed
    )
    assert "decoder.model.14.conv.conv.weight: expected shape (1, 64, 3), found (1, 64, 4)" in (
        failed
    )


def test_missing_and_unexpected_tensors_are_named(tmp_path: Path) -> None:
    lm, mimi = full_size_layout()
    del lm["linears.3.weight"]
    lm["extra.weight"] = ("BF16", (2, 2))
    report = inspect_model(resolve_folder(write_full_size(tmp_path, lm_tensors=lm)))
    failed = messages(report, FAIL)
    assert "linears.3.weight: missing (expected shape (2048, 1024))" in failed
    assert "extra.weight: unexpected key" in failed


def test_wrong_dtypes_are_named(tmp_path: Path) -> None:
    lm, mimi = full_size_layout()
    lm["text_linear.weight"] = ("I32", lm["text_linear.weight"][1])
    mimi["quantizer.rvq_first.input_proj.weight"] = ("I8", (256, 512, 1))
    report = inspect_model(
        resolve_folder(write_full_size(tmp_path, lm_tensors=lm, mimi_tensors=mimi))
    )
    failed = messages(report, FAIL)
    assert "text_linear.weight: expected a float dtype, found int32" in failed
    assert "quantizer.rvq_first.input_proj.weight: expected float32, found int8" in failed


def test_lower_precision_mimi_and_float32_lm_warn(tmp_path: Path) -> None:
    lm, mimi = full_size_layout()
    lm = {k: ("F32", shape) for k, (_, shape) in lm.items()}
    mimi["encoder.model.0.conv.conv.weight"] = ("BF16", (64, 1, 7))
    report = inspect_model(
        resolve_folder(write_full_size(tmp_path, lm_tensors=lm, mimi_tensors=mimi))
    )
    assert report.ok, messages(report)
    warned = messages(report, WARN)
    assert "stored in float32" in warned
    assert "1 tensors are not float32 (e.g. encoder.model.0.conv.conv.weight, bfloat16)" in warned


# --- q8 -----------------------------------------------------------------------------------------


def _q8_files(folder: Path):
    """The q8 folder's files. Where model/config.py does not take `"quantize": true` yet, the
    flag is set on the parsed config instead, so the q8 checks are still exercised."""
    from model.files import CheckpointError

    try:
        return resolve_folder(folder)
    except CheckpointError as e:
        if "quantize" not in str(e):
            raise
    config_path = folder / "config.json"
    config = json.loads(config_path.read_text())
    del config["quantize"]
    config_path.write_text(json.dumps(config))
    files = resolve_folder(folder)
    files.config.quantize = True
    return files


def test_q8_layout_passes(tmp_path: Path, no_tensor_loading: None) -> None:
    report = inspect_model(_q8_files(write_full_size(tmp_path, quantized=True)))
    assert report.ok, messages(report)
    assert report.quantized
    assert f"{Q8_NAME}: " in messages(report, OK)
    assert "int8 linear weights with float32 scales, bfloat16" in messages(report, OK)
    assert report.lm_parameters == MOSHI_7B_PARAMETERS
    need = report.memory_needed(torch.bfloat16)
    assert 7.8e9 < need.lm_weights < 8.2e9  # moshi-facts §6: about 8 GB of weights


def test_q8_layout_problems_are_named(tmp_path: Path) -> None:
    lm, _ = full_size_layout(quantized=True)
    del lm["linears.0.weight_scb"]
    lm["text_linear.weight"] = ("BF16", lm["text_linear.weight"][1])
    lm["depformer_in.2.weight_scb"] = ("BF16", (1024,))
    lm["emb.0.weight"] = ("I8", lm["emb.0.weight"][1])
    report = inspect_model(_q8_files(write_full_size(tmp_path, quantized=True, lm_tensors=lm)))
    failed = messages(report, FAIL)
    assert "linears.0.weight_scb: missing (expected float32 scales of shape (2048,))" in failed
    assert "text_linear.weight: expected int8, found bfloat16" in failed
    assert "depformer_in.2.weight_scb: expected float32 of shape (1024,), found bfloat16" in failed
    assert "emb.0.weight: expected a float dtype, found int8" in failed


def test_q8_file_without_quantize_in_config_fails(tmp_path: Path) -> None:
    lm, _ = full_size_layout(quantized=True)
    report = inspect_model(resolve_folder(write_full_size(tmp_path, lm_tensors=lm)))
    assert 'this is a q8 checkpoint, but config.json does not say "quantize": true' in messages(
        report, FAIL
    )


@pytest.mark.parametrize(
    "kind, expected",
    [
        ("fused", "Kyutai's layout (fused attention keys)"),
        ("split", "Kyutai's layout (split attention keys)"),
        ("q8", "Kyutai's layout (split attention keys, q8: int8 linear weights)"),
        (
            "finetune",
            "Kyutai's layout (fused attention keys, a full fine-tune from moshi-finetune)",
        ),
        ("legacy", "Kyutai's layout (fused attention keys; Mimi with legacy codebook keys)"),
    ],
)
def test_the_format_is_read_from_the_headers(tmp_path, kind, expected) -> None:
    from safetensors.torch import load_file, save_file

    from model.inspect import describe_model

    folder = write_tiny_checkpoint(
        tmp_path, layout="split" if kind == "split" else None, quantized=kind == "q8"
    )
    if kind == "finetune":  # what moshi-finetune saves
        (folder / MOSHI_NAME).rename(folder / "consolidated.safetensors")
        config = json.loads((folder / "config.json").read_text())
        config["moshi_name"] = "consolidated.safetensors"
        (folder / "config.json").write_text(json.dumps(config))
    if kind == "legacy":  # Mimi files older than Kyutai's release name the codebooks so
        state = load_file(folder / MIMI_NAME)
        renamed = {
            k.replace("._codebook.embedding_sum", "._codebook.embed_sum").replace(
                "._codebook._initialized", "._codebook.inited"
            ): v
            for k, v in state.items()
        }
        save_file(renamed, folder / MIMI_NAME)
    assert describe_model(resolve_folder(folder)) == f"a Moshi of dim 32 and 2 layers, {expected}"
