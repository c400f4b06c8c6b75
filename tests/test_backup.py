"""Backups and the restore test against moto, with the local PostgreSQL standing in for the
restored instance in the verification step."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml

from flows.backup import BackupRun, backup_flow
from flows.restore_test import RestoreTestRun, restore_test_flow
from spec import Stack, load_stack
from tasks import backup, database, iam
from tasks.aws import AwsContext, NotOurs
from tasks.contract import Observed
from tests.conftest import library_stack_data, write_stack_file
from tests.support.postgres import LocalPostgres, library_postgres
from tests.support.servers import MotoServer

REGION, COPY_REGION = "ap-northeast-1", "ap-northeast-3"
SOURCE_DB = "ecsflow_test_restore_source"


def client(service: str, region: str = REGION) -> Any:
    return boto3.client(service, region_name=region)  # type: ignore[call-overload]


def tags_of(arn: str, region: str = REGION) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in client("rds", region).list_tags_for_resource(ResourceName=arn)["TagList"]}


def snapshots(region: str = REGION, kind: str | None = None) -> dict[str, dict[str, Any]]:
    args = {"SnapshotType": kind} if kind else {}
    return {s["DBSnapshotIdentifier"]: s for s in client("rds", region).describe_db_snapshots(**args)["DBSnapshots"]}


def instances() -> list[str]:
    return sorted(d["DBInstanceIdentifier"] for d in client("rds").describe_db_instances()["DBInstances"])


@pytest.fixture(scope="module")
def pg() -> LocalPostgres:
    """The stand-in for the restored instance: a database with the library's rows."""
    return library_postgres("ecsflow_restore_test", SOURCE_DB)


def write_stack(tmp_path: Path, **backup_settings: Any) -> Path:
    data = library_stack_data()
    data["backup"] = {**data.get("backup", {}), **backup_settings}
    data["database"]["monitoring_interval"] = 0  # no monitoring role: IAM is not what these tests are about
    return write_stack_file(tmp_path, data)


def production(stack: Stack) -> AwsContext:
    """The production instance as `up` makes it (network and key made directly, as other phases would)."""
    ctx = AwsContext.for_stack(stack)
    ec2 = client("ec2")
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnets = [Observed(id=ec2.create_subnet(VpcId=vpc, CidrBlock=cidr, AvailabilityZone=az)["Subnet"]["SubnetId"],
                        name=az)
               for cidr, az in (("10.0.10.0/24", "ap-northeast-1a"), ("10.0.11.0/24", "ap-northeast-1c"))]
    sg = ec2.create_security_group(GroupName="library-prod-rds", Description="rds", VpcId=vpc)["GroupId"]
    key = client("kms").create_key(Description="rds")["KeyMetadata"]["Arn"]
    role = iam.ensure_role.fn(ctx, database.monitoring_role(ctx)) if stack.database.monitoring_interval else None
    database.ensure_db_subnet_group.fn(stack, ctx, subnets)
    database.ensure_db_parameter_group.fn(stack, ctx)
    database.ensure_db_instance.fn(stack, ctx, kms_key=Observed(id=key, name="rds"),
                                   security_group=Observed(id=sg, name="sg-rds"), monitoring_role=role)
    return ctx


def standin_secret(pg: LocalPostgres) -> str:
    return str(client("secretsmanager").create_secret(Name="library-prod-standin-postgres",
                                                      SecretString=pg.secret_string())["ARN"])


# ---------------------------------------------------------------- names


def test_names_fit_rds_and_never_match_production() -> None:
    ctx = AwsContext(stack="library", env="prod", region=REGION)
    when = datetime(2026, 11, 28, 3, 4, tzinfo=UTC)
    assert backup.snapshot_identifier(ctx, when) == "library-prod-20261128-0304"
    temporary = backup.restore_identifier(ctx, when)
    assert temporary == "library-prod-restore-test-202611280304"
    assert temporary != database.instance_identifier(ctx)
    long_ctx = AwsContext(stack="a-very-long-stack-nm", env="production12", region=REGION)
    name = backup.restore_identifier(long_ctx, when)
    assert len(name) <= 63 and name != database.instance_identifier(long_ctx)


# ---------------------------------------------------------------- backup, copy, prune


