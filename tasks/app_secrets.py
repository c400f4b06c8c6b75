"""App secrets in Secrets Manager: `{stack}-{env}/{name}` for each entry of the stack's `app_secrets`.

The value is generated inside the task that creates the secret (Secrets Manager's GetRandomPassword,
or Python's `secrets` module for Laravel's APP_KEY), goes straight into CreateSecret, and is never
returned, logged, passed as a parameter or written to an artifact: the task returns the ARN and
settings only. A service takes the secret with `secrets: {APP_KEY: app:NAME}`; ECS injects it by ARN.

- Encrypted with the stack's "secrets" KMS key (made only when the stack declares app secrets).
- Rotation: Secrets Manager rotates only by calling a Lambda function that knows where the value is
  used, so a rotation schedule is set only when the stack names `rotation_lambda_arn` (with
  `rotation_days`); the spec refuses `rotation_days` alone.
- An existing secret's value is never touched by `up` (a second run makes no mutating call).
- Teardown: in prod the secret is scheduled for deletion with a 30-day recovery window (a mistaken
  `down` can be undone with RestoreSecret, and the next `up` restores it); elsewhere it is deleted at
  once (ForceDeleteWithoutRecovery), so a re-created dev stack does not collide with the old name.
"""

from __future__ import annotations

import base64
import hashlib
import secrets as pysecrets
from typing import TYPE_CHECKING, Any

from spec import Stack
from spec.stack import AppSecret
from tasks.aws import AwsContext, EcsflowError, call, call_or_none, tag_map
from tasks.contract import Change, Observed, aws_task, diff_fields, refuse_foreign, require_ours

if TYPE_CHECKING:
    from mypy_boto3_secretsmanager import SecretsManagerClient

RESOURCE = "app secret"
KMS_PURPOSE = "secrets"
PROD_RECOVERY_DAYS = 30


def secret_name(ctx: AwsContext, name: str) -> str:
    return f"{ctx.prefix}/{name}"


def component(name: str) -> str:
    return f"secret-{name}"


def _client(ctx: AwsContext) -> SecretsManagerClient:
    return ctx.client("secretsmanager")


def _observe(data: dict[str, Any]) -> Observed:
    rotating = bool(data.get("RotationEnabled"))
    rules = (data.get("RotationRules") or {}) if rotating else {}
    return Observed(id=data["ARN"], name=data["Name"], tags=tag_map(data.get("Tags")),
                    attrs={"kms_key_id": data.get("KmsKeyId"), "description": data.get("Description", ""),
                           "rotation_enabled": rotating, "rotation_days": rules.get("AutomaticallyAfterDays"),
                           "rotation_lambda_arn": data.get("RotationLambdaARN") if rotating else None,
                           "deleted": data.get("DeletedDate") is not None})


def find_app_secret(ctx: AwsContext, name: str) -> Observed | None:
    """The secret by its unique name, pending deletion or not (attrs["deleted"] says)."""
    got = call_or_none(f"look up secret {secret_name(ctx, name)}", _client(ctx).describe_secret,
                       SecretId=secret_name(ctx, name))
    return _observe(dict(got)) if got else None


def app_secret_arn(ctx: AwsContext, name: str) -> str | None:
    """The live secret's full ARN (with AWS's random suffix), or None."""
    found = find_app_secret(ctx, name)
    return found.id if found and not found.attrs["deleted"] else None


def _wanted(ctx: AwsContext, name: str, secret: AppSecret, key_arn: str | None) -> dict[str, Any]:
    return {"kms_key_id": key_arn, "description": _description(ctx, name, secret),
            "rotation_days": secret.rotation_days, "rotation_lambda_arn": secret.rotation_lambda_arn,
            "tags": ctx.tag_dict(component(name))}


def _description(ctx: AwsContext, name: str, secret: AppSecret) -> str:
    return secret.description or f"ecsflow {ctx.prefix}: {name} ({secret.generate})"


def _current(observed: Observed, wanted: dict[str, Any]) -> dict[str, Any]:
    current = {k: observed.attrs.get(k) for k in wanted if k != "tags"}
    current["tags"] = {k: observed.tags.get(k) for k in wanted["tags"]}
    return current


def _same_key(current: str | None, wanted: str | None, key_id: str | None) -> bool:
    """AWS answers with the key id or ARN we gave; both name the same key."""
    return current in (wanted, key_id) or (bool(current) and bool(key_id) and str(current).endswith(str(key_id)))


def plan_app_secret(ctx: AwsContext, name: str, secret: AppSecret, observed: Observed | None,
                    kms_key: Observed | None) -> Change:
    sid = secret_name(ctx, name)
    if observed is None:
        return Change(RESOURCE, sid, "create", note="value generated in AWS / in the task; never shown")
    if observed.attrs["deleted"]:
        return Change(RESOURCE, sid, "update", note="pending deletion: restored with its value")
    wanted = _wanted(ctx, name, secret, kms_key.id if kms_key else None)
    diffs = diff_fields(_current(observed, wanted), wanted)
    key_id = kms_key.attrs.get("key_id") if kms_key else None
    diffs = tuple(d for d in diffs if not (d.field == "kms_key_id" and _same_key(d.current, d.wanted, key_id)))
    return Change(RESOURCE, sid, "update" if diffs else "no-op", diffs)


