"""model/family.py: the rest of the Moshi family is refused before any weights are downloaded, by
its config.json (recorded in data/family/) or, where there is none, by its weights' header, with
one line that names it. Local folders, and repositories on a fake hub (no network)."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import pytest

from model.config import MIMI_NAME, MOSHI_NAME, TOKENIZER_NAME, CheckpointConfig, ConfigError
from model.family import INSTEAD, config_member, weights_member
from model.files import CheckpointError, resolve_folder
from model.hub import locate_model

DATA = Path(__file__).parent / "data" / "family"

# recorded config.json -> (repository it stands for, name in the message, how it was told)
CONFIGS = {
    "hibiki-2b-pytorch-bf16.json": ("kyutai/hibiki-2b-pytorch-bf16", "Hibiki", "model_type"),
    "hibiki-zero-3b-pytorch-bf16.json": (
        "kyutai/hibiki-zero-3b-pytorch-bf16",
        "Hibiki-Zero",
        "model_type",
    ),
    "tts-1.6b-en_fr.json": ("kyutai/tts-1.6b-en_fr", "Kyutai TTS", "model_type"),
    "moshirag.json": ("kyutai/moshirag-example", "MoshiRAG", "retrieval server"),
}
PERSONAPLEX_CONFIG = "personaplex-7b-v1.json"  # recorded too; PersonaPlex runs (model.persona)

VISION_KEYS = (
    "image_prefix.encoder.patch_embed.weight",
    "llm.transformer.layers.0.cross_attention.mha.in_proj_weight",
    "llm.text_emb.weight",
)


def _write_safetensors(path: Path, names: tuple[str, ...] | list[str], pad: int = 0) -> Path:
    """A safetensors file holding one float32 zero per name, and `pad` bytes of a last tensor
    (so that the header is a small part of the file)."""
    header: dict = {}
    offset = 0
    for name in names:
        header[name] = {"dtype": "F32", "shape": [1], "data_offsets": [offset, offset + 4]}
        offset += 4
    if pad:
        header["padding"] = {"dtype": "U8", "shape": [pad], "data_offsets": [offset, offset + pad]}
        offset += pad
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + bytes(offset))
    return path


def _model_folder(folder: Path, config: dict | None, weights: list[str] | tuple[str, ...]) -> Path:
    """Kyutai's layout: config.json (unless None), LM weights with tensors `weights` (with 200 kB
    more), and placeholder Mimi and tokenizer files."""
    folder.mkdir(parents=True)
    if config is not None:
        (folder / "config.json").write_text(json.dumps(config))
    _write_safetensors(folder / MOSHI_NAME, weights, pad=200_000)
    (folder / MIMI_NAME).write_bytes(b"mimi")
    (folder / TOKENIZER_NAME).write_bytes(b"tokenizer")
    return folder


def _personaplex_weights(codebooks: int) -> list[str]:
    return [f"depformer_in.{i}.weight" for i in range(codebooks)] + [
        f"linears.{i}.weight" for i in range(codebooks)
    ]


def _weights_requested(hub) -> list[tuple]:
    """The fake hub's requests for any .safetensors file."""
    return [r for r in hub.ranges if r[1].endswith(".safetensors")]


# --- By config.json --------------------------------------------------------------------------------


@pytest.mark.parametrize("recorded", CONFIGS)
def test_a_local_folder_of_another_member_is_refused_by_its_config(tmp_path, recorded):
    repo, name, evidence = CONFIGS[recorded]
    config = json.loads((DATA / recorded).read_text())
    folder = _model_folder(tmp_path / "m", config, _personaplex_weights(8))
    with pytest.raises(CheckpointError) as err:
        resolve_folder(folder)
    message = str(err.value)
    assert message.startswith(f"{folder / 'config.json'}: this is {name}, ")
    assert evidence in message and message.endswith(INSTEAD) and "\n" not in message


@pytest.mark.parametrize("recorded", CONFIGS)
def test_a_repository_of_another_member_is_refused_before_its_weights_are_fetched(
    fake_hub, tmp_path, recorded
):
    repo, name, _ = CONFIGS[recorded]
    config = json.loads((DATA / recorded).read_text())
    fake_hub.repos[repo] = _model_folder(tmp_path / "repo", config, _personaplex_weights(8))
    with pytest.raises(CheckpointError) as err:
        locate_model(repo)
    assert str(err.value).startswith(f"config.json of {repo}: this is {name}, ")
    assert {file for _, file, _ in fake_hub.requests} == {"config.json"}
    assert _weights_requested(fake_hub) == []
    # offline, config.json comes from the cache: the same answer
    with pytest.raises(CheckpointError, match=f"this is {name}, "):
        locate_model(repo, offline=True)


def test_hibiki_zero_is_told_from_hibiki_by_its_attention():
    hibiki = json.loads((DATA / "hibiki-2b-pytorch-bf16.json").read_text())
    assert config_member(hibiki)[0].name == "Hibiki"
    assert config_member({**hibiki, "kv_repeat": 2})[0].name == "Hibiki-Zero"
    assert config_member({**hibiki, "positional_embedding": "rope_concat"})[0].name == "Hibiki-Zero"


def test_moshi_and_other_conditioners_are_left_to_the_config_checks():
    assert config_member({}) is None and config_member({"model_type": "moshi"}) is None
    assert config_member([1, 2]) is None
    lut = {"cfg": {"type": "lut", "lut": {"n_bins": 4, "dim": 16}}}
    assert config_member({"conditioners": lut}) is None  # not MoshiRAG: config.py refuses it
    with pytest.raises(ConfigError, match="conditioners = .* is not supported"):
        CheckpointConfig.from_dict({"conditioners": lut})


