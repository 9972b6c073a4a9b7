"""The app's icon as a QIcon, from the PNGs in app/resources (no SVG support needed to run)."""

from __future__ import annotations

from PySide6.QtCore import QSize
from PySide6.QtGui import QIcon

from app import appinfo


def app_icon() -> QIcon:
    """Every rendered size of the icon; Qt picks the nearest for each use."""
    icon = QIcon()
    for size in appinfo.ICON_SIZES:
        path = appinfo.icon_png(size)
        if path.is_file():
            icon.addFile(str(path), QSize(size, size))
    return icon
