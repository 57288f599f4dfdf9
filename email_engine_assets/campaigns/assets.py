"""Campaign assets, partitioned by campaign (``<tenant>.<name>``).

``campaign_audiences`` freezes the segment's snapshot into ledger rows and evaluates the blocking
checks; only when they pass (or the operator overrode them) does the campaign become ``running``.
``campaign_sends`` then claims, composes, delivers and records, batch by batch.

What the operator allows travels as typed run config (the Launchpad validates it, the run keeps
it): ``campaign_audiences`` takes ``send_now`` (start a draft, or a scheduled campaign before its
time) and ``overrides`` (check names); ``campaign_sends`` takes ``resend_unknown``. The defaults are
what the sensor and automation runs need: a draft or a campaign not yet due is refused.
"""


import enum
import time
from datetime import datetime, timezone

import dagster as dg
from pydantic import Field

from email_engine_assets.audiences.assets import segments, segments_metadata
from email_engine_assets.audiences.segment_build import (
    build_tenant_segments,
    outdated,
)
from email_engine_assets.campaigns import gates, store
from email_engine_assets.campaigns.files import Campaign
from email_engine_assets.campaigns.guard_rail_apply import SendGuard, pause_in_mailwizz
from email_engine_assets.campaigns.ledger import campaign_counts
from email_engine_assets.campaigns.lifecycle import LifecycleError, is_due
from email_engine_assets.campaigns.parts import AudienceChanged
from email_engine_assets.campaigns.registry import register_one
from email_engine_assets.campaigns.composing import default_workers
from email_engine_assets.campaigns.sender import send_campaign
from email_engine_assets.campaigns.tenant_files import tenant_files
from email_engine_assets.campaigns.wiring import (
    TRANSPORT_KEYS,
    PartMissing,
    Transports,
    transport_tag,
)
from email_engine_assets.feedback.stats_refresh import refresh_before_send
from email_engine_assets.tenancy.input_problems import FEEDBACK_KINDS
from email_engine_assets.tenancy.input_problems_store import unread_inputs
from email_engine_assets.tenancy.locks import tenant_work_lock
from email_engine_assets.tenancy.partitions import across_tenants_and_campaigns

CAMPAIGNS = "campaigns"
campaign_partitions = dg.DynamicPartitionsDefinition(name="campaign")

# The run tag the run queue limits per transport instance (<tenant>.<transport>, dagster.yaml).
TRANSPORT_TAG = "email_engine/transport"
# The PostgreSQL lock a send step holds for its transport instance: one sender per MTA or MailWizz
# instance whichever way the run started (queued, the CLI's own, a UI launch without the tag).
TRANSPORT_LOCK = "campaign_transport"

FREEZE_PAGE = 10_000
SEND_BATCH_SIZE = 200  # rows claimed and composed at a time; each goes in flight only when a connection takes it
PREFLIGHT_SAMPLES = 20
MTA_WARNING = "powermta_warning"  # campaign_sends metadata: why the management figures are missing
PROGRESS_EVERY_S = 10.0  # a send's progress line in the run's log at most this often


# The checks an operator may override, as the Launchpad's choices.
CheckName = enum.Enum("CheckName", {name: name for name in gates.CHECK_NAMES}, type=str)


class CampaignAudiencesConfig(dg.Config):
    """What the operator allows the start of the send: the defaults are the sensor's (only a due campaign starts)."""

    send_now: bool = Field(default=False, description=(
        "start the campaign now, as `email-engine campaign send` does: a draft, or a scheduled campaign before "
        "its send_at; false (the sensor, automation, a plain materialization): only a due campaign starts"))
    overrides: list[CheckName] = Field(default_factory=list, description=(
        "blocking checks to go on past (recorded in the run config, and as `overridden` on each check)"))

    def override_names(self) -> list[str]:
        return [getattr(o, "value", o) for o in self.overrides]


class CampaignSendsConfig(dg.Config):
    resend_unknown: bool = Field(default=False, description=(
        "send again the rows whose fate is unknown (may reach someone twice); reopens a completed campaign that has some"))


def _load(context) -> tuple:
    return load_campaign(context, context.partition_key)


