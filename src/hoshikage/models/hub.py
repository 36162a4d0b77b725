"""Pulling GGUF files from the Hugging Face hub into the models directory, then registering them.

`huggingface_hub` finds the repository, its files and each file's metadata (the LFS sha256 is
the file's ETag). The download itself is done here, over HTTP ranges: `hf_hub_download` writes
to a temporary file with a per-process random name and deletes it on failure, so an
interrupted download starts again from zero. Here the partial file is kept beside its
destination and the next pull continues it; the sha256 is computed while the bytes arrive.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

import httpx2
from huggingface_hub import (
    HfApi,
    constants,
    get_hf_file_metadata,
    get_session,
    hf_hub_url,
    hf_raise_for_status,
)
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    HFValidationError,
    OfflineModeIsEnabled,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils._headers import build_hf_headers  # not re-exported for mypy
from huggingface_hub.utils._validators import validate_repo_id  # not re-exported for mypy

from hoshikage.models.registry import ModelRecord, ModelRegistry, RegistryError, normalize_name

log = logging.getLogger(__name__)

DEFAULT_ENDPOINT = "https://huggingface.co"
CHUNK_BYTES = 1 << 20
PROGRESS_STEP_BYTES = 1 << 20  # a progress report per MiB received, not per network read
MAX_STALLED_ATTEMPTS = 3  # reconnects in a row that received nothing, before giving up

# What PullProgress.status says, in order (Ollama's /api/pull wording).
PULLING_MANIFEST = "pulling manifest"
DOWNLOADING = "downloading"
VERIFYING = "verifying sha256 digest"
SUCCESS = "success"

_REPO_PART = r"[A-Za-z0-9][A-Za-z0-9._-]*"
_REPO_ID_RE = re.compile(rf"{_REPO_PART}/{_REPO_PART}")
_SPLIT_RE = re.compile(r"-\d{5}-of-\d{5}\.gguf$", re.IGNORECASE)
_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_GIT_SHA1_RE = re.compile(r"[0-9a-f]{40}")
_QUANT_SUFFIX_RE = re.compile(
    r"(?P<base>.+?)[-._](?P<quant>i?q\d+(?:_[a-z0-9]+)*|bf16|f16|f32|tq\d_\d|mxfp4(?:_moe)?)"
)
_HUB_PREFIXES = ("https://huggingface.co/", "https://hf.co/", "huggingface.co/", "hf.co/")
_DEFAULT_QUANT = "Q4_K_M"  # llama.cpp's -hf default when a repository has several files


@dataclass(frozen=True)
class HubReference:
    """A GGUF on the hub: an exact file, or a repository and a quantisation tag to pick one."""

    repo_id: str
    filename: str | None = None
    quant: str | None = None
    revision: str | None = None

    def __str__(self) -> str:
        at = f"@{self.revision}" if self.revision else ""
        if self.filename is not None:
            return f"hf://{self.repo_id}/{self.filename}{at}"
        return f"{self.repo_id}{':' + self.quant if self.quant else ''}{at}"

    def source_for(self, filename: str) -> str:
        """The registry's `source` for a file of this reference."""
        at = f"@{self.revision}" if self.revision else ""
        return f"hf://{self.repo_id}/{filename}{at}"


@dataclass(frozen=True)
class PullProgress:
    """One step of a pull, shaped like an Ollama /api/pull progress line."""

    status: str
    digest: str | None = None  # "sha256:…" once the file is known
    total: int | None = None  # bytes of the file
    completed: int | None = None  # bytes on disk (a resumed pull starts above zero)

    def to_ollama(self) -> dict[str, Any]:
        """The NDJSON object Ollama sends: {"status", "digest", "total", "completed"}."""
        status = self.status
        if status == DOWNLOADING and self.digest:
            status = f"pulling {self.digest.removeprefix('sha256:')[:12]}"
        line: dict[str, Any] = {"status": status}
        for key in ("digest", "total", "completed"):
            value = getattr(self, key)
            if value is not None:
                line[key] = value
        return line


ProgressCallback = Callable[[PullProgress], None]


