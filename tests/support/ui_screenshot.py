"""Screenshots of the Prefect UI for docs/: a provision run of the library stack and its plan
artifact (with the cost estimate), against a local moto server and Prefect server.

    ./scripts/ui_screenshot            # writes docs/prefect-ui.png and docs/prefect-ui-artifact.png

Uses the same UI serving and Chromium flags as tests/test_ui.py.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STACK = ROOT / "stacks" / "library.yaml"


def main() -> int:
    from ecsflow.local import MotoServer
    from tests.support.prefect_ui import latest_run_and_artifact, screenshot, serve_ui
    from tests.support.servers import PrefectServer

    workdir = Path(tempfile.mkdtemp(prefix="ecsflow-ui-screenshot-"))
    (workdir / "prefect").mkdir()
    prefect = PrefectServer(workdir / "prefect").start()
    moto = MotoServer(workdir)
    try:
        prefect.wait_ready()
        os.environ.update(PREFECT_API_URL=prefect.api_url, AWS_ENDPOINT_URL=moto.url, AWS_ACCESS_KEY_ID="demo",
                          AWS_SECRET_ACCESS_KEY="demo", AWS_REGION="ap-northeast-1", ECSFLOW_POLL_SECONDS="0.2")
        os.environ.pop("AWS_PROFILE", None)
        from ecsflow.cli import main as cli

        if cli(["up", "--stack", str(STACK), "--skip-images"]) != 0 or cli(["plan", "--stack", str(STACK)]) != 0:
            print("ui_screenshot: the runs failed", file=sys.stderr)
            return 1
        run, artifact = latest_run_and_artifact("provision", "plan-library-prod")
        with serve_ui(prefect.api_url) as ui:
            for url, out in ((f"{ui}/runs/flow-run/{run.id}", ROOT / "docs" / "prefect-ui.png"),
                             (f"{ui}/artifacts/artifact/{artifact.latest_id}",
                              ROOT / "docs" / "prefect-ui-artifact.png")):
                print(f"wrote {screenshot(url, out, budget_ms=30_000).relative_to(ROOT)}")
        return 0
    finally:
        moto.stop()
        prefect.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
