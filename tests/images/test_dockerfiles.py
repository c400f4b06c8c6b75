"""The production Dockerfiles (docker/backend, docker/frontend): linted, not built.

Their base images (php-fpm, node, nginx-unprivileged) cannot be pulled here, and the app's
source lives in the app repository, so they are checked by hadolint (`-t warning`), by
checkov's Dockerfile checks (in an environment of its own: its pinned boto3 would break
prefect-aws) and by the rules below; their nginx configs are served for real in
test_nginx.py.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tasks import images
from tests.conftest import ROOT

DOCKERFILES = sorted((ROOT / "docker").glob("*/Dockerfile"))
CHECKOV = "checkov==3.3.30"


def test_there_is_a_dockerfile_per_library_service() -> None:
    assert [p.parent.name for p in DOCKERFILES] == ["backend", "frontend"]
    assert not list((ROOT / "docker").rglob("__init__.py")), "docker/ must never shadow the Docker SDK"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_hadolint_passes_at_warning_level(dockerfile: Path) -> None:
    hadolint = Path(sys.executable).with_name("hadolint")
    done = subprocess.run([str(hadolint), "-t", "warning", str(dockerfile)], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_checkov_dockerfile_checks_pass() -> None:
    uv = shutil.which("uv")
    assert uv, "uv is needed to run checkov in its own environment"
    env = dict(os.environ, BC_SKIP_MAPPING="TRUE")
    done = subprocess.run([uv, "tool", "run", "--from", CHECKOV, "checkov", "--framework", "dockerfile",
                           "--skip-download", "--compact", "--quiet", "-o", "cli", "-d", str(ROOT / "docker")],
                          capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "Failed checks: 0" in done.stdout or "Passed checks" in done.stdout, done.stdout[-2000:]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_runtime_stage_rules(dockerfile: Path) -> None:
    text = dockerfile.read_text()
    runtime = text[text.rindex("\nFROM "):]
    facts = images.parse_dockerfile(text, {})
    for base in facts.bases:
        name, _, tag = base.rpartition(":")
        assert name and tag and tag != "latest" and any(c.isdigit() for c in tag), f"{base} is not pinned"
    user = [line.split()[1] for line in runtime.splitlines() if line.startswith("USER ")]
    assert user and user[-1].split(":")[0].isdigit() and user[-1].split(":")[0] != "0", "runtime must be non-root"
    assert "HEALTHCHECK" in runtime
    assert "EXPOSE 8080" in runtime and "ENV PORT=8080" in runtime, "listens on an unprivileged $PORT"
    for label in ("source", "revision", "created"):
        assert f"org.opencontainers.image.{label}=" in runtime
    assert "--mount" not in text, "no BuildKit-only syntax: ecsflow builds with the classic builder"
    for forbidden in ("composer install", "npm ", "build-base", "gcc"):
        assert forbidden not in runtime.replace("$PHPIZE_DEPS", ""), f"{forbidden} in the runtime stage"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_dockerignore_keeps_secrets_and_local_state_out(dockerfile: Path) -> None:
    ignored = set(images.dockerignore_patterns(dockerfile.parent))
    assert {".git", ".env", ".env.*", "node_modules"} <= ignored


def test_backend_runtime_has_no_composer_or_compilers() -> None:
    runtime = (ROOT / "docker/backend/Dockerfile").read_text().split("AS runtime", 1)[1]
    assert "apk del --no-network .build-deps" in runtime
    assert "COPY --from=vendor" in runtime and "COPY --from=assets" in runtime
    assert "--no-dev" in (ROOT / "docker/backend/Dockerfile").read_text()


def test_backend_entrypoint_is_posix_sh() -> None:
    entrypoint = ROOT / "docker/backend/entrypoint.sh"
    assert os.access(entrypoint, os.X_OK)
    done = subprocess.run(["sh", "-n", str(entrypoint)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    busybox = shutil.which("busybox")
    if busybox:
        done = subprocess.run([busybox, "ash", "-n", str(entrypoint)], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
