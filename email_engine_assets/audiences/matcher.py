"""The one matcher over contact fields: conditions -> a polars boolean expression.

Tag rules and segments both select contacts with the seed's ALL / ANY / EXCLUDE
semantics (``TagMatcher``, ``find_by_tags``):

* ALL: every condition holds (an empty list holds for everyone);
* ANY: at least one condition holds (an empty list holds for everyone);
* EXCLUDE: no condition holds (an empty list excludes nobody).

A condition (:class:`~email_engine_assets.audiences.tag_rules.Condition`) is a contact field
and exactly one operator. Its expression runs on a frame prepared by
:func:`with_contact_fields`, which gives every field a column of the expected type:

* every operator sees values folded: trimmed and lower-cased (list elements too);
* scalar fields (:data:`SCALAR_FIELDS`) are ``String``; ``equals`` / ``in`` compare the
  folded value; ``regex`` searches (``re.search``, not a full match) the folded value,
  case-insensitively, with polars' regex syntax (Rust ``regex``: no look-around, no
  back-references);
* list fields (:data:`LIST_FIELDS`: ``tags``, ``flags``, ``sources``) are
  ``List(String)``; ``contains`` / ``contains_any`` / ``contains_all`` compare folded
  elements. The ``tags`` column holds tag slugs, as stored;
* ``source`` is the ``sources`` list seen as one value: ``equals`` / ``in`` / ``regex``
  hold when any of the contact's sources satisfies them;
* ``exists: true`` holds for a non-blank string or a list with a non-blank element.

For many conditions over one frame, fold it once with :func:`fold_contact_fields` and
build the expressions with ``folded=True`` (what :func:`evaluate_tag_rules
<email_engine_assets.audiences.tag_rules.evaluate_tag_rules>` does).

Null handling: a condition on a null (or missing) field is false, except ``exists:
false``, which is true. So EXCLUDE never drops a contact for a value it lacks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, TypeVar

import polars as pl

from email_engine_assets.audiences.selection import (
    LIST_FIELDS,
    SCALAR_FIELDS,
    SOURCE_FIELD,
)
from email_engine_resources.email_domain import email_domain_expr

if TYPE_CHECKING:
    from email_engine_assets.audiences.selection import Condition


_CASE_INSENSITIVE = "(?i)"
_UNNESTABLE = (pl.List, pl.Array, pl.Struct, pl.Object)

Frame = TypeVar("Frame", pl.DataFrame, pl.LazyFrame)


# --- frame preparation -------------------------------------------------------------


def with_contact_fields(contacts: Frame) -> Frame:
    """Return ``contacts`` with one column per field, typed as the matcher expects.

    Missing scalar columns become null ``String``, missing list columns null
    ``List(String)``; other columns are kept. When absent, ``email_domain`` is taken
    from ``email`` (the part after the last ``@``) and ``sources`` from a ``source``
    string column. Raises ``ValueError`` naming the column when one cannot be used.
    """
    schema = contacts.collect_schema()
    derived: list[pl.Expr] = []
    if "email_domain" not in schema and "email" in schema:
        derived.append(email_domain_expr(_as_string("email", schema["email"])).alias("email_domain"))
    if "sources" not in schema and SOURCE_FIELD in schema:
        source = _as_string(SOURCE_FIELD, schema[SOURCE_FIELD])
        derived.append(pl.when(source.is_null()).then(None).otherwise(pl.concat_list(source)).alias("sources"))
    present = {expr.meta.output_name() for expr in derived}
    columns = [
        *(_scalar_column(name, schema) for name in SCALAR_FIELDS if name not in present),
        *(_list_column(name, schema) for name in LIST_FIELDS if name not in present),
    ]
    return contacts.with_columns(*derived).with_columns(columns)


def _as_string(name: str, dtype: pl.DataType) -> pl.Expr:
    if isinstance(dtype, _UNNESTABLE):
        raise ValueError(f"contact column {name!r} must hold text, got {dtype}")
    return pl.col(name).cast(pl.String)


def _scalar_column(name: str, schema: pl.Schema) -> pl.Expr:
    if name not in schema:
        return pl.lit(None, dtype=pl.String).alias(name)
    return _as_string(name, schema[name])


def _list_column(name: str, schema: pl.Schema) -> pl.Expr:
    if name not in schema:
        return pl.lit(None, dtype=pl.List(pl.String)).alias(name)
    dtype = schema[name]
    if dtype == pl.Null or (isinstance(dtype, (pl.List, pl.Array)) and not isinstance(dtype.inner, _UNNESTABLE)):
        return pl.col(name).cast(pl.List(pl.String))
    hint = " (split raw cells with tag_slug.split_tags_expr)" if dtype == pl.String else ""
    raise ValueError(f"contact column {name!r} must be a list of strings, got {dtype}{hint}")


# --- conditions ----------------------------------------------------------------------


def fold_contact_fields(contacts: Frame) -> Frame:
    """Field columns (of :func:`with_contact_fields`) trimmed and lower-cased, list elements too.

    Folding each column once is much cheaper than folding it in every condition; build
    the expressions with ``folded=True`` for a frame that went through this function.
    """
    return contacts.with_columns(
        *(_fold(pl.col(name)) for name in SCALAR_FIELDS),
        *(pl.col(name).list.eval(_fold(pl.element())) for name in LIST_FIELDS),
    )


def condition_expr(cond: Condition, *, folded: bool = False) -> pl.Expr:
    """Boolean, never-null expression for one condition (see the module docstring).

    ``folded=True`` reads the columns as already folded by :func:`fold_contact_fields`.
    """
    operator, value = cond.operator
    if cond.field in LIST_FIELDS or cond.field == SOURCE_FIELD:
        elements = _elements("sources" if cond.field == SOURCE_FIELD else cond.field, folded)
        if operator == "exists":
            test = elements.list.eval(_non_blank(pl.element())).list.any()
        elif cond.field == SOURCE_FIELD:
            test = elements.list.eval(_scalar_test(pl.element(), operator, value).fill_null(False)).list.any()
        else:
            test = _list_test(elements, operator, value)
    else:
        text = pl.col(cond.field) if folded else _fold(pl.col(cond.field))
        test = _non_blank(text) if operator == "exists" else _scalar_test(text, operator, value)
    test = test.fill_null(False)
    return ~test if operator == "exists" and value is False else test


def _fold(text: pl.Expr) -> pl.Expr:
    return text.str.strip_chars().str.to_lowercase()


def _elements(column: str, folded: bool) -> pl.Expr:
    return pl.col(column) if folded else pl.col(column).list.eval(_fold(pl.element()))


def _non_blank(folded_text: pl.Expr) -> pl.Expr:
    return (folded_text.str.len_chars() > 0).fill_null(False)


def _scalar_test(folded_text: pl.Expr, operator: str, value: object) -> pl.Expr:
    if operator == "equals":
        return folded_text == value
    if operator == "in":
        return folded_text.is_in(list(value))  # type: ignore[call-overload]
    if operator == "regex":
        return folded_text.str.contains(_CASE_INSENSITIVE + str(value))
    raise ValueError(f"operator {operator!r} does not apply to a single value")


def _list_test(folded_elements: pl.Expr, operator: str, value: object) -> pl.Expr:
    """``list.eval`` comparisons: faster than ``list.contains`` in polars 2.1."""
    if operator == "contains":
        return _has(folded_elements, str(value))
    if operator == "contains_any":
        return folded_elements.list.eval(pl.element().is_in(list(value))).list.any()  # type: ignore[call-overload]
    if operator == "contains_all":
        return pl.all_horizontal(_has(folded_elements, item) for item in value)  # type: ignore[attr-defined]
    raise ValueError(f"operator {operator!r} does not apply to a list")


def _has(folded_elements: pl.Expr, item: str) -> pl.Expr:
    return folded_elements.list.eval((pl.element() == item).fill_null(False)).list.any()


# --- ALL / ANY / EXCLUDE ---------------------------------------------------------------


def match_expr(
    all: Sequence[Condition] = (),  # noqa: A002 - the seed's vocabulary
    any: Sequence[Condition] = (),  # noqa: A002
    exclude: Sequence[Condition] = (),
    *,
    folded: bool = False,
) -> pl.Expr:
    """``ALL(all) and ANY(any) and not ANY(exclude)``; empty lists constrain nothing."""
    return _combine(
        [condition_expr(cond, folded=folded) for cond in all],
        [condition_expr(cond, folded=folded) for cond in any],
        [condition_expr(cond, folded=folded) for cond in exclude],
    )


def _combine(required: list[pl.Expr], alternatives: list[pl.Expr], excluded: list[pl.Expr]) -> pl.Expr:
    terms = []
    if required:
        terms.append(pl.all_horizontal(required))
    if alternatives:
        terms.append(pl.any_horizontal(alternatives))
    if excluded:
        terms.append(~pl.any_horizontal(excluded))
    if not terms:
        return pl.repeat(True, pl.len())  # one value per row, also in a bare select
    return pl.all_horizontal(terms)
