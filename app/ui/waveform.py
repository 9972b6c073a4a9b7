"""Both voices as scrolling waveforms, one lane each (You, Moshi), with a level meter per lane.

The GUI thread does little per block and little per frame:

- On arrival, each block (1920 samples at 24 kHz, 12.5 blocks a second) is reduced to min/max
  envelopes of 5 ms bins (120 samples: 16 bins a block) and written into a preallocated numpy ring
  buffer. Its RMS feeds the lane's level meter. Nothing is painted here.
- A QTimer at about 30 fps repaints, and only while there is something new to show: it starts when
  a block arrives and stops once the view has scrolled up to the newest data.
- The view scrolls smoothly at the audio's own rate, about one block behind the newest data, so the
  picture glides instead of jumping 80 ms at a time. It catches up faster when it falls behind and
  never lags more than a few blocks.
- `paintEvent` draws each lane as vertical lines, one per device-pixel column at most (from the
  column's max to its min), in one `QPainter.drawLines` call whose points numpy writes straight
  into a QPolygonF's memory: no per-sample, per-bin or per-line Python loop. When a window holds
  more bins than the widget has pixels, bins are merged first, in groups aligned to the stream so
  that columns do not shimmer as they scroll. (A filled, antialiased polygon of the same envelope
  looks alike but costs 10 to 30 times as much to rasterise.)

All geometry is in device-independent pixels and nothing is cached as a pixmap, so the picture is
sharp at any device pixel ratio. Colours come from the palette: the user's lane uses Highlight and
Moshi's a second accent at the opposite hue.
"""

from __future__ import annotations

import math
import time as _time

import numpy as np
import shiboken6
from PySide6.QtCore import QPointF, QRectF, QSize, Qt, QTimer, Slot
from PySide6.QtGui import (
    QColor,
    QFont,
    QPainter,
    QPaintEvent,
    QPalette,
    QPen,
    QPolygonF,
    QShowEvent,
)
from PySide6.QtWidgets import QWidget

from model.config import FRAME_SIZE, SAMPLE_RATE

BIN_SAMPLES = 120  # 5 ms of audio per envelope bin
BINS_PER_SECOND = SAMPLE_RATE // BIN_SAMPLES  # 200
BLOCK_BINS = FRAME_SIZE // BIN_SAMPLES  # 16 bins in one engine block (80 ms)
FRAME_MS = 33  # repaint at most about 30 times a second
MAX_LAG_BINS = 4 * BLOCK_BINS  # the smooth scroll never shows data older than this behind
MIN_WINDOW_SECONDS = 0.5
MAX_WINDOW_SECONDS = 120.0

METER_FLOOR_DB = -60.0  # the bottom of the meter's scale
SILENCE_DB = -120.0  # the level of digital silence
PEAK_HOLD_SECONDS = 1.5
METER_FALL_DB_PER_SECOND = 24.0  # how fast the level and (after its hold) the peak fall

LANES = ("You", "Moshi")
MARGIN = 6.0  # around the lanes, in device-independent pixels
SPACING = 6.0  # between the lanes, and between a lane and its meter
METER_WIDTH = 8.0


def decimate(samples: np.ndarray) -> np.ndarray:
    """Min/max envelopes of whole 5 ms bins: ``[..., T]`` samples -> ``[..., T // 120, 2]``."""
    bins = samples.shape[-1] // BIN_SAMPLES
    shaped = samples[..., : bins * BIN_SAMPLES].reshape(*samples.shape[:-1], bins, BIN_SAMPLES)
    envelope = np.stack([shaped.min(axis=-1), shaped.max(axis=-1)], axis=-1)
    return np.clip(np.nan_to_num(envelope), -1.0, 1.0).astype(np.float32, copy=False)


def rms_dbfs(samples: np.ndarray) -> float:
    """RMS level in dB relative to full scale (a full-scale sine is -3 dBFS); silence is -120."""
    if samples.size == 0:
        return SILENCE_DB
    rms = math.sqrt(float(np.mean(np.square(samples, dtype=np.float64))))
    if not math.isfinite(rms) or rms <= 10 ** (SILENCE_DB / 20):
        return SILENCE_DB
    return 20 * math.log10(rms)


