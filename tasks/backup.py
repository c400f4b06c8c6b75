"""The backup family: manual DB snapshots, their copies in a second region, pruning, and the
restore test's temporary instance.

- A backup is a manual snapshot of the production instance named `{stack}-{env}-YYYYMMDD-HHMM`
  (one a minute at most: a retried run finds the snapshot it already started), tagged with our
  stack tags, component `db-backup` and the time it was taken.
- With `backup.copy_region`, it is copied there under the same name, encrypted with a KMS key of
  ecsflow's own in that region (purpose `snapshot-copy`): a snapshot cannot be copied across
  regions with the source region's key.
- Pruning deletes only snapshots that are manual AND carry our stack, env and `db-backup` tags.
  The production instance copies its tags to snapshots, so its automated snapshots carry our
  stack tags too: the snapshot type and the component keep them out. The newest snapshot of a
  region is always kept, so a run of failed backups never prunes the last good one.
- The restore test restores a snapshot into `{stack}-{env}-restore-test-YYYYMMDDHHMM`: private,
  in production's DB subnet group and security groups, deletion protection off, tagged
  `ecsflow:temporary=true`. Only an instance with that tag and component is ever deleted here,
  and never the production identifier.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

from spec import Stack
from tasks import database, kms
from tasks.aws import (
    TAG_COMPONENT,
    AwsContext,
    EcsflowError,
    NotOurs,
    call,
    call_or_none,
    progress,
    tag_map,
    wait_until,
)
from tasks.contract import Change, Observed, aws_task, require_ours

SNAPSHOT_COMPONENT = "db-backup"
RESTORE_COMPONENT = "restore-test"
COPY_KEY_PURPOSE = "snapshot-copy"
TAG_TAKEN_AT = "ecsflow:taken-at"
TAG_COPY_REGION = "ecsflow:copy-region"
TAG_TEMPORARY = "ecsflow:temporary"
TAG_RESTORED_FROM = "ecsflow:restored-from"
SNAPSHOT_TIMEOUT = 4 * 60 * 60  # a large first snapshot or a cross-region copy takes hours
DELETE_TIMEOUT = 60 * 60


# ---------------------------------------------------------------- names


def snapshot_identifier(ctx: AwsContext, now: datetime) -> str:
    """`{stack}-{env}-YYYYMMDD-HHMM` (UTC), within RDS's identifier rules (255 characters)."""
    return database.rds_name(f"{ctx.prefix}-{now.astimezone(UTC):%Y%m%d-%H%M}", 255)


def restore_identifier(ctx: AwsContext, now: datetime) -> str:
    """The temporary instance's name: production's is `{prefix}-db`, this one always ends in a time
    stamp after `restore-test`, so the two can never be the same."""
    name = database.rds_name(ctx.name(f"restore-test-{now.astimezone(UTC):%Y%m%d%H%M}", 63), 63)
    if name == database.instance_identifier(ctx):  # a guard, not a case that can happen
        raise EcsflowError(f"refusing to restore into {name}: that is the production instance's name")
    return name


def region_context(ctx: AwsContext, region: str) -> AwsContext:
    """The same stack, acting in another region (the copy region)."""
    return dataclasses.replace(ctx, region=region)


# ---------------------------------------------------------------- snapshots


def _snapshot_observed(d: dict[str, Any], region: str) -> Observed:
    created = d.get("SnapshotCreateTime")
    return Observed(
        id=d["DBSnapshotArn"], name=d["DBSnapshotIdentifier"], tags=tag_map(d.get("TagList")),
        attrs={"region": region, "status": d.get("Status"), "type": d.get("SnapshotType"),
               "instance": d.get("DBInstanceIdentifier"), "encrypted": d.get("Encrypted"),
               "kms_key_id": d.get("KmsKeyId"), "engine_version": d.get("EngineVersion"),
               "created": created.astimezone(UTC).isoformat() if isinstance(created, datetime) else None},
    )


def created_at(snapshot: Observed) -> datetime:
    """When the snapshot was taken: AWS's creation time, else our tag (a snapshot still being made)."""
    value = snapshot.attrs.get("created") or snapshot.tags.get(TAG_TAKEN_AT)
    if not value:
        return datetime.now(UTC)
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def is_our_backup(ctx: AwsContext, snapshot: Observed) -> bool:
    return (snapshot.attrs.get("type") == "manual" and ctx.owns(snapshot.tags)
            and snapshot.tags.get(TAG_COMPONENT) == SNAPSHOT_COMPONENT)


