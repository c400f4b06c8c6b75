"""The services family: per service an execution role, a task role, a log group, the task
definition, the ECS service and its autoscaling.

- Execution role: pulls only the service's own repository, writes only its own log group,
  reads only the secrets its task definition names. Task role: empty unless the stack grants
  statements (or ECS Exec is on, which needs the SSM channels and its own log group).
- Task definition: Fargate, awsvpc, the service's CPU/memory, PORT and the stack's environment,
  secrets by ARN (the database's RDS-managed master secret for `database:*` references),
  a container health check, awslogs (non-blocking), a read-only root file system with
  ephemeral volumes on the writable paths (Fargate has no tmpfs), the runtime platform. A new
  revision is registered only when the normalised definition differs from the latest one.
- Service: private subnets, no public IP, `sg-ecs`, its target group, health-check grace,
  rolling 100 % / 200 % with the circuit breaker and rollback, ECS Exec by stack setting,
  tags propagated from the service, the cluster's capacity strategy. Desired count 0 while no
  image is known (never pushed and no `image_tag` in the stack); once running, autoscaling
  owns the count and ecsflow leaves it alone.
- Autoscaling: target tracking on CPU and on ALB requests per target, registered once the
  service has an image (registering min 2 on a service with no image would start failing tasks).

Settings AWS does not always echo (moto drops the circuit breaker, the grace period, the
capacity strategy and, on a new service, enableExecuteCommand) are compared only when present,
so they never cause an update loop.
"""

from __future__ import annotations

import hashlib
import shlex
from typing import Any

from spec import Stack
from spec.stack import app_database_secret_key, app_secret_name, database_secret_key
from tasks import app_secrets, iam, logs, one_off
from tasks.aws import AwsContext, EcsflowError, NotOurs, call, call_or_none, error_code, progress, wait_until
from tasks.cluster import cluster_name, ecs_tag_map, ecs_tags, exec_log_group
from tasks.contract import Change, FieldDiff, Observed, aws_task, current_of, diff_fields, project, require_ours
from tasks.load_balancer import partition, resource_label

ECS_PRINCIPAL = "ecs-tasks.amazonaws.com"
IMAGE_TAG_KEY = "ecsflow:image"  # on the ECR repository, written by the images phase: "{tag}@{digest}"
NO_IMAGE_TAG = "ecsflow-no-image-yet"
SERVICE_TIMEOUT = 15 * 60
HEALTH_START_PERIOD_MAX = 300  # seconds, ECS's limit for a container health check's start period


def family(ctx: AwsContext, service: str) -> str:
    return ctx.name(service, limit=255)


def service_name(ctx: AwsContext, service: str) -> str:
    return ctx.name(service, limit=255)


def td_component(service: str) -> str:
    return f"taskdef-{service}"


def svc_component(service: str) -> str:
    return f"service-{service}"


# ---------------------------------------------------------------- roles and log groups


def log_group(spec: Stack, service: str) -> logs.LogGroupSpec:
    return logs.LogGroupSpec(f"ecs-{service}", spec.log_retention_days)


def _log_group_arn(ctx: AwsContext, name: str) -> str:
    return f"arn:{partition(ctx.region)}:logs:{ctx.region}:{ctx.account_id()}:log-group:{name}"


def secret_arns(spec: Stack, service: str, database: Observed | None) -> list[str]:
    """Every secret ARN the task definition names (without a JSON key suffix), sorted."""
    arns = set()
    for ref in spec.services[service].secrets.values():
        if database_secret_key(ref) is not None:
            arns.add(_master_secret(spec, service, database))
        elif app_database_secret_key(ref) is not None:
            arns.add(_app_database_secret(AwsContext.for_stack(spec), service))
        elif app_secret_name(ref) is not None:
            continue  # the stack's own app secrets: granted by name pattern in execution_role
        elif ":secretsmanager:" in ref:
            arns.add(":".join(ref.split(":")[:7]))  # arn:aws:secretsmanager:region:account:secret:name-AbCdEf
        else:
            arns.add(ref)
    return sorted(arns)


def _app_secret_arn(ctx: AwsContext, service: str, name: str) -> str:
    arn = app_secrets.app_secret_arn(ctx, name)
    if not arn:
        raise EcsflowError(f"service {service} takes app secret {name}, which does not exist yet; `ecsflow up` "
                           f"creates it (app_secrets in the stack file) before the task definitions")
    return arn


def _app_database_secret(ctx: AwsContext, service: str) -> str:
    """The application database user's secret (tasks/dbinit.py makes it before the task definitions)."""
    from tasks import dbinit

    found = dbinit.find_app_secret(ctx)
    if found is None:
        raise EcsflowError(f"service {service} takes the application database user's secret (database_app), "
                           f"which does not exist yet; `ecsflow up` creates it before the task definitions")
    return found.id


def _master_secret(spec: Stack, service: str, database: Observed | None) -> str:
    arn = (database.attrs.get("master_secret_arn") if database else None)
    if not arn:
        raise EcsflowError(f"service {service} takes the database's master secret, but the DB instance has none "
                           f"yet (ManageMasterUserPassword); run `ecsflow up` again once the database exists")
    return str(arn)


def execution_role(spec: Stack, ctx: AwsContext, service: str, repository_arn: str,
                   secrets: list[str]) -> iam.RoleSpec:
    group = _log_group_arn(ctx, log_group(spec, service).name(ctx))
    statements: list[dict[str, Any]] = [
        {"Sid": "EcrLogin", "Effect": "Allow", "Action": "ecr:GetAuthorizationToken", "Resource": "*"},
        {"Sid": "PullOwnImages", "Effect": "Allow",
         "Action": ["ecr:BatchCheckLayerAvailability", "ecr:GetDownloadUrlForLayer", "ecr:BatchGetImage"],
         "Resource": repository_arn},
        {"Sid": "WriteOwnLogs", "Effect": "Allow", "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
         "Resource": [group, f"{group}:*"]},
    ]
    vault = [a for a in secrets if ":secretsmanager:" in a]
    params = [a for a in secrets if ":ssm:" in a]
    if vault:
        statements.append({"Sid": "ReadOwnSecrets", "Effect": "Allow", "Action": "secretsmanager:GetSecretValue",
                           "Resource": vault})
    if params:
        statements.append({"Sid": "ReadOwnParameters", "Effect": "Allow", "Action": "ssm:GetParameters",
                           "Resource": params})
    statements += app_secret_statements(spec, ctx, service)
    return iam.RoleSpec(component=f"{service}-execution", service_principal=ECS_PRINCIPAL,
                        inline_policies={"pull-logs-secrets": {"Version": "2012-10-17", "Statement": statements}},
                        description=f"ecsflow {ctx.prefix}: ECS pulls, logs and reads secrets for {service}")


