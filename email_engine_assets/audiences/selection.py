"""The selection vocabulary: contact fields, operators and a ``Condition`` -- defined once.

Tag rules and segments select contacts with conditions written in this vocabulary; the
matcher (:mod:`email_engine_assets.audiences.matcher`) turns them into polars expressions and
the segment SQL into ``WHERE`` clauses.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any

import polars as pl
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from email_engine_assets.audiences.regex_dialect import portability_error
from email_engine_assets.contacts.fields import TEXT_FIELDS
from email_engine_assets.tenancy.tag_slug import tag_slug

# Fields of the golden record, the address's domain and the verdict of its latest check.
SCALAR_FIELDS: tuple[str, ...] = ("email", "email_domain", *TEXT_FIELDS, "verdict")
LIST_FIELDS: tuple[str, ...] = ("tags", "flags", "sources")
SOURCE_FIELD = "source"
CONTACT_FIELDS: tuple[str, ...] = (*SCALAR_FIELDS, SOURCE_FIELD, *LIST_FIELDS)

SCALAR_OPERATORS: tuple[str, ...] = ("equals", "in", "regex")
LIST_OPERATORS: tuple[str, ...] = ("contains", "contains_any", "contains_all")
OPERATORS: tuple[str, ...] = (*SCALAR_OPERATORS, "exists", *LIST_OPERATORS)
_VALUE_ERROR_PREFIX = "Value error, "


def _as_text(value: Any) -> Any:
    """Read YAML scalars as text; refuse booleans (see the module docstring)."""
    if isinstance(value, bool):
        raise ValueError(
            f"got the boolean {value}; YAML reads unquoted yes/no/on/off/true/false as booleans -- quote the value"
        )
    if isinstance(value, (int, float)):
        return str(value)
    return value


Text = Annotated[str, Field(strict=True)]
NonEmptyTexts = Annotated[list[Text], Field(min_length=1)]


class Condition(BaseModel):
    """One test on a contact field; exactly one operator is set."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    field: str
    equals: Text | None = None
    in_: NonEmptyTexts | None = Field(default=None, alias="in")
    regex: Text | None = None
    exists: StrictBool | None = None
    contains: Text | None = None
    contains_any: NonEmptyTexts | None = None
    contains_all: NonEmptyTexts | None = None

    @field_validator("field")
    @classmethod
    def _known_field(cls, value: str) -> str:
        if value not in CONTACT_FIELDS:
            raise ValueError(f"unknown field {value!r}; allowed fields: {', '.join(CONTACT_FIELDS)}")
        return value

    @field_validator("equals", "contains", mode="before")
    @classmethod
    def _text(cls, value: Any) -> Any:
        return _as_text(value)

    @field_validator("in_", "contains_any", "contains_all", mode="before")
    @classmethod
    def _texts(cls, value: Any) -> Any:
        if isinstance(value, str):
            raise ValueError(f"expected a list of values, got the single value {value!r} (write [{value}])")
        return [_as_text(item) for item in value] if isinstance(value, list) else value

    @field_validator("regex")
    @classmethod
    def _compiles(cls, pattern: str) -> str:
        problem = regex_error(pattern) or portability_error(pattern)
        if problem:
            raise ValueError(f"invalid regex {pattern!r}: {problem}")
        return pattern

    @field_validator("equals", "in_", "contains", "contains_any", "contains_all")
    @classmethod
    def _normalised(cls, value: str | list[str], info: ValidationInfo) -> str | list[str]:
        """Store values the way the matcher compares them: tag slugs for ``tags``, else folded."""
        normalise = tag_slug if info.data.get("field") == "tags" else _fold
        values = [value] if isinstance(value, str) else value
        folded = [normalise(item) for item in values]
        for item, result in zip(values, folded):
            if not result:
                what = "a tag slug" if normalise is tag_slug else "text"
                raise ValueError(f"{item!r} is empty once read as {what}; use exists: false for missing values")
        return folded[0] if isinstance(value, str) else list(dict.fromkeys(folded))

    @model_validator(mode="after")
    def _one_operator_that_fits(self) -> Condition:
        given = [name for name in OPERATORS if getattr(self, _attribute(name)) is not None]
        if len(given) != 1:
            found = ", ".join(given) if given else "none"
            raise ValueError(
                f"a condition on {self.field!r} takes exactly one of {', '.join(OPERATORS)}; found {found}"
            )
        _check_fits(self.field, given[0])
        return self

    @model_validator(mode="wrap")
    @classmethod
    def _readable_errors(cls, data: Any, handler: Any) -> Condition:
        try:
            return handler(data)
        except ValidationError as exc:
            raise _rewritten(exc, allowed_keys=("field", *OPERATORS)) from None

    @property
    def operator(self) -> tuple[str, Any]:
        """``(operator name, normalised value)``, e.g. ``("in", ["b2b", "pro"])``."""
        for name in OPERATORS:
            value = getattr(self, _attribute(name))
            if value is not None:
                return name, value
        raise ValueError("condition has no operator")  # unreachable after validation