def test_the_config_checks_name_the_member_too():
    with pytest.raises(ConfigError, match="^this is Kyutai TTS, "):
        CheckpointConfig(model_type="tts")
    with pytest.raises(ConfigError, match="^config.json: this is Kyutai STT in the transformers"):
        CheckpointConfig.from_dict({"model_type": "kyutai_speech_to_text"})
    with pytest.raises(ConfigError, match="model_type 'other' is not supported"):
        CheckpointConfig.from_dict({"model_type": "other"})


# --- By the weights' header ------------------------------------------------------------------------


def test_moshivis_has_no_config_and_is_told_by_its_vision_weights(tmp_path):
    folder = _model_folder(tmp_path / "vis", None, VISION_KEYS)
    with pytest.raises(CheckpointError) as err:
        resolve_folder(folder)
    assert str(err.value) == (
        f"{folder / MOSHI_NAME}: this is MoshiVis, Kyutai's Moshi that talks about images (its "
        "weights hold vision tensors, such as image_prefix.encoder.patch_embed.weight), which "
        f"this app does not run: {INSTEAD}"
    )


def test_a_moshivis_repository_is_refused_after_reading_only_its_header(fake_hub, tmp_path):
    repo = "kyutai/moshika-vis-pytorch-bf16"
    folder = _model_folder(tmp_path / "vis", None, VISION_KEYS)
    fake_hub.repos[repo] = folder
    with pytest.raises(CheckpointError) as err:
        locate_model(repo)
    assert str(err.value).startswith(f"{MOSHI_NAME} of {repo}: this is MoshiVis, ")
    size = (folder / MOSHI_NAME).stat().st_size
    asked = _weights_requested(fake_hub)
    assert asked and all(end is not None and end < size - 100_000 for _, _, _, end in asked)
    assert not list(fake_hub.cache.rglob("*.safetensors"))  # nothing of it was downloaded


def test_personaplex_weights_without_a_config_are_told_by_their_depth_transformer(tmp_path):
    folder = _model_folder(tmp_path / "pp", {}, _personaplex_weights(16))
    config = resolve_folder(folder).config
    assert config.model_type == "personaplex" and config.lm.dep_q == 16


def test_personaplex_is_told_by_its_config_and_loads_as_such(tmp_path):
    config = json.loads((DATA / PERSONAPLEX_CONFIG).read_text())
    folder = _model_folder(tmp_path / "pp", config, _personaplex_weights(16))
    files = resolve_folder(folder)
    assert files.config.model_type == "personaplex"
    assert files.config.lm.dep_q == 16 and files.config.lm.n_q == 16
    assert files.mimi_config.num_codebooks == 8
    assert weights_member(_personaplex_weights(16))[0].name == "PersonaPlex"


def test_moshi_weights_pass_the_header_check(tmp_path):
    assert weights_member(_personaplex_weights(8)) is None
    assert weights_member(["depformer_in.15.weight"], dep_q=16) is None  # as its config says
    folder = _model_folder(tmp_path / "moshi", None, _personaplex_weights(8))
    assert resolve_folder(folder).lm_weights == folder / MOSHI_NAME


def test_a_repository_with_a_full_config_is_not_asked_for_its_header(fake_hub, tiny_checkpoint):
    fake_hub.repos["kyutai/tiny"] = tiny_checkpoint
    locate_model("kyutai/tiny")
    assert all(end is None for _, _, _, end in _weights_requested(fake_hub))


def test_a_cached_moshivis_is_refused_offline_from_the_cached_header(fake_hub, tmp_path):
    """A repository downloaded by another tool: its cached file's header says what it is."""
    from huggingface_hub import hf_hub_download

    repo = "kyutai/moshika-vis-pytorch-bf16"
    fake_hub.repos[repo] = _model_folder(tmp_path / "vis", None, VISION_KEYS)
    for name in ("config.json", MOSHI_NAME):
        try:
            hf_hub_download(repo, name)
        except Exception:  # config.json: there is none, and the cache remembers it
            pass
    shutil.rmtree(tmp_path / "vis")
    with pytest.raises(CheckpointError, match="this is MoshiVis"):
        locate_model(repo, offline=True)


def test_kyutai_stt_as_published_is_read_as_speech_to_text():
    """kyutai/stt-1b-en_fr's config.json (recorded): no depth transformer, 32 codebooks in, the
    voice-activity heads, its delay and silence prefix; it runs (model.stt)."""
    from model.config import STT_MODEL_TYPE, SttConfig

    config = CheckpointConfig.from_dict(json.loads((DATA / "stt-1b-en_fr.json").read_text()))
    assert config.model_type == STT_MODEL_TYPE
    assert (config.lm.dep_q, config.lm.n_q, config.lm.text_card) == (0, 32, 8000)
    assert (config.lm.extra_heads_num_heads, config.lm.extra_heads_dim) == (4, 6)
    assert config.stt == SttConfig(audio_delay_seconds=0.5, audio_silence_prefix_seconds=0.0)
    assert config.mimi_name == "mimi-pytorch-e351c8d8@125.safetensors"
    with pytest.raises(ConfigError, match="dep_q = 8 must be 0 for speech-to-text"):
        CheckpointConfig.from_dict({"model_type": "stt", "dep_q": 8})
