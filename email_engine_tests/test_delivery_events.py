"""The event vocabulary, the bounce rule, and recording events against the send ledger."""

from datetime import datetime, timezone

import pytest
import sqlalchemy as sa

from email_engine_assets.feedback.events import (
    BOUNCE_CLASSES,
    EVENT_ORIGINS,
    EVENT_TYPES,
    FeedbackEvent,
    bounce_class,
    enhanced_status,
    events_frame,
)
from email_engine_assets.feedback.store import record_events

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=timezone.utc)


@pytest.mark.parametrize(
    ("cat", "status", "expected"),
    [
        ("bad-mailbox", "5.1.1 (bad destination mailbox address)", "hard"),
        ("inactive-mailbox", None, "hard"),
        ("bad-domain", "5.1.2", "hard"),
        ("quota-issues", "5.2.2 (mailbox full)", "soft"),
        ("message-expired", "4.4.7", "soft"),
        ("spam-related", "5.7.1 (delivery not authorized)", "reputation"),
        ("policy-related", "5.7.1", "reputation"),
        ("content-related", None, "reputation"),
        ("bad-configuration", None, "reputation"),
        ("invalid-sender", "5.1.8", "reputation"),  # the category wins over a 5.1.x status
        ("other", "5.1.1 (bad destination mailbox address)", "hard"),
        ("", "5.7.1 (delivery not authorized)", "reputation"),
        (None, "4.2.2", "soft"),
        ("other", "5.0.0", "soft"),
        ("made-up", None, "soft"),
    ],
)
def test_bounce_class_from_category_then_status(cat, status, expected):
    assert bounce_class(cat, status) == expected


def test_enhanced_status_is_found_inside_the_dsn_text():
    assert enhanced_status("smtp;554 5.7.1 Denied") == "5.7.1"
    assert enhanced_status("no code here") is None


def test_the_vocabularies_match_the_check_constraints(engine):
    with engine.connect() as conn:
        checks = " ".join(
            conn.execute(sa.text(
                "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = 'delivery_events'::regclass AND contype = 'c'"
            )).scalars()
        )
    for word in (*EVENT_TYPES, *BOUNCE_CLASSES, *EVENT_ORIGINS):
        assert f"'{word}'" in checks


def test_an_event_refuses_unknown_words_and_bounces_without_class():
    with pytest.raises(ValueError, match="unknown event type"):
        FeedbackEvent("exploded", "powermta", NOW, "k")
    with pytest.raises(ValueError, match="bounce class"):
        FeedbackEvent("bounced", "powermta", NOW, "k")
    with pytest.raises(ValueError, match="bounce class"):
        FeedbackEvent("delivered", "powermta", NOW, "k", bounce_class="hard")


def _ledger(conn, tenant_id: str) -> dict:
    conn.execute(sa.text("INSERT INTO tenants (tenant_id, name, config_sha256) VALUES (:t, :t, 'x') ON CONFLICT DO NOTHING"), {"t": tenant_id})
    conn.execute(sa.text(
        """INSERT INTO campaigns (tenant_id, campaign, state, segment, category, transport, config_sha256)
           VALUES (:t, 'spring', 'completed', 'all', 'news', 'outbox', 'x')"""), {"t": tenant_id})
    rows = conn.execute(sa.text(
        """INSERT INTO campaign_sends (tenant_id, campaign, email, state, token)
           VALUES (:t, 'spring', 'a@example.com', 'sent', :t || '-tok-a'), (:t, 'spring', 'b@example.com', 'sent', :t || '-tok-b')
           RETURNING email, row_id"""), {"t": tenant_id}).all()
    return dict(rows)


def test_events_link_by_token_then_by_address_and_count_once(engine):
    with engine.begin() as conn:
        rows = _ledger(conn, "ev1")
        _ledger(conn, "ev2")
        events = [
            FeedbackEvent("delivered", "powermta", NOW, "line-1", token="ev1-tok-a"),
            FeedbackEvent("bounced", "powermta", NOW, "line-2", bounce_class="hard", campaign="spring", email="b@example.com"),
            FeedbackEvent("opened", "mailwizz", NOW, "hook-1", campaign="spring", email="nobody@example.com"),
            FeedbackEvent("delivered", "powermta", NOW, "line-3", token="ev2-tok-a"),  # another tenant's token: unlinked
            FeedbackEvent("delivered", "powermta", NOW, "line-1", token="ev1-tok-a"),  # the same line again
        ]
        first = record_events(conn, "ev1", events_frame(events))
        again = record_events(conn, "ev1", events_frame(events))
        linked = dict(conn.execute(sa.text(
            "SELECT dedupe_key, send_row_id FROM delivery_events WHERE tenant_id = 'ev1'")).all())
    assert first == {"inserted": 4, "linked": 2, "duplicates": 1}
    assert again == {"inserted": 0, "linked": 0, "duplicates": 5}
    assert linked == {"line-1": rows["a@example.com"], "line-2": rows["b@example.com"], "hook-1": None, "line-3": None}
