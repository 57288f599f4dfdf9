"""The code location: every asset, check, sensor, schedule and resource."""

import os

import dagster as dg

from email_engine_assets.audiences.definitions import defs as audiences_defs
from email_engine_assets.contacts.definitions import defs as contacts_defs
from email_engine_assets.jobs import tenant_job
from email_engine_assets.quality.definitions import defs as quality_defs
from email_engine_resources.dns import DnsResolverResource
from email_engine_resources.postgres import PostgresResource
from email_engine_resources.smtp_probe import SmtpProbeResource
from email_engine_resources.workspace import WorkspaceResource

DOMAINS = (contacts_defs, quality_defs, audiences_defs)

def dns_resource() -> DnsResolverResource:
    """``EMAIL_ENGINE_DNS_NAMESERVERS`` (comma-separated IPs) and ``EMAIL_ENGINE_DNS_PORT``; default: resolv.conf."""
    servers = [s.strip() for s in os.environ.get("EMAIL_ENGINE_DNS_NAMESERVERS", "").split(",") if s.strip()]
    return DnsResolverResource(nameservers=servers, port=int(os.environ.get("EMAIL_ENGINE_DNS_PORT", "53")))


def default_resources() -> dict:
    """Resources from the environment; secrets only ever as ``dg.EnvVar`` (never shown in the UI)."""
    url = dg.EnvVar("EMAIL_ENGINE_DATABASE_URL") if os.environ.get("EMAIL_ENGINE_DATABASE_URL") else ""
    return {
        "db": PostgresResource(url=url),
        "workspace": WorkspaceResource(),
        "dns": dns_resource(),
        "smtp_probe": SmtpProbeResource(),
    }


defs = dg.Definitions.merge(
    *DOMAINS,
    dg.Definitions(
        jobs=[tenant_job],
        sensors=[
            dg.AutomationConditionSensorDefinition(
                "automation_sensor", target=dg.AssetSelection.all(), default_status=dg.DefaultSensorStatus.RUNNING
            ),
        ],
        resources=default_resources(),
    ),
)
