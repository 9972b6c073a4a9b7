"""The settings dialog: where Moshi runs (this machine or a server), sampling, model, compute, audio.

Sampling applies at once: every valid change emits `sampling_changed` with a `SetSampling` for the
running conversation (and Cancel sends the values the dialog opened with back); so does half
duplex, through the main window. Where Moshi runs, the model, compute and audio devices apply at
the next Start; the seed (and offline) when the model reloads. OK writes all of it to
`Settings`; Cancel writes nothing.

Numbers are typed into `NumberEdit`s: an invalid one stays as typed, outlined in red with its
range, and keeps OK disabled (`problem()` says why, above the buttons). A local model folder is
checked as the model is loaded (`model.files.resolve_folder`), not only for existence.

Audio devices are listed by the caller (sounddevice lives outside app/ui) as
(name, has_input, has_output) tuples.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from PySide6.QtCore import QRegularExpression, Qt, Signal, Slot
from PySide6.QtGui import QRegularExpressionValidator
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSizePolicy,
    QSlider,
    QVBoxLayout,
    QWidget,
)

from app.engine.messages import SetSampling
from app.engine.remote import DEFAULT_PORT, SAMPLING_NOTE, server_url
from app.errors import UserError
from model.catalog import CATALOG, Entry
from model.config import ConfigError
from model.files import CheckpointError, is_repo_id, resolve_folder, resolve_lora, unfetched

from .number_edit import NumberEdit
from .settings import (
    AUDIO_TOP_K_MAX,
    SEED_MAX,
    TEMPERATURE_MAX,
    TEXT_TOP_K_MAX,
    THREADS_MAX,
    Key,
    Settings,
    is_folder_source,
)

BACKEND_CHOICES = {
    "local": "On this computer (the model below)",
    "remote": "On a server (Kyutai's moshi.server or Rust server)",
}
SERVER_NOTE = (
    f"Start Kyutai's server on a GPU machine with `python -m moshi.server --host 0.0.0.0` "
    f"(port {DEFAULT_PORT}) and enter ws://THAT-MACHINE:{DEFAULT_PORT}, or wss:// for a server "
    "behind TLS."
)
CUSTOM = "custom"  # model combo data of "Custom repository…"
FOLDER = "folder"  # model combo data of "Local folder…"

NOISE_CHOICES = {"off": "Off", "low": "Low", "high": "High"}
DEVICE_CHOICES = {
    "auto": "Automatic (CUDA, then MPS, then CPU)",
    "cpu": "CPU",
    "cuda": "CUDA (NVIDIA GPU)",
    "mps": "MPS (Apple GPU)",
}
DTYPE_CHOICES = {
    "auto": "Automatic (bfloat16 on a GPU, float32 on the CPU)",
    "bfloat16": "bfloat16",
    "float16": "float16",
    "float32": "float32 (most memory)",
    "int8": "int8 (weights quantized: half the memory of bfloat16)",
    "int4": "int4 (transformer weights in 4 bits: least memory, for 8 GB GPUs)",
}

SAMPLING_KEYS = (Key.TEXT_TEMPERATURE, Key.AUDIO_TEMPERATURE, Key.TEXT_TOP_K, Key.AUDIO_TOP_K)
# What applies later, and what each is called in the note that says so.
NEXT_START_KEYS = {  # the audio opens, and the model loads if it is another, at each Start
    Key.BACKEND: "where Moshi runs",
    Key.SERVER_URL: "the server",
    Key.MODEL_SOURCE: "the model",
    Key.MODEL_REVISION: "the model",
    Key.LORA: "the LoRA",
    Key.COMPUTE_DEVICE: "the compute device",
    Key.DTYPE: "the data type",
    Key.INPUT_DEVICE: "the audio devices",
    Key.OUTPUT_DEVICE: "the audio devices",
    Key.ECHO_CANCELLATION: "echo cancellation",
    Key.NOISE_SUPPRESSION: "noise suppression",
}
# only as the model loads
AT_LOAD_KEYS = {Key.SEED: "the seed", Key.OFFLINE: "offline mode", Key.THREADS: "the CPU threads"}
RESTART_KEYS = tuple(NEXT_START_KEYS) + tuple(AT_LOAD_KEYS)
DIALOG_KEYS = SAMPLING_KEYS + (Key.HALF_DUPLEX,) + RESTART_KEYS  # what the dialog edits
HALF_DUPLEX_NOTE = "Mutes your microphone while Moshi speaks; use it without headphones."
RESTART_NOTE = (
    "Sampling and half duplex apply at once (sampling on a server: at the next connection). "
    "Server, model, compute and audio changes apply at the next Start; the seed when the model "
    "reloads."
)
# The notes after OK; short enough for the status bar beside its figures.
AT_START_NOTE = "{} at the next Start."
AT_LOAD_NOTE = "{} when the model reloads (another model, or a relaunch)."


class TemperatureField(QWidget):
    """A slider and a number field showing one temperature, 0 to TEMPERATURE_MAX; the slider
    moves in steps of 0.05 and follows what is typed while it is valid."""

    value_changed = Signal(float)  # a valid value

    def __init__(self, name: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.setRange(0, round(TEMPERATURE_MAX * 100))  # hundredths
        self.slider.setSingleStep(5)
        self.slider.setPageStep(25)
        self.slider.setTickPosition(QSlider.TickPosition.TicksBelow)
        self.slider.setTickInterval(25)
        self.slider.setMinimumWidth(160)
        self.slider.setAccessibleName(name)
        self.edit = NumberEdit(
            name,
            0.0,
            TEMPERATURE_MAX,
            decimals=2,
            step=0.05,
            help="0 = greedy: always the most likely token",
        )
        self.edit.setMaximumWidth(72)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.slider, 1)
        layout.addWidget(self.edit)
        self.slider.valueChanged.connect(self._slider_moved)
        self.edit.value_changed.connect(self._typed)

    def value(self) -> float:
        """ValueError while the text is not a valid temperature."""
        return self.edit.value()

    def set_value(self, value: float) -> None:
        self.edit.set_value(value)

    @Slot(int)
    def _slider_moved(self, hundredths: int) -> None:
        self.edit.set_value(hundredths / 100)

    @Slot()
    def _typed(self) -> None:
        value = self.value()
        self.slider.blockSignals(True)  # the text is the value; the slider only follows
        self.slider.setValue(round(value * 100))
        self.slider.blockSignals(False)
        self.value_changed.emit(value)


class SettingsDialog(QDialog):
    """Edits the settings in `settings`; writes them there on OK."""

    sampling_changed = Signal(object)  # a SetSampling, live as the sampling values change

    def __init__(
        self,
        settings: Settings,
        devices: Sequence[tuple[str, bool, bool]] = (),
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle("Settings")
        self.settings = settings
        self._devices = list(devices)
        self._showing = False  # True while _show sets many widgets: emit sampling once after

        # Widgets are created in reading order (a column at a time), which is the Tab order.
        left = QVBoxLayout()
        left.addWidget(self._sampling_group())
        left.addWidget(self._compute_group())
        left.addStretch(1)
        right = QVBoxLayout()
        right.addWidget(self._backend_group())
        right.addWidget(self._model_group())
        right.addWidget(self._audio_group())
        right.addStretch(1)
        columns = QHBoxLayout()
        columns.addLayout(left, 1)
        columns.addLayout(right, 1)
        self.buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok
            | QDialogButtonBox.StandardButton.Cancel
            | QDialogButtonBox.StandardButton.RestoreDefaults
        )
        self.ok_button = self.buttons.button(QDialogButtonBox.StandardButton.Ok)
        self.restore_button = self.buttons.button(QDialogButtonBox.StandardButton.RestoreDefaults)
        self.restore_button.setText("Re&store defaults")
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        self.restore_button.clicked.connect(self.restore_defaults)

        layout = QVBoxLayout(self)
        layout.addLayout(columns)
        layout.addWidget(self.problem_label)  # what keeps OK disabled, above the buttons
        layout.addWidget(_note(RESTART_NOTE))
        layout.addWidget(self.buttons)

        self._opened_sampling = settings.sampling_command()  # what the conversation uses now
        self._sent = self._opened_sampling  # the last sampling sent to it
        self._opened_with = {key: settings.value(key) for key in DIALOG_KEYS}
        self._show(self._opened_with)

    # --- Sections --------------------------------------------------------------------------------

    def _sampling_group(self) -> QGroupBox:
        self.text_temperature = TemperatureField("Text temperature")
        self.audio_temperature = TemperatureField("Audio temperature")
        self.text_top_k = _top_k_edit("Text top-k", TEXT_TOP_K_MAX)
        self.audio_top_k = _top_k_edit("Audio top-k", AUDIO_TOP_K_MAX)
        self.seed = NumberEdit(
            "Seed",
            0,
            SEED_MAX,
            words={"random": None, "": None},
            help="The same seed and settings give the same answer to the same input; random: "
            "a new seed each time the model loads",
        )
        self.seed.setPlaceholderText("random")
        self.number_edits = (
            self.text_temperature.edit,
            self.audio_temperature.edit,
            self.text_top_k,
            self.audio_top_k,
            self.seed,
        )
        for field in (self.text_temperature, self.audio_temperature):
            field.value_changed.connect(self._sampling_edited)
        for edit in (self.text_top_k, self.audio_top_k):
            edit.value_changed.connect(self._sampling_edited)
        for edit in self.number_edits:
            edit.textChanged.connect(self._update_problem)

        greedy = "Temperature 0 = greedy (the most likely token); top-k 0 = all tokens."
        hint = _note(f"{greedy} {SAMPLING_NOTE}")
        form = _form()
        form.addRow(_label("&Text temperature:", self.text_temperature.edit), self.text_temperature)
        form.addRow(
            _label("&Audio temperature:", self.audio_temperature.edit), self.audio_temperature
        )
        form.addRow(_label("Text to&p-k:", self.text_top_k), self.text_top_k)
        form.addRow(_label("Audio top-&k:", self.audio_top_k), self.audio_top_k)
        form.addRow(_label("S&eed:", self.seed), self.seed)
        form.addRow(hint)
        return _group("Sampling", form)

    def _backend_group(self) -> QGroupBox:
        self.backend_combo = _choice_combo("Where Moshi runs", BACKEND_CHOICES)
        self.server_edit = QLineEdit()
        self.server_edit.setAccessibleName("Server address")
        self.server_edit.setPlaceholderText(f"ws://HOST:{DEFAULT_PORT}/api/chat")
        self.server_edit.setToolTip(SERVER_NOTE)
        self.server_note = _note(SERVER_NOTE)
        self.backend_combo.currentIndexChanged.connect(self._backend_changed)
        self.server_edit.textChanged.connect(self._update_problem)
        self._backend_form = form = _form()
        form.addRow(_label("&Where Moshi runs:", self.backend_combo), self.backend_combo)
        form.addRow(_label("Ser&ver:", self.server_edit), self.server_edit)
        form.addRow(self.server_note)
        return _group("Moshi", form)

    def _model_group(self) -> QGroupBox:
        self.model_combo = QComboBox()
        self.model_combo.setAccessibleName("Model")
        for repo, entry in CATALOG.items():
            self.model_combo.addItem(entry.summary, repo)
            self.model_combo.setItemData(
                self.model_combo.count() - 1, repo, Qt.ItemDataRole.ToolTipRole
            )
        self.model_combo.addItem("Custom repository…", CUSTOM)
        self.model_combo.addItem("Local folder…", FOLDER)

        self.repo_edit = QLineEdit()
        self.repo_edit.setAccessibleName("Repository")
        self.repo_edit.setPlaceholderText("owner/name")
        self.repo_edit.setValidator(
            QRegularExpressionValidator(
                QRegularExpression(r"[A-Za-z0-9_.-]{0,96}/[A-Za-z0-9_.-]{0,96}")
            )
        )
        self.folder_edit = QLineEdit()
        self.folder_edit.setAccessibleName("Model folder")
        self.folder_edit.setPlaceholderText(
            "Kyutai's layout, the transformers format or a full fine-tune"
        )
        self.browse_button = QPushButton("&Browse…")
        self.browse_button.setAccessibleName("Browse for the model folder")
        folder_row = _row(self.folder_edit, self.browse_button)
        self.lora_edit = QLineEdit()
        self.lora_edit.setAccessibleName("LoRA")
        self.lora_edit.setPlaceholderText("none")
        self.lora_edit.setToolTip(
            "A LoRA fine-tune made with Kyutai's moshi-finetune: the folder that holds "
            "lora.safetensors and config.json. It is merged into the model above (the base "
            "model it was trained from) as the model loads."
        )
        self.lora_browse_button = QPushButton("Browse…")
        self.lora_browse_button.setAccessibleName("Browse for the LoRA folder")
        lora_row = _row(self.lora_edit, self.lora_browse_button)
        self.revision_edit = QLineEdit()
        self.revision_edit.setAccessibleName("Revision")
        self.revision_edit.setPlaceholderText("latest")
        self.revision_edit.setToolTip("A branch, tag or commit of the repository")
        self.revision_edit.setValidator(QRegularExpressionValidator(QRegularExpression(r"\S*")))
        self.offline_check = QCheckBox("Use only downloaded files (off&line)")
        self.offline_check.setAccessibleName("Offline")
        self.model_note = _note("")
        self.model_note.setAccessibleName("About the model")
        self.model_note.setTextFormat(Qt.TextFormat.RichText)
        self.model_note.setOpenExternalLinks(True)
        self.model_note.setTextInteractionFlags(Qt.TextInteractionFlag.TextBrowserInteraction)
        self.problem_label = QLabel()
        self.problem_label.setWordWrap(True)
        self.problem_label.setAccessibleName("Problem")

        self.model_combo.currentIndexChanged.connect(self._model_kind_changed)
        self.repo_edit.textChanged.connect(self._update_problem)
        self.folder_edit.textChanged.connect(self._update_problem)
        self.browse_button.clicked.connect(self._browse)
        self.lora_edit.textChanged.connect(self._update_problem)
        self.lora_browse_button.clicked.connect(self._browse_lora)

        self._model_form = form = _form()
        form.addRow(_label("&Model:", self.model_combo), self.model_combo)
        form.addRow("", self.model_note)
        form.addRow(_label("&Repository:", self.repo_edit), self.repo_edit)
        form.addRow(_label("&Folder:", self.folder_edit), folder_row)
        form.addRow(_label("L&oRA:", self.lora_edit), lora_row)
        form.addRow(_label("Revisio&n:", self.revision_edit), self.revision_edit)
        form.addRow("", self.offline_check)
        self.model_group = _group("Model", form)
        return self.model_group

    def _compute_group(self) -> QGroupBox:
        self.device_combo = _choice_combo("Compute device", DEVICE_CHOICES)
        self.dtype_combo = _choice_combo("Data type", DTYPE_CHOICES)
        self.threads_edit = NumberEdit(
            "CPU threads",
            1,
            THREADS_MAX,
            words={"auto": None, "": None},
            help="On the CPU: how many threads compute; auto follows the cores other programs "
            "leave free",
        )
        self.threads_edit.setPlaceholderText("auto")
        self.threads_edit.textChanged.connect(self._update_problem)
        form = _form()
        form.addRow(_label("&Device:", self.device_combo), self.device_combo)
        form.addRow(_label("Data t&ype:", self.dtype_combo), self.dtype_combo)
        form.addRow(_label("CPU threads:", self.threads_edit), self.threads_edit)
        self.compute_group = _group("Compute", form)
        return self.compute_group

    def _audio_group(self) -> QGroupBox:
        self.input_combo = QComboBox()
        self.input_combo.setAccessibleName("Input device")
        self.output_combo = QComboBox()
        self.output_combo.setAccessibleName("Output device")
        self.half_duplex_check = QCheckBox("&Half duplex")
        self.half_duplex_check.setAccessibleDescription(HALF_DUPLEX_NOTE)
        half_duplex_note = _note(HALF_DUPLEX_NOTE)
        form = _form()
        form.addRow(_label("&Input:", self.input_combo), self.input_combo)
        form.addRow(_label("O&utput:", self.output_combo), self.output_combo)
        form.addRow("", self.half_duplex_check)
        form.addRow("", half_duplex_note)
        self._echo_rows(form)
        return _group("Audio", form)

    def _echo_rows(self, form: QFormLayout) -> None:
        """Echo cancellation and noise suppression (app/audio/echo.py)."""
        self.echo_check = QCheckBox("Echo &cancellation (talk without headphones)")
        self.noise_combo = _choice_combo("Noise suppression", NOISE_CHOICES)
        form.addRow("", self.echo_check)
        form.addRow(_label("Back&ground noise suppression:", self.noise_combo), self.noise_combo)

    # --- Values ----------------------------------------------------------------------------------

    def sampling(self) -> SetSampling:
        """The sampling settings shown (ValueError while one of them is not valid)."""
        return SetSampling(
            temperature=self.audio_temperature.value(),
            top_k=self.audio_top_k.value(),
            text_temperature=self.text_temperature.value(),
            text_top_k=self.text_top_k.value(),
        )

    def values(self) -> dict[Key, Any]:
        """Every setting shown, as `Settings` stores it (valid only when `problem()` is None;
        ValueError while a number is not valid)."""
        kind = self.model_combo.currentData()
        is_repo = kind != FOLDER
        if kind == CUSTOM:
            source = self.repo_edit.text().strip()
        elif kind == FOLDER:
            source = str(Path(self.folder_edit.text().strip()).expanduser().absolute())
        else:
            source = kind
        backend = self.backend_combo.currentData()
        server = self.server_edit.text().strip()
        lora = self.lora_edit.text().strip()
        return {
            Key.BACKEND: backend,
            Key.SERVER_URL: _server_or(server, self._opened_with[Key.SERVER_URL]),
            Key.TEXT_TEMPERATURE: self.text_temperature.value(),
            Key.AUDIO_TEMPERATURE: self.audio_temperature.value(),
            Key.TEXT_TOP_K: self.text_top_k.value(),
            Key.AUDIO_TOP_K: self.audio_top_k.value(),
            Key.SEED: self.seed.value(),
            Key.MODEL_SOURCE: source,
            Key.MODEL_REVISION: (self.revision_edit.text().strip() or None) if is_repo else None,
            Key.LORA: str(Path(lora).expanduser().absolute()) if lora else None,
            Key.OFFLINE: self.offline_check.isChecked() if is_repo else False,
            Key.COMPUTE_DEVICE: self.device_combo.currentData(),
            Key.DTYPE: self.dtype_combo.currentData(),
            Key.THREADS: self.threads_edit.value(),
            Key.INPUT_DEVICE: self.input_combo.currentData(),
            Key.OUTPUT_DEVICE: self.output_combo.currentData(),
            Key.HALF_DUPLEX: self.half_duplex_check.isChecked(),
            Key.ECHO_CANCELLATION: self.echo_check.isChecked(),
            Key.NOISE_SUPPRESSION: self.noise_combo.currentData(),
        }

    def problem(self) -> str | None:
        """Why the values shown cannot be saved, in one sentence; None when they can."""
        for edit in (*self.number_edits, self.threads_edit):
            if edit.problem():
                return edit.problem()
        if self.backend_combo.currentData() == "remote":
            if _server_or(self.server_edit.text().strip(), None) is None:
                return "Enter the server's address: ws://HOST:PORT or wss://HOST."
        kind = self.model_combo.currentData()
        if kind == CUSTOM and not is_repo_id(self.repo_edit.text().strip()):
            return "Enter a Hugging Face repository id: owner/name."
        if kind == FOLDER:
            text = self.folder_edit.text().strip()
            if not text:
                return "Choose the folder that holds the model."
            problem = _model_folder_problem(Path(text).expanduser())
            if problem is not None:
                return problem
        lora = self.lora_edit.text().strip()
        if lora:
            return _sentence(resolve_lora, Path(lora).expanduser())
        return None

    def changed(self) -> set[Key]:
        """The settings shown that differ from what the dialog opened with."""
        values = self.values()
        return {key for key in DIALOG_KEYS if values[key] != self._opened_with[key]}

    def needs_restart(self) -> bool:
        """Whether a setting that applies later (at the next Start, or as the model loads)
        differs from what the dialog opened with."""
        return bool(self.changed() & set(RESTART_KEYS))

    def later_note(self, *, running: bool, model_loads: bool) -> str:
        """What to say once OK saved the settings shown: which of them apply only later, and
        when ("" for nothing). `running`: a conversation is active, so the next Start is not
        now; `model_loads`: the next Start loads the model (none is loaded yet, or another one
        is chosen), so the seed applies then too."""
        changed = self.changed()
        at_start = {**NEXT_START_KEYS, **(AT_LOAD_KEYS if model_loads else {})}
        at_load = {} if model_loads else AT_LOAD_KEYS
        notes = []
        if running and (names := _names(at_start, changed)):
            notes.append(AT_START_NOTE.format(names))
        if names := _names(at_load, changed):
            notes.append(AT_LOAD_NOTE.format(names))
        return " ".join(notes)

    def _show(self, values: dict[Key, Any]) -> None:
        self._showing = True
        try:
            _select(self.backend_combo, values[Key.BACKEND])
            self.server_edit.setText(values[Key.SERVER_URL])
            self._backend_changed()
            self.text_temperature.set_value(values[Key.TEXT_TEMPERATURE])
            self.audio_temperature.set_value(values[Key.AUDIO_TEMPERATURE])
            self.text_top_k.set_value(values[Key.TEXT_TOP_K])
            self.audio_top_k.set_value(values[Key.AUDIO_TOP_K])
            self.seed.set_value(values[Key.SEED])
            self._show_source(values[Key.MODEL_SOURCE])
            self.revision_edit.setText(values[Key.MODEL_REVISION] or "")
            self.lora_edit.setText(values[Key.LORA] or "")
            self.offline_check.setChecked(values[Key.OFFLINE])
            _select(self.device_combo, values[Key.COMPUTE_DEVICE])
            _select(self.dtype_combo, values[Key.DTYPE])
            self.threads_edit.set_value(values[Key.THREADS])
            self._fill_devices(self.input_combo, values[Key.INPUT_DEVICE], inputs=True)
            self._fill_devices(self.output_combo, values[Key.OUTPUT_DEVICE], inputs=False)
            self.half_duplex_check.setChecked(values[Key.HALF_DUPLEX])
            self.echo_check.setChecked(values[Key.ECHO_CANCELLATION])
            _select(self.noise_combo, values[Key.NOISE_SUPPRESSION])
        finally:
            self._showing = False
        self._sampling_edited()
        self._update_problem()

    def _show_source(self, source: str) -> None:
        if source in CATALOG:
            kind = source
        elif is_folder_source(source):
            kind = FOLDER
            self.folder_edit.setText(source)
        else:
            kind = CUSTOM
            self.repo_edit.setText(source)
        _select(self.model_combo, kind)
        self._model_kind_changed()

    def _fill_devices(self, combo: QComboBox, chosen: str | None, inputs: bool) -> None:
        combo.clear()
        combo.addItem("System default", None)
        names = dict.fromkeys(name for name, i, o in self._devices if (i if inputs else o))
        for name in names:
            combo.addItem(name, name)
        if chosen is not None and chosen not in names:  # unplugged: keep it unless changed
            combo.addItem(f"{chosen} (not connected)", chosen)
        _select(combo, chosen)

    # --- Slots -----------------------------------------------------------------------------------

    @Slot()
    def _sampling_edited(self) -> None:
        if self._showing or not all(edit.is_valid() for edit in self.number_edits[:4]):
            return
        sampling = self.sampling()
        if sampling != self._sent:
            self._sent = sampling
            self.sampling_changed.emit(sampling)

    @Slot()
    def _backend_changed(self) -> None:
        remote = self.backend_combo.currentData() == "remote"
        self._backend_form.setRowVisible(self.server_edit, remote)
        self._backend_form.setRowVisible(self.server_note, remote)
        self.model_group.setEnabled(not remote)
        self.compute_group.setEnabled(not remote)
        self._update_problem()

    @Slot()
    def _model_kind_changed(self) -> None:
        kind = self.model_combo.currentData()
        if kind in CATALOG:
            self.repo_edit.setText(kind)
            self.model_note.setText(entry_html(CATALOG[kind]))
        self._model_form.setRowVisible(self.model_note, kind in CATALOG)
        self.repo_edit.setReadOnly(kind != CUSTOM)
        self._model_form.setRowVisible(self.repo_edit, kind != FOLDER)
        self._model_form.setRowVisible(self.folder_edit.parentWidget(), kind == FOLDER)
        self.revision_edit.setEnabled(kind != FOLDER)
        self.offline_check.setEnabled(kind != FOLDER)
        self._update_problem()

    @Slot()
    def _update_problem(self) -> None:
        problem = self.problem()
        self.problem_label.setText(problem or "")
        self.problem_label.setVisible(problem is not None)
        self.ok_button.setEnabled(problem is None)
        if self.isVisible() and self.layout() is not None:
            # Room for the problem, or the wrapped notes would be squeezed: a window does not
            # grow by itself for a label that appears.
            self.layout().activate()
            need = self.sizeHint().height()
            if self.height() < need:
                self.resize(self.width(), need)

    @Slot()
    def _browse(self) -> None:
        current = self.folder_edit.text().strip()
        start = current if current and Path(current).expanduser().is_dir() else str(Path.home())
        folder = QFileDialog.getExistingDirectory(self, "Choose the model folder", start)
        if folder:
            self.folder_edit.setText(str(Path(folder)))

    @Slot()
    def _browse_lora(self) -> None:
        current = self.lora_edit.text().strip()
        start = current if current and Path(current).expanduser().exists() else str(Path.home())
        folder = QFileDialog.getExistingDirectory(self, "Choose the LoRA folder", start)
        if folder:
            self.lora_edit.setText(str(Path(folder)))

    @Slot()
    def restore_defaults(self) -> None:
        """Show the default of every setting (saved only on OK)."""
        self._show({key: Settings.default(key) for key in DIALOG_KEYS})

    @Slot()
    def accept(self) -> None:
        if self.problem() is not None:
            return
        for key, value in self.values().items():
            self.settings.set_value(key, value)
        self.settings.sync()
        super().accept()

    @Slot()
    def reject(self) -> None:
        if self._sent != self._opened_sampling:  # take back what was applied live
            self._sent = self._opened_sampling
            self.sampling_changed.emit(self._opened_sampling)
        super().reject()


def _server_or(text: str, default: str | None) -> str | None:
    """`text` as the server's URL, or `default` when it is not a server address."""
    try:
        return server_url(text)
    except UserError:
        return default


