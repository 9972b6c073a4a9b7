"""The History: the kept conversations, found, played back, renamed, exported and deleted.

A dock beside the live view (`attach` puts it in the main window, with a History toggle in its
View menu, after the store is made ready: what a killed process left is recovered and announced
once in the window's banner, with a link that selects it). The list shows date, duration, title,
model and a recovered mark; the search field filters titles and models as one types, and a moment
later the transcripts too. The selected conversation shows its transcript with times, both
waveforms, and a player: play/pause, a position slider, the line under the play head highlighted,
a click on a line seeks there.

All disk work goes through `app.conversation.store` (metadata only for the list); playback
through `app.audio.playback.Player` on the output device chosen in Settings.
"""

from __future__ import annotations

import logging
from pathlib import Path

from PySide6.QtCore import Qt, QTimer, QUrl, Slot
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import (
    QAbstractItemView,
    QDockWidget,
    QFileDialog,
    QHBoxLayout,
    QInputDialog,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QMessageBox,
    QPushButton,
    QSlider,
    QSplitter,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from model.config import FRAME_SIZE, SAMPLE_RATE

from ..conversation import preferences, store
from ..conversation.record import EXPORT_KINDS, Conversation, clock_text
from ..errors import UserError
from .peaks_view import PeaksView

log = logging.getLogger(__name__)

EXPORT_FILTERS = ";;".join(f"{k.upper()} (*.{k})" for k in EXPORT_KINDS)
_ID = Qt.ItemDataRole.UserRole


class HistoryPanel(QWidget):
    def __init__(self, root: Path | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.root = root if root is not None else preferences.load().root
        self.output_device: str | None = None
        self.entries: dict[str, store.Entry] = {}
        self.conversation: Conversation | None = None
        self.player = None
        self._turn_starts: list[float] = []

        self.search = QLineEdit()
        self.search.setPlaceholderText("Search titles and transcripts")
        self.search.setClearButtonEnabled(True)
        self.search.setAccessibleName("Search the conversations")
        self.search.textChanged.connect(self._filter_now)
        self._deep = QTimer(self, singleShot=True, interval=300)
        self._deep.timeout.connect(self._filter_transcripts)
        self.search.textChanged.connect(lambda _: self._deep.start())

        self.list = QTreeWidget()
        self.list.setHeaderLabels(["Date", "Duration", "Title", "Model", ""])
        self.list.setRootIsDecorated(False)
        self.list.setUniformRowHeights(True)
        self.list.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.list.setAccessibleName("Conversations")
        self.list.currentItemChanged.connect(self._selected)

        self.title = QLabel()
        self.title.setWordWrap(True)
        self.peaks = PeaksView()
        self.peaks.seek.connect(self._seek_seconds)
        self.lines = QListWidget()
        self.lines.setAccessibleName("Transcript")
        self.lines.itemClicked.connect(self._line_clicked)
        self.play_button = QPushButton("Play")
        self.play_button.setAccessibleName("Play or pause")
        self.play_button.clicked.connect(self.toggle_play)
        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.setAccessibleName("Position")
        self.slider.sliderMoved.connect(lambda ms: self._seek_seconds(ms / 1000))
        self.position_label = QLabel("0:00")
        buttons = QHBoxLayout()
        for text, slot in (
            ("Rename…", self.rename_selected),
            ("Export…", self.export_selected),
            ("Delete…", self.delete_selected),
            ("Open folder", self.open_folder),
        ):
            button = QPushButton(text)
            button.clicked.connect(lambda _=False, slot=slot: slot())
            buttons.addWidget(button)
        player = QHBoxLayout()
        player.addWidget(self.play_button)
        player.addWidget(self.slider, 1)
        player.addWidget(self.position_label)
        self.details = QWidget()
        detail_layout = QVBoxLayout(self.details)
        detail_layout.setContentsMargins(0, 0, 0, 0)
        for widget in (self.title, self.peaks):
            detail_layout.addWidget(widget)
        detail_layout.addLayout(player)
        detail_layout.addWidget(self.lines, 1)
        detail_layout.addLayout(buttons)
        self.details.setEnabled(False)

        self.empty = QLabel()
        splitter = QSplitter(Qt.Orientation.Vertical)
        splitter.addWidget(self.list)
        splitter.addWidget(self.details)
        settings = QPushButton("Settings…")
        settings.setToolTip("Whether conversations are kept, for how long, and where")
        settings.clicked.connect(self.edit_settings)
        top = QHBoxLayout()
        top.addWidget(self.search, 1)
        top.addWidget(settings)
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(self.empty)
        layout.addWidget(splitter, 1)

        self._tick = QTimer(self, interval=50)
        self._tick.timeout.connect(self._follow)

    # --- the list ---------------------------------------------------------------------------

    def refresh(self) -> None:
        """Read the list again (metadata only), keeping the selection where it can."""
        current = self.selected_id()
        try:
            entries = store.list_conversations(self.root)
        except UserError as e:
            log.error("the History cannot be listed", exc_info=True)
            entries = []
            self.empty.setText(str(e))
        self.entries = {e.id: e for e in entries}
        self.list.setUpdatesEnabled(False)
        self.list.clear()
        items = []
        for e in entries:
            title = f"damaged: {e.damaged}" if e.damaged else e.title or "(nothing said)"
            mark = "running" if e.running else "recovered" if e.recovered else ""
            item = QTreeWidgetItem([e.when, clock_text(e.duration), title, e.model, mark])
            item.setData(0, _ID, e.id)
            if e.recovered:
                item.setToolTip(4, "Cut short by a crash and recovered")
            items.append(item)
        self.list.addTopLevelItems(items)
        self.list.setUpdatesEnabled(True)
        if not entries:
            self.empty.setText(f"No conversations kept in {self.root} yet.")
        self.empty.setVisible(not entries)
        self._filter_now(self.search.text())
        if current:
            self.select(current)

    def select(self, id: str) -> None:
        for n in range(self.list.topLevelItemCount()):
            item = self.list.topLevelItem(n)
            if item.data(0, _ID) == id:
                item.setHidden(False)
                self.list.setCurrentItem(item)
                return

    def selected_id(self) -> str | None:
        item = self.list.currentItem()
        return item.data(0, _ID) if item is not None else None

    def visible_ids(self) -> list[str]:
        return [
            self.list.topLevelItem(n).data(0, _ID)
            for n in range(self.list.topLevelItemCount())
            if not self.list.topLevelItem(n).isHidden()
        ]

    @Slot(str)
    def _filter_now(self, text: str) -> None:
        needle = text.strip().casefold()
        for n in range(self.list.topLevelItemCount()):
            item = self.list.topLevelItem(n)
            shown = not needle or any(needle in item.text(c).casefold() for c in (0, 2, 3))
            item.setHidden(not shown)

    @Slot()
    def _filter_transcripts(self) -> None:
        text = self.search.text().strip()
        if not text:
            return
        found = {m.entry.id for m in store.search(self.root, text)}
        for n in range(self.list.topLevelItemCount()):
            item = self.list.topLevelItem(n)
            if item.data(0, _ID) in found:
                item.setHidden(False)

    # --- the selected conversation ------------------------------------------------------------

    @Slot()
    def _selected(self, *_: object) -> None:
        self._stop_player()
        self.conversation = None
        self.lines.clear()
        self.peaks.set_peaks(None, 0.0)
        id = self.selected_id()
        entry = self.entries.get(id or "")
        self.details.setEnabled(False)
        if entry is None:
            self.title.setText("")
            return
        if entry.damaged:
            self.title.setText(f"{id}: damaged ({entry.damaged})")
            return
        try:
            conv = store.open_conversation(self.root, entry.id)
        except UserError as e:
            log.error("cannot open the conversation %s", id, exc_info=True)
            self.title.setText(str(e))
            return
        self.conversation = conv
        self.title.setText(f"<b>{entry.title or '(nothing said)'}</b> — {entry.model}")
        turns = conv.turns
        self._turn_starts = [t.start for t in turns]
        for turn in turns:
            item = QListWidgetItem(f"{clock_text(turn.start)}  {turn.text}")
            item.setData(_ID, turn.start)
            self.lines.addItem(item)
        self.peaks.set_peaks(store.read_peaks(entry.folder), conv.duration)
        self.slider.setRange(0, int(conv.duration * 1000))
        self.slider.setValue(0)
        self.position_label.setText(f"0:00 / {clock_text(conv.duration)}")
        self.details.setEnabled(True)

    # --- playback -----------------------------------------------------------------------------

    @Slot()
    def toggle_play(self) -> None:
        if self.conversation is None:
            return
        try:
            if self.player is None:
                from ..audio.playback import Player

                folder = self.conversation.folder
                assert folder is not None
                self.player = Player(
                    lambda start, count: store.read_audio_block(folder, start, count),
                    self.conversation.frames * FRAME_SIZE,
                    self.output_device,
                )
            if self.player.playing:
                self.player.pause()
            else:
                self.player.play()
        except UserError as e:
            log.error("cannot play the conversation", exc_info=True)
            self._stop_player()
            QMessageBox.warning(self, "Cannot play", str(e))
            return
        self.play_button.setText("Pause" if self.player.playing else "Play")
        self._tick.start()

    def position(self) -> float:
        """Where the play head is, in seconds."""
        return self.player.position / SAMPLE_RATE if self.player is not None else 0.0

    @Slot(float)
    def _seek_seconds(self, seconds: float) -> None:
        if self.player is None:
            self.toggle_play()
            if self.player is None:
                return
            self.player.pause()
        self.player.seek(int(seconds * SAMPLE_RATE))
        self._follow()

    @Slot(QListWidgetItem)
    def _line_clicked(self, item: QListWidgetItem) -> None:
        self._seek_seconds(float(item.data(_ID)))

    @Slot()
    def _follow(self) -> None:
        if self.player is None or self.conversation is None:
            return
        seconds = self.position()
        if not self.slider.isSliderDown():
            self.slider.setValue(int(seconds * 1000))
        self.position_label.setText(
            f"{clock_text(seconds)} / {clock_text(self.conversation.duration)}"
        )
        self.peaks.set_position(seconds)
        current = max((n for n, s in enumerate(self._turn_starts) if s <= seconds), default=-1)
        if current >= 0 and self.lines.currentRow() != current:
            self.lines.setCurrentRow(current)
        self.play_button.setText("Pause" if self.player.playing else "Play")
        if self.player.error:
            self.title.setText(self.player.error)

    def highlighted_line(self) -> int:
        return self.lines.currentRow()

    def _stop_player(self) -> None:
        self._tick.stop()
        player, self.player = self.player, None
        if player is not None:
            player.close()
        self.play_button.setText("Play")

    # --- actions ------------------------------------------------------------------------------

    def rename_selected(self, title: str | None = None) -> None:
        id = self.selected_id()
        if id is None:
            return
        if title is None:
            title, ok = QInputDialog.getText(self, "Rename", "Title:", text=self.entries[id].title)
            if not ok:
                return
        self._try(lambda: store.rename(self.root, id, title))
        self.refresh()

    def export_selected(self, path: str | None = None) -> None:
        if self.conversation is None:
            return
        if path is None:
            suggested = str(Path.home() / f"{self.selected_id()}.txt")
            path, _ = QFileDialog.getSaveFileName(self, "Export", suggested, EXPORT_FILTERS)
            if not path:
                return
        conv = self.conversation
        self._try(lambda: conv.export(path))

    def delete_selected(self, confirm: bool | None = None) -> None:
        id = self.selected_id()
        if id is None:
            return
        if confirm is None:
            answer = QMessageBox.question(
                self, "Delete", f"Delete the conversation “{self.entries[id].title}” for good?"
            )
            confirm = answer == QMessageBox.StandardButton.Yes
        if not confirm:
            return
        self._stop_player()
        self.conversation = None
        self._try(lambda: store.delete(self.root, [id]))
        self.refresh()

    def edit_settings(self) -> None:
        from .keep_settings_dialog import KeepSettingsDialog

        if KeepSettingsDialog(self).exec():
            self.root = preferences.load().root
            self.refresh()

    def open_folder(self) -> None:
        id = self.selected_id()
        if id is not None:
            QDesktopServices.openUrl(QUrl.fromLocalFile(str(self.root / id)))

    def _try(self, action) -> bool:
        try:
            action()
        except UserError as e:
            log.error("a History action failed", exc_info=True)
            QMessageBox.warning(self, "Moshi", str(e))
            return False
        return True

    def closeEvent(self, event) -> None:  # noqa: N802
        self._stop_player()
        super().closeEvent(event)


def attach(window) -> HistoryPanel:
    """Add the History as a dock of the main window: the store made ready first (recovered
    conversations announced once in its banner, with a link to them; expired ones deleted)."""
    prefs = preferences.load()
    try:
        done = store.prepare(prefs.root, prefs.keep_days)
    except Exception:
        log.error("the conversations could not be made ready", exc_info=True)
        done = None
    panel = HistoryPanel(prefs.root)
    panel.output_device = getattr(window.settings, "output_device", None)
    dock = QDockWidget("History", window)
    dock.setObjectName("history")
    dock.setWidget(panel)
    window.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, dock)
    menu = window.menuBar().addMenu("&View")
    menu.addAction(dock.toggleViewAction())
    panel.refresh()
    bridge = getattr(window, "bridge", None)
    if bridge is not None:  # a conversation begins or ends: the list shows it
        bridge.autosave.connect(lambda _folder: panel.refresh())
        bridge.state.connect(lambda _state: panel.refresh())
    dock.visibilityChanged.connect(lambda shown: shown and panel.refresh())
    if done is not None and done.recovered:
        links = ", ".join(f'<a href="{id}">{id}</a>' for id in done.recovered)
        text = f"{store.recovered_sentence(len(done.recovered))}: {links}"
        window.banner.show_message(text, "warning")
        window.banner.label.setTextFormat(Qt.TextFormat.RichText)
        window.banner.label.setTextInteractionFlags(Qt.TextInteractionFlag.TextBrowserInteraction)
        window.banner.label.linkActivated.connect(lambda id: (dock.show(), panel.select(id)))
    return panel
