"""Our own open and click tracking over real HTTP (uvicorn on loopback) and a real PostgreSQL: the
pixel and the redirect, refused tokens, the request-time classes, the applied events and their
timing rules, nothing personal kept, and a click that still goes through with the database down."""

from __future__ import annotations

import json
import socket
import time

import httpx
import pytest
import sqlalchemy as sa

from email_engine_assets.content.tracking_tokens import click_token, open_token
from email_engine_assets.feedback.inbox_store import store_bodies, store_body
from email_engine_assets.feedback.tracking_hits import PIXEL_GIF
from email_engine_assets.feedback.tracking_rules import GMAIL_PREFETCH_UA, TRUSTED_PROXIES_ENV
from email_engine_assets.feedback.webhook_apply import apply_webhook_rows
from email_engine_assets.feedback.webhook_app import build_app
from email_engine_assets.feedback.webhook_server import WebhookLimits, uvicorn_settings
from email_engine_assets.tenancy.config import load_workspace
from email_engine_tests.http_servers import serving
from email_engine_tests.webhook_helpers import SIGNING_KEY

TENANT = """\
id: acme
name: Acme
sources:
  - id: crm
tracking:
  opens: true
  clicks: true
  base_url: http://127.0.0.1
  machines:
    networks: [198.51.100.0/24]
"""
BROWSER = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0 marker-ua-7f3e"
GMAIL_PROXY = "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)"
LINK = "https://shop.example/spring?utm_source=mail&who=ann%40example.com#top"
BODY_KEYS = {"v", "row", "kind", "link", "url", "at", "method", "machine", "rule", "nonce"}


def _ledger(engine, *tokens: str, settled_s_ago: float = 3600) -> None:
    """Tenant acme, a contact per token and a sent ledger row of campaign ``spring`` handed off ``settled_s_ago``."""
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO tenants (tenant_id, name, config_sha256) VALUES ('acme', 'Acme', 'x') ON CONFLICT DO NOTHING"))
        conn.execute(sa.text(
            """INSERT INTO campaigns (tenant_id, campaign, state, segment, category, transport, config_sha256)
               VALUES ('acme', 'spring', 'completed', 'all', 'news', 'outbox', 'x') ON CONFLICT DO NOTHING"""))
        for token in tokens:
            email = f"{token}@example.com"
            contact = conn.execute(sa.text(
                "INSERT INTO contacts (tenant_id, email) VALUES ('acme', :e) RETURNING contact_id"), {"e": email}).scalar()
            conn.execute(sa.text(
                """INSERT INTO campaign_sends (tenant_id, campaign, contact_id, email, state, token, settled_at)
                   VALUES ('acme', 'spring', :c, :e, 'sent', :t, now() - make_interval(secs => :ago))"""),
                {"c": contact, "e": email, "t": token, "ago": settled_s_ago})


@pytest.fixture
def tracked(engine, workspace, monkeypatch):
    """(client, engine, tenant) of the app serving tenant ``acme`` with tracking on."""
    monkeypatch.delenv(TRUSTED_PROXIES_ENV, raising=False)
    with engine.begin() as conn:
        conn.exec_driver_sql("TRUNCATE webhook_inbox, delivery_events RESTART IDENTITY")
    workspace.tenant("acme", TENANT)
    tenant = load_workspace(workspace.root).tenants["acme"]
    app = build_app(workspace.root, engine, signing_key=lambda: SIGNING_KEY)
    with serving(app, **uvicorn_settings(WebhookLimits())) as url, \
            httpx.Client(base_url=url, headers={"User-Agent": BROWSER}, follow_redirects=False) as client:
        yield client, engine, tenant


def hits(engine) -> list[dict]:
    with engine.connect() as conn:
        rows = conn.execute(sa.text(
            "SELECT tenant_id, kind, source_id, body, content_type FROM webhook_inbox ORDER BY id")).all()
    assert all((r.tenant_id, r.kind, r.source_id, r.content_type) == ("acme", "tracking", None, "application/json") for r in rows)
    return [json.loads(bytes(r.body)) for r in rows]


def events(engine) -> list[tuple]:
    with engine.connect() as conn:
        return conn.execute(sa.text(
            """SELECT e.event_type, e.origin, s.token, e.link_index, e.url, e.machine, e.classified_by
               FROM delivery_events e LEFT JOIN campaign_sends s ON s.row_id = e.send_row_id
               ORDER BY e.event_id""")).all()


