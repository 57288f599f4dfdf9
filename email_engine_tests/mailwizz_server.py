"""A MailWizz stand-in on loopback (Starlette on uvicorn) that follows REFERENCE.md's API contract.

What it holds to: form-encoded bodies with PHP nesting (a JSON body is not read), 400 on bad auth
(the 2.x ``X-Api-Key`` and the 1.x signature, with its 900 s timestamp window, are both checked),
the success / create / error envelopes, 201 on create, 409 on an existing subscriber, 422 on
validation (campaign content without ``[UNSUBSCRIBE_URL]`` included), pagination with a string
``count``, per-record ``errors`` from the bulk call (never a 409), and the campaign statuses:
created ``draft``, ``pending-sending`` (the default) or ``paused``; ``pause-unpause`` toggles
(pending-sending / sending / processing -> paused; paused -> pending-sending, or sending once it has
started); the send "cron" (:meth:`MailwizzState.run_cron`, run by the test, or after every call
with ``cron_on_every_call``) takes the pending-sending and sending campaigns whose ``send_at`` has
come, mails each confirmed subscriber of the list once (``delivered``) and marks them ``sent``. A
paused, draft or sent campaign mails nobody. Test knobs: ``latency`` per call, ``fail_next(n)`` 500s, ``throttle_next(n, retry_after)`` 429s,
``blacklist`` of emails, ``canned`` raw answers (malformed replies), and ``calls`` recording
(method, path) of every request. Feedback: ``unsubscribe-by-email-from-all-lists`` (recorded in
``unsubscribed_everywhere``), a campaign's ``unsubscribes`` and ``bounces`` listed newest first
with pagination (``campaign_named``, ``add_unsubscribe``, ``add_bounce`` fill them); ``add_complaint``
counts a processed feedback-loop complaint. ``GET campaigns/{uid}/stats`` counts the cron's deliveries
and these bounces and complaints. ``run_cron(limit=n)`` sends part of a campaign (it stays ``sending``).

As recorded MailWizz servers answer: the 1.x signature covers an empty ``X-MW-REMOTE-ADDR``; the
bulk call re-subscribes an existing **unsubscribed** subscriber without a word and its records
carry no ``status``; ``force_optin`` leaves new subscribers ``unconfirmed``; search-by-email
answers 422 for an address whose local part is not ASCII; ``fields_create_answer`` (404 / 405)
plays an install without ``POST lists/{uid}/fields``; a duplicate tag is "The tag attribute must
be unique in the mail list!"; ``company_complete=False`` makes ``POST lists`` without
``company[...]`` a 422 naming the company fields.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from email_engine_tests.http_servers import serving

SIGNATURE_MAX_AGE_S = 900
CREATE_STATUSES = ("draft", "pending-sending", "paused")
SENDING = ("pending-sending", "sending")  # what the send cron takes
PAUSABLE = ("pending-sending", "sending", "processing")
STATS_COUNT_KEYS = ("subscribers_count", "processed_count", "delivery_success_count", "delivery_error_count", "opens_count",
                    "unique_opens_count", "clicks_count", "unique_clicks_count", "unsubscribes_count", "complaints_count",
                    "bounces_count", "hard_bounces_count", "soft_bounces_count", "internal_bounces_count")


def parse_php_form(pairs: list[tuple[str, str]]) -> dict:
    """``a[b][0]=x`` -> ``{"a": {"b": {"0": "x"}}}`` (PHP arrays: keys stay strings)."""
    out: dict = {}
    for name, value in pairs:
        parts = re.findall(r"[^\[\]]+|\[\]", name)
        if not parts:
            continue
        node = out
        for part in parts[:-1]:
            nxt = node.get(part)
            if not isinstance(nxt, dict):
                nxt = node[part] = {}
            node = nxt
        node[parts[-1]] = value
    return out


COMPANY_FIELDS = {"name": "Name", "country_id": "Country", "address_1": "Address", "city": "City", "zip_code": "Zip code"}


def valid_email(email: str) -> bool:
    """MailWizz's own address check, as far as the engine meets it: an ASCII local part, one @, a dotted domain."""
    local, at, domain = email.partition("@")
    return bool(at and local and local.isascii() and re.fullmatch(r"[^@\s]+", local) and re.fullmatch(r"[^@\s]+\.[^@\s]+", domain))


