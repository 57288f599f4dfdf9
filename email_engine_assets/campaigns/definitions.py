"""The campaigns domain: audiences frozen into the send ledger, sends, the due-campaign sensor."""

import dagster as dg

from email_engine_assets.campaigns.assets import (
    campaign_audiences,
    campaign_send_job,
    campaign_sends,
)
from email_engine_assets.campaigns.sensors import due_campaigns_sensor
from email_engine_assets.campaigns.tenant_files import tenant_files
from email_engine_assets.campaigns.wiring import (
    SegmentAudience,
    TemplateComposers,
    Transports,
)


def campaign_resources() -> dict:
    """The parts a campaign run needs; tests and other deployments pass their own under the same keys."""
    return {
        "audience_source": dg.ResourceDefinition.hardcoded_resource(SegmentAudience(), "the segment snapshots"),
        "composers": dg.ResourceDefinition.hardcoded_resource(TemplateComposers(), "the tenant's templates"),
        "transports": dg.ResourceDefinition.hardcoded_resource(Transports(), "outbox, PowerMTA, MailWizz by tenant-file name"),
    }


defs = dg.Definitions(
    assets=[tenant_files, campaign_audiences, campaign_sends],
    jobs=[campaign_send_job],
    sensors=[due_campaigns_sensor],
    resources=campaign_resources(),
)
