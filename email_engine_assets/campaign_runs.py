"""The operator's campaign commands: list, show, send, pause, resume, cancel, preview, stats; suppress, unsuppress.

``send`` (and ``resume``) run ``campaign_send_job`` for the campaign's partition, with the run
config the UI's Launchpad takes (``send_now``, ``overrides``, ``resend_unknown``). With a daemon
dequeuing the instance's run queue the run is submitted there and followed to its end (the queue's
per-transport limit applies); without one (the embedded default) this process executes it with
``dg.execute_job`` and the configured executor. Either way the send step holds its transport's
PostgreSQL lock, so two sends through one transport never overlap. A send blocked by a check is
reported with the check and its reason (exit code 3 in the CLI); ``--override CHECK`` lets the
operator go on, and the override is kept in the run's config and on the check's result.

``pause``, ``resume`` and ``cancel`` are :mod:`email_engine_assets.campaigns.control`'s, as the
``campaign_*_job`` jobs run them.
"""

from __future__ import annotations

import email
import email.policy
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone

import dagster as dg

from email_engine_assets.audiences.suppressions import (
    SUPPRESSION_REASONS,
    suppression_key,
)
from email_engine_assets.campaigns import gates, store
from email_engine_assets.campaigns import control
from email_engine_assets.campaigns.assets import (
    MTA_WARNING,
    TRANSPORT_TAG,
    campaign_partitions,
)
from email_engine_assets.campaigns.control import CampaignRefused
from email_engine_assets.campaigns.files import split_key
from email_engine_assets.campaigns.ledger import campaign_counts
from email_engine_assets.campaigns.lifecycle import refusal
from email_engine_assets.campaigns.parts import Skipped
from email_engine_assets.campaigns.registry import (
    load_one,
    register_campaigns,
    register_one,
)
from email_engine_assets.campaigns.wiring import (
    TRANSPORT_KEYS,
    PartMissing,
    TemplateComposers,
    Transports,
    transport_tag,
)
from email_engine_assets import executors
from email_engine_assets.execution import (
    QueueNotServed,
    RunResult,
    daemon_running,
    follow,
    run_job,
    submit_job,
)
from email_engine_assets.contacts.store import register_workspace
from email_engine_assets.feedback.stats_refresh import (
    apply_pending_feedback,
    refresh_stats,
)
from email_engine_assets.tenancy.config import load_workspace, one_tenant
from email_engine_resources.postgres import get_engine
from email_engine_resources.workspace import WorkspaceResource

CLI_TAG = "email_engine/cli"
# A blocked check fails the run with ERROR events; the outcome reports it (and any failure) itself.
QUIET = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
__all__ = ["CampaignRefused"]  # raised by every command here, from the campaigns domain


@dataclass
class SendOutcome:
    counts: dict
    blocked: list[dict] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # information the run could not gather; the send went on

    def as_json(self) -> dict:
        """The counts, ``blocked``, ``failures`` and ``warnings``: the same keys whether the send ran, was blocked or failed."""
        return {**self.counts, "blocked": self.blocked, "failures": self.failures, "warnings": self.warnings}


def _definitions(definitions: dg.Definitions | None = None) -> dg.Definitions:
    """``definitions`` (the code location with resources replaced, e.g. ``definitions.with_resources``), else the code location."""
    if definitions is not None:
        return definitions
    from email_engine_assets.definitions import defs

    return defs


def _root():
    return WorkspaceResource().root()


def counts_of(key: str) -> dict:
    return control.counts_of(get_engine(), key)


