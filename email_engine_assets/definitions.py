"""The code location: every asset, check, sensor, schedule and resource."""

import os

import dagster as dg

from email_engine_assets.audiences.definitions import defs as audiences_defs
from email_engine_assets.campaigns.definitions import defs as campaigns_defs
from email_engine_assets.contacts.definitions import defs as contacts_defs
from email_engine_assets.doctor.definitions import defs as doctor_defs
from email_engine_assets.feedback.definitions import defs as feedback_defs
from email_engine_assets.jobs import feedback_job, tenant_job
from email_engine_assets.quality.definitions import defs as quality_defs
from email_engine_assets.sync.definitions import defs as sync_defs
from email_engine_resources.dns import DnsResolverResource
from email_engine_resources.fixed import fixed_at_launch
from email_engine_resources.postgres import PostgresResource
from email_engine_resources.smtp_probe import SmtpProbeResource
from email_engine_resources.workspace import WorkspaceResource

DOMAINS = (contacts_defs, quality_defs, audiences_defs, sync_defs, campaigns_defs, feedback_defs, doctor_defs)


def dns_resource() -> DnsResolverResource:
    """``EMAIL_ENGINE_DNS_NAMESERVERS`` (comma-separated IPs) and ``EMAIL_ENGINE_DNS_PORT``; default: resolv.conf."""
    servers = [s.strip() for s in os.environ.get("EMAIL_ENGINE_DNS_NAMESERVERS", "").split(",") if s.strip()]
    return DnsResolverResource(nameservers=servers, port=int(os.environ.get("EMAIL_ENGINE_DNS_PORT", "53")))


def smtp_probe_resource() -> SmtpProbeResource:
    """``EMAIL_ENGINE_SMTP_HELO`` (default: this machine's FQDN), ``EMAIL_ENGINE_SMTP_MAIL_FROM`` and ``EMAIL_ENGINE_SMTP_PORT``."""
    return SmtpProbeResource(
        helo_name=os.environ.get("EMAIL_ENGINE_SMTP_HELO", ""),
        mail_from=os.environ.get("EMAIL_ENGINE_SMTP_MAIL_FROM", ""),
        port=int(os.environ.get("EMAIL_ENGINE_SMTP_PORT", "25")),
    )


def default_resources() -> dict:
    """Resources from the environment; the database URL is read from ``EMAIL_ENGINE_DATABASE_URL``
    when a run opens its engine, so it never appears in config, the UI or metadata."""
    return {
        "db": PostgresResource(),
        "workspace": WorkspaceResource(),
        "dns": dns_resource(),
        "smtp_probe": smtp_probe_resource(),
    }


defs = dg.Definitions.merge(
    *DOMAINS,
    dg.Definitions(
        jobs=[tenant_job, feedback_job],
        sensors=[
            dg.AutomationConditionSensorDefinition(
                "automation_sensor", target=dg.AssetSelection.all(), default_status=dg.DefaultSensorStatus.RUNNING
            ),
        ],
        resources=fixed_at_launch(default_resources()),
    ),
)


def with_resources(overrides: dict) -> dg.Definitions:
    """The code location with some resources replaced (by key): tests give the stand-ins this way,
    through the same injection a run uses, and pass the result where a command takes ``definitions``."""
    return dg.Definitions(
        assets=defs.assets, asset_checks=defs.asset_checks, jobs=defs.jobs, sensors=defs.sensors,
        schedules=defs.schedules, executor=defs.executor, loggers=defs.loggers,
        resources={**(defs.resources or {}), **overrides},
    )
