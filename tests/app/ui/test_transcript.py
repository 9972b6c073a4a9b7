"""TranscriptView: Moshi's words in turns split at pauses, following new text, copyable."""

from __future__ import annotations

import pytest
from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QPalette, QTextCursor
from PySide6.QtWidgets import QApplication
from pytestqt.qtbot import QtBot

from app.ui.transcript import PAUSE_SECONDS, TranscriptView, format_time

# Two turns: the second piece comes 1.12 s after " there" (no pause), " Sure" 2.5 s after "?".
PIECES = [
    (" Hi", 0.0),
    (" there", 0.08),
    ("!", 0.16),
    (" How", 1.28),
    (" are", 1.36),
    (" you", 1.44),
    ("?", 1.52),
    (" Sure", 4.02),
    (",", 4.1),
    (" let", 4.18),
    ("'s", 4.26),
    (" go", 4.34),
    (".", 4.42),
]


@pytest.fixture
def view(qtbot: QtBot) -> TranscriptView:
    view = TranscriptView()
    qtbot.addWidget(view)
    view.resize(360, 160)
    view.show()
    qtbot.waitExposed(view)
    return view


def add_words(view: TranscriptView, count: int, start: float = 0.0) -> float:
    """Add `count` words 80 ms apart (one turn); returns the time after the last."""
    for i in range(count):
        view.add_piece(f" word{i}", start + 0.08 * i)
    return start + 0.08 * count


def test_pieces_appear_in_order_in_turns_split_at_pauses(view: TranscriptView) -> None:
    for text, time in PIECES:
        view.add_piece(text, time)
    # Each turn's leading space is dropped; one line per turn; no time headers.
    assert view.plain_text() == "Hi there! How are you?\nSure, let's go."
    # The document shows each turn under its start time (mm:ss).
    assert view.text_view().toPlainText() == "00:00\nHi there! How are you?\n00:04\nSure, let's go."


def test_a_pause_of_exactly_the_threshold_starts_a_turn(view: TranscriptView) -> None:
    # Engine times are frame counts times 0.08 s: 15 frames make exactly a pause.
    view.add_piece("One", 125 * 0.08)
    view.add_piece(" two", 139 * 0.08)  # 14 frames later: no pause
    view.add_piece(" Three", 154 * 0.08)  # 15 frames later (1.2 s, give or take rounding)
    assert view.plain_text() == "One two\nThree"
    assert view.text_view().toPlainText() == "00:10\nOne two\n00:12\nThree"
    assert 154 * 0.08 - 139 * 0.08 < PAUSE_SECONDS  # the rounding the threshold allows for


def test_time_going_back_starts_a_turn(view: TranscriptView) -> None:
    view.add_piece("Before", 30.0)
    view.add_piece(" after", 0.5)  # a new conversation that was not cleared
    assert view.text_view().toPlainText() == "00:30\nBefore\n00:00\nafter"


def test_spaces_and_line_breaks(view: TranscriptView) -> None:
    view.add_piece("   ", 0.0)  # a lone space opens no turn
    view.add_piece("", 0.1)
    assert view.plain_text() == "" and view.text_view().toPlainText() == ""
    view.add_piece(" line\none", 5.0)
    view.add_piece(" ", 5.08)  # inside a turn, spaces are text
    view.add_piece("two", 5.16)
    assert view.plain_text() == "line one two"


def test_headers_are_muted(view: TranscriptView) -> None:
    view.add_piece("Hello", 75.0)
    document = view.text_view().document()
    header, body = document.firstBlock(), document.firstBlock().next()
    assert header.text() == "01:15" and body.text() == "Hello"
    header_colour = _colour_at(view, header.position())
    text_colour = view.text_view().palette().color(QPalette.ColorRole.Text)
    base_colour = view.text_view().palette().color(QPalette.ColorRole.Base)
    assert header_colour not in (text_colour, base_colour)
    # It lies between the text colour and the background: derived from the palette.
    assert min(text_colour.lightness(), base_colour.lightness()) < header_colour.lightness()
    assert header_colour.lightness() < max(text_colour.lightness(), base_colour.lightness())


