"""Selection conditions -> a PostgreSQL ``WHERE`` clause with the matcher's semantics.

The one SQL translation of :class:`~email_engine_assets.audiences.selection.Condition`; its meaning
is the polars matcher's (:mod:`email_engine_assets.audiences.matcher`), checked by a differential
test on random rules and contacts. Values are always bound parameters, never written into the text.

It reads two relations: ``p``, the tenant's rows of ``segment_profiles`` (fields stored folded, lists
without blank elements: tags are slugs, sources source ids), and ``c``, ``contacts``, for the fields the profile does not hold (folded
here with the SQL function ``selection_fold``, the matcher's folding). :attr:`Where.needs_contacts`
says whether ``c`` must be joined.

Null handling as in the matcher: a condition on a null field is false, except ``exists: false``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from email_engine_assets.audiences.regex_dialect import postgres_regex
from email_engine_assets.audiences.selection import (
    LIST_FIELDS,
    SOURCE_FIELD,
    Condition,
)

# Fields held by segment_profiles (already folded), the others are read from contacts.
PROFILE_FIELDS: tuple[str, ...] = (
    "email", "email_domain", "verdict", "phone", "language", "country", "category", *LIST_FIELDS,
)


@dataclass
class Where:
    """A boolean SQL expression and its bound parameters."""

    sql: str
    params: dict[str, Any] = field(default_factory=dict)
    needs_contacts: bool = False


class _Builder:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.params: dict[str, Any] = {}
        self.needs_contacts = False

    def bind(self, value: Any) -> str:
        name = f"{self.prefix}{len(self.params)}"
        self.params[name] = value
        return f":{name}"

    def column(self, name: str) -> str:
        if name in PROFILE_FIELDS:
            return f"p.{name}"
        self.needs_contacts = True
        return f"selection_fold(c.{name})"

    def condition(self, cond: Condition) -> str:
        operator, value = cond.operator
        if cond.field in LIST_FIELDS or cond.field == SOURCE_FIELD:
            elements = self.column("sources" if cond.field == SOURCE_FIELD else cond.field)
            if operator == "exists":
                test = f"cardinality({elements}) > 0"  # stored without blank elements
            elif operator in ("equals", "contains"):
                test = f"{elements} @> ARRAY[CAST({self.bind(value)} AS text)]"
            elif operator in ("in", "contains_any"):
                test = f"{elements} && CAST({self.bind(list(value))} AS text[])"
            elif operator == "contains_all":
                test = f"{elements} @> CAST({self.bind(list(value))} AS text[])"
            elif operator == "regex":
                test = f"EXISTS (SELECT 1 FROM unnest({elements}) AS s(v) WHERE s.v ~* {self.bind(postgres_regex(value))})"
            else:  # pragma: no cover - Condition validates the operator
                raise ValueError(f"operator {operator!r} does not apply to {cond.field!r}")
        else:
            text = self.column(cond.field)
            if operator == "exists":
                test = f"{text} <> ''"
            elif operator == "equals":
                test = f"{text} = {self.bind(value)}"
            elif operator == "in":
                test = f"{text} = ANY(CAST({self.bind(list(value))} AS text[]))"
            elif operator == "regex":
                test = f"{text} ~* {self.bind(postgres_regex(value))}"
            else:  # pragma: no cover
                raise ValueError(f"operator {operator!r} does not apply to {cond.field!r}")
        test = f"coalesce({test}, false)"
        return f"NOT {test}" if operator == "exists" and value is False else test


def regex_patterns(*groups: Sequence[Condition]) -> list[str]:
    """The PostgreSQL patterns the conditions' ``regex`` operators bind, in order."""
    return [postgres_regex(cond.operator[1]) for group in groups for cond in group if cond.operator[0] == "regex"]


def where_clause(
    all: Sequence[Condition] = (),  # noqa: A002 - the seed's vocabulary
    any: Sequence[Condition] = (),  # noqa: A002
    exclude: Sequence[Condition] = (),
    *,
    param_prefix: str = "sel_",
) -> Where:
    """``ALL(all) AND ANY(any) AND NOT ANY(exclude)`` over ``p`` (and ``c``); empty lists constrain nothing."""
    builder = _Builder(param_prefix)
    terms = [builder.condition(cond) for cond in all]
    if any:
        terms.append("(" + " OR ".join(builder.condition(cond) for cond in any) + ")")
    if exclude:
        terms.append("NOT (" + " OR ".join(builder.condition(cond) for cond in exclude) + ")")
    sql = " AND ".join(f"({term})" for term in terms) if terms else "true"
    return Where(sql, builder.params, builder.needs_contacts)
