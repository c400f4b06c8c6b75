"""Real local servers for the tests: a moto server (AWS over HTTP), a Prefect server, helpers."""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

from ecsflow.local import free_port, wait_http


class MotoServer:
    """moto's server in its own process, on a free port (see moto_launcher.py)."""

    def __init__(self, log_dir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # No default AMIs: nothing here runs EC2 instances, and loading moto's ~2,700 AMIs (with a
        # volume and a snapshot each) costs ~0.4 s of CPU per region touched after every reset.
        env = dict(os.environ, MOTO_IAM_LOAD_MANAGED_POLICIES="true", MOTO_ACM_VALIDATION_WAIT="0",
                   MOTO_EC2_LOAD_DEFAULT_AMIS="false")
        launcher = Path(__file__).with_name("moto_launcher.py")
        self.log = open(log_dir / f"moto-{self.port}.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen([sys.executable, str(launcher), "-H", "127.0.0.1", "-p", str(self.port)],
                                     stdout=self.log, stderr=subprocess.STDOUT, env=env)
        wait_http(f"{self.url}/moto-api/", proc=self.proc)

    def reset(self) -> None:
        req = urllib.request.Request(f"{self.url}/moto-api/reset", method="POST", data=b"")
        urllib.request.urlopen(req, timeout=30).close()

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "ecsflow-tests"


def prefect_db_template(prefect_bin: Path, env: dict[str, str], log: Path) -> Path | None:
    """A SQLite database already migrated to this Prefect version's schema, kept in the user's
    cache. Starting the server on a copy saves the ~7 s of migrations; it still checks the
    schema at start. None (start on an empty database) if it cannot be made."""
    version = importlib.metadata.version("prefect")
    template = _cache_dir() / f"prefect-{version}.db"
    if template.exists():
        return template
    try:
        template.parent.mkdir(parents=True, exist_ok=True)
        partial = template.with_name(f"{template.name}.{os.getpid()}.partial")
        partial.unlink(missing_ok=True)
        db_env = dict(env, PREFECT_API_DATABASE_CONNECTION_URL=f"sqlite+aiosqlite:///{partial}")
        with open(log, "ab") as out:
            done = subprocess.run([str(prefect_bin), "server", "database", "upgrade", "-y"], env=db_env,
                                  stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, timeout=300)
        if done.returncode != 0 or not partial.exists():
            partial.unlink(missing_ok=True)
            return None
        os.replace(partial, template)
        return template
    except (OSError, subprocess.SubprocessError):
        return None


class PrefectServer:
    """`prefect server start` in its own process group, on a free port, with a temporary
    PREFECT_HOME and SQLite database, analytics and UI off.

    `start()` returns at once (the server takes 12-20 s to boot on two cores) so the boot
    can overlap other work; `wait_ready()` blocks until `/api/health` answers."""

    def __init__(self, workdir: Path, ui: bool = False) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.api_url = f"{self.url}/api"
        self.log_path = workdir / "prefect-server.log"
        self.db_path = workdir / "prefect.db"
        self.ui = ui
        self.proc: subprocess.Popen[bytes] | None = None
        self.startup_seconds: float | None = None
        self._started_at = 0.0
        self._boot: threading.Thread | None = None
        self._boot_error: BaseException | None = None
        self._stopping = False

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if k not in ("PREFECT_API_URL", "PREFECT_API_KEY", "PREFECT_PROFILE")}
        env.update(
            PREFECT_HOME=str(self.workdir / "home"),
            PREFECT_API_DATABASE_CONNECTION_URL=f"sqlite+aiosqlite:///{self.db_path}",
            PREFECT_SERVER_ANALYTICS_ENABLED="false",
            PREFECT_SERVER_UI_ENABLED="true" if self.ui else "false",
            PREFECT_SERVER_LOGGING_LEVEL="WARNING",
            # Services no test relies on, each a loop competing for the server's event loop and its
            # SQLite file: no test waits for a scheduled run (the schedules are read back as
            # definitions), pauses a run, leases task runs, or watches workers go offline or runs go late.
            PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED="false",
            PREFECT_SERVER_SERVICES_LATE_RUNS_ENABLED="false",
            PREFECT_SERVER_SERVICES_PAUSE_EXPIRATIONS_ENABLED="false",
            PREFECT_SERVER_SERVICES_REPOSSESSOR_ENABLED="false",
            PREFECT_SERVER_SERVICES_FOREMAN_ENABLED="false",
        )
        return env

    def start(self) -> PrefectServer:
        if self._boot is None:
            self._started_at = time.monotonic()
            self._boot = threading.Thread(target=self._launch, name="prefect-server-boot", daemon=True)
            self._boot.start()
        return self

    def _launch(self) -> None:
        try:
            env = self._env()
            prefect = Path(sys.executable).with_name("prefect")
            template = prefect_db_template(prefect, env, self.log_path)
            if template is not None:
                shutil.copyfile(template, self.db_path)
            if self._stopping:
                return
            with open(self.log_path, "ab") as log:
                self.proc = subprocess.Popen(
                    [str(prefect), "server", "start", "--host", "127.0.0.1", "--port", str(self.port)],
                    stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                    start_new_session=True)
        except BaseException as exc:  # reported by wait_ready()
            self._boot_error = exc

    def wait_ready(self, timeout: float = 180.0) -> PrefectServer:
        self.start()
        assert self._boot is not None
        deadline = time.monotonic() + timeout
        self._boot.join(timeout)
        if self._boot_error is not None:
            raise RuntimeError(f"Prefect server could not start: {self._boot_error}") from self._boot_error
        if self.proc is None:
            raise RuntimeError("Prefect server was not started (stopped during boot?)")
        try:
            wait_http(f"{self.api_url}/health", timeout=max(1.0, deadline - time.monotonic()), proc=self.proc)
        except RuntimeError as exc:
            tail = self.log_path.read_text(errors="replace")[-3000:] if self.log_path.exists() else ""
            raise RuntimeError(f"{exc}\n--- {self.log_path} (tail) ---\n{tail}") from exc
        if self.startup_seconds is None:
            self.startup_seconds = time.monotonic() - self._started_at
        return self

    def stop(self) -> None:
        """SIGINT to the server's process group, SIGKILL if it is still there after 15 s."""
        self._stopping = True
        if self._boot is not None:
            self._boot.join(330)
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        for sig, wait in ((signal.SIGINT, 15.0), (signal.SIGKILL, 10.0)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(wait)
                break
            except subprocess.TimeoutExpired:
                continue
        # Uvicorn children (if any) share the group; make sure none outlives the session.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
