"""moto 5.2.5 behaviour the backup and export families rely on, or work around (see tests/test_moto_smoke.py)."""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from tests.support.servers import MotoServer

REGION = "ap-northeast-1"


def client(service: str, region: str = REGION) -> Any:
    return boto3.client(service, region_name=region)  # type: ignore[call-overload]


def test_gap_a_conditional_deny_in_a_bucket_policy_denies_every_upload(aws: MotoServer) -> None:
    """In AWS, a TLS-only statement (Deny when aws:SecureTransport is false) does not apply to an HTTPS
    request. moto 5.2.5 does not know aws:SecureTransport and treats a Deny whose condition it cannot
    verify as a deny, so no object can be put. When this test fails, moto has caught up and
    tests/test_export.py can drop its owner-only policy."""
    s3 = client("s3")
    s3.create_bucket(Bucket="smoke-tls-only", CreateBucketConfiguration={"LocationConstraint": REGION})
    s3.put_bucket_policy(Bucket="smoke-tls-only", Policy=json.dumps({"Version": "2012-10-17", "Statement": [{
        "Effect": "Deny", "Principal": "*", "Action": "s3:*",
        "Resource": ["arn:aws:s3:::smoke-tls-only", "arn:aws:s3:::smoke-tls-only/*"],
        "Condition": {"Bool": {"aws:SecureTransport": "false"}}}]}))
    with pytest.raises(ClientError) as caught:
        s3.put_object(Bucket="smoke-tls-only", Key="x", Body=b"x")
    assert caught.value.response["Error"]["Code"] == "403"


def test_snapshot_copy_across_regions_under_the_target_regions_key(aws: MotoServer) -> None:
    rds = client("rds")
    rds.create_db_instance(DBInstanceIdentifier="smoke-db", Engine="postgres", DBInstanceClass="db.t4g.micro",
                           AllocatedStorage=20, StorageEncrypted=True, MasterUsername="smoke",
                           ManageMasterUserPassword=True, CopyTagsToSnapshot=True, BackupRetentionPeriod=7,
                           Tags=[{"Key": "ecsflow:stack", "Value": "smoke"}])
    snap = rds.create_db_snapshot(DBSnapshotIdentifier="smoke-1", DBInstanceIdentifier="smoke-db",
                                  Tags=[{"Key": "ecsflow:component", "Value": "db-backup"}])["DBSnapshot"]
    # tags given in the call replace the instance's (CopyTagsToSnapshot applies when none are given)
    assert snap["TagList"] == [{"Key": "ecsflow:component", "Value": "db-backup"}]
    automated = rds.describe_db_snapshots(SnapshotType="automated")["DBSnapshots"]
    assert automated and automated[0]["TagList"] == [{"Key": "ecsflow:stack", "Value": "smoke"}]
    key = client("kms", "us-west-2").create_key()["KeyMetadata"]["Arn"]
    copy = client("rds", "us-west-2").copy_db_snapshot(
        SourceDBSnapshotIdentifier=snap["DBSnapshotArn"], TargetDBSnapshotIdentifier="smoke-1", KmsKeyId=key,
        SourceRegion=REGION, Tags=[{"Key": "ecsflow:component", "Value": "db-backup"}])["DBSnapshot"]
    assert (copy["KmsKeyId"], copy["Status"]) == (key, "available")


def test_gap_restore_ignores_backup_retention_zero(aws: MotoServer) -> None:
    """The temporary instance asks for no automated backups (BackupRetentionPeriod=0); moto keeps the
    source instance's setting. Harmless here: the instance is deleted with DeleteAutomatedBackups."""
    rds = client("rds")
    rds.create_db_instance(DBInstanceIdentifier="smoke-db", Engine="postgres", DBInstanceClass="db.t4g.micro",
                           AllocatedStorage=20, MasterUsername="smoke", ManageMasterUserPassword=True,
                           BackupRetentionPeriod=5)
    rds.create_db_snapshot(DBSnapshotIdentifier="smoke-1", DBInstanceIdentifier="smoke-db")
    restored = rds.restore_db_instance_from_db_snapshot(
        DBInstanceIdentifier="smoke-restore", DBSnapshotIdentifier="smoke-1", DBInstanceClass="db.t4g.micro",
        BackupRetentionPeriod=0, ManageMasterUserPassword=True, DeletionProtection=False)["DBInstance"]
    assert restored["BackupRetentionPeriod"] == 5
    assert restored["MasterUserSecret"]["SecretArn"].split(":secret:")[1].startswith("rds!db-")
