"""The monitoring family: an encrypted SNS topic for alarms, CloudWatch alarms on the services,
the load balancer and the database, metric filters on the services' logs, a dashboard and a
monthly cost budget.

- Topic `{stack}-{env}-alarms`: SSE with the stack's "sns" KMS key (whose policy lets CloudWatch and
  Budgets use it), a policy letting only CloudWatch and Budgets of this account publish (plus the
  account itself), TLS-only; e-mail and HTTPS subscriptions from the stack file. HTTPS endpoints may
  carry tokens: results and plans show them only as host + hash.
- Alarms `{stack}-{env}-{key}`, tagged, actions (ALARM and OK) to the topic. Their dimensions come
  from the live resources (`find_*` of the other families), their thresholds from the stack file's
  `monitoring.alarms` over the defaults in spec.stack.ALARM_KINDS. Missing data is treated per kind
  (see `KINDS`): no requests or no errors is fine (notBreaching), a silent Container Insights is not
  (breaching), a silent ECS/RDS metric keeps the alarm's state (missing).
- `deployment_alarm_names` is pure (the stack and names only), so a service can name its deployment
  alarms (ECS rolls back a rollout when one fires) before or after they exist.
- Metric filters on each service's log group (application errors, 5xx in the access log) with alarms.
  Filters carry no tags: the log group's tags and the name prefix are the ownership record.
- Dashboard `{stack}-{env}-overview`: dashboards carry no tags either; its first widget states the
  stack and env (`ecsflow:stack=... ecsflow:env=...`), and only a dashboard carrying that marker is
  changed or deleted.
- Budget `{stack}-{env}-monthly-cost` (the account's monthly cost): forecast and actual notifications
  to the topic. ResourceTags are set at creation, but budgets made before AWS Budgets had tags carry
  none and not every endpoint answers ListTagsForResource, so ownership is the deterministic name in
  the account-wide budget namespace: ecsflow only ever touches the budget of exactly that name.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from spec import Stack
from spec.stack import ALARM_KINDS, AlarmDefault
from tasks import kms
from tasks.aws import (
    TAG_COMPONENT,
    TAG_ENV,
    TAG_STACK,
    AwsContext,
    EcsflowError,
    NotOurs,
    call,
    call_or_none,
    tag_map,
    tags_of,
)
from tasks.contract import (
    Change,
    Observed,
    aws_task,
    current_of,
    diff_fields,
    plan_from,
    project,
    refuse_foreign,
    require_ours,
)

TOPIC_COMPONENT = "alarm-topic"
DASHBOARD_COMPONENT = "dashboard"
BUDGET_COMPONENT = "monthly-budget"
KEY_PURPOSE = "sns"
GIB = 1024 ** 3
MIB = 1024 ** 2
# ECS watches these kinds during a rollout and rolls back when one fires: they say the new revision is bad.
DEPLOYMENT_KINDS = ("service_5xx", "unhealthy_hosts", "app_errors")
BUDGETS_REGION = {"aws": "us-east-1", "aws-cn": "cn-northwest-1", "aws-us-gov": "us-gov-west-1"}


# ---------------------------------------------------------------- what each alarm kind watches


@dataclass(frozen=True)
class Kind:
    subject: str  # "service", "target group", "alb", "db", "log"
    namespace: str
    metric: str
    stat: str  # Average / Sum / Maximum / Minimum, or p95 / p99 (an extended statistic)
    comparison: str
    missing: str  # TreatMissingData
    what: str
    scale: float = 1.0  # stack unit -> metric unit


KINDS: dict[str, Kind] = {
    "service_cpu": Kind("service", "AWS/ECS", "CPUUtilization", "Average", "GreaterThanThreshold", "missing",
                        "CPU utilisation of the service's tasks"),
    "service_memory": Kind("service", "AWS/ECS", "MemoryUtilization", "Average", "GreaterThanThreshold", "missing",
                           "memory utilisation of the service's tasks"),
    "running_tasks": Kind("service", "ECS/ContainerInsights", "RunningTaskCount", "Average",
                          "GreaterThanThreshold", "breaching", "tasks running below the desired count"),
    "service_5xx": Kind("target group", "AWS/ApplicationELB", "HTTPCode_Target_5XX_Count", "Sum",
                        "GreaterThanThreshold", "notBreaching", "5xx answers of the service's targets"),
    "unhealthy_hosts": Kind("target group", "AWS/ApplicationELB", "UnHealthyHostCount", "Maximum",
                            "GreaterThanThreshold", "notBreaching", "unhealthy targets in the service's group"),
    "alb_5xx": Kind("alb", "AWS/ApplicationELB", "HTTPCode_ELB_5XX_Count", "Sum", "GreaterThanThreshold",
                    "notBreaching", "5xx answers made by the load balancer itself"),
    "target_5xx": Kind("alb", "AWS/ApplicationELB", "HTTPCode_Target_5XX_Count", "Sum", "GreaterThanThreshold",
                       "notBreaching", "5xx answers of all targets behind the load balancer"),
    "latency_p95": Kind("alb", "AWS/ApplicationELB", "TargetResponseTime", "p95", "GreaterThanThreshold",
                        "notBreaching", "95th percentile target response time"),
    "latency_p99": Kind("alb", "AWS/ApplicationELB", "TargetResponseTime", "p99", "GreaterThanThreshold",
                        "notBreaching", "99th percentile target response time"),
    "db_cpu": Kind("db", "AWS/RDS", "CPUUtilization", "Average", "GreaterThanThreshold", "missing",
                   "database CPU utilisation"),
    "db_free_storage": Kind("db", "AWS/RDS", "FreeStorageSpace", "Minimum", "LessThanThreshold", "missing",
                            "free database storage", scale=GIB),
    "db_freeable_memory": Kind("db", "AWS/RDS", "FreeableMemory", "Average", "LessThanThreshold", "missing",
                               "freeable database memory", scale=MIB),
    "db_connections": Kind("db", "AWS/RDS", "DatabaseConnections", "Maximum", "GreaterThanThreshold", "missing",
                           "open database connections"),
    "app_errors": Kind("log", "", "app-errors", "Sum", "GreaterThanThreshold", "notBreaching",
                       "application log lines at ERROR or above"),
    "http_5xx": Kind("log", "", "http-5xx", "Sum", "GreaterThanThreshold", "notBreaching",
                     "5xx lines in the service's access log"),
}
assert set(KINDS) == set(ALARM_KINDS), "spec.stack.ALARM_KINDS and KINDS must name the same kinds"

# key suffix per kind: the alarm is `{stack}-{env}-{subject}-{suffix}`
SUFFIX = {"service_cpu": "cpu", "service_memory": "memory", "running_tasks": "running-tasks",
          "service_5xx": "target-5xx", "unhealthy_hosts": "unhealthy-hosts", "alb_5xx": "elb-5xx",
          "target_5xx": "target-5xx", "latency_p95": "latency-p95", "latency_p99": "latency-p99",
          "db_cpu": "cpu", "db_free_storage": "free-storage", "db_freeable_memory": "freeable-memory",
          "db_connections": "connections", "app_errors": "app-errors", "http_5xx": "http-5xx"}


@dataclass(frozen=True)
class AlarmRef:
    """One alarm the stack wants, known from the stack file alone."""

    key: str  # "backend-cpu", "alb-latency-p95", "db-free-storage"
    kind: str
    subject: str  # the service's name, "alb" or "db"


def _load_balanced(spec: Stack, service: str) -> bool:
    return bool(getattr(spec.services[service], "load_balanced", True))


def planned_alarms(spec: Stack) -> list[AlarmRef]:
    """Every alarm the stack wants, in a stable order (none when monitoring is off)."""
    mon = spec.monitoring
    if not mon.enabled:
        return []
    refs: list[AlarmRef] = []
    insights = spec.cluster.container_insights != "disabled"
    for service in spec.services:
        kinds = ["service_cpu", "service_memory"] + (["running_tasks"] if insights else [])
        if _load_balanced(spec, service):
            kinds += ["service_5xx", "unhealthy_hosts"]
        kinds += ["app_errors", "http_5xx"]
        refs += [AlarmRef(f"{service}-{SUFFIX[k]}", k, service) for k in kinds]
    if any(_load_balanced(spec, s) for s in spec.services):
        refs += [AlarmRef(f"alb-{SUFFIX[k]}", k, "alb") for k in ("alb_5xx", "target_5xx", "latency_p95",
                                                                  "latency_p99")]
    refs += [AlarmRef(f"db-{SUFFIX[k]}", k, "db") for k in ("db_cpu", "db_free_storage", "db_freeable_memory",
                                                            "db_connections")]
    return [r for r in refs if mon.alarm(r.kind).enabled]


def alarm_name(ctx: AwsContext, key: str) -> str:
    return ctx.name(key, limit=255)


def alarm_component(key: str) -> str:
    return f"alarm-{key}"


def deployment_alarm_names(spec: Stack, ctx: AwsContext, service: str) -> list[str]:
    """The alarms ECS watches while `service` rolls out (and rolls back on): names only, from the stack,
    so the service and its alarms can be made in either order."""
    return sorted(alarm_name(ctx, r.key) for r in planned_alarms(spec)
                  if r.subject == service and r.kind in DEPLOYMENT_KINDS)


def metric_namespace(ctx: AwsContext) -> str:
    return f"ecsflow/{ctx.prefix}"


# ---------------------------------------------------------------- what the alarms watch, found live


@dataclass(frozen=True)
class Targets:
    """The live dimensions: names and ids read from the resources the other families made."""

    cluster: str | None = None
    services: dict[str, str] = field(default_factory=dict)  # service -> ECS service name
    alb: str | None = None  # app/{name}/{id}
    target_groups: dict[str, str] = field(default_factory=dict)  # service -> targetgroup/{name}/{id}
    db: str | None = None  # DB instance identifier

    def missing(self, ref: AlarmRef, ctx: AwsContext) -> str | None:
        """What the alarm watches that does not exist yet (None: everything is there)."""
        subject = KINDS[ref.kind].subject
        if subject == "service" and (self.cluster is None or ref.subject not in self.services):
            return f"the ECS service {ctx.name(ref.subject)}"
        if subject == "target group" and (self.alb is None or ref.subject not in self.target_groups):
            return f"the target group of {ref.subject} or the load balancer"
        if subject == "alb" and self.alb is None:
            return f"the load balancer {ctx.name('alb', 32)}"
        if subject == "db" and self.db is None:
            return "the DB instance"
        return None


def find_targets(spec: Stack, ctx: AwsContext) -> Targets:
    from tasks import database, load_balancer, services
    from tasks.cluster import cluster_name

    found_services: dict[str, str] = {}
    for service in spec.services:
        observed = services.find_service(ctx, service)  # looked up in the stack's cluster
        if observed is not None and ctx.owns(observed.tags):
            found_services[service] = observed.name
    alb = load_balancer.find_load_balancer(ctx)
    groups: dict[str, str] = {}
    for service in spec.services:
        if _load_balanced(spec, service):
            tg = load_balancer.find_target_group(ctx, service)
            if tg is not None and ctx.owns(tg.tags):
                groups[service] = tg.id.split(":", 5)[5]
    db = database.find_db_instance(spec, ctx)
    return Targets(cluster=cluster_name(ctx) if found_services else None, services=found_services,
                   alb=alb.id.split(":loadbalancer/", 1)[1] if alb is not None and ctx.owns(alb.tags) else None,
                   target_groups=groups, db=db.name if db is not None and ctx.owns(db.tags) else None)


@aws_task(task_run_name="find what the alarms watch")
def discover_targets(spec: Stack, ctx: AwsContext) -> Targets:
    return find_targets(spec, ctx)


# ---------------------------------------------------------------- topic


def topic_name(ctx: AwsContext) -> str:
    return ctx.name("alarms", limit=256)


def topic_arn(ctx: AwsContext) -> str:
    return f"arn:{kms.partition(ctx.region)}:sns:{ctx.region}:{ctx.account_id()}:{topic_name(ctx)}"


def topic_policy(ctx: AwsContext, arn: str, account: str) -> dict[str, Any]:
    part = kms.partition(ctx.region)
    return {"Version": "2012-10-17", "Id": f"ecsflow-{ctx.prefix}-alarms", "Statement": [
        {"Sid": "AccountManages", "Effect": "Allow", "Principal": {"AWS": f"arn:{part}:iam::{account}:root"},
         "Action": ["SNS:GetTopicAttributes", "SNS:SetTopicAttributes", "SNS:AddPermission",
                    "SNS:RemovePermission", "SNS:DeleteTopic", "SNS:Subscribe", "SNS:ListSubscriptionsByTopic",
                    "SNS:Publish"],
         "Resource": arn},
        {"Sid": "CloudWatchAlarmsPublish", "Effect": "Allow", "Principal": {"Service": "cloudwatch.amazonaws.com"},
         "Action": "SNS:Publish", "Resource": arn,
         "Condition": {"StringEquals": {"aws:SourceAccount": account}}},
        {"Sid": "BudgetsPublish", "Effect": "Allow", "Principal": {"Service": "budgets.amazonaws.com"},
         "Action": "SNS:Publish", "Resource": arn,
         "Condition": {"StringEquals": {"aws:SourceAccount": account},
                       "ArnLike": {"aws:SourceArn": f"arn:{part}:budgets::{account}:*"}}},
        {"Sid": "DenyInsecureTransport", "Effect": "Deny", "Principal": "*", "Action": "SNS:Publish",
         "Resource": arn, "Condition": {"Bool": {"aws:SecureTransport": "false"}}},
    ]}


def redact(protocol: str, endpoint: str) -> str:
    """How a subscription shows in plans and results: an HTTPS endpoint may carry a token in its path
    or query, so only its host and a short hash of the whole URL."""
    if protocol in ("https", "http"):
        digest = hashlib.sha256(endpoint.encode()).hexdigest()[:8]
        return f"{protocol}:{urlsplit(endpoint).hostname}#{digest}"
    return f"{protocol}:{endpoint}"


def wanted_subscriptions(spec: Stack) -> list[tuple[str, str]]:
    mon = spec.monitoring
    return sorted({("email", e) for e in mon.alarm_emails} | {("https", u) for u in mon.https_endpoints})


def _subscriptions(ctx: AwsContext, arn: str) -> list[dict[str, Any]]:
    pages = ctx.client("sns").get_paginator("list_subscriptions_by_topic").paginate(TopicArn=arn)
    return [s for page in call(f"list the subscriptions of {arn}", lambda: list(pages))
            for s in page.get("Subscriptions", [])]


def find_topic(ctx: AwsContext) -> Observed | None:
    sns = ctx.client("sns")
    arn = topic_arn(ctx)
    got = call_or_none(f"look up SNS topic {topic_name(ctx)}", sns.get_topic_attributes, TopicArn=arn)
    if got is None:
        return None
    attributes = got.get("Attributes", {})
    tags = tags_of(ctx, arn, lambda: tag_map(call(f"read the tags of {arn}", sns.list_tags_for_resource,
                                                  ResourceArn=arn).get("Tags", [])))
    subs = sorted(redact(s["Protocol"], s["Endpoint"]) for s in _subscriptions(ctx, arn))
    return Observed(id=arn, name=topic_name(ctx), tags=tags,
                    attrs={"kms_key": attributes.get("KmsMasterKeyId"),
                           "policy": json.loads(attributes["Policy"]) if attributes.get("Policy") else None,
                           "subscriptions": subs})


def _topic_wanted(spec: Stack, ctx: AwsContext, key_arn: str) -> dict[str, Any]:
    arn = topic_arn(ctx)
    return {"kms_key": key_arn, "policy": topic_policy(ctx, arn, ctx.account_id()),
            "subscriptions": sorted(redact(p, e) for p, e in wanted_subscriptions(spec)),
            "tags": ctx.tag_dict(TOPIC_COMPONENT)}


def plan_topic(spec: Stack, ctx: AwsContext, observed: Observed | None, key: Observed | None) -> Change:
    name = topic_name(ctx)
    if key is None:
        return Change("sns topic", name, "create" if observed is None else "update",
                      note="waits for its KMS key")
    wanted = _topic_wanted(spec, ctx, key.id)
    return plan_from("sns topic", name, observed, wanted,
                     current=current_of(observed, wanted) if observed else None)


@aws_task(task_run_name="ensure alarm topic")
def ensure_topic(spec: Stack, ctx: AwsContext, key: Observed) -> Observed:
    """The topic, its encryption, policy and tags, and exactly the stack's subscriptions (a pending
    e-mail confirmation counts as subscribed: subscribing again would only resend the e-mail)."""
    sns = ctx.client("sns")
    name = topic_name(ctx)
    arn = topic_arn(ctx)
    wanted = _topic_wanted(spec, ctx, key.id)
    observed = find_topic(ctx)
    if observed is None:
        call(f"create SNS topic {name}", sns.create_topic, Name=name, Tags=ctx.tags(TOPIC_COMPONENT),
             Attributes={"KmsMasterKeyId": key.id, "Policy": json.dumps(wanted["policy"])})
        fields = {"subscriptions"}
        have: list[dict[str, Any]] = []
    else:
        refuse_foreign(ctx, observed, f"SNS topic {name}")
        fields = set(plan_topic(spec, ctx, observed, key).changed_fields)
        have = _subscriptions(ctx, arn) if "subscriptions" in fields else []
    doing = f"configure SNS topic {name}"
    if "kms_key" in fields:
        call(doing, sns.set_topic_attributes, TopicArn=arn, AttributeName="KmsMasterKeyId",
             AttributeValue=key.id)
    if "policy" in fields:
        call(doing, sns.set_topic_attributes, TopicArn=arn, AttributeName="Policy",
             AttributeValue=json.dumps(wanted["policy"]))
    if "tags" in fields:
        call(doing, sns.tag_resource, ResourceArn=arn, Tags=ctx.tags(TOPIC_COMPONENT))
    if "subscriptions" in fields:
        want = wanted_subscriptions(spec)
        present = {(s["Protocol"], s["Endpoint"]) for s in have}
        for protocol, endpoint in want:
            if (protocol, endpoint) not in present:
                call(f"subscribe {redact(protocol, endpoint)} to {name}", sns.subscribe, TopicArn=arn,
                     Protocol=protocol, Endpoint=endpoint, ReturnSubscriptionArn=True)
        for sub in have:
            # A pending confirmation has no ARN yet and cannot be removed; AWS drops it after 3 days.
            if (sub["Protocol"], sub["Endpoint"]) not in want and sub["SubscriptionArn"].startswith("arn:"):
                call_or_none(f"unsubscribe {redact(sub['Protocol'], sub['Endpoint'])} from {name}",
                             sns.unsubscribe, SubscriptionArn=sub["SubscriptionArn"])
    if observed is not None and not fields:
        return observed
    found = find_topic(ctx)
    if found is None:
        raise EcsflowError(f"SNS topic {name} vanished right after it was made; run again")
    return found


def inventory_topics(ctx: AwsContext) -> list[Observed]:
    found = find_topic(ctx)
    return [found] if found is not None and ctx.owns(found.tags) else []


@aws_task(task_run_name="delete topic {observed.name}")
def delete_topic(observed: Observed, ctx: AwsContext) -> None:
    """Its subscriptions go with it."""
    require_ours(ctx, observed.tags, f"SNS topic {observed.name}")
    call_or_none(f"delete SNS topic {observed.name}", ctx.client("sns").delete_topic, TopicArn=observed.id)


# ---------------------------------------------------------------- alarms


def _threshold(kind: str, setting: AlarmDefault) -> float:
    return float(setting.threshold * KINDS[kind].scale)


def alarm_wanted(spec: Stack, ctx: AwsContext, ref: AlarmRef, targets: Targets, topic: str) -> dict[str, Any]:
    """The PutMetricAlarm request (without tags): also the shape plans compare."""
    kind = KINDS[ref.kind]
    setting = spec.monitoring.alarm(ref.kind)
    unit = ALARM_KINDS[ref.kind][0]
    compare = "below" if kind.comparison.startswith("Less") else "above"
    anchor = ref.kind.replace("_", "-")
    wanted: dict[str, Any] = {
        "AlarmName": alarm_name(ctx, ref.key),
        "AlarmDescription": f"ecsflow {ctx.prefix}: {kind.what} of {ref.subject} {compare} "
                            f"{setting.threshold:g} {unit}. What to do: docs/monitoring.md#{anchor}",
        "ActionsEnabled": True,
        "AlarmActions": [topic],
        "OKActions": [topic],
        "InsufficientDataActions": [],
        "EvaluationPeriods": setting.evaluation_periods,
        "DatapointsToAlarm": setting.datapoints_to_alarm or setting.evaluation_periods,
        "Threshold": _threshold(ref.kind, setting),
        "ComparisonOperator": kind.comparison,
        "TreatMissingData": kind.missing,
    }
    period = setting.period_seconds
    if ref.kind == "running_tasks":
        dims = [{"Name": "ClusterName", "Value": targets.cluster}, {"Name": "ServiceName",
                                                                   "Value": targets.services[ref.subject]}]

        def stat(metric_id: str, metric: str) -> dict[str, Any]:
            return {"Id": metric_id, "ReturnData": False, "MetricStat": {
                "Metric": {"Namespace": kind.namespace, "MetricName": metric, "Dimensions": dims},
                "Period": period, "Stat": "Average"}}

        wanted["Metrics"] = [stat("running", "RunningTaskCount"), stat("desired", "DesiredTaskCount"),
                             {"Id": "missing", "Expression": "desired - running", "Label": "tasks missing",
                              "ReturnData": True}]
        return wanted
    if kind.subject == "service":
        dims = [{"Name": "ClusterName", "Value": targets.cluster},
                {"Name": "ServiceName", "Value": targets.services[ref.subject]}]
    elif kind.subject == "target group":
        dims = [{"Name": "TargetGroup", "Value": targets.target_groups[ref.subject]},
                {"Name": "LoadBalancer", "Value": targets.alb}]
    elif kind.subject == "alb":
        dims = [{"Name": "LoadBalancer", "Value": targets.alb}]
    elif kind.subject == "db":
        dims = [{"Name": "DBInstanceIdentifier", "Value": targets.db}]
    else:  # a metric of our own log filters: no dimensions
        dims = []
    wanted.update({"Namespace": kind.namespace or metric_namespace(ctx),
                   "MetricName": kind.metric if kind.subject != "log" else f"{ref.subject}-{kind.metric}",
                   "Dimensions": dims, "Period": period})
    if kind.stat.startswith("p"):
        wanted["ExtendedStatistic"] = kind.stat
    else:
        wanted["Statistic"] = kind.stat
    return wanted


def _alarm_observed(ctx: AwsContext, data: dict[str, Any], tags: dict[str, str] | None = None) -> Observed:
    if tags is None:
        def read() -> dict[str, str]:
            got = call(f"read the tags of alarm {data['AlarmName']}",
                       ctx.client("cloudwatch").list_tags_for_resource, ResourceARN=data["AlarmArn"])
            return tag_map(got.get("Tags"))

        tags = tags_of(ctx, data["AlarmArn"], read)
    return Observed(id=data["AlarmArn"], name=data["AlarmName"], tags=tags,
                    attrs={k: v for k, v in data.items() if not k.startswith(("State", "AlarmConfiguration"))})


def find_alarm(ctx: AwsContext, key: str) -> Observed | None:
    name = alarm_name(ctx, key)
    got = call(f"look up alarm {name}", ctx.client("cloudwatch").describe_alarms, AlarmNames=[name],
               AlarmTypes=["MetricAlarm"])
    items = got.get("MetricAlarms", [])
    return _alarm_observed(ctx, items[0]) if items else None


def find_alarms(ctx: AwsContext, keys: list[str]) -> dict[str, Observed | None]:
    """Several alarms by name (key -> alarm or None), in one DescribeAlarms per 100 names."""
    names = {alarm_name(ctx, key): key for key in keys}
    found: dict[str, Observed | None] = dict.fromkeys(keys)
    listed = list(names)
    cloudwatch = ctx.client("cloudwatch")
    for start in range(0, len(listed), 100):
        batch = listed[start:start + 100]
        pages = cloudwatch.get_paginator("describe_alarms").paginate(AlarmNames=batch, AlarmTypes=["MetricAlarm"])
        for page in call(f"look up {len(batch)} alarms of {ctx.prefix}", lambda pages=pages: list(pages)):
            for data in page.get("MetricAlarms", []):
                if data["AlarmName"] in names:
                    found[names[data["AlarmName"]]] = _alarm_observed(ctx, data)
    return found


def _alarm_current(observed: Observed, wanted: dict[str, Any]) -> dict[str, Any]:
    current = {key: project(observed.attrs.get(key), value) for key, value in wanted.items() if key != "tags"}
    if "Metrics" in wanted:
        # Metric math: each query has its own shape (a metric or an expression), matched by its Id.
        have = {m.get("Id"): m for m in observed.attrs.get("Metrics") or []}
        current["Metrics"] = [project(have[m["Id"]], m) if m["Id"] in have else None for m in wanted["Metrics"]]
        current["Metrics"] += [m for key, m in have.items() if key not in {w["Id"] for w in wanted["Metrics"]}]
    if "tags" in wanted:
        current["tags"] = {key: observed.tags.get(key) for key in wanted["tags"]}
    return current


def plan_alarm(spec: Stack, ctx: AwsContext, ref: AlarmRef, observed: Observed | None, targets: Targets,
               topic: str) -> Change:
    name = alarm_name(ctx, ref.key)
    missing = targets.missing(ref, ctx)
    if missing:
        return Change("alarm", name, "create" if observed is None else "no-op", note=f"waits for {missing}")
    wanted = {**alarm_wanted(spec, ctx, ref, targets, topic), "tags": ctx.tag_dict(alarm_component(ref.key))}
    return plan_from("alarm", name, observed, wanted, current=_alarm_current(observed, wanted) if observed else None)


_UNREAD: Any = object()


@aws_task(task_run_name="ensure alarm {ref.key}")
def ensure_alarm(spec: Stack, ctx: AwsContext, ref: AlarmRef, targets: Targets, topic: Observed,
                 current: Observed | None = _UNREAD) -> Observed:
    """One PutMetricAlarm when the alarm is missing or differs (it replaces the whole definition).
    `current`: the alarm as just read by the caller (None: missing), to save reading it again."""
    cloudwatch = ctx.client("cloudwatch")
    name = alarm_name(ctx, ref.key)
    missing = targets.missing(ref, ctx)
    if missing:
        raise EcsflowError(f"alarm {name} watches {missing}, which does not exist yet: run `ecsflow up` (or the "
                           f"phase that makes it) first, then the monitoring phase")
    observed = find_alarm(ctx, ref.key) if current is _UNREAD else current
    wanted = alarm_wanted(spec, ctx, ref, targets, topic.id)
    tags = ctx.tag_dict(alarm_component(ref.key))
    if observed is not None:
        refuse_foreign(ctx, observed, f"alarm {name}")
        fields = set(plan_alarm(spec, ctx, ref, observed, targets, topic.id).changed_fields)
        if not fields:
            return observed
    else:
        fields = set(wanted)
    if fields - {"tags"}:
        # Tags are taken only when the alarm is created; an update leaves them as they are.
        call(f"put alarm {name}", cloudwatch.put_metric_alarm, **wanted, Tags=ctx.tags(alarm_component(ref.key)))
    if observed is not None and "tags" in fields:
        call(f"tag alarm {name}", cloudwatch.tag_resource, ResourceARN=observed.id,
             Tags=ctx.tags(alarm_component(ref.key)))
    found = find_alarm(ctx, ref.key)
    if found is None:
        raise EcsflowError(f"alarm {name} vanished right after it was put; run again")
    found.tags.update({k: v for k, v in tags.items() if k not in found.tags})
    return found


@aws_task(task_run_name="ensure alarms {subject}")
def ensure_alarms(spec: Stack, ctx: AwsContext, subject: str, targets: Targets, topic: Observed) -> list[Observed]:
    """The alarms of one service, of the load balancer or of the database, one after the other: a task per
    subject rather than per alarm keeps the run's overhead small (each alarm is one or two calls)."""
    refs = [ref for ref in planned_alarms(spec) if ref.subject == subject]
    # Read them all at once only when all can be made (else the first missing dimension says why).
    found = find_alarms(ctx, [ref.key for ref in refs]) if not any(targets.missing(r, ctx) for r in refs) else {}
    return [ensure_alarm.fn(spec, ctx, ref, targets, topic, found.get(ref.key, _UNREAD)) for ref in refs]