def click(token: str, index: int, url: str = LINK) -> str:
    return f"/c/{click_token(SIGNING_KEY, 'acme', token, index, url)}"


def pixel(token: str) -> str:
    return f"/o/{open_token(SIGNING_KEY, 'acme', token)}"


def test_the_pixel_is_a_gif_and_a_click_goes_to_exactly_the_signed_address(tracked):
    client, engine, _ = tracked
    before = int(time.time() * 1000)
    opened = client.get(pixel("ann-tok"))
    clicked = client.get(click("ann-tok", 3))
    again = client.get(click("ann-tok", 3))
    head = client.head(pixel("ann-tok"))
    assert (opened.status_code, opened.content, len(opened.content)) == (200, PIXEL_GIF, 43)
    assert opened.headers["content-type"] == "image/gif" and opened.headers["cache-control"] == "no-store"
    assert clicked.status_code == 302 and clicked.headers["location"] == LINK
    assert clicked.headers["cache-control"] == "no-store" and clicked.headers["referrer-policy"] == "no-referrer"
    assert head.status_code == 200 and head.content == b""
    stored = hits(engine)
    assert [set(h) for h in stored] == [BODY_KEYS] * 4
    assert [(h["row"], h["kind"], h["link"], h["url"], h["method"], h["machine"], h["rule"]) for h in stored] == [
        ("ann-tok", "open", None, None, "GET", False, "person"),
        ("ann-tok", "click", 3, LINK, "GET", False, "person"),
        ("ann-tok", "click", 3, LINK, "GET", False, "person"),  # a second click is a hit of its own
        ("ann-tok", "open", None, None, "HEAD", True, "head_request"),
    ]
    assert all(before <= h["at"] <= int(time.time() * 1000) for h in stored)
    assert len({h["nonce"] for h in stored}) == 4


def test_forged_altered_truncated_or_wrong_kind_tokens_are_400_and_store_nothing(tracked):
    client, engine, _ = tracked
    good = click_token(SIGNING_KEY, "acme", "ann-tok", 0, LINK)
    forged = click_token(b"x" * 32, "acme", "ann-tok", 0, LINK)
    payload, mac = good.split(".")
    altered = payload[:-3] + ("A" if payload[-3] != "A" else "B") + payload[-2:] + "." + mac
    answers = {
        "forged": client.get(f"/c/{forged}"),
        "altered": client.get(f"/c/{altered}"),
        "truncated": client.get(f"/c/{good[:-4]}"),
        "open as click": client.get(f"/c/{open_token(SIGNING_KEY, 'acme', 'ann-tok')}"),
        "click as open": client.get(f"/o/{good}"),
        "garbage": client.get("/o/not-a-token"),
        "javascript": client.get(click("ann-tok", 0, "javascript:alert(1)")),
        "no host": client.get(click("ann-tok", 0, "https:///path")),
        "relative": client.get(click("ann-tok", 0, "//evil.example/x")),
        "forged HEAD": client.head(f"/c/{forged}"),
    }
    assert {name: r.status_code for name, r in answers.items()} == {name: 400 for name in answers}
    assert answers["forged"].json() == {"error": "tracking token signature does not match"}
    assert answers["open as click"].json() == {"error": "tracking token payload is not understood"}
    assert answers["javascript"].json() == {"error": "the tracked link is not an http or https address"}
    assert all("location" not in r.headers for r in answers.values())
    assert hits(engine) == []


