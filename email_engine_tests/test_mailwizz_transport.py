"""The MailWizz transport against the loopback stand-in: hand-off, re-runs, auth, retries, limits."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from datetime import UTC, datetime

import pytest

from email_engine_resources.delivery import ListHandOff, ListRecipient
from email_engine_resources.mailwizz import FieldsMissing, ListRefused, MailwizzInstance, send_at_text
from email_engine_resources.mailwizz_client import (
    MailwizzClient,
    MailwizzError,
    php_form,
)
from email_engine_tests.mailwizz_server import MailwizzState, running_mailwizz

KEY = "test-public-key"


@pytest.fixture
def mailwizz():
    with running_mailwizz() as (url, state):
        yield url, state


def instance(url: str, **kw) -> MailwizzInstance:
    kw.setdefault("allow_private", True)
    kw.setdefault("backoff_initial", 0.01)
    return MailwizzInstance(url, kw.pop("api_key", KEY), **kw)


def handoff(recipients, *, html="<p>Hi [FNAME] [PLAN]</p><a href='[UNSUBSCRIBE_URL]'>unsubscribe</a>", **kw) -> ListHandOff:
    values = dict(
        tenant_id="acme", campaign="spring", template="promo-en", name="acme.spring.promo-en", subject="Hello [FNAME]",
        html=html, text=None, from_name="Acme", from_email="news@acme.example", reply_to="help@acme.example",
        send_at=datetime(2026, 12, 1, 9, 0, tzinfo=UTC), custom_fields={"PLAN": "plan"}, recipients=recipients,
    )
    values.update(kw)
    return ListHandOff(**values)


def people(n: int, start: int = 0) -> list[ListRecipient]:
    return [ListRecipient(row_id=i, email=f"p{i}@example.com", fields={"first_name": f"P{i}", "plan": "gold"})
            for i in range(start, start + n)]


def test_php_form_nests_like_php():
    assert php_form({"campaign": {"template": {"content": "eA=="}}, "subscribers": [{"EMAIL": "a@b.c"}], "x": None}) == [
        ("campaign[template][content]", "eA=="), ("subscribers[0][EMAIL]", "a@b.c"),
    ]


def test_hand_off_creates_list_fields_subscribers_and_campaign(mailwizz):
    url, state = mailwizz
    with instance(url, timezone="Europe/Paris", bulk_size=10) as mw:
        results = mw.hand_off(handoff(people(25)))
    assert [r.status for r in results] == ["handed_off"] * 25
    (lst,) = state.lists.values()
    assert lst["name"] == "acme.spring.promo-en" and len(lst["subscribers"]) == 25
    assert {f["tag"] for f in lst["fields"]} >= {"PLAN"}
    sub = next(iter(lst["subscribers"].values()))
    assert sub["FNAME"].startswith("P") and sub["PLAN"] == "gold"
    (campaign,) = state.campaigns.values()
    assert campaign["list_uid"] == lst["list_uid"]
    assert campaign["fields"]["send_at"] == "2026-12-01 10:00:00"  # 09:00 UTC in Paris
    assert base64.b64decode(campaign["fields"]["template"]["content"]).decode().endswith("unsubscribe</a>")
    bulk_calls = [c for c in state.calls if c[1].endswith("/subscribers/bulk")]
    assert len(bulk_calls) == 3  # 25 subscribers, 10 per call


def test_a_rerun_creates_no_second_list_subscriber_or_campaign(mailwizz):
    url, state = mailwizz
    with instance(url) as mw:
        mw.hand_off(handoff(people(5)))
    with instance(url) as mw:  # a new process after a crash: nothing cached
        results = mw.hand_off(handoff(people(7)))  # the same five and two more
    assert [r.status for r in results] == ["handed_off"] * 7
    assert len(state.lists) == 1 and len(state.campaigns) == 1
    assert len(next(iter(state.lists.values()))["subscribers"]) == 7


def test_the_stand_in_bulk_resubscribes_an_unsubscribed_subscriber_silently(mailwizz):
    url, state = mailwizz
    with MailwizzClient(url, KEY, allow_private=True) as client:
        uid = client.post("lists", {"general": {"name": "l"}, "defaults": {"from_name": "a", "from_email": "a@b.example"}})["list_uid"]
        suid = client.post(f"lists/{uid}/subscribers", {"EMAIL": "ann@example.com"})["data"]["record"]["subscriber_uid"]
        client.put(f"lists/{uid}/subscribers/{suid}/unsubscribe")
        [record] = client.post(f"lists/{uid}/subscribers/bulk", {"subscribers": [{"EMAIL": "ann@example.com"}]})["data"]["records"]
    assert "errors" not in record and "status" not in record["data"] and record["data"]["subscriber_uid"] == suid
    assert state.subscribers(uid)[suid]["status"] == "confirmed"  # subscribed again, and the answer said nothing


def test_an_address_mailwizz_holds_as_unsubscribed_or_blacklisted_is_never_pushed_again(mailwizz):
    url, state = mailwizz
    state.blacklist.add("p1@example.com")
    with instance(url) as mw:
        first = {r.row_id: r for r in mw.hand_off(handoff(people(4)))}
    assert first[1].status == "failed" and "blacklisted" in first[1].detail and first[1].suppress == "bounced"
    lst = next(iter(state.lists.values()))
    by_email = {s["EMAIL"]: s for s in lst["subscribers"].values()}
    by_email["p2@example.com"]["status"] = "unsubscribed"  # the person left through MailWizz
    by_email["p3@example.com"]["status"] = "blacklisted"
    with instance(url) as mw:  # the next run (a resend, a sync): it reads who the list holds out, once
        results = {r.row_id: r for r in mw.hand_off(handoff(people(4)))}
    assert results[0].status == "handed_off" and not results[0].suppress
    assert results[2].status == "failed" and "unsubscribed" in results[2].detail and results[2].suppress == "unsubscribed"
    assert results[3].status == "failed" and "blacklisted" in results[3].detail and results[3].suppress == "bounced"
    assert by_email["p2@example.com"]["status"] == "unsubscribed" and by_email["p3@example.com"]["status"] == "blacklisted"
    reads = [c for c in state.calls if c == ("GET", f"/api/lists/{lst['list_uid']}/subscribers")]
    assert len(reads) == 2  # one page per held status, for the list it did not create


def test_unconfirmed_subscribers_of_a_forced_double_opt_in_list_are_not_handed_off(mailwizz):
    url, state = mailwizz
    state.force_optin = True
    with instance(url, bulk_size=10) as mw:
        results = mw.hand_off(handoff(people(25)))
    assert {r.status for r in results} == {"failed"}
    assert all("unconfirmed" in r.detail and "double opt-in" in r.detail for r in results)
    searches = [c for c in state.calls if c[1].endswith("/search-by-email")]
    assert len(searches) == 3  # the status read once per bulk call, not once per subscriber
    state.force_optin = False
    with instance(url) as mw:
        assert {r.status for r in mw.hand_off(handoff(people(3, start=25)))} == {"handed_off"}


def test_an_address_mailwizz_does_not_take_is_skipped_as_bad_address_and_the_batch_goes_on(mailwizz):
    url, state = mailwizz
    recipients = [*people(2), ListRecipient(row_id=7, email="jos\u00e9@example.com", fields={"first_name": "Jose"})]
    with instance(url) as mw:
        results = {r.row_id: r for r in mw.hand_off(handoff(recipients))}
    assert results[0].status == results[1].status == "handed_off"
    assert results[7].skipped == "bad_address" and "not take it for an email address" in results[7].detail
    assert len(state.campaigns) == 1
    with MailwizzClient(url, KEY, allow_private=True) as client, pytest.raises(MailwizzError) as caught:
        list_uid = next(iter(state.lists))
        client.get(f"lists/{list_uid}/subscribers/search-by-email", {"EMAIL": "jos\u00e9@example.com"})
    assert caught.value.status == 422 and "valid email" in caught.value.message


@pytest.mark.parametrize("answer", [404, 405])
def test_fields_this_mailwizz_cannot_create_are_named_and_nothing_is_pushed(mailwizz, answer):
    url, state = mailwizz
    state.fields_create_answer = answer  # 2.1.13, 1.9.4: only GET lists/{uid}/fields exists
    with instance(url) as mw, pytest.raises(FieldsMissing) as caught:
        mw.hand_off(handoff(people(2), custom_fields={"PLAN": "plan", "CITY": "city"}))
    assert caught.value.tags == ["PLAN", "CITY"] and "acme.spring.promo-en" in caught.value.message
    assert f"answered {answer}" in caught.value.message
    (lst,) = state.lists.values()
    assert lst["subscribers"] == {} and state.campaigns == {}


def test_a_duplicate_tag_answer_counts_as_the_field_being_there(mailwizz):
    url, state = mailwizz
    with instance(url) as mw:
        uid = mw.ensure_list("l", from_name="a", from_email="a@b.example", reply_to="")
        assert mw.ensure_fields(uid, ["PLAN"]) == ["PLAN"]
        with pytest.raises(MailwizzError) as caught:  # what MailWizz answers to the same tag twice
            mw.client.post(f"lists/{uid}/fields", {"type": "text", "label": "Plan", "tag": "PLAN"})
        assert caught.value.status == 422 and "The tag attribute must be unique in the mail list!" in caught.value.message
        # a listing that missed it (a create whose answer was lost): the second create's 422 is no error
        state.canned[("GET", f"/api/lists/{uid}/fields")] = (200, b'{"status": "success", "data": {"records": []}}')
        assert mw.ensure_fields(uid, ["PLAN"]) == ["PLAN"]
    assert [f["tag"] for f in state.lists[uid]["fields"]].count("PLAN") == 1


def test_a_list_refused_for_an_incomplete_company_profile_names_what_to_fill_in(mailwizz):
    url, state = mailwizz
    state.company_complete = False
    with instance(url) as mw, pytest.raises(ListRefused) as caught:
        mw.hand_off(handoff(people(2)))
    assert caught.value.status == 422
    assert "company details" in caught.value.message and "acme.spring.promo-en" in caught.value.message
    for field in ("company name", "country", "address", "city", "zip code"):
        assert field in caught.value.message
    assert state.lists == {} and state.campaigns == {}


def test_content_without_unsubscribe_tag_is_refused(mailwizz):
    url, state = mailwizz
    with instance(url) as mw:
        results = mw.hand_off(handoff(people(2), html="<p>no way out</p>"))
    assert {r.status for r in results} == {"failed"} and state.calls == []
    # the stand-in holds the same rule: a direct create is a 422
    with MailwizzClient(url, KEY, allow_private=True) as client:
        list_uid = client.post("lists", {"general": {"name": "l"}, "defaults": {"from_name": "a", "from_email": "a@b.example"}})["list_uid"]
        with pytest.raises(MailwizzError) as caught:
            client.post("campaigns", {"campaign": {
                "name": "c", "from_name": "a", "from_email": "a@b.example", "subject": "s", "reply_to": "a@b.example",
                "send_at": "2026-01-01 00:00:00", "list_uid": list_uid, "template": {"content": base64.b64encode(b"x").decode()}}})
    assert caught.value.status == 422 and "UNSUBSCRIBE_URL" in str(caught.value)


def test_pause_and_resume_read_the_status_before_toggling(mailwizz):
    url, state = mailwizz
    with instance(url) as mw:
        mw.hand_off(handoff(people(1)))
        name = "acme.spring.promo-en"
        assert mw.status(name) == "paused"  # created paused: it waits for its release
        assert mw.resume(name) == "pending-sending"
        assert mw.pause(name) == "paused"
        assert mw.pause(name) == "paused"  # a second pause does not unpause
        assert mw.resume(name) == "pending-sending"
        assert mw.resume(name) == "pending-sending"
        state.campaign_by_name(name)["status"] = "sending"
        state.campaign_by_name(name)["started"] = True
        assert mw.pause(name) == "paused" and mw.resume(name) == "sending"  # a started campaign goes on sending
        with pytest.raises(MailwizzError, match="404"):
            mw.status("nope")


def test_a_campaign_handed_off_in_batches_sends_nothing_until_released_once(mailwizz):
    url, state = mailwizz
    name = "acme.spring.promo-en"
    with instance(url, bulk_size=2) as mw:
        for batch in range(3):
            results = mw.hand_off(handoff(people(2, start=2 * batch)))
            assert {r.status for r in results} == {"handed_off"}
            assert state.run_cron() == 0 and mw.status(name) == "paused"  # MailWizz's cron mails nobody yet
        assert mw.release("acme.spring.") == {name: "pending-sending"}
        assert mw.release("acme.spring.") == {name: "pending-sending"}  # a second release toggles nothing
        assert mw.release("acme.summer.") == {}  # another campaign's prefix: nothing
    assert state.campaign_by_name(name)["fields"]["status"] == "paused"
    assert state.run_cron(now="2026-12-01 08:59:59") == 0  # its send_at (09:00) has not come yet
    assert state.run_cron() == 6 and sorted(e for _, e in state.delivered) == [f"p{i}@example.com" for i in range(6)]
    assert state.run_cron() == 0  # each subscriber mailed once
    with instance(url) as mw:  # a release after MailWizz is done (a rerun after a crash) leaves it alone
        assert mw.release("acme.spring.") == {name: "sent"}
    assert [c for c in state.calls if c[1].endswith("/pause-unpause")] == [
        ("PUT", f"/api/campaigns/{state.campaign_by_name(name)['campaign_uid']}/pause-unpause")]


def test_the_stand_in_holds_mailwizz_campaign_statuses(mailwizz):
    url, state = mailwizz
    with MailwizzClient(url, KEY, allow_private=True) as client:
        list_uid = client.post("lists", {"general": {"name": "l"}, "defaults": {"from_name": "a", "from_email": "a@b.example"}})["list_uid"]
        client.post(f"lists/{list_uid}/subscribers", {"EMAIL": "x@example.com"})
        base = {"from_name": "a", "from_email": "a@b.example", "subject": "s", "reply_to": "a@b.example",
                "send_at": "2026-01-01 00:00:00", "list_uid": list_uid,
                "template": {"content": base64.b64encode(b"[UNSUBSCRIBE_URL]").decode()}}
        with pytest.raises(MailwizzError) as caught:
            client.post("campaigns", {"campaign": {**base, "name": "c0", "status": "sending"}})
        assert caught.value.status == 422 and "status" in str(caught.value)
        uids = {status: client.post("campaigns", {"campaign": {**base, "name": status, "status": status}})["campaign_uid"]
                for status in ("draft", "paused", "pending-sending")}
        assert state.run_cron() == 1 and state.delivered == [("pending-sending", "x@example.com")]  # draft and paused mail nobody
        for uid in (uids["draft"], uids["pending-sending"]):  # neither a draft nor a sent campaign can be toggled
            with pytest.raises(MailwizzError) as caught:
                client.put(f"campaigns/{uid}/pause-unpause")
            assert caught.value.status == 422
    assert state.campaigns[uids["pending-sending"]]["status"] == "sent"


def test_bad_key_is_a_400_whose_text_holds_no_key(mailwizz):
    url, _ = mailwizz
    secret = "wrong-key-s3cr3t"
    with MailwizzClient(url, secret, allow_private=True) as client, pytest.raises(MailwizzError) as caught:
        client.get("lists")
    assert caught.value.status == 400
    assert secret not in str(caught.value) and secret not in repr(client)


def test_signed_1x_auth_is_checked(mailwizz):
    url, state = mailwizz
    with MailwizzClient(url, KEY, api_version="1", private_key=state.private_key, allow_private=True) as client:
        uid = client.post("lists", {"general": {"name": "signed"}, "defaults": {"from_name": "a", "from_email": "a@b.example"}})["list_uid"]
        assert client.get(f"lists/{uid}/fields")["data"]["records"]
        assert list(client.pages("lists"))[0]["general"]["name"] == "signed"
    with MailwizzClient(url, KEY, api_version="1", private_key="not-the-key", allow_private=True) as client, \
            pytest.raises(MailwizzError, match="signature") as caught:
        client.get("lists", {"b": "2", "a": "1"})
    assert caught.value.status == 400 and "not-the-key" not in str(caught.value)


def _php_urlencode(text: str) -> str:
    """PHP's ``urlencode``, byte by byte: ``[A-Za-z0-9_.-]`` kept, a space as ``+``, the rest ``%XX``."""
    out = []
    for byte in text.encode():
        char = chr(byte)
        out.append(char if char.isascii() and (char.isalnum() or char in "_.-") else "+" if char == " " else f"%{byte:02X}")
    return "".join(out)