def alarm_subjects(spec: Stack) -> list[str]:
    """The services, "alb" and "db" that have alarms, in a stable order."""
    return list(dict.fromkeys(ref.subject for ref in planned_alarms(spec)))


def inventory_alarms(ctx: AwsContext) -> list[Observed]:
    """Our metric alarms: the stack's name prefix, our tags and an `alarm-` component (autoscaling's
    target-tracking alarms and anyone else's are left alone)."""
    cloudwatch = ctx.client("cloudwatch")
    pages = cloudwatch.get_paginator("describe_alarms").paginate(AlarmNamePrefix=f"{ctx.prefix}-",
                                                                 AlarmTypes=["MetricAlarm"])
    found = []
    for page in call(f"list the alarms of {ctx.prefix}", lambda: list(pages)):
        for data in page.get("MetricAlarms", []):
            observed = _alarm_observed(ctx, data)
            if ctx.owns(observed.tags) and observed.tags.get(TAG_COMPONENT, "").startswith("alarm-"):
                found.append(observed)
    return found


@aws_task(task_run_name="delete alarm {observed.name}")
def delete_alarm(observed: Observed, ctx: AwsContext) -> None:
    require_ours(ctx, observed.tags, f"alarm {observed.name}")
    call_or_none(f"delete alarm {observed.name}", ctx.client("cloudwatch").delete_alarms,
                 AlarmNames=[observed.name])


