"""The bucket family: one private, TLS-only, encrypted S3 bucket per purpose (ALB access logs,
database exports, AWS Config delivery).

Each is `{stack}-{env}-{purpose}-{account}-{region}` (bucket names are global: the account and
region keep ours apart from every other stack's), made with ACLs disabled (BucketOwnerEnforced)
and then given: public access blocked, default encryption (SSE-S3, or SSE-KMS with the purpose's
key and S3 Bucket Keys), versioning, our tags, a policy of the purpose's own statements plus a
Deny of plain HTTP, and the purpose's lifecycle rules. A purpose module says what it wants in a
`BucketSpec` and wraps these verbs in its own Prefect tasks:

    find_bucket(ctx, name)          -> Observed | None   (NotOurs on a 403: someone else's bucket)
    plan_bucket(ctx, want, observed) -> Change            field diffs of what AWS holds
    ensure_bucket(ctx, want)        -> Observed          only the settings that differ are put
    inventory_bucket(ctx, name)     -> [Observed]        ours only
    delete_bucket(observed, ctx)                         policy off, every version emptied, deleted
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from tasks.aws import AwsContext, EcsflowError, NotOurs, call, call_or_none, error_code, fit_name, tag_map
from tasks.contract import Change, Observed, current_of, partition, plan_from, project, refuse_foreign, require_ours

RESOURCE = "s3 bucket"
PUBLIC_ACCESS_BLOCK = {"BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": True,
                       "RestrictPublicBuckets": True}
OWNERSHIP = "BucketOwnerEnforced"
SSE_S3 = "AES256"
SSE_KMS = "aws:kms"


@dataclass(frozen=True)
class BucketSpec:
    """What one purpose wants of its bucket. `kms_key_arn` None means SSE-S3 (ELB log delivery, for
    one, cannot write to an SSE-KMS bucket); `lifecycle` None leaves the bucket's rules alone."""

    name: str
    component: str
    policy: dict[str, Any]
    kms_key_arn: str | None = None
    lifecycle: list[dict[str, Any]] | None = None


def bucket_name(ctx: AwsContext, purpose: str) -> str:
    return fit_name(f"{ctx.prefix}-{purpose}-{ctx.account_id()}-{ctx.region}", 63)


def bucket_arn(region: str, bucket: str) -> str:
    return f"arn:{partition(region)}:s3:::{bucket}"


def tls_only_policy(region: str, bucket: str, *statements: dict[str, Any]) -> dict[str, Any]:
    """The purpose's statements, then a Deny of every request not made over TLS."""
    arn = bucket_arn(region, bucket)
    return {"Version": "2012-10-17", "Statement": [
        *statements,
        {"Sid": "DenyInsecureTransport", "Effect": "Deny", "Principal": "*", "Action": "s3:*",
         "Resource": [arn, f"{arn}/*"], "Condition": {"Bool": {"aws:SecureTransport": "false"}}},
    ]}


def _encryption(kms_key_arn: str | None) -> dict[str, Any]:
    if kms_key_arn is None:
        return {"algorithm": SSE_S3, "key": None, "bucket_key": False}
    return {"algorithm": SSE_KMS, "key": kms_key_arn, "bucket_key": True}


def wanted_state(ctx: AwsContext, want: BucketSpec) -> dict[str, Any]:
    wanted: dict[str, Any] = {
        "encryption": _encryption(want.kms_key_arn), "versioning": "Enabled",
        "public_access_block": PUBLIC_ACCESS_BLOCK, "ownership": OWNERSHIP, "policy": want.policy,
        "tags": ctx.tag_dict(want.component)}
    if want.lifecycle is not None:
        wanted["lifecycle"] = want.lifecycle
    return wanted


def read_setting(ctx: AwsContext, method: str, bucket: str) -> Any:
    """One of the bucket's settings (`get_bucket_policy`...), None when it has none or the bucket is gone."""
    doing = f"read the {method.removeprefix('get_').replace('_', ' ')} of {bucket}"
    try:
        return call_or_none(doing, getattr(ctx.s3(), method), Bucket=bucket)
    except EcsflowError as exc:
        if exc.__cause__ is not None and "NotFound" in error_code(exc.__cause__):
            return None  # e.g. ServerSideEncryptionConfigurationNotFoundError, OwnershipControlsNotFoundError
        raise


