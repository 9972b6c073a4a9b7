"""Settings: every key round-trips through an ini file, reads typed, and falls back to defaults."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PySide6.QtCore import QSettings

from app.engine.messages import SetSampling
from app.ui.settings import Key, Settings
from model.voices import DEFAULT_PERSONA

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def ini(tmp_path: Path, qapp) -> Path:
    return tmp_path / "settings.ini"


def open_settings(path: Path) -> Settings:
    return Settings(QSettings(str(path), QSettings.Format.IniFormat))


def reread(path: Path, tmp_path: Path) -> Settings:
    """The settings in `path` as a later run of the app reads them: parsed from the file's text
    (a copy at a new path, which this process's QSettings has not cached)."""
    copy = tmp_path / f"reread-{len(list(tmp_path.glob('reread-*')))}.ini"
    shutil.copy(path, copy)
    return open_settings(copy)


DEFAULTS = {
    Key.BACKEND: "local",
    Key.SERVER_URL: "ws://localhost:8998/api/chat",
    Key.TEXT_TEMPERATURE: 0.7,
    Key.AUDIO_TEMPERATURE: 0.8,
    Key.TEXT_TOP_K: 25,
    Key.AUDIO_TOP_K: 250,
    Key.SEED: None,
    Key.MODEL_SOURCE: "kyutai/moshiko-pytorch-bf16",
    Key.MODEL_REVISION: None,
    Key.LORA: None,
    Key.OFFLINE: False,
    Key.COMPUTE_DEVICE: "auto",
    Key.DTYPE: "auto",
    Key.THREADS: None,
    Key.INPUT_DEVICE: None,
    Key.OUTPUT_DEVICE: None,
    Key.HALF_DUPLEX: False,
    Key.VOICE: "NATF2",
    Key.PERSONA: DEFAULT_PERSONA,
    Key.ECHO_CANCELLATION: True,
    Key.NOISE_SUPPRESSION: "off",
    Key.WINDOW_GEOMETRY: None,
    Key.WINDOW_STATE: None,
    Key.LAST_EXPORT_FOLDER: None,
}


def other_values(tmp_path: Path) -> dict[Key, object]:
    """A value other than the default for every key."""
    return {
        Key.BACKEND: "remote",
        Key.SERVER_URL: "wss://moshi.example.org:443/api/chat?worker_auth_id=7",
        Key.TEXT_TEMPERATURE: 0.35,
        Key.AUDIO_TEMPERATURE: 1.5,
        Key.TEXT_TOP_K: 0,
        Key.AUDIO_TOP_K: 2048,
        Key.SEED: 42,
        Key.MODEL_SOURCE: "kyutai/moshika-pytorch-q8",
        Key.MODEL_REVISION: "v0.1",
        Key.LORA: str(tmp_path / "checkpoint_000500" / "consolidated"),
        Key.OFFLINE: True,
        Key.COMPUTE_DEVICE: "cuda",
        Key.DTYPE: "int8",
        Key.THREADS: 3,
        Key.INPUT_DEVICE: "USB Headset, Microphone",
        Key.OUTPUT_DEVICE: "Speakers (2)",
        Key.HALF_DUPLEX: True,
        Key.VOICE: str(tmp_path / "my voice.wav"),
        Key.PERSONA: "You enjoy having a good conversation.\nYou live in Lyon.",
        Key.ECHO_CANCELLATION: False,
        Key.NOISE_SUPPRESSION: "high",
        Key.WINDOW_GEOMETRY: b"\x01\xd9\xd0\xcb\x00\x03geometry\x00",
        Key.WINDOW_STATE: b"\x00\x00\x00\xffstate",
        Key.LAST_EXPORT_FOLDER: tmp_path,
    }


ATTRIBUTES = {
    Key.BACKEND: "backend",
    Key.SERVER_URL: "server_url",
    Key.TEXT_TEMPERATURE: "text_temperature",
    Key.AUDIO_TEMPERATURE: "audio_temperature",
    Key.TEXT_TOP_K: "text_top_k",
    Key.AUDIO_TOP_K: "audio_top_k",
    Key.SEED: "seed",
    Key.MODEL_SOURCE: "model_source",
    Key.MODEL_REVISION: "model_revision",
    Key.LORA: "lora",
    Key.OFFLINE: "offline",
    Key.COMPUTE_DEVICE: "compute_device",
    Key.DTYPE: "dtype",
    Key.THREADS: "threads",
    Key.INPUT_DEVICE: "input_device",
    Key.OUTPUT_DEVICE: "output_device",
    Key.HALF_DUPLEX: "half_duplex",
    Key.VOICE: "voice",
    Key.PERSONA: "persona",
    Key.ECHO_CANCELLATION: "echo_cancellation",
    Key.NOISE_SUPPRESSION: "noise_suppression",
    Key.WINDOW_GEOMETRY: "window_geometry",
    Key.WINDOW_STATE: "window_state",
    Key.LAST_EXPORT_FOLDER: "last_export_folder",
}


def test_the_tables_cover_every_key() -> None:
    assert set(DEFAULTS) == set(ATTRIBUTES) == set(Key)
    assert len({key.value for key in Key}) == len(Key)


def test_defaults_when_nothing_is_stored(ini: Path) -> None:
    settings = open_settings(ini)
    for key, default in DEFAULTS.items():
        assert settings.value(key) == default, key
        assert getattr(settings, ATTRIBUTES[key]) == default, key
        assert Settings.default(key) == default


@pytest.mark.parametrize("key", list(Key), ids=lambda key: key.value)
def test_every_key_round_trips_through_an_ini_file(key: Key, ini: Path, tmp_path: Path) -> None:
    value = other_values(tmp_path)[key]
    settings = open_settings(ini)
    setattr(settings, ATTRIBUTES[key], value)
    assert settings.value(key) == value
    settings.sync()
    read = getattr(reread(ini, tmp_path), ATTRIBUTES[key])
    assert read == value
    assert type(read) is type(value)


def test_all_keys_round_trip_together(ini: Path, tmp_path: Path) -> None:
    values = other_values(tmp_path)
    settings = open_settings(ini)
    for key, value in values.items():
        settings.set_value(key, value)
    settings.sync()
    again = reread(ini, tmp_path)
    assert {key: again.value(key) for key in Key} == values
    # Read from the file's text: QSettings gives strings, which Settings converted.
    assert again.qsettings.value(Key.TEXT_TEMPERATURE.value) == "0.35"


def test_a_local_folder_is_a_model_source(ini: Path, tmp_path: Path) -> None:
    settings = open_settings(ini)
    settings.model_source = str(tmp_path)
    settings.sync()
    assert reread(ini, tmp_path).model_source == str(tmp_path)


def test_values_written_as_text_read_typed(ini: Path) -> None:
    ini.write_text(
        "[sampling]\ntext_temperature=0.5\naudio_top_k=100\nseed=7\n"
        "[model]\noffline=true\n[audio]\nhalf_duplex=false\n"
    )
    settings = open_settings(ini)
    assert settings.text_temperature == 0.5 and type(settings.text_temperature) is float
    assert settings.audio_top_k == 100 and type(settings.audio_top_k) is int
    assert settings.seed == 7
    assert settings.offline is True
    assert settings.half_duplex is False


def test_garbage_reads_as_the_defaults(ini: Path, tmp_path: Path) -> None:
    ini.write_text(
        "[backend]\n"
        "kind=cloud\n"
        "server_url=ftp://host\n"
        "[sampling]\n"
        "text_temperature=hot\n"
        "audio_temperature=9\n"
        "text_top_k=-3\n"
        "audio_top_k=2.5\n"
        "seed=abc\n"
        "[model]\n"
        "source=not a repo\n"
        "revision=has a space\n"
        "lora=relative/lora\n"
        "offline=maybe\n"
        "[compute]\n"
        "device=tpu\n"
        'dtype="int8, float32"\n'  # QSettings reads a list
        "threads=0\n"
        "[audio]\n"
        "input_device=@Invalid()\n"
        "output_device=\n"
        "half_duplex=2\n"
        "[persona]\n"
        "voice=../voices/x.wav\n"
        "text=@Variant(garbage)\n"
        "[window]\n"
        "geometry=@Variant(garbage)\n"
        "state=\n"
        "[export]\n"
        "last_folder=\n"
    )
    settings = open_settings(ini)
    assert {key: settings.value(key) for key in Key} == DEFAULTS


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("nan", 0.7), ("inf", 0.7), ("-0.1", 0.7), ("1.5", 1.5), ("0", 0.0), ("true", 0.7)],
)
def test_temperatures_out_of_range_read_as_the_default(ini: Path, raw: str, expected) -> None:
    ini.write_text(f"[sampling]\ntext_temperature={raw}\n")
    assert open_settings(ini).text_temperature == expected


