"""Creation order the engine can see: a value that resolves only once its prerequisites exist.

The engine orders creation by dependencies, and a dependency exists only where an input came from
another resource's Output (or `depends_on`). Some AWS rules need more than that: a task definition
that names a secret ARN must wait for the secret to *have a value* (its SecretVersion), and one that
names a role must wait for the role's *policy*, or the first task fails to start. Handing the
consumer the ARN through `ready_when(arn, version.id)` makes the rule part of the graph, where the
offline tests check it, instead of a `depends_on` every consumer has to remember.
"""

from __future__ import annotations

from typing import Any, TypeVar

import pulumi

T = TypeVar("T")


def ready_when(value: pulumi.Input[T], *prerequisites: pulumi.Input[Any]) -> pulumi.Output[T]:
    """`value`, resolved after every prerequisite and carrying them as dependencies."""
    return pulumi.Output.all(value, *prerequisites).apply(lambda values: values[0])
