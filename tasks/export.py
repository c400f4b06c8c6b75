"""The export bucket: where the daily `pg_dump` of the application database goes.

One bucket per stack, `{stack}-{env}-db-exports-{account}-{region}` (bucket names are global):
SSE-KMS with the stack's `rds` key (the dumps hold the same data as the database) and S3 Bucket
Keys, versioning, public access blocked, ACLs disabled, a TLS-only bucket policy, and a lifecycle
rule from `backup.export` (transition to a colder storage class, expiry, old versions after 30
days). find / plan / ensure / delete as every family; teardown empties and deletes it.
"""

from __future__ import annotations

import json
from typing import Any

from spec import Stack
from tasks.aws import (
    AwsContext,
    EcsflowError,
    NotOurs,
    call,
    call_or_none,
    error_code,
    fit_name,
    tag_map,
)
from tasks.contract import Change, Observed, aws_task, current_of, plan_from, project, refuse_foreign, require_ours

COMPONENT = "db-exports"
DUMP_PREFIX = "pg_dump/"
NONCURRENT_DAYS = 30
PUBLIC_ACCESS_BLOCK = {"BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": True,
                       "RestrictPublicBuckets": True}


def partition(region: str) -> str:
    if region.startswith("cn-"):
        return "aws-cn"
    if region.startswith("us-gov-"):
        return "aws-us-gov"
    return "aws"


def bucket_name(ctx: AwsContext) -> str:
    return fit_name(f"{ctx.prefix}-db-exports-{ctx.account_id()}-{ctx.region}", 63)


def bucket_policy(ctx: AwsContext, bucket: str) -> dict[str, Any]:
    part = partition(ctx.region)
    return {"Version": "2012-10-17", "Statement": [
        {"Sid": "DenyInsecureTransport", "Effect": "Deny", "Principal": "*", "Action": "s3:*",
         "Resource": [f"arn:{part}:s3:::{bucket}", f"arn:{part}:s3:::{bucket}/*"],
         "Condition": {"Bool": {"aws:SecureTransport": "false"}}},
    ]}


