"""Own tracking end to end: a campaign sent through the PowerMTA stand-in with the tenant's tracking on,
its messages' links followed as people and as machines would follow them, over real HTTP to the
webhook app, and the campaign's stats telling the two apart.

Real parts: SMTP injection into the stand-in, the real composer (templates, signing key), uvicorn
serving the webhook app on loopback, the inbox sensor, PostgreSQL, the stats as the CLI shows them.
"""

from __future__ import annotations

import email
import email.policy
import re
import textwrap

import dagster as dg
import httpx
import sqlalchemy as sa

from email_engine_assets import campaign_runs
from email_engine_assets.feedback.webhook_app import build_app
from email_engine_assets.feedback.webhook_sensor import webhook_inbox_sensor
from email_engine_assets.feedback.webhook_server import WebhookLimits, uvicorn_settings
from email_engine_resources.postgres import PostgresResource
from email_engine_resources.transports import PowerMtaResource
from email_engine_tests.content_helpers import simple, write_template
from email_engine_tests.http_servers import serving
from email_engine_tests.powermta_server import PowerMtaStandIn
from email_engine_tests.test_campaign_transports import SIGNING_KEY, TENANT, pmta_yaml, setup

PEOPLE = [(f"{name}@example.com", name.title(), "en") for name in ("ann", "bob", "cy", "dan", "eve")]
BROWSER = "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Safari/605.1.15"
BODY = ('<p>Hello {{ first_name }}</p><a href="https://shop.acme.example/spring">Shop</a> '
        '<a href="https://shop.acme.example/blog?id=7&amp;ref=mail">Blog</a> '
        '<a href="https://acme.example/about">About us</a> <a href="{{ unsubscribe_url }}">unsubscribe</a>')
LINKS = ["https://shop.acme.example/spring", "https://shop.acme.example/blog?id=7&ref=mail", "https://acme.example/about"]


def tracking_yaml(base_url: str) -> str:
    return (f"tracking:\n  opens: true\n  clicks: true\n  base_url: {base_url}\n  exclude_tag: no-tracking\n"
            "  machines:\n    too_soon_s: 10\n")


def message_links(message_bytes: bytes, base_url: str) -> tuple[list[str], str, str]:
    """(the click URLs of the HTML part in order, the pixel URL, the unsubscribe link) of one message."""
    message = email.message_from_bytes(message_bytes, policy=email.policy.default)
    html = message.get_body(("html",)).get_content()
    clicks = re.findall(rf'href="({re.escape(base_url)}/c/[\w.-]+)"', html)
    [pixel] = re.findall(rf'<img src="({re.escape(base_url)}/o/[\w.-]+)"', html)
    [unsubscribe] = re.findall(r'href="([^"]+/u/[\w.-]+)"', html)
    return clicks, pixel, unsubscribe


