"""Our own open and click tracking in a rendered message: links through ``/c/<token>``, a pixel at ``/o/<token>``.

:func:`track_links` rewrites the HTML with the stdlib HTML tokenizer (:class:`html.parser.HTMLParser`),
keeping the position of each start tag, and changes only the ``href`` values it tracks (and inserts
the pixel): every other byte of the document stays as the template rendered it. What is tracked is
what a browser would follow:

- the ``href`` (the first one, as a browser reads it) of an ``<a>`` or ``<area>`` start tag, its
  character references decoded the way browsers decode attribute values (``&amp;`` is ``&``, while
  ``&copy=`` stays as written), tabs and newlines removed and spaces trimmed, and it is an absolute
  ``http://`` or ``https://`` URL (any case). The click token signs that URL, so the redirect goes
  where the template's link went; the new ``href`` is written double-quoted and attribute-escaped;
- tags inside comments, ``<script>`` and ``<style>`` are not links and are left alone;
- in the text part, ``http(s)://`` URLs up to a space, ``<``, ``>`` or ``"``; trailing
  ``.,;:!?'*`` and closing quotes stay outside the link, and it ends before a closing bracket
  without its opening one in the URL (``[label](https://…)[next](…)``, as the derived text part writes links).

Never rewritten: the message's unsubscribe URL and anything under ``<tracking base>/u/`` or
``<unsubscribe base>/u/`` (scanners follow links: an unsubscribe must stay a page of its own), our
own ``/o/`` and ``/c/`` URLs, ``mailto:``, ``tel:``, ``#anchors`` and relative links, and a link
whose tag carries a ``data-no-track`` attribute (any value; the attribute is left in place), which
is how a template keeps a link out of tracking. A URL longer than
:data:`~email_engine_assets.content.tracking_tokens.URL_MAX_CHARS` is left as it is.

Each distinct URL gets one index, in order of first appearance in the HTML and then the text: the
same URL in both parts (or twice in one) is one link. With opens on, a 1x1 image is inserted just
before the last ``</body>`` end tag, or appended when there is none.
"""

from __future__ import annotations

import html
import html.parser
import re
from dataclasses import dataclass
from html.entities import html5

from email_engine_assets.content.tracking_tokens import (
    URL_MAX_CHARS,
    click_token,
    click_url,
    open_token,
    open_url,
)

__all__ = ["MAX_LINKS", "NO_TRACK_ATTRIBUTE", "Tracked", "attribute_value", "pixel_tag", "track_links"]

NO_TRACK_ATTRIBUTE = "data-no-track"
MAX_LINKS = 10_000  # a link index is below this (tracking_tokens); further distinct URLs are left untracked
_LINK_TAGS = frozenset({"a", "area"})
_SCHEMES = ("http://", "https://")
# The tokenizer's own rules for a start tag's name and attributes: re-running them over one start
# tag gives each attribute's position, exactly as the parser split it.
_TAG_NAME = html.parser.tagfind_tolerant
_ATTRIBUTE = html.parser.attrfind_tolerant
_CHAR_REF = re.compile(r"&(#[0-9]+;?|#[xX][0-9a-fA-F]+;?|[^\t\n\f <&#;]{1,32};?)")
_URL_STRIP = "".join(map(chr, range(0x21)))  # C0 controls and space: trimmed by the URL parser
_URL_DROP = str.maketrans("", "", "\t\n\r")  # removed anywhere by the URL parser
_TEXT_URL = re.compile(r"https?://[^\s<>\"]+", re.IGNORECASE)
_TEXT_TRAILING = ".,;:!?'*\u00bb\u201d\u2019"
_NEWLINE = re.compile("\n")
_CLOSERS = {")": "(", "]": "[", "}": "{"}
_OPENERS = {v: k for k, v in _CLOSERS.items()}


@dataclass(frozen=True)
class Tracked:
    """The tracked parts; ``links[i]`` is the original URL of link index ``i``."""

    html: str
    text: str
    links: tuple[str, ...]


def attribute_value(raw: str) -> str:
    """``raw`` (an attribute value as written, without quotes) as a browser reads it: character
    references decoded, except a legacy named one without ``;`` followed by ``=`` or a letter or
    digit (``?a=1&copy=2`` keeps ``&copy``), which :func:`html.unescape` would decode."""
    return _CHAR_REF.sub(_attribute_reference, raw) if "&" in raw else raw


