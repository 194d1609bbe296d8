"""The deployer's table: for every Pulumi type token the kit registers, the IAM actions the provider
calls to create, read (`refresh`), update, tag and delete it, grouped by what their Resource element
may be narrowed to. `deploy/deployer_policy.py` turns each scope into this stack's ARNs.

Action names and resource-level support follow the AWS Service Authorization Reference ("Actions,
resources, and condition keys for <service>",
https://docs.aws.amazon.com/service-authorization/latest/reference/reference_policies_actions-resources-contextkeys.html);
tests/unit/test_deployer_policy.py checks every name, and every UNSCOPED placement, against
parliament's copy of that reference. The calls per resource are those of the Terraform AWS provider
that pulumi-aws bridges (its read is what `pulumi refresh` runs).

Why this file is long: it is one table, one entry per resource type, and it is meant to be read
(and reviewed by a security team) as a whole; splitting it by service would only scatter it.
"""

from __future__ import annotations

from collections.abc import Mapping

from deploy.deployer_actions_kubernetes import EKS, KUBERNETES_TYPE_ACTIONS, eks_scope  # noqa: F401

# What a group of actions may be narrowed to. UNSCOPED: the action has no resource-level
# permissions, so IAM only accepts `Resource: "*"` for it.
UNSCOPED = "unscoped"
EC2 = "ec2"  # this account and region (ids are only known once created)
ELB = "elb"  # the stack's load balancer, its listeners and target group, by name
ECS = "ecs"  # the stack's cluster, its services and task families
ECR = "ecr"  # the stack's image repository
IAM_ROLE = "iam-role"  # the stack's roles, by name
IAM_POLICY = "iam-policy"  # the stack's managed policies, by name
S3_BUCKET = "s3-bucket"  # the stack's buckets
S3_OBJECT = "s3-object"  # objects in them (force_destroy empties a bucket on `destroy`)
KMS_KEY = "kms-key"  # keys of this account and region (key ids are random)
KMS_ALIAS = "kms-alias"  # the stack's aliases (and the keys they point at)
KMS_GRANT = "kms-grant"  # grants an AWS service (RDS) makes with the deployer's credentials
KMS_VIA_SECRETS_MANAGER = "kms-via-secrets-manager"  # secret values, encrypted by Secrets Manager
SECRETS = "secrets"  # secret:<secret_name_prefix>/*
RDS_MANAGED_SECRET = "rds-managed-secret"  # noqa: S105 - a scope name; secret:rds!db-* (named by RDS)
LOG_GROUP = "log-group"  # the stack's log groups, by name
RDS = "rds"  # the stack's instance, subnet group, parameter group, final snapshot
DYNAMODB = "dynamodb"  # the stack's lock table
SNS = "sns"  # the stack's alarm topic
ALARM = "alarm"  # the stack's alarms and those target tracking makes for its service
ACM = "acm"  # certificates of this account and region
ROUTE53_ZONE = "route53-zone"  # the hosted zones the stack writes records in
ROUTE53_RECORDS = "route53-records"  # ... limited to the stack's record names
ROUTE53_CHANGE = "route53-change"  # change ids (GetChange, waiting for INSYNC)
SCHEDULER = "scheduler"  # the stack's schedules
LAMBDA = "lambda"  # the stack's functions (the deploy-time migration runner), by name
APP_AUTOSCALING = "app-autoscaling"  # scalable targets of this account and region
DASHBOARD = "dashboard"  # the stack's CloudWatch dashboards (global: no region in the ARN)
WAF = "waf"  # the stack's web ACL, the AWS managed rule groups it uses, and the ALB it protects

ActionTable = Mapping[str, Mapping[str, tuple[str, ...]]]

# The final snapshot `destroy` takes: granted only for an instance configured to take one.
FINAL_SNAPSHOT_ACTION = "rds:CreateDBSnapshot"