class LevelMeter:
    """An RMS level with meter ballistics: it rises at once and falls at a steady rate, and a peak
    that holds the highest recent level for a while before it falls too. Timed by the audio's own
    clock (the blocks' times), so it freezes with the audio and tests are exact."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.level_db = SILENCE_DB
        self.peak_db = SILENCE_DB
        self._peak_age = 0.0
        self._time: float | None = None

    def feed(self, db: float, time: float) -> None:
        dt = 0.0 if self._time is None else min(max(time - self._time, 0.0), 1.0)
        self._time = time
        fall = METER_FALL_DB_PER_SECOND * dt
        self.level_db = max(db, self.level_db - fall, SILENCE_DB)
        if self.level_db >= self.peak_db:
            self.peak_db = self.level_db
            self._peak_age = 0.0
        else:
            self._peak_age += dt
            if self._peak_age > PEAK_HOLD_SECONDS:
                falling = min(dt, self._peak_age - PEAK_HOLD_SECONDS)
                self.peak_db = max(self.peak_db - METER_FALL_DB_PER_SECOND * falling, self.level_db)


class _EnvelopeRing:
    """The newest `capacity` envelope bins of both lanes, written twice (at i and i + capacity) so
    that any run of the newest bins is one contiguous slice, without copying."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.data = np.zeros((2 * capacity, len(LANES), 2), np.float32)  # [2C, lane, (min, max)]
        self.written = 0  # bins written since the last clear; bin i is the i-th of the stream

    def push(self, bins: np.ndarray) -> None:  # [n, lane, 2]
        if len(bins) > self.capacity:
            self.written += len(bins) - self.capacity
            bins = bins[-self.capacity :]
        slots = (self.written + np.arange(len(bins))) % self.capacity
        self.data[slots] = bins
        self.data[slots + self.capacity] = bins
        self.written += len(bins)

    def span(self, start: int, stop: int) -> np.ndarray:
        """Bins ``start <= i < stop`` of the stream (clamped to what is still held)."""
        stop = min(stop, self.written)
        start = max(start, self.written - self.capacity, 0)
        if start >= stop:
            return self.data[:0]
        end = self.written % self.capacity + self.capacity - (self.written - stop)
        return self.data[end - (stop - start) : end]

    def resized(self, capacity: int) -> _EnvelopeRing:
        ring = _EnvelopeRing(capacity)
        held = self.span(self.written - capacity, self.written)
        ring.written = self.written - len(held)
        ring.push(held)
        return ring


class _PointPairs:
    """Vertical lines for QPainter.drawLines, written by numpy into a QPolygonF's memory (a QList
    of QPointF: pairs of doubles) and drawn through the pointer overload, so neither side makes a
    Python object per line. The polygon only grows; where its memory cannot be written directly,
    the points are built as QPointF objects instead."""

    def __init__(self) -> None:
        self._polygon = QPolygonF()
        self._points = np.empty((0, 2))  # a view of the polygon's memory
        self._direct = self._check_direct()
        self.count = 0  # lines held

    def _reserve(self, points: int) -> None:
        if len(self._points) >= points:
            return
        size = max(points, 2 * len(self._points), 64)
        self._polygon.resize(size)
        buffer = shiboken6.VoidPtr(self._polygon.data(), size * 16, True)
        self._points = np.frombuffer(buffer, np.float64).reshape(size, 2)

    def _check_direct(self) -> bool:
        try:
            self._reserve(2)
            self._points[:2] = [[1.5, 2.5], [3.5, 4.5]]
        except Exception:  # noqa: BLE001 - any failure means: build the points instead
            return False
        return self._polygon.at(1) == QPointF(3.5, 4.5)

    def set_vertical(self, xs: np.ndarray, tops: np.ndarray, bottoms: np.ndarray) -> None:
        """One line per x, from its top to its bottom."""
        self.count = len(xs)
        if self._direct:
            self._reserve(2 * self.count)
            pairs = self._points[: 2 * self.count].reshape(self.count, 2, 2)
            pairs[:, :, 0] = xs[:, None]
            pairs[:, 0, 1] = tops
            pairs[:, 1, 1] = bottoms
        else:
            points = np.empty((self.count, 2, 2))
            points[:, :, 0], points[:, 0, 1], points[:, 1, 1] = xs[:, None], tops, bottoms
            self._polygon = QPolygonF([QPointF(x, y) for x, y in points.reshape(-1, 2).tolist()])

    def draw(self, painter: QPainter) -> None:
        if not self.count:
            return
        if self._direct:
            painter.drawLines(self._polygon.data(), self.count)
        else:
            painter.drawLines(self._polygon)


