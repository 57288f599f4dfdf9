"""Rendering a template for one contact: Jinja2's sandbox, strict about names, capped.

* The sandbox (:mod:`email_engine_assets.content.sandbox`): no attribute starting with ``_``
  (``{{ ''.__class__ }}`` is refused), no unsafe callables, no in-place change of a list or dict;
  every string, list and number a template builds is capped before it is built (``'x' * 10**9``,
  a string doubled in a loop, ``'%999999999s'|format(x)``, ``x.center(10**9)``); each part's
  output is capped.
* ``StrictUndefined``: a name that is not a known variable (:data:`KNOWN_VARIABLES`) is an error,
  found before any contact is rendered (:meth:`Renderer.check`); a known field without a value
  renders empty.
* HTML is autoescaped (subject and text are not: they are not HTML). The subject is one line:
  line breaks a value brings are turned into spaces, never a header break.
* The HTML gets ``lang`` (and ``dir="rtl"`` for Arabic) on its ``<html>`` element, a UTF-8
  ``<meta charset>``, and its CSS inlined (css-inline, remote stylesheets never loaded); the text
  part is derived from it (inscriptis) when the template has none.

Every template part is compiled once per :class:`Renderer` and reused for every contact.
Errors are :class:`RenderError` naming the file, the line of the file and the variable.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import css_inline
import inscriptis
from inscriptis.model.config import ParserConfig
from jinja2 import StrictUndefined, TemplateSyntaxError, meta, nodes
from jinja2.exceptions import SecurityError, TemplateError, UndefinedError

from email_engine_assets.contacts.fields import CANONICAL_FIELDS
from email_engine_assets.content.sandbox import Sandbox, refuse_string, text_size
from email_engine_assets.content.templates import Template
from email_engine_assets.tenancy.config import excerpt

# What a template may name: the contact's fields, the unsubscribe link, the campaign, the tenant.
KNOWN_VARIABLES: tuple[str, ...] = (*CANONICAL_FIELDS, "unsubscribe_url", "campaign", "tenant")
RTL_LANGUAGES: frozenset[str] = frozenset({"ar"})
PART_MAX_CHARS = {"subject": 500, "html": 1 << 20, "text": 1 << 20}

_HTML_TAG = re.compile(r"<html\b([^>]*)>", re.IGNORECASE)
_HEAD_TAG = re.compile(r"<head\b[^>]*>", re.IGNORECASE)
_META_CHARSET = re.compile(r"<meta\b[^>]*charset", re.IGNORECASE)
_NEWLINES = re.compile(r"[\r\n\u2028\u2029\x0b\x0c\x85]+")
_UNDEFINED_NAME = re.compile(r"'([^']{1,100})' is undefined|has no attribute '([^']{1,100})'")


@dataclass(frozen=True)
class Rendered:
    subject: str
    html: str
    text: str


@dataclass(frozen=True)
class TenantInfo:
    """``{{ tenant }}`` prints the tenant's name; ``{{ tenant.id }}`` its id."""

    id: str
    name: str

    def __str__(self) -> str:
        return self.name


class RenderError(Exception):
    """A template that cannot be rendered: ``str()`` is ``<file>, line <n>: <message>``."""

    def __init__(self, file: str, line: int | None, variable: str | None, message: str, part: str = ""):
        self.file = file
        self.line = line
        self.variable = variable
        self.message = excerpt(message, 300)
        self.part = part
        where = f"{file}, line {line}" if line else file
        super().__init__(f"{where} ({part}): {self.message}" if part else f"{where}: {self.message}")


def _finalize(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, (list, tuple, set, frozenset)):
        refuse_string(text_size(value), "printing a list")
        return ", ".join(str(v) for v in value)
    if not isinstance(value, str):
        refuse_string(text_size(value), "printing a value")
    return value


def _sandbox(*, autoescape: bool) -> Sandbox:
    return Sandbox(undefined=StrictUndefined, autoescape=autoescape, finalize=_finalize, keep_trailing_newline=True, auto_reload=False)


def html_document(source: str, language: str) -> str:
    """``source`` as a whole document with ``lang``, ``dir`` for right-to-left, and a UTF-8 charset.

    What is added goes on the first line of the source, so Jinja's line numbers stay those of the
    template."""
    direction = ' dir="rtl"' if language in RTL_LANGUAGES else ""
    found = _HTML_TAG.search(source)
    if found is None:
        return f'<!DOCTYPE html><html lang="{language}"{direction}><head><meta charset="utf-8"></head><body>{source}</body></html>'
    attrs = found.group(1)
    added = ("" if re.search(r"\blang\s*=", attrs, re.I) else f' lang="{language}"') + (
        "" if re.search(r"\bdir\s*=", attrs, re.I) else direction
    )
    source = source[: found.end() - 1] + added + source[found.end() - 1 :]
    if not _META_CHARSET.search(source):
        head = _HEAD_TAG.search(source)
        if head:
            source = source[: head.end()] + '<meta charset="utf-8">' + source[head.end() :]
        else:
            end = _HTML_TAG.search(source).end()
            source = source[:end] + '<head><meta charset="utf-8"></head>' + source[end:]
    return source


def _template_line(tb: TracebackType | None, filename: str) -> int | None:
    line = None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == filename:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def _variable_of(exc: Exception) -> str | None:
    found = _UNDEFINED_NAME.search(str(exc))
    return (found.group(1) or found.group(2)) if found else None


@dataclass(frozen=True)
class _Part:
    name: str
    filename: str
    compiled: Any  # jinja2.Template


_TEXT_CONFIG = ParserConfig(display_links=True)


def text_from_html(html: str) -> str:
    """The plain-text part for an HTML part: its text, links shown as ``[label](url)``."""
    text = inscriptis.get_text(html, _TEXT_CONFIG)
    return "\n".join(line.rstrip() for line in text.strip().splitlines()) + "\n"  # table layout pads lines


