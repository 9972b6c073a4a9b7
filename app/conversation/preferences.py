"""Whether and where conversations are kept, and for how long: one small JSON file in the app's
config folder (``conversations.json``), read by the window and by the command line alike.

Keys: ``keep`` (bool, default true; false: nothing is written to disk at all), ``keep_days``
(int or null: delete conversations older than that at start; default null, keep them all),
``folder`` (the store's folder, or null for ``<data folder>/conversations``). A file that cannot
be read gives the defaults and a log line.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import platformdirs

from ..appinfo import NAME
from ..audio.files import atomic_output
from ..errors import UserError, io_reason
from ..paths import recordings_dir

log = logging.getLogger(__name__)

FILE = "conversations.json"


@dataclass(frozen=True)
class Preferences:
    keep: bool = True
    keep_days: int | None = None
    folder: str | None = None

    @property
    def root(self) -> Path:
        """Where the conversations are."""
        return Path(self.folder) if self.folder else recordings_dir()


def path() -> Path:
    return Path(platformdirs.user_config_dir(NAME, appauthor=False)) / FILE


def load() -> Preferences:
    try:
        raw = json.loads(path().read_text(encoding="utf-8"))
    except FileNotFoundError:
        return Preferences()
    except (OSError, ValueError):
        log.warning(
            "cannot read %s; conversations are kept in the default folder", path(), exc_info=True
        )
        return Preferences()
    raw = raw if isinstance(raw, dict) else {}
    keep_days = raw.get("keep_days")
    folder = raw.get("folder")
    return Preferences(
        keep=raw.get("keep") is not False,
        keep_days=keep_days if isinstance(keep_days, int) and keep_days > 0 else None,
        folder=folder if isinstance(folder, str) and folder else None,
    )


def save(preferences: Preferences) -> None:
    target = path()
    try:
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with atomic_output(target) as tmp:
            tmp.write_text(json.dumps(asdict(preferences), indent=2) + "\n", encoding="utf-8")
    except OSError as e:
        raise UserError(f"cannot save the conversation settings in {target}: {io_reason(e)}") from e
