"""A local stand-in for the Hugging Face Hub's HTTP API: the endpoints huggingface_hub's HfApi calls for
whoami, create_repo, create_branch and create_commit (README front-matter check, preupload, the basic git-LFS batch upload, and the
ndjson commit), served by http.server in a thread. It keeps what a commit would put in the repository
(path -> bytes) so that a test can compare it with the local files. No network beyond 127.0.0.1."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import yaml

TOKEN = "hf_fake_token_for_tests"
USER = "tester"
ORGS = ("strop-org",)


@dataclass
class FakeHubState:
    repos: dict[str, dict[str, Any]] = field(default_factory=dict)  # repo id -> {"private", "branches", "files"}
    lfs: dict[str, bytes] = field(default_factory=dict)  # sha256 -> uploaded bytes
    calls: list[str] = field(default_factory=list)  # "METHOD path" of every request
    fail: set[str] = field(default_factory=set)  # endpoint names answered with 500


def _handler(state: FakeHubState, base: list[str]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:  # quiet
            pass

        def _body(self) -> bytes:
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _send(self, status: int, payload: Any = None) -> None:
            data = json.dumps(payload if payload is not None else {}).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _route(self, method: str) -> None:
            state.calls.append(f"{method} {self.path}")
            path = self.path.split("?")[0]
            routes = [
                ("whoami", "GET", r"/api/whoami-v2"),
                ("create_repo", "POST", r"/api/repos/create"),
                ("validate_yaml", "POST", r"/api/validate-yaml"),
                ("branch", "POST", r"/api/models/(?P<repo>.+)/branch/(?P<rev>[^/]+)"),
                ("preupload", "POST", r"/api/models/(?P<repo>.+)/preupload/(?P<rev>[^/]+)"),
                ("commit", "POST", r"/api/models/(?P<repo>.+)/commit/(?P<rev>[^/]+)"),
                ("lfs_batch", "POST", r"/(?P<repo>.+)\.git/info/lfs/objects/batch"),
                ("lfs_put", "PUT", r"/lfs-upload/(?P<oid>[0-9a-f]{64})"),
            ]
            for name, verb, pattern in routes:
                match = re.fullmatch(pattern, path)
                if verb == method and match:
                    body = self._body()
                    if name in state.fail:
                        return self._send(500, {"error": f"fake hub: {name} fails on purpose"})
                    if self.headers.get("Authorization") != f"Bearer {TOKEN}" and name != "lfs_put":
                        return self._send(401, {"error": "Invalid credentials"})
                    return getattr(self, name)(body, **match.groupdict())
            return self._send(404, {"error": f"fake hub: no route for {method} {path}"})

        def do_GET(self) -> None:
            self._route("GET")

        def do_POST(self) -> None:
            self._route("POST")

        def do_PUT(self) -> None:
            self._route("PUT")

        def whoami(self, body: bytes) -> None:
            self._send(200, {"type": "user", "name": USER, "orgs": [{"name": org} for org in ORGS]})

        def create_repo(self, body: bytes) -> None:
            spec = json.loads(body)
            repo = f"{spec.get('organization') or USER}/{spec['name']}"
            if repo in state.repos:
                return self._send(409, {"error": "You already created this model repo"})
            state.repos[repo] = {"private": spec.get("visibility") == "private", "branches": {"main": {}}}
            self._send(200, {"url": f"{base[0]}/{repo}"})

        def validate_yaml(self, body: bytes) -> None:
            """A README.md's front matter: as the Hub does, a base_model that is not a repository id
            (a local path) is refused."""
            front = json.loads(body)["content"].split("---")[1]
            base_model = str(yaml.safe_load(front).get("base_model") or "")
            if base_model.startswith("/") or base_model.count("/") > 1:
                return self._send(400, {"error": f'"base_model" with value "{base_model}" is not valid.'})
            self._send(200, {"errors": [], "warnings": []})

        def branch(self, body: bytes, repo: str, rev: str) -> None:
            branches = state.repos[repo]["branches"]
            if rev in branches:
                return self._send(409, {"error": "Reference already exists"})
            branches[rev] = dict(branches["main"])
            self._send(200)

        def preupload(self, body: bytes, repo: str, rev: str) -> None:
            files = json.loads(body)["files"]
            modes = [
                {
                    "path": f["path"],
                    "uploadMode": "lfs" if f["path"].endswith(".safetensors") else "regular",
                    "shouldIgnore": False,
                }
                for f in files
            ]
            self._send(200, {"files": modes})

        def lfs_batch(self, body: bytes, repo: str) -> None:
            objects = [
                {
                    "oid": o["oid"],
                    "size": o["size"],
                    "actions": {"upload": {"href": f"{base[0]}/lfs-upload/{o['oid']}"}},
                }
                for o in json.loads(body)["objects"]
            ]
            self._send(200, {"transfer": "basic", "objects": objects})

        def lfs_put(self, body: bytes, oid: str) -> None:
            if hashlib.sha256(body).hexdigest() != oid:
                return self._send(400, {"error": "sha256 mismatch"})
            state.lfs[oid] = body
            self._send(200)

        def commit(self, body: bytes, repo: str, rev: str) -> None:
            files = state.repos[repo]["branches"].setdefault(rev, {})
            for line in body.decode().splitlines():
                item = json.loads(line)
                value = item["value"]
                if item["key"] == "file":
                    files[value["path"]] = base64.b64decode(value["content"])
                elif item["key"] == "lfsFile":
                    if value["oid"] not in state.lfs:
                        return self._send(400, {"error": f"LFS object of {value['path']} was never uploaded"})
                    files[value["path"]] = state.lfs[value["oid"]]
            self._send(200, {"commitUrl": f"{base[0]}/{repo}/commit/{'c' * 40}", "commitOid": "c" * 40})

    return Handler


class FakeHub:
    """`with FakeHub() as hub:` serves on 127.0.0.1 at `hub.url` until the block ends."""

    def __init__(self) -> None:
        self.state = FakeHubState()
        base: list[str] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self.state, base))
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        base.append(self.url)
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    def __enter__(self) -> FakeHub:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()

    def files(self, repo: str, revision: str = "main") -> dict[str, bytes]:
        return self.state.repos[repo]["branches"][revision]
