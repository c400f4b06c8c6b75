"""Database initialisation: the application's own database user, its database and grants.

On first provision, before the first migration, a one-off ECS task (the same run_task mechanism
as the migration) runs psql against the RDS instance as the master user and:

- creates the application user (`database.app_username`) with the password from a Secrets
  Manager secret ecsflow made and tagged (a generated password: never logged, never a flow
  parameter or result; ECS injects it into the task, the SQL reads it with `\\getenv`, so it is
  on no command line either);
- creates the application database when RDS has not already (`database.db_name`), takes it
  from PUBLIC and grants the user CONNECT and TEMPORARY on it, USAGE and CREATE on its public
  schema, and default privileges on what the master user creates there later.

Every statement is idempotent: the user and the database are created only when missing (an
existing user keeps its password), grants that exist change nothing. When the task exits 0
the secret is tagged with the script's digest, so the next `up` runs nothing (zero mutating
calls); a changed script (another db_name or user) runs once more.

The services then take `database_app:username` / `database_app:password` from this secret
instead of the master's.
"""

from __future__ import annotations

import hashlib
import json
import secrets as random_secrets
from typing import Any

from spec import Stack
from tasks import iam, logs, one_off
from tasks.aws import AwsContext, EcsflowError, call, call_or_none, progress, tag_map
from tasks.cluster import ecs_tags
from tasks.contract import Change, Observed, aws_task, partition, plan_from, refuse_foreign, require_ours

SECRET_COMPONENT = "db-app-secret"
INIT_COMPONENT = "dbinit"
CONTAINER = "dbinit"
DONE_TAG = "ecsflow:dbinit"  # on the app secret: the digest of the script that last ran to the end
STARTED_BY = "ecsflow-dbinit"
TIMEOUT = 15 * 60
PASSWORD_BYTES = 32  # token_urlsafe: 43 characters of [A-Za-z0-9_-], safe in any connection string
RECOVERY_DAYS = 7
ECS_PRINCIPAL = "ecs-tasks.amazonaws.com"

# The one-off task's command. The SQL comes from the task definition's environment; the master
# credentials (PGUSER/PGPASSWORD) and the app password arrive as ECS secrets.
COMMAND = ["sh", "-c", ': "${APP_DB_PASSWORD:?is not set}" "${PGPASSWORD:?is not set}"; '
           'printf "%s\\n" "$ECSFLOW_DBINIT_SQL" | psql -X -v ON_ERROR_STOP=1 -d postgres']


class DbInitFailed(one_off.OneOffTaskFailed):
    """The initialisation task did not exit 0: the services are not rolled out."""


# ---------------------------------------------------------------- the SQL


def init_sql(db_name: str, app_user: str) -> str:
    """psql script, idempotent. Names are validated by the spec (lower-case identifiers), and still
    quoted by psql (`:"name"`, `%I`), the password as a literal (`%L`)."""
    return "\n".join([
        f"\\set app_user {app_user}",
        f"\\set db_name {db_name}",
        "\\getenv app_password APP_DB_PASSWORD",
        # CREATE ROLE only when missing: an existing user keeps its password.
        "SELECT format('CREATE ROLE %I LOGIN PASSWORD %L', :'app_user', :'app_password')",
        "  WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'app_user') \\gexec",
        "\\unset app_password",
        "SELECT format('CREATE DATABASE %I', :'db_name')",
        "  WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'db_name') \\gexec",
        "REVOKE ALL ON DATABASE :\"db_name\" FROM PUBLIC;",
        "GRANT CONNECT, TEMPORARY ON DATABASE :\"db_name\" TO :\"app_user\";",
        "\\connect :\"db_name\"",
        "REVOKE CREATE ON SCHEMA public FROM PUBLIC;",
        "GRANT USAGE, CREATE ON SCHEMA public TO :\"app_user\";",
        "ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO :\"app_user\";",
        "ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE, SELECT, UPDATE ON SEQUENCES TO :\"app_user\";",
        "",
    ])


def script_digest(spec: Stack) -> str:
    return hashlib.sha256(init_sql(spec.database.db_name, spec.database.app_username).encode()).hexdigest()[:16]


# ---------------------------------------------------------------- the app user's secret


def secret_name(ctx: AwsContext) -> str:
    return ctx.name(SECRET_COMPONENT, limit=256)