def app_secret_statements(spec: Stack, ctx: AwsContext, service: str) -> list[dict[str, Any]]:
    """Read (and decrypt through Secrets Manager) only the app secrets this service names. The ARN
    pattern is the secret's name plus the 6 random characters AWS appends (`-??????`), so neither
    another service's secret nor one named `{name}-more` matches."""
    names = sorted({n for n in (app_secret_name(r) for r in spec.services[service].secrets.values()) if n})
    if not names:
        return []
    base = f"arn:{partition(ctx.region)}:secretsmanager:{ctx.region}:{ctx.account_id()}:secret:"
    arns = [f"{base}{app_secrets.secret_name(ctx, n)}-??????" for n in names]
    return [
        {"Sid": "ReadOwnAppSecrets", "Effect": "Allow", "Action": "secretsmanager:GetSecretValue", "Resource": arns},
        # The key is the stack's "secrets" key; the conditions confine its use to Secrets Manager
        # decrypting exactly these secrets (their ARN is the encryption context).
        {"Sid": "DecryptOwnAppSecrets", "Effect": "Allow", "Action": "kms:Decrypt",
         "Resource": f"arn:{partition(ctx.region)}:kms:{ctx.region}:{ctx.account_id()}:key/*",
         "Condition": {"StringEquals": {"kms:ViaService": f"secretsmanager.{ctx.region}.amazonaws.com"},
                       "StringLike": {"kms:EncryptionContext:SecretARN": arns}}},
    ]


def task_role(spec: Stack, ctx: AwsContext, service: str) -> iam.RoleSpec:
    svc = spec.services[service]
    policies: dict[str, dict[str, Any]] = {}
    if svc.task_role_statements:
        policies["app"] = {"Version": "2012-10-17", "Statement": list(svc.task_role_statements)}
    if svc.enable_exec:
        group = _log_group_arn(ctx, exec_log_group(spec).name(ctx))
        policies["ecs-exec"] = {"Version": "2012-10-17", "Statement": [
            {"Sid": "ExecChannels", "Effect": "Allow", "Resource": "*",
             "Action": ["ssmmessages:CreateControlChannel", "ssmmessages:CreateDataChannel",
                        "ssmmessages:OpenControlChannel", "ssmmessages:OpenDataChannel"]},
            {"Sid": "ExecLogGroups", "Effect": "Allow", "Action": "logs:DescribeLogGroups", "Resource": "*"},
            {"Sid": "ExecSessionLogs", "Effect": "Allow", "Resource": [group, f"{group}:*"],
             "Action": ["logs:CreateLogStream", "logs:DescribeLogStreams", "logs:PutLogEvents"]},
        ]}
    return iam.RoleSpec(component=f"{service}-task", service_principal=ECS_PRINCIPAL, inline_policies=policies,
                        description=f"ecsflow {ctx.prefix}: what the {service} app may do in AWS")


# ---------------------------------------------------------------- images


def service_image(spec: Stack, ctx: AwsContext, service: str, repository: Observed) -> tuple[str, bool]:
    """(image, known): the stack's `image_tag`, else the tag the images phase recorded on the
    repository (read fresh: the phase may have just recorded it), else a placeholder that marks
    the service as not runnable yet."""
    uri = repository.attrs["uri"]
    tag = spec.services[service].image_tag
    if tag is None:
        got = call(f"read the tags of {repository.name}", ctx.ecr().list_tags_for_resource, resourceArn=repository.id)
        recorded = {t["Key"]: t["Value"] for t in got.get("tags", [])}.get(IMAGE_TAG_KEY)
        tag = recorded.partition("@")[0] if recorded else None
    return (f"{uri}:{tag}", True) if tag else (f"{uri}:{NO_IMAGE_TAG}", False)


# ---------------------------------------------------------------- task definitions


def container_definition(spec: Stack, ctx: AwsContext, service: str, image: str, log_group_name: str,
                         database: Observed | None) -> dict[str, Any]:
    svc = spec.services[service]
    environment = {"PORT": str(svc.port)} if svc.port is not None else {}
    if svc.uses_database_secret and database is not None:
        environment.update(DB_HOST=str(database.attrs.get("endpoint") or ""), DB_PORT=str(database.attrs["port"]),
                           DB_DATABASE=spec.database.db_name)
    environment.update(svc.environment)
    secrets = []
    for name, ref in sorted(svc.secrets.items()):
        key = database_secret_key(ref)
        app_secret = app_secret_name(ref)
        app_key = app_database_secret_key(ref)
        if app_key is not None:
            arn = _app_database_secret(ctx, service)
            secrets.append({"name": name, "valueFrom": f"{arn}:{app_key}::" if app_key else arn})
        elif app_secret is not None:
            secrets.append({"name": name, "valueFrom": _app_secret_arn(ctx, service, app_secret)})
        elif key is None:
            secrets.append({"name": name, "valueFrom": ref})
        else:
            arn = _master_secret(spec, service, database)
            secrets.append({"name": name, "valueFrom": f"{arn}:{key}::" if key else arn})
    probe = svc.container_health_check or (
        f"wget -q -O /dev/null http://127.0.0.1:{svc.port}{svc.health_check_path} || exit 1")
    container: dict[str, Any] = {
        "name": service,
        "image": image,
        "essential": True,
        # The task's whole memory as the container's hard limit: the same in effect, and one-off
        # tasks (run_task) need a container-level value.
        "memory": svc.memory,
        "portMappings": [{"containerPort": svc.port, "protocol": "tcp"}] if svc.port is not None else [],
        "environment": [{"name": k, "value": v} for k, v in sorted(environment.items())],
        "healthCheck": {"command": ["CMD-SHELL", probe], "interval": 30, "timeout": 5, "retries": 3,
                        "startPeriod": min(svc.health_check_grace_seconds, HEALTH_START_PERIOD_MAX)},
        "logConfiguration": {"logDriver": "awslogs", "options": {
            "awslogs-group": log_group_name, "awslogs-region": ctx.region, "awslogs-stream-prefix": service,
            # A full log buffer must not block the app; 25 MiB absorbs bursts.
            "mode": "non-blocking", "max-buffer-size": "25m"}},
        "readonlyRootFilesystem": svc.read_only_root_filesystem,
        "mountPoints": [{"sourceVolume": _volume(i), "containerPath": path, "readOnly": False}
                        for i, path in enumerate(svc.writable_paths)] if svc.read_only_root_filesystem else [],
        "linuxParameters": {"initProcessEnabled": True},
    }
    if secrets:
        container["secrets"] = secrets
    if svc.command:
        container["command"] = shlex.split(svc.command)
    return container