def load_campaign(context, key: str) -> tuple:
    """(tenant, campaign) of ``key`` (``<tenant>.<campaign>``), recorded; a :class:`dg.Failure` naming why not."""
    try:
        tenant, campaign, problem = register_one(context.resources.db.engine(), context.resources.workspace.root(), key)
    except (LookupError, ValueError) as exc:
        raise dg.Failure(description=str(exc)) from None
    if problem:
        context.log.warning(problem)
    return tenant, campaign


@dg.asset(
    partitions_def=campaign_partitions,
    group_name=CAMPAIGNS,
    kinds={"postgres"},
    # the snapshot it freezes, and the campaign and template files as the tenant's files read them
    deps=[dg.AssetDep(segments, partition_mapping=across_tenants_and_campaigns),
          dg.AssetDep(tenant_files, partition_mapping=across_tenants_and_campaigns)],
    required_resource_keys={"db", "workspace", "audience_source", "composers", *TRANSPORT_KEYS},
    check_specs=[dg.AssetCheckSpec(name, asset="campaign_audiences", blocking=True) for name in gates.CHECK_NAMES],
    description="The campaign's audience frozen into ledger rows (queued, or skipped_suppressed); blocking checks gate the send.",
)
def campaign_audiences(context: dg.AssetExecutionContext, config: CampaignAudiencesConfig) -> dg.MaterializeResult:
    tenant, campaign = _load(context)
    engine = context.resources.db.engine()
    t, c = campaign.tenant_id, campaign.name
    action = "send" if config.send_now else "due"
    try:
        overrides = gates.parse_overrides(",".join(config.override_names()))
    except ValueError as exc:
        raise dg.Failure(description=str(exc)) from None
    with engine.connect() as conn:
        row = store.campaign_row(conn, t, c)
    state = row["state"]
    if state == "cancelled":
        raise dg.Failure(description=f"campaign {campaign.key} is cancelled: it sends nothing more")
    if state == "draft" and action != "send":
        raise dg.Failure(description=f"campaign {campaign.key} is a draft: nothing sent; only `campaign send` "
                                     "(or campaign_send_job with send_now: true) starts it")
    if state == "scheduled" and action != "send" and not is_due(state, row["send_at"], datetime.now(timezone.utc)):
        raise dg.Failure(description=f"campaign {campaign.key} is not due before {row['send_at'].isoformat()}: nothing sent; "
                                     "`campaign send` (or campaign_send_job with send_now: true) starts it now")
    if state in ("draft", "scheduled"):
        _segments_current(context, engine, tenant, campaign)
        with tenant_work_lock(engine, "campaign_audiences", campaign.key):
            _freeze(context, engine, campaign)
    # The checks guard the start: a campaign already started was checked (or overridden) then.
    results = _gates(context, engine, tenant, campaign, overrides) if state in ("draft", "scheduled") else []
    if results and all(g.passed for g in results):
        try:
            with engine.begin() as conn:
                store.transition(conn, t, c, "send" if action == "send" else "due")
        except LifecycleError as exc:  # paused or cancelled by the operator meanwhile
            raise dg.Failure(description=f"campaign {campaign.key}: {exc}") from None
    with engine.connect() as conn:
        row = store.campaign_row(conn, t, c)
        counts = campaign_counts(campaign.key, row["state"], store.state_counts(conn, t, c))
    if not results:
        results = [gates.Gate(name, True, f"campaign already {state}: checked when it started") for name in gates.CHECK_NAMES]
    return dg.MaterializeResult(
        metadata={
            "state": row["state"], "audience": counts["audience"], "queued": counts["queued"],
            "skipped_suppressed": counts["skipped"]["suppressed"], "snapshot_hash": row["snapshot_hash"] or "",
            "overrides": ", ".join(g.check for g in results if g.overridden),
        },
        check_results=[
            dg.AssetCheckResult(
                check_name=g.check, passed=g.passed, severity=dg.AssetCheckSeverity.ERROR,
                description=g.reason, metadata={"reason": g.reason, "overridden": g.overridden},
            )
            for g in results
        ],
    )


