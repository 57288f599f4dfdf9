"""Webhook authentication and payload checks (the functional core of the webhook app)."""

import json
from datetime import datetime, timezone

import pytest

from email_engine_assets.feedback.webhook_auth import (
    REPLAY_WINDOW_S,
    Unauthorized,
    check_token,
    sign,
    verify_signature,
)
from email_engine_assets.feedback.webhook_payloads import (
    MalformedPayload,
    campaign_of,
    contacts_file,
    is_one_click,
    parse_contacts,
    parse_mailwizz,
)

SECRET = "s3cret-signing-value-0123456789"
NOW = 1_800_000_000


def test_a_signed_body_verifies_within_the_window_both_ways():
    body = b'{"email": "a@example.com"}'
    for skew in (0, REPLAY_WINDOW_S, -REPLAY_WINDOW_S):
        assert verify_signature(sign(SECRET, NOW + skew, body), SECRET, body, NOW) == NOW + skew


@pytest.mark.parametrize("skew", [REPLAY_WINDOW_S + 1, -REPLAY_WINDOW_S - 1, -86_400])
def test_a_stale_or_future_timestamp_is_refused(skew):
    body = b"{}"
    with pytest.raises(Unauthorized, match="outside the 5-minute window"):
        verify_signature(sign(SECRET, NOW + skew, body), SECRET, body, NOW)


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        (None, "missing X-Signature"),
        ("", "missing X-Signature"),
        ("garbage", "must look like"),
        ("t=abc,v1=" + "0" * 64, "t must be one unix time"),
        (f"t={NOW},t={NOW},v1=" + "0" * 64, "t must be one unix time"),
        (f"t={NOW},v1=xyz", "64 hex digits"),
        (f"t={NOW}", "at least one v1"),
        ("v1=" + "0" * 64, "t=<unix seconds>"),
        ("t=1," * 400, "too long"),
    ],
)
def test_a_malformed_signature_header_says_what_is_wrong(header, reason):
    with pytest.raises(Unauthorized, match=reason):
        verify_signature(header, SECRET, b"{}", NOW)


def test_a_signature_over_another_body_or_secret_is_refused_and_never_echoed():
    header = sign(SECRET, NOW, b'{"a": 1}')
    for body, secret in ((b'{"a": 2}', SECRET), (b'{"a": 1}', "another-secret")):
        with pytest.raises(Unauthorized, match="does not match") as caught:
            verify_signature(header, secret, body, NOW)
        assert SECRET not in str(caught.value) and header.split("v1=")[1] not in str(caught.value)


def test_any_of_several_v1_values_may_match_and_the_signed_digits_are_the_ones_sent():
    body = b"[]"
    good = sign(SECRET, NOW, body).split("v1=")[1]
    assert verify_signature(f"t={NOW},v1={'0' * 64},v1={good}", SECRET, body, NOW) == NOW
    padded = sign(SECRET, 0, b"").replace("t=0", f"t=0{NOW}")  # signed "0<NOW>." is not "<NOW>."
    with pytest.raises(Unauthorized, match="does not match"):
        verify_signature(padded, SECRET, body, NOW)


def test_token_compare():
    check_token("right-token", "right-token")
    with pytest.raises(Unauthorized, match="missing webhook token"):
        check_token(None, "right-token")
    with pytest.raises(Unauthorized, match="does not match") as caught:
        check_token("wrong-token", "right-token")
    assert "right-token" not in str(caught.value) and "wrong-token" not in str(caught.value)
    with pytest.raises(Unauthorized):
        check_token("right-token\udcff", "right-token")


def mailwizz_body(kind="open", email="Alice@Example.COM", name="acme.spring.welcome_en", **extra) -> bytes:
    payload = {
        "event": {"type": kind, "ip_address": "203.0.113.9", "user_agent": "UA", "date_added": "2026-11-29 10:11:12",
                  "clicked_url": "https://acme.example/offer" if kind == "click" else None},
        "timestamp": NOW,
        "list": {"attributes": {"list_uid": "ab12", "name": "acme.news.en"}},
        "subscriber": {"attributes": {"subscriber_uid": "sub1", "email": email, "status": "confirmed"}, "fields": {"EMAIL": email}},
        "campaign": {"attributes": {"campaign_uid": "cu1", "name": name}},
    }
    payload.update(extra)
    return json.dumps(payload).encode()