def hub_endpoint() -> str:
    """The hub to talk to: HF_ENDPOINT, read now (huggingface_hub reads it once, on import)."""
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def parse_reference(ref: str) -> HubReference:
    """Read `hf://<owner>/<repo>/<file.gguf>[@rev]` or `<owner>/<repo>[:<quant>][@rev]`.

    The second form also takes Ollama's `hf.co/<owner>/<repo>:<quant>`. The revision may
    also follow the repository: `hf://<owner>/<repo>@<rev>/<file.gguf>`.
    """
    text = ref.strip()
    if text.startswith("hf://"):
        return _parse_file_reference(ref, text.removeprefix("hf://"))
    for prefix in _HUB_PREFIXES:
        if text.lower().startswith(prefix):
            text = text[len(prefix) :]
            break
    body, _, revision = text.partition("@")
    repo_id, _, quant = body.partition(":")
    if not _REPO_ID_RE.fullmatch(repo_id) or (quant and not re.fullmatch(r"[\w.-]+", quant)):
        raise RegistryError(
            f"cannot read the model reference {ref!r}: use hf://<owner>/<repo>/<file>.gguf or "
            "<owner>/<repo>:<quantisation> "
            "(for example bartowski/Qwen2.5-0.5B-Instruct-GGUF:Q4_K_M)"
        )
    _check_repo_id(ref, repo_id)
    return HubReference(repo_id=repo_id, quant=quant or None, revision=revision or None)


def _check_repo_id(ref: str, repo_id: str) -> None:
    """The hub's own rules for repository names ('..' and '--' are refused, for one), checked
    here so that a bad name is the caller's error, not a failed download."""
    try:
        validate_repo_id(repo_id)
    except HFValidationError as exc:
        raise RegistryError(f"cannot read the model reference {ref!r}: {exc}") from None


def _parse_file_reference(ref: str, text: str) -> HubReference:
    parts = text.split("/")
    if len(parts) < 3:
        raise RegistryError(f"{ref!r} names no file: use hf://<owner>/<repo>/<file>.gguf")
    owner, repo, *path = parts
    repo, _, revision = repo.partition("@")
    if not revision and "@" in path[-1]:
        path[-1], _, revision = path[-1].rpartition("@")
    filename = "/".join(path)
    repo_id = f"{owner}/{repo}"
    if not _REPO_ID_RE.fullmatch(repo_id) or not all(path) or ".." in path:
        raise RegistryError(f"cannot read the model reference {ref!r}")
    if not filename.lower().endswith(".gguf"):
        raise RegistryError(f"{ref!r} does not name a .gguf file; Hoshikage runs GGUF models only")
    _check_repo_id(ref, repo_id)
    return HubReference(repo_id=repo_id, filename=filename, revision=revision or None)


def default_alias(filename: str) -> str:
    """An alias made from a file name.

    "Qwen2.5-0.5B-Instruct-Q4_K_M.gguf" -> "qwen2.5-0.5b-instruct:q4_k_m"
    """
    stem = Path(filename).name.lower().removesuffix(".gguf")
    match = _QUANT_SUFFIX_RE.fullmatch(stem)
    base, tag = (match["base"], match["quant"]) if match else (stem, "")
    base = re.sub(r"[^a-z0-9._-]+", "-", base).strip("-._") or "model"
    return normalize_name(f"{base}:{tag}" if tag else base)


