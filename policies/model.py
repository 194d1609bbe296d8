"""The plain data the rules look at, independent of how it arrived.

Rules are pure functions over `Resource` values: the pack builds them from the engine's
`ResourceValidationArgs` / `PolicyResource`, tests build them by hand. Properties keep the
engine's camelCase names and Mapping/Sequence types; during a real `pulumi preview` they are
pulumi_policy's unknown-checking proxies, so touching an unknown value raises the SDK's own
`UnknownValueError` and the engine reports the policy as "can't run during preview".
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pulumi_policy.proxy import UnknownValueError

Environment = Literal["dev", "staging", "prod"]
ENVIRONMENTS: tuple[str, ...] = ("dev", "staging", "prod")


@dataclass(frozen=True)
class Provider:
    """The provider resource a resource is registered with (carries the aws `defaultTags`)."""

    type: str
    name: str
    urn: str
    props: Mapping[str, Any]


@dataclass(frozen=True)
class Resource:
    type: str
    name: str
    urn: str
    props: Mapping[str, Any]
    provider: Provider | None = None
    parent: str | None = None
    dependencies: tuple[str, ...] = ()
    # property name -> URNs the property's value came from (how the engine links companions to
    # their bucket even while the bucket's name is still unknown).
    property_dependencies: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class Violation:
    message: str
    urn: str | None = None


@dataclass(frozen=True)
class Context:
    """What a rule may know besides the resources: its configuration and the stack's environment."""

    config: Mapping[str, Any]
    environment: str | None = None

    @property
    def is_prod(self) -> bool:
        return self.environment == "prod"


def as_list(value: Any) -> list[Any]:
    """A property that AWS models as "one or many" (IAM Action/Resource, single nested blocks)."""
    if value is None:
        return []
    if isinstance(value, str | bytes | Mapping):
        return [value]
    if isinstance(value, Sequence):
        return list(value)
    return [value]


def parse_json(value: Any) -> Any:
    """IAM documents and container definitions arrive as JSON strings (or already parsed)."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return None
    return value


def truthy(value: Any) -> bool:
    """AWS booleans sometimes travel as strings ("true") once serialized."""
    if isinstance(value, str):
        return value.strip().lower() == "true"
    return bool(value)


def known(props: Mapping[str, Any], key: str) -> Any:
    """A property used only to *match* resources: unknown during preview counts as absent.

    (Values a rule judges are read directly, so an unknown one makes the engine report that the
    policy cannot run during preview instead of guessing.)
    """
    try:
        return props.get(key)
    except UnknownValueError:
        return None


def identifiers(resource: Resource) -> set[str]:
    """Every value another resource might use to point at this one (id, ARN, name, bucket)."""
    found = {resource.urn}
    for key in ("id", "arn", "name", "bucket", "identifier"):
        value = known(resource.props, key)
        if isinstance(value, str) and value:
            found.add(value)
    return found


def references(source: Resource, prop: str, target: Resource) -> bool:
    """Whether `source.props[prop]` points at `target`.

    When the engine sent property dependencies for `prop` they are the answer (they hold even
    during preview, when IDs are unknown); otherwise compare values, which is what works on
    resolved state and under mocks.
    """
    if prop in source.property_dependencies:
        return target.urn in source.property_dependencies[prop]
    return refers(known(source.props, prop), target)


def refers(values: Any, target: Resource) -> bool:
    """Whether a value (or any of a list of values) is one of `target`'s identifiers."""
    wanted = identifiers(target)
    return any(
        isinstance(value, str) and (value in wanted or _arn_names(value, wanted))
        for value in known_items(values)
    )


def known_items(values: Any) -> list[Any]:
    """The known elements of a one-or-many value (unknown list elements skipped)."""
    items = as_list(values)
    if not isinstance(values, Sequence) or isinstance(values, str | bytes):
        return items
    found = []
    for index in range(len(values)):
        try:
            found.append(values[index])
        except UnknownValueError:
            continue
    return found


_BUCKET_ARN = re.compile(r"arn:aws[a-z-]*:s3:::(?P<bucket>[^/]+)")


def _arn_names(value: str, wanted: set[str]) -> bool:
    # A bucket ARN ("arn:<partition>:s3:::name") refers to the bucket called "name".
    match = _BUCKET_ARN.fullmatch(value)
    return match is not None and match["bucket"] in wanted


def of_type(resources: Iterable[Resource], *types: str) -> list[Resource]:
    return [r for r in resources if r.type in types]


def first_block(value: Any) -> Mapping[str, Any]:
    """A nested block: an object in pulumi-aws 7, a single-element list in older state."""
    items = as_list(value)
    return items[0] if items and isinstance(items[0], Mapping) else {}


def shown(value: Any) -> str:
    """Numbers arrive as floats over the wire (protobuf Struct); show 7.0 as 7."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
