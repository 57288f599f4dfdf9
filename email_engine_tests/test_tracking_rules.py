"""The request-time rules that tell machines from people, the client address behind trusted
proxies, and the tracking inbox body (plain functions: no server, no database)."""

from __future__ import annotations

import ipaddress
import json

import pytest

from email_engine_assets.feedback.tracking_hits import hit_body, hit_event, redirect_location
from email_engine_assets.feedback.tracking_rules import (
    GMAIL_PREFETCH_UA,
    Verdict,
    classify,
    client_address,
    is_bot_user_agent,
    trusted_networks,
)
from email_engine_assets.feedback.webhook_payloads import MalformedPayload
from email_engine_assets.tenancy.tracking_settings import MachineRules

GMAIL_PROXY = "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)"
YAHOO_PROXY = "YahooMailProxy; https://help.yahoo.com/kb/yahoo-mail-proxy-SLN28749.html"
BROWSER = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
BOT = "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)"
RULES_ON = MachineRules(networks=[ipaddress.ip_network("198.51.100.0/24")])


def verdict(kind="open", method="GET", client="192.0.2.1", rules=RULES_ON, **headers) -> Verdict:
    return classify(kind, method, {k.replace("_", "-"): v for k, v in headers.items()}, client, rules)


def test_rules_in_order_and_the_mail_proxies_before_any_bot_list():
    assert is_bot_user_agent(GMAIL_PROXY) and is_bot_user_agent(YAHOO_PROXY)  # why the order matters
    assert verdict(method="HEAD", user_agent=GMAIL_PROXY) == Verdict(True, "head_request")
    assert verdict(purpose="prefetch", user_agent=BROWSER) == Verdict(True, "prefetch")
    assert verdict(sec_purpose="prefetch;anonymous-client-ip", user_agent=BROWSER) == Verdict(True, "prefetch")
    assert verdict(sec_purpose="prerender", user_agent=BROWSER) == Verdict(True, "prefetch")
    assert verdict(user_agent="   ") == Verdict(True, "empty_user_agent")
    assert verdict() == Verdict(True, "empty_user_agent")
    assert verdict(user_agent=GMAIL_PREFETCH_UA) == Verdict(True, "gmail_prefetch")
    assert verdict(user_agent=GMAIL_PROXY, client="198.51.100.9") == Verdict(False, "gmail_proxy")
    assert verdict(user_agent=YAHOO_PROXY) == Verdict(False, "yahoo_proxy")
    assert verdict(user_agent="Mozilla/5.0") == Verdict(True, "apple_privacy_proxy")
    assert verdict("click", user_agent="Mozilla/5.0") == Verdict(False, "person")
    assert verdict(user_agent=BROWSER, client="198.51.100.9") == Verdict(True, "scanner_network")
    assert verdict(user_agent=BROWSER, client="::ffff:198.51.100.9") == Verdict(True, "scanner_network")
    assert verdict("click", user_agent=BOT) == Verdict(True, "bot_user_agent")
    assert verdict("click", user_agent="curl/8.5.0") == Verdict(True, "bot_user_agent")
    assert verdict("click", user_agent=BROWSER) == Verdict(False, "person")
    assert verdict("click", user_agent=BROWSER, client=None) == Verdict(False, "person")


def test_each_machine_rule_is_turned_off_by_its_flag():
    off = MachineRules(head_requests=False, prefetch_headers=False, empty_user_agent=False, gmail_prefetch=False,
                       apple_privacy_proxy=False, bot_user_agents=False, networks=[])
    assert verdict(method="HEAD", user_agent=BROWSER, rules=off) == Verdict(False, "person")
    assert verdict(purpose="prefetch", user_agent=BROWSER, rules=off) == Verdict(False, "person")
    assert verdict(rules=off) == Verdict(False, "person")
    assert verdict(user_agent=GMAIL_PREFETCH_UA, rules=off) == Verdict(False, "person")
    assert verdict(user_agent="Mozilla/5.0", rules=off) == Verdict(False, "person")
    assert verdict(user_agent=BOT, rules=off) == Verdict(False, "person")
    assert verdict(user_agent=BROWSER, client="198.51.100.9", rules=off) == Verdict(False, "person")


