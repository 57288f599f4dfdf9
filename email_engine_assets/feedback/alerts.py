"""The text of an alert: a run that failed, a send its checks blocked, inputs a run refused. Short, plain, never a secret.

Posted to the operator's chat (Telegram or a Slack-compatible webhook) by
:mod:`email_engine_resources.alerts`. A text names the tenant / campaign (the run's partition),
the job or the check, and why; an error excerpt is cut short and any credential-looking part of a
URL is masked before it is shown (errors of this project never carry secrets; this is a second guard).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

ALERT_MAX_CHARS = 1000
ERROR_MAX_CHARS = 300
PRODUCT = "Email Engine"

_URL_CREDENTIALS = re.compile(r"(?i)(\b[a-z][a-z0-9+.-]*://)[^\s/@]+@")
_BOT_TOKEN = re.compile(r"(?i)\bbot\d+:[A-Za-z0-9_-]+")
_SECRET_PARAM = re.compile(r"(?i)\b(token|key|secret|password|api_key|apikey)=[^\s&]+")


def scrub(text: str) -> str:
    """Mask user:password@ in URLs, Telegram bot tokens and ``token=`` / ``key=`` style parameters."""
    text = _URL_CREDENTIALS.sub(r"\1***@", text)
    text = _BOT_TOKEN.sub("bot***", text)
    return _SECRET_PARAM.sub(lambda m: f"{m.group(1)}=***", text)


def _short(text: str, limit: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _cap(text: str) -> str:
    return text if len(text) <= ALERT_MAX_CHARS else text[: ALERT_MAX_CHARS - 1] + "…"


def run_failure_text(job: str, run_id: str, partition: str | None, error: str | None,
                     unread: Sequence[tuple[str, str]] = ()) -> str:
    """A failed run: the job, the partition (tenant, ``<tenant>.<campaign>``, ``<source>|<tenant>``), the run id, why;
    and the inputs it could not read (``unread``: (asset, its ``inputs_read`` check's description))."""
    lines = [f"{PRODUCT}: run failed", *_run_lines(job, run_id, partition)]
    if error:
        lines.append(f"error: {_short(scrub(error), ERROR_MAX_CHARS)}")
    lines += _unread_lines(unread)
    return _cap("\n".join(lines))


def unread_inputs_text(job: str, run_id: str, partition: str | None, unread: Sequence[tuple[str, str]]) -> str:
    """A run that went through but refused inputs: each asset whose ``inputs_read`` check failed, and what it names."""
    return _cap("\n".join([f"{PRODUCT}: inputs not read", *_run_lines(job, run_id, partition), *_unread_lines(unread)]))


def _run_lines(job: str, run_id: str, partition: str | None) -> list[str]:
    lines = [f"job: {_short(job, 100)}"]
    if partition:
        lines.append(f"partition: {_short(partition, 140)}")
    lines.append(f"run: {_short(run_id, 40)}")
    return lines


def _unread_lines(unread: Sequence[tuple[str, str]]) -> list[str]:
    return [f"- {_short(asset, 60)} inputs_read: {_short(scrub(description), ERROR_MAX_CHARS)}" for asset, description in unread]


def blocked_send_text(campaign_key: str, blocked: Sequence[tuple[str, str]]) -> str:
    """A campaign send stopped by its checks: each (check, reason), and how the operator goes on."""
    lines = [f"{PRODUCT}: send of campaign {_short(campaign_key, 140)} blocked"]
    for check, reason in blocked:
        lines.append(f"- {_short(check, 60)}: {_short(scrub(reason), ERROR_MAX_CHARS)}")
    checks = " ".join(f"--override {_short(c, 60)}" for c, _ in blocked)
    lines.append(f"to go on anyway: email-engine campaign send {_short(campaign_key, 140)} {checks}")
    return _cap("\n".join(lines))


_INCIDENT_TITLES = {
    "sensor_silent": "a sensor is silent",
    "daemon_silent": "the Dagster daemon is silent",
    "inbox_backlog": "the webhook inbox is growing",
    "powermta_queue": "the PowerMTA queue is growing",
    "input_refused": "input refused",
    "inputs_not_read": "inputs not read",
    "guard_rail_paused": "campaign paused by its guard rail",
    "guard_rail_mailwizz": "campaign paused by its guard rail, still sending in MailWizz",
}


def incident_text(kind: str, tenant: str, detail: str) -> str:
    """An incident that opened: posted once, however long its condition holds."""
    lines = [f"{PRODUCT}: {_INCIDENT_TITLES.get(kind, _short(kind, 60))}"]
    if tenant:
        lines.append(f"tenant: {_short(tenant, 100)}")
    lines.append(_short(scrub(detail), ALERT_MAX_CHARS))
    return _cap("\n".join(lines))


def resolved_text(kind: str, tenant: str, detail: str, opened_at: str) -> str:
    """An incident that cleared: what it was (its detail when it opened) and since when."""
    lines = [f"{PRODUCT}: resolved: {_INCIDENT_TITLES.get(kind, _short(kind, 60))}"]
    if tenant:
        lines.append(f"tenant: {_short(tenant, 100)}")
    lines += [f"was: {_short(scrub(detail), ERROR_MAX_CHARS)}", f"open since: {_short(opened_at, 40)}"]
    return _cap("\n".join(lines))