def list_campaigns(tenant_id: str | None = None) -> tuple[list[dict], dict[str, str]]:
    """Every recorded campaign (of one tenant) with its counts, after reading the files; and the file problems."""
    ws = load_workspace(_root())
    registered = register_campaigns(get_engine(), ws)
    with get_engine().connect() as conn:
        rows = store.list_campaigns(conn, tenant_id)
        out = []
        for r in rows:
            key = f"{r['tenant_id']}.{r['campaign']}"
            counts = campaign_counts(key, r["state"], store.state_counts(conn, r["tenant_id"], r["campaign"]))
            out.append({**counts, "segment": r["segment"], "transport": r["transport"],
                        "send_at": r["send_at"].isoformat() if r["send_at"] else None})
    problems = {k: v for k, v in registered.problems.items() if tenant_id is None or k.startswith(f"{tenant_id}.")}
    return out, problems


def show(key: str) -> dict:
    try:
        register_one(get_engine(), _root(), key)
    except (LookupError, ValueError) as exc:
        raise CampaignRefused(str(exc)) from None
    tenant_id, name = split_key(key)
    with get_engine().connect() as conn:
        row = store.campaign_row(conn, tenant_id, name)
    return {**counts_of(key), "segment": row["segment"], "category": row["category"], "transport": row["transport"],
            "send_at": row["send_at"].isoformat() if row["send_at"] else None, "rate_per_minute": row["rate_per_minute"],
            "snapshot_hash": row["snapshot_hash"]}


def send_run_config(*, send_now: bool = False, overrides: list[str] = (), resend_unknown: bool = False) -> dict:
    """The run config of ``campaign_send_job``, as the Launchpad takes it (what is left out is the default)."""
    audiences = {**({"send_now": True} if send_now else {}), **({"overrides": list(overrides)} if overrides else {})}
    ops = {"campaign_audiences": {"config": audiences}} if audiences else {}
    if resend_unknown:
        ops["campaign_sends"] = {"config": {"resend_unknown": True}}
    return {"ops": ops} if ops else {}


def send(key: str, *, overrides: list[str] = (), resend_unknown: bool = False, action: str = "send",
         instance: dg.DagsterInstance | None = None, definitions: dg.Definitions | None = None,
         through_queue: bool | None = None) -> SendOutcome:
    """Run the campaign now (``action="due"``: only if it is due, as the sensor and the main job do).

    ``through_queue`` None: through the run queue when a daemon dequeues it, else executed here
    (always here with ``definitions``: their resources exist in this process only). The run uses
    the resources of ``definitions`` (default: the code location's)."""
    try:
        gates.parse_overrides(",".join(overrides))
        tenant, campaign, problem = register_one(get_engine(), _root(), key)
    except (LookupError, ValueError) as exc:
        raise CampaignRefused(str(exc)) from None
    notes = [problem] if problem else []
    with get_engine().connect() as conn:
        row = store.campaign_row(conn, tenant.id, campaign.name)
        unknown = store.state_counts(conn, tenant.id, campaign.name).get("unknown", 0)
    if row["state"] in ("paused", "cancelled"):
        raise CampaignRefused(f"campaign {key}: {refusal(row['state'], 'send')}")
    if row["state"] == "completed" and not (resend_unknown and unknown):
        return SendOutcome(counts_of(key), notes=notes + ["the campaign is completed: nothing more to send"])
    tags = {CLI_TAG: "true", TRANSPORT_TAG: transport_tag(tenant.id, row["transport"])}
    config = send_run_config(send_now=action == "send", overrides=list(overrides), resend_unknown=resend_unknown)
    own = instance is None
    instance = instance or dg.DagsterInstance.get()
    try:
        if key not in instance.get_dynamic_partitions(campaign_partitions.name):
            instance.add_dynamic_partitions(campaign_partitions.name, [key])
        queued = through_queue if through_queue is not None else definitions is None and daemon_running(instance)
        if queued:
            # the CLI's runs execute as they would here: in the launched run's process, or on Celery workers
            run_id = submit_job("campaign_send_job", instance, partition_key=key, tags=tags,
                                run_config={**config, **executors.run_config_for_cli()})
            notes.append(f"run {run_id} submitted to the run queue (a daemon launches it); followed to its end")
            try:
                result = follow(instance, run_id)
            except QueueNotServed as exc:
                raise CampaignRefused(f"campaign {key}: {exc}") from None
        else:
            result = run_job("campaign_send_job", instance, partition_key=key, tags=tags, run_config={**config, **QUIET},
                             definitions=definitions)
    finally:
        if own:
            instance.dispose()
    return _outcome(key, result, notes)


