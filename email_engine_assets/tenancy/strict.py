"""The base of every tenant-file model: unknown keys refused, values frozen; and the slug type."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

SLUG_PATTERN = r"^[a-z0-9][a-z0-9_-]*$"
_SLUG = re.compile(SLUG_PATTERN)


def _check_slug(value: str) -> str:
    if not _SLUG.match(value):
        raise ValueError(f"must be a slug matching {SLUG_PATTERN} (lower case, digits, '_' or '-')")
    return value


Slug = Annotated[str, Field(max_length=64), AfterValidator(_check_slug)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