def _blend(a: QColor, b: QColor, t: float) -> QColor:
    """The colour `t` of the way from `a` to `b` (opaque)."""
    return QColor.fromRgbF(
        a.redF() + (b.redF() - a.redF()) * t,
        a.greenF() + (b.greenF() - a.greenF()) * t,
        a.blueF() + (b.blueF() - a.blueF()) * t,
    )


def second_accent(accent: QColor) -> QColor:
    """A colour to stand beside `accent`: the opposite hue at the same strength (a grey accent
    yields a darker or lighter grey)."""
    hue, sat, val, _ = accent.getHsvF()
    if hue < 0 or sat < 0.15:  # achromatic: vary the brightness instead
        return QColor.fromHsvF(0, 0, val - 0.35 if val > 0.5 else val + 0.35)
    return QColor.fromHsvF((hue + 0.5) % 1.0, min(1.0, sat * 1.1), val)


class WaveformView(QWidget):
    """Scrolling waveforms of the user's voice and Moshi's, with a level meter on each lane.

    `add_block(user, moshi, time)` takes one engine block of each voice (float32 at 24 kHz).
    `envelopes()` returns, per lane, the min/max of each 5 ms bin now in the window (oldest first).
    """

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setAccessibleName("Voice waveforms")
        self.setAccessibleDescription(
            "Scrolling waveforms of your voice (top) and Moshi's (bottom), each with a level meter"
        )
        self.setAttribute(Qt.WidgetAttribute.WA_OpaquePaintEvent)
        self.setMinimumSize(160, 72)

        self._window_bins = 8 * BINS_PER_SECOND
        self._ring = _EnvelopeRing(self._capacity_for(self._window_bins))
        self._carry = np.zeros((len(LANES), 0), np.float32)  # samples short of a whole bin
        self._meters = tuple(LevelMeter() for _ in LANES)
        self._first_time: float | None = None  # the time of the first bin, for the seconds grid

        self._shown = 0.0  # the stream position (in bins) at the right edge, for smooth scrolling
        self._lag = 0.0  # a smoothed lag of the view behind the newest data, in bins
        self._last_tick = 0.0
        self._timer = QTimer(self)
        self._timer.setInterval(FRAME_MS)
        self._timer.setTimerType(Qt.TimerType.PreciseTimer)
        self._timer.timeout.connect(self._tick)
        self._lines = (_PointPairs(), _PointPairs())
        self.paint_count = 0  # paint events so far (for tests and profiling)

    # The public API.

    def add_block(self, user: np.ndarray, moshi: np.ndarray, time: float) -> None:
        """Add one block of each voice (float32 samples at 24 kHz) that began `time` seconds into
        the conversation."""
        user = np.asarray(user, np.float32).reshape(-1)
        moshi = np.asarray(moshi, np.float32).reshape(-1)
        if user.shape != moshi.shape:
            raise ValueError(
                f"both voices need the same number of samples, got {user.size} and {moshi.size}"
            )
        if self._first_time is None:
            self._first_time = time - self._carry.shape[1] / SAMPLE_RATE
        for meter, samples in zip(self._meters, (user, moshi)):
            meter.feed(rms_dbfs(samples), time)

        samples = np.stack([user, moshi])  # [lane, T]
        if self._carry.shape[1]:
            samples = np.concatenate([self._carry, samples], axis=1)
        bins = decimate(samples)  # [lane, n, 2]
        self._carry = samples[:, bins.shape[1] * BIN_SAMPLES :].copy()
        self._ring.push(bins.transpose(1, 0, 2))

        if not self.isVisible():
            self._shown = float(self._ring.written)
            return
        self._shown = max(self._shown, self._ring.written - MAX_LAG_BINS)
        if not self._timer.isActive():
            self._last_tick = _time.monotonic()
            self._timer.start()

    def clear(self) -> None:
        """Forget all audio: empty lanes, meters at silence."""
        self._ring = _EnvelopeRing(self._ring.capacity)
        self._carry = np.zeros((len(LANES), 0), np.float32)
        self._first_time = None
        self._shown = self._lag = 0.0
        self._timer.stop()
        self.silence_meters()

    def silence_meters(self) -> None:
        """The audio stopped: both meters drop to silence (they run on the audio's clock, so
        without this they would hold their last level). The waveforms stay."""
        for meter in self._meters:
            meter.reset()
        self.update()

    def set_window_seconds(self, seconds: float) -> None:
        """Show the last `seconds` of audio (8 by default; 0.5 to 120)."""
        if not math.isfinite(seconds) or seconds <= 0:
            raise ValueError(f"the window must be a positive number of seconds, not {seconds}")
        seconds = min(max(seconds, MIN_WINDOW_SECONDS), MAX_WINDOW_SECONDS)
        self._window_bins = round(seconds * BINS_PER_SECOND)
        self._ring = self._ring.resized(self._capacity_for(self._window_bins))
        self.update()

    def window_seconds(self) -> float:
        return self._window_bins / BINS_PER_SECOND

    def envelopes(self) -> tuple[np.ndarray, np.ndarray]:
        """``(user, moshi)``: each ``[n, 2]`` float32, the (min, max) of each 5 ms bin now in the
        window, oldest first (n is at most the window's length in bins)."""
        written = self._ring.written
        bins = self._ring.span(written - self._window_bins, written)
        return bins[:, 0].copy(), bins[:, 1].copy()

    def levels(self) -> tuple[tuple[float, float], tuple[float, float]]:
        """``((level, peak), (level, peak))`` in dBFS for the user's lane and Moshi's."""
        return tuple((m.level_db, m.peak_db) for m in self._meters)  # type: ignore[return-value]

    def is_scrolling(self) -> bool:
        """Whether repaints are scheduled (new data not yet scrolled fully into view)."""
        return self._timer.isActive()

    def sizeHint(self) -> QSize:
        return QSize(640, 150)

    def minimumSizeHint(self) -> QSize:
        return QSize(160, 72)

    # Smooth scrolling.

    @staticmethod
    def _capacity_for(window_bins: int) -> int:
        # Room for the window, the scroll lag, and a column group beyond the left edge.
        return 2 * window_bins + MAX_LAG_BINS + BLOCK_BINS

    @Slot()
    def _tick(self) -> None:
        now = _time.monotonic()
        dt, self._last_tick = min(now - self._last_tick, 0.25), now
        written = self._ring.written
        lag = written - self._shown
        if lag <= 0 or not self.isVisible():
            self._shown = float(written)
            self._timer.stop()
            return
        # Aim to stay one block behind, so that blocks arriving a little early or late do not stall
        # the scroll; run a little faster or slower than real time to hold that distance.
        self._lag += (lag - self._lag) * min(1.0, dt / 0.5)
        speed = min(max(1.0 + (self._lag - BLOCK_BINS) / (2 * BLOCK_BINS), 0.5), 2.0)
        self._shown = min(self._shown + speed * BINS_PER_SECOND * dt, float(written))
        self.update()

    def showEvent(self, event: QShowEvent) -> None:
        self._shown = float(self._ring.written)
        super().showEvent(event)

    # Painting.

    def _colours(self) -> dict[str, QColor]:
        palette = self.palette()
        text = palette.color(QPalette.ColorRole.Text)
        base = palette.color(QPalette.ColorRole.Base)
        accent = palette.color(QPalette.ColorRole.Highlight)
        return {
            "window": palette.color(QPalette.ColorRole.Window),
            "lane": base,
            "border": _blend(base, text, 0.14),
            "grid": _blend(base, text, 0.07),
            "axis": _blend(base, text, 0.22),
            "label": _blend(text, base, 0.35),
            "track": _blend(base, text, 0.10),
            "peak": text,
            "You": accent,
            "Moshi": second_accent(accent),
        }

    def paintEvent(self, event: QPaintEvent) -> None:
        self.paint_count += 1
        if not self.isVisible():  # rendered offscreen (grab, render): show the newest data
            self._shown = float(self._ring.written)
        colours = self._colours()
        painter = QPainter(self)
        painter.fillRect(self.rect(), colours["window"])
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)

        margin, spacing, meter_width = MARGIN, SPACING, METER_WIDTH
        font = painter.font()
        font.setPointSizeF(max(font.pointSizeF() * 0.9, 7.0))
        font.setWeight(QFont.Weight.DemiBold)
        painter.setFont(font)
        metrics = painter.fontMetrics()
        gutter = max(metrics.horizontalAdvance(name) for name in LANES) + 12.0
        lane_height = (self.height() - 2 * margin - spacing) / 2
        plot_left = margin + gutter
        meter_left = self.width() - margin - meter_width
        plot_right = meter_left - spacing
        if lane_height < 8 or plot_right - plot_left < 16:
            painter.end()
            return

        for lane, name in enumerate(LANES):
            top = margin + lane * (lane_height + spacing)
            plot = QRectF(plot_left, top, plot_right - plot_left, lane_height)
            meter = QRectF(meter_left, top, meter_width, lane_height)
            colour = colours[name]

            painter.setPen(colours["label"])
            label = QRectF(margin, top, gutter - 8, lane_height)
            painter.drawText(
                label, Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter, name
            )

            painter.setPen(QPen(colours["border"], 1))
            painter.setBrush(colours["lane"])
            painter.drawRoundedRect(plot.adjusted(0.5, 0.5, -0.5, -0.5), 4, 4)
            painter.save()
            painter.setClipRect(plot.adjusted(1, 1, -1, -1))
            self._paint_grid(painter, plot, colours)
            self._paint_envelope(painter, plot, lane, colour)
            painter.restore()
            self._paint_meter(painter, meter, self._meters[lane], colour, colours)
        painter.end()

    def _paint_grid(self, painter: QPainter, plot: QRectF, colours: dict[str, QColor]) -> None:
        centre = plot.center().y()
        painter.setPen(QPen(colours["axis"], 1))
        painter.drawLine(QPointF(plot.left(), centre), QPointF(plot.right(), centre))
        if self._first_time is None:
            return
        # A faint line at each whole second of the conversation, scrolling with the audio.
        px_per_bin = plot.width() / self._window_bins
        right_time = self._first_time + self._shown / BINS_PER_SECOND
        painter.setPen(QPen(colours["grid"], 1))
        second = math.floor(right_time)
        while second > right_time - self._window_bins / BINS_PER_SECOND - 1:
            x = plot.right() - (right_time - second) * BINS_PER_SECOND * px_per_bin
            painter.drawLine(QPointF(x, plot.top()), QPointF(x, plot.bottom()))
            second -= 1

    def _paint_envelope(self, painter: QPainter, plot: QRectF, lane: int, colour: QColor) -> None:
        # One vertical line per group of bins, from the group's max to its min. A group is as many
        # whole bins as fit in one device pixel (at least one), aligned to the stream so that the
        # groups stay the same as they scroll; lines that share a pixel column add up to that
        # column's envelope, and lines of bins wider than a pixel are as wide as the bins.
        dpr = painter.device().devicePixelRatioF()
        px_per_bin = plot.width() / self._window_bins
        group = max(1, int(1 / (px_per_bin * dpr)))
        shown = self._shown
        start = (math.floor(shown - self._window_bins) // group - 1) * group
        first = max(start, self._ring.written - self._ring.capacity, 0)
        first += -first % group
        bins = self._ring.span(first, math.ceil(shown))[:, lane]  # [n, (min, max)]
        if len(bins) == 0:
            return
        if group > 1:
            edges = np.arange(0, len(bins), group)
            lows = np.minimum.reduceat(bins[:, 0], edges)
            highs = np.maximum.reduceat(bins[:, 1], edges)
            centres = first + edges + np.minimum(group, len(bins) - edges) / 2
        else:
            lows, highs = bins[:, 0], bins[:, 1]
            centres = first + np.arange(len(bins)) + 0.5
        xs = plot.right() - (shown - centres) * px_per_bin
        middle, half = plot.center().y(), plot.height() / 2 - 3
        tops = np.minimum(middle - highs * half, middle - 0.5)  # silence: a 1-px line
        bottoms = np.maximum(middle - lows * half, middle + 0.5)
        lines = self._lines[lane]
        lines.set_vertical(xs, tops, bottoms)
        pen = QPen(colour, max(group * px_per_bin, 1 / dpr))
        pen.setCapStyle(Qt.PenCapStyle.FlatCap)
        painter.setPen(pen)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing, False)
        lines.draw(painter)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing, True)

    @staticmethod
    def _paint_meter(
        painter: QPainter,
        rect: QRectF,
        meter: LevelMeter,
        colour: QColor,
        colours: dict[str, QColor],
    ) -> None:
        def height_of(db: float) -> float:
            return rect.height() * min(max((db - METER_FLOOR_DB) / -METER_FLOOR_DB, 0.0), 1.0)

        painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(colours["track"])
        painter.drawRoundedRect(rect, 3, 3)
        level = height_of(meter.level_db)
        if level > 0:
            painter.setBrush(colour)
            painter.drawRoundedRect(
                QRectF(rect.left(), rect.bottom() - level, rect.width(), level), 3, 3
            )
        peak = height_of(meter.peak_db)
        if peak > 0:
            y = min(rect.bottom() - peak, rect.bottom() - 2)
            painter.fillRect(QRectF(rect.left(), y, rect.width(), 2), colours["peak"])