@pytest.mark.prefect
def test_backup_snapshots_copies_and_prunes_only_ours(aws: MotoServer, tmp_path: Path) -> None:
    path = write_stack(tmp_path, copy_region=COPY_REGION, snapshot_retention_days=30)
    stack = load_stack(path)
    ctx = production(stack)
    rds = client("rds")
    # what pruning must never touch: a foreign manual snapshot, another stack's, and the automated ones
    rds.create_db_snapshot(DBSnapshotIdentifier="someone-elses", DBInstanceIdentifier="library-prod-db")
    rds.create_db_snapshot(DBSnapshotIdentifier="other-stack-backup", DBInstanceIdentifier="library-prod-db",
                           Tags=[{"Key": "ecsflow:stack", "Value": "shop"}, {"Key": "ecsflow:env", "Value": "prod"},
                                 {"Key": "ecsflow:component", "Value": "db-backup"}])
    automated = set(snapshots(kind="automated"))
    assert automated, "moto makes an automated snapshot of an instance with backups on"

    report = backup_flow(BackupRun(stack_file=str(path)))

    first = report["snapshot"]
    assert first.startswith("library-prod-") and len(first) == len("library-prod-20261128-0304")
    made = snapshots()[first]
    assert made["SnapshotType"] == "manual" and made["Status"] == "available"
    tags = tags_of(made["DBSnapshotArn"])
    assert {k: tags[k] for k in ("ecsflow:stack", "ecsflow:env", "ecsflow:component", "ecsflow:copy-region")} == {
        "ecsflow:stack": "library", "ecsflow:env": "prod", "ecsflow:component": "db-backup",
        "ecsflow:copy-region": COPY_REGION}
    assert tags["ecsflow:taken-at"].startswith(datetime.now(UTC).strftime("%Y-%m-%d"))
    assert tags["project"] == "library-management"

    # the copy: same name in the second region, under that region's own key, tagged
    copy = snapshots(COPY_REGION)[first]
    assert copy["Status"] == "available"
    alias = client("kms", COPY_REGION).describe_key(KeyId="alias/library-prod-snapshot-copy")["KeyMetadata"]
    assert copy["KmsKeyId"] == alias["Arn"] and ":ap-northeast-3:" in alias["Arn"]
    assert report["copy"]["kms_key"] == alias["Arn"]
    copy_tags = tags_of(copy["DBSnapshotArn"], COPY_REGION)
    assert copy_tags["ecsflow:component"] == "db-backup" and copy_tags["ecsflow:copied-from"] == REGION
    assert report["pruned"] == {REGION: [], COPY_REGION: []}

    # a second backup a minute later, then pruning as if 31 days had passed: the first goes in both
    # regions, the newest stays (even though it is past the retention too), nothing else is touched
    later = datetime.now(UTC) + timedelta(minutes=1)
    second = backup.create_snapshot.fn(stack, ctx, later)
    copy_ctx = backup.region_context(ctx, COPY_REGION)
    backup.copy_snapshot.fn(second, copy_ctx, Observed(id=alias["Arn"], name="copy key"))
    future = datetime.now(UTC) + timedelta(days=31)
    planned = [c.as_row() for c in backup.plan_backup(stack, ctx, future)]
    assert [(r["resource"], r["action"]) for r in planned[:2]] == [("db snapshot", "create"),
                                                                     ("db snapshot copy", "create")]
    assert [(r["name"], r["action"]) for r in planned[2:]] == [(f"{first} ({REGION})", "delete"),
                                                                (f"{first} ({COPY_REGION})", "delete")]
    assert backup.prune_snapshots.fn(ctx, 30, future) == [first]
    assert backup.prune_snapshots.fn(copy_ctx, 30, future) == [first]
    assert set(snapshots(kind="manual")) == {second.name, "someone-elses", "other-stack-backup"}
    assert set(snapshots(kind="automated")) == automated
    assert set(snapshots(COPY_REGION)) == {second.name}
    # within the retention nothing goes
    assert backup.prune_snapshots.fn(ctx, 30, datetime.now(UTC)) == []

    # a delete asked of a foreign or automated snapshot, or of the production instance, is refused
    for snap in (snapshots()["someone-elses"], snapshots(kind="automated")[sorted(automated)[0]]):
        observed = Observed(id=snap["DBSnapshotArn"], name=snap["DBSnapshotIdentifier"], attrs={"region": REGION})
        with pytest.raises(NotOurs, match="refusing to delete snapshot"):
            backup.delete_snapshot.fn(observed, ctx)
    assert {"someone-elses", *automated} <= set(snapshots())
    with pytest.raises(NotOurs, match="refusing to delete DB instance library-prod-db"):
        backup.delete_temporary_instance.fn("library-prod-db", ctx)
    assert instances() == ["library-prod-db"]


# ---------------------------------------------------------------- restore test


def read_artifact(key: str) -> Any:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as prefect:
        found = prefect.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))
    return sorted(found, key=lambda a: a.created)[-1] if found else None


@pytest.mark.prefect
def test_restore_test_verifies_measures_and_deletes_the_copy(aws: MotoServer, tmp_path: Path,
                                                             pg: LocalPostgres) -> None:
    path = write_stack(tmp_path, endpoint_override={"host": pg.host, "port": pg.port, "db_name": SOURCE_DB,
                                                    "secret_arn": standin_secret(pg), "sslmode": "disable"})
    stack = load_stack(path)
    ctx = production(stack)
    backup.create_snapshot.fn(stack, ctx, datetime.now(UTC))

    result = restore_test_flow(RestoreTestRun(stack_file=str(path)))

    assert result["ok"] is True and result["temporary_instance_deleted"] is True
    assert result["temporary_instance"].startswith("library-prod-restore-test-")
    counts = result["verification"]["row_counts"]
    assert counts == {"books": 120, "members": 45, "loans": 300}
    assert result["rto_seconds"] >= result["restore_seconds"] > 0
    assert result["rpo_seconds"] >= 0 and result["newest_data_age_seconds"] >= 0
    assert instances() == ["library-prod-db"]  # the temporary instance is gone
    markdown = read_artifact("restore-test-library-prod").data
    assert "Restore test of library-prod: passed" in markdown
    assert "| RTO (restore start to verified) |" in markdown and "| rows of loans | yes | 300 rows |" in markdown
    assert pg.password not in markdown and pg.password not in str(result)
    history = read_artifact("restore-test-history-library-prod")
    assert history is not None and '"rto_s"' in history.data


