"""The campaigns domain: audiences frozen into the send ledger, sends, the due-campaign sensor; pause, resume, cancel."""

import dagster as dg

from email_engine_assets.campaigns.assets import (
    campaign_audiences,
    campaign_send_job,
    campaign_sends,
)
from email_engine_assets.campaigns.control_jobs import CONTROL_JOBS
from email_engine_assets.campaigns.sensors import due_campaigns_sensor
from email_engine_assets.campaigns.tenant_files import tenant_files
from email_engine_assets.campaigns.wiring import SegmentAudience, TemplateComposers
from email_engine_resources.fixed import fixed_at_launch
from email_engine_resources.transports import transport_resources


def campaign_resources() -> dict:
    """The audience and composer a campaign run needs; tests and other deployments pass their own under
    the same keys. The transports are the ``outbox``, ``powermta`` and ``mailwizz`` resources: each hands out
    per-tenant clients built from the tenant files' entries; like the database, they are the deployment's
    settings, not a run's (:func:`~email_engine_resources.fixed.fixed_at_launch`)."""
    return {
        "audience_source": dg.ResourceDefinition.hardcoded_resource(SegmentAudience(), "the segment snapshots"),
        "composers": dg.ResourceDefinition.hardcoded_resource(TemplateComposers(), "the tenant's templates"),
        **fixed_at_launch(transport_resources()),
    }


defs = dg.Definitions(
    assets=[tenant_files, campaign_audiences, campaign_sends],
    jobs=[campaign_send_job, *CONTROL_JOBS],
    sensors=[due_campaigns_sensor],
    resources=campaign_resources(),
)
