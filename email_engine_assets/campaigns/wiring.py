"""Where a campaign's parts come from: the audience (segments), the composer (templates), the transport.

The segment snapshots and the template composer are other domains; they are reached here, at one
seam. Tests and other deployments pass their own parts as the ``audience_source`` / ``composers``
resources, and their own ``outbox`` / ``powermta`` / ``mailwizz`` resources (the transports).
"""

from __future__ import annotations

from pathlib import Path

from email_engine_assets.audiences import store as segments
from email_engine_assets.campaigns import gates, store
from email_engine_assets.campaigns.files import Campaign
from email_engine_assets.campaigns.parts import (
    AudienceChanged,
    Composer,
    ListContent,
    Problem,
    Snapshot,
)
from email_engine_assets.content import composer as content
from email_engine_assets.content.dkim_signing import DkimKeyError
from email_engine_assets.content.mailwizz_tags import MailwizzTagError, to_mailwizz
from email_engine_assets.content.messages import DkimKey
from email_engine_assets.content.rendering import TenantInfo
from email_engine_assets.content.templates import load_templates
from email_engine_assets.tenancy.config import TenantConfig, excerpt
from email_engine_resources.delivery import MessageTransport
from email_engine_resources.mailwizz import FieldsMissing, ListRefused
from email_engine_resources.mailwizz_client import MailwizzError
from email_engine_resources.postgres import get_engine
from email_engine_resources.powermta_client import connecting_address
from email_engine_resources.powermta_config import (
    PowerMtaConfig,
    PowerMtaConfigError,
    header_settings,
)
from email_engine_resources.signing_key import SigningKeyError, signing_key
from email_engine_resources.transports import (
    MailwizzResource,
    OutboxResource,
    PowerMtaResource,
)

TRANSPORT_KEYS = ("outbox", "powermta", "mailwizz")  # the resources a run reaches the transports through
LIST_TRANSPORT_KINDS = frozenset({"mailwizz"})  # transports that personalise one content per template themselves


class PartMissing(RuntimeError):
    """A part the campaign cannot have (a transport not configured, composer settings that cannot
    work): the campaign cannot run; ``str()`` names the file and what is wrong, never a secret."""


class SegmentAudience:
    """The audience of a campaign: the snapshot of its segment (``email_engine_assets.audiences.store``)."""

    def current_snapshot(self, conn, tenant_id: str, segment: str) -> Snapshot | None:
        info = segments.current_snapshot(conn, tenant_id, segment)
        return None if info is None else Snapshot(info.definition_hash, int(info.members), info.built_at)

    def segment_members(self, conn, tenant_id: str, segment: str, *, after_contact_id: int, limit: int,
                        definition_hash: str | None = None) -> list[int]:
        try:
            return segments.segment_members(conn, tenant_id, segment, after_contact_id=after_contact_id, limit=limit,
                                            definition_hash=definition_hash)
        except segments.SnapshotChanged as exc:
            raise AudienceChanged(str(exc)) from None


class TemplateComposer(content.Composer):
    """The content domain's composer, and the seam a list transport (MailWizz) uses:
    :meth:`list_content` gives a template in the list's tag mode (``[FNAME]``, ``[UNSUBSCRIBE_URL]``).

    With ``list_mode`` (the campaign goes through a list transport) the preflight also refuses the
    templates that mode cannot carry, so such a send is blocked before it starts; and the messages it
    composes (which only choose the template there) carry no tracking of ours."""

    def __init__(self, *, list_mode: bool = False, **kwargs):
        super().__init__(track=not list_mode, **kwargs)  # MailWizz tracks opens and clicks itself
        self.list_mode = list_mode
        self._list_contents: dict[str, ListContent] = {}

    def __reduce__(self):
        """Pickled for the processes that compose a send's messages (:mod:`.composing`): as the content
        domain's :class:`~email_engine_assets.content.composer.Composer` it is for ``compose``, so that
        those processes import neither this module nor Dagster."""
        state = {k: v for k, v in vars(self).items() if k not in ("list_mode", "_list_contents")}
        return (content.restored, (state,))

    def list_content(self, template: str) -> ListContent:
        """``template`` (its name) for a list transport; ``KeyError`` for an unknown template, and
        :class:`~email_engine_assets.content.mailwizz_tags.MailwizzTagError` for one it cannot carry."""
        if template not in self._list_contents:
            made = to_mailwizz(self.templates.templates[template], campaign=self.campaign,
                               tenant=TenantInfo(id=self.tenant.id, name=self.tenant.name), renderer=self.renderer)
            self._list_contents[template] = ListContent(made.subject, made.html, made.text, dict(made.custom_fields))
        return self._list_contents[template]

    def list_contents(self) -> dict[str, ListContent]:
        """Every reachable template's list content, by template name (one MailWizz cannot carry is left
        out: :meth:`preflight` names it)."""
        out = {}
        for template in self.chooser.reachable():
            try:
                out[template.name] = self.list_content(template.name)
            except MailwizzTagError:
                continue
        return out

    def preflight(self, samples) -> list[Problem]:
        problems = super().preflight(samples)
        if self.list_mode:
            for template in self.chooser.reachable():
                try:
                    self.list_content(template.name)
                except MailwizzTagError as exc:
                    problems.append(Problem(exc.file, exc.line, None, str(exc).partition(": ")[2]))
        return problems


