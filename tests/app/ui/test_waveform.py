"""WaveformView: envelopes of both voices, the scrolling window, level meters, throttled repaints."""

from __future__ import annotations

import time

import numpy as np
import pytest
from PySide6.QtGui import QColor, QImage, QPalette
from PySide6.QtWidgets import QApplication
from pytestqt.qtbot import QtBot

from app.ui.waveform import (
    BLOCK_BINS,
    FRAME_MS,
    MARGIN,
    METER_WIDTH,
    PEAK_HOLD_SECONDS,
    SILENCE_DB,
    SPACING,
    WaveformView,
    decimate,
    rms_dbfs,
    second_accent,
)

BLOCK = 1920  # samples in one engine block: 80 ms at 24 kHz
SILENT = np.zeros(BLOCK, np.float32)


def constant(value: float) -> np.ndarray:
    return np.full(BLOCK, value, np.float32)


def sine(amplitude: float, hz: float = 200.0) -> np.ndarray:
    # 200 Hz: one period per 5 ms bin, so each bin holds the whole swing.
    return (amplitude * np.sin(2 * np.pi * hz * np.arange(BLOCK) / 24_000)).astype(np.float32)


@pytest.fixture
def view(qtbot: QtBot) -> WaveformView:
    view = WaveformView()
    qtbot.addWidget(view)
    view.resize(640, 160)
    return view


@pytest.fixture
def shown(qtbot: QtBot, view: WaveformView) -> WaveformView:
    view.show()
    qtbot.waitExposed(view)
    return view


def pixels(image: QImage) -> np.ndarray:
    """``[h, w]`` uint32 ARGB values of `image`."""
    image = image.convertToFormat(QImage.Format.Format_ARGB32)
    rows = np.frombuffer(image.constBits(), np.uint8).reshape(image.height(), -1)
    return rows[:, : image.width() * 4].copy().view(np.uint32)


def count_colour(image: QImage, colour: QColor) -> int:
    return int(np.count_nonzero(pixels(image) == (colour.rgba() & 0xFFFFFFFF)))


def test_a_constant_block_gives_flat_envelopes(view: WaveformView) -> None:
    view.add_block(constant(0.5), SILENT, 0.0)
    user, moshi = view.envelopes()
    assert user.shape == moshi.shape == (BLOCK_BINS, 2)  # 16 bins of 5 ms: (min, max) each
    assert np.all(user == 0.5)
    assert np.all(moshi == 0.0)


def test_envelopes_hold_each_bins_min_and_max_in_order(view: WaveformView) -> None:
    view.add_block(sine(0.25), constant(-0.5), 0.0)
    view.add_block(constant(0.75), sine(0.5), 0.08)
    user, moshi = view.envelopes()
    assert user.shape == (2 * BLOCK_BINS, 2)
    np.testing.assert_allclose(user[:BLOCK_BINS], [[-0.25, 0.25]] * BLOCK_BINS, atol=1e-3)
    np.testing.assert_array_equal(user[BLOCK_BINS:], [[0.75, 0.75]] * BLOCK_BINS)
    np.testing.assert_array_equal(moshi[:BLOCK_BINS], [[-0.5, -0.5]] * BLOCK_BINS)
    np.testing.assert_allclose(moshi[BLOCK_BINS:], [[-0.5, 0.5]] * BLOCK_BINS, atol=1e-3)


def test_a_ramp_lands_in_the_right_bins(view: WaveformView) -> None:
    ramp = np.arange(BLOCK, dtype=np.float32) / BLOCK  # 0 .. 1 across the block
    view.add_block(ramp, -ramp, 0.0)
    user, moshi = view.envelopes()
    bins = np.arange(BLOCK_BINS)
    np.testing.assert_allclose(user[:, 0], bins * 120 / BLOCK)
    np.testing.assert_allclose(user[:, 1], (bins * 120 + 119) / BLOCK)
    np.testing.assert_allclose(moshi[:, 0], -user[:, 1])


def test_blocks_of_any_length_carry_the_rest_to_the_next(view: WaveformView) -> None:
    view.add_block(constant(0.25)[:100], SILENT[:100], 0.0)  # less than a bin
    assert view.envelopes()[0].shape == (0, 2)
    view.add_block(constant(0.5)[:140], SILENT[:140], 0.1)  # 240 samples: two bins
    user, _ = view.envelopes()
    np.testing.assert_array_equal(user, [[0.25, 0.5], [0.5, 0.5]])


