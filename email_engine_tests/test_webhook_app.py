"""The webhook app over real HTTP (uvicorn on loopback) and a real PostgreSQL: status codes, nothing
stored on a refusal, a retry stored once, one-click unsubscribe, concurrent clients."""

from __future__ import annotations

import asyncio
import json
import socket
import time

import httpx
import psycopg
import pytest
import sqlalchemy as sa

from email_engine_assets.campaigns.store import claim_batch
from email_engine_assets.content.unsubscribe import unsubscribe_token
from email_engine_assets.feedback.webhook_app import GroupCommit, build_app
from email_engine_assets.feedback.webhook_auth import sign
from email_engine_assets.feedback.webhook_server import WebhookLimits, uvicorn_settings
from email_engine_tests.http_servers import serving
from email_engine_tests.test_webhook_core import mailwizz_body
from email_engine_tests.webhook_helpers import (
    CONTACTS_SECRET,
    MAILWIZZ_TOKEN,
    SIGNING_KEY,
    TENANT_YAML,
    webhook_env,
)


@pytest.fixture
def hooks(engine, workspace, monkeypatch):
    """(base URL, engine, workspace) of the app serving the tenant ``acme``."""
    with engine.begin() as conn:
        conn.exec_driver_sql("TRUNCATE webhook_inbox RESTART IDENTITY")
    webhook_env(monkeypatch)
    workspace.tenant("acme", TENANT_YAML.format(tenant="acme"), sources=("crm", "files"))
    with serving(build_app(workspace.root, engine, signing_key=lambda: SIGNING_KEY), **uvicorn_settings(WebhookLimits())) as url:
        yield url, engine, workspace


def stored(engine) -> list[tuple]:
    with engine.connect() as conn:
        return conn.execute(sa.text("SELECT tenant_id, kind, source_id, body FROM webhook_inbox ORDER BY id")).all()


def signed(body: bytes, secret: str = CONTACTS_SECRET, at: float | None = None) -> dict:
    return {"X-Signature": sign(secret, int(time.time() if at is None else at), body), "Content-Type": "application/json"}


def test_mailwizz_hits_need_the_tenant_token(hooks):
    url, engine, _ = hooks
    body = mailwizz_body()
    with httpx.Client(base_url=url) as client:
        missing = client.post("/hooks/mailwizz/acme", content=body)
        wrong = client.post("/hooks/mailwizz/acme", content=body, params={"token": "guess"})
        wrong_header = client.post("/hooks/mailwizz/acme", content=body, headers={"X-Webhook-Token": MAILWIZZ_TOKEN + "x"})
        unknown = client.post("/hooks/mailwizz/globex", content=body, params={"token": MAILWIZZ_TOKEN})
        traversal = client.post("/hooks/mailwizz/..%2Facme", content=body, params={"token": MAILWIZZ_TOKEN})
        assert stored(engine) == []
        by_query = client.post("/hooks/mailwizz/acme", content=body, params={"token": MAILWIZZ_TOKEN})
        retry = client.post("/hooks/mailwizz/acme", content=body, headers={"X-Webhook-Token": MAILWIZZ_TOKEN})
        other = client.post("/hooks/mailwizz/acme", content=mailwizz_body("click"), headers={"X-Webhook-Token": MAILWIZZ_TOKEN})
    assert [r.status_code for r in (missing, wrong, wrong_header)] == [401, 401, 401]
    assert missing.json() == {"error": "missing webhook token (query parameter token= or header X-Webhook-Token)"}
    assert wrong.json() == {"error": "webhook token does not match"}
    assert MAILWIZZ_TOKEN not in wrong_header.text
    assert (unknown.status_code, unknown.json()) == (404, {"error": "unknown tenant"})
    assert traversal.status_code == 404
    assert [r.status_code for r in (by_query, retry, other)] == [200, 200, 200]
    assert (by_query.json(), retry.json()) == ({"status": "stored"}, {"status": "duplicate"})
    assert stored(engine) == [("acme", "mailwizz", None, body), ("acme", "mailwizz", None, mailwizz_body("click"))]