def sdk_sign(private_key: str, public_key: str, timestamp: int, method: str, url: str,
             get: list[tuple[str, str]], post: list[tuple[str, str]]) -> tuple[str, str]:
    """The official PHP SDK's ``MailWizzApi_Http_Request::sign()``, step by step: (signed text, signature).

    ``ksort($getParams, SORT_STRING)`` + ``http_build_query`` onto the URL; the special headers
    ``X-MW-PUBLIC-KEY``, ``X-MW-TIMESTAMP`` and ``X-MW-REMOTE-ADDR`` (``''`` outside a web request)
    merged with the POST params, ``ksort``-ed, ``http_build_query``-ed; ``&`` joins them when the
    URL has GET params, ``?`` otherwise; ``hash_hmac('sha1', ...)``.
    """
    def build(pairs):
        ordered = sorted(pairs, key=lambda p: p[0].split("[")[0])  # keys are unique at the top level
        return "&".join(_php_urlencode(k) + "=" + _php_urlencode(v) for k, v in ordered)

    if get:
        url += "?" + build(get)
    special = [("X-MW-PUBLIC-KEY", public_key), ("X-MW-TIMESTAMP", str(timestamp)), ("X-MW-REMOTE-ADDR", "")]
    text = f"{method} {url}{'&' if get else '?'}{build(special + post)}"
    return text, hmac.new(private_key.encode(), text.encode(), hashlib.sha1).hexdigest()