def test_bad_samples_do_not_break_the_envelopes(view: WaveformView) -> None:
    block = constant(0.5)
    block[:10] = np.nan
    block[500] = 3.0  # beyond full scale: clipped
    view.add_block(block, SILENT, 0.0)
    user, _ = view.envelopes()
    assert np.all(np.isfinite(user)) and user.max() == 1.0 and user.min() >= -1.0


def test_the_voices_must_match_in_length(view: WaveformView) -> None:
    with pytest.raises(ValueError, match="same number of samples"):
        view.add_block(SILENT, SILENT[:960], 0.0)


def test_the_window_drops_what_is_older(view: WaveformView) -> None:
    assert view.window_seconds() == 8.0
    view.set_window_seconds(1.0)  # 200 bins: 12.5 blocks
    for i in range(13):
        view.add_block(constant(0.9), constant(-0.9), i * 0.08)
    for i in range(13, 26):
        view.add_block(constant(0.1), constant(-0.1), i * 0.08)
    user, moshi = view.envelopes()
    assert len(user) == len(moshi) == 200
    assert np.all(user == 0.1) and np.all(moshi == -0.1)


def test_changing_the_window_keeps_the_newest_audio(view: WaveformView) -> None:
    for i in range(25):  # 2 s
        view.add_block(constant(i / 25), SILENT, i * 0.08)
    before, _ = view.envelopes()
    assert len(before) == 25 * BLOCK_BINS
    view.set_window_seconds(1.0)
    after, _ = view.envelopes()
    np.testing.assert_array_equal(after, before[-200:])
    view.set_window_seconds(8.0)
    wider, _ = view.envelopes()
    assert 200 <= len(wider) <= len(before)
    np.testing.assert_array_equal(wider, before[-len(wider) :])


def test_the_window_must_be_positive(view: WaveformView) -> None:
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError):
            view.set_window_seconds(bad)
    view.set_window_seconds(0.01)
    assert view.window_seconds() == 0.5  # the shortest window


def test_clear(view: WaveformView) -> None:
    view.add_block(constant(0.5), constant(0.5), 0.0)
    view.clear()
    user, moshi = view.envelopes()
    assert len(user) == len(moshi) == 0
    assert view.levels() == ((SILENCE_DB, SILENCE_DB), (SILENCE_DB, SILENCE_DB))


def test_rms_and_decimation_helpers() -> None:
    assert rms_dbfs(constant(1.0)) == pytest.approx(0.0)
    assert rms_dbfs(sine(1.0)) == pytest.approx(-3.01, abs=0.01)
    assert rms_dbfs(SILENT) == SILENCE_DB
    assert decimate(np.zeros((2, 250), np.float32)).shape == (2, 2, 2)


def test_the_meters_show_a_loud_voice_against_a_silent_one(view: WaveformView) -> None:
    view.add_block(sine(0.5), SILENT, 0.0)  # RMS 0.354: -9.03 dBFS
    (user_level, user_peak), (moshi_level, moshi_peak) = view.levels()
    assert user_level == pytest.approx(-9.03, abs=0.01) and user_peak == user_level
    assert moshi_level == moshi_peak == SILENCE_DB

    image = view.grab().toImage()  # the meter at the right edge of each lane
    accent = view.palette().color(QPalette.ColorRole.Highlight)
    x = int(view.width() - MARGIN - METER_WIDTH / 2)
    column = pixels(image)[:, x]
    half = view.height() // 2
    assert np.count_nonzero(column[:half] == (accent.rgba() & 0xFFFFFFFF)) > 20
    moshi_accent = second_accent(accent)
    assert np.count_nonzero(column[half:] == (moshi_accent.rgba() & 0xFFFFFFFF)) == 0


def test_the_meter_falls_and_its_peak_holds_then_falls(view: WaveformView) -> None:
    view.add_block(sine(0.5), SILENT, 0.0)
    for frame in range(1, 13):  # 0.96 s of silence
        view.add_block(SILENT, SILENT, frame * 0.08)
    (level, peak), _ = view.levels()
    assert level == pytest.approx(-9.03 - 24 * 0.96, abs=0.01)  # falls at 24 dB/s
    assert peak == pytest.approx(-9.03, abs=0.01)  # held
    for frame in range(13, 26):  # to 2.0 s: held for 1.5 s, then 0.5 s of falling
        view.add_block(SILENT, SILENT, frame * 0.08)
    (level, peak), _ = view.levels()
    assert PEAK_HOLD_SECONDS == 1.5
    assert peak == pytest.approx(-9.03 - 24 * 0.5, abs=0.01)
    assert level == pytest.approx(-9.03 - 24 * 2.0, abs=0.01)