def test_malformed_bodies_are_422_and_stored_nowhere(hooks):
    url, engine, _ = hooks
    with httpx.Client(base_url=url) as client:
        mailwizz = client.post("/hooks/mailwizz/acme", content=b'{"event": {"type": "bounce"}}', params={"token": MAILWIZZ_TOKEN})
        ndjson = b'{"email": "a@example.com"}\n{"email": "b@example.com"\n'
        contacts = client.post("/hooks/contacts/acme/crm", content=ndjson, headers=signed(ndjson))
    assert (mailwizz.status_code, mailwizz.json()) == (422, {"error": "event.type must be one of open, click"})
    assert contacts.status_code == 422 and contacts.json()["error"].startswith("NDJSON line 2 is not JSON")
    assert stored(engine) == []


def test_over_the_cap_is_413_with_or_without_content_length(hooks):
    url, engine, _ = hooks
    big = b'{"email": "a@example.com", "note": "' + b"x" * (1 << 20) + b'"}'

    def chunks():
        for start in range(0, len(big), 64 << 10):
            yield big[start:start + (64 << 10)]

    with httpx.Client(base_url=url) as client:
        declared = client.post("/hooks/contacts/acme/crm", content=big, headers=signed(big))
        streamed = client.post("/hooks/contacts/acme/crm", content=chunks(), headers=signed(big))
        mailwizz = client.post("/hooks/mailwizz/acme", content=chunks(), params={"token": MAILWIZZ_TOKEN})
        small = b'{"email": "a@example.com"}'
        fine = client.post("/hooks/contacts/acme/crm", content=small, headers=signed(small))
    assert "transfer-encoding" not in declared.request.headers and "content-length" in declared.request.headers
    assert streamed.request.headers["transfer-encoding"] == "chunked"
    assert [r.status_code for r in (declared, streamed, mailwizz)] == [413, 413, 413]
    assert declared.json() == {"error": f"body is {len(big)} bytes; at most {1 << 20} bytes are taken"}
    assert streamed.json() == {"error": f"body is over {1 << 20} bytes; at most {1 << 20} bytes are taken"}
    # A client announcing a GiB and sending a few bytes is answered at once: nothing is read first.
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as raw:
        raw.sendall(f"POST /hooks/mailwizz/acme?token={MAILWIZZ_TOKEN} HTTP/1.1\r\nHost: x\r\n"
                    f"Content-Length: {1 << 30}\r\n\r\n{{}}".encode())
        assert raw.recv(100).startswith(b"HTTP/1.1 413 ")
    assert fine.status_code == 200
    assert [row.body for row in stored(engine)] == [small]


def test_contacts_pushes_need_a_fresh_signature_of_the_exact_body(hooks):
    url, engine, workspace = hooks
    body = b'[{"email": "a@example.com", "first_name": "Ann"}]'
    now = time.time()
    with httpx.Client(base_url=url) as client:
        post = lambda path, content, headers: client.post(path, content=content, headers=headers)  # noqa: E731
        refusals = {
            "no signature": post("/hooks/contacts/acme/crm", body, {}),
            "stale": post("/hooks/contacts/acme/crm", body, signed(body, at=now - 360)),
            "future": post("/hooks/contacts/acme/crm", body, signed(body, at=now + 360)),
            "other secret": post("/hooks/contacts/acme/crm", body, signed(body, secret="nope")),
            "body changed": post("/hooks/contacts/acme/crm", body + b" ", signed(body)),
        }
        unknown_source = post("/hooks/contacts/acme/nosuch", body, signed(body))
        unsigned_source = post("/hooks/contacts/acme/files", body, signed(body))
        unknown_tenant = post("/hooks/contacts/globex/crm", body, signed(body))
        assert stored(engine) == []
        headers = signed(body)
        first = post("/hooks/contacts/acme/crm", body, headers)
        replay = post("/hooks/contacts/acme/crm", body, headers)  # the same request again, within the window
        later = post("/hooks/contacts/acme/crm", body, signed(body, at=now + 60))  # a retry signed anew
    assert {k: r.status_code for k, r in refusals.items()} == dict.fromkeys(refusals, 401)
    assert refusals["stale"].json() == {"error": "signature timestamp is outside the 5-minute window (check the sender's clock)"}
    assert refusals["body changed"].json() == {"error": "signature does not match the body"}
    assert CONTACTS_SECRET not in "".join(r.text for r in refusals.values())
    assert (unknown_source.status_code, unknown_source.json()) == (404, {"error": "unknown source"})
    assert unsigned_source.status_code == 404 and "webhook_secret" in unsigned_source.json()["error"]
    assert unknown_tenant.status_code == 404
    assert [r.json()["status"] for r in (first, replay, later)] == ["stored", "duplicate", "duplicate"]
    assert stored(engine) == [("acme", "contacts", "crm", body)]


