"""The app's settings: one `Key` per setting, read and written through `Settings` (over QSettings).

Every value reads back with its type and within its range whatever is stored: QSettings returns
strings from an ini file, and a file edited by hand may hold anything. A value that cannot be read
as its type, or is out of range, reads as its default.

`Settings()` uses the user's settings (organization and application "moshi-desktop");
tests pass their own `QSettings(path, QSettings.Format.IniFormat)`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Generic, TypeVar

from PySide6.QtCore import QByteArray, QSettings

from app.engine.messages import SetSampling
from app.engine.remote import DEFAULT_SERVER, server_url
from app.errors import UserError
from model.catalog import DEFAULT_REPO
from model.files import DEVICES, DTYPES, is_repo_id
from model.voices import DEFAULT_PERSONA, DEFAULT_VOICE, is_voice_name

ORGANIZATION = "moshi-desktop"
APPLICATION = "moshi-desktop"

NOISE_LEVELS = ("off", "low", "high")  # as app/audio/echo.py's
BACKENDS = ("local", "remote")  # Moshi runs on this machine, or on Kyutai's server


TEMPERATURE_MAX = 1.5  # 0 takes the most likely token (greedy)
TEXT_TOP_K_MAX = 32000  # the text vocabulary; top-k 0 keeps every token
AUDIO_TOP_K_MAX = 2048  # the codebook size of each audio stream
SEED_MAX = 2**31 - 1  # what a QSpinBox can hold
THREADS_MAX = 256
PERSONA_MAX = 4000  # characters: about 1000 text tokens, 80 s of prompt


class Key(Enum):
    """Each setting and the QSettings key it is stored under."""

    BACKEND = "backend/kind"
    SERVER_URL = "backend/server_url"
    TEXT_TEMPERATURE = "sampling/text_temperature"
    AUDIO_TEMPERATURE = "sampling/audio_temperature"
    TEXT_TOP_K = "sampling/text_top_k"
    AUDIO_TOP_K = "sampling/audio_top_k"
    SEED = "sampling/seed"
    MODEL_SOURCE = "model/source"
    MODEL_REVISION = "model/revision"
    LORA = "model/lora"
    OFFLINE = "model/offline"
    COMPUTE_DEVICE = "compute/device"
    DTYPE = "compute/dtype"
    THREADS = "compute/threads"
    INPUT_DEVICE = "audio/input_device"
    OUTPUT_DEVICE = "audio/output_device"
    HALF_DUPLEX = "audio/half_duplex"
    VOICE = "persona/voice"
    PERSONA = "persona/text"
    ECHO_CANCELLATION = "audio/echo_cancellation"
    NOISE_SUPPRESSION = "audio/noise_suppression"
    WINDOW_GEOMETRY = "window/geometry"
    WINDOW_STATE = "window/state"
    LAST_EXPORT_FOLDER = "export/last_folder"


def is_folder_source(source: str) -> bool:
    """Whether a model source names a local folder (stored as an absolute path) rather than a
    repository."""
    return Path(source).expanduser().is_absolute()


# --- Reading stored values -----------------------------------------------------------------------
# Each parser takes what QSettings returns (a typed value, or a string from an ini file) and
# returns the setting's value, or raises ValueError (or TypeError) for anything else.


def _float_in(low: float, high: float) -> Callable[[Any], float]:
    def parse(raw: Any) -> float:
        if isinstance(raw, bool) or not isinstance(raw, (int, float, str)):
            raise TypeError(raw)
        value = float(raw)
        if not (math.isfinite(value) and low <= value <= high):
            raise ValueError(raw)
        return value

    return parse


def _int_in(low: int, high: int) -> Callable[[Any], int]:
    def parse(raw: Any) -> int:
        if isinstance(raw, bool) or not isinstance(raw, (int, str)):
            raise TypeError(raw)
        value = int(raw)
        if not low <= value <= high:
            raise ValueError(raw)
        return value

    return parse


def _optional(parse: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """None (nothing stored, or an empty string) stays None."""

    def parse_optional(raw: Any) -> Any:
        return None if raw is None or raw == "" else parse(raw)

    return parse_optional


def _bool(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and raw.strip().lower() in ("true", "1"):
        return True
    if isinstance(raw, str) and raw.strip().lower() in ("false", "0"):
        return False
    if isinstance(raw, int) and raw in (0, 1):
        return bool(raw)
    raise ValueError(raw)


def _text(raw: Any) -> str:
    if not isinstance(raw, str) or not raw.strip():
        raise ValueError(raw)
    return raw


def _one_of(choices: tuple[str, ...]) -> Callable[[Any], str]:
    def parse(raw: Any) -> str:
        if raw not in choices:
            raise ValueError(raw)
        return raw

    return parse


def _model_source(raw: Any) -> str:
    if isinstance(raw, str) and (is_repo_id(raw) or is_folder_source(raw)):
        return raw
    raise ValueError(raw)


def _absolute_path(raw: Any) -> str:
    if isinstance(raw, str) and is_folder_source(raw):
        return raw
    raise ValueError(raw)


def _revision(raw: Any) -> str:
    if not isinstance(raw, str) or not raw or any(c.isspace() for c in raw):
        raise ValueError(raw)
    return raw


def _server(raw: Any) -> str:
    """A server address as `app.engine.remote.server_url` writes it."""
    try:
        if isinstance(raw, str) and server_url(raw) == raw:
            return raw
    except UserError:
        pass
    raise ValueError(raw)


def _voice(raw: Any) -> str:
    """A packaged voice's name (NATF2) or a voice file's absolute path."""
    text = _text(raw)
    if not (is_voice_name(text) or Path(text).is_absolute()):
        raise ValueError(raw)
    return text


def _persona(raw: Any) -> str:
    """Any role text, even none, within what a prompt can hold."""
    if not isinstance(raw, str) or len(raw) > PERSONA_MAX:
        raise ValueError(raw)
    return raw


def _bytes(raw: Any) -> bytes:
    if isinstance(raw, QByteArray):
        raw = raw.data()
    if not isinstance(raw, bytes) or not raw:
        raise ValueError(raw)
    return bytes(raw)


def _folder(raw: Any) -> Path:
    return Path(_text(raw))


# --- Writing values (None is never stored: the key is removed) ----------------------------------


def _store_plain(value: Any) -> Any:
    return value


def _store_text(value: Any) -> str:
    return str(value)


def _store_bytes(value: Any) -> QByteArray:
    return QByteArray(bytes(value))


@dataclass(frozen=True)
class _Spec:
    default: Any
    parse: Callable[[Any], Any]
    store: Callable[[Any], Any] = _store_plain


_SPECS: dict[Key, _Spec] = {
    Key.BACKEND: _Spec("local", _one_of(BACKENDS)),
    Key.SERVER_URL: _Spec(DEFAULT_SERVER, _server),
    Key.TEXT_TEMPERATURE: _Spec(0.7, _float_in(0.0, TEMPERATURE_MAX)),
    Key.AUDIO_TEMPERATURE: _Spec(0.8, _float_in(0.0, TEMPERATURE_MAX)),
    Key.TEXT_TOP_K: _Spec(25, _int_in(0, TEXT_TOP_K_MAX)),
    Key.AUDIO_TOP_K: _Spec(250, _int_in(0, AUDIO_TOP_K_MAX)),
    Key.SEED: _Spec(None, _optional(_int_in(0, SEED_MAX))),
    Key.MODEL_SOURCE: _Spec(DEFAULT_REPO, _model_source),
    Key.MODEL_REVISION: _Spec(None, _optional(_revision), _store_text),
    Key.LORA: _Spec(None, _optional(_absolute_path), _store_text),
    Key.OFFLINE: _Spec(False, _bool),
    Key.COMPUTE_DEVICE: _Spec("auto", _one_of(DEVICES)),
    Key.DTYPE: _Spec("auto", _one_of(DTYPES)),
    Key.THREADS: _Spec(None, _optional(_int_in(1, THREADS_MAX))),
    Key.INPUT_DEVICE: _Spec(None, _optional(_text), _store_text),
    Key.OUTPUT_DEVICE: _Spec(None, _optional(_text), _store_text),
    Key.HALF_DUPLEX: _Spec(False, _bool),
    Key.VOICE: _Spec(DEFAULT_VOICE, _voice),
    Key.PERSONA: _Spec(DEFAULT_PERSONA, _persona),
    Key.ECHO_CANCELLATION: _Spec(True, _bool),  # talk without headphones (app/audio/echo.py)
    Key.NOISE_SUPPRESSION: _Spec("off", _one_of(NOISE_LEVELS)),
    Key.WINDOW_GEOMETRY: _Spec(None, _optional(_bytes), _store_bytes),
    Key.WINDOW_STATE: _Spec(None, _optional(_bytes), _store_bytes),
    Key.LAST_EXPORT_FOLDER: _Spec(None, _optional(_folder), _store_text),
}

T = TypeVar("T")


class _Setting(Generic[T]):
    """A typed attribute of `Settings` that reads and writes one key."""

    def __init__(self, key: Key) -> None:
        self.key = key

    def __get__(self, settings: Settings | None, owner: type | None = None) -> T:
        if settings is None:  # looked up on the class
            return self  # type: ignore[return-value]
        return settings.value(self.key)

    def __set__(self, settings: Settings, value: T) -> None:
        settings.set_value(self.key, value)


class Settings:
    """The app's settings, typed. Reading never fails: an unusable stored value reads as the
    default. Writing an invalid value raises ValueError, so nothing unreadable is ever stored."""

    backend = _Setting[str](Key.BACKEND)  # one of BACKENDS
    server_url = _Setting[str](Key.SERVER_URL)  # a ws:// or wss:// URL, as server_url() writes it
    text_temperature = _Setting[float](Key.TEXT_TEMPERATURE)
    audio_temperature = _Setting[float](Key.AUDIO_TEMPERATURE)
    text_top_k = _Setting[int](Key.TEXT_TOP_K)
    audio_top_k = _Setting[int](Key.AUDIO_TOP_K)
    seed = _Setting[int | None](Key.SEED)  # None: a new random seed each time
    model_source = _Setting[str](Key.MODEL_SOURCE)  # a repository id or a folder's absolute path
    model_revision = _Setting[str | None](Key.MODEL_REVISION)  # None: the latest
    lora = _Setting[str | None](Key.LORA)  # a LoRA's folder or file (absolute); None: none
    offline = _Setting[bool](Key.OFFLINE)
    compute_device = _Setting[str](Key.COMPUTE_DEVICE)  # one of DEVICES
    dtype = _Setting[str](Key.DTYPE)  # one of DTYPES
    threads = _Setting[int | None](Key.THREADS)  # CPU threads; None: the free cores
    input_device = _Setting[str | None](Key.INPUT_DEVICE)  # a device name; None: the default
    output_device = _Setting[str | None](Key.OUTPUT_DEVICE)
    half_duplex = _Setting[bool](Key.HALF_DUPLEX)
    # PersonaPlex's: a packaged voice's name, or a voice file's absolute path; the role text
    voice = _Setting[str](Key.VOICE)
    persona = _Setting[str](Key.PERSONA)
    echo_cancellation = _Setting[bool](Key.ECHO_CANCELLATION)
    noise_suppression = _Setting[str](Key.NOISE_SUPPRESSION)  # one of NOISE_LEVELS
    window_geometry = _Setting[bytes | None](Key.WINDOW_GEOMETRY)
    window_state = _Setting[bytes | None](Key.WINDOW_STATE)
    last_export_folder = _Setting[Path | None](Key.LAST_EXPORT_FOLDER)

    def __init__(self, qsettings: QSettings | None = None) -> None:
        self.qsettings = (
            qsettings if qsettings is not None else QSettings(ORGANIZATION, APPLICATION)
        )

    @staticmethod
    def default(key: Key) -> Any:
        return _SPECS[key].default

    def value(self, key: Key) -> Any:
        """The stored value of `key`, or its default when nothing usable is stored."""
        spec = _SPECS[key]
        raw = self.qsettings.value(key.value)
        if raw is None:
            return spec.default
        try:
            value = spec.parse(raw)
        except (TypeError, ValueError):
            return spec.default
        return spec.default if value is None else value

    def set_value(self, key: Key, value: Any) -> None:
        """Store `value` for `key`; ValueError if it would not read back as itself."""
        spec = _SPECS[key]
        if value is None and spec.default is None:
            self.qsettings.remove(key.value)
            return
        try:
            stored = spec.store(value)
            valid = value is not None and spec.parse(stored) == value
        except (TypeError, ValueError):
            valid = False
        if not valid:
            raise ValueError(f"not a valid value for {key.value}: {value!r}")
        self.qsettings.setValue(key.value, stored)

    def reset(self, key: Key) -> None:
        """Forget the stored value: `key` reads as its default."""
        self.qsettings.remove(key.value)

    def sync(self) -> None:
        self.qsettings.sync()

    def sampling_command(self) -> SetSampling:
        """The engine command that applies the stored sampling settings (the seed is not one of
        them: it applies when the model loads)."""
        return SetSampling(
            temperature=self.audio_temperature,
            top_k=self.audio_top_k,
            text_temperature=self.text_temperature,
            text_top_k=self.text_top_k,
        )