def _attribute_reference(match: re.Match) -> str:
    ref = match.group(1)
    if ref[0] == "#":
        return html.unescape(match.group(0))
    if ref in html5:
        return html5[ref]
    for end in range(len(ref) - 1, 1, -1):
        if ref[:end] in html5:
            after = ref[end]
            if after == "=" or (after.isascii() and after.isalnum()):
                return match.group(0)
            return html5[ref[:end]] + ref[end:]
    return match.group(0)


def _browser_url(value: str) -> str:
    """The URL a browser takes from an ``href`` value (already unescaped)."""
    return value.strip(_URL_STRIP).translate(_URL_DROP)


def pixel_tag(url: str) -> str:
    return f'<img src="{html.escape(url, quote=True)}" width="1" height="1" alt="" style="display:block;border:0;width:1px;height:1px">'


class _Scanner(html.parser.HTMLParser):
    """Start tags of links (with their position) and the position of the last ``</body>``."""

    def __init__(self, source: str):
        super().__init__(convert_charrefs=True)
        self.source = source
        self._line_starts = [0] + [m.end() for m in _NEWLINE.finditer(source)]  # lines as the parser counts them
        self.links: list[tuple[int, str]] = []  # (offset of the start tag, its text)
        self.body_end: int | None = None

    def _offset(self) -> int:
        line, column = self.getpos()
        return self._line_starts[line - 1] + column

    def handle_starttag(self, tag, attrs):
        if tag in _LINK_TAGS:
            self.links.append((self._offset(), self.get_starttag_text() or ""))

    def handle_endtag(self, tag):
        if tag == "body":
            self.body_end = self._offset()

    # HTML5 tokenizer rules where Python 3.11's parser differs in ways that matter here
    def parse_comment(self, i, report=1):
        """``<!-->`` and ``<!--->`` are empty comments; a comment ends at ``-->`` or ``--!>``."""
        rawdata = self.rawdata
        for empty in ("<!-->", "<!--->"):
            if rawdata.startswith(empty, i):
                return i + len(empty)
        ends = [j for j in (rawdata.find("-->", i + 4), rawdata.find("--!>", i + 4)) if j >= 0]
        if not ends:
            return -1
        end = min(ends)
        return end + (3 if rawdata.startswith("-->", end) else 4)

    def parse_html_declaration(self, i):
        """``<![`` (a CDATA section or Outlook's ``<![if !mso]>``) is a bogus comment up to ``>``
        in HTML (the stdlib parser raises on some of them)."""
        if self.rawdata.startswith("<![", i):
            j = self.rawdata.find(">", i + 3)
            return -1 if j < 0 else j + 1
        return super().parse_html_declaration(i)


def _href_span(tag_text: str) -> tuple[tuple[int, int] | None, bool]:
    """The span (in ``tag_text``) of the first ``href`` value as written (quotes included), and
    whether the tag carries ``data-no-track``; the same split as the parser's ``parse_starttag``."""
    name = _TAG_NAME.match(tag_text, 1)
    if name is None:
        return None, False
    k, span, no_track = name.end(), None, False
    while k < len(tag_text):
        m = _ATTRIBUTE.match(tag_text, k)
        if not m or m.end() == k:
            break
        attribute = m.group(1).lower()
        if attribute == NO_TRACK_ATTRIBUTE:
            no_track = True
        elif attribute == "href" and span is None:
            span = m.span(3) if m.group(2) else (-1, -1)  # href without a value: no link, but the first href
        k = m.end()
    return (None if span == (-1, -1) else span), no_track


def _unquoted(raw: str) -> str:
    if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "'\"":
        return raw[1:-1]
    return raw