def test_a_missing_secret_or_a_broken_tenant_file_is_503_and_an_edited_file_is_read_again(hooks, monkeypatch):
    url, engine, workspace = hooks
    body = mailwizz_body()
    with httpx.Client(base_url=url) as client:
        assert client.post("/hooks/mailwizz/acme", content=body, params={"token": MAILWIZZ_TOKEN}).status_code == 200
        monkeypatch.delenv("TEST_MAILWIZZ_TOKEN")
        unset = client.post("/hooks/mailwizz/acme", content=mailwizz_body("click"), params={"token": MAILWIZZ_TOKEN})
        path = workspace.root / "tenants" / "acme.yaml"
        path.write_text(TENANT_YAML.format(tenant="acme").replace("TEST_MAILWIZZ_TOKEN", "OTHER_TOKEN_VAR") + "\n")
        monkeypatch.setenv("OTHER_TOKEN_VAR", ROTATED)
        old = client.post("/hooks/mailwizz/acme", content=mailwizz_body("click"), params={"token": MAILWIZZ_TOKEN})
        new = client.post("/hooks/mailwizz/acme", content=mailwizz_body("click"), params={"token": ROTATED})
        path.write_text("id: acme\nname: [broken\n")
        broken = client.post("/hooks/mailwizz/acme", content=mailwizz_body("click"), params={"token": ROTATED})
        health = client.get("/health")
        nowhere = client.get("/nowhere")
    assert (unset.status_code, unset.json()) == (503, {"error": "the MailWizz webhook token is not available on this server; try again later"})
    assert "TEST_MAILWIZZ_TOKEN" not in unset.text
    assert (old.status_code, new.status_code) == (401, 200)
    assert broken.status_code == 503 and "acme" in broken.json()["error"]
    assert (health.status_code, health.json()) == (200, {"status": "ok"})
    assert (nowhere.status_code, nowhere.json()) == (404, {"error": "no such route"})
    assert len(stored(engine)) == 2


ROTATED = "rotated-token-value-0123456789abcdef"


def _ledger(engine) -> dict:
    """Tenant acme, a contact, a sent campaign ``spring`` and a running campaign ``autumn`` queued for the same contact."""
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO tenants (tenant_id, name, config_sha256) VALUES ('acme', 'Acme', 'x')"))
        contact_id = conn.execute(sa.text(
            "INSERT INTO contacts (tenant_id, email) VALUES ('acme', 'ann@example.com') RETURNING contact_id")).scalar()
        for campaign, state in (("spring", "completed"), ("autumn", "running")):
            conn.execute(sa.text(
                """INSERT INTO campaigns (tenant_id, campaign, state, segment, category, transport, config_sha256)
                   VALUES ('acme', :c, :s, 'all', 'news', 'outbox', 'x')"""), {"c": campaign, "s": state})
            conn.execute(sa.text(
                """INSERT INTO campaign_sends (tenant_id, campaign, contact_id, email, state, token)
                   VALUES ('acme', :c, :id, 'ann@example.com', :st, :c || '-tok')"""),
                {"c": campaign, "id": contact_id, "st": "sent" if campaign == "spring" else "queued"})
    return {"contact_id": contact_id}


def _feedback(engine) -> tuple[list, list]:
    with engine.connect() as conn:
        suppressions = conn.execute(sa.text("SELECT email, reason FROM suppressions WHERE tenant_id = 'acme'")).all()
        events = conn.execute(sa.text(
            """SELECT e.event_type, e.origin, e.campaign, e.email, s.token FROM delivery_events e
               LEFT JOIN campaign_sends s ON s.row_id = e.send_row_id WHERE e.tenant_id = 'acme'""")).all()
    return suppressions, events


