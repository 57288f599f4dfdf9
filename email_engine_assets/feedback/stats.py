"""A campaign's stats, from counts: what was sent and what came back, with rates, per language and template.

The counts (:data:`COUNT_KEYS`) and how they are counted:

- ``sent``: ledger rows ``sent`` (outbox, PowerMTA) or ``handed_off`` (MailWizz): the denominator;
- ``delivered``, ``deferred``, ``bounced_hard`` / ``bounced_soft`` / ``bounced_reputation``,
  ``complained``, ``unsubscribed``: messages (ledger rows) with at least one such event, plus the
  events of the campaign that matched no ledger row (each counts once, nothing is dropped);
- ``opened`` / ``clicked``: every open / click event; ``unique_opened`` / ``unique_clicked``: the
  distinct ledger rows opened / clicked.

Each count has a ``<count>_rate`` over ``sent`` (rounded to 6 places). A rate over nothing is
``None`` (JSON ``null``), never 0.0: a campaign that sent nothing has no bounce rate, and a gate
reading it must not take "no data" for "clean".

MailWizz campaigns (one per chosen template, named ``<tenant>.<campaign>.<template>``) report their
own figures (``GET campaigns/{uid}/stats``): :func:`mailwizz_counts` maps them onto our keys, and
:func:`campaign_stats` keeps, per key, the larger of ours and MailWizz's (the same open may reach us
as a webhook event and be counted by MailWizz too: the larger never counts it twice, and never
loses what only one side saw). MailWizz's internal bounces (refused before reaching the mailbox
provider, never held against the subscriber) are counted as ``bounced_reputation``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from email_engine_assets.tenancy.languages import FALLBACK_LANGUAGE

COUNT_KEYS: tuple[str, ...] = (
    "sent", "delivered", "deferred", "bounced_hard", "bounced_soft", "bounced_reputation", "complained",
    "opened", "unique_opened", "clicked", "unique_clicked", "unsubscribed",
)
RATE_KEYS: tuple[str, ...] = tuple(f"{k}_rate" for k in COUNT_KEYS)
RATE_PLACES = 6
UNKNOWN_LANGUAGE = "unknown"
NO_TEMPLATE = "(none)"

# Our key -> the key of MailWizz's ``GET campaigns/{uid}/stats`` (REFERENCE.md). ``sent`` stays the
# ledger's (rows handed off), ``deferred`` is ours only (MailWizz does not report it).
MAILWIZZ_STAT_KEYS: dict[str, str] = {
    "delivered": "delivery_success_count",
    "bounced_hard": "hard_bounces_count",
    "bounced_soft": "soft_bounces_count",
    "bounced_reputation": "internal_bounces_count",
    "complained": "complaints_count",
    "opened": "opens_count",
    "unique_opened": "unique_opens_count",
    "clicked": "clicks_count",
    "unique_clicked": "unique_clicks_count",
    "unsubscribed": "unsubscribes_count",
}
MAX_COUNT = 10**12  # a figure above this from a server is not a count


@dataclass(frozen=True)
class TemplateCounts:
    """The counts of the ledger rows that got one template (``None``: rows that got none), and the
    choice rules that picked it (``content.choice.CHOICE_RULES``)."""

    template: str | None
    counts: Mapping[str, int]
    rules: tuple[str, ...] = ()


def zero_counts() -> dict[str, int]:
    return dict.fromkeys(COUNT_KEYS, 0)


def with_rates(counts: Mapping[str, int]) -> dict:
    """The counts and a ``<count>_rate`` for each, over ``sent`` (``None`` when nothing was sent)."""
    sent = int(counts.get("sent", 0))
    out: dict = {k: int(counts.get(k, 0)) for k in COUNT_KEYS}
    for k in COUNT_KEYS:
        out[f"{k}_rate"] = round(out[k] / sent, RATE_PLACES) if sent else None
    return out


def mailwizz_counts(figures: Mapping[str, object], where: str = "MailWizz stats") -> dict[str, int]:
    """MailWizz's stats of one campaign on our keys (only the keys MailWizz reports).

    Counts come as integers or numeric strings (``"1,234"`` too); a missing key counts 0. Anything
    else (a negative, a fraction, text, an absurd figure) is a ``ValueError`` naming ``where`` and the key.
    """
    out = {}
    for ours, theirs in MAILWIZZ_STAT_KEYS.items():
        out[ours] = _count(figures.get(theirs), f"{where}: {theirs}")
    return out


def _count(value: object, where: str) -> int:
    if value is None or value == "":
        return 0
    if isinstance(value, bool):
        raise ValueError(f"{where}: expected a count, got {value!r}")
    if isinstance(value, int):
        number = value
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    elif isinstance(value, str) and value.strip().replace(",", "").isdigit():
        number = int(value.strip().replace(",", ""))
    else:
        raise ValueError(f"{where}: expected a count, got {str(value)[:40]!r}")
    if not 0 <= number <= MAX_COUNT:
        raise ValueError(f"{where}: {number} is not a plausible count")
    return number


def template_language(template: str | None, rules: Iterable[str], languages: Mapping[str, str]) -> str:
    """The language of the rows that got ``template``: the template file's ``language``; when the file
    is gone, ``en`` if every rule that picked it was a fallback-language rule (``*_en``), else ``unknown``."""
    if template is not None and template in languages:
        return languages[template]
    rules = [r for r in rules if r]
    if rules and all(r.endswith(f"_{FALLBACK_LANGUAGE}") for r in rules):
        return FALLBACK_LANGUAGE
    return UNKNOWN_LANGUAGE


def _add(into: dict[str, int], counts: Mapping[str, int]) -> None:
    for k in COUNT_KEYS:
        into[k] += int(counts.get(k, 0))


def campaign_stats(
    campaign: str,
    totals: Mapping[str, int],
    templates: Iterable[TemplateCounts],
    languages: Mapping[str, str],
    *,
    rates_over: str = "sent",
    mailwizz: Mapping[str, Mapping[str, int]] | None = None,
) -> dict:
    """The stats object: counts and rates of the campaign, ``by_template`` and ``by_language``.

    ``totals`` are the campaign's own counts (unmatched events included); ``templates`` the counts
    per template (rows only); ``languages`` template name -> language (the template files);
    ``mailwizz`` MailWizz's figures per template (:func:`mailwizz_counts`), merged key by key with
    the larger value. ``rates_over`` names what ``sent`` counts (``sent`` or ``handed_off``).
    """
    per_template: dict[str, dict[str, int]] = {}
    rules_of: dict[str, tuple[str, ...]] = {}
    for t in templates:
        name = t.template if t.template is not None else NO_TEMPLATE
        counts = per_template.setdefault(name, zero_counts())
        _add(counts, t.counts)
        rules_of[name] = tuple(sorted(set(rules_of.get(name, ())) | {r for r in t.rules if r}))
    merged_totals = {k: int(totals.get(k, 0)) for k in COUNT_KEYS}
    if mailwizz:
        for template, figures in mailwizz.items():
            counts = per_template.setdefault(template, zero_counts())
            for k, v in figures.items():
                if k in MAILWIZZ_STAT_KEYS:
                    counts[k] = max(counts[k], int(v))
        for k in MAILWIZZ_STAT_KEYS:
            merged_totals[k] = max(merged_totals[k], sum(c[k] for c in per_template.values()))
    # Rows with no template and no count (skipped before a template was chosen) say nothing.
    per_template = {name: c for name, c in per_template.items() if any(c.values())}
    by_language: dict[str, dict[str, int]] = {}
    for name, counts in per_template.items():
        language = template_language(None if name == NO_TEMPLATE else name, rules_of.get(name, ()), languages)
        _add(by_language.setdefault(language, zero_counts()), counts)
    return {
        "campaign": campaign,
        "rates_over": rates_over,
        **with_rates(merged_totals),
        "by_language": {lang: with_rates(c) for lang, c in sorted(by_language.items())},
        "by_template": {name: with_rates(c) for name, c in sorted(per_template.items())},
    }

