"""The images' nginx configs, served for real by Debian's nginx.

The configs are the files the Dockerfiles copy; only the paths that differ between the
image and this machine are rewritten (config dir, document root, /tmp). The template's
${PORT} is rendered as the images' entrypoints render it.
"""

from __future__ import annotations

import gzip
import json
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.support.servers import free_port

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


@pytest.fixture(autouse=True)
def _nginx_installed() -> None:
    # scripts/test installs it; a missing nginx is a broken setup, not a reason to skip.
    assert Path(NGINX).exists(), "needs Debian's nginx: apt-get install nginx-light (scripts/test does)"

SECURITY_HEADERS = {
    "strict-transport-security": "max-age=31536000; includeSubDomains",
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
}


@dataclass
class Served:
    url: str
    proc: subprocess.Popen[bytes]
    root: Path

    def get(self, path: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
        request = urllib.request.Request(self.url + path, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=5) as resp:
                return resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read()


def install(image_dir: Path, work: Path, html: Path) -> tuple[Path, int]:
    """Copy an image's nginx files into `work` as the image lays them out; return (nginx.conf, port)."""
    port = free_port()
    conf_d, snippets, tmp = work / "conf.d", work / "snippets", work / "tmp"
    for d in (conf_d, snippets, tmp):
        d.mkdir(parents=True, exist_ok=True)

    paths = {"/etc/nginx/conf.d/": f"{conf_d}/", "/tmp/nginx/": f"{conf_d}/", "/etc/nginx/snippets/": f"{snippets}/",
             "/usr/share/nginx/html": str(html), "/var/www/html/public": str(html), "/tmp/": f"{tmp}/"}
    pattern = re.compile("|".join(re.escape(k) for k in sorted(paths, key=len, reverse=True)))

    def localise(text: str) -> str:
        return pattern.sub(lambda m: paths[m.group(0)], text)  # one pass: no path is rewritten twice

    template = (image_dir / "nginx" / "default.conf.template").read_text()
    (conf_d / "default.conf").write_text(localise(template.replace("${PORT}", str(port))))
    shutil.copy(image_dir / "nginx" / "security-headers.conf", snippets / "security-headers.conf")
    main = work / "nginx.conf"
    main.write_text(localise((image_dir / "nginx" / "nginx.conf").read_text()))
    return main, port


def check(main: Path) -> None:
    done = subprocess.run([NGINX, "-t", "-c", str(main), "-g", "user root;"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[object]:
    started: list[subprocess.Popen[bytes]] = []

    def start(image: str, html: Path) -> Served:
        main, port = install(ROOT / "docker" / image, tmp_path / "nginx", html)
        check(main)
        proc = subprocess.Popen([NGINX, "-c", str(main), "-g", "daemon off; user root;"],
                                stdout=open(tmp_path / "stdout.log", "wb"),  # noqa: SIM115 - closed by GC
                                stderr=subprocess.STDOUT)
        started.append(proc)
        served = Served(f"http://127.0.0.1:{port}", proc, tmp_path)
        deadline = time.monotonic() + 10
        while True:
            try:
                served.get("/health")
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError((tmp_path / "stdout.log").read_text()) from None
                time.sleep(0.05)
        return served

    yield start
    for proc in started:
        proc.terminate()
        proc.wait(10)


def nuxt_site(root: Path) -> Path:
    """What `nuxt generate` leaves in .output/public, in miniature."""
    (root / "_nuxt").mkdir(parents=True)
    (root / "index.html").write_text("<!doctype html><title>Library</title><div id=__nuxt></div>\n")
    (root / "books").mkdir()
    (root / "books" / "index.html").write_text("<!doctype html><title>Books</title>\n")
    (root / "_nuxt" / "entry.4f2a9c1b.js").write_text("console.log('library');\n" * 200)
    (root / ".env").write_text("APP_KEY=secret\n")
    return root


def test_frontend_headers_caching_gzip_fallback_health_and_json_logs(serve: object, tmp_path: Path) -> None:
    site = serve("frontend", nuxt_site(tmp_path / "html"))  # type: ignore[operator]

    status, headers, body = site.get("/")
    assert status == 200 and b"Library" in body
    assert headers["cache-control"] == "no-cache"
    for name, value in SECURITY_HEADERS.items():
        assert headers[name] == value, name
    csp = headers["content-security-policy"]
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp and "object-src 'none'" in csp
    assert headers["referrer-policy"] == "strict-origin-when-cross-origin"
    assert "camera=()" in headers["permissions-policy"]
    assert "server" not in headers or headers["server"] == "nginx", "no version in the Server header"

    # Hashed assets: a year, immutable, gzip, and the security headers still there
    # (nginx drops inherited add_header in a location that has its own).
    status, headers, body = site.get("/_nuxt/entry.4f2a9c1b.js", **{"Accept-Encoding": "gzip"})
    assert status == 200
    assert headers["cache-control"] == "public, max-age=31536000, immutable"
    assert headers["content-encoding"] == "gzip" and b"library" in gzip.decompress(body)
    assert headers["x-content-type-options"] == "nosniff" and "content-security-policy" in headers
    assert site.get("/_nuxt/missing.js")[0] == 404, "a missing asset is a 404, not the SPA page"

    # SPA fallback and generated routes.
    status, headers, body = site.get("/books/42/edit")
    assert status == 200 and b"Library" in body and headers["cache-control"] == "no-cache"
    assert b"Books" in site.get("/books/")[2]

    status, headers, body = site.get("/health")
    assert (status, body) == (200, b"ok\n")
    assert headers["x-frame-options"] == "DENY" and headers["cache-control"] == "no-store"

    assert site.get("/.env")[0] == 404

    site.proc.terminate()
    site.proc.wait(10)
    lines = [json.loads(line) for line in (tmp_path / "stdout.log").read_text().splitlines()
             if line.startswith("{")]
    uris = [entry["uri"] for entry in lines]
    assert "/" in uris and "/books/42/edit" in uris
    assert "/health" not in uris, "health checks are not logged"
    first = lines[0]
    assert {"time", "remote_addr", "method", "status", "duration", "user_agent"} <= set(first)
    assert isinstance(first["status"], int)


def test_backend_config_sends_the_api_to_php_fpm_and_caches_build_assets(serve: object, tmp_path: Path) -> None:
    public = tmp_path / "public"
    (public / "build" / "assets").mkdir(parents=True)
    (public / "index.php").write_text("<?php // Laravel's front controller\n")
    (public / "build" / "assets" / "app-3b1f.css").write_text("body{}\n")
    site = serve("backend", public)  # type: ignore[operator]

    status, headers, _ = site.get("/build/assets/app-3b1f.css")
    assert status == 200 and headers["cache-control"] == "public, max-age=31536000, immutable"
    assert headers["content-security-policy"].startswith("default-src 'none'")

    # /api/health goes to the front controller over FastCGI (no PHP-FPM runs here: 502),
    # with the API's security headers; other PHP files never run.
    status, headers, _ = site.get("/api/health")
    assert status == 502
    assert headers["x-content-type-options"] == "nosniff" and headers["x-frame-options"] == "DENY"
    assert site.get("/config.php")[0] == 404
    assert site.get("/.env")[0] == 404
    errors = (tmp_path / "stdout.log").read_text()
    assert "php-fpm.sock" in errors, "the 502 must come from the FastCGI socket"