_EC2_TAGS = ("ec2:CreateTags", "ec2:DeleteTags")
_RDS_TAGS = ("rds:AddTagsToResource", "rds:RemoveTagsFromResource", "rds:ListTagsForResource")
_ELB_TAGS = ("elasticloadbalancing:AddTags", "elasticloadbalancing:RemoveTags")
_ECS_TAGS = ("ecs:TagResource", "ecs:UntagResource", "ecs:ListTagsForResource")

# Logical resources: components group children, the random provider runs locally, and the
# provider itself calls STS to learn the account (also the program's get_caller_identity).
_NOTHING: Mapping[str, tuple[str, ...]] = {}

TYPE_ACTIONS: ActionTable = {
    "pulumi:providers:aws": {UNSCOPED: ("sts:GetCallerIdentity",)},
    "random:index/randomPassword:RandomPassword": _NOTHING,
    "random:index/randomId:RandomId": _NOTHING,
    "mlflow-stack:artifacts:Artifacts": _NOTHING,
    "mlflow-stack:compute:EcsService": _NOTHING,
    "mlflow-stack:compute:EcsMigration": _NOTHING,
    "mlflow-stack:compute:ServerImage": _NOTHING,
    "mlflow-stack:database:Database": _NOTHING,
    "mlflow-stack:edge:Firewall": _NOTHING,
    "mlflow-stack:edge:LoadBalancer": _NOTHING,
    "mlflow-stack:edge:TeamRoute": _NOTHING,  # a team stack's rules on the platform's ALB
    "mlflow-stack:identity:Identity": _NOTHING,
    "mlflow-stack:locks:LockTable": _NOTHING,
    "mlflow-stack:monitoring:Monitoring": _NOTHING,
    "mlflow-stack:network:Network": _NOTHING,
    "mlflow-stack:operations:Operations": _NOTHING,
    "mlflow-stack:secrets:Secrets": _NOTHING,
    **KUBERNETES_TYPE_ACTIONS,  # compute.backend: kubernetes (deploy/deployer_actions_kubernetes.py)
    # --- network -----------------------------------------------------------------------------
    "aws:ec2/vpc:Vpc": {
        EC2: (
            "ec2:CreateVpc",
            "ec2:DeleteVpc",
            "ec2:DescribeVpcAttribute",
            "ec2:ModifyVpcAttribute",
            *_EC2_TAGS,
        ),
        # The read also looks at the VPC's default NACL, security group and main route table.
        UNSCOPED: (
            "ec2:DescribeVpcs",
            "ec2:DescribeNetworkAcls",
            "ec2:DescribeSecurityGroups",
            "ec2:DescribeRouteTables",
        ),
    },
    "aws:ec2/subnet:Subnet": {
        EC2: ("ec2:CreateSubnet", "ec2:DeleteSubnet", "ec2:ModifySubnetAttribute", *_EC2_TAGS),
        UNSCOPED: ("ec2:DescribeSubnets", "ec2:DescribeNetworkInterfaces"),
    },
    "aws:ec2/internetGateway:InternetGateway": {
        EC2: (
            "ec2:CreateInternetGateway",
            "ec2:AttachInternetGateway",
            "ec2:DetachInternetGateway",
            "ec2:DeleteInternetGateway",
            *_EC2_TAGS,
        ),
        UNSCOPED: ("ec2:DescribeInternetGateways",),
    },
    "aws:ec2/routeTable:RouteTable": {
        EC2: (
            "ec2:CreateRouteTable",
            "ec2:DeleteRouteTable",
            "ec2:CreateRoute",
            "ec2:ReplaceRoute",
            "ec2:DeleteRoute",
            *_EC2_TAGS,
        ),
        UNSCOPED: ("ec2:DescribeRouteTables",),
    },
    "aws:ec2/routeTableAssociation:RouteTableAssociation": {
        EC2: ("ec2:AssociateRouteTable", "ec2:DisassociateRouteTable", "ec2:ReplaceRouteTableAssociation"),
        UNSCOPED: ("ec2:DescribeRouteTables",),
    },
    "aws:ec2/eip:Eip": {
        EC2: ("ec2:AllocateAddress", "ec2:ReleaseAddress", "ec2:DisassociateAddress", *_EC2_TAGS),
        UNSCOPED: ("ec2:DescribeAddresses", "ec2:DescribeAddressesAttribute"),
    },
    "aws:ec2/natGateway:NatGateway": {
        EC2: ("ec2:CreateNatGateway", "ec2:DeleteNatGateway", *_EC2_TAGS),
        UNSCOPED: ("ec2:DescribeNatGateways",),
    },
    "aws:ec2/securityGroup:SecurityGroup": {
        # Creating a group in a VPC also revokes the default allow-all egress rule.
        EC2: (
            "ec2:CreateSecurityGroup",
            "ec2:DeleteSecurityGroup",
            "ec2:AuthorizeSecurityGroupEgress",
            "ec2:RevokeSecurityGroupEgress",
            "ec2:AuthorizeSecurityGroupIngress",
            "ec2:RevokeSecurityGroupIngress",
            *_EC2_TAGS,
        ),
        UNSCOPED: ("ec2:DescribeSecurityGroups", "ec2:DescribeNetworkInterfaces"),
    },
    "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule": {
        EC2: (
            "ec2:AuthorizeSecurityGroupIngress",
            "ec2:RevokeSecurityGroupIngress",
            "ec2:ModifySecurityGroupRules",
            *_EC2_TAGS,
        ),
        UNSCOPED: ("ec2:DescribeSecurityGroupRules",),
    },
    "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule": {
        EC2: (
            "ec2:AuthorizeSecurityGroupEgress",
            "ec2:RevokeSecurityGroupEgress",
            "ec2:ModifySecurityGroupRules",
            *_EC2_TAGS,
        ),
        UNSCOPED: ("ec2:DescribeSecurityGroupRules",),
    },
    "aws:ec2/vpcEndpoint:VpcEndpoint": {
        EC2: ("ec2:CreateVpcEndpoint", "ec2:ModifyVpcEndpoint", "ec2:DeleteVpcEndpoints", *_EC2_TAGS),
        UNSCOPED: ("ec2:DescribeVpcEndpoints", "ec2:DescribePrefixLists", "ec2:DescribeVpcEndpointServices"),
    },
    "aws:ec2/flowLog:FlowLog": {
        # iam:PassRole for its role is granted per service, from the roles' trust policies.
        EC2: ("ec2:CreateFlowLogs", "ec2:DeleteFlowLogs", *_EC2_TAGS),
        UNSCOPED: ("ec2:DescribeFlowLogs",),
    },
    # --- identity ----------------------------------------------------------------------------
    "aws:iam/role:Role": {
        IAM_ROLE: (
            "iam:CreateRole",
            "iam:GetRole",
            "iam:UpdateRole",
            "iam:UpdateRoleDescription",
            "iam:UpdateAssumeRolePolicy",
            "iam:PutRolePermissionsBoundary",
            "iam:DeleteRolePermissionsBoundary",
            "iam:TagRole",
            "iam:UntagRole",
            "iam:ListRoleTags",
            # `destroy` removes what is attached before it deletes the role.
            "iam:ListRolePolicies",
            "iam:ListAttachedRolePolicies",
            "iam:ListInstanceProfilesForRole",
            "iam:DeleteRolePolicy",
            "iam:DetachRolePolicy",
            "iam:DeleteRole",
        ),
    },
    "aws:iam/rolePolicy:RolePolicy": {
        IAM_ROLE: ("iam:PutRolePolicy", "iam:GetRolePolicy", "iam:DeleteRolePolicy"),
    },
    "aws:iam/policy:Policy": {
        IAM_POLICY: (
            "iam:CreatePolicy",
            "iam:GetPolicy",
            "iam:GetPolicyVersion",
            "iam:ListPolicyVersions",
            "iam:CreatePolicyVersion",
            "iam:DeletePolicyVersion",
            "iam:ListPolicyTags",
            "iam:TagPolicy",
            "iam:UntagPolicy",
            "iam:DeletePolicy",
        ),
    },
    # --- encryption and secrets ---------------------------------------------------------------
    "aws:kms/key:Key": {
        UNSCOPED: ("kms:CreateKey",),
        KMS_KEY: (
            "kms:DescribeKey",
            "kms:GetKeyPolicy",
            "kms:PutKeyPolicy",
            "kms:GetKeyRotationStatus",
            "kms:EnableKeyRotation",
            "kms:DisableKeyRotation",
            "kms:UpdateKeyDescription",
            "kms:ListResourceTags",
            "kms:TagResource",
            "kms:UntagResource",
            "kms:ScheduleKeyDeletion",
        ),
    },
    "aws:kms/alias:Alias": {
        UNSCOPED: ("kms:ListAliases",),
        KMS_ALIAS: ("kms:CreateAlias", "kms:UpdateAlias", "kms:DeleteAlias"),
    },
    "aws:secretsmanager/secret:Secret": {
        SECRETS: (
            "secretsmanager:CreateSecret",
            "secretsmanager:DescribeSecret",
            "secretsmanager:GetResourcePolicy",
            "secretsmanager:UpdateSecret",
            "secretsmanager:TagResource",
            "secretsmanager:UntagResource",
            "secretsmanager:DeleteSecret",
        ),
    },
    "aws:secretsmanager/secretVersion:SecretVersion": {
        SECRETS: (
            "secretsmanager:PutSecretValue",
            "secretsmanager:GetSecretValue",
            "secretsmanager:DescribeSecret",
            "secretsmanager:ListSecretVersionIds",
            "secretsmanager:UpdateSecretVersionStage",
        ),
        # Secrets Manager encrypts and decrypts the value with the secret's key as the caller.
        KMS_VIA_SECRETS_MANAGER: ("kms:GenerateDataKey", "kms:Decrypt"),
    },
    # --- data --------------------------------------------------------------------------------
    "aws:s3/bucket:Bucket": {
        S3_BUCKET: (
            "s3:CreateBucket",
            "s3:ListBucket",
            "s3:GetBucketLocation",
            "s3:GetBucketTagging",
            "s3:PutBucketTagging",
            # The read (refresh) fetches every sub-configuration of the bucket.
            "s3:GetBucketAcl",
            "s3:GetBucketCORS",
            "s3:GetBucketWebsite",
            "s3:GetBucketVersioning",
            "s3:GetAccelerateConfiguration",
            "s3:GetBucketRequestPayment",
            "s3:GetBucketLogging",
            "s3:GetLifecycleConfiguration",
            "s3:GetReplicationConfiguration",
            "s3:GetEncryptionConfiguration",
            "s3:GetBucketObjectLockConfiguration",
            "s3:GetBucketPolicy",
            # force_destroy empties the bucket (every version) before deleting it.
            "s3:ListBucketVersions",
            "s3:DeleteBucket",
        ),
        S3_OBJECT: ("s3:DeleteObject", "s3:DeleteObjectVersion"),
    },
    # Deleting a sub-configuration is authorized as its Put action (e.g. DeletePublicAccessBlock).
    "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock": {
        S3_BUCKET: ("s3:PutBucketPublicAccessBlock", "s3:GetBucketPublicAccessBlock"),
    },
    "aws:s3/bucketOwnershipControls:BucketOwnershipControls": {
        S3_BUCKET: ("s3:PutBucketOwnershipControls", "s3:GetBucketOwnershipControls"),
    },
    "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration": {
        S3_BUCKET: ("s3:PutEncryptionConfiguration", "s3:GetEncryptionConfiguration"),
    },
    "aws:s3/bucketVersioning:BucketVersioning": {
        S3_BUCKET: ("s3:PutBucketVersioning", "s3:GetBucketVersioning"),
    },
    "aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration": {
        S3_BUCKET: ("s3:PutLifecycleConfiguration", "s3:GetLifecycleConfiguration"),
    },
    "aws:s3/bucketPolicy:BucketPolicy": {
        S3_BUCKET: ("s3:PutBucketPolicy", "s3:GetBucketPolicy", "s3:DeleteBucketPolicy"),
    },
    "aws:rds/subnetGroup:SubnetGroup": {
        RDS: (
            "rds:CreateDBSubnetGroup",
            "rds:ModifyDBSubnetGroup",
            "rds:DeleteDBSubnetGroup",
            "rds:DescribeDBSubnetGroups",
            *_RDS_TAGS,
        ),
    },
    "aws:rds/parameterGroup:ParameterGroup": {
        RDS: (
            "rds:CreateDBParameterGroup",
            "rds:ModifyDBParameterGroup",
            "rds:ResetDBParameterGroup",
            "rds:DeleteDBParameterGroup",
            "rds:DescribeDBParameterGroups",
            "rds:DescribeDBParameters",
            *_RDS_TAGS,
        ),
    },
    "aws:rds/instance:Instance": {
        RDS: (
            "rds:CreateDBInstance",
            "rds:ModifyDBInstance",
            "rds:DeleteDBInstance",
            "rds:DescribeDBInstances",
            FINAL_SNAPSHOT_ACTION,
            *_RDS_TAGS,
        ),
        UNSCOPED: ("rds:DescribeDBEngineVersions",),
        # RDS encrypts storage and Performance Insights through grants it makes as the caller.
        KMS_KEY: ("kms:DescribeKey",),
        KMS_GRANT: ("kms:CreateGrant",),
        # manage_master_user_password: RDS creates, rotates and deletes its master secret with the
        # caller's permissions, encrypted with the stack's secrets key ("Required permissions for
        # Secrets Manager integration", https://docs.aws.amazon.com/AmazonRDS/latest/UserGuide/rds-secrets-manager.html).
        RDS_MANAGED_SECRET: (
            "secretsmanager:CreateSecret",
            "secretsmanager:RotateSecret",
            "secretsmanager:TagResource",
            "secretsmanager:DeleteSecret",
        ),
        KMS_VIA_SECRETS_MANAGER: ("kms:Decrypt", "kms:GenerateDataKey"),
    },
    "aws:rds/snapshot:Snapshot": {
        # The pre-upgrade snapshot (infra/database.py); never deleted by the stack (retain_on_delete).
        RDS: ("rds:CreateDBSnapshot", "rds:DescribeDBSnapshots", *_RDS_TAGS),
    },
    "aws:dynamodb/table:Table": {
        DYNAMODB: (
            "dynamodb:CreateTable",
            "dynamodb:DescribeTable",
            "dynamodb:UpdateTable",
            "dynamodb:DeleteTable",
            "dynamodb:DescribeTimeToLive",
            "dynamodb:UpdateTimeToLive",
            "dynamodb:DescribeContinuousBackups",
            "dynamodb:UpdateContinuousBackups",
            "dynamodb:ListTagsOfResource",
            "dynamodb:TagResource",
            "dynamodb:UntagResource",
        ),
    },
    # --- compute -----------------------------------------------------------------------------
    "aws:ecr/repository:Repository": {
        ECR: (
            "ecr:CreateRepository",
            "ecr:DescribeRepositories",
            "ecr:PutImageTagMutability",
            "ecr:PutImageScanningConfiguration",
            "ecr:ListTagsForResource",
            "ecr:TagResource",
            "ecr:UntagResource",
            "ecr:BatchDeleteImage",  # force_delete (dev) deletes the pushed images first
            "ecr:DeleteRepository",
        ),
    },
    "aws:ecr/lifecyclePolicy:LifecyclePolicy": {
        ECR: ("ecr:PutLifecyclePolicy", "ecr:GetLifecyclePolicy", "ecr:DeleteLifecyclePolicy"),
    },
    "docker-build:index:Image": {
        # The push (the registry login is ecr/getAuthorizationToken, in INVOKE_ACTIONS).
        ECR: (
            "ecr:BatchCheckLayerAvailability",
            "ecr:InitiateLayerUpload",
            "ecr:UploadLayerPart",
            "ecr:CompleteLayerUpload",
            "ecr:PutImage",
            "ecr:BatchGetImage",
            "ecr:GetDownloadUrlForLayer",
        ),
    },
    "aws:ecs/cluster:Cluster": {
        ECS: (
            "ecs:CreateCluster",
            "ecs:DescribeClusters",
            "ecs:UpdateCluster",
            "ecs:DeleteCluster",
            *_ECS_TAGS,
        ),
    },
    "aws:ecs/taskDefinition:TaskDefinition": {
        ECS: ("ecs:RegisterTaskDefinition", *_ECS_TAGS),
        UNSCOPED: ("ecs:DescribeTaskDefinition", "ecs:DeregisterTaskDefinition"),
    },
    "aws:ecs/service:Service": {
        ECS: (
            "ecs:CreateService",
            "ecs:UpdateService",
            "ecs:DeleteService",
            "ecs:DescribeServices",
            *_ECS_TAGS,
        ),
    },
    "aws:appautoscaling/target:Target": {
        APP_AUTOSCALING: (
            "application-autoscaling:RegisterScalableTarget",
            "application-autoscaling:DeregisterScalableTarget",
            "application-autoscaling:ListTagsForResource",
            "application-autoscaling:TagResource",
            "application-autoscaling:UntagResource",
        ),
        UNSCOPED: ("application-autoscaling:DescribeScalableTargets",),
    },
    "aws:appautoscaling/policy:Policy": {
        APP_AUTOSCALING: (
            "application-autoscaling:PutScalingPolicy",
            "application-autoscaling:DeleteScalingPolicy",
        ),
        UNSCOPED: ("application-autoscaling:DescribeScalingPolicies",),
        # Target tracking creates and deletes its CloudWatch alarms when the policy changes.
        ALARM: ("cloudwatch:PutMetricAlarm", "cloudwatch:DeleteAlarms"),
    },
    "aws:scheduler/schedule:Schedule": {
        SCHEDULER: (
            "scheduler:CreateSchedule",
            "scheduler:GetSchedule",
            "scheduler:UpdateSchedule",
            "scheduler:DeleteSchedule",
        ),
    },
    # The deploy-time migration runner (infra/compute/ecs_migration.py); iam:PassRole for its role
    # is granted per service, from the role's trust policy.
    "aws:lambda/function:Function": {
        LAMBDA: (
            "lambda:CreateFunction",
            "lambda:GetFunction",
            "lambda:GetFunctionConfiguration",
            "lambda:GetFunctionCodeSigningConfig",
            "lambda:GetFunctionConcurrency",
            "lambda:GetFunctionRecursionConfig",
            "lambda:GetRuntimeManagementConfig",
            "lambda:ListVersionsByFunction",
            "lambda:UpdateFunctionCode",
            "lambda:UpdateFunctionConfiguration",
            "lambda:ListTags",
            "lambda:TagResource",
            "lambda:UntagResource",
            "lambda:DeleteFunction",
        ),
    },
    # Create (and a replacement) invokes; read and delete call nothing under CREATE_ONLY.
    "aws:lambda/invocation:Invocation": {
        LAMBDA: ("lambda:InvokeFunction",),
    },
    # --- edge --------------------------------------------------------------------------------
    "aws:lb/loadBalancer:LoadBalancer": {
        ELB: (
            "elasticloadbalancing:CreateLoadBalancer",
            "elasticloadbalancing:ModifyLoadBalancerAttributes",
            "elasticloadbalancing:SetSecurityGroups",
            "elasticloadbalancing:SetSubnets",
            "elasticloadbalancing:SetIpAddressType",
            "elasticloadbalancing:DeleteLoadBalancer",
            *_ELB_TAGS,
        ),
        UNSCOPED: (
            "elasticloadbalancing:DescribeLoadBalancers",
            "elasticloadbalancing:DescribeLoadBalancerAttributes",
            "elasticloadbalancing:DescribeTags",
        ),
    },
    "aws:lb/targetGroup:TargetGroup": {
        ELB: (
            "elasticloadbalancing:CreateTargetGroup",
            "elasticloadbalancing:ModifyTargetGroup",
            "elasticloadbalancing:ModifyTargetGroupAttributes",
            "elasticloadbalancing:DeleteTargetGroup",
            *_ELB_TAGS,
        ),
        UNSCOPED: (
            "elasticloadbalancing:DescribeTargetGroups",
            "elasticloadbalancing:DescribeTargetGroupAttributes",
            "elasticloadbalancing:DescribeTags",
        ),
    },
    "aws:lb/listener:Listener": {
        ELB: (
            "elasticloadbalancing:CreateListener",
            "elasticloadbalancing:ModifyListener",
            "elasticloadbalancing:ModifyListenerAttributes",
            "elasticloadbalancing:DeleteListener",
            *_ELB_TAGS,
        ),
        UNSCOPED: (
            "elasticloadbalancing:DescribeListeners",
            "elasticloadbalancing:DescribeListenerAttributes",
            "elasticloadbalancing:DescribeTags",
        ),
    },
    # A team stack's host rules on its platform stack's shared listeners (tenancy.mode team).
    "aws:lb/listenerRule:ListenerRule": {
        ELB: (
            "elasticloadbalancing:CreateRule",
            "elasticloadbalancing:ModifyRule",
            "elasticloadbalancing:DeleteRule",
            *_ELB_TAGS,
        ),
        UNSCOPED: ("elasticloadbalancing:DescribeRules", "elasticloadbalancing:DescribeTags"),
    },
    "aws:acm/certificate:Certificate": {
        UNSCOPED: ("acm:RequestCertificate",),
        ACM: (
            "acm:DescribeCertificate",
            "acm:UpdateCertificateOptions",
            "acm:ListTagsForCertificate",
            "acm:AddTagsToCertificate",
            "acm:RemoveTagsFromCertificate",
            "acm:DeleteCertificate",
        ),
    },
    "aws:acm/certificateValidation:CertificateValidation": {ACM: ("acm:DescribeCertificate",)},
    "aws:route53/record:Record": {
        ROUTE53_ZONE: ("route53:GetHostedZone", "route53:ListResourceRecordSets"),
        ROUTE53_RECORDS: ("route53:ChangeResourceRecordSets",),
        ROUTE53_CHANGE: ("route53:GetChange",),
    },
    # --- monitoring --------------------------------------------------------------------------
    "aws:cloudwatch/logGroup:LogGroup": {
        LOG_GROUP: (
            "logs:CreateLogGroup",
            "logs:PutRetentionPolicy",
            "logs:DeleteRetentionPolicy",
            "logs:ListTagsForResource",
            "logs:TagResource",
            "logs:UntagResource",
            "logs:DeleteLogGroup",
        ),
        UNSCOPED: ("logs:DescribeLogGroups",),
    },
    "aws:cloudwatch/metricAlarm:MetricAlarm": {
        ALARM: (
            "cloudwatch:PutMetricAlarm",
            "cloudwatch:DescribeAlarms",
            "cloudwatch:DeleteAlarms",
            "cloudwatch:ListTagsForResource",
            "cloudwatch:TagResource",
            "cloudwatch:UntagResource",
        ),
    },
    "aws:cloudwatch/dashboard:Dashboard": {
        DASHBOARD: ("cloudwatch:PutDashboard", "cloudwatch:GetDashboard", "cloudwatch:DeleteDashboards"),
    },
    "aws:cloudwatch/logMetricFilter:LogMetricFilter": {
        LOG_GROUP: ("logs:PutMetricFilter", "logs:DeleteMetricFilter", "logs:DescribeMetricFilters"),
    },
    # --- edge firewall -----------------------------------------------------------------------
    "aws:wafv2/webAcl:WebAcl": {
        WAF: (
            "wafv2:CreateWebACL",
            "wafv2:GetWebACL",
            "wafv2:UpdateWebACL",
            "wafv2:DeleteWebACL",
            "wafv2:ListTagsForResource",
            "wafv2:TagResource",
            "wafv2:UntagResource",
        ),
    },
    "aws:wafv2/webAclAssociation:WebAclAssociation": {
        WAF: (
            "wafv2:AssociateWebACL",
            "wafv2:DisassociateWebACL",
            "wafv2:GetWebACLForResource",
        ),
        # The ALB side of the association; IAM has no resource-level permission for it.
        UNSCOPED: ("elasticloadbalancing:SetWebAcl",),
    },
    "aws:wafv2/webAclLoggingConfiguration:WebAclLoggingConfiguration": {
        WAF: (
            "wafv2:PutLoggingConfiguration",
            "wafv2:GetLoggingConfiguration",
            "wafv2:DeleteLoggingConfiguration",
        ),
        # WAF delivers to CloudWatch Logs through a log delivery and the group's resource policy.
        UNSCOPED: ("logs:CreateLogDelivery", "logs:DeleteLogDelivery", "logs:DescribeResourcePolicies"),
        LOG_GROUP: ("logs:PutResourcePolicy",),
    },
    "aws:sns/topic:Topic": {
        SNS: (
            "sns:CreateTopic",
            "sns:GetTopicAttributes",
            "sns:SetTopicAttributes",
            "sns:ListTagsForResource",
            "sns:TagResource",
            "sns:UntagResource",
            "sns:DeleteTopic",
        ),
    },
    "aws:sns/topicSubscription:TopicSubscription": {
        SNS: ("sns:Subscribe", "sns:ListSubscriptionsByTopic"),
        UNSCOPED: ("sns:Unsubscribe", "sns:GetSubscriptionAttributes", "sns:SetSubscriptionAttributes"),
    },
}

