"""``EMAIL_ENGINE_LOG_FORMAT=json``: one JSON object per log line, for the CLI and the webhook app.

Each line has ``time`` (UTC, ISO 8601), ``level``, ``logger`` and ``message`` (and ``exception``
when there is one). Messages are scrubbed before they are written: email addresses, IP addresses
and token-like values (``token=...``, ``Bearer ...``, ``password=...``, URLs' user info) are
replaced, so a line holds neither a secret nor an address.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import re
import sys
from collections.abc import Mapping
from datetime import datetime, timezone

FORMAT_ENV = "EMAIL_ENGINE_LOG_FORMAT"
FORMATS = ("text", "json")

_SCRUB = (
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+"), r"\1 [secret]"),
    (re.compile(r"(?i)\b([\w-]*(?:token|secret|password|passwd|api[_-]?key|signature)[\w-]*)(\s*[=:]\s*)[^\s&,;\"']+"),
     r"\1\2[secret]"),
    (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s:@]+:[^/\s@]+@"), r"\1[secret]@"),
    (re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+"), "[address]"),
    (re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}\b"), "[ip]"),
)
# Candidates for IPv6 addresses; only those ipaddress takes are replaced (a time like 12:30:00 is not one).
_IPV6 = re.compile(r"(?i)(?<![\w:])[0-9a-f:]*:[0-9a-f:]*:[0-9a-f:.]*(?![\w:])")


def _ipv6(match: re.Match) -> str:
    try:
        ipaddress.IPv6Address(match.group(0).split("%", 1)[0])
    except ValueError:
        return match.group(0)
    return "[ip]"


def scrub(text: str) -> str:
    """``text`` with secrets and addresses replaced."""
    for pattern, replacement in _SCRUB:
        text = pattern.sub(replacement, text)
    return _IPV6.sub(_ipv6, text)


class JsonFormatter(logging.Formatter):
    """One scrubbed JSON object per record."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": scrub(record.getMessage()),
        }
        if record.exc_info:
            line["exception"] = scrub(self.formatException(record.exc_info))
        return json.dumps(line, ensure_ascii=False)


def log_format(environ: Mapping[str, str]) -> str:
    """The format the environment asks for; an unknown value is refused (ValueError)."""
    value = (environ.get(FORMAT_ENV) or "text").strip().lower()
    if value not in FORMATS:
        raise ValueError(f"{FORMAT_ENV} must be one of {', '.join(FORMATS)}, not {value!r}")
    return value


def configure(environ: Mapping[str, str], level: int = logging.INFO) -> str:
    """Install the root handler on stderr for the format the environment asks for (json: every
    logger that propagates to the root writes JSON lines). Returns the format."""
    chosen = log_format(environ)
    if chosen == "json":
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter())
        root = logging.getLogger()
        for old in [h for h in root.handlers if getattr(h, "_email_engine", False)]:
            root.removeHandler(old)
        handler._email_engine = True  # type: ignore[attr-defined]
        root.addHandler(handler)
        root.setLevel(level)
    return chosen
