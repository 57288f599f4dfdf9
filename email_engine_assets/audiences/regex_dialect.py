"""The regex subset that polars (Rust ``regex``) and PostgreSQL (ARE, ``~*``) read the same way.

A selection ``regex`` is evaluated by polars (tag rules, the differential test) and by
PostgreSQL (segments). The two dialects differ: ``\\b`` is a word boundary in Rust and a
backspace in PostgreSQL; ``\\d``, ``\\w``, ``\\s`` are Unicode-aware in Rust and locale-dependent
in PostgreSQL; ``.`` matches a newline in PostgreSQL but not in Rust; Rust has nested classes,
class set operations (``&&``, ``--``, ``~~``), named groups, inline flags and ``\\p{..}``;
PostgreSQL bounds repetition counts at 255. So a pattern is accepted only when it uses:

* literal characters, and ``\\`` before an ASCII punctuation character (a literal), ``\\n``, ``\\t``;
* ``.`` (any character but a newline: written ``[^\\n]`` for PostgreSQL), ``^``, ``$``, ``|``;
* groups ``( )`` and ``(?: )``;
* quantifiers ``*``, ``+``, ``?``, ``{n}``, ``{n,}``, ``{n,m}`` (n, m <= 255), each optionally lazy,
  after a character, class or group (PostgreSQL refuses ``^+`` or ``(*``, Rust reads them);
* bracket classes ``[...]`` / ``[^...]`` of characters, ranges and the escapes above.

Anything else is refused with the reason and a portable alternative (``[0-9]`` for ``\\d``).

A pattern that can take PostgreSQL minutes to compile is refused too: nested unbounded repetition,
a group repeated more than once (``*``, ``+``, ``{n,}``, ``{n}`` or ``{n,m}`` with a count over 1)
around a part that repeats without bound (``(a+)+``, ``(.*)*``, ``(.*.*){200}``); the product of
nested counts is capped. What this check cannot see is stopped by the segment build's time limit.
"""

from __future__ import annotations

REGEX_MAX_CHARS = 500
MAX_REPEAT = 255  # PostgreSQL's RE_DUP_MAX
# Nested counts multiply (``(a{1,50}){1,50}``): PostgreSQL refuses such a pattern as "too complex"
# when the segment runs, so the product of nested counts is capped when the file is read.
MAX_NESTED_REPEAT = 1000

_HINTS = {
    "d": "write [0-9]",
    "D": "write [^0-9]",
    "w": "write [a-z0-9_]",
    "W": "write [^a-z0-9_]",
    "s": "write [ \\t\\n] or a space",
    "S": "write [^ \\t\\n]",
    "b": "word boundaries differ between the dialects; anchor with ^, $ or a class such as [^a-z0-9_]",
    "B": "word boundaries differ between the dialects",
    "A": "write ^",
    "z": "write $",
    "p": "Unicode classes are not portable; list the characters in a class",
    "P": "Unicode classes are not portable; list the characters in a class",
}
_ESCAPES = {"n": "\\n", "t": "\\t"}


class NotPortable(ValueError):
    """A pattern outside the portable subset; the message says where and why."""


def postgres_regex(pattern: str) -> str:
    """``pattern`` written for PostgreSQL's ``~*`` with the meaning polars gives it (case-insensitive).

    Raises :class:`NotPortable` for a pattern outside the subset of the module docstring.
    """
    return _Translator(pattern).run()


def portability_error(pattern: str) -> str | None:
    """Why ``pattern`` is outside the portable subset, or ``None``."""
    try:
        postgres_regex(pattern)
    except NotPortable as exc:
        return str(exc)
    return None