def _outcome(key: str, result: RunResult, notes: list[str]) -> SendOutcome:
    outcome = SendOutcome(counts={}, notes=notes)
    for event in result.events:
        if event.is_step_materialization and event.step_key == "campaign_sends":
            metadata = event.step_materialization_data.materialization.metadata
            if MTA_WARNING in metadata:
                outcome.warnings.append(str(metadata[MTA_WARNING].value))
        elif event.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION and not event.asset_check_evaluation_data.passed:
            evaluation = event.asset_check_evaluation_data
            outcome.blocked.append({"check": evaluation.check_name, "reason": _reason(evaluation)})
    if not result.success and not outcome.blocked:
        for step_key, err in result.step_failures:
            outcome.failures.append(f"{key}: {step_key}: {err.message.strip() if err else 'step failed'}")
        outcome.failures = outcome.failures or [f"{key}: run {result.run_id} failed"]
    outcome.counts = counts_of(key)
    return outcome


def preview(key: str, address: str) -> dict:
    """What ``address`` (a contact of the campaign's tenant) would receive: the chosen template, the
    rule that chose it, the message's headers and its text part. Nothing is written or sent; the
    Message-ID is the ledger row's when the contact is already in the campaign's audience."""
    try:
        tenant, campaign = load_one(_root(), key)
        email_key = suppression_key(address)
    except (LookupError, ValueError) as exc:
        raise CampaignRefused(str(exc)) from None
    with get_engine().connect() as conn:
        contact = store.contact_by_email(conn, tenant.id, email_key)
        if contact is None:
            raise CampaignRefused(f"tenant {tenant.id} has no contact {email_key[:254]!r}")
        contact_id = int(contact["contact_id"])
        token = store.ledger_token(conn, tenant.id, campaign.name, contact_id)
    try:
        composer = TemplateComposers().composer(tenant, campaign)
    except PartMissing as exc:
        raise CampaignRefused(f"campaign {key}: {exc}") from None
    # one shape whatever the outcome: what does not apply is null
    out: dict = {"campaign": key, "contact_id": contact_id, "email": email_key, "template": None, "rule": None,
                 "skipped": None, "detail": None, "headers": None, "dkim_signed": None, "text": None}
    try:
        made = composer.compose(contact, contact_id=contact_id, row_token=token or f"preview{contact_id}")
    except ValueError as exc:  # the tenant's message settings cannot sign or write it (the send's preflight blocks too)
        raise CampaignRefused(f"campaign {key}: {exc}") from None
    if isinstance(made, Skipped):
        return {**out, "skipped": made.reason, "detail": made.detail}
    message = email.message_from_bytes(made.message, policy=email.policy.default)
    text = next((part.get_content() for part in message.walk() if part.get_content_type() == "text/plain"), "")
    return {**out, "template": made.template, "rule": made.rule,
            "headers": [[name, str(value)] for name, value in message.items() if name.lower() != "dkim-signature"],
            "dkim_signed": "DKIM-Signature" in message, "text": text}


def _reason(evaluation) -> str:
    value = evaluation.metadata.get("reason")
    return getattr(value, "value", None) or getattr(value, "text", None) or str(evaluation.description or "failed")


@contextmanager
def _transports(definitions: dg.Definitions | None) -> Iterator[Transports]:
    """The transports that pause, resume and cancel reach: the ``outbox``, ``powermta`` and ``mailwizz``
    resources of ``definitions`` (default: the code location's), initialised as a run would."""
    resources = _definitions(definitions).resources or {}
    with dg.build_resources({k: resources[k] for k in TRANSPORT_KEYS}) as built:
        yield Transports.of(built)