def test_a_mailwizz_open_and_click_become_events_of_our_campaign():
    hit = parse_mailwizz(mailwizz_body(), "acme")
    assert (hit.event_type, hit.email, hit.campaign, hit.url) == ("opened", "alice@example.com", "spring", None)
    assert hit.occurred_at == datetime(2026, 11, 29, 10, 11, 12, tzinfo=timezone.utc)
    event = parse_mailwizz(mailwizz_body("click"), "acme").event(41)
    assert (event.event_type, event.origin, event.url, event.dedupe_key) == ("clicked", "mailwizz", "https://acme.example/offer", "webhook:41")
    assert "203.0.113.9" not in repr(event) and "UA" not in repr(event)  # personal data not kept


def test_a_mailwizz_hit_of_another_campaign_name_is_kept_unlinked():
    assert campaign_of("globex.spring.welcome", "acme") is None
    assert campaign_of("made by hand", "acme") is None
    assert campaign_of("acme.spring.tpl.with.dots", "acme") == "spring"
    assert parse_mailwizz(mailwizz_body(name="Newsletter"), "acme").campaign is None


def test_a_mailwizz_hit_without_date_added_uses_the_timestamp():
    body = json.loads(mailwizz_body())
    del body["event"]["date_added"]
    assert parse_mailwizz(json.dumps(body).encode(), "acme").occurred_at == datetime.fromtimestamp(NOW, timezone.utc)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"not json", "not JSON"),
        (b"[]", "must be a JSON object"),
        (b"\xff\xfe{}", "not UTF-8"),
        (mailwizz_body(kind="unsubscribe"), "event.type must be one of open, click"),
        (mailwizz_body(email="not-an-address"), "subscriber.attributes.email"),
        (json.dumps({"event": {"type": "open"}}).encode(), "subscriber.attributes.email is missing"),
        (mailwizz_body(event={"type": "open", "date_added": "yesterday"}), "event.date_added must be"),
        (mailwizz_body(campaign={"attributes": {"name": 5}}), "campaign.attributes.name must be a string"),
        (b"[" * 100_000, "not JSON"),
    ],
)
def test_a_malformed_mailwizz_body_names_the_field(body, reason):
    with pytest.raises(MalformedPayload, match=reason):
        parse_mailwizz(body, "acme")


def test_contacts_bodies_in_the_three_shapes():
    assert parse_contacts(b'{"email": "a@example.com"}').suffix == ".json"
    assert parse_contacts(b'\xef\xbb\xbf[{"email": "a@example.com"}, {"email": "b@example.com"}]').records == 2
    push = parse_contacts(b'{"email": "a@example.com"}\n\n{"email": "b@example.com"}\n')
    assert (push.records, push.suffix) == (2, ".ndjson")
    pretty = b'{\n  "email": "a@example.com"\n}\n'
    suffix, data = contacts_file(pretty)
    assert suffix == ".json" and json.loads(data) == [{"email": "a@example.com"}]
    assert contacts_file(b'[{"email": "x@example.com"}]') == (".json", b'[{"email": "x@example.com"}]')


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"", "body is empty"),
        (b"  \n", "body is empty"),
        (b"email\na@example.com\n", "expected a JSON object"),
        (b"[]", "holds no contacts"),
        (b'[{"email": "a@example.com"}, "b@example.com"]', "item 2 of the array is a string"),
        (b'[{"email": "a@example.com"}', "not JSON"),
        (b'{"email": "a@example.com"}\n{"email": \n', "NDJSON line 2 is not JSON"),
        (b'{"email": "a@example.com"}\n[1]\n', "NDJSON line 2 is an array"),
        (b'{"email": "\xff"}', "not UTF-8"),
    ],
)
def test_a_malformed_contacts_body_names_the_line_or_item(body, reason):
    with pytest.raises(MalformedPayload, match=reason):
        parse_contacts(body)


def test_one_click_body_form_encoded_or_multipart():
    assert is_one_click("application/x-www-form-urlencoded", b"List-Unsubscribe=One-Click")
    assert is_one_click(None, b"List-Unsubscribe=One-Click\r\n")
    multipart = b'--XyZ\r\nContent-Disposition: form-data; name="List-Unsubscribe"\r\n\r\nOne-Click\r\n--XyZ--\r\n'
    assert is_one_click("multipart/form-data; boundary=XyZ", multipart)
    assert not is_one_click("application/x-www-form-urlencoded", b"")
    assert not is_one_click("application/x-www-form-urlencoded", b"List-Unsubscribe=Later")
    assert not is_one_click("multipart/form-data; boundary=XyZ", b"garbage")
    assert not is_one_click("multipart/form-data", multipart)  # no boundary
