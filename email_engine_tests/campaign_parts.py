"""A campaign's parts for tests: an audience given as contact ids and a composer building real RFC 5322 messages.

They follow the protocols of ``email_engine_assets.campaigns.parts`` (what segments and templates
provide); the ledger, the store, the outbox and PostgreSQL under them are the real ones.
"""

from __future__ import annotations

import hashlib
import textwrap
from datetime import datetime, timezone
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime
from pathlib import Path
from types import SimpleNamespace

import dagster as dg
import sqlalchemy as sa

from email_engine_assets.campaigns.parts import (
    Composed,
    ListContent,
    Problem,
    Skipped,
    Snapshot,
)
from email_engine_assets.campaigns.wiring import TemplateComposers
from email_engine_assets.definitions import with_resources
from email_engine_resources.transports import OutboxResource


class StaticAudience:
    """Segments as fixed lists of contact ids: ``{segment: [contact ids]}``."""

    def __init__(self, members: dict[str, list[int]]):
        self.members = {k: sorted(v) for k, v in members.items()}

    def current_snapshot(self, conn, tenant_id, segment):
        if segment not in self.members:
            return None
        ids = self.members[segment]
        return Snapshot(hashlib.sha256(repr(ids).encode()).hexdigest(), len(ids))

    def segment_members(self, conn, tenant_id, segment, *, after_contact_id, limit, definition_hash=None):
        return [i for i in self.members.get(segment, []) if i > after_contact_id][:limit]


class SimpleComposer:
    """One text/plain message per contact; contacts of category ``nocat`` have no template."""

    def __init__(self, campaign, problems: list[Problem] | None = None, on_compose=None):
        self.campaign = campaign
        self.problems = problems or []
        self.on_compose = on_compose

    def compose(self, contact, *, contact_id, row_token):
        if self.on_compose:
            self.on_compose(contact)
        if contact.get("category") == "nocat":
            return Skipped("no_template")
        f = self.campaign.file
        msg = EmailMessage(policy=SMTP)
        msg["From"] = f"{f.from_name} <{f.from_email}>"
        msg["To"] = contact["email"]
        msg["Subject"] = f"Hello {contact.get('first_name') or 'there'}"
        msg["Date"] = format_datetime(datetime(2026, 11, 29, tzinfo=timezone.utc))
        message_id = f"<{row_token}@{f.from_email.split('@')[1]}>"
        msg["Message-ID"] = message_id
        msg.set_content(f"Hello {contact.get('first_name') or 'there'}\n")
        return Composed("welcome", "category", str(msg["Subject"]), msg.as_bytes(), message_id)

    def preflight(self, samples):
        return list(self.problems)

    def list_content(self, template):
        return ListContent(f"Hello [FNAME] ({template})", "<p>Hello [FNAME]</p><a href='[UNSUBSCRIBE_URL]'>unsubscribe</a>",
                           None, {"CITY": "city"})


class SimpleComposers:
    def __init__(self, problems: list[Problem] | None = None, on_compose=None):
        self.problems = problems
        self.on_compose = on_compose

    def composer(self, tenant, campaign):
        return SimpleComposer(campaign, self.problems, self.on_compose)


class HookedTemplateComposers(TemplateComposers):
    """The real composer (template files, signing key, unsubscribe links), with a hook called before each compose."""

    def __init__(self, on_compose=None):
        super().__init__()
        self.on_compose = on_compose

    def composer(self, tenant, campaign):
        made = super().composer(tenant, campaign)
        compose = made.compose

        def hooked(contact, **kwargs):
            if self.on_compose:
                self.on_compose(contact)
            return compose(contact, **kwargs)

        made.compose = hooked
        return made


def write_real_templates(root: Path, tenant_id: str = "acme") -> None:
    """A tenant file with an unsubscribe block and a ``news`` template in English, for the real composer."""
    (root / "tenants" / f"{tenant_id}.yaml").write_text(
        f"id: {tenant_id}\nname: {tenant_id.title()}\nsources:\n  - id: crm\n    priority: 10\n"
        "unsubscribe:\n  base_url: https://unsubscribe.acme.example\n  mailto: unsubscribe@acme.example\n"
    )
    folder = root / "templates" / tenant_id
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "news_en.yaml").write_text(
        'category: news\nlanguage: en\nsubject: "Hello {{ first_name }}"\n'
        'html: |\n  <p>Hello {{ first_name }}</p><a href="{{ unsubscribe_url }}">unsubscribe</a>\n'
    )


