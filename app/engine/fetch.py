"""Fetching a model for the GUI: `locate_model` on a plain Python thread, reported as events.

    GUI --start() / cancel() / start_check()--> worker thread: model.hub.locate_model
        --FetchProgress ... FetchDone | FetchFailed | FetchCancelled, CheckResult--> events queue

No Qt here, and no torch: `model.files` and `model.hub` are torch-free, and they are imported
only inside the worker all the same, so the download dialog opens at once. The dialog drains `ModelFetch.events` on a timer in the GUI thread,
as it does the engine's events. Speed and time left come from a moving window of the last few
seconds of progress. `check()` says whether a model is already cached and, where the hub says,
how large its files are; it may touch the network, so it runs on a worker too (`start_check`).
"""

from __future__ import annotations

import queue
import re
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

SPEED_WINDOW_S = 5.0  # speed is averaged over this many seconds of progress
_MIN_SPAN_S = 0.5  # no speed (nor time left) until progress spans this long


# --- Events --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FetchProgress:
    """`done` of `total` bytes of `filename`, file `index` (1-based) of `count`; `index` is 0
    for config.json, read before the other files are known. `overall_*` count the bytes of every
    file to download, when the hub said their sizes (else `overall_total` is None and
    `eta_seconds` is for this file alone)."""

    filename: str
    done: int
    total: int | None
    index: int
    count: int
    bytes_per_second: float | None
    eta_seconds: float | None
    overall_done: int = 0
    overall_total: int | None = None


@dataclass(frozen=True)
class FetchDone:
    """Every file is in place; `folder` holds them (the cache's snapshot, or the local folder)."""

    folder: str


@dataclass(frozen=True)
class FetchFailed:
    """One sentence: what went wrong. When files are missing and cannot be downloaded (offline,
    or the hub cannot be reached), `missing` names them (``owner/repo/file``) and `reason` says
    why in a few words ("offline mode is on"); otherwise both are empty."""

    message: str
    missing: tuple[str, ...] = ()
    reason: str = ""


@dataclass(frozen=True)
class FetchCancelled:
    """The user cancelled; what was downloaded stays in the cache and the next start resumes."""


@dataclass(frozen=True)
class FileInfo:
    name: str
    size: int | None  # bytes; None where the hub did not say


@dataclass(frozen=True)
class CheckResult:
    """Whether `source` is ready to load without downloading (`cached`, then `folder` holds it).

    `files`: the files to download when not cached (all of them when cached), with sizes where
    known. `message` (one sentence) and `missing`/`reason` say why it is not ready, as in
    `FetchFailed`. `description`: what the model is, and its language, size and licence, for the
    repositories of the catalog (`model.catalog`).
    `advice`: a word on running it on this machine, before downloading it (see `ModelFetch`)."""

    source: str
    cached: bool
    folder: str | None = None
    files: tuple[FileInfo, ...] = ()
    missing: tuple[str, ...] = ()
    reason: str = ""
    message: str = ""
    offline: bool = False
    is_repo: bool = True
    description: str = ""
    advice: str = ""

    @property
    def total_size(self) -> int | None:
        """Bytes of `files` together, or None if any size (or the list) is unknown."""
        if not self.files or any(f.size is None for f in self.files):
            return None
        return sum(f.size for f in self.files)


FetchEvent = FetchProgress | FetchDone | FetchFailed | FetchCancelled | CheckResult


# --- Speed ---------------------------------------------------------------------------------------


class SpeedMeter:
    """Bytes per second over the last `window` seconds of `add` calls."""

    def __init__(self, window: float = SPEED_WINDOW_S, clock: Callable[[], float] = time.monotonic):
        self.window, self.clock = window, clock
        self.received = 0
        self.samples: deque[tuple[float, int]] = deque()  # (time, bytes received until then)

    def add(self, nbytes: int) -> None:
        now = self.clock()
        self.received += nbytes
        self.samples.append((now, self.received))
        # keep one sample at or before the window's start, as the base of the average
        while len(self.samples) > 2 and self.samples[1][0] <= now - self.window:
            self.samples.popleft()

    def rate(self) -> float | None:
        if len(self.samples) < 2:
            return None
        (t0, b0), (t1, b1) = self.samples[0], self.samples[-1]
        if t1 - t0 < _MIN_SPAN_S:
            return None
        return (b1 - b0) / (t1 - t0)


# --- Checking the cache --------------------------------------------------------------------------

_MISSING = re.compile(
    r"^(?P<why>.*?)(?:\s*\band\s+)?these files are not in the cache: (?P<files>.+?)\. Connect",
    re.S,
)
_MODEL_SUFFIXES = (".safetensors", ".model", ".json")


def parse_missing(message: str) -> tuple[tuple[str, ...], str]:
    """(missing files, why) from model.hub's message for files that are not in the cache."""
    match = _MISSING.match(message)
    if not match:
        return (), ""
    return tuple(match["files"].split(", ")), match["why"].strip()


