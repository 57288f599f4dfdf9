"""A campaign's composer for a list transport (MailWizz): each contact still gets its template chosen
by the composer, and each template is given to MailWizz once, in its tag mode.

:class:`ListContents` wraps a template composer (``email_engine_assets.content.composer``) that
does not offer ``list_content`` itself. Its ``preflight`` adds the templates MailWizz cannot carry
(a loop, a filter, a missing unsubscribe link: file, line and construct), so the
``preflight_renders`` check blocks such a send before any row is claimed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from email_engine_assets.campaigns.parts import (
    Composed,
    Composer,
    ListContent,
    Problem,
    Skipped,
)


class ListContentMissing(LookupError):
    """No tag-mode content for a template (a composer without templates, or a template preflight refused)."""


class ListContents:
    """``composer`` plus the MailWizz content of every template its campaign could choose."""

    def __init__(self, composer: Composer):
        for needed in ("templates", "tenant", "campaign", "category"):
            if not hasattr(composer, needed):
                raise ListContentMissing(
                    f"the composer {type(composer).__name__} gives no templates for a list transport (it lacks {needed!r})"
                )
        from email_engine_assets.content.mailwizz_tags import mailwizz_contents  # noqa: PLC0415 (the other domain, reached at run time)

        self.composer = composer
        self.contents, self.problems = mailwizz_contents(
            composer.templates, tenant=composer.tenant, campaign=composer.campaign, category=composer.category,
            renderer=getattr(composer, "renderer", None),
        )

    def compose(self, contact: Mapping[str, Any], *, contact_id: int, row_token: str) -> Composed | Skipped:
        return self.composer.compose(contact, contact_id=contact_id, row_token=row_token)

    def preflight(self, samples: Sequence[Mapping[str, Any]]) -> list[Problem]:
        found = list(self.composer.preflight(samples))
        seen = {(p.file, p.line, p.message) for p in found}
        return found + [p for p in self.problems if (p.file, p.line, p.message) not in seen]

    def list_content(self, template: str) -> ListContent:
        content = self.contents.get(template)
        if content is None:
            why = next((str(p) for p in self.problems if p.file.endswith(f"/{template}.yaml") or p.file.endswith(f"/{template}.yml")), "")
            raise ListContentMissing(f"template {template!r} has no MailWizz content" + (f": {why}" if why else ""))
        return ListContent(content.subject, content.html, content.text, dict(content.custom_fields))


def for_list_transport(composer: Composer) -> Composer:
    """``composer`` itself when it already gives list content, else wrapped in :class:`ListContents`."""
    return composer if hasattr(composer, "list_content") else ListContents(composer)