def pull(
    ref: str | HubReference,
    registry: ModelRegistry,
    models_dir: Path,
    *,
    name: str | None = None,
    progress: ProgressCallback | None = None,
    endpoint: str | None = None,
    token: str | None = None,
) -> ModelRecord:
    """Download a GGUF from the hub into `models_dir`, verify its sha256, and register it.

    An interrupted pull leaves `<file>.partial` behind, and the next pull of the same file
    continues from it. The alias is `name`, or one made from the file name. An exception
    raised by `progress` stops the pull (the partial file stays, to resume). Blocking: call
    it from a worker thread in async code.
    """
    reference = parse_reference(ref) if isinstance(ref, str) else ref
    chosen_name = normalize_name(name) if name else None  # a bad name fails before any request
    report: ProgressCallback = progress or (lambda _: None)
    hub = (endpoint or hub_endpoint()).rstrip("/")
    report(PullProgress(PULLING_MANIFEST))
    with _hub_errors(reference, hub):
        filename, commit = _resolve_file(reference, hub, token)
    alias = chosen_name or default_alias(filename)
    source = reference.source_for(filename)
    existing = registry.find(alias)
    if existing is not None and existing.source != source:
        raise RegistryError(
            f"the name {alias!r} is already taken (by {existing.path}); pull it under another "
            "name (--name), or remove that one first"
        )
    with _hub_errors(reference, hub, filename):
        url = hf_hub_url(reference.repo_id, filename, revision=commit, endpoint=hub)
        metadata = get_hf_file_metadata(url, token=token, endpoint=hub)
    expected = (metadata.etag or "").lower()
    destination = models_dir / reference.repo_id.replace("/", "--") / Path(filename).name
    destination.parent.mkdir(parents=True, exist_ok=True)
    digest = f"sha256:{expected}" if _SHA256_RE.fullmatch(expected) else None
    download = _Download(
        url=metadata.location,
        headers=_download_headers(token, hub, metadata.location),
        total=metadata.size,
        partial=destination.with_name(destination.name + ".partial"),
        digest=digest,
        report=report,
    )
    if _already_there(destination, metadata.size, expected, digest, report):
        actual = expected
    else:
        with _hub_errors(reference, hub, filename):
            actual = download.run()
        report(PullProgress(VERIFYING, digest=digest, total=download.total))
        _check_digest(download, expected, filename)
        download.partial.replace(destination)
    log.info("downloaded %s to %s", source, destination)
    try:
        record = registry.add(
            destination, alias, source=source, sha256=actual, replace=existing is not None
        )
    except RegistryError:
        if not any(other.path == destination for other in registry.list()):
            destination.unlink(missing_ok=True)
        raise
    report(PullProgress(SUCCESS))
    return record


def _resolve_file(reference: HubReference, hub: str, token: str | None) -> tuple[str, str]:
    """The file to download and the commit it is pinned to."""
    info = HfApi(endpoint=hub, token=token).model_info(
        reference.repo_id, revision=reference.revision
    )
    files = [sibling.rfilename for sibling in info.siblings or []]
    ggufs = sorted(name for name in files if name.lower().endswith(".gguf"))
    commit = info.sha or reference.revision or constants.DEFAULT_REVISION
    if reference.filename is not None:
        if reference.filename not in files:
            raise RegistryError(
                f"{reference.repo_id} has no file {reference.filename!r}; "
                + _available(reference.repo_id, ggufs)
            )
        chosen = reference.filename
    else:
        chosen = _pick_quant(reference, ggufs)
    if _SPLIT_RE.search(chosen):
        raise RegistryError(
            f"{chosen} is one part of a split GGUF, which Hoshikage cannot pull yet; pick a "
            "single-file quantisation, or download the parts and merge them with "
            "llama-gguf-split --merge, then `hoshikage models add` the result"
        )
    return chosen, commit


def _pick_quant(reference: HubReference, ggufs: list[str]) -> str:
    # Multimodal projectors live beside the models but are not models.
    models = [name for name in ggufs if not Path(name).name.lower().startswith("mmproj")]
    if not models:
        raise RegistryError(f"{reference.repo_id} has no .gguf files")
    quant = reference.quant
    if quant is None:
        if len(models) == 1:
            return models[0]
        quant = _DEFAULT_QUANT
    # An exact tag ("Q4_K" is not "Q4_K_M") first, then any file that contains it.
    bounded = re.compile(rf"(?<![a-z0-9]){re.escape(quant.lower())}(?![a-z0-9_])")
    matches = [name for name in models if bounded.search(Path(name).name.lower())]
    if not matches:
        matches = [name for name in models if quant.lower() in Path(name).name.lower()]
    if len(matches) == 1:
        return matches[0]
    if matches and all(_SPLIT_RE.search(name) for name in matches):
        return matches[0]  # refused as a split GGUF by the caller
    what = "several files match" if matches else "no file matches"
    raise RegistryError(
        f"{what} {quant!r} in {reference.repo_id}; "
        + _available(reference.repo_id, matches or models)
    )