def change_state(key: str, action: str, definitions: dg.Definitions | None = None) -> dict:
    """``pause`` or ``cancel`` now (``resume``: see :func:`resume`), as ``campaign_pause_job`` /
    ``campaign_cancel_job`` do (:func:`email_engine_assets.campaigns.control.change_state`)."""
    try:
        with _transports(definitions) as parts:
            return control.change_state(get_engine(), _root(), key, action, parts)
    except (LookupError, ValueError, PartMissing) as exc:  # the transports' resources could not be built
        raise CampaignRefused(f"campaign {key}: {exc}") from None


def resume(key: str, **kwargs) -> SendOutcome:
    """Back to ``running`` (MailWizz campaigns unpaused) and go on sending where it stopped."""
    change_state(key, "resume", kwargs.get("definitions"))
    return send(key, **kwargs)


def send_due_campaigns(instance: dg.DagsterInstance, definitions: dg.Definitions | None = None) -> list[SendOutcome]:
    """The main job's last step: every due campaign through its own transport, and every campaign a
    dead run left ``running`` goes on; drafts never start."""
    ws = load_workspace(_root())
    register_campaigns(get_engine(), ws)
    with get_engine().connect() as conn:
        due = store.due_campaigns(conn, datetime.now(timezone.utc))
        due += [key for key in store.interrupted_campaigns(conn) if key not in due]
    outcomes = []
    for key in due:
        try:
            outcomes.append(send(key, action="due", instance=instance, definitions=definitions))
        except CampaignRefused as exc:  # e.g. its file broke after it was scheduled: the others still go
            outcomes.append(SendOutcome(counts=counts_of(key), failures=[f"{key}: {exc}"]))
    return outcomes


def stats(key: str) -> tuple[dict, list[str]]:
    """The campaign's stats (``feedback.stats``), after applying the tenant's pending feedback; and notes
    (MailWizz figures that could not be refreshed). Stored as ``campaign_stats`` would store them."""
    try:
        tenant_id, name = split_key(key)
    except ValueError as exc:
        raise CampaignRefused(str(exc)) from None
    root = _root()
    try:
        tenant, _ = one_tenant(root, tenant_id)
    except LookupError as exc:
        raise CampaignRefused(str(exc)) from None
    engine = get_engine()
    with engine.connect() as conn:
        if store.campaign_row(conn, tenant_id, name) is None:
            raise CampaignRefused(f"no campaign {key!r} (a campaign is known once it has been listed, sent or due)")
    apply_pending_feedback(engine, root, tenant)
    try:
        return refresh_stats(engine, root, tenant, name)
    except LookupError as exc:
        raise CampaignRefused(str(exc)) from None


def suppress(tenant_id: str, address: str, reason: str = "manual", detail: str | None = None) -> tuple[str, bool]:
    """Suppress ``address`` for the tenant: (its key, whether it is new). Running sends skip it from their next batch."""
    key, _ = _suppression_target(tenant_id, address)
    if reason not in SUPPRESSION_REASONS:
        raise CampaignRefused(f"unknown reason {reason[:40]!r}; expected one of {', '.join(SUPPRESSION_REASONS)}")
    with get_engine().begin() as conn:
        return key, store.suppress(conn, tenant_id, key, reason, (detail or "")[:500] or None)


def unsuppress(tenant_id: str, address: str) -> tuple[str, str | None]:
    """Lift a suppression: (the key, the reason it had, or None when there was none)."""
    key, _ = _suppression_target(tenant_id, address)
    with get_engine().begin() as conn:
        return key, store.unsuppress(conn, tenant_id, key)


def _suppression_target(tenant_id: str, address: str):
    try:
        _, ws = one_tenant(_root(), tenant_id)
        key = suppression_key(address)
    except (LookupError, ValueError) as exc:
        raise CampaignRefused(str(exc)) from None
    with get_engine().begin() as conn:
        register_workspace(conn, ws)
    return key, ws
