"""The RDS family: DB subnet group, DB parameter group, the PostgreSQL instance, and the
IAM role enhanced monitoring needs.

Each resource is found by its unique, deterministic name and owned through our tags.
`plan_*` compares only fields AWS returns (moto, for one, does not echo Performance
Insights), normalised the way AWS normalises them, so a second `ensure_*` with an
unchanged stack makes no mutating call.

Defaults (DESIGN.md, "Defaults to beat the anchors with"): Multi-AZ, gp3 with storage
autoscaling, KMS encryption, deletion protection in prod, the master password managed by
RDS in Secrets Manager (ecsflow never sees it), IAM auth, Performance Insights, enhanced
monitoring, log exports, tags copied to snapshots, a parameter group of our own.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from spec import Stack
from tasks import iam
from tasks.aws import (
    TAG_COMPONENT,
    TAG_ENV,
    TAG_STACK,
    AwsContext,
    EcsflowError,
    TransientAwsError,
    call,
    call_or_none,
    error_code,
    fit_name,
    tag_map,
    tags_of,
    wait_until,
)
from tasks.contract import (
    Action,
    Change,
    FieldDiff,
    Observed,
    aws_task,
    diff_fields,
    partition,
    refuse_foreign,
    require_ours,
)

if TYPE_CHECKING:
    pass

P = ParamSpec("P")
R = TypeVar("R")

INSTANCE_TIMEOUT = 60 * 60  # creating a Multi-AZ instance takes 10-40 min in AWS
READY_STATES = {"available", "storage-optimization"}
FAILED_STATES = {
    "failed", "incompatible-network", "incompatible-option-group", "incompatible-parameters",
    "incompatible-restore", "inaccessible-encryption-credentials", "restore-error", "storage-full",
}

# ecsflow's PostgreSQL defaults; the stack file's `database.parameters` win over them.
DEFAULT_PARAMETERS: dict[str, str] = {
    "rds.force_ssl": "1",
    "log_min_duration_statement": "500",
    "log_connections": "1",
    "log_disconnections": "1",
    "log_lock_waits": "1",
    "log_temp_files": "0",
    "log_autovacuum_min_duration": "1000",
    "idle_in_transaction_session_timeout": "600000",
    "shared_preload_libraries": "pg_stat_statements",
}
# Parameters that only take effect after a restart (ApplyType "static"). AWS says so per
# parameter in describe_db_parameters; this list is the fallback when it does not.
STATIC_PARAMETERS = {
    "shared_preload_libraries", "max_connections", "shared_buffers", "max_worker_processes",
    "max_wal_senders", "max_replication_slots", "max_locks_per_transaction", "max_prepared_transactions",
    "max_pred_locks_per_transaction", "track_activity_query_size", "wal_buffers", "huge_pages",
    "rds.logical_replication", "pg_stat_statements.max", "max_logical_replication_workers",
    "autovacuum_max_workers", "wal_level", "cron.database_name",
}
MODIFY_PARAMETERS_MAX = 20  # ModifyDBParameterGroup takes at most 20 parameters a call

MONITORING_PRINCIPAL = "monitoring.rds.amazonaws.com"
MONITORING_POLICY = "policy/service-role/AmazonRDSEnhancedMonitoringRole"

# Fields of the instance that cannot change in place: a new instance (and a data move) is needed.
INSTANCE_IMMUTABLE = {
    "Engine", "StorageEncrypted", "KmsKeyId", "DBName", "MasterUsername", "PerformanceInsightsKMSKeyId",
}
# Fields AWS returns but an emulator may not (moto drops Performance Insights): compared only
# when present, so a missing echo does not turn into a modify on every run.
INSTANCE_OPTIONAL_ECHO = {"PerformanceInsightsEnabled", "PerformanceInsightsKMSKeyId"}
# Changes that restart or fail over the instance: in production they wait for the maintenance window.
INSTANCE_DISRUPTIVE = {"DBInstanceClass", "EngineVersion"}


class ConfirmationRequired(EcsflowError):
    """A destructive step needs the user's explicit confirmation."""


class ReplaceRequired(EcsflowError):
    """The stack asks for a change that RDS cannot make in place."""



# ---------------------------------------------------------------- names and helpers


def rds_name(name: str, limit: int) -> str:
    """RDS identifiers: letters, digits, hyphens; a letter first; no double or trailing hyphen."""
    cleaned = re.sub(r"[^a-z0-9-]", "-", name.lower())
    cleaned = re.sub(r"-{2,}", "-", cleaned).strip("-")
    if not cleaned or not cleaned[0].isalpha():
        cleaned = f"db-{cleaned}"
    return re.sub(r"-{2,}", "-", fit_name(cleaned, limit)).strip("-")


def subnet_group_name(ctx: AwsContext) -> str:
    return rds_name(ctx.name("db"), 255)


def parameter_group_name(stack: Stack, ctx: AwsContext) -> str:
    return rds_name(ctx.name(f"pg{stack.database.major_version}"), 255)


def instance_identifier(ctx: AwsContext) -> str:
    return rds_name(ctx.name("db", limit=63), 63)


