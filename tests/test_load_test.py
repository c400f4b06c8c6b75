"""The load test against a real local HTTP server standing in for the stack's load balancer."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from ecsflow.cli import main
from flows.load_test import LoadTestRun, load_test_flow
from tasks.loadgen import ForeignTarget, percentile, resolve_target
from tests.conftest import LIBRARY_STACK


class App(ThreadingHTTPServer):
    daemon_threads = True
    hits: Counter[str]


class Handler(BaseHTTPRequestHandler):
    server: App

    def do_GET(self) -> None:
        self.server.hits[self.path] += 1
        if self.path == "/slow":
            time.sleep(0.05)
        status = 500 if self.path == "/boom" else 200
        body = b'{"status":"ok"}' if status == 200 else b"boom"
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def app() -> Iterator[App]:
    server = App(("127.0.0.1", 0), Handler)
    server.hits = Counter()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def stack_for(tmp_path: Path, url: str, **load_test: object) -> Path:
    data = yaml.safe_load(LIBRARY_STACK.read_text())
    data["load_balancer"]["public_url"] = url
    data["backup"]["load_test"] = {"duration_seconds": 20, "requests": 200, "concurrency": 8,
                                   "path": "/api/health", **load_test}
    path = tmp_path / "library.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_only_the_stacks_own_url_is_a_target() -> None:
    base = "http://127.0.0.1:8080"
    assert resolve_target(base, "/api/health") == "http://127.0.0.1:8080/api/health"
    assert resolve_target(base + "/", "/", "http://127.0.0.1:8080/books?page=2") == "http://127.0.0.1:8080/books?page=2"
    assert resolve_target("https://library.example.com", "/") == "https://library.example.com/"
    assert resolve_target("https://library.example.com", "/", "https://LIBRARY.example.com:443/x")
    for foreign in ("http://example.org/", "http://127.0.0.1:8081/", "https://127.0.0.1:8080/",
                    "http://127.0.0.1:8080@evil.example/", "http://user@127.0.0.1:8080/"):
        with pytest.raises(ForeignTarget, match="refusing to load-test"):
            resolve_target(base, "/", foreign)
    with pytest.raises(ForeignTarget, match="refusing"):
        resolve_target("https://lib.example.com/app", "/", "https://lib.example.com/other")
    with pytest.raises(ForeignTarget, match=r"no load_balancer\.public_url"):
        resolve_target(None, "/")
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.0 and percentile([1.0, 2.0, 3.0, 4.0], 99) == 4.0


@pytest.mark.prefect
def test_load_test_measures_and_compares_with_the_previous_run(app: App, tmp_path: Path) -> None:
    base = f"http://127.0.0.1:{app.server_address[1]}"
    path = stack_for(tmp_path, base)
    before = app.hits["/api/health"]

    first = load_test_flow(LoadTestRun(stack_file=str(path)))

    assert app.hits["/api/health"] - before == first["requests"] == 200  # bounded by the request count
    assert first["errors"] == 0 and first["error_rate"] == 0.0 and first["statuses"] == {"200": 200}
    assert 0 < first["p50_ms"] <= first["p95_ms"] <= first["p99_ms"] <= first["max_ms"]
    assert first["throughput_rps"] > 0

    # a failing page: every request is an error, and the run is compared with the one before
    second = load_test_flow(LoadTestRun(stack_file=str(path), url=f"{base}/boom", requests=40))
    assert second["requests"] == 40 and second["error_rate"] == 1.0 and second["statuses"] == {"500": 40}
    assert second["previous"]["requests"] == 200 and second["previous"]["error_rate"] == 0.0

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as prefect:
        found = prefect.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(
            any_=["load-test-library-prod"])))
    markdown = sorted(found, key=lambda a: a.created)[-1].data
    assert "| error_rate | 1.0 | 0.0 | new |" in markdown and "| p95_ms |" in markdown


@pytest.mark.prefect
def test_load_test_stops_at_its_time_bound(app: App, tmp_path: Path) -> None:
    path = stack_for(tmp_path, f"http://127.0.0.1:{app.server_address[1]}", path="/slow", duration_seconds=1,
                     requests=1_000_000, concurrency=4)
    started = time.monotonic()
    result = load_test_flow(LoadTestRun(stack_file=str(path)))
    assert result["duration_seconds"] < 1.5 and time.monotonic() - started < 10
    assert 4 <= result["requests"] < 1_000 and result["errors"] == 0


def test_cli_refuses_a_foreign_url_and_sends_nothing(app: App, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    path = stack_for(tmp_path, f"http://127.0.0.1:{app.server_address[1]}")
    total = sum(app.hits.values())
    assert main(["load-test", "--stack", str(path), "--url", "http://example.org/"]) == 2
    assert "refusing to load-test http://example.org/" in capsys.readouterr().err
    assert sum(app.hits.values()) == total
