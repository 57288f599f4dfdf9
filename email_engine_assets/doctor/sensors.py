"""``doctor_sensor``: the doctor's probes every five minutes, alerting when a probe starts failing or recovers.

Stopped by default: an operator turns it on in the UI once the deployment's parts (transports,
webhook app, alert settings) are in place, so a development instance does not alert about parts it
never meant to have. The alert goes through the existing alert settings
(:mod:`email_engine_resources.alerts`: Telegram or Slack from the environment). The cursor holds the
failing probes and their reasons: a probe still failing at the next tick is not alerted again; when
a post fails the cursor is kept, so the next tick tries again.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import dagster as dg

from email_engine_assets.doctor.checks import alert_text, change, failing
from email_engine_assets.doctor.probes import Parts, run_probes
from email_engine_resources.alerts import AlertPoster
from email_engine_resources.dns import DnsResolverResource
from email_engine_resources.postgres import get_engine
from email_engine_resources.transports import MailwizzResource, OutboxResource, PowerMtaResource
from email_engine_resources.workspace import WorkspaceResource

INTERVAL_S = 300


def _previous(cursor: str | None) -> dict[str, str]:
    try:
        data = json.loads(cursor or "{}")
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


@dg.sensor(
    name="doctor_sensor",
    minimum_interval_seconds=INTERVAL_S,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description="Runs the probes of `email-engine doctor` (database, resolver, outbox, each tenant's PowerMTA and "
                "MailWizz, the webhook app) and posts to the configured chat when a probe starts failing or recovers.",
)
def doctor_sensor(context: dg.SensorEvaluationContext, workspace: WorkspaceResource, dns: DnsResolverResource,
                  outbox: OutboxResource, powermta: PowerMtaResource, mailwizz: MailwizzResource) -> dg.SkipReason:
    # The database is reached directly, not as the `db` resource: that resource refuses to start on a
    # database that is down or behind, which is exactly what this probe must report.
    resources = SimpleNamespace(dns=dns, outbox=outbox, powermta=powermta, mailwizz=mailwizz)
    probes = run_probes(Parts.of(resources, get_engine), workspace.root())
    previous = _previous(context.cursor)
    found = change(previous, probes)
    failed = failing(probes)
    summary = f"{len(failed)} failing probe(s) of {len(probes)}" + (f": {', '.join(sorted(failed))}" if failed else "")
    if found:
        poster = AlertPoster.from_environment()
        if poster.settings is not None and not poster.post(alert_text(found)):
            context.log.warning("the doctor's alert was not posted (see the email_engine.alerts log); retried next tick")
            return dg.SkipReason(summary)
    context.update_cursor(json.dumps(failed, sort_keys=True))
    return dg.SkipReason(summary)