def test_people_and_scanners_follow_the_links_of_a_powermta_campaign_and_the_stats_tell_them_apart(
    engine, db_url, workspace, monkeypatch
):
    app = build_app(workspace.root, engine, signing_key=lambda: SIGNING_KEY)
    with PowerMtaStandIn() as mta, serving(app, **uvicorn_settings(WebhookLimits())) as base_url, \
            httpx.Client(headers={"User-Agent": BROWSER}, follow_redirects=False, timeout=10) as browser:
        transport = pmta_yaml(mta)
        env = setup(workspace, engine, monkeypatch, transport, PEOPLE,
                    {"powermta": PowerMtaResource(retry_backoff_seconds=0.01, helo_name="sender.acme.example")}, transport="pmta")
        workspace.tenant("acme", TENANT.format(transport=textwrap.indent(textwrap.dedent(transport), "  ")) + tracking_yaml(base_url))
        write_template(workspace.root, "acme", "news_en.yaml", simple("news", "en", body=BODY))
        with dg.instance_for_test() as instance:
            sent = campaign_runs.send("acme.spring", instance=instance, definitions=env.defs)
            assert sent.failures == [] and sent.counts["state"] == "completed"
            with engine.begin() as conn:  # people read later; dan's message arrives as the test hits it
                conn.execute(sa.text(
                    """UPDATE campaign_sends SET settled_at = CASE WHEN email = 'dan@example.com' THEN now()
                                                                 ELSE now() - interval '1 hour' END
                       WHERE tenant_id = 'acme' AND campaign = 'spring'"""))
            by_person = {m.recipients[0].split("@")[0]: message_links(m.data, base_url) for m in mta.received}
            assert sorted(by_person) == ["ann", "bob", "cy", "dan", "eve"]
            for clicks, _, unsubscribe in by_person.values():
                assert len(clicks) == 3 and "/c/" not in unsubscribe and unsubscribe.startswith("https://unsubscribe.acme.example/u/")

            # ann: a person opens, reads, and clicks the blog link (the redirect names exactly the template's link)
            clicks, pixel, _ = by_person["ann"]
            assert browser.get(pixel).status_code == 200
            answer = browser.get(clicks[1])
            assert (answer.status_code, answer.headers["location"]) == (302, LINKS[1])
            # a scanner follows every link of bob's message within a second, pixel and unsubscribe link included
            clicks, pixel, unsubscribe = by_person["bob"]
            browser.get(pixel)
            assert [browser.get(link).headers["location"] for link in clicks] == LINKS
            # (the unsubscribe host is the tenant's own: here the same app answers it) a GET shows a page, never unsubscribes
            assert browser.get(base_url + unsubscribe[unsubscribe.index("/u/"):]).status_code == 200
            # cy: Apple's privacy proxy fetches the pixel; a security gateway checks a link with HEAD; cy clicks later
            clicks, pixel, _ = by_person["cy"]
            assert browser.get(pixel, headers={"User-Agent": "Mozilla/5.0"}).status_code == 200
            assert browser.head(clicks[0]).status_code == 302
            assert browser.get(clicks[0]).headers["location"] == LINKS[0]
            # dan's pixel is fetched within seconds of the hand-off: no one reads that fast
            assert browser.get(by_person["dan"][1]).status_code == 200
            # a forged token is refused and stores nothing
            forged = clicks[2][:-3] + ("AAA" if not clicks[2].endswith("AAA") else "BBB")
            assert browser.get(forged).status_code == 400

            # the inbox sensor asks for the tenant's feedback run, as for any webhook
            tick = webhook_inbox_sensor(dg.build_sensor_context(instance=instance, resources={"db": PostgresResource(url=db_url)}))
            assert [r.partition_key for r in tick.run_requests] == ["acme"]

        stats, _ = campaign_runs.stats("acme.spring", definitions=env.defs)

    assert stats["sent"] == 5
    # every hit counts; people only where no machine rule matched
    assert (stats["opened"], stats["unique_opened"], stats["opened_human"], stats["unique_opened_human"]) == (4, 4, 1, 1)
    assert (stats["clicked"], stats["unique_clicked"], stats["clicked_human"], stats["unique_clicked_human"]) == (6, 3, 2, 2)
    assert stats["opened_human_rate"] == 0.2 and stats["clicked_human_rate"] == 0.4
    [news] = stats["by_link"].values()
    assert [(link["link"], link["clicked"], link["clicked_human"]) for link in news] == [(0, 3, 1), (1, 2, 1), (2, 1, 0)]
    with engine.connect() as conn:
        classes = conn.execute(sa.text(
            """SELECT split_part(s.email, '@', 1), e.event_type, e.link_index, e.machine, e.classified_by
               FROM delivery_events e JOIN campaign_sends s ON s.row_id = e.send_row_id
               WHERE e.origin = 'tracking' ORDER BY 1, 2, 3, 5""")).all()
        unsubscribed = conn.execute(sa.text("SELECT count(*) FROM suppressions WHERE tenant_id = 'acme'")).scalar()
        inbox = conn.execute(sa.text("SELECT count(*), max(octet_length(body)) FROM webhook_inbox WHERE kind = 'tracking'")).one()
    assert [tuple(c) for c in classes] == [
        ("ann", "clicked", 1, False, "person"), ("ann", "opened", None, False, "person"),
        ("bob", "clicked", 0, True, "scanner_burst"), ("bob", "clicked", 1, True, "scanner_burst"),
        ("bob", "clicked", 2, True, "scanner_burst"), ("bob", "opened", None, True, "scanner_burst"),
        ("cy", "clicked", 0, True, "head_request"), ("cy", "clicked", 0, False, "person"),
        ("cy", "opened", None, True, "apple_privacy_proxy"),
        ("dan", "opened", None, True, "too_soon"),
    ]
    assert unsubscribed == 0  # the scanner's GET of the unsubscribe link unsubscribed nobody
    assert inbox == (10, 0)  # every hit applied, and no body kept once applied

