"""The suppression policy: from per-address counts of feedback events to who is suppressed, and why.

Thresholds in (:class:`~email_engine_assets.tenancy.feedback_settings.FeedbackPolicy`), decisions
out; the counts come from :mod:`email_engine_assets.feedback.policy_store`, which reads only the
addresses with new events. The rules, each with its tenant-file key and default:

* an unsubscribe suppresses at once (``unsubscribed``);
* ``complaint_limit`` (1) complaints suppress (``complained``);
* ``hard_bounce_limit`` (1) hard bounces suppress (``bounced``);
* ``soft_bounce_limit`` (3) soft bounces within any ``soft_bounce_days`` (7) days suppress
  (``bounced``): three spread over a longer time do not;
* reputation bounces never count against the contact: they are not in the counts at all.

When several rules hold for one address the strongest reason is kept (complained, then
unsubscribed, then bounced); an address already suppressed keeps its reason (the store inserts
with ``ON CONFLICT DO NOTHING``).
"""

from __future__ import annotations

import polars as pl

from email_engine_assets.audiences.suppressions import SUPPRESSION_REASONS
from email_engine_assets.tenancy.feedback_settings import FeedbackPolicy

# A contact's status (the view contact_statuses): active, or the reason it is suppressed.
CONTACT_STATUSES: tuple[str, ...] = ("active", *SUPPRESSION_REASONS)

# The columns of the counts frame the store reads: per address (the email key), how many events
# of each decisive kind count now, and the text of the last one of each (its DSN, origin, ...).
COUNTS_SCHEMA: dict[str, pl.DataType] = {
    "email": pl.String(),
    "unsubscribes": pl.Int64(),
    "unsubscribe_detail": pl.String(),
    "complaints": pl.Int64(),
    "complaint_detail": pl.String(),
    "hard_bounces": pl.Int64(),
    "hard_detail": pl.String(),
    "soft_in_window": pl.Int64(),
    "soft_detail": pl.String(),
}
DECISIONS_SCHEMA: dict[str, pl.DataType] = {"email": pl.String(), "reason": pl.String(), "detail": pl.String()}
# Strongest first: the reason an address gets when several rules hold at once.
POLICY_REASONS: tuple[str, ...] = ("complained", "unsubscribed", "bounced")
DETAIL_EXCERPT = 160


def _plural(count: pl.Expr, one: str, many: str) -> pl.Expr:
    return pl.format("{} {}", count, pl.when(count == 1).then(pl.lit(one)).otherwise(pl.lit(many)))


def _last(column: str) -> pl.Expr:
    text = pl.col(column).fill_null("").str.replace_all(r"\s+", " ").str.strip_chars().str.slice(0, DETAIL_EXCERPT)
    return pl.when(text == "").then(pl.lit("")).otherwise(pl.format(" (last: {})", text))


def decide(counts: pl.DataFrame, policy: FeedbackPolicy) -> pl.DataFrame:
    """One row per address to suppress: ``email``, ``reason``, ``detail`` (``DECISIONS_SCHEMA``)."""
    if counts.height == 0:
        return pl.DataFrame(schema=DECISIONS_SCHEMA)
    c = counts.with_columns(pl.col(n).fill_null(0) for n in ("unsubscribes", "complaints", "hard_bounces", "soft_in_window"))
    complained = pl.col("complaints") >= policy.complaint_limit
    unsubscribed = pl.col("unsubscribes") >= 1
    hard = pl.col("hard_bounces") >= policy.hard_bounce_limit
    soft = pl.col("soft_in_window") >= policy.soft_bounce_limit
    reason = (
        pl.when(complained).then(pl.lit("complained"))
        .when(unsubscribed).then(pl.lit("unsubscribed"))
        .when(hard | soft).then(pl.lit("bounced"))
        .otherwise(None)
    )
    detail = (
        pl.when(complained).then(pl.concat_str(_plural(pl.col("complaints"), "complaint", "complaints"), _last("complaint_detail")))
        .when(unsubscribed).then(pl.concat_str(pl.lit("unsubscribed"), _last("unsubscribe_detail")))
        .when(hard).then(pl.concat_str(_plural(pl.col("hard_bounces"), "hard bounce", "hard bounces"), _last("hard_detail")))
        .when(soft).then(pl.concat_str(
            _plural(pl.col("soft_in_window"), "soft bounce", "soft bounces"),
            pl.lit(f" in {policy.soft_bounce_days} day{'s' if policy.soft_bounce_days != 1 else ''}"),
            _last("soft_detail"),
        ))
        .otherwise(None)
    )
    return (
        c.select(pl.col("email"), reason.alias("reason"), detail.alias("detail"))
        .filter(pl.col("reason").is_not_null() & pl.col("email").is_not_null())
        .unique(subset="email", keep="first", maintain_order=True)
        .cast(DECISIONS_SCHEMA)
    )