@aws_task(task_run_name="delete {ctx.prefix} alarms")
def delete_alarms(observed: list[Observed], ctx: AwsContext) -> None:
    """Many alarms in few calls (DeleteAlarms takes 100 names); refuses them all if one is not ours."""
    for alarm in observed:
        require_ours(ctx, alarm.tags, f"alarm {alarm.name}")
    names = [a.name for a in observed]
    for start in range(0, len(names), 100):
        call_or_none(f"delete {len(names[start:start + 100])} alarms of {ctx.prefix}",
                     ctx.client("cloudwatch").delete_alarms, AlarmNames=names[start:start + 100])


# ---------------------------------------------------------------- log metric filters

FILTER_KINDS = ("app_errors", "http_5xx")


@dataclass(frozen=True)
class FilterRef:
    service: str
    kind: str  # "app_errors" or "http_5xx"

    @property
    def key(self) -> str:
        return f"{self.service}-{SUFFIX[self.kind]}"


def planned_filters(spec: Stack) -> list[FilterRef]:
    if not spec.monitoring.enabled:
        return []
    return [FilterRef(service, kind) for service in spec.services for kind in FILTER_KINDS]


def filter_name(ctx: AwsContext, ref: FilterRef) -> str:
    return ctx.name(ref.key, limit=512)


