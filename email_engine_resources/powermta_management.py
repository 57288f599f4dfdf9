"""PowerMTA's HTTP management API (port 8080 by default): the figures a send run records.

``GET /status?format=json`` and ``GET /queues?format=json`` answer the envelope
``{"data": ..., "status": "success", "message": ""}`` (REFERENCE.md, "PowerMTA"); an ``X-API-Key``
header is sent when a key is configured. The envelope is *unconfirmed* (public tools read
``?format=xml``): any other answer (XML, JSON without the envelope, HTML) is a
:class:`PowerMtaManagementError` saying what came instead; the caller shows it as a warning, the
figures being information, never feedback a send depends on. The network policy is the other clients': the host is
resolved once and a non-public address is refused unless ``allow_private``; no redirects, no
proxies from the environment, replies capped at :data:`MAX_REPLY_BYTES`. Errors name the route and
never carry the key.
"""

from __future__ import annotations

import json
from typing import Any

import httpx

from email_engine_resources.guarded_http import guarded_client

MAX_REPLY_BYTES = 4 * 1024 * 1024
MAX_ERROR_CHARS = 200


class PowerMtaManagementError(RuntimeError):
    """The management API could not be read; ``str()`` names the route, never the key."""


class PowerMtaManagement:
    """A client of one PowerMTA's management API; ``repr`` shows the URL only."""

    def __init__(self, base_url: str, api_key: str | None = None, *, timeout: float = 10.0, allow_private: bool = False):
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key
        self._http = guarded_client(allow_private=allow_private, timeout=timeout)

    def __repr__(self) -> str:
        return f"PowerMtaManagement({self.base_url!r})"

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> PowerMtaManagement:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def get(self, route: str) -> Any:
        """The ``data`` of ``GET /<route>?format=json``."""
        where = f"{self.base_url}/{route}"
        headers = {"Accept": "application/json", "User-Agent": "email-engine"}
        if self._api_key:
            headers["X-API-Key"] = self._api_key
        try:
            with self._http.stream("GET", where, params={"format": "json"}, headers=headers) as response:
                raw = bytearray()
                for part in response.iter_bytes():
                    raw += part
                    if len(raw) > MAX_REPLY_BYTES:
                        raise PowerMtaManagementError(f"{where}: reply larger than {MAX_REPLY_BYTES} bytes")
                status = response.status_code
                kind = response.headers.get("content-type", "")
        except httpx.HTTPError as exc:
            raise PowerMtaManagementError(f"{where}: {self._redact(str(exc))[:MAX_ERROR_CHARS]}") from None
        try:
            envelope = json.loads(bytes(raw))
        except ValueError:
            hint = ", not the expected JSON envelope (this PowerMTA may answer only ?format=xml)" if status == 200 else ""
            raise PowerMtaManagementError(f"{where}: HTTP {status}, {_what(bytes(raw), kind)}{hint}") from None
        enveloped = isinstance(envelope, dict) and "status" in envelope and ("data" in envelope or "message" in envelope)
        if status == 200 and not enveloped:
            raise PowerMtaManagementError(f"{where}: HTTP 200, JSON without the expected envelope "
                                          "{\"data\", \"status\", \"message\"}")
        if status != 200 or envelope.get("status") != "success":
            message = envelope.get("message") if isinstance(envelope, dict) else None
            raise PowerMtaManagementError(f"{where}: HTTP {status}: {self._redact(str(message or 'no success envelope'))[:MAX_ERROR_CHARS]}")
        return envelope.get("data")

    def _redact(self, text: str) -> str:
        return text.replace(self._api_key, "[key]") if self._api_key else text

    def queued_recipients(self) -> int:
        """Recipients in PowerMTA's queue now (``/status``: ``queue.smtp.rcp``); one call, for the alert watcher."""
        status = self.get("status")
        status = status.get("status", status) if isinstance(status, dict) else {}
        value = _dig(status, ("queue", "smtp", "rcp"))
        if value is None or value < 0:
            raise PowerMtaManagementError(f"{self.base_url}/status: no queue.smtp.rcp count in the answer")
        return int(value)

    def figures(self) -> dict[str, int | float]:
        """Queued recipients, connections and rates from ``/status``, queue counts from ``/queues``."""
        status = self.get("status")
        status = status.get("status", status) if isinstance(status, dict) else {}
        queues = self.get("queues")
        queues = queues if isinstance(queues, list) else (queues or {}).get("queues", []) if isinstance(queues, dict) else []
        out: dict[str, int | float] = {}
        for key, path in (
            ("queued_recipients", ("queue", "smtp", "rcp")),
            ("queued_domains", ("queue", "smtp", "dom")),
            ("connections_out", ("conn", "smtpOut", "cur")),
            ("connections_in", ("conn", "smtpIn", "cur")),
            ("out_recipients_last_minute", ("traffic", "lastMin", "out", "rcp")),
            ("out_recipients_last_hour", ("traffic", "lastHr", "out", "rcp")),
            ("spool_files", ("spool", "files", "total")),
        ):
            value = _dig(status, path)
            if value is not None:
                out[key] = value
        rows = [q for q in queues if isinstance(q, dict)]
        out["queues"] = len(rows)
        out["queues_paused"] = sum(1 for q in rows if q.get("paused") in (True, "true", "yes"))
        out["queues_in_backoff"] = sum(1 for q in rows if str(q.get("mode", "")).lower() == "backoff")
        return out


def _what(raw: bytes, content_type: str) -> str:
    """A few words on a body that is not JSON: XML, HTML, empty, or its content type."""
    head = raw.lstrip()[:100].lower()
    if not head:
        return "an empty answer"
    if "xml" in content_type.lower() or head.startswith(b"<?xml"):
        return "an XML answer"
    if "html" in content_type.lower() or head.startswith((b"<!doctype html", b"<html")):
        return "an HTML answer"
    shown = content_type.split(";")[0].strip()[:60]
    return f"a {shown} answer" if shown else "an answer of unknown type"


def _dig(data: Any, path: tuple[str, ...]) -> int | float | None:
    for key in path:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    if isinstance(data, bool):
        return None
    if isinstance(data, (int, float)):
        return data
    try:
        return float(data) if "." in str(data) else int(str(data))
    except (TypeError, ValueError):
        return None
