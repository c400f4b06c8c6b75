"""The IAM policy the runner of ecsflow's flows needs for one stack (`ecsflow iam-policy`).

Least privilege as far as AWS allows, and scoped to the stack:
- by name prefix wherever the resource ARN carries our name (`{stack}-{env}-*`: RDS, ECR, ELB, ECS,
  S3, Secrets Manager `{stack}-{env}/*`, log groups `/ecsflow/{stack}-{env}/*`, IAM roles under the
  path `/ecsflow/{stack}-{env}/`, KMS aliases);
- by tag where the ARN is a random id (EC2, KMS keys): creation must carry `ecsflow:stack`
  (`aws:RequestTag`), changes and deletions need the resource to carry it (`aws:ResourceTag`);
- `iam:PassRole` only for our roles, only to the services that use them (`iam:PassedToService`).

Resource "*" remains where AWS has no narrower resource for the action: read-only Describe/List/Get
calls, creating resources whose ARN does not exist yet (EC2 and KMS creates, limited by the request
tag instead), ECR's GetAuthorizationToken, the tagging API, application autoscaling, STS identity,
and the account-level guardrails (Security Hub, GuardDuty, AWS Config have one per account/region).
Each such statement's Sid says why. No statement grants a wildcard action.
"""

from __future__ import annotations

import json
from typing import Any

from spec import Stack
from tasks.load_balancer import partition

TAG = "ecsflow:stack"


def _stmt(sid: str, actions: list[str], resources: list[str] | str,
          condition: dict[str, Any] | None = None) -> dict[str, Any]:
    statement: dict[str, Any] = {"Sid": sid, "Effect": "Allow", "Action": sorted(set(actions)),
                                 "Resource": resources}
    if condition:
        statement["Condition"] = condition
    return statement


