"""TagSlug: the one normalisation of tag names (the seed's value object).

lower case, accents folded to ASCII, spaces and hyphens to ``_``, any other character
dropped, no repeated or edge ``_``. ``"  Salon-Été 2024 "`` -> ``"salon_ete_2024"``.
"""

from __future__ import annotations

import re
import unicodedata

import polars as pl

TAG_SEPARATORS = r"[;,|]"  # between tags in one raw cell
_SPACE_OR_HYPHEN = re.compile(r"[\s\-]+")
_NOT_SLUG = re.compile(r"[^a-z0-9_]")
_UNDERSCORES = re.compile(r"_+")
MAX_TAG_LENGTH = 64


def tag_slug(value: str) -> str:
    """Normalise one tag; returns ``""`` when nothing usable is left."""
    folded = unicodedata.normalize("NFKD", value).encode("ascii", "ignore").decode("ascii")
    slug = _SPACE_OR_HYPHEN.sub("_", folded.strip().lower())
    slug = _UNDERSCORES.sub("_", _NOT_SLUG.sub("", slug)).strip("_")
    return slug[:MAX_TAG_LENGTH].rstrip("_")


def tag_slug_expr(expr: pl.Expr) -> pl.Expr:
    """Vectorised :func:`tag_slug` on a string expression (same result, tested against it)."""
    return (
        expr.str.normalize("NFKD")
        .str.replace_all(r"[^\x00-\x7f]", "")
        .str.strip_chars()
        .str.to_lowercase()
        .str.replace_all(r"[\s\-]+", "_")
        .str.replace_all(r"[^a-z0-9_]", "")
        .str.replace_all(r"_+", "_")
        .str.strip_chars("_")
        .str.slice(0, MAX_TAG_LENGTH)
        .str.strip_chars_end("_")
    )


def split_tags_expr(column: str | pl.Expr) -> pl.Expr:
    """Split raw tags cells on ``;`` ``,`` ``|`` into distinct slugs, in order -> ``list[str]`` (never null)."""
    expr = pl.col(column) if isinstance(column, str) else column
    return (
        expr.fill_null("")
        .str.replace_all(TAG_SEPARATORS, ";")
        .str.split(";")
        .list.eval(tag_slug_expr(pl.element()))
        .list.eval(pl.element().filter(pl.element() != ""))
        .list.unique(maintain_order=True)
    )
