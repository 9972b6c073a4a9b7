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
