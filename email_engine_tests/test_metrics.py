"""Metrics: the webhook app's /metrics over real HTTP (and who may read it), `email-engine metrics
serve` scraped over real HTTP against PostgreSQL, the maintained counts, the Grafana dashboard
against what is really exported, and the JSON log format."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families

from email_engine_assets import cli
from email_engine_assets.feedback.webhook_app import build_app
from email_engine_assets.feedback.webhook_server import WebhookLimits, uvicorn_settings
from email_engine_assets.metrics import families as f
from email_engine_assets.metrics.access import Denied, check_access, direct_loopback
from email_engine_assets.metrics.log_format import JsonFormatter, configure, scrub
from email_engine_resources import postgres as database
from email_engine_tests.http_servers import serving
from email_engine_tests.webhook_helpers import SIGNING_KEY, TENANT_YAML, free_port, webhook_env

PROJECT_ROOT = Path(__file__).resolve().parents[1]
GRAFANA = PROJECT_ROOT / "deploy" / "grafana"
TOKEN = "metrics-token-0123456789abcdef0123456789"


def samples(text: str) -> dict[tuple[str, tuple], float]:
    """``{(sample name, sorted labels): value}`` of an exposition."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def family_names(text: str) -> set[str]:
    return {fam.name for fam in text_string_to_metric_families(text)}


# --- who may read the webhook app's /metrics ---------------------------------------------------------

def status_of(client: str | None, headers: dict, token: str | None) -> int:
    try:
        check_access(client, {k.lower(): v for k, v in headers.items()}, token)
    except Denied as exc:
        return exc.status
    return 200


def test_loopback_is_answered_and_anyone_else_needs_the_token():
    for host in ("127.0.0.1", "127.8.9.1", "::1", "::ffff:127.0.0.1"):
        assert status_of(host, {}, None) == 200, host
    for host in ("10.0.0.5", "203.0.113.9", "::ffff:203.0.113.9", "2001:db8::1", None, "", "localhost"):
        assert status_of(host, {}, None) == 403, host  # no token configured: loopback only
        assert status_of(host, {}, TOKEN) == 401, host
        assert status_of(host, {"Authorization": "Bearer wrong"}, TOKEN) == 401, host
        assert status_of(host, {"Authorization": f"Basic {TOKEN}"}, TOKEN) == 401, host
        assert status_of(host, {"Authorization": f"Bearer {TOKEN}"}, TOKEN) == 200, host
    # A token too short to face the internet is not one: loopback only.
    assert status_of("203.0.113.9", {"Authorization": "Bearer short"}, "short") == 403


def test_a_forwarded_request_never_counts_as_loopback():
    # Through a reverse proxy on the same host the peer is 127.0.0.1; with --proxy-headers the
    # address may come from a header the client wrote. Either way: the token is needed.
    for header in ("X-Forwarded-For", "Forwarded", "X-Real-IP", "X-Forwarded-Host"):
        headers = {header.lower(): "127.0.0.1"}
        assert not direct_loopback("127.0.0.1", headers)
        assert status_of("127.0.0.1", headers, None) == 403
        assert status_of("127.0.0.1", headers, TOKEN) == 401
        assert status_of("127.0.0.1", {**headers, "authorization": f"Bearer {TOKEN}"}, TOKEN) == 200


# --- the webhook app over real HTTP ----------------------------------------------------------------------

@pytest.fixture
def app(engine, workspace, monkeypatch):
    with engine.begin() as conn:
        conn.exec_driver_sql("TRUNCATE webhook_inbox RESTART IDENTITY")
    webhook_env(monkeypatch)
    monkeypatch.delenv("EMAIL_ENGINE_METRICS_TOKEN", raising=False)
    workspace.tenant("acme", TENANT_YAML.format(tenant="acme"), sources=("crm", "files"))
    return build_app(workspace.root, engine, signing_key=lambda: SIGNING_KEY)