def test_the_1x_signature_is_the_one_the_official_sdk_computes(mailwizz):
    url, state = mailwizz
    stamp = 1_700_000_000
    with MailwizzClient(url, KEY, api_version="1", private_key=state.private_key, allow_private=True, retries=0,
                        clock=lambda: stamp) as client:
        with pytest.raises(MailwizzError):  # a 2023 timestamp: the stand-in refuses it, after recording the request
            client.post("lists/ab12/subscribers", {"EMAIL": "ann+x~y@example.com", "FNAME": "Ann Lee",
                                                   "details": {"status": "confirmed"}})
        posted = state.last_headers
        with pytest.raises(MailwizzError):
            client.get("lists", {"per_page": 50, "page": 2})
        got = state.last_headers
    text, expected = sdk_sign(state.private_key, KEY, stamp, "POST", f"{url}/lists/ab12/subscribers", [],
                              [("EMAIL", "ann+x~y@example.com"), ("FNAME", "Ann Lee"), ("details[status]", "confirmed")])
    assert text == (f"POST {url}/lists/ab12/subscribers?EMAIL=ann%2Bx%7Ey%40example.com&FNAME=Ann+Lee"
                    f"&X-MW-PUBLIC-KEY={KEY}&X-MW-REMOTE-ADDR=&X-MW-TIMESTAMP={stamp}&details%5Bstatus%5D=confirmed")
    assert posted["x-mw-signature"] == expected and posted["x-mw-timestamp"] == str(stamp)
    text, expected = sdk_sign(state.private_key, KEY, stamp, "GET", f"{url}/lists", [("per_page", "50"), ("page", "2")], [])
    assert text == f"GET {url}/lists?page=2&per_page=50&X-MW-PUBLIC-KEY={KEY}&X-MW-REMOTE-ADDR=&X-MW-TIMESTAMP={stamp}"
    assert got["x-mw-signature"] == expected


