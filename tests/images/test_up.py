"""`ecsflow up` runs the images phase beside the rest; `--skip-images` leaves it out."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ecsflow.cli import main
from tests.images.conftest import RegistryServer, write_app

pytestmark = pytest.mark.prefect


def test_up_builds_and_pushes_the_images_and_skip_images_leaves_them_out(
        aws: Any, local_registry: RegistryServer, tmp_path: Path, write_stack: Callable[..., Path],
        stack_name: str, capsys: pytest.CaptureFixture[str]) -> None:
    app = write_app(tmp_path / "web", version=str(uuid.uuid4()))
    sha = subprocess.run(["git", "-C", str(app), "rev-parse", "HEAD"], capture_output=True, text=True,
                         check=True).stdout.strip()
    stack_file = write_stack({"frontend": {"build": {"context": "web"}}})

    assert main(["up", "--stack", str(stack_file), "--skip-images"]) == 0
    assert "images: skipped (--skip-images)" in capsys.readouterr().out
    assert local_registry.tags(f"{stack_name}-dev-frontend") == []

    assert main(["up", "--stack", str(stack_file)]) == 0
    out = capsys.readouterr().out
    digest = local_registry.digest(f"{stack_name}-dev-frontend", sha)
    assert digest is not None
    assert f"{local_registry.host}/{stack_name}-dev-frontend:{sha}@{digest}" in out
