"""MailWizz as a transport: the ledger hands a list over, MailWizz sends (REFERENCE.md, MailWizz).

:meth:`MailwizzInstance.hand_off` takes a :class:`~.delivery.ListHandOff` (one per our campaign and
chosen template) and, every step found before it is created, so that a re-run (after a crash at
any point) never makes a second list, subscriber or campaign:

1. the list named ``delivery.name`` (found by name, or created with the sender defaults; a 422
   for the customer's incomplete company details is a :class:`ListRefused` naming them);
2. the custom list fields the content needs (``custom_fields``: tag -> contact field; an install
   without ``POST lists/{uid}/fields`` is a :class:`FieldsMissing` naming them);
3. the subscribers, in bulk calls (:meth:`MailwizzInstance.push_subscribers`); an address the list
   holds as unsubscribed or blacklisted is not pushed and becomes a suppression; a per-record error
   (an existing subscriber, a blacklisted address) is followed by a search-by-email: an existing
   confirmed subscriber is handed off, one MailWizz does not take is skipped as ``bad_address``,
   any other case (unconfirmed on a forced double opt-in list included) is ``failed`` with the reason;
4. last, the campaign named ``delivery.name`` on that list (found by name, or created **paused**
   with the base64 HTML and ``send_at`` in the instance's time zone). The ledger hands a campaign
   over in several batches; a paused MailWizz campaign sends nothing, so MailWizz never starts on
   a half-filled list. :meth:`release` unpauses it once every batch is on the list (then MailWizz
   waits for ``send_at``). A subscriber newly added to the list of a campaign that is already sent
   is ``failed``: MailWizz mails nobody new for it.

Content without ``[UNSUBSCRIBE_URL]`` is refused before any call. A refused campaign create
marks every recipient ``failed``; a create whose answer was lost and whose campaign cannot be
found marks them ``unknown`` (the ledger does not resend those on its own). :meth:`pause`,
:meth:`resume` and :meth:`release` read the status first, because MailWizz's ``pause-unpause``
toggles: a campaign already sending is never toggled back to paused.

Built from plain values (the tenant file's secrets are read by the caller when it builds one):
this module never imports the Dagster definitions.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from email_engine_resources.delivery import DeliveryResult, ListHandOff, ListRecipient
from email_engine_resources.mailwizz_client import (
    MailwizzClient,
    MailwizzError,
    excerpt,
)

UNSUBSCRIBE_TAG = "[UNSUBSCRIBE_URL]"
# Contact fields behind MailWizz's default list fields; other fields need custom list fields.
DEFAULT_FIELDS: dict[str, str] = {"EMAIL": "email", "FNAME": "first_name", "LNAME": "last_name"}
HANDED_OFF_STATUSES = frozenset({"confirmed"})
# Subscriber statuses never pushed again (the bulk call would re-subscribe an unsubscribed one without
# a word), with the suppression each becomes: MailWizz blacklists an address on its bounces.
HELD_STATUSES: dict[str, str] = {"unsubscribed": "unsubscribed", "blacklisted": "bounced"}
# What a list create falls back to when it carries no company[...]: the customer's company profile.
COMPANY_FIELDS: dict[str, str] = {"name": "company name", "country": "country", "address": "address", "city": "city",
                                  "zip": "zip code"}
FIELD_ROUTE_MISSING = frozenset({404, 405})  # POST lists/{uid}/fields on 2.1.13, 1.9.4 and many others
BULK_SIZE = 100
PAUSABLE = frozenset({"pending-sending", "sending", "processing"})
# A campaign in these states mails nobody new: a subscriber added now is not handed off.
FINISHED = frozenset({"sent", "pending-delete", "blocked"})
SEND_AT_FORMAT = "%Y-%m-%d %H:%M:%S"
FEEDBACK_KINDS: tuple[str, ...] = ("unsubscribes", "bounces")
# A hand-off's campaign waits paused until :meth:`MailwizzInstance.release`: later batches still join its list.
CREATED_STATUS = "paused"


@dataclass(frozen=True)
class Subscriber:
    """A subscriber to push: its email and list field values (by tag)."""

    email: str
    fields: Mapping[str, str | None]


@dataclass(frozen=True)
class PushResult:
    """Where a pushed subscriber ended up: its uid and MailWizz status, or the reason it was refused.

    ``held``: MailWizz holds the address as unsubscribed or blacklisted, so it was not pushed;
    ``bad_address``: MailWizz does not take it for an email address (search-by-email answered 422).
    """

    email: str
    subscriber_uid: str | None
    status: str | None
    error: str = ""
    existed: bool = False
    held: bool = False
    bad_address: bool = False

    @property
    def suppression(self) -> str:
        """The suppression reason the address becomes (``""``: none): it is held out, or MailWizz's
        blacklist refused it."""
        if self.held or self.existed:
            return HELD_STATUSES.get(self.status or "", "")
        return HELD_STATUSES["blacklisted"] if "blacklisted" in self.error.lower() else ""


class ListRefused(MailwizzError):
    """``POST lists`` refused: the message says what to fix in MailWizz."""


class FieldsMissing(MailwizzError):
    """The list lacks fields the content needs and this MailWizz cannot create them through its API."""

    def __init__(self, list_name: str, tags: Sequence[str], status: int):
        self.tags = list(tags)
        super().__init__(status, (
            f"create the list field(s) {', '.join(self.tags)} (type text) on list {excerpt(list_name, 120)} in MailWizz: "
            f"this MailWizz cannot create fields through its API (POST lists/{{list_uid}}/fields answered {status})"))


def company_problem(message: str) -> str | None:
    """What to fill in when a list create's 422 is about the company details (``None``: it is not)."""
    text = message.lower()
    if "company" not in text:
        return None
    named = [label for key, label in COMPANY_FIELDS.items() if key in text.replace("company:", "")]
    return ", ".join(named or COMPANY_FIELDS.values())