def _attribute(operator: str) -> str:
    return "in_" if operator == "in" else operator


def _check_fits(field: str, operator: str) -> None:
    if field in LIST_FIELDS and operator in SCALAR_OPERATORS:
        extra = "; use field 'source' to test each source" if field == "sources" else ""
        raise ValueError(
            f"field {field!r} is a list: use {', '.join(LIST_OPERATORS)} or exists, not {operator!r}{extra}"
        )
    if field not in LIST_FIELDS and operator in LIST_OPERATORS:
        raise ValueError(
            f"operator {operator!r} applies to the list fields {', '.join(LIST_FIELDS)}, not to {field!r}; "
            f"use {', '.join(SCALAR_OPERATORS)} or exists"
        )


def _fold(value: str) -> str:
    return value.strip().lower()


def regex_error(pattern: str) -> str | None:
    """Why polars cannot compile ``pattern`` (case-insensitive), or ``None`` if it can."""
    try:
        pl.select(pl.lit("", dtype=pl.String).str.contains("(?i)" + pattern))
    except pl.exceptions.PolarsError as exc:
        lines = [line.strip() for line in str(exc).splitlines()]
        reason = next((line.removeprefix("error:").strip() for line in lines if line.startswith("error:")), lines[0])
        return f"{reason} (polars regex syntax: no look-around, no back-references)"
    return None

def validate_named(kind: str, data: Any, handler: Any, allowed_keys: Sequence[str]) -> Any:
    """Run a model's validation (``handler``) and prefix each error with ``<kind> '<name>':``,
    keeping its ``loc``: a tag rule or a segment names itself in every problem it reports."""
    try:
        return handler(data)
    except ValidationError as exc:
        name = data.get("name") if isinstance(data, dict) else getattr(data, "name", None)
        label = repr(name) if isinstance(name, str) else "(unnamed)"
        raise _rewritten(exc, prefix=f"{kind} {label}: ", allowed_keys=allowed_keys) from None


def _rewritten(exc: ValidationError, *, prefix: str = "", allowed_keys: Sequence[str] = ()) -> ValidationError:
    """The same errors (same ``type``, ``loc`` and input) with readable messages.

    Unknown keys at this level list the allowed ones; ``prefix`` names the rule.
    """
    details = []
    for error in exc.errors():
        problem = error["msg"].removeprefix(_VALUE_ERROR_PREFIX)
        if error["type"] == "extra_forbidden" and len(error["loc"]) == 1 and allowed_keys:
            problem = f"unknown key {error['loc'][0]!r}; allowed keys: {', '.join(allowed_keys)}"
        details.append(
            InitErrorDetails(
                type=PydanticCustomError(error["type"], "{prefix}{problem}", {"prefix": prefix, "problem": problem}),
                loc=error["loc"],
                input=error["input"],
            )
        )
    return ValidationError.from_exception_data(exc.title, details)
