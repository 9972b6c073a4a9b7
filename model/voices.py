"""PersonaPlex's voices and personas as the app offers them: torch-free facts, so the window may
import them (the prompt itself runs in `model.persona`).

NVIDIA's repositories ship the voices as voices.tgz: voices/NATF0.pt ... voices/VARM4.pt, each the
state the model reached on a recording of that voice (a .wav beside it, where the archive has one,
is that recording: the window plays its first seconds as a sample). The personas offered are the
examples of NVIDIA's prompting guide (github NVIDIA/personaplex, README.md).
"""

from __future__ import annotations

import io
import re
import tarfile
import wave
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

VOICES_ARCHIVE = "voices.tgz"
VOICES_FOLDER = "voices"
VOICE_SUFFIXES = (".pt",)  # a packaged voice; a recording (.wav, .flac, ...) is given by path
DEFAULT_VOICE = "NATF2"  # the voice of NVIDIA's examples
# A recording of a voice: long enough to carry it, short enough for the model's context.
VOICE_SECONDS = (5.0, 20.0)
SAMPLE_SECONDS = 4.0  # how much of a packaged voice's recording the window plays

_KINDS = {"NAT": "natural", "VAR": "varied"}
_GENDERS = {"F": "female", "M": "male"}
PACKAGED_VOICES = tuple(
    f"{kind}{gender}{n}"
    for kind, count in (("NAT", 4), ("VAR", 5))
    for gender in "FM"
    for n in range(count)
)
_NAME = re.compile(r"[A-Za-z0-9_-]+")


def is_voice_name(text: str) -> bool:
    """A packaged voice's name (NATF2), as opposed to a path to a voice file."""
    return bool(_NAME.fullmatch(text)) and not Path(text).suffix


def describe_voice(name: str) -> str:
    """ "NATF2 (natural, female)" for NVIDIA's names; the name itself for others."""
    match = re.fullmatch(r"(NAT|VAR)([FM])(\d+)", name)
    if not match:
        return name
    return f"{name} ({_KINDS[match[1]]}, {_GENDERS[match[2]]})"


def voice_length_problem(seconds: float) -> str:
    """Why a recording of `seconds` cannot be a voice prompt, or ""."""
    low, high = VOICE_SECONDS
    if seconds < low:
        return f"it is {seconds:.1f} s long: a voice needs at least {low:.0f} s of speech"
    if seconds > high:
        return f"it is {seconds:.1f} s long: keep it to {high:.0f} s at most (trim it)"
    return ""


CONSENT = (
    "Use only a recording of your own voice, or of someone who has agreed that Moshi may speak "
    "with their voice."
)


@dataclass(frozen=True)
class Persona:
    name: str  # for menus
    text: str


PERSONAS = (
    Persona(
        "Assistant",
        "You are a wise and friendly teacher. Answer questions or provide advice in a clear and "
        "engaging way.",
    ),
    Persona(
        "Customer service",
        "You work for CitySan Services which is a waste management and your name is Ayelen "
        "Lucero. Information: Verify customer name Omar Torres. Current schedule: every other "
        "week. Upcoming pickup: April 12th. Compost bin service available for $8/month add-on.",
    ),
    Persona("Casual conversation", "You enjoy having a good conversation."),
    Persona(
        "Astronaut",
        "You enjoy having a good conversation. Have a technical discussion about fixing a reactor "
        "core on a spaceship to Mars. You are an astronaut on a Mars mission. Your name is Alex. "
        "You are already dealing with a reactor core meltdown on a Mars mission. Several ship "
        "systems are failing, and continued instability will lead to catastrophic failure. You "
        "explain what is happening and you urgently ask for help thinking through how to "
        "stabilize the reactor.",
    ),
)
DEFAULT_PERSONA = PERSONAS[0].text


def _voice_members(tar: tarfile.TarFile):
    """voices.tgz's regular files directly under voices/, with their file names (links, folders
    and other paths skipped), read as a stream: the archive is decompressed once, as far as the
    caller reads."""
    for member in tar:
        parts = PurePosixPath(member.name.removeprefix("./")).parts
        if member.isfile() and len(parts) == 2 and parts[0] == VOICES_FOLDER:
            yield parts[1], member


def voice_names(folder: str | Path) -> list[str]:
    """The voices packaged with a PersonaPlex folder: voices/*.pt, or the .pt files of
    voices.tgz (read in place, never extracted)."""
    folder = Path(folder)
    names = {p.stem for p in (folder / VOICES_FOLDER).glob("*.pt")}
    archive = folder / VOICES_ARCHIVE
    if archive.is_file():
        with tarfile.open(archive, "r|gz") as tar:
            names |= {Path(n).stem for n, _ in _voice_members(tar) if n.endswith(".pt")}
    return sorted(names)


def voice_file(folder: str | Path, filename: str) -> bytes | None:
    """voices/FILENAME of a PersonaPlex folder, loose or from voices.tgz, read into memory (no
    file of the archive is written: no path can leave the folder, no link is followed); None
    when there is none."""
    folder = Path(folder)
    if not _NAME.fullmatch(Path(filename).stem) or Path(filename).name != filename:
        return None
    loose = folder / VOICES_FOLDER / filename
    if loose.is_file():
        return loose.read_bytes()
    archive = folder / VOICES_ARCHIVE
    if archive.is_file():
        with tarfile.open(archive, "r|gz") as tar:
            for name, member in _voice_members(tar):
                if name == filename:
                    data = tar.extractfile(member)
                    return data.read() if data is not None else None
    return None


def voice_sample(folder: str | Path, name: str) -> tuple[bytes, int, int, int] | None:
    """The first SAMPLE_SECONDS of the recording of packaged voice `name` (voices/NAME.wav):
    (16-bit little-endian frames, rate, channels, sample width); None where there is none."""
    data = voice_file(folder, f"{name}.wav")
    if data is None:
        return None
    try:
        with wave.open(io.BytesIO(data)) as w:
            rate, channels, width = w.getframerate(), w.getnchannels(), w.getsampwidth()
            frames = w.readframes(int(SAMPLE_SECONDS * rate))
    except (wave.Error, EOFError):
        return None
    return frames, rate, channels, width


def is_personaplex_source(source: str) -> bool:
    """Whether the model at `source` takes a voice and a persona, told without loading it: a
    repository by the catalog, a folder by its config.json or its weights' header."""
    from .catalog import CATALOG
    from .config import PERSONAPLEX_MODEL_TYPE
    from .files import CheckpointError, is_repo_id, resolve_folder

    if is_repo_id(source):
        entry = CATALOG.get(source)
        return entry is not None and entry.personaplex
    try:
        return resolve_folder(Path(source).expanduser()).config.model_type == PERSONAPLEX_MODEL_TYPE
    except (CheckpointError, OSError, ValueError):
        return False


def voices_folder(source: str) -> Path | None:
    """Where the packaged voices of the model at `source` are on this machine: a folder's own,
    a repository's in the Hugging Face cache (None where voices.tgz is not there)."""
    from .files import is_repo_id

    if not is_repo_id(source):
        return Path(source).expanduser()
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(source, VOICES_ARCHIVE)
    return Path(cached).parent if isinstance(cached, str) else None