def test_the_stand_in_checks_1x_signatures_as_mailwizz_does(mailwizz):
    import httpx

    url, state = mailwizz
    stamp = int(time.time())
    headers = {"X-MW-PUBLIC-KEY": KEY, "X-MW-TIMESTAMP": str(stamp)}
    _, good = sdk_sign(state.private_key, KEY, stamp, "GET", f"{url}/lists", [("page", "1")], [])
    assert httpx.get(f"{url}/lists", params={"page": "1"}, headers={**headers, "X-MW-SIGNATURE": good}).status_code == 200
    # the same string without the empty X-MW-REMOTE-ADDR: another HMAC, refused with a 400
    text = f"GET {url}/lists?page=1&X-MW-PUBLIC-KEY={KEY}&X-MW-TIMESTAMP={stamp}"
    bad = hmac.new(state.private_key.encode(), text.encode(), hashlib.sha1).hexdigest()
    answer = httpx.get(f"{url}/lists", params={"page": "1"}, headers={**headers, "X-MW-SIGNATURE": bad})
    assert answer.status_code == 400 and answer.json()["error"] == "Invalid API request signature."


def test_retries_on_500_and_429_with_retry_after(mailwizz):
    url, state = mailwizz
    state.fail_next(2)
    with instance(url, retries=3) as mw:
        assert mw.find_list("x") is None
        state.throttle_next(1, retry_after="1")
        started = time.monotonic()
        assert mw.find_list("y") is None
        assert time.monotonic() - started >= 0.9  # waited the server's Retry-After
    state.fail_next(5)
    with instance(url, retries=2) as mw, pytest.raises(MailwizzError) as caught:
        mw.find_list("z")
    assert caught.value.status == 500
    state.failures = 0