def test_request_time_classes(tracked, monkeypatch):
    client, engine, _ = tracked
    open_url, click_url = pixel("ann-tok"), click("ann-tok", 1)
    client.get(open_url, headers={"User-Agent": GMAIL_PROXY})  # every bot list flags it: checked first
    client.get(open_url, headers={"User-Agent": "YahooMailProxy; https://help.yahoo.com/kb/yahoo-mail-proxy-SLN28749.html"})
    client.get(open_url, headers={"User-Agent": "Mozilla/5.0"})
    client.get(click_url, headers={"User-Agent": "Mozilla/5.0"})  # Apple's proxy fetches images, not links
    client.get(click_url, headers={"User-Agent": "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"})
    client.get(open_url, headers={"User-Agent": GMAIL_PREFETCH_UA})
    client.get(click_url, headers={"Sec-Purpose": "prefetch;prerender"})
    client.get(click_url, headers={"User-Agent": ""})
    client.head(click_url)
    # From 127.0.0.1, which is no trusted proxy: X-Forwarded-For is the client's own say, ignored.
    client.get(click_url, headers={"X-Forwarded-For": "198.51.100.7"})
    monkeypatch.setenv(TRUSTED_PROXIES_ENV, "10.0.0.0/8, 127.0.0.0/8")
    client.get(click_url, headers={"X-Forwarded-For": "198.51.100.7, 10.1.2.3"})  # through two trusted proxies
    client.get(click_url, headers={"X-Forwarded-For": "198.51.100.7, 203.0.113.5"})  # the last untrusted hop counts
    assert [(h["kind"], h["machine"], h["rule"]) for h in hits(engine)] == [
        ("open", False, "gmail_proxy"),
        ("open", False, "yahoo_proxy"),
        ("open", True, "apple_privacy_proxy"),
        ("click", False, "person"),
        ("click", True, "bot_user_agent"),
        ("open", True, "gmail_prefetch"),
        ("click", True, "prefetch"),
        ("click", True, "empty_user_agent"),
        ("click", True, "head_request"),
        ("click", False, "person"),
        ("click", True, "scanner_network"),
        ("click", False, "person"),
    ]


def test_applied_hits_are_linked_classed_events_and_nothing_personal_is_kept(tracked, workspace):
    client, engine, tenant = tracked
    _ledger(engine, "ann-tok")
    client.get(pixel("ann-tok"), headers={"User-Agent": GMAIL_PROXY})
    client.get(click("ann-tok", 2))
    client.head(click("ann-tok", 2))
    client.get(click("ghost-tok", 0))  # a row token in no ledger: recorded unlinked
    with engine.begin() as conn:  # a body this code cannot read fails with its reason, like any row
        store_body(conn, "acme", "tracking", None, b'{"v": 1, "kind": "open"}', "application/json")
    counts = apply_webhook_rows(engine, workspace.root, tenant)
    assert counts == {"applied": 4, "events": 4, "linked": 3, "duplicates": 0, "files": 0, "failed": 1,
                      "too_soon": 0, "scanner_burst": 0}
    assert events(engine) == [
        ("opened", "tracking", "ann-tok", None, None, False, "gmail_proxy"),
        ("clicked", "tracking", "ann-tok", 2, LINK, False, "person"),
        ("clicked", "tracking", "ann-tok", 2, LINK, True, "head_request"),
        ("clicked", "tracking", None, 0, LINK, False, "person"),
    ]
    with engine.connect() as conn:
        inbox = conn.execute(sa.text("SELECT outcome, detail, octet_length(body) FROM webhook_inbox ORDER BY id")).all()
        everything = conn.execute(sa.text(
            "SELECT (SELECT string_agg(w::text, ' ') FROM webhook_inbox w) || (SELECT string_agg(e::text, ' ') FROM delivery_events e)"
        )).scalar()
    assert inbox[:4] == [("applied", None, 0)] * 4
    assert inbox[4][0] == "failed" and inbox[4][1] == "body not readable: row must be a ledger row token" and inbox[4][2] > 0
    assert "127.0.0.1" not in everything and "marker-ua-7f3e" not in everything and "GoogleImageProxy" not in everything


