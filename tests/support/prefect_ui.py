"""Prefect's own UI, rendered by headless Chromium.

The test session's Prefect server runs with its UI off (it boots faster). `serve_ui` serves the
UI bundle that ships inside the prefect package, exactly as `prefect server start` serves it
(static files, the SPA's index.html for every other path, and `/ui-settings` naming the API),
pointed at the session server's API, which allows cross-origin calls by default. So the
browser runs the real UI against the real server; only the static file server is ours.

`dump_dom` runs Debian's chromium headless (flags measured in docs: no sandbox as root, no
GPU, no background networking) and returns the DOM after the page's scripts have had a
virtual-time budget to fetch and render.
"""

from __future__ import annotations

import asyncio
import json
import mimetypes
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

CHROMIUM = "chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--hide-scrollbars"]


def ui_bundle() -> Path:
    import prefect

    # The built copy (`UI_SERVE_BASE` "/"): what a server started with default settings serves at /.
    built = Path(prefect.__ui_static_subpath__)
    return built if (built / "index.html").is_file() else Path(prefect.__ui_static_path__)


@contextmanager
def serve_ui(api_url: str) -> Iterator[str]:
    """Serve Prefect's UI on a free local port, talking to `api_url`; yields the UI's base URL."""
    root = ui_bundle().resolve()
    settings = json.dumps({"api_url": api_url, "csrf_enabled": False, "auth": None, "flags": [],
                           "default_ui": "v1", "available_uis": ["v1"], "v1_base_url": "/",
                           "v2_base_url": None}).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/ui-settings":
                self._send(settings, "application/json")
                return
            target = (root / path.lstrip("/")).resolve()
            if not target.is_file() or root not in target.parents:
                target = root / "index.html"  # the SPA routes every other path itself
            kind = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
            self._send(target.read_bytes(), kind)

        def _send(self, body: bytes, kind: str) -> None:
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads, server.block_on_close = True, False  # no join of idle keep-alive handlers at exit
    thread = threading.Thread(target=server.serve_forever, name="prefect-ui", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def chromium(args: list[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    with tempfile.TemporaryDirectory(prefix="ecsflow-chromium-") as profile:
        return subprocess.run([CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
                              capture_output=True, text=True, timeout=timeout, check=False)


def dump_dom(url: str, budget_ms: int = 10_000) -> str:
    done = chromium([f"--virtual-time-budget={budget_ms}", "--dump-dom", url])
    if done.returncode != 0 or not done.stdout:
        raise RuntimeError(f"chromium could not render {url} (exit {done.returncode}): {done.stderr[-2000:]}")
    return done.stdout


def screenshot(url: str, out: Path, size: str = "1440,900", budget_ms: int = 10_000) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    done = chromium([f"--virtual-time-budget={budget_ms}", f"--window-size={size}", f"--screenshot={out}", url])
    if done.returncode != 0 or not out.is_file():
        raise RuntimeError(f"chromium could not screenshot {url} (exit {done.returncode}): {done.stderr[-2000:]}")
    return out


def latest_run_and_artifact(flow_name: str, artifact_key: str) -> tuple[Any, Any]:
    """The latest run of the flow and the latest version of the artifact, from the Prefect API
    (PREFECT_API_URL): what a page of the UI is asked to show."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey, FlowFilter, FlowFilterName
    from prefect.client.schemas.sorting import FlowRunSort

    async def read() -> tuple[Any, Any]:
        async with get_client() as client:
            runs = await client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=[flow_name])),
                                               sort=FlowRunSort.START_TIME_DESC, limit=1)
            artifacts = await client.read_latest_artifacts(
                artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[artifact_key])))
            return runs[0], artifacts[0]

    return asyncio.run(read())
