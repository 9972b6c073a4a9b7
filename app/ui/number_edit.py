"""A number typed as text, checked as it is typed, and never changed behind the user's back.

A spin box fixes what it cannot hold: 9.99 in a field of 0 to 1.5 becomes 0.99 as it is typed,
-7 in a seed field becomes its "random" special value. Here the text stays as typed; a value out of
range, or not a number, is outlined in red with what is allowed in its tooltip ("0 to 1.5"), and
`problem()` says it in a sentence for the dialog, which keeps OK disabled meanwhile. Up and Down
(Page Up and Page Down: ten steps) step a valid value within the range.

Words may stand for values: "all" for a top-k of 0, "random" (or nothing) for no seed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from PySide6.QtCore import Qt, Signal, Slot
from PySide6.QtGui import QKeyEvent
from PySide6.QtWidgets import QLineEdit, QWidget

Number = int | float | None

INVALID_STYLE = "NumberEdit { border: 2px solid #c0392b; border-radius: 3px; padding: 1px; }"


class NumberEdit(QLineEdit):
    """A number from `low` to `high`: whole when `decimals` is 0, else shown with `decimals`
    places (any precision typed is kept). `words` maps words (matched ignoring case; "" for an
    empty field) to the values they stand for; the first word of a value is how it shows."""

    value_changed = Signal()  # a valid value, typed or set (read it with `value()`)

    def __init__(
        self,
        name: str,
        low: float,
        high: float,
        *,
        decimals: int = 0,
        step: float = 1,
        words: Mapping[str, Number] | None = None,
        help: str = "",
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.name, self.low, self.high = name, low, high
        self.decimals, self.step, self.help = decimals, step, help
        self.words = {word.lower(): value for word, value in (words or {}).items()}
        self.setAccessibleName(name)
        self.setMaxLength(40)
        self._valid = True
        self.textChanged.connect(self._edited)
        self._edited()

    # --- values ----------------------------------------------------------------------------

    def parse(self, text: str) -> Number:
        """The value `text` stands for; ValueError when it stands for none in range."""
        text = text.strip()
        if text.lower() in self.words:
            return self.words[text.lower()]
        if self.decimals:
            value: float = float(text.replace(",", "."))
        else:
            value = int(text)
        if not (math.isfinite(value) and self.low <= value <= self.high):
            raise ValueError(text)
        return value

    def value(self) -> Number:
        """The value shown; ValueError while the text is not a valid value (see `problem`)."""
        return self.parse(self.text())

    def is_valid(self) -> bool:
        return self._valid

    def set_value(self, value: Number) -> None:
        self.setText(self.format(value))

    def format(self, value: Number) -> str:
        for word, stands_for in self.words.items():
            if stands_for == value and word:
                return word
        if value is None:
            return ""
        return f"{value:.{self.decimals}f}" if self.decimals else str(int(value))

    # --- what is allowed -------------------------------------------------------------------

    def allowed(self) -> str:
        """What may be typed, as short as a tooltip wants it: "0 to 1.5", "0 to 2048, or all"."""
        text = f"{self.low:g} to {self.high:g}" if self.decimals else f"{self.low} to {self.high}"
        return text + "".join(f", or {word}" for word in self.words if word)

    def problem(self) -> str | None:
        """Why the text is not a valid value, in one sentence; None when it is."""
        if self._valid:
            return None
        kind = "a number" if self.decimals else "a whole number"
        return f"{self.name} must be {kind} from {self.allowed()}."

    # --- events ----------------------------------------------------------------------------

    @Slot()
    def _edited(self) -> None:
        try:
            self.value()
        except ValueError:
            self._valid = False
        else:
            self._valid = True
        self.setStyleSheet("" if self._valid else INVALID_STYLE)
        tip = self.help + "\n" if self.help else ""
        self.setToolTip(tip + self.allowed() if self._valid else self.allowed())
        self.setAccessibleDescription(self.problem() or self.help or self.allowed())
        if self._valid:
            self.value_changed.emit()

    def keyPressEvent(self, event: QKeyEvent) -> None:
        steps = {
            Qt.Key.Key_Up: 1,
            Qt.Key.Key_Down: -1,
            Qt.Key.Key_PageUp: 10,
            Qt.Key.Key_PageDown: -10,
        }.get(Qt.Key(event.key()))
        if steps is None:
            super().keyPressEvent(event)
            return
        if self._valid:
            current = self.value()
            start = self.low if current is None else current
            stepped = min(max(start + steps * self.step, self.low), self.high)
            self.set_value(round(stepped, self.decimals) if self.decimals else int(stepped))
            self.selectAll()
        event.accept()