def final_snapshot_identifier(ctx: AwsContext, now: datetime | None = None) -> str:
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%d-%H%M%S")
    return rds_name(ctx.name("db-final-" + stamp), 255)



def wanted_parameters(stack: Stack) -> dict[str, str]:
    """Our defaults with the stack file's `database.parameters` on top."""
    return {**DEFAULT_PARAMETERS, **stack.database.parameters}


def _paginate(doing: str, ctx: AwsContext, operation: str, key: str, **kwargs: Any) -> list[Any]:
    paginator = ctx.rds().get_paginator(operation)  # type: ignore[call-overload]

    def pages() -> list[Any]:
        return [item for page in paginator.paginate(**kwargs) for item in page.get(key, [])]

    return call(doing, pages)


def _rds_tags(ctx: AwsContext, arn: str, what: str, *, fresh: bool = False) -> dict[str, str]:
    """From the flow run's tag index when it holds the ARN (not `fresh`), else ListTagsForResource."""
    def read() -> dict[str, str]:
        got = call_or_none(f"read the tags of {what}", ctx.rds().list_tags_for_resource, ResourceName=arn)
        return tag_map(got["TagList"] if got else [])

    return read() if fresh else tags_of(ctx, arn, read)


def _tag_diff(observed: Observed, ctx: AwsContext, component: str) -> tuple[FieldDiff, ...]:
    wanted = ctx.tag_dict(component)
    current = {k: v for k, v in observed.tags.items() if k in wanted}
    return diff_fields({"tags": current}, {"tags": wanted})


def _sync_tags(ctx: AwsContext, arn: str, component: str, what: str) -> None:
    """Add or correct our tags (never removes others' tags)."""
    call(f"tag {what}", ctx.rds().add_tags_to_resource, ResourceName=arn, Tags=ctx.tags(component))



def _update_or_noop(resource: str, name: str, diffs: tuple[FieldDiff, ...], note: str = "") -> Change:
    return Change(resource, name, "update" if diffs else "no-op", diffs, note=note)


# ---------------------------------------------------------------- DB subnet group

SUBNET_GROUP = "db subnet group"
SUBNET_GROUP_COMPONENT = "db-subnet-group"


def _subnet_group_observed(ctx: AwsContext, group: Mapping[str, Any],
                           tags: dict[str, str] | None = None) -> Observed:
    arn = group["DBSubnetGroupArn"]
    name = group["DBSubnetGroupName"]
    return Observed(
        id=arn, name=name, tags=tags if tags is not None else _rds_tags(ctx, arn, f"DB subnet group {name}"),
        attrs={"subnet_ids": sorted(s["SubnetIdentifier"] for s in group.get("Subnets", [])),
               "vpc_id": group.get("VpcId"), "status": group.get("SubnetGroupStatus")},
    )


def find_db_subnet_group(stack: Stack, ctx: AwsContext) -> Observed | None:
    name = subnet_group_name(ctx)
    got = call_or_none(f"look up DB subnet group {name}", ctx.rds().describe_db_subnet_groups,
                       DBSubnetGroupName=name)
    groups = got["DBSubnetGroups"] if got else []
    return _subnet_group_observed(ctx, groups[0]) if groups else None


def plan_db_subnet_group(stack: Stack, observed: Observed | None, ctx: AwsContext, *,
                         subnet_ids: list[str]) -> Change:
    name = subnet_group_name(ctx)
    if observed is None:
        return Change(SUBNET_GROUP, name, "create")
    diffs = diff_fields(observed.attrs, {"subnet_ids": sorted(subnet_ids)})
    return _update_or_noop(SUBNET_GROUP, name, diffs + _tag_diff(observed, ctx, SUBNET_GROUP_COMPONENT))


@aws_task(task_run_name="ensure db subnet group")
def ensure_db_subnet_group(stack: Stack, ctx: AwsContext, subnets: list[Observed]) -> Observed:
    subnet_ids = [s.id for s in subnets]
    if len(subnet_ids) < 2:
        raise EcsflowError(f"a DB subnet group needs subnets in at least two AZs; got {subnet_ids}")
    rds = ctx.rds()
    name = subnet_group_name(ctx)
    observed = find_db_subnet_group(stack, ctx)
    if observed is None:
        call(f"create DB subnet group {name}", rds.create_db_subnet_group, DBSubnetGroupName=name,
             DBSubnetGroupDescription=f"ecsflow {ctx.prefix}: private subnets of the database",
             SubnetIds=sorted(subnet_ids), Tags=ctx.tags(SUBNET_GROUP_COMPONENT))
    else:
        refuse_foreign(ctx, observed, f"DB subnet group {name}")
        change = plan_db_subnet_group(stack, observed, ctx, subnet_ids=subnet_ids)
        if "tags" in change.changed_fields:
            _sync_tags(ctx, observed.id, SUBNET_GROUP_COMPONENT, f"DB subnet group {name}")
            observed.tags.update(ctx.tag_dict(SUBNET_GROUP_COMPONENT))
        if "subnet_ids" in change.changed_fields:
            # The answer is the group as AWS now holds it (moto 5.2.5 also loses the group from its
            # describe results after this call, so reading it back would not work there).
            got = call(f"update the subnets of DB subnet group {name}", rds.modify_db_subnet_group,
                       DBSubnetGroupName=name, SubnetIds=sorted(subnet_ids))
            return _subnet_group_observed(ctx, got["DBSubnetGroup"], tags=observed.tags)
        return observed
    found = find_db_subnet_group(stack, ctx)
    if found is None:
        raise EcsflowError(f"DB subnet group {name} vanished right after it was made; run again")
    return found


