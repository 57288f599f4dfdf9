"""Feedback settings of a tenant file: webhook tokens and the suppression policy.

``webhooks.mailwizz_token`` authenticates MailWizz's open / click webhooks for the tenant (each
source's ``webhook_secret`` signs contacts pushed to that source). ``feedback`` holds the policy
numbers; every one has the default the README lists.
"""

from __future__ import annotations

from pydantic import Field

from email_engine_assets.tenancy.sending import EnvSecret
from email_engine_assets.tenancy.strict import Strict


class WebhookSettings(Strict):
    """``webhooks:``: the token MailWizz sends (``?token=`` or ``X-Webhook-Token``), from the environment."""

    mailwizz_token: EnvSecret | None = None


class FeedbackPolicy(Strict):
    """``feedback:``: when feedback suppresses an address, and when it blocks the tenant's next send.

    Hard bounces and complaints suppress at the first; soft bounces at ``soft_bounce_limit`` within
    ``soft_bounce_days``; an unsubscribe at once. Reputation bounces (spam-, policy-, content-related,
    bad configuration, invalid sender) never count against the contact.
    """

    hard_bounce_limit: int = Field(default=1, ge=1, le=100)
    soft_bounce_limit: int = Field(default=3, ge=1, le=1000)
    soft_bounce_days: int = Field(default=7, ge=1, le=365)
    complaint_limit: int = Field(default=1, ge=1, le=100)
    max_hard_bounce_rate: float = Field(default=0.02, gt=0, le=1, description="over this on the last campaign: next send blocked")
    max_complaint_rate: float = Field(default=0.001, gt=0, le=1, description="over this on the last campaign: next send blocked")


class GuardRails(Strict):
    """``guard_rails:``: when a running campaign's own feedback pauses it (the rates are ``feedback``'s limits).

    ``min_sample``: messages of the campaign with feedback before a rate counts (fewer say too little).
    ``check_every_s``: how often a sending run applies the tenant's pending feedback and checks, at
    the next batch boundary once that much time has passed (0: at every batch).
    ``destination_deferrals`` within ``destination_window_s``: PowerMTA accounting ``t`` / ``b``
    records of one recipient domain that say it throttles (``4.7.x``, ``421``, policy- or
    spam-related) before the send stops feeding that domain (its rows wait, queued).
    """

    min_sample: int = Field(default=200, ge=1, le=10_000_000)
    check_every_s: float = Field(default=30.0, ge=0, le=3600)
    destination_deferrals: int = Field(default=20, ge=1, le=1_000_000)
    destination_window_s: int = Field(default=900, ge=1, le=86_400)
