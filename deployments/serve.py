"""Serve every ecsflow deployment from this process (one machine, no work pool):

    PREFECT_API_URL=http://127.0.0.1:4200/api python -m deployments.serve [--stack stacks/library.yaml]

Runs started from the Prefect UI, the schedules and the webhook receiver are executed here.
The deployments are read from prefect.yaml, so the two ways of running them (a work pool, or
this process) can never disagree on names, parameters, schedules or concurrency.
"""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path
from typing import Any

import yaml
from prefect import serve
from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
from prefect.schedules import Cron

PREFECT_YAML = Path(__file__).resolve().parent.parent / "prefect.yaml"


def declared_deployments(path: Path = PREFECT_YAML) -> list[dict[str, Any]]:
    return list(yaml.safe_load(path.read_text())["deployments"])


def load_flow(entrypoint: str) -> Any:
    """`flows/backup.py:backup_flow` -> the flow object."""
    file, _, name = entrypoint.partition(":")
    module = importlib.import_module(file.removesuffix(".py").replace("/", "."))
    return getattr(module, name)


def to_deployment(declared: dict[str, Any], stack_file: str) -> Any:
    parameters = {"params": {**declared.get("parameters", {}).get("params", {}), "stack_file": stack_file}}
    limit = declared.get("concurrency_limit")
    concurrency = None if not limit else ConcurrencyLimitConfig(
        limit=limit["limit"], collision_strategy=ConcurrencyLimitStrategy(limit.get("collision_strategy", "ENQUEUE")))
    schedules = [Cron(s["cron"], timezone=s.get("timezone", "UTC"), active=s.get("active", True))
                 for s in declared.get("schedules") or [] if "cron" in s]
    return load_flow(declared["entrypoint"]).to_deployment(
        declared["name"], parameters=parameters, tags=declared.get("tags", []),
        description=declared.get("description"), schedules=schedules or None, concurrency_limit=concurrency)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stack", default="stacks/library.yaml", help="default stack file for the run forms")
    args = parser.parse_args()
    serve(*(to_deployment(declared, args.stack) for declared in declared_deployments()))


if __name__ == "__main__":
    main()