def _log_group_name(spec: Stack, ctx: AwsContext, service: str) -> str:
    from tasks import services

    return services.log_group(spec, service).name(ctx)


def filter_wanted(spec: Stack, ctx: AwsContext, ref: FilterRef) -> dict[str, Any]:
    pattern = spec.monitoring.app_error_pattern if ref.kind == "app_errors" else spec.monitoring.http_5xx_pattern
    return {"filterPattern": pattern, "metricTransformations": [
        {"metricName": f"{ref.service}-{KINDS[ref.kind].metric}", "metricNamespace": metric_namespace(ctx),
         "metricValue": "1", "unit": "Count"}]}


def _log_group_tags(ctx: AwsContext, group: str) -> dict[str, str] | None:
    """The log group's tags (the evidence a filter in it is ours), or None when it does not exist."""
    from tasks import logs

    found = call(f"look up log group {group}", ctx.logs().describe_log_groups, logGroupNamePrefix=group)
    for data in found.get("logGroups", []):
        if data["logGroupName"] == group:
            return logs.read_tags(ctx, str(data["arn"]).removesuffix(":*"), group)
    return None


def _filter_observed(data: Any, tags: dict[str, str]) -> Observed:
    return Observed(id=f"{data['logGroupName']}:{data['filterName']}", name=data["filterName"], tags=tags,
                    attrs={"log_group": data["logGroupName"], "filterPattern": data.get("filterPattern"),
                           "metricTransformations": data.get("metricTransformations", [])})


