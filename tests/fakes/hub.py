"""A loopback fake of the Hugging Face Hub HTTP API, enough for `huggingface_hub.HfApi` to create repos, commit files,
tag commits, list refs and files, and download them back.

It speaks the real endpoints (`/api/repos/create`, `/api/repos/delete`, `/api/{type}s/{id}/preupload/{rev}`, the NDJSON
`/api/{type}s/{id}/commit/{rev}`, `/tag/{rev}`, `/refs`, `/revision/{rev}`, `/tree/{rev}`, `/resolve/{rev}/{path}`).
Every file is answered as a "regular" (non-LFS) upload so commits carry their content inline. A commit is applied
atomically, as on the real Hub; `fail_next_commit` makes the next one fail with a 500 after reading its body.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator
from urllib.parse import unquote, urlparse

import yaml

TOKEN = "hf_fake_test_token_0123456789"


@dataclass
class Commit:
    oid: str
    message: str
    files: dict[str, bytes]


@dataclass
class RepoState:
    repo_type: str
    repo_id: str
    private: bool
    commits: list[Commit] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)  # tag -> commit oid

    @property
    def files(self) -> dict[str, bytes]:
        return self.commits[-1].files if self.commits else {}

    def at(self, revision: str) -> Commit | None:
        if revision in ("main", "refs/heads/main"):
            return self.commits[-1] if self.commits else None
        oid = self.tags.get(revision, revision)
        return next((c for c in self.commits if c.oid == oid), None)


class FakeHub:
    def __init__(self) -> None:
        self.repos: dict[tuple[str, str], RepoState] = {}
        self.token = TOKEN
        self.requests: list[tuple[str, str, dict[str, str]]] = []  # (method, path, headers) for secret checks
        self.fail_next_commit = False
        self.lock = threading.Lock()
        self.endpoint = ""


_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}


def _handler(hub: FakeHub):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:  # keep test output clean
            pass

        # ---------------------------------------------------------------- helpers
        def _body(self) -> bytes:
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _send(self, status: int, payload=None, raw: bytes | None = None, headers: dict | None = None) -> None:
            data = raw if raw is not None else json.dumps(payload if payload is not None else {}).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/octet-stream" if raw is not None else "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        def _error(self, status: int, message: str, code: str | None = None) -> None:
            headers = {"X-Error-Message": message}
            if code:
                headers["X-Error-Code"] = code
            self._send(status, {"error": message}, headers=headers)

        def _authorized(self) -> bool:
            return self.headers.get("Authorization") == f"Bearer {hub.token}"

        def _repo(self, kind: str, repo_id: str) -> RepoState | None:
            repo = hub.repos.get((_TYPES.get(kind, kind), repo_id))
            if repo is None or (repo.private and not self._authorized()):
                self._error(404, "Repository not found", "RepoNotFound")
                return None
            return repo

        def _validate_yaml(self, content: str) -> None:
            """Like the Hub: README front matter must be a YAML mapping; `configs` entries need a config_name."""
            m = re.match(r"^---\n(.*?)\n---", content, re.S)
            try:
                meta = yaml.safe_load(m.group(1)) if m else {}
                if not isinstance(meta, dict):
                    raise ValueError("metadata must be a mapping")
                for cfg in meta.get("configs", []):
                    if "config_name" not in cfg or "data_files" not in cfg:
                        raise ValueError("each configs entry needs config_name and data_files")
            except (yaml.YAMLError, ValueError) as e:
                return self._send(400, {"errors": [{"message": str(e)}]}, headers={"X-Error-Message": "Invalid YAML"})
            return self._send(200, {"errors": [], "warnings": []})

        def _record(self) -> None:
            hub.requests.append((self.command, self.path, dict(self.headers)))

        # ---------------------------------------------------------------- routes
        def do_POST(self) -> None:  # noqa: N802
            self._record()
            path = unquote(urlparse(self.path).path)
            body = self._body()
            if not self._authorized():
                return self._error(401, "Invalid credentials in Authorization header")
            if path == "/api/validate-yaml":
                return self._validate_yaml(json.loads(body)["content"])
            if path == "/api/repos/create":
                spec = json.loads(body)
                repo_type = spec.get("type") or "model"
                repo_id = f"{spec['organization']}/{spec['name']}" if spec.get("organization") else spec["name"]
                with hub.lock:
                    if (repo_type, repo_id) in hub.repos:
                        return self._error(409, "You already created this repo")
                    hub.repos[(repo_type, repo_id)] = RepoState(
                        repo_type, repo_id, private=spec.get("visibility") == "private" or bool(spec.get("private"))
                    )
                prefix = "" if repo_type == "model" else f"{repo_type}s/"
                return self._send(200, {"url": f"{hub.endpoint}/{prefix}{repo_id}", "name": repo_id})
            m = re.fullmatch(r"/api/(models|datasets|spaces)/(.+?)/(preupload|commit|tag)/(.+)", path)
            if not m:
                return self._error(404, f"no route for POST {path}")
            kind, repo_id, action, revision = m.groups()
            repo = self._repo(kind, repo_id)
            if repo is None:
                return
            if action == "preupload":
                files = json.loads(body)["files"]
                return self._send(
                    200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]}
                )
            if action == "tag":
                spec = json.loads(body)
                with hub.lock:
                    commit = repo.at(revision)
                    if commit is None:
                        return self._error(404, f"Invalid rev id: {revision}", "RevisionNotFound")
                    if spec["tag"] in repo.tags:
                        return self._error(409, f"Tag {spec['tag']} already exists")
                    repo.tags[spec["tag"]] = commit.oid
                return self._send(200, {})
            # commit: NDJSON header + files, applied all at once
            lines = [json.loads(line) for line in body.splitlines() if line.strip()]
            if hub.fail_next_commit:
                hub.fail_next_commit = False
                return self._error(500, "Internal Error (injected)")
            header = next(item["value"] for item in lines if item["key"] == "header")
            with hub.lock:
                files = dict(repo.files)
                for item in lines:
                    if item["key"] == "file":
                        files[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
                    elif item["key"] == "deletedFile":
                        files.pop(item["value"]["path"], None)
                    elif item["key"] == "lfsFile":
                        return self._error(400, "this fake hub only accepts regular uploads")
                digest = hashlib.sha1(json.dumps([len(repo.commits), header["summary"], sorted(files)]).encode())
                for name in sorted(files):
                    digest.update(files[name])
                oid = digest.hexdigest()
                repo.commits.append(Commit(oid, header["summary"], files))
            prefix = "" if repo.repo_type == "model" else f"{repo.repo_type}s/"
            return self._send(
                200, {"commitUrl": f"{hub.endpoint}/{prefix}{repo.repo_id}/commit/{oid}", "commitOid": oid,
                      "pullRequestUrl": None}
            )

        def do_DELETE(self) -> None:  # noqa: N802
            self._record()
            body = self._body()
            if not self._authorized():
                return self._error(401, "Invalid credentials in Authorization header")
            if unquote(urlparse(self.path).path) != "/api/repos/delete":
                return self._error(404, f"no route for DELETE {self.path}")
            spec = json.loads(body)
            repo_id = f"{spec['organization']}/{spec['name']}" if spec.get("organization") else spec["name"]
            with hub.lock:
                if hub.repos.pop((spec.get("type") or "model", repo_id), None) is None:
                    return self._error(404, "Repository not found", "RepoNotFound")
            return self._send(200, {})

        def do_HEAD(self) -> None:  # noqa: N802
            self.do_GET()

        def do_GET(self) -> None:  # noqa: N802
            self._record()
            path = unquote(urlparse(self.path).path)
            if path == "/api/whoami-v2":
                if not self._authorized():
                    return self._error(401, "Invalid credentials in Authorization header")
                return self._send(200, {"type": "user", "name": "tester", "auth": {"accessToken": {"role": "write"}}})
            m = re.fullmatch(r"/api/(models|datasets|spaces)/([^/]+/[^/]+)(?:/(refs|revision|tree)(?:/([^/]+)(/.*)?)?)?", path)
            if m:
                kind, repo_id, action, revision, sub = m.groups()
                repo = self._repo(kind, repo_id)
                if repo is None:
                    return
                if action == "refs":
                    head = repo.commits[-1].oid if repo.commits else None
                    return self._send(200, {
                        "branches": [{"name": "main", "ref": "refs/heads/main", "targetCommit": head}] if head else [],
                        "converts": [],
                        "tags": [{"name": t, "ref": f"refs/tags/{t}", "targetCommit": o} for t, o in repo.tags.items()],
                        "pullRequests": [],
                    })
                commit = repo.at(revision or "main")
                if commit is None:
                    return self._error(404, f"Invalid rev id: {revision}", "RevisionNotFound")
                if action == "tree":
                    prefix = (sub or "").strip("/")
                    entries = [
                        {"type": "file", "path": p, "size": len(b), "oid": hashlib.sha1(b).hexdigest()}
                        for p, b in sorted(commit.files.items())
                        if not prefix or p.startswith(prefix + "/")
                    ]
                    dirs = sorted({"/".join(e["path"].split("/")[: i + 1])
                                   for e in entries for i in range(len(e["path"].split("/")) - 1)})
                    return self._send(200, [{"type": "directory", "path": d, "oid": "0" * 40, "size": 0} for d in dirs] + entries)
                return self._send(200, {
                    "id": repo.repo_id, "sha": commit.oid, "private": repo.private,
                    "siblings": [{"rfilename": p} for p in sorted(commit.files)],
                })
            m = re.fullmatch(r"/(?:(datasets|spaces)/)?([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)
            if m:
                kind, repo_id, revision, file_path = m.groups()
                repo = self._repo(kind or "models", repo_id)
                if repo is None:
                    return
                commit = repo.at(revision)
                if commit is None or file_path not in commit.files:
                    return self._error(404, "Entry not found", "EntryNotFound")
                data = commit.files[file_path]
                etag = hashlib.sha1(data).hexdigest()
                return self._send(200, raw=data, headers={"X-Repo-Commit": commit.oid, "ETag": f'"{etag}"'})
            return self._error(404, f"no route for GET {path}")

    return Handler


@contextmanager
def fake_hub() -> Iterator[FakeHub]:
    """Serve a fresh, empty fake Hub on 127.0.0.1 (a free port) for the duration of the block."""
    hub = FakeHub()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(hub))
    hub.endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield hub
    finally:
        server.shutdown()
        server.server_close()