@aws_task(task_run_name="delete db subnet group {observed.name}")
def delete_db_subnet_group(observed: Observed, ctx: AwsContext) -> None:
    """NotFound is success. While the instance is still being deleted AWS answers
    InvalidDBSubnetGroupStateFault, which tasks/aws.py classes as transient (retried)."""
    _delete_group(ctx, f"DB subnet group {observed.name}", "DBSubnetGroup", observed.name,
                  ctx.rds().describe_db_subnet_groups, ctx.rds().delete_db_subnet_group)


def _delete_group(ctx: AwsContext, what: str, kind: str, name: str, describe: Callable[..., Any],
                  delete: Callable[..., Any]) -> None:
    """Delete a DB subnet or parameter group (`kind` names its API fields) if it is still there and ours."""
    got = call_or_none(f"look up {what}", describe, **{f"{kind}Name": name})
    if not got or not got[f"{kind}s"]:
        return
    require_ours(ctx, _rds_tags(ctx, got[f"{kind}s"][0][f"{kind}Arn"], what, fresh=True), what)
    call_or_none(f"delete {what}", delete, **{f"{kind}Name": name})


def inventory_db_subnet_groups(ctx: AwsContext) -> list[Observed]:
    groups = _paginate("list DB subnet groups", ctx, "describe_db_subnet_groups", "DBSubnetGroups")
    found = [_subnet_group_observed(ctx, g) for g in groups if g["DBSubnetGroupName"] != "default"]
    return [o for o in found if ctx.owns(o.tags)]


# ---------------------------------------------------------------- DB parameter group

PARAMETER_GROUP = "db parameter group"
PARAMETER_GROUP_COMPONENT = "db-parameter-group"


def _user_parameters(ctx: AwsContext, name: str) -> dict[str, str]:
    params = _paginate(f"read the parameters of DB parameter group {name}", ctx, "describe_db_parameters",
                       "Parameters", DBParameterGroupName=name, Source="user")
    return {p["ParameterName"]: p.get("ParameterValue", "") for p in params}


def _parameter_group_observed(ctx: AwsContext, group: Mapping[str, Any]) -> Observed:
    arn = group["DBParameterGroupArn"]
    name = group["DBParameterGroupName"]
    return Observed(
        id=arn, name=name, tags=_rds_tags(ctx, arn, f"DB parameter group {name}"),
        attrs={"family": group.get("DBParameterGroupFamily"), "parameters": _user_parameters(ctx, name)},
    )


def find_db_parameter_group(stack: Stack, ctx: AwsContext) -> Observed | None:
    name = parameter_group_name(stack, ctx)
    got = call_or_none(f"look up DB parameter group {name}", ctx.rds().describe_db_parameter_groups,
                       DBParameterGroupName=name)
    groups = got["DBParameterGroups"] if got else []
    return _parameter_group_observed(ctx, groups[0]) if groups else None


def plan_db_parameter_group(stack: Stack, observed: Observed | None, ctx: AwsContext) -> Change:
    """Compares only the parameters we set (AWS holds ~400 more, at their engine defaults)."""
    name = parameter_group_name(stack, ctx)
    if observed is None:
        return Change(PARAMETER_GROUP, name, "create")
    family = f"postgres{stack.database.major_version}"
    if observed.attrs.get("family") != family:
        diff = FieldDiff("family", observed.attrs.get("family"), family)
        return Change(PARAMETER_GROUP, name, "replace", (diff,),
                      note="a parameter group's family cannot change: delete the group")
    diffs = diff_fields(observed.attrs.get("parameters", {}), wanted_parameters(stack))
    return _update_or_noop(PARAMETER_GROUP, name, diffs + _tag_diff(observed, ctx, PARAMETER_GROUP_COMPONENT),
                           note="static parameters (e.g. shared_preload_libraries) apply at the next reboot"
                           if any(d.field in STATIC_PARAMETERS for d in diffs) else "")


def _apply_types(ctx: AwsContext, name: str) -> dict[str, str]:
    """ApplyType (static / dynamic) per parameter, as AWS reports it for this group."""
    params = _paginate(f"read the parameters of DB parameter group {name}", ctx, "describe_db_parameters",
                       "Parameters", DBParameterGroupName=name)
    return {p["ParameterName"]: p["ApplyType"] for p in params if p.get("ApplyType")}


def _set_parameters(ctx: AwsContext, name: str, values: Mapping[str, str]) -> None:
    if not values:
        return
    types = _apply_types(ctx, name)
    items = []
    for key, value in sorted(values.items()):
        static = types.get(key, "static" if key in STATIC_PARAMETERS else "dynamic") == "static"
        items.append({"ParameterName": key, "ParameterValue": value,
                      "ApplyMethod": "pending-reboot" if static else "immediate"})
    for start in range(0, len(items), MODIFY_PARAMETERS_MAX):
        call(f"set parameters of DB parameter group {name}", ctx.rds().modify_db_parameter_group,
             DBParameterGroupName=name, Parameters=items[start:start + MODIFY_PARAMETERS_MAX])