class TemplateComposers:
    """The composer of a campaign: its tenant's templates, the campaign file's sender and category,
    the project's signing key (unsubscribe tokens) and the tenant's DKIM key.

    Settings that cannot work raise :class:`PartMissing` naming the file (the ``preflight_renders``
    check then blocks the send with that reason); a broken template file is a preflight problem
    of its own, naming the file and the line.
    """

    def __init__(self, workspace_root: Path | None = None, key: bytes | None = None):
        self.workspace_root = workspace_root
        self._key = key

    def composer(self, tenant: TenantConfig, campaign: Campaign) -> TemplateComposer:
        tenant_file = f"tenants/{tenant.id}.yaml"
        if tenant.unsubscribe is None:
            raise PartMissing(f"{tenant_file}: no unsubscribe: block (base_url, optional mailto); every message needs "
                              f"a one-click unsubscribe link, so campaign {campaign.key} cannot send")
        root = self.workspace_root or campaign.path.parents[2]  # <root>/campaigns/<tenant>/<name>.yaml
        dkim = None
        if tenant.dkim is not None:
            try:
                dkim = DkimKey.from_settings(tenant.dkim)  # the key parsed here: one that cannot sign stops every run
            except DkimKeyError as exc:
                raise PartMissing(f"{tenant_file}: dkim.{excerpt(str(exc), 200)}") from None
            except (LookupError, ValueError, UnicodeError) as exc:
                raise PartMissing(f"{tenant_file}: dkim.private_key: {excerpt(str(exc), 200)}") from None
        try:
            key = self._key or signing_key()
        except SigningKeyError as exc:
            raise PartMissing(f"the signing key of unsubscribe links: {exc}") from None
        transport = tenant.transport(campaign.file.transport)
        f = campaign.file
        try:
            return TemplateComposer(
                templates=load_templates(root, tenant.id), tenant=tenant, campaign=campaign.name, category=f.category,
                from_name=f.from_name, from_email=f.from_email, reply_to=f.reply_to, signing_key=key, dkim_key=dkim,
                list_mode=transport is not None and transport.kind in LIST_TRANSPORT_KINDS,
            )
        except ValueError as exc:  # the sender or reply address cannot be written in a message
            raise PartMissing(f"{_shown(campaign, root)}: {excerpt(str(exc), 200)}") from None


def _shown(campaign: Campaign, root: Path) -> str:
    try:
        return str(campaign.path.relative_to(root))
    except ValueError:
        return str(campaign.path)


class TransportUnavailable(PartMissing):
    """The campaign's transport cannot be used now (a secret not set, a key refused, a bad setting):
    raised before any row is claimed, so the rows stay queued for the next run."""


class MailwizzList:
    """A MailWizz instance as the ledger's list transport; ``close()`` after the run."""

    def __init__(self, name: str, instance):
        self.name = name
        self.instance = instance

    @property
    def records_per_call(self) -> int:
        """The rows in flight at once: the records of one bulk call (the ledger hands off that many at a time)."""
        return self.instance.bulk_size

    def hand_off(self, handoff):
        return self.instance.hand_off(handoff)

    def release(self, campaign_key: str) -> dict[str, str]:
        """Unpause the campaign's paused MailWizz campaigns (``<tenant>.<campaign>.*``): every row is on their lists."""
        return self.instance.release(f"{campaign_key}.")

    def close(self) -> None:
        self.instance.close()

    def __repr__(self) -> str:
        return f"MailwizzList({self.name!r}, {self.instance!r})"


