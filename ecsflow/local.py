"""Local stand-ins for the cloud: a moto server (AWS over HTTP) and a Prefect server (SQLite).

Used by `ecsflow demo` (the embedded default) and by the test suite, so both run the
same real servers the same way.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def stop_on_ctrl_c_and_term() -> None:
    """Ctrl+C (SIGINT) and SIGTERM raise KeyboardInterrupt, so the caller's `finally` stops its servers.

    SIGINT is set even when the process was started with it ignored (a background job of a
    non-interactive shell, or of a CI runner): `kill -INT` must still stop it, and the servers it
    starts must not inherit the ignore (an ignored signal survives exec; a handled one does not),
    else each of them waits out its SIGINT before stop() escalates."""
    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, interrupt)


def wait_http(url: str, timeout: float = 60.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the server for {url} exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except Exception as exc:  # any failure means "not yet"
            last = exc
            time.sleep(0.2)
    raise RuntimeError(f"{url} was not ready after {timeout:.0f}s: {last}")


def _bin(name: str) -> str:
    """A console script of this environment (moto_server, prefect), wherever the venv is."""
    candidate = Path(sys.executable).with_name(name)
    return str(candidate) if candidate.exists() else name


class LocalServer:
    """A child process serving HTTP on 127.0.0.1, logging to a file."""

    def __init__(self, argv: list[str], url: str, health: str, log_path: Path, env: dict[str, str],
                 timeout: float) -> None:
        self.url = url
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT, env=env,
                                     start_new_session=True)
        try:
            wait_http(f"{url}{health}", timeout=timeout, proc=self.proc)
        except RuntimeError as exc:
            self.stop()
            raise RuntimeError(f"{exc}; see {log_path}") from None
        except BaseException:  # Ctrl+C while it boots: never leave a server behind
            self.stop()
            raise

    def stop(self) -> None:
        if self.proc.poll() is None:
            # Prefect's server wants a second signal; the whole session goes, uvicorn workers included.
            for sig, wait in ((signal.SIGINT, 5), (signal.SIGTERM, 5), (signal.SIGKILL, 5)):
                try:
                    os.killpg(self.proc.pid, sig)
                    self.proc.wait(wait)
                    break
                except (subprocess.TimeoutExpired, ProcessLookupError):
                    continue
        self._log.close()


class MotoServer(LocalServer):
    """An emulated AWS account (moto in server mode), reached through AWS_ENDPOINT_URL."""

    def __init__(self, log_dir: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        env = dict(os.environ, MOTO_IAM_LOAD_MANAGED_POLICIES="true", MOTO_ACM_VALIDATION_WAIT="0")
        super().__init__([_bin("moto_server"), "-H", "127.0.0.1", "-p", str(self.port)],
                         f"http://127.0.0.1:{self.port}", "/moto-api/", log_dir / f"moto-{self.port}.log",
                         env, timeout=60)

    def reset(self) -> None:
        request = urllib.request.Request(f"{self.url}/moto-api/reset", method="POST", data=b"")
        urllib.request.urlopen(request, timeout=30).close()


class PrefectServer(LocalServer):
    """`prefect server start` with its own SQLite database under `home`."""

    def __init__(self, home: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        home.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false",
                   PREFECT_SERVER_TELEMETRY_ENABLED="false", PREFECT_API_URL="")
        env.pop("PREFECT_API_URL")
        super().__init__([_bin("prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(self.port)],
                         f"http://127.0.0.1:{self.port}", "/api/health", home / "server.log", env, timeout=120)
        self.api_url = f"{self.url}/api"


def prefect_api_healthy(api_url: str) -> bool:
    """Does a Prefect API answer at `api_url` (…/api)? Used to reuse a running server."""
    try:
        with urllib.request.urlopen(f"{api_url}/health", timeout=2):
            return True
    except Exception:
        return False
