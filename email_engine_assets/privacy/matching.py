"""Whether a raw text names one person: by the email key of its parsed values, never by substring.

A text is parsed in the form it was stored in: a CSV record with its file's delimiter (the csv
module), a JSON document (decoded, so ``ann\\u0040example.com`` is ``ann@example.com``) or NDJSON
lines, or free text (an SMTP reply, a URL). Each value is cut into tokens at characters that
cannot stand unquoted in an address (space, ``,;<>()[]{}"``); a token is the person when its
email key (:func:`quality.syntax.check_address`, the one key function) is the person's key. A token
that is no address itself (``https://x/r?u=ann@example.com``, ``mailto:ann@...``, a form body
``email=ann%40example.com&...``, a value with junk around it: ``ann@example.com@@``) is cut
further at ``: / ? & = #`` after percent-decoding, and the address-shaped pieces of it (a local
part that starts where no address character precedes it, a quote ``'`` around it dropped) are
compared. So ``joann@example.com`` never matches ``ann@example.com``, and neither do
``jo=ann@example.com`` nor ``o'ann@example.com`` (valid addresses of their own).

A text that does not parse in its form (a raw line cut at 1,000 characters, a broken record) is
read as free text with its JSON escapes decoded. Only tokens whose local part is the person's
reach the key function, so a long text costs a split and a few comparisons.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import re
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from email_engine_assets.quality.syntax import check_address
from email_engine_resources.email_domain import split_address

REDACTED = "[erased]"
KINDS = ("csv", "json", "ndjson", "text")

_STRICT = re.compile(r"[^\s,;<>()\[\]{}\"]+")
_LOOSE = re.compile(r"[^:/?&=#]+")
_LOCAL_CHAR = r"\w!#$%&'*+/=?^`{|}~.\-"
_SHAPE = re.compile(rf"(?<![{_LOCAL_CHAR}])[{_LOCAL_CHAR}]+@[\w\-]+(?:\.[\w\-]+)*")
_ESCAPE = re.compile(r"\\u([0-9a-fA-F]{4})|\\(.)")
_SIMPLE_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f"}


@dataclass(frozen=True)
class Person:
    """One address key: ``key`` (as :func:`check_address` makes it) and its local part."""

    key: str
    local: str

    @property
    def probes(self) -> tuple[str, str]:
        """Lowercase pieces that every literal writing of the address holds, for SQL to pre-filter
        with: the longest run of letters and digits of the local part, and of the domain when the
        domain is plain ASCII (an IDN may be written in Unicode); ``""`` when there is none. A text
        that holds a JSON escape (``\\u``, which may hide any character) is a candidate too. Python
        then decides (:func:`holds`)."""
        domain = split_address(self.key)[1] or ""
        plain = domain.isascii() and "xn--" not in domain
        return _longest_run(self.local), (_longest_run(domain) if plain else "")


def _longest_run(text: str) -> str:
    runs = re.findall(r"[^\W_]+", text)
    return max(runs, key=len) if runs else ""


def person_of(key: str) -> Person:
    """The person of an address key (already made by the key function)."""
    return Person(key=key, local=split_address(key)[0])


@functools.lru_cache(maxsize=4096)
def _key_of(token: str) -> str | None:
    return check_address(token).email_key


def _is(person: Person, token: str) -> bool:
    token = token.strip(".")
    local, domain = split_address(token)
    if domain is None or unicodedata.normalize("NFC", local).lower() != person.local:
        return False
    if token.lower() == person.key:
        return True
    return _key_of(unicodedata.normalize("NFC", token)) == person.key


def _spans(person: Person, text: str) -> Iterator[tuple[int, int]]:
    """(start, end) of each part of ``text`` that is the person."""
    for m in _STRICT.finditer(text):
        token = m.group()
        if "@" not in token and "%" not in token:
            continue
        if _is(person, token):
            core = token.strip(".")
            start = m.start() + token.index(core)
            yield start, start + len(core)
            continue
        decoded = unquote(token) if "%" in token else token
        if decoded != token and _is(person, decoded):
            yield m.span()
            continue
        # Not the address as a whole: the address-shaped pieces of a URL, a form body, a value
        # with junk around it (``ann@example.com@@``), unless the token is an address of its own.
        pieces = []
        for part in _LOOSE.finditer(decoded):
            for a in _SHAPE.finditer(part.group()):
                piece = a.group()
                core = piece.lstrip("'")
                if _is(person, core):
                    start = part.start() + a.start() + len(piece) - len(core)
                    pieces.append((start, part.start() + a.end()))
        if not pieces or _key_of(unicodedata.normalize("NFC", token.strip("."))) is not None:
            continue
        if decoded != token:
            yield m.span()  # percent-encoded: the whole token goes
            continue
        for start, end in pieces:
            yield m.start() + start, m.start() + end


def _in_text(person: Person, text: str) -> bool:
    local = person.probes[0]
    if local and local not in text.lower() and "%" not in text:
        return False
    return next(_spans(person, text), None) is not None


def unescaped(text: str) -> str:
    """``text`` with JSON escapes decoded (``\\u0040`` -> ``@``, ``\\/`` -> ``/``), for texts that
    are not whole JSON documents (a raw line cut short, one line of a pretty-printed array)."""
    if "\\" not in text:
        return text

    def one(m: re.Match) -> str:
        if m.group(1):
            return chr(int(m.group(1), 16))
        return _SIMPLE_ESCAPES.get(m.group(2), m.group(2))

    return _ESCAPE.sub(one, text)


def _values(item: Any) -> Iterator[str]:
    if isinstance(item, str):
        yield item
    elif isinstance(item, dict):
        for k, v in item.items():
            yield k
            yield from _values(v)
    elif isinstance(item, list):
        for v in item:
            yield from _values(v)


def _json_holds(person: Person, item: Any) -> bool:
    return any(_in_text(person, value) for value in _values(item))


def _loads(text: str) -> tuple[bool, Any]:
    try:
        return True, json.loads(text.removeprefix("\ufeff"))
    except (ValueError, RecursionError):
        return False, None


def _csv_fields(text: str, delimiter: str) -> list[str] | None:
    try:
        rows = list(csv.reader(io.StringIO(text), delimiter=delimiter or ",", quotechar='"', strict=True))
    except csv.Error:
        return None
    return [field for row in rows for field in row]


def holds(person: Person, text: str | None, kind: str = "text", delimiter: str | None = None) -> bool:
    """Whether ``text`` (a record in form ``kind``: ``csv`` with ``delimiter``, ``json``,
    ``ndjson``, or free ``text``) holds a value whose email key is the person's."""
    if not text:
        return False
    if kind == "csv":
        fields = _csv_fields(text, delimiter or ",")
        if fields is not None:
            return any(_in_text(person, f) for f in fields)
    elif kind in ("json", "ndjson"):
        parsed, item = _loads(text)
        if parsed:
            return _json_holds(person, item)
        lines = text.splitlines()
        if len(lines) > 1:
            return any(holds(person, line, "json") for line in lines)
    return _in_text(person, unescaped(text))


