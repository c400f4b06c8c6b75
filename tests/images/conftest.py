"""Real Docker engine and real registry for the images tests, started once per session.

- `docker_engine` (session): the engine at DOCKER_HOST / /var/run/docker.sock when one
  answers; otherwise, as root with Debian's docker.io installed, a private
  `dockerd --iptables=false --ip6tables=false --bridge=none` with its own socket, data
  root and exec root in a temp dir (DOCKER_HOST points at it for the session).
- `registry_server` (session): Debian's docker-registry on 127.0.0.1:<free port>, basic auth
  from an htpasswd file (bcrypt, like `htpasswd -B`), filesystem storage in a temp dir.
- `local_registry`: the registry selected for one test through ECSFLOW_REGISTRY and
  ECSFLOW_REGISTRY_USERNAME / ECSFLOW_REGISTRY_PASSWORD.
- `make_app`: a test app in a temp build context: FROM scratch, /bin/busybox from
  busybox-static, `busybox httpd` serving /www on $PORT (the port ecsflow's smoke test
  passes), as a non-root user.

No image is pulled from anywhere: everything is built FROM scratch.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.servers import free_port

BUSYBOX = Path("/bin/busybox")
INSTALL_HINT = "apt-get install -y docker.io docker-registry busybox-static apache2-utils"


def _engine_answers(host: str | None) -> bool:
    import docker

    try:
        client = docker.DockerClient(base_url=host, timeout=10) if host else docker.from_env(timeout=10)
        client.ping()
        client.close()
        return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def docker_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The DOCKER_HOST URL of a running engine (started here if none answers)."""
    current = os.environ.get("DOCKER_HOST")
    if _engine_answers(current):
        yield current or "unix:///var/run/docker.sock"
        return
    dockerd = shutil.which("dockerd")
    if dockerd is None or os.geteuid() != 0:
        pytest.fail(f"no Docker engine answers and this test run cannot start one (needs root and dockerd: "
                    f"{INSTALL_HINT})")
    # A private engine under a short path (unix socket paths are limited to ~108 bytes).
    root = Path(f"/tmp/ecsflow-dockerd-{os.getpid()}")
    root.mkdir(exist_ok=True)
    host = f"unix://{root}/docker.sock"
    log = open(root / "dockerd.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([dockerd, "--iptables=false", "--ip6tables=false", "--bridge=none",
                             f"--host={host}", f"--data-root={root}/data", f"--exec-root={root}/exec",
                             f"--pidfile={root}/docker.pid"],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 60
    while not _engine_answers(host):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"dockerd did not start: {(root / 'dockerd.log').read_text()[-2000:]}")
        time.sleep(0.2)
    os.environ["DOCKER_HOST"] = host
    try:
        yield host
    finally:
        os.environ.pop("DOCKER_HOST", None)
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()
        shutil.rmtree(root, ignore_errors=True)


@dataclass
class RegistryServer:
    host: str  # 127.0.0.1:PORT
    username: str
    password: str

    def _get(self, path: str, auth: bool = True) -> tuple[int, dict[str, str], bytes]:
        request = urllib.request.Request(f"http://{self.host}/v2/{path}", headers={
            "Accept": "application/vnd.docker.distribution.manifest.v2+json"})
        if auth:
            token = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        try:
            with urllib.request.urlopen(request, timeout=10) as resp:
                return resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read()

    def digest(self, repository: str, tag: str) -> str | None:
        """The manifest digest the registry serves for repository:tag, or None."""
        status, headers, _ = self._get(f"{repository}/manifests/{tag}")
        return headers["docker-content-digest"] if status == 200 else None

    def tags(self, repository: str) -> list[str]:
        status, _, body = self._get(f"{repository}/tags/list")
        return sorted(json.loads(body).get("tags") or []) if status == 200 else []


@pytest.fixture(scope="session")
def registry_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    binary, htpasswd = shutil.which("docker-registry"), shutil.which("htpasswd")
    if binary is None or htpasswd is None:
        pytest.fail(f"docker-registry and htpasswd are needed ({INSTALL_HINT})")
    workdir = tmp_path_factory.mktemp("registry")
    username, password = "ecsflow", secrets.token_urlsafe(12)
    entry = subprocess.run([htpasswd, "-Bbn", username, password], check=True, capture_output=True, text=True)
    (workdir / "htpasswd").write_text(entry.stdout.strip() + "\n")
    port = free_port()
    config = {
        "version": 0.1,
        "log": {"level": "warn", "accesslog": {"disabled": True}},
        "storage": {"filesystem": {"rootdirectory": str(workdir / "data")}, "delete": {"enabled": True}},
        "http": {"addr": f"127.0.0.1:{port}"},
        "auth": {"htpasswd": {"realm": "ecsflow-test", "path": str(workdir / "htpasswd")}},
    }
    (workdir / "config.yml").write_text(yaml.safe_dump(config))
    log = open(workdir / "registry.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([binary, "serve", str(workdir / "config.yml")], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=2)
            except urllib.error.HTTPError as exc:
                if exc.code == 401:
                    break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"docker-registry did not start: {(workdir / 'registry.log').read_text()[-2000:]}")
            time.sleep(0.05)
        yield RegistryServer(f"127.0.0.1:{port}", username, password)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture
