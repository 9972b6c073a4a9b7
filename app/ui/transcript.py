"""Moshi's inner monologue, live: the words it writes as it speaks, in turns split at pauses.

Pieces of text (a word, or part of one) arrive from the engine up to every 80 ms. Each is appended
to the document with a `QTextCursor`, so the cost of a piece does not grow with the conversation.
A piece that comes 1.2 s or more after the previous one opens a new turn: a paragraph under a
muted header with the time it began (mm:ss).

The view follows new text while it is scrolled to the bottom. Scrolling up stops that, so the text
one is reading stays put, and shows a "Jump to latest" button that scrolls back down and follows
again; scrolling back to the bottom by hand does the same.
"""

from __future__ import annotations

import math

from PySide6.QtCore import QEvent, QObject, Qt, Slot
from PySide6.QtGui import QColor, QPalette, QTextBlockFormat, QTextCharFormat, QTextCursor
from PySide6.QtWidgets import QStyle, QTextBrowser, QToolButton, QVBoxLayout, QWidget

PAUSE_SECONDS = 1.2  # a piece this long after the previous one starts a new turn
_BOTTOM_SLACK_PX = 4  # within this of the bottom counts as "at the bottom"
_BUTTON_MARGIN_PX = 10


def format_time(seconds: float) -> str:
    """``"mm:ss"`` for a time into the conversation, ``"h:mm:ss"`` from an hour on."""
    total = int(seconds) if math.isfinite(seconds) and seconds > 0 else 0
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


def _blend(a: QColor, b: QColor, t: float) -> QColor:
    """The colour `t` of the way from `a` to `b` (opaque)."""
    return QColor.fromRgbF(
        a.redF() + (b.redF() - a.redF()) * t,
        a.greenF() + (b.greenF() - a.greenF()) * t,
        a.blueF() + (b.blueF() - a.blueF()) * t,
    )


