"""The download dialog, driven by a scripted fetch (and once by the real one against a fake hub
on 127.0.0.1). Events are put in the queue as the worker would; the dialog's timer drains them."""

import queue
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from PySide6.QtCore import Qt
from pytestqt.qtbot import QtBot

from app.engine.fetch import (
    CheckResult,
    FetchCancelled,
    FetchDone,
    FetchFailed,
    FetchProgress,
    FileInfo,
    ModelFetch,
)
from app.ui.download_dialog import DownloadDialog, format_bytes, format_eta
from model.catalog import CATALOG, CC_BY

LICENSE_URL = CC_BY.url

ROOT = Path(__file__).resolve().parents[3]
REPO = "kyutai/moshiko-pytorch-bf16"
SIZES = (("model.safetensors", 15_400_000_000), ("tokenizer_spm_32k_3.model", 550_000))
NOT_CACHED = CheckResult(
    REPO,
    cached=False,
    files=tuple(FileInfo(n, s) for n, s in SIZES),
    missing=tuple(f"{REPO}/{n}" for n, _ in SIZES),
    description="Moshiko (male voice), bfloat16, 15.4 GB",
)


class ScriptedFetch:
    """Stands in for app.engine.fetch.ModelFetch: records calls; the test puts the events."""

    source = REPO

    def __init__(self, check: CheckResult = NOT_CACHED):
        self.events: queue.Queue = queue.Queue()
        self.check, self.checks, self.starts, self.cancels = check, 0, 0, 0

    def start_check(self) -> None:
        self.checks += 1
        self.events.put(self.check)

    def start(self) -> None:
        self.starts += 1

    def cancel(self) -> None:
        self.cancels += 1


def progress(overall_done: int, **kwargs) -> FetchProgress:
    fields = dict(
        filename="model.safetensors",
        done=overall_done,
        total=SIZES[0][1],
        index=2,
        count=4,
        bytes_per_second=25e6,
        eta_seconds=(sum(s for _, s in SIZES) - overall_done) / 25e6,
        overall_done=overall_done,
        overall_total=sum(s for _, s in SIZES),
    )
    return FetchProgress(**{**fields, **kwargs})


def open_dialog(qtbot: QtBot, fetch) -> DownloadDialog:
    dialog = DownloadDialog(fetch, poll_ms=10)
    qtbot.addWidget(dialog)
    dialog.show()
    qtbot.waitExposed(dialog)
    return dialog


def offered(qtbot: QtBot, fetch=None) -> tuple[DownloadDialog, ScriptedFetch]:
    fetch = fetch or ScriptedFetch()
    dialog = open_dialog(qtbot, fetch)
    qtbot.waitUntil(lambda: dialog.state == "offer")
    return dialog, fetch


def downloading(qtbot: QtBot) -> tuple[DownloadDialog, ScriptedFetch]:
    dialog, fetch = offered(qtbot)
    qtbot.mouseClick(dialog.download_button, Qt.MouseButton.LeftButton)
    assert fetch.starts == 1 and dialog.state == "downloading"
    return dialog, fetch


def test_the_offer_names_the_model_its_size_and_licence(qtbot):
    dialog, fetch = offered(qtbot)
    assert fetch.checks == 1
    assert REPO in dialog.title_label.text()
    assert dialog.description_label.text() == NOT_CACHED.description
    assert dialog.size_label.text() == "Download size: 15.4 GB (2 files)"
    licence = dialog.licence_label.text()
    assert "CC-BY 4.0" in licence and f'href="{LICENSE_URL}"' in licence
    assert dialog.licence_label.openExternalLinks()
    assert dialog.download_button.isVisible() and dialog.download_button.isDefault()
    assert dialog.download_button.text() == "&Download" and dialog.close_button.isVisible()
    assert not dialog.progress_bar.isVisible() and not dialog.cancel_button.isVisible()
    assert dialog.progress_bar.accessibleName() == "Download progress"


def test_advice_shows_with_the_offer_when_there_is_some(qtbot):
    dialog, _ = offered(qtbot)
    assert not dialog.advice_label.isVisible()
    advice = "This computer has no GPU that PyTorch can use: <b>slow</b>."
    dialog, _ = offered(qtbot, ScriptedFetch(replace(NOT_CACHED, advice=advice)))
    assert dialog.advice_label.isVisible() and dialog.advice_label.text() == advice
    assert dialog.advice_label.textFormat() == Qt.TextFormat.PlainText
    assert dialog.download_button.isVisible()  # advice, not a refusal