def _secret_observed(data: dict[str, Any]) -> Observed:
    return Observed(id=data["ARN"], name=data["Name"], tags=tag_map(data.get("Tags")),
                    attrs={"deleted": data.get("DeletedDate") is not None,
                           "kms_key_id": data.get("KmsKeyId")})


def find_app_secret(ctx: AwsContext) -> Observed | None:
    """By its unique name; a secret scheduled for deletion counts (ensure restores it)."""
    got = call_or_none(f"look up secret {secret_name(ctx)}", ctx.client("secretsmanager").describe_secret,
                       SecretId=secret_name(ctx))
    return _secret_observed(got) if got else None


def _secret_wanted(ctx: AwsContext) -> dict[str, Any]:
    return {"deleted": False, "tags": ctx.tag_dict(SECRET_COMPONENT)}


def plan_app_secret(spec: Stack, ctx: AwsContext, observed: Observed | None) -> list[Change]:
    if not spec.uses_app_database_user:
        return []
    wanted = _secret_wanted(ctx)
    current = None
    if observed is not None:
        current = {"deleted": observed.attrs["deleted"], "tags": {k: observed.tags.get(k) for k in wanted["tags"]}}
    changes = [plan_from("secret", secret_name(ctx), observed, wanted, current=current)]
    done = observed is not None and observed.tags.get(DONE_TAG) == script_digest(spec)
    changes.append(Change("db init task", f"{ctx.prefix}-{INIT_COMPONENT}", "no-op" if done else "create",
                          note="" if done else f"creates user {spec.database.app_username}, database "
                          f"{spec.database.db_name} and grants (idempotent)"))
    return changes


def _request_token(ctx: AwsContext) -> str:
    return hashlib.sha256(ctx.token("db-app-secret").encode()).hexdigest()  # 64 characters


@aws_task(task_run_name="ensure secret of the database app user")
def ensure_app_secret(spec: Stack, ctx: AwsContext) -> Observed:
    """The secret holding the app user's name and generated password. Created once; the value is
    never read back, logged or returned (only the ARN is)."""
    sm = ctx.client("secretsmanager")
    name = secret_name(ctx)
    observed = find_app_secret(ctx)
    if observed is None:
        value = {"username": spec.database.app_username, "password": random_secrets.token_urlsafe(PASSWORD_BYTES),
                 "dbname": spec.database.db_name, "engine": "postgres", "port": spec.database.port}
        data = call(f"create secret {name}", sm.create_secret, Name=name, SecretString=json.dumps(value),
                    ClientRequestToken=_request_token(ctx), Tags=ctx.tags(SECRET_COMPONENT),
                    Description=f"ecsflow {ctx.prefix}: the application's database user "
                                f"{spec.database.app_username}")
        del value
        return Observed(id=data["ARN"], name=name, tags=ctx.tag_dict(SECRET_COMPONENT), attrs={"deleted": False})
    refuse_foreign(ctx, observed, f"secret {name}")
    if observed.attrs["deleted"]:
        # Scheduled for deletion by a teardown, but the database (and its user) may still hold the password.
        call(f"restore secret {name}", sm.restore_secret, SecretId=observed.id)
        observed.attrs["deleted"] = False
    wanted = _secret_wanted(ctx)
    if any(observed.tags.get(k) != v for k, v in wanted["tags"].items()):
        call(f"tag secret {name}", sm.tag_resource, SecretId=observed.id, Tags=ctx.tags(SECRET_COMPONENT))
        observed.tags.update(wanted["tags"])
    return observed


def inventory_app_secrets(ctx: AwsContext) -> list[Observed]:
    return [o for o in _our_secrets(ctx) if o.tags.get("ecsflow:component") == SECRET_COMPONENT]


def _our_secrets(ctx: AwsContext) -> list[Observed]:
    sm = ctx.client("secretsmanager")
    pages = sm.get_paginator("list_secrets").paginate(
        Filters=[{"Key": "tag-key", "Values": ["ecsflow:stack"]}, {"Key": "tag-value", "Values": [ctx.stack]}])
    items = [s for page in call("list secrets", lambda: list(pages)) for s in page.get("SecretList", [])]
    return [o for o in map(_secret_observed, items) if ctx.owns(o.tags)]