def test_webhook_metrics_count_requests_by_route_and_status_and_show_the_backlog(app, engine):
    with engine.begin() as conn:
        conn.execute(sa.text(
            """INSERT INTO webhook_inbox (tenant_id, kind, body, dedupe_key) VALUES
               ('acme', 'mailwizz', '\\x7b7d', 'a'), ('acme', 'mailwizz', '\\x7b7d', 'b'), ('globex', 'mailwizz', '\\x7b7d', 'c')"""))
        conn.execute(sa.text("UPDATE webhook_inbox SET applied_at = now(), outcome = 'applied' WHERE dedupe_key = 'b'"))
    with serving(app, **uvicorn_settings(WebhookLimits())) as url:
        with httpx.Client(base_url=url, timeout=10) as client:
            assert client.get("/health").status_code == 200
            assert client.post("/hooks/mailwizz/acme", content=b"{}").status_code == 401
            assert client.post("/hooks/mailwizz/acme?token=secret-in-the-url", content=b"{}").status_code == 401
            assert client.get("/no/such/route").status_code == 404
            got = client.get("/metrics")
    assert got.status_code == 200
    assert got.headers["content-type"].startswith("text/plain")
    found = samples(got.text)
    requests = f.WEBHOOK_REQUESTS + "_total"
    assert found[(requests, (("method", "GET"), ("route", "/health"), ("status", "200")))] == 1
    assert found[(requests, (("method", "POST"), ("route", "/hooks/mailwizz/{tenant}"), ("status", "401")))] == 2
    assert found[(requests, (("method", "GET"), ("route", "unmatched"), ("status", "404")))] == 1
    assert found[(f.WEBHOOK_LATENCY + "_count", (("route", "/hooks/mailwizz/{tenant}"),))] == 2
    assert found[(f.WEBHOOK_LATENCY + "_bucket", (("le", "+Inf"), ("route", "/health")))] == 1
    assert found[(f.INBOX_PENDING, (("tenant", "acme"),))] == 1
    assert found[(f.INBOX_PENDING, (("tenant", "globex"),))] == 1
    assert found[(f.INBOX_OLDEST_AGE, (("tenant", "acme"),))] >= 0
    # Neither a tenant's path nor a token of a URL becomes a label.
    assert "secret-in-the-url" not in got.text and "/hooks/mailwizz/acme" not in got.text


def test_webhook_metrics_refuse_forwarded_and_remote_clients_without_the_token(app, monkeypatch):
    # uvicorn told to trust forwarded headers from 127.0.0.1 (a proxy on the host): a client that
    # writes X-Forwarded-For: 127.0.0.1 itself still does not get the figures without the token.
    with serving(app, proxy_headers=True, forwarded_allow_ips="127.0.0.1", **uvicorn_settings(WebhookLimits())) as url:
        with httpx.Client(base_url=url, timeout=10) as client:
            assert client.get("/metrics").status_code == 200
            for forged in ("127.0.0.1", "203.0.113.9"):
                refused = client.get("/metrics", headers={"X-Forwarded-For": forged})
                assert refused.status_code == 403, forged
                assert "EMAIL_ENGINE_METRICS_TOKEN" in refused.json()["error"]
            monkeypatch.setenv("EMAIL_ENGINE_METRICS_TOKEN", TOKEN)
            proxied = {"X-Forwarded-For": "203.0.113.9"}
            assert client.get("/metrics", headers=proxied).status_code == 401
            wrong = client.get("/metrics", headers={**proxied, "Authorization": "Bearer " + "x" * len(TOKEN)})
            assert wrong.status_code == 401 and wrong.headers["www-authenticate"].startswith("Bearer")
            assert TOKEN not in wrong.text
            good = client.get("/metrics", headers={**proxied, "Authorization": f"Bearer {TOKEN}"})
            assert good.status_code == 200
            # The refusals are counted like any other answer.
            assert samples(good.text)[(f.WEBHOOK_REQUESTS + "_total", (("method", "GET"), ("route", "/metrics"), ("status", "401")))] == 2


# --- `email-engine metrics serve` ------------------------------------------------------------------------

