"""The suppression policy: every policy number, incremental and idempotent runs, per-tenant
overrides, tenant isolation, contact statuses, and the next campaign / the running claim honouring it."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from itertools import count
from pathlib import Path

import polars as pl
import pytest
import sqlalchemy as sa

from email_engine_assets import campaign_runs
from email_engine_assets.campaigns import assets as campaign_assets
from email_engine_assets.feedback import policy_store, suppression_apply
from email_engine_assets.feedback.events import FeedbackEvent, events_frame
from email_engine_assets.feedback.policy import CONTACT_STATUSES, COUNTS_SCHEMA, decide
from email_engine_assets.feedback.policy_store import contact_status, status_counts
from email_engine_assets.feedback.store import record_events
from email_engine_assets.feedback.suppression_apply import apply_policy
from email_engine_assets.tenancy.config import parse_tenant
from email_engine_assets.tenancy.feedback_settings import FeedbackPolicy
from email_engine_resources.transports import MailwizzResource
from email_engine_tests.campaign_parts import (
    HookedTemplateComposers,
    add_contacts,
    campaign_env,
    outbox_recipients,
    write_campaign,
    write_real_templates,
)

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=timezone.utc)
_keys = count()


def tenant(tenant_id: str = "acme", extra: str = ""):
    return parse_tenant(Path(f"{tenant_id}.yaml"), f"id: {tenant_id}\nname: {tenant_id.title()}\nsources:\n  - id: crm\n{extra}")


def ensure_tenant(engine, tenant_id: str) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO tenants (tenant_id, name, config_sha256) VALUES (:t, :t, 'x') ON CONFLICT DO NOTHING"),
                     {"t": tenant_id})


def ev(kind: str, email: str, *, days_ago: float = 0, klass: str | None = None, detail: str | None = None,
       token: str | None = None, campaign: str | None = None, origin: str = "powermta") -> FeedbackEvent:
    event_type = "bounced" if kind in ("hard", "soft", "reputation") else kind
    return FeedbackEvent(event_type, origin, NOW - timedelta(days=days_ago), f"k{next(_keys)}",
                         bounce_class=kind if event_type == "bounced" else klass, token=token, campaign=campaign,
                         email=email, detail=detail)


def record(engine, tenant_id: str, events) -> dict:
    ensure_tenant(engine, tenant_id)
    with engine.begin() as conn:
        return record_events(conn, tenant_id, events_frame(events))


def suppressions(engine, tenant_id: str = "acme") -> dict[str, tuple[str, str | None]]:
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT email, reason, detail FROM suppressions WHERE tenant_id = :t"), {"t": tenant_id}).all()
    return {r.email: (r.reason, r.detail) for r in rows}


# --- the core rule alone ------------------------------------------------------------------------

def _counts(rows: list[dict]) -> pl.DataFrame:
    full = [{name: row.get(name, 0 if dtype == pl.Int64() else None) for name, dtype in COUNTS_SCHEMA.items()} for row in rows]
    return pl.DataFrame(full, schema=COUNTS_SCHEMA, orient="row")


def test_the_rule_alone_turns_counts_into_reasons_with_the_why():
    decided = decide(_counts([
        {"email": "hard@x.example", "hard_bounces": 1, "hard_detail": "5.1.1 (bad destination mailbox address)"},
        {"email": "soft@x.example", "soft_in_window": 3, "soft_detail": "4.2.2 (mailbox full)"},
        {"email": "two-soft@x.example", "soft_in_window": 2},
        {"email": "complainer@x.example", "complaints": 1, "hard_bounces": 1},
        {"email": "unsub@x.example", "unsubscribes": 1, "unsubscribe_detail": "via mailwizz, campaign spring", "soft_in_window": 9},
        {"email": "quiet@x.example"},
    ]), FeedbackPolicy())
    got = {r["email"]: (r["reason"], r["detail"]) for r in decided.iter_rows(named=True)}
    assert got == {
        "hard@x.example": ("bounced", "1 hard bounce (last: 5.1.1 (bad destination mailbox address))"),
        "soft@x.example": ("bounced", "3 soft bounces in 7 days (last: 4.2.2 (mailbox full))"),
        "complainer@x.example": ("complained", "1 complaint"),  # the strongest reason wins
        "unsub@x.example": ("unsubscribed", "unsubscribed (last: via mailwizz, campaign spring)"),
    }


def test_the_rule_reads_its_thresholds_from_the_policy():
    counts = _counts([{"email": "a@x.example", "hard_bounces": 1, "complaints": 1, "soft_in_window": 2}])
    assert decide(counts, FeedbackPolicy(hard_bounce_limit=2, complaint_limit=2, soft_bounce_limit=3)).height == 0
    assert decide(counts, FeedbackPolicy(hard_bounce_limit=2, complaint_limit=2, soft_bounce_limit=2))["detail"].to_list() == [
        "2 soft bounces in 7 days"]
    assert decide(counts.head(0), FeedbackPolicy()).height == 0


# --- the policy on the database -------------------------------------------------------------------

@pytest.mark.parametrize("chunk", [None, 3], ids=["one_pass", "ranges_of_3_events"])
def test_every_default_policy_number_on_real_events(engine, monkeypatch, chunk):
    if chunk:
        monkeypatch.setattr(suppression_apply, "EVENTS_PER_CHUNK", chunk)
    ensure_tenant(engine, "acme")
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO suppressions (tenant_id, email, reason, detail) VALUES ('acme', 'kept@x.example', 'manual', 'asked by phone')"))
    record(engine, "acme", [
        ev("hard", "hard@x.example", detail="5.1.1 (bad destination mailbox address)"),
        *[ev("soft", "soft3@x.example", days_ago=d, detail=f"4.2.2 (mailbox full {d})") for d in (6, 3, 0)],
        *[ev("soft", "spread@x.example", days_ago=d) for d in (16, 8, 0)],  # 3, but never 3 within 7 days
        *[ev("soft", "soft2@x.example", days_ago=d) for d in (1, 0)],
        ev("complained", "complainer@x.example", detail="abuse (arf)"),
        ev("unsubscribed", "unsub@x.example", origin="unsubscribe_link", campaign="spring"),
        *[ev("reputation", "rep@x.example", days_ago=d, detail="5.7.1 spam") for d in range(5)],
        ev("hard", "kept@x.example"),
        ev("delivered", "fine@x.example"), ev("opened", "fine@x.example"),
    ])
    counts = apply_policy(engine, tenant(), mailwizz=MailwizzResource())
    assert suppressions(engine) == {
        "hard@x.example": ("bounced", "1 hard bounce (last: 5.1.1 (bad destination mailbox address))"),
        "soft3@x.example": ("bounced", "3 soft bounces in 7 days (last: 4.2.2 (mailbox full 0))"),
        "complainer@x.example": ("complained", "1 complaint (last: abuse (arf))"),
        "unsub@x.example": ("unsubscribed", "unsubscribed (last: via unsubscribe_link, campaign spring)"),
        "kept@x.example": ("manual", "asked by phone"),  # an existing suppression keeps its reason
    }
    assert counts["suppressed"] == 4 and counts["suppressed_bounced"] == 2
    if not chunk:
        assert counts["addresses_read"] == 7  # reputation bounces and opens are never read


def test_runs_are_incremental_and_a_late_event_completes_an_older_window(engine):
    record(engine, "acme", [ev("soft", "a@x.example", days_ago=10, detail="4.2.2 full"), ev("soft", "a@x.example", days_ago=6, detail="4.2.2 still full")])
    assert apply_policy(engine, tenant(), mailwizz=MailwizzResource())["suppressed"] == 0
    # arrives now, dated between the two: 3 soft bounces within 7 days (days 10, 8, 6)
    record(engine, "acme", [ev("soft", "a@x.example", days_ago=8, detail="4.4.7 expired")])
    counts = apply_policy(engine, tenant(), mailwizz=MailwizzResource())
    assert counts["addresses_read"] == 1
    assert suppressions(engine)["a@x.example"] == ("bounced", "3 soft bounces in 7 days (last: 4.2.2 still full)")
    # a new soft bounce of another address far from its old ones does not suppress
    record(engine, "acme", [ev("soft", "b@x.example", days_ago=30), ev("soft", "b@x.example", days_ago=29)])
    apply_policy(engine, tenant(), mailwizz=MailwizzResource())
    record(engine, "acme", [ev("soft", "b@x.example", days_ago=0)])
    apply_policy(engine, tenant(), mailwizz=MailwizzResource())
    assert "b@x.example" not in suppressions(engine)


def test_applied_twice_is_applied_once(engine):
    record(engine, "acme", [ev("hard", "a@x.example"), ev("complained", "b@x.example")])
    first = apply_policy(engine, tenant(), mailwizz=MailwizzResource())
    before = suppressions(engine)
    second = apply_policy(engine, tenant(), mailwizz=MailwizzResource())
    assert (first["suppressed"], second["suppressed"], second["addresses_read"]) == (2, 0, 0)
    with engine.begin() as conn:  # even re-reading every event from the start changes nothing
        conn.execute(sa.text("UPDATE feedback_policy_marks SET last_event_id = 0"))
    again = apply_policy(engine, tenant(), mailwizz=MailwizzResource())
    assert (again["addresses_read"], again["suppressed"]) == (2, 0)
    assert suppressions(engine) == before


def test_the_tenant_file_overrides_the_policy_numbers(engine):
    strict = tenant(extra="feedback:\n  hard_bounce_limit: 2\n  soft_bounce_limit: 2\n  soft_bounce_days: 2\n  complaint_limit: 2\n")
    record(engine, "acme", [
        ev("hard", "one-hard@x.example"),
        ev("complained", "one-complaint@x.example"),
        *[ev("soft", "two-soft@x.example", days_ago=d) for d in (1.5, 0)],
        *[ev("soft", "two-soft-apart@x.example", days_ago=d) for d in (3, 0)],
    ])
    apply_policy(engine, strict, mailwizz=MailwizzResource())
    assert suppressions(engine) == {"two-soft@x.example": ("bounced", "2 soft bounces in 2 days")}
    record(engine, "acme", [ev("hard", "one-hard@x.example"), ev("complained", "one-complaint@x.example")])
    apply_policy(engine, strict, mailwizz=MailwizzResource())
    assert suppressions(engine)["one-hard@x.example"] == ("bounced", "2 hard bounces")
    assert suppressions(engine)["one-complaint@x.example"] == ("complained", "2 complaints")


def test_tenants_are_isolated(engine):
    record(engine, "acme", [ev("hard", "shared@x.example")])
    record(engine, "globex", [ev("delivered", "shared@x.example"), ev("soft", "shared@x.example")])
    apply_policy(engine, tenant("globex"), mailwizz=MailwizzResource())
    assert suppressions(engine, "globex") == {} and suppressions(engine, "acme") == {}
    apply_policy(engine, tenant("acme"), mailwizz=MailwizzResource())
    assert suppressions(engine, "acme") == {"shared@x.example": ("bounced", "1 hard bounce")}
    assert suppressions(engine, "globex") == {}
    with engine.connect() as conn:
        marks = dict(conn.execute(sa.text("SELECT tenant_id, last_event_id FROM feedback_policy_marks")).all())
        top = conn.execute(sa.text("SELECT max(event_id) FROM delivery_events")).scalar_one()
    assert marks["acme"] == marks["globex"] == top  # each tenant's mark is its own, at the same horizon


def test_an_event_still_being_written_is_not_skipped_by_the_watermark(engine, monkeypatch):
    monkeypatch.setattr(policy_store, "HORIZON_LOCK_TIMEOUT_MS", 50)
    ensure_tenant(engine, "acme")
    with engine.connect() as slow:
        slow.begin()
        record_events(slow, "acme", events_frame([ev("hard", "late@x.example")]))  # an id taken, not committed
        record(engine, "acme", [ev("hard", "early@x.example")])  # a higher id, committed
        counts = apply_policy(engine, tenant(), mailwizz=MailwizzResource())
        assert set(suppressions(engine)) == {"early@x.example"}
        assert counts["events_to"] == counts["events_from"] == 0  # the mark stays: not every event below it is final
        slow.commit()
    apply_policy(engine, tenant(), mailwizz=MailwizzResource())
    assert set(suppressions(engine)) == {"early@x.example", "late@x.example"}


def test_contact_statuses_follow_the_suppressions(engine):
    ids = dict(zip(["a@x.example", "b@x.example", "c@x.example"], add_contacts(engine, "acme", ["a@x.example", "b@x.example", "c@x.example"]), strict=True))
    record(engine, "acme", [ev("hard", "a@x.example", detail="5.1.1"), ev("unsubscribed", "b@x.example", origin="unsubscribe_link")])
    apply_policy(engine, tenant(), mailwizz=MailwizzResource())
    with engine.connect() as conn:
        a, c = contact_status(conn, "acme", "a@x.example"), contact_status(conn, "acme", "c@x.example")
        assert (a["status"], a["detail"], a["contact_id"]) == ("bounced", "1 hard bounce (last: 5.1.1)", ids["a@x.example"])
        assert (c["status"], c["detail"]) == ("active", None)
        assert contact_status(conn, "acme", "nobody@x.example") is None
        assert status_counts(conn, "acme") == {"bounced": 1, "unsubscribed": 1, "active": 1}
        assert set(status_counts(conn, "acme")) <= set(CONTACT_STATUSES)


# --- with campaigns -------------------------------------------------------------------------------

@pytest.fixture
def camp(engine, workspace, tmp_path, monkeypatch):
    monkeypatch.setenv("EMAIL_ENGINE_HOME", str(tmp_path / "home"))
    emails = ["hard@example.com", "complainer@example.com", "reputation@example.com", "soft@example.com", "fine@example.com"]
    for env in campaign_env(engine, workspace, tmp_path / "home", emails, ("spring",)):
        env.ids = dict(zip(emails, env.ids, strict=True))
        yield env


def _tokens(engine, campaign: str) -> dict[str, str]:
    with engine.connect() as conn:
        return dict(conn.execute(sa.text("SELECT email, token FROM campaign_sends WHERE campaign = :c"), {"c": campaign}).all())


def _states(engine, campaign: str) -> dict[str, str]:
    with engine.connect() as conn:
        return dict(conn.execute(sa.text("SELECT email, state FROM campaign_sends WHERE campaign = :c"), {"c": campaign}).all())


def test_the_next_campaign_leaves_out_the_bounced_and_the_complainer_but_not_the_reputation_bounced(camp):
    assert campaign_runs.send("acme.spring", instance=camp.instance, definitions=camp.defs).counts["sent"] == 5
    tokens = _tokens(camp.engine, "spring")
    linked = record(camp.engine, "acme", [
        ev("hard", None, token=tokens["hard@example.com"], detail="5.1.1 (bad destination mailbox address)"),
        ev("complained", None, token=tokens["complainer@example.com"]),
        ev("reputation", None, token=tokens["reputation@example.com"], detail="5.7.1 (delivery not authorized)"),
        ev("soft", None, token=tokens["soft@example.com"]),
        ev("delivered", None, token=tokens["fine@example.com"]),
    ])
    assert linked["linked"] == 5  # the events carry no address: it comes from the ledger row of the token
    apply_policy(camp.engine, tenant(), mailwizz=MailwizzResource())
    assert {e: r for e, (r, _) in suppressions(camp.engine).items()} == {
        "hard@example.com": "bounced", "complainer@example.com": "complained"}
    write_campaign(camp.root, "acme", "summer")
    # 1 hard bounce and 1 complaint out of 5 put spring over the reputation limits: the operator overrides
    done = campaign_runs.send("acme.summer", overrides=["no_suppressed_members", "sender_reputation"], instance=camp.instance, definitions=camp.defs)
    assert _states(camp.engine, "summer") == {
        "hard@example.com": "skipped_suppressed", "complainer@example.com": "skipped_suppressed",
        "reputation@example.com": "sent", "soft@example.com": "sent", "fine@example.com": "sent",
    }
    assert done.counts["skipped"]["suppressed"] == 2
    assert outbox_recipients(camp.outbox).count("reputation@example.com") == 2  # spring and summer


def test_a_policy_suppression_stops_the_queued_rows_of_a_running_campaign(camp, monkeypatch):
    monkeypatch.setattr(campaign_assets, "SEND_BATCH_SIZE", 2)
    seen = []

    def complaint_arrives_during_the_first_batch(contact):
        if not seen:
            record(camp.engine, "acme", [ev("complained", "fine@example.com", origin="powermta")])
            apply_policy(camp.engine, tenant(), mailwizz=MailwizzResource())
        seen.append(contact["email"])

    write_real_templates(camp.root)
    camp.composers = HookedTemplateComposers(on_compose=complaint_arrives_during_the_first_batch)
    done = campaign_runs.send("acme.spring", instance=camp.instance, definitions=camp.defs)
    assert "fine@example.com" not in seen and "fine@example.com" not in outbox_recipients(camp.outbox)
    assert (done.counts["sent"], done.counts["skipped"]["suppressed"]) == (4, 1)
    with camp.engine.connect() as conn:
        detail = conn.execute(sa.text("SELECT detail FROM campaign_sends WHERE email = 'fine@example.com'")).scalar_one()
    assert detail == "suppressed (complained) at send time"