def test_a_create_is_not_retried_on_500_and_a_rerun_finds_it(mailwizz):
    url, state = mailwizz
    state.fail_next(1, only=("POST", "/api/lists"))
    with instance(url, retries=3) as mw, pytest.raises(MailwizzError):
        mw.ensure_list("once", from_name="a", from_email="a@b.example", reply_to="")
    assert [c for c in state.calls if c == ("POST", "/api/lists")] == [("POST", "/api/lists")]
    with instance(url) as mw:
        uid = mw.ensure_list("once", from_name="a", from_email="a@b.example", reply_to="")
        assert mw.ensure_list("once", from_name="a", from_email="a@b.example", reply_to="") == uid
    assert len(state.lists) == 1


def test_timeouts_are_bounded_and_retried(mailwizz):
    url, state = mailwizz
    state.latency = 0.3
    with instance(url, timeout=0.1, retries=1) as mw, pytest.raises(MailwizzError, match="timed out"):
        mw.find_list("slow")
    assert len(state.calls) == 2  # the first try and one retry


def test_private_addresses_are_refused_unless_allowed(mailwizz):
    url, state = mailwizz
    with MailwizzClient(url, KEY, allow_private=False) as client, pytest.raises(MailwizzError, match="private targets"):
        client.get("lists")
    assert state.calls == []