def _segments_current(context: dg.AssetExecutionContext, engine, tenant, campaign: Campaign) -> None:
    """Rebuild the tenant's segments in this run when the campaign's snapshot is older than its inputs.

    Contacts, verdicts, enrichment, tags or suppressions changed after it was built, or the tenant file
    defines the segment otherwise (an import, a re-check or an unsuppress with no automation between
    it and the send): the same build as the ``segments`` asset's, recorded as a materialization of
    ``segments[tenant]``, so the freeze reads what the inputs hold now.
    """
    segment = campaign.file.segment
    reasons = outdated(engine, tenant, segment)
    if not reasons:
        return
    context.log.info(f"rebuilding the segments of tenant {tenant.id} before freezing {campaign.key}: {'; '.join(reasons)}")
    build = build_tenant_segments(engine, tenant, context.log)
    if segment in build.failed:
        raise dg.Failure(description=f"campaign {campaign.key}: audience not frozen: {build.failed[segment]}")
    if build.failed:  # other segments of the tenant (theirs kept): the asset's own run fails on them, this send goes on
        context.log.warning(f"tenant {tenant.id}: {'; '.join(build.failed.values())}")
        return
    context.log_event(dg.AssetMaterialization(
        asset_key=segments.key, partition=tenant.id, metadata=segments_metadata(tenant, build),
        description=f"rebuilt before freezing campaign {campaign.key}: {'; '.join(reasons)}",
    ))


def _freeze(context: dg.AssetExecutionContext, engine, campaign: Campaign) -> None:
    """Ledger rows from the segment's current snapshot; again only if the snapshot changed (another
    definition, or rebuilt since the freeze) and nothing was claimed."""
    audience = context.resources.audience_source
    t, c, segment = campaign.tenant_id, campaign.name, campaign.file.segment
    try:
        with engine.begin() as conn:
            snapshot = audience.current_snapshot(conn, t, segment)
            row = store.campaign_row(conn, t, c)
            if snapshot is None:
                context.log.warning(f"segment {segment!r} of tenant {t} has no snapshot")
                return
            if row["audience_frozen_at"] is not None and (store.audience_claimed(conn, t, c) or _frozen_from(row, snapshot)):
                return
            store.clear_audience(conn, t, c)
            after, frozen = 0, 0
            while True:
                # every page from the snapshot read above: a rebuild under another definition meanwhile
                # raises AudienceChanged and this transaction (nothing claimed yet) rolls back whole
                ids = audience.segment_members(conn, t, segment, after_contact_id=after, limit=FREEZE_PAGE,
                                               definition_hash=snapshot.definition_hash)
                if not ids:
                    break
                frozen += store.freeze_members(conn, t, c, ids)
                after = max(ids)
            store.mark_frozen(conn, t, c, snapshot.definition_hash)
    except (PartMissing, AudienceChanged) as exc:
        raise dg.Failure(description=f"campaign {campaign.key}: audience not frozen: {exc}; run it again") from None
    context.log.info(f"froze {frozen} member(s) of segment {segment!r} (snapshot {snapshot.definition_hash[:12]})")


def _frozen_from(row: dict, snapshot) -> bool:
    """Whether the campaign's frozen audience is ``snapshot``: same definition, not rebuilt since."""
    rebuilt = snapshot.built_at is not None and snapshot.built_at > row["audience_frozen_at"]
    return row["snapshot_hash"] == snapshot.definition_hash and not rebuilt