def _uid() -> str:
    return uuid.uuid4().hex[:13]


@dataclass
class MailwizzState:
    api_key: str = "test-public-key"
    private_key: str = "test-private-key"
    latency: float = 0.0
    lists: dict[str, dict] = field(default_factory=dict)
    campaigns: dict[str, dict] = field(default_factory=dict)
    blacklist: set[str] = field(default_factory=set)
    calls: list[tuple[str, str]] = field(default_factory=list)
    last_headers: dict[str, str] = field(default_factory=dict)  # of the last request (lower-case names)
    failures: int = 0
    failing: tuple[str, str] | None = None  # (method, path) the next failures apply to; None: any call
    throttles: int = 0
    retry_after: str = "0"
    canned: dict[tuple[str, str], tuple[int, bytes]] = field(default_factory=dict)  # (method, path) -> raw answer
    delivered: list[tuple[str, str]] = field(default_factory=list)  # (campaign name, email) mailed by the cron
    cron_on_every_call: bool = False  # MailWizz's cron running all along: it runs after each API call
    # --- how a given install answers (REFERENCE, "Checked against the official SDKs") ---
    fields_create_answer: int | None = None  # 404 / 405: POST lists/{uid}/fields does not exist (2.1.13, 1.9.4)
    force_optin: bool = False  # the customer group's lists.force_optin_process: new subscribers stay unconfirmed
    company_complete: bool = True  # the customer's company profile, which POST lists falls back to
    # --- feedback (suppression push, unsubscribe / bounce polls) ---
    campaign_unsubscribes: dict[str, list[dict]] = field(default_factory=dict)  # campaign uid -> records, oldest first
    campaign_bounces: dict[str, list[dict]] = field(default_factory=dict)
    unsubscribed_everywhere: list[str] = field(default_factory=list)  # EMAIL of each unsubscribe-by-email-from-all-lists call
    campaign_complaints: dict[str, list[str]] = field(default_factory=dict)  # campaign uid -> emails that complained
    # --- end feedback ---
    lock: threading.RLock = field(default_factory=threading.RLock)

    def run_cron(self, now: str | None = None, limit: int | None = None) -> int:
        """One pass of MailWizz's send cron (``now`` "Y-m-d H:i:s" local; ``None``: every send_at has come).

        ``limit``: at most that many emails per campaign in this pass (MailWizz's "subscribers at once"):
        a campaign with subscribers left stays ``sending`` for the next pass, so a test can stop in the middle.
        Returns how many emails it sent.
        """
        sent = 0
        with self.lock:
            for c in self.campaigns.values():
                if c["status"] not in SENDING or (now is not None and c["fields"].get("send_at", "") > now):
                    continue
                c["status"], c["started"] = "sending", True
                mailed = {email for name, email in self.delivered if name == c["name"]}
                left = [sub for sub in self.lists.get(c["list_uid"], {}).get("subscribers", {}).values()
                        if sub["status"] == "confirmed" and sub["EMAIL"] not in mailed]
                for sub in left[:limit]:
                    self.delivered.append((c["name"], sub["EMAIL"]))
                    sent += 1
                if limit is None or len(left) <= limit:
                    c["status"] = "sent"
        return sent

    # --- feedback: what MailWizz itself recorded for a campaign ---
    def campaign_named(self, name: str, status: str = "sent") -> str:
        """A campaign with no list (only its feedback matters); its uid."""
        uid = _uid()
        with self.lock:
            self.campaigns[uid] = {"campaign_uid": uid, "name": name, "status": status, "started": True, "list_uid": "",
                                   "html": "", "fields": {}}
        return uid

    def add_unsubscribe(self, campaign_uid: str, email: str, date_added: str = "2026-11-29 10:00:00", reason: str = "") -> None:
        with self.lock:
            self.campaign_unsubscribes.setdefault(campaign_uid, []).append({
                "ip_address": "198.51.100.7", "user_agent": "Mozilla/5.0", "reason": reason, "note": "",
                "date_added": date_added, "subscriber": {"subscriber_uid": _uid(), "email": email}})

    def add_complaint(self, campaign_uid: str, email: str) -> None:
        """A feedback-loop complaint MailWizz processed for the campaign: counted in its stats'
        ``complaints_count`` (the API lists no complaint records)."""
        with self.lock:
            self.campaign_complaints.setdefault(campaign_uid, []).append(email)

    def add_bounce(self, campaign_uid: str, email: str, bounce_type: str, message: str = "BOUNCED BACK") -> None:
        with self.lock:
            self.campaign_bounces.setdefault(campaign_uid, []).append({
                "message": message, "processed": "yes", "bounce_type": bounce_type,
                "subscriber": {"subscriber_uid": _uid(), "email": email}})
    # --- end feedback ---

    def fail_next(self, n: int = 1, only: tuple[str, str] | None = None) -> None:
        self.failures, self.failing = n, only

    def throttle_next(self, n: int = 1, retry_after: str = "0") -> None:
        self.throttles, self.retry_after = n, retry_after

    def subscribers(self, list_uid: str) -> dict[str, dict]:
        return self.lists[list_uid]["subscribers"]

    def list_by_name(self, name: str) -> dict | None:
        return next((v for v in self.lists.values() if v["name"] == name), None)

    def campaign_by_name(self, name: str) -> dict | None:
        return next((v for v in self.campaigns.values() if v["name"] == name), None)