def repo_file_sizes(repo: str, revision: str | None = None) -> dict[str, int | None] | None:
    """{file name: bytes} of the repository's files, as the hub lists them; None if it will not
    say (unreachable, unknown, or a server without the API). Asks the network: call on a worker."""
    try:
        from huggingface_hub import HfApi

        info = HfApi().model_info(repo, revision=revision, files_metadata=True, timeout=10)
        return {s.rfilename: s.size for s in info.siblings or []}
    except Exception:  # any failure only means the sizes stay unknown
        return None


def _planned_files(
    repo: str, missing: tuple[str, ...], sizes: dict[str, int | None] | None
) -> tuple[FileInfo, ...]:
    """The files a download will fetch, with their sizes where `sizes` (from the hub) has them.

    The missing names are exact once config.json is cached (or where the repository has none);
    until then they are Kyutai's default names, and the config, weights and tokenizer files that
    the hub lists stand in for them."""
    names = [m.removeprefix(repo + "/") for m in missing]
    if sizes is None:
        return tuple(FileInfo(n, None) for n in names)
    exact = "config.json" not in names or "config.json" not in sizes
    if exact and all(n in sizes or n == "config.json" for n in names):
        return tuple(FileInfo(n, sizes[n]) for n in names if n in sizes)
    return tuple(FileInfo(n, s) for n, s in sizes.items() if n.endswith(_MODEL_SUFFIXES))


def check(source: str, revision: str | None = None, offline: bool | None = None) -> CheckResult:
    """Whether `source` (a repository id or a folder) can load without downloading, and what a
    download would fetch. Blocking, and it may ask the hub for sizes: call it on a worker."""
    try:
        from huggingface_hub import constants

        from model.catalog import CATALOG
        from model.files import CheckpointError, is_repo_id
        from model.hub import locate_model
    except ImportError as e:
        return CheckResult(source, False, message=f"the model code cannot be loaded ({e})")

    offline = bool(offline) or (offline is None and constants.is_offline_mode())
    is_repo = is_repo_id(source)
    entry = CATALOG.get(source)
    description = f"{entry.title}: {entry.about}\n{entry.facts}" if entry else ""
    try:
        files = locate_model(source, revision=revision, offline=offline, download=False)
    except CheckpointError as e:
        missing, reason = parse_missing(str(e))
        if offline and missing and not reason:
            reason = "offline mode is on"
        planned: tuple[FileInfo, ...] = ()
        if is_repo:
            sizes = None if offline else repo_file_sizes(source, revision)
            planned = _planned_files(source, missing, sizes)
        return CheckResult(
            source,
            False,
            files=planned,
            missing=missing,
            reason=reason,
            message=str(e),
            offline=offline,
            is_repo=is_repo,
            description=description,
        )
    weights = [*_weights_files(files.lm_weights), *_weights_files(files.mimi_weights)]
    paths = dict.fromkeys([*weights, files.tokenizer])
    infos = tuple(FileInfo(p.name, _size(p)) for p in paths)
    return CheckResult(
        source,
        True,
        folder=str(files.folder),
        files=infos,
        offline=offline,
        is_repo=is_repo,
        description=description,
    )


def _weights_files(path: Path) -> list[Path]:
    """A weights file, or a sharded checkpoint's index and the shards it names."""
    from model.files import shard_names
    from model.hf_config import is_index

    if not is_index(path):
        return [path]
    return [path, *(path.parent / name for name in shard_names(path))]


def _size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except OSError:
        return None


# --- The fetch -----------------------------------------------------------------------------------