def runner_policy(spec: Stack, region: str, account: str) -> dict[str, Any]:
    part = partition(region)
    prefix = f"{spec.name}-{spec.env}"
    arn = f"arn:{part}"
    reg = f"{region}:{account}"
    request_tag = {"StringEquals": {f"aws:RequestTag/{TAG}": spec.name}}
    resource_tag = {"StringEquals": {f"aws:ResourceTag/{TAG}": spec.name}}
    roles = f"{arn}:iam::{account}:role/ecsflow/{prefix}/*"
    ec2_types = [f"{arn}:ec2:{reg}:{kind}/*" for kind in (
        "vpc", "subnet", "internet-gateway", "elastic-ip", "natgateway", "route-table", "security-group",
        "vpc-endpoint", "vpc-flow-log")]
    statements = [
        _stmt("ReadOnlyDescribeCallsHaveNoResourceLevelPermissions", [
            "ec2:DescribeVpcs", "ec2:DescribeSubnets", "ec2:DescribeInternetGateways",
            "ec2:DescribeNatGateways", "ec2:DescribeAddresses", "ec2:DescribeRouteTables",
            "ec2:DescribeSecurityGroups", "ec2:DescribeSecurityGroupRules", "ec2:DescribeVpcEndpoints",
            "ec2:DescribeFlowLogs", "ec2:DescribeAvailabilityZones", "ec2:DescribeNetworkInterfaces",
            "rds:DescribeDBSnapshots", "rds:ListTagsForResource", "ecr:GetRegistryScanningConfiguration",
            "ecs:DescribeTaskDefinition", "ecs:ListServices", "ecs:ListTaskDefinitions",
            "ecs:ListTaskDefinitionFamilies",
            "elasticloadbalancing:DescribeLoadBalancers", "elasticloadbalancing:DescribeLoadBalancerAttributes",
            "elasticloadbalancing:DescribeTargetGroups", "elasticloadbalancing:DescribeTargetGroupAttributes",
            "elasticloadbalancing:DescribeListeners", "elasticloadbalancing:DescribeRules",
            "elasticloadbalancing:DescribeTags", "elasticloadbalancing:DescribeTargetHealth",
            "acm:ListCertificates", "logs:DescribeLogGroups", "kms:ListAliases", "iam:ListRoles",
            "secretsmanager:ListSecrets", "secretsmanager:GetRandomPassword", "s3:ListAllMyBuckets",
            "sns:ListTopics", "tag:GetResources",
            "application-autoscaling:DescribeScalableTargets", "application-autoscaling:DescribeScalingPolicies",
        ], "*"),
        # Inventories list every resource of a kind and keep those tagged ours: reads of the account's kind.
        _stmt("ReadToTakeInventory", [
            "ec2:DescribeVpcAttribute", "rds:DescribeDBInstances", "rds:DescribeDBSubnetGroups",
            "rds:DescribeDBParameterGroups", "rds:DescribeDBParameters", "ecr:DescribeRepositories",
            "acm:DescribeCertificate", "acm:ListTagsForCertificate", "kms:DescribeKey", "kms:GetKeyPolicy",
            "kms:GetKeyRotationStatus", "kms:ListResourceTags",
        ], [f"{arn}:ec2:{reg}:vpc/*", f"{arn}:rds:{reg}:db:*", f"{arn}:rds:{reg}:subgrp:*",
            f"{arn}:rds:{reg}:pg:*", f"{arn}:ecr:{reg}:repository/*", f"{arn}:acm:{reg}:certificate/*",
            f"{arn}:kms:{reg}:key/*"]),
        _stmt("EcsReadOwn", ["ecs:DescribeClusters", "ecs:DescribeServices", "ecs:DescribeTasks"],
              [f"{arn}:ecs:{reg}:cluster/{prefix}-*", f"{arn}:ecs:{reg}:service/{prefix}-*/*",
               f"{arn}:ecs:{reg}:task/{prefix}-*/*"]),
        _stmt("EcrLoginIsAccountWide", ["ecr:GetAuthorizationToken"], "*"),
        _stmt("EcsDeregisterHasNoResourceLevelPermission", ["ecs:DeregisterTaskDefinition"], "*"),
        # EC2: created with our tags (the create call carries them), changed only when tagged ours.
        _stmt("Ec2CreateOnlyTaggedOurs", [
            "ec2:CreateVpc", "ec2:CreateSubnet", "ec2:CreateInternetGateway", "ec2:AllocateAddress",
            "ec2:CreateNatGateway", "ec2:CreateRouteTable", "ec2:CreateSecurityGroup", "ec2:CreateVpcEndpoint",
            "ec2:CreateFlowLogs",
        ], ec2_types, request_tag),
        _stmt("Ec2TagOnCreate", ["ec2:CreateTags"], ec2_types,
              {"StringEquals": {"ec2:CreateAction": [
                  "CreateVpc", "CreateSubnet", "CreateInternetGateway", "AllocateAddress", "CreateNatGateway",
                  "CreateRouteTable", "CreateSecurityGroup", "CreateVpcEndpoint", "CreateFlowLogs"]}}),
        _stmt("Ec2ChangeOnlyOurs", [
            "ec2:ModifyVpcAttribute", "ec2:ModifySubnetAttribute", "ec2:ReplaceRouteTableAssociation",
            "ec2:AttachInternetGateway",
            "ec2:DetachInternetGateway", "ec2:CreateRoute", "ec2:ReplaceRoute", "ec2:AssociateRouteTable",
            "ec2:DisassociateRouteTable", "ec2:AuthorizeSecurityGroupIngress", "ec2:AuthorizeSecurityGroupEgress",
            "ec2:RevokeSecurityGroupIngress", "ec2:RevokeSecurityGroupEgress", "ec2:ModifyVpcEndpoint",
            "ec2:DeleteVpc", "ec2:DeleteSubnet", "ec2:DeleteInternetGateway", "ec2:ReleaseAddress",
            "ec2:DeleteNatGateway", "ec2:DeleteRouteTable", "ec2:DeleteSecurityGroup", "ec2:DeleteVpcEndpoints",
            "ec2:DeleteFlowLogs",
        ], ec2_types, resource_tag),
        # The VPC's default group is made by AWS without our tags; only revoking is granted (closing it).
        _stmt("Ec2CloseTheUntaggedDefaultGroup", ["ec2:RevokeSecurityGroupIngress", "ec2:RevokeSecurityGroupEgress"],
              f"{arn}:ec2:{reg}:security-group/*"),
        _stmt("RdsOwnResources", [
            "rds:CreateDBInstance", "rds:ModifyDBInstance", "rds:DeleteDBInstance", "rds:CreateDBSubnetGroup",
            "rds:ModifyDBSubnetGroup", "rds:DeleteDBSubnetGroup", "rds:CreateDBParameterGroup",
            "rds:ModifyDBParameterGroup", "rds:DeleteDBParameterGroup", "rds:AddTagsToResource",
            "rds:RemoveTagsFromResource", "rds:CreateDBSnapshot",
        ], [f"{arn}:rds:{reg}:db:{prefix}-*", f"{arn}:rds:{reg}:subgrp:{prefix}-*",
            f"{arn}:rds:{reg}:pg:{prefix}-*", f"{arn}:rds:{reg}:snapshot:{prefix}-*"]),
        _stmt("EcrOwnRepositories", [
            "ecr:CreateRepository", "ecr:DeleteRepository", "ecr:PutImageTagMutability",
            "ecr:PutImageScanningConfiguration", "ecr:PutLifecyclePolicy", "ecr:GetLifecyclePolicy",
            "ecr:TagResource", "ecr:ListTagsForResource", "ecr:DescribeImages", "ecr:DescribeImageScanFindings",
            "ecr:StartImageScan", "ecr:BatchCheckLayerAvailability", "ecr:InitiateLayerUpload",
            "ecr:UploadLayerPart", "ecr:CompleteLayerUpload", "ecr:PutImage", "ecr:BatchGetImage",
            "ecr:BatchDeleteImage",
        ], f"{arn}:ecr:{reg}:repository/{prefix}-*"),
        _stmt("EcrRegistryScanningIsAccountWide", ["ecr:PutRegistryScanningConfiguration"], "*"),
        _stmt("EcsOwnClusterServicesTaskDefinitions", [
            "ecs:CreateCluster", "ecs:UpdateCluster", "ecs:DeleteCluster", "ecs:PutClusterCapacityProviders",
            "ecs:CreateService", "ecs:UpdateService", "ecs:DeleteService", "ecs:TagResource", "ecs:RunTask",
            "ecs:RegisterTaskDefinition", "ecs:DeleteTaskDefinitions", "ecs:ListTagsForResource",
        ], [f"{arn}:ecs:{reg}:cluster/{prefix}-*", f"{arn}:ecs:{reg}:service/{prefix}-*/*",
            f"{arn}:ecs:{reg}:task-definition/{prefix}-*:*", f"{arn}:ecs:{reg}:task/{prefix}-*/*"]),
        _stmt("PassOnlyOurRolesToTheirServices", ["iam:PassRole"], roles,
              {"StringEquals": {"iam:PassedToService": [
                  "ecs-tasks.amazonaws.com", "vpc-flow-logs.amazonaws.com", "monitoring.rds.amazonaws.com"]}}),
        _stmt("IamOwnRolesUnderTheStackPath", [
            "iam:CreateRole", "iam:GetRole", "iam:DeleteRole", "iam:UpdateAssumeRolePolicy", "iam:TagRole",
            "iam:ListRoleTags", "iam:PutRolePolicy", "iam:GetRolePolicy", "iam:DeleteRolePolicy",
            "iam:ListRolePolicies", "iam:AttachRolePolicy", "iam:DetachRolePolicy", "iam:ListAttachedRolePolicies",
        ], roles),
        # AWS managed policies live in the pseudo-account "aws" (parliament's ARN check wants 12 digits).
        _stmt("IamReadAttachedManagedPolicies", ["iam:GetPolicy", "iam:GetPolicyVersion"],
              f"{arn}:iam::aws:policy/*"),
        _stmt("ElbOwnLoadBalancer", [
            "elasticloadbalancing:CreateLoadBalancer", "elasticloadbalancing:ModifyLoadBalancerAttributes",
            "elasticloadbalancing:SetSecurityGroups", "elasticloadbalancing:SetSubnets",
            "elasticloadbalancing:DeleteLoadBalancer", "elasticloadbalancing:CreateTargetGroup",
            "elasticloadbalancing:ModifyTargetGroup", "elasticloadbalancing:ModifyTargetGroupAttributes",
            "elasticloadbalancing:DeleteTargetGroup", "elasticloadbalancing:CreateListener",
            "elasticloadbalancing:ModifyListener", "elasticloadbalancing:DeleteListener",
            "elasticloadbalancing:CreateRule", "elasticloadbalancing:ModifyRule",
            "elasticloadbalancing:DeleteRule", "elasticloadbalancing:SetRulePriorities",
            "elasticloadbalancing:AddTags",
        ], [f"{arn}:elasticloadbalancing:{reg}:loadbalancer/app/{prefix}-*/*",
            f"{arn}:elasticloadbalancing:{reg}:targetgroup/{prefix}-*/*",
            f"{arn}:elasticloadbalancing:{reg}:listener/*/{prefix}-*/*",
            f"{arn}:elasticloadbalancing:{reg}:listener-rule/*/{prefix}-*/*"]),
        _stmt("AcmRequestHasNoResourceYet", ["acm:RequestCertificate"], "*", request_tag),
        _stmt("AcmCertificatesTaggedOurs", ["acm:ImportCertificate",
                                             "acm:AddTagsToCertificate"], f"{arn}:acm:{reg}:certificate/*",
              request_tag),
        _stmt("AcmDeleteOurs", ["acm:DeleteCertificate"], f"{arn}:acm:{reg}:certificate/*", resource_tag),
        _stmt("S3OwnBuckets", [
            "s3:CreateBucket", "s3:DeleteBucket", "s3:PutBucketTagging", "s3:GetBucketTagging",
            "s3:PutBucketPublicAccessBlock", "s3:GetBucketPublicAccessBlock", "s3:PutBucketOwnershipControls",
            "s3:GetBucketOwnershipControls", "s3:PutEncryptionConfiguration", "s3:GetEncryptionConfiguration",
            "s3:PutBucketVersioning", "s3:GetBucketVersioning", "s3:PutBucketPolicy", "s3:GetBucketPolicy",
            "s3:DeleteBucketPolicy", "s3:PutLifecycleConfiguration", "s3:GetLifecycleConfiguration",
            "s3:ListBucket", "s3:ListBucketVersions",
        ], f"{arn}:s3:::{prefix}-*"),
        _stmt("S3EmptyOwnBucketsAtTeardown", ["s3:DeleteObject", "s3:DeleteObjectVersion"],
              f"{arn}:s3:::{prefix}-*/*"),
        _stmt("LogsOwnGroups", [
            "logs:CreateLogGroup", "logs:DeleteLogGroup", "logs:PutRetentionPolicy", "logs:AssociateKmsKey",
            "logs:TagResource", "logs:ListTagsForResource", "logs:GetLogEvents",
        ], [f"{arn}:logs:{reg}:log-group:/ecsflow/{prefix}/*"]),
        _stmt("KmsCreateOnlyTaggedOurs", ["kms:CreateKey"], "*", request_tag),
        _stmt("KmsOwnKeys", [
            "kms:PutKeyPolicy", "kms:EnableKeyRotation", "kms:EnableKey", "kms:TagResource",
            "kms:UntagResource", "kms:ScheduleKeyDeletion", "kms:CreateGrant", "kms:Decrypt",
            "kms:GenerateDataKey", "kms:Encrypt",
        ], f"{arn}:kms:{reg}:key/*", resource_tag),
        _stmt("KmsOwnAliases", ["kms:CreateAlias", "kms:UpdateAlias", "kms:DeleteAlias"],
              [f"{arn}:kms:{reg}:alias/{prefix}-*", f"{arn}:kms:{reg}:key/*"]),
        _stmt("SecretsOwn", [
            "secretsmanager:CreateSecret", "secretsmanager:DescribeSecret", "secretsmanager:UpdateSecret",
            "secretsmanager:TagResource", "secretsmanager:RestoreSecret", "secretsmanager:DeleteSecret",
            "secretsmanager:RotateSecret", "secretsmanager:CancelRotateSecret",
        ], f"{arn}:secretsmanager:{reg}:secret:{prefix}/*"),
        _stmt("AutoscalingHasNoStackScopedResource", [
            "application-autoscaling:RegisterScalableTarget", "application-autoscaling:DeregisterScalableTarget",
            "application-autoscaling:PutScalingPolicy", "application-autoscaling:DeleteScalingPolicy",
            "application-autoscaling:TagResource",
        ], f"{arn}:application-autoscaling:{reg}:scalable-target/*"),
        _stmt("AutoscalingServiceLinkedRole", ["iam:CreateServiceLinkedRole"],
              f"{arn}:iam::{account}:role/aws-service-role/*",
              {"StringEquals": {"iam:AWSServiceName": [
                  "ecs.application-autoscaling.amazonaws.com", "ecs.amazonaws.com",
                  "elasticloadbalancing.amazonaws.com", "rds.amazonaws.com", "config.amazonaws.com"]}}),
        _stmt("SnsReadTopicsForTheAudit", ["sns:ListTagsForResource", "sns:GetTopicAttributes"],
              f"{arn}:sns:{reg}:{prefix}-*"),
    ]
    statements += _other_families(spec, arn, reg, account, prefix, resource_tag)
    sec = spec.security
    if sec.security_hub:
        statements.append(_stmt("SecurityHubIsAccountWide", [
            "securityhub:EnableSecurityHub", "securityhub:DescribeHub", "securityhub:GetEnabledStandards",
            "securityhub:BatchEnableStandards", "securityhub:TagResource"], "*"))
    if sec.guardduty:
        statements.append(_stmt("GuardDutyIsAccountWide", [
            "guardduty:CreateDetector", "guardduty:ListDetectors"], "*"))
        statements.append(_stmt("GuardDutyDetectors", ["guardduty:GetDetector", "guardduty:UpdateDetector",
                                                       "guardduty:TagResource"], f"{arn}:guardduty:{reg}:detector/*"))
    if sec.config_recorder:
        statements.append(_stmt("ConfigRecorderIsAccountWide", [
            "config:PutConfigurationRecorder", "config:PutDeliveryChannel", "config:DescribeDeliveryChannels"], "*"))
        statements.append(_stmt("ConfigRecorders", [
            "config:DescribeConfigurationRecorders", "config:DescribeConfigurationRecorderStatus",
            "config:StartConfigurationRecorder"], f"{arn}:config:{reg}:configuration-recorder/*"))
        statements.append(_stmt("ConfigServiceLinkedRole", ["iam:GetRole"],
                                f"{arn}:iam::{account}:role/aws-service-role/config.amazonaws.com/*"))
    return {"Version": "2012-10-17", "Statement": statements}