def _describe_snapshot(ctx: AwsContext, identifier: str) -> dict[str, Any] | None:
    got = call_or_none(f"look up snapshot {identifier} in {ctx.region}", ctx.rds().describe_db_snapshots,
                       DBSnapshotIdentifier=identifier)
    snaps = got["DBSnapshots"] if got else []
    if not snaps:
        return None
    d = dict(snaps[0])
    if "TagList" not in d:  # older API answers leave tags out of the describe
        got_tags = call_or_none(f"read the tags of snapshot {identifier}", ctx.rds().list_tags_for_resource,
                                ResourceName=d["DBSnapshotArn"])
        d["TagList"] = got_tags["TagList"] if got_tags else []
    return d


def find_snapshot(ctx: AwsContext, identifier: str) -> Observed | None:
    d = _describe_snapshot(ctx, identifier)
    return _snapshot_observed(d, ctx.region) if d else None


def find_backups(ctx: AwsContext) -> list[Observed]:
    """Our manual backup snapshots in ctx's region, oldest first."""
    paginator = ctx.rds().get_paginator("describe_db_snapshots")

    def pages() -> list[Any]:
        return [s for page in paginator.paginate(SnapshotType="manual") for s in page.get("DBSnapshots", [])]

    found = [_snapshot_observed(dict(d), ctx.region)
             for d in call(f"list the manual DB snapshots in {ctx.region}", pages)]
    return sorted((s for s in found if is_our_backup(ctx, s)), key=lambda s: (created_at(s), s.name))


def expired(ctx: AwsContext, retention_days: int, now: datetime) -> list[Observed]:
    """Our backups older than the retention, except the newest available one."""
    backups = find_backups(ctx)
    available = [s for s in backups if s.attrs.get("status") == "available"]
    keep = available[-1].name if available else None
    cutoff = now - timedelta(days=retention_days)
    return [s for s in backups if created_at(s) < cutoff and s.name != keep
            and s.attrs.get("status") in ("available", "failed")]


def plan_backup(spec: Stack, ctx: AwsContext, now: datetime) -> list[Change]:
    """Read-only: the snapshot `backup` would take, its copy, and what pruning would delete."""
    name = snapshot_identifier(ctx, now)
    changes = [Change("db snapshot", name, "no-op" if find_snapshot(ctx, name) else "create")]
    regions = [ctx.region]
    if spec.backup.copy_region:
        copy_ctx = region_context(ctx, spec.backup.copy_region)
        exists = find_snapshot(copy_ctx, name) is not None
        changes.append(Change("db snapshot copy", f"{name} ({copy_ctx.region})", "no-op" if exists else "create"))
        regions.append(copy_ctx.region)
    for region in regions:
        for old in expired(region_context(ctx, region), spec.backup.snapshot_retention_days, now):
            changes.append(Change("db snapshot", f"{old.name} ({region})", "delete",
                                  note=f"older than {spec.backup.snapshot_retention_days} days"))
    return changes


def _available(ctx: AwsContext, identifier: str) -> Any:
    def check() -> dict[str, Any] | None:
        d = _describe_snapshot(ctx, identifier)
        if d is None:
            raise EcsflowError(f"snapshot {identifier} in {ctx.region} disappeared while ecsflow waited for it")
        if d.get("Status") == "failed":
            raise EcsflowError(f"snapshot {identifier} in {ctx.region} failed; see the RDS events")
        return d if d.get("Status") == "available" else None

    return check


