"""A small Hugging Face Hub look-alike on loopback, for tests that publish and download without the internet.

It speaks just the HTTP API that huggingface_hub (create_repo, upload_folder, repo_info, hf_hub_download,
snapshot_download, HfFileSystem), timm and datasets.load_dataset use. Repos live in memory as git-like commits
(each a full path -> blob-id map, with a parent); blobs are files named by their git blob id in a temp folder.
Every file is uploaded inline ("regular" mode): there is no LFS or Xet, so clients need HF_HUB_DISABLE_XET=1.

    with HubServer(tmp_path) as hub:
        env = {"HF_ENDPOINT": hub.url, "HF_TOKEN": "hf_dummy", "HF_HUB_DISABLE_XET": "1", ...}
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

PREFIXES = {"model": "", "dataset": "datasets/"}
KINDS = {"models": "model", "datasets": "dataset"}
REPO = r"(?P<repo_id>[^/]+/[^/]+)"
GITATTRIBUTES = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n*.parquet filter=lfs diff=lfs merge=lfs -text\n"


class HubError(Exception):
    """An HTTP error answered the way the Hub does (X-Error-Code drives huggingface_hub's exception type)."""

    def __init__(self, status: int, message: str, code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.headers = status, message, code, headers or {}


@dataclass
class Commit:
    oid: str
    parent: str | None
    title: str
    files: dict[str, str]  # path -> git blob id
    date: str


@dataclass
class Repo:
    repo_type: str
    repo_id: str
    private: bool
    branches: dict[str, str] = field(default_factory=dict)
    commits: dict[str, Commit] = field(default_factory=dict)

    def resolve(self, revision: str) -> Commit:
        commit = self.commits.get(self.branches.get(revision, revision))
        if commit is None:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return commit


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class FakeHub:
    """Repos, commits and blobs with the Hub's semantics, independent of HTTP."""

    def __init__(self, root: Path):
        self.blobs = Path(root) / "blobs"
        self.blobs.mkdir(parents=True, exist_ok=True)
        self.repos: dict[tuple[str, str], Repo] = {}
        self.log: list[tuple[str, str]] = []  # (method, path) of every request, for assertions
        self.lock = threading.Lock()

    def repo(self, repo_type: str, repo_id: str, authorized: bool = True) -> Repo:
        repo = self.repos.get((repo_type, repo_id))
        if repo is None or (repo.private and not authorized):
            raise HubError(404, "Repository not found", "RepoNotFound")
        return repo

    def blob(self, oid: str) -> Path:
        return self.blobs / oid

    def create_repo(self, repo_type: str, repo_id: str, private: bool) -> Repo:
        with self.lock:
            if (repo_type, repo_id) in self.repos:
                raise HubError(409, f"You already created this {repo_type} repo")
            repo = self.repos[(repo_type, repo_id)] = Repo(repo_type, repo_id, private)
        self.commit(repo, "main", "initial commit", {".gitattributes": GITATTRIBUTES}, [], new=True)
        return repo

    def commit(self, repo: Repo, branch: str, title: str, adds: dict[str, bytes], deletes: list[str],
               parent: str | None = None, new: bool = False) -> Commit:
        with self.lock:
            if branch not in repo.branches and not new:
                raise HubError(404, f"Invalid rev id: {branch}", "RevisionNotFound")
            head = repo.branches.get(branch)
            if parent is not None and head is not None and not head.startswith(parent):
                raise HubError(412, f"Parent commit {parent} is not the head of {branch} ({head})")
            files = dict(repo.commits[head].files) if head else {}
            for path in deletes:  # a file, or a folder given with a trailing "/"
                files = {name: oid for name, oid in files.items() if name != path and not name.startswith(path)}
            for path, data in adds.items():
                if path.startswith("/") or ".." in path.split("/"):
                    raise HubError(400, f"Invalid path {path!r}")
                files[path] = git_blob_id(data)
                self.blob(files[path]).write_bytes(data)
            date = datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
            oid = hashlib.sha1(json.dumps([head, title, sorted(files.items()), time.time_ns()]).encode()).hexdigest()
            repo.commits[oid] = Commit(oid, head, title, files, date)
            repo.branches[branch] = oid
            return repo.commits[oid]

    def tree(self, commit: Commit, prefix: str = "", recursive: bool = False, expand: bool = False) -> list[dict]:
        """Tree entries under ``prefix``: files and (implied) folders, like /api/{kind}/{id}/tree."""
        entries: dict[str, dict] = {}
        base = prefix.strip("/") + "/" if prefix.strip("/") else ""
        for path, oid in sorted(commit.files.items()):
            if not path.startswith(base):
                continue
            parts = path[len(base):].split("/")
            for depth in range(1, len(parts) if recursive else min(len(parts), 1)):
                folder = base + "/".join(parts[:depth])
                entries.setdefault(folder, self.entry(commit, folder, None, expand))
            if recursive or len(parts) == 1:
                entries[path] = self.entry(commit, path, oid, expand)
            else:
                entries.setdefault(base + parts[0], self.entry(commit, base + parts[0], None, expand))
        if base and not entries:
            raise HubError(404, f"{prefix} does not exist on {commit.oid}", "EntryNotFound")
        return list(entries.values())

    def entry(self, commit: Commit, path: str, oid: str | None, expand: bool = False) -> dict:
        if oid is None:
            entry = {"type": "directory", "oid": hashlib.sha1(f"{commit.oid}:{path}".encode()).hexdigest(),
                     "size": 0, "path": path}
        else:
            entry = {"type": "file", "oid": oid, "size": self.blob(oid).stat().st_size, "path": path}
        if expand:
            entry["lastCommit"] = {"id": commit.oid, "title": commit.title, "date": commit.date}
        return entry


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    hub: FakeHub
    url: str

    # ---------------------------------------------------------------------------- plumbing

    def log_message(self, format, *args) -> None:  # quiet: requests are kept in hub.log instead
        pass

    def do_GET(self) -> None:
        self.dispatch("GET")

    def do_HEAD(self) -> None:
        self.dispatch("HEAD")

    def do_POST(self) -> None:
        self.dispatch("POST")

    def dispatch(self, method: str) -> None:
        split = urlsplit(self.path)
        self.query = {key: values[-1] for key, values in parse_qs(split.query).items()}
        self.body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.hub.log.append((method, split.path))
        try:
            for route_method, pattern, handler in ROUTES:
                match = re.fullmatch(pattern, split.path)
                if match and method in route_method:
                    return handler(self, **{key: unquote(value or "") for key, value in match.groupdict().items()})
            raise HubError(404, f"No route for {method} {split.path}")
        except HubError as error:
            headers = {"X-Error-Message": error.message, **({"X-Error-Code": error.code} if error.code else {}),
                       **error.headers}
            self.send_json({"error": error.message}, error.status, headers)

    def send(self, status: int, body: bytes, headers: dict | None = None) -> None:
        self.send_response(status)
        for key, value in {"Content-Type": "application/json", **(headers or {})}.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def send_json(self, data, status: int = 200, headers: dict | None = None) -> None:
        self.send(status, json.dumps(data).encode(), headers)

    @property
    def authorized(self) -> bool:
        return self.headers.get("Authorization", "").startswith("Bearer ")

    def require_token(self) -> None:
        if not self.authorized:
            raise HubError(401, "Invalid username or password.")

    def repo_url(self, repo: Repo) -> str:
        return f"{self.url}/{PREFIXES[repo.repo_type]}{repo.repo_id}"

    # ---------------------------------------------------------------------------- write API

    def create_repo(self) -> None:
        self.require_token()
        payload = json.loads(self.body)
        repo_type = payload.get("type") or "model"
        repo_id = f"{payload['organization']}/{payload['name']}" if payload.get("organization") else payload["name"]
        private = payload.get("visibility", "private" if payload.get("private") else "public") != "public"
        try:
            repo = self.hub.create_repo(repo_type, repo_id, private)
        except HubError as error:
            self.send_json({"error": error.message, "url": f"{self.url}/{PREFIXES[repo_type]}{repo_id}"}, 409)
            return
        self.send_json({"url": self.repo_url(repo), "name": repo_id, "id": repo_id})

    def validate_yaml(self) -> None:
        self.send_json({"errors": [], "warnings": []})

    def create_branch(self, kind: str, repo_id: str, branch: str) -> None:
        self.require_token()
        repo = self.hub.repo(KINDS[kind], repo_id)
        if branch in repo.branches:
            raise HubError(409, f"Reference {branch} already exists")
        start = repo.resolve(json.loads(self.body or b"{}").get("startingPoint") or "main")
        repo.branches[branch] = start.oid
        self.send_json({})

    def preupload(self, kind: str, repo_id: str, revision: str) -> None:
        self.require_token()
        repo = self.hub.repo(KINDS[kind], repo_id)
        files = repo.resolve(revision).files
        self.send_json({"files": [{"path": item["path"], "uploadMode": "regular", "shouldIgnore": False,
                                   "oid": files.get(item["path"])} for item in json.loads(self.body)["files"]]})

    def commit(self, kind: str, repo_id: str, revision: str) -> None:
        self.require_token()
        if self.query.get("create_pr"):
            raise HubError(400, "This fake Hub does not do pull requests")
        repo = self.hub.repo(KINDS[kind], repo_id)
        header, adds, deletes = {}, {}, []
        for line in self.body.splitlines():
            item = json.loads(line)
            if item["key"] == "header":
                header = item["value"]
            elif item["key"] == "file" and item["value"].get("encoding") == "base64":
                adds[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
            elif item["key"] == "deletedFile":
                deletes.append(item["value"]["path"])
            elif item["key"] == "deletedFolder":
                deletes.append(item["value"]["path"].rstrip("/") + "/")
            else:
                raise HubError(400, f"Unsupported commit operation {item['key']!r} (no LFS in this fake Hub)")
        commit = self.hub.commit(repo, revision, header.get("summary", ""), adds, deletes, header.get("parentCommit"))
        self.send_json({"commitOid": commit.oid, "commitUrl": f"{self.repo_url(repo)}/commit/{commit.oid}",
                        "pullRequestUrl": None})

    # ---------------------------------------------------------------------------- read API

    def repo_info(self, kind: str, repo_id: str, revision: str = "") -> None:
        repo = self.hub.repo(KINDS[kind], repo_id, self.authorized)
        commit = repo.resolve(revision or "main")
        siblings = [{"rfilename": path, "size": self.hub.blob(oid).stat().st_size, "blobId": oid}
                    for path, oid in sorted(commit.files.items())]
        self.send_json({"id": repo_id, "_id": hashlib.sha1(repo_id.encode()).hexdigest()[:24],
                        "author": repo_id.split("/")[0], "sha": commit.oid, "private": repo.private,
                        "lastModified": commit.date, "createdAt": repo.commits[min(repo.commits)].date,
                        "disabled": False, "gated": False, "downloads": 0, "likes": 0, "tags": [],
                        "siblings": siblings})

    def tree(self, kind: str, repo_id: str, revision: str, path: str = "") -> None:
        commit = self.hub.repo(KINDS[kind], repo_id, self.authorized).resolve(revision)
        self.send_json(self.hub.tree(commit, path, self.query.get("recursive", "").lower() in ("true", "1"),
                                     self.query.get("expand", "").lower() in ("true", "1")))

    def paths_info(self, kind: str, repo_id: str, revision: str) -> None:
        commit = self.hub.repo(KINDS[kind], repo_id, self.authorized).resolve(revision)
        form = parse_qs(self.body.decode())
        expand = form.get("expand", ["False"])[-1].lower() in ("true", "1")
        folders = {"/".join(path.split("/")[:depth]) for path in commit.files
                   for depth in range(1, path.count("/") + 1)}
        self.send_json([self.hub.entry(commit, path.strip("/"), commit.files.get(path.strip("/")), expand)
                        for path in form.get("paths", []) if path.strip("/") in commit.files or
                        path.strip("/") in folders])

    def resolve(self, repo_id: str, revision: str, path: str, kind: str = "models") -> None:
        repo = self.hub.repo(KINDS[kind], repo_id, self.authorized)
        commit = repo.resolve(revision)
        oid = commit.files.get(path)
        if oid is None:
            raise HubError(404, f"Entry not found: {path}", "EntryNotFound", {"X-Repo-Commit": commit.oid})
        data = self.hub.blob(oid).read_bytes()
        headers = {"Content-Type": "application/octet-stream", "ETag": f'"{oid}"', "X-Repo-Commit": commit.oid,
                   "Accept-Ranges": "bytes"}
        match = re.fullmatch(r"bytes=(\d*)-(\d*)", self.headers.get("Range", ""))
        if match and data:
            start = int(match[1]) if match[1] else max(len(data) - int(match[2] or 0), 0)
            end = min(int(match[2]), len(data) - 1) if match[1] and match[2] else len(data) - 1
            if start > end:
                raise HubError(416, "Range not satisfiable", headers={"Content-Range": f"bytes */{len(data)}"})
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
            self.send(206, data[start:end + 1], headers)
        else:
            self.send(200, data, headers)


KIND = r"(?P<kind>models|datasets)"
REV = r"(?P<revision>[^/]+)"
ROUTES = [
    ("POST", r"/api/repos/create", Handler.create_repo),
    ("POST", r"/api/validate-yaml", Handler.validate_yaml),
    ("GET", r"/api/agent-harnesses", lambda handler: handler.send_json({"standardEnvVars": [], "harnesses": {}})),
    ("POST", rf"/api/{KIND}/{REPO}/preupload/{REV}", Handler.preupload),
    ("POST", rf"/api/{KIND}/{REPO}/commit/{REV}", Handler.commit),
    ("POST", rf"/api/{KIND}/{REPO}/branch/(?P<branch>[^/]+)", Handler.create_branch),
    ("POST", rf"/api/{KIND}/{REPO}/paths-info/{REV}", Handler.paths_info),
    ("GET", rf"/api/{KIND}/{REPO}(?:/revision/{REV})?", Handler.repo_info),
    ("GET", rf"/api/{KIND}/{REPO}/tree/{REV}(?:/(?P<path>.+))?", Handler.tree),
    ("GET HEAD", rf"/(?P<kind>datasets)/{REPO}/resolve/{REV}/(?P<path>.+)", Handler.resolve),
    ("GET HEAD", rf"/{REPO}/resolve/{REV}/(?P<path>.+)", Handler.resolve),
]


class HubServer:
    """The fake Hub served on a free loopback port from a background thread; ``url`` is its HF_ENDPOINT."""

    def __init__(self, root: str | Path):
        self.hub = FakeHub(Path(root))
        handler = type("BoundHandler", (Handler,), {"hub": self.hub})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.url = handler.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="fake-hub", daemon=True)

    def start(self) -> HubServer:
        self.thread.start()
        return self

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()
