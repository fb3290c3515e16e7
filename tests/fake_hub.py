"""A fake Hugging Face hub on loopback: just the endpoints ``huggingface_hub``'s ``create_repo`` and
``upload_folder`` call (repos/create, validate-yaml, preupload, commit), so an upload can be tested for real --
the official client, real HTTP -- without reaching the network.

The preupload answer puts every file in "regular" mode (the hub decides the mode per file; "lfs"
would send the large files to the Xet storage service instead): the files then travel base64-encoded
inside the commit, and arrive here byte for byte.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FakeHub:
    """``with FakeHub(token="hf_x") as hub:`` -> ``hub.endpoint``; ``hub.repos[repo_id]`` holds
    ``{"private": bool, "files": {path: bytes}, "commits": [summary, ...]}``; ``hub.calls`` the
    (method, path) of every request."""

    def __init__(self, token: str = "hf_fake_token"):
        self.token = token
        self.repos: dict[str, dict] = {}
        self.calls: list[tuple[str, str]] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _send(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self):  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                path = self.path.split("?", 1)[0]
                hub.calls.append(("POST", path))
                if self.headers.get("Authorization") != f"Bearer {hub.token}":
                    return self._send(401, {"error": "Invalid credentials in Authorization header"})
                if path == "/api/validate-yaml":  # what upload_folder asks before sending a README.md
                    errors = hub.validate_card(json.loads(body)["content"])
                    return self._send(400 if errors else 200, {"errors": [{"message": e} for e in errors],
                                                               "warnings": []})
                if path == "/api/repos/create":
                    data = json.loads(body)
                    repo_id = f"{data.get('organization') or 'me'}/{data['name']}"
                    if repo_id in hub.repos:
                        return self._send(409, {"error": "You already created this model repo",
                                                "url": f"{hub.endpoint}/{repo_id}"})
                    hub.repos[repo_id] = {"private": data.get("visibility") == "private", "files": {}, "commits": []}
                    return self._send(200, {"url": f"{hub.endpoint}/{repo_id}"})
                m = re.fullmatch(r"/api/models/(.+?/.+?)/(preupload|commit)/([^/]+)", path)
                if not m or m.group(1) not in hub.repos:
                    return self._send(404, {"error": "Repository not found"})
                repo = hub.repos[m.group(1)]
                if m.group(2) == "preupload":
                    files = json.loads(body)["files"]
                    return self._send(200, {"files": [{"path": f["path"], "uploadMode": "regular",
                                                       "shouldIgnore": False} for f in files]})
                for line in body.decode().splitlines():
                    item = json.loads(line)
                    if item["key"] == "header":
                        repo["commits"].append(item["value"]["summary"])
                    elif item["key"] == "file":
                        value = item["value"]
                        assert value["encoding"] == "base64"
                        repo["files"][value["path"]] = base64.b64decode(value["content"])
                    else:
                        return self._send(400, {"error": f"this fake hub takes regular files only ({item['key']})"})
                oid = hashlib.sha1(body).hexdigest()
                return self._send(200, {"commitUrl": f"{hub.endpoint}/{m.group(1)}/commit/{oid}", "commitOid": oid})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @staticmethod
    def validate_card(content: str) -> list[str]:
        """The checks of the hub's metadata validation this fake knows: YAML front matter that parses to
        a mapping, list-valued ``language``/``tags``, and a well-formed ``model-index``."""
        import yaml

        if not content.startswith("---\n"):
            return []
        try:
            meta = yaml.safe_load(content.split("\n---\n", 1)[0][4:])
        except yaml.YAMLError as exc:
            return [f"YAML: {exc}"]
        if not isinstance(meta, dict):
            return ["metadata is not a mapping"]
        errors = [f"{k} must be a list" for k in ("language", "tags") if k in meta and not isinstance(meta[k], list)]
        for entry in meta.get("model-index", []):
            if not entry.get("name") or not isinstance(entry.get("results"), list):
                errors.append("model-index entries need a name and results")
            for result in entry.get("results", []):
                if not {"task", "dataset", "metrics"} <= set(result) or not all(
                        {"type", "value"} <= set(m) for m in result["metrics"]):
                    errors.append("model-index results need task, dataset and metrics with type and value")
        return errors

    def __enter__(self) -> FakeHub:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
