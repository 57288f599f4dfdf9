"""Posting an alert to the operator's chat: the Telegram bot API or a Slack-compatible webhook.

Settings come from the environment only (the URL and the bot token are secrets):

- ``EMAIL_ENGINE_ALERT_KIND``: ``telegram`` or ``slack``; unset or empty: no alert is posted;
- ``slack``: ``EMAIL_ENGINE_ALERT_URL``, the incoming-webhook URL -> ``POST <url>`` ``{"text": ...}``;
- ``telegram``: ``EMAIL_ENGINE_TELEGRAM_BOT_TOKEN`` and ``EMAIL_ENGINE_TELEGRAM_CHAT_ID`` ->
  ``POST <api>/bot<token>/sendMessage`` ``{"chat_id", "text"}``, ``<api>`` being
  ``EMAIL_ENGINE_TELEGRAM_API`` (default ``https://api.telegram.org``).

An alert never fails the work it reports on: :meth:`AlertPoster.post` retries (stamina: timeouts,
connection errors, 429 and 5xx), then logs that it could not post -- the kind, the HTTP status or
the error's type, never the URL or the token -- and returns False. The token and URL are also
masked in what ``httpx`` itself logs about its requests.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

import httpx
import stamina

KIND_ENV = "EMAIL_ENGINE_ALERT_KIND"
URL_ENV = "EMAIL_ENGINE_ALERT_URL"
TELEGRAM_TOKEN_ENV = "EMAIL_ENGINE_TELEGRAM_BOT_TOKEN"
TELEGRAM_CHAT_ENV = "EMAIL_ENGINE_TELEGRAM_CHAT_ID"
TELEGRAM_API_ENV = "EMAIL_ENGINE_TELEGRAM_API"
TELEGRAM_API = "https://api.telegram.org"
KINDS = ("telegram", "slack")
TIMEOUT_S = 5.0
ATTEMPTS = 3
MAX_TEXT_CHARS = 4000  # Telegram refuses messages over 4096 characters

log = logging.getLogger("email_engine.alerts")
_SECRETS: set[str] = set()


class _MaskSecrets(logging.Filter):
    """Masks the alert URL and bot token in log records (httpx logs every request's URL at INFO)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if _SECRETS:
            message = record.getMessage()
            masked = message
            for secret in _SECRETS:
                masked = masked.replace(secret, "***")
            if masked != message:
                record.msg, record.args = masked, ()
        return True


logging.getLogger("httpx").addFilter(_MaskSecrets())


class AlertSettingsError(ValueError):
    """An alert kind is set but its settings are incomplete; ``str()`` names the variables, never a value."""


@dataclass(frozen=True)
class AlertSettings:
    kind: str
    url: str = field(repr=False)  # holds the secret (the webhook URL, or the bot token in the path)
    chat_id: str | None = None

    def body(self, text: str) -> dict:
        return {"chat_id": self.chat_id, "text": text} if self.kind == "telegram" else {"text": text}


def alert_settings(environ: Mapping[str, str] | None = None) -> AlertSettings | None:
    """The alert settings of the environment; None when no alert kind is set."""
    env = os.environ if environ is None else environ
    kind = env.get(KIND_ENV, "").strip().lower()
    if not kind:
        return None
    if kind not in KINDS:
        raise AlertSettingsError(f"{KIND_ENV} must be one of {', '.join(KINDS)}")
    if kind == "slack":
        url = env.get(URL_ENV, "").strip()
        if not url.startswith(("https://", "http://")):
            raise AlertSettingsError(f"{KIND_ENV}=slack needs {URL_ENV} (the webhook URL, http or https)")
        return AlertSettings("slack", url)
    token, chat = env.get(TELEGRAM_TOKEN_ENV, "").strip(), env.get(TELEGRAM_CHAT_ENV, "").strip()
    if not token or not chat:
        raise AlertSettingsError(f"{KIND_ENV}=telegram needs {TELEGRAM_TOKEN_ENV} and {TELEGRAM_CHAT_ENV}")
    if any(c in token for c in "/?#@ "):
        raise AlertSettingsError(f"{TELEGRAM_TOKEN_ENV} is not a bot token")
    api = (env.get(TELEGRAM_API_ENV, "").strip() or TELEGRAM_API).rstrip("/")
    return AlertSettings("telegram", f"{api}/bot{token}/sendMessage", chat)


class _Retryable(Exception):
    def __init__(self, why: str):
        super().__init__(why)
        self.why = why


class AlertPoster:
    """Posts alert texts with the given settings (None: posts nothing)."""

    def __init__(self, settings: AlertSettings | None, *, timeout: float = TIMEOUT_S, attempts: int = ATTEMPTS,
                 backoff_initial: float = 0.5):
        self.settings = settings
        self.timeout = timeout
        self.attempts = attempts
        self.backoff_initial = backoff_initial
        if settings is not None:
            _SECRETS.add(settings.url)
            if settings.kind == "telegram":
                _SECRETS.add(settings.url.rsplit("/bot", 1)[1].split("/", 1)[0])

    def __repr__(self) -> str:
        return f"AlertPoster({self.settings.kind if self.settings else None!r})"

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None, **kwargs) -> AlertPoster:
        """From the environment; settings that are incomplete are logged (by variable name) and post nothing."""
        try:
            return cls(alert_settings(environ), **kwargs)
        except AlertSettingsError as exc:
            log.warning("alerts are off: %s", exc)
            return cls(None, **kwargs)

    def post(self, text: str) -> bool:
        """Post ``text``; True when the chat accepted it. Never raises."""
        if self.settings is None:
            return False
        s = self.settings
        body = s.body(text[:MAX_TEXT_CHARS])
        try:
            with httpx.Client(timeout=self.timeout, trust_env=False, follow_redirects=False) as client:
                for attempt in stamina.retry_context(on=_Retryable, attempts=self.attempts, timeout=None,
                                                     wait_initial=self.backoff_initial, wait_max=5.0,
                                                     wait_jitter=self.backoff_initial):
                    with attempt:
                        self._once(client, s.url, body)
            return True
        except _Retryable as exc:
            log.warning("alert not posted (%s): %s after %d attempt(s)", s.kind, exc.why, self.attempts)
        except _Refused as exc:
            log.warning("alert not posted (%s): %s", s.kind, exc)
        except Exception as exc:  # noqa: BLE001 (an alert must never fail the run it reports on)
            log.warning("alert not posted (%s): %s", s.kind, type(exc).__name__)
        return False

    @staticmethod
    def _once(client: httpx.Client, url: str, body: dict) -> None:
        try:
            response = client.post(url, json=body)
        except (httpx.TimeoutException, httpx.TransportError) as exc:
            raise _Retryable(type(exc).__name__) from None
        if response.status_code == 429 or response.status_code >= 500:
            raise _Retryable(f"HTTP {response.status_code}")
        if response.status_code >= 300:
            raise _Refused(f"HTTP {response.status_code}")


class _Refused(Exception):
    """The chat answered but refused the alert (4xx): retrying would not help."""


def post_alert(text: str, environ: Mapping[str, str] | None = None) -> bool:
    """Post ``text`` with the environment's settings; False when none are set or the post failed."""
    return AlertPoster.from_environment(environ).post(text)
