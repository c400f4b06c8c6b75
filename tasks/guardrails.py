"""Account-level guardrails, each switched on by the stack's `security:` section (default off):

- Security Hub, with the AWS Foundational Security Best Practices (FSBP) standard subscribed;
- an AWS Config recorder (all supported resources, global ones included) and a delivery channel to
  an S3 bucket of the stack (SSE-KMS with the stack's "s3" key, versioned, public access blocked,
  ACLs disabled, TLS-only policy that lets only Config write, and only for this account);
- a GuardDuty detector.

These are per account and region, shared with every other stack (and team) there, and most cannot
carry tags. So ecsflow turns them on and leaves them on: `ecsflow down` does not disable Security
Hub, GuardDuty or a recorder (guardrails outlive the stack they came with; turn them off by hand if
the account is being closed). An existing recorder, whoever made it, is kept as it is (an account
has one); ecsflow only makes sure it records and delivers. The Config bucket is the stack's (tagged)
and is listed by its inventory for the record, but kept at teardown while a recorder delivers to it.
"""

from __future__ import annotations

from typing import Any

from tasks import buckets
from tasks.aws import AwsContext, EcsflowError, call, call_or_none, error_code
from tasks.contract import Action, Change, Observed, aws_task, partition

CONFIG_KMS_PURPOSE = "s3"
CONFIG_BUCKET_COMPONENT = "config-bucket"
CONFIG_RECORDER = "default"  # the name the console gives; an account has at most one recorder per region
CONFIG_PREFIX = "config"


def fsbp_arn(ctx: AwsContext) -> str:
    return (f"arn:{partition(ctx.region)}:securityhub:{ctx.region}::standards/"
            f"aws-foundational-security-best-practices/v/1.0.0")


# ---------------------------------------------------------------- Security Hub


def find_security_hub(ctx: AwsContext) -> Observed | None:
    hub = ctx.client("securityhub")
    try:
        got = call("look up Security Hub", hub.describe_hub)
    except EcsflowError as exc:
        # Not enabled: AWS answers InvalidAccessException; emulators may answer NotFound.
        if exc.__cause__ is not None and error_code(exc.__cause__) in (
                "InvalidAccessException", "ResourceNotFoundException"):
            return None
        raise
    return Observed(id=got["HubArn"], name="security hub", attrs={"subscribed_at": got.get("SubscribedAt")})


def enabled_standards(ctx: AwsContext) -> list[str]:
    got = call("list the enabled Security Hub standards", ctx.client("securityhub").get_enabled_standards)
    return sorted(s["StandardsArn"] for s in got.get("StandardsSubscriptions", [])
                  if s.get("StandardsStatus") in ("READY", "PENDING", "INCOMPLETE"))


@aws_task(task_run_name="ensure security hub with fsbp")
def ensure_security_hub(ctx: AwsContext) -> Observed:
    """Enable Security Hub (without its default standards, so only FSBP is added) and subscribe the
    FSBP standard. Both calls are real: an emulator that lacks the standards API fails here, loudly."""
    hub = ctx.client("securityhub")
    observed = find_security_hub(ctx)
    if observed is None:
        call("enable Security Hub", hub.enable_security_hub, EnableDefaultStandards=False,
             Tags=ctx.tag_dict("security-hub"))
        observed = find_security_hub(ctx)
        if observed is None:
            raise EcsflowError("Security Hub did not come up right after it was enabled; run again")
    standard = fsbp_arn(ctx)
    if standard not in enabled_standards(ctx):
        call("subscribe the AWS Foundational Security Best Practices standard", hub.batch_enable_standards,
             StandardsSubscriptionRequests=[{"StandardsArn": standard}])
    observed.attrs["standards"] = [standard]
    return observed


# ---------------------------------------------------------------- GuardDuty


