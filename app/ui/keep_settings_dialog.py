"""Settings of the conversation store: whether conversations are kept, for how many days, and
in which folder (`app.conversation.preferences`, shared with the command line)."""

from __future__ import annotations

from PySide6.QtWidgets import (
    QCheckBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLineEdit,
    QMessageBox,
    QPushButton,
    QSpinBox,
    QWidget,
)

from ..conversation import preferences
from ..errors import UserError


class KeepSettingsDialog(QDialog):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Conversation settings")
        prefs = preferences.load()
        self.keep = QCheckBox("Keep conversations on this computer")
        self.keep.setToolTip("Off: nothing of a conversation is written to disk")
        self.keep.setChecked(prefs.keep)
        self.days = QSpinBox()
        self.days.setRange(0, 36500)
        self.days.setSpecialValueText("forever")
        self.days.setSuffix(" days")
        self.days.setValue(prefs.keep_days or 0)
        self.folder = QLineEdit(str(prefs.root))
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse)
        folder_row = QHBoxLayout()
        folder_row.addWidget(self.folder, 1)
        folder_row.addWidget(browse)
        buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel
        )
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        form = QFormLayout(self)
        form.addRow(self.keep)
        form.addRow("Keep for", self.days)
        form.addRow("Folder", folder_row)
        form.addRow(buttons)

    def chosen(self) -> preferences.Preferences:
        folder = self.folder.text().strip()
        default = str(preferences.Preferences().root)
        return preferences.Preferences(
            keep=self.keep.isChecked(),
            keep_days=self.days.value() or None,
            folder=folder if folder and folder != default else None,
        )

    def accept(self) -> None:
        try:
            preferences.save(self.chosen())
        except UserError as e:
            QMessageBox.warning(self, "Moshi", str(e))
            return
        super().accept()

    def _browse(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Keep conversations in", self.folder.text())
        if folder:
            self.folder.setText(folder)