def redact(person: Person, text: str | None) -> str | None:
    """Free ``text`` with each writing of the person replaced by :data:`REDACTED` (someone else's
    address, ``joann@...``, is left as it is)."""
    if not text:
        return text
    source = unescaped(text) if "\\" in text else text
    spans = list(_spans(person, source))
    if not spans:
        return text
    out, last = [], 0
    for start, end in spans:
        out.append(source[last:start])
        out.append(REDACTED)
        last = end
    out.append(source[last:])
    return "".join(out)


def record_lines(person: Person, lines: Iterable[str], kind: str, delimiter: str | None = None) -> list[int]:
    """The 1-based lines of a whole file (its ``lines``, read as text with their ends) that hold
    the person: the first line of each CSV record, each NDJSON line, each line of a JSON document
    (escapes decoded) holding it. A CSV file that stops parsing is read line by line from there."""
    hits: list[int] = []
    number = 0
    if kind == "csv":
        physical = _counted(lines)
        reader = csv.reader(physical, delimiter=delimiter or ",", quotechar='"')
        try:
            for row in reader:
                if any(_in_text(person, field) for field in row):
                    hits.append(physical.first)
        except csv.Error:
            pass  # a broken record: the rest is read as plain lines
        number = physical.count
        lines = physical.rest
    line_kind = "ndjson" if kind in ("json", "ndjson") else "text"
    for line in lines:
        number += 1
        if holds(person, line.rstrip("\r\n"), line_kind):
            hits.append(number)
    return hits


class _counted:
    """Lines given one by one to the csv reader, counting them: ``first`` is the first line of the
    record being read (the csv module's ``line_num`` is its last)."""

    def __init__(self, lines: Iterable[str]):
        self.rest = iter(lines)
        self.count = 0
        self.first = 1
        self._between = True

    def __iter__(self):
        return self

    def __next__(self) -> str:
        line = next(self.rest)
        self.count += 1
        if self._between:
            self.first = self.count
        # a record ends with its line unless a quoted field is still open
        self._between = line.count('"') % 2 == 0 if self._between else line.count('"') % 2 == 1
        return line


def without_person(person: Person, data: bytes) -> tuple[bytes | None, int]:
    """A contacts file the engine wrote from a push (a JSON object, a JSON array of objects, or
    NDJSON), without the person's records: ``(new bytes, records dropped)``; new bytes None when
    nothing else is left (the file goes). NDJSON lines of the person become blank lines (the
    importer skips them), so the other records keep their line numbers; a JSON array loses the
    person's items. ``(data, 0)`` when the person is not in it."""
    text = data.removeprefix(b"\xef\xbb\xbf").decode("utf-8", errors="replace")
    parsed, whole = _loads(text)
    if parsed and isinstance(whole, list):
        kept = [item for item in whole if not _json_holds(person, item)]
        dropped = len(whole) - len(kept)
        if not dropped:
            return data, 0
        return (json.dumps(kept, ensure_ascii=False).encode("utf-8") if kept else None), dropped
    if parsed:
        return (None, 1) if _json_holds(person, whole) else (data, 0)
    lines = text.split("\n")
    out, dropped = [], 0
    for line in lines:
        if line.strip() and holds(person, line, "ndjson"):
            out.append("")
            dropped += 1
        else:
            out.append(line)
    if not dropped:
        return data, 0
    if not any(line.strip() for line in out):
        return None, dropped
    return "\n".join(out).encode("utf-8"), dropped
