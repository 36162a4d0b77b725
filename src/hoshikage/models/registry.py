"""The model registry: aliases for GGUF files, with what their headers say, kept in the store.

Every front end resolves model names here (the terminal, `hoshikage models`, the server), so
a client only ever names a registered model and never a path.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import logging
import math
import re
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hoshikage.config import Settings
from hoshikage.engine.formats import require_gguf
from hoshikage.engine.types import EngineError
from hoshikage.models.gguf_info import GgufError, parameter_label, read_gguf_info
from hoshikage.store import Database

log = logging.getLogger(__name__)

HASH_CHUNK_BYTES = 1 << 20
DEFAULT_TAG = "latest"
_NAME_MAX = 200
# Ollama-style names: optional namespaces ("hf.co/owner/repo"), a name, an optional ":tag".
_SEGMENT = r"[a-z0-9][a-z0-9._-]*"
_NAME_RE = re.compile(rf"{_SEGMENT}(?:/{_SEGMENT})*(?::{_SEGMENT})?")
_SHA256_RE = re.compile(r"[0-9a-f]{64}")


class RegistryError(ValueError):
    """The registry refused an operation; the message says why and what to do."""


@dataclass(frozen=True)
class ModelRecord:
    """One alias in the registry (a row of the `models` table)."""

    name: str
    path: Path
    sha256: str | None
    size_bytes: int | None
    architecture: str | None
    quantization: str | None
    context_length: int | None
    parameters: int | None
    embedding: bool
    keep_alive_s: float | None  # None: the global keep_alive setting
    source: str  # "local" or where it was pulled from, e.g. "hf://owner/repo/file.gguf"
    metadata: dict[str, Any]  # GGUF header metadata: scalars and short arrays
    added_at: float

    @property
    def digest(self) -> str | None:
        """The content digest as Ollama writes it ("sha256:…")."""
        return f"sha256:{self.sha256}" if self.sha256 else None

    @property
    def parameter_size(self) -> str | None:
        """The size label of the model card ("22.6M", "7.6B")."""
        label = self.metadata.get("general.size_label")
        return label if isinstance(label, str) and label else parameter_label(self.parameters)


def normalize_name(name: str) -> str:
    """The canonical form of a model name: lower case, ":latest" dropped (as Ollama does).

    Raises RegistryError when the name has characters an alias may not have.
    """
    text = name.strip().lower().removesuffix(f":{DEFAULT_TAG}")
    if not text or len(text) > _NAME_MAX or not _NAME_RE.fullmatch(text):
        raise RegistryError(
            f"invalid model name {name!r}: use letters, digits, '.', '-' and '_', optionally "
            "namespaces with '/' and a tag after ':' (for example 'qwen2.5:0.5b-q4_k_m')"
        )
    return text


def file_sha256(path: Path, chunk_bytes: int = HASH_CHUNK_BYTES) -> str:
    """The sha256 of a file, read in chunks so that memory stays flat for any size."""
    digest = hashlib.sha256()
    buffer = bytearray(chunk_bytes)
    view = memoryview(buffer)
    with path.open("rb", buffering=0) as handle:
        while read := handle.readinto(buffer):
            digest.update(view[:read])
    return digest.hexdigest()


_COLUMNS = (
    "name",
    "path",
    "sha256",
    "size_bytes",
    "architecture",
    "quantization",
    "context_length",
    "parameters",
    "embedding",
    "keep_alive_s",
    "source",
    "metadata",
    "added_at",
)


class ModelRegistry:
    """Registered models in the store's `models` table. Safe to share between threads."""

    def __init__(self, database: Database) -> None:
        self._db = database

    @property
    def database(self) -> Database:
        return self._db

    def add(
        self,
        path: Path | str,
        name: str,
        *,
        embedding: bool | None = None,
        keep_alive_s: float | None = None,
        source: str = "local",
        compute_sha256: bool = True,
        sha256: str | None = None,
        replace: bool = False,
    ) -> ModelRecord:
        """Register a GGUF file under `name`, with what its header says about it.

        `embedding=None` detects it (an encoder architecture, or a pooling type in the
        header). `sha256`, when known (a verified download), is recorded instead of hashing
        the file again. A taken name is refused unless `replace`.
        """
        alias = normalize_name(name)
        _check_keep_alive(keep_alive_s)
        sha256 = sha256.lower() if sha256 is not None else None
        if sha256 is not None and not _SHA256_RE.fullmatch(sha256):
            raise RegistryError(f"{sha256!r} is not a sha256 digest (64 hex digits)")
        file = Path(path).expanduser()
        try:
            require_gguf(file)
        except EngineError as exc:
            raise RegistryError(str(exc)) from None
        file = file.resolve()
        if not replace:
            self._ensure_free(alias)
        try:
            info = read_gguf_info(file)
        except GgufError as exc:
            raise RegistryError(str(exc)) from None
        if not info.tensors:
            raise RegistryError(
                f"{file} has no tensors: it is a vocabulary-only GGUF, not a model to run"
            )
        try:
            digest = sha256 or (file_sha256(file) if compute_sha256 else None)
            size = file.stat().st_size
        except OSError as exc:
            raise RegistryError(f"cannot read {file}: {exc.strerror or exc}") from exc
        record = ModelRecord(
            name=alias,
            path=file,
            sha256=digest,
            size_bytes=size,
            architecture=info.architecture,
            quantization=info.quantization,
            context_length=info.context_length,
            parameters=info.parameters,
            embedding=info.is_embedding_model if embedding is None else embedding,
            keep_alive_s=keep_alive_s,
            source=source,
            metadata=info.metadata,
            added_at=time.time(),
        )
        self._insert(record, replace=replace)
        log.info("registered model %s -> %s (%s)", alias, file, source)
        return record

    def remove(self, name: str, *, delete_file_in: Path | None = None) -> ModelRecord:
        """Unregister `name`; returns what was removed.

        With `delete_file_in` (the models directory), the file is deleted as well when it lies
        inside that directory and no other alias names it: files the user added from
        elsewhere are never deleted.
        """
        record = self.get(name)
        with self._db.transaction() as conn:
            conn.execute("DELETE FROM models WHERE name = ?", (record.name,))
            still_used = conn.execute(
                "SELECT COUNT(*) FROM models WHERE path = ?", (str(record.path),)
            ).fetchone()[0]
        log.info("removed model %s", record.name)
        if delete_file_in is not None and not still_used:
            _delete_owned_file(record.path, delete_file_in)
        return record

    def get(self, name: str) -> ModelRecord:
        record = self.find(name)
        if record is None:
            known = [row["name"] for row in self._db.query("SELECT name FROM models")]
            close = difflib.get_close_matches(name.strip().lower(), known, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise RegistryError(f"unknown model {name!r} ({hint}see hoshikage models ls)")
        return record

    def find(self, name: str) -> ModelRecord | None:
        """The record for `name` ("name:latest" is "name"; case does not matter), or None."""
        try:
            alias = normalize_name(name)
        except RegistryError:
            return None
        rows = self._db.query("SELECT * FROM models WHERE name = ?", (alias,))
        return _record_from_row(rows[0]) if rows else None

    def list(self) -> list[ModelRecord]:
        return [
            _record_from_row(row) for row in self._db.query("SELECT * FROM models ORDER BY name")
        ]

    def copy(self, source: str, destination: str, *, replace: bool = False) -> ModelRecord:
        """A second alias for the same file (Ollama's /api/copy)."""
        original = self.get(source)
        alias = normalize_name(destination)
        if alias == original.name:
            raise RegistryError(f"{destination!r} is the model's own name; pick another")
        if not replace:
            self._ensure_free(alias)
        record = dataclasses.replace(original, name=alias, added_at=time.time())
        self._insert(record, replace=replace)
        log.info("copied model %s to %s", original.name, alias)
        return record

    def verify(self, name: str) -> bool:
        """Whether the file's sha256 still matches the one recorded when it was added."""
        record = self.get(name)
        if record.sha256 is None:
            raise RegistryError(
                f"no sha256 was recorded for {record.name}; add it again (without skipping "
                "the checksum) to be able to verify it"
            )
        if not record.path.is_file():
            raise RegistryError(f"the file of {record.name} is missing: {record.path}")
        try:
            actual = file_sha256(record.path)
        except OSError as exc:
            raise RegistryError(f"cannot read {record.path}: {exc.strerror or exc}") from exc
        if actual != record.sha256:
            log.info("%s: sha256 %s, recorded %s", record.path, actual, record.sha256)
        return actual == record.sha256

    def set_keep_alive(self, name: str, seconds: float | None) -> ModelRecord:
        """How long the model stays loaded after its last request (None: the global default)."""
        _check_keep_alive(seconds)
        record = self.get(name)
        with self._db.transaction() as conn:
            conn.execute(
                "UPDATE models SET keep_alive_s = ? WHERE name = ?", (seconds, record.name)
            )
        return dataclasses.replace(record, keep_alive_s=seconds)

    def _ensure_free(self, alias: str, conn: sqlite3.Connection | None = None) -> None:
        query = "SELECT path FROM models WHERE name = ?"
        row = (
            conn.execute(query, (alias,)).fetchone()
            if conn is not None
            else next(iter(self._db.query(query, (alias,))), None)
        )
        if row is not None:
            raise RegistryError(
                f"the name {alias!r} is already taken (by {row['path']}); pick another name, "
                f"or remove it first with `hoshikage models rm {alias}`"
            )

    def _insert(self, record: ModelRecord, *, replace: bool) -> None:
        values = _row_values(record)
        with self._db.transaction() as conn:
            if not replace:  # checked again here: another writer may have taken it since
                self._ensure_free(record.name, conn)
            conn.execute(
                f"INSERT OR REPLACE INTO models ({', '.join(_COLUMNS)})"
                f" VALUES ({', '.join('?' for _ in _COLUMNS)})",
                values,
            )


def default_models_dir(settings: Settings) -> Path:
    """Where pulled models are stored: `models/` in the data directory."""
    return settings.data_dir / "models"


@contextmanager
def open_registry(settings: Settings) -> Iterator[ModelRegistry]:
    """The registry in the settings' store, closed when the block ends."""
    database = Database(settings.database_path)
    try:
        yield ModelRegistry(database)
    finally:
        database.close()


def _check_keep_alive(seconds: float | None) -> None:
    if seconds is not None and math.isnan(seconds):
        raise RegistryError("keep_alive must be a number of seconds (negative: forever)")


def _row_values(record: ModelRecord) -> tuple[Any, ...]:
    return (
        record.name,
        str(record.path),
        record.sha256,
        record.size_bytes,
        record.architecture,
        record.quantization,
        record.context_length,
        record.parameters,
        int(record.embedding),
        record.keep_alive_s,
        record.source,
        json.dumps(record.metadata, ensure_ascii=False),
        record.added_at,
    )


def _record_from_row(row: sqlite3.Row) -> ModelRecord:
    data = dict(row)
    data["path"] = Path(data["path"])
    data["embedding"] = bool(data["embedding"])
    data["source"] = data["source"] or "local"
    data["metadata"] = json.loads(data["metadata"] or "{}")
    return ModelRecord(**data)


def _delete_owned_file(path: Path, models_dir: Path) -> None:
    root = models_dir.expanduser().resolve()
    if not path.is_relative_to(root):
        return
    path.unlink(missing_ok=True)
    log.info("deleted %s", path)
    # A pulled file sits in a folder per repository; drop the folder once it is empty.
    parent = path.parent
    if parent != root and parent.is_relative_to(root) and not any(parent.iterdir()):
        parent.rmdir()