def local_registry(registry_server: RegistryServer, docker_engine: str,
                   monkeypatch: pytest.MonkeyPatch) -> RegistryServer:
    """Image pushes of this test go to the local registry (the only local/AWS difference)."""
    monkeypatch.setenv("ECSFLOW_REGISTRY", registry_server.host)
    monkeypatch.setenv("ECSFLOW_REGISTRY_USERNAME", registry_server.username)
    monkeypatch.setenv("ECSFLOW_REGISTRY_PASSWORD", registry_server.password)
    monkeypatch.delenv("ECSFLOW_REGISTRY_CREDENTIALS_BLOCK", raising=False)
    return registry_server


APP_DOCKERFILE = """\
FROM scratch
COPY busybox /bin/busybox
COPY rootfs/ /
COPY www /www
ENV PORT=8080
USER 65534:65534
ENTRYPOINT ["/bin/busybox", "sh", "-c", \
  "echo \\"test app listening on $PORT\\"; {prelude}exec /bin/busybox httpd -f -v -p \\"$PORT\\" -h /www"]
"""


def write_app(directory: Path, *, healthy: bool = True, version: str = "1", prelude: str = "",
              dockerfile: str | None = None, git: bool = True) -> Path:
    """A busybox web app: /www/health answers 200 when `healthy`; `version` changes index.html."""
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copy2(BUSYBOX, directory / "busybox")
    www = directory / "www"
    www.mkdir(exist_ok=True)
    (www / "index.html").write_text(f"<h1>test app {version}</h1>\n")
    # /tmp as Debian has it, 1777 (a writable path on a read-only root starts as the image's copy;
    # COPY of a directory's parent keeps the directory's mode, COPY of the directory does not).
    (directory / "rootfs" / "tmp").mkdir(parents=True, exist_ok=True)
    (directory / "rootfs" / "tmp" / ".keep").write_text("")
    (directory / "rootfs" / "tmp").chmod(0o1777)
    (directory / "rootfs" / "data").mkdir(exist_ok=True)  # writable by anyone, but not a writable path
    (directory / "rootfs" / "data" / ".keep").write_text("")
    (directory / "rootfs" / "data").chmod(0o777)
    if healthy:
        (www / "health").write_text("ok\n")
    else:
        (www / "health").unlink(missing_ok=True)
    (directory / "Dockerfile").write_text(dockerfile or APP_DOCKERFILE.format(prelude=prelude))
    (directory / ".dockerignore").write_text(".git\n")
    if git:
        commit(directory, f"test app {version}")
    return directory


def commit(directory: Path, message: str) -> str:
    env = dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@example.com", GIT_COMMITTER_NAME="t",
               GIT_COMMITTER_EMAIL="t@example.com")
    if not (directory / ".git").exists():
        subprocess.run(["git", "init", "-q", "-b", "main", str(directory)], check=True, env=env)
    subprocess.run(["git", "-C", str(directory), "add", "-A"], check=True, env=env)
    subprocess.run(["git", "-C", str(directory), "commit", "-q", "--allow-empty", "-m", message], check=True, env=env)
    sha = subprocess.run(["git", "-C", str(directory), "rev-parse", "HEAD"], check=True, capture_output=True,
                         text=True).stdout.strip()
    return sha


def stack_yaml(name: str, services: dict[str, dict[str, Any]], **extra: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": name, "env": "dev", "region": "ap-northeast-1",
        "network": {"availability_zones": ["ap-northeast-1a", "ap-northeast-1c"],
                    "public_subnets": ["10.0.0.0/24", "10.0.1.0/24"],
                    "private_subnets": ["10.0.10.0/24", "10.0.11.0/24"]},
        "images": {"smoke_test_timeout_seconds": 5},
        "services": {
            service: {"port": 8080, "health_check_path": "/health", "cpu": 256, "memory": 512, "desired_count": 1,
                      "path_patterns": {"backend": ["/api/*"], "frontend": ["/*"]}.get(service, [f"/{service}/*"]),
                      **settings}
            for service, settings in services.items()
        },
    }
    for key, value in extra.items():
        data[key] = {**data.get(key, {}), **value} if isinstance(value, dict) else value
    return data


@pytest.fixture
def stack_name() -> str:
    """A stack name of its own per test: the registry outlives tests, moto is reset."""
    return f"t{secrets.token_hex(4)}"


@pytest.fixture
def write_stack(tmp_path: Path, stack_name: str) -> Callable[..., Path]:
    def write(services: dict[str, dict[str, Any]], **extra: Any) -> Path:
        path = tmp_path / "stack.yaml"
        path.write_text(yaml.safe_dump(stack_yaml(stack_name, services, **extra), sort_keys=False))
        return path

    return write
