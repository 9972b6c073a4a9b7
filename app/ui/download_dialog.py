"""The model download dialog: offer the download, show its progress, cancel, retry.

    open: "Checking…" (fetch.start_check) --CheckResult--> cached: accept at once
                                                       --> offer: size, licence, [Download] [Close]
    Download (fetch.start) --FetchProgress...--> bar, file n of m, speed, time left, [Cancel]
        --FetchDone--> accept (`folder` says where the files are)
        --FetchCancelled--> "kept; Resume continues", [Resume] [Close]
        --FetchFailed--> the message (or which files are missing and where else to get them),
                         [Retry] [Close]

The download itself runs on a plain Python thread in `app.engine.fetch.ModelFetch`; this dialog only
reads its `events` queue, on a timer in the GUI thread. Any object with `start()`, `cancel()`,
`events` (and optionally `start_check()` and `source`) will do, which is how the tests script it.
Esc cancels a running download, and closes the dialog otherwise.
"""

from __future__ import annotations

import html
import math
import queue
import re

from PySide6.QtCore import Qt, QTimer, Slot
from PySide6.QtGui import QCloseEvent, QResizeEvent, QShowEvent
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QLabel,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from app.engine.fetch import (
    CheckResult,
    FetchCancelled,
    FetchDone,
    FetchFailed,
    FetchProgress,
)
from model.catalog import CATALOG, repo_url
from model.files import format_bytes, has_repo_id_form

POLL_MS = 100
TITLES = {  # what the dialog is doing; "failed" says which failure
    "checking": "Checking the model",
    "offer": "Download the model",
    "downloading": "Downloading the model",
    "cancelling": "Downloading the model",
    "cancelled": "Download paused",
    "failed": "Download failed",
}
MISSING_TITLE = "Model files missing"  # the check found files missing that cannot be downloaded
UNUSABLE_TITLE = "Model cannot be used"  # a folder this app cannot run (another kind of model)
_BAR_STEPS = 1000  # QProgressBar holds an int: bytes of a 15 GB model would not fit
LOCAL_FOLDER_HINT = "Settings → Model → Local folder…"


def format_eta(seconds: float) -> str:
    seconds = math.ceil(seconds)
    if seconds < 60:
        return f"about {seconds} s left"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"about {minutes} min left"
    return f"about {minutes // 60} h {minutes % 60} min left"


def _sentence(text: str) -> str:
    text = text.strip()
    if not text:
        return text
    if not any(c in text.split()[0] for c in "./\\"):  # a file or repository name stays as it is
        text = text[0].upper() + text[1:]
    return text if text.endswith((".", "!", "?", "…")) else text + "."


def _link(url: str, text: str) -> str:
    return f'<a href="{html.escape(url)}">{html.escape(text)}</a>'


def licence_html(source: str) -> str:
    """The licence of the weights at `source` as its catalog entry gives it (linked), and what a
    gated repository asks before its files can be downloaded; for a repository the catalog does
    not know, where to read its licence."""
    entry = CATALOG.get(source)
    if entry is None:
        if not has_repo_id_form(source):
            return "Read the licence of the model's weights before you download them."
        return (
            f"{html.escape(source)} is not in this app's catalog: read its weights' licence on "
            f"{_link(repo_url(source), 'its page')} before you download them."
        )
    licence = entry.licence
    text = (
        f"Weights published by {html.escape(entry.publisher)} under "
        f"{_link(licence.url, licence.name)} ({html.escape(licence.full_name)}): "
        f"{html.escape(licence.terms)}."
    )
    if entry.gated:
        text += (
            f"<br><b>Gated:</b> accept its licence on {_link(entry.url, 'its page')} (logged in "
            "to Hugging Face), then give this app your token: <code>hf auth login</code> (or "
            "<code>huggingface-cli login</code>) in a terminal, or the HF_TOKEN environment "
            "variable."
        )
    return text


_URL = re.compile(r"https?://[^\s<>\"']+?(?=[.,;:)]*(?:\s|$))")