def fill(engine) -> None:
    """Two tenants: ledger rows of two campaigns on two transports, events, suppressions, files."""
    with engine.begin() as conn:
        for t in ("acme", "globex"):
            conn.execute(sa.text("INSERT INTO tenants (tenant_id, name, config_sha256) VALUES (:t, :t, 'x')"), {"t": t})
            conn.execute(sa.text("INSERT INTO data_sources (tenant_id, source_id) VALUES (:t, 'crm')"), {"t": t})
        for t, c, transport in (("acme", "spring", "outbox"), ("acme", "summer", "powermta"), ("globex", "spring", "outbox")):
            conn.execute(sa.text(
                """INSERT INTO campaigns (tenant_id, campaign, state, segment, category, transport, config_sha256)
                   VALUES (:t, :c, 'running', 'all', 'news', :tr, 'x')"""), {"t": t, "c": c, "tr": transport})
        conn.execute(sa.text(
            """INSERT INTO campaign_sends (tenant_id, campaign, email, state, token)
               SELECT t, c, 'p' || i || '@example.com', s, t || c || i FROM (VALUES
                   ('acme', 'spring', 'sent', 1, 5), ('acme', 'spring', 'queued', 6, 8),
                   ('acme', 'summer', 'sent', 1, 2), ('globex', 'spring', 'failed', 1, 1)) v(t, c, s, a, b),
                   generate_series(a, b) i"""))
        conn.execute(sa.text(
            """INSERT INTO delivery_events (tenant_id, event_type, bounce_class, origin, occurred_at, dedupe_key, machine)
               VALUES ('acme', 'delivered', NULL, 'powermta', now(), 'd1', NULL), ('acme', 'delivered', NULL, 'powermta', now(), 'd2', NULL),
                      ('acme', 'bounced', 'hard', 'powermta', now(), 'b1', NULL), ('globex', 'opened', NULL, 'mailwizz', now(), 'o1', NULL),
                      ('acme', 'opened', NULL, 'tracking', now(), 'o2', true), ('acme', 'opened', NULL, 'tracking', now(), 'o3', false),
                      ('acme', 'clicked', NULL, 'tracking', now(), 'c1', false)"""))
        conn.execute(sa.text(
            """INSERT INTO suppressions (tenant_id, email, reason) VALUES
               ('acme', 'a@example.com', 'unsubscribed'), ('acme', 'b@example.com', 'unsubscribed'),
               ('globex', 'c@example.com', 'complained')"""))
        conn.execute(sa.text(
            """INSERT INTO import_files (tenant_id, source_id, path, content_sha256, size_bytes, status) VALUES
               ('acme', 'crm', 'a.csv', 'h1', 1, 'imported'), ('acme', 'crm', 'b.csv', 'h2', 1, 'failed')"""))