class _Links:
    """Distinct URLs by first appearance, each signed once."""

    def __init__(self, key: bytes, tenant_id: str, row_token: str, base_url: str, skip_prefixes: tuple[str, ...],
                 skip_urls: frozenset[str]):
        self.key, self.tenant_id, self.row_token, self.base_url = key, tenant_id, row_token, base_url
        self.skip_prefixes, self.skip_urls = skip_prefixes, skip_urls
        self.index: dict[str, int] = {}
        self.urls: dict[str, str] = {}

    def tracked(self, url: str) -> str | None:
        """The click URL for ``url``, or None when ``url`` is not tracked."""
        lower = url.lower()
        if not lower.startswith(_SCHEMES) or len(url) > URL_MAX_CHARS or "\x00" in url:
            return None
        if url in self.skip_urls or lower.startswith(self.skip_prefixes):
            return None
        if url not in self.index:
            if len(self.index) >= MAX_LINKS:
                return None
            self.index[url] = len(self.index)
            self.urls[url] = click_url(self.base_url, click_token(self.key, self.tenant_id, self.row_token, self.index[url], url))
        return self.urls[url]


def _track_html(source: str, links: _Links | None, pixel: str | None) -> str:
    scanner = _Scanner(source)
    scanner.feed(source)
    scanner.close()
    edits: list[tuple[int, int, str]] = []
    for start, tag_text in scanner.links if links is not None else ():
        if source[start:start + len(tag_text)] != tag_text:  # cannot happen: the parser's own position
            continue
        span, no_track = _href_span(tag_text)
        if span is None or no_track:
            continue
        url = _browser_url(attribute_value(_unquoted(tag_text[span[0]:span[1]])))
        new = links.tracked(url)
        if new is not None:
            edits.append((start + span[0], start + span[1], f'"{html.escape(new, quote=True)}"'))
    if pixel is not None:
        at = len(source) if scanner.body_end is None else scanner.body_end
        edits.append((at, at, pixel))
    if not edits:
        return source
    out, done = [], 0
    for begin, end, text in sorted(edits, key=lambda e: (e[0], e[1])):
        out += [source[done:begin], text]
        done = end
    out.append(source[done:])
    return "".join(out)


def _text_url(match: re.Match) -> tuple[int, int]:
    """The span of a URL in plain text: it ends before a closing bracket that closes nothing inside
    it (``(see https://x.example/a_(b))``, ``[label](https://x.example/)[next](…)``), and trailing
    punctuation stays outside."""
    start, end = match.span()
    text = match.string
    depth = {closer: 0 for closer in _CLOSERS}
    for at in range(start, end):
        char = text[at]
        if char in _OPENERS:
            depth[_OPENERS[char]] += 1
        elif char in _CLOSERS:
            if not depth[char]:
                end = at
                break
            depth[char] -= 1
    while end > start and text[end - 1] in _TEXT_TRAILING:
        end -= 1
    return start, end


def _track_text(source: str, links: _Links) -> str:
    out, done, at = [], 0, 0
    while match := _TEXT_URL.search(source, at):
        start, end = _text_url(match)
        at = max(end, start + 1)  # a URL cut short at a bracket: the next one may start right after
        new = links.tracked(source[start:end])
        if new is not None:
            out += [source[done:start], new]
            done = end
    if not out:
        return source
    out.append(source[done:])
    return "".join(out)


def track_links(
    html_part: str,
    text_part: str,
    *,
    key: bytes,
    tenant_id: str,
    row_token: str,
    base_url: str,
    unsubscribe_url: str,
    unsubscribe_base_url: str,
    opens: bool,
    clicks: bool,
) -> Tracked:
    """The message's parts with its links through ``<base_url>/c/<token>`` (``clicks``) and the
    pixel ``<base_url>/o/<token>`` (``opens``), tokens signed with ``key`` for (``tenant_id``,
    ``row_token``). Neither: the parts unchanged and no links. ``ValueError`` from the token
    functions for a tenant id or row token they refuse."""
    if not (opens or clicks):
        return Tracked(html_part, text_part, ())
    own, unsubscribe = base_url.rstrip("/").lower(), unsubscribe_base_url.rstrip("/").lower()
    skip_prefixes = (f"{own}/u/", f"{unsubscribe}/u/", f"{own}/o/", f"{own}/c/")
    links = _Links(key, tenant_id, row_token, base_url, skip_prefixes, frozenset({unsubscribe_url})) if clicks else None
    pixel = pixel_tag(open_url(base_url, open_token(key, tenant_id, row_token))) if opens else None
    new_html = _track_html(html_part, links, pixel)
    new_text = _track_text(text_part, links) if links is not None else text_part
    return Tracked(new_html, new_text, tuple(links.index) if links is not None else ())