def _available(repo_id: str, names: list[str]) -> str:
    if not names:
        return "it has no .gguf files"
    listed = ", ".join(names[:30]) + (f" and {len(names) - 30} more" if len(names) > 30 else "")
    return f"GGUF files there: {listed} (pull one as hf://{repo_id}/<file>)"


def _download_headers(token: str | None, hub: str, location: str) -> dict[str, str]:
    headers = build_hf_headers(token=token)
    headers["Accept-Encoding"] = "identity"  # byte counts must be the file's own
    if urlsplit(location).netloc != urlsplit(hub).netloc:
        headers.pop("authorization", None)  # a signed CDN address needs no token; never leak it
    return headers


def _already_there(
    destination: Path,
    size: int | None,
    expected: str,
    digest: str | None,
    report: ProgressCallback,
) -> bool:
    """Whether the destination already holds exactly this file (a repeated pull)."""
    if digest is None or not destination.is_file() or destination.stat().st_size != size:
        return False
    report(PullProgress(VERIFYING, digest=digest, total=size, completed=size))
    hasher = hashlib.sha256()
    with destination.open("rb") as handle:
        _hash_into(hasher, handle)
    return hasher.hexdigest() == expected


def _check_digest(download: _Download, expected: str, filename: str) -> None:
    if _SHA256_RE.fullmatch(expected):
        actual, kind = download.sha256.hexdigest(), "sha256"
    elif _GIT_SHA1_RE.fullmatch(expected) and download.git_sha1 is not None:
        actual, kind = download.git_sha1.hexdigest(), "git blob sha1"
    else:
        log.warning("the hub gave no checksum for %s (ETag %r): not verified", filename, expected)
        return
    if actual != expected:
        download.partial.unlink(missing_ok=True)
        raise RegistryError(
            f"checksum mismatch for {filename}: the hub says {kind} {expected}, the download "
            f"has {actual}; the file was deleted, pull it again"
        )


def _hash_into(hasher: hashlib._Hash, handle: IO[bytes]) -> None:
    while chunk := handle.read(CHUNK_BYTES):
        hasher.update(chunk)