def test_progress_speed_and_time_left_then_done_accepts(qtbot):
    dialog, fetch = downloading(qtbot)
    assert dialog.cancel_button.isVisible() and not dialog.download_button.isVisible()
    fetch.events.put(progress(1_000_000_000))
    fetch.events.put(progress(7_700_275_000))  # of a run of updates, the newest is drawn
    qtbot.waitUntil(lambda: dialog.bytes_label.text() == "7.7 GB of 15.4 GB")
    assert dialog.file_label.text() == "File 2 of 4: model.safetensors"
    assert dialog.progress_bar.value() == 500
    assert dialog.speed_label.text() == "25.0 MB/s, about 5 min left"

    fetch.events.put(FetchDone("/cache/snapshots/abc"))
    with qtbot.waitSignal(dialog.accepted):
        pass
    assert dialog.folder == "/cache/snapshots/abc" and dialog.result() == dialog.DialogCode.Accepted


def test_unknown_sizes_show_the_files_own_progress(qtbot):
    dialog, fetch = downloading(qtbot)
    fetch.events.put(progress(200_000, total=800_000, overall_total=None, eta_seconds=3.2, index=0))
    qtbot.waitUntil(lambda: dialog.bytes_label.text() == "200.0 kB of 800.0 kB")
    assert dialog.file_label.text() == "Reading model.safetensors"
    assert dialog.progress_bar.value() == 250
    assert dialog.speed_label.text() == "25.0 MB/s, about 4 s left for this file"
    fetch.events.put(progress(300_000, total=None, overall_total=None, bytes_per_second=None))
    qtbot.waitUntil(lambda: dialog.speed_label.text() == "Measuring the speed…")
    assert dialog.progress_bar.maximum() == 0  # busy: nothing says how far


def test_cancel_stops_the_download_and_says_it_resumes(qtbot):
    dialog, fetch = downloading(qtbot)
    fetch.events.put(progress(3_000_000_000))
    qtbot.waitUntil(lambda: dialog.progress_bar.value() == 195)
    qtbot.mouseClick(dialog.cancel_button, Qt.MouseButton.LeftButton)
    assert fetch.cancels == 1 and not dialog.cancel_button.isEnabled()
    assert dialog.isVisible()

    fetch.events.put(FetchCancelled())
    qtbot.waitUntil(lambda: dialog.state == "cancelled")
    note = dialog.message_label.text()
    assert "kept" in note and "Resume" in note and dialog.message_label.isVisible()
    assert dialog.progress_bar.isVisible() and dialog.progress_bar.value() == 195
    assert dialog.download_button.text() == "&Resume" and dialog.download_button.isDefault()
    qtbot.mouseClick(dialog.download_button, Qt.MouseButton.LeftButton)
    assert fetch.starts == 2 and dialog.state == "downloading"


def test_escape_cancels_a_download_then_closes(qtbot):
    dialog, fetch = downloading(qtbot)
    qtbot.keyClick(dialog, Qt.Key.Key_Escape)
    assert fetch.cancels == 1 and dialog.isVisible() and dialog.state == "cancelling"
    qtbot.keyClick(dialog, Qt.Key.Key_Escape)  # still stopping: Esc waits for it
    assert dialog.isVisible()
    fetch.events.put(FetchCancelled())
    qtbot.waitUntil(lambda: dialog.state == "cancelled")
    with qtbot.waitSignal(dialog.rejected):
        qtbot.keyClick(dialog, Qt.Key.Key_Escape)
    assert not dialog.isVisible() and fetch.cancels == 1


def test_the_window_close_button_cancels_and_closes(qtbot):
    dialog, fetch = downloading(qtbot)
    with qtbot.waitSignal(dialog.rejected):
        dialog.close()
    assert fetch.cancels == 1 and not dialog.isVisible()


def test_failure_shows_the_message_and_retry_downloads_again(qtbot):
    dialog, fetch = downloading(qtbot)
    fetch.events.put(FetchFailed("the download stopped (connection reset); it resumes"))
    qtbot.waitUntil(lambda: dialog.state == "failed")
    assert dialog.message_label.text() == "The download stopped (connection reset); it resumes."
    assert dialog.retry_button.isVisible() and dialog.close_button.isVisible()
    assert not dialog.cancel_button.isVisible() and not dialog.progress_bar.isVisible()
    qtbot.mouseClick(dialog.retry_button, Qt.MouseButton.LeftButton)
    assert fetch.starts == 2 and dialog.state == "downloading"


