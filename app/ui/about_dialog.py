"""Help → About: the app's name and version, what it runs on, links and licence notes.

Everything it shows comes from `app.appinfo` (plain data) and Qt itself; it never imports torch
(PyTorch's version is read from its installed metadata).
"""

from __future__ import annotations

import html

import PySide6
from PySide6.QtCore import Qt, qVersion
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QHBoxLayout,
    QLabel,
    QVBoxLayout,
    QWidget,
)

from app import appinfo

from .app_icon import app_icon


def _link(url: str, title: str) -> str:
    return f'<a href="{html.escape(url)}">{html.escape(title)}</a>'


def about_html() -> str:
    """The dialog's text: version, components, links and licences, as rich text."""
    versions = {**appinfo.component_versions(), "Qt": qVersion(), "PySide6": PySide6.__version__}
    weights = appinfo.WEIGHTS_LICENCE
    third_party = "".join(
        f"<li>{html.escape(item.component)}: {_link(item.url, item.licence)}</li>"
        for item in appinfo.THIRD_PARTY
    )
    links = " · ".join(_link(link.url, link.title) for link in appinfo.LINKS)
    return (
        f"<h3>{html.escape(appinfo.DISPLAY_NAME)} {html.escape(appinfo.VERSION)}</h3>"
        f"<p>{html.escape(appinfo.DESCRIPTION)}</p>"
        "<p>"
        + " · ".join(f"{html.escape(k)} {html.escape(v)}" for k, v in versions.items())
        + "</p>"
        f"<p>{links}</p>"
        "<p>The model code is our own PyTorch implementation of Kyutai's Moshi. "
        f"Moshi's weights are Kyutai's, published under {_link(weights.url, weights.licence)} "
        "(Creative Commons Attribution 4.0): credit Kyutai when you share them or work "
        "derived from them. The app downloads them from Hugging Face; it does not include "
        "them.</p>"
        f"<p>It is built on:</p><ul>{third_party}</ul>"
    )


class AboutDialog(QDialog):
    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle(f"About {appinfo.DISPLAY_NAME}")
        icon = QLabel()
        icon.setPixmap(app_icon().pixmap(64, 64))
        icon.setAlignment(Qt.AlignmentFlag.AlignTop)
        icon.setAccessibleName(f"{appinfo.DISPLAY_NAME} icon")
        self.text = QLabel(about_html())
        self.text.setTextFormat(Qt.TextFormat.RichText)
        self.text.setWordWrap(True)
        self.text.setOpenExternalLinks(True)
        self.text.setTextInteractionFlags(
            Qt.TextInteractionFlag.TextBrowserInteraction
            | Qt.TextInteractionFlag.TextSelectableByKeyboard
        )
        self.text.setMinimumWidth(460)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        row = QHBoxLayout()
        row.addWidget(icon)
        row.addWidget(self.text, 1)
        layout = QVBoxLayout(self)
        layout.addLayout(row)
        layout.addWidget(buttons)