def _snapshot_tags(ctx: AwsContext, now: datetime, copy_region: str | None) -> list[dict[str, str]]:
    tags = ctx.tags(SNAPSHOT_COMPONENT)
    tags.append({"Key": TAG_TAKEN_AT, "Value": now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")})
    if copy_region:
        tags.append({"Key": TAG_COPY_REGION, "Value": copy_region})
    return tags


@aws_task(task_run_name="create db snapshot of {ctx.stack}-{ctx.env}")
def create_snapshot(spec: Stack, ctx: AwsContext, now: datetime) -> Observed:
    """Take the manual snapshot for `now` (or find the one a crashed run started) and wait for it."""
    identifier = snapshot_identifier(ctx, now)
    instance = database.find_db_instance(spec, ctx)
    if instance is None:
        raise EcsflowError(f"no DB instance {database.instance_identifier(ctx)} to back up; run `ecsflow up` "
                           f"first")
    existing = find_snapshot(ctx, identifier)
    if existing is None:
        call(f"create snapshot {identifier}", ctx.rds().create_db_snapshot, DBSnapshotIdentifier=identifier,
             DBInstanceIdentifier=instance.name, Tags=_snapshot_tags(ctx, now, spec.backup.copy_region))
    elif not is_our_backup(ctx, existing):
        raise NotOurs(f"snapshot {identifier} exists but is not a backup of {ctx.prefix} (no ecsflow backup "
                      f"tags); rename or delete it")
    d = wait_until(f"snapshot {identifier} to be available", _available(ctx, identifier),
                   timeout=SNAPSHOT_TIMEOUT, poll=ctx.poll_seconds)
    return _snapshot_observed(d, ctx.region)


@aws_task(task_run_name="copy db snapshot {snapshot.name} to {copy_ctx.region}")
def copy_snapshot(snapshot: Observed, copy_ctx: AwsContext, kms_key: Observed) -> Observed:
    """Copy our snapshot into copy_ctx's region under the same name, encrypted with that region's key."""
    identifier = snapshot.name
    existing = find_snapshot(copy_ctx, identifier)
    if existing is not None and not is_our_backup(copy_ctx, existing):
        raise NotOurs(f"snapshot {identifier} in {copy_ctx.region} exists but is not a backup of "
                      f"{copy_ctx.prefix}; rename or delete it")
    if existing is None:
        tags = [{"Key": k, "Value": v} for k, v in sorted(snapshot.tags.items())
                if k != TAG_COPY_REGION]
        tags.append({"Key": "ecsflow:copied-from", "Value": snapshot.attrs["region"]})
        # SourceRegion lets boto3 sign the PreSignedUrl the destination region needs to read the source.
        call(f"copy snapshot {identifier} to {copy_ctx.region}", copy_ctx.rds().copy_db_snapshot,
             SourceDBSnapshotIdentifier=snapshot.id, TargetDBSnapshotIdentifier=identifier,
             KmsKeyId=kms_key.id, SourceRegion=snapshot.attrs["region"], Tags=tags)
    d = wait_until(f"snapshot copy {identifier} in {copy_ctx.region} to be available",
                   _available(copy_ctx, identifier), timeout=SNAPSHOT_TIMEOUT, poll=copy_ctx.poll_seconds)
    return _snapshot_observed(d, copy_ctx.region)


@aws_task(task_run_name="delete db snapshot {snapshot.name}")
def delete_snapshot(snapshot: Observed, ctx: AwsContext) -> None:
    """Delete one of our backups (in the region it lives in). Refuses automated and foreign snapshots."""
    region_ctx = region_context(ctx, snapshot.attrs.get("region") or ctx.region)
    current = find_snapshot(region_ctx, snapshot.name)
    if current is None:
        return
    if not is_our_backup(region_ctx, current):
        raise NotOurs(f"refusing to delete snapshot {snapshot.name} in {region_ctx.region}: it is not a manual "
                      f"backup tagged ecsflow:stack={ctx.stack}, ecsflow:env={ctx.env}, "
                      f"ecsflow:component={SNAPSHOT_COMPONENT}")
    call_or_none(f"delete snapshot {snapshot.name} in {region_ctx.region}", region_ctx.rds().delete_db_snapshot,
                 DBSnapshotIdentifier=snapshot.name)


@aws_task(task_run_name="prune db snapshots in {ctx.region}")
def prune_snapshots(ctx: AwsContext, retention_days: int, now: datetime) -> list[str]:
    """Delete our backups in ctx's region older than the retention (the newest always stays)."""
    pruned = []
    for snapshot in expired(ctx, retention_days, now):
        progress(f"pruning snapshot {snapshot.name} in {ctx.region} (taken {snapshot.attrs.get('created')}, "
                 f"older than {retention_days} days)")
        delete_snapshot.fn(snapshot, ctx)
        pruned.append(snapshot.name)
    return pruned


def newest_backup(ctx: AwsContext) -> Observed:
    available = [s for s in find_backups(ctx) if s.attrs.get("status") == "available"]
    if not available:
        raise EcsflowError(f"{ctx.prefix} has no available backup snapshot in {ctx.region}; run `ecsflow backup` "
                           f"first")
    return available[-1]


@aws_task(task_run_name="find the newest db snapshot of {ctx.stack}-{ctx.env}")
def find_newest_backup(ctx: AwsContext) -> Observed:
    return newest_backup(ctx)


def inventory_backups(ctx: AwsContext) -> list[Observed]:
    """Our backups in ctx's region and in every region a backup says it was copied to."""
    found = find_backups(ctx)
    regions = sorted({s.tags[TAG_COPY_REGION] for s in found if s.tags.get(TAG_COPY_REGION)} - {ctx.region})
    for region in regions:
        found += find_backups(region_context(ctx, region))
    return found


def copy_regions(ctx: AwsContext, backups: list[Observed]) -> list[str]:
    """Regions other than ctx's that hold copies or were named as copy targets (a copy that failed
    may still have left its KMS key there)."""
    named = {s.tags[TAG_COPY_REGION] for s in backups if s.tags.get(TAG_COPY_REGION)}
    return sorted(({s.attrs["region"] for s in backups} | named) - {ctx.region})


def inventory_copy_keys(ctx: AwsContext, backups: list[Observed]) -> list[Observed]:
    """Our snapshot-copy KMS keys in the copy regions (attrs["region"] says where)."""
    keys = []
    for region in copy_regions(ctx, backups):
        for key in kms.inventory_keys(region_context(ctx, region)):
            key.attrs["region"] = region
            keys.append(key)
    return keys


# ---------------------------------------------------------------- the restore test's temporary instance


def _is_temporary(ctx: AwsContext, d: dict[str, Any]) -> bool:
    tags = tag_map(d.get("TagList"))
    return (ctx.owns(tags) and tags.get(TAG_TEMPORARY) == "true" and tags.get(TAG_COMPONENT) == RESTORE_COMPONENT
            and d["DBInstanceIdentifier"] != database.instance_identifier(ctx))


def _instance(ctx: AwsContext, identifier: str) -> dict[str, Any] | None:
    got = call_or_none(f"look up DB instance {identifier}", ctx.rds().describe_db_instances,
                       DBInstanceIdentifier=identifier)
    instances = got["DBInstances"] if got else []
    return dict(instances[0]) if instances else None


def _placement(spec: Stack, ctx: AwsContext) -> dict[str, Any]:
    """Production's subnet group, security groups and parameter group: the copy gets the same rules.
    Without a production instance (it is what was lost), the stack's own subnet group and sg-rds."""
    production = database.find_db_instance(spec, ctx)
    if production is not None:
        return {"DBSubnetGroupName": production.attrs["DBSubnetGroupName"],
                "VpcSecurityGroupIds": production.attrs["VpcSecurityGroupIds"],
                "DBParameterGroupName": production.attrs["DBParameterGroupName"]}
    from tasks import network

    group = network.find_security_group(ctx, "sg-rds")
    if group is None:
        raise EcsflowError(f"{ctx.prefix} has neither a DB instance nor its security group sg-rds: run `ecsflow up` "
                           f"for the network first, so the restored instance stays private")
    return {"DBSubnetGroupName": database.subnet_group_name(ctx), "VpcSecurityGroupIds": [group.id],
            "DBParameterGroupName": database.parameter_group_name(spec, ctx)}


def _restored(ctx: AwsContext, identifier: str) -> Any:
    def check() -> dict[str, Any] | None:
        d = _instance(ctx, identifier)
        if d is None:
            raise EcsflowError(f"temporary DB instance {identifier} disappeared during the restore")
        status = d.get("DBInstanceStatus", "")
        if status in database.FAILED_STATES:
            raise EcsflowError(f"temporary DB instance {identifier} is {status!r}; see its RDS events")
        return d if status in database.READY_STATES else None

    return check


def _temporary_observed(d: dict[str, Any]) -> Observed:
    endpoint = d.get("Endpoint") or {}
    secret = d.get("MasterUserSecret") or {}
    return Observed(id=d["DBInstanceArn"], name=d["DBInstanceIdentifier"], tags=tag_map(d.get("TagList")),
                    attrs={"status": d.get("DBInstanceStatus"), "endpoint": endpoint.get("Address"),
                           "port": endpoint.get("Port"), "master_secret_arn": secret.get("SecretArn"),
                           "publicly_accessible": d.get("PubliclyAccessible"),
                           "deletion_protection": d.get("DeletionProtection"),
                           "security_groups": sorted(g["VpcSecurityGroupId"] for g in d.get("VpcSecurityGroups", [])),
                           "subnet_group": (d.get("DBSubnetGroup") or {}).get("DBSubnetGroupName")})


@aws_task(task_run_name="restore {snapshot.name} to {identifier}")
def restore_temporary_instance(spec: Stack, ctx: AwsContext, snapshot: Observed, identifier: str) -> Observed:
    """Restore `snapshot` into the temporary instance `identifier` and wait until it is available."""
    rds = ctx.rds()
    d = _instance(ctx, identifier)
    if d is not None and not _is_temporary(ctx, d):
        raise NotOurs(f"DB instance {identifier} exists and is not a temporary restore-test instance of {ctx.prefix}")
    if d is None:
        tags = [*ctx.tags(RESTORE_COMPONENT), {"Key": TAG_TEMPORARY, "Value": "true"},
                {"Key": TAG_RESTORED_FROM, "Value": snapshot.name}]
        call(f"restore snapshot {snapshot.name} to {identifier}", rds.restore_db_instance_from_db_snapshot,
             DBInstanceIdentifier=identifier, DBSnapshotIdentifier=snapshot.name,
             DBInstanceClass=spec.backup.restore_test.instance_class, MultiAZ=False, PubliclyAccessible=False,
             DeletionProtection=False, CopyTagsToSnapshot=False, BackupRetentionPeriod=0,
             # its own RDS-managed master secret: the test reads the password from there, never a parameter
             ManageMasterUserPassword=True, EnableIAMDatabaseAuthentication=True, Tags=tags,
             **_placement(spec, ctx))
    d = wait_until(f"temporary DB instance {identifier} to be restored", _restored(ctx, identifier),
                   timeout=spec.backup.restore_test.timeout_minutes * 60, poll=ctx.poll_seconds)
    return _temporary_observed(d)


@aws_task(task_run_name="delete temporary db instance {identifier}")
def delete_temporary_instance(identifier: str, ctx: AwsContext) -> bool:
    """Delete the temporary instance without a final snapshot and wait until it is gone; True when
    there was one. Refuses anything that is not tagged as our temporary restore-test instance."""
    rds = ctx.rds()
    d = _instance(ctx, identifier)
    if d is None:
        return False
    if not _is_temporary(ctx, d):
        raise NotOurs(f"refusing to delete DB instance {identifier}: it lacks the tags {TAG_TEMPORARY}=true and "
                      f"{TAG_COMPONENT}={RESTORE_COMPONENT} of {ctx.prefix}")
    require_ours(ctx, tag_map(d.get("TagList")), f"DB instance {identifier}")
    if d.get("DBInstanceStatus") != "deleting":
        if d.get("DeletionProtection"):  # someone turned it on; it is ours and temporary all the same
            call(f"turn off deletion protection of {identifier}", rds.modify_db_instance,
                 DBInstanceIdentifier=identifier, DeletionProtection=False, ApplyImmediately=True)
        call_or_none(f"delete temporary DB instance {identifier}", rds.delete_db_instance,
                     DBInstanceIdentifier=identifier, SkipFinalSnapshot=True, DeleteAutomatedBackups=True)
    wait_until(f"temporary DB instance {identifier} to be deleted", lambda: _instance(ctx, identifier) is None,
               timeout=DELETE_TIMEOUT, poll=ctx.poll_seconds)
    return True


def inventory_temporary_instances(ctx: AwsContext) -> list[Observed]:
    paginator = ctx.rds().get_paginator("describe_db_instances")

    def pages() -> list[Any]:
        return [d for page in paginator.paginate() for d in page.get("DBInstances", [])]

    return [_temporary_observed(dict(d)) for d in call("list DB instances", pages) if _is_temporary(ctx, dict(d))]
