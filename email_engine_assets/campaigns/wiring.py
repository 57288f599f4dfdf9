"""Where a campaign's parts come from: the audience (segments), the composer (templates), the transport.

The segment snapshots and the template composer are other domains; they are reached here, at one
seam, and only when a campaign runs. Tests and other deployments pass their own parts as the
``audience_source`` / ``composers`` / ``transports`` resources.
"""

from __future__ import annotations

from pathlib import Path

from email_engine_assets.campaigns.files import Campaign
from email_engine_assets.campaigns.parts import Composer, Snapshot
from email_engine_resources.delivery import MessageTransport
from email_engine_resources.outbox import Outbox


class PartMissing(RuntimeError):
    """A part this build does not have yet (e.g. no segments module): the campaign cannot run."""


class SegmentAudience:
    """The audience of a campaign: the snapshot of its segment (``email_engine_assets.audiences``)."""

    def _segments(self):
        try:
            from email_engine_assets.audiences import segments  # noqa: PLC0415 (the other domain, reached at run time)
        except ImportError:
            raise PartMissing("segment snapshots are not available in this build (email_engine_assets.audiences.segments)") from None
        return segments

    def current_snapshot(self, conn, tenant_id: str, segment: str) -> Snapshot | None:
        info = self._segments().current_snapshot(conn, tenant_id, segment)
        return None if info is None else Snapshot(info.definition_hash, int(info.members))

    def segment_members(self, conn, tenant_id: str, segment: str, *, after_contact_id: int, limit: int) -> list[int]:
        return self._segments().segment_members(conn, tenant_id, segment, after_contact_id=after_contact_id, limit=limit)


class TemplateComposers:
    """The composer of a campaign: its tenant's templates for the campaign's category (``email_engine_assets.content``)."""

    def composer(self, tenant, campaign: Campaign) -> Composer:
        try:
            from email_engine_assets.content import composer  # noqa: PLC0415 (the other domain, reached at run time)
        except ImportError:
            raise PartMissing("templates are not available in this build (email_engine_assets.content.composer)") from None
        return composer.for_campaign(tenant, campaign)


class Transports:
    """A campaign's transport by its name in the tenant file; ``outbox`` always exists."""

    def __init__(self, outbox_root: Path | None = None):
        self.outbox_root = outbox_root

    def transport(self, tenant, campaign: Campaign) -> MessageTransport:
        config = tenant.transport(campaign.file.transport)
        if config is None:
            raise PartMissing(f"tenant {tenant.id} has no transport {campaign.file.transport!r}")
        if config.kind == "outbox":
            return Outbox(self.outbox_root)
        # PowerMTA (SMTP injection) and MailWizz (list hand-off, grouped by template) plug in here.
        raise PartMissing(f"transport {config.name!r} of kind {config.kind} is not available in this build")


def transport_tag(tenant_id: str, transport: str) -> str:
    """The run tag value that the run queue limits per transport instance (``dagster.yaml``)."""
    return f"{tenant_id}.{transport}"
