"""The guard rail of a running campaign, as a plain function of its feedback counts.

While a campaign runs, its hard-bounce and complaint rates are watched as feedback arrives. The
sample is the campaign's messages that have any feedback (delivered, bounced, complained): a rate
over the sample, not over the messages sent, since the messages still without an answer say
nothing yet. Once the sample reaches the tenant's ``guard_rails.min_sample``, a rate over the
tenant's limit (``feedback.max_hard_bounce_rate`` / ``max_complaint_rate``, the limits of the
``sender_reputation`` check) pauses the campaign; the reason names the rate and the sample.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

GUARD_RAIL = "guard_rail"  # the check name an operator gives to `campaign resume --override`


@dataclass(frozen=True)
class FeedbackSample:
    """A running campaign's messages with feedback (``sample``) and, among them, those hard-bounced or complained."""

    sample: int
    hard_bounces: int
    complaints: int


def trip(counts: FeedbackSample, *, min_sample: int, max_hard_bounce_rate: float, max_complaint_rate: float) -> str | None:
    """Why the campaign must pause (the rates over their limit, and the sample), or None."""
    if counts.sample < min_sample or counts.sample == 0:
        return None
    over = [f"{label} {n}/{counts.sample} = {n / counts.sample:.2%} > {_percent(limit)}"
            for label, n, limit in (("hard bounces", counts.hard_bounces, max_hard_bounce_rate),
                                    ("complaints", counts.complaints, max_complaint_rate))
            if n / counts.sample > limit]
    if not over:
        return None
    return (f"guard rail: {', '.join(over)} over {counts.sample} message(s) with feedback (min_sample {min_sample}); "
            f"review, then `campaign resume --override {GUARD_RAIL}`")


def _percent(rate: float) -> str:
    shown = f"{rate:.1%}"
    return shown if abs(float(shown[:-1]) / 100 - rate) < 1e-12 else f"{rate * 100:.6g}%"


def mailwizz_sample(templates: Mapping[str, Mapping[str, int]]) -> FeedbackSample:
    """The sample of a campaign MailWizz sends, from MailWizz's own figures (``campaigns/{uid}/stats`` of
    each of its MailWizz campaigns, on our keys): MailWizz knows what it delivered, which of those
    bounced and were complained about (its feedback-loop processing), which the engine's events do not."""
    delivered = sum(t.get("delivered", 0) for t in templates.values())
    bounced = sum(t.get(k, 0) for t in templates.values() for k in ("bounced_hard", "bounced_soft", "bounced_reputation"))
    return FeedbackSample(sample=delivered + bounced, hard_bounces=sum(t.get("bounced_hard", 0) for t in templates.values()),
                          complaints=sum(t.get("complained", 0) for t in templates.values()))