def test_renders_both_voices_in_palette_colours(qtbot: QtBot, shown: WaveformView) -> None:
    background = shown.grab().toImage()
    for i in range(50):
        shown.add_block(sine(0.6), sine(0.3, 440.0), i * 0.08)
    qtbot.waitUntil(lambda: not shown.is_scrolling())
    image = shown.grab().toImage()
    assert np.count_nonzero(pixels(image) != pixels(background)) > 1000
    accent = shown.palette().color(QPalette.ColorRole.Highlight)
    assert count_colour(image, accent) > 5000  # the user's lane: a band of solid colour
    assert count_colour(image, second_accent(accent)) > 2000  # Moshi's: half as loud


def test_renders_sharp_at_a_device_pixel_ratio_of_two(view: WaveformView) -> None:
    for i in range(50):
        view.add_block(sine(0.6), sine(0.3), i * 0.08)
    image = QImage(view.size() * 2, QImage.Format.Format_ARGB32_Premultiplied)
    image.setDevicePixelRatio(2)
    image.fill(0)
    view.render(image)
    accent = view.palette().color(QPalette.ColorRole.Highlight)
    colour = pixels(image) == (accent.rgba() & 0xFFFFFFFF)
    assert np.count_nonzero(colour) > 4 * 5000
    # Every device pixel column under the waveform is filled: no gaps between the lines.
    middle = image.height() // 4  # the centre line of the user's lane
    row = colour[
        middle, : int(2 * (view.width() - MARGIN - METER_WIDTH - SPACING))
    ]  # not the meter
    filled = np.flatnonzero(row)
    assert filled.size and np.all(row[filled[0] : filled[-1] + 1])


def test_repaints_are_throttled_to_the_frame_rate(
    qtbot: QtBot, qapp: QApplication, shown: WaveformView
) -> None:
    qtbot.waitUntil(lambda: shown.paint_count > 0)  # the first paint, on showing
    before = shown.paint_count
    started = time.perf_counter()
    for i in range(50):
        shown.add_block(sine(0.5), sine(0.5), i * 0.08)
        qapp.processEvents()  # a repaint asked for directly would happen here, every time
    elapsed_ms = 1000 * (time.perf_counter() - started)
    paints = shown.paint_count - before
    assert paints <= elapsed_ms / FRAME_MS + 2, "paints follow the frame timer, not the blocks"
    assert paints < 50
    assert shown.is_scrolling()
    # Once the view has scrolled to the newest data, the timer stops: an idle view costs nothing.
    qtbot.waitUntil(lambda: not shown.is_scrolling())
    idle = shown.paint_count
    qapp.processEvents()
    assert shown.paint_count == idle


def test_a_hidden_view_schedules_no_repaints(view: WaveformView) -> None:
    for i in range(5):
        view.add_block(sine(0.5), sine(0.5), i * 0.08)
    assert not view.is_scrolling() and view.paint_count == 0


def test_paints_a_1000_pixel_wide_view_within_a_frame(view: WaveformView) -> None:
    view.resize(1080, 200)  # about 1000 px of waveform beside the labels and meters
    rng = np.random.default_rng(0)
    for i in range(110):  # the whole 8 s window, as dense as audio gets
        noise = rng.standard_normal((2, BLOCK)).astype(np.float32) * 0.3
        view.add_block(noise[0], noise[1], i * 0.08)
    image = QImage(view.size(), QImage.Format.Format_ARGB32_Premultiplied)
    view.render(image)
    times = []
    for _ in range(15):
        started = time.perf_counter()
        view.render(image)
        times.append(time.perf_counter() - started)
    # Measured at about 2 ms; the bound leaves room for a slow, busy machine.
    assert 1000 * float(np.median(times)) < FRAME_MS / 2


def test_colours_come_from_the_palette(view: WaveformView) -> None:
    palette = view.palette()
    palette.setColor(QPalette.ColorRole.Highlight, QColor("#2e7d32"))
    view.setPalette(palette)
    for i in range(20):
        view.add_block(sine(0.6), sine(0.6), i * 0.08)
    image = view.grab().toImage()
    assert count_colour(image, QColor("#2e7d32")) > 1000
    assert count_colour(image, second_accent(QColor("#2e7d32"))) > 1000
    grey = second_accent(QColor("#808080"))  # a grey accent: a different grey beside it
    assert grey.saturation() == 0 and grey != QColor("#808080")


def test_accessible_names(view: WaveformView) -> None:
    assert view.accessibleName() and view.accessibleDescription()