@aws_task(task_run_name="delete secret {observed.name}")
def delete_app_secret(observed: Observed, ctx: AwsContext, *, prod: bool = False) -> None:
    """Outside prod at once; in prod with a recovery window (a final snapshot still holds the user)."""
    require_ours(ctx, observed.tags, f"secret {observed.name}")
    args: dict[str, Any] = {"RecoveryWindowInDays": RECOVERY_DAYS} if prod else {"ForceDeleteWithoutRecovery": True}
    call_or_none(f"delete secret {observed.name}", ctx.client("secretsmanager").delete_secret,
                 SecretId=observed.id, **args)


# ---------------------------------------------------------------- the one-off task's definition


def log_group(spec: Stack) -> logs.LogGroupSpec:
    return logs.LogGroupSpec(f"ecs-{INIT_COMPONENT}", spec.log_retention_days)


def _arn_prefix(ctx: AwsContext, service: str) -> str:
    return f"arn:{partition(ctx.region)}:{service}:{ctx.region}:{ctx.account_id()}"


def execution_role(spec: Stack, ctx: AwsContext, master_secret_arn: str, app_secret_arn: str) -> iam.RoleSpec:
    """Reads exactly the two secrets, writes its own log group, pulls the psql image (ECR only)."""
    group = f"{_arn_prefix(ctx, 'logs')}:log-group:{log_group(spec).name(ctx)}"
    statements: list[dict[str, Any]] = [
        {"Sid": "WriteOwnLogs", "Effect": "Allow", "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
         "Resource": [group, f"{group}:*"]},
        {"Sid": "ReadDatabaseSecrets", "Effect": "Allow", "Action": "secretsmanager:GetSecretValue",
         "Resource": sorted({master_secret_arn, app_secret_arn})},
    ]
    image = spec.database.psql_image
    if ".dkr.ecr." in image:  # a private ECR image: allow pulling that repository only
        host, _, path = image.partition("/")
        account, region = host.split(".")[0], host.split(".")[3]
        repo = path.split("@")[0].split(":")[0]
        statements += [
            {"Sid": "EcrLogin", "Effect": "Allow", "Action": "ecr:GetAuthorizationToken", "Resource": "*"},
            {"Sid": "PullPsqlImage", "Effect": "Allow",
             "Action": ["ecr:BatchCheckLayerAvailability", "ecr:GetDownloadUrlForLayer", "ecr:BatchGetImage"],
             "Resource": f"arn:{partition(region)}:ecr:{region}:{account}:repository/{repo}"}]
    return iam.RoleSpec(component=f"{INIT_COMPONENT}-execution", service_principal=ECS_PRINCIPAL,
                        inline_policies={"logs-secrets": {"Version": "2012-10-17", "Statement": statements}},
                        description=f"ecsflow {ctx.prefix}: ECS reads the DB secrets for the DB initialisation")


def family(ctx: AwsContext) -> str:
    return ctx.name(INIT_COMPONENT, limit=255)


def task_definition(spec: Stack, ctx: AwsContext, *, execution_role_arn: str, database: Observed,
                    app_secret_arn: str) -> dict[str, Any]:
    """The RegisterTaskDefinition request: psql as the master user, the app password as a secret."""
    master = str(database.attrs.get("master_secret_arn") or "")
    if not master:
        raise EcsflowError("the DB initialisation needs the database's master secret (ManageMasterUserPassword), "
                           "which the DB instance does not have yet; run `ecsflow up` again")
    db = spec.database
    environment = {"PGHOST": str(database.attrs.get("endpoint") or ""), "PGPORT": str(database.attrs.get("port")
                                                                                        or db.port),
                   "PGSSLMODE": "require", "PGCONNECT_TIMEOUT": "30",
                   "ECSFLOW_DBINIT_SQL": init_sql(db.db_name, db.app_username)}
    secrets = {"PGUSER": f"{master}:username::", "PGPASSWORD": f"{master}:password::",
               "APP_DB_PASSWORD": f"{app_secret_arn}:password::"}
    return {
        "family": family(ctx),
        "executionRoleArn": execution_role_arn,
        "networkMode": "awsvpc",
        "requiresCompatibilities": ["FARGATE"],
        "cpu": "256",
        "memory": "512",
        "runtimePlatform": {"cpuArchitecture": "X86_64", "operatingSystemFamily": "LINUX"},
        "volumes": [],
        "containerDefinitions": [{
            "name": CONTAINER,
            "image": db.psql_image,
            "essential": True,
            "memory": 512,  # a container-level value: run_task needs one
            "command": COMMAND,
            "environment": [{"name": k, "value": v} for k, v in sorted(environment.items())],
            "secrets": [{"name": k, "valueFrom": v} for k, v in sorted(secrets.items())],
            "logConfiguration": {"logDriver": "awslogs", "options": {
                "awslogs-group": log_group(spec).name(ctx), "awslogs-region": ctx.region,
                "awslogs-stream-prefix": INIT_COMPONENT, "mode": "non-blocking", "max-buffer-size": "4m"}},
            "readonlyRootFilesystem": True,
            "mountPoints": [],
            "linuxParameters": {"initProcessEnabled": True},
        }],
    }


