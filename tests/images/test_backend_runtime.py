"""The backend image's runtime, without the image: its entrypoint's supervision of PHP-FPM and
nginx (with stand-in programs), and its PHP-FPM pool, php.ini and OPcache settings behind its
nginx config, served by Debian's php-fpm and nginx.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

from tests.conftest import ROOT
from tests.images.test_nginx import NGINX, install

BACKEND = ROOT / "docker" / "backend"
ENTRYPOINT = BACKEND / "entrypoint.sh"
PHP_FPM = shutil.which("php-fpm8.2") or shutil.which("php-fpm")

STUB = """#!/usr/bin/env python3
# Stand-in for {name}: records its arguments and signals, runs until QUIT (or dies if told to).
# (Python, not sh: a background job of a non-interactive shell starts with QUIT ignored, which
# a shell script cannot undo but a program such as nginx or php-fpm, or this one, can.)
import os, signal, sys, time
log = open(os.environ["STUB_LOG"], "a")
print("{name} " + " ".join(sys.argv[1:]), file=log, flush=True)
if "{name}" == "php":
    sys.exit(2 if os.environ.get("STUB_ARTISAN_FAILS") == "1" else 0)
def quit_(signum, frame):
    print("{name} got QUIT", file=log, flush=True)
    sys.exit(0)
signal.signal(signal.SIGQUIT, quit_)
dies_after = float(os.environ.get("STUB_FPM_DIES_AFTER", "0")) if "{name}" == "php-fpm" else 0
started = time.monotonic()
while not dies_after or time.monotonic() - started < dies_after:
    time.sleep(0.05)