def _gates(context, engine, tenant, campaign: Campaign, overrides: list[str]) -> list[gates.Gate]:
    t, c = campaign.tenant_id, campaign.name
    # sender_reputation reads the last campaign's stats: pending feedback applied and counted first.
    refresh_before_send(engine, context.resources.workspace.root(), tenant, c,
                        powermta=context.resources.powermta, mailwizz=context.resources.mailwizz)
    with engine.connect() as conn:
        counts = store.state_counts(conn, t, c)
        suppressed = store.suppressed_at_freeze(conn, t, c)
        samples = store.sample_contacts(conn, t, c, PREFLIGHT_SAMPLES)
        last = store.last_completed(conn, t, c)
        unread = [p.line() for p in unread_inputs(conn, [t], FEEDBACK_KINDS).get(t, [])]
    try:
        composer = context.resources.composers.composer(tenant, campaign)
        transports = Transports.of(context.resources)
        composer = transports.composer_for(tenant, campaign, composer)  # MailWizz: its tag mode checked too
        problems = composer.preflight(samples)
        if not problems:  # MailWizz: its lists and the fields the content needs
            problems = transports.preflight(tenant, campaign, composer)
        render = gates.preflight(problems)
    except PartMissing as exc:
        render = gates.Gate(gates.PREFLIGHT_RENDERS, False, str(exc))
    results = [
        gates.suppressed_members(campaign.file.segment, suppressed),
        render,
        gates.audience_not_empty(campaign.file.segment, sum(counts.values())),
        gates.sender_reputation(last, tenant.feedback.max_hard_bounce_rate, tenant.feedback.max_complaint_rate, unread),
        _headers_gate(context, tenant, campaign),
    ]
    return gates.apply_overrides(results, overrides)


def _headers_gate(context, tenant, campaign: Campaign) -> gates.Gate:
    """``powermta_headers``: read from PowerMTA's config file through the ``powermta`` resource."""
    return Transports.of(context.resources).powermta_headers(tenant, campaign)


@dg.asset(
    partitions_def=campaign_partitions,
    group_name=CAMPAIGNS,
    kinds={"postgres"},
    deps=[campaign_audiences],
    required_resource_keys={"db", "workspace", "composers", *TRANSPORT_KEYS},
    description="Claims and composes queued rows batch by batch; marks each in flight as a connection takes it (suppression and state re-checked), records.",
)
def campaign_sends(context: dg.AssetExecutionContext, config: CampaignSendsConfig) -> dg.MaterializeResult:
    tenant, campaign = _load(context)
    return dg.MaterializeResult(metadata=send_started(context, tenant, campaign, resend_unknown=config.resend_unknown))


def send_started(context, tenant, campaign: Campaign, *, resend_unknown: bool = False) -> dict:
    """Send what is queued for a started campaign (the step of ``campaign_sends``, and of ``campaign_resume``
    after the resume): the ``campaign_sends`` metadata. A campaign not started (a draft, a scheduled one:
    a materialization of ``campaign_sends`` alone) is refused with a :class:`dg.Failure` naming why; a
    paused, cancelled or completed one sends nothing. The step holds its transport instance's lock
    (:data:`TRANSPORT_LOCK`) while it sends."""
    engine = context.resources.db.engine()
    t, c = campaign.tenant_id, campaign.name
    with engine.connect() as conn:
        row = store.campaign_row(conn, t, c)
    if row["state"] in ("draft", "scheduled"):
        raise dg.Failure(description=(
            f"campaign {campaign.key} is {row['state']} (not started): nothing sent; campaign_audiences starts it "
            "(campaign_send_job; with send_now: true for a draft or before send_at), or `email-engine campaign send`"))
    if row["state"] == "completed" and resend_unknown:
        with engine.begin() as conn:
            store.reopen_for_resend(conn, t, c)
            row = store.campaign_row(conn, t, c)
    held: dict[str, dict] = {}
    if row["state"] != "running":
        context.log.info(f"campaign {campaign.key} is {row['state']}: nothing to send")
    else:
        try:
            workers = default_workers()  # a bad EMAIL_ENGINE_COMPOSE_WORKERS fails here, named, before any row is claimed
            transports = Transports.of(context.resources)
            composer = transports.composer_for(tenant, campaign, context.resources.composers.composer(tenant, campaign))
            transport = transports.transport(tenant, campaign)
        except (PartMissing, ValueError) as exc:
            raise dg.Failure(description=str(exc)) from None
        progress = _Progress(context.log.info)
        guard = SendGuard(engine, context.resources.workspace.root(), tenant, c,
                          powermta=context.resources.powermta, mailwizz=context.resources.mailwizz)
        try:
            with tenant_work_lock(engine, TRANSPORT_LOCK, transport_tag(t, row["transport"])):
                context.log.info(f"sending {campaign.key} through transport {transport_tag(t, row['transport'])} (its lock held)")
                report = send_campaign(
                    engine, campaign, composer, transport, rate_per_minute=row["rate_per_minute"], resend_unknown=resend_unknown,
                    batch_size=SEND_BATCH_SIZE, on_batch=progress,
                    between_batches=guard, held_domains=_throttling(tenant, row["transport"]),
                    compose_workers=workers,
                )
        finally:
            if hasattr(transport, "close"):  # MailWizz: the API client's connections
                transport.close()
        progress.last()
        for key, reason in guard.paused.items():
            context.log.warning(f"campaign {key} paused by its guard rail: {reason}")
        if guard.paused and transports.is_list(tenant, campaign):  # its MailWizz campaigns paused too, now the send has let go
            done, failed = pause_in_mailwizz(engine, tenant, context.resources.mailwizz, guard.paused)
            for key, statuses in done.items():
                context.log.info(f"MailWizz campaigns of {key}: {statuses}")
            for key, why in failed.items():
                context.log.warning(f"MailWizz campaigns of {key} not paused: {why}; the next feedback cycle retries")
        held = report.held
        for domain, figures in held.items():
            context.log.warning(f"destination {domain} throttles the sender ({figures['refusals']} deferral(s) or refusal(s) "
                                f"recently): not fed; {figures['waiting']} row(s) wait, queued, for a later run")
        if report.recovered_unknown:
            context.log.warning(f"{report.recovered_unknown} row(s) left 'sending' by an interrupted run are now 'unknown' (not resent)")
    mta, mta_warning = _mta_figures(context, tenant, campaign)
    with engine.connect() as conn:
        row = store.campaign_row(conn, t, c)
        counts = campaign_counts(campaign.key, row["state"], store.state_counts(conn, t, c))
    return {
        "state": row["state"], **{k: counts[k] for k in ("audience", "queued", "sent", "handed_off", "failed", "unknown")},
        "skipped": dg.MetadataValue.json(counts["skipped"]),
        **({"powermta": dg.MetadataValue.json(mta)} if mta else {}),
        **({MTA_WARNING: mta_warning} if mta_warning else {}),
        **({"held_destinations": dg.MetadataValue.json(held)} if held else {}),
    }


