"""The base of every tenant-file model: unknown keys refused, values frozen; and the slug type."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from email_engine_assets.tenancy.languages import SUPPORTED_LANGUAGES

SLUG_PATTERN = r"[a-z0-9][a-z0-9_-]*"  # matched in full: Python's ``$`` would let "acme\n" through
SLUG_MAX_CHARS = 64
_SLUG = re.compile(SLUG_PATTERN)


def is_slug(value: str, max_chars: int = SLUG_MAX_CHARS) -> bool:
    """Whether ``value`` is a slug (tenant, source, campaign, template names), whole and not too long."""
    return isinstance(value, str) and len(value) <= max_chars and _SLUG.fullmatch(value) is not None


def _check_slug(value: str) -> str:
    if not _SLUG.fullmatch(value):
        raise ValueError(f"must be a slug matching {SLUG_PATTERN} (lower case, digits, '_' or '-')")
    return value


Slug = Annotated[str, Field(max_length=SLUG_MAX_CHARS), AfterValidator(_check_slug)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_language(value: str) -> str:
    if value not in SUPPORTED_LANGUAGES:
        raise ValueError(f"expected one of {', '.join(SUPPORTED_LANGUAGES)}")
    return value


LanguageCode = Annotated[str, AfterValidator(_check_language)]