@pytest.mark.parametrize(
    ("attribute", "value"),
    [
        ("text_temperature", 1.6),
        ("audio_temperature", -0.1),
        ("audio_temperature", float("nan")),
        ("text_top_k", 32001),
        ("audio_top_k", 2049),
        ("text_top_k", "25"),
        ("seed", -1),
        ("model_source", "not a repo"),
        ("model_source", "relative/../folder"),
        ("model_revision", "two words"),
        ("offline", "yes"),
        ("compute_device", "tpu"),
        ("dtype", "int2"),
        ("input_device", ""),
        ("half_duplex", None),
        ("voice", "relative/voice.wav"),
        ("voice", ""),
        ("persona", "x" * 4001),
        ("window_geometry", "text"),
        ("backend", "cloud"),
        ("server_url", "localhost"),  # stored only as server_url() writes it
        ("server_url", "ftp://host"),
    ],
)
def test_invalid_values_are_refused(ini: Path, attribute: str, value) -> None:
    settings = open_settings(ini)
    with pytest.raises(ValueError):
        setattr(settings, attribute, value)
    assert settings.qsettings.allKeys() == []


def test_none_forgets_an_optional_value(ini: Path) -> None:
    settings = open_settings(ini)
    settings.seed = 3
    settings.input_device = "Mic"
    settings.seed = None
    settings.input_device = None
    assert settings.seed is None and settings.input_device is None
    assert settings.qsettings.allKeys() == []


