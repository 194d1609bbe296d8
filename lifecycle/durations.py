"""Parsing of the human-sized values day-2 commands take: ages ("90d", "24h") and ratios ("2%").

Kept free of any MLflow import so the CLI can validate its arguments before it talks to anyone:
bad input gets one clear error naming the flag, before anything is listed or deleted.
"""

from __future__ import annotations

import re
from datetime import timedelta

_DURATION = re.compile(r"^(?P<value>\d+(?:\.\d+)?)(?P<unit>[smhdw])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


class InvalidValue(ValueError):
    """A user-supplied value that cannot be parsed; the message names the flag and a valid example."""


def parse_duration(text: str, flag: str = "--older-than") -> timedelta:
    """'90d' -> 90 days. Units: s, m, h, d, w. One unit only, so '1d12h' is written '36h'."""
    match = _DURATION.match(text.strip().lower())
    if not match:
        raise InvalidValue(
            f"{flag} {text!r} is not a duration: use a number and one unit (s, m, h, d, w), e.g. 90d or 24h"
        )
    seconds = float(match["value"]) * _UNIT_SECONDS[match["unit"]]
    if seconds <= 0:
        raise InvalidValue(f"{flag} {text!r} must be longer than zero, e.g. 90d")
    return timedelta(seconds=seconds)


def mlflow_gc_duration(age: timedelta) -> str:
    """The same age in the syntax `mlflow gc --older-than` accepts (whole seconds: '2592000s')."""
    return f"{int(age.total_seconds())}s"


def parse_ratio(text: str, flag: str = "--max-regression") -> float:
    """'2%' -> 0.02; '0.02' -> 0.02. A ratio of the champion's value, never negative."""
    raw = text.strip()
    try:
        value = float(raw[:-1]) / 100 if raw.endswith("%") else float(raw)
    except ValueError:
        raise InvalidValue(f"{flag} {text!r} is not a ratio: write e.g. 2% or 0.02") from None
    if value < 0:
        raise InvalidValue(f"{flag} {text!r} must not be negative, e.g. 2%")
    return value


def parse_statuses(text: str, allowed: tuple[str, ...], flag: str = "--status") -> tuple[str, ...]:
    """'failed,killed' -> ('FAILED', 'KILLED'), refusing anything outside `allowed`."""
    statuses = tuple(dict.fromkeys(s.strip().upper() for s in text.split(",") if s.strip()))
    unknown = [s for s in statuses if s not in allowed]
    if not statuses or unknown:
        raise InvalidValue(
            f"{flag} {text!r}: choose from {','.join(allowed)} (comma-separated), e.g. FAILED,KILLED"
        )
    return statuses
