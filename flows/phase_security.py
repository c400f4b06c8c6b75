"""Security phase: the stack's app secrets (with their KMS key) and the account-level guardrails
the stack asks for (Security Hub + FSBP, AWS Config, GuardDuty).

    secrets key ─> app secrets (value generated in the task; only the ARN comes back)  ─> task definitions
    s3 key ─> config bucket ─> config recorder + delivery channel                        (beside everything)
    security hub + FSBP standard, guardduty detector                                     (beside everything)
"""

from __future__ import annotations

from typing import Any

from prefect import flow
from prefect.futures import PrefectFuture

from flows.common import StackRun, open_stack, settle
from spec import Stack
from tasks import app_secrets, guardrails, kms
from tasks.aws import AwsContext
from tasks.contract import Observed


def submit_app_secrets(spec: Stack, ctx: AwsContext) -> dict[str, PrefectFuture[Any]]:
    """name -> future of the secret (ARN and settings, never the value). Nothing without app_secrets."""
    if not spec.app_secrets:
        return {}
    key = kms.ensure_key.submit(ctx, app_secrets.KMS_PURPOSE)
    return {name: app_secrets.ensure_app_secret.submit(spec, ctx, name, key) for name in spec.app_secrets}


def submit_guardrails(spec: Stack, ctx: AwsContext) -> list[PrefectFuture[Any]]:
    sec = spec.security
    futures: list[PrefectFuture[Any]] = []
    if sec.security_hub:
        futures.append(guardrails.ensure_security_hub.submit(ctx))
    if sec.guardduty:
        futures.append(guardrails.ensure_guardduty.submit(ctx))
    if sec.config_recorder:
        key = kms.ensure_key.submit(ctx, guardrails.CONFIG_KMS_PURPOSE)
        bucket = guardrails.ensure_config_bucket.submit(ctx, key)
        futures += [key, bucket, guardrails.ensure_config_recorder.submit(ctx, bucket)]
    return futures


def submit_app_secrets_teardown(found: dict[tuple[str, str], list[Observed]], ctx: AwsContext,
                                prod: bool) -> list[PrefectFuture[Any]]:
    return [app_secrets.delete_app_secret.submit(o, ctx, prod) for o in found.get(("security", "app secret"), [])]


@flow(name="security", description="App secrets (generated in AWS, never shown) and the account guardrails the "
      "stack asks for: Security Hub with FSBP, AWS Config, GuardDuty.")
def security_flow(params: StackRun = StackRun()) -> dict[str, Any]:  # noqa: B008 - pydantic default
    spec, ctx = open_stack(params)
    secrets = submit_app_secrets(spec, ctx)
    rails = submit_guardrails(spec, ctx)
    settle([*secrets.values(), *rails])
    return {"app_secrets": {name: f.result().id for name, f in secrets.items()},
            "guardrails": [f.result().name for f in rails if isinstance(f.result(), Observed)]}
