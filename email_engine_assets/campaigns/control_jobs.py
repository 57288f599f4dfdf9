"""Pause, resume and cancel as jobs the UI launches: ``campaign_pause_job``, ``campaign_resume_job``,
``campaign_cancel_job``, each one op (``campaign_pause`` ...) whose config names the campaign:

    ops:
      campaign_pause:
        config:
          campaign: acme.autumn_news

The op changes the state as ``email-engine campaign pause`` does (:mod:`.control`); ``campaign_resume``
then sends what is left in the same step (recorded as a materialization of ``campaign_sends``).
An unknown campaign, or a state that does not allow the action, fails the op with the reason.
"""

import dagster as dg
from pydantic import Field

from email_engine_assets.campaigns.assets import (
    campaign_partitions,
    campaign_sends,
    load_campaign,
    send_started,
)
from email_engine_assets.campaigns.control import CampaignRefused, change_state
from email_engine_assets.campaigns.wiring import TRANSPORT_KEYS, Transports


class CampaignConfig(dg.Config):
    campaign: str = Field(description="the campaign's key, <tenant>.<campaign> (its partition of campaign_sends)")


def _changed(context, key: str, action: str) -> dict:
    try:
        counts = change_state(context.resources.db.engine(), context.resources.workspace.root(), key, action,
                              Transports.of(context.resources))
    except CampaignRefused as exc:
        raise dg.Failure(description=f"{action} refused: {exc}") from None
    context.log.info(f"campaign {key}: {action}: now {counts['state']}")
    return counts


def _metadata(counts: dict) -> dict:
    out = {k: counts[k] for k in ("state", "audience", "queued", "sent", "handed_off", "failed", "unknown")}
    if counts.get("mailwizz"):
        out["mailwizz"] = dg.MetadataValue.json(counts["mailwizz"])
    return out


def _state_op(action: str) -> dg.OpDefinition:
    @dg.op(name=f"campaign_{action}", required_resource_keys={"db", "workspace", *TRANSPORT_KEYS},
           description=f"{action.capitalize()} the campaign named in the config, as `email-engine campaign {action}` does.")
    def change(context: dg.OpExecutionContext, config: CampaignConfig) -> dg.Output[dict]:
        counts = _changed(context, config.campaign, action)
        return dg.Output(counts, metadata=_metadata(counts))

    return change


@dg.op(name="campaign_resume", required_resource_keys={"db", "workspace", "composers", *TRANSPORT_KEYS},
       description="Resume the campaign named in the config (MailWizz campaigns unpaused) and send what is left, "
                   "as `email-engine campaign resume` does.")
def campaign_resume(context: dg.OpExecutionContext, config: CampaignConfig) -> dg.Output[dict]:
    key = config.campaign
    counts = _changed(context, key, "resume")
    tenant, campaign = load_campaign(context, key)
    if key not in context.instance.get_dynamic_partitions(campaign_partitions.name):
        context.instance.add_dynamic_partitions(campaign_partitions.name, [key])
    metadata = send_started(context, tenant, campaign)
    context.log_event(dg.AssetMaterialization(asset_key=campaign_sends.key, partition=key, metadata=metadata,
                                              description="sent by campaign_resume_job after the resume"))
    return dg.Output({**counts, "state": metadata["state"]}, metadata={"state": metadata["state"]})


def _job(name: str, op: dg.OpDefinition, description: str) -> dg.JobDefinition:
    @dg.job(name=name, description=description, tags={"email_engine/campaign_control": op.name.removeprefix("campaign_")})
    def control() -> None:
        op()

    return control


campaign_pause_job = _job("campaign_pause_job", _state_op("pause"),
                          "Pause a campaign now (config: ops.campaign_pause.config.campaign = <tenant>.<campaign>); "
                          "its running send stops after its batch.")
campaign_resume_job = _job("campaign_resume_job", campaign_resume,
                           "Resume a paused campaign and send what is left (config: ops.campaign_resume.config.campaign).")
campaign_cancel_job = _job("campaign_cancel_job", _state_op("cancel"),
                           "Cancel a campaign for good (config: ops.campaign_cancel.config.campaign); nothing more is sent.")
CONTROL_JOBS = (campaign_pause_job, campaign_resume_job, campaign_cancel_job)