def _shape(tree: nodes.Template) -> tuple[frozenset[str], tuple[str, ...], int]:
    """Names used, statements in order, and the count of expressions output."""
    statements = tuple(type(n).__name__ for n in tree.find_all(nodes.Stmt) if not isinstance(n, nodes.Output))
    outputs = sum(len([x for x in n.nodes if not isinstance(x, nodes.TemplateData)]) for n in tree.find_all(nodes.Output))
    return frozenset(meta.find_undeclared_variables(tree)), statements, outputs


class Renderer:
    """Compiles each template part once and renders it for many contacts."""

    def __init__(self) -> None:
        self._html_env = _sandbox(autoescape=True)
        self._text_env = _sandbox(autoescape=False)
        self._compiled: dict[Template, dict[str, _Part]] = {}
        self._inliner = css_inline.CSSInliner(load_remote_stylesheets=False, keep_at_rules=True)

    def __reduce__(self):  # the jinja environments do not pickle: another process compiles its own
        return (Renderer, ())

    @property
    def inliner(self) -> css_inline.CSSInliner:
        return self._inliner

    def parse(self, template: Template, part: str):  # noqa: ANN201 (a jinja2.nodes.Template)
        """The syntax tree of one part (the HTML as a document, see :func:`html_document`)."""
        env = self._html_env if part == "html" else self._text_env
        return env.parse(self._sources(template)[part])

    def _sources(self, template: Template) -> dict[str, str]:
        found = {"subject": template.subject, "html": html_document(template.html, template.language)}
        if template.text is not None:
            found["text"] = template.text
        return found

    def check(self, template: Template) -> list[RenderError]:
        """Problems found without a contact: syntax errors and names that are not known variables."""
        problems: list[RenderError] = []
        for part, source in self._sources(template).items():
            env = self._html_env if part == "html" else self._text_env
            try:
                tree = env.parse(source)
            except TemplateSyntaxError as exc:
                problems.append(RenderError(template.file, template.file_line(part, exc.lineno), None, exc.message or "syntax error", part))
                continue
            unknown = sorted(meta.find_undeclared_variables(tree) - set(KNOWN_VARIABLES) - set(env.globals))
            for name in unknown:
                line = min((n.lineno for n in tree.find_all(nodes.Name) if n.name == name), default=None)
                message = f"unknown variable {name!r}; a template may use {', '.join(KNOWN_VARIABLES)}"
                problems.append(RenderError(template.file, template.file_line(part, line), name, message, part))
        return problems

    def compile(self, template: Template) -> dict[str, _Part]:
        """The compiled parts of ``template`` (cached); :class:`RenderError` for the first problem."""
        found = self._compiled.get(template)
        if found is not None:
            return found
        problems = self.check(template)
        if problems:
            raise problems[0]
        sources = self._sources(template)
        if "text" not in sources:
            derived = self._derived_text(sources["html"])
            if derived is not None:
                sources["text"] = derived
        parts: dict[str, _Part] = {}
        for part, source in sources.items():
            env = self._html_env if part == "html" else self._text_env
            filename = f"<{template.file}#{part}>"
            code = env.compile(source, name=template.name, filename=filename)
            parts[part] = _Part(part, filename, env.template_class.from_code(env, code, env.make_globals(None), None))
        self._compiled[template] = parts
        return parts

    def _derived_text(self, html_source: str) -> str | None:
        """The text part as a template, derived once from the HTML template instead of from every
        rendered HTML (inscriptis costs milliseconds per message). Kept only when it has exactly
        the HTML's names and statements (an expression inside an attribute other than a link's,
        or a statement lxml moved, would otherwise be lost): else each message's HTML is
        converted after rendering."""
        derived = text_from_html(html_source)
        try:
            html_tree = self._html_env.parse(html_source)
            text_tree = self._text_env.parse(derived)
        except TemplateSyntaxError:
            return None
        if _shape(html_tree) != _shape(text_tree):
            return None
        return derived

    def _run(self, template: Template, part: _Part, context: Mapping[str, Any]) -> str:
        limit = PART_MAX_CHARS[part.name]
        try:
            out: list[str] = []
            size = 0
            chunks: Iterator[str] = part.compiled.generate(context)
            for chunk in chunks:
                size += len(chunk)
                if size > limit:
                    raise RenderError(template.file, template.lines.get(part.name), None, f"output over {limit} characters", part.name)
                out.append(chunk)
            return "".join(out)
        except RenderError:
            raise
        except (TemplateError, ArithmeticError, TypeError, ValueError, LookupError, RecursionError) as exc:
            line = template.file_line(part.name, _template_line(exc.__traceback__, part.filename))
            variable = _variable_of(exc) if isinstance(exc, UndefinedError) else None
            kind = "refused by the sandbox: " if isinstance(exc, SecurityError) else ""
            raise RenderError(template.file, line, variable, f"{kind}{exc}", part.name) from None

    def render(self, template: Template, variables: Mapping[str, Any]) -> Rendered:
        """``template`` for one contact. ``variables``: contact fields, ``unsubscribe_url``,
        ``campaign``, ``tenant``; known names missing from it render empty, others are ignored."""
        parts = self.compile(template)
        context = dict.fromkeys(KNOWN_VARIABLES) | {k: v for k, v in variables.items() if k in KNOWN_VARIABLES}
        subject = _NEWLINES.sub(" ", self._run(template, parts["subject"], context)).strip()
        html = self._inliner.inline(self._run(template, parts["html"], context))
        text = self._run(template, parts["text"], context) if "text" in parts else text_from_html(html)
        return Rendered(subject=subject, html=html, text=text)
