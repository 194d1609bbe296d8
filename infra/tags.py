"""Tagging: one explicit AWS provider whose default tags reach every taggable resource.

An explicit provider (instead of the ambient one) is passed down to every component so that the
tags, the region and the provider itself are visible in the resource graph, also under mocks.
"""

from __future__ import annotations

import pulumi
import pulumi_aws as aws

from infra.settings import Settings

# The tags every taggable resource must carry (the policy pack and tests check these keys).
REQUIRED_TAG_KEYS: tuple[str, ...] = ("team", "environment", "owner", "cost-center")


def aws_provider(settings: Settings) -> aws.Provider:
    return aws.Provider(
        f"{settings.name_prefix}-aws",
        region=settings.region,
        default_tags=aws.ProviderDefaultTagsArgs(tags=settings.default_tags),
    )


def name_tag(name: str) -> dict[str, str]:
    """A `Name` tag: the EC2 and RDS consoles show it as the resource's name."""
    return {"Name": name}


def child_opts(parent: pulumi.Resource, **options: object) -> pulumi.ResourceOptions:
    """Options for a component's child: parented to it (the provider is inherited from the parent)."""
    return pulumi.ResourceOptions(parent=parent, **options)  # type: ignore[arg-type]
