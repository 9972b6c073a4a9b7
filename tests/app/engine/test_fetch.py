"""Fetching a model for the GUI on a worker thread (a fake hub on 127.0.0.1 stands in for
Hugging Face). No Qt: the events are read straight from the queue."""

import subprocess
import sys
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest

from app.engine.fetch import (
    CheckResult,
    FetchCancelled,
    FetchDone,
    FetchFailed,
    FetchProgress,
    ModelFetch,
    SpeedMeter,
    check,
    parse_missing,
)

REPO = "kyutai/tiny-moshi"
ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def hub(fake_hub, tiny_checkpoint):
    fake_hub.repos[REPO] = tiny_checkpoint
    return fake_hub


def events_until_the_end(fetch: ModelFetch, timeout: float = 60) -> list:
    """Every event of one start(), through the final FetchDone / FetchFailed / FetchCancelled."""
    events = []
    while True:
        events.append(fetch.events.get(timeout=timeout))
        if isinstance(events[-1], FetchDone | FetchFailed | FetchCancelled):
            assert fetch.wait(timeout)
            return events


def test_importing_it_loads_neither_torch_nor_the_model():
    code = (
        "import sys, app.engine.fetch; print(sorted(m for m in sys.modules "
        "if m.split('.')[0] in ('torch', 'model')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


def test_progress_in_order_then_done(hub, tiny_checkpoint):
    fetch = ModelFetch(REPO, min_interval=0)
    fetch.start()
    events = events_until_the_end(fetch)
    assert isinstance(events[-1], FetchDone)
    folder = Path(events[-1].folder)
    assert folder.is_relative_to(hub.cache)
    assert (folder / "model.safetensors").read_bytes() == (
        tiny_checkpoint / "model.safetensors"
    ).read_bytes()

    progress = events[:-1]
    assert progress and all(isinstance(e, FetchProgress) for e in progress)
    assert progress[0].filename == "config.json" and progress[0].index == 0
    indices = [e.index for e in progress]
    assert indices == sorted(indices)  # file after file, never back
    files = [e for e in progress if e.index >= 1]
    assert {e.count for e in files} == {4}
    lm = [e for e in progress if e.filename == "model.safetensors"]
    size = (tiny_checkpoint / "model.safetensors").stat().st_size
    assert len(lm) > 3 and [e.done for e in lm] == sorted(e.done for e in lm)
    assert lm[-1].done == lm[-1].total == size
    # the hub's API does not answer here, so the sizes of the whole download stay unknown
    assert all(e.overall_total is None for e in progress)


def test_check_says_whether_the_model_is_cached(hub):
    before = check(REPO)
    assert not before.cached and before.folder is None and before.is_repo
    assert f"{REPO}/model.safetensors" in before.missing and before.reason == ""
    assert [f.name for f in before.files][:2] == ["config.json", "model.safetensors"]
    assert before.total_size is None  # the fake hub has no API to list sizes

    fetch = ModelFetch(REPO)
    fetch.start()
    done = events_until_the_end(fetch)[-1]
    hub.requests.clear()
    after = ModelFetch(REPO).check()
    assert after.cached and after.folder == done.folder and after.missing == ()
    assert after.total_size == sum(f.size for f in after.files) > 0
    assert hub.requests == []  # what is cached is not asked for again


def test_check_runs_on_a_worker_and_puts_its_result(hub):
    fetch = ModelFetch(REPO, offline=True)
    fetch.start_check()
    result = fetch.events.get(timeout=60)
    assert isinstance(result, CheckResult) and not result.cached and result.offline
    assert result.reason == "offline mode is on" and f"{REPO}/config.json" in result.missing
    assert hub.requests == []  # offline: not even the sizes are asked for


def test_advice_on_the_check_comes_from_the_worker_and_never_stops_it(hub):
    seen = []

    def advise(result):
        seen.append((threading.current_thread().name, result.source, result.cached))
        return "Think twice."

    fetch = ModelFetch(REPO, offline=True, advise=advise)
    fetch.start_check()
    assert fetch.events.get(timeout=60).advice == "Think twice."
    assert seen == [("model-fetch", REPO, False)]

    def broken(result):
        raise RuntimeError("no torch here")

    fetch = ModelFetch(REPO, offline=True, advise=broken)
    fetch.start_check()
    result = fetch.events.get(timeout=60)
    assert result.advice == "" and f"{REPO}/config.json" in result.missing


def test_sizes_from_the_hub_give_overall_progress(hub, tiny_checkpoint, monkeypatch):
    from huggingface_hub import HfApi

    sizes = {p.name: p.stat().st_size for p in tiny_checkpoint.iterdir()}
    siblings = [SimpleNamespace(rfilename=n, size=s) for n, s in sizes.items()]
    siblings.append(SimpleNamespace(rfilename="README.md", size=10))
    asked = []

    def model_info(self, repo_id, *, revision=None, files_metadata=False, **kwargs):
        asked.append((repo_id, revision, files_metadata))
        return SimpleNamespace(siblings=siblings)

    monkeypatch.setattr(HfApi, "model_info", model_info)
    result = check(REPO)
    assert asked == [(REPO, None, True)]
    assert {f.name for f in result.files} == set(sizes)  # the files to fetch, not README.md
    assert result.total_size == sum(sizes.values())

    ticks = iter(range(10**6))
    fetch = ModelFetch(REPO, min_interval=0, clock=lambda: next(ticks) * 0.01)
    fetch.start()
    events = events_until_the_end(fetch)
    progress = [e for e in events if isinstance(e, FetchProgress)]
    assert {e.overall_total for e in progress} == {sum(sizes.values())}
    overall = [e.overall_done for e in progress]
    assert overall == sorted(overall) and overall[-1] == sum(sizes.values())
    timed = [e for e in progress if e.bytes_per_second is not None]
    assert timed and all(e.eta_seconds is not None and e.eta_seconds >= 0 for e in timed)
    assert timed[-1].eta_seconds == 0


def test_cancel_midway_then_a_later_fetch_resumes(hub, tiny_checkpoint):
    def cancel_midway(event):
        if isinstance(event, FetchProgress) and event.filename == "model.safetensors":
            if event.done > 100_000:
                fetch.cancel()

    fetch = ModelFetch(REPO, min_interval=0, notify=cancel_midway)
    fetch.start()
    events = events_until_the_end(fetch)
    assert isinstance(events[-1], FetchCancelled)
    partial = list(hub.cache.rglob("*.partial"))
    assert len(partial) == 1 and partial[0].stat().st_size > 100_000

    hub.requests.clear()
    fetch.notify = fetch.events.notify = None
    fetch.start()
    events = events_until_the_end(fetch)
    assert isinstance(events[-1], FetchDone)
    resumed = [r for r in hub.requests if r[0] == "GET" and r[1] == "model.safetensors"]
    assert resumed and resumed[0][2] > 100_000  # asked only for the bytes it lacked
    first = next(e for e in events if getattr(e, "filename", "") == "model.safetensors")
    assert first.done > 100_000  # progress starts where the cancelled download stopped
    lm = Path(events[-1].folder) / "model.safetensors"
    assert lm.read_bytes() == (tiny_checkpoint / "model.safetensors").read_bytes()


def test_one_download_at_a_time(hub):
    release = threading.Event()

    def hold(event):
        if isinstance(event, FetchProgress):
            release.wait(timeout=30)

    fetch = ModelFetch(REPO, notify=hold)
    fetch.start()
    with pytest.raises(RuntimeError, match="still running"):
        fetch.start()
    release.set()
    assert isinstance(events_until_the_end(fetch)[-1], FetchDone)


def test_offline_with_files_missing_fails_naming_them(hub):
    fetch = ModelFetch(REPO, offline=True)
    fetch.start()
    events = events_until_the_end(fetch)
    assert len(events) == 1 and isinstance(events[0], FetchFailed)
    failed = events[0]
    assert failed.reason == "offline mode is on"
    assert f"{REPO}/config.json" in failed.missing and f"{REPO}/model.safetensors" in failed.missing
    assert all(name in failed.message for name in failed.missing)
    assert hub.requests == []


def test_an_unknown_repository_fails_in_one_sentence(hub):
    fetch = ModelFetch("kyutai/nope")
    fetch.start()
    (failed,) = events_until_the_end(fetch)
    assert isinstance(failed, FetchFailed) and "kyutai/nope not found" in failed.message
    assert failed.missing == ()


def test_parse_missing_reads_the_reason():
    message = (
        "the Hugging Face hub cannot be reached (cannot connect to hf.co: refused) and these "
        "files are not in the cache: a/b/config.json, a/b/model.safetensors. Connect to the "
        "internet and run `moshi-desktop download --model a/b`, or pass a local folder with --model"
    )
    assert parse_missing(message) == (
        ("a/b/config.json", "a/b/model.safetensors"),
        "the Hugging Face hub cannot be reached (cannot connect to hf.co: refused)",
    )
    assert parse_missing("repository a/b not found") == ((), "")


def test_speed_is_a_moving_average_over_a_few_seconds():
    now = [0.0]
    meter = SpeedMeter(window=5.0, clock=lambda: now[0])
    meter.add(0)
    assert meter.rate() is None  # one sample: no speed yet
    for _ in range(10):  # 1 MB/s for 10 s
        now[0] += 1.0
        meter.add(1_000_000)
    assert meter.rate() == pytest.approx(1_000_000)
    for _ in range(5):  # then 3 MB/s: after 5 s the window holds only the new speed
        now[0] += 1.0
        meter.add(3_000_000)
    assert meter.rate() == pytest.approx(3_000_000)
    assert len(meter.samples) <= 7  # old samples are dropped
