"""Generated docs stay generated: docs/stack-reference.md matches the stack file's JSON Schema
(fails after a change to spec/ until `./scripts/gen_docs` is run), and the architecture picture
is drawn from a stack file with diagrams + graphviz."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ecsflow import docs
from ecsflow.cli import main as cli
from tests.conftest import ROOT


def test_stack_reference_is_up_to_date_with_spec() -> None:
    checked_in = (ROOT / "docs" / "stack-reference.md").read_text(encoding="utf-8")
    assert checked_in == docs.stack_reference(), (
        "docs/stack-reference.md is out of date with spec/: run ./scripts/gen_docs and commit the result")


def test_reference_is_built_from_the_cli_schema(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    text = docs.stack_reference(schema)
    assert text == docs.stack_reference()
    # Every field of every model has its row, required ones marked.
    for name, model in [("Stack", schema), *schema["$defs"].items()]:
        assert f"\n## {name}\n" in text
        for field in model.get("properties", {}):
            assert f"| `{field}` |" in text, (name, field)
    assert "| `name` | string | **required** |" in text
    assert "| `services` | map of string to [Service](#service) | **required** | min entries 1 |" in text


def test_check_mode_names_the_command_to_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    stale = tmp_path / "stack-reference.md"
    stale.write_text("# old\n")
    monkeypatch.setattr(docs, "REFERENCE", stale)
    monkeypatch.setattr(docs, "ROOT", tmp_path)
    assert docs.main(["--check"]) == 1
    assert "stack-reference.md is out of date with spec/; run ./scripts/gen_docs" in capsys.readouterr().err


def test_architecture_picture_is_drawn_from_a_stack(tmp_path: Path) -> None:
    out = docs.draw_architecture(ROOT / "stacks" / "shop.yaml", tmp_path / "shop.png")
    data = out.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 10_000
    assert (ROOT / "docs" / "architecture.png").read_bytes().startswith(b"\x89PNG")
