"""A local Hugging Face Hub endpoint for tests: real reads through ``olah``, a minimal write API of our own.

Nothing installable accepts ``create_repo`` and commits offline, so this module is an honest test
double for the write side, and uses a real server for the read side:

* **writes** (ours, FastAPI on 127.0.0.1): ``POST /api/repos/create``,
  ``POST /api/{type}s/{owner}/{name}/preupload/{revision}`` and
  ``POST /api/{type}s/{owner}/{name}/commit/{revision}`` -- exactly what ``huggingface_hub`` 2.4
  calls for ``create_repo`` and ``upload_folder`` / ``create_commit``, plus ``/api/validate-yaml``
  and the Git LFS batch API with "basic" transfers (PUT per object). Binary formats (parquet,
  safetensors, ...) go through LFS as on the Hub, small text files inline in the commit; Xet is not
  implemented (clients get ``HF_HUB_DISABLE_XET=1``). Pushed repositories are stored as git
  repositories, LFS files as plain blobs.
* **reads** (``olah``, PyPI, in offline mode): everything else is forwarded to an ``olah`` process
  that serves those git repositories as a read-only Hub (``/api/models/...``, ``resolve``,
  ``paths-info``, ``tree``...), which is what ``hf_hub_download``, ``from_pretrained`` and
  ``datasets.load_dataset`` use.

Known olah quirks worked around here: a missing file or folder in an existing repo is answered
401 by olah and rewritten to the Hub's ``404 EntryNotFound``; repo info without a revision is
forwarded to ``/revision/main``. Not worked around: a repo literally named ``tree`` confuses olah's
routing of ``/api/{type}s/{owner}/tree/tree/{rev}``; pick another name in tests.

Usage::

    with LocalHub(tmp_path) as hub:
        env = hub.client_env()          # HF_ENDPOINT etc. for a subprocess
        hub.fail_next_commit = "disk full"  # make the next commit fail (tests of failed pushes)

``huggingface_hub`` reads ``HF_ENDPOINT`` when it is imported, so code that should talk to this hub
runs in a subprocess with :meth:`LocalHub.client_env`; :func:`trainers.hub.push_folder` reads
``HF_ENDPOINT`` at call time, so in-process pushes work inside ``with hub.online():``.
"""

import base64
import contextlib
import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

__all__ = ["LocalHub", "free_port"]

_REPO_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
#: Bound on a single commit payload (the double keeps everything in memory).
MAX_COMMIT_BYTES = 512 * 1024 * 1024
_HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "content-encoding", "content-length", "upgrade"}