@pytest.fixture
def metrics_serve(engine, dagster_home_env):
    """``email-engine metrics serve`` in its own process on a free port, with JSON logs:
    yields ``(url, process)``; the process's stderr is left to read once it has stopped."""
    port = free_port()
    env = {**dagster_home_env, "EMAIL_ENGINE_LOG_FORMAT": "json"}
    proc = subprocess.Popen([str(Path(sys.executable).parent / "email-engine"), "metrics", "serve", "--port", str(port)],
                            env=env, cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        yield f"http://127.0.0.1:{port}/metrics", proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.communicate(timeout=20)


def test_metrics_serve_answers_a_real_scrape_from_postgresql(engine, metrics_serve):
    fill(engine)
    url, proc = metrics_serve
    try:
        text = scrape(url, proc)
        found = samples(text)
        ledger = {k[1]: v for k, v in found.items() if k[0] == f.LEDGER_ROWS}
        assert ledger == {
            (("state", "sent"), ("tenant", "acme"), ("transport", "outbox")): 5,
            (("state", "queued"), ("tenant", "acme"), ("transport", "outbox")): 3,
            (("state", "sent"), ("tenant", "acme"), ("transport", "powermta")): 2,
            (("state", "failed"), ("tenant", "globex"), ("transport", "outbox")): 1,
        }
        events = {tuple(v for _, v in k[1]): n for k, n in found.items() if k[0] == f.DELIVERY_EVENTS}  # bounce_class, classified, tenant, type
        assert events == {("", "", "acme", "delivered"): 2, ("hard", "", "acme", "bounced"): 1, ("", "unclassified", "globex", "opened"): 1,
                          ("", "machine", "acme", "opened"): 1, ("", "person", "acme", "opened"): 1, ("", "person", "acme", "clicked"): 1}
        assert found[(f.SUPPRESSIONS, (("reason", "unsubscribed"), ("tenant", "acme")))] == 2
        assert found[(f.SUPPRESSIONS, (("reason", "complained"), ("tenant", "globex")))] == 1
        assert found[(f.IMPORT_FILES, (("status", "failed"), ("tenant", "acme")))] == 1
        assert found[(f.RUNS_FAILED, ())] == 0
        assert found[(f.SOURCE_UP, (("source", "database"),))] == 1
        assert found[(f.SOURCE_UP, (("source", "dagster"),))] == 1
        assert set(f.engine_names()) <= family_names(text)

        # The counts follow every change (claims, settles, deletes, a suppression's reason).
        with engine.begin() as conn:
            conn.execute(sa.text("UPDATE campaign_sends SET state = 'sent' WHERE state = 'queued' AND campaign = 'spring'"))
            conn.execute(sa.text("UPDATE suppressions SET reason = 'manual' WHERE email = 'a@example.com'"))
            conn.execute(sa.text("DELETE FROM delivery_events WHERE dedupe_key = 'd1'"))
            conn.execute(sa.text("UPDATE delivery_events SET machine = true, classified_by = 'burst' WHERE dedupe_key = 'c1'"))
        found = samples(scrape(url, proc))
        assert found[(f.LEDGER_ROWS, (("state", "sent"), ("tenant", "acme"), ("transport", "outbox")))] == 8
        assert (f.LEDGER_ROWS, (("state", "queued"), ("tenant", "acme"), ("transport", "outbox"))) not in found
        assert found[(f.SUPPRESSIONS, (("reason", "unsubscribed"), ("tenant", "acme")))] == 1
        assert found[(f.SUPPRESSIONS, (("reason", "manual"), ("tenant", "acme")))] == 1
        assert found[(f.DELIVERY_EVENTS, (("bounce_class", ""), ("classified", ""), ("tenant", "acme"), ("type", "delivered")))] == 1
        # a click classed a machine's after the fact (a burst) moves between the classes
        assert found[(f.DELIVERY_EVENTS, (("bounce_class", ""), ("classified", "machine"), ("tenant", "acme"), ("type", "clicked")))] == 1
        assert (f.DELIVERY_EVENTS, (("bounce_class", ""), ("classified", "person"), ("tenant", "acme"), ("type", "clicked"))) not in found
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=20)
    # EMAIL_ENGINE_LOG_FORMAT=json: every line on stderr is one JSON object, without an address.
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines, "the server logs where it listens"
    for line in lines:
        record = json.loads(line)
        assert {"time", "level", "logger", "message"} <= set(record)
        assert "127.0.0.1" not in line
    with engine.connect() as conn:  # every delta was folded by the scrapes
        assert conn.execute(sa.text("SELECT count(*) FROM metric_count_deltas")).scalar() == 0


def scrape(url: str, proc: subprocess.Popen) -> str:
    deadline = time.monotonic() + 60
    while True:
        try:
            got = httpx.get(url, timeout=10)
            assert got.status_code == 200
            return got.text
        except httpx.TransportError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"metrics serve did not answer: {proc.communicate()}") from None
            time.sleep(0.2)


