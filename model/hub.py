"""Where a model's files come from: a local folder, or a Hugging Face repository.

Repositories download through `huggingface_hub` into its standard cache (shared with every other
tool that uses it), file by file, with per-byte progress reported to a callback. Cancelling stops
a download midway; the partial file stays in the cache and the next download resumes it.

Offline (`offline=True`, `HF_HUB_OFFLINE=1`, or automatically when the hub cannot be reached), only
cached files are used; if some are missing, one error names them all and says how to get them.
`config.json` is optional, as in Kyutai's loader: without it, Moshi 7B and the default file names.
File names in config.json may point into another repository (`hf://owner/repo/path`), never
outside the repositories (no `file://`, absolute paths or `..`). A local folder's references
are fetched the same way (a fine-tune's Mimi and tokenizer are its base repository's).
"""

from __future__ import annotations

import inspect
import os
import shutil
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from . import hf_config
from .catalog import DEFAULT_REPO, gated_message
from .config import PERSONAPLEX_MODEL_TYPE, CheckpointConfig
from .files import (
    CheckpointError,
    ModelFiles,
    has_repo_id_form,
    is_repo_id,
    leaves_folder,
    outside_error,
    personaplex_by_weights,
    read_config,
    read_header,
    read_mimi_config,
    refuse_other_member,
    resolve_folder,
    shard_names,
    weights_tell_the_member,
    with_generation_config,
)
from .voices import VOICES_ARCHIVE


class DownloadCancelled(Exception):
    """The user cancelled a download; what was fetched so far stays in the cache."""


@dataclass
class Progress:
    """One update of a download: `done` of `total` bytes of file `index` (1-based) of `count`."""

    repo: str
    filename: str
    done: int
    total: int | None
    index: int
    count: int


ProgressCallback = Callable[[Progress], None]


def locate_model(
    source: str | Path = DEFAULT_REPO,
    *,
    revision: str | None = None,
    offline: bool | None = None,
    download: bool = True,
    progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
) -> ModelFiles:
    """The files of the model at `source`: a folder in Kyutai's layout or a repository id.

    With `download=False` nothing is fetched: a repository must already be in the cache.
    """
    if not is_repo_id(str(source)):
        folder = Path(source).expanduser()
        references = _References(folder, offline, download, progress, cancel)
        files = resolve_folder(folder, references)
        references.raise_missing()
        return files
    return _Fetcher(str(source), revision, offline, download, progress, cancel).model_files()


class _References:
    """The files that a local folder's config.json names in repositories (hf://owner/repo/path),
    fetched as a repository's own are: from the cache, or downloaded (`model.files.Remote`).
    Those that cannot be had now are named together by `raise_missing`."""

    def __init__(
        self,
        folder: Path,
        offline: bool | None,
        download: bool,
        progress: ProgressCallback | None,
        cancel: threading.Event | None,
    ):
        self.folder, self.arguments = folder, (offline, download, progress, cancel)
        self.fetcher: _Fetcher | None = None  # made at the first reference: it may ask the hub

    def __call__(self, key: str, reference: str) -> Path | None:
        found = _reference(reference, None)
        if found is None:
            raise outside_error(
                f"config.json in {self.folder}",
                key,
                reference,
                "the repository it names",
                " (name another repository's file as hf://owner/repo/path)",
            )
        repo, filename = found
        if self.fetcher is None:
            self.fetcher = _Fetcher(repo, None, *self.arguments)
        self.fetcher.count += 1
        return self.fetcher.fetch(repo, filename, index=self.fetcher.count)

    def raise_missing(self) -> None:
        fetcher = self.fetcher
        if fetcher is None or not fetcher.missing:
            return
        if fetcher.unreachable:
            why = f"the Hugging Face hub cannot be reached ({fetcher.unreachable}) and "
        elif fetcher.offline:
            why = "offline mode is on and "
        else:
            why = ""
        raise CheckpointError(
            f"{why}these files are not in the cache: {', '.join(fetcher.missing)}. Connect to "
            f"the internet to download them once: the model in {self.folder} uses them"
        )