class _Download:
    """One file over HTTP into `partial`, continuing whatever bytes are already there."""

    def __init__(
        self,
        *,
        url: str,
        headers: dict[str, str],
        total: int | None,
        partial: Path,
        digest: str | None,
        report: ProgressCallback,
    ) -> None:
        self.url = url
        self.headers = headers
        self.total = total
        self.partial = partial
        self.digest = digest
        self.report = report
        self.offset = 0  # bytes in the partial file, all of them hashed
        self.reported = 0  # bytes at the last progress report
        self.sha256 = hashlib.sha256()
        self.git_sha1: hashlib._Hash | None = None

    def run(self) -> str:
        """Download the rest of the file; returns its sha256."""
        with self.partial.open("ab+") as out:
            try:
                # Another pull of the same file would interleave its writes with ours.
                fcntl.flock(out.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise RegistryError(
                    f"another pull is already downloading {self.partial.name}"
                ) from None
            self._hash_existing(out)
            stalled = 0
            while self.total is None or self.offset < self.total:
                before = self.offset
                try:
                    finished = self._fetch(out)
                except (httpx2.TransportError, httpx2.DecodingError) as exc:
                    # A dropped connection: continue from what arrived, unless nothing does.
                    stalled = 0 if self.offset > before else stalled + 1
                    if stalled >= MAX_STALLED_ATTEMPTS:
                        raise RegistryError(
                            f"the download stopped at {self.offset} bytes ({exc}); run the same "
                            "pull again to continue it"
                        ) from exc
                    log.warning("download interrupted at %d bytes (%s); resuming", self.offset, exc)
                    time.sleep(0.5 * stalled)
                    continue
                except HfHubHTTPError as exc:
                    status = exc.response.status_code if exc.response is not None else "?"
                    raise RegistryError(
                        f"the download stopped at {self.offset} bytes: the server answered "
                        f"{status}; run the same pull again to continue it"
                    ) from None
                finally:
                    out.flush()
                if finished:
                    break
            os.fsync(out.fileno())
        if self.total is not None and self.offset != self.total:
            raise RegistryError(f"the download has {self.offset} bytes, the hub said {self.total}")
        return self.sha256.hexdigest()

    def _hash_existing(self, out: IO[bytes]) -> None:
        out.seek(0, os.SEEK_END)
        self.offset = out.tell()
        if self.total is not None and self.offset > self.total:  # not a prefix of this file
            self._restart(out)
            return
        self._reset_hashes()
        if self.offset:
            log.info("resuming %s from %d bytes", self.partial.name, self.offset)
            out.seek(0)
            while chunk := out.read(CHUNK_BYTES):
                self._hash(chunk)

    def _fetch(self, out: IO[bytes]) -> bool:
        """One GET from the current offset; whether the file is known to be complete."""
        headers = dict(self.headers)
        if self.offset:
            headers["Range"] = f"bytes={self.offset}-"
        with get_session().stream(
            "GET",
            self.url,
            headers=headers,
            timeout=constants.HF_HUB_DOWNLOAD_TIMEOUT,
            follow_redirects=True,
        ) as response:
            hf_raise_for_status(response)
            if self.offset and response.status_code != 206:
                log.warning("%s ignores ranges; downloading it from the start", self.url)
                self._restart(out)
            elif self.offset and not response.headers.get("Content-Range", "").startswith(
                f"bytes {self.offset}-"
            ):
                got = response.headers.get("Content-Range")
                raise RegistryError(f"the hub sent the wrong part of the file: {got!r}")
            if self.total is None:
                length = response.headers.get("Content-Length")
                self.total = self.offset + int(length) if length and length.isdigit() else None
            self._progress(force=True)
            # Chunks as they arrive (no re-buffering): when the connection drops, every byte
            # received is already in the partial file.
            for chunk in response.iter_bytes():
                out.write(chunk)
                self._hash(chunk)
                self.offset += len(chunk)
                self._progress()
            self._progress(force=True)
        return self.total is None

    def _restart(self, out: IO[bytes]) -> None:
        out.truncate(0)
        self.offset = 0
        self._reset_hashes()

    def _progress(self, *, force: bool = False) -> None:
        if not force and self.offset - self.reported < PROGRESS_STEP_BYTES:
            return
        self.reported = self.offset
        self.report(
            PullProgress(DOWNLOADING, digest=self.digest, total=self.total, completed=self.offset)
        )

    def _reset_hashes(self) -> None:
        self.sha256 = hashlib.sha256()
        # Files kept in git rather than LFS have their git blob sha1 as ETag.
        self.git_sha1 = (
            hashlib.sha1(f"blob {self.total}\0".encode()) if self.total is not None else None
        )

    def _hash(self, chunk: bytes) -> None:
        self.sha256.update(chunk)
        if self.git_sha1 is not None:
            self.git_sha1.update(chunk)


@contextlib.contextmanager
def _hub_errors(reference: HubReference, hub: str, filename: str | None = None) -> Iterator[None]:
    """The hub's and the network's exceptions as RegistryErrors that say what to do."""
    repo = reference.repo_id
    try:
        yield
    except GatedRepoError:
        raise RegistryError(
            f"{repo} is gated: accept its terms on the hub, then set HF_TOKEN to a token of "
            "your account"
        ) from None
    except RepositoryNotFoundError:
        raise RegistryError(
            f"no repository {repo} on {hub} (if it is private, set HF_TOKEN)"
        ) from None
    except RevisionNotFoundError:
        raise RegistryError(f"{repo} has no revision {reference.revision!r}") from None
    except RemoteEntryNotFoundError:
        raise RegistryError(f"{repo} has no file {filename!r}") from None
    except OfflineModeIsEnabled:
        raise RegistryError("HF_HUB_OFFLINE is set: unset it to pull models") from None
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else "an error"
        raise RegistryError(f"the hub at {hub} answered {status} for {repo}: {exc}") from None
    except httpx2.HTTPError as exc:
        raise RegistryError(f"cannot reach the hub at {hub}: {exc}") from None
    except OSError as exc:
        raise RegistryError(f"cannot write the download: {exc}") from exc