@pytest.fixture
def dagster_home_env(scratch_database, tmp_path, monkeypatch) -> dict:
    monkeypatch.setenv("EMAIL_ENGINE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("EMAIL_ENGINE_DAGSTER_DATABASE_URL", database.dagster_driver_url(scratch_database))
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    return dict(os.environ)


def test_counts_start_again_from_zero_after_a_truncate(engine):
    fill(engine)
    with engine.begin() as conn:
        conn.exec_driver_sql("TRUNCATE campaign_sends, delivery_events, suppressions CASCADE")
        rows = conn.execute(sa.text("SELECT count(*) FROM metric_counts")).scalar() + \
            conn.execute(sa.text("SELECT count(*) FROM metric_count_deltas")).scalar()
    assert rows == 0


def test_metrics_serve_refuses_a_port_out_of_range(capsys):
    assert cli.main(["metrics", "serve", "--port", "70000"]) == 2
    assert "--port" in capsys.readouterr().err


# --- the Grafana dashboard --------------------------------------------------------------------------------

_PROMQL_WORDS = {"sum", "by", "without", "rate", "irate", "increase", "histogram_quantile", "max", "min", "avg",
                 "count", "topk", "bottomk", "time", "le", "on", "ignoring", "group_left", "group_right", "and", "or",
                 "unless", "offset", "clamp_min", "clamp_max", "abs", "delta", "deriv", "max_over_time", "min_over_time",
                 "avg_over_time", "label_replace", "vector", "scalar", "absent", "changes", "resets", "sort", "sort_desc"}


def queried_metrics(expr: str) -> set[str]:
    """Metric names of a PromQL expression: identifiers outside label matchers, strings and
    durations, that are not functions, keywords or grouping labels."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # range durations
    expr = re.sub(r"(?<![\w.])\d[\d.]*(?:[eE][+-]?\d+)?", "", expr)  # numbers
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)  # grouping labels
    names = set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", expr))
    return {n for n in names if n not in _PROMQL_WORDS and not re.fullmatch(r"\d+[smhdwy]?", n)}


def exported(name: str, families: set[str]) -> bool:
    for suffix in ("_total", "_bucket", "_sum", "_count", ""):
        if name.endswith(suffix) and name[: len(name) - len(suffix)] in families:
            return True
    return False


def test_every_metric_a_dashboard_panel_queries_is_exported(app, engine, metrics_serve):
    fill(engine)
    with serving(app, **uvicorn_settings(WebhookLimits())) as url:
        with httpx.Client(base_url=url, timeout=10) as client:
            client.get("/health")
            webhook = client.get("/metrics").text
    engine_text = scrape(*metrics_serve)
    families = family_names(webhook) | family_names(engine_text)

    dashboard = json.loads((GRAFANA / "dashboards" / "email-engine.json").read_text())
    panels = [p for top in dashboard["panels"] for p in [top, *top.get("panels", [])]]
    exprs = [t["expr"] for p in panels for t in p.get("targets", []) if t.get("expr")]
    assert len(exprs) >= 8
    queried = set().union(*(queried_metrics(e) for e in exprs))
    assert queried and all(n.startswith("email_engine_") for n in queried), queried
    for variable in dashboard["templating"]["list"]:  # label_values(<metric>, <label>)
        query = variable.get("query")
        query = query.get("query", "") if isinstance(query, dict) else ""
        queried |= set(re.findall(r"label_values\((\w+)", query))
    missing = sorted(n for n in queried if not exported(n, families))
    assert missing == []
    provisioning = (GRAFANA / "provisioning" / "dashboards" / "email-engine.yaml").read_text()
    assert "/var/lib/grafana/dashboards" in provisioning or "path:" in provisioning


def test_the_promql_reader_finds_metric_names_and_not_labels():
    expr = ('sum by (tenant, state) (rate(email_engine_webhook_requests_total{route="/h", status=~"5.."}[5m])) '
            '/ ignoring(x) clamp_min(email_engine_ledger_rows, 1e-9) > 0.5')
    assert queried_metrics(expr) == {"email_engine_webhook_requests_total", "email_engine_ledger_rows"}
    assert exported("email_engine_webhook_request_duration_seconds_bucket", {"email_engine_webhook_request_duration_seconds"})
    assert not exported("email_engine_nothing_total", {"email_engine_ledger_rows"})


# --- EMAIL_ENGINE_LOG_FORMAT=json --------------------------------------------------------------------------

def test_json_log_lines_hold_no_address_and_no_secret():
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    log = logging.getLogger("email_engine.test_json")
    log.addHandler(handler)
    log.propagate = False
    try:
        log.warning("refused %s from 203.0.113.9 and 2001:db8::7 via https://user:pw@host/x?token=abc123&x=1",
                    "Person.Name+tag@example.co.uk")
        log.error("auth header Bearer s3cr3t-value, api_key: k-999, X-Webhook-Token=tok, password=hunter2")
        try:
            raise ValueError("bad address jane@example.com")
        except ValueError:
            log.exception("failed for %s", "x@y.org")
    finally:
        log.removeHandler(handler)
    lines = out.getvalue().splitlines()
    assert len(lines) == 3
    records = [json.loads(line) for line in lines]
    assert records[0]["level"] == "WARNING" and records[0]["logger"] == "email_engine.test_json"
    text = out.getvalue()
    for leaked in ("example.co.uk", "Person.Name", "203.0.113.9", "2001:db8::7", "user:pw", "abc123", "s3cr3t",
                   "k-999", "=tok", "hunter2", "jane@", "x@y.org"):
        assert leaked not in text, leaked
    assert "[address]" in records[0]["message"] and "[ip]" in records[0]["message"]
    assert "ValueError" in records[2]["exception"] and "[address]" in records[2]["exception"]
    assert scrub("campaign spring: 12 sent in 3.5 s") == "campaign spring: 12 sent in 3.5 s"


def test_an_unknown_log_format_is_refused(capsys, monkeypatch):
    with pytest.raises(ValueError, match="EMAIL_ENGINE_LOG_FORMAT"):
        configure({"EMAIL_ENGINE_LOG_FORMAT": "xml"})
    monkeypatch.setenv("EMAIL_ENGINE_LOG_FORMAT", "xml")
    assert cli.main(["metrics", "serve"]) == 2
    assert "EMAIL_ENGINE_LOG_FORMAT" in capsys.readouterr().err


# --- the Dagster part: sensor tick age, failed runs ------------------------------------------------------

def test_sensor_tick_age_and_failed_runs_come_from_the_instance():
    import dagster as dg
    from dagster._core.remote_origin import RegisteredCodeLocationOrigin, RemoteInstigatorOrigin, RemoteRepositoryOrigin
    from dagster._core.scheduler.instigation import InstigatorState, InstigatorStatus, InstigatorType, TickData, TickStatus

    from email_engine_assets.metrics.collector import read_dagster

    @dg.op
    def breaks():
        raise RuntimeError("boom")

    @dg.job
    def failing():
        breaks()

    now = time.time()
    repository = RemoteRepositoryOrigin(RegisteredCodeLocationOrigin("email_engine"), "__repository__")
    with dg.instance_for_test() as instance:
        for name, status, ticked in (("inbox_sensor", InstigatorStatus.RUNNING, now - 42),
                                     ("doctor_sensor", InstigatorStatus.STOPPED, now - 5),
                                     ("quiet_sensor", InstigatorStatus.RUNNING, None)):
            state = InstigatorState(RemoteInstigatorOrigin(repository, name), InstigatorType.SENSOR, status)
            instance.add_instigator_state(state)
            if ticked is not None:
                instance.create_tick(TickData(instigator_origin_id=state.instigator_origin_id, instigator_name=name,
                                              instigator_type=InstigatorType.SENSOR, status=TickStatus.SKIPPED,
                                              timestamp=ticked, selector_id=state.selector_id))
        for _ in range(2):
            assert not failing.execute_in_process(instance=instance, raise_on_error=False).success
        ages, runs = read_dagster(instance, now)
    assert ages.name == f.SENSOR_TICK_AGE
    assert ages.samples == [(("inbox_sensor",), 42.0)]  # a stopped sensor and one that never ticked: no sample
    assert runs.samples == [((), 2.0)]
