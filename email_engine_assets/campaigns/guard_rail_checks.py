"""The asset check of a feedback run's guard rail: every campaign it paused is paused in MailWizz too.

Declared on ``delivery_events``, ``mailwizz_feedback`` and ``campaign_stats`` (the runs that call
:func:`~email_engine_assets.campaigns.guard_rail_apply.check_feedback`): it fails, naming the campaign
and MailWizz's answer, while a campaign paused by its guard rail still sends in MailWizz (the
``guard_rail_mailwizz`` incident alerts once; the next run tries again and passes once it holds).
"""

import dagster as dg

from email_engine_assets.campaigns.guard_rail_apply import GuardOutcome

PAUSED_IN_MAILWIZZ = "guard_rail_paused_in_mailwizz"


def paused_in_mailwizz_spec(asset: str) -> dg.AssetCheckSpec:
    return dg.AssetCheckSpec(PAUSED_IN_MAILWIZZ, asset=asset,
                             description="every campaign paused by its guard rail is paused in MailWizz too")


def paused_in_mailwizz_result(outcome: GuardOutcome) -> dg.AssetCheckResult:
    failed = outcome.mailwizz_failed
    described = "; ".join(f"{key}: {why}" for key, why in sorted(failed.items()))
    return dg.AssetCheckResult(
        check_name=PAUSED_IN_MAILWIZZ, passed=not failed, severity=dg.AssetCheckSeverity.ERROR,
        description=(f"paused here, still sending in MailWizz (retried at the next run): {described}" if failed
                     else "every guard-rail pause holds in MailWizz"),
        metadata={"not_paused": len(failed), "paused": len(outcome.mailwizz)},
    )