@aws_task(task_run_name="ensure db parameter group")
def ensure_db_parameter_group(stack: Stack, ctx: AwsContext) -> Observed:
    rds = ctx.rds()
    name = parameter_group_name(stack, ctx)
    family = f"postgres{stack.database.major_version}"
    observed = find_db_parameter_group(stack, ctx)
    if observed is None:
        call(f"create DB parameter group {name}", rds.create_db_parameter_group, DBParameterGroupName=name,
             DBParameterGroupFamily=family, Description=f"ecsflow {ctx.prefix}: PostgreSQL {family} settings",
             Tags=ctx.tags(PARAMETER_GROUP_COMPONENT))
        _set_parameters(ctx, name, wanted_parameters(stack))
    else:
        refuse_foreign(ctx, observed, f"DB parameter group {name}")
        change = plan_db_parameter_group(stack, observed, ctx)
        if change.action == "replace":
            diffs = "; ".join(map(str, change.diffs))
            raise ReplaceRequired(f"DB parameter group {name}: {change.note} ({diffs})")
        if change.action == "no-op":
            return observed
        wanted = wanted_parameters(stack)
        _set_parameters(ctx, name, {d.field: wanted[d.field] for d in change.diffs if d.field in wanted})
        if "tags" in change.changed_fields:
            _sync_tags(ctx, observed.id, PARAMETER_GROUP_COMPONENT, f"DB parameter group {name}")
    found = find_db_parameter_group(stack, ctx)
    if found is None:
        raise EcsflowError(f"DB parameter group {name} vanished right after it was made; run again")
    return found


@aws_task(task_run_name="delete db parameter group {observed.name}")
def delete_db_parameter_group(observed: Observed, ctx: AwsContext) -> None:
    """NotFound is success; InvalidDBParameterGroupState (still attached) is transient."""
    _delete_group(ctx, f"DB parameter group {observed.name}", "DBParameterGroup", observed.name,
                  ctx.rds().describe_db_parameter_groups, ctx.rds().delete_db_parameter_group)


def inventory_db_parameter_groups(ctx: AwsContext) -> list[Observed]:
    groups = _paginate("list DB parameter groups", ctx, "describe_db_parameter_groups", "DBParameterGroups")
    found = [_parameter_group_observed(ctx, g) for g in groups
             if not g["DBParameterGroupName"].startswith("default.")]
    return [o for o in found if ctx.owns(o.tags)]


# ---------------------------------------------------------------- enhanced monitoring role


def monitoring_role(ctx: AwsContext) -> iam.RoleSpec:
    """The role RDS enhanced monitoring assumes to publish OS metrics to CloudWatch Logs."""
    return iam.RoleSpec(
        component="rds-monitoring",
        service_principal=MONITORING_PRINCIPAL,
        managed_policy_arns=(f"arn:{partition(ctx.region)}:iam::aws:{MONITORING_POLICY}",),
        description=f"ecsflow {ctx.prefix}: RDS enhanced monitoring",
    )


# ---------------------------------------------------------------- DB instance

INSTANCE = "db instance"
INSTANCE_COMPONENT = "db"