def _volume(index: int) -> str:
    return f"scratch-{index}"


def task_definition(spec: Stack, ctx: AwsContext, service: str, *, image: str, execution_role_arn: str,
                    task_role_arn: str, log_group_name: str, database: Observed | None) -> dict[str, Any]:
    """The RegisterTaskDefinition request (without tags): also the shape plans compare."""
    svc = spec.services[service]
    return {
        "family": family(ctx, service),
        "taskRoleArn": task_role_arn,
        "executionRoleArn": execution_role_arn,
        "networkMode": "awsvpc",
        "requiresCompatibilities": ["FARGATE"],
        "cpu": str(svc.cpu),
        "memory": str(svc.memory),
        "runtimePlatform": {"cpuArchitecture": svc.cpu_architecture, "operatingSystemFamily": "LINUX"},
        "volumes": [{"name": _volume(i)} for i in range(len(svc.writable_paths))]
        if svc.read_only_root_filesystem else [],
        "containerDefinitions": [container_definition(spec, ctx, service, image, log_group_name, database)],
    }


def _describe_task_definition(ctx: AwsContext, ref: str) -> dict[str, Any] | None:
    try:
        got = call_or_none(f"look up task definition {ref}", ctx.ecs().describe_task_definition,
                           taskDefinition=ref, include=["TAGS"])
    except EcsflowError as exc:
        # ECS answers a family with no active revision with ClientException "Unable to describe task definition".
        if exc.__cause__ is not None and error_code(exc.__cause__) == "ClientException":
            return None
        raise
    if got is None or got["taskDefinition"].get("status") != "ACTIVE":
        return None
    return {**got["taskDefinition"], "tags": got.get("tags", [])}


def _td_observed(data: dict[str, Any]) -> Observed:
    return Observed(id=data["taskDefinitionArn"], name=data["family"], tags=ecs_tag_map(data.get("tags")),
                    attrs={"revision": data.get("revision"), "definition": data,
                           "image": (data.get("containerDefinitions") or [{}])[0].get("image")})


def find_task_definition(ctx: AwsContext, service: str) -> Observed | None:
    """The family's latest ACTIVE revision."""
    data = _describe_task_definition(ctx, family(ctx, service))
    return _td_observed(data) if data else None


def task_definition_diffs(observed: Observed, wanted: dict[str, Any]) -> tuple[FieldDiff, ...]:
    """Normalised comparison: only what we set, lists sorted, the container field by field."""
    current = observed.attrs["definition"]
    top = {k: v for k, v in wanted.items() if k != "containerDefinitions"}
    diffs = diff_fields(project({k: current.get(k) for k in top}, top), top)
    want_container = wanted["containerDefinitions"][0]
    containers = current.get("containerDefinitions") or []
    have = next((c for c in containers if c.get("name") == want_container["name"]), None)
    if have is None or len(containers) != 1:
        names = [c.get("name") for c in containers]
        return (*diffs, FieldDiff("containerDefinitions", names, [want_container["name"]]))
    container_diffs = diff_fields(project(have, want_container), want_container)
    return diffs + tuple(FieldDiff(f"container.{d.field}", d.current, d.wanted) for d in container_diffs)


def plan_task_definition(ctx: AwsContext, service: str, observed: Observed | None,
                         wanted: dict[str, Any] | None, note: str = "") -> Change:
    name = family(ctx, service)
    if observed is None:
        return Change("task definition", name, "create", note=note)
    if wanted is None:
        return Change("task definition", name, "update", note=note)
    diffs = task_definition_diffs(observed, wanted)
    if not diffs:
        return Change("task definition", name, "no-op")
    return Change("task definition", name, "update", diffs,
                  note=f"registers revision {int(observed.attrs['revision'] or 0) + 1}")


@aws_task(task_run_name="ensure task definition {service}")
def ensure_task_definition(spec: Stack, ctx: AwsContext, service: str, *, execution_role: Observed,
                           task_role: Observed, log_group: Observed, repository: Observed,
                           database: Observed | None) -> Observed:
    """Register a revision only when the normalised definition differs from the latest one."""
    image, known = service_image(spec, ctx, service, repository)
    wanted = task_definition(spec, ctx, service, image=image, execution_role_arn=execution_role.id,
                             task_role_arn=task_role.id, log_group_name=log_group.name, database=database)
    observed = find_task_definition(ctx, service)
    if observed is not None and not ctx.owns(observed.tags):
        raise NotOurs(f"task definition family {wanted['family']} exists without the tags ecsflow:stack="
                      f"{ctx.stack}, ecsflow:env={ctx.env}; ecsflow will not take it over")
    if observed is None or task_definition_diffs(observed, wanted):
        data = call(f"register task definition {wanted['family']}", ctx.ecs().register_task_definition,
                    tags=ecs_tags(ctx, td_component(service)), **wanted)
        observed = _td_observed({**data["taskDefinition"], "tags": data.get("tags") or ecs_tags(
            ctx, td_component(service))})
    observed.attrs.update(image=image, image_known=known)
    return observed