sys.exit(70)
"""


def stub_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name in ("php", "php-fpm", "nginx"):
        path = bin_dir / name
        path.write_text(STUB.format(name=name))
        path.chmod(0o755)
    template = tmp_path / "default.conf.template"
    template.write_text("server { listen ${PORT}; }\n")
    return {"PATH": f"{bin_dir}:/usr/local/bin:/usr/bin:/bin", "STUB_LOG": str(tmp_path / "calls.log"), "PORT": "9123",
            "NGINX_TEMPLATE": str(template), "NGINX_CONF_DIR": str(tmp_path / "conf"), **extra}


def calls(tmp_path: Path) -> list[str]:
    log = tmp_path / "calls.log"
    return log.read_text().splitlines() if log.exists() else []


def wait_for(predicate: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_entrypoint_renders_the_port_caches_laravel_and_stops_gracefully_on_sigterm(tmp_path: Path) -> None:
    proc = subprocess.Popen(["sh", str(ENTRYPOINT)], env=stub_env(tmp_path), stderr=subprocess.PIPE)
    wait_for(lambda: {c.split()[0] for c in calls(tmp_path)} == {"php", "php-fpm", "nginx"})
    assert (tmp_path / "conf" / "default.conf").read_text() == "server { listen 9123; }\n"
    assert calls(tmp_path)[:4] == ["php artisan config:cache", "php artisan route:cache",
                                   "php artisan event:cache", "php artisan view:cache"]
    assert "php-fpm --nodaemonize --force-stderr" in calls(tmp_path)
    assert "nginx -g daemon off;" in calls(tmp_path)

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(10) == 0
    assert {"php-fpm got QUIT", "nginx got QUIT"} <= set(calls(tmp_path))


def test_entrypoint_exits_1_and_stops_nginx_when_php_fpm_dies(tmp_path: Path) -> None:
    proc = subprocess.Popen(["sh", str(ENTRYPOINT)], env=stub_env(tmp_path, STUB_FPM_DIES_AFTER="0.5"),
                            stderr=subprocess.PIPE, text=True)
    assert proc.wait(15) == 1
    assert "nginx got QUIT" in calls(tmp_path)
    assert "php-fpm or nginx exited on its own" in (proc.stderr.read() if proc.stderr else "")


def test_entrypoint_does_not_start_when_laravel_caching_fails(tmp_path: Path) -> None:
    proc = subprocess.run(["sh", str(ENTRYPOINT)], env=stub_env(tmp_path, STUB_ARTISAN_FAILS="1"), timeout=15)
    assert proc.returncode == 2
    assert not [c for c in calls(tmp_path) if c.startswith(("php-fpm", "nginx"))]


def test_entrypoint_can_skip_the_caches(tmp_path: Path) -> None:
    proc = subprocess.Popen(["sh", str(ENTRYPOINT)], env=stub_env(tmp_path, APP_CACHE_AT_START="0"))
    wait_for(lambda: {c.split()[0] for c in calls(tmp_path)} == {"php-fpm", "nginx"})
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(10) == 0
    assert not [c for c in calls(tmp_path) if c.startswith("php ")]


def test_entrypoint_runs_a_given_command_instead_of_the_web_server(tmp_path: Path) -> None:
    # ECS's one-off migration task overrides the command: `php artisan migrate --force`.
    done = subprocess.run(["sh", str(ENTRYPOINT), "php", "artisan", "migrate", "--force"],
                          env=stub_env(tmp_path), timeout=10)
    assert done.returncode == 0
    assert calls(tmp_path) == ["php artisan migrate --force"]


FRONT_CONTROLLER = """<?php
// Stands in for Laravel's public/index.php: answers /api/health with what the runtime looks like.
header('Content-Type: application/json');
$uri = parse_url($_SERVER['REQUEST_URI'], PHP_URL_PATH);
if ($uri !== '/api/health') { http_response_code(404); echo '{}'; exit; }
$status = function_exists('opcache_get_status') ? opcache_get_status(false) : false;
echo json_encode([
    'status' => 'ok',
    'opcache' => $status !== false && $status['opcache_enabled'],
    'validate_timestamps' => ini_get('opcache.validate_timestamps'),
    'memory_consumption' => ini_get('opcache.memory_consumption'),
    'expose_php' => ini_get('expose_php'),
    'display_errors' => ini_get('display_errors'),
    'memory_limit' => ini_get('memory_limit'),
    'env_marker' => getenv('APP_MARKER'),
    'query' => $_GET,
]);
"""


def test_nginx_php_fpm_pool_and_opcache_settings_serve_the_api(tmp_path: Path) -> None:
    # scripts/test installs both; missing ones are a broken setup, not a reason to skip.
    assert PHP_FPM is not None and Path(NGINX).exists(), "needs php8.2-fpm and nginx-light (scripts/test installs them)"
    public = tmp_path / "public"
    public.mkdir()
    (public / "index.php").write_text(FRONT_CONTROLLER)
    work = tmp_path / "nginx"
    main, port = install(BACKEND, work, public)
    sock_dir = work / "tmp"  # the image's /tmp, as install() maps it

    pool = (BACKEND / "php" / "www.conf").read_text().replace("/tmp/", f"{sock_dir}/")
    pool += "\n; test only: the image runs as www-data; here root runs it\nuser = root\ngroup = root\n"
    (tmp_path / "pool.conf").write_text(pool)
    (tmp_path / "php-fpm.conf").write_text(
        f"[global]\npid = {tmp_path}/fpm.pid\nerror_log = {tmp_path}/fpm.log\ndaemonize = no\n"
        f"include = {tmp_path}/pool.conf\n")
    ini = tmp_path / "php.ini"
    ini.write_text((BACKEND / "php" / "app.ini").read_text() + "\n" + (BACKEND / "php" / "opcache.ini").read_text())

    test = subprocess.run([PHP_FPM, "-t", "-R", "-y", str(tmp_path / "php-fpm.conf"), "-c", str(ini)],
                          capture_output=True, text=True)
    assert test.returncode == 0, test.stdout + test.stderr

    fpm = subprocess.Popen([PHP_FPM, "-F", "-R", "-y", str(tmp_path / "php-fpm.conf"), "-c", str(ini)],
                           env=dict(os.environ, APP_MARKER="from-the-task-environment"),
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    web = subprocess.Popen([NGINX, "-c", str(main), "-g", "daemon off; user root;"],
                           stdout=open(tmp_path / "nginx.log", "wb"), stderr=subprocess.STDOUT)  # noqa: SIM115
    try:
        wait_for(lambda: (sock_dir / "php-fpm.sock").exists())
        url = f"http://127.0.0.1:{port}/api/health?probe=1"
        deadline = time.monotonic() + 10
        while True:
            try:
                with urllib.request.urlopen(url, timeout=5) as resp:
                    body, headers = json.loads(resp.read()), {k.lower(): v for k, v in resp.headers.items()}
                break
            except OSError:
                assert time.monotonic() < deadline, (tmp_path / "nginx.log").read_text()
                time.sleep(0.1)
    finally:
        web.terminate()
        fpm.terminate()
        web.wait(10)
        fpm.wait(10)

    assert body["status"] == "ok" and body["query"] == {"probe": "1"}
    assert body["opcache"] is True
    assert body["validate_timestamps"] == "0" and body["memory_consumption"] == "192"
    assert body["expose_php"] in ("", "0") and body["display_errors"] in ("", "0")
    assert body["memory_limit"] == "256M"
    assert body["env_marker"] == "from-the-task-environment", "clear_env = no: workers see the task's env"
    assert "x-powered-by" not in headers
    assert headers["content-type"] == "application/json"
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["content-security-policy"].startswith("default-src 'none'")
    log = [json.loads(line) for line in (tmp_path / "nginx.log").read_text().splitlines() if line.startswith("{")]
    assert log and log[-1]["uri"] == "/api/health?probe=1" and log[-1]["status"] == 200