class _Progress:
    """The send's ``batch N: {outcomes}`` lines, at most one every :data:`PROGRESS_EVERY_S` seconds, and the
    last one always. A line goes to Dagster's event log (a database write, on the send's path as each
    window is taken up): one per 200-row window cost a large send about a tenth of its time."""

    def __init__(self, log, clock=time.monotonic):
        self.log, self.clock = log, clock
        self.logged_at: float | None = None
        self.pending: tuple[int, dict] | None = None

    def __call__(self, batch: int, outcomes) -> None:
        self.pending = (batch, dict(outcomes))
        if self.logged_at is None or self.clock() - self.logged_at >= PROGRESS_EVERY_S:
            self.last()

    def last(self) -> None:
        if self.pending is not None:
            batch, outcomes = self.pending
            self.log(f"batch {batch}: {outcomes}")
            self.pending, self.logged_at = None, self.clock()


def _throttling(tenant, transport_name: str):
    """PowerMTA: the recipient domains whose recent accounting records say they throttle the sender
    (``guard_rails.destination_*``); none for the other transports (MailWizz and the outbox queue nothing)."""
    config = tenant.transport(transport_name)
    if config is None or config.kind != "powermta":
        return None
    rails = tenant.guard_rails
    return lambda conn: store.throttling_domains(conn, tenant.id, rails.destination_deferrals, rails.destination_window_s)


def _mta_figures(context: dg.AssetExecutionContext, tenant, campaign) -> tuple[dict | None, str | None]:
    """The MTA's queue / connection / rate figures after the send, or why they were not read: a failure
    (an answer that is not the expected JSON envelope included) is a warning, never a failed send."""
    try:
        return Transports.of(context.resources).delivery_figures(tenant, campaign), None
    except Exception as exc:  # noqa: BLE001 (the send is done; its figures are information, not feedback)
        warning = f"PowerMTA management figures not read: {str(exc)[:300]}"
        context.log.warning(warning)
        return None, warning


campaign_send_job = dg.define_asset_job(
    "campaign_send_job", selection=[campaign_audiences, campaign_sends],
    description="Freeze the audience, check it, send it: one campaign per run.",
)