def test_json_bodies_are_not_read(mailwizz):
    import httpx

    url, _ = mailwizz
    answer = httpx.post(f"{url}/lists", json={"general": {"name": "j"}}, headers={"X-Api-Key": KEY})
    assert answer.status_code == 422


def test_pagination_walks_every_page(mailwizz):
    url, state = mailwizz
    with MailwizzClient(url, KEY, allow_private=True) as client:
        for i in range(120):
            client.post("lists", {"general": {"name": f"l{i}"}, "defaults": {"from_name": "a", "from_email": "a@b.example"}})
        page = client.get("lists", {"page": 1, "per_page": 50})["data"]
        assert page["count"] == "120" and page["total_pages"] == 3
        assert len(list(client.pages("lists"))) == 120


def test_send_at_is_local_to_the_instance():
    assert send_at_text(datetime(2026, 7, 1, 12, tzinfo=UTC), "America/New_York") == "2026-07-01 08:00:00"
    assert send_at_text(datetime(2026, 7, 1, 12), "UTC") == "2026-07-01 12:00:00"
    with pytest.raises(Exception):
        MailwizzInstance("https://mw.example/api", KEY, timezone="Mars/Olympus")


def test_an_oversized_answer_is_refused():
    from email_engine_resources import mailwizz_client

    state = MailwizzState()
    with running_mailwizz(state) as (url, _):
        old = mailwizz_client.MAX_RESPONSE_BYTES
        mailwizz_client.MAX_RESPONSE_BYTES = 200
        try:
            with MailwizzClient(url, KEY, allow_private=True) as client:
                for i in range(10):
                    client.post("lists", {"general": {"name": f"l{i}"}, "defaults": {"from_name": "a", "from_email": "a@b.example"}})
                with pytest.raises(MailwizzError, match="cap"):
                    client.get("lists")
        finally:
            mailwizz_client.MAX_RESPONSE_BYTES = old