def _group_filters(ctx: AwsContext, group: str, prefix: str) -> list[Any]:
    """The log group's metric filters whose names start with `prefix` (none if the group is missing)."""
    pages = ctx.logs().get_paginator("describe_metric_filters").paginate(logGroupName=group, filterNamePrefix=prefix)
    got: Any = call_or_none(f"look up the metric filters {prefix}* of {group}", lambda: list(pages))
    return [f for page in got or [] for f in page.get("metricFilters", [])]


def find_metric_filter(spec: Stack, ctx: AwsContext, ref: FilterRef,
                       group_tags: dict[str, str] | None = None) -> Observed | None:
    group = _log_group_name(spec, ctx, ref.service)
    name = filter_name(ctx, ref)
    items = [f for f in _group_filters(ctx, group, name) if f["filterName"] == name]
    if not items:
        return None
    return _filter_observed(items[0], group_tags if group_tags is not None else _log_group_tags(ctx, group) or {})


def plan_metric_filter(spec: Stack, ctx: AwsContext, ref: FilterRef, observed: Observed | None) -> Change:
    wanted = filter_wanted(spec, ctx, ref)
    return plan_from("metric filter", filter_name(ctx, ref), observed, wanted,
                     current={k: project(observed.attrs.get(k), v) for k, v in wanted.items()} if observed else None)


