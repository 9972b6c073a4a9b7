"""Both waveforms of a kept conversation at a glance, from its peaks (two bytes per 80 ms
frame: no audio is read), with the play head; a click asks to seek there."""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import QPointF, QSize, Qt, Signal
from PySide6.QtGui import QColor, QMouseEvent, QPainter, QPaintEvent, QPen
from PySide6.QtWidgets import QWidget

USER_COLOUR = QColor("#2e86c1")
MOSHI_COLOUR = QColor("#d35400")


class PeaksView(QWidget):
    seek = Signal(float)  # seconds

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setAccessibleName("Waveforms of both voices")
        self.peaks = np.zeros((0, 2), np.float32)
        self.duration = 0.0
        self.position = 0.0

    def set_peaks(self, peaks: np.ndarray | None, duration: float) -> None:
        self.peaks = np.zeros((0, 2), np.float32) if peaks is None else peaks
        self.duration, self.position = duration, 0.0
        self.update()

    def set_position(self, seconds: float) -> None:
        self.position = seconds
        self.update()

    def sizeHint(self) -> QSize:  # noqa: N802
        return QSize(400, 80)

    def paintEvent(self, event: QPaintEvent) -> None:  # noqa: N802
        painter = QPainter(self)
        width, height = self.width(), self.height()
        lane = height / 2
        n = len(self.peaks)
        if n and width > 0:
            edges = np.linspace(0, n, width + 1).astype(int)
            for column, colour in ((0, USER_COLOUR), (1, MOSHI_COLOUR)):
                painter.setPen(QPen(colour))
                middle = lane * column + lane / 2
                values = np.maximum.reduceat(self.peaks[:, column], np.minimum(edges[:-1], n - 1))
                for x, v in enumerate(values):
                    half = float(v) * lane / 2
                    painter.drawLine(QPointF(x, middle - half), QPointF(x, middle + half))
        if self.duration > 0:
            x = self.position / self.duration * width
            painter.setPen(QPen(self.palette().text().color()))
            painter.drawLine(QPointF(x, 0), QPointF(x, height))
        painter.end()

    def mousePressEvent(self, event: QMouseEvent) -> None:  # noqa: N802
        if self.duration > 0 and event.button() == Qt.MouseButton.LeftButton:
            self.seek.emit(max(0.0, event.position().x() / max(1, self.width()) * self.duration))
