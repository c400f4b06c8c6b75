"""The data export: a real pg_dump of a real PostgreSQL database (the library's books, members and
loans) into the moto S3 bucket, and its restore into a scratch database with equal row counts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import boto3
import pytest

from flows.export_data import ExportRun, export_data_flow
from spec import load_stack
from tasks import export, kms, pgcheck
from tasks.aws import CALLS, AwsContext, NotOurs
from tasks.contract import Observed
from tests.conftest import library_stack_data, write_stack_file
from tests.support.postgres import LocalPostgres, library_postgres
from tests.support.servers import MotoServer

REGION = "ap-northeast-1"
SOURCE_DB = "ecsflow_test_export_source"
ROWS = {"books": 120, "members": 45, "loans": 300}


def client(service: str) -> Any:
    return boto3.client(service, region_name=REGION)  # type: ignore[call-overload]


@pytest.fixture(scope="module")
def pg() -> LocalPostgres:
    return library_postgres("ecsflow_export_test", SOURCE_DB)


@pytest.fixture
def stack_file(aws: MotoServer, tmp_path: Path, pg: LocalPostgres) -> Path:
    secret = client("secretsmanager").create_secret(Name="library-prod-standin", SecretString=pg.secret_string())
    data = library_stack_data()
    data["backup"]["endpoint_override"] = {"host": pg.host, "port": pg.port, "db_name": SOURCE_DB,
                                           "secret_arn": secret["ARN"], "sslmode": "disable"}
    data["backup"]["export"] = {"transition_days": 45, "storage_class": "STANDARD_IA", "expiry_days": 400}
    return write_stack_file(tmp_path, data)


def test_export_bucket_is_private_encrypted_tls_only_and_idempotent(stack_file: Path) -> None:
    spec = load_stack(stack_file)
    ctx = AwsContext.for_stack(spec)
    key = kms.ensure_key.fn(ctx, "rds")
    bucket = export.ensure_export_bucket.fn(spec, ctx, key).name
    assert bucket == "library-prod-db-exports-123456789012-ap-northeast-1"
    s3 = client("s3")
    rules = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"]
    assert rules[0]["ApplyServerSideEncryptionByDefault"] == {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": key.id}
    assert rules[0]["BucketKeyEnabled"] is True
    assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
    assert all(s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"].values())
    assert s3.get_bucket_ownership_controls(Bucket=bucket)["OwnershipControls"]["Rules"] == [
        {"ObjectOwnership": "BucketOwnerEnforced"}]
    statement = json.loads(s3.get_bucket_policy(Bucket=bucket)["Policy"])["Statement"][0]
    assert (statement["Effect"], statement["Action"]) == ("Deny", "s3:*")
    assert statement["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    rule = s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"][0]
    assert rule["Transitions"] == [{"Days": 45, "StorageClass": "STANDARD_IA"}]
    assert rule["Expiration"] == {"Days": 400} and rule["Filter"] == {"Prefix": "pg_dump/"}
    assert rule["NoncurrentVersionExpiration"] == {"NoncurrentDays": 30}
    tags = {t["Key"]: t["Value"] for t in s3.get_bucket_tagging(Bucket=bucket)["TagSet"]}
    assert tags["ecsflow:component"] == "db-exports" and tags["ecsflow:stack"] == "library"

    # a second ensure changes nothing; a changed lifecycle is planned as an update of that field
    CALLS.reset()
    export.ensure_export_bucket.fn(spec, ctx, key)
    assert CALLS.mutating() == {}
    observed = export.find_export_bucket(ctx)
    assert export.plan_export_bucket(spec, ctx, observed, key.id).action == "no-op"
    longer = spec.model_copy(update={"backup": spec.backup.model_copy(update={
        "export": spec.backup.export.model_copy(update={"expiry_days": 500})})})
    assert export.plan_export_bucket(longer, ctx, observed, key.id).changed_fields == ["lifecycle"]

    # teardown finds it by its tags, refuses a bucket without them, empties and deletes ours
    s3.delete_bucket_policy(Bucket=bucket)  # moto gap: see test_moto_smoke_backup.py
    s3.put_object(Bucket=bucket, Key="pg_dump/x.dump", Body=b"PGDMP")
    s3.put_object(Bucket=bucket, Key="pg_dump/x.dump", Body=b"PGDMP again")  # two versions
    found = export.inventory_export_buckets(ctx)
    assert [b.name for b in found] == [bucket]
    with pytest.raises(NotOurs):
        export.delete_export_bucket.fn(Observed(id="x", name=bucket, tags={}), ctx)
    export.delete_export_bucket.fn(found[0], ctx)
    assert bucket not in [b["Name"] for b in s3.list_buckets()["Buckets"]]


def policy_moto_accepts(ctx: AwsContext, bucket: str) -> dict[str, Any]:
    """moto 5.2.5 treats a Deny whose condition does not hold as a deny (test_moto_smoke_backup.py), so the
    TLS-only statement blocks every upload there. In the flow test the bucket gets an owner-only policy
    instead; the real policy is checked above."""
    return {"Version": "2012-10-17", "Statement": [{
        "Sid": "OwnerOnly", "Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::123456789012:root"},
        "Action": "s3:*", "Resource": [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"]}]}


@pytest.mark.prefect
def test_export_dumps_to_the_bucket_and_the_dump_restores(stack_file: Path, pg: LocalPostgres,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(export, "bucket_policy", policy_moto_accepts)
    result = export_data_flow(ExportRun(stack_file=str(stack_file)))

    dump, check = result["dump"], result["restore_check"]
    assert dump["row_counts"] == ROWS
    assert check["ok"] is True and check["row_counts_restored"] == ROWS and check["mismatches"] == {}
    assert check["scratch_database"] not in pg.databases()  # dropped after the check
    s3 = client("s3")
    spec = load_stack(stack_file)
    ctx = AwsContext.for_stack(spec)
    bucket = export.bucket_name(ctx)
    key_arn = client("kms").describe_key(KeyId="alias/library-prod-rds")["KeyMetadata"]["Arn"]
    assert dump["bucket"] == bucket and dump["key"].startswith(f"pg_dump/{SOURCE_DB}/")

    # the dump: custom format, encrypted with the stack's key, the manifest beside it, no password anywhere
    head = s3.head_object(Bucket=bucket, Key=dump["key"])
    assert head["ServerSideEncryption"] == "aws:kms" and head["SSEKMSKeyId"] == key_arn
    assert head["ContentLength"] == dump["bytes"] > 0 and head["Metadata"]["sha256"] == dump["sha256"]
    assert s3.get_object(Bucket=bucket, Key=dump["key"])["Body"].read(5) == b"PGDMP"
    manifest = json.loads(s3.get_object(Bucket=bucket, Key=dump["key"] + ".json")["Body"].read())
    assert manifest["row_counts"] == ROWS
    assert pg.password not in json.dumps(manifest) and pg.password not in json.dumps(result)

    # a dump whose manifest disagrees with what restores is caught
    manifest["row_counts"]["loans"] = 301
    s3.put_object(Bucket=bucket, Key=dump["key"] + ".json", Body=json.dumps(manifest).encode())
    bad = pgcheck.restore_dump_check.fn(pgcheck.production_target(spec, ctx), ctx, bucket, dump["key"])
    assert bad["ok"] is False and bad["mismatches"] == {"loans": {"dump": 301, "restored": 300}}