def parts(audience, composers=None, outbox_root: Path | None = None, **transports) -> dict:
    """The resources replacing the code location's campaign parts: ``outbox`` under ``outbox_root`` when given,
    ``powermta`` / ``mailwizz`` as passed (e.g. ``PowerMtaResource(retry_backoff_seconds=0.01)``)."""
    out = {
        "audience_source": dg.ResourceDefinition.hardcoded_resource(audience),
        "composers": dg.ResourceDefinition.hardcoded_resource(composers or SimpleComposers()),
        **transports,
    }
    if outbox_root is not None:
        out["outbox"] = OutboxResource(root=str(outbox_root))
    return out


def campaign_defs(audience, composers=None, outbox_root: Path | None = None, **transports) -> dg.Definitions:
    """The code location with these parts, for ``campaign_runs`` / ``cli.main(..., definitions=...)``."""
    return with_resources(parts(audience, composers, outbox_root, **transports))


class Late:
    """A part looked up at each use in ``holder`` (an attribute, or a key of a dict): a test swaps the
    audience or the composers between runs of the same code location."""

    def __init__(self, holder, name: str):
        self._holder, self._name = holder, name

    def __getattr__(self, attr):
        holder = self._holder
        part = holder[self._name] if isinstance(holder, dict) else getattr(holder, self._name)
        return getattr(part, attr)


def campaign_env(engine: sa.Engine, workspace, home: Path, emails: list[str], campaigns: tuple[str, ...] = ()):
    """A tenant ``acme`` with ``emails`` as contacts in segment ``vip``, ``campaigns`` written, and the
    campaign code location on a test Dagster instance (a generator for a pytest fixture). The caller
    sets ``EMAIL_ENGINE_HOME`` to ``home``; ``env.audience`` and ``env.composers`` can be swapped."""
    workspace.tenant("acme")
    ids = add_contacts(engine, "acme", emails)
    env = SimpleNamespace(engine=engine, root=workspace.root, ids=ids, emails=emails, outbox=home / "outbox", home=home,
                          audience=StaticAudience({"vip": ids}), composers=SimpleComposers())
    env.defs = campaign_defs(Late(env, "audience"), Late(env, "composers"))
    for name in campaigns:
        write_campaign(workspace.root, "acme", name)
    with dg.instance_for_test() as instance:
        env.instance = instance
        yield env


def add_contacts(engine: sa.Engine, tenant_id: str, emails: list[str], category: str | None = None) -> list[int]:
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO tenants (tenant_id, name, config_sha256) VALUES (:t, :t, 'x') ON CONFLICT DO NOTHING"),
                     {"t": tenant_id})
        return list(conn.execute(
            sa.text("INSERT INTO contacts (tenant_id, email, first_name, category) SELECT :t, e, 'Ann', :cat FROM unnest(CAST(:e AS text[])) e "
                    "RETURNING contact_id"),
            {"t": tenant_id, "e": emails, "cat": category},
        ).scalars())


def write_campaign(root: Path, tenant_id: str, name: str, text: str = "", **fields) -> Path:
    folder = root / "campaigns" / tenant_id
    folder.mkdir(parents=True, exist_ok=True)
    body = {"segment": "vip", "category": "news", "from_name": "Acme", "from_email": "news@acme.example", **fields}
    path = folder / f"{name}.yaml"
    path.write_text(textwrap.dedent(text) if text else "".join(f"{k}: {v}\n" for k, v in body.items() if v is not None))
    return path


def outbox_recipients(root: Path) -> list[str]:
    """The To address of every .eml under ``root`` (one entry per file)."""
    import email
    from email.utils import parseaddr

    return sorted(parseaddr(email.message_from_bytes(p.read_bytes())["To"])[1] for p in root.rglob("*.eml"))
