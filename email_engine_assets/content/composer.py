"""The one object a send loop uses per campaign: contact in, finished message (or a skip) out.

    composer = Composer(templates=..., tenant=..., campaign="spring", category="b2b",
                        from_name="Acme", from_email="news@acme.example", reply_to="hello@acme.example",
                        signing_key=signing_key(), dkim_key=None)
    problems = composer.preflight(samples)      # before any send: empty, or the send is blocked
    result = composer.compose(contact, contact_id=42, row_token="...")   # Composed | Skipped

With the tenant's ``tracking:`` on (opens and/or clicks), the rendered parts go through
:func:`~email_engine_assets.content.tracking_links.track_links` before the message is built: links
through ``<tracking_base_url>/c/<token>``, a pixel at ``/o/<token>``, tokens signed with the
unsubscribe signing key for the ledger row's token. A contact with the tenant's
``tracking.exclude_tag``, or a true word in its ``tracking.exclude_field``, gets the message
untracked. A list transport (MailWizz) tracks by itself: its composer is built with ``track=False``.

A contact without a template is :class:`Skipped` (``no_template``), one whose values break its
template ``render_error``, one whose address cannot be written in a message ``bad_address``:
counted by the caller, never a crash of the loop. Compose is pure: it writes nothing, so a crash
anywhere leaves the ledger to decide (the Message-ID is derived from the ledger row, the same
message every time).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from email_engine_assets.contacts.fields import CANONICAL_FIELDS
from email_engine_assets.content.choice import Chooser
from email_engine_assets.content.messages import (
    AddressError,
    DkimKey,
    addr_spec,
    build_message,
    mail_address,
    message_id,
)
from email_engine_assets.content.rendering import (
    Rendered,
    Renderer,
    RenderError,
    TenantInfo,
)
from email_engine_assets.content.templates import Template, TemplateSet
from email_engine_assets.content.tracking_links import track_links
from email_engine_assets.content.unsubscribe import unsubscribe_token, unsubscribe_url
from email_engine_assets.tenancy.config import TenantConfig, excerpt
from email_engine_assets.tenancy.languages import parse_language
from email_engine_assets.tenancy.tracking_settings import TrackingSettings
from email_engine_resources.email_domain import email_domain

# Why a contact got no message; the ledger records it.
SKIP_REASONS: tuple[str, ...] = ("no_template", "render_error", "bad_address")


@dataclass(frozen=True)
class Composed:
    template: str  # the template's file name (stem)
    rule: str  # one of CHOICE_RULES
    subject: str
    message: bytes
    message_id: str
    tracked_links: tuple[str, ...] = ()  # link index -> the template's URL (empty: no click tracking)


@dataclass(frozen=True)
class Skipped:
    reason: str  # one of SKIP_REASONS
    detail: str = ""


@dataclass(frozen=True)
class PreflightProblem:
    file: str
    line: int | None
    variable: str | None
    message: str

    def __str__(self) -> str:
        where = f"{self.file}, line {self.line}" if self.line else self.file
        return f"{where}: {self.message}"


def _problem(error: RenderError) -> PreflightProblem:
    message = f"{error.part}: {error.message}" if error.part else error.message
    return PreflightProblem(error.file, error.line, error.variable, message)


def file_problem(tenant_id: str, name: str, error: str) -> PreflightProblem:
    """A template file that did not load (its error already starts with the file's path)."""
    path, sep, message = error.partition(": ")
    return PreflightProblem(path if sep else f"templates/{tenant_id}/{name}", None, None, message if sep else error)


class Composer:
    """Messages of one campaign of one tenant (outbox and PowerMTA)."""

    def __init__(
        self,
        *,
        templates: TemplateSet,
        tenant: TenantConfig,
        campaign: str,
        category: str,
        from_name: str,
        from_email: str,
        reply_to: str | None,
        signing_key: bytes,
        dkim_key: DkimKey | None = None,
        renderer: Renderer | None = None,
        track: bool = True,
    ):
        """``track=False``: no open or click tracking whatever the tenant's ``tracking:`` says
        (a transport that tracks by itself)."""
        if tenant.unsubscribe is None:
            raise ValueError(f"tenant {tenant.id}: no unsubscribe.base_url in its file; every message needs a one-click unsubscribe link")
        mail_address(from_name, from_email)  # a bad sender or reply address fails here, not on every contact
        if reply_to:
            addr_spec(reply_to)
        self.templates = templates
        self.tenant = tenant
        self.campaign = campaign
        self.category = category
        self.from_name = from_name
        self.from_email = from_email
        self.reply_to = reply_to
        self.dkim_key = dkim_key
        self._key = signing_key
        self._domain = email_domain(from_email) or ""
        self._tenant_info = TenantInfo(id=tenant.id, name=tenant.name)
        self.renderer = renderer or Renderer()
        self.chooser = Chooser(templates, category=category, default_category=tenant.default_category)
        self.tracking: TrackingSettings | None = tenant.tracking if track and tenant.tracking.on else None

    def choose(self, contact: Mapping[str, Any]):
        """The :class:`~email_engine_assets.content.choice.Choice` for ``contact`` (None: no template)."""
        return self.chooser.choose(parse_language(contact.get("language")), contact.get("tags") or ())

    def variables(self, contact: Mapping[str, Any], contact_id: int) -> dict[str, Any]:
        """What the template sees for ``contact`` (the preview shows the same)."""
        token = unsubscribe_token(self._key, self.tenant.id, self.campaign, contact_id)
        found: dict[str, Any] = {f: contact.get(f) for f in CANONICAL_FIELDS}
        found["tags"] = list(contact.get("tags") or ())
        found["unsubscribe_url"] = unsubscribe_url(self.tenant.unsubscribe.base_url, token)
        found["campaign"] = self.campaign
        found["tenant"] = self._tenant_info
        return found

    def compose(self, contact: Mapping[str, Any], *, contact_id: int, row_token: str) -> Composed | Skipped:
        choice = self.choose(contact)
        if choice is None:
            return Skipped("no_template")
        variables = self.variables(contact, contact_id)
        try:
            rendered = self.renderer.render(choice.template, variables)
        except RenderError as exc:
            return Skipped("render_error", str(exc))
        tracked_links: tuple[str, ...] = ()
        if self.tracking is not None and not self.tracking.excludes(contact):
            tracked = track_links(
                rendered.html, rendered.text, key=self._key, tenant_id=self.tenant.id, row_token=row_token,
                base_url=self.tenant.tracking_base_url, unsubscribe_url=variables["unsubscribe_url"],
                unsubscribe_base_url=self.tenant.unsubscribe.base_url, opens=self.tracking.opens, clicks=self.tracking.clicks,
            )
            rendered, tracked_links = Rendered(rendered.subject, tracked.html, tracked.text), tracked.links
        mid = message_id(row_token, self._domain)
        to_name = contact.get("full_name") or " ".join(p for p in (contact.get("first_name"), contact.get("last_name")) if p) or None
        try:
            message = build_message(
                rendered=rendered,
                from_name=self.from_name,
                from_email=self.from_email,
                reply_to=self.reply_to,
                to_email=str(contact.get("email") or ""),
                to_name=to_name,
                message_id=mid,
                unsubscribe_url=variables["unsubscribe_url"],
                unsubscribe_mailto=self.tenant.unsubscribe.mailto,
                dkim=self.dkim_key,
                extra_headers={"Content-Language": choice.template.language},
            )
        except AddressError as exc:
            return Skipped("bad_address", excerpt(str(exc), 200))
        return Composed(choice.template.name, choice.rule, rendered.subject, message, mid, tracked_links)

    def preflight(self, samples: Iterable[Mapping[str, Any]]) -> list[PreflightProblem]:
        """Problems that must block the send: broken template files, and every template the
        samples would use that does not compile or render for the first sample using it.

        The static check (syntax, unknown names) runs on every template some contact could get,
        whether or not a sample reaches it."""
        problems = [file_problem(self.tenant.id, name, error) for name, error in sorted(self.templates.errors.items())]
        for template in self.chooser.reachable():
            problems += [_problem(e) for e in self.renderer.check(template)]
        if self.dkim_key is not None or self.tenant.unsubscribe.mailto:
            problems += self._message_problems()
        rendered: set[str] = set()
        for sample in samples:
            choice = self.choose(sample)
            if choice is None or choice.template.name in rendered:
                continue
            rendered.add(choice.template.name)
            if any(p.file == choice.template.file for p in problems):
                continue
            result = self._sample(choice.template, sample)
            if result is not None:
                problems.append(result)
        return problems

    def _message_problems(self) -> list[PreflightProblem]:
        """The tenant's message settings (DKIM key, unsubscribe mailto) on a message of one line."""
        try:
            build_message(
                rendered=Rendered("preflight", "<p>preflight</p>", "preflight\n"), from_name=self.from_name,
                from_email=self.from_email, reply_to=self.reply_to, to_email=self.from_email, to_name=None,
                message_id=message_id("preflight", self._domain), unsubscribe_url=unsubscribe_url(self.tenant.unsubscribe.base_url, "x"),
                unsubscribe_mailto=self.tenant.unsubscribe.mailto, dkim=self.dkim_key,
            )
        except ValueError as exc:
            return [PreflightProblem(f"tenants/{self.tenant.id}.yaml", None, None, excerpt(str(exc), 300))]
        return []

    def _sample(self, template: Template, sample: Mapping[str, Any]) -> PreflightProblem | None:
        try:
            self.renderer.render(template, self.variables(sample, int(sample.get("contact_id") or 0)))
        except RenderError as exc:
            return _problem(exc)
        return None


def restored(state: dict) -> Composer:
    """A :class:`Composer` from its pickled state (a subclass's own parts left behind)."""
    composer = Composer.__new__(Composer)
    vars(composer).update(state)
    return composer
