"""The main window: talk with Moshi, watch its inner monologue and both voices, export.

The window never touches the model: it sends commands to the engine (app.engine) and an
`EngineBridge` drains the engine's events on a timer in the GUI thread. What runs the model and
where its files come from is a `backend` object handed in by the launcher (app.gui), so tests
can give a tiny model and a file for a microphone. With the server backend chosen in the settings,
the engine talks to Kyutai's server instead; the window shows the same things, and the link's
stats (round trip, buffer, missed audio, reconnects) in place of the model's speed.
"""

from __future__ import annotations

import queue
from pathlib import Path

from PySide6.QtCore import QEvent, QObject, Qt, QTimer, Signal, Slot
from PySide6.QtGui import QAction, QKeyEvent, QKeySequence
from PySide6.QtWidgets import (
    QAbstractButton,
    QAbstractSpinBox,
    QApplication,
    QComboBox,
    QFileDialog,
    QFrame,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMainWindow,
    QMessageBox,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QSplitter,
    QStackedWidget,
    QTextEdit,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from app.engine.messages import (
    AudioBlock,
    Autosave,
    EngineState,
    ErrorEvent,
    Export,
    Exported,
    FallingBehind,
    Mute,
    NewConversation,
    Notice,
    SetHalfDuplex,
    SetPersona,
    Start,
    StateChanged,
    Stats,
    Stop,
    TextPiece,
)
from app.logs import log_path
from model.catalog import CATALOG
from model.voices import (
    CONSENT,
    describe_voice,
    is_personaplex_source,
    is_voice_name,
    voice_sample,
    voices_folder,
)

from . import history_panel
from .persona_box import PersonaBox
from .settings import PERSONA_MAX, Settings, is_folder_source
from .settings_dialog import SettingsDialog
from .transcript import TranscriptView
from .voice_menu import VoiceMenu
from .waveform import WaveformView

# What each export writes: the file dialog's filter names and the suffix that picks the format.
TRANSCRIPT_FORMATS = (
    ("Text", ".txt"),
    ("Markdown", ".md"),
    ("JSON", ".json"),
    ("Subtitles SRT", ".srt"),
    ("WebVTT", ".vtt"),
)
AUDIO_FORMATS = (("Stereo WAV: you left, Moshi right", ".wav"),)
EXPORT_NAME = "moshi-conversation"


class EngineBridge(QObject):
    """Drains the engine's event queue on the GUI thread and re-emits each event as a signal."""

    state = Signal(object, str)  # an EngineState, and what it is busy with ("" for nothing)
    text = Signal(str, float)
    audio = Signal(object, object, float)
    stats = Signal(object)
    notice = Signal(str)
    behind = Signal(object)  # a FallingBehind
    error = Signal(str)
    exported = Signal(str)
    autosave = Signal(object)  # the folder (str), or None: not saved

    def __init__(self, events: queue.Queue, parent: QObject | None = None, interval_ms: int = 30):
        super().__init__(parent)
        self._events = events
        self._timer = QTimer(self)
        self._timer.timeout.connect(self.drain)
        self._timer.start(interval_ms)

    @Slot()
    def drain(self) -> None:
        for _ in range(200):  # bounded per tick, so a burst never freezes the window
            try:
                event = self._events.get_nowait()
            except queue.Empty:
                return
            self._EMIT[type(event)](self, event)

    _EMIT = {
        TextPiece: lambda self, e: self.text.emit(e.text, e.time),
        AudioBlock: lambda self, e: self.audio.emit(e.user, e.moshi, e.time),
        Stats: lambda self, e: self.stats.emit(e),
        StateChanged: lambda self, e: self.state.emit(e.state, e.detail),
        Notice: lambda self, e: self.notice.emit(e.message),
        FallingBehind: lambda self, e: self.behind.emit(e),
        ErrorEvent: lambda self, e: self.error.emit(e.message),
        Exported: lambda self, e: self.exported.emit(e.path),
        Autosave: lambda self, e: self.autosave.emit(e.folder),
    }


def _takes_space(widget: QWidget | None) -> bool:
    """Whether `widget` has a use of its own for the Space key: a button presses, a text field
    types a space, a combo box opens."""
    if isinstance(widget, (QTextEdit, QPlainTextEdit)):
        return not widget.isReadOnly()
    return isinstance(widget, (QAbstractButton, QLineEdit, QAbstractSpinBox, QComboBox))


class Banner(QFrame):
    """A message across the top of the window that does not block it; closable."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.setAccessibleName("Message")
        self.label = QLabel()
        self.label.setWordWrap(True)
        self.label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        close = QToolButton()
        close.setText("✕")
        close.setAccessibleName("Dismiss message")
        close.clicked.connect(self.hide)
        self.details_button = QToolButton()
        self.details_button.setText("Details")
        self.details_button.setCheckable(True)
        self.details_button.setAccessibleName("Show the whole message")
        self.details = QPlainTextEdit()
        self.details.setReadOnly(True)
        self.details.setMaximumHeight(160)
        self.details.hide()
        self.details_button.toggled.connect(self.details.setVisible)
        top = QHBoxLayout()
        top.addWidget(self.label, 1)
        top.addWidget(self.details_button, 0, Qt.AlignmentFlag.AlignTop)
        top.addWidget(close, 0, Qt.AlignmentFlag.AlignTop)
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(self.details)
        self.hide()

    def show_message(self, text: str, kind: str = "error", details: str = "") -> None:
        """`text` in a line or two; `details` (more lines: each problem of a model that does
        not load, where the log is) behind a Details button."""
        self.kind = kind
        colour = "#c0392b" if kind == "error" else "#b9770e"
        self.setStyleSheet(f"Banner {{ border: 1px solid {colour}; border-radius: 4px; }}")
        self.label.setText(("⚠ " if kind != "error" else "✖ ") + text)
        self.details.setPlainText(details)
        self.details_button.setVisible(bool(details))
        self.details_button.setChecked(False)
        self.show()


class MainWindow(QMainWindow):
    def __init__(self, engine, settings: Settings, backend, parent: QWidget | None = None):
        super().__init__(parent)
        self.engine, self.settings, self.backend = engine, settings, backend
        self.state = EngineState.STOPPED
        self._state_message = ""  # what the status bar shows for the state, if anything
        self._behind_shown = False  # the banner shows FallingBehind's warning, kept current
        self._has_conversation = False  # something was heard or said since the last New
        self._saved_in: str | None = None  # where the conversation is autosaved, if it is
        self._starting: tuple | None = None  # the model_key of the last Start sent
        self._loaded: tuple | None = None  # the model_key the engine has loaded, if any
        self._takes_persona = False  # the model (or the server) takes a voice and a persona
        self._consented = False  # the consent line for a recorded voice was agreed to
        self.setWindowTitle("Moshi")
        self.setMinimumSize(640, 420)
        self._build_widgets()
        self._build_actions()
        self._build_menus()
        self._build_status_bar()
        self.bridge = EngineBridge(engine.events, self)
        self.bridge.state.connect(self.on_state)
        self.bridge.text.connect(self.transcript.add_piece)
        self.bridge.audio.connect(self.waveform.add_block)
        self.bridge.text.connect(self._heard)
        self.bridge.audio.connect(self._heard)
        self.bridge.stats.connect(self.on_stats)
        self.bridge.notice.connect(self.on_notice)
        self.bridge.behind.connect(self.on_behind)
        self.bridge.error.connect(self.on_error)
        self.bridge.exported.connect(self.on_exported)
        self.bridge.autosave.connect(self.on_autosave)
        engine.start()
        engine.send(settings.sampling_command())
        engine.send(SetHalfDuplex(settings.half_duplex))
        if settings.window_geometry:
            self.restoreGeometry(settings.window_geometry)
        else:
            self.resize(980, 640)
        self.on_state(EngineState.STOPPED)
        self._set_has_conversation(False)
        self.history = history_panel.attach(self)  # the kept conversations, in a dock
        self.conversations_action = self.settings_menu.addAction(
            "&Conversations kept…", self.history.edit_settings
        )  # keep them or not, for how long, where

    # --- building ---------------------------------------------------------------------------

    def _build_widgets(self) -> None:
        self.banner = Banner()
        self.start_button = QPushButton("&Start")
        self.start_button.setAccessibleName("Start or stop the conversation")
        self.start_button.setMinimumWidth(110)
        self.start_button.clicked.connect(self.toggle_running)
        self.mute_button = QPushButton("&Mute")
        self.mute_button.setCheckable(True)
        self.mute_button.setAccessibleName("Mute the microphone")
        self.mute_button.toggled.connect(self.set_muted)
        self.new_button = QPushButton("&New conversation")
        self.new_button.setAccessibleName("Start a new conversation")
        self.new_button.clicked.connect(self.new_conversation)
        self.duplex_button = QPushButton("&Half duplex")
        self.duplex_button.setCheckable(True)
        self.duplex_button.setChecked(self.settings.half_duplex)
        self.duplex_button.setToolTip(
            "Mute the microphone while Moshi speaks: for speakers without headphones"
        )
        self.duplex_button.setAccessibleName("Half duplex")
        self.duplex_button.toggled.connect(self.set_half_duplex)
        controls = QHBoxLayout()
        for button in (self.start_button, self.mute_button, self.new_button, self.duplex_button):
            controls.addWidget(button)
        controls.addStretch(1)
        self._build_persona_controls()

        self.waveform = WaveformView()
        self.transcript = TranscriptView()
        self.welcome = QLabel()  # what to know before the first Start, where the monologue goes
        self.welcome.setWordWrap(True)
        self.welcome.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)
        self.welcome.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.welcome.setMargin(12)
        self.welcome.setAccessibleName("Before you start")
        self.pages = QStackedWidget()
        self.pages.addWidget(self.welcome)
        self.pages.addWidget(self.transcript)
        splitter = QSplitter(Qt.Orientation.Vertical)
        splitter.addWidget(self.waveform)
        splitter.addWidget(self.pages)
        splitter.setStretchFactor(0, 1)
        splitter.setStretchFactor(1, 3)
        splitter.setChildrenCollapsible(False)

        central = QWidget()
        layout = QVBoxLayout(central)
        layout.addWidget(self.banner)
        layout.addLayout(controls)
        layout.addWidget(self.persona_row)
        layout.addWidget(splitter, 1)
        self.setCentralWidget(central)

    def _build_persona_controls(self) -> None:
        """PersonaPlex's Voice menu and Persona box, shown when the model takes them."""
        self.voice_menu = VoiceMenu(self.settings.voice, self)
        self.voice_menu.chosen.connect(self.set_voice)
        self.voice_menu.sample_requested.connect(self.play_voice_sample)
        self.voice_menu.recording_requested.connect(self.choose_voice_recording)
        self.voice_button = QToolButton()
        self.voice_button.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        self.voice_button.setMenu(self.voice_menu)
        self.voice_button.setAccessibleName("Moshi's voice")
        self.persona_box = PersonaBox(self.settings.persona, PERSONA_MAX)
        self.persona_box.changed.connect(self._persona_edited)
        self._persona_timer = QTimer(self)  # the engine hears of an edit once typing pauses
        self._persona_timer.setSingleShot(True)
        self._persona_timer.setInterval(600)
        self._persona_timer.timeout.connect(self._send_persona)
        self.persona_row = QWidget()
        row = QHBoxLayout(self.persona_row)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.voice_button)
        row.addWidget(self.persona_box, 1)
        self._show_voice()

    def _action(self, text: str, shortcut, slot, *, checkable: bool = False) -> QAction:
        action = QAction(text, self)
        action.setShortcut(QKeySequence(shortcut))
        action.setCheckable(checkable)
        action.triggered.connect(slot)
        self.addAction(action)  # shortcuts work wherever the focus is (Space: see event())
        return action

    def _build_actions(self) -> None:
        self.start_action = self._action("&Start / Stop", Qt.Key.Key_Space, self.toggle_running)
        self.mute_action = self._action("&Mute microphone", Qt.Key.Key_M, self.mute_button.toggle)
        self.new_action = self._action(
            "&New conversation", QKeySequence.StandardKey.New, self.new_conversation
        )
        self.duplex_action = self._action("&Half duplex", Qt.Key.Key_H, self.duplex_button.toggle)
        self.export_action = self._action("&Export transcript…", "Ctrl+E", self.export_transcript)
        self.audio_action = self._action(
            "Save conversation &audio…", "Ctrl+Shift+S", self.save_audio
        )
        self.settings_action = self._action(
            "&Settings…", QKeySequence.StandardKey.Preferences, self.open_settings
        )
        if self.settings_action.shortcut().isEmpty():
            self.settings_action.setShortcut(QKeySequence("Ctrl+,"))
        self.quit_action = self._action("&Quit", QKeySequence.StandardKey.Quit, self.close)
        self.about_action = self._action(
            "&About Moshi Desktop", QKeySequence.StandardKey.HelpContents, self.show_about
        )

    def _build_menus(self) -> None:
        menus = self.menuBar()
        file_menu = menus.addMenu("&File")
        file_menu.addActions([self.export_action, self.audio_action])
        file_menu.addSeparator()
        file_menu.addAction(self.quit_action)
        talk_menu = menus.addMenu("&Conversation")
        talk_menu.addActions(
            [self.start_action, self.mute_action, self.new_action, self.duplex_action]
        )
        menus.addMenu(self.voice_menu)
        self.settings_menu = menus.addMenu("&Settings")
        self.settings_menu.addAction(self.settings_action)
        menus.addMenu("&Help").addAction(self.about_action)

    def _build_status_bar(self) -> None:
        bar = self.statusBar()
        self.model_label = QLabel()
        self.speed_label = QLabel()
        self.latency_label = QLabel()
        self.drops_label = QLabel()
        self.elapsed_label = QLabel()
        self.busy = QProgressBar()
        self.busy.setRange(0, 0)  # indeterminate: loading has no measurable steps
        self.busy.setMaximumWidth(120)
        self.busy.setAccessibleName("Loading the model")
        self.busy.hide()
        bar.addPermanentWidget(self.busy)
        for label, name in (
            (self.model_label, "Model and device"),
            (self.speed_label, "Milliseconds per frame and real-time factor, or round trip"),
            (self.latency_label, "Estimated latency"),
            (self.drops_label, "Dropped frames, missed audio and audio glitches"),
            (self.elapsed_label, "Conversation time"),
        ):
            label.setAccessibleName(name)
            bar.addPermanentWidget(label)
        bar.messageChanged.connect(self._on_status_message)
        self._describe_model()

    @Slot(str)
    def _on_status_message(self, message: str) -> None:
        """A message takes the model's place while it shows: beside all the figures, a message
        of a few words would be cut off at the window's usual width."""
        self.model_label.setVisible(not message)

    def _describe_model(self) -> None:
        s = self.settings
        if s.backend == "remote":
            self.model_label.setText(f"server {s.server_url}")
        else:
            name = (
                Path(s.model_source).name if Path(s.model_source).is_absolute() else s.model_source
            )
            self.model_label.setText(f"{name} · {s.compute_device} · {s.dtype}")
        # PersonaPlex's controls: for a PersonaPlex model, and for a server (NVIDIA's PersonaPlex
        # server takes a voice and a persona; Kyutai's ignore them). A server has only its voices.
        self._takes_persona = s.backend == "remote" or is_personaplex_source(s.model_source)
        self.welcome.setText(self._before_start())
        self.persona_row.setVisible(self._takes_persona)
        self.voice_menu.menuAction().setVisible(self._takes_persona)
        self.voice_menu.set_recordings_allowed(s.backend != "remote")

    def _before_start(self) -> str:
        """What to know before the first Start, shown where the monologue will be: where Moshi
        runs, what a first Start downloads, what it needs to answer in time, the other ways."""
        s = self.settings
        keys = "Press Start (Space) and talk; Moshi answers, and its thoughts appear here."
        if self._takes_persona:
            keys += (
                "\n\nPersonaPlex speaks with the voice and plays the persona chosen above "
                "(a PersonaPlex server too; Kyutai's servers ignore them). A change applies "
                "from the next conversation."
            )
        if s.backend == "remote":
            return f"{keys}\n\nMoshi runs on the server {s.server_url}."
        lines = [keys, ""]
        if is_folder_source(s.model_source):
            lines.append(f"Moshi runs on this computer, from the folder {s.model_source}.")
        else:
            entry = CATALOG.get(s.model_source)
            lines.append(
                f"Moshi runs on this computer: {s.model_source}"
                + (f" ({entry.title}; {entry.facts})" if entry else "")
                + ". If it is not on this computer yet, the first Start offers to download it."
            )
        lines += [
            "",
            "A full-size Moshi needs an NVIDIA GPU with about 16 GB of memory (8 GB in int8) "
            "to answer in real time; a CPU is many times too slow.",
            "",
            "Settings → Model: another model, or a folder you already have. Settings → Where "
            "Moshi runs: Kyutai's server on a GPU machine.",
            "",
            "Use headphones, or Half duplex (H): in speakers Moshi hears itself.",
        ]
        return "\n".join(lines)

    # --- conversation -------------------------------------------------------------------------

    def run_config(self):
        from app.engine.run import RunConfig

        s = self.settings
        return RunConfig(
            model=s.model_source,
            revision=s.model_revision,
            lora=s.lora,
            offline=s.offline,
            device=s.compute_device,
            dtype=s.dtype,
            seed=s.seed,
            threads=s.threads,
            input_device=s.input_device,
            output_device=s.output_device,
            server=s.server_url if s.backend == "remote" else None,
            voice=s.voice if self._takes_persona else None,
            persona=s.persona if self._takes_persona else None,
            echo_cancellation=s.echo_cancellation,  # talk without headphones (app/audio/echo.py)
            noise_suppression=s.noise_suppression,
        )

    # --- PersonaPlex's voice and persona -------------------------------------------------------

    def _show_voice(self) -> None:
        voice = self.settings.voice
        shown = describe_voice(voice) if is_voice_name(voice) else Path(voice).name
        self.voice_button.setText(f"Voice: {shown}")
        self.voice_menu.set_voice(voice)

    @Slot(str)
    def set_voice(self, voice: str) -> None:
        """Moshi's voice from the next conversation (kept in the settings)."""
        if voice == self.settings.voice:
            return
        self.settings.voice = voice
        self._show_voice()
        self._send_persona()

    @Slot(str)
    def _persona_edited(self, text: str) -> None:
        self.settings.persona = text
        self._persona_timer.start()

    @Slot()
    def _send_persona(self) -> None:
        """Tell the engine (it applies them from the next conversation), and say so when one is
        under way."""
        self._persona_timer.stop()
        if not self._takes_persona:
            return
        self.engine.send(SetPersona(self.settings.voice, self.settings.persona))
        if self._has_conversation:
            self.statusBar().showMessage(
                "The voice and persona apply from the next conversation (New conversation).", 8000
            )

    @Slot(str)
    def play_voice_sample(self, name: str) -> None:
        """A few seconds of the packaged voice `name`, where the model has its recording."""
        from app.audio import sample
        from app.errors import UserError

        folder = voices_folder(self.settings.model_source)
        found = voice_sample(folder, name) if folder is not None else None
        if found is None:
            self.statusBar().showMessage(
                f"{name}: this model's voices have no sample of it; you hear it when Moshi speaks.",
                8000,
            )
            return
        frames, rate, channels, width = found
        if width != 2:
            return
        try:
            sample.play(sample.pcm16_to_float(frames, channels), rate, self.settings.output_device)
        except UserError as e:
            self.statusBar().showMessage(f"Cannot play the sample: {e}", 8000)

    def ask_voice_recording(self) -> str | None:
        """A recording of a voice, picked by the user after the consent line; tests replace
        this method."""
        path, _ = QFileDialog.getOpenFileName(
            self,
            "A recording of the voice Moshi speaks with",
            str(Path.home()),
            "Audio (*.wav *.flac *.ogg)",
            options=QFileDialog.Option.DontUseNativeDialog,
        )
        return path or None

    @Slot()
    def choose_voice_recording(self) -> None:
        """ "From a recording…": the consent line, then the file, checked (5 to 20 s)."""
        answer = (
            QMessageBox.question(
                self,
                "Moshi speaks with a recorded voice",
                f"{CONSENT}\n\nChoose a recording of 5 to 20 s of that voice speaking alone.",
                QMessageBox.StandardButton.Ok | QMessageBox.StandardButton.Cancel,
            )
            if not self._consented
            else QMessageBox.StandardButton.Ok
        )
        if answer != QMessageBox.StandardButton.Ok:
            self._show_voice()  # the menu shows the voice that stays
            return
        self._consented = True
        path = self.ask_voice_recording()
        if path is None:
            self._show_voice()
            return
        from app.audio.sample import recording_problem

        problem = recording_problem(path)
        if problem:
            self._show_voice()
            self.banner.show_message(f"Cannot use {Path(path).name} as a voice: {problem}.")
            return
        self.set_voice(str(Path(path).resolve()))

    @Slot()
    def toggle_running(self) -> None:
        if self.state.active:
            self.engine.send(Stop())
            return
        config = self.run_config()
        local = config.server is None
        if local and not self.backend.is_cached(config) and not self._download(config):
            return
        self.banner.hide()
        self._starting = config.model_key
        self.engine.send(self.settings.sampling_command())
        self.engine.send(Start(config))

    def _download(self, config) -> bool:
        """Offer the download; True once the model is on this machine."""
        from .download_dialog import DownloadDialog

        dialog = DownloadDialog(self.backend.make_fetch(config), self)
        return dialog.exec() == DownloadDialog.DialogCode.Accepted

    @Slot(bool)
    def set_muted(self, muted: bool) -> None:
        self.engine.send(Mute(muted))
        self.mute_button.setText("Un&mute" if muted else "&Mute")

    @Slot(bool)
    def set_half_duplex(self, enabled: bool) -> None:
        self.settings.half_duplex = enabled
        self.engine.send(SetHalfDuplex(enabled))

    @Slot()
    def new_conversation(self) -> None:
        """Forget the conversation. One that is saved says where; one that is not (kept in
        memory only) is offered for export first."""
        saved_in = self._saved_in if self._has_conversation else None
        if self._has_conversation and saved_in is None:
            answer = self.ask_unsaved()
            if answer == "cancel" or (answer == "export" and not self.export_transcript()):
                return
        self.engine.send(NewConversation())  # after an Export: the engine keeps the order
        self.transcript.clear()
        self.waveform.clear()
        self._clear_stats()
        if self._behind_shown:  # its figure was the old conversation's
            self.banner.hide()
            self._behind_shown = False
        self._saved_in = None  # the engine says where the next one goes
        self._set_has_conversation(False)
        if saved_in is not None:
            self.statusBar().showMessage(f"The last conversation is saved in {saved_in}.", 10000)

    def ask_unsaved(self) -> str:
        """Whether to "export" the conversation that is not saved, "discard" it, or "cancel";
        tests replace this method."""
        box = QMessageBox(
            QMessageBox.Icon.Question,
            "New conversation",
            "This conversation is not saved.",
            QMessageBox.StandardButton.Discard | QMessageBox.StandardButton.Cancel,
            self,
        )
        box.setInformativeText("Export its transcript before starting a new one?")
        export = box.addButton("&Export…", QMessageBox.ButtonRole.AcceptRole)
        box.setDefaultButton(export)
        box.exec()
        if box.clickedButton() is export:
            return "export"
        if box.clickedButton() is box.button(QMessageBox.StandardButton.Discard):
            return "discard"
        return "cancel"

    @Slot()
    def _heard(self) -> None:
        if not self._has_conversation:
            self._set_has_conversation(True)

    def _set_has_conversation(self, has: bool) -> None:
        """Export needs something to export."""
        self._has_conversation = has
        self.export_action.setEnabled(has)
        self.audio_action.setEnabled(has)

    def _clear_stats(self) -> None:
        for label in (self.speed_label, self.latency_label, self.drops_label, self.elapsed_label):
            label.clear()
        self.speed_label.setStyleSheet("")

    # --- engine events ------------------------------------------------------------------------

    @Slot(object, str)
    def on_state(self, state: EngineState, detail: str = "") -> None:
        """Each state replaces what the last one showed: its status message, the busy bar, and
        the meters, which fall silent when the audio stops. `detail`: what the state is busy with
        (the first load on a CPU builds our kernel)."""
        if state is EngineState.LOADING:
            self._loaded = self._starting
        elif state is EngineState.ERROR and self.state is EngineState.LOADING:
            self._loaded = None  # the load failed: the next Start loads again
        self.state = state
        if state.active:
            self.pages.setCurrentWidget(self.transcript)  # the welcome has done its job
        self.start_button.setText("&Stop" if state.active else "&Start")
        self.busy.setVisible(state.active and state is not EngineState.RUNNING)
        if state is not EngineState.RUNNING:
            self.waveform.silence_meters()
        bar = self.statusBar()
        message, timeout = self._describe_state(state)
        if message and detail:
            message = f"{message.removesuffix('…')}: {detail}…"
        if message:
            bar.showMessage(message, timeout)
        elif self._state_message and bar.currentMessage() == self._state_message:
            bar.clearMessage()  # the last state's message; any other stays its time
        self._state_message = message

    def _describe_state(self, state: EngineState) -> tuple[str, int]:
        """The status bar's message for `state` ("" for none) and how long it shows (0: while
        the state lasts)."""
        remote = self.settings.backend == "remote"
        if state in (EngineState.LOADING, EngineState.CONNECTING) and remote:
            return f"Connecting to {self.settings.server_url}…", 0
        if state is EngineState.WAITING:
            return "The server is busy with another conversation: waiting for a slot…", 0
        if state is EngineState.LOADING:
            return "Loading the model…", 0
        if state is EngineState.RUNNING and not self.settings.half_duplex:
            from ..audio.echo import available

            if available() is None:  # the canceller runs: speakers are fine (issue 24)
                return "Echo cancellation on: speakers are fine.", 8000
            # Short enough to fit beside the status figures at the window's usual width.
            return "Use headphones, or Half duplex: Moshi hears itself in speakers.", 8000
        if state is EngineState.FINISHED:
            return "The input ended.", 5000
        return "", 0

    @Slot(object)
    def on_stats(self, stats) -> None:
        remote = stats.remote
        xruns = f"xruns {stats.underruns + stats.overruns}"
        if remote is None:
            total = stats.ms_per_frame.get("total", 0.0)
            threads = f" · {stats.threads} threads" if stats.threads else ""
            if stats.gpu_mb is not None:
                threads += f" · GPU {stats.gpu_mb / 1000:.1f} GB"
            self.speed_label.setText(f"{total:.0f} ms/frame · RTF {stats.rtf:.2f}{threads}")
            self.speed_label.setStyleSheet("color: #c0392b;" if stats.rtf > 1 else "")
            self.latency_label.setText(f"latency {stats.latency_ms:.0f} ms")
            silenced = f" · silenced {stats.silenced_samples}" if stats.silenced_samples else ""
            self.drops_label.setText(f"dropped {stats.dropped_frames} · {xruns}{silenced}")
        else:
            self.speed_label.setText(f"RTT {remote.rtt_ms:.0f} ms")
            self.speed_label.setStyleSheet("")
            self.latency_label.setText(
                f"latency {stats.latency_ms:.0f} ms · buffer {remote.buffer_ms:.0f} ms"
            )
            self.drops_label.setText(
                f"missed {remote.missed_ms / 1000:.1f} s · reconnects {remote.reconnects} · "
                + xruns
            )
        minutes, seconds = divmod(int(stats.elapsed), 60)
        self.elapsed_label.setText(f"{minutes}:{seconds:02d}")
        if self._behind_shown and self.banner.isVisible():  # not once dismissed
            self.banner.show_message(FallingBehind.describe(stats), "warning")

    @Slot(str)
    def on_notice(self, message: str) -> None:
        self._behind_shown = False
        self.banner.show_message(message, "warning")

    @Slot(object)
    def on_behind(self, event: FallingBehind) -> None:
        self.banner.show_message(event.message, "warning")
        self._behind_shown = True

    @Slot(str)
    def on_error(self, message: str) -> None:
        """The first line in the banner; every line, and where the log is, in its details."""
        self._behind_shown = False
        first = message.splitlines()[0] if message.strip() else message
        details = f"{message}\n\nThe log, with the traceback: {log_path()}"
        self.banner.show_message(first, "error", details)

    @Slot(object)
    def on_autosave(self, folder: str | None) -> None:
        self._saved_in = folder
        if not hasattr(self, "not_kept_label"):  # keeping is off, or the autosave stopped
            self.not_kept_label = QLabel("This conversation is not being saved to disk")
            self.statusBar().addPermanentWidget(self.not_kept_label)
        self.not_kept_label.setVisible(folder is None)

    @Slot(str)
    def on_exported(self, path: str) -> None:
        self.statusBar().showMessage(f"Saved {path}", 5000)

    # --- export, settings, about --------------------------------------------------------------

    def ask_save_path(self, title: str, filters: str, suggested: str) -> tuple[str, str] | None:
        """The file dialog: the path typed and the filter chosen, or None when cancelled;
        tests replace this method."""
        folder = self.settings.last_export_folder or Path.home()
        path, chosen = QFileDialog.getSaveFileName(self, title, str(folder / suggested), filters)
        return (path, chosen) if path else None

    def ask_replace(self, path: str) -> bool:
        """Whether to replace `path`, which exists; tests replace this method."""
        answer = QMessageBox.question(
            self, "Replace the file?", f"{path} already exists. Replace it?"
        )
        return answer == QMessageBox.StandardButton.Yes

    def _export(self, title: str, formats: tuple[tuple[str, str], ...]) -> bool:
        """Ask where, and send the export; True once sent. The chosen filter decides the format:
        its suffix is added to a name that does not end with it."""
        suffixes = {f"{name} (*{suffix})": suffix for name, suffix in formats}
        first = formats[0][1]
        answer = self.ask_save_path(title, ";;".join(suffixes), EXPORT_NAME + first)
        if answer is None:
            return False
        path, chosen = answer
        suffix = suffixes.get(chosen, first)
        if not path.lower().endswith(suffix):
            path += suffix  # the dialog asked about replacing the name typed, not this one
            if Path(path).exists() and not self.ask_replace(path):
                return False
        self.settings.last_export_folder = Path(path).parent
        self.engine.send(Export(path))
        return True

    @Slot()
    def export_transcript(self) -> bool:
        return self._export("Export transcript", TRANSCRIPT_FORMATS)

    @Slot()
    def save_audio(self) -> bool:
        return self._export("Save conversation audio", AUDIO_FORMATS)

    @Slot()
    def open_settings(self) -> None:
        dialog = SettingsDialog(self.settings, self.backend.audio_devices(), self)
        dialog.sampling_changed.connect(self.engine.send)
        if dialog.exec() == SettingsDialog.DialogCode.Accepted:
            self.duplex_button.setChecked(self.settings.half_duplex)  # applies at once
            self._describe_model()
            note = dialog.later_note(
                running=self.state.active,
                model_loads=self.run_config().model_key != self._loaded,
            )
            if note:
                self.statusBar().showMessage(note, 10000)

    @Slot()
    def show_about(self) -> None:
        from .about_dialog import AboutDialog

        local = self.settings.backend != "remote"
        AboutDialog(self, self.settings.model_source if local else None).exec()

    def event(self, event: QEvent) -> bool:
        """Space is Start / Stop only where the focus has no use for it: a focused button (Mute,
        say) takes it, as keyboard users expect, and so does a text field."""
        if (
            event.type() == QEvent.Type.ShortcutOverride
            and isinstance(event, QKeyEvent)
            and event.key() == Qt.Key.Key_Space
            and event.modifiers() == Qt.KeyboardModifier.NoModifier
            and _takes_space(QApplication.focusWidget())
        ):
            event.accept()  # the focused widget gets the key press; the shortcut does not fire
            return True
        return super().event(event)

    def closeEvent(self, event) -> None:
        self.settings.window_geometry = bytes(self.saveGeometry())
        self.engine.close()
        super().closeEvent(event)