def send_at_text(when: datetime | None, timezone: str) -> str:
    """``Y-m-d H:i:s`` in the instance's time zone (naive datetimes are taken as UTC); now when ``None``."""
    moment = when or datetime.now(UTC)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(ZoneInfo(timezone)).strftime(SEND_AT_FORMAT)


def _chunks(items: Sequence, size: int) -> Iterator[Sequence]:
    for start in range(0, len(items), size):
        yield items[start: start + size]


class MailwizzInstance:
    """One MailWizz instance (one customer's API keys). ``repr`` shows the URL, never a key."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        api_version: str = "2",
        private_key: str | None = None,
        timezone: str = "UTC",
        timeout: float = 30.0,
        retries: int = 4,
        allow_private: bool = False,
        bulk_size: int = BULK_SIZE,
        backoff_initial: float = 0.5,
    ):
        ZoneInfo(timezone)  # an unknown zone fails here, not at the first send
        if not 1 <= bulk_size <= 10_000:
            raise ValueError("bulk_size must be between 1 and 10000")
        self.timezone = timezone
        self.bulk_size = bulk_size
        self.client = MailwizzClient(
            base_url, api_key, api_version=api_version, private_key=private_key, timeout=timeout,
            retries=retries, allow_private=allow_private, backoff_initial=backoff_initial,
        )
        self._lists: dict[str, str] = {}
        self._created_lists: set[str] = set()  # created by this instance: nobody is held on them
        self._held: dict[str, dict[str, tuple[str, str]]] = {}  # list uid -> email -> (uid, status) held out
        self._campaigns: dict[str, str] = {}

    def __repr__(self) -> str:
        return f"MailwizzInstance({self.client.base_url!r}, timezone={self.timezone!r})"

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> MailwizzInstance:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- lists and fields --------------------------------------------------------------------

    def find_list(self, name: str) -> str | None:
        if name in self._lists:
            return self._lists[name]
        for record in self.client.pages("lists"):
            general = record.get("general") if isinstance(record.get("general"), dict) else record
            if general.get("name") == name and general.get("list_uid"):
                self._lists[name] = str(general["list_uid"])
                return self._lists[name]
        return None

    def ensure_list(self, name: str, *, from_name: str, from_email: str, reply_to: str, subject: str = "") -> str:
        """The uid of the list called ``name``, created if there is none."""
        found = self.find_list(name)
        if found:
            return found
        data = {
            "general": {"name": name, "description": name, "opt_in": "single", "opt_out": "single"},
            "defaults": {"from_name": from_name, "from_email": from_email, "reply_to": reply_to or from_email,
                         "subject": subject},
        }
        try:
            uid = self.client.post("lists", data).get("list_uid")
        except MailwizzError as exc:
            fill_in = company_problem(exc.message) if exc.status == 422 else None
            if fill_in:
                raise ListRefused(422, (
                    f"fill in the customer's company details in MailWizz ({fill_in}): without them MailWizz refuses to "
                    f"create list {excerpt(name, 120)} (a list created without company[...] takes the customer's; "
                    f"it answered: {exc.message})")) from None
            if exc.definitive:
                raise
            uid = self.find_list(name)  # the create may have gone through before the answer was lost
            if not uid:
                raise
        if not uid:
            raise MailwizzError(201, "POST lists: the answer holds no list_uid")
        self._lists[name] = str(uid)
        self._created_lists.add(str(uid))
        return self._lists[name]

    def ensure_fields(self, list_uid: str, tags: Iterable[str], *, list_name: str = "") -> list[str]:
        """Create the text fields among ``tags`` the list lacks; returns the tags created.

        :class:`FieldsMissing` names every missing tag when this MailWizz has no
        ``POST lists/{uid}/fields`` (404 / 405): they must be created in MailWizz itself.
        """
        wanted = [t for t in dict.fromkeys(tags) if t not in DEFAULT_FIELDS]
        if not wanted:
            return []
        data = self.client.get(f"lists/{list_uid}/fields").get("data") or {}
        have = {str(r.get("tag")) for r in data.get("records") or [] if isinstance(r, dict)}
        missing = [t for t in wanted if t not in have]
        created = []
        for tag in missing:
            try:
                self.client.post(f"lists/{list_uid}/fields",
                                 {"type": "text", "label": tag.replace("_", " ").title(), "tag": tag,
                                  "required": "no", "visibility": "visible"}, idempotent=True)
            except MailwizzError as exc:
                if exc.status in FIELD_ROUTE_MISSING:
                    raise FieldsMissing(list_name or list_uid, [t for t in missing if t not in created], exc.status) from None
                if not (exc.status == 422 and _duplicate_tag(exc.message)):  # made by an earlier, interrupted run
                    raise
            created.append(tag)
        return created

    # -- subscribers ---------------------------------------------------------------------------

    def push_subscribers(self, list_uid: str, subscribers: Sequence[Subscriber]) -> list[PushResult]:
        """Add ``subscribers`` in bulk calls; one result per subscriber, in order.

        * An address the list holds as unsubscribed or blacklisted is not pushed (``held=True``):
          the bulk call would subscribe it again without a word. The list's held addresses are read
          once (``GET lists/{uid}/subscribers?status=``), not for a list this instance created.
        * The bulk answer carries no status: it is read for one new subscriber of each call
          (search-by-email) and holds for the others of the call, which MailWizz treated alike
          (confirmed, or unconfirmed on a list with forced double opt-in).
        * An address the list already holds comes back as a per-record error and is then looked up
          by email (``existed=True``); its values are not changed here (:meth:`update_subscriber`).
          A 422 on that look-up is an address MailWizz does not take (``bad_address=True``).
        """
        held = self._held_out(list_uid)
        results: list[PushResult] = []
        for chunk in _chunks(list(subscribers), self.bulk_size):
            kept = [i for i, s in enumerate(chunk) if s.email.lower() not in held]
            pushed: dict[int, PushResult] = {}
            if kept:
                body = {"subscribers": [{**{k: v for k, v in chunk[i].fields.items() if v is not None}, "EMAIL": chunk[i].email}
                                        for i in kept]}
                data = self.client.post(f"lists/{list_uid}/subscribers/bulk", body, idempotent=True).get("data") or {}
                records = data.get("records") if isinstance(data, dict) else None
                if not isinstance(records, list) or len(records) != len(kept):
                    raise MailwizzError(201, f"POST lists/{list_uid}/subscribers/bulk: expected {len(kept)} records in the answer")
                made = [self._bulk_result(list_uid, chunk[i], record if isinstance(record, dict) else {})
                        for i, record in zip(kept, records, strict=True)]
                pushed = dict(zip(kept, self._with_status(list_uid, made), strict=True))
            for i, sub in enumerate(chunk):
                if i in pushed:
                    results.append(pushed[i])
                else:
                    uid, status = held[sub.email.lower()]
                    results.append(PushResult(sub.email, uid, status, held=True))
        return results

    def _held_out(self, list_uid: str) -> dict[str, tuple[str, str]]:
        """email (lower case) -> (subscriber_uid, status) of the list's unsubscribed and blacklisted subscribers."""
        if list_uid in self._created_lists:
            return {}
        if list_uid not in self._held:
            found: dict[str, tuple[str, str]] = {}
            for status in HELD_STATUSES:
                for record in self.client.pages(f"lists/{list_uid}/subscribers", {"status": status}):
                    email = record.get("EMAIL") or record.get("email")
                    if isinstance(email, str) and str(record.get("status") or status) in HELD_STATUSES:
                        found[email.lower()] = (str(record.get("subscriber_uid") or ""), str(record.get("status") or status))
            self._held[list_uid] = found
        return self._held[list_uid]

    def _with_status(self, list_uid: str, made: list[PushResult]) -> list[PushResult]:
        """The results of one bulk call, each new subscriber with the status MailWizz gave it."""
        unknown = [i for i, r in enumerate(made) if r.subscriber_uid and r.status is None]
        status = None
        for probe in (made[i] for i in unknown):  # one look-up is enough: MailWizz gave every new subscriber of the call the same status
            try:
                found = self.find_subscriber(list_uid, probe.email)
            except MailwizzError as exc:
                if exc.status != 422:
                    raise
                continue
            if found:
                status = found[1]
                break
        return [replace(r, status=status or "") if i in unknown else r for i, r in enumerate(made)]

    def _bulk_result(self, list_uid: str, sub: Subscriber, record: dict) -> PushResult:
        errors = record.get("errors")
        data = record.get("data") if isinstance(record.get("data"), dict) else {}
        if not errors and data.get("subscriber_uid"):
            return PushResult(sub.email, str(data["subscriber_uid"]), str(data["status"]) if data.get("status") else None)
        reason = "; ".join(f"{k}: {v}" for k, v in errors.items()) if isinstance(errors, dict) else str(errors or "no uid")
        try:
            found = self.find_subscriber(list_uid, sub.email)
        except MailwizzError as exc:
            if exc.status != 422:
                raise
            return PushResult(sub.email, None, None, error=excerpt(f"MailWizz does not take it for an email address: {reason}", 200),
                              bad_address=True)
        if found:
            return PushResult(sub.email, found[0], found[1], existed=True)
        return PushResult(sub.email, None, None, error=excerpt(reason, 200))

    def find_subscriber(self, list_uid: str, email: str) -> tuple[str, str] | None:
        """(subscriber_uid, status) of ``email`` in the list, or ``None``; a 422 (an address MailWizz
        does not take, e.g. a non-ASCII local part) is a :class:`MailwizzError`."""
        try:
            data = self.client.get(f"lists/{list_uid}/subscribers/search-by-email", {"EMAIL": email}).get("data") or {}
        except MailwizzError as exc:
            if exc.status == 404:
                return None
            raise
        uid = data.get("subscriber_uid") if isinstance(data, dict) else None
        return (str(uid), str(data.get("status") or "")) if uid else None

    def update_subscriber(self, list_uid: str, subscriber_uid: str, fields: Mapping[str, str | None]) -> None:
        self.client.put(f"lists/{list_uid}/subscribers/{subscriber_uid}", {k: v or "" for k, v in fields.items()})

    def unsubscribe(self, list_uid: str, subscriber_uid: str) -> None:
        """Unsubscribe (idempotent; a subscriber MailWizz no longer has counts as done)."""
        try:
            self.client.put(f"lists/{list_uid}/subscribers/{subscriber_uid}/unsubscribe")
        except MailwizzError as exc:
            if exc.status != 404:
                raise

    def remove(self, list_uid: str, subscriber_uid: str) -> None:
        try:
            self.client.delete(f"lists/{list_uid}/subscribers/{subscriber_uid}")
        except MailwizzError as exc:
            if exc.status != 404:
                raise

    # -- erasure (contact forget) ----------------------------------------------------------------

    def subscribers_everywhere(self, email: str) -> list[tuple[str, str]]:
        """(list_uid, subscriber_uid) of ``email`` in every list of the instance (none: ``[]``).

        ``GET lists/subscribers/search-by-email-in-all-lists?EMAIL=``; a record names its list as
        ``list.list_uid`` (or ``list_uid``). A record without both uids is an answer we cannot act
        on: :class:`MailwizzError`, so that the erasure is reported unfinished rather than done.
        """
        found = []
        try:
            for record in self.client.pages("lists/subscribers/search-by-email-in-all-lists", {"EMAIL": email}):
                listed = record.get("list") if isinstance(record.get("list"), dict) else {}
                list_uid, subscriber_uid = listed.get("list_uid") or record.get("list_uid"), record.get("subscriber_uid")
                if not list_uid or not subscriber_uid:
                    raise MailwizzError(200, "GET lists/subscribers/search-by-email-in-all-lists: a record lacks its list or subscriber uid")
                found.append((str(list_uid), str(subscriber_uid)))
        except MailwizzError as exc:
            if exc.status != 404:
                raise
        return sorted(set(found))

    def delete_everywhere(self, email: str) -> int:
        """Delete ``email``'s subscriber from every list (``DELETE lists/{list}/subscribers/{suid}``); how many.

        Idempotent: a subscriber already gone (404) counts as done, and a second call finds nothing.
        """
        found = self.subscribers_everywhere(email)
        for list_uid, subscriber_uid in found:
            self.remove(list_uid, subscriber_uid)
        return len(found)

    # -- campaigns -----------------------------------------------------------------------------

    def find_campaign(self, name: str) -> str | None:
        if name in self._campaigns:
            return self._campaigns[name]
        for record in self.client.pages("campaigns"):
            if record.get("name") == name and record.get("campaign_uid"):
                self._campaigns[name] = str(record["campaign_uid"])
                return self._campaigns[name]
        return None

    def campaigns_named(self, prefix: str) -> list[str]:
        """The names of the campaigns whose name starts with ``prefix`` (one listing, remembered for later calls)."""
        names = []
        for record in self.client.pages("campaigns"):
            name, uid = record.get("name"), record.get("campaign_uid")
            if isinstance(name, str) and name.startswith(prefix) and uid:
                self._campaigns[name] = str(uid)
                names.append(name)
        return sorted(set(names))

    def status(self, name: str) -> str:
        """The MailWizz status of the campaign called ``name`` (``MailwizzError`` 404 when there is none)."""
        uid = self._campaign_uid(name)
        record = (self.client.get(f"campaigns/{uid}").get("data") or {}).get("record") or {}
        return str(record.get("status") or "")

    def campaign_stats(self, name: str) -> dict:
        """The figures of ``GET campaigns/{uid}/stats`` for the campaign called ``name``, as MailWizz gives
        them (``campaign_status``, ``subscribers_count``, ``opens_count``, ...; ``MailwizzError`` 404 when
        there is no such campaign)."""
        data = self.client.get(f"campaigns/{self._campaign_uid(name)}/stats").get("data")
        if not isinstance(data, dict):
            raise MailwizzError(200, f"GET campaigns/.../stats of {excerpt(name, 80)}: the answer holds no stats")
        return data

    def pause(self, name: str) -> str:
        return self._toggle(name, pause=True)

    def resume(self, name: str) -> str:
        return self._toggle(name, pause=False)

    def pause_if_sending(self, name: str) -> str:
        """Pause the campaign called ``name`` only when it is sending (or about to: pending-sending,
        processing); its status afterwards. One status read first (``GET campaigns/{uid}``), then
        ``PUT campaigns/{uid}/pause-unpause`` only then: a paused, sent or draft campaign is left as it is."""
        current = self.status(name)
        if current not in PAUSABLE:
            return current
        return self._put_toggle(name)

    def release(self, prefix: str) -> dict[str, str]:
        """Unpause every paused campaign whose name starts with ``prefix``; the status of each afterwards.

        Idempotent: a campaign that is not paused (pending-sending, sending, sent) is left as it
        is, so calling it again after a crash, or after a release that went through, toggles nothing.
        """
        return {name: self.resume(name) for name in self.campaigns_named(prefix)}

    def _toggle(self, name: str, *, pause: bool) -> str:
        current = self.status(name)
        if (pause and current == "paused") or (not pause and current != "paused"):
            return current  # already where asked: a second toggle would undo it
        if pause and current not in PAUSABLE:
            raise MailwizzError(422, f"campaign {excerpt(name, 80)} is {current}: it cannot be paused")
        return self._put_toggle(name)

    def _put_toggle(self, name: str) -> str:
        try:
            self.client.put(f"campaigns/{self._campaign_uid(name)}/pause-unpause", idempotent=False)
        except MailwizzError as exc:
            if exc.definitive:
                raise
        return self.status(name)  # read back: a lost answer may still have toggled

    def _campaign_uid(self, name: str) -> str:
        uid = self.find_campaign(name)
        if uid is None:
            raise MailwizzError(404, f"no MailWizz campaign is called {excerpt(name, 80)}")
        return uid

    def _create_campaign(self, delivery: ListHandOff, list_uid: str) -> str:
        template = {"content": base64.b64encode(delivery.html.encode()).decode(), "inline_css": "no"}
        if delivery.text:
            template["plain_text"] = base64.b64encode(delivery.text.encode()).decode()
        else:
            template["auto_plain_text"] = "yes"
        data = {"campaign": {
            "name": delivery.name, "type": "regular", "from_name": delivery.from_name, "from_email": delivery.from_email,
            "subject": delivery.subject, "reply_to": delivery.reply_to or delivery.from_email,
            "send_at": send_at_text(delivery.send_at, self.timezone), "list_uid": list_uid,
            "status": CREATED_STATUS,
            "options": {"url_tracking": "yes", "open_tracking": "yes"}, "template": template,
        }}
        uid = self.client.post("campaigns", data).get("campaign_uid")
        if not uid:
            raise MailwizzError(201, "POST campaigns: the answer holds no campaign_uid")
        self._campaigns[delivery.name] = str(uid)
        return self._campaigns[delivery.name]

    # -- feedback: suppressions out, unsubscribes and bounces in ------------------------------

    def unsubscribe_everywhere(self, email: str) -> None:
        """Unsubscribe ``email`` from every list of the customer (``PUT lists/subscribers/unsubscribe-by-email-from-all-lists``).

        Idempotent: MailWizz answers success also when it holds no subscriber with that address;
        a 422 (an address it does not take for an email) is a definitive :class:`MailwizzError`.
        """
        self.client.put("lists/subscribers/unsubscribe-by-email-from-all-lists", {"EMAIL": email})

    def campaign_feedback(self, campaign_uid: str, kind: str) -> Iterator[list[dict]]:
        """Pages of ``GET campaigns/{uid}/unsubscribes`` or ``.../bounces``, newest first as MailWizz lists them.

        An unsubscribe record holds ``date_added``, ``reason``, ``note`` and ``subscriber``
        (``subscriber_uid``, ``email``); a bounce ``message``, ``bounce_type`` (hard, soft,
        internal) and ``subscriber``, and no date.
        """
        if kind not in FEEDBACK_KINDS:
            raise ValueError(f"kind must be one of {', '.join(FEEDBACK_KINDS)}")
        return self.client.page_lists(f"campaigns/{campaign_uid}/{kind}")

    # -- the ledger's call ---------------------------------------------------------------------

    def hand_off(self, delivery: ListHandOff) -> list[DeliveryResult]:
        """One result per recipient: ``handed_off``, or ``failed`` / ``unknown`` with the reason."""
        if UNSUBSCRIBE_TAG not in delivery.html:
            return _all(delivery.recipients, "failed", f"the content lacks {UNSUBSCRIBE_TAG}: MailWizz refuses it")
        list_uid = self.ensure_list(delivery.name, from_name=delivery.from_name, from_email=delivery.from_email,
                                    reply_to=delivery.reply_to, subject=delivery.subject)
        self.ensure_fields(list_uid, delivery.custom_fields, list_name=delivery.name)
        tags = {**DEFAULT_FIELDS, **delivery.custom_fields}
        subscribers = [Subscriber(r.email, {tag: r.fields.get(f) for tag, f in tags.items() if tag != "EMAIL"})
                       for r in delivery.recipients]
        finished = self.status(delivery.name) if self.find_campaign(delivery.name) else ""
        finished = finished if finished in FINISHED else ""
        pushed = self.push_subscribers(list_uid, subscribers)
        campaign_refusal = self._ensure_campaign(delivery, list_uid)
        return [_outcome(recipient.row_id, push, campaign_refusal, finished)
                for recipient, push in zip(delivery.recipients, pushed, strict=True)]

    def _ensure_campaign(self, delivery: ListHandOff, list_uid: str) -> tuple[str, str] | None:
        """``None`` when the campaign exists or was created; else (status, detail) for every recipient."""
        if self.find_campaign(delivery.name):
            return None
        try:
            self._create_campaign(delivery, list_uid)
            return None
        except MailwizzError as exc:
            if exc.definitive:
                return "failed", f"campaign refused: {exc}"
            if self.find_campaign(delivery.name):
                return None
            return "unknown", f"campaign create unconfirmed: {exc}"