def _die_with_parent() -> None:
    """Linux: have olah terminated when the process that started it dies, even without cleanup."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        except OSError:
            pass


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for(url: str, timeout: float, process: subprocess.Popen | None = None, log: Path | None = None) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:] if log and log.exists() else ""
            raise RuntimeError(f"the local hub's olah server exited with code {process.returncode}:\n{tail}")
        try:
            httpx.get(url, timeout=1.0)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise TimeoutError(f"the local hub did not answer on {url} within {timeout:.0f} s")


#: Extensions the Hub's default .gitattributes sends through LFS (a subset).
_LFS_SUFFIXES = (
    ".parquet",
    ".safetensors",
    ".bin",
    ".pt",
    ".pth",
    ".arrow",
    ".gguf",
    ".h5",
    ".npy",
    ".npz",
    ".zip",
    ".gz",
    ".msgpack",
    ".model",
)


def _is_lfs(path: str, size: int) -> bool:
    return path.endswith(_LFS_SUFFIXES) or size > 10 * 1024 * 1024


def _missing_file_repo(path: str) -> tuple[str, str] | None:
    """``(repo_id, repo_type)`` when ``path`` names a file or folder (``resolve`` or ``tree``), else ``None``."""
    parts = path.strip("/").split("/")
    if len(parts) >= 6 and parts[0] == "api" and parts[1] in _REPO_TYPES and parts[4] == "tree":
        return f"{parts[2]}/{parts[3]}", _REPO_TYPES[parts[1]]
    repo_type = "model"
    if parts and parts[0] in ("datasets", "spaces"):
        repo_type, parts = _REPO_TYPES[parts[0]], parts[1:]
    if len(parts) >= 4 and parts[2] == "resolve":
        return f"{parts[0]}/{parts[1]}", repo_type
    return None


class LocalHub:
    """Start olah (reads) and the write API on 127.0.0.1; stop both on exit. See the module docstring."""

    def __init__(self, root: str | os.PathLike, *, startup_timeout: float = 60.0, author: str = "tester"):
        self.root = Path(root)
        self.mirrors = self.root / "mirrors"
        self.startup_timeout = startup_timeout
        self.author = author
        self.port = free_port()
        self.olah_port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        #: When set to a string, the next commit is answered with HTTP 503 and this message
        #: (after the upload modes were negotiated), then the flag clears itself.
        self.fail_next_commit: str | None = None
        self.commits: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._olah: subprocess.Popen | None = None
        self._server = None
        self._thread: threading.Thread | None = None

    # ----------------------------------------------------------------------------------- lifecycle
    def __enter__(self) -> "LocalHub":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        import uvicorn

        self.mirrors.mkdir(parents=True, exist_ok=True)
        for kind in _REPO_TYPES:
            (self.mirrors / kind).mkdir(exist_ok=True)
        config = self.root / "olah.toml"
        config.write_text(
            "[basic]\n"
            f'host = "127.0.0.1"\nport = {self.olah_port}\n'
            f'mirror-netloc = "127.0.0.1:{self.port}"\nmirror-lfs-netloc = "127.0.0.1:{self.port}"\n'
            f'repos-path = "{self.root / "olah-cache"}"\n'
            f'mirrors-path = ["{self.mirrors}"]\n'
            # Revalidate every request: repos change under olah as tests push to them.
            "metadata-cache-ttl = 0\n"
            "[accessibility]\noffline = true\n"
        )
        log = self.root / "olah.log"
        with open(log, "wb") as handle:
            self._olah = subprocess.Popen(
                [sys.executable, "-m", "olah.server", "-c", str(config), "--log-path", str(self.root / "olah-logs")],
                cwd=self.root,
                stdout=handle,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
                preexec_fn=_die_with_parent,
            )
        try:
            _wait_for(f"http://127.0.0.1:{self.olah_port}/", self.startup_timeout, self._olah, log)
            server_config = uvicorn.Config(
                self._app(), host="127.0.0.1", port=self.port, log_level="warning", lifespan="off"
            )
            self._server = uvicorn.Server(server_config)
            self._thread = threading.Thread(target=self._server.run, name="local-hub", daemon=True)
            self._thread.start()
            _wait_for(f"{self.endpoint}/_local_hub/health", self.startup_timeout)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._olah is not None and self._olah.poll() is None:
            self._olah.terminate()
            try:
                self._olah.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._olah.kill()
                self._olah.wait(timeout=10)
        self._server = self._thread = self._olah = None

    def client_env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """Environment for a subprocess that should use this hub (online, fresh cache under root)."""
        env = dict(os.environ if base is None else base)
        for key in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
            env.pop(key, None)
        env.update(
            HF_ENDPOINT=self.endpoint,
            HF_HOME=str(self.root / "client-cache"),
            HF_HUB_DISABLE_TELEMETRY="1",
            HF_HUB_DISABLE_XET="1",
            HF_HUB_ETAG_TIMEOUT="30",
            HF_HUB_DOWNLOAD_TIMEOUT="60",
            TOKENIZERS_PARALLELISM="false",
        )
        return env

    @contextlib.contextmanager
    def online(self):
        """Point pushes made in this process at the hub: ``HF_ENDPOINT`` (which
        :func:`trainers.hub.push_folder` reads at call time) and huggingface_hub's offline switch,
        which test suites usually turn on. Both are restored on exit."""
        from huggingface_hub import constants

        previous_endpoint, previous_offline = os.environ.get("HF_ENDPOINT"), constants.HF_HUB_OFFLINE
        previous_xet = constants.HF_HUB_DISABLE_XET
        os.environ["HF_ENDPOINT"] = self.endpoint
        constants.HF_HUB_OFFLINE = False
        constants.HF_HUB_DISABLE_XET = True  # large files go through the LFS batch API the double implements
        try:
            yield self
        finally:
            constants.HF_HUB_OFFLINE = previous_offline
            constants.HF_HUB_DISABLE_XET = previous_xet
            if previous_endpoint is None:
                os.environ.pop("HF_ENDPOINT", None)
            else:
                os.environ["HF_ENDPOINT"] = previous_endpoint

    def repo_path(self, repo_id: str, repo_type: str = "model") -> Path:
        owner, name = repo_id.split("/")
        return self.mirrors / f"{repo_type}s" / owner / name

    # ------------------------------------------------------------------------------------ storage
    def _create(self, repo_type: str, owner: str, name: str, private: bool) -> tuple[bool, Path]:
        import git

        path = self.mirrors / f"{repo_type}s" / owner / name
        if (path / ".git").exists():
            return False, path
        path.mkdir(parents=True, exist_ok=True)
        repo = git.Repo.init(path, initial_branch="main")
        (path / ".gitattributes").write_text("")
        repo.index.add([".gitattributes"])
        self._commit(repo, "initial commit")
        (self.root / "repo-settings.json").touch()
        settings = json.loads((self.root / "repo-settings.json").read_text() or "{}")
        settings[f"{repo_type}s/{owner}/{name}"] = {"private": private}
        (self.root / "repo-settings.json").write_text(json.dumps(settings, indent=1))
        return True, path

    def _commit(self, repo, message: str) -> str:
        import git

        actor = git.Actor(self.author, f"{self.author}@localhost")
        return repo.index.commit(message, author=actor, committer=actor).hexsha

    def _apply_commit(self, repo_type: str, owner: str, name: str, revision: str, lines: list[dict[str, Any]]) -> str:
        import git

        path = self.mirrors / f"{repo_type}s" / owner / name
        if not (path / ".git").exists():
            raise KeyError(f"{repo_type} repo {owner}/{name} does not exist")
        if revision != "main":
            raise ValueError(f"the local hub only keeps the 'main' branch, got revision {revision!r}")
        header = next((item["value"] for item in lines if item.get("key") == "header"), None)
        if header is None:
            raise ValueError("commit payload has no header line")
        repo = git.Repo(path)
        added, removed = [], []
        for item in lines:
            key, value = item.get("key"), item.get("value", {})
            if key == "header":
                continue
            rel = value.get("path", "")
            target = (path / rel).resolve()
            if (
                rel.startswith("/")
                or ".." in Path(rel).parts
                or path.resolve() not in target.parents
                or ".git" in Path(rel).parts
            ):
                raise ValueError(f"refusing path {rel!r} outside the repository")
            if key == "file":
                if value.get("encoding", "base64") != "base64":
                    raise ValueError(f"{rel}: unsupported encoding {value.get('encoding')!r}")
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(base64.b64decode(value["content"]))
                added.append(rel)
            elif key == "lfsFile":
                # Stored as the file itself (not a pointer) so that olah serves it as a plain blob.
                stored = self.root / "lfs" / str(value.get("oid", ""))
                if not stored.is_file():
                    raise ValueError(f"{rel}: LFS object {value.get('oid')} was never uploaded")
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(stored, target)
                added.append(rel)
            elif key in ("deletedFile", "deletedFolder"):
                if target.is_dir():
                    shutil.rmtree(target)
                elif target.exists():
                    target.unlink()
                removed.append(rel)
            else:
                raise ValueError(
                    f"the local hub does not implement commit operation {key!r} (only files, LFS files and deletions)"
                )
        if added:
            repo.index.add(added)
        if removed:
            repo.git.add("-A", "--", *removed)
        message = header.get("summary") or "commit"
        if header.get("description"):
            message += "\n\n" + header["description"]
        sha = self._commit(repo, message)
        self.commits.append({"repo": f"{repo_type}s/{owner}/{name}", "sha": sha, "files": added, "deleted": removed})
        return sha

    # -------------------------------------------------------------------------------------- app
    def _app(self):
        import httpx
        from fastapi import FastAPI, Request
        from fastapi.responses import JSONResponse, Response

        app = FastAPI(title="trainers local hub (test double)")
        upstream = f"http://127.0.0.1:{self.olah_port}"
        client = httpx.AsyncClient(base_url=upstream, timeout=120.0, follow_redirects=False)

        def error(status: int, message: str) -> JSONResponse:
            return JSONResponse({"error": message}, status_code=status, headers={"X-Error-Message": message})

        def parse_repo(kind: str, owner: str, name: str):
            if kind not in _REPO_TYPES:
                return None, error(404, f"unknown repo type {kind!r}")
            if not (_NAME.match(owner) and _NAME.match(name)):
                return None, error(400, f"invalid repo id {owner}/{name}")
            return _REPO_TYPES[kind], None

        @app.get("/_local_hub/health")
        async def health():
            return {"ok": True}

        @app.post("/api/repos/create")
        async def create_repo(request: Request):
            body = await request.json()
            repo_type = body.get("type") or "model"
            owner, name = body.get("organization"), body.get("name")
            if repo_type not in _REPO_TYPES.values():
                return error(400, f"unknown repo type {repo_type!r}")
            if not owner:
                return error(400, "the local hub needs repo ids with an owner ('owner/name')")
            if not (_NAME.match(owner) and name and _NAME.match(name)):
                return error(400, f"invalid repo id {owner}/{name}")
            with self._lock:
                created, _ = self._create(
                    repo_type, owner, name, body.get("visibility") == "private" or bool(body.get("private"))
                )
            prefix = "" if repo_type == "model" else f"{repo_type}s/"
            url = f"{self.endpoint}/{prefix}{owner}/{name}"
            if not created:
                return JSONResponse({"error": "You already created this repo", "url": url}, status_code=409)
            return {"url": url, "name": f"{owner}/{name}", "id": f"{owner}/{name}"}

        @app.post("/api/validate-yaml")
        async def validate_yaml(request: Request):
            # The real Hub checks the card metadata against its schemas; here we check what we can
            # offline: the YAML parses and huggingface_hub's card classes accept it.
            from huggingface_hub import DatasetCard, ModelCard

            body = await request.json()
            card_class = DatasetCard if body.get("repoType") == "dataset" else ModelCard
            try:
                card_class(body.get("content", ""), ignore_metadata_errors=False)
            except Exception as exc:  # noqa: BLE001 - any parse failure is a validation error
                return JSONResponse(
                    {"errors": [{"message": f"{type(exc).__name__}: {exc}"}], "warnings": []}, status_code=400
                )
            return {"errors": [], "warnings": []}

        @app.post("/api/{kind}/{owner}/{name}/preupload/{revision:path}")
        async def preupload(kind: str, owner: str, name: str, revision: str, request: Request):
            repo_type, failure = parse_repo(kind, owner, name)
            if failure:
                return failure
            if not self.repo_path(f"{owner}/{name}", repo_type).exists():
                return error(404, f"Repository not found: {repo_type} {owner}/{name}")
            body = await request.json()
            files = [
                {
                    "path": f["path"],
                    "uploadMode": "lfs" if _is_lfs(f["path"], f.get("size", 0)) else "regular",
                    "shouldIgnore": False,
                }
                for f in body.get("files", [])
            ]
            return {"files": files}

        @app.post("/{repo:path}.git/info/lfs/objects/batch")
        async def lfs_batch(repo: str, request: Request):
            # Git LFS batch API, "basic" transfer: one PUT per object to our own storage.
            body = await request.json()
            if body.get("operation") != "upload":
                return error(400, "the local hub only implements LFS uploads")
            objects = []
            for item in body.get("objects", []):
                oid, size = str(item.get("oid", "")), int(item.get("size", 0))
                if not re.fullmatch(r"[0-9a-f]{64}", oid):
                    return error(400, f"bad LFS oid {oid!r}")
                entry: dict[str, Any] = {"oid": oid, "size": size}
                if not (self.root / "lfs" / oid).exists():
                    entry["actions"] = {"upload": {"href": f"{self.endpoint}/_local_hub/lfs/{oid}", "header": {}}}
                objects.append(entry)
            return {"transfer": "basic", "objects": objects}

        @app.put("/_local_hub/lfs/{oid}")
        async def lfs_put(oid: str, request: Request):
            if not re.fullmatch(r"[0-9a-f]{64}", oid):
                return error(400, f"bad LFS oid {oid!r}")
            digest, raw = hashlib.sha256(), bytearray()
            async for chunk in request.stream():
                raw += chunk
                digest.update(chunk)
                if len(raw) > MAX_COMMIT_BYTES:
                    return error(413, f"object larger than the local hub's limit of {MAX_COMMIT_BYTES} bytes")
            if digest.hexdigest() != oid:
                return error(400, f"LFS object content does not match its oid {oid}")
            store = self.root / "lfs"
            store.mkdir(exist_ok=True)
            temporary = store / f".{oid}.tmp"
            temporary.write_bytes(bytes(raw))
            os.replace(temporary, store / oid)
            return Response(status_code=200)

        @app.post("/api/{kind}/{owner}/{name}/commit/{revision:path}")
        async def commit(kind: str, owner: str, name: str, revision: str, request: Request):
            repo_type, failure = parse_repo(kind, owner, name)
            if failure:
                return failure
            raw = b""
            async for chunk in request.stream():
                raw += chunk
                if len(raw) > MAX_COMMIT_BYTES:
                    return error(413, f"commit larger than the local hub's limit of {MAX_COMMIT_BYTES} bytes")
            if self.fail_next_commit is not None:
                message, self.fail_next_commit = self.fail_next_commit, None
                # 422 rather than 5xx: huggingface_hub retries 5xx with backoff, which only slows tests.
                return error(422, f"commit rejected by the local hub: {message}")
            try:
                lines = [json.loads(line) for line in raw.splitlines() if line.strip()]
                with self._lock:
                    sha = self._apply_commit(repo_type, owner, name, revision, lines)
            except KeyError as exc:
                return error(404, f"Repository not found: {exc.args[0]}")
            except (ValueError, json.JSONDecodeError) as exc:
                return error(400, str(exc))
            prefix = "" if repo_type == "model" else f"{repo_type}s/"
            return {
                "commitUrl": f"{self.endpoint}/{prefix}{owner}/{name}/commit/{sha}",
                "commitOid": sha,
                "success": True,
            }

        @app.api_route("/{path:path}", methods=["GET", "HEAD", "POST"])
        async def forward(path: str, request: Request):
            # Everything that is not a write goes to olah. olah serves repo info only per revision
            # (/api/datasets/o/n/revision/main); repo_info without a revision means main.
            parts = path.strip("/").split("/")
            if len(parts) == 4 and parts[0] == "api" and parts[1] in _REPO_TYPES:
                path = f"{path.rstrip('/')}/revision/main"
            upstream_request = client.build_request(
                request.method,
                "/" + path,
                params=request.query_params,
                headers={k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")},
                content=await request.body(),
            )
            answer = await client.send(upstream_request)
            missing = _missing_file_repo(path)
            if answer.status_code in (401, 404) and missing and self.repo_path(*missing).exists():
                # olah answers a missing file in an existing repo with 401 (= repository not found),
                # which makes transformers give up instead of trying its fallbacks; the Hub says
                # 404 EntryNotFound, so say that.
                return Response(
                    content=b"Entry not found",
                    status_code=404,
                    headers={"X-Error-Code": "EntryNotFound", "X-Error-Message": "Entry not found"},
                )
            # A HEAD answer has no body, so its Content-Length (the file size clients read) must pass through.
            dropped = _HOP_HEADERS - ({"content-length"} if request.method == "HEAD" else set())
            headers = {k: v for k, v in answer.headers.items() if k.lower() not in dropped}
            return Response(content=answer.content, status_code=answer.status_code, headers=headers)

        return app


def main(argv: list[str] | None = None) -> None:
    """``python -m trainers.testing.hub ROOT``: run a local hub in the foreground until Ctrl-C."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("root", help="folder holding the pushed repositories")
    args = parser.parse_args(argv)
    import signal

    def stop(*_):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        with LocalHub(args.root) as hub:
            print(f"local hub on {hub.endpoint}; export HF_ENDPOINT={hub.endpoint}", flush=True)
            while True:
                time.sleep(3600)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