def inventory_task_definitions(ctx: AwsContext) -> list[Observed]:
    """Every revision of our families, ACTIVE or INACTIVE (deregistered revisions keep their tags)."""
    ecs = ctx.ecs()
    families: set[str] = set()
    for status in ("ACTIVE", "INACTIVE"):
        pages = ecs.get_paginator("list_task_definition_families").paginate(familyPrefix=f"{ctx.prefix}-",
                                                                            status=status)
        families.update(f for page in call("list task definition families", lambda p=pages: list(p))
                        for f in page.get("families", []))
    found = []
    for name in sorted(families):
        for status in ("ACTIVE", "INACTIVE"):
            pages = ecs.get_paginator("list_task_definitions").paginate(familyPrefix=name, status=status)
            for page in call(f"list the revisions of {name}", lambda p=pages: list(p)):
                for arn in page.get("taskDefinitionArns", []):
                    got = call_or_none(f"read {arn}", ecs.describe_task_definition, taskDefinition=arn,
                                       include=["TAGS"])
                    if got and ctx.owns(ecs_tag_map(got.get("tags"))):
                        found.append(Observed(id=arn, name=arn.rsplit("/", 1)[-1],
                                              tags=ecs_tag_map(got.get("tags")),
                                              attrs={"status": got["taskDefinition"].get("status")}))
    return found


@aws_task(task_run_name="delete task definition {observed.name}")
def delete_task_definition(observed: Observed, ctx: AwsContext) -> None:
    """Deregister (if still active), then delete the revision."""
    require_ours(ctx, observed.tags, f"task definition {observed.name}")
    ecs = ctx.ecs()
    if observed.attrs.get("status") == "ACTIVE":
        call_or_none(f"deregister {observed.name}", ecs.deregister_task_definition, taskDefinition=observed.id)
    call_or_none(f"delete {observed.name}", ecs.delete_task_definitions, taskDefinitions=[observed.id])


# ---------------------------------------------------------------- services

SERVICE_OPTIONAL_ECHO = {"health_check_grace", "deployment", "capacity_strategy", "enable_exec"}
DEPLOYMENT = {"maximumPercent": 200, "minimumHealthyPercent": 100,
              "deploymentCircuitBreaker": {"enable": True, "rollback": True}}


def _service_observed(data: dict[str, Any]) -> Observed:
    attrs: dict[str, Any] = {
        "task_definition": data.get("taskDefinition"),
        "load_balancers": [{k: lb.get(k) for k in ("targetGroupArn", "containerName", "containerPort")}
                           for lb in data.get("loadBalancers", [])],
        "network": (data.get("networkConfiguration") or {}).get("awsvpcConfiguration"),
        "propagate_tags": data.get("propagateTags"),
        "desired_count": data.get("desiredCount"),
        "running_count": data.get("runningCount"),
        "status": data.get("status"),
        "deployments": data.get("deployments", []),
    }
    if "enableExecuteCommand" in data:
        attrs["enable_exec"] = bool(data["enableExecuteCommand"])
    if data.get("healthCheckGracePeriodSeconds") is not None:
        attrs["health_check_grace"] = data["healthCheckGracePeriodSeconds"]
    if data.get("deploymentConfiguration"):
        attrs["deployment"] = data["deploymentConfiguration"]
    if data.get("capacityProviderStrategy"):
        attrs["capacity_strategy"] = [{"capacityProvider": s["capacityProvider"], "weight": s.get("weight", 0),
                                       "base": s.get("base", 0)} for s in data["capacityProviderStrategy"]]
    return Observed(id=data["serviceArn"], name=data["serviceName"], tags=ecs_tag_map(data.get("tags")), attrs=attrs)


def find_service(ctx: AwsContext, service: str) -> Observed | None:
    name = service_name(ctx, service)
    got = call_or_none(f"look up ECS service {name}", ctx.ecs().describe_services, cluster=cluster_name(ctx),
                       services=[name], include=["TAGS"])
    live = [s for s in (got or {}).get("services", []) if s.get("status") in ("ACTIVE", "DRAINING")]
    return _service_observed(live[0]) if live else None


def desired_count(spec: Stack, service: str, image_known: bool, observed: Observed | None) -> int:
    """0 without an image; the stack's count at creation (or from 0); then autoscaling owns it."""
    svc = spec.services[service]
    if not image_known:
        return 0
    low, high = svc.scaling_bounds
    wanted = min(max(svc.desired_count, low), high) if svc.autoscaling.enabled else svc.desired_count
    current = observed.attrs.get("desired_count") if observed else None
    if svc.autoscaling.enabled and current:
        return int(current)
    return wanted


def deployment_config(spec: Stack, ctx: AwsContext, service: str) -> dict[str, Any]:
    """The rolling update with the circuit breaker, plus the monitoring phase's deployment alarms: ECS rolls a
    rollout back when one of them fires. Names only (from the stack), so the alarms may be made before or
    after the service."""
    from tasks.monitoring import deployment_alarm_names

    names = deployment_alarm_names(spec, ctx, service)
    if not names:
        return DEPLOYMENT
    return {**DEPLOYMENT, "alarms": {"alarmNames": names, "enable": True, "rollback": True}}


def _service_wanted(spec: Stack, ctx: AwsContext, service: str, *, task_definition_arn: str,
                    target_group_arn: str | None, subnet_ids: list[str], security_group_id: str, image_known: bool,
                    observed: Observed | None) -> dict[str, Any]:
    """A service with load_balanced: false (a worker) has no target group: target_group_arn is None."""
    svc = spec.services[service]
    wanted = {
        "task_definition": task_definition_arn,
        "load_balancers": [{"targetGroupArn": target_group_arn, "containerName": service,
                            "containerPort": svc.port}] if target_group_arn else [],
        "network": {"subnets": sorted(subnet_ids), "securityGroups": [security_group_id],
                    "assignPublicIp": "DISABLED"},
        "health_check_grace": svc.health_check_grace_seconds,
        "deployment": deployment_config(spec, ctx, service),
        "enable_exec": svc.enable_exec,
        "propagate_tags": "SERVICE",
        "capacity_strategy": [{"capacityProvider": s.provider, "weight": s.weight, "base": s.base}
                              for s in spec.capacity_strategy],
        "desired_count": desired_count(spec, service, image_known, observed),
        "tags": ctx.tag_dict(svc_component(service)),
    }
    if not target_group_arn:
        del wanted["health_check_grace"]  # a grace period for load balancer health checks needs a load balancer
    return wanted


def service_diffs(observed: Observed, wanted: dict[str, Any]) -> tuple[FieldDiff, ...]:
    current = current_of(observed, wanted)
    current["deployment"] = project(observed.attrs.get("deployment"), wanted["deployment"])
    current["network"] = project(observed.attrs.get("network"), wanted["network"])
    return tuple(d for d in diff_fields(current, wanted)
                 if not (d.field in SERVICE_OPTIONAL_ECHO and d.field not in observed.attrs))