def test_reset_restores_the_default(ini: Path) -> None:
    settings = open_settings(ini)
    settings.dtype = "float16"
    settings.reset(Key.DTYPE)
    assert settings.dtype == "auto"


def test_sampling_command(ini: Path) -> None:
    settings = open_settings(ini)
    assert settings.sampling_command() == SetSampling(
        temperature=0.8, top_k=250, text_temperature=0.7, text_top_k=25
    )
    settings.audio_temperature = 0.0
    settings.audio_top_k = 100
    settings.text_temperature = 1.2
    settings.text_top_k = 0
    assert settings.sampling_command() == SetSampling(
        temperature=0.0, top_k=100, text_temperature=1.2, text_top_k=0
    )


def test_the_user_settings_live_under_the_test_config_folder(qapp) -> None:
    # conftest points XDG_CONFIG_HOME at a temporary folder; QSettings on Linux honours it.
    path = Path(Settings().qsettings.fileName())
    if sys.platform.startswith("linux"):
        assert path.is_relative_to(os.environ["XDG_CONFIG_HOME"])
    assert path.parent.name == "moshi-desktop"


def test_the_settings_modules_load_neither_torch_nor_the_model() -> None:
    """Only the model's torch-free facts (model.files, model.config, model.finetune,
    model.catalog, model.family, model.hf_config, model.voices)."""
    code = (
        "import sys, app.ui.settings, app.ui.settings_dialog\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'model'))\n"
        "assert set(loaded) <= {'model', 'model.config', 'model.files', 'model.finetune', "
        "'model.catalog', 'model.family', 'model.hf_config', 'model.voices'}, loaded"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)
