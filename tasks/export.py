"""The export bucket: where the daily `pg_dump` of the application database goes.

One bucket per stack, `{stack}-{env}-db-exports-{account}-{region}` (bucket names are global):
SSE-KMS with the stack's `rds` key (the dumps hold the same data as the database) and S3 Bucket
Keys, versioning, public access blocked, ACLs disabled, a TLS-only bucket policy, and a lifecycle
rule from `backup.export` (transition to a colder storage class, expiry, old versions after 30
days). find / plan / ensure / delete as every family; teardown empties and deletes it.
"""

from __future__ import annotations

from typing import Any

from spec import Stack
from tasks import buckets
from tasks.aws import AwsContext
from tasks.contract import Change, Observed, aws_task

COMPONENT = "db-exports"
DUMP_PREFIX = "pg_dump/"
NONCURRENT_DAYS = 30


def bucket_name(ctx: AwsContext) -> str:
    return buckets.bucket_name(ctx, COMPONENT)


def bucket_policy(ctx: AwsContext, bucket: str) -> dict[str, Any]:
    return buckets.tls_only_policy(ctx.region, bucket)


def lifecycle(spec: Stack) -> list[dict[str, Any]]:
    export = spec.backup.export
    return [{"ID": "age-and-expire-dumps", "Status": "Enabled", "Filter": {"Prefix": DUMP_PREFIX},
             "Transitions": [{"Days": export.transition_days, "StorageClass": export.storage_class}],
             "Expiration": {"Days": export.expiry_days},
             "NoncurrentVersionExpiration": {"NoncurrentDays": NONCURRENT_DAYS},
             "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 7}}]


def bucket_spec(spec: Stack, ctx: AwsContext, kms_key_arn: str) -> buckets.BucketSpec:
    # SSE-KMS with the stack's `rds` key: the dumps hold the same data as the database.
    name = bucket_name(ctx)
    return buckets.BucketSpec(name=name, component=COMPONENT, policy=bucket_policy(ctx, name),
                              kms_key_arn=kms_key_arn, lifecycle=lifecycle(spec))


def find_export_bucket(ctx: AwsContext) -> Observed | None:
    return buckets.find_bucket(ctx, bucket_name(ctx))


def plan_export_bucket(spec: Stack, ctx: AwsContext, observed: Observed | None, kms_key_arn: str) -> Change:
    return buckets.plan_bucket(ctx, bucket_spec(spec, ctx, kms_key_arn), observed)


@aws_task(task_run_name="ensure db export bucket")
def ensure_export_bucket(spec: Stack, ctx: AwsContext, kms_key: Observed) -> Observed:
    return buckets.ensure_bucket(ctx, bucket_spec(spec, ctx, kms_key.id))


def inventory_export_buckets(ctx: AwsContext) -> list[Observed]:
    return buckets.inventory_bucket(ctx, bucket_name(ctx))


@aws_task(task_run_name="delete bucket {observed.name}")
def delete_export_bucket(observed: Observed, ctx: AwsContext) -> None:
    """Empty the bucket (every version and delete marker) and delete it; refuses a bucket without our tags."""
    buckets.delete_bucket(observed, ctx)