def _error(status: int, error) -> JSONResponse:
    return JSONResponse({"status": "error", "error": error}, status_code=status)


def _ok(data: dict, status: int = 200) -> JSONResponse:
    return JSONResponse({"status": "success", "data": data}, status_code=status)


def _page(request: Request, records: list[dict]) -> JSONResponse:
    try:
        page = max(int(request.query_params.get("page", "1")), 1)
        per_page = min(max(int(request.query_params.get("per_page", "10")), 10), 50)
    except ValueError:
        return _error(422, "page and per_page must be numbers")
    total_pages = (len(records) + per_page - 1) // per_page
    chunk = records[(page - 1) * per_page: page * per_page]
    return _ok({
        "count": str(len(records)), "total_pages": total_pages, "current_page": page,
        "next_page": page + 1 if page < total_pages else None, "prev_page": page - 1 if page > 1 else None,
        "records": chunk,
    })


def _php_encode(text: str) -> str:
    """PHP's urlencode: ``+`` for a space, every byte but ``A-Za-z0-9_.-`` as ``%XX``."""
    return "".join(
        chr(b) if chr(b).isascii() and (chr(b).isalnum() or chr(b) in "_.-") else "+" if b == 0x20 else f"%{b:02X}"
        for b in text.encode()
    )


def _http_build_query(pairs: list[tuple[str, str]]) -> str:
    """``ksort($params, SORT_STRING)`` on the top-level key, then ``http_build_query``."""
    ordered = sorted(pairs, key=lambda p: p[0].split("[", 1)[0])
    return "&".join(f"{_php_encode(k)}={_php_encode(v)}" for k, v in ordered)


def _check_auth(state: MailwizzState, request: Request, body_pairs: list[tuple[str, str]]) -> str | None:
    headers = request.headers
    if "x-mw-signature" in headers:
        public = headers.get("x-mw-public-key", "")
        try:
            stamp = int(headers.get("x-mw-timestamp", ""))
        except ValueError:
            return "Invalid API request timestamp."
        if public != state.api_key:
            return "Invalid API key."
        if abs(time.time() - stamp) > SIGNATURE_MAX_AGE_S:
            return "Your request expired."
        # As MailWizz 1.x checks it: the three special headers always take part, an absent or empty
        # X-MW-REMOTE-ADDR as "X-MW-REMOTE-ADDR=", merged with the body; GET params go on the URL.
        special = [(k, headers.get(k.lower(), "")) for k in ("X-MW-PUBLIC-KEY", "X-MW-TIMESTAMP", "X-MW-REMOTE-ADDR")]
        query = parse_qsl(request.url.query, keep_blank_values=True)
        url = f"{request.url.scheme}://{request.url.netloc}{request.url.path}"
        if query:
            url += "?" + _http_build_query(query)
        separator = "&" if query else "?"
        text = f"{request.method} {url}{separator}{_http_build_query(special + body_pairs)}"
        expected = hmac.new(state.private_key.encode(), text.encode(), hashlib.sha1).hexdigest()
        if not hmac.compare_digest(expected, headers["x-mw-signature"]):
            return "Invalid API request signature."
        return None
    key = headers.get("x-api-key") or headers.get("x-mw-public-key")
    if key != state.api_key:
        return "Invalid API key."
    return None


