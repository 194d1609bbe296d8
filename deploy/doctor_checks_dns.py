"""Doctor checks 3 and 4: the Route 53 hosted zone, its delegation, and an existing certificate.

The delegation check asks DNS for the zone's NS records and compares them with the name servers
Route 53 assigned to the zone (its delegation set). If the registrar or parent zone points
elsewhere, ACM's DNS validation and the alias record are invisible to the world and `pulumi up`
waits on a certificate that never issues. The standard library has no NS lookup, so
`query_name_servers` is a minimal DNS client (RFC 1035, one UDP question to the system resolver);
the check takes any resolver function, and "cannot resolve" is a warning with the `dig` command
to check by hand.
"""

from __future__ import annotations

import secrets
import socket
import struct
from pathlib import Path

from deploy.doctor import CheckResult, DoctorContext, call, fail, ok, skip, warn

DNS_PORT = 53
TYPE_NS = 2
CLASS_IN = 1
RCODE_NXDOMAIN = 3
FLAG_RECURSION_DESIRED = 0x0100
FLAG_TRUNCATED = 0x0200
MAX_COMPRESSION_HOPS = 64


class DnsLookupError(Exception):
    """The NS question could not be answered (no resolver, no network, malformed answer)."""


def system_nameserver(resolv_conf: Path = Path("/etc/resolv.conf")) -> str:
    try:
        for line in resolv_conf.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 2 and parts[0] == "nameserver":
                return parts[1]
    except OSError as exc:
        raise DnsLookupError(f"cannot read {resolv_conf}: {exc}") from exc
    raise DnsLookupError(f"no nameserver in {resolv_conf}")


def _encode_name(name: str) -> bytes:
    labels = [label.encode("idna") for label in name.rstrip(".").split(".") if label]
    return b"".join(bytes([len(label)]) + label for label in labels) + b"\x00"


def _read_name(message: bytes, offset: int) -> tuple[str, int]:
    """A (possibly compressed) domain name at `offset`; returns it and the offset after it."""
    labels: list[str] = []
    end: int | None = None
    for _ in range(MAX_COMPRESSION_HOPS):
        if offset >= len(message):
            raise DnsLookupError("truncated name in the DNS answer")
        length = message[offset]
        if length & 0xC0 == 0xC0:  # a pointer to an earlier name (RFC 1035 4.1.4)
            if end is None:
                end = offset + 2
            offset = struct.unpack_from("!H", message, offset)[0] & 0x3FFF
            continue
        if length == 0:
            return ".".join(labels).lower(), end if end is not None else offset + 1
        labels.append(message[offset + 1 : offset + 1 + length].decode("ascii", "replace"))
        offset += 1 + length
    raise DnsLookupError("compression loop in the DNS answer")


def parse_ns_answer(message: bytes, query_id: int) -> list[str]:
    """The NS host names in a DNS response's answer section ([] for NXDOMAIN or no answer)."""
    if len(message) < 12:
        raise DnsLookupError("short DNS answer")
    answer_id, flags, questions, answers = struct.unpack_from("!HHHH", message, 0)
    if answer_id != query_id:
        raise DnsLookupError("DNS answer to another question")
    if flags & FLAG_TRUNCATED:
        raise DnsLookupError("DNS answer truncated (needs TCP)")
    rcode = flags & 0x000F
    if rcode == RCODE_NXDOMAIN:
        return []
    if rcode != 0:
        raise DnsLookupError(f"DNS error code {rcode}")
    offset = 12
    for _ in range(questions):
        offset = _read_name(message, offset)[1] + 4  # QTYPE, QCLASS
    hosts: list[str] = []
    for _ in range(answers):
        offset = _read_name(message, offset)[1]
        record_type, _class, _ttl, length = struct.unpack_from("!HHIH", message, offset)
        offset += 10
        if record_type == TYPE_NS:
            hosts.append(_read_name(message, offset)[0])
        offset += length
    return hosts


def query_name_servers(
    zone: str, nameserver: str | None = None, *, port: int = DNS_PORT, timeout: float = 3.0
) -> list[str]:
    """NS records of `zone` as the resolver (default: the system's) sees them."""
    server = nameserver or system_nameserver()
    query_id = secrets.randbelow(0x10000)
    header = struct.pack("!HHHHHH", query_id, FLAG_RECURSION_DESIRED, 1, 0, 0, 0)
    packet = header + _encode_name(zone) + struct.pack("!HH", TYPE_NS, CLASS_IN)
    family = socket.AF_INET6 if ":" in server else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.settimeout(timeout)
            sock.sendto(packet, (server, port))
            message, _ = sock.recvfrom(4096)
    except OSError as exc:
        raise DnsLookupError(f"no answer from the resolver {server}: {exc}") from exc
    return parse_ns_answer(message, query_id)


# -- the checks ----------------------------------------------------------------------------------


def _hosted_zone(ctx: DoctorContext) -> dict | None:
    """get_hosted_zone's answer, asked once per run; None if the zone does not exist."""
    if "hosted_zone" not in ctx.memo:
        route53 = ctx.client("route53")
        try:
            ctx.memo["hosted_zone"] = call(route53, "get_hosted_zone", Id=ctx.settings.domain.hosted_zone_id)
        except route53.exceptions.NoSuchHostedZone:
            ctx.memo["hosted_zone"] = None
    return ctx.memo["hosted_zone"]


