"""Segments: the ``segments:`` section of a tenant's YAML config.

Shape (unknown keys are errors at every level)::

    segments:
      - name: france_b2b_vip        # slug-like (a-z, 0-9, _), unique within the tenant
        all:                        # every condition must hold
          - {field: category, equals: b2b}
          - {field: country, in: [FR, BE]}
          - {field: tags, contains_all: [vip]}
        any:                        # at least one must hold, when given
          - {field: tags, contains_any: [salon_2024, webinar]}
        exclude:                    # none may hold
          - {field: tags, contains: competitor}
        verdicts: [valid, risky]    # default [valid]; 'invalid' is never mailed
        max_contacts: 5000          # optional: the first members in contact-id order

Conditions are the selection vocabulary of tag rules
(:class:`~email_engine_assets.audiences.selection.Condition`), with the matcher's semantics. A
segment without conditions holds every contact whose verdict is listed. Contacts not checked
yet have no verdict and are in no segment. Suppressed addresses are left out when the snapshot
is built (and again when a campaign claims its sends).

The seed's campaign targeting maps to it: category -> ``{field: category, equals: ...}``, tags
ALL / ANY / EXCLUDE -> ``contains_all`` in ``all``, ``contains_any`` in ``any``, ``contains_any``
in ``exclude``, countries -> ``{field: country, in: [...]}``, max contacts -> ``max_contacts``.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from email_engine_assets.audiences.selection import Condition, validate_named
from email_engine_assets.quality.verdict import VERDICTS
from email_engine_assets.tenancy.tag_slug import tag_slug

SEGMENT_NAME = re.compile(r"^[a-z0-9][a-z0-9_]*\Z")
SEGMENT_NAME_MAX_CHARS = 63
SEGMENT_KEYS: tuple[str, ...] = ("name", "all", "any", "exclude", "verdicts", "max_contacts")
# The verdicts a segment may select; 'invalid' addresses are never mailed.
SEGMENT_VERDICTS: tuple[str, ...] = tuple(verdict for verdict in VERDICTS if verdict != "invalid")
DEFAULT_VERDICTS: tuple[str, ...] = ("valid",)
MAX_CONDITIONS = 50
MAX_SEGMENTS = 200
# The time one segment's evaluation may take in PostgreSQL (a ``statement_timeout``); past it the
# segment's build fails, naming it, and its previous snapshot stays.
DEFAULT_BUILD_TIMEOUT_SECONDS = 30
MAX_BUILD_TIMEOUT_SECONDS = 300

Conditions = Annotated[list[Condition], Field(max_length=MAX_CONDITIONS)]


class Segment(BaseModel):
    """Contacts selected by ALL and ANY and not EXCLUDE, with a listed verdict, up to ``max_contacts``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    all: Conditions = []
    any: Conditions = []
    exclude: Conditions = []
    verdicts: list[str] = Field(default_factory=lambda: list(DEFAULT_VERDICTS), min_length=1)
    max_contacts: int | None = Field(default=None, ge=1, strict=True)

    @field_validator("name")
    @classmethod
    def _slug_like(cls, name: str) -> str:
        if not SEGMENT_NAME.match(name) or len(name) > SEGMENT_NAME_MAX_CHARS:
            suggestion = tag_slug(name)[:SEGMENT_NAME_MAX_CHARS]
            hint = f", e.g. {suggestion!r}" if suggestion else ""
            raise ValueError(
                f"name {name!r} must be slug-like (a-z, 0-9 and _, starting with a letter or digit, "
                f"at most {SEGMENT_NAME_MAX_CHARS} characters){hint}"
            )
        return name

    @field_validator("verdicts", mode="before")
    @classmethod
    def _known_verdicts(cls, value: Any) -> Any:
        if isinstance(value, str):
            raise ValueError(f"expected a list of verdicts, got the single value {value!r} (write [{value}])")
        if not isinstance(value, list):
            return value
        verdicts = []
        for item in value:
            folded = item.strip().lower() if isinstance(item, str) else item
            if folded == "invalid":
                raise ValueError("'invalid' addresses are never mailed; allowed verdicts: " + ", ".join(SEGMENT_VERDICTS))
            if folded not in SEGMENT_VERDICTS:
                raise ValueError(f"unknown verdict {item!r}; allowed verdicts: {', '.join(SEGMENT_VERDICTS)}")
            verdicts.append(folded)
        return sorted(set(verdicts), key=SEGMENT_VERDICTS.index)

    @model_validator(mode="wrap")
    @classmethod
    def _name_the_segment(cls, data: Any, handler: Any) -> Segment:
        """Prefix every error of this segment with ``segment '<name>':`` keeping its ``loc``."""
        return validate_named("segment", data, handler, SEGMENT_KEYS)

    def definition(self) -> dict[str, Any]:
        """The normalised definition, as stored with the snapshot (values folded, defaults filled)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)

    @property
    def definition_hash(self) -> str:
        """SHA-256 of the normalised definition: equal definitions (however written) hash alike."""
        return definition_hash(self.definition())


def definition_hash(definition: dict[str, Any]) -> str:
    text = json.dumps(definition, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()


def segments_digest(segments: Sequence[Segment]) -> str:
    """One digest of a tenant's segment definitions (names and definition hashes)."""
    return definition_hash({segment.name: segment.definition_hash for segment in segments})


def _unique_names(segments: list[Segment]) -> list[Segment]:
    first_seen: dict[str, int] = {}
    for position, segment in enumerate(segments):
        if segment.name in first_seen:
            error = PydanticCustomError(
                "duplicate_segment_name",
                "{problem}",
                {"problem": f"segment {segment.name!r}: duplicate segment name (positions {first_seen[segment.name]} "
                            f"and {position}); segment names must be unique within a tenant"},
            )
            detail = InitErrorDetails(type=error, loc=(position, "name"), input=segment.name)
            raise ValidationError.from_exception_data("segments", [detail])
        first_seen[segment.name] = position
    return segments


class SegmentBuildSettings(BaseModel):
    """``segment_build:`` of a tenant file: ``timeout_seconds``, the longest one segment's evaluation may run."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    timeout_seconds: float = Field(
        default=DEFAULT_BUILD_TIMEOUT_SECONDS, gt=0, le=MAX_BUILD_TIMEOUT_SECONDS,
        description="a segment whose evaluation runs longer fails its build (its previous snapshot stays)",
    )


SegmentList = Annotated[list[Segment], Field(max_length=MAX_SEGMENTS), AfterValidator(_unique_names)]
"""The type of a tenant config's ``segments:`` key (unique names)."""
