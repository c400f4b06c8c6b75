"""The security audit: rules checked against the LIVE stack, found by our tags.

`Facts` reads AWS lazily, one group of facts at a time (each through the family's own find or
inventory function where there is one), so a rule costs only the reads it needs. A rule is a
small function `Facts -> list[Finding]` registered in RULES with its id, title and severity:
adding a rule is adding one function. A rule with nothing to check (e.g. no SNS topic yet)
returns no finding; every resource it checks gets a pass or a fail, with what to fix.

Scope: what ecsflow makes. AWS-managed things the stack relies on but does not own (the RDS
log-export log groups, the RDS-managed master secret's default key) are outside the rules and
named in docs/security.md.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import cached_property
from typing import Any, Literal
from urllib.parse import unquote

from spec import Stack
from tasks import app_secrets, buckets, database, iam, kms, load_balancer, logs, network, registry, services
from tasks.aws import AwsContext, call, call_or_none, tag_map
from tasks.contract import Observed

Severity = Literal["critical", "high", "medium", "low"]
WORLD = ("0.0.0.0/0", "::/0")
PUBLIC_PORTS = (80, 443)
# Actions that allow no narrower resource than "*" (AWS's service authorization reference lists no
# resource type for them). Every other action must name its resources.
STAR_RESOURCE_ACTIONS = {
    "ecr:getauthorizationtoken",  # registry login: account-wide by design
    "ssmmessages:createcontrolchannel", "ssmmessages:createdatachannel",  # ECS Exec's session channels
    "ssmmessages:opencontrolchannel", "ssmmessages:opendatachannel",
    "logs:describeloggroups",  # ECS Exec checks its log group exists; no resource-level permission
}
SEVERITY_RANK = {"CRITICAL": 5, "HIGH": 4, "MEDIUM": 3, "LOW": 2, "INFORMATIONAL": 1, "UNDEFINED": 0}


@dataclass(frozen=True)
class Finding:
    rule: str
    title: str
    severity: str
    resource: str
    passed: bool
    message: str

    def as_row(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Rule:
    id: str
    title: str
    severity: Severity
    check: Callable[[Facts], list[tuple[str, bool, str]]]  # (resource, passed, message)


class Facts:
    """What AWS holds for the stack, read on first use and kept for the rest of the audit."""

    def __init__(self, spec: Stack, ctx: AwsContext) -> None:
        self.spec = spec
        self.ctx = ctx

    @cached_property
    def db_instances(self) -> list[Observed]:
        return database.inventory_db_instances(self.ctx)

    @cached_property
    def db_parameter_groups(self) -> list[Observed]:
        return database.inventory_db_parameter_groups(self.ctx)

    @cached_property
    def repositories(self) -> list[Observed]:
        return registry.inventory_repositories(self.ctx)

    @cached_property
    def log_groups(self) -> list[Observed]:
        return logs.inventory_log_groups(self.ctx)

    @cached_property
    def network(self) -> dict[str, list[Observed]]:
        return network.inventory_network(self.ctx)

    @cached_property
    def vpc_ids(self) -> list[str]:
        return [v.id for v in self.network.get("vpc", [])]

    @cached_property
    def security_groups(self) -> dict[str, Observed]:
        """component -> group, with its ingress rules in attrs["ingress"]."""
        found = {}
        for group in self.network.get("security group", []):
            rules = call(f"read the rules of {group.id}", self.ctx.ec2().describe_security_group_rules,
                         Filters=[{"Name": "group-id", "Values": [group.id]}])["SecurityGroupRules"]
            group.attrs["ingress"] = [r for r in rules if not r.get("IsEgress")]
            found[group.tags.get("ecsflow:component", group.id)] = group
        return found

    def group_rules(self, group_id: str) -> list[Any]:
        return call(f"read the rules of {group_id}", self.ctx.ec2().describe_security_group_rules,
                    Filters=[{"Name": "group-id", "Values": [group_id]}])["SecurityGroupRules"]

    @cached_property
    def roles(self) -> list[Observed]:
        """Our roles with every policy document they carry: inline ones and attached managed ones."""
        client = self.ctx.iam()
        found = iam.inventory_roles(self.ctx)
        for role in found:
            docs: dict[str, Any] = {}
            for name in call(f"list policies of {role.name}", client.list_role_policies,
                             RoleName=role.name)["PolicyNames"]:
                doc = call(f"read policy {name}", client.get_role_policy, RoleName=role.name,
                           PolicyName=name)["PolicyDocument"]
                docs[f"inline {name}"] = json.loads(unquote(doc)) if isinstance(doc, str) else doc
            for attached in call(f"list attached policies of {role.name}", client.list_attached_role_policies,
                                 RoleName=role.name)["AttachedPolicies"]:
                arn = attached["PolicyArn"]
                policy = call(f"read {arn}", client.get_policy, PolicyArn=arn)["Policy"]
                version = call(f"read {arn}", client.get_policy_version, PolicyArn=arn,
                               VersionId=policy["DefaultVersionId"])["PolicyVersion"]["Document"]
                docs[f"managed {attached['PolicyName']}"] = (json.loads(unquote(version))
                                                             if isinstance(version, str) else version)
            role.attrs["policies"] = docs
        return found

    @cached_property
    def load_balancers(self) -> list[Observed]:
        found = load_balancer.inventory_load_balancers(self.ctx)
        for alb in found:
            attributes = call(f"read the attributes of {alb.name}", self.ctx.elbv2().describe_load_balancer_attributes,
                              LoadBalancerArn=alb.id)["Attributes"]
            alb.attrs["attributes"] = {a["Key"]: a["Value"] for a in attributes}
        return found

    @cached_property
    def listeners(self) -> list[Observed]:
        return load_balancer.inventory_listeners(self.ctx, self.load_balancers)

    @cached_property
    def buckets(self) -> list[Observed]:
        """Every bucket named `{stack}-{env}-*` and tagged ours (ALB logs, AWS Config, exports...), with
        its default encryption, public access block and policy."""
        from tasks.buckets import read_setting as _s3_get

        s3 = self.ctx.s3()
        names = [b["Name"] for b in call("list S3 buckets", s3.list_buckets).get("Buckets", [])
                 if b["Name"].startswith(f"{self.ctx.prefix}-")]
        found = []
        for name in names:
            tags = tag_map((_s3_get(self.ctx, "get_bucket_tagging", name) or {}).get("TagSet"))
            if not self.ctx.owns(tags):
                continue
            enc = (_s3_get(self.ctx, "get_bucket_encryption", name) or {}).get("ServerSideEncryptionConfiguration", {})
            default = (enc.get("Rules") or [{}])[0].get("ApplyServerSideEncryptionByDefault", {})
            block = (_s3_get(self.ctx, "get_public_access_block", name) or {}).get("PublicAccessBlockConfiguration")
            policy = _s3_get(self.ctx, "get_bucket_policy", name)
            found.append(Observed(id=f"arn:aws:s3:::{name}", name=name, tags=tags, attrs={
                "encryption": default.get("SSEAlgorithm"), "public_access_block": block,
                "policy": json.loads(policy["Policy"]) if policy else None}))
        return found

    @cached_property
    def ecs_services(self) -> list[Observed]:
        return services.inventory_services(self.ctx)

    @cached_property
    def task_definitions(self) -> list[Observed]:
        return services.inventory_task_definitions(self.ctx)

    @cached_property
    def app_secrets(self) -> list[Observed]:
        return app_secrets.inventory_app_secrets(self.ctx)

    @cached_property
    def kms_keys(self) -> list[Observed]:
        return kms.inventory_keys(self.ctx)

    @cached_property
    def topics(self) -> list[Observed]:
        """Our SNS topics (by tags) with their KMS key attribute."""
        sns = self.ctx.client("sns")
        found = []
        pages = sns.get_paginator("list_topics").paginate()
        for page in call("list SNS topics", lambda: list(pages)):
            for topic in page.get("Topics", []):
                arn = topic["TopicArn"]
                tags = tag_map(call(f"read the tags of {arn}", sns.list_tags_for_resource, ResourceArn=arn)["Tags"])
                if self.ctx.owns(tags):
                    attrs = call(f"read {arn}", sns.get_topic_attributes, TopicArn=arn)["Attributes"]
                    found.append(Observed(id=arn, name=arn.rsplit(":", 1)[-1], tags=tags,
                                          attrs={"kms_key": attrs.get("KmsMasterKeyId")}))
        return found


# ---------------------------------------------------------------- the rules

Check = list[tuple[str, bool, str]]


def _rds_encrypted(f: Facts) -> Check:
    return [(d.name, bool(d.attrs.get("StorageEncrypted") and d.attrs.get("kms_key_arn")),
             "storage is not KMS-encrypted: restore a snapshot into an instance with StorageEncrypted and the "
             "stack's rds key (encryption cannot be turned on in place)") for d in f.db_instances]


def _ecr_encrypted(f: Facts) -> Check:
    return [(r.name, (r.attrs.get("encryption") or {}).get("encryptionType") == "KMS",
             "repository is not KMS-encrypted: recreate it (`ecsflow down` + `up`, encryption is fixed at "
             "creation)") for r in f.repositories]


def _logs_encrypted(f: Facts) -> Check:
    return [(g.name, bool(g.attrs.get("kms_key_arn")),
             "log group has no KMS key: run `ecsflow up` (it associates the stack's logs key)") for g in f.log_groups]


def _sns_encrypted(f: Facts) -> Check:
    return [(t.name, bool(t.attrs.get("kms_key")),
             "topic is not encrypted: set KmsMasterKeyId to the stack's sns key (`ecsflow up`)") for t in f.topics]


def _s3_encrypted(f: Facts) -> Check:
    out = []
    for b in f.buckets:
        enc = b.attrs.get("encryption")
        algorithm = enc.get("SSEAlgorithm") if isinstance(enc, dict) else enc
        out.append((b.name, algorithm in ("AES256", "aws:kms", "aws:kms:dsse"),
                    "bucket has no default encryption: run `ecsflow up` (put_bucket_encryption)"))
    return out


def _secrets_encrypted(f: Facts) -> Check:
    keys = {k.attrs.get("key_id") for k in f.kms_keys} | {k.id for k in f.kms_keys}
    keys |= {k.name for k in f.kms_keys}
    out = []
    for s in f.app_secrets:
        key = str(s.attrs.get("kms_key_id") or "")
        ok = any(key == k or key.endswith(str(k)) for k in keys if k)
        out.append((s.name, ok, "secret is not encrypted with the stack's secrets key (it uses the default "
                                "aws/secretsmanager key): run `ecsflow up`"))
    return out


def _s3_public_access(f: Facts) -> Check:
    return [(b.name, b.attrs.get("public_access_block") == buckets.PUBLIC_ACCESS_BLOCK,
             "public access block is not fully on: run `ecsflow up` (all four settings true)") for b in f.buckets]


def _s3_tls_only(f: Facts) -> Check:
    def denies_plain_http(policy: dict[str, Any] | None) -> bool:
        return any(s.get("Effect") == "Deny" and s.get("Principal") in ("*", {"AWS": "*"})
                   and str((s.get("Condition") or {}).get("Bool", {}).get("aws:SecureTransport")).lower() == "false"
                   for s in (policy or {}).get("Statement", []))

    return [(b.name, denies_plain_http(b.attrs.get("policy")),
             "the bucket policy does not deny aws:SecureTransport=false: add the DenyInsecureTransport statement "
             "(`ecsflow up`)") for b in f.buckets]


def _rds_private(f: Facts) -> Check:
    return [(d.name, d.attrs.get("PubliclyAccessible") is False,
             "instance is publicly accessible: modify it with PubliclyAccessible=false (`ecsflow up`)")
            for d in f.db_instances]


def _ecs_no_public_ip(f: Facts) -> Check:
    return [(s.name, (s.attrs.get("network") or {}).get("assignPublicIp") == "DISABLED",
             "tasks get a public IP: set assignPublicIp DISABLED (`ecsflow up`)") for s in f.ecs_services]


def _ports(rule: dict[str, Any]) -> str:
    low, high = rule.get("FromPort", -1), rule.get("ToPort", -1)
    return "all" if low == -1 else (str(low) if low == high else f"{low}-{high}")


def _world_open(f: Facts) -> Check:
    out = []
    for component, group in f.security_groups.items():
        bad = [r for r in group.attrs["ingress"] if (r.get("CidrIpv4") or r.get("CidrIpv6")) in WORLD
               and not (component == "sg-alb" and r.get("IpProtocol") == "tcp"
                        and r.get("FromPort") == r.get("ToPort") and r.get("FromPort") in PUBLIC_PORTS)]
        out.append((f"{component} ({group.id})", not bad,
                    "open to the internet on port(s) " + ", ".join(_ports(r) for r in bad) +
                    ": only the ALB's 80 and 443 may be; revoke the rule"))
    return out


def _only_from(f: Facts, component: str, source: str) -> Check:
    groups = f.security_groups
    if component not in groups:
        return []
    source_id = groups[source].id if source in groups else None
    bad = [r for r in groups[component].attrs["ingress"]
           if (r.get("ReferencedGroupInfo") or {}).get("GroupId") != source_id or source_id is None]
    return [(f"{component} ({groups[component].id})", not bad,
             f"ingress other than from {source}: " + ", ".join(f"{_ports(r)} from {_source(r)}" for r in bad) +
             "; revoke it (`ecsflow up` restores the chain)")]


def _source(rule: dict[str, Any]) -> str:
    return str(rule.get("CidrIpv4") or rule.get("CidrIpv6") or (rule.get("ReferencedGroupInfo") or {}).get("GroupId"))


def _ecs_from_alb(f: Facts) -> Check:
    return _only_from(f, "sg-ecs", "sg-alb")


def _rds_from_ecs(f: Facts) -> Check:
    return _only_from(f, "sg-rds", "sg-ecs")


def _default_sg_closed(f: Facts) -> Check:
    out = []
    for vpc_id in f.vpc_ids:
        group_id = network.find_default_security_group(f.ctx, vpc_id)
        if group_id is None:
            continue
        rules = f.group_rules(group_id)
        out.append((f"default security group {group_id} of {vpc_id}", not rules,
                    f"{len(rules)} rule(s) on the default security group: revoke them (`ecsflow up`)"))
    return out


def _flow_logs(f: Facts) -> Check:
    return [(vpc_id, network.find_flow_log(f.ctx, vpc_id) is not None,
             "no flow log on the VPC: run `ecsflow up` (network.flow_logs.enabled)") for vpc_id in f.vpc_ids]


def _log_retention(f: Facts) -> Check:
    floor = 365 if f.spec.is_prod else 1
    out = []
    for g in f.log_groups:
        days = g.attrs.get("retention_days")
        out.append((g.name, days is not None and days >= floor,
                    "retention never expires: set a finite retention (`ecsflow up`)" if days is None else
                    f"retention {days} days is below the {floor} days production logs keep (FSBP CloudWatch.16)"))
    return out


def _statements(doc: dict[str, Any]) -> list[dict[str, Any]]:
    items = doc.get("Statement", [])
    return [s for s in (items if isinstance(items, list) else [items]) if s.get("Effect") == "Allow"]


def _as_list(value: Any) -> list[str]:
    return [value] if isinstance(value, str) else list(value or [])


def _iam_actions(f: Facts) -> Check:
    out = []
    for role in f.roles:
        bad = [f"{where}: {action}" for where, doc in role.attrs["policies"].items() for s in _statements(doc)
               for action in _as_list(s.get("Action")) if action == "*" or action.endswith(":*")]
        bad += [f"{where}: NotAction" for where, doc in role.attrs["policies"].items() for s in _statements(doc)
                if "NotAction" in s]
        out.append((role.name, not bad, "wildcard actions (" + "; ".join(bad) + "): name each action"))
    return out


def _iam_resources(f: Facts) -> Check:
    out = []
    for role in f.roles:
        bad = []
        for where, doc in role.attrs["policies"].items():
            for s in _statements(doc):
                if "*" not in _as_list(s.get("Resource")):
                    continue
                wide = [a for a in _as_list(s.get("Action")) if a.lower() not in STAR_RESOURCE_ACTIONS]
                if wide:
                    bad.append(f"{where}: {', '.join(wide)}")
        out.append((role.name, not bad, "Resource \"*\" beyond the documented exceptions (" + "; ".join(bad) +
                    "): name the resources"))
    return out


def _tls_policy(f: Facts) -> Check:
    return [(listener.name, str(listener.attrs.get("ssl_policy") or "").startswith("ELBSecurityPolicy-TLS13-"),
             f"TLS policy {listener.attrs.get('ssl_policy')} is not a TLS 1.3 policy: use "
             f"{f.spec.load_balancer.ssl_policy} (`ecsflow up`)")
            for listener in f.listeners if listener.attrs.get("protocol") == "HTTPS"]


def _http_redirects(f: Facts) -> Check:
    out = []
    for listener in f.listeners:
        if listener.attrs.get("protocol") != "HTTP":
            continue
        actions = listener.attrs.get("default_actions") or []
        redirect = len(actions) == 1 and actions[0].get("Type") == "redirect" and (
            actions[0].get("RedirectConfig") or {}).get("Protocol") == "HTTPS"
        rules = call_or_none(f"read the rules of {listener.name}", f.ctx.elbv2().describe_rules,
                             ListenerArn=listener.id) or {}
        extra = [r for r in rules.get("Rules", []) if not r.get("IsDefault")]
        out.append((listener.name, redirect and not extra,
                    "plain HTTP does more than redirect to HTTPS: make the default action a redirect to HTTPS "
                    "and remove its rules (`ecsflow up`)"))
    return out


def _alb_deletion_protection(f: Facts) -> Check:
    if not f.spec.alb_deletion_protection:
        return []
    return [(alb.name, alb.attrs["attributes"].get("deletion_protection.enabled") == "true",
             "deletion protection is off: turn it on (`ecsflow up`)") for alb in f.load_balancers]


def _rds_deletion_protection(f: Facts) -> Check:
    if not f.spec.deletion_protection:
        return []
    return [(d.name, d.attrs.get("DeletionProtection") is True,
             "deletion protection is off: turn it on (`ecsflow up`)") for d in f.db_instances]


def _image_findings(f: Facts) -> Check:
    threshold = f.spec.images.scan_severity_threshold
    floor = SEVERITY_RANK[threshold]
    out = []
    for repo in f.repositories:
        recorded = repo.tags.get(services.IMAGE_TAG_KEY)
        if not recorded:
            continue  # nothing pushed through ecsflow yet
        tag, _, digest = recorded.partition("@")
        image = {"imageDigest": digest} if digest else {"imageTag": tag}
        got: Any = call_or_none(f"read the scan findings of {repo.name}:{tag}",
                                f.ctx.ecr().describe_image_scan_findings, repositoryName=repo.name, imageId=image)
        counts: dict[str, int] = ((got or {}).get("imageScanFindings") or {}).get("findingSeverityCounts") or {}
        over = {sev: n for sev, n in counts.items() if SEVERITY_RANK.get(sev, 0) >= floor and n}
        out.append((f"{repo.name}:{tag}", not over,
                    f"scan findings at or above {threshold}: " + ", ".join(f"{s} {n}" for s, n in over.items()) +
                    "; rebuild on a patched base image and deploy"))
    return out


def _old_revisions(f: Facts) -> Check:
    limit = f.spec.security.max_active_revisions
    active: dict[str, int] = {}
    for td in f.task_definitions:
        if td.attrs.get("status") == "ACTIVE":
            family = td.name.rsplit(":", 1)[0]
            active[family] = active.get(family, 0) + 1
    return [(family, n <= limit, f"{n} ACTIVE revisions (more than {limit}): deregister the old ones (they keep "
                                 f"old images and secret references runnable)") for family, n in sorted(active.items())]


def _force_ssl(f: Facts) -> Check:
    return [(g.name, g.attrs.get("parameters", {}).get("rds.force_ssl") == "1",
             "rds.force_ssl is not 1: clients may connect without TLS; set it (`ecsflow up`)")
            for g in f.db_parameter_groups]


def _ecr_immutable(f: Facts) -> Check:
    return [(r.name, r.attrs.get("image_tag_mutability") == "IMMUTABLE",
             "tags are mutable: set IMMUTABLE (`ecsflow up`)") for r in f.repositories]


def _ecr_scan(f: Facts) -> Check:
    return [(r.name, bool(r.attrs.get("scan_on_push")), "scan on push is off: turn it on (`ecsflow up`)")
            for r in f.repositories]


def _kms_rotation(f: Facts) -> Check:
    return [(k.name, bool(k.attrs.get("rotation")), "automatic key rotation is off: enable it (`ecsflow up`)")
            for k in f.kms_keys]


RULES: list[Rule] = [
    Rule("ENC-RDS", "RDS storage encrypted with KMS", "high", _rds_encrypted),
    Rule("ENC-ECR", "ECR repositories encrypted with KMS", "medium", _ecr_encrypted),
    Rule("ENC-LOGS", "Log groups encrypted with KMS", "medium", _logs_encrypted),
    Rule("ENC-SNS", "SNS topics encrypted", "medium", _sns_encrypted),
    Rule("ENC-S3", "S3 buckets encrypted by default", "medium", _s3_encrypted),
    Rule("ENC-SECRETS", "App secrets encrypted with the stack's key", "medium", _secrets_encrypted),
    Rule("KMS-ROTATION", "KMS keys rotate automatically", "medium", _kms_rotation),
    Rule("PUB-S3", "S3 public access blocked", "critical", _s3_public_access),
    Rule("S3-TLS", "S3 bucket policies deny plain HTTP", "medium", _s3_tls_only),
    Rule("PUB-RDS", "RDS not publicly accessible", "critical", _rds_private),
    Rule("PUB-ECS", "ECS tasks without public IPs", "high", _ecs_no_public_ip),
    Rule("SG-WORLD", "Only the ALB's 80/443 open to the internet", "critical", _world_open),
    Rule("SG-ECS", "ECS reachable only from the ALB", "high", _ecs_from_alb),
    Rule("SG-RDS", "RDS reachable only from ECS", "high", _rds_from_ecs),
    Rule("SG-DEFAULT", "Default security group has no rules", "medium", _default_sg_closed),
    Rule("VPC-FLOW-LOGS", "VPC flow logs on", "medium", _flow_logs),
    Rule("LOG-RETENTION", "Log retention finite (365+ days in prod)", "medium", _log_retention),
    Rule("IAM-ACTIONS", "No wildcard IAM actions", "high", _iam_actions),
    Rule("IAM-RESOURCES", "Resource * only where AWS allows nothing narrower", "high", _iam_resources),
    Rule("TLS-POLICY", "HTTPS listeners use a TLS 1.3 policy", "high", _tls_policy),
    Rule("HTTP-REDIRECT", "HTTP listeners only redirect to HTTPS", "high", _http_redirects),
    Rule("DEL-ALB", "ALB deletion protection", "medium", _alb_deletion_protection),
    Rule("DEL-RDS", "RDS deletion protection", "high", _rds_deletion_protection),
    Rule("IMG-FINDINGS", "Image scan findings below the stack's threshold", "high", _image_findings),
    Rule("TD-REVISIONS", "Few active task-definition revisions", "low", _old_revisions),
    Rule("RDS-FORCE-SSL", "RDS requires TLS (rds.force_ssl=1)", "high", _force_ssl),
    Rule("ECR-IMMUTABLE", "ECR tags immutable", "medium", _ecr_immutable),
    Rule("ECR-SCAN", "ECR scan on push", "medium", _ecr_scan),
]
RULE_IDS = [r.id for r in RULES]


def run_rule(rule: Rule, facts: Facts) -> list[Finding]:
    return [Finding(rule.id, rule.title, rule.severity, resource, passed, "ok" if passed else message)
            for resource, passed, message in rule.check(facts)]


def audit(spec: Stack, ctx: AwsContext, only: list[str] | None = None) -> list[Finding]:
    """Every finding of every rule (or of the rules named in `only`), in rule order."""
    unknown = sorted(set(only or []) - set(RULE_IDS))
    if unknown:
        raise ValueError(f"unknown audit rule(s) {', '.join(unknown)}; known: {', '.join(RULE_IDS)}")
    facts = Facts(spec, ctx)
    return [finding for rule in RULES if not only or rule.id in only for finding in run_rule(rule, facts)]


def report_markdown(prefix: str, findings: list[Finding]) -> str:
    failed = [f for f in findings if not f.passed]
    checked = {f.rule for f in findings}
    lines = [f"# Security audit of {prefix}", "",
             f"**{'FAIL' if failed else 'PASS'}**: {len(failed)} failed of {len(findings)} checks "
             f"({len(checked)} of {len(RULES)} rules had something to check).", "",
             "| result | rule | severity | resource | message |", "|---|---|---|---|---|"]
    for f in sorted(findings, key=lambda f: (f.passed, RULE_IDS.index(f.rule), f.resource)):
        message = f.message.replace("|", "\\|")
        lines.append(f"| {'pass' if f.passed else '**FAIL**'} | {f.rule} {f.title} | {f.severity} | "
                     f"`{f.resource}` | {message} |")
    idle = [r.id for r in RULES if r.id not in checked]
    if idle:
        lines += ["", f"Nothing to check for: {', '.join(idle)}."]
    return "\n".join(lines) + "\n"