# Data sources the program invokes: token -> actions (all account-wide reads). getPartition and
# getRegion answer from the provider's configuration, and elb/getServiceAccount from a table built
# into the provider: no API call, no permission.
INVOKE_ACTIONS: Mapping[str, tuple[str, ...]] = {
    "aws:index/getCallerIdentity:getCallerIdentity": ("sts:GetCallerIdentity",),
    "aws:index/getAvailabilityZones:getAvailabilityZones": ("ec2:DescribeAvailabilityZones",),
    "aws:ecr/getAuthorizationToken:getAuthorizationToken": ("ecr:GetAuthorizationToken",),
    "aws:index/getPartition:getPartition": (),
    "aws:index/getRegion:getRegion": (),
    "aws:elb/getServiceAccount:getServiceAccount": (),
}

# Which resource type makes the program call each invoke (the graph records resources, not
# invokes): the network's availability zones come with its VPC, the registry login with the image.
INVOKED_WITH: Mapping[str, str] = {
    "aws:index/getCallerIdentity:getCallerIdentity": "pulumi:providers:aws",
    "aws:index/getAvailabilityZones:getAvailabilityZones": "aws:ec2/vpc:Vpc",
    "aws:ecr/getAuthorizationToken:getAuthorizationToken": "docker-build:index:Image",
    "aws:index/getPartition:getPartition": "pulumi:providers:aws",
    "aws:index/getRegion:getRegion": "pulumi:providers:aws",
    "aws:elb/getServiceAccount:getServiceAccount": "aws:lb/loadBalancer:LoadBalancer",
}

# Service-linked roles AWS creates on first use, in the caller's name (iam:CreateServiceLinkedRole):
# type token -> the service (iam:AWSServiceName). The kit autoscales ECS services only.
SERVICE_LINKED_ROLES: Mapping[str, str] = {
    "aws:ecs/cluster:Cluster": "ecs.amazonaws.com",
    "aws:ecs/service:Service": "ecs.amazonaws.com",
    "aws:lb/loadBalancer:LoadBalancer": "elasticloadbalancing.amazonaws.com",
    "aws:lb/targetGroup:TargetGroup": "elasticloadbalancing.amazonaws.com",
    "aws:rds/instance:Instance": "rds.amazonaws.com",
    "aws:appautoscaling/target:Target": "ecs.application-autoscaling.amazonaws.com",
}
