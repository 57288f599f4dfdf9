"""Carry out a sync plan against one MailWizz instance, writing the state after each batch of calls.

Commit points: the state is written after the calls it records. A crash in between leaves
MailWizz ahead of the state; the next run pushes those rows again, MailWizz reports them as
existing, the search-by-email finds them and the state catches up: no second subscriber, and an
unsubscribe or a removal repeated is a no-op (a 404 counts as done).
"""

from __future__ import annotations

from collections import Counter

import polars as pl
import sqlalchemy as sa

from email_engine_assets.sync import store
from email_engine_assets.sync.diff import (
    SUBSCRIBED,
    UNSUBSCRIBED,
    SyncPlan,
    plan_sync,
    state_of,
    with_list_names,
)
from email_engine_assets.tenancy.config import TenantConfig
from email_engine_assets.tenancy.sending import MailwizzTransport
from email_engine_assets.campaigns.store import suppress
from email_engine_resources.mailwizz import MailwizzInstance, PushResult, Subscriber

CALLS_PER_WRITE = 100


def sync_instance(engine: sa.Engine, tenant: TenantConfig, transport: MailwizzTransport, mw: MailwizzInstance,
                  ranges: list[tuple[int, int]]) -> Counter[str]:
    """Bring ``transport``'s standing lists in line with the tenant's sendable contacts, range by range."""
    settings = transport.sync
    assert settings is not None
    totals: Counter[str] = Counter()
    for ids in ranges:
        with engine.connect() as conn:
            raw = store.sync_candidates(conn, tenant.id, tenant.default_language, tenant.default_category, ids)
            candidates = with_list_names(raw, settings.list_prefix, tenant.id)
            state = store.pushed_state(conn, tenant.id, transport.name, ids)
        plan = plan_sync(candidates, state)
        totals["sendable"] += candidates.filter(pl.col("sendable") & ~pl.col("suppressed")).height
        _apply(engine, tenant.id, transport, mw, plan, totals)
    with engine.connect() as conn:
        erased = store.erased_state(conn, tenant.id, transport.name)
    _remove(engine, tenant.id, transport.name, mw, erased, totals, "erased_removed", every_state=True)
    return totals


def _apply(engine, tenant_id: str, transport: MailwizzTransport, mw: MailwizzInstance, plan: SyncPlan, totals: Counter) -> None:
    name, settings = transport.name, transport.sync
    for (list_name,), rows in plan.add.partition_by("list_name", as_dict=True, maintain_order=True).items():
        list_uid = mw.ensure_list(list_name, from_name=settings.from_name, from_email=settings.from_email,
                                  reply_to=settings.reply_to or settings.from_email)
        for chunk in rows.iter_slices(mw.bulk_size):
            written = _add(mw, list_uid, chunk, totals)
            with engine.begin() as conn:
                store.write_state(conn, tenant_id, name, written)
                for row in written.filter(pl.col("suppress") != "").iter_rows(named=True):  # suppression wins from now on
                    totals["suppressed"] += suppress(conn, tenant_id, row["email"], row["suppress"],
                                                     f"{row['detail']} (MailWizz {name!r}, list {list_name})")
    for chunk in plan.update.iter_slices(CALLS_PER_WRITE):
        for row in chunk.iter_rows(named=True):
            mw.update_subscriber(row["list_uid"], row["subscriber_uid"], {"FNAME": row["first_name"], "LNAME": row["last_name"]})
        totals["updated"] += chunk.height
        with engine.begin() as conn:
            store.write_state(conn, tenant_id, name, chunk.with_columns(state=pl.lit(SUBSCRIBED), detail=pl.lit(None, pl.String)))
    for chunk in plan.unsubscribe.iter_slices(CALLS_PER_WRITE):
        for row in chunk.iter_rows(named=True):
            mw.unsubscribe(row["list_uid"], row["subscriber_uid"])
        totals["unsubscribed"] += chunk.height
        with engine.begin() as conn:
            store.write_state(conn, tenant_id, name, chunk.with_columns(
                state=pl.lit(UNSUBSCRIBED), detail=pl.lit("suppressed", pl.String)))
    _remove(engine, tenant_id, name, mw, plan.remove, totals, "removed")


def _add(mw: MailwizzInstance, list_uid: str, rows: pl.DataFrame, totals: Counter) -> pl.DataFrame:
    """Push the rows; the state to write for each, with the suppression an address held out by MailWizz becomes."""
    subscribers = [Subscriber(r["email"], {"FNAME": r["first_name"], "LNAME": r["last_name"]}) for r in rows.iter_rows(named=True)]
    results = mw.push_subscribers(list_uid, subscribers)
    states = [state_of(p.status, p.subscriber_uid) for p in results]
    for sub, push, state in zip(subscribers, results, states, strict=True):
        if push.existed and state == SUBSCRIBED:
            mw.update_subscriber(list_uid, push.subscriber_uid, sub.fields)  # an earlier run's row: make it current
        totals["bad_address" if push.bad_address else "held_out" if push.held else "added" if state == SUBSCRIBED else state] += 1
    return rows.select("list_name", "email_sha256", "contact_id", "row_sha256", "email").with_columns(
        list_uid=pl.lit(list_uid),
        subscriber_uid=pl.Series([p.subscriber_uid for p in results], dtype=pl.String),
        state=pl.Series(states, dtype=pl.String),
        detail=pl.Series([_detail(p, s) for p, s in zip(results, states, strict=True)], dtype=pl.String),
        suppress=pl.Series([p.suppression for p in results], dtype=pl.String),
    )


def _detail(push: PushResult, state: str) -> str | None:
    if push.bad_address:
        return f"bad_address: {push.error}"
    if push.held or (push.existed and push.suppression):
        return f"MailWizz holds the address as {push.status}: not pushed again; suppressed as {push.suppression}"
    if push.error:
        return push.error + (f"; suppressed as {push.suppression}" if push.suppression else "")
    if push.status == "unconfirmed":
        return "unconfirmed: MailWizz waits for the person's confirmation (the list forces double opt-in)"
    return None if state == SUBSCRIBED else f"MailWizz status {push.status}"


def _remove(engine, tenant_id: str, name: str, mw: MailwizzInstance, rows: pl.DataFrame, totals: Counter, counter: str,
            *, every_state: bool = False) -> None:
    """Delete the subscribers from MailWizz (only subscribed ones, or ``every_state`` for an erased person), then the rows."""
    for chunk in rows.iter_slices(CALLS_PER_WRITE):
        for row in chunk.iter_rows(named=True):
            if row["subscriber_uid"] and (every_state or row["state"] == SUBSCRIBED):
                mw.remove(row["list_uid"], row["subscriber_uid"])
        totals[counter] += chunk.height
        with engine.begin() as conn:
            store.delete_state(conn, tenant_id, name, chunk)
