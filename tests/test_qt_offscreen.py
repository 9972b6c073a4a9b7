"""Smoke test: Qt widgets import and show offscreen (QT_QPA_PLATFORM=offscreen, see conftest.py).

Fails first when a system library Qt needs is missing; README.md and .ci/run list them.
"""

from PySide6.QtWidgets import QApplication, QLabel
from pytestqt.qtbot import QtBot


def test_a_label_shows_offscreen(qtbot: QtBot, qapp: QApplication) -> None:
    assert qapp.platformName() == "offscreen"
    label = QLabel("Moshi")
    qtbot.addWidget(label)
    label.show()
    qtbot.waitExposed(label)
    assert label.isVisible()
    assert label.text() == "Moshi"


def test_qt_calls_keep_none_alive(qtbot) -> None:
    """PySide6 6.12.0 takes a reference from None on each call that returns nothing; on Python
    before 3.12 that aborts the app within seconds. pyproject.toml keeps that release out."""
    import sys

    from PySide6.QtWidgets import QLabel

    label = QLabel("x")
    qtbot.addWidget(label)
    before = sys.getrefcount(None)
    for _ in range(300):
        label.update()
    assert sys.getrefcount(None) >= before - 10
