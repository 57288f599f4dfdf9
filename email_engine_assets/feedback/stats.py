"""A campaign's stats, from counts: what was sent and what came back, with rates, per language, template and link.

The counts (:data:`COUNT_KEYS`) and how they are counted:

- ``sent``: ledger rows ``sent`` (outbox, PowerMTA) or ``handed_off`` (MailWizz): the denominator;
- ``delivered``, ``deferred``, ``bounced_hard`` / ``bounced_soft`` / ``bounced_reputation``,
  ``complained``, ``unsubscribed``: messages (ledger rows) with at least one such event, plus the
  events of the campaign that matched no ledger row (each counts once, nothing is dropped);
- ``opened`` / ``clicked``: every open / click event; ``unique_opened`` / ``unique_clicked``: the
  distinct ledger rows opened / clicked;
- ``opened_human``, ``unique_opened_human``, ``clicked_human``, ``unique_clicked_human``: the same,
  counting only the events a person made: ``machine IS NOT TRUE``. Our own tracking classes each
  hit (``machine`` true: a mail proxy's prefetch, a link scanner, ...; false: a person); an event
  nobody classed (``machine`` NULL: MailWizz's tracking, its webhooks and figures) counts as a
  person's, as MailWizz reports it. So ``opened_human`` <= ``opened``, and a campaign sent through
  MailWizz has ``opened_human == opened``.

Each count has a ``<count>_rate`` over ``sent`` (rounded to 6 places). A rate over nothing is
``None`` (JSON ``null``), never 0.0: a campaign that sent nothing has no bounce rate, and a gate
reading it must not take "no data" for "clean".

``by_link`` (:func:`link_stats`): per template, per link of the message (``link_index`` of our click
events; MailWizz's clicks name no link and are not in it), the link's clicks (``clicked``,
``unique_clicked``, ``clicked_human``, ``unique_clicked_human``) and its ``url``, shown only when it
cannot be one person's (:func:`shown_url`): a personalised link (``?u=<id>``, ``?email=...``)
carries personal data, and stored stats are not erased with the person.

MailWizz campaigns (one per chosen template, named ``<tenant>.<campaign>.<template>``) report their
own figures (``GET campaigns/{uid}/stats``): :func:`mailwizz_counts` maps them onto our keys, and
:func:`campaign_stats` keeps, per key, the larger of ours and MailWizz's (the same open may reach us
as a webhook event and be counted by MailWizz too: the larger never counts it twice, and never
loses what only one side saw). MailWizz does not tell machines from people: its opens and clicks
merge into the ``_human`` counts too. MailWizz's internal bounces (refused before reaching the mailbox
provider, never held against the subscriber) are counted as ``bounced_reputation``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from email_engine_assets.tenancy.languages import FALLBACK_LANGUAGE

COUNT_KEYS: tuple[str, ...] = (
    "sent", "delivered", "deferred", "bounced_hard", "bounced_soft", "bounced_reputation", "complained",
    "opened", "unique_opened", "opened_human", "unique_opened_human",
    "clicked", "unique_clicked", "clicked_human", "unique_clicked_human", "unsubscribed",
)
# Each open / click count -> the same count of people only (``machine IS NOT TRUE``).
HUMAN_OF: dict[str, str] = {k: f"{k}_human" for k in ("opened", "unique_opened", "clicked", "unique_clicked")}
LINK_COUNT_KEYS: tuple[str, ...] = ("clicked", "unique_clicked", "clicked_human", "unique_clicked_human")
# A link's URL is shown only when at least this many ledger rows (recipients) clicked the same one.
SHARED_BY_ROWS = 2
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
# MailWizz's opens and clicks are nobody's verdict: they count as people's (module docstring).
MAILWIZZ_STAT_KEYS.update({human: MAILWIZZ_STAT_KEYS[base] for base, human in HUMAN_OF.items()})
MAX_COUNT = 10**12  # a figure above this from a server is not a count


@dataclass(frozen=True)
class TemplateCounts:
    """The counts of the ledger rows that got one template (``None``: rows that got none), and the
    choice rules that picked it (``content.choice.CHOICE_RULES``)."""

    template: str | None
    counts: Mapping[str, int]
    rules: tuple[str, ...] = ()


@dataclass(frozen=True)
class LinkCounts:
    """The clicks of one link (``link_index``) of one template's messages (:data:`LINK_COUNT_KEYS`),
    and what the database knows of its URLs: ``url`` when every click that named one named the
    same, ``base`` (``scheme://host/path``, no user, query or fragment) when every one shared
    that, and ``url_rows``, how many ledger rows clicked it with a URL."""

    template: str | None
    link_index: int
    counts: Mapping[str, int]
    url: str | None = None
    base: str | None = None
    url_rows: int = 0


def shown_url(url: str | None, base: str | None, url_rows: int) -> str | None:
    """The URL a link's stats show: the whole URL when every click had the same one, else its
    ``scheme://host/path`` when that was shared, else None; and neither unless at least
    :data:`SHARED_BY_ROWS` recipients clicked it, since what one person alone clicked may be theirs
    (``?u=<id>``, ``/p/<name>``)."""
    if url_rows < SHARED_BY_ROWS:
        return None
    return url if url is not None else base


def link_stats(links: Iterable[LinkCounts]) -> dict[str, list[dict]]:
    """``by_link``: template name (:data:`NO_TEMPLATE` for none) -> its links in index order, each
    ``{"link", "url", <LINK_COUNT_KEYS>}``."""
    out: dict[str, list[dict]] = {}
    for ln in sorted(links, key=lambda ln: (ln.template or "", ln.link_index)):
        name = ln.template if ln.template is not None else NO_TEMPLATE
        out.setdefault(name, []).append({
            "link": ln.link_index, "url": shown_url(ln.url, ln.base, ln.url_rows),
            **{k: int(ln.counts.get(k, 0)) for k in LINK_COUNT_KEYS},
        })
    return dict(sorted(out.items()))


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
    links: Iterable[LinkCounts] = (),
) -> dict:
    """The stats object: counts and rates of the campaign, ``by_language``, ``by_template`` and ``by_link``.

    ``totals`` are the campaign's own counts (unmatched events included); ``templates`` the counts
    per template (rows only); ``languages`` template name -> language (the template files);
    ``mailwizz`` MailWizz's figures per template (:func:`mailwizz_counts`), merged key by key with
    the larger value; ``links`` the clicks per template and link. ``rates_over`` names what ``sent`` counts (``sent`` or ``handed_off``).
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
            for base, human in HUMAN_OF.items():  # figures stored before the _human keys existed
                if human not in figures and base in figures:
                    counts[human] = max(counts[human], int(figures[base]))
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
        "by_link": link_stats(links),
    }