def _zone_name(zone: dict) -> str:
    return str(zone["HostedZone"]["Name"]).rstrip(".").lower()


def check_hosted_zone(ctx: DoctorContext) -> CheckResult:
    check = "hosted-zone"
    domain = ctx.settings.domain
    if domain.hosted_zone_id is None:
        return skip(check, "domain.hostedZoneId is not set (the stack creates no DNS records)")
    zone = _hosted_zone(ctx)
    if zone is None:
        return fail(
            check,
            f"hosted zone {domain.hosted_zone_id} does not exist in this account",
            "set mlflow-stack:domain.hostedZoneId to your public zone's id "
            "(aws route53 list-hosted-zones --query 'HostedZones[].[Id,Name]')",
        )
    name = _zone_name(zone)
    if zone["HostedZone"].get("Config", {}).get("PrivateZone"):
        return fail(
            check,
            f"hosted zone {domain.hosted_zone_id} ({name}) is private; ACM cannot validate through it "
            "and clients outside the VPC cannot resolve the name",
            "use the id of the public hosted zone for the domain",
        )
    if not (domain.name == name or domain.name.endswith(f".{name}")):
        return fail(
            check,
            f"domain.name {domain.name} is not inside hosted zone {domain.hosted_zone_id} ({name})",
            f"use the hosted zone of {domain.name}'s parent domain, or a domain.name under {name}",
        )
    return ok(check, f"{domain.hosted_zone_id} is the public zone {name}, which holds {domain.name}")


def check_delegation(ctx: DoctorContext) -> CheckResult:
    check = "dns-delegation"
    if ctx.settings.domain.hosted_zone_id is None:
        return skip(check, "domain.hostedZoneId is not set")
    zone = _hosted_zone(ctx)
    if zone is None or zone["HostedZone"].get("Config", {}).get("PrivateZone"):
        return skip(check, "needs an existing public hosted zone (see hosted-zone)")
    name = _zone_name(zone)
    assigned = sorted(
        host.rstrip(".").lower() for host in zone.get("DelegationSet", {}).get("NameServers", [])
    )
    by_hand = f"run `dig NS {name} +short`; it must list {', '.join(assigned)}"
    if not assigned:
        return warn(check, f"Route 53 reports no delegation set for {name}", by_hand)
    try:
        published = sorted(host.rstrip(".").lower() for host in ctx.env.resolve_name_servers(name))
    except DnsLookupError as exc:
        return warn(check, f"could not look up the NS records of {name}: {exc}", by_hand)
    if published == assigned:
        return ok(check, f"{name} is delegated to its Route 53 name servers ({', '.join(assigned)})")
    seen = ", ".join(published) if published else "no NS records"
    return fail(
        check,
        f"DNS answers {seen} for {name}, but the zone's Route 53 name servers are {', '.join(assigned)}; "
        "certificate validation and the alias record would not be visible",
        f"set the NS records of {name} at its registrar or parent zone to {', '.join(assigned)}",
    )


def covers(pattern: str, host: str) -> bool:
    """Whether a certificate name covers `host`: exactly, or as a wildcard for one label."""
    pattern = pattern.rstrip(".").lower()
    if pattern == host:
        return True
    return pattern.startswith("*.") and "." in host and host.split(".", 1)[1] == pattern[2:]


def check_certificate(ctx: DoctorContext) -> CheckResult:
    check = "certificate"
    domain = ctx.settings.domain
    arn = domain.certificate_arn
    if arn is None:
        return skip(check, "domain.certificateArn is not set; the stack requests a DNS-validated certificate")
    _, _, _, cert_region, cert_account, _ = arn.split(":", 5)
    if cert_region != ctx.region:
        return fail(
            check,
            f"{arn} is in {cert_region}, the stack in {ctx.region}",
            "use an ACM certificate from the stack's region (a load balancer uses its own region's ACM)",
        )
    if ctx.account_id and cert_account != ctx.account_id:
        return fail(
            check,
            f"{arn} belongs to account {cert_account}, the credentials to {ctx.account_id}",
            "use a certificate from the deployment account (a load balancer cannot use another account's)",
        )
    acm = ctx.client("acm", cert_region)
    try:
        certificate = call(acm, "describe_certificate", CertificateArn=arn)["Certificate"]
    except acm.exceptions.ResourceNotFoundException:
        return fail(
            check, f"{arn} does not exist", "set domain.certificateArn to an existing ACM certificate"
        )
    status = certificate.get("Status")
    if status != "ISSUED":
        return fail(
            check,
            f"{arn} is {status}, not ISSUED",
            "complete its validation (PENDING_VALIDATION) or issue a new certificate for the name",
        )
    names = [certificate.get("DomainName", ""), *certificate.get("SubjectAlternativeNames", [])]
    names = list(dict.fromkeys(name for name in names if name))
    if not any(covers(name, domain.name) for name in names):
        return fail(
            check,
            f"{arn} covers {', '.join(names)}, not {domain.name}",
            f"use a certificate for {domain.name} (or *.{domain.name.split('.', 1)[1]})",
        )
    return ok(check, f"{arn} is ISSUED in {cert_region} and covers {domain.name}")
