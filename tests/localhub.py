"""A real HTTP server on 127.0.0.1 that answers the Hugging Face Hub's file API for test files.

It serves `/{repo_id}/resolve/{revision}/{filename}` with the headers `huggingface_hub` reads
(X-Repo-Commit, X-Linked-Etag = the file's sha256, X-Linked-Size, Accept-Ranges, Range → 206), so
`hf_hub_download` runs its real code path against it. Knobs make it misbehave on purpose.
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# a model repo, or datasets/{repo} for a dataset
PATH = re.compile(r"^/(?P<repo>(?:datasets/)?[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<file>.+)$")


@dataclass
class HubFile:
    data: bytes
    commit: str
    sha256: str = ""
    served: bytes | None = None  # bytes actually sent (to simulate corruption); None = data

    def __post_init__(self) -> None:
        self.sha256 = hashlib.sha256(self.data).hexdigest()


@dataclass
class LocalHub:
    files: dict[tuple[str, str], HubFile] = field(default_factory=dict)
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)  # (method, path, Range)
    cut_next_get_after: int | None = None  # the next GET sends this many bytes, then drops the connection
    fail_gets: bool = False  # answer GETs with 503 (after a cut: the transfer cannot resume)
    delay_s: float = 0.0  # wait before sending a body (to make concurrent resolves overlap)
    url: str = ""

    def add(self, repo_id: str, filename: str, data: bytes, commit: str | None = None) -> HubFile:
        commit = commit or hashlib.sha1(repo_id.encode() + data[:64]).hexdigest()
        self.files[(repo_id, filename)] = f = HubFile(data, commit)
        return f

    def gets(self, fragment: str = "") -> int:
        return sum(1 for m, p, _ in self.requests if m == "GET" and fragment in p)

    def start(self) -> LocalHub:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # keep test output clean
                pass

            def do_HEAD(self) -> None:
                self._serve(body=False)

            def do_GET(self) -> None:
                self._serve(body=True)

            def _serve(self, body: bool) -> None:
                hub.requests.append((self.command, self.path, self.headers.get("Range")))
                m = PATH.match(self.path)
                f = hub.files.get((m["repo"], m["file"])) if m else None
                if f is None or m["rev"] not in ("main", f.commit):
                    return self._plain(404, b"Entry not found", {"X-Error-Code": "EntryNotFound"})
                if body and hub.fail_gets:
                    return self._plain(503, b"unavailable", {})
                payload = f.data if f.served is None else f.served
                start, status = 0, 200
                rng = self.headers.get("Range")
                if rng and (rm := re.fullmatch(r"bytes=(\d+)-", rng)):
                    start, status = int(rm[1]), 206
                self.send_response(status)
                self.send_header("X-Repo-Commit", f.commit)
                self.send_header("ETag", f'"{f.sha256}"')
                self.send_header("X-Linked-Etag", f'"{f.sha256}"')
                self.send_header("X-Linked-Size", str(len(f.data)))
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("Content-Length", str(len(payload) - start))
                if status == 206:
                    self.send_header("Content-Range", f"bytes {start}-{len(payload) - 1}/{len(payload)}")
                self.end_headers()
                if not body:
                    return
                time.sleep(hub.delay_s)
                cut = hub.cut_next_get_after
                if cut is not None:
                    hub.cut_next_get_after = None
                    self.wfile.write(payload[start : start + cut])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(payload[start:])

            def _plain(self, status: int, text: bytes, headers: dict[str, str]) -> None:
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(text)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(text)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