class _Fetcher:
    def __init__(
        self,
        repo: str,
        revision: str | None,
        offline: bool | None,
        download: bool,
        progress: ProgressCallback | None,
        cancel: threading.Event | None,
    ):
        from huggingface_hub import constants

        self.repo, self.revision = repo, revision
        self.offline = bool(offline) or (offline is None and constants.is_offline_mode())
        self.local_only = not download or self.offline
        self.unreachable = ""  # why the hub cannot be reached, if it cannot
        if not self.local_only:
            self.unreachable = _unreachable(constants.ENDPOINT)
            self.local_only = bool(self.unreachable)
        self.progress, self.cancel = progress, cancel
        self.count = 0  # files to fetch, known once config.json is read
        self.missing: list[str] = []

    def model_files(self) -> ModelFiles:
        config_path = self.fetch(self.repo, "config.json", optional=True)
        config = read_config(config_path, f"config.json of {self.repo}")
        if config.format == hf_config.FORMAT:
            return self.transformers_files(config)
        names = config.file_names
        references = {key: self.reference(key, name) for key, name in names.items()}
        if weights_tell_the_member(config):  # before any weights are downloaded
            self.refuse_other_member(config, *references["moshi_name"])
        self.count = len(references)
        paths = {
            key: self.fetch(repo, filename, index=index)
            for index, (key, (repo, filename)) in enumerate(references.items(), 1)
        }
        if self.missing:
            self.raise_missing()
        lm, mimi, tokenizer = (paths[k] for k in ("moshi_name", "mimi_name", "tokenizer_name"))
        if weights_tell_the_member(config):  # PersonaPlex's config.json may not say it is
            try:
                config = personaplex_by_weights(read_header(lm), config)
            except CheckpointError:
                pass  # loading the weights says what is wrong with them
        if config.model_type == PERSONAPLEX_MODEL_TYPE:
            self.fetch_voices()
        mimi_config = read_mimi_config(
            config,
            paths.get("mimi_config_name"),
            names.get("mimi_config_name", f"config.json of {self.repo}"),
        )
        return ModelFiles(lm.parent, config, mimi_config, lm, mimi, tokenizer)

    def transformers_files(self, config: CheckpointConfig) -> ModelFiles:
        """A repository in the transformers format: the weights its index names (kmhf/hf-moshiko
        holds a second, larger set of shards beside them, never fetched), or its one weights
        file; tokenizer.json; the sampling defaults of generation_config.json."""
        index = self.fetch(self.repo, hf_config.INDEX_NAME, optional=True)
        generation = self.fetch(self.repo, hf_config.GENERATION_CONFIG_NAME, optional=True)
        if self.missing:  # offline, and the index is not in the cache
            self.raise_missing()
        weights = shard_names(index) if index is not None else [hf_config.WEIGHTS_NAME]
        names = [*weights, hf_config.TOKENIZER_JSON]
        self.count = len(names)
        paths = [self.fetch(self.repo, name, index=i) for i, name in enumerate(names, 1)]
        if self.missing:
            self.raise_missing()
        config = with_generation_config(config, generation)
        lm = index or paths[0]
        mimi_config = read_mimi_config(config, None, f"config.json of {self.repo}")
        return ModelFiles(lm.parent, config, mimi_config, lm, lm, paths[-1])

    def fetch_voices(self) -> None:
        """PersonaPlex's packaged voices (voices.tgz, `model.voices`), beside its weights in the
        cache. Not having them (offline, say) stops nothing: a voice can be given as a file."""
        missing = len(self.missing)
        self.count += 1
        self.fetch(self.repo, VOICES_ARCHIVE, optional=True, index=self.count)
        del self.missing[missing:]

    def refuse_other_member(self, config: CheckpointConfig, repo: str, filename: str) -> None:
        """CheckpointError if the LM weights are another member of the family's (MoshiVis's,
        PersonaPlex's: `model.family`), told by their safetensors header: the cached file's, or
        the hub's first bytes of it (`get_safetensors_metadata`'s way), never the whole file.
        Where neither can be had, nothing is said: the download and the loading go on."""
        from huggingface_hub import HfApi, try_to_load_from_cache
        from huggingface_hub.errors import GatedRepoError

        where = f"{filename} of {repo}"
        cached = try_to_load_from_cache(repo, filename, revision=self.revision)
        if isinstance(cached, str):
            try:
                names = list(read_header(cached))
            except CheckpointError:
                return  # loading it says what is wrong with it
        elif self.local_only:
            return
        else:
            try:
                header = HfApi().parse_safetensors_file_metadata(
                    repo, filename, revision=self.revision
                )
            except GatedRepoError:
                raise CheckpointError(gated_message(repo, _has_token())) from None
            except Exception:  # not there, not safetensors, no range requests: the download says
                return
            names = list(header.tensors)
        refuse_other_member(names, config, where)

    def reference(self, key: str, name: str) -> tuple[str, str]:
        """(repository, file name) of the file that `key` of config.json names: in this
        repository, or in another one (`hf://owner/repo/path`). Nothing outside a repository
        is read: a name that could leave it is refused before anything is fetched."""
        found = _reference(name, self.repo)
        if found is None:
            raise outside_error(
                f"config.json of {self.repo}",
                key,
                name,
                "the repository",
                " (or name another repository's file as hf://owner/repo/path)",
            )
        return found

    def fetch(
        self, repo: str, filename: str, *, optional: bool = False, index: int = 0
    ) -> Path | None:
        from huggingface_hub import hf_hub_download, try_to_load_from_cache
        from huggingface_hub.errors import (
            EntryNotFoundError,
            GatedRepoError,
            LocalEntryNotFoundError,
            RepositoryNotFoundError,
            RevisionNotFoundError,
        )

        if self.local_only:
            cached = try_to_load_from_cache(repo, filename, revision=self.revision)
            if isinstance(cached, str):
                return Path(cached)
            if optional and cached is not None:  # the cache knows the repository lacks it
                return None
            self.missing.append(f"{repo}/{filename}")
            return None
        try:
            if not optional:  # config.json is small; hf_hub_download records its absence
                self.prefetch_blob(repo, filename, index)
            return Path(
                hf_hub_download(
                    repo,
                    filename,
                    revision=self.revision,
                    **self._progress_kwargs(repo, filename, index),
                )
            )
        except EntryNotFoundError:
            if optional:
                return None
            raise CheckpointError(f"{repo} has no file {filename}") from None
        except GatedRepoError:  # before RepositoryNotFoundError, its base class
            raise CheckpointError(gated_message(repo, _has_token())) from None
        except RepositoryNotFoundError:
            raise CheckpointError(
                f"repository {repo} not found on the Hugging Face hub (or it is private: log in "
                "with `hf auth login`)"
            ) from None
        except RevisionNotFoundError:
            raise CheckpointError(f"{repo} has no revision {self.revision}") from None
        except LocalEntryNotFoundError as e:  # the hub stopped answering; the file is not cached
            self.unreachable = str(e.__cause__ or e).splitlines()[0]
            self.local_only = True
            self.missing.append(f"{repo}/{filename}")
            return None

    def prefetch_blob(self, repo: str, filename: str, index: int) -> None:
        """Download the file's content into the cache as `blobs/<etag>`, resuming what an
        interrupted download left in `blobs/<etag>.partial`. huggingface_hub itself deletes
        partial downloads; given the blob, `hf_hub_download` only links it into the snapshot."""
        from huggingface_hub import constants, get_hf_file_metadata, hf_hub_url
        from huggingface_hub.file_download import http_get, repo_folder_name
        from huggingface_hub.utils import build_hf_headers

        meta = get_hf_file_metadata(hf_hub_url(repo, filename, revision=self.revision))
        if meta.etag is None or meta.size is None:
            return  # a server that does not say: leave it all to hf_hub_download
        storage = Path(constants.HF_HUB_CACHE) / repo_folder_name(repo_id=repo, repo_type="model")
        blob = storage / "blobs" / meta.etag
        if blob.exists():
            return
        blob.parent.mkdir(parents=True, exist_ok=True)
        partial = blob.with_name(meta.etag + ".partial")
        done = partial.stat().st_size if partial.exists() else 0
        if done > meta.size:
            partial.unlink()
            done = 0
        free = shutil.disk_usage(blob.parent).free
        if meta.size - done > free:
            raise CheckpointError(
                f"not enough disk space for {filename}: it needs {_gb(meta.size - done)} more, "
                f"{_gb(free)} is free in {blob.parent}"
            )
        if done < meta.size:
            with partial.open("ab") as f:
                http_get(
                    meta.location,
                    f,
                    resume_size=done,
                    headers=build_hf_headers(),
                    expected_size=meta.size,
                    **self._progress_kwargs(repo, filename, index),
                )
        if partial.stat().st_size != meta.size:
            raise CheckpointError(f"the download of {filename} is incomplete; run it again")
        os.replace(partial, blob)

    def _progress_kwargs(self, repo: str, filename: str, index: int) -> dict:
        from huggingface_hub import hf_hub_download

        if "tqdm_class" not in inspect.signature(hf_hub_download).parameters:
            return {}  # an older huggingface_hub: no per-byte progress, no cancelling midway
        start = Progress(repo, filename, 0, None, index, self.count)
        return {"tqdm_class": _progress_bar(start, self.progress, self.cancel)}

    def raise_missing(self) -> None:
        files = ", ".join(self.missing)
        if self.unreachable:
            why = f"the Hugging Face hub cannot be reached ({self.unreachable}) and "
        elif self.offline:
            why = "offline mode is on and "
        else:
            why = ""
        raise CheckpointError(
            f"{why}these files are not in the cache: {files}. Connect to the internet "
            f"and run `moshi-desktop download --model {self.repo}`, or pass a local folder "
            "with --model"
        )