def test_headers_follow_a_palette_change(view: TranscriptView) -> None:
    view.add_piece("Hello", 0.0)
    before = _colour_at(view, 0)
    palette = view.palette()
    palette.setColor(QPalette.ColorRole.Base, QColor("#101010"))
    palette.setColor(QPalette.ColorRole.Text, QColor("#f0f0f0"))
    view.setPalette(palette)
    after = _colour_at(view, 0)
    assert after != before and after.lightness() < 0xF0 and after.lightness() > 0x10


def _colour_at(view: TranscriptView, position: int) -> QColor:
    cursor = QTextCursor(view.text_view().document())
    cursor.setPosition(position + 1)
    return cursor.charFormat().foreground().color()


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "00:00"), (59.99, "00:59"), (71.9, "01:11"), (3725, "1:02:05"), (-3, "00:00")],
)
def test_format_time(seconds: float, text: str) -> None:
    assert format_time(seconds) == text


def test_follows_new_text_until_scrolled_up_and_the_button_brings_it_back(
    qtbot: QtBot, view: TranscriptView
) -> None:
    bar = view.text_view().verticalScrollBar()
    time = add_words(view, 120)
    assert bar.maximum() > 0, "the text should overflow the view"
    assert view.is_following() and bar.value() == bar.maximum()
    assert not view.jump_button().isVisible()

    bar.setValue(0)  # the user scrolls up
    assert not view.is_following()
    assert view.jump_button().isVisible()
    maximum = bar.maximum()
    add_words(view, 60, time)
    assert bar.maximum() > maximum
    assert bar.value() == 0, "new text must not move the text being read"

    button = view.jump_button()
    assert view.rect().contains(button.geometry()), "the button sits inside the view"
    qtbot.mouseClick(button, Qt.MouseButton.LeftButton)
    assert view.is_following() and not button.isVisible()
    assert bar.value() == bar.maximum()
    add_words(view, 30, time + 10)
    assert bar.value() == bar.maximum()


def test_scrolling_back_to_the_bottom_by_hand_follows_again(view: TranscriptView) -> None:
    bar = view.text_view().verticalScrollBar()
    add_words(view, 120)
    bar.setValue(bar.maximum() // 2)
    assert not view.is_following()
    bar.setValue(bar.maximum())
    assert view.is_following() and not view.jump_button().isVisible()


def test_select_all_and_copy(qtbot: QtBot, view: TranscriptView) -> None:
    for text, time in PIECES:
        view.add_piece(text, time)
    QApplication.clipboard().clear()
    text_view = view.text_view()
    text_view.setFocus()
    qtbot.keyClick(text_view, Qt.Key.Key_A, Qt.KeyboardModifier.ControlModifier)
    qtbot.keyClick(text_view, Qt.Key.Key_C, Qt.KeyboardModifier.ControlModifier)
    copied = QApplication.clipboard().text()
    assert "Hi there! How are you?" in copied and "Sure, let's go." in copied
    assert text_view.isReadOnly()


def test_appending_keeps_the_readers_selection(view: TranscriptView) -> None:
    view.add_piece("Hello world", 0.0)
    text_view = view.text_view()
    cursor = text_view.textCursor()
    cursor.setPosition(6)  # after "00:00\n"
    cursor.movePosition(QTextCursor.MoveOperation.EndOfWord, QTextCursor.MoveMode.KeepAnchor)
    text_view.setTextCursor(cursor)
    assert text_view.textCursor().selectedText() == "Hello"
    view.add_piece(" again", 0.08)
    view.add_piece(" Later", 9.0)
    assert text_view.textCursor().selectedText() == "Hello"


def test_clear(view: TranscriptView) -> None:
    add_words(view, 120)
    view.text_view().verticalScrollBar().setValue(0)
    view.clear()
    assert view.plain_text() == "" and view.text_view().toPlainText() == ""
    assert view.is_following() and not view.jump_button().isVisible()
    view.add_piece(" Again", 3.0)
    assert view.text_view().toPlainText() == "00:03\nAgain"


def test_accessible_names(view: TranscriptView) -> None:
    for widget in (view, view.text_view(), view.jump_button()):
        assert widget.accessibleName()
        assert widget.accessibleDescription()