def find_bucket(ctx: AwsContext, name: str) -> Observed | None:
    try:
        call(f"look up bucket {name}", ctx.s3().head_bucket, Bucket=name)
    except EcsflowError as exc:
        code = error_code(exc.__cause__) if exc.__cause__ else ""
        if code in ("404", "NoSuchBucket", "NotFound"):
            return None
        if code in ("403", "Forbidden"):
            raise NotOurs(f"S3 bucket {name} belongs to someone else (403); S3 bucket names are global") from exc
        raise
    enc = read_setting(ctx, "get_bucket_encryption", name) or {}
    rules = enc.get("ServerSideEncryptionConfiguration", {}).get("Rules", [])
    default = rules[0].get("ApplyServerSideEncryptionByDefault", {}) if rules else {}
    versioning = read_setting(ctx, "get_bucket_versioning", name) or {}
    block = read_setting(ctx, "get_public_access_block", name) or {}
    ownership = read_setting(ctx, "get_bucket_ownership_controls", name) or {}
    owner_rules = ownership.get("OwnershipControls", {}).get("Rules", [])
    policy = read_setting(ctx, "get_bucket_policy", name)
    lifecycle = read_setting(ctx, "get_bucket_lifecycle_configuration", name) or {}
    tags = read_setting(ctx, "get_bucket_tagging", name) or {}
    return Observed(
        id=bucket_arn(ctx.region, name), name=name, tags=tag_map(tags.get("TagSet")),
        attrs={"encryption": {"algorithm": default.get("SSEAlgorithm"), "key": default.get("KMSMasterKeyID"),
                              "bucket_key": bool(rules and rules[0].get("BucketKeyEnabled"))},
               "versioning": versioning.get("Status"),
               "public_access_block": block.get("PublicAccessBlockConfiguration"),
               "ownership": owner_rules[0].get("ObjectOwnership") if owner_rules else None,
               "policy": json.loads(policy["Policy"]) if policy else None,
               "lifecycle": lifecycle.get("Rules")},
    )


def plan_bucket(ctx: AwsContext, want: BucketSpec, observed: Observed | None) -> Change:
    wanted = wanted_state(ctx, want)
    current = None
    if observed is not None:
        current = current_of(observed, wanted)
        if "lifecycle" in wanted:  # AWS echoes the rules with defaults we never set
            current["lifecycle"] = project(observed.attrs.get("lifecycle"), wanted["lifecycle"])
    return plan_from(RESOURCE, want.name, observed, wanted, current=current)


def ensure_bucket(ctx: AwsContext, want: BucketSpec) -> Observed:
    """Make the bucket if missing, then put only the settings that differ (none on a second run)."""
    s3 = ctx.s3()
    name = want.name
    wanted = wanted_state(ctx, want)
    observed = find_bucket(ctx, name)
    if observed is None:
        args: dict[str, Any] = {"Bucket": name, "ObjectOwnership": OWNERSHIP}
        if ctx.region != "us-east-1":
            args["CreateBucketConfiguration"] = {"LocationConstraint": ctx.region}
        call(f"create bucket {name}", s3.create_bucket, **args)
        fields = set(wanted)
    else:
        refuse_foreign(ctx, observed, f"S3 bucket {name}")
        fields = set(plan_bucket(ctx, want, observed).changed_fields)
    doing = f"configure bucket {name}"
    # Public access block and encryption first: the bucket never holds an object without them.
    if "public_access_block" in fields:
        call(doing, s3.put_public_access_block, Bucket=name, PublicAccessBlockConfiguration=PUBLIC_ACCESS_BLOCK)
    if "encryption" in fields:
        default: dict[str, Any] = {"SSEAlgorithm": SSE_S3}
        rule: dict[str, Any] = {"ApplyServerSideEncryptionByDefault": default}
        if want.kms_key_arn is not None:
            default.update(SSEAlgorithm=SSE_KMS, KMSMasterKeyID=want.kms_key_arn)
            rule["BucketKeyEnabled"] = True  # one data key per bucket, not a KMS call per object
        call(doing, s3.put_bucket_encryption, Bucket=name, ServerSideEncryptionConfiguration={"Rules": [rule]})
    if "tags" in fields:
        merged = {**(observed.tags if observed else {}), **wanted["tags"]}
        call(doing, s3.put_bucket_tagging, Bucket=name,
             Tagging={"TagSet": [{"Key": k, "Value": v} for k, v in sorted(merged.items())]})
    if "ownership" in fields:
        call(doing, s3.put_bucket_ownership_controls, Bucket=name,
             OwnershipControls={"Rules": [{"ObjectOwnership": OWNERSHIP}]})
    if "versioning" in fields:
        call(doing, s3.put_bucket_versioning, Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    if "policy" in fields:
        call(doing, s3.put_bucket_policy, Bucket=name, Policy=json.dumps(wanted["policy"]))
    if "lifecycle" in fields:
        call(doing, s3.put_bucket_lifecycle_configuration, Bucket=name,
             LifecycleConfiguration={"Rules": wanted["lifecycle"]})
    if observed is not None and not fields:
        return observed
    found = find_bucket(ctx, name)
    if found is None:
        raise EcsflowError(f"S3 bucket {name} vanished right after it was made; run again")
    return found


def inventory_bucket(ctx: AwsContext, name: str) -> list[Observed]:
    """The bucket when it exists and carries our tags (listing first: no 403 for a name someone else holds)."""
    names = [b["Name"] for b in call("list S3 buckets", ctx.s3().list_buckets).get("Buckets", [])]
    if name not in names:
        return []
    found = find_bucket(ctx, name)
    return [found] if found and ctx.owns(found.tags) else []


def delete_bucket(observed: Observed, ctx: AwsContext) -> None:
    """Empty the bucket (every version and delete marker) and delete it; refuses a bucket without our
    tags. Its policy goes first, so that none of its Deny statements stands in the way of emptying it."""
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