def _form() -> QFormLayout:
    form = QFormLayout()
    form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
    return form


def _group(title: str, form: QFormLayout) -> QGroupBox:
    group = QGroupBox(title)
    group.setLayout(form)
    group.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Maximum)
    return group


def entry_html(entry: Entry) -> str:
    """What a catalog entry is, its language, size and licence (linked), and what a gated one
    asks before it can be downloaded: rich text for the model's note."""
    licence = entry.licence
    text = (
        f"{html.escape(entry.about)}<br>{html.escape(entry.language_text)} · about "
        f"{html.escape(entry.size_text)} · "
        f'<a href="{html.escape(licence.url)}">{html.escape(licence.name)}</a> '
        f"({html.escape(licence.terms)})"
    )
    if entry.gated:
        text += (
            f'<br>Gated: accept its licence on <a href="{html.escape(entry.url)}">its page</a> '
            "(logged in to Hugging Face), then give this app your token: "
            "<code>hf auth login</code> (or <code>huggingface-cli login</code>) in a terminal, "
            "or the HF_TOKEN environment variable."
        )
    return text


def _note(text: str) -> QLabel:
    """A short explanation, in a slightly smaller font than the controls'."""
    label = QLabel(text)
    label.setWordWrap(True)
    font = label.font()
    font.setPointSizeF(font.pointSizeF() * 0.9)
    label.setFont(font)
    return label