def plan_app_secrets(spec: Stack, ctx: AwsContext) -> list[Change]:
    from tasks import kms

    if not spec.app_secrets:
        return []
    key = kms.find_key(ctx, KMS_PURPOSE)
    changes = [kms.plan_key(ctx, KMS_PURPOSE, key)]
    changes += [plan_app_secret(ctx, name, secret, find_app_secret(ctx, name), key)
                for name, secret in spec.app_secrets.items()]
    return changes


def generate_value(ctx: AwsContext, secret: AppSecret) -> str:
    """A fresh value. Only ever passed straight to CreateSecret: never returned from a task."""
    if secret.generate == "laravel-app-key":
        return "base64:" + base64.b64encode(pysecrets.token_bytes(32)).decode()
    if secret.generate == "hex":
        return pysecrets.token_hex(secret.length)
    got = call("generate a random password", _client(ctx).get_random_password, PasswordLength=secret.length,
               ExcludePunctuation=secret.exclude_punctuation, RequireEachIncludedType=True)
    return got["RandomPassword"]


def _token(ctx: AwsContext, name: str) -> str:
    # ClientRequestToken: 32-64 characters; the same create after a crash is not made twice.
    return hashlib.sha256(ctx.token("secret", name).encode()).hexdigest()[:40]


@aws_task(task_run_name="ensure app secret {name}")
def ensure_app_secret(spec: Stack, ctx: AwsContext, name: str, kms_key: Observed) -> Observed:
    """Create the secret with a generated value, or reconcile its key, description, tags and rotation.
    Returns the ARN and settings, never the value."""
    secret = spec.app_secrets[name]
    sm = _client(ctx)
    sid = secret_name(ctx, name)
    observed = find_app_secret(ctx, name)
    if observed is not None:
        refuse_foreign(ctx, observed, f"secret {sid}")
    if observed is None:
        call(f"create secret {sid}", sm.create_secret, Name=sid, KmsKeyId=kms_key.id,
             Description=_description(ctx, name, secret), SecretString=generate_value(ctx, secret),
             ClientRequestToken=_token(ctx, name),
             Tags=ctx.tags(component(name)))
    elif observed.attrs["deleted"]:
        call(f"restore secret {sid} (it was pending deletion)", sm.restore_secret, SecretId=sid)
    observed = find_app_secret(ctx, name)
    if observed is None:
        raise EcsflowError(f"secret {sid} vanished right after it was made; run again")
    fields = set(plan_app_secret(ctx, name, secret, observed, kms_key).changed_fields)
    if fields & {"kms_key_id", "description"}:
        call(f"update secret {sid} ({', '.join(sorted(fields & {'kms_key_id', 'description'}))})",
             sm.update_secret, SecretId=sid, KmsKeyId=kms_key.id, Description=_description(ctx, name, secret))
    if "tags" in fields:
        call(f"tag secret {sid}", sm.tag_resource, SecretId=sid, Tags=ctx.tags(component(name)))
    if fields & {"rotation_days", "rotation_lambda_arn"}:
        if secret.rotation_lambda_arn and secret.rotation_days:
            # The first rotation waits for the schedule: the value just made is good.
            call(f"schedule rotation of {sid}", sm.rotate_secret, SecretId=sid,
                 RotationLambdaARN=secret.rotation_lambda_arn,
                 RotationRules={"AutomaticallyAfterDays": secret.rotation_days}, RotateImmediately=False)
        else:
            call(f"stop rotating {sid}", sm.cancel_rotate_secret, SecretId=sid)
    if fields:
        observed = find_app_secret(ctx, name) or observed
    return observed


def inventory_app_secrets(ctx: AwsContext) -> list[Observed]:
    """Our live secrets under `{stack}-{env}/` (scheduled deletions are already on their way out)."""
    sm = _client(ctx)
    prefix = f"{ctx.prefix}/"
    pages = sm.get_paginator("list_secrets").paginate(Filters=[{"Key": "name", "Values": [prefix]}])
    found = []
    for page in call(f"list the secrets of {ctx.prefix}", lambda: list(pages)):
        for data in page.get("SecretList", []):
            if data.get("Name", "").startswith(prefix) and not data.get("DeletedDate"):
                observed = _observe(dict(data))
                if ctx.owns(observed.tags):
                    found.append(observed)
    return found


@aws_task(task_run_name="delete app secret {observed.name}")
def delete_app_secret(observed: Observed, ctx: AwsContext, prod: bool) -> None:
    """prod: a 30-day recovery window; elsewhere: deleted at once. NotFound is success."""
    require_ours(ctx, observed.tags, f"secret {observed.name}")
    args: dict[str, Any] = ({"RecoveryWindowInDays": PROD_RECOVERY_DAYS} if prod
                            else {"ForceDeleteWithoutRecovery": True})
    call_or_none(f"delete secret {observed.name}", _client(ctx).delete_secret, SecretId=observed.id, **args)
