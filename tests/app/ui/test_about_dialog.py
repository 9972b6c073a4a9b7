"""Help → About, the app's icon and its desktop identity in the real launcher (app.gui)."""

import pytest
from PySide6.QtCore import QSettings

import app
import app.gui
from app import appinfo
from app.ui.about_dialog import AboutDialog
from app.ui.app_icon import app_icon
from app.ui.settings import Settings


def test_the_about_dialog_names_version_licences_and_links(qtbot) -> None:
    dialog = AboutDialog(model_source="kyutai/moshiko-pytorch-bf16")
    qtbot.addWidget(dialog)
    text = dialog.text.text()
    assert f"Moshi Desktop {app.__version__}" in text
    assert "CC-BY 4.0" in text and "Kyutai" in text
    assert 'href="https://creativecommons.org/licenses/by/4.0/"' in text
    assert 'href="https://github.com/kyutai-labs/moshi"' in text
    assert "LGPL-3.0" in text  # Qt, shipped in the bundle
    assert "PyTorch " in text and "Qt " in text
    assert dialog.text.openExternalLinks()


@pytest.mark.parametrize(
    ("source", "shown", "not_shown"),
    [
        ("nu-dialogue/j-moshi", ["CC BY-NC 4.0", "Nagoya University", "non-commercial"], ["CC-BY"]),
        ("kyutai/moshika-rl-seamless", ["CC BY-NC 4.0", "Kyutai"], ["CC-BY"]),
        ("someone/their-moshi", ["not in this app's catalog", "someone/their-moshi"], ["CC-BY"]),
        (None, ["not in this app's catalog"], ["CC-BY", "CC BY"]),
    ],
)
def test_the_weights_licence_is_the_chosen_models(qtbot, source, shown, not_shown) -> None:
    dialog = AboutDialog(model_source=source)
    qtbot.addWidget(dialog)
    text = dialog.text.text()
    assert all(s in text for s in shown) and not any(s in text for s in not_shown)


def test_the_icon_has_every_size(qtbot) -> None:
    sizes = {size.width() for size in app_icon().availableSizes()}
    assert sizes == set(appinfo.ICON_SIZES)


@pytest.fixture
def launched(qtbot, tmp_path):
    qsettings = QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)
    qapp, window = app.gui.build_window([], Settings(qsettings))
    qtbot.addWidget(window)
    yield qapp, window
    window.close()


def test_the_launcher_sets_the_desktop_file_name_and_icon(launched) -> None:
    qapp, window = launched
    assert qapp.desktopFileName() == appinfo.DESKTOP_FILE.stem  # Wayland finds the icon so
    assert not qapp.windowIcon().isNull() and not window.windowIcon().isNull()
    assert qapp.applicationVersion() == app.__version__


def test_help_about_opens_the_about_dialog(launched, monkeypatch) -> None:
    _, window = launched
    opened = []
    monkeypatch.setattr(AboutDialog, "exec", lambda self: opened.append(self) or 0)
    help_menu = next(a.menu() for a in window.menuBar().actions() if a.text() == "&Help")
    about = next(a for a in help_menu.actions() if "About" in a.text())
    about.trigger()
    assert len(opened) == 1 and opened[0].parent() is window
    assert "CC-BY 4.0" in opened[0].text.text()  # the chosen model's: Moshiko, the default
