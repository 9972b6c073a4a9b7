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
from model.catalog import CATALOG

from .app_icon import app_icon


def _link(url: str, title: str) -> str:
    return f'<a href="{html.escape(url)}">{html.escape(title)}</a>'


def weights_html(model_source: str | None) -> str:
    """A paragraph on the licence of the chosen model's weights (its catalog entry's), or on where
    to find it for a model the catalog does not know."""
    entry = CATALOG.get(model_source or "")
    if entry is None:
        chosen = f" ({html.escape(model_source)})" if model_source else ""
        return (
            f"<p>The weights of the model you chose{chosen} are not in this app's catalog: they "
            "come with their publisher's licence, on their repository's page. The app downloads "
            "weights from Hugging Face; it does not include them.</p>"
        )
    licence = entry.licence
    return (
        f"<p>The model you chose, {html.escape(entry.title)} ({_link(entry.url, entry.repo)}), "
        f"is published by {html.escape(entry.publisher)} under {_link(licence.url, licence.name)} "
        f"({html.escape(licence.full_name)}): {html.escape(licence.terms)}. The app downloads "
        "it from Hugging Face; it does not include it.</p>"
    )


def about_html(model_source: str | None = None) -> str:
    """The dialog's text: version, components, links and licences (those of the weights of
    `model_source`, the chosen model), as rich text."""
    versions = {**appinfo.component_versions(), "Qt": qVersion(), "PySide6": PySide6.__version__}
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
        "<p>The model code is our own PyTorch implementation of Kyutai's Moshi.</p>"
        + weights_html(model_source)
        + f"<p>It is built on:</p><ul>{third_party}</ul>"
    )


class AboutDialog(QDialog):
    """`model_source`: the model chosen in the settings, whose weights' licence it shows."""

    def __init__(self, parent: QWidget | None = None, model_source: str | None = None):
        super().__init__(parent)
        self.setWindowTitle(f"About {appinfo.DISPLAY_NAME}")
        icon = QLabel()
        icon.setPixmap(app_icon().pixmap(64, 64))
        icon.setAlignment(Qt.AlignmentFlag.AlignTop)
        icon.setAccessibleName(f"{appinfo.DISPLAY_NAME} icon")
        self.text = QLabel(about_html(model_source))
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