class ModelFetch:
    """Downloads the model at `source` on a worker thread; events arrive in `events`.

    `start()` fetches whatever is missing (resuming partial files) and ends with exactly one of
    FetchDone, FetchFailed, FetchCancelled; `cancel()` stops it at the next piece of data.
    `start_check()` puts one CheckResult. Progress events come at most every `min_interval`
    seconds per file, plus each file's first and last. `notify`, if given, is called on the
    worker with each event just after it is put (to wake a reader instead of polling).
    `advise`, if given, is called on the worker with a check's result when there is something to
    download; what it says becomes the result's `advice` (a failure in it says nothing).
    """

    def __init__(
        self,
        source: str,
        *,
        revision: str | None = None,
        offline: bool | None = None,
        min_interval: float = 0.05,
        clock: Callable[[], float] = time.monotonic,
        notify: Callable[[FetchEvent], None] | None = None,
        advise: Callable[[CheckResult], str] | None = None,
    ):
        self.source, self.revision, self.offline = source, revision, offline
        self.advise = advise
        self.min_interval, self.clock, self.notify = min_interval, clock, notify
        self.events = _NotifyingQueue(notify)
        self._thread: threading.Thread | None = None
        self._cancel = threading.Event()
        self._plan: CheckResult | None = None  # the last check, for sizes

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Download on a new worker thread. Raises RuntimeError while one is still running."""
        self._begin(self._download)

    def start_check(self) -> None:
        """Run `check` on a worker thread; its CheckResult arrives in `events`."""
        self._begin(self._check)

    def cancel(self) -> None:
        self._cancel.set()

    def check(self) -> CheckResult:
        """`check` for this source (blocking; see `start_check`)."""
        return check(self.source, self.revision, self.offline)

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the worker to end; False if it still runs after `timeout` seconds."""
        if self._thread is not None:
            self._thread.join(timeout)
        return not self.running

    def _begin(self, work: Callable[[threading.Event], None]) -> None:
        if self._thread is not None:
            self._thread.join(timeout=1.0)  # a worker that has put its last event ends at once
        if self.running:
            raise RuntimeError("a download of this model is still running")
        self._cancel = threading.Event()
        self._thread = threading.Thread(
            target=work, args=(self._cancel,), name="model-fetch", daemon=True
        )
        self._thread.start()

    def _check(self, cancel: threading.Event) -> None:
        try:
            result = self.check()
        except Exception as e:  # a bug, or something check did not foresee: say it, end
            result = CheckResult(self.source, False, message=f"the model cannot be checked ({e})")
        if self.advise is not None and not result.cached and result.is_repo:
            try:
                result = replace(result, advice=self.advise(result))
            except Exception:  # advice is a courtesy: the download goes on without it
                pass
        self._plan = result
        self.events.put(result)

    def _download(self, cancel: threading.Event) -> None:
        try:
            from model.files import CheckpointError
            from model.hub import DownloadCancelled, locate_model
        except ImportError as e:
            self.events.put(FetchFailed(f"the model code cannot be loaded ({e})"))
            return
        try:
            plan = self._plan if self._plan is not None else self.check()
            self._plan = plan
            if plan.cached and plan.folder:
                self.events.put(FetchDone(plan.folder))
                return
            if cancel.is_set():
                raise DownloadCancelled("cancelled before the download began")
            reporter = _Reporter(self.events, plan, self.min_interval, self.clock)
            files = locate_model(
                self.source,
                revision=self.revision,
                offline=self.offline,
                progress=reporter,
                cancel=cancel,
            )
        except DownloadCancelled:
            self.events.put(FetchCancelled())
        except CheckpointError as e:
            self._plan = None  # check again on the next start: the cause may be gone
            missing, reason = parse_missing(str(e))
            if missing and not reason and self.offline:
                reason = "offline mode is on"
            self.events.put(FetchFailed(str(e), missing, reason))
        except Exception as e:  # the network dropped, the disk filled, ...
            why = str(e).splitlines()[0] if str(e) else type(e).__name__
            self.events.put(
                FetchFailed(
                    f"the download stopped ({why}); what was downloaded is kept, and "
                    "downloading again resumes it"
                )
            )
        else:
            self._plan = None  # the cache changed: check again next time
            self.events.put(FetchDone(str(files.folder)))


class _NotifyingQueue(queue.Queue):
    def __init__(self, notify: Callable[[FetchEvent], None] | None):
        super().__init__()
        self.notify = notify

    def put(self, item, block: bool = True, timeout: float | None = None) -> None:
        super().put(item, block, timeout)
        if self.notify is not None:
            self.notify(item)


class _Reporter:
    """model.hub's progress callback: turns its updates into FetchProgress events."""

    def __init__(
        self,
        events: queue.Queue,
        plan: CheckResult,
        min_interval: float,
        clock: Callable[[], float],
    ):
        self.events, self.min_interval, self.clock = events, min_interval, clock
        self.sizes = {f.name: f.size for f in plan.files}
        self.overall_total = plan.total_size
        self.meter = SpeedMeter(clock=clock)
        self.done: dict[str, int] = {}  # bytes of each file so far (resumed bytes included)
        self.last_sent = -float("inf")
        self.filename: str | None = None

    def __call__(self, update) -> None:  # update: model.hub.Progress
        name = update.filename
        if name in self.done:
            self.meter.add(max(0, update.done - self.done[name]))
        else:
            self.meter.add(0)  # a new file starts where an earlier download left it
        self.done[name] = update.done
        now = self.clock()
        first = name != self.filename
        last = update.total is not None and update.done >= update.total
        if not (first or last or now - self.last_sent >= self.min_interval):
            return
        self.filename, self.last_sent = name, now
        rate = self.meter.rate()
        overall_done = sum(
            min(d, self.sizes[n] or d) for n, d in self.done.items() if n in self.sizes
        )
        if self.overall_total is not None:
            overall_done = min(overall_done, self.overall_total)
            remaining: int | None = self.overall_total - overall_done
        elif update.total is not None:
            remaining = max(0, update.total - update.done)
        else:
            remaining = None
        eta = remaining / rate if rate and remaining is not None else None
        self.events.put(
            FetchProgress(
                name,
                update.done,
                update.total,
                update.index,
                update.count,
                rate,
                eta,
                overall_done,
                self.overall_total,
            )
        )