class _Translator:
    def __init__(self, pattern: str) -> None:
        if len(pattern) > REGEX_MAX_CHARS:
            raise NotPortable(f"pattern has {len(pattern)} characters; at most {REGEX_MAX_CHARS}")
        self.p = pattern
        self.i = 0
        self.out: list[str] = []

    def fail(self, what: str, at: int | None = None) -> NotPortable:
        return NotPortable(f"{what} at position {self.i if at is None else at}")

    def run(self) -> str:
        depth = 0
        # Largest product of counts inside each open group; that of the group just closed.
        counts: list[int] = [1]
        closed = 1
        # Whether each open group holds a part repeated without bound; that of the group just closed,
        # and where each open group / the group just closed started.
        unbounded: list[bool] = [False]
        closed_unbounded = False
        starts: list[int] = [0]
        closed_start = 0
        # What a quantifier may follow: an atom (quantifiable), or a quantifier (only '?' for lazy).
        quantifiable = lazy_ok = False
        while self.i < len(self.p):
            c = self.p[self.i]
            if c in "*+?{":
                if c == "?" and lazy_ok:
                    self.out.append("?")
                    self.i += 1
                    lazy_ok = False
                    continue
                if not quantifiable:
                    raise self.fail(f"quantifier {c!r} must follow a character, class or group (write \\{c} for the character)")
                at = self.i
                after_group = self.out[-1:] == [")"]
                if c == "{":
                    bound, endless = self._counted_repeat()
                    product = bound * (closed if after_group else 1)
                    if product > MAX_NESTED_REPEAT:
                        raise self.fail(f"nested repetition counts multiply to {product}; at most {MAX_NESTED_REPEAT} are portable")
                    counts[-1] = max(counts[-1], product)
                    repeats = endless or bound > 1
                else:
                    self.out.append(c)
                    self.i += 1
                    endless = repeats = c != "?"
                if after_group and repeats and closed_unbounded:
                    raise NotPortable(
                        f"nested unbounded repetition: the quantifier at position {at} repeats the group at position "
                        f"{closed_start}, which holds a part repeated without bound ('*', '+' or '{{n,}}'); PostgreSQL "
                        "may take minutes to compile such a pattern: bound the inner repetition (e.g. {1,20}) or drop "
                        "the outer quantifier"
                    )
                unbounded[-1] = unbounded[-1] or endless
                quantifiable, lazy_ok = False, True
                continue
            lazy_ok = False
            if c == "\\":
                self.out.append(self._escape(in_class=False))
                quantifiable = True
                continue
            if c == "[":
                self._bracket()
                quantifiable = True
                continue
            if c == "(":
                if self.p.startswith("(?:", self.i):
                    self.out.append("(?:")
                    self.i += 3
                elif self.p.startswith("(?", self.i):
                    raise self.fail("only plain groups ( ) and (?: ) are portable, not '(?'")
                else:
                    self.out.append("(")
                    self.i += 1
                depth += 1
                counts.append(1)
                unbounded.append(False)
                starts.append(self.i - 1 if self.out[-1] == "(" else self.i - 3)
                quantifiable = False
                continue
            if c == ")":
                depth -= 1
                if depth < 0:
                    raise self.fail("unbalanced ')'")
                closed = counts.pop()
                counts[-1] = max(counts[-1], closed)
                closed_unbounded, closed_start = unbounded.pop(), starts.pop()
                unbounded[-1] = unbounded[-1] or closed_unbounded
                quantifiable = True
            elif c == ".":
                self.out.append("[^\\n]")
                self.i += 1
                quantifiable = True
                continue
            else:
                quantifiable = c not in "^$|"
            self.out.append(c)
            self.i += 1
        if depth:
            raise self.fail("unclosed '('")
        return "".join(self.out)

    def _escape(self, *, in_class: bool) -> str:
        start = self.i
        if self.i + 1 >= len(self.p):
            raise self.fail("a trailing '\\'", start)
        c = self.p[self.i + 1]
        self.i += 2
        if c in _ESCAPES:
            return _ESCAPES[c]
        if c.isascii() and not c.isalnum() and c.isprintable() and c != " ":
            return "\\" + c
        hint = _HINTS.get(c, "only \\n, \\t and \\ before punctuation are portable")
        raise self.fail(f"the escape '\\{c}' is not portable ({hint})", start)

    def _counted_repeat(self) -> tuple[int, bool]:
        """Copy ``{n}``, ``{n,}`` or ``{n,m}``; return its largest finite count and whether it is unbounded."""
        start = self.i
        end = self.p.find("}", self.i)
        body = self.p[self.i + 1 : end] if end > 0 else ""
        low, comma, high = body.partition(",")
        if end < 0 or not low.isdigit() or not (high == "" or high.isdigit()) or not low.isascii() or not high.isascii():
            raise self.fail("'{' must start a count such as {2}, {2,} or {2,5} (write \\{ for the character)", start)
        if int(low) > MAX_REPEAT or (high and int(high) > MAX_REPEAT):
            raise self.fail(f"repetition counts above {MAX_REPEAT} are not portable", start)
        if high and int(high) < int(low):
            raise self.fail("repetition count {n,m} needs n <= m", start)
        self.out.append("{" + low + comma + high + "}")
        self.i = end + 1
        return max(int(low), int(high) if high else 1), bool(comma) and not high

    def _bracket(self) -> None:
        start = self.i
        self.i += 1
        parts = ["["]
        if self.i < len(self.p) and self.p[self.i] == "^":
            parts.append("^")
            self.i += 1
        first = True
        while True:
            if self.i >= len(self.p):
                raise self.fail("unclosed '['", start)
            c = self.p[self.i]
            if c == "]" and not first:
                parts.append("]")
                self.i += 1
                break
            if c == "]":  # a leading ']' is a literal in both dialects
                parts.append("\\]")
                self.i += 1
            elif c == "\\":
                parts.append(self._escape(in_class=True))
            elif c == "[":
                raise self.fail("'[' inside a class (nested classes, [:name:]) is not portable; write \\[", self.i)
            elif self.p.startswith(("&&", "--", "~~"), self.i):
                raise self.fail(f"class set operation '{self.p[self.i:self.i + 2]}' is not portable", self.i)
            else:
                parts.append(c)
                self.i += 1
            first = False
        self.out.append("".join(parts))