def _outcome(row_id: int, push: PushResult, campaign_refusal: tuple[str, str] | None, finished: str) -> DeliveryResult:
    """What the ledger records for one recipient of a hand-off."""
    if push.held or (push.existed and push.suppression):
        return DeliveryResult(row_id, "failed", f"MailWizz holds the address as {push.status}: not pushed again "
                                                f"(its bulk call would subscribe it again); suppressed as {push.suppression}",
                              suppress=push.suppression)
    if push.bad_address:
        return DeliveryResult(row_id, "failed", push.error, skipped="bad_address")
    if campaign_refusal is not None:
        return DeliveryResult(row_id, *campaign_refusal)
    if finished and not push.existed:
        return DeliveryResult(row_id, "failed", f"the MailWizz campaign is already {finished}")
    if push.subscriber_uid and push.status in HANDED_OFF_STATUSES:
        return DeliveryResult(row_id, "handed_off")
    if push.subscriber_uid and push.status == "unconfirmed":
        return DeliveryResult(row_id, "failed", "MailWizz left the subscriber unconfirmed (the list forces double opt-in): "
                                                "MailWizz mails confirmed subscribers only, so it was not handed off")
    if push.subscriber_uid:
        return DeliveryResult(row_id, "failed", f"MailWizz subscriber status is {push.status or 'unknown'}: not handed off")
    return DeliveryResult(row_id, "failed", push.error or "refused by MailWizz", suppress=push.suppression)


def _duplicate_tag(message: str) -> bool:
    """MailWizz's answer to a tag the list already has ("... must be unique in the mail list!")."""
    text = message.lower()
    return "must be unique" in text or "already been taken" in text


def _all(recipients: Sequence[ListRecipient], status: str, detail: str) -> list[DeliveryResult]:
    return [DeliveryResult(r.row_id, status, detail) for r in recipients]
