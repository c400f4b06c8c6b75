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
            "ec2:ModifyVpcAttribute", "ec2:ModifySubnetAttribute", "ec2:AttachInternetGateway",
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
            "ecs:RegisterTaskDefinition", "ecs:DeleteTaskDefinitions",
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