def _label(text: str, buddy: QWidget) -> QLabel:
    """A form label whose mnemonic (&) moves the focus to `buddy`."""
    label = QLabel(text)
    label.setBuddy(buddy)
    return label


def _top_k_edit(name: str, maximum: int) -> NumberEdit:
    return NumberEdit(
        name,
        0,
        maximum,
        words={"all": 0},
        help="Sample among the k most likely tokens (0 or all: every token)",
    )


def _names(names: dict[Key, str], keys: set[Key]) -> str:
    """The names of `keys` that `names` has, once each, as a sentence's subject and verb: "The
    seed applies", "The model and the seed apply" ("" for none)."""
    found = list(dict.fromkeys(name for key, name in names.items() if key in keys))
    if not found:
        return ""
    subject = ", ".join(found[:-1]) + " and " + found[-1] if len(found) > 1 else found[0]
    return subject[0].upper() + subject[1:] + (" apply" if len(found) > 1 else " applies")


def _row(edit: QLineEdit, button: QPushButton) -> QWidget:
    """A line edit that takes the width, with its button beside it."""
    row = QWidget()
    layout = QHBoxLayout(row)
    layout.setContentsMargins(0, 0, 0, 0)
    layout.addWidget(edit, 1)
    layout.addWidget(button)
    return row


def _model_folder_problem(folder: Path) -> str | None:
    """What keeps `folder` from loading as a model (doctor's check of the files, without
    reading the tensors or downloading what it names in a repository), in a sentence; None
    when nothing does."""
    return _sentence(lambda path: resolve_folder(path, unfetched), folder)


def _sentence(check: Callable[[Path], Any], path: Path) -> str | None:
    """The error that `check(path)` raises for a model's files, as a sentence; None if none."""
    try:
        check(path)
    except (CheckpointError, ConfigError) as e:
        text = str(e).strip()
        text = text[:1].upper() + text[1:]
        return text if text.endswith(".") else text + "."
    return None


def _choice_combo(name: str, choices: dict[str, str]) -> QComboBox:
    combo = QComboBox()
    combo.setAccessibleName(name)
    for value, text in choices.items():
        combo.addItem(text, value)
    return combo


def _select(combo: QComboBox, data: Any) -> None:
    index = combo.findData(data)
    combo.setCurrentIndex(max(index, 0))
