"""The settings dialog: loads, validates, applies sampling live, and saves only on OK."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from PySide6.QtCore import QSettings, Qt
from PySide6.QtWidgets import (
    QAbstractButton,
    QAbstractSlider,
    QAbstractSpinBox,
    QComboBox,
    QDialog,
    QFileDialog,
    QLabel,
    QLineEdit,
    QWidget,
)

from app.engine.messages import SetSampling
from app.ui.settings import Key, Settings
from app.ui.settings_dialog import CUSTOM, DIALOG_KEYS, FOLDER, SettingsDialog
from model.catalog import CATALOG
from model.catalog import DEFAULT_REPO as DEFAULT_MODEL
from model.config import MIMI_NAME, MOSHI_NAME, TOKENIZER_NAME

DEVICES = [
    ("Built-in Microphone", True, False),
    ("Built-in Speakers", False, True),
    ("USB Headset", True, True),
]


@pytest.fixture
def settings(tmp_path: Path, qapp) -> Settings:
    return Settings(QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat))


@pytest.fixture
def open_dialog(qtbot, settings: Settings) -> Callable[..., SettingsDialog]:
    def open_dialog(devices=DEVICES) -> SettingsDialog:
        dialog = SettingsDialog(settings, devices)
        qtbot.addWidget(dialog)
        dialog.show()
        return dialog

    return open_dialog


@pytest.fixture
def model_folder(tmp_path: Path) -> Path:
    """A folder with a model's files in Kyutai's layout, as far as the dialog checks them (their
    names; the tensors are read as the model loads)."""
    folder = tmp_path / "my-moshi"
    folder.mkdir()
    for name in (MOSHI_NAME, MIMI_NAME, TOKENIZER_NAME):
        (folder / name).write_bytes(b"")
    return folder


def stored(settings: Settings) -> dict[Key, object]:
    return {key: settings.value(key) for key in Key}


def choose_model(dialog: SettingsDialog, data: str) -> None:
    dialog.model_combo.setCurrentIndex(dialog.model_combo.findData(data))


def retype(qtbot, widget: QWidget, text: str) -> None:
    """Select all of a line edit or spin box and type `text`, as a user would."""
    widget.setFocus()
    qtbot.keyClick(widget, Qt.Key.Key_A, Qt.KeyboardModifier.ControlModifier)
    qtbot.keyClicks(widget, text)


def test_opens_with_the_defaults(open_dialog) -> None:
    dialog = open_dialog()
    assert dialog.text_temperature.value() == 0.7
    assert dialog.text_temperature.slider.value() == 70
    assert dialog.audio_temperature.value() == 0.8
    assert dialog.text_top_k.value() == 25
    assert dialog.audio_top_k.value() == 250
    assert dialog.seed.text() == "random"
    assert dialog.model_combo.currentData() == DEFAULT_MODEL
    assert dialog.repo_edit.text() == DEFAULT_MODEL and dialog.repo_edit.isReadOnly()
    assert not dialog.folder_edit.isVisible()
    assert dialog.input_combo.currentText() == "System default"
    assert dialog.ok_button.isEnabled()
    assert dialog.values() == {key: Settings.default(key) for key in DIALOG_KEYS}


def test_loads_the_stored_values(open_dialog, settings: Settings) -> None:
    settings.text_temperature = 0.35
    settings.audio_temperature = 0.0
    settings.text_top_k = 0
    settings.audio_top_k = 100
    settings.seed = 1234
    settings.model_source = "kyutai/moshika-pytorch-q8"
    settings.model_revision = "main"
    settings.offline = True
    settings.compute_device = "cpu"
    settings.dtype = "int8"
    settings.input_device = "USB Headset"
    settings.output_device = "Built-in Speakers"
    settings.half_duplex = True
    dialog = open_dialog()
    assert dialog.text_temperature.slider.value() == 35
    assert dialog.audio_temperature.edit.text() == "0.00"
    assert dialog.text_top_k.text() == "all"
    assert dialog.seed.value() == 1234
    assert dialog.model_combo.currentText() == (
        "Moshika (female voice), int8 · English · 8.4 GB · CC-BY 4.0"
    )
    assert dialog.revision_edit.text() == "main"
    assert dialog.offline_check.isChecked()
    assert dialog.device_combo.currentData() == "cpu"
    assert dialog.dtype_combo.currentData() == "int8"
    assert dialog.input_combo.currentText() == "USB Headset"
    assert dialog.output_combo.currentText() == "Built-in Speakers"
    assert dialog.half_duplex_check.isChecked()
    assert dialog.values() == {key: settings.value(key) for key in DIALOG_KEYS}


def test_loads_a_custom_repository(open_dialog, settings: Settings) -> None:
    settings.model_source = "someone/my-moshi"
    dialog = open_dialog()
    assert dialog.model_combo.currentData() == CUSTOM
    assert dialog.repo_edit.text() == "someone/my-moshi" and not dialog.repo_edit.isReadOnly()
    assert not dialog.model_note.isVisible()  # the catalog knows nothing of it


def test_the_model_list_is_the_catalog_with_licence_size_and_language(open_dialog) -> None:
    dialog = open_dialog()
    listed = {
        dialog.model_combo.itemData(i): dialog.model_combo.itemText(i) for i in range(len(CATALOG))
    }
    assert listed == {repo: entry.summary for repo, entry in CATALOG.items()}
    assert "J-Moshi (Japanese), bfloat16 · Japanese · 15.8 GB · CC BY-NC 4.0" in listed.values()
    note = dialog.model_note.text()  # the default: Moshiko
    assert dialog.model_note.isVisible() and "creativecommons.org/licenses/by/4.0/" in note
    assert "Gated" not in note
    choose_model(dialog, "kyutai/moshika-rl-seamless")
    note = dialog.model_note.text()
    assert "CC BY-NC 4.0" in note and "Gated" in note and "HF_TOKEN" in note
    assert 'href="https://huggingface.co/kyutai/moshika-rl-seamless"' in note
    assert "hf auth login" in note and "huggingface-cli login" in note


def test_loads_a_local_folder(open_dialog, settings: Settings, model_folder: Path) -> None:
    settings.model_source = str(model_folder)
    dialog = open_dialog()
    assert dialog.model_combo.currentData() == FOLDER
    assert dialog.folder_edit.text() == str(model_folder) and dialog.folder_edit.isVisible()
    assert not dialog.repo_edit.isVisible()
    assert not dialog.revision_edit.isEnabled() and not dialog.offline_check.isEnabled()
    assert dialog.ok_button.isEnabled()


def test_devices_are_listed_by_direction(open_dialog) -> None:
    dialog = open_dialog()
    inputs = [dialog.input_combo.itemText(i) for i in range(dialog.input_combo.count())]
    outputs = [dialog.output_combo.itemText(i) for i in range(dialog.output_combo.count())]
    assert inputs == ["System default", "Built-in Microphone", "USB Headset"]
    assert outputs == ["System default", "Built-in Speakers", "USB Headset"]


def test_a_device_not_connected_is_kept(open_dialog, settings: Settings) -> None:
    settings.input_device = "Old Microphone"
    dialog = open_dialog(devices=[])
    assert dialog.input_combo.currentText() == "Old Microphone (not connected)"
    dialog.accept()
    assert settings.input_device == "Old Microphone"


def test_slider_and_spin_box_stay_in_sync(open_dialog, qtbot) -> None:
    dialog = open_dialog()
    field = dialog.text_temperature
    field.edit.set_value(1.25)
    assert field.slider.value() == 125
    field.slider.setValue(40)
    assert field.edit.value() == 0.4
    field.slider.setFocus()
    qtbot.keyClick(field.slider, Qt.Key.Key_Right)
    assert (field.slider.value(), field.edit.value()) == (45, 0.45)
    qtbot.keyClick(field.slider, Qt.Key.Key_End)
    assert field.edit.value() == 1.5
    retype(qtbot, field.edit, "0.1")
    assert field.slider.value() == 10


def test_sampling_changes_are_sent_live(open_dialog, qtbot) -> None:
    dialog = open_dialog()
    sent: list[SetSampling] = []
    dialog.sampling_changed.connect(sent.append)
    with qtbot.waitSignal(dialog.sampling_changed) as signal:
        dialog.audio_temperature.slider.setValue(50)
    assert signal.args == [
        SetSampling(temperature=0.5, top_k=250, text_temperature=0.7, text_top_k=25)
    ]
    dialog.text_temperature.edit.set_value(0.0)
    dialog.audio_top_k.set_value(100)
    dialog.text_top_k.set_value(0)
    assert sent == [  # once per change, although the slider and the spin box both move
        SetSampling(0.5, 250, 0.7, 25),
        SetSampling(0.5, 250, 0.0, 25),
        SetSampling(0.5, 100, 0.0, 25),
        SetSampling(0.5, 100, 0.0, 0),
    ]
    assert dialog.sampling() == sent[-1]


def test_the_seed_is_not_sampling_sent_live(open_dialog) -> None:
    dialog = open_dialog()
    sent: list[SetSampling] = []
    dialog.sampling_changed.connect(sent.append)
    dialog.seed.set_value(7)
    assert sent == []
    assert dialog.values()[Key.SEED] == 7
    assert dialog.needs_restart()


@pytest.mark.parametrize(
    "field, typed, allowed",
    [
        ("text_temperature", "9.99", "0 to 1.5"),
        ("audio_temperature", "-1", "0 to 1.5"),
        ("audio_top_k", "abc-5", "0 to 2048, or all"),
        ("text_top_k", "99999", "0 to 32000, or all"),
        ("seed", "-7", "0 to 2147483647, or random"),
    ],
)
def test_an_invalid_number_stays_as_typed_and_shows_its_range(
    open_dialog, qtbot, field, typed, allowed
) -> None:
    dialog = open_dialog()
    edit = getattr(dialog, field)
    edit = getattr(edit, "edit", edit)  # a temperature's text beside its slider
    sent: list[SetSampling] = []
    dialog.sampling_changed.connect(sent.append)
    retype(qtbot, edit, typed)
    assert edit.text() == typed  # not fixed up behind the user's back
    assert not edit.is_valid() and edit.toolTip() == allowed and "border" in edit.styleSheet()
    assert not dialog.ok_button.isEnabled()
    assert dialog.problem_label.isVisible() and allowed in dialog.problem_label.text()
    assert dialog.problem_label.text().startswith(edit.accessibleName() + " must be ")
    assert dialog.height() >= dialog.sizeHint().height()  # it grew: no note is squeezed
    dialog.accept()  # Enter while a value is invalid does nothing
    assert dialog.result() == QDialog.DialogCode.Rejected and dialog.isVisible()
    for sampling in sent:  # what was valid on the way (9, 99, ...) applied; nothing else did
        assert 0 <= sampling.temperature <= 1.5 and 0 <= sampling.text_temperature <= 1.5
        assert 0 <= sampling.top_k <= 2048 and 0 <= sampling.text_top_k <= 32000
    edit.setFocus()
    qtbot.keyClick(edit, Qt.Key.Key_End)
    qtbot.keyClick(edit, Qt.Key.Key_Down)  # stepping an invalid value does not guess one
    assert edit.text() == typed
    dialog.restore_button.click()
    assert edit.is_valid() and edit.styleSheet() == "" and dialog.ok_button.isEnabled()
    assert allowed in edit.toolTip()  # the range is in the tooltip of a valid value too


def test_numbers_take_words_and_step_within_their_range(open_dialog, qtbot, settings) -> None:
    dialog = open_dialog()
    retype(qtbot, dialog.seed, "42")
    assert dialog.values()[Key.SEED] == 42
    retype(qtbot, dialog.seed, "")
    qtbot.keyClick(dialog.seed, Qt.Key.Key_Delete)  # empty is random, as the placeholder says
    assert dialog.seed.is_valid() and dialog.values()[Key.SEED] is None
    retype(qtbot, dialog.text_top_k, "ALL")
    assert dialog.values()[Key.TEXT_TOP_K] == 0
    retype(qtbot, dialog.audio_top_k, "2047")
    qtbot.keyClick(dialog.audio_top_k, Qt.Key.Key_PageUp)
    assert dialog.audio_top_k.text() == "2048"  # ten steps up, held at the top
    qtbot.keyClick(dialog.audio_top_k, Qt.Key.Key_Down)
    assert dialog.audio_top_k.value() == 2047
    retype(qtbot, dialog.text_temperature.edit, "0,25")  # a decimal comma
    assert dialog.text_temperature.value() == 0.25
    assert dialog.text_temperature.slider.value() == 25
    retype(qtbot, dialog.revision_edit, "two words")
    assert dialog.revision_edit.text() == "twowords"
    dialog.accept()
    assert (settings.seed, settings.text_top_k, settings.audio_top_k) == (None, 0, 2047)
    assert settings.text_temperature == 0.25


def test_a_custom_repository_must_be_owner_slash_name(open_dialog, qtbot) -> None:
    dialog = open_dialog()
    choose_model(dialog, CUSTOM)
    assert not dialog.repo_edit.isReadOnly()
    retype(qtbot, dialog.repo_edit, "kyutai")
    assert not dialog.ok_button.isEnabled()
    assert dialog.problem_label.isVisible() and "owner/name" in dialog.problem_label.text()
    qtbot.keyClicks(dialog.repo_edit, "/my moshi")  # the space is refused as it is typed
    assert dialog.repo_edit.text() == "kyutai/mymoshi"
    assert dialog.ok_button.isEnabled() and dialog.problem_label.isHidden()
    retype(qtbot, dialog.repo_edit, "a--b/c")
    assert not dialog.ok_button.isEnabled()
    dialog.accept()  # Enter while OK is disabled does nothing
    assert dialog.result() == QDialog.DialogCode.Rejected and dialog.isVisible()
    choose_model(dialog, DEFAULT_MODEL)  # a preset is always valid
    assert dialog.ok_button.isEnabled()


def test_a_local_folder_is_checked_as_a_model_folder(
    open_dialog, qtbot, tmp_path: Path, model_folder: Path
) -> None:
    dialog = open_dialog()
    choose_model(dialog, FOLDER)
    assert dialog.folder_edit.isVisible() and dialog.browse_button.isVisible()
    assert not dialog.ok_button.isEnabled()  # no folder yet
    retype(qtbot, dialog.folder_edit, str(tmp_path / "missing"))
    assert not dialog.ok_button.isEnabled() and "not found" in dialog.problem_label.text()
    retype(qtbot, dialog.folder_edit, str(tmp_path))  # it exists, but holds no model
    problem = dialog.problem_label.text()
    assert not dialog.ok_button.isEnabled() and "is missing" in problem
    assert MOSHI_NAME in problem and TOKENIZER_NAME in problem
    (model_folder / "config.json").write_text("{")
    retype(qtbot, dialog.folder_edit, str(model_folder))
    assert not dialog.ok_button.isEnabled() and "config.json" in dialog.problem_label.text()
    (model_folder / "config.json").unlink()  # Kyutai's defaults: the files are all there
    retype(qtbot, dialog.folder_edit, str(model_folder) + "/")
    assert dialog.ok_button.isEnabled() and dialog.problem_label.isHidden()
    assert dialog.values()[Key.MODEL_SOURCE] == str(model_folder)


def test_browse_checks_the_folder_chosen(
    open_dialog, qtbot, monkeypatch, tmp_path: Path, model_folder: Path
) -> None:
    asked, chosen = [], [str(tmp_path), str(model_folder)]

    def pick(parent, caption, start):
        asked.append(start)
        return chosen.pop(0)

    monkeypatch.setattr(QFileDialog, "getExistingDirectory", pick)
    dialog = open_dialog()
    choose_model(dialog, FOLDER)
    qtbot.mouseClick(dialog.browse_button, Qt.MouseButton.LeftButton)
    assert asked == [str(Path.home())]
    assert dialog.folder_edit.text() == str(tmp_path)
    assert not dialog.ok_button.isEnabled() and "is missing" in dialog.problem_label.text()
    qtbot.mouseClick(dialog.browse_button, Qt.MouseButton.LeftButton)
    assert asked[1] == str(tmp_path)  # from where the last choice was
    assert dialog.folder_edit.text() == str(model_folder) and dialog.ok_button.isEnabled()


def test_a_lora_is_checked_and_saved(open_dialog, qtbot, settings, tmp_path: Path) -> None:
    """The LoRA field beside the model: empty is none; a folder is checked as moshi-finetune's
    LoRA (lora.safetensors and its config.json) as it is typed, and saved as an absolute path."""
    from model.tiny import TINY_LM, write_random_lora

    dialog = open_dialog()
    choose_model(dialog, DEFAULT_MODEL)
    assert dialog.lora_edit.isVisible() and dialog.lora_browse_button.isVisible()
    assert dialog.ok_button.isEnabled() and dialog.values()[Key.LORA] is None
    retype(qtbot, dialog.lora_edit, str(tmp_path))
    assert not dialog.ok_button.isEnabled()
    assert dialog.problem_label.text().startswith(f"{tmp_path} has no lora.safetensors")
    lora = write_random_lora(tmp_path / "run" / "consolidated", dict(TINY_LM), rank=2)
    retype(qtbot, dialog.lora_edit, str(lora))
    assert dialog.ok_button.isEnabled() and dialog.problem_label.isHidden()
    assert dialog.needs_restart()
    with qtbot.waitSignal(dialog.accepted):
        qtbot.mouseClick(dialog.ok_button, Qt.MouseButton.LeftButton)
    assert settings.lora == str(lora)
    assert open_dialog().lora_edit.text() == str(lora)


def test_a_fine_tune_folder_whose_mimi_is_its_bases_is_accepted(
    open_dialog, qtbot, tmp_path: Path
) -> None:
    """A full fine-tune without Mimi or tokenizer: those are downloaded as it loads."""
    folder = tmp_path / "consolidated"
    folder.mkdir()
    (folder / "consolidated.safetensors").write_bytes(b"")
    (folder / "config.json").write_text('{"lora": false, "lora_rank": 128, "lora_scaling": 2.0}')
    dialog = open_dialog()
    choose_model(dialog, FOLDER)
    retype(qtbot, dialog.folder_edit, str(folder))
    assert dialog.ok_button.isEnabled(), dialog.problem_label.text()


def test_ok_saves_everything(open_dialog, qtbot, settings: Settings, model_folder: Path) -> None:
    dialog = open_dialog()
    dialog.text_temperature.edit.set_value(0.3)
    dialog.audio_top_k.set_value(64)
    dialog.seed.set_value(99)
    choose_model(dialog, FOLDER)
    dialog.folder_edit.setText(str(model_folder))
    dialog.device_combo.setCurrentIndex(dialog.device_combo.findData("cuda"))
    dialog.dtype_combo.setCurrentIndex(dialog.dtype_combo.findData("float16"))
    dialog.input_combo.setCurrentIndex(dialog.input_combo.findData("USB Headset"))
    dialog.half_duplex_check.setChecked(True)
    assert dialog.needs_restart()
    with qtbot.waitSignal(dialog.accepted):
        qtbot.mouseClick(dialog.ok_button, Qt.MouseButton.LeftButton)
    assert stored(settings) == {
        **{key: Settings.default(key) for key in Key},
        Key.TEXT_TEMPERATURE: 0.3,
        Key.AUDIO_TOP_K: 64,
        Key.SEED: 99,
        Key.MODEL_SOURCE: str(model_folder),
        Key.COMPUTE_DEVICE: "cuda",
        Key.DTYPE: "float16",
        Key.INPUT_DEVICE: "USB Headset",
        Key.HALF_DUPLEX: True,
    }


def test_ok_saves_a_custom_repository_and_revision(open_dialog, qtbot, settings) -> None:
    dialog = open_dialog()
    choose_model(dialog, CUSTOM)
    retype(qtbot, dialog.repo_edit, "someone/my-moshi")
    retype(qtbot, dialog.revision_edit, "v2")
    dialog.offline_check.setChecked(True)
    dialog.accept()
    assert settings.model_source == "someone/my-moshi"
    assert settings.model_revision == "v2"
    assert settings.offline is True


def test_cancel_saves_nothing_and_takes_back_live_sampling(
    open_dialog, qtbot, settings: Settings
) -> None:
    settings.text_top_k = 10
    before = stored(settings)
    dialog = open_dialog()
    dialog.text_top_k.set_value(50)
    dialog.audio_temperature.edit.set_value(1.0)
    dialog.dtype_combo.setCurrentIndex(dialog.dtype_combo.findData("float32"))
    with qtbot.waitSignal(dialog.sampling_changed) as signal:
        qtbot.mouseClick(
            dialog.buttons.button(dialog.buttons.StandardButton.Cancel), Qt.MouseButton.LeftButton
        )
    assert signal.args == [
        SetSampling(temperature=0.8, top_k=250, text_temperature=0.7, text_top_k=10)
    ]
    assert dialog.result() == QDialog.DialogCode.Rejected
    assert stored(settings) == before


def test_cancel_without_sampling_changes_sends_nothing(open_dialog, qtbot) -> None:
    dialog = open_dialog()
    with qtbot.assertNotEmitted(dialog.sampling_changed):
        qtbot.keyClick(dialog, Qt.Key.Key_Escape)
    assert dialog.result() == QDialog.DialogCode.Rejected


def test_restore_defaults(open_dialog, qtbot, settings: Settings, tmp_path: Path) -> None:
    settings.text_temperature = 1.0
    settings.audio_top_k = 10
    settings.seed = 5
    settings.model_source = str(tmp_path)
    settings.dtype = "int8"
    settings.output_device = "USB Headset"
    settings.half_duplex = True
    dialog = open_dialog()
    with qtbot.waitSignal(dialog.sampling_changed) as signal:  # once, with every default
        qtbot.mouseClick(dialog.restore_button, Qt.MouseButton.LeftButton)
    assert signal.args == [SetSampling()]
    assert dialog.values() == {key: Settings.default(key) for key in DIALOG_KEYS}
    assert not dialog.folder_edit.isVisible() and dialog.repo_edit.text() == DEFAULT_MODEL
    assert settings.dtype == "int8"  # saved only on OK
    dialog.accept()
    assert stored(settings) == {key: Settings.default(key) for key in Key}


def test_needs_restart_only_for_what_applies_on_the_next_start(open_dialog) -> None:
    dialog = open_dialog()
    dialog.text_temperature.edit.set_value(1.0)
    dialog.audio_top_k.set_value(1)
    assert not dialog.needs_restart()
    dialog.output_combo.setCurrentIndex(2)
    assert dialog.needs_restart()


def test_every_control_is_reachable_named_and_labelled(open_dialog) -> None:
    dialog = open_dialog()
    choose_model(dialog, FOLDER)  # the folder row shows, the repository row hides
    controls = [
        w
        for w in dialog.findChildren(QWidget)
        if w.window() is dialog
        and isinstance(w, (QAbstractButton, QAbstractSlider, QAbstractSpinBox, QComboBox))
        or (isinstance(w, QLineEdit) and not isinstance(w.parent(), QAbstractSpinBox))
    ]
    assert len(controls) >= 20
    chain, widget = [], dialog.nextInFocusChain()
    while widget is not dialog:
        chain.append(widget)
        widget = widget.nextInFocusChain()
    for control in controls:
        assert control in chain
        assert control.focusPolicy() & Qt.FocusPolicy.TabFocus, control
        if not isinstance(control, QAbstractButton):
            assert control.accessibleName(), control
    buddies = {label.buddy() for label in dialog.findChildren(QLabel) if label.buddy()}
    for control in controls:
        if not isinstance(control, (QAbstractButton, QAbstractSlider)):
            assert control in buddies, control.accessibleName()


def test_mnemonics_are_unique(open_dialog) -> None:
    dialog = open_dialog()
    letters = []
    for widget in dialog.findChildren(QLabel) + dialog.findChildren(QAbstractButton):
        text = widget.text().replace("&&", "")
        if "&" in text:
            letters.append(text[text.index("&") + 1].lower())
    assert len(letters) >= 15
    assert len(letters) == len(set(letters)), sorted(letters)


def test_a_mnemonic_moves_the_focus(open_dialog, qtbot) -> None:
    dialog = open_dialog()
    dialog.activateWindow()
    qtbot.waitUntil(dialog.isActiveWindow)
    qtbot.keyClick(dialog, Qt.Key.Key_Y, Qt.KeyboardModifier.AltModifier)
    assert dialog.focusWidget() is dialog.dtype_combo


def test_a_server_instead_of_the_model(open_dialog, qtbot, settings: Settings) -> None:
    dialog = open_dialog()
    assert not dialog.server_edit.isVisible() and dialog.model_group.isEnabled()
    dialog.backend_combo.setCurrentIndex(dialog.backend_combo.findData("remote"))
    assert dialog.server_edit.isVisible() and dialog.server_note.isVisible()
    assert not dialog.model_group.isEnabled() and not dialog.compute_group.isEnabled()
    assert "Python server (moshi.server) ignores them" in " ".join(
        label.text() for label in dialog.findChildren(QLabel)
    )
    retype(qtbot, dialog.server_edit, "ftp://gpu-box")
    assert not dialog.ok_button.isEnabled() and "ws://HOST:PORT" in dialog.problem_label.text()
    retype(qtbot, dialog.server_edit, "gpu-box")
    assert dialog.ok_button.isEnabled() and dialog.problem_label.isHidden()
    assert dialog.needs_restart()
    dialog.accept()
    assert settings.backend == "remote"
    assert settings.server_url == "ws://gpu-box:8998/api/chat"  # as it connects
    assert settings.model_source == DEFAULT_MODEL  # the model stays for when it runs here again


def test_opens_with_a_stored_server(open_dialog, settings: Settings) -> None:
    settings.backend = "remote"
    settings.server_url = "wss://moshi.example.org/api/chat"
    dialog = open_dialog()
    assert dialog.backend_combo.currentData() == "remote"
    assert dialog.server_edit.text() == "wss://moshi.example.org/api/chat"
    assert not dialog.needs_restart()


def test_a_transformers_format_folder_is_accepted(open_dialog, qtbot, tmp_path: Path) -> None:
    """What MoshiForConditionalGeneration.save_pretrained writes (kmhf/hf-moshiko's layout)."""
    import json

    (tmp_path / "config.json").write_text(
        json.dumps(
            {
                "model_type": "moshi",
                "architectures": ["MoshiForConditionalGeneration"],
                "audio_encoder_config": {"model_type": "mimi"},
            }
        )
    )
    (tmp_path / "model.safetensors").write_bytes(b"")
    dialog = open_dialog()
    choose_model(dialog, FOLDER)
    retype(qtbot, dialog.folder_edit, str(tmp_path))
    assert not dialog.ok_button.isEnabled() and "tokenizer.json" in dialog.problem_label.text()
    (tmp_path / "tokenizer.json").write_text("{}")
    retype(qtbot, dialog.folder_edit, str(tmp_path) + "/")
    assert dialog.ok_button.isEnabled() and dialog.problem_label.isHidden()


def test_echo_cancellation_and_noise_suppression_are_kept(open_dialog, settings, qtbot) -> None:
    """On by default (talk without headphones); off, and noise suppression, kept on OK and
    applied at the next Start."""
    dialog = open_dialog()
    assert dialog.echo_check.isChecked() and dialog.noise_combo.currentData() == "off"
    dialog.echo_check.setChecked(False)
    dialog.noise_combo.setCurrentIndex(dialog.noise_combo.findData("high"))
    assert dialog.needs_restart()
    with qtbot.waitSignal(dialog.accepted):
        qtbot.mouseClick(dialog.ok_button, Qt.MouseButton.LeftButton)
    assert settings.echo_cancellation is False and settings.noise_suppression == "high"