def test_too_soon_after_the_hand_off_and_bursts_across_two_batches(tracked, workspace):
    client, engine, tenant = tracked
    _ledger(engine, "ann-tok", "bob-tok", "cy-tok")
    _ledger(engine, "fresh-tok", settled_s_ago=0)
    client.get(pixel("fresh-tok"))  # within 2 s of the hand-off: a machine
    client.head(click("fresh-tok", 0))  # a request-time machine keeps its own rule
    client.get(click("ann-tok", 0))  # ann clicks one link, then a second within 5 s, in another batch
    client.get(click("bob-tok", 0))  # bob clicks the same link twice: no burst
    client.get(click("bob-tok", 0))
    client.get(pixel("cy-tok"))  # cy opens and clicks once: no burst
    client.get(click("cy-tok", 1))
    first = apply_webhook_rows(engine, workspace.root, tenant)
    client.get(click("ann-tok", 1))
    second = apply_webhook_rows(engine, workspace.root, tenant)
    assert (first["too_soon"], first["scanner_burst"]) == (1, 0)
    assert (second["too_soon"], second["scanner_burst"]) == (0, 2)  # the earlier click is reclassified too
    assert events(engine) == [
        ("opened", "tracking", "fresh-tok", None, None, True, "too_soon"),
        ("clicked", "tracking", "fresh-tok", 0, LINK, True, "head_request"),
        ("clicked", "tracking", "ann-tok", 0, LINK, True, "scanner_burst"),
        ("clicked", "tracking", "bob-tok", 0, LINK, False, "person"),
        ("clicked", "tracking", "bob-tok", 0, LINK, False, "person"),
        ("opened", "tracking", "cy-tok", None, None, False, "person"),
        ("clicked", "tracking", "cy-tok", 1, LINK, False, "person"),
        ("clicked", "tracking", "ann-tok", 1, LINK, True, "scanner_burst"),
    ]


def test_a_stored_body_again_is_one_row_two_hits_are_two(tracked):
    client, engine, _ = tracked
    client.get(click("ann-tok", 0))
    client.get(click("ann-tok", 0))
    with engine.connect() as conn:
        body = bytes(conn.execute(sa.text("SELECT body FROM webhook_inbox ORDER BY id LIMIT 1")).scalar())
    with engine.begin() as conn:
        assert store_bodies(conn, [("acme", "tracking", None, body, "application/json")]) == [False]
    assert len(hits(engine)) == 2


def test_with_the_database_down_a_click_still_redirects_and_the_lost_hit_is_counted(workspace, monkeypatch):
    monkeypatch.delenv(TRUSTED_PROXIES_ENV, raising=False)
    workspace.tenant("acme", TENANT)
    nowhere = sa.create_engine("postgresql+psycopg://postgres@127.0.0.1:1/none", connect_args={"connect_timeout": 2})
    app = build_app(workspace.root, nowhere, signing_key=lambda: SIGNING_KEY)
    with serving(app) as url, httpx.Client(base_url=url, headers={"User-Agent": BROWSER}) as client:
        clicked = client.get(click("ann-tok", 0), follow_redirects=False)
        opened = client.get(pixel("ann-tok"))
        figures = client.get("/metrics").text
    assert clicked.status_code == 302 and clicked.headers["location"] == LINK
    assert opened.status_code == 200 and opened.content == PIXEL_GIF
    assert 'email_engine_tracking_hits_lost_total{kind="click"} 1.0' in figures
    assert 'email_engine_tracking_hits_lost_total{kind="open"} 1.0' in figures


def test_a_database_that_hangs_does_not_hold_the_person_back(workspace, monkeypatch):
    """A server that accepts connections and never answers: the click is answered when the store
    deadline passes, and the hit counts as lost once the write gives up (its connect timeout)."""
    monkeypatch.delenv(TRUSTED_PROXIES_ENV, raising=False)
    workspace.tenant("acme", TENANT)
    with socket.create_server(("127.0.0.1", 0)) as silent:
        port = silent.getsockname()[1]
        hanging = sa.create_engine(f"postgresql+psycopg://postgres@127.0.0.1:{port}/none", connect_args={"connect_timeout": 2})
        app = build_app(workspace.root, hanging, signing_key=lambda: SIGNING_KEY, tracking_store_timeout_s=0.5)
        with serving(app) as url, httpx.Client(base_url=url, headers={"User-Agent": BROWSER}) as client:
            began = time.monotonic()
            clicked = client.get(click("ann-tok", 0), follow_redirects=False)
            answered_after = time.monotonic() - began
            lost = 'email_engine_tracking_hits_lost_total{kind="click"} 1.0'
            assert lost not in client.get("/metrics").text  # still being written: not lost yet
            deadline = time.monotonic() + 10
            while lost not in client.get("/metrics").text:
                assert time.monotonic() < deadline, "the lost hit was never counted"
                time.sleep(0.2)
    assert clicked.status_code == 302 and clicked.headers["location"] == LINK
    assert 0.4 < answered_after < 1.5