def _version(value: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", value.split("-")[0])[:2])


def _key_id(value: Any) -> Any:
    """A KMS key ARN and its bare key id name the same key."""
    return value.rsplit(":key/", 1)[-1] if isinstance(value, str) else value


def _describe_instance(ctx: AwsContext, identifier: str) -> dict[str, Any] | None:
    got = call_or_none(f"look up DB instance {identifier}", ctx.rds().describe_db_instances,
                       DBInstanceIdentifier=identifier)
    instances = got["DBInstances"] if got else []
    return dict(instances[0]) if instances else None


def _instance_current(d: Mapping[str, Any]) -> dict[str, Any]:
    """The instance in the shape we compare, with modifications still pending laid over it
    (so a change deferred to the maintenance window is not asked for again)."""
    endpoint = d.get("Endpoint") or {}
    current: dict[str, Any] = {
        key: d.get(key) for key in (
            "Engine", "EngineVersion", "DBInstanceClass", "StorageType", "AllocatedStorage",
            "MaxAllocatedStorage", "MultiAZ", "StorageEncrypted", "MasterUsername", "DBName",
            "BackupRetentionPeriod", "PreferredBackupWindow", "PreferredMaintenanceWindow",
            "DeletionProtection", "IAMDatabaseAuthenticationEnabled", "MonitoringInterval",
            "MonitoringRoleArn", "CopyTagsToSnapshot", "PubliclyAccessible", "AutoMinorVersionUpgrade",
        )
    }
    current["KmsKeyId"] = _key_id(d.get("KmsKeyId"))
    current["Port"] = endpoint.get("Port") or d.get("DbInstancePort")
    current["VpcSecurityGroupIds"] = sorted(
        g["VpcSecurityGroupId"] for g in d.get("VpcSecurityGroups", []) if g.get("Status") != "removing")
    current["DBSubnetGroupName"] = (d.get("DBSubnetGroup") or {}).get("DBSubnetGroupName")
    groups = d.get("DBParameterGroups") or []
    current["DBParameterGroupName"] = groups[0]["DBParameterGroupName"] if groups else None
    current["EnabledCloudwatchLogsExports"] = sorted(d.get("EnabledCloudwatchLogsExports") or [])
    current["ManageMasterUserPassword"] = bool(d.get("MasterUserSecret"))
    for key in INSTANCE_OPTIONAL_ECHO:
        if key in d:
            current[key] = _key_id(d[key]) if key.endswith("KeyId") else d[key]
    for key in ("PreferredBackupWindow", "PreferredMaintenanceWindow"):
        if isinstance(current[key], str):
            current[key] = current[key].lower()

    pending = d.get("PendingModifiedValues") or {}
    for key in ("DBInstanceClass", "AllocatedStorage", "BackupRetentionPeriod", "MultiAZ", "EngineVersion",
                "StorageType", "DBSubnetGroupName", "IAMDatabaseAuthenticationEnabled", "Port"):
        if key in pending:
            current[key] = pending[key]
    logs = pending.get("PendingCloudwatchLogsExports") or {}
    if logs:
        enabled = set(current["EnabledCloudwatchLogsExports"]) | set(logs.get("LogTypesToEnable", []))
        current["EnabledCloudwatchLogsExports"] = sorted(enabled - set(logs.get("LogTypesToDisable", [])))
    return current


def _instance_observed(d: Mapping[str, Any]) -> Observed:
    endpoint = d.get("Endpoint") or {}
    secret = d.get("MasterUserSecret") or {}
    groups = d.get("DBParameterGroups") or []
    attrs = _instance_current(d)
    attrs.update({
        "status": d.get("DBInstanceStatus"),
        "endpoint": endpoint.get("Address"),
        "port": attrs["Port"],
        "master_secret_arn": secret.get("SecretArn"),
        "kms_key_arn": d.get("KmsKeyId"),
        "parameter_apply_status": groups[0].get("ParameterApplyStatus") if groups else None,
        "pending": bool(d.get("PendingModifiedValues")),
    })
    return Observed(id=d["DBInstanceArn"], name=d["DBInstanceIdentifier"], tags=tag_map(d.get("TagList")),
                    attrs=attrs)


def find_db_instance(stack: Stack, ctx: AwsContext) -> Observed | None:
    d = _describe_instance(ctx, instance_identifier(ctx))
    return _instance_observed(d) if d else None


def _instance_wanted(stack: Stack, ctx: AwsContext, *, kms_key_arn: str, security_group_id: str,
                     monitoring_role_arn: str | None) -> dict[str, Any]:
    db = stack.database
    autoscaling = db.max_allocated_storage_gb > db.allocated_storage_gb
    wanted: dict[str, Any] = {
        "Engine": "postgres",
        "EngineVersion": db.engine_version,
        "DBInstanceClass": db.instance_class,
        "StorageType": "gp3",
        "AllocatedStorage": db.allocated_storage_gb,
        # AWS omits MaxAllocatedStorage when storage autoscaling is off
        "MaxAllocatedStorage": db.max_allocated_storage_gb if autoscaling else None,
        "MultiAZ": db.multi_az,
        "StorageEncrypted": True,
        "KmsKeyId": _key_id(kms_key_arn),
        "ManageMasterUserPassword": True,
        "MasterUsername": db.master_username,
        "DBName": db.db_name,
        "Port": db.port,
        "VpcSecurityGroupIds": [security_group_id],
        "DBSubnetGroupName": subnet_group_name(ctx),
        "DBParameterGroupName": parameter_group_name(stack, ctx),
        "BackupRetentionPeriod": db.backup_retention_days,
        "PreferredBackupWindow": db.backup_window.lower(),
        "PreferredMaintenanceWindow": db.maintenance_window.lower(),
        "DeletionProtection": stack.deletion_protection,
        "IAMDatabaseAuthenticationEnabled": True,
        "PerformanceInsightsEnabled": db.performance_insights,
        "MonitoringInterval": db.monitoring_interval,
        "EnabledCloudwatchLogsExports": sorted(db.log_exports),
        "CopyTagsToSnapshot": True,
        "PubliclyAccessible": False,
        "AutoMinorVersionUpgrade": True,
    }
    if db.performance_insights:
        wanted["PerformanceInsightsKMSKeyId"] = _key_id(kms_key_arn)
    if db.monitoring_interval:
        if not monitoring_role_arn:
            raise EcsflowError(
                f"database.monitoring_interval is {db.monitoring_interval}s, so enhanced monitoring needs "
                f"a role: pass the ARN from ensure_monitoring_role, or set monitoring_interval: 0 in the "
                f"stack file"
            )
        wanted["MonitoringRoleArn"] = monitoring_role_arn
    return wanted


def _instance_diffs(current: Mapping[str, Any], wanted: Mapping[str, Any]) -> tuple[FieldDiff, ...]:
    diffs = []
    for diff in diff_fields(current, wanted):
        if diff.field in INSTANCE_OPTIONAL_ECHO and diff.field not in current:
            continue  # not echoed back: nothing to compare with
        if diff.field == "AllocatedStorage" and isinstance(diff.current, int) and diff.current >= diff.wanted:
            continue  # storage autoscaling grew it, and storage never shrinks
        if diff.field == "EngineVersion" and isinstance(diff.current, str):
            have, want = _version(diff.current), _version(diff.wanted)
            if have[:1] == want[:1] and have >= want:
                continue  # AutoMinorVersionUpgrade moved it forward: fine, never downgrade
        diffs.append(diff)
    return tuple(diffs)


def plan_db_instance(stack: Stack, observed: Observed | None, ctx: AwsContext, *, kms_key_arn: str,
                     security_group_id: str, monitoring_role_arn: str | None) -> Change:
    name = instance_identifier(ctx)
    if observed is None:
        return Change(INSTANCE, name, "create")
    wanted = _instance_wanted(stack, ctx, kms_key_arn=kms_key_arn, security_group_id=security_group_id,
                              monitoring_role_arn=monitoring_role_arn)
    diffs = _instance_diffs(observed.attrs, wanted) + _tag_diff(observed, ctx, INSTANCE_COMPONENT)
    if any(d.field in INSTANCE_IMMUTABLE for d in diffs):
        return Change(INSTANCE, name, "replace", diffs,
                      note="RDS cannot change this in place: restore a snapshot into a new instance, "
                           "or revert the setting in the stack file")
    notes = []
    if "EngineVersion" in {d.field for d in diffs}:
        notes.append("engine upgrade: the database restarts")
    if stack.is_prod and INSTANCE_DISRUPTIVE & {d.field for d in diffs}:
        notes.append("instance class / engine changes wait for the maintenance window in prod")
    if observed.attrs.get("parameter_apply_status") == "pending-reboot":
        notes.append("parameter group changes wait for a reboot (ecsflow never reboots a database itself)")
    return _update_or_noop(INSTANCE, name, diffs, note="; ".join(notes))


def _modify_arguments(diffs: tuple[FieldDiff, ...], wanted: Mapping[str, Any], current: Mapping[str, Any],
                      stack: Stack) -> dict[str, Any]:
    """One ModifyDBInstance request for the fields that differ."""
    args: dict[str, Any] = {}
    renamed = {"Port": "DBPortNumber", "IAMDatabaseAuthenticationEnabled": "EnableIAMDatabaseAuthentication",
               "PerformanceInsightsEnabled": "EnablePerformanceInsights"}
    for diff in diffs:
        key, value = diff.field, wanted.get(diff.field)
        if key == "tags":
            continue
        if key == "MaxAllocatedStorage":
            # setting it to the allocated size turns storage autoscaling off
            args[key] = value if value is not None else stack.database.allocated_storage_gb
        elif key == "EnabledCloudwatchLogsExports":
            have, want = set(current.get(key) or []), set(value or [])
            config = {"EnableLogTypes": sorted(want - have), "DisableLogTypes": sorted(have - want)}
            args["CloudwatchLogsExportConfiguration"] = {k: v for k, v in config.items() if v}
        elif key == "EngineVersion":
            args[key] = value
            if _version(str(current.get(key) or ""))[:1] != _version(str(value))[:1]:
                args["AllowMajorVersionUpgrade"] = True
                args["DBParameterGroupName"] = wanted["DBParameterGroupName"]
        elif key in ("MonitoringInterval", "MonitoringRoleArn"):
            args["MonitoringInterval"] = wanted["MonitoringInterval"]
            if wanted.get("MonitoringRoleArn"):
                args["MonitoringRoleArn"] = wanted["MonitoringRoleArn"]
        elif key == "PerformanceInsightsEnabled":
            args["EnablePerformanceInsights"] = value
            if value and wanted.get("PerformanceInsightsKMSKeyId"):
                args["PerformanceInsightsKMSKeyId"] = wanted["PerformanceInsightsKMSKeyId"]
        else:
            args[renamed.get(key, key)] = value
    return args


def _ready(ctx: AwsContext, identifier: str, *, settled: bool) -> Callable[[], dict[str, Any] | None]:
    def check() -> dict[str, Any] | None:
        d = _describe_instance(ctx, identifier)
        if d is None:
            raise EcsflowError(f"DB instance {identifier} disappeared while ecsflow waited for it; run again")
        status = d.get("DBInstanceStatus", "")
        if status in FAILED_STATES:
            raise EcsflowError(f"DB instance {identifier} is {status!r}; see its events in the RDS console")
        if status not in READY_STATES:
            return None
        if settled and d.get("PendingModifiedValues"):
            return None  # changes applied immediately have not landed yet
        return d

    return check


def _iam_not_ready(exc: EcsflowError) -> bool:
    cause = exc.__cause__
    return (cause is not None and error_code(cause) == "InvalidParameterValue"
            and "role" in str(cause).lower())


@aws_task(task_run_name="ensure db instance")
def ensure_db_instance(stack: Stack, ctx: AwsContext, *, kms_key: Observed, security_group: Observed,
                       monitoring_role: Observed | None) -> Observed:
    """Create the PostgreSQL instance (subnet and parameter group must exist), wait until it is
    available, and repair drift with one ModifyDBInstance."""
    kms_key_arn, security_group_id = kms_key.id, security_group.id
    monitoring_role_arn = monitoring_role.id if monitoring_role else None
    rds = ctx.rds()
    identifier = instance_identifier(ctx)
    db = stack.database
    wanted = _instance_wanted(stack, ctx, kms_key_arn=kms_key_arn, security_group_id=security_group_id,
                              monitoring_role_arn=monitoring_role_arn)
    observed = find_db_instance(stack, ctx)
    if observed is None:
        args: dict[str, Any] = {
            "DBInstanceIdentifier": identifier, "Engine": "postgres", "EngineVersion": db.engine_version,
            "DBInstanceClass": db.instance_class, "StorageType": "gp3",
            "AllocatedStorage": db.allocated_storage_gb,
            "MultiAZ": db.multi_az, "StorageEncrypted": True, "KmsKeyId": kms_key_arn,
            # RDS makes the password and keeps it in Secrets Manager (rotated every 7 days by default):
            # it never passes through ecsflow, Prefect's logs or its parameters.
            "ManageMasterUserPassword": True, "MasterUsername": db.master_username, "DBName": db.db_name,
            "Port": db.port, "VpcSecurityGroupIds": [security_group_id],
            "DBSubnetGroupName": wanted["DBSubnetGroupName"],
            "DBParameterGroupName": wanted["DBParameterGroupName"],
            "BackupRetentionPeriod": db.backup_retention_days, "PreferredBackupWindow": db.backup_window,
            "PreferredMaintenanceWindow": db.maintenance_window,
            "DeletionProtection": stack.deletion_protection,
            "EnableIAMDatabaseAuthentication": True, "EnablePerformanceInsights": db.performance_insights,
            "MonitoringInterval": db.monitoring_interval,
            "EnableCloudwatchLogsExports": sorted(db.log_exports), "CopyTagsToSnapshot": True,
            "PubliclyAccessible": False, "AutoMinorVersionUpgrade": True,
            "Tags": ctx.tags(INSTANCE_COMPONENT),
        }
        if wanted["MaxAllocatedStorage"] is not None:
            args["MaxAllocatedStorage"] = wanted["MaxAllocatedStorage"]
        if db.performance_insights:
            args["PerformanceInsightsKMSKeyId"] = kms_key_arn
        if wanted.get("MonitoringRoleArn"):
            args["MonitoringRoleArn"] = wanted["MonitoringRoleArn"]
        try:
            call(f"create DB instance {identifier}", rds.create_db_instance, **args)
        except EcsflowError as exc:
            if _iam_not_ready(exc):  # a just-made monitoring role takes a few seconds to be usable
                raise TransientAwsError(f"create DB instance {identifier}: the monitoring role is not "
                                        f"usable yet ({exc.__cause__}); retrying") from exc
            raise
    else:
        refuse_foreign(ctx, observed, f"DB instance {identifier}")
        if observed.attrs.get("status") == "deleting":
            raise EcsflowError(f"DB instance {identifier} is being deleted; wait until it is gone, "
                               f"then run again")

    d = wait_until(f"DB instance {identifier} to become available", _ready(ctx, identifier, settled=False),
                   timeout=INSTANCE_TIMEOUT, poll=ctx.poll_seconds)
    observed = _instance_observed(d)
    change = plan_db_instance(stack, observed, ctx, kms_key_arn=kms_key_arn,
                              security_group_id=security_group_id, monitoring_role_arn=monitoring_role_arn)
    if change.action == "no-op":
        return observed
    if change.action == "replace":
        raise ReplaceRequired(f"DB instance {identifier}: {'; '.join(map(str, change.diffs))}. {change.note}")

    modify = _modify_arguments(change.diffs, wanted, observed.attrs, stack)
    defer = False
    if modify:
        # A class change or engine upgrade restarts the instance (a failover with Multi-AZ): in prod it
        # waits for the maintenance window. While such a change is pending, every later modify must also
        # wait, because ApplyImmediately=True would push the whole pending queue out at once.
        defer = stack.is_prod and (bool(INSTANCE_DISRUPTIVE & set(change.changed_fields))
                                   or bool(observed.attrs.get("pending")))
        call(f"update DB instance {identifier} ({', '.join(change.changed_fields)})", rds.modify_db_instance,
             DBInstanceIdentifier=identifier, ApplyImmediately=not defer, **modify)
    if "tags" in change.changed_fields:
        _sync_tags(ctx, observed.id, INSTANCE_COMPONENT, f"DB instance {identifier}")
    d = wait_until(f"DB instance {identifier} to apply its changes",
                   _ready(ctx, identifier, settled=bool(modify) and not defer),
                   timeout=INSTANCE_TIMEOUT, poll=ctx.poll_seconds)
    return _instance_observed(d)


@aws_task(task_run_name="delete db instance {observed.name}")
def delete_db_instance(observed: Observed, ctx: AwsContext, *, final_snapshot: bool,
                       confirmed: bool = False) -> str | None:
    """Delete the instance and its automated backups; returns the final snapshot's identifier.

    With deletion protection on, this needs `confirmed=True` (the flow asks the user first) and
    then turns protection off. NotFound is success.
    """
    rds = ctx.rds()
    identifier = observed.name
    d = _describe_instance(ctx, identifier)
    if d is None:
        return None
    require_ours(ctx, tag_map(d.get("TagList")), f"DB instance {identifier}")
    snapshot: str | None = None
    if d.get("DBInstanceStatus") != "deleting":
        if d.get("DeletionProtection"):
            if not confirmed:
                raise ConfirmationRequired(
                    f"DB instance {identifier} has deletion protection on; deleting it needs explicit "
                    f"confirmation (`ecsflow down --yes`)"
                )
            call(f"turn off deletion protection of DB instance {identifier}", rds.modify_db_instance,
                 DBInstanceIdentifier=identifier, DeletionProtection=False, ApplyImmediately=True)
        args: dict[str, Any] = {"DBInstanceIdentifier": identifier, "DeleteAutomatedBackups": True}
        if final_snapshot:
            snapshot = final_snapshot_identifier(ctx)
            args["FinalDBSnapshotIdentifier"] = snapshot
        else:
            args["SkipFinalSnapshot"] = True
        call_or_none(f"delete DB instance {identifier}", rds.delete_db_instance, **args)

    def gone() -> bool:
        return _describe_instance(ctx, identifier) is None

    wait_until(f"DB instance {identifier} to be deleted", gone, timeout=INSTANCE_TIMEOUT,
               poll=ctx.poll_seconds)
    return snapshot


def inventory_db_instances(ctx: AwsContext) -> list[Observed]:
    instances = _paginate("list DB instances", ctx, "describe_db_instances", "DBInstances")
    found = [_instance_observed(d) for d in instances]
    # The restore test's temporary instances are the backup family's (tasks/backup.py), deleted without
    # a final snapshot; production's instance and its delete are this family's.
    return [o for o in found if ctx.owns(o.tags) and o.tags.get("ecsflow:temporary") != "true"]


# ---------------------------------------------------------------- the family's plan and hand-over


def plan_database(stack: Stack, ctx: AwsContext) -> list[Change]:
    """Plan the whole family; what it depends on (subnets, security group, key) is looked up,
    and a missing dependency means the instance is planned as a create."""
    from tasks import kms, network

    subnets = [network.find_subnet(ctx, s) for s in network.subnet_specs(stack) if s.tier == "private"]
    group = network.find_security_group(ctx, "sg-rds")
    key = kms.find_key(ctx, "rds")
    changes = []
    subnet_group = find_db_subnet_group(stack, ctx)
    if all(subnets):
        changes.append(plan_db_subnet_group(stack, subnet_group, ctx, subnet_ids=[s.id for s in subnets if s]))
    else:
        action: Action = "create" if subnet_group is None else "update"
        changes.append(Change("db subnet group", subnet_group_name(ctx), action))
    changes.append(plan_db_parameter_group(stack, find_db_parameter_group(stack, ctx), ctx))
    role = None
    if stack.database.monitoring_interval:
        role_spec = monitoring_role(ctx)
        role = iam.find_role(ctx, role_spec)
        changes.append(iam.plan_role(ctx, role_spec, role))
    instance = find_db_instance(stack, ctx)
    ready = group is not None and key is not None and (role is not None or not stack.database.monitoring_interval)
    if instance is None or not ready:
        changes.append(Change("db instance", instance_identifier(ctx), "create" if instance is None else "update",
                              note="" if instance is None else "waits for its network, key or role"))
    else:
        assert group is not None and key is not None
        changes.append(plan_db_instance(stack, instance, ctx, kms_key_arn=key.id, security_group_id=group.id,
                                        monitoring_role_arn=role.id if role else None))
    return changes


@aws_task(task_run_name="hand over final snapshot {snapshot_id}")
def hand_over_snapshot(snapshot_id: str, ctx: AwsContext) -> None:
    """After teardown the final snapshot belongs to the user, not to the stack: it loses the
    ecsflow stack tags (so nothing of ours is left behind, and no later teardown deletes it)
    and gains a label saying where it came from."""
    rds = ctx.rds()

    def available() -> dict[str, Any] | None:
        found = call_or_none(f"read snapshot {snapshot_id}", rds.describe_db_snapshots,
                             DBSnapshotIdentifier=snapshot_id)
        snaps = found["DBSnapshots"] if found else []
        return dict(snaps[0]) if snaps and snaps[0].get("Status") == "available" else None

    snapshot = wait_until(f"final snapshot {snapshot_id} to be available", available,
                          timeout=INSTANCE_TIMEOUT, poll=ctx.poll_seconds)
    arn = snapshot["DBSnapshotArn"]
    call(f"label snapshot {snapshot_id}", rds.add_tags_to_resource, ResourceName=arn,
         Tags=[{"Key": "ecsflow:final-snapshot-of", "Value": ctx.prefix}])
    call(f"untag snapshot {snapshot_id}", rds.remove_tags_from_resource, ResourceName=arn,
         TagKeys=[TAG_STACK, TAG_ENV, TAG_COMPONENT])