def test_the_client_address_comes_from_x_forwarded_for_only_through_trusted_proxies():
    trusted = trusted_networks(" 10.0.0.0/8 , 127.0.0.1,::1 ")
    assert client_address("203.0.113.5", ["198.51.100.7"], trusted) == "203.0.113.5"  # untrusted peer: header ignored
    assert client_address("127.0.0.1", [], trusted) == "127.0.0.1"
    assert client_address("127.0.0.1", ["198.51.100.7"], trusted) == "198.51.100.7"
    assert client_address("127.0.0.1", ["1.1.1.1, 198.51.100.7, 10.0.0.2"], trusted) == "198.51.100.7"
    assert client_address("::1", ["1.1.1.1", "198.51.100.7"], trusted) == "198.51.100.7"  # header lines in order
    assert client_address("127.0.0.1", ["198.51.100.7, bogus"], trusted) == "127.0.0.1"
    assert client_address("127.0.0.1", ["10.0.0.3, 10.0.0.2"], trusted) == "10.0.0.3"
    assert client_address("127.0.0.1", ["[2001:db8::1]"], trusted) == "2001:db8::1"
    assert client_address("127.0.0.1", ["198.51.100.7"], ()) == "127.0.0.1"
    assert client_address(None, ["198.51.100.7"], trusted) is None
    assert trusted_networks("") == () and trusted_networks(None) == ()
    with pytest.raises(ValueError, match=r"EMAIL_ENGINE_TRUSTED_PROXIES: 'proxy.example' is not an IP network"):
        trusted_networks("10.0.0.0/8,proxy.example")


def test_the_inbox_body_holds_the_hit_and_its_class_and_reads_back_as_an_event():
    body = hit_body("row-1", "click", 4, "https://x.example/a", 1_800_000_000_123, "GET", Verdict(False, "person"), nonce="ab")
    assert json.loads(body) == {"v": 1, "row": "row-1", "kind": "click", "link": 4, "url": "https://x.example/a",
                                "at": 1_800_000_000_123, "method": "GET", "machine": False, "rule": "person", "nonce": "ab"}
    event = hit_event(body, 77)
    assert (event.event_type, event.origin, event.token, event.link_index, event.url, event.machine, event.classified_by,
            event.dedupe_key) == ("clicked", "tracking", "row-1", 4, "https://x.example/a", False, "person", "webhook:77")
    assert event.occurred_at.isoformat() == "2027-01-15T08:00:00.123000+00:00"
    two = {hit_body("r", "open", None, None, 1, "GET", Verdict(False, "person")) for _ in range(2)}
    assert len(two) == 2  # a nonce of its own per hit
    for bad, reason in [(b"\xff", "tracking body is not UTF-8 JSON"), (b"[]", "tracking body must be a JSON object"),
                        (body.replace(b'"rule":"person"', b'"rule":"too_soon"'), "rule must be a request rule"),
                        (body.replace(b'"link":4', b'"link":null'), "link must be a link index"),
                        (body.replace(b'"kind":"click"', b'"kind":"open"'), "an open has no link or url")]:
        with pytest.raises(MalformedPayload, match=reason):
            hit_event(bad, 1)


def test_only_absolute_http_addresses_are_redirected_to():
    assert redirect_location("https://x.example/a?b=1&c=%20#f") == "https://x.example/a?b=1&c=%20#f"
    assert redirect_location("http://x.example/é ü") == "http://x.example/%C3%A9%20%C3%BC"
    for url in ("javascript:alert(1)", "data:text/html,x", "//x.example/", "https:///x", " https://x.example",
                "https://x.example/\r\nSet-Cookie: a=b", "ftp://x.example/", "", None):
        assert redirect_location(url) is None, url


def test_webhooks_serve_refuses_trusted_proxies_it_cannot_read(monkeypatch, capsys):
    from email_engine_assets.cli import main

    monkeypatch.setenv("EMAIL_ENGINE_TRUSTED_PROXIES", "10.0.0.0/8, 300.1.2.3")
    assert main(["webhooks", "serve", "--port", "1"]) == 2
    assert capsys.readouterr().err.strip() == (
        "webhooks serve: EMAIL_ENGINE_TRUSTED_PROXIES: '300.1.2.3' is not an IP network (CIDR such as 10.0.0.0/8)")