@aws_task(task_run_name="ensure metric filter {ref.service} {ref.kind}")
def ensure_metric_filter(spec: Stack, ctx: AwsContext, ref: FilterRef,
                         read: tuple[dict[str, str] | None, list[Any]] | None = None) -> Observed:
    """`read`: the log group's tags and our filters in it, as just read by the caller, to save reading
    them again for each filter."""
    group = _log_group_name(spec, ctx, ref.service)
    name = filter_name(ctx, ref)
    tags = _log_group_tags(ctx, group) if read is None else read[0]
    if tags is None:
        raise EcsflowError(f"metric filter {name} goes on the log group {group}, which does not exist yet: run "
                           f"`ecsflow up` (the cluster phase makes it) first")
    if not ctx.owns(tags):
        raise NotOurs(f"log group {group} lacks the tags {TAG_STACK}={ctx.stack}, {TAG_ENV}={ctx.env}; ecsflow "
                      f"puts no metric filter on it")
    if read is None:
        observed = find_metric_filter(spec, ctx, ref, tags)
    else:
        items = [f for f in read[1] if f["filterName"] == name]
        observed = _filter_observed(items[0], tags) if items else None
    if observed is not None and plan_metric_filter(spec, ctx, ref, observed).action == "no-op":
        return observed
    wanted = filter_wanted(spec, ctx, ref)
    call(f"put metric filter {name}", ctx.logs().put_metric_filter, logGroupName=group, filterName=name, **wanted)
    return Observed(id=f"{group}:{name}", name=name, tags=tags, attrs={"log_group": group, **wanted})


@aws_task(task_run_name="ensure metric filters {service}")
def ensure_metric_filters(spec: Stack, ctx: AwsContext, service: str) -> list[Observed]:
    """The service's metric filters (one task for its log group, read once for all of them)."""
    refs = [ref for ref in planned_filters(spec) if ref.service == service]
    if not refs:
        return []
    group = _log_group_name(spec, ctx, service)
    tags = _log_group_tags(ctx, group)
    read = (tags, _group_filters(ctx, group, f"{ctx.prefix}-") if tags is not None else [])
    return [ensure_metric_filter.fn(spec, ctx, ref, read) for ref in refs]


def inventory_metric_filters(ctx: AwsContext) -> list[Observed]:
    """Filters named with our prefix in our log groups (whose tags are their record)."""
    from tasks import logs

    found = []
    for group in logs.inventory_log_groups(ctx):
        got: Any = call_or_none(f"list the metric filters of {group.name}", ctx.logs().describe_metric_filters,
                           logGroupName=group.name, filterNamePrefix=f"{ctx.prefix}-")
        found += [_filter_observed(f, group.tags) for f in (got or {}).get("metricFilters", [])]
    return found


@aws_task(task_run_name="delete metric filter {observed.name}")
def delete_metric_filter(observed: Observed, ctx: AwsContext) -> None:
    require_ours(ctx, observed.tags, f"metric filter {observed.name} (its log group)")
    call_or_none(f"delete metric filter {observed.name}", ctx.logs().delete_metric_filter,
                 logGroupName=observed.attrs["log_group"], filterName=observed.name)


# ---------------------------------------------------------------- dashboard

MARKER = re.compile(r"ecsflow:stack=([a-z0-9-]+) ecsflow:env=([a-z0-9-]+)")


def dashboard_name(ctx: AwsContext) -> str:
    return ctx.name("overview", limit=255)


def _metric_widget(title: str, metrics: list[list[Any]], region: str, *, stat: str = "Average",
                   period: int = 60) -> dict[str, Any]:
    return {"type": "metric", "properties": {"title": title, "metrics": metrics, "view": "timeSeries",
                                             "region": region, "stat": stat, "period": period}}