def _message_html(text: str) -> str:
    """A message as one sentence of rich text, its web addresses made links."""
    escaped = html.escape(_sentence(text))
    return _URL.sub(lambda m: f'<a href="{m[0]}">{m[0]}</a>', escaped)


class DownloadDialog(QDialog):
    """Offers the model at `fetch.source` for download and follows the download to its end.

    After `accept()`, `folder` is where the model's files are."""

    def __init__(self, fetch, parent: QWidget | None = None, *, poll_ms: int = POLL_MS):
        super().__init__(parent)
        self.fetch = fetch
        self.folder: str | None = None
        self.state = ""
        self._retry = self._check  # what Retry does: check again, or download again
        self.setMinimumWidth(460)

        source = getattr(fetch, "source", "") or "the model"
        self.title_label = QLabel(f"<b>{html.escape(source)}</b>")
        self.title_label.setAccessibleName("Model")
        self.title_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.description_label = QLabel()
        self.description_label.setAccessibleName("Model description")
        self.description_label.setWordWrap(True)
        self.description_label.setTextFormat(Qt.TextFormat.RichText)
        self.description_label.hide()
        self.size_label = QLabel()
        self.size_label.setAccessibleName("Download size")
        self.advice_label = QLabel()
        self.advice_label.setAccessibleName("Before you download")
        self.advice_label.setWordWrap(True)
        self.advice_label.setTextFormat(Qt.TextFormat.PlainText)
        self.advice_label.setStyleSheet("color: #b35900;")
        self.advice_label.hide()
        self.licence_label = QLabel(licence_html(getattr(fetch, "source", "") or ""))
        self.licence_label.setAccessibleName("Licence")
        self.licence_label.setWordWrap(True)
        self.licence_label.setOpenExternalLinks(True)
        self.licence_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextBrowserInteraction)

        self.file_label = QLabel()
        self.file_label.setAccessibleName("File being downloaded")
        self.progress_bar = QProgressBar()
        self.progress_bar.setAccessibleName("Download progress")
        self.progress_bar.setRange(0, _BAR_STEPS)
        self.bytes_label = QLabel()
        self.bytes_label.setAccessibleName("Downloaded")
        self.speed_label = QLabel()
        self.speed_label.setAccessibleName("Speed and time left")
        self.message_label = QLabel()
        self.message_label.setAccessibleName("Message")
        self.message_label.setWordWrap(True)
        self.message_label.setTextFormat(Qt.TextFormat.RichText)
        self.message_label.setOpenExternalLinks(True)  # a gated repository's page, say
        self.message_label.setTextInteractionFlags(
            Qt.TextInteractionFlag.TextBrowserInteraction
            | Qt.TextInteractionFlag.TextSelectableByMouse
        )

        self.download_button = QPushButton("&Download")
        self.cancel_button = QPushButton("&Cancel")
        self.cancel_button.setToolTip("Stop the download; what was downloaded is kept")
        self.retry_button = QPushButton("&Retry")
        self.close_button = QPushButton("C&lose")
        self.buttons = QDialogButtonBox()
        self.buttons.addButton(self.download_button, QDialogButtonBox.ButtonRole.ActionRole)
        self.buttons.addButton(self.retry_button, QDialogButtonBox.ButtonRole.ActionRole)
        self.buttons.addButton(self.cancel_button, QDialogButtonBox.ButtonRole.RejectRole)
        self.buttons.addButton(self.close_button, QDialogButtonBox.ButtonRole.RejectRole)
        self.download_button.clicked.connect(self._download)
        self.retry_button.clicked.connect(self._on_retry)
        self.cancel_button.clicked.connect(self._cancel)
        self.close_button.clicked.connect(self.reject)

        layout = QVBoxLayout(self)
        for widget in (self.title_label, self.description_label, self.size_label):
            layout.addWidget(widget)
        layout.addWidget(self.advice_label)
        layout.addWidget(self.licence_label)
        layout.addSpacing(8)
        for widget in (self.file_label, self.progress_bar, self.bytes_label, self.speed_label):
            layout.addWidget(widget)
        layout.addWidget(self.message_label)
        layout.addStretch(1)
        layout.addWidget(self.buttons)

        self.timer = QTimer(self)
        self.timer.setInterval(poll_ms)
        self.timer.timeout.connect(self.drain)
        self.timer.start()
        self.finished.connect(self.timer.stop)
        self._check()

    # --- States ----------------------------------------------------------------------------------

    def _enter(self, state: str, message: str = "", title: str = "") -> None:
        self.state = state
        self.setWindowTitle(title or TITLES[state])
        downloading = state in ("downloading", "cancelling")
        shown = downloading or (state == "cancelled" and bool(self.file_label.text()))
        self.progress_bar.setVisible(shown)
        for label in (self.file_label, self.bytes_label, self.speed_label):
            label.setVisible(shown and (downloading or bool(label.text())))
        self.size_label.setVisible(bool(self.size_label.text()))
        self.download_button.setVisible(state in ("checking", "offer", "cancelled"))
        self.download_button.setEnabled(state != "checking")
        self.download_button.setText("&Resume" if state == "cancelled" else "&Download")
        self.retry_button.setVisible(state == "failed")
        self.cancel_button.setVisible(downloading)
        self.cancel_button.setEnabled(state == "downloading")
        self.close_button.setVisible(not downloading)
        self.message_label.setText(message)
        self.message_label.setVisible(bool(message))
        default = {
            "offer": self.download_button,
            "cancelled": self.download_button,
            "failed": self.retry_button,
            "downloading": self.cancel_button,
        }.get(state, self.close_button)
        default.setDefault(True)
        default.setFocus()
        self._fit_height()

    def _fit_height(self) -> None:
        """Tall enough for the wrapped text (licence, message) at the present width: Qt does
        not apply a layout's height-for-width to a window by itself."""
        need = self.heightForWidth(self.width())
        if need > 0:
            self.setMinimumHeight(need)
            if self.height() < need:
                self.resize(self.width(), need)

    def showEvent(self, event: QShowEvent) -> None:
        super().showEvent(event)
        self._fit_height()

    def resizeEvent(self, event: QResizeEvent) -> None:
        super().resizeEvent(event)
        if event.size().width() != event.oldSize().width():
            self._fit_height()

    @Slot()
    def _check(self) -> None:
        self._retry = self._check
        start_check = getattr(self.fetch, "start_check", None)
        if start_check is None:  # a fetch that cannot check: offer it as it is
            self._enter("offer")
            return
        self.size_label.setText("Checking what is already downloaded…")
        self._enter("checking")
        start_check()

    @Slot()
    def _download(self) -> None:
        self._retry = self._download
        self.file_label.setText("Starting the download…")
        self.progress_bar.setRange(0, 0)  # busy until the first bytes say how far
        self.bytes_label.clear()
        self.speed_label.clear()
        self._enter("downloading")
        try:
            self.fetch.start()
        except RuntimeError as e:  # the last download has not finished stopping
            self._enter("failed", _message_html(str(e)))

    @Slot()
    def _cancel(self) -> None:
        if self.state != "downloading":
            return
        self.fetch.cancel()
        self.cancel_button.setText("Cancelling…")
        self._enter("cancelling")

    @Slot()
    def _on_retry(self) -> None:
        self._retry()

    def reject(self) -> None:
        """Esc and Cancel stop a running download (the dialog stays, to say so); otherwise the
        dialog closes."""
        if self.state == "downloading":
            self._cancel()
        elif self.state != "cancelling":
            super().reject()

    def closeEvent(self, event: QCloseEvent) -> None:
        # The window's close button closes even mid-download; the download stops at its next
        # piece of data, and what it fetched stays for next time.
        if self.state in ("downloading", "cancelling"):
            self.fetch.cancel()
            self.state = "closed"
        super().closeEvent(event)

    # --- Events ----------------------------------------------------------------------------------

    @Slot()
    def drain(self) -> None:
        """Handle every event the fetch has put since the last call; of a run of progress
        updates only the newest is drawn."""
        latest: FetchProgress | None = None
        while self.state != "closed":
            try:
                event = self.fetch.events.get_nowait()
            except queue.Empty:
                break
            if isinstance(event, FetchProgress):
                latest = event
                continue
            if latest is not None:
                self._show_progress(latest)
                latest = None
            self._handle(event)
        if latest is not None and self.state in ("downloading", "cancelling"):
            self._show_progress(latest)

    def _handle(self, event: object) -> None:
        if isinstance(event, CheckResult):
            self._show_check(event)
        elif isinstance(event, FetchDone):
            self.folder = event.folder
            self.state = "closed"
            self.accept()
        elif isinstance(event, FetchCancelled):
            self.cancel_button.setText("&Cancel")
            self.speed_label.clear()
            self._enter(
                "cancelled",
                "Download cancelled. What was downloaded is kept: <b>Resume</b> continues "
                "where it stopped, now or the next time you download this model.",
            )
        elif isinstance(event, FetchFailed):
            self.cancel_button.setText("&Cancel")
            if event.missing:
                self._enter("failed", _missing_html(event.missing, event.reason))
            else:
                self._enter("failed", _message_html(event.message))

    def _show_check(self, result: CheckResult) -> None:
        if result.cached and result.folder:
            self.folder = result.folder
            self.state = "closed"
            self.accept()
            return
        if result.description:
            self.description_label.setText(html.escape(result.description).replace("\n", "<br>"))
            self.description_label.show()
        self.advice_label.setText(result.advice)
        self.advice_label.setVisible(bool(result.advice))
        count = len(result.files)
        files = f"{count} files" if count != 1 else "1 file"
        entry = CATALOG.get(result.source)
        if result.total_size is not None:
            self.size_label.setText(f"Download size: {format_bytes(result.total_size)} ({files})")
        elif entry is not None:  # the hub did not say: the catalog's published size
            self.size_label.setText(f"Download size: about {entry.size_text}")
        elif count:
            self.size_label.setText(f"Download size: not known yet ({files})")
        else:
            self.size_label.setText("Download size: not known yet")
        if result.offline and result.missing:
            self.size_label.clear()  # nothing can be downloaded now
            self._enter("failed", _missing_html(result.missing, result.reason), MISSING_TITLE)
        elif not result.is_repo and not result.missing:  # a folder's own problem
            self.size_label.clear()
            missing = "missing" in result.message or "not found" in result.message
            title = MISSING_TITLE if missing else UNUSABLE_TITLE
            self._enter("failed", _message_html(result.message), title)
        else:
            self._enter("offer")

    def _show_progress(self, p: FetchProgress) -> None:
        if p.index >= 1:
            self.file_label.setText(f"File {p.index} of {p.count}: {p.filename}")
        else:
            self.file_label.setText(f"Reading {p.filename}")
        if p.overall_total:
            done, total = p.overall_done, p.overall_total
        else:
            done, total = p.done, p.total
        if total:
            self.progress_bar.setRange(0, _BAR_STEPS)
            self.progress_bar.setValue(round(_BAR_STEPS * min(done, total) / total))
            self.bytes_label.setText(f"{format_bytes(done)} of {format_bytes(total)}")
        else:
            self.progress_bar.setRange(0, 0)
            self.bytes_label.setText(f"{format_bytes(done)}")
        self.progress_bar.setAccessibleDescription(self.bytes_label.text())
        if p.bytes_per_second is None:
            self.speed_label.setText("Measuring the speed…")
            return
        text = f"{format_bytes(p.bytes_per_second)}/s"
        if p.eta_seconds is not None:
            text += ", " + format_eta(p.eta_seconds)
            if not p.overall_total:
                text += " for this file"
        self.speed_label.setText(text)


def _missing_html(missing: tuple[str, ...], reason: str) -> str:
    """What to do when files are missing and cannot be downloaded now."""
    why = html.escape(_sentence(reason).rstrip(".")) + ", and t" if reason else "T"
    files = "".join(f"<li>{html.escape(name)}</li>" for name in missing)
    return (
        f"{why}hese files of the model are not downloaded yet:<ul>{files}</ul>"
        "Connect to the internet (with offline mode off) and press <b>Retry</b>, or use a "
        f"folder that has them: <b>{html.escape(LOCAL_FOLDER_HINT)}</b>"
    )