def lifecycle(spec: Stack) -> list[dict[str, Any]]:
    export = spec.backup.export
    return [{"ID": "age-and-expire-dumps", "Status": "Enabled", "Filter": {"Prefix": DUMP_PREFIX},
             "Transitions": [{"Days": export.transition_days, "StorageClass": export.storage_class}],
             "Expiration": {"Days": export.expiry_days},
             "NoncurrentVersionExpiration": {"NoncurrentDays": NONCURRENT_DAYS},
             "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 7}}]


def _wanted(spec: Stack, ctx: AwsContext, kms_key_arn: str) -> dict[str, Any]:
    return {"encryption": {"algorithm": "aws:kms", "key": kms_key_arn, "bucket_key": True},
            "versioning": "Enabled", "public_access_block": PUBLIC_ACCESS_BLOCK, "ownership": "BucketOwnerEnforced",
            "policy": bucket_policy(ctx, bucket_name(ctx)), "lifecycle": lifecycle(spec),
            "tags": ctx.tag_dict(COMPONENT)}


def _read(ctx: AwsContext, doing: str, method: str, bucket: str) -> Any:
    def read() -> Any:
        return getattr(ctx.s3(), method)(Bucket=bucket)

    try:
        return call_or_none(doing, read)
    except EcsflowError as exc:
        if exc.__cause__ is not None and "NotFound" in error_code(exc.__cause__):
            return None  # e.g. ServerSideEncryptionConfigurationNotFoundError
        raise


def find_export_bucket(ctx: AwsContext) -> Observed | None:
    name = bucket_name(ctx)
    try:
        call(f"look up bucket {name}", ctx.s3().head_bucket, Bucket=name)
    except EcsflowError as exc:
        code = error_code(exc.__cause__) if exc.__cause__ else ""
        if code in ("404", "NoSuchBucket", "NotFound"):
            return None
        if code in ("403", "Forbidden"):
            raise NotOurs(f"S3 bucket {name} belongs to someone else (403); S3 bucket names are global") from exc
        raise
    enc = _read(ctx, f"read the encryption of {name}", "get_bucket_encryption", name) or {}
    rules = enc.get("ServerSideEncryptionConfiguration", {}).get("Rules", [])
    default = rules[0].get("ApplyServerSideEncryptionByDefault", {}) if rules else {}
    versioning = _read(ctx, f"read the versioning of {name}", "get_bucket_versioning", name) or {}
    block = _read(ctx, f"read the public access block of {name}", "get_public_access_block", name) or {}
    ownership = _read(ctx, f"read the object ownership of {name}", "get_bucket_ownership_controls", name) or {}
    owner_rules = ownership.get("OwnershipControls", {}).get("Rules", [])
    policy = _read(ctx, f"read the policy of {name}", "get_bucket_policy", name)
    rules_now = _read(ctx, f"read the lifecycle of {name}", "get_bucket_lifecycle_configuration", name) or {}
    tags = _read(ctx, f"read the tags of {name}", "get_bucket_tagging", name) or {}
    return Observed(
        id=f"arn:{partition(ctx.region)}:s3:::{name}", name=name, tags=tag_map(tags.get("TagSet")),
        attrs={"encryption": {"algorithm": default.get("SSEAlgorithm"), "key": default.get("KMSMasterKeyID"),
                              "bucket_key": bool(rules and rules[0].get("BucketKeyEnabled"))},
               "versioning": versioning.get("Status"),
               "public_access_block": block.get("PublicAccessBlockConfiguration"),
               "ownership": owner_rules[0].get("ObjectOwnership") if owner_rules else None,
               "policy": json.loads(policy["Policy"]) if policy else None,
               "lifecycle": rules_now.get("Rules")},
    )


def _current(observed: Observed, wanted: dict[str, Any]) -> dict[str, Any]:
    current = current_of(observed, wanted)
    current["lifecycle"] = project(observed.attrs.get("lifecycle"), wanted["lifecycle"])
    return current


def plan_export_bucket(spec: Stack, ctx: AwsContext, observed: Observed | None, kms_key_arn: str) -> Change:
    wanted = _wanted(spec, ctx, kms_key_arn)
    return plan_from("s3 bucket", bucket_name(ctx), observed, wanted,
                     current=_current(observed, wanted) if observed else None)


@aws_task(task_run_name="ensure db export bucket")
def ensure_export_bucket(spec: Stack, ctx: AwsContext, kms_key: Observed) -> Observed:
    s3 = ctx.s3()
    name = bucket_name(ctx)
    wanted = _wanted(spec, ctx, kms_key.id)
    observed = find_export_bucket(ctx)
    if observed is None:
        args: dict[str, Any] = {"Bucket": name, "ObjectOwnership": "BucketOwnerEnforced"}
        if ctx.region != "us-east-1":
            args["CreateBucketConfiguration"] = {"LocationConstraint": ctx.region}
        call(f"create bucket {name}", s3.create_bucket, **args)
        fields = set(wanted)
    else:
        refuse_foreign(ctx, observed, f"S3 bucket {name}")
        fields = set(plan_export_bucket(spec, ctx, observed, kms_key.id).changed_fields)
    doing = f"configure bucket {name}"
    # Public access block and encryption first: the bucket never holds a dump without them.
    if "public_access_block" in fields:
        call(doing, s3.put_public_access_block, Bucket=name, PublicAccessBlockConfiguration=PUBLIC_ACCESS_BLOCK)
    if "encryption" in fields:
        call(doing, s3.put_bucket_encryption, Bucket=name, ServerSideEncryptionConfiguration={"Rules": [{
            "ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": kms_key.id},
            "BucketKeyEnabled": True}]})
    if "tags" in fields:
        merged = {**(observed.tags if observed else {}), **wanted["tags"]}
        call(doing, s3.put_bucket_tagging, Bucket=name,
             Tagging={"TagSet": [{"Key": k, "Value": v} for k, v in sorted(merged.items())]})
    if "ownership" in fields:
        call(doing, s3.put_bucket_ownership_controls, Bucket=name,
             OwnershipControls={"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]})
    if "versioning" in fields:
        call(doing, s3.put_bucket_versioning, Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    if "policy" in fields:
        call(doing, s3.put_bucket_policy, Bucket=name, Policy=json.dumps(wanted["policy"]))
    if "lifecycle" in fields:
        call(doing, s3.put_bucket_lifecycle_configuration, Bucket=name,
             LifecycleConfiguration={"Rules": wanted["lifecycle"]})
    if observed is not None and not fields:
        return observed
    found = find_export_bucket(ctx)
    if found is None:
        raise EcsflowError(f"S3 bucket {name} vanished right after it was made; run again")
    return found


def inventory_export_buckets(ctx: AwsContext) -> list[Observed]:
    names = [b["Name"] for b in call("list S3 buckets", ctx.s3().list_buckets).get("Buckets", [])]
    if bucket_name(ctx) not in names:
        return []
    found = find_export_bucket(ctx)
    return [found] if found and ctx.owns(found.tags) else []


@aws_task(task_run_name="delete bucket {observed.name}")
def delete_export_bucket(observed: Observed, ctx: AwsContext) -> None:
    """Empty the bucket (every version and delete marker) and delete it; refuses a bucket without our tags."""
    require_ours(ctx, observed.tags, f"S3 bucket {observed.name}")
    s3 = ctx.s3()
    name = observed.name
    if call_or_none(f"remove the policy of {name}", s3.delete_bucket_policy, Bucket=name) is None:
        return  # the bucket is gone
    paginator = s3.get_paginator("list_object_versions")
    for page in call(f"list the objects of {name}", lambda: list(paginator.paginate(Bucket=name))):
        items = [{"Key": o["Key"], "VersionId": o["VersionId"]}
                 for o in [*page.get("Versions", []), *page.get("DeleteMarkers", [])]]
        for start in range(0, len(items), 1000):
            call(f"empty bucket {name}", s3.delete_objects, Bucket=name,
                 Delete={"Objects": items[start:start + 1000], "Quiet": True})
    call_or_none(f"delete bucket {name}", s3.delete_bucket, Bucket=name)
