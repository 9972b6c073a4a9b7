"""The Persona box, for PersonaPlex: the role Moshi plays, as text, with NVIDIA's example roles as
presets (assistant, customer service, casual conversation, the astronaut). The text applies to
the next conversation."""

from __future__ import annotations

from PySide6.QtCore import Signal, Slot
from PySide6.QtWidgets import QComboBox, QHBoxLayout, QLabel, QPlainTextEdit, QWidget

from model.voices import PERSONAS

CUSTOM = "Your own"


class PersonaBox(QWidget):
    changed = Signal(str)  # the persona's text, as the user edits it or picks a preset

    def __init__(self, text: str, max_length: int, parent: QWidget | None = None):
        super().__init__(parent)
        self.max_length = max_length
        self.presets = QComboBox()
        self.presets.addItems([p.name for p in PERSONAS] + [CUSTOM])
        self.presets.setAccessibleName("Persona presets")
        self.presets.setToolTip("NVIDIA's example roles; edit the text to make your own")
        self.editor = QPlainTextEdit()
        self.editor.setAccessibleName("Persona")
        self.editor.setPlaceholderText(
            "The role Moshi plays, e.g. You enjoy having a good conversation."
        )
        self.editor.setTabChangesFocus(True)
        self.editor.setFixedHeight(3 * self.editor.fontMetrics().lineSpacing() + 12)
        label = QLabel("&Persona:")
        label.setBuddy(self.editor)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(label)
        layout.addWidget(self.presets)
        layout.addWidget(self.editor, 1)
        self.set_text(text)
        self.presets.activated.connect(self._on_preset)
        self.editor.textChanged.connect(self._on_edited)

    @property
    def text(self) -> str:
        return self.editor.toPlainText()

    def set_text(self, text: str) -> None:
        self.editor.blockSignals(True)
        self.editor.setPlainText(text)
        self.editor.blockSignals(False)
        self._show_preset(text)

    def _show_preset(self, text: str) -> None:
        names = [p.name for p in PERSONAS if p.text == text.strip()]
        self.presets.setCurrentText(names[0] if names else CUSTOM)

    @Slot(int)
    def _on_preset(self, index: int) -> None:
        if index < len(PERSONAS):
            self.editor.setPlainText(PERSONAS[index].text)  # textChanged tells the window

    @Slot()
    def _on_edited(self) -> None:
        text = self.text
        if len(text) > self.max_length:  # a paste too long for a prompt: cut to fit
            cursor = self.editor.textCursor()
            self.editor.setPlainText(text[: self.max_length])
            cursor.setPosition(self.max_length)
            self.editor.setTextCursor(cursor)
            return
        self._show_preset(text)
        self.changed.emit(text)
