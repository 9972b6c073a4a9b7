"""Render the app icon's PNGs from its SVG: `python packaging/make_icons.py`.

Reads resources/icons/hicolor/scalable/apps/moshi-desktop.svg and writes
resources/icons/hicolor/<N>x<N>/apps/moshi-desktop.png for every size in
`app.appinfo.ICON_SIZES`, with Qt's SVG renderer (PySide6.QtSvg, in PySide6-Essentials).
Run it after editing the SVG and commit the PNGs: the app loads the PNGs, so it needs no SVG
support at run time.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from PySide6.QtCore import Qt  # noqa: E402
from PySide6.QtGui import QGuiApplication, QImage, QPainter  # noqa: E402
from PySide6.QtSvg import QSvgRenderer  # noqa: E402

from app.appinfo import ICON_SIZES, ICON_SVG, icon_png  # noqa: E402


def render(svg: Path, size: int) -> QImage:
    """The SVG drawn into a transparent `size` x `size` image."""
    renderer = QSvgRenderer(str(svg))
    if not renderer.isValid():
        raise SystemExit(f"make_icons: cannot read {svg}")
    image = QImage(size, size, QImage.Format.Format_ARGB32)
    image.fill(Qt.GlobalColor.transparent)
    painter = QPainter(image)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    renderer.render(painter)
    painter.end()
    return image


def main() -> int:
    _app = QGuiApplication.instance() or QGuiApplication(sys.argv[:1])
    for size in ICON_SIZES:
        path = icon_png(size)
        path.parent.mkdir(parents=True, exist_ok=True)
        if not render(ICON_SVG, size).save(str(path), "PNG"):
            raise SystemExit(f"make_icons: cannot write {path}")
        print(path.relative_to(ROOT))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
