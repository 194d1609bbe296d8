"""Refuse a webhook whose URL points inside the network (SSRF) before MLflow stores it.

A webhook makes the server send HTTP requests to a URL a user chose: pointed at the instance
metadata service (169.254.169.254: the task role's credentials), loopback, or a private address,
it turns the tracking server into a proxy into the VPC. MLflow 3.17 checks the URL in its store,
but only after parsing the events (an unknown event answered 500), and the check is switched off
by one environment variable (`MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS`). The kit refuses such a URL
outright, whatever MLflow is configured to allow; delivery keeps MLflow's own connect-time check
against DNS rebinding.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from urllib.parse import urlsplit

Resolver = Callable[[str], list[str]]
_SCHEMES = ("https", "http")


def resolve(host: str) -> list[str]:
    """Every address `host` resolves to (empty when it does not resolve)."""
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return []
    return [str(info[4][0]) for info in infos]


def _is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone id
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def webhook_url_problem(url: object, resolver: Resolver = resolve) -> str | None:
    """Why the server must not call `url`, or None. A name that does not resolve is left to
    MLflow (it refuses it too); a name that resolves must resolve to public addresses only."""
    if not isinstance(url, str) or not url.strip():
        return "the webhook URL must be a non-empty string"
    try:
        parts = urlsplit(url.strip())
        host = parts.hostname
    except ValueError:
        return "the webhook URL is not a valid URL"
    if parts.scheme.lower() not in _SCHEMES:
        return "the webhook URL must be an https:// URL"
    if not host:
        return "the webhook URL must name a host"
    try:
        addresses = [str(ipaddress.ip_address(host))]
    except ValueError:
        addresses = resolver(host)
    if any(not _is_public(address) for address in addresses):
        return (
            "the webhook URL points to a loopback, private, link-local or metadata address; "
            "webhooks may only call public addresses"
        )
    return None


def webhook_events_problem(events: object) -> str | None:
    """Why `events` is not a list of known {entity, action} pairs (MLflow answered 500), or None."""
    from mlflow.protos.webhooks_pb2 import WebhookAction, WebhookEntity

    if events is None:
        return None
    if not isinstance(events, list):
        return "events must be a list of {entity, action} objects"
    for event in events:
        if not isinstance(event, dict):
            return "each event must be an object with an entity and an action"
        for field, enum in (("entity", WebhookEntity), ("action", WebhookAction)):
            value = event.get(field)
            names = [name for name in enum.keys() if not name.endswith("_UNSPECIFIED")]  # noqa: SIM118 - protobuf enum
            number = isinstance(value, int) and not isinstance(value, bool)
            known = value in names or (number and value != 0 and value in enum.values())
            if not known:
                return f"event {field} {value!r} is not one of: {', '.join(names)}"
    return None