class Transports:
    """A campaign's transport by its name in the tenant file; ``outbox`` always exists.

    ``powermta``: SMTP injection (the ledger token is the ENVID, the job ``<tenant>.<campaign>``);
    ``mailwizz``: a list hand-off per chosen template, the API key read from the environment when
    the run builds the transport. The clients come from the code location's ``outbox``,
    ``powermta`` and ``mailwizz`` resources (:meth:`of`), for the tenant's transport entry.
    """

    def __init__(self, outbox: OutboxResource, powermta: PowerMtaResource, mailwizz: MailwizzResource):
        self.outbox = outbox
        self.powermta = powermta
        self.mailwizz = mailwizz

    @classmethod
    def of(cls, resources) -> Transports:
        """From a run's (or ``dg.build_resources``') resources: ``outbox``, ``powermta``, ``mailwizz``."""
        return cls(resources.outbox, resources.powermta, resources.mailwizz)

    def _config(self, tenant, campaign: Campaign):
        config = tenant.transport(campaign.file.transport)
        if config is None:
            raise PartMissing(f"tenant {tenant.id} has no transport {campaign.file.transport!r}")
        return config

    def is_list(self, tenant, campaign: Campaign) -> bool:
        """Whether the campaign goes through a list transport (MailWizz sends, we hand off)."""
        return self._config(tenant, campaign).kind == "mailwizz"

    def transport(self, tenant, campaign: Campaign) -> MessageTransport:
        config = self._config(tenant, campaign)
        where = f"tenant {tenant.id}, transport {config.name!r}"
        if config.kind == "outbox":
            return self.outbox.outbox()
        if config.kind == "powermta":
            return self._powermta(config, where)
        if config.kind == "mailwizz":
            return self._mailwizz(config, where)
        raise PartMissing(f"transport {config.name!r} of kind {config.kind} is not available in this build")

    def _powermta(self, config, where: str):
        x_envid_header = True
        if config.config_file:
            # The virtual MTA (or pool) must exist in PowerMTA's own config before anything is claimed.
            try:
                pmta = self.powermta.config_file(config)
                pmta.check_virtual_mta(config.virtual_mta)
            except PowerMtaConfigError as exc:
                raise TransportUnavailable(f"{where}: {exc}") from None
            # An x-envid header goes only where PowerMTA processes it; else the ENVID goes on MAIL FROM alone.
            x_envid_header = _header_settings(pmta, config)[3]
        try:
            return self.powermta.injection(config, x_envid_header=x_envid_header)
        except ValueError as exc:  # names the field; the values are settings, not secrets
            raise TransportUnavailable(f"{where}: {exc}") from None

    def powermta_headers(self, tenant, campaign: Campaign) -> gates.Gate:
        """The ``powermta_headers`` check: with a ``config_file``, the ``<source>`` block matching the
        engine's connecting address (``source_address``, else the local address of a connection to
        ``host``:``port``) processes ``x-job`` (and ``x-virtual-mta`` when one is named)."""
        config = tenant.transport(campaign.file.transport)
        if config is None or config.kind != "powermta" or not config.config_file:
            return gates.powermta_headers(None)
        try:
            pmta = self.powermta.config_file(config)
        except PowerMtaConfigError as exc:
            return gates.powermta_headers(config.name, problem=str(exc))
        address, block, missing, _x_envid, problem = _header_settings(pmta, config)
        return gates.powermta_headers(config.name, address, block.where() if block else None, missing, problem)

    def _mailwizz(self, config, where: str) -> MailwizzList:
        try:
            instance = self.mailwizz.instance(config)
        except (LookupError, ValueError) as exc:  # an unset variable is named, its value never read out
            raise TransportUnavailable(f"{where}: {exc}") from None
        try:
            # One authenticated call before anything is claimed: a refused key fails the run, rows stay queued.
            instance.client.get("lists", {"page": 1, "per_page": 10})
        except MailwizzError as exc:  # the client redacts the key from what the server echoes
            instance.close()
            raise TransportUnavailable(f"{where}: MailWizz cannot be used: {exc}") from None
        return MailwizzList(config.name, instance)

    def preflight(self, tenant, campaign: Campaign, composer: Composer) -> list[Problem]:
        """What the campaign's list transport must have before a send starts (``preflight_renders``).

        MailWizz: the list of each reachable template (``<tenant>.<campaign>.<template>``, the one
        the hand-off uses) exists, or is created now, and holds the custom fields its content needs.
        Named as problems: the fields this MailWizz cannot create through its API (to create in
        MailWizz), and a list it refuses to create for lack of the customer's company details (to
        fill in). Any other error is left to the send, which checks the transport before it claims.
        """
        if not self.is_list(tenant, campaign) or not hasattr(composer, "list_contents"):
            return []
        config = self._config(tenant, campaign)
        where = f"tenants/{tenant.id}.yaml, transport {config.name!r}"
        try:
            instance = self.mailwizz.instance(config)
        except (LookupError, ValueError):
            return []
        f = campaign.file
        problems = []
        with instance:
            for template, content in composer.list_contents().items():
                name = f"{campaign.key}.{template}"
                try:
                    list_uid = instance.ensure_list(name, from_name=f.from_name, from_email=f.from_email,
                                                    reply_to=f.reply_to or f.from_email, subject=content.subject)
                    instance.ensure_fields(list_uid, content.custom_fields, list_name=name)
                except (ListRefused, FieldsMissing) as exc:
                    problems.append(Problem(where, None, None, exc.message))
                except MailwizzError:
                    break
        return problems

    def delivery_figures(self, tenant, campaign: Campaign) -> dict[str, int | float] | None:
        """Queued / connections / rates from the PowerMTA management API of the campaign's transport
        (``management_url``); ``None`` when it has none. Raises ``PowerMtaManagementError`` or ``LookupError``."""
        config = self._config(tenant, campaign)
        if config.kind != "powermta" or not config.management_url:
            return None
        with self.powermta.management(config) as api:
            return api.figures()

    def composer_for(self, tenant, campaign: Campaign, composer: Composer) -> Composer:
        """The composer as the campaign's transport needs it: with MailWizz tag-mode content for a list transport."""
        if not self.is_list(tenant, campaign):
            return composer
        if not hasattr(composer, "list_content"):
            raise PartMissing(f"the composer {type(composer).__name__} gives no list content for transport {campaign.file.transport!r}")
        return composer

    def remote_campaigns(self, tenant, campaign: Campaign, action: str) -> dict[str, str]:
        """``pause`` / ``resume`` / ``cancel`` of the campaign's MailWizz campaigns (``<tenant>.<campaign>.<template>``).

        They are found by name on the instance, so a campaign created by a hand-off whose run died
        before recording it is reached too. MailWizz's ``pause-unpause`` toggles, so each status is
        read first. ``cancel`` pauses: MailWizz stops sending and keeps the campaign's stats
        (deleting it would lose the opens and clicks still to come). ``resume`` unpauses only once
        no row is queued: before that the MailWizz campaigns stay paused and the send, having put
        every row on their lists, releases them. Returns the MailWizz status by campaign name, or
        why it could not be changed. Nothing for other transports.
        """
        if not self.is_list(tenant, campaign):
            return {}
        if action == "resume" and _rows_to_hand_off(campaign):
            action = "status"
        out: dict[str, str] = {}
        transport = self.transport(tenant, campaign)
        try:
            try:
                names = transport.instance.campaigns_named(f"{campaign.key}.")
            except MailwizzError as exc:
                raise TransportUnavailable(f"tenant {tenant.id}, transport {transport.name!r}: campaigns not listed: {exc}") from None
            for name in names:
                try:
                    if action == "resume":
                        out[name] = transport.instance.resume(name)
                    elif action == "status":
                        out[name] = transport.instance.status(name)
                    else:
                        out[name] = transport.instance.pause(name)
                except MailwizzError as exc:
                    out[name] = f"unchanged: {exc}"
        finally:
            transport.close()
        return out


def _header_settings(pmta: PowerMtaConfig, config) -> tuple:
    """(address, matching <source> block, missing settings, x-envid processed, problem) for a powermta transport."""
    address = config.source_address
    if address is None:
        try:
            address = connecting_address(config.host, config.port)
        except OSError as exc:
            problem = (f"cannot tell which address PowerMTA sees the engine connect from ({config.host}:{config.port}: "
                       f"{exc.strerror or exc}); set source_address")
            return None, None, [], False, problem
    block, missing, x_envid = header_settings(pmta, address, virtual_mta=config.virtual_mta is not None)
    return address, block, missing, x_envid, None


def _rows_to_hand_off(campaign: Campaign) -> bool:
    """Whether rows of the campaign are still queued (or being sent): its MailWizz lists are not complete yet."""
    with get_engine().connect() as conn:
        counts = store.state_counts(conn, campaign.tenant_id, campaign.name)
    return bool(counts.get("queued") or counts.get("sending"))


def transport_tag(tenant_id: str, transport: str) -> str:
    """The run tag value that the run queue limits per transport instance (``dagster.yaml``)."""
    return f"{tenant_id}.{transport}"