def plan_service(ctx: AwsContext, service: str, observed: Observed | None, wanted: dict[str, Any] | None,
                 note: str = "") -> Change:
    name = service_name(ctx, service)
    if observed is None:
        return Change("ecs service", name, "create", note=note)
    if wanted is None:
        return Change("ecs service", name, "update", note=note)
    diffs = service_diffs(observed, wanted)
    return Change("ecs service", name, "update" if diffs else "no-op", diffs,
                  note=note if diffs else "")


def _client_token(ctx: AwsContext, *parts: str) -> str:
    return hashlib.sha256(ctx.token(*parts).encode()).hexdigest()[:32]  # ECS: at most 36 characters


@aws_task(task_run_name="ensure ecs service {service}")
def ensure_service(spec: Stack, ctx: AwsContext, service: str, *, cluster: Observed, task_definition: Observed,
                   target_group: Observed | None, private_subnets: list[Observed],
                   security_group: Observed) -> Observed:
    ecs = ctx.ecs()
    name = service_name(ctx, service)
    image_known = bool(task_definition.attrs.get("image_known"))
    observed = find_service(ctx, service)
    wanted = _service_wanted(spec, ctx, service, task_definition_arn=task_definition.id,
                             target_group_arn=target_group.id if target_group else None,
                             subnet_ids=[s.id for s in private_subnets],
                             security_group_id=security_group.id, image_known=image_known, observed=observed)
    if observed is None:
        grace = {}
        if "health_check_grace" in wanted:
            grace["healthCheckGracePeriodSeconds"] = wanted["health_check_grace"]
        data = call(f"create ECS service {name}", ecs.create_service, cluster=cluster.id, serviceName=name,
                    taskDefinition=task_definition.id, desiredCount=wanted["desired_count"],
                    capacityProviderStrategy=wanted["capacity_strategy"], platformVersion="LATEST",
                    networkConfiguration={"awsvpcConfiguration": wanted["network"]},
                    loadBalancers=wanted["load_balancers"],
                    **grace,
                    deploymentConfiguration=wanted["deployment"], deploymentController={"type": "ECS"},
                    schedulingStrategy="REPLICA", enableExecuteCommand=wanted["enable_exec"],
                    propagateTags="SERVICE", enableECSManagedTags=True,
                    clientToken=_client_token(ctx, "service", service),
                    tags=ecs_tags(ctx, svc_component(service)))["service"]
        observed = _service_observed({**data, "tags": ecs_tags(ctx, svc_component(service))})
    else:
        if not ctx.owns(observed.tags):
            raise NotOurs(f"ECS service {name} exists without the tags ecsflow:stack={ctx.stack}, "
                          f"ecsflow:env={ctx.env}; ecsflow will not take it over")
        fields = {d.field for d in service_diffs(observed, wanted)}
        args: dict[str, Any] = {}
        if "task_definition" in fields:
            args["taskDefinition"] = task_definition.id
        if "desired_count" in fields:
            args["desiredCount"] = wanted["desired_count"]
        if "network" in fields:
            args["networkConfiguration"] = {"awsvpcConfiguration": wanted["network"]}
        if "load_balancers" in fields:
            args["loadBalancers"] = wanted["load_balancers"]
        if "health_check_grace" in fields:
            args["healthCheckGracePeriodSeconds"] = wanted["health_check_grace"]
        if "deployment" in fields:
            args["deploymentConfiguration"] = wanted["deployment"]
        if "propagate_tags" in fields:
            args["propagateTags"] = "SERVICE"
        if "enable_exec" in fields:
            args.update(enableExecuteCommand=wanted["enable_exec"], forceNewDeployment=True)
        if "capacity_strategy" in fields:
            args.update(capacityProviderStrategy=wanted["capacity_strategy"], forceNewDeployment=True)
        if args:
            data = call(f"update ECS service {name} ({', '.join(sorted(fields - {'tags'}))})", ecs.update_service,
                        cluster=cluster.id, service=name, **args)["service"]
            observed = _service_observed({**data, "tags": [{"key": k, "value": v}
                                                            for k, v in observed.tags.items()]})
        if "tags" in fields:
            call(f"tag ECS service {name}", ecs.tag_resource, resourceArn=observed.id,
                 tags=ecs_tags(ctx, svc_component(service)))
            observed.tags.update(wanted["tags"])
    observed.attrs["image_known"] = image_known
    return observed


def inventory_services(ctx: AwsContext) -> list[Observed]:
    ecs = ctx.ecs()
    cluster = cluster_name(ctx)
    pages = ecs.get_paginator("list_services").paginate(cluster=cluster)
    try:
        arns = [a for page in call(f"list the services of {cluster}", lambda: list(pages))
                for a in page.get("serviceArns", [])]
    except EcsflowError as exc:
        if exc.__cause__ is not None and "ClusterNotFound" in error_code(exc.__cause__):
            return []
        raise
    found = []
    for start in range(0, len(arns), 10):
        got = call("read ECS services", ecs.describe_services, cluster=cluster, services=arns[start:start + 10],
                   include=["TAGS"])
        found += [_service_observed(s) for s in got.get("services", []) if s.get("status") in ("ACTIVE", "DRAINING")]
    return [o for o in found if ctx.owns(o.tags)]


@aws_task(task_run_name="delete ecs service {observed.name}")
def delete_service(observed: Observed, ctx: AwsContext) -> None:
    """Scale to 0, delete, and wait until its tasks are gone (their ENIs hold the subnets and sg-ecs)."""
    require_ours(ctx, observed.tags, f"ECS service {observed.name}")
    ecs = ctx.ecs()
    cluster = cluster_name(ctx)
    try:
        call_or_none(f"scale {observed.name} to 0", ecs.update_service, cluster=cluster, service=observed.name,
                     desiredCount=0)
    except EcsflowError as exc:
        if exc.__cause__ is None or error_code(exc.__cause__) != "ServiceNotActiveException":
            raise
    call_or_none(f"delete ECS service {observed.name}", ecs.delete_service, cluster=cluster, service=observed.name,
                 force=True)

    def gone() -> bool:
        got = call_or_none(f"read {observed.name}", ecs.describe_services, cluster=cluster, services=[observed.name])
        return all(s.get("status") == "INACTIVE" for s in (got or {}).get("services", []))

    wait_until(f"ECS service {observed.name} to drain and be deleted", gone, timeout=SERVICE_TIMEOUT,
               poll=ctx.poll_seconds)


