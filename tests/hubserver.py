"""A stand-in for the Hugging Face hub's file endpoint, for tests: a real HTTP server on 127.0.0.1, in a thread.

The real hub cannot be reached from CI, so the code under test talks to this one instead. Everything on the
client's side is the real thing (``huggingface_hub``'s ``hf_hub_download`` and ``get_hf_file_metadata``, its cache,
lora_lab's checks); only the server is local. It answers what those two functions ask for (read from
``huggingface_hub/file_download.py``, 2.4):

* ``HEAD``/``GET /<repo>/resolve/<revision>/<file>``, revision ``main`` or the repo's commit id, with
  ``X-Repo-Commit`` (the commit), ``ETag`` and ``Content-Length``. A small file (``config.json``) is a git file: its
  ETag is its git blob sha1 and the body comes straight back. A large file (LFS: ``*.safetensors``, or over
  10 MB) answers ``302`` with ``X-Linked-Etag`` = its sha256 and ``X-Linked-Size``, and ``Location`` on another
  origin (``http://localhost:<port>/cdn-lfs/<sha256>``), as the hub redirects to its CDN: the client does not follow
  a HEAD there, takes the metadata from the redirect, and GETs the CDN url directly.
* ``GET /cdn-lfs/<sha256>`` with ``Range: bytes=N-`` (206, ``Content-Range``), which the client sends to resume a
  download that was cut.
* Errors the way the hub labels them: an unknown repo is 404 with ``X-Error-Code: RepoNotFound``, an unknown
  file 404 ``EntryNotFound`` (with ``X-Repo-Commit``), an unknown revision 404 ``RevisionNotFound``.

Faults for the tests to inject, each for the next ``times`` matching requests (:meth:`StandInHub.fault`):
``status`` (answer e.g. 500 or 404), ``truncate`` (send the full ``Content-Length`` but only ``keep`` bytes,
then cut the connection), ``short`` (send only ``keep`` bytes with a matching ``Content-Length``), ``corrupt``
(the right length, one byte flipped). :attr:`StandInHub.requests` logs ``(method, host, path, range)`` of every
request, to show what went over the wire (nothing, when offline). :meth:`StandInHub.stop` also cuts the
keep-alive connections a client has pooled, as a dropped network would.
"""
from __future__ import annotations

import hashlib
import http.server
import re
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path

LFS_MIN_BYTES = 10 * 2**20


@dataclass
class HubFile:
    path: Path
    size: int
    sha256: str
    git_sha1: str
    lfs: bool


@dataclass
class Fault:
    kind: str  # "status", "truncate", "short" or "corrupt"
    times: int = 1
    method: str | None = None  # HEAD or GET; None: both
    path_contains: str = ""
    status: int = 500
    keep: int = 0  # bytes sent before a truncate cuts the connection
    hits: int = field(default=0, init=False)


def describe(path: Path) -> HubFile:
    """Size, sha256 and git blob sha1 of a file, read once."""
    sha256, size = hashlib.sha256(), path.stat().st_size
    git = hashlib.sha1(b"blob %d\0" % size)
    with path.open("rb") as f:
        while chunk := f.read(2**22):
            sha256.update(chunk)
            git.update(chunk)
    return HubFile(path, size, sha256.hexdigest(), git.hexdigest(),
                   lfs=path.suffix == ".safetensors" or size > LFS_MIN_BYTES)


class StandInHub:
    """``StandInHub({"openai-community/gpt2": (folder, commit)})``; ``with hub:`` starts and stops it."""

    def __init__(self, repos: dict[str, tuple[Path, str]]):
        self.repos = {repo: (commit, {p.name: describe(p) for p in sorted(Path(folder).iterdir()) if p.is_file()})
                      for repo, (folder, commit) in repos.items()}
        self.blobs = {f.sha256: f for _, files in self.repos.values() for f in files.values() if f.lfs}
        self.faults: list[Fault] = []
        self.requests: list[tuple[str, str, str, str | None]] = []
        self._server: http.server.ThreadingHTTPServer | None = None
        self._open: set[socket.socket] = set()  # connections being served, cut by stop() as by a dropped network
        self._port: int | None = None  # kept after stop(): the url then points at a closed port, as when offline
        self._thread: threading.Thread | None = None

    # --- control ------------------------------------------------------------------------------------------
    def start(self) -> "StandInHub":
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="stand-in-hub", daemon=True)
        self._thread.start()
        self._port = self._server.server_address[1]
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            for conn in list(self._open):  # keep-alive connections a client pooled would otherwise still be served
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            self._thread.join(10)
            self._server = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        """The endpoint to give huggingface_hub (``HF_ENDPOINT`` or ``endpoint=``)."""
        return f"http://127.0.0.1:{self.port}"

    def fault(self, kind: str, **kw) -> Fault:
        f = Fault(kind, **kw)
        self.faults.append(f)
        return f

    def reset(self) -> None:
        self.faults.clear()
        self.requests.clear()

    def _take_fault(self, method: str, path: str) -> Fault | None:
        for f in self.faults:
            if f.hits < f.times and (f.method in (None, method)) and f.path_contains in path:
                f.hits += 1
                return f
        return None


_RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<file>.+)$")
_RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")


def _handler(hub: StandInHub):
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self):
            super().setup()
            hub._open.add(self.connection)

        def finish(self):
            hub._open.discard(self.connection)
            super().finish()

        def log_message(self, *args):  # quiet: the tests read hub.requests instead
            pass

        def do_HEAD(self):
            self._answer(body=False)

        def do_GET(self):
            self._answer(body=True)

        def _answer(self, body: bool):
            path = self.path.split("?", 1)[0]
            hub.requests.append((self.command, self.headers.get("Host", ""), path, self.headers.get("Range")))
            fault = hub._take_fault(self.command, path)
            if fault is not None and fault.kind == "status":
                return self._error(fault.status, "Internal Error" if fault.status >= 500 else "Injected")
            if path.startswith("/cdn-lfs/"):
                f = hub.blobs.get(path.removeprefix("/cdn-lfs/"))
                if f is None:
                    return self._error(404, "NoSuchKey")
                return self._send_file(f, body, fault, etag=f.sha256)
            m = _RESOLVE.match(path)
            if m is None or m["repo"] not in hub.repos:
                return self._error(404, "Repository not found", code="RepoNotFound")
            commit, files = hub.repos[m["repo"]]
            if m["rev"] not in ("main", commit):
                return self._error(404, "Invalid rev id", code="RevisionNotFound", commit=None)
            f = files.get(m["file"])
            if f is None:
                return self._error(404, "Entry not found", code="EntryNotFound", commit=commit)
            if f.lfs:  # the hub redirects large files to its CDN, another origin, with their metadata
                self.send_response(302)
                self.send_header("X-Repo-Commit", commit)
                self.send_header("ETag", f'"{f.git_sha1}"')
                self.send_header("X-Linked-Etag", f'"{f.sha256}"')
                self.send_header("X-Linked-Size", str(f.size))
                self.send_header("Location", f"http://localhost:{hub.port}/cdn-lfs/{f.sha256}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            return self._send_file(f, body, fault, etag=f.git_sha1, commit=commit)

        def _error(self, status, message, code=None, commit=None):
            data = ('{"error": "%s"}' % message).encode()
            self.send_response(status)
            if code:
                self.send_header("X-Error-Code", code)
                self.send_header("X-Error-Message", message)
            if commit:
                self.send_header("X-Repo-Commit", commit)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        def _send_file(self, f: HubFile, body: bool, fault: Fault | None, etag: str, commit: str | None = None):
            start, end = 0, f.size - 1
            m = _RANGE.match(self.headers.get("Range", "") or "")
            if m:
                start = int(m[1])
                end = min(int(m[2]), f.size - 1) if m[2] else f.size - 1
                if start >= f.size:
                    return self._error(416, "Range Not Satisfiable")
            if fault is not None and fault.kind == "short":  # ends early, and says so in its Content-Length
                end = min(end, start + fault.keep - 1)
            length = end - start + 1
            self.send_response(206 if m else 200)
            if commit:
                self.send_header("X-Repo-Commit", commit)
            self.send_header("ETag", f'"{etag}"')
            self.send_header("Accept-Ranges", "bytes")
            if m:
                self.send_header("Content-Range", f"bytes {start}-{end}/{f.size}")
            self.send_header("Content-Length", str(length))
            if fault is not None and fault.kind == "truncate":
                self.send_header("Connection", "close")
            self.end_headers()
            if not body:
                return
            self.wfile.flush()
            with f.path.open("rb") as src:
                if fault is not None and fault.kind == "truncate":
                    src.seek(start)
                    self.wfile.write(src.read(min(fault.keep, length)))
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)  # the connection drops mid-file
                    return
                if fault is not None and fault.kind == "corrupt":  # one byte in the middle flipped
                    mid = start + length // 2
                    self.connection.sendfile(src, offset=start, count=mid - start)
                    src.seek(mid)
                    self.wfile.write(bytes([src.read(1)[0] ^ 0xFF]))
                    self.wfile.flush()
                    self.connection.sendfile(src, offset=mid + 1, count=end - mid)
                    return
                self.connection.sendfile(src, offset=start, count=length)

    return Handler