@aws_task(task_run_name="ensure execution role dbinit")
def ensure_execution_role(spec: Stack, ctx: AwsContext, database: Observed, app_secret: Observed) -> Observed:
    master = str(database.attrs.get("master_secret_arn") or "")
    if not master:
        raise EcsflowError("the DB initialisation needs the database's master secret, which the DB instance does "
                           "not have yet; run `ecsflow up` again")
    return iam.ensure_role.fn(ctx, execution_role(spec, ctx, master, app_secret.id))


@aws_task(task_run_name="ensure task definition dbinit")
def ensure_task_definition(spec: Stack, ctx: AwsContext, *, execution_role: Observed, database: Observed,
                           app_secret: Observed, log_group: Observed) -> Observed:
    """A new revision only when the normalised definition differs from the latest one."""
    from tasks import services

    wanted = task_definition(spec, ctx, execution_role_arn=execution_role.id, database=database,
                             app_secret_arn=app_secret.id)
    data = services._describe_task_definition(ctx, wanted["family"])
    observed = services._td_observed(data) if data else None
    if observed is not None:
        refuse_foreign(ctx, observed, f"task definition family {wanted['family']}")
    if observed is None or services.task_definition_diffs(observed, wanted):
        got = call(f"register task definition {wanted['family']}", ctx.ecs().register_task_definition,
                   tags=ecs_tags(ctx, INIT_COMPONENT), **wanted)
        observed = services._td_observed({**got["taskDefinition"], "tags": ecs_tags(ctx, INIT_COMPONENT)})
    return observed


# ---------------------------------------------------------------- running it


def init_task(spec: Stack, ctx: AwsContext, task_definition_arn: str) -> one_off.OneOffTask:
    """The one-off task: psql with the script, once per task definition revision and script."""
    return one_off.OneOffTask(
        what="the database initialisation", on_failure="the services are not rolled out", container=CONTAINER,
        command=tuple(COMMAND), log_group=log_group(spec).name(ctx), log_stream_prefix=INIT_COMPONENT,
        started_by=STARTED_BY, timeout=TIMEOUT,
        token_parts=("dbinit", task_definition_arn.rsplit("/", 1)[-1], script_digest(spec)),
        tags=ecs_tags(ctx, INIT_COMPONENT))


@aws_task(task_run_name="run database initialisation")
def run_dbinit(spec: Stack, ctx: AwsContext, *, cluster: Observed, task_definition: Observed,
               private_subnets: list[Observed], security_group: Observed, app_secret: Observed) -> Observed | None:
    """Run the initialisation once per script: skipped when the app secret carries this script's digest."""
    digest = script_digest(spec)
    current = find_app_secret(ctx)
    if current is not None and current.tags.get(DONE_TAG) == digest:
        return None
    task_arn, _ = one_off.run_one_off_task(
        ctx, init_task(spec, ctx, task_definition.id), cluster_arn=cluster.id, task_definition_arn=task_definition.id,
        subnet_ids=[s.id for s in private_subnets], security_group_id=security_group.id, failure=DbInitFailed)
    call("mark the database as initialised", ctx.client("secretsmanager").tag_resource, SecretId=app_secret.id,
         Tags=[{"Key": DONE_TAG, "Value": digest}])
    progress(f"database initialised: user {spec.database.app_username}, database {spec.database.db_name}")
    return Observed(id=task_arn, name="dbinit", attrs={"exit_code": 0, "digest": digest})


def plan_dbinit(spec: Stack, ctx: AwsContext) -> list[Change]:
    """`plan` rows: the app user's secret and whether the initialisation task would run."""
    if not spec.uses_app_database_user:
        return []
    return plan_app_secret(spec, ctx, find_app_secret(ctx))