def test_offline_with_files_missing_says_which_and_where_else(qtbot):
    missing = (f"{REPO}/config.json", f"{REPO}/model.safetensors")
    check = CheckResult(
        REPO, cached=False, missing=missing, reason="offline mode is on", offline=True
    )
    fetch = ScriptedFetch(check)
    dialog = open_dialog(qtbot, fetch)
    qtbot.waitUntil(lambda: dialog.state == "failed")
    text = dialog.message_label.text()
    assert text.startswith("Offline mode is on, and these files")
    assert all(f"<li>{name}</li>" in text for name in missing)
    assert "Settings → Model → Local folder…" in text
    assert not dialog.download_button.isVisible() and dialog.retry_button.isVisible()
    qtbot.mouseClick(dialog.retry_button, Qt.MouseButton.LeftButton)  # Retry checks again
    assert fetch.checks == 2 and fetch.starts == 0


def test_files_missing_when_the_hub_cannot_be_reached(qtbot):
    dialog, fetch = downloading(qtbot)
    reason = "the Hugging Face hub cannot be reached (cannot connect to huggingface.co)"
    fetch.events.put(FetchFailed("…", (f"{REPO}/model.safetensors",), reason))
    qtbot.waitUntil(lambda: dialog.state == "failed")
    text = dialog.message_label.text()
    assert text.startswith("The Hugging Face hub cannot be reached")
    assert "model.safetensors" in text and "Local folder" in text


def test_a_cached_model_accepts_at_once(qtbot):
    fetch = ScriptedFetch(CheckResult(REPO, cached=True, folder="/cache/snapshots/abc"))
    dialog = DownloadDialog(fetch, poll_ms=10)
    qtbot.addWidget(dialog)
    with qtbot.waitSignal(dialog.accepted):
        dialog.show()
    assert dialog.folder == "/cache/snapshots/abc" and fetch.starts == 0


def test_escape_closes_the_offer(qtbot):
    dialog, fetch = offered(qtbot)
    with qtbot.waitSignal(dialog.rejected):
        qtbot.keyClick(dialog, Qt.Key.Key_Escape)
    assert fetch.starts == 0 and fetch.cancels == 0


def test_importing_the_dialog_loads_neither_torch_nor_the_model():
    """Only the model's torch-free facts (model.files, model.config, model.catalog, ...)."""
    code = (
        "import sys, app.ui.download_dialog; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'model') "
        "and m not in ('model', 'model.config', 'model.files', 'model.catalog', 'model.family', "
        "'model.hf_config', 'model.finetune')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("size", "text"),
    [(512, "512 B"), (1_500, "1.5 kB"), (25e6, "25.0 MB"), (15_400_000_000, "15.4 GB")],
)
def test_format_bytes(size, text):
    assert format_bytes(size) == text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "about 0 s left"), (3.2, "about 4 s left"), (308, "about 5 min left")],
)
def test_format_eta(seconds, text):
    assert format_eta(seconds) == text
    assert format_eta(2 * 3600 + 5 * 60) == "about 2 h 5 min left"


def test_the_real_fetch_end_to_end(qtbot, fake_hub, tiny_checkpoint):
    fake_hub.repos["kyutai/tiny-moshi"] = tiny_checkpoint
    fetch = ModelFetch("kyutai/tiny-moshi")
    dialog = open_dialog(qtbot, fetch)
    qtbot.waitUntil(lambda: dialog.state == "offer", timeout=60_000)
    assert dialog.size_label.text() == "Download size: not known yet (4 files)"
    with qtbot.waitSignal(dialog.accepted, timeout=60_000):
        qtbot.mouseClick(dialog.download_button, Qt.MouseButton.LeftButton)
    folder = Path(dialog.folder)
    assert folder.is_relative_to(fake_hub.cache)
    assert (folder / "model.safetensors").read_bytes() == (
        tiny_checkpoint / "model.safetensors"
    ).read_bytes()
    assert fetch.wait(10)


def test_a_local_fine_tune_downloads_its_bases_files(qtbot, fake_hub, tiny_checkpoint, tmp_path):
    """A folder from moshi-finetune holds the LM only: its Mimi and tokenizer are the base
    repository's, offered for download as a repository's own files are."""
    import json
    import shutil

    fake_hub.repos[REPO] = tiny_checkpoint
    folder = tmp_path / "consolidated"
    folder.mkdir()
    shutil.copy(tiny_checkpoint / "model.safetensors", folder / "consolidated.safetensors")
    config = json.loads((tiny_checkpoint / "config.json").read_text())
    config.update(mimi_config_name=f"hf://{REPO}/mimi_config.json", lora=False, lora_rank=128)
    (folder / "config.json").write_text(json.dumps(config))
    fetch = ModelFetch(str(folder))
    dialog = open_dialog(qtbot, fetch)
    qtbot.waitUntil(lambda: dialog.state == "offer", timeout=60_000)
    with qtbot.waitSignal(dialog.accepted, timeout=60_000):
        qtbot.mouseClick(dialog.download_button, Qt.MouseButton.LeftButton)
    assert dialog.folder == str(folder)
    assert {file for _, file, _ in fake_hub.requests} == {
        "tokenizer-e351c8d8-checkpoint125.safetensors",
        "tokenizer_spm_32k_3.model",
        "mimi_config.json",
    }
    assert fetch.wait(10)