def dashboard_body(spec: Stack, ctx: AwsContext, targets: Targets) -> dict[str, Any]:
    """Widgets from the stack: the ownership marker, the alarms, per service CPU/memory, tasks and
    errors, the load balancer's traffic, errors and latency, and the database."""
    region = ctx.region
    part = kms.partition(region)
    account = ctx.account_id()
    ns = metric_namespace(ctx)
    widgets: list[dict[str, Any]] = []
    marker = (f"# {ctx.prefix}\nMade by ecsflow from the stack file (ecsflow:stack={ctx.stack} "
              f"ecsflow:env={ctx.env}): edits here are replaced by the next `ecsflow up`. What each alarm means "
              f"and what to do: docs/monitoring.md in the ecsflow repository.")
    widgets.append({"type": "text", "width": 24, "height": 2, "properties": {"markdown": marker}})
    alarms = [f"arn:{part}:cloudwatch:{region}:{account}:alarm:{alarm_name(ctx, r.key)}"
              for r in planned_alarms(spec)][:100]
    if alarms:
        widgets.append({"type": "alarm", "width": 24, "height": 4,
                        "properties": {"title": "Alarms", "alarms": alarms, "sortBy": "stateUpdatedTimestamp"}})
    charts: list[dict[str, Any]] = []
    for service in spec.services:
        name = targets.services.get(service, ctx.name(service))
        cluster = targets.cluster or ctx.name("cluster")
        dims = ["ClusterName", cluster, "ServiceName", name]
        charts.append(_metric_widget(f"{service}: CPU and memory %", [
            ["AWS/ECS", "CPUUtilization", *dims], ["AWS/ECS", "MemoryUtilization", *dims]], region))
        if spec.cluster.container_insights != "disabled":
            charts.append(_metric_widget(f"{service}: tasks", [
                ["ECS/ContainerInsights", "RunningTaskCount", *dims],
                ["ECS/ContainerInsights", "DesiredTaskCount", *dims]], region))
        errors: list[list[Any]] = [[ns, f"{service}-app-errors"], [ns, f"{service}-http-5xx"]]
        if service in targets.target_groups and targets.alb:
            errors.append(["AWS/ApplicationELB", "HTTPCode_Target_5XX_Count", "TargetGroup",
                           targets.target_groups[service], "LoadBalancer", targets.alb])
        charts.append(_metric_widget(f"{service}: errors", errors, region, stat="Sum"))
    if targets.alb:
        lb = ["LoadBalancer", targets.alb]
        charts.append(_metric_widget("load balancer: requests", [["AWS/ApplicationELB", "RequestCount", *lb]],
                                     region, stat="Sum"))
        charts.append(_metric_widget("load balancer: 5xx", [
            ["AWS/ApplicationELB", "HTTPCode_ELB_5XX_Count", *lb],
            ["AWS/ApplicationELB", "HTTPCode_Target_5XX_Count", *lb]], region, stat="Sum"))
        charts.append(_metric_widget("load balancer: response time (s)", [
            ["AWS/ApplicationELB", "TargetResponseTime", *lb, {"stat": p, "label": p}]
            for p in ("p50", "p95", "p99")], region))
        charts.append(_metric_widget("target groups: unhealthy hosts", [
            ["AWS/ApplicationELB", "UnHealthyHostCount", "TargetGroup", tg, *lb, {"label": service}]
            for service, tg in targets.target_groups.items()], region, stat="Maximum"))
    if targets.db:
        db = ["DBInstanceIdentifier", targets.db]
        charts.append(_metric_widget("database: CPU % and connections", [
            ["AWS/RDS", "CPUUtilization", *db], ["AWS/RDS", "DatabaseConnections", *db, {"yAxis": "right"}]],
            region))
        charts.append(_metric_widget("database: free storage and memory (bytes)", [
            ["AWS/RDS", "FreeStorageSpace", *db], ["AWS/RDS", "FreeableMemory", *db]], region, stat="Minimum"))
    y = 6 if alarms else 2
    for i, chart in enumerate(charts):
        chart.update(x=12 * (i % 2), y=y + 6 * (i // 2), width=12, height=6)
    for widget, (x, wy) in zip(widgets, ((0, 0), (0, 2)), strict=False):
        widget.update(x=x, y=wy)
    return {"widgets": widgets + charts}


def _dashboard_tags(body: dict[str, Any]) -> dict[str, str]:
    """The stack and env the dashboard's marker widget names ({} without one)."""
    for widget in body.get("widgets", []):
        match = MARKER.search(str(widget.get("properties", {}).get("markdown", "")))
        if widget.get("type") == "text" and match:
            return {TAG_STACK: match.group(1), TAG_ENV: match.group(2), TAG_COMPONENT: DASHBOARD_COMPONENT}
    return {}


def find_dashboard(ctx: AwsContext, name: str | None = None) -> Observed | None:
    name = name or dashboard_name(ctx)
    got = call_or_none(f"look up dashboard {name}", ctx.client("cloudwatch").get_dashboard, DashboardName=name)
    if got is None:
        return None
    try:
        body = json.loads(got.get("DashboardBody") or "{}")
    except json.JSONDecodeError:
        body = {}
    return Observed(id=got.get("DashboardArn", name), name=name, tags=_dashboard_tags(body), attrs={"body": body})


def plan_dashboard(spec: Stack, ctx: AwsContext, observed: Observed | None, targets: Targets) -> Change:
    name = dashboard_name(ctx)
    if not (spec.monitoring.enabled and spec.monitoring.dashboard):
        return Change("dashboard", name, "delete" if observed else "no-op")
    if observed is not None and not ctx.owns(observed.tags):
        return Change("dashboard", name, "replace", note="a dashboard of this name without ecsflow's marker "
                      "exists; ecsflow will not overwrite it. Rename or delete it.")
    wanted = {"body": dashboard_body(spec, ctx, targets)}
    if observed is None:
        return Change("dashboard", name, "create")
    # The whole body as one field would drown the plan: say that it changes, not how.
    changed = bool(diff_fields({"body": observed.attrs["body"]}, wanted))
    return Change("dashboard", name, "update" if changed else "no-op", note="widgets change" if changed else "")


@aws_task(task_run_name="ensure dashboard")
def ensure_dashboard(spec: Stack, ctx: AwsContext, targets: Targets) -> Observed | None:
    name = dashboard_name(ctx)
    observed = find_dashboard(ctx)
    change = plan_dashboard(spec, ctx, observed, targets)
    if change.action == "replace":
        raise NotOurs(f"dashboard {name}: {change.note}")
    if change.action == "delete" and observed is not None:
        delete_dashboard.fn(observed, ctx)
        return None
    if change.action in ("no-op", "delete"):
        return observed
    body = dashboard_body(spec, ctx, targets)
    got = call(f"put dashboard {name}", ctx.client("cloudwatch").put_dashboard, DashboardName=name,
               DashboardBody=json.dumps(body, sort_keys=True))
    problems = got.get("DashboardValidationMessages") or []
    if problems:
        raise EcsflowError(f"dashboard {name}: CloudWatch found problems in the generated widgets: {problems}")
    return find_dashboard(ctx)


def inventory_dashboards(ctx: AwsContext) -> list[Observed]:
    got = call("list dashboards", ctx.client("cloudwatch").list_dashboards, DashboardNamePrefix=f"{ctx.prefix}-")
    found = [find_dashboard(ctx, entry["DashboardName"]) for entry in got.get("DashboardEntries", [])]
    return [o for o in found if o is not None and ctx.owns(o.tags)]


@aws_task(task_run_name="delete dashboard {observed.name}")
def delete_dashboard(observed: Observed, ctx: AwsContext) -> None:
    require_ours(ctx, observed.tags, f"dashboard {observed.name} (its ecsflow marker)")
    call_or_none(f"delete dashboard {observed.name}", ctx.client("cloudwatch").delete_dashboards,
                 DashboardNames=[observed.name])


# ---------------------------------------------------------------- budget


def budget_name(ctx: AwsContext) -> str:
    return ctx.name("monthly-cost", limit=100)


def _budgets(ctx: AwsContext) -> Any:
    return ctx.client("budgets", region=BUDGETS_REGION.get(kms.partition(ctx.region), "us-east-1"))


def _notification(kind: str, percent: float) -> dict[str, Any]:
    return {"NotificationType": kind, "ComparisonOperator": "GREATER_THAN", "Threshold": float(percent),
            "ThresholdType": "PERCENTAGE"}


def budget_notifications(spec: Stack) -> list[dict[str, Any]]:
    mon = spec.monitoring
    wanted = [_notification("ACTUAL", p) for p in mon.budget_actual_percents]
    if mon.budget_forecast_percent is not None:
        wanted.append(_notification("FORECASTED", mon.budget_forecast_percent))
    return wanted


def _note_key(n: dict[str, Any]) -> tuple[str, str, float, str]:
    return (n["NotificationType"], n["ComparisonOperator"], float(n["Threshold"]), n.get("ThresholdType",
                                                                                          "PERCENTAGE"))


def find_budget(ctx: AwsContext) -> Observed | None:
    budgets = _budgets(ctx)
    name = budget_name(ctx)
    account = ctx.account_id()
    got = call_or_none(f"look up budget {name}", budgets.describe_budget, AccountId=account, BudgetName=name)
    if got is None:
        return None
    budget = got["Budget"]
    notes = call(f"read the notifications of budget {name}", budgets.describe_notifications_for_budget,
                 AccountId=account, BudgetName=name).get("Notifications", [])
    # Ownership is the name (see the module's docstring): the tags we set at creation, as we set them.
    return Observed(id=f"arn:{kms.partition(ctx.region)}:budgets::{account}:budget/{name}", name=name,
                    tags=ctx.tag_dict(BUDGET_COMPONENT),
                    attrs={"limit_usd": float(budget["BudgetLimit"]["Amount"]), "unit": budget["BudgetLimit"]["Unit"],
                           "time_unit": budget["TimeUnit"], "budget_type": budget["BudgetType"],
                           "notifications": sorted(_note_key(n) for n in notes)})


def _budget_wanted(spec: Stack) -> dict[str, Any]:
    return {"limit_usd": float(spec.monitoring.monthly_budget_usd or 0), "unit": "USD", "time_unit": "MONTHLY",
            "budget_type": "COST", "notifications": sorted(_note_key(n) for n in budget_notifications(spec))}


def plan_budget(spec: Stack, ctx: AwsContext, observed: Observed | None) -> Change:
    name = budget_name(ctx)
    if not spec.monitoring.enabled or spec.monitoring.monthly_budget_usd is None:
        return Change("budget", name, "delete" if observed else "no-op",
                      note="" if observed else "no budget: set monitoring.monthly_budget_usd")
    return plan_from("budget", name, observed, _budget_wanted(spec),
                     immutable=("unit", "time_unit", "budget_type"))


def _budget_request(spec: Stack, ctx: AwsContext) -> dict[str, Any]:
    return {"BudgetName": budget_name(ctx), "BudgetType": "COST", "TimeUnit": "MONTHLY",
            "BudgetLimit": {"Amount": f"{spec.monitoring.monthly_budget_usd:.2f}", "Unit": "USD"}}


@aws_task(task_run_name="ensure monthly budget")
def ensure_budget(spec: Stack, ctx: AwsContext, topic: Observed) -> Observed | None:
    """The monthly cost budget and its notifications (each to the alarm topic). A budget the stack no
    longer wants (monthly_budget_usd unset) is deleted."""
    budgets = _budgets(ctx)
    name = budget_name(ctx)
    account = ctx.account_id()
    observed = find_budget(ctx)
    change = plan_budget(spec, ctx, observed)
    if change.action == "delete" and observed is not None:
        delete_budget.fn(observed, ctx)
        return None
    if change.action == "no-op":
        return observed
    subscribers = [{"SubscriptionType": "SNS", "Address": topic.id}]
    if observed is None:
        call(f"create budget {name}", budgets.create_budget, AccountId=account, Budget=_budget_request(spec, ctx),
             NotificationsWithSubscribers=[{"Notification": n, "Subscribers": subscribers}
                                           for n in budget_notifications(spec)],
             ResourceTags=ctx.tags(BUDGET_COMPONENT))
        return find_budget(ctx)
    if change.action == "replace":
        raise EcsflowError(f"budget {name} has another type or period than ecsflow makes "
                           f"({', '.join(str(d) for d in change.diffs)}); delete it and run again")
    fields = set(change.changed_fields)
    if "limit_usd" in fields:
        call(f"update budget {name}", budgets.update_budget, AccountId=account,
             NewBudget=_budget_request(spec, ctx))
    if "notifications" in fields:
        wanted = {_note_key(n): n for n in budget_notifications(spec)}
        have = set(observed.attrs["notifications"])
        for key, note in wanted.items():
            if key not in have:
                call(f"add a notification to budget {name}", budgets.create_notification, AccountId=account,
                     BudgetName=name, Notification=note, Subscribers=subscribers)
        for key in have - set(wanted):
            call_or_none(f"remove a notification from budget {name}", budgets.delete_notification,
                         AccountId=account, BudgetName=name,
                         Notification={"NotificationType": key[0], "ComparisonOperator": key[1],
                                       "Threshold": key[2], "ThresholdType": key[3]})
    return find_budget(ctx)


def inventory_budgets(ctx: AwsContext) -> list[Observed]:
    found = find_budget(ctx)
    return [found] if found is not None else []


@aws_task(task_run_name="delete budget {observed.name}")
def delete_budget(observed: Observed, ctx: AwsContext) -> None:
    if observed.name != budget_name(ctx):
        raise NotOurs(f"refusing to delete budget {observed.name}: ecsflow only deletes the budget named "
                      f"{budget_name(ctx)}")
    call_or_none(f"delete budget {observed.name}", _budgets(ctx).delete_budget, AccountId=ctx.account_id(),
                 BudgetName=observed.name)


# ---------------------------------------------------------------- the family


def plan_monitoring(spec: Stack, ctx: AwsContext) -> list[Change]:
    """The sns key, topic, alarms, filters, dashboard and budget, plus our alarms and filters the stack
    no longer wants (deleted by the next `up`)."""
    targets = find_targets(spec, ctx)
    key = kms.find_key(ctx, KEY_PURPOSE)
    changes: list[Change] = []
    if spec.monitoring.enabled:
        changes.append(kms.plan_key(ctx, KEY_PURPOSE, key))
        changes.append(plan_topic(spec, ctx, find_topic(ctx), key))
    elif find_topic(ctx):
        changes.append(Change("sns topic", topic_name(ctx), "delete", note="monitoring.enabled is false"))
    topic = topic_arn(ctx)
    refs = planned_alarms(spec)
    found = find_alarms(ctx, [ref.key for ref in refs])
    changes += [plan_alarm(spec, ctx, ref, found[ref.key], targets, topic) for ref in refs]
    wanted = {alarm_name(ctx, r.key) for r in refs}
    changes += [Change("alarm", o.name, "delete", note="the stack no longer wants it")
                for o in inventory_alarms(ctx) if o.name not in wanted]
    filters = planned_filters(spec)
    changes += [plan_metric_filter(spec, ctx, ref, find_metric_filter(spec, ctx, ref)) for ref in filters]
    wanted_filters = {filter_name(ctx, ref) for ref in filters}
    changes += [Change("metric filter", o.name, "delete", note="the stack no longer wants it")
                for o in inventory_metric_filters(ctx) if o.name not in wanted_filters]
    changes.append(plan_dashboard(spec, ctx, find_dashboard(ctx), targets))
    changes.append(plan_budget(spec, ctx, find_budget(ctx)))
    return changes


@aws_task(task_run_name="remove monitoring the stack no longer wants")
def prune_monitoring(spec: Stack, ctx: AwsContext) -> list[str]:
    """Delete our alarms and metric filters that the stack no longer names (a removed service, a
    disabled kind), and with monitoring off the topic too. Returns what it deleted."""
    gone: list[str] = []
    wanted = {alarm_name(ctx, r.key) for r in planned_alarms(spec)}
    for observed in inventory_alarms(ctx):
        if observed.name not in wanted:
            delete_alarm.fn(observed, ctx)
            gone.append(f"alarm {observed.name}")
    wanted_filters = {filter_name(ctx, ref) for ref in planned_filters(spec)}
    for observed in inventory_metric_filters(ctx):
        if observed.name not in wanted_filters:
            delete_metric_filter.fn(observed, ctx)
            gone.append(f"metric filter {observed.name}")
    if not spec.monitoring.enabled:
        for observed in inventory_dashboards(ctx):
            delete_dashboard.fn(observed, ctx)
            gone.append(f"dashboard {observed.name}")
        for observed in inventory_budgets(ctx):
            delete_budget.fn(observed, ctx)
            gone.append(f"budget {observed.name}")
        for observed in inventory_topics(ctx):
            delete_topic.fn(observed, ctx)
            gone.append(f"sns topic {observed.name}")
    return gone


def inventory_monitoring(ctx: AwsContext) -> dict[tuple[str, str], list[Observed]]:
    """(family, kind) -> resources, in teardown order (alarms and the budget before the topic they use)."""
    return {("monitoring", "alarm"): inventory_alarms(ctx),
            ("monitoring", "metric filter"): inventory_metric_filters(ctx),
            ("monitoring", "dashboard"): inventory_dashboards(ctx),
            ("monitoring", "budget"): inventory_budgets(ctx),
            ("monitoring", "sns topic"): inventory_topics(ctx)}
