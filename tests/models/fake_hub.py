"""A local stand-in for the Hugging Face hub's file API, on 127.0.0.1, for pull tests.

It serves what `huggingface_hub` and the puller ask for: `GET /api/models/{repo}` (and
`/revision/{rev}`) with the file list and commit, and `HEAD`/`GET /{repo}/resolve/{rev}/{file}`
with the hub's headers (ETag and X-Linked-Etag = the LFS sha256, X-Linked-Size, X-Repo-Commit,
Accept-Ranges) and `Range` requests answered with 206. Errors carry the hub's X-Error-Code, so
`huggingface_hub` raises its own exception types. Faults can be injected: a checksum that
lies, a connection dropped part-way through a download, an outage.
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from urllib.parse import unquote, urlsplit

_MODELS_API = re.compile(r"^/api/models/([^/]+/[^/]+)(?:/revision/([^/]+))?$")
_RESOLVE = re.compile(r"^/([^/]+/[^/]+)/resolve/([^/]+)/(.+)$")
_RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")


@dataclass
class HubFile:
    content: bytes
    lfs: bool = True
    advertised_sha256: str | None = None  # set to make the hub lie about the checksum

    @property
    def etag(self) -> str:
        if self.lfs:
            return self.advertised_sha256 or hashlib.sha256(self.content).hexdigest()
        # Files kept in git: the ETag is the git blob sha1.
        header = f"blob {len(self.content)}\0".encode()
        return hashlib.sha1(header + self.content).hexdigest()


@dataclass
class HubRepo:
    commit: str
    files: dict[str, HubFile] = field(default_factory=dict)


@dataclass(frozen=True)
class SeenRequest:
    method: str
    path: str
    range: str | None
    authorization: str | None
    status: int
    body_bytes: int  # file bytes actually sent


class FakeHub:
    """Start with `with FakeHub() as hub:`; point HF_ENDPOINT at `hub.url`."""

    def __init__(self) -> None:
        self.repos: dict[str, HubRepo] = {}
        self.requests: list[SeenRequest] = []
        self._lock = threading.Lock()
        self._drop_after: int | None = None
        self._outage_after_drop = False
        self.outage = False  # file downloads answer 503 while set
        self.ignore_ranges = False  # answer 200 with the whole file, as some servers do
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,))

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def add_file(
        self,
        repo_id: str,
        filename: str,
        content: bytes,
        *,
        lfs: bool = True,
        advertised_sha256: str | None = None,
    ) -> HubFile:
        commit = hashlib.sha1(repo_id.encode()).hexdigest()
        repo = self.repos.setdefault(repo_id, HubRepo(commit=commit))
        hub_file = HubFile(content, lfs=lfs, advertised_sha256=advertised_sha256)
        repo.files[filename] = hub_file
        return hub_file

    def drop_next_download(self, after_bytes: int, *, then_outage: bool = False) -> None:
        """Cut the next file download after `after_bytes`; optionally fail all later ones."""
        with self._lock:
            self._drop_after = after_bytes
            self._outage_after_drop = then_outage

    def downloads(self) -> list[SeenRequest]:
        """The GETs of file contents, in order."""
        with self._lock:
            return [r for r in self.requests if r.method == "GET" and "/resolve/" in r.path]

    def __enter__(self) -> FakeHub:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    # --- used by the handler --------------------------------------------------------------
    def _record(self, request: SeenRequest) -> None:
        with self._lock:
            self.requests.append(request)

    def _take_drop(self) -> int | None:
        with self._lock:
            drop, self._drop_after = self._drop_after, None
            if drop is not None and self._outage_after_drop:
                self.outage = True
            return drop


def _handler_for(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            """Quiet: the test reads `hub.requests` instead."""

        def do_GET(self) -> None:
            self._serve(head=False)

        def do_HEAD(self) -> None:
            self._serve(head=True)

        def _serve(self, *, head: bool) -> None:
            # One request per connection: no handler thread outlives the test's server.
            self.close_connection = True
            path = urlsplit(self.path).path
            sent = 0
            if match := _MODELS_API.match(path):
                status = self._models_api(unquote(match[1]), match[2] and unquote(match[2]))
            elif match := _RESOLVE.match(path):
                status, sent = self._resolve(
                    unquote(match[1]), unquote(match[2]), unquote(match[3]), head=head
                )
            else:
                status = self._error(404, None, "not found")
            hub._record(
                SeenRequest(
                    self.command,
                    path,
                    self.headers.get("Range"),
                    self.headers.get("Authorization"),
                    status,
                    sent,
                )
            )

        def _models_api(self, repo_id: str, revision: str | None) -> int:
            repo = hub.repos.get(repo_id)
            if repo is None:
                return self._error(404, "RepoNotFound", "Repository not found")
            if revision not in (None, "main", repo.commit):
                return self._error(404, "RevisionNotFound", "Invalid rev id")
            body = json.dumps(
                {
                    "id": repo_id,
                    "modelId": repo_id,
                    "sha": repo.commit,
                    "private": False,
                    "siblings": [{"rfilename": name} for name in sorted(repo.files)],
                }
            ).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)
            return 200

        def _resolve(
            self, repo_id: str, revision: str, filename: str, *, head: bool
        ) -> tuple[int, int]:
            repo = hub.repos.get(repo_id)
            if repo is None:
                return self._error(404, "RepoNotFound", "Repository not found"), 0
            if revision not in ("main", repo.commit):
                return self._error(404, "RevisionNotFound", "Invalid rev id"), 0
            hub_file = repo.files.get(filename)
            if hub_file is None:
                return self._error(404, "EntryNotFound", "Entry not found", repo.commit), 0
            if not head and hub.outage:
                return self._error(503, None, "Service unavailable"), 0
            content = hub_file.content
            start, end = 0, len(content) - 1
            status = 200
            wanted = self.headers.get("Range")
            if wanted and not head and not hub.ignore_ranges:
                match = _RANGE.match(wanted)
                if match is None or int(match[1]) >= len(content):
                    return self._error(416, None, "Range not satisfiable"), 0
                start = int(match[1])
                end = min(int(match[2]), end) if match[2] else end
                status = 206
            self.send_response(status)
            quoted = f'"{hub_file.etag}"'
            self.send_header("ETag", quoted)
            if hub_file.lfs:
                self.send_header("X-Linked-Etag", quoted)
                self.send_header("X-Linked-Size", str(len(content)))
            self.send_header("X-Repo-Commit", repo.commit)
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(end - start + 1))
            if status == 206:
                self.send_header("Content-Range", f"bytes {start}-{end}/{len(content)}")
            self.send_header("Connection", "close")
            self.end_headers()
            if head:
                return status, 0
            body = content[start : end + 1]
            drop = hub._take_drop()
            if drop is not None and drop < len(body):
                # Promise the whole body, send part of it, hang up: a dropped connection.
                self.wfile.write(body[:drop])
                self.wfile.flush()
                self.connection.shutdown(socket.SHUT_RDWR)
                return status, drop
            self.wfile.write(body)
            return status, len(body)

        def _error(
            self, status: int, code: str | None, message: str, commit: str | None = None
        ) -> int:
            body = json.dumps({"error": message}).encode()
            self.send_response(status)
            if code is not None:
                self.send_header("X-Error-Code", code)
            self.send_header("X-Error-Message", message)
            if commit is not None:
                self.send_header("X-Repo-Commit", commit)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
            return status

    return Handler