class TranscriptView(QWidget):
    """Moshi's words as they come, grouped into turns at pauses, each turn headed by its time.

    Read-only, selectable and copyable (Ctrl+C, or the context menu). `plain_text()` is the words
    alone: each turn's pieces joined as they came (with the turn's leading spaces dropped and line
    breaks turned into spaces), one line per turn, without the time headers.
    """

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setAccessibleName("Transcript")
        self.setAccessibleDescription("What Moshi says, live, in turns marked with their time")

        self._view = QTextBrowser(self)
        self._view.setOpenLinks(False)
        self._view.setUndoRedoEnabled(False)
        # Selectable, without a text caret; Ctrl+A and Ctrl+C still work from the keyboard.
        self._view.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self._view.setPlaceholderText("Moshi's words appear here as it speaks.")
        self._view.setAccessibleName("Moshi's words")
        self._view.setAccessibleDescription(
            "Read-only text of what Moshi says, one paragraph per turn, each after its start time"
        )
        self._view.document().setDocumentMargin(10)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self._view)

        self._jump = QToolButton(self)
        self._jump.setText("Jump to latest")
        self._jump.setIcon(self.style().standardIcon(QStyle.StandardPixmap.SP_ArrowDown))
        self._jump.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self._jump.setCursor(Qt.CursorShape.PointingHandCursor)
        # A pill in the palette's own colours (palette(...) follows palette changes).
        self._jump.setStyleSheet(
            "QToolButton { background: palette(button); color: palette(button-text);"
            " border: 1px solid palette(mid); border-radius: 13px; padding: 4px 12px 4px 8px; }"
            "QToolButton:hover { border-color: palette(highlight); }"
            "QToolButton:pressed { background: palette(midlight); }"
        )
        self._jump.setToolTip("Scroll to the newest words and keep following them")
        self._jump.setAccessibleName("Jump to latest")
        self._jump.setAccessibleDescription("Scroll to the newest words and follow them again")
        self._jump.hide()
        self._jump.clicked.connect(self.follow)

        bar = self._view.verticalScrollBar()
        bar.rangeChanged.connect(self._on_range_changed)
        bar.valueChanged.connect(self._on_scrolled)

        self._following = True
        self._turns: list[list[str]] = []  # each turn's pieces
        self._headers: list[int] = []  # block numbers of the turn headers, to restyle them
        self._last_time: float | None = None
        self._header_format = QTextCharFormat()
        self._body_format = QTextCharFormat()
        self._update_formats()
        self._view.viewport().installEventFilter(self)  # to place the button as it resizes
        self._view.installEventFilter(self)  # its palette and font, once it has taken them on

    # The public API.

    def add_piece(self, text: str, time: float) -> None:
        """Append a piece of Moshi's text that came `time` seconds into the conversation."""
        text = text.replace("\r\n", " ").replace("\n", " ").replace("\r", " ")
        if not text:
            return
        new_turn = (
            self._last_time is None
            or time - self._last_time >= PAUSE_SECONDS - 1e-6  # frame times carry rounding
            or time < self._last_time  # a new conversation that was not cleared
        )
        if new_turn:
            text = text.lstrip()
            if not text:  # a lone space does not open a turn
                return
        self._last_time = time

        cursor = QTextCursor(self._view.document())
        cursor.movePosition(QTextCursor.MoveOperation.End)
        if new_turn:
            self._start_turn(cursor, time)
            self._turns.append([])
        cursor.insertText(text, self._body_format)
        self._turns[-1].append(text)

    def clear(self) -> None:
        """Forget all text, and follow new text again."""
        self._view.document().clear()
        self._turns.clear()
        self._headers.clear()
        self._last_time = None
        self.follow()

    def plain_text(self) -> str:
        """The words, one line per turn, without the time headers."""
        return "\n".join("".join(pieces) for pieces in self._turns)

    def is_following(self) -> bool:
        """Whether the view scrolls itself to show new text."""
        return self._following

    def text_view(self) -> QTextBrowser:
        """The read-only text widget inside (for selecting, copying, and tests)."""
        return self._view

    def jump_button(self) -> QToolButton:
        return self._jump

    @Slot()
    def follow(self) -> None:
        """Scroll to the newest text and keep following it."""
        self._set_following(True)
        bar = self._view.verticalScrollBar()
        bar.setValue(bar.maximum())

    # Building the document.

    def _start_turn(self, cursor: QTextCursor, time: float) -> None:
        first = not self._turns
        header_block = QTextBlockFormat()
        header_block.setTopMargin(0 if first else self.fontMetrics().height() * 0.9)
        header_block.setBottomMargin(1)
        if first:  # the document's own empty first block holds the first header
            cursor.setBlockFormat(header_block)
        else:
            cursor.insertBlock(header_block)
        self._headers.append(cursor.blockNumber())
        cursor.insertText(format_time(time), self._header_format)

        body_block = QTextBlockFormat()
        body_block.setLineHeight(125, QTextBlockFormat.LineHeightTypes.ProportionalHeight.value)
        cursor.insertBlock(body_block, self._body_format)

    def _update_formats(self) -> None:
        palette = self._view.palette()
        text = palette.color(QPalette.ColorRole.Text)
        base = palette.color(QPalette.ColorRole.Base)
        self._header_format = QTextCharFormat()
        self._header_format.setForeground(_blend(text, base, 0.45))
        font = self._view.font()
        size = font.pointSizeF() if font.pointSizeF() > 0 else 10.0
        self._header_format.setFontPointSize(size * 0.85)
        self._header_format.setFontWeight(600)
        self._body_format = QTextCharFormat()  # the view's own font and palette text colour

    def _restyle_headers(self) -> None:
        self._update_formats()
        document = self._view.document()
        cursor = QTextCursor(document)
        for number in self._headers:
            block = document.findBlockByNumber(number)
            cursor.setPosition(block.position())
            cursor.setPosition(
                block.position() + block.length() - 1, QTextCursor.MoveMode.KeepAnchor
            )
            cursor.setCharFormat(self._header_format)

    # Following.

    def _set_following(self, following: bool) -> None:
        self._following = following
        self._jump.setVisible(not following)
        if not following:
            self._place_jump_button()
            self._jump.raise_()

    @Slot(int, int)
    def _on_range_changed(self, _minimum: int, maximum: int) -> None:
        if self._following:
            self._view.verticalScrollBar().setValue(maximum)

    @Slot(int)
    def _on_scrolled(self, value: int) -> None:
        at_bottom = value >= self._view.verticalScrollBar().maximum() - _BOTTOM_SLACK_PX
        if at_bottom != self._following:
            self._set_following(at_bottom)

    def _place_jump_button(self) -> None:
        viewport = self._view.viewport()
        corner = viewport.mapTo(self, viewport.rect().bottomRight())
        size = self._jump.sizeHint()
        self._jump.resize(size)
        self._jump.move(
            corner.x() - size.width() - _BUTTON_MARGIN_PX + 1,
            corner.y() - size.height() - _BUTTON_MARGIN_PX + 1,
        )

    # Events.

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if watched is self._view.viewport() and event.type() == QEvent.Type.Resize:
            self._place_jump_button()
        elif watched is self._view and event.type() in (
            QEvent.Type.PaletteChange,
            QEvent.Type.FontChange,
        ):
            self._restyle_headers()
        return super().eventFilter(watched, event)
