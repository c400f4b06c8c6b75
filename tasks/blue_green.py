"""Deployment configuration per strategy (stack file `deploy.services.<name>.strategy`).

rolling (the default): ECS rolling update, minimum healthy 100 % / maximum 200 %, the
deployment circuit breaker with rollback.
"""

from __future__ import annotations

from typing import Any

from spec import Stack
from tasks import services
from tasks.aws import AwsContext


def rolling_configuration() -> dict[str, Any]:
    return {**services.DEPLOYMENT, "strategy": "ROLLING"}


def deployment_arguments(spec: Stack, ctx: AwsContext, service: str) -> dict[str, Any]:
    """The UpdateService arguments that choose the service's strategy."""
    return {"deploymentConfiguration": rolling_configuration()}
