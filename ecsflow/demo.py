"""`ecsflow demo`: the whole thing on one machine. A moto server stands in for AWS, a local
Prefect server (SQLite) records every run, and `up` provisions the stack against them."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

from ecsflow.local import LocalServer, MotoServer, PrefectServer, free_port, port_free, prefect_api_healthy

STATE_DIR = Path(".ecsflow") / "demo"
FAKE_AWS = {"AWS_ACCESS_KEY_ID": "demo", "AWS_SECRET_ACCESS_KEY": "demo", "AWS_SESSION_TOKEN": "demo",
            "ECSFLOW_POLL_SECONDS": "0.2", "ECSFLOW_RETRY_BASE_SECONDS": "0.5"}


def run_demo(stack_file: str, *, port: int = 4200, wait: bool = True) -> int:
    servers: list[LocalServer] = []
    try:
        print("ecsflow demo: starting the local AWS emulator (moto server)...", flush=True)
        moto = MotoServer(STATE_DIR)
        servers.append(moto)
        os.environ.update(FAKE_AWS, AWS_ENDPOINT_URL=moto.url)
        os.environ.pop("AWS_PROFILE", None)

        api_url = os.environ.get("PREFECT_API_URL", "")
        if not (api_url and prefect_api_healthy(api_url)):
            print("ecsflow demo: starting a local Prefect server (SQLite; about 15 s)...", flush=True)
            prefect = PrefectServer(STATE_DIR / "prefect", port if port_free(port) else free_port())
            servers.append(prefect)
            api_url = prefect.api_url
        os.environ["PREFECT_API_URL"] = api_url
        ui_url = api_url.removesuffix("/api")

        from prefect.settings import PREFECT_API_URL, temporary_settings

        from ecsflow.cli import RunFailed, render_outputs, run_flow
        from flows.provision import ProvisionRun, provision_flow

        print(f"ecsflow demo: provisioning {stack_file} (watch it at {ui_url})", flush=True)
        with temporary_settings(updates={PREFECT_API_URL: api_url}):
            try:
                outputs = run_flow(provision_flow, ProvisionRun(stack_file=stack_file, skip_images=True))
            except RunFailed as exc:
                print(f"ecsflow demo: the run failed: {exc}", file=sys.stderr)
                return 1
        print(render_outputs(outputs))
        with temporary_settings(updates={PREFECT_API_URL: api_url}):
            operations = _operate(stack_file, run_flow, RunFailed)
        print(f"""
{operations}
Prefect UI:       {ui_url}   (flow runs, task runs, the outputs, backup and audit artifacts)
AWS emulator:     {moto.url}
Look around:      AWS_ENDPOINT_URL={moto.url} AWS_ACCESS_KEY_ID=demo AWS_SECRET_ACCESS_KEY=demo \\
                    PREFECT_API_URL={api_url} ecsflow status --stack {stack_file}
Deploys:          with the same variables, `ecsflow serve --stack {stack_file}` serves every deployment and the
                  GitHub webhook receiver (docs/serving.md: how to send it a signed push); `ecsflow deploy`
                  needs a Docker engine and a registry (ECSFLOW_REGISTRY=host:port, docs/deploy.md).
""", flush=True)
        if wait:
            print("Press Ctrl+C to stop the servers.", flush=True)
            while True:
                time.sleep(3600)
        return 0
    except KeyboardInterrupt:
        return 0
    except RuntimeError as exc:
        print(f"ecsflow demo: {exc}", file=sys.stderr)
        return 1
    finally:
        _flush_prefect_logs()
        for server in reversed(servers):
            server.stop()


def _operate(stack_file: str, run_flow: Any, run_failed: type[Exception]) -> str:
    """Day-2 runs on the fresh stack: a backup (snapshot + copy) and the security audit. Their outcome is
    reported, not fatal: the demo's point is to show them in the UI."""
    from flows.audit import AuditRun, audit_flow
    from flows.backup import BackupRun, backup_flow

    lines = []
    print("ecsflow demo: backing up the database (snapshot, copy to the second region)...", flush=True)
    try:
        report = run_flow(backup_flow, BackupRun(stack_file=stack_file))
        copy = report.get("copy")
        copy = f", copied to {copy['region']}" if isinstance(copy, dict) else ""
        lines.append(f"Backup:           snapshot {report['snapshot']}{copy}")
    except run_failed as exc:
        lines.append(f"Backup:           failed: {exc}")
    print("ecsflow demo: auditing the live stack against the security rules...", flush=True)
    try:
        rows = run_flow(audit_flow, AuditRun(stack_file=stack_file))
        lines.append(f"Audit:            {len(rows)} checks, all passed")
    except run_failed as exc:
        lines.append(f"Audit:            {str(exc).splitlines()[0]}")
    return "\n".join(lines)


def _flush_prefect_logs() -> None:
    """Send the runs' last log lines before the server goes away (else Prefect complains at exit)."""
    if "prefect.logging.handlers" in sys.modules:
        from prefect.logging.handlers import APILogWorker

        APILogWorker.drain_all(timeout=5)