# ---------------------------------------------------------------- autoscaling

DIMENSION = "ecs:service:DesiredCount"


def scaling_resource_id(ctx: AwsContext, service: str) -> str:
    return f"service/{cluster_name(ctx)}/{service_name(ctx, service)}"


def policy_name(ctx: AwsContext, service: str, metric: str) -> str:
    return f"{service_name(ctx, service)}-{metric}"


def _scaling_wanted(spec: Stack, ctx: AwsContext, service: str, label: str | None) -> dict[str, Any]:
    svc = spec.services[service]
    auto = svc.autoscaling
    low, high = svc.scaling_bounds
    cooldowns = {"ScaleInCooldown": auto.scale_in_cooldown_seconds, "ScaleOutCooldown": auto.scale_out_cooldown_seconds,
                 "DisableScaleIn": False}
    policies: dict[str, Any] = {}
    if auto.cpu_target_percent is not None:
        policies[policy_name(ctx, service, "cpu")] = {
            "TargetValue": float(auto.cpu_target_percent),
            "PredefinedMetricSpecification": {"PredefinedMetricType": "ECSServiceAverageCPUUtilization"},
            **cooldowns}
    if auto.requests_per_target is not None and svc.load_balanced:
        policies[policy_name(ctx, service, "requests")] = {
            "TargetValue": float(auto.requests_per_target),
            "PredefinedMetricSpecification": {"PredefinedMetricType": "ALBRequestCountPerTarget",
                                              "ResourceLabel": label or "(after the load balancer)"},
            **cooldowns}
    return {"min_capacity": low, "max_capacity": high, "policies": policies}


def find_scaling(ctx: AwsContext, service: str) -> Observed | None:
    aas = ctx.autoscaling()
    rid = scaling_resource_id(ctx, service)
    targets = call(f"look up the scalable target of {rid}", aas.describe_scalable_targets, ServiceNamespace="ecs",
                   ResourceIds=[rid], ScalableDimension=DIMENSION)["ScalableTargets"]
    if not targets:
        return None
    policies = call(f"look up the scaling policies of {rid}", aas.describe_scaling_policies, ServiceNamespace="ecs",
                    ResourceId=rid, ScalableDimension=DIMENSION)["ScalingPolicies"]
    return Observed(id=targets[0].get("ScalableTargetARN", rid), name=rid,
                    attrs={"min_capacity": targets[0]["MinCapacity"], "max_capacity": targets[0]["MaxCapacity"],
                           "policies": {p["PolicyName"]: p.get("TargetTrackingScalingPolicyConfiguration")
                                        for p in policies}})


def _scaling_current(observed: Observed, wanted: dict[str, Any]) -> dict[str, Any]:
    have = observed.attrs["policies"]
    return {"min_capacity": observed.attrs["min_capacity"], "max_capacity": observed.attrs["max_capacity"],
            "policies": {name: project(have[name], config) if name in have else None
                         for name, config in wanted["policies"].items()}
            | {name: have[name] for name in have if name not in wanted["policies"]}}


def plan_scaling(spec: Stack, ctx: AwsContext, service: str, observed: Observed | None, label: str | None,
                 image_known: bool) -> Change:
    name = scaling_resource_id(ctx, service)
    if not spec.services[service].autoscaling.enabled:
        return Change("autoscaling", name, "delete" if observed else "no-op")
    if not image_known and observed is None:
        return Change("autoscaling", name, "no-op", note="waits until the service has an image")
    if observed is None:
        return Change("autoscaling", name, "create")
    wanted = _scaling_wanted(spec, ctx, service, label)
    diffs = diff_fields(_scaling_current(observed, wanted), wanted)
    return Change("autoscaling", name, "update" if diffs else "no-op", diffs)


@aws_task(task_run_name="ensure autoscaling {service}")
def ensure_scaling(spec: Stack, ctx: AwsContext, service: str, *, ecs_service: Observed,
                   load_balancer: Observed | None, target_group: Observed | None) -> Observed | None:
    """Register the service's scalable target and its two target-tracking policies (the ALB one
    needs the target group to be attached to the load balancer by a listener or rule first)."""
    aas = ctx.autoscaling()
    rid = scaling_resource_id(ctx, service)
    observed = find_scaling(ctx, service)
    if not spec.services[service].autoscaling.enabled:
        if observed is not None:
            call(f"deregister the scalable target {rid}", aas.deregister_scalable_target, ServiceNamespace="ecs",
                 ResourceId=rid, ScalableDimension=DIMENSION)
        return None
    if not ecs_service.attrs.get("image_known") and observed is None:
        return None  # min 2 tasks of an image that does not exist would only fail; next `up` registers it
    label = resource_label(load_balancer.id, target_group.id) if load_balancer and target_group else None
    wanted = _scaling_wanted(spec, ctx, service, label)
    current = _scaling_current(observed, wanted) if observed else {"policies": {}}
    if observed is None or diff_fields(current, {k: wanted[k] for k in ("min_capacity", "max_capacity")}):
        call(f"register the scalable target {rid}", aas.register_scalable_target, ServiceNamespace="ecs",
             ResourceId=rid, ScalableDimension=DIMENSION, MinCapacity=wanted["min_capacity"],
             MaxCapacity=wanted["max_capacity"], Tags=ctx.tag_dict(f"autoscaling-{service}"))
    for name, config in wanted["policies"].items():
        if diff_fields(current["policies"], {name: config}):
            call(f"put scaling policy {name}", aas.put_scaling_policy, PolicyName=name, ServiceNamespace="ecs",
                 ResourceId=rid, ScalableDimension=DIMENSION, PolicyType="TargetTrackingScaling",
                 TargetTrackingScalingPolicyConfiguration=config)
    for name in set(current["policies"]) - set(wanted["policies"]):
        call_or_none(f"delete scaling policy {name}", aas.delete_scaling_policy, PolicyName=name,
                     ServiceNamespace="ecs", ResourceId=rid, ScalableDimension=DIMENSION)
    found = find_scaling(ctx, service)
    if found is None:
        raise EcsflowError(f"the scalable target {rid} vanished right after it was registered; run again")
    return found