def find_guardduty(ctx: AwsContext) -> Observed | None:
    gd = ctx.client("guardduty")
    ids = call("list GuardDuty detectors", gd.list_detectors).get("DetectorIds", [])
    if not ids:
        return None
    got = call(f"read GuardDuty detector {ids[0]}", gd.get_detector, DetectorId=ids[0])
    return Observed(id=ids[0], name="guardduty detector", tags=dict(got.get("Tags") or {}),
                    attrs={"status": got.get("Status")})


@aws_task(task_run_name="ensure guardduty detector")
def ensure_guardduty(ctx: AwsContext) -> Observed:
    gd = ctx.client("guardduty")
    observed = find_guardduty(ctx)
    if observed is None:
        got = call("create the GuardDuty detector", gd.create_detector, Enable=True,
                   FindingPublishingFrequency="FIFTEEN_MINUTES", Tags=ctx.tag_dict("guardduty"),
                   ClientToken=ctx.token("guardduty"))
        return Observed(id=got["DetectorId"], name="guardduty detector", tags=ctx.tag_dict("guardduty"),
                        attrs={"status": "ENABLED"})
    if observed.attrs.get("status") != "ENABLED":
        call(f"enable GuardDuty detector {observed.id}", gd.update_detector, DetectorId=observed.id, Enable=True)
        observed.attrs["status"] = "ENABLED"
    return observed


# ---------------------------------------------------------------- AWS Config


def config_bucket_name(ctx: AwsContext) -> str:
    return buckets.bucket_name(ctx, "config")


def config_bucket_policy(ctx: AwsContext, bucket: str) -> dict[str, Any]:
    """TLS-only, and only AWS Config, for this account, may check the bucket and deliver to it."""
    account = ctx.account_id()
    arn = buckets.bucket_arn(ctx.region, bucket)
    source = {"StringEquals": {"aws:SourceAccount": account}}
    return buckets.tls_only_policy(
        ctx.region, bucket,
        {"Sid": "ConfigChecksAcl", "Effect": "Allow", "Principal": {"Service": "config.amazonaws.com"},
         "Action": ["s3:GetBucketAcl", "s3:ListBucket"], "Resource": arn, "Condition": source},
        {"Sid": "ConfigDelivers", "Effect": "Allow", "Principal": {"Service": "config.amazonaws.com"},
         "Action": "s3:PutObject", "Resource": f"{arn}/{CONFIG_PREFIX}/AWSLogs/{account}/Config/*",
         "Condition": source})


def config_bucket_spec(ctx: AwsContext, kms_key_arn: str) -> buckets.BucketSpec:
    # No lifecycle: the configuration history is the audit trail; its retention is the account's call.
    name = config_bucket_name(ctx)
    return buckets.BucketSpec(name=name, component=CONFIG_BUCKET_COMPONENT, policy=config_bucket_policy(ctx, name),
                              kms_key_arn=kms_key_arn)


def find_config_bucket(ctx: AwsContext) -> Observed | None:
    return buckets.find_bucket(ctx, config_bucket_name(ctx))


@aws_task(task_run_name="ensure config bucket")
def ensure_config_bucket(ctx: AwsContext, kms_key: Observed) -> Observed:
    return buckets.ensure_bucket(ctx, config_bucket_spec(ctx, kms_key.id))


def find_config_recorder(ctx: AwsContext) -> Observed | None:
    cfg = ctx.client("config")
    recorders = call("look up the AWS Config recorder", cfg.describe_configuration_recorders).get(
        "ConfigurationRecorders", [])
    if not recorders:
        return None
    rec = recorders[0]
    status = call("read the AWS Config recorder status", cfg.describe_configuration_recorder_status,
                  ConfigurationRecorderNames=[rec["name"]]).get("ConfigurationRecordersStatus", [])
    channels = call("look up the AWS Config delivery channel", cfg.describe_delivery_channels).get(
        "DeliveryChannels", [])
    return Observed(id=rec["name"], name=rec["name"],
                    attrs={"recording": bool(status and status[0].get("recording")),
                           "all_supported": rec.get("recordingGroup", {}).get("allSupported"),
                           "channel": channels[0] if channels else None})