def _other_families(spec: Stack, arn: str, reg: str, account: str, prefix: str,
                    resource_tag: dict[str, Any]) -> list[dict[str, Any]]:
    """Monitoring, backups and exports, the CI pipeline and the edge: each when the stack has it."""
    out = [
        # Backups copy snapshots to a second region and restore tests run anywhere the stack names.
        _stmt("RdsSnapshotsOfTheStackInAnyRegion", [
            "rds:CreateDBSnapshot", "rds:CopyDBSnapshot", "rds:DeleteDBSnapshot", "rds:AddTagsToResource",
            "rds:RestoreDBInstanceFromDBSnapshot", "rds:DeleteDBInstance", "rds:ModifyDBInstance",
        ], [f"{arn}:rds:*:{account}:snapshot:{prefix}-*", f"{arn}:rds:*:{account}:db:{prefix}-*",
            f"{arn}:rds:*:{account}:subgrp:{prefix}-*", f"{arn}:rds:*:{account}:pg:{prefix}-*",
            f"{arn}:rds:*:{account}:og:default:*"]),
        _stmt("KmsOwnKeysInAnyRegion", ["kms:CreateGrant", "kms:Decrypt", "kms:ReEncryptFrom", "kms:ReEncryptTo",
                                        "kms:GenerateDataKey", "kms:DescribeKey"],
              f"{arn}:kms:*:{account}:key/*", resource_tag),
        _stmt("S3ObjectsOfOwnBuckets", ["s3:GetObject", "s3:PutObject"], f"{arn}:s3:::{prefix}-*/*"),
    ]
    if spec.monitoring.enabled:
        out += [
            _stmt("CloudWatchListHasNoResource", ["cloudwatch:ListDashboards"], "*"),
            _stmt("SnsUnsubscribeHasNoResource", ["sns:Unsubscribe"], "*"),
            _stmt("CloudWatchOwnAlarmsAndDashboard", [
                "cloudwatch:PutMetricAlarm", "cloudwatch:DeleteAlarms", "cloudwatch:TagResource",
                "cloudwatch:ListTagsForResource", "cloudwatch:PutDashboard", "cloudwatch:GetDashboard",
                "cloudwatch:DeleteDashboards", "cloudwatch:DescribeAlarms",
            ], [f"{arn}:cloudwatch:{reg}:alarm:{prefix}-*", f"{arn}:cloudwatch::{account}:dashboard/{prefix}-*"]),
            _stmt("LogsOwnMetricFilters", ["logs:PutMetricFilter", "logs:DeleteMetricFilter",
                                           "logs:DescribeMetricFilters"],
                  f"{arn}:logs:{reg}:log-group:/ecsflow/{prefix}/*"),
            _stmt("SnsOwnTopics", [
                "sns:CreateTopic", "sns:DeleteTopic", "sns:SetTopicAttributes", "sns:Subscribe",
                "sns:TagResource", "sns:ListSubscriptionsByTopic",
            ], f"{arn}:sns:{reg}:{prefix}-*"),
            _stmt("BudgetsOwn", ["budgets:ModifyBudget", "budgets:ViewBudget"],
                  f"{arn}:budgets::{account}:budget/{prefix}-*"),
        ]
    if spec.pipeline is not None:
        out += [
            _stmt("OidcProvidersListHasNoResource", ["iam:ListOpenIDConnectProviders"], "*"),
            _stmt("GitHubOidcProvider", [
                "iam:CreateOpenIDConnectProvider", "iam:GetOpenIDConnectProvider", "iam:TagOpenIDConnectProvider",
                "iam:DeleteOpenIDConnectProvider", "iam:AddClientIDToOpenIDConnectProvider",
            ], f"{arn}:iam::{account}:oidc-provider/token.actions.githubusercontent.com"),
        ]
    lb = spec.load_balancer
    if lb.dns is not None:
        out += [
            _stmt("Route53ZoneLookupAndHealthCheckCreateHaveNoResource", ["route53:ListHostedZonesByName",
                                                                          "route53:CreateHealthCheck"], "*"),
            # The hosted zone is the user's (its id is known only at run time); records and health checks.
            _stmt("Route53Records", ["route53:ChangeResourceRecordSets", "route53:ListResourceRecordSets",
                                     "route53:GetHostedZone"], f"{arn}:route53:::hostedzone/*"),
            _stmt("Route53HealthChecks", ["route53:UpdateHealthCheck", "route53:DeleteHealthCheck",
                                          "route53:ChangeTagsForResource", "route53:ListTagsForResources"],
                  [f"{arn}:route53:::healthcheck/*", f"{arn}:route53:::hostedzone/*"]),
        ]
    if lb.cdn.enabled:
        out += [
            _stmt("CloudFrontDistributions", [
                "cloudfront:CreateDistribution", "cloudfront:UpdateDistribution", "cloudfront:GetDistribution",
                "cloudfront:GetDistributionConfig", "cloudfront:DeleteDistribution", "cloudfront:TagResource",
                "cloudfront:ListTagsForResource"], f"{arn}:cloudfront::{account}:distribution/*"),
            # The CDN's certificate must live in us-east-1 (CloudFront's rule), tagged like the rest.
            _stmt("AcmUsEast1ForCloudFront", ["acm:AddTagsToCertificate", "acm:DescribeCertificate",
                                              "acm:ListTagsForCertificate", "acm:DeleteCertificate"],
                  f"{arn}:acm:us-east-1:{account}:certificate/*"),
        ]
    if lb.waf.enabled:
        out += [
            _stmt("WafListHasNoResource", ["wafv2:ListWebACLs"], "*"),
            _stmt("WafOwnWebAcl", [
                "wafv2:CreateWebACL", "wafv2:UpdateWebACL", "wafv2:GetWebACL", "wafv2:DeleteWebACL",
                "wafv2:TagResource", "wafv2:ListTagsForResource", "wafv2:AssociateWebACL",
                "wafv2:DisassociateWebACL", "wafv2:GetWebACLForResource",
            ], [f"{arn}:wafv2:*:{account}:*/webacl/{prefix}-*/*", f"{arn}:wafv2:*:{account}:*/managedruleset/*/*",
                f"{arn}:elasticloadbalancing:{reg}:loadbalancer/app/{prefix}-*/*"]),
        ]
    return out