def inventory_scaling(ctx: AwsContext, clusters: list[Observed]) -> list[Observed]:
    """Scalable targets of the services in our clusters (application autoscaling has no tag lookup
    that every emulator answers, so ownership comes from the cluster: its tags are the evidence)."""
    if not clusters:
        return []
    prefix = f"service/{cluster_name(ctx)}/"
    aas = ctx.autoscaling()
    pages = aas.get_paginator("describe_scalable_targets").paginate(ServiceNamespace="ecs")
    targets = [t for page in call("list scalable targets", lambda: list(pages))
               for t in page.get("ScalableTargets", []) if t["ResourceId"].startswith(prefix)]
    return [Observed(id=t.get("ScalableTargetARN", t["ResourceId"]), name=t["ResourceId"], tags=clusters[0].tags,
                     attrs={"dimension": t["ScalableDimension"]}) for t in targets]


@aws_task(task_run_name="delete autoscaling {observed.name}")
def delete_scaling(observed: Observed, ctx: AwsContext) -> None:
    """The policies (and their alarms) first, then the scalable target. (AWS also drops the policies
    with the target; an emulator may not.)"""
    require_ours(ctx, observed.tags, f"scalable target {observed.name}")
    aas = ctx.autoscaling()
    dimension = observed.attrs.get("dimension", DIMENSION)
    policies = call(f"list the scaling policies of {observed.name}", aas.describe_scaling_policies,
                    ServiceNamespace="ecs", ResourceId=observed.name, ScalableDimension=dimension)["ScalingPolicies"]
    for policy in policies:
        call_or_none(f"delete scaling policy {policy['PolicyName']}", aas.delete_scaling_policy,
                     PolicyName=policy["PolicyName"], ServiceNamespace="ecs", ResourceId=observed.name,
                     ScalableDimension=dimension)
    call_or_none(f"deregister {observed.name}", aas.deregister_scalable_target,
                 ServiceNamespace="ecs", ResourceId=observed.name, ScalableDimension=dimension)


# ---------------------------------------------------------------- the family's plan


def plan_services(spec: Stack, ctx: AwsContext) -> list[Change]:
    """Per service: roles, log group, task definition, service, autoscaling. What they depend on is
    looked up; a missing dependency plans the dependant as a create (or an update that waits)."""
    from tasks import database, kms, load_balancer, network, registry
    from tasks.cluster import find_cluster

    changes: list[Change] = []
    logs_key = kms.find_key(ctx, "logs")
    db = database.find_db_instance(spec, ctx) if any(s.uses_database_secret for s in spec.services.values()) else None
    cluster = find_cluster(ctx)
    vpc = network.find_vpc(ctx)
    subnets = [network.find_subnet(ctx, s) if vpc else None for s in network.subnet_specs(spec) if s.tier == "private"]
    sg_ecs = network.find_security_group(ctx, "sg-ecs") if vpc else None
    alb = load_balancer.find_load_balancer(ctx)
    for service, svc in spec.services.items():
        repo = registry.find_repository(spec, ctx, service)
        needs_db = svc.uses_database_secret
        db_ready = not needs_db or bool(db and db.attrs.get("master_secret_arn"))
        if svc.uses_app_database_secret:
            from tasks import dbinit

            db_ready = db_ready and dbinit.find_app_secret(ctx) is not None
        secrets = secret_arns(spec, service, db) if db_ready else None
        exec_spec = execution_role(spec, ctx, service, repo.id, secrets) if repo and secrets is not None else None
        exec_found = iam.find_role(ctx, exec_spec or execution_role(spec, ctx, service, "", []))
        changes.append(iam.plan_role(ctx, exec_spec, exec_found) if exec_spec else
                       Change("iam role", ctx.name(f"{service}-execution", 64), "create" if exec_found is None
                              else "update", note="waits for its repository or the database secret"))
        task_spec = task_role(spec, ctx, service)
        task_found = iam.find_role(ctx, task_spec)
        changes.append(iam.plan_role(ctx, task_spec, task_found))
        group_spec = log_group(spec, service)
        changes.append(logs.plan_log_group(ctx, group_spec, logs.find_log_group(ctx, group_spec), logs_key))

        observed_td = find_task_definition(ctx, service)
        image, known = service_image(spec, ctx, service, repo) if repo else ("", False)
        ready = repo is not None and db_ready and exec_found is not None and task_found is not None
        ready = ready and all(app_secrets.app_secret_arn(ctx, n) for n in
                              {app_secret_name(r) for r in svc.secrets.values()} - {None} if n)
        wanted_td = task_definition(spec, ctx, service, image=image, execution_role_arn=exec_found.id,
                                    task_role_arn=task_found.id, log_group_name=group_spec.name(ctx),
                                    database=db) if ready and exec_found and task_found else None
        td_change = plan_task_definition(ctx, service, observed_td, wanted_td,
                                         note="" if wanted_td else "waits for its roles, repository or database")
        changes.append(td_change)

        observed_svc = find_service(ctx, service) if cluster else None
        tg = load_balancer.find_target_group(ctx, service) if svc.load_balanced else None
        wanted_svc = None
        if observed_td is not None and (tg or not svc.load_balanced) and sg_ecs and all(subnets):
            td_arn = observed_td.id if td_change.action == "no-op" else "(new revision)"
            wanted_svc = _service_wanted(spec, ctx, service, task_definition_arn=td_arn,
                                         target_group_arn=tg.id if tg else None,
                                         subnet_ids=[s.id for s in subnets if s], security_group_id=sg_ecs.id,
                                         image_known=known, observed=observed_svc)
        changes.append(plan_service(ctx, service, observed_svc, wanted_svc,
                                    note="" if wanted_svc else "waits for its task definition or network"))
        label = load_balancer.resource_label(alb.id, tg.id) if alb and tg else None
        scaling = find_scaling(ctx, service) if observed_svc else None
        changes.append(plan_scaling(spec, ctx, service, scaling, label, known))
    return changes