def build_app(state: MailwizzState) -> Starlette:
    def endpoint(handler):
        async def wrapped(request: Request):
            raw = await request.body()
            form_pairs = []
            if request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
                form_pairs = parse_qsl(raw.decode(), keep_blank_values=True)
            with state.lock:
                state.calls.append((request.method, request.url.path))
                state.last_headers = dict(request.headers)
            if state.latency:
                await anyio.sleep(state.latency)
            canned = state.canned.get((request.method, request.url.path))
            if canned:
                return Response(canned[1], status_code=canned[0], media_type="application/json")
            refusal = _check_auth(state, request, form_pairs)
            if refusal:
                return _error(400, refusal)
            with state.lock:
                if state.throttles:
                    state.throttles -= 1
                    return JSONResponse({"status": "error", "error": "Too many requests"}, status_code=429,
                                        headers={"Retry-After": state.retry_after})
                if state.failures and state.failing in (None, (request.method, request.url.path)):
                    state.failures -= 1
                    return _error(500, "Internal server error")
                answer = handler(request, parse_php_form(form_pairs), **request.path_params)
                if state.cron_on_every_call:
                    state.run_cron()
                return answer

        return wrapped

    def lists_index(request, form):
        return _page(request, [{"general": {"list_uid": uid, "name": v["name"]}} for uid, v in state.lists.items()])

    def lists_create(request, form):
        general, defaults = form.get("general") or {}, form.get("defaults") or {}
        problems = {k: f"{k} cannot be blank." for k, v in (("name", general.get("name")), ("from_email", defaults.get("from_email")),
                                                             ("from_name", defaults.get("from_name"))) if not v}
        if problems:
            return _error(422, problems)
        company = form.get("company") if isinstance(form.get("company"), dict) else {}
        if not company and not state.company_complete:  # no company[...]: the customer's profile is used, and it is incomplete
            return _error(422, {"company": {k: f"{label} cannot be blank." for k, label in COMPANY_FIELDS.items()}})
        uid = _uid()
        fields = [{"tag": t, "label": t.title(), "required": "yes" if t == "EMAIL" else "no", "type": {"identifier": "text"}}
                  for t in ("EMAIL", "FNAME", "LNAME")]
        state.lists[uid] = {"list_uid": uid, "name": general["name"], "defaults": defaults, "fields": fields, "subscribers": {}}
        return JSONResponse({"status": "success", "list_uid": uid}, status_code=201)

    def lst(uid):
        return state.lists.get(uid)

    def fields_index(request, form, list_uid):
        if not lst(list_uid):
            return _error(404, "The subscribers list does not exist.")
        return _ok({"records": lst(list_uid)["fields"]})

    def fields_create(request, form, list_uid):
        if state.fields_create_answer:  # an install without the route
            return _error(state.fields_create_answer, "Page not found." if state.fields_create_answer == 404 else "Method Not Allowed")
        if not lst(list_uid):
            return _error(404, "The subscribers list does not exist.")
        tag, label = form.get("tag", ""), form.get("label", "")
        if not re.fullmatch(r"[A-Z][A-Z0-9_]{0,49}", tag or "") or not label:
            return _error(422, {"tag": "Tag must be upper case letters, digits and _; label is required."})
        if any(f["tag"] == tag for f in lst(list_uid)["fields"]):
            return _error(422, {"tag": "The tag attribute must be unique in the mail list!"})
        lst(list_uid)["fields"].append({"tag": tag, "label": label, "required": "no", "type": {"identifier": "text"}})
        return JSONResponse({"status": "success", "field_id": len(lst(list_uid)["fields"])}, status_code=201)

    def _add(list_uid, values: dict, *, bulk: bool = False) -> tuple[dict | None, dict | None]:
        email = (values.get("EMAIL") or "").strip()
        if not valid_email(email):
            return None, {"EMAIL": "Email is not a valid email address."}
        if email.lower() in state.blacklist:
            return None, {"EMAIL": "This email address is blacklisted."}
        subs = state.subscribers(list_uid)
        tags = {f["tag"] for f in lst(list_uid)["fields"]}
        existing = next((s for s in subs.values() if s["EMAIL"].lower() == email.lower()), None)
        if existing is not None and bulk and existing["status"] == "unsubscribed":
            # the bulk call subscribes an unsubscribed address again, and says nothing about it
            existing.update({k: v for k, v in values.items() if k in tags}, status="unconfirmed" if state.force_optin else "confirmed")
            return existing, None
        if existing is not None:
            return None, {"EMAIL": "The subscriber already exists in this list."}
        suid = _uid()
        record = {"subscriber_uid": suid, "status": "unconfirmed" if state.force_optin else "confirmed",
                  **{k: v for k, v in values.items() if k in tags}}
        subs[suid] = record
        return record, None

    def subscribers_index(request, form, list_uid):
        if not lst(list_uid):
            return _error(404, "The subscribers list does not exist.")
        status = request.query_params.get("status")
        return _page(request, [s for s in state.subscribers(list_uid).values() if status in (None, s["status"])])

    def subscriber_create(request, form, list_uid):
        if not lst(list_uid):
            return _error(404, "The subscribers list does not exist.")
        record, errors = _add(list_uid, form)
        if errors:
            exists = "already exists" in errors["EMAIL"] or "blacklisted" in errors["EMAIL"]
            return _error(409 if exists else 422, errors if not exists else errors["EMAIL"])
        return _ok({"record": record}, 201)

    def subscribers_bulk(request, form, list_uid):
        if not lst(list_uid):
            return _error(404, "The subscribers list does not exist.")
        given = form.get("subscribers")
        if not isinstance(given, dict) or not given:
            return _error(422, {"subscribers": "Please provide the subscribers."})
        records = []
        for key in sorted(given, key=lambda k: int(k) if k.isdigit() else 0):
            values = given[key] if isinstance(given[key], dict) else {}
            record, errors = _add(list_uid, values, bulk=True)
            # the answer holds the field values and the uid (>= 1.9.15), never the status
            shown = {k: v for k, v in (record or values).items() if k != "status"}
            records.append({"data": shown, **({"errors": errors} if errors else {})})
        return _ok({"records": records}, 201)

    def search_by_email(request, form, list_uid):
        if not lst(list_uid):
            return _error(404, "The subscribers list does not exist.")
        email = request.query_params.get("EMAIL", "").lower()
        if not valid_email(email):
            return _error(422, "Please provide a valid email address.")
        found = next((s for s in state.subscribers(list_uid).values() if s["EMAIL"].lower() == email), None)
        if found is None:
            return _error(404, "The subscriber does not exist in this list.")
        return _ok({"subscriber_uid": found["subscriber_uid"], "status": found["status"], "date_added": "2026-01-01 00:00:00"})

    def subscriber_update(request, form, list_uid, subscriber_uid):
        subs = state.subscribers(list_uid) if lst(list_uid) else {}
        if subscriber_uid not in subs:
            return _error(404, "The subscriber does not exist in this list.")
        tags = {f["tag"] for f in lst(list_uid)["fields"]}
        subs[subscriber_uid].update({k: v for k, v in form.items() if k in tags and isinstance(v, str)})
        status = (form.get("details") or {}).get("status")
        if status:
            subs[subscriber_uid]["status"] = status
        return _ok({"record": subs[subscriber_uid]})

    def subscriber_unsubscribe(request, form, list_uid, subscriber_uid):
        subs = state.subscribers(list_uid) if lst(list_uid) else {}
        if subscriber_uid not in subs:
            return _error(404, "The subscriber does not exist in this list.")
        subs[subscriber_uid]["status"] = "unsubscribed"
        return _ok({})

    def subscriber_delete(request, form, list_uid, subscriber_uid):
        subs = state.subscribers(list_uid) if lst(list_uid) else {}
        if subs.pop(subscriber_uid, None) is None:
            return _error(404, "The subscriber does not exist in this list.")
        return _ok({})

    # -- erasure: the subscribers of an address in every list (contact forget) -- begin --------
    def search_in_all_lists(request, form):
        email = request.query_params.get("EMAIL", "").lower()
        if not email:
            return _error(422, {"EMAIL": "Please provide the subscriber email address."})
        records = [
            {"subscriber_uid": s["subscriber_uid"], "email": s["EMAIL"], "status": s["status"],
             "list": {"list_uid": uid, "name": lst["name"], "display_name": lst["name"]}, "date_added": "2026-01-01 00:00:00"}
            for uid, lst in state.lists.items() for s in lst["subscribers"].values() if s["EMAIL"].lower() == email
        ]
        if not records:
            return _error(404, "The subscriber does not exist.")
        return _page(request, records)
    # -- erasure -- end ------------------------------------------------------------------------

    def campaigns_index(request, form):
        return _page(request, [{"campaign_uid": uid, "name": c["name"], "status": c["status"]} for uid, c in state.campaigns.items()])

    def campaign_create(request, form):
        c = form.get("campaign") or {}
        required = ("name", "from_name", "from_email", "subject", "reply_to", "send_at", "list_uid")
        problems = {k: f"{k} cannot be blank." for k in required if not c.get(k)}
        if problems:
            return _error(422, problems)
        if c["list_uid"] not in state.lists:
            return _error(422, {"list_uid": "Provided list_uid does not exist."})
        if not re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", c["send_at"]):
            return _error(422, {"send_at": "Send at must be Y-m-d H:i:s."})
        try:
            html = base64.b64decode((c.get("template") or {}).get("content", ""), validate=True).decode()
        except ValueError:
            return _error(422, {"template": "The content is not base64."})
        if "[UNSUBSCRIBE_URL]" not in html:
            return _error(422, {"content": "The following tags are required but were not found in your content: [UNSUBSCRIBE_URL]"})
        status = c.get("status") or "pending-sending"
        if status not in CREATE_STATUSES:
            return _error(422, {"status": f"Status must be one of {', '.join(CREATE_STATUSES)}."})
        uid = _uid()
        state.campaigns[uid] = {"campaign_uid": uid, "name": c["name"], "status": status, "started": False,
                                "list_uid": c["list_uid"], "html": html, "fields": c}
        return JSONResponse({"status": "success", "campaign_uid": uid}, status_code=201)

    def campaign_view(request, form, campaign_uid):
        c = state.campaigns.get(campaign_uid)
        if c is None:
            return _error(404, "The campaign does not exist.")
        return _ok({"record": {"campaign_uid": campaign_uid, "name": c["name"], "status": c["status"],
                               "list": {"list_uid": c["list_uid"]}}})

    def campaign_toggle(request, form, campaign_uid):
        c = state.campaigns.get(campaign_uid)
        if c is None:
            return _error(404, "The campaign does not exist.")
        if c["status"] == "paused":
            c["status"] = "sending" if c.get("started") else "pending-sending"
        elif c["status"] in PAUSABLE:
            c["status"] = "paused"
        else:
            return _error(422, "This campaign cannot be paused or unpaused.")
        return _ok({"record": {"status": c["status"]}})

    # --- feedback routes: unsubscribe everywhere, a campaign's unsubscribes and bounces (newest first) ---
    def unsubscribe_everywhere(request, form):
        email = (form.get("EMAIL") or "").strip() if isinstance(form.get("EMAIL"), str) else ""
        if not email:
            return _error(422, "Please provide the subscriber email address.")
        if not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", email):
            return _error(422, "Please provide a valid email address.")
        state.unsubscribed_everywhere.append(email)
        for lst_ in state.lists.values():
            for sub in lst_["subscribers"].values():
                if sub["EMAIL"] == email:
                    sub["status"] = "unsubscribed"
        return _ok({})

    def campaign_feedback(records_of):
        def handler(request, form, campaign_uid):
            if campaign_uid not in state.campaigns:
                return _error(404, "The campaign does not exist!")
            return _page(request, list(reversed(records_of.get(campaign_uid, []))))
        return handler

    feedback_routes = [
        Route("/api/lists/subscribers/unsubscribe-by-email-from-all-lists", endpoint(unsubscribe_everywhere), methods=["PUT"]),
        Route("/api/campaigns/{campaign_uid}/unsubscribes", endpoint(campaign_feedback(state.campaign_unsubscribes)), methods=["GET"]),
        Route("/api/campaigns/{campaign_uid}/bounces", endpoint(campaign_feedback(state.campaign_bounces)), methods=["GET"]),
    ]
    # --- end feedback routes ---

    # -- campaign stats (GET campaigns/{uid}/stats, REFERENCE keys) ---------------------------------
    # Counts from the send cron (processed, delivered) unless the test sets ``campaign["stats"]``
    # (any REFERENCE key, e.g. {"opens_count": 7}); each count comes with its ``_rate`` over the
    # subscribers, formatted as MailWizz does ("12.50").
    def campaign_stats(request, form, campaign_uid):
        c = state.campaigns.get(campaign_uid)
        if c is None:
            return _error(404, "The campaign does not exist.")
        subscribers = len(state.lists.get(c.get("list_uid"), {}).get("subscribers", {}))
        mailed = sum(1 for name, _ in state.delivered if name == c["name"])
        counts = {key: 0 for key in STATS_COUNT_KEYS}
        bounces = [b["bounce_type"] for b in state.campaign_bounces.get(campaign_uid, [])]
        counts.update(subscribers_count=subscribers, processed_count=mailed, delivery_success_count=mailed - len(bounces),
                      bounces_count=len(bounces), hard_bounces_count=bounces.count("hard"), soft_bounces_count=bounces.count("soft"),
                      internal_bounces_count=bounces.count("internal"), delivery_error_count=len(bounces),
                      complaints_count=len(state.campaign_complaints.get(campaign_uid, [])))
        counts["delivery_success_count"] = max(counts["delivery_success_count"], 0)
        counts.update(c.get("stats") or {})
        data = {"campaign_status": c["status"], **counts}
        for key in STATS_COUNT_KEYS:
            if key != "subscribers_count":
                try:
                    data[key.replace("_count", "_rate")] = f"{100 * float(str(counts[key]).replace(',', '')) / subscribers:.2f}" if subscribers else "0.00"
                except ValueError:
                    data[key.replace("_count", "_rate")] = "0.00"
        return _ok(data)
    # -- end of campaign stats -------------------------------------------------------------------

    routes = feedback_routes + [
        Route("/api/lists", endpoint(lists_index), methods=["GET"]),
        Route("/api/lists", endpoint(lists_create), methods=["POST"]),
        Route("/api/lists/subscribers/search-by-email-in-all-lists", endpoint(search_in_all_lists), methods=["GET"]),  # erasure
        Route("/api/lists/{list_uid}/fields", endpoint(fields_index), methods=["GET"]),
        Route("/api/lists/{list_uid}/fields", endpoint(fields_create), methods=["POST"]),
        Route("/api/lists/{list_uid}/subscribers", endpoint(subscribers_index), methods=["GET"]),
        Route("/api/lists/{list_uid}/subscribers", endpoint(subscriber_create), methods=["POST"]),
        Route("/api/lists/{list_uid}/subscribers/bulk", endpoint(subscribers_bulk), methods=["POST"]),
        Route("/api/lists/{list_uid}/subscribers/search-by-email", endpoint(search_by_email), methods=["GET"]),
        Route("/api/lists/{list_uid}/subscribers/{subscriber_uid}", endpoint(subscriber_update), methods=["PUT"]),
        Route("/api/lists/{list_uid}/subscribers/{subscriber_uid}", endpoint(subscriber_delete), methods=["DELETE"]),
        Route("/api/lists/{list_uid}/subscribers/{subscriber_uid}/unsubscribe", endpoint(subscriber_unsubscribe), methods=["PUT"]),
        Route("/api/campaigns", endpoint(campaigns_index), methods=["GET"]),
        Route("/api/campaigns", endpoint(campaign_create), methods=["POST"]),
        Route("/api/campaigns/{campaign_uid}", endpoint(campaign_view), methods=["GET"]),
        Route("/api/campaigns/{campaign_uid}/pause-unpause", endpoint(campaign_toggle), methods=["PUT"]),
        Route("/api/campaigns/{campaign_uid}/stats", endpoint(campaign_stats), methods=["GET"]),
    ]

    async def wrong_method(request, exc):
        return _error(400, "Wrong request method.")

    async def missing(request, exc):
        return _error(404, "Page not found.")

    return Starlette(routes=routes, exception_handlers={405: wrong_method, 404: missing})


@contextmanager
def running_mailwizz(state: MailwizzState | None = None) -> Iterator[tuple[str, MailwizzState]]:
    """Serve the stand-in on 127.0.0.1 in a thread: yields (base_url, state)."""
    state = state or MailwizzState()
    with serving(build_app(state), "the MailWizz stand-in") as url:
        yield f"{url}/api", state
