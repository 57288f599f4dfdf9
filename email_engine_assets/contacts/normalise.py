"""Normalise a chunk of raw rows into staged contact rows and rejected rows.

Pure polars: trim, Unicode NFC, empty -> null; the email key comes from the one syntax rule
(:mod:`.email_syntax`); tags are split and slugged (:mod:`.tag_slug`); language and country stay raw
for enrichment. Field sizes, encodings and ragged rows were already handled by the reader.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import polars as pl

from email_engine_assets.contacts.fields import TEXT_FIELDS
from email_engine_assets.quality.syntax import check_addresses
from email_engine_assets.tenancy.tag_slug import split_tags_expr

STAGED_COLUMNS = ("line_no", "email", "email_raw", *TEXT_FIELDS, "tags")
REJECT_COLUMNS = ("line_no", "raw_text", "reason")
MAX_RAW_TEXT = 1000

REASON_NO_ADDRESS = "no email address"
REASON_BAD_ADDRESS = "invalid email address"
# The address was erased (`contact forget`): the row is kept without its raw text (contacts.store.finish_file).
REASON_ERASED = "erased"


@dataclass(frozen=True)
class NormalisedChunk:
    accepted: pl.DataFrame  # STAGED_COLUMNS
    rejects: pl.DataFrame  # REJECT_COLUMNS


class FirstRows:
    """The email keys of a file staged so far, to flag its repeats chunk by chunk as they are staged.

    The first row of an address in the file is kept, later ones are duplicates: chunks come in the
    file's record order, so a row repeats an address when an earlier chunk had it or an earlier row
    of its own chunk did. ``duplicates`` counts the rows flagged.
    """

    def __init__(self) -> None:
        self.seen = pl.Series("email", [], dtype=pl.String)
        self._hashes = pl.Series("hash", [], dtype=pl.UInt64)
        self.duplicates = 0
        self._last_line: int | None = None

    def flag(self, accepted: pl.DataFrame) -> pl.DataFrame:
        """``accepted`` with ``is_duplicate``; its rows must follow the rows flagged before, in line order."""
        if accepted.height == 0:
            return accepted.with_columns(is_duplicate=pl.lit(False))
        lines = accepted["line_no"]
        if not lines.is_sorted() or (self._last_line is not None and lines[0] <= self._last_line):
            raise ValueError("rows must be flagged in line order")
        self._last_line = lines[-1]
        email = accepted["email"]
        hashes = email.hash(seed=0)
        # The addresses seen before whose hash a row of the chunk has: a hash set of the chunk is
        # probed with integers; only these few candidates are then compared as text.
        candidates = self.seen.filter(self._hashes.is_in(hashes.implode()))
        first = email.is_first_distinct() & ~email.is_in(candidates.implode())
        self.seen = pl.concat([self.seen, email.filter(first)], rechunk=False)
        self._hashes = pl.concat([self._hashes, hashes.filter(first)], rechunk=False)
        if self.seen.n_chunks() > 64:  # many short chunks (a wide file): keep the probes over few arrays
            self.seen, self._hashes = self.seen.rechunk(), self._hashes.rechunk()
        self.duplicates += accepted.height - int(first.sum())
        return accepted.with_columns(is_duplicate=~first)


def clean_text(expr: pl.Expr) -> pl.Expr:
    """NFC, trim, and turn empty strings into nulls.

    ASCII text (as many bytes as characters) is already NFC and skips the normalisation, the most
    expensive step of a chunk; each expression refers to its input once (an eager ``select`` does
    not share repeated sub-expressions).
    """
    text = expr.cast(pl.String)
    nfc = pl.when(text.str.len_bytes() == text.str.len_chars()).then(text).otherwise(text.str.normalize("NFC"))
    return nfc.str.strip_chars().replace("", None)


def row_tags(cells: pl.Series | None, height: int, source_tags: Sequence[str]) -> pl.Series:
    """Each row's tag slugs (its cell's, then the source's, each once) -> ``list[str]``.

    A file holds few distinct tags cells: each is split once and joined back to its rows (list
    operations row by row cost seconds per million rows).
    """
    cells = pl.Series("cell", [None] * height if cells is None else cells, dtype=pl.String)
    tags = split_tags_expr(pl.col("cell"))
    if source_tags:
        tags = pl.concat_list(tags, pl.lit(list(source_tags), pl.List(pl.String))).list.unique(maintain_order=True)
    distinct = cells.unique().to_frame().with_columns(tags=tags)
    return cells.to_frame().join(distinct, on="cell", how="left", maintain_order="left", nulls_equal=True)["tags"]


def normalise_chunk(
    frame: pl.DataFrame,
    mapping: Mapping[str, str],
    *,
    source_tags: Sequence[str] = (),
    default_category: str | None = None,
) -> NormalisedChunk:
    """``frame`` has ``__line``, ``__raw`` and the file's columns; ``mapping`` is {field: header}."""
    fields = [
        (clean_text(pl.col(mapping[f])) if f in mapping else pl.lit(None, pl.String)).alias(f)
        for f in TEXT_FIELDS
    ]
    rows = frame.select(
        pl.col("__line").alias("line_no"),
        pl.col("__raw").str.slice(0, MAX_RAW_TEXT).alias("raw_text"),
        clean_text(pl.col(mapping["email"])).alias("email_raw"),
        *fields,
    ).with_columns(tags=row_tags(frame[mapping["tags"]] if "tags" in mapping else None, frame.height, source_tags))
    if default_category:
        rows = rows.with_columns(pl.col("category").fill_null(default_category))
    syntax = check_addresses(rows["email_raw"])
    rows = rows.with_columns(email=syntax["email_key"], syntax_error=syntax["syntax_error"])

    ok = pl.col("email").is_not_null()
    accepted = rows.filter(ok).select(STAGED_COLUMNS)
    rejects = rows.filter(~ok).select(
        "line_no",
        "raw_text",
        pl.when(pl.col("email_raw").is_null())
        .then(pl.lit(REASON_NO_ADDRESS))
        .otherwise(pl.lit(REASON_BAD_ADDRESS + ": ") + pl.col("syntax_error").fill_null("rejected"))
        .alias("reason"),
    )
    return NormalisedChunk(accepted=accepted, rejects=rejects)
