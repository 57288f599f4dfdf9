"""Which template a contact gets: the template selector of the domain.

Rules, tried in this order (:data:`CHOICE_RULES`), the first that finds a template wins:

1. ``variant``: the campaign's category, the contact's language, a template with ``tags`` all of
   which the contact has -- the one with most tags, then the first file name;
2. ``category_language``: the campaign's category and the contact's language, without tags;
3. ``category_en``: the campaign's category in the fallback language (``en``);
4. ``default_category_language``: the tenant's default category, the contact's language;
5. ``default_category_en``: the tenant's default category in the fallback language.

Rules 2 to 5 use templates without tags: a variant is only ever chosen for the contacts it names.
Several untagged templates for one (category, language): the first file name. No match: the
contact is skipped (``no_template``) by the caller, never an error.

:class:`Chooser` decides once per distinct (language, relevant tags) and caches: only the tags some
variant of that language names are part of the key, so a million contacts with scattered tags
still cost a handful of decisions.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from email_engine_assets.content.templates import Template, TemplateSet
from email_engine_assets.tenancy.languages import FALLBACK_LANGUAGE, SUPPORTED_LANGUAGES

CHOICE_RULES: tuple[str, ...] = (
    "variant",
    "category_language",
    "category_en",
    "default_category_language",
    "default_category_en",
)
CHOOSER_CACHE_MAX = 100_000


@dataclass(frozen=True)
class Choice:
    template: Template
    rule: str  # one of CHOICE_RULES


class Chooser:
    """The choice for one campaign (category) of one tenant, cached per (language, tags)."""

    def __init__(
        self,
        templates: TemplateSet,
        *,
        category: str,
        default_category: str | None,
        default_language: str = FALLBACK_LANGUAGE,
    ):
        self.category = category
        self.default_category = default_category
        self.default_language = default_language
        ordered = sorted(templates.templates.values(), key=lambda t: t.name)
        self._plain: dict[tuple[str, str], Template] = {}
        self._variants: dict[str, list[Template]] = {}
        for t in ordered:
            if t.tags:
                if t.category == category:
                    self._variants.setdefault(t.language, []).append(t)
            else:
                self._plain.setdefault((t.category, t.language), t)
        for variants in self._variants.values():
            variants.sort(key=lambda t: (-len(t.tags), t.name))
        self._variant_tags = {lang: frozenset().union(*(t.tags for t in vs)) for lang, vs in self._variants.items()}
        self._cache: dict[tuple[str | None, frozenset[str]], Choice | None] = {}

    def choose(self, language: str | None, tags: Iterable[str] = ()) -> Choice | None:
        language = language if language in SUPPORTED_LANGUAGES else None
        relevant = self._variant_tags.get(language) if language else None
        key = (language, relevant.intersection(tags) if relevant else frozenset())
        try:
            return self._cache[key]
        except KeyError:
            pass
        found = self._decide(language, key[1])
        if len(self._cache) < CHOOSER_CACHE_MAX:
            self._cache[key] = found
        return found

    def _decide(self, language: str | None, tags: frozenset[str]) -> Choice | None:
        if language:
            for t in self._variants.get(language, ()):
                if t.tags <= tags:
                    return Choice(t, "variant")
        steps = [
            ("category_language", self.category, language),
            ("category_en", self.category, self.default_language),
        ]
        if self.default_category and self.default_category != self.category:
            steps += [
                ("default_category_language", self.default_category, language),
                ("default_category_en", self.default_category, self.default_language),
            ]
        for rule, category, lang in steps:
            found = self._plain.get((category, lang)) if lang else None
            if found is not None:
                return Choice(found, rule)
        return None

    def reachable(self) -> list[Template]:
        """Every template some contact could get, in name order (for a preflight of them all)."""
        names = {t.name for vs in self._variants.values() for t in vs}
        cats = {self.category, self.default_category} - {None}
        names |= {t.name for (c, _), t in self._plain.items() if c in cats}
        everything = {t.name: t for vs in self._variants.values() for t in vs} | {t.name: t for t in self._plain.values()}
        return [everything[n] for n in sorted(names)]


def choose(
    templates: TemplateSet,
    *,
    category: str,
    language: str | None,
    tags: Sequence[str],
    default_category: str | None,
    default_language: str = FALLBACK_LANGUAGE,
) -> Choice | None:
    """The template for one contact (see the module's rules); ``None``: no template fits."""
    chooser = Chooser(templates, category=category, default_category=default_category, default_language=default_language)
    return chooser.choose(language, tags)