def _service_linked_role(ctx: AwsContext) -> str:
    """AWS Config records through its service-linked role; made once per account."""
    iam = ctx.iam()
    name = "AWSServiceRoleForConfig"
    got = call_or_none("look up the AWS Config service-linked role", iam.get_role, RoleName=name)
    if got is None:
        got = call("create the AWS Config service-linked role", iam.create_service_linked_role,
                   AWSServiceName="config.amazonaws.com")
    return got["Role"]["Arn"]


@aws_task(task_run_name="ensure config recorder")
def ensure_config_recorder(ctx: AwsContext, bucket: Observed) -> Observed:
    """A recorder of all supported resources (global ones too) delivering to the stack's bucket.
    An existing recorder (an account has one) keeps its settings; a missing channel is added and a
    stopped recorder started."""
    cfg = ctx.client("config")
    observed = find_config_recorder(ctx)
    if observed is None:
        call("create the AWS Config recorder", cfg.put_configuration_recorder, ConfigurationRecorder={
            "name": CONFIG_RECORDER, "roleARN": _service_linked_role(ctx),
            "recordingGroup": {"allSupported": True, "includeGlobalResourceTypes": True}})
        observed = find_config_recorder(ctx)
        assert observed is not None
    if observed.attrs["channel"] is None:
        key = (bucket.attrs.get("encryption") or {}).get("key")
        channel: dict[str, Any] = {"name": CONFIG_RECORDER, "s3BucketName": bucket.name, "s3KeyPrefix": CONFIG_PREFIX,
                                   "configSnapshotDeliveryProperties": {"deliveryFrequency": "TwentyFour_Hours"}}
        if key:
            channel["s3KmsKeyArn"] = key
        call("create the AWS Config delivery channel", cfg.put_delivery_channel, DeliveryChannel=channel)
        observed.attrs["channel"] = channel
    if not observed.attrs["recording"]:
        call("start the AWS Config recorder", cfg.start_configuration_recorder,
             ConfigurationRecorderName=observed.name)
        observed.attrs["recording"] = True
    return observed


# ---------------------------------------------------------------- plan


def plan_guardrails(spec: Any, ctx: AwsContext) -> list[Change]:
    """Read-only: what `up` would turn on. Nothing when the stack asks for no guardrail."""
    from tasks import kms

    sec = spec.security
    changes: list[Change] = []
    if sec.security_hub:
        hub = find_security_hub(ctx)
        standard: Action = "no-op" if hub is not None and fsbp_arn(ctx) in enabled_standards(ctx) else "create"
        changes.append(Change("security hub", "security hub + FSBP", "create" if hub is None else standard))
    if sec.guardduty:
        detector = find_guardduty(ctx)
        action: Action = "create" if detector is None else ("no-op" if detector.attrs.get("status") == "ENABLED"
                                                    else "update")
        changes.append(Change("guardduty detector", detector.id if detector else "guardduty", action))
    if sec.config_recorder:
        key = kms.find_key(ctx, CONFIG_KMS_PURPOSE)
        changes.append(kms.plan_key(ctx, CONFIG_KMS_PURPOSE, key))
        bucket = find_config_bucket(ctx)
        changes.append(buckets.plan_bucket(ctx, config_bucket_spec(ctx, key.id), bucket) if key else
                       Change(buckets.RESOURCE, config_bucket_name(ctx), "create" if bucket is None else "update",
                              note="waits for its KMS key"))
        recorder = find_config_recorder(ctx)
        recording: Action = "create" if recorder is None else (
            "no-op" if recorder.attrs["recording"] and recorder.attrs["channel"] else "update")
        changes.append(Change("config recorder", recorder.name if recorder else CONFIG_RECORDER, recording))
    return changes
