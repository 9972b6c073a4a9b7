"""The Voice menu, for PersonaPlex: the voices packaged with the model, and a recording of a
voice. Choosing a packaged voice plays a few seconds of it where the model has its recording
(the window does that: `sample_requested`). The choice is a packaged voice's name (NATF2) or a
recording's absolute path, and applies to the next conversation."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Signal, Slot
from PySide6.QtGui import QAction, QActionGroup
from PySide6.QtWidgets import QMenu, QWidget

from model.voices import PACKAGED_VOICES, describe_voice, is_voice_name

RECORDING_TEXT = "From a &recording…"


class VoiceMenu(QMenu):
    chosen = Signal(str)  # a packaged voice's name, or a recording's absolute path
    sample_requested = Signal(str)  # a packaged voice's name: play its sample
    recording_requested = Signal()  # "From a recording…": the window asks for the file

    def __init__(self, voice: str, parent: QWidget | None = None):
        super().__init__("&Voice", parent)
        self.setToolTipsVisible(True)
        self._group = QActionGroup(self)
        self._group.setExclusive(True)
        self._actions: dict[str, QAction] = {}
        for kind, title in (("NAT", "Natural voices"), ("VAR", "Varied voices")):
            self.addSection(title)
            for name in (n for n in PACKAGED_VOICES if n.startswith(kind)):
                self._actions[name] = self._voice_action(describe_voice(name), name)
        self.addSeparator()
        self._recording = self._voice_action("", "")  # the recording chosen, when there is one
        self._recording.setVisible(False)
        self.recording_action = self.addAction(RECORDING_TEXT)
        self.recording_action.setToolTip(
            "A .wav (or flac, ogg) of 5 to 20 s of one voice speaking: its speaker must have "
            "agreed that Moshi speaks with it"
        )
        self.recording_action.triggered.connect(self.recording_requested)
        self.set_voice(voice)

    def _voice_action(self, text: str, voice: str) -> QAction:
        action = self.addAction(text)
        action.setCheckable(True)
        action.setData(voice)
        self._group.addAction(action)
        action.triggered.connect(lambda checked=False, a=action: self._on_triggered(a))
        return action

    @property
    def voice(self) -> str:
        checked = self._group.checkedAction()
        return str(checked.data()) if checked is not None else ""

    def set_voice(self, voice: str) -> None:
        """Show `voice` as the chosen one (a name not in the menu, or a recording, gets the
        recording's place)."""
        action = self._actions.get(voice)
        if action is None:
            shown = Path(voice).name if not is_voice_name(voice) else voice
            self._recording.setText(f"Recording: {shown}" if not is_voice_name(voice) else shown)
            self._recording.setData(voice)
            self._recording.setVisible(True)
            action = self._recording
        action.setChecked(True)

    def set_recordings_allowed(self, allowed: bool) -> None:
        """A server speaks only with its own voices: no recording then."""
        self.recording_action.setEnabled(allowed)

    @Slot()
    def _on_triggered(self, action: QAction) -> None:
        voice = str(action.data())
        self.chosen.emit(voice)
        if voice in self._actions:
            self.sample_requested.emit(voice)