def test_the_title_says_what_the_dialog_does(qtbot):
    fetch = ScriptedFetch()
    dialog = DownloadDialog(fetch, poll_ms=10)
    qtbot.addWidget(dialog)
    assert dialog.windowTitle() == "Checking the model"
    dialog.show()
    qtbot.waitUntil(lambda: dialog.state == "offer")
    assert dialog.windowTitle() == "Download the model"
    qtbot.mouseClick(dialog.download_button, Qt.MouseButton.LeftButton)
    assert dialog.windowTitle() == "Downloading the model"
    fetch.events.put(FetchCancelled())
    qtbot.waitUntil(lambda: dialog.state == "cancelled")
    assert dialog.windowTitle() == "Download paused"
    qtbot.mouseClick(dialog.download_button, Qt.MouseButton.LeftButton)
    fetch.events.put(FetchFailed("the download stopped (connection reset)"))
    qtbot.waitUntil(lambda: dialog.state == "failed")
    assert dialog.windowTitle() == "Download failed"

    offline = CheckResult(REPO, cached=False, missing=(f"{REPO}/model.safetensors",), offline=True)
    local = CheckResult(
        "/models/mine", cached=False, is_repo=False, message="model folder not found: /models/mine"
    )
    for check in (offline, local):  # nothing can be downloaded: it says what is wrong instead
        dialog = open_dialog(qtbot, ScriptedFetch(check))
        qtbot.waitUntil(lambda dialog=dialog: dialog.state == "failed")
        assert dialog.windowTitle() == "Model files missing"
    refused = CheckResult(
        "/models/hibiki",
        cached=False,
        is_repo=False,
        message="/models/hibiki/config.json: this is Hibiki, Kyutai's French-to-English speech "
        'translation model (model_type "hibiki"), which this app does not run',
    )
    dialog = open_dialog(qtbot, ScriptedFetch(refused))
    qtbot.waitUntil(lambda: dialog.state == "failed")
    assert dialog.windowTitle() == "Model cannot be used"
    assert dialog.message_label.text().startswith("/models/hibiki/config.json: this is Hibiki,")


class GatedFetch(ScriptedFetch):
    source = "kyutai/moshika-rl-seamless"


def test_a_catalog_entry_shows_its_own_licence_and_what_a_gated_one_asks(qtbot):
    entry = CATALOG[GatedFetch.source]
    check = CheckResult(entry.repo, cached=False, description=f"{entry.title}: {entry.about}")
    dialog, _ = offered(qtbot, GatedFetch(check))
    licence = dialog.licence_label.text()
    assert (
        "CC BY-NC 4.0" in licence
        and 'href="https://creativecommons.org/licenses/by-nc/4.0/"' in licence
    )
    assert "Gated" in licence and f'href="https://huggingface.co/{entry.repo}"' in licence
    assert (
        "hf auth login" in licence and "huggingface-cli login" in licence and "HF_TOKEN" in licence
    )
    assert (
        dialog.size_label.text() == f"Download size: about {entry.size_text}"
    )  # the hub's unknown


def test_a_repository_outside_the_catalog_says_where_its_licence_is(qtbot):
    class Other(ScriptedFetch):
        source = "someone/their-moshi"

    dialog, _ = offered(qtbot, Other(CheckResult("someone/their-moshi", cached=False)))
    licence = dialog.licence_label.text()
    assert "not in this app's catalog" in licence and "CC-BY" not in licence
    assert 'href="https://huggingface.co/someone/their-moshi"' in licence


def test_a_gated_repository_refused_by_the_hub_links_to_its_page(qtbot):
    from model.catalog import gated_message

    dialog, fetch = downloading(qtbot)
    fetch.events.put(FetchFailed(gated_message("kyutai/moshika-rl-seamless", has_token=False)))
    qtbot.waitUntil(lambda: dialog.state == "failed")
    text = dialog.message_label.text()
    assert text.startswith("Repository kyutai/moshika-rl-seamless is gated")
    page = "https://huggingface.co/kyutai/moshika-rl-seamless"
    assert f'<a href="{page}">{page}</a>' in text and "HF_TOKEN" in text
    assert dialog.message_label.openExternalLinks()
