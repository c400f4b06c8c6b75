"""The Prefect UI as the control room: after `ecsflow plan` (the library stack, against moto),
headless Chromium renders Prefect's own UI against the session's Prefect server, and the flow
run and its plan artifact (with the cost estimate, rendered from markdown) are on the page.

The same run prints the estimate on the command line. (The screenshot in docs/ comes from
./scripts/ui_screenshot, not from this test.)"""

from __future__ import annotations

import re
from typing import Any

import pytest

from ecsflow.cli import main
from tests.conftest import LIBRARY_STACK
from tests.support.prefect_ui import dump_dom, latest_run_and_artifact, serve_ui


def visible_text(dom: str) -> str:
    text = re.sub(r"<(style|script)\b.*?</\1>", " ", dom, flags=re.S)
    return " ".join(re.sub(r"<[^>]+>", " ", text).split())


def page_showing(url: str, *needles: str) -> str:
    """The page's visible text once it shows every needle. A busy machine answers the UI's API
    calls slowly, so a page that is still loading is rendered again with a longer budget."""
    text = ""
    for budget_ms in (10_000, 30_000, 60_000):
        text = visible_text(dump_dom(url, budget_ms))
        if all(n in text for n in needles):
            break
    return text


@pytest.mark.prefect
def test_plan_run_and_its_artifact_are_visible_in_the_prefect_ui(
    aws: Any, prefect_server: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["plan", "--stack", str(LIBRARY_STACK)]) == 0
    out = capsys.readouterr().out
    assert "Estimated monthly cost: $367.26, ap-northeast-1 prices as of 2026-11-28" in out
    run, artifact = latest_run_and_artifact("plan", "plan-library-prod")
    assert artifact.flow_run_id == run.id
    assert "## Estimated monthly cost" in str(artifact.data)

    with serve_ui(prefect_server.api_url) as ui:
        page = page_showing(f"{ui}/runs/flow-run/{run.id}", run.name, "Completed")
        assert f"Flow Run: {run.name}" in page, page[:2000]
        assert "Completed" in page and "Flow plan" in page, page[:2000]
        # The artifact's page: its key and description, and its markdown rendered (the heading
        # and the total from the cost estimate).
        page = page_showing(f"{ui}/artifacts/artifact/{artifact.latest_id}", "plan-library-prod", "$367.26")
        assert "plan-library-prod" in page and "Plan for library-prod" in page, page[:2000]
        assert "Estimated monthly cost" in page and "$367.26" in page, page[:2000]
        assert "## Estimated" not in page  # rendered, not shown as raw markdown