def _has_token() -> bool:
    """Whether huggingface_hub has a token to send (HF_TOKEN, or `hf auth login`'s)."""
    from huggingface_hub import get_token

    return get_token() is not None


def _reference(name: str, repo: str | None) -> tuple[str, str] | None:
    """(repository, file name) that a file name of config.json means: `hf://owner/repo/path`,
    or a plain name in `repo`; None where it could lead outside the repositories."""
    filename = name
    if name.startswith("hf://"):
        owner, _, rest = name.removeprefix("hf://").partition("/")
        repo_name, _, filename = rest.partition("/")
        repo = f"{owner}/{repo_name}"
    if repo is None or not has_repo_id_form(repo) or not filename or leaves_folder(filename):
        return None
    return repo, filename


def _gb(size: int) -> str:
    return f"{size / 1e9:.1f} GB"


def _unreachable(endpoint: str, timeout: float = 3.0) -> str:
    """Why the hub at `endpoint` cannot be reached, or "" if it answers a TCP connection.
    Checked once, so an offline machine does not wait through every file's retries."""
    url = urlsplit(endpoint)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname, port), timeout=timeout).close()
        return ""
    except OSError as e:
        return f"cannot connect to {url.hostname}: {e.strerror or e}"


def _progress_bar(
    start: Progress, callback: ProgressCallback | None, cancel: threading.Event | None
) -> type:
    """A tqdm class for huggingface_hub that draws nothing and reports to `callback`."""
    from tqdm.auto import tqdm

    class ProgressBar(tqdm):
        def __init__(self, *args, **kwargs):
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)
            self.progress = Progress(
                start.repo,
                start.filename,
                kwargs.get("initial") or 0,
                kwargs.get("total"),
                start.index,
                start.count,
            )
            self.report(0)

        def report(self, n: float) -> None:
            if cancel is not None and cancel.is_set():
                raise DownloadCancelled(f"download of {start.filename} cancelled")
            self.progress.done += int(n)
            if callback is not None:
                callback(Progress(**vars(self.progress)))

        def update(self, n: float | None = 1) -> bool | None:
            self.report(n or 0)
            return None

    return ProgressBar