def test_one_click_unsubscribe(hooks):
    url, engine, _ = hooks
    contact_id = _ledger(engine)["contact_id"]
    token = unsubscribe_token(SIGNING_KEY, "acme", "spring", contact_id)
    forged = unsubscribe_token(b"x" * 32, "acme", "spring", contact_id)
    one_click = {"Content-Type": "application/x-www-form-urlencoded"}
    with httpx.Client(base_url=url) as client:
        page = client.get(f"/u/{token}")
        assert _feedback(engine) == ([], [])  # a link scanner's GET changes nothing
        bad = [client.get(f"/u/{forged}"), client.post(f"/u/{forged}", content=b"List-Unsubscribe=One-Click", headers=one_click),
               client.post("/u/garbage", content=b"List-Unsubscribe=One-Click", headers=one_click)]
        no_body = client.post(f"/u/{token}", headers=one_click)
        assert _feedback(engine) == ([], [])
        done = client.post(f"/u/{token}", content=b"List-Unsubscribe=One-Click", headers=one_click)
        again = client.post(f"/u/{token}", content=b"List-Unsubscribe=One-Click", headers=one_click)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<form method="post"' in page.text and 'name="List-Unsubscribe" value="One-Click"' in page.text
    assert page.headers["cache-control"] == "no-store"
    assert [r.status_code for r in bad] == [400, 400, 400]
    assert bad[0].json() == {"error": "unsubscribe token signature does not match"}
    assert (no_body.status_code, no_body.json()) == (422, {"error": "body must be List-Unsubscribe=One-Click (RFC 8058)"})
    assert (done.status_code, again.status_code) == (200, 200)
    assert _feedback(engine) == ([("ann@example.com", "unsubscribed")],
                                 [("unsubscribed", "unsubscribe_link", "spring", "ann@example.com", "spring-tok")])
    with engine.begin() as conn:  # the next batch of another campaign honours it at claim time
        claimed, skipped = claim_batch(conn, "acme", "autumn", 10)
    assert (claimed, skipped) == ([], 1)


def test_2000_requests_from_20_clients_are_each_stored_once(hooks):
    url, engine, _ = hooks
    bodies = [json.dumps({"email": f"user{i}@example.com", "n": i}).encode() for i in range(1800)]
    # 200 of the requests are retries of earlier bodies (MailWizz and scrapers retry on timeouts).
    sends = bodies + bodies[:200]
    answers: list[tuple[bytes, int]] = []

    async def client_task(queue: asyncio.Queue) -> None:
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            while not queue.empty():
                body = queue.get_nowait()
                response = await client.post("/hooks/contacts/acme/crm", content=body, headers=signed(body))
                answers.append((body, response.status_code))

    async def main() -> None:
        queue: asyncio.Queue = asyncio.Queue()
        for body in sends:
            queue.put_nowait(body)
        await asyncio.gather(*(client_task(queue) for _ in range(20)))

    asyncio.run(main())
    assert len(answers) == 2000 and {status for _, status in answers} == {200}
    rows = stored(engine)
    assert len(rows) == len(bodies) and sorted(r.body for r in rows) == sorted(bodies)


def test_a_database_that_does_not_answer_is_503_so_the_sender_retries(workspace, monkeypatch):
    webhook_env(monkeypatch)
    workspace.tenant("acme", TENANT_YAML.format(tenant="acme"), sources=("crm", "files"))
    nowhere = sa.create_engine("postgresql+psycopg://postgres@127.0.0.1:1/none", connect_args={"connect_timeout": 2})
    with serving(build_app(workspace.root, nowhere, signing_key=lambda: SIGNING_KEY)) as url, httpx.Client(base_url=url) as client:
        hit = client.post("/hooks/mailwizz/acme", content=mailwizz_body(), params={"token": MAILWIZZ_TOKEN})
        health = client.get("/health")
    assert (hit.status_code, hit.json()) == (503, {"error": "the database is not available; try again later"})
    assert health.status_code == 503


def test_a_batch_that_fails_gives_every_request_of_it_the_error_and_stores_none_of_it(engine):
    with engine.begin() as conn:
        conn.exec_driver_sql("TRUNCATE webhook_inbox RESTART IDENTITY")
    store = GroupCommit(engine, writers=1)

    async def main():
        # Queued in one turn of the loop: one batch, whose bad tenant id breaks a CHECK constraint.
        failed = await asyncio.gather(store("acme", "mailwizz", None, b"a", None),
                                      store("Not A Slug", "mailwizz", None, b"b", None),
                                      store("acme", "mailwizz", None, b"c", None), return_exceptions=True)
        again = await asyncio.gather(store("acme", "mailwizz", None, b"a", None), store("acme", "mailwizz", None, b"a", None))
        return failed, again

    failed, again = asyncio.run(main())
    assert [type(r) for r in failed] == [psycopg.errors.CheckViolation] * 3
    assert again == [True, False]  # the next batch, on a new connection: stored once, the copy a duplicate
    assert [r.body for r in stored(engine)] == [b"a"]
