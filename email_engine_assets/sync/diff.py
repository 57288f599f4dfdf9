"""What a MailWizz sync must do, from the contacts and the last pushed state (no I/O here).

A contact is **sendable** when its latest verdict is ``valid`` and its address is not
suppressed. Each sendable contact belongs to one standing list per instance, named after its
(category, language) by :func:`standing_list_name`. Comparing the wanted rows with the rows last
pushed (``mailwizz_subscribers``) gives:

* ``add``: wanted rows never pushed, or refused before and changed since;
* ``update``: subscribed rows whose digest (email, first and last name) changed;
* ``unsubscribe``: subscribed rows of a suppressed contact, in every list (suppression wins);
* ``remove``: subscribed or refused rows the contact no longer belongs to (verdict no longer
  valid, another category or language), removed from MailWizz and from the state.

Rows in state ``unsubscribed`` are never subscribed again by a sync: the person may have
unsubscribed in MailWizz itself, and only a person's own opt-in may undo that. An address MailWizz
holds as unsubscribed or blacklisted is never pushed (MailWizz's bulk call would subscribe it
again): its row is ``unsubscribed`` and the address becomes a suppression.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import polars as pl

SUBSCRIBED, UNSUBSCRIBED, REFUSED = "subscribed", "unsubscribed", "refused"
SYNC_STATES: tuple[str, ...] = (SUBSCRIBED, UNSUBSCRIBED, REFUSED)
# MailWizz subscriber statuses and the state they leave a synced row in.
STATE_OF_STATUS: dict[str, str] = {"confirmed": SUBSCRIBED, "unconfirmed": SUBSCRIBED, "unsubscribed": UNSUBSCRIBED,
                                   "blacklisted": UNSUBSCRIBED}
NO_CATEGORY = "general"

CANDIDATE_SCHEMA = {
    "contact_id": pl.Int64, "email": pl.String, "email_sha256": pl.String, "first_name": pl.String,
    "last_name": pl.String, "category": pl.String, "language": pl.String, "row_sha256": pl.String,
    "sendable": pl.Boolean, "suppressed": pl.Boolean,
}
STATE_SCHEMA = {
    "contact_id": pl.Int64, "list_name": pl.String, "email_sha256": pl.String, "list_uid": pl.String,
    "subscriber_uid": pl.String, "state": pl.String, "row_sha256": pl.String,
}
KEY = ["list_name", "email_sha256"]


def _name_part(value: str) -> str:
    return re.sub(r"[^a-z0-9_-]+", "-", value.strip().lower()).strip("-") or NO_CATEGORY


def standing_list_name(prefix: str, tenant_id: str, category: str | None, language: str) -> str:
    """``<prefix><tenant>.<category>.<language>``, e.g. ``acme.shoes.fr`` (no category: ``general``)."""
    return f"{prefix}{tenant_id}.{_name_part(category or NO_CATEGORY)}.{_name_part(language)}"


def with_list_names(candidates: pl.DataFrame, prefix: str, tenant_id: str) -> pl.DataFrame:
    """``candidates`` with the ``list_name`` of each row (one name per distinct category and language)."""
    pairs = candidates.select("category", "language").unique()
    names = pairs.with_columns(
        list_name=pl.Series([standing_list_name(prefix, tenant_id, c, lang) for c, lang in pairs.iter_rows()], dtype=pl.String)
    )
    return candidates.join(names, on=["category", "language"], how="left", nulls_equal=True)


@dataclass(frozen=True)
class SyncPlan:
    add: pl.DataFrame
    update: pl.DataFrame
    unsubscribe: pl.DataFrame
    remove: pl.DataFrame

    def counts(self) -> dict[str, int]:
        return {"add": self.add.height, "update": self.update.height,
                "unsubscribe": self.unsubscribe.height, "remove": self.remove.height}


def plan_sync(candidates: pl.DataFrame, state: pl.DataFrame) -> SyncPlan:
    """The actions that make ``state`` match ``candidates`` (both for the same contacts and instance).

    ``candidates`` carry ``list_name`` (:func:`with_list_names`); ``state`` is the instance's rows
    of those contacts.
    """
    wanted = candidates.filter(pl.col("sendable") & ~pl.col("suppressed"))
    suppressed = candidates.filter(pl.col("suppressed")).select("contact_id").unique()
    joined = wanted.join(state.select(*KEY, "list_uid", "subscriber_uid", "state", pushed_sha256="row_sha256"),
                         on=KEY, how="left")
    add = joined.filter(pl.col("state").is_null() | ((pl.col("state") == REFUSED) & (pl.col("pushed_sha256") != pl.col("row_sha256"))))
    update = joined.filter((pl.col("state") == SUBSCRIBED) & (pl.col("pushed_sha256") != pl.col("row_sha256")))
    pushed = state.filter(pl.col("state") != UNSUBSCRIBED)
    unsubscribe = pushed.filter(pl.col("state") == SUBSCRIBED).join(suppressed, on="contact_id", how="semi")
    remove = pushed.join(suppressed, on="contact_id", how="anti").join(wanted.select(KEY), on=KEY, how="anti")
    return SyncPlan(add=add.drop("pushed_sha256"), update=update.drop("pushed_sha256"), unsubscribe=unsubscribe, remove=remove)


def state_of(status: str | None, subscriber_uid: str | None) -> str:
    """The synced row's state for a pushed subscriber's MailWizz status (no uid: refused)."""
    if not subscriber_uid:
        return REFUSED
    return STATE_OF_STATUS.get(status or "", REFUSED)
