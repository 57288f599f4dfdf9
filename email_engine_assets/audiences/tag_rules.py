"""Rule-based tags: the ``tag_rules:`` section of a tenant's YAML config.

Shape (unknown keys are errors at every level)::

    tag_rules:
      - name: french_b2b            # slug-like (a-z, 0-9, _), unique within the tenant
        tag: "B2B France"           # stored as its slug: b2b_france (an empty slug is an error)
        all:                        # every condition must hold
          - {field: country, equals: FR}
          - {field: category, in: [b2b, pro]}
        any:                        # at least one must hold, when given
          - {field: company, exists: true}
          - {field: email_domain, regex: "\\.fr$"}
        exclude:                    # none may hold
          - {field: verdict, in: [invalid]}
          - {field: tags, contains: competitor}

A rule needs at least one condition in ``all`` or ``any`` (an exclude-only rule would
tag almost everyone). A condition is ``field`` plus exactly one operator:

* ``equals: <text>`` / ``in: [<text>, ...]`` on a scalar field or ``source``: compared
  trimmed and case-insensitively (the model stores the lower-cased value). Numbers are
  read as text; YAML booleans are refused, because an unquoted ``NO`` (Norway), ``yes``
  or ``off`` is a boolean in YAML -- quote such values;
* ``regex: <pattern>`` on a scalar field or ``source``: a case-insensitive search with
  polars' regex syntax; a pattern polars cannot compile is a validation error;
* ``exists: true|false`` on any field;
* ``contains: <value>`` / ``contains_any: [...]`` / ``contains_all: [...]`` on the list
  fields ``tags``, ``flags``, ``sources``; values for ``tags`` are tag slugs (``"Salon
  Été"`` is read as ``salon_ete``), values for ``flags`` and ``sources`` are compared
  trimmed and lower-cased.

Fields: see :data:`~email_engine_assets.audiences.matcher.CONTACT_FIELDS`; the matching
semantics (including nulls: a condition on a null field is false, except ``exists:
false``) are documented in :mod:`email_engine_assets.audiences.matcher`.

Every validation error names the rule (``rule 'french_b2b': ...``) and its ``loc``
points at the offending key, e.g. ``('tag_rules', 0, 'all', 1, 'regex')``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Annotated, Any

import polars as pl
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from email_engine_assets.audiences.matcher import (
    fold_contact_fields,
    match_expr,
    with_contact_fields,
)
from email_engine_assets.audiences.selection import Condition, validate_named
from email_engine_assets.tenancy.tag_slug import tag_slug

RULE_NAME = re.compile(r"^[a-z0-9][a-z0-9_]*\Z")
RULE_KEYS: tuple[str, ...] = ("name", "tag", "all", "any", "exclude")
OUTPUT_SCHEMA = pl.Schema({"contact_id": pl.Int64, "tag": pl.String, "rule": pl.String})


class TagRule(BaseModel):
    """A tag given to every contact the conditions select (ALL and ANY and not EXCLUDE)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    tag: str
    all: list[Condition] = []
    any: list[Condition] = []
    exclude: list[Condition] = []

    @field_validator("name")
    @classmethod
    def _slug_like(cls, name: str) -> str:
        if not RULE_NAME.match(name):
            suggestion = tag_slug(name)
            hint = f", e.g. {suggestion!r}" if suggestion else ""
            raise ValueError(f"name {name!r} must be slug-like (a-z, 0-9 and _, starting with a letter or digit){hint}")
        return name

    @field_validator("tag")
    @classmethod
    def _tag_slug(cls, tag: str) -> str:
        slug = tag_slug(tag)
        if not slug:
            raise ValueError(f"tag {tag!r} has no usable characters once normalised (its slug is empty)")
        return slug

    @model_validator(mode="after")
    def _has_selection(self) -> TagRule:
        if not self.all and not self.any:
            raise ValueError("a rule needs at least one condition in 'all' or 'any'")
        return self

    @model_validator(mode="wrap")
    @classmethod
    def _name_the_rule(cls, data: Any, handler: Any) -> TagRule:
        """Prefix every error of this rule with ``rule '<name>':`` keeping its ``loc``."""
        return validate_named("rule", data, handler, RULE_KEYS)


class DuplicateRuleName(ValueError):
    """Two rules of one tenant share a name; ``position`` is the later one."""

    def __init__(self, name: str, first: int, position: int) -> None:
        super().__init__(
            f"rule {name!r}: duplicate rule name (positions {first} and {position}); "
            "rule names must be unique within a tenant"
        )
        self.position = position


def validate_rule_names(rules: Sequence[TagRule]) -> list[TagRule]:
    """Raise :class:`DuplicateRuleName` (a ``ValueError``) for a name used twice; return the rules."""
    first_seen: dict[str, int] = {}
    for position, rule in enumerate(rules):
        if rule.name in first_seen:
            raise DuplicateRuleName(rule.name, first_seen[rule.name], position)
        first_seen[rule.name] = position
    return list(rules)


def _unique_names(rules: list[TagRule]) -> list[TagRule]:
    """:func:`validate_rule_names` as a pydantic error pointing at the second rule's name."""
    try:
        return validate_rule_names(rules)
    except DuplicateRuleName as exc:
        error = PydanticCustomError("duplicate_rule_name", "{problem}", {"problem": str(exc)})
        detail = InitErrorDetails(type=error, loc=(exc.position, "name"), input=rules[exc.position].name)
        raise ValidationError.from_exception_data("tag_rules", [detail]) from None


TagRuleList = Annotated[list[TagRule], AfterValidator(_unique_names)]
"""The type of a tenant config's ``tag_rules:`` key (unique names)."""


def evaluate_tag_rules(contacts: pl.DataFrame, rules: Sequence[TagRule]) -> pl.DataFrame:
    """Tags every contact selected by each rule.

    ``contacts`` has one row per contact: ``contact_id`` (integer) and any of the field
    columns (strings; ``tags``, ``flags`` and ``sources`` are ``List(String)``). Missing
    field columns are treated as null; ``email_domain`` defaults to the domain of
    ``email``. Returns ``(contact_id Int64, tag String, rule String)``, one row per
    matching (contact, rule), in rule order then contact order. One polars filter per
    rule, run together in one lazy query.
    """
    if not isinstance(contacts, pl.DataFrame):
        raise TypeError(f"contacts must be a polars DataFrame, got {type(contacts).__name__}")
    if "contact_id" not in contacts.columns:
        raise ValueError(f"contacts has no 'contact_id' column (columns: {', '.join(contacts.columns) or 'none'})")
    if not contacts.schema["contact_id"].is_integer():
        raise ValueError(f"contacts 'contact_id' must be an integer column, got {contacts.schema['contact_id']}")
    validate_rule_names(rules)
    if not rules:
        return OUTPUT_SCHEMA.to_frame()
    prepared = fold_contact_fields(with_contact_fields(contacts.lazy()))
    prepared = prepared.with_columns(pl.col("contact_id").cast(pl.Int64))
    matches = [
        prepared.filter(match_expr(rule.all, rule.any, rule.exclude, folded=True)).select(
            "contact_id",
            pl.lit(rule.tag, dtype=pl.String).alias("tag"),
            pl.lit(rule.name, dtype=pl.String).alias("rule"),
        )
        for rule in rules
    ]
    return pl.concat(matches).collect()