@pytest.mark.prefect
def test_restore_test_deletes_the_copy_when_verification_fails(aws: MotoServer, tmp_path: Path,
                                                              pg: LocalPostgres) -> None:
    path = write_stack(tmp_path, endpoint_override={"host": pg.host, "port": pg.port, "db_name": SOURCE_DB,
                                                    "secret_arn": standin_secret(pg), "sslmode": "disable"},
                       restore_test={"key_tables": ["books", "reservations"],
                                     "verify_query": "select max(created_at) from loans"})
    stack = load_stack(path)
    ctx = production(stack)
    backup.create_snapshot.fn(stack, ctx, datetime.now(UTC))
    state = restore_test_flow(RestoreTestRun(stack_file=str(path)), return_state=True)

    assert state.is_failed()
    with pytest.raises(Exception, match='rows of reservations: relation "reservations" does not exist'):
        state.result()
    assert instances() == ["library-prod-db"]
    markdown = read_artifact("restore-test-library-prod").data
    assert "**FAILED**" in markdown and "| rows of books | yes | 120 rows |" in markdown
    assert "(deleted)" in markdown and "| restore alone | -" not in markdown  # the copy was made, then deleted


@pytest.mark.prefect
def test_teardown_removes_backups_copies_leftover_restores_and_the_export_bucket(aws: MotoServer,
                                                                               tmp_path: Path) -> None:
    from flows.teardown import TeardownRun, teardown_flow
    from tasks import export, kms
    from tasks.inventory import inventory

    path = write_stack(tmp_path, copy_region=COPY_REGION)
    stack = load_stack(path)
    ctx = production(stack)
    snapshot = backup.create_snapshot.fn(stack, ctx, datetime.now(UTC))
    copy_ctx = backup.region_context(ctx, COPY_REGION)
    copy_key = kms.ensure_key.fn(copy_ctx, backup.COPY_KEY_PURPOSE)
    backup.copy_snapshot.fn(snapshot, copy_ctx, copy_key)
    # a restore test that crashed before its cleanup, and the export bucket
    name = backup.restore_identifier(ctx, datetime.now(UTC))
    leftover = backup.restore_temporary_instance.fn(stack, ctx, snapshot, name)
    export.ensure_export_bucket.fn(stack, ctx, kms.ensure_key.fn(ctx, "rds"))
    client("rds").create_db_snapshot(DBSnapshotIdentifier="someone-elses", DBInstanceIdentifier="library-prod-db")

    found = inventory(ctx)
    assert [o.name for o in found[("backup", "temporary db instance")]] == [leftover.name]
    assert [o.name for o in found[("database", "db instance")]] == ["library-prod-db"]  # not the temporary one
    assert sorted((o.name, o.attrs["region"]) for o in found[("backup", "db snapshot")]) == [
        (snapshot.name, REGION), (snapshot.name, COPY_REGION)]
    assert [k.id for k in found[("backup", "copy-region kms key")]] == [copy_key.id]
    assert [b.name for b in found[("backup", "export bucket")]] == [export.bucket_name(ctx)]

    teardown_flow(TeardownRun(stack_file=str(path), confirm=True, final_snapshot=False))

    assert instances() == []
    assert set(snapshots(kind="manual")) == {"someone-elses"} and snapshots(COPY_REGION) == {}
    assert client("kms", COPY_REGION).describe_key(KeyId=copy_key.id)["KeyMetadata"]["KeyState"] == "PendingDeletion"
    assert export.bucket_name(ctx) not in [b["Name"] for b in client("s3").list_buckets()["Buckets"]]


def test_cli_bad_backup_settings_exit_2_naming_the_field(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from ecsflow.cli import main

    same = write_stack(tmp_path, copy_region=REGION)
    assert main(["backup", "--stack", str(same)]) == 2
    assert "backup.copy_region" in capsys.readouterr().err
    data = yaml.safe_load(same.read_text())
    data["backup"] = {"copy_region": COPY_REGION, "export": {"transition_days": 10, "storage_class": "STANDARD_IA"}}
    (tmp_path / "ia.yaml").write_text(yaml.safe_dump(data))
    assert main(["export-data", "--stack", str(tmp_path / "ia.yaml")]) == 2
    assert "transition_days" in capsys.readouterr().err
    data["backup"] = {"restore_test": {"key_tables": ["books; drop table loans"]}}
    (tmp_path / "sql.yaml").write_text(yaml.safe_dump(data))
    assert main(["restore-test", "--stack", str(tmp_path / "sql.yaml")]) == 2
    assert "key_tables" in capsys.readouterr().err