def test_a_signature_older_than_900_seconds_is_refused(mailwizz):
    import httpx

    from email_engine_resources.mailwizz_client import signature

    url, state = mailwizz
    stamp = str(int(time.time()) - 1000)
    special = {"X-MW-PUBLIC-KEY": KEY, "X-MW-TIMESTAMP": stamp, "X-MW-REMOTE-ADDR": ""}
    sign = signature(state.private_key, "GET", f"{url}/lists", [], special, [])
    answer = httpx.get(f"{url}/lists", headers={"X-MW-PUBLIC-KEY": KEY, "X-MW-TIMESTAMP": stamp, "X-MW-SIGNATURE": sign})
    assert answer.status_code == 400 and "expired" in answer.json()["error"]
    fresh = str(int(time.time()))
    sign = signature(state.private_key, "GET", f"{url}/lists", [], {**special, "X-MW-TIMESTAMP": fresh}, [])
    assert httpx.get(f"{url}/lists", headers={"X-MW-PUBLIC-KEY": KEY, "X-MW-TIMESTAMP": fresh, "X-MW-SIGNATURE": sign}).status_code == 200


def test_an_unanswered_campaign_create_is_unknown_and_a_rerun_completes_it(mailwizz):
    url, state = mailwizz
    state.fail_next(1, only=("POST", "/api/campaigns"))
    with instance(url) as mw:
        results = mw.hand_off(handoff(people(2)))
    assert {r.status for r in results} == {"unknown"} and state.campaigns == {}
    with instance(url) as mw:
        assert {r.status for r in mw.hand_off(handoff(people(2)))} == {"handed_off"}
    assert len(state.campaigns) == 1 and len(state.lists) == 1


def test_a_list_the_instance_cannot_take_raises_before_any_campaign_exists(mailwizz):
    url, state = mailwizz
    with instance(url, retries=1) as mw:
        uid = mw.ensure_list("acme.spring.promo-en", from_name="a", from_email="a@b.example", reply_to="")
        state.fail_next(10, only=("POST", f"/api/lists/{uid}/subscribers/bulk"))
        with pytest.raises(MailwizzError, match="500"):
            mw.hand_off(handoff(people(2)))
    assert state.campaigns == {}  # nothing will be sent: the campaign comes last


@pytest.mark.parametrize(("body", "problem"), [
    (b"<html>oops</html>", "not JSON"),
    (b'{"status": "success", "data": {"records": "x", "total_pages": 1}}', "records"),
    (b'{"status": "success", "data": {"records": [], "total_pages": "many"}}', "total_pages"),
    (b"[" * 100000, "not JSON"),
])
def test_malformed_answers_are_clear_errors(mailwizz, body, problem):
    url, state = mailwizz
    state.canned[("GET", "/api/lists")] = (200, body)
    with MailwizzClient(url, KEY, allow_private=True) as client, pytest.raises(MailwizzError, match=problem) as caught:
        list(client.pages("lists"))
    assert len(str(caught.value)) < 400


def test_tenant_file_refuses_an_unknown_time_zone():
    from pydantic import ValidationError

    from email_engine_assets.tenancy.sending import MailwizzTransport

    with pytest.raises(ValidationError, match="time zone"):
        MailwizzTransport(name="mw", kind="mailwizz", base_url="https://mw.example/api", api_key={"env": "K"}, timezone="Mars/Olympus")


def test_an_error_that_echoes_the_key_is_redacted(mailwizz):
    url, state = mailwizz
    state.canned[("GET", "/api/lists")] = (422, f'{{"status": "error", "error": "bad key {KEY}"}}'.encode())
    with MailwizzClient(url, KEY, allow_private=True) as client, pytest.raises(MailwizzError) as caught:
        client.get("lists")
    assert KEY not in str(caught.value) and "[key]" in str(caught.value)


def test_retry_after_is_capped():
    from email_engine_resources.mailwizz_client import MAX_RETRY_AFTER_S, _retry_after

    assert _retry_after("99999") == MAX_RETRY_AFTER_S
    assert _retry_after("-5") == 0.0
    assert _retry_after("Wed, 21 Oct 2026 07:28:00 GMT") is None  # the regular backoff applies


def test_recipients_added_after_the_campaign_was_sent_are_not_handed_off(mailwizz):
    url, state = mailwizz
    with instance(url) as mw:
        mw.hand_off(handoff(people(2)))
    next(iter(state.campaigns.values()))["status"] = "sent"
    with instance(url) as mw:
        results = {r.row_id: r for r in mw.hand_off(handoff(people(3)))}
    assert [results[i].status for i in range(2)] == ["handed_off", "handed_off"]
    assert results[2].status == "failed" and "already sent" in results[2].detail