@aws_task(task_run_name="ensure execution role {service}")
def ensure_execution_role(spec: Stack, ctx: AwsContext, service: str, repository: Observed,
                          database: Observed | None) -> Observed:
    """The execution role, scoped to the repository, log group and secrets known only at run time."""
    role = execution_role(spec, ctx, service, repository.id, secret_arns(spec, service, database))
    return iam.ensure_role.fn(ctx, role)


# ---------------------------------------------------------------- one-off migration task

MIGRATION_STARTED_BY = "ecsflow-migrate"


class MigrationFailed(one_off.OneOffTaskFailed):
    """The migration task did not exit 0: the service stays on its current revision."""


def migration_task(spec: Stack, ctx: AwsContext, service: str, task_definition_arn: str) -> one_off.OneOffTask:
    """The service's migration command, as a one-off task of the given revision."""
    command = spec.services[service].migration_command or ""
    return one_off.OneOffTask(
        what=f"the migration of {service} (`{command}`)", on_failure="the service stays on its current revision",
        container=service, command=tuple(shlex.split(command)), log_group=log_group(spec, service).name(ctx),
        log_stream_prefix=service, started_by=MIGRATION_STARTED_BY,
        timeout=spec.services[service].migration_timeout_seconds,
        token_parts=("migrate", task_definition_arn.rsplit("/", 1)[-1]), tags=ecs_tags(ctx, f"migration-{service}"))


@aws_task(task_run_name="run migration {service}")
def run_migration(spec: Stack, ctx: AwsContext, service: str, *, cluster: Observed, task_definition: Observed,
                  private_subnets: list[Observed], security_group: Observed) -> Observed | None:
    """Run the service's migration command as a one-off task of the revision about to roll out,
    wait for it, and fail (stopping the rollout) unless it exits 0. Nothing runs when the
    service already runs this revision or no image is known yet."""

    command = spec.services[service].migration_command
    if not command or not task_definition.attrs.get("image_known"):
        return None
    current = find_service(ctx, service)
    if current is not None and current.attrs.get("task_definition") == task_definition.id:
        return None  # already rolled out (and migrated)
    revision = task_definition.id.rsplit("/", 1)[-1]
    task_arn, tail = one_off.run_one_off_task(
        ctx, migration_task(spec, ctx, service, task_definition.id), cluster_arn=cluster.id,
        task_definition_arn=task_definition.id, subnet_ids=[s.id for s in private_subnets],
        security_group_id=security_group.id, failure=MigrationFailed)
    progress(f"migration of {service} ({revision}): `{command}` exited 0")
    return Observed(id=task_arn, name=f"migration {service}", attrs={"exit_code": 0, "log_tail": tail,
                                                                      "task_definition": task_definition.id})


# ---------------------------------------------------------------- verify health


class HealthCheckFailed(EcsflowError):
    """The service is not serving: the message lists every check that failed."""


def probe(url: str, timeout: float = 5.0) -> tuple[bool, str]:
    """GET the URL: (answered 2xx/3xx, what happened)."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="GET"), timeout=timeout) as answer:
            return 200 <= answer.status < 400, f"HTTP {answer.status}"
    except urllib.error.HTTPError as exc:
        return False, f"HTTP {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        return False, str(getattr(exc, "reason", exc))


def health_problems(spec: Stack, ctx: AwsContext, service: str) -> tuple[list[str], dict[str, Any]]:
    """Everything that keeps the service from serving: its ECS rollout and task counts, its
    targets' health, and an HTTP probe of its health path at the stack's public URL."""
    from tasks import load_balancer

    problems: list[str] = []
    facts: dict[str, Any] = {}
    observed = find_service(ctx, service)
    desired = 0
    if observed is None:
        problems.append("the ECS service does not exist")
    else:
        desired = int(observed.attrs.get("desired_count") or 0)
        running = int(observed.attrs.get("running_count") or 0)
        primary: dict[str, Any] = next((d for d in observed.attrs["deployments"] if d.get("status") == "PRIMARY"), {})
        rollout = primary.get("rolloutState")
        facts.update(desired=desired, running=running, rollout=rollout)
        if desired == 0:
            problems.append("desired count is 0 (no image has been pushed yet?)")
        if rollout == "FAILED":
            problems.append(f"the rollout failed: {primary.get('rolloutStateReason', 'no reason given')}")
        elif rollout not in (None, "COMPLETED"):
            problems.append(f"the rollout is {rollout}")
        if running < desired:
            problems.append(f"{running} of {desired} tasks running")
    group = load_balancer.find_target_group(ctx, service) if spec.services[service].load_balanced else None
    if not spec.services[service].load_balanced:
        pass  # a worker: ECS's counts (and its container health check, which ECS acts on) are the evidence
    elif group is None:
        problems.append("its target group does not exist")
    else:
        targets = call(f"read the target health of {group.name}", ctx.elbv2().describe_target_health,
                       TargetGroupArn=group.id)["TargetHealthDescriptions"]
        states = [t.get("TargetHealth", {}).get("State") for t in targets]
        healthy = states.count("healthy")
        facts["healthy_targets"] = healthy
        if healthy < max(desired, 1):
            others = ", ".join(sorted({str(s) for s in states if s != "healthy"})) or "none registered"
            problems.append(f"{healthy} healthy target(s) of {max(desired, 1)} wanted ({others})")
    if spec.public_url and spec.services[service].load_balanced:
        url = f"{spec.public_url}{spec.services[service].health_check_path}"
        ok, what = probe(url)
        facts["probe"] = f"{url}: {what}"
        if not ok:
            problems.append(f"{url} answered {what}")
    return problems, facts


@aws_task(task_run_name="verify health {service}")
def verify_health(spec: Stack, ctx: AwsContext, service: str, *, timeout: float = 600) -> Observed:
    """Wait until the service serves (rollout completed, all tasks running, targets healthy, the
    public health URL answering), or fail naming what is still wrong."""
    last: list[list[str]] = [[]]

    def serving() -> dict[str, Any] | None:
        problems, facts = health_problems(spec, ctx, service)
        last[0] = problems
        return None if problems else facts

    try:
        facts = wait_until(f"{service} to serve", serving, timeout=timeout, poll=ctx.poll_seconds)
    except EcsflowError as exc:
        if last[0]:
            raise HealthCheckFailed(f"{service} is not healthy after {timeout:.0f}s: " + "; ".join(last[0])) from exc
        raise
    return Observed(id=service_name(ctx, service), name=service, attrs=facts)