# ---------------------------------------------------------------- which IAM action an API call needs

# boto3 service name -> IAM service prefix, where they differ.
IAM_PREFIX = {"elbv2": "elasticloadbalancing", "resourcegroupstaggingapi": "tag"}
# API operations whose IAM action has another name (S3 mostly), or that need no permission.
IAM_ACTION = {
    "s3:HeadBucket": "s3:ListBucket", "s3:ListBuckets": "s3:ListAllMyBuckets",
    "s3:GetBucketEncryption": "s3:GetEncryptionConfiguration",
    "s3:PutBucketEncryption": "s3:PutEncryptionConfiguration",
    "s3:GetBucketLifecycleConfiguration": "s3:GetLifecycleConfiguration",
    "s3:PutBucketLifecycleConfiguration": "s3:PutLifecycleConfiguration",
    "s3:GetPublicAccessBlock": "s3:GetBucketPublicAccessBlock",
    "s3:PutPublicAccessBlock": "s3:PutBucketPublicAccessBlock",
    "s3:ListObjectVersions": "s3:ListBucketVersions", "s3:DeleteObjects": "s3:DeleteObject",
    "logs:ListTagsForResource": "logs:ListTagsForResource",
}
NO_PERMISSION = {"sts:GetCallerIdentity"}


def required_action(call: str) -> str | None:
    """`service:Operation` as CALLS records it -> the IAM action it needs (None: no permission)."""
    service, operation = call.split(":", 1)
    action = f"{IAM_PREFIX.get(service, service)}:{operation}"
    if action in NO_PERMISSION:
        return None
    if service == "budgets":  # the Budgets API has two IAM actions: view and modify
        return "budgets:ViewBudget" if operation.startswith(("Describe", "View")) else "budgets:ModifyBudget"
    return IAM_ACTION.get(action, action)


MANAGED_POLICY_LIMIT = 6144  # characters of a customer-managed policy, whitespace excluded


def split_policy(policy: dict[str, Any], limit: int = MANAGED_POLICY_LIMIT) -> list[dict[str, Any]]:
    """The statements packed into as few documents as fit IAM's managed-policy size limit (a role takes
    up to 10 managed policies by default), in order."""
    docs: list[list[dict[str, Any]]] = [[]]
    for statement in policy["Statement"]:
        candidate = {"Version": policy["Version"], "Statement": [*docs[-1], statement]}
        if docs[-1] and len(json.dumps(candidate, separators=(",", ":"))) > limit:
            docs.append([statement])
        else:
            docs[-1].append(statement)
    return [{"Version": policy["Version"], "Statement": statements} for statements in docs]


def granted_actions(policy: dict[str, Any]) -> set[str]:
    return {a for s in policy["Statement"] if s["Effect"] == "Allow"
            for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])}
