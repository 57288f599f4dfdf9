"""A template in MailWizz's tag mode: MailWizz renders one HTML for a whole list.

MailWizz personalises a campaign per subscriber with tags: ``{{ first_name }}`` becomes
``[FNAME]``, ``{{ last_name }}`` ``[LNAME]``, ``{{ email }}`` ``[EMAIL]`` (the list's default
fields), ``{{ unsubscribe_url }}`` the system tag ``[UNSUBSCRIBE_URL]``, and any other contact
field a custom list field named after it (``{{ company }}`` -> ``[COMPANY]``, reported in
``custom_fields`` so the list gets that field). ``{{ campaign }}``, ``{{ tenant }}``,
``{{ tenant.name }}`` and ``{{ tenant.id }}`` are the same for every subscriber and are written
in as text (escaped in the HTML).

Anything else cannot be carried: loops, conditionals, filters, tests, ``{% set %}``, macros,
expressions, the ``tags`` list. Such a template is refused with :class:`MailwizzTagError` naming
the file, the line and the construct, and so is an HTML without the unsubscribe link (MailWizz
refuses campaign content without ``[UNSUBSCRIBE_URL]``).
"""

from __future__ import annotations

import html as html_lib
from dataclasses import dataclass

from jinja2 import TemplateSyntaxError, nodes

from email_engine_assets.contacts.fields import CANONICAL_FIELDS
from email_engine_assets.content.choice import Chooser
from email_engine_assets.content.composer import PreflightProblem, file_problem
from email_engine_assets.content.rendering import Renderer, TenantInfo, text_from_html
from email_engine_assets.content.templates import Template, TemplateSet
from email_engine_assets.tenancy.config import TenantConfig

# Contact field -> the tag of a MailWizz list's default field.
DEFAULT_FIELD_TAGS: dict[str, str] = {"email": "EMAIL", "first_name": "FNAME", "last_name": "LNAME"}
UNSUBSCRIBE_TAG = "UNSUBSCRIBE_URL"
_NOT_CARRIED_FIELDS = frozenset({"tags"})

_CONSTRUCTS: dict[type, str] = {
    nodes.For: "a loop ({% for %})",
    nodes.If: "a conditional ({% if %})",
    nodes.CondExpr: "a conditional expression (... if ... else ...)",
    nodes.Filter: "a filter",
    nodes.Test: "a test (is ...)",
    nodes.Assign: "an assignment ({% set %})",
    nodes.AssignBlock: "an assignment ({% set %})",
    nodes.Macro: "a macro",
    nodes.CallBlock: "a call block",
    nodes.FilterBlock: "a filter block",
    nodes.With: "a with block",
    nodes.Call: "a call",
    nodes.Getattr: "an attribute",
    nodes.Getitem: "an index",
    nodes.Const: "a literal value",
    nodes.Concat: "a concatenation (~)",
    nodes.Block: "a block",
    nodes.Extends: "extends",
    nodes.Include: "include",
    nodes.Import: "import",
    nodes.FromImport: "import",
}


class MailwizzTagError(ValueError):
    """A template MailWizz cannot carry: ``str()`` is ``<file>, line <n>: <construct> ...``."""

    def __init__(self, file: str, line: int | None, construct: str, message: str):
        self.file, self.line, self.construct = file, line, construct
        where = f"{file}, line {line}" if line else file
        super().__init__(f"{where}: {message}")


@dataclass(frozen=True)
class MailwizzContent:
    subject: str
    html: str
    text: str
    custom_fields: dict[str, str]  # tag -> contact field, beyond EMAIL, FNAME and LNAME


def field_tag(field: str) -> str:
    """The MailWizz tag (without brackets) that carries a contact field."""
    return DEFAULT_FIELD_TAGS.get(field) or field.upper()


def _describe(node: nodes.Node) -> str:
    for kind, label in _CONSTRUCTS.items():
        if isinstance(node, kind):
            if isinstance(node, nodes.Filter):
                return f"the filter '{node.name}'"
            return label
    return f"an expression ({type(node).__name__})"


class _Converter:
    def __init__(self, template: Template, *, campaign: str, tenant: TenantInfo):
        self.template = template
        self.constants = {"campaign": campaign, "tenant": tenant.name, "tenant.name": tenant.name, "tenant.id": tenant.id}
        self.fields: set[str] = set()
        self.used: set[str] = set()  # names used by the part being converted

    def refuse(self, part: str, node: nodes.Node, construct: str, why: str) -> MailwizzTagError:
        line = self.template.file_line(part, getattr(node, "lineno", None))
        return MailwizzTagError(self.template.file, line, construct, f"{part}: {construct} {why}")

    def expression(self, part: str, node: nodes.Node, escape: bool) -> str:
        if isinstance(node, nodes.Getattr) and isinstance(node.node, nodes.Name) and node.node.name == "tenant":
            key = f"tenant.{node.attr}"
            if key in self.constants:
                return html_lib.escape(self.constants[key]) if escape else self.constants[key]
        if isinstance(node, nodes.Name):
            name = node.name
            self.used.add(name)
            if name == "unsubscribe_url":
                return f"[{UNSUBSCRIBE_TAG}]"
            if name in self.constants:
                return html_lib.escape(self.constants[name]) if escape else self.constants[name]
            if name in CANONICAL_FIELDS and name not in _NOT_CARRIED_FIELDS:
                self.fields.add(name)
                return f"[{field_tag(name)}]"
            if name in _NOT_CARRIED_FIELDS:
                raise self.refuse(part, node, f"the variable '{name}'", "is a list, which MailWizz cannot carry")
            raise self.refuse(part, node, f"the variable '{name}'", "is not a known variable")
        construct = _describe(node)
        raise self.refuse(part, node, construct, "cannot be carried to MailWizz: only plain {{ variable }} output can")

    def convert(self, part: str, tree: nodes.Template) -> str:
        out: list[str] = []
        self.used = set()
        for statement in tree.body:
            if not isinstance(statement, nodes.Output):
                raise self.refuse(part, statement, _describe(statement), "cannot be carried to MailWizz: only plain {{ variable }} output can")
            for node in statement.nodes:
                if isinstance(node, nodes.TemplateData):
                    out.append(node.data)
                else:
                    out.append(self.expression(part, node, escape=part == "html"))
        return "".join(out)


def to_mailwizz(template: Template, *, campaign: str, tenant: TenantInfo, renderer: Renderer | None = None) -> MailwizzContent:
    """``template`` with MailWizz tags in place of its variables; :class:`MailwizzTagError` if it
    uses something MailWizz cannot carry or lacks the unsubscribe link."""
    renderer = renderer or Renderer()
    converter = _Converter(template, campaign=campaign, tenant=tenant)
    parts: dict[str, str] = {}
    for part in ("subject", "html", "text"):
        if part == "text" and template.text is None:
            continue
        try:
            tree = renderer.parse(template, part)
        except TemplateSyntaxError as exc:
            raise MailwizzTagError(template.file, template.file_line(part, exc.lineno), "syntax", f"{part}: {exc.message}") from None
        parts[part] = converter.convert(part, tree)
        if part == "html" and "unsubscribe_url" not in converter.used:
            raise MailwizzTagError(
                template.file, template.lines.get("html"), "unsubscribe link",
                "html: the unsubscribe link {{ unsubscribe_url }} is missing; MailWizz refuses campaign content without [UNSUBSCRIBE_URL]",
            )
    html = renderer.inliner.inline(parts["html"])
    custom = {field_tag(f): f for f in sorted(converter.fields) if f not in DEFAULT_FIELD_TAGS}
    return MailwizzContent(
        subject=" ".join(parts["subject"].split()),
        html=html,
        text=parts.get("text") or text_from_html(html),
        custom_fields=custom,
    )


def mailwizz_contents(
    templates: TemplateSet, *, tenant: TenantConfig, campaign: str, category: str, renderer: Renderer | None = None
) -> tuple[dict[str, MailwizzContent], list[PreflightProblem]]:
    """Every template a contact of this campaign could get, in tag mode, by template name; and
    the problems that block the send (broken files, templates MailWizz cannot carry).

    Contacts are then grouped by :class:`~email_engine_assets.content.choice.Chooser` choice, one
    MailWizz campaign per template."""
    renderer = renderer or Renderer()
    chooser = Chooser(templates, category=category, default_category=tenant.default_category)
    problems = [file_problem(tenant.id, name, error) for name, error in sorted(templates.errors.items())]
    contents: dict[str, MailwizzContent] = {}
    info = TenantInfo(id=tenant.id, name=tenant.name)
    for template in chooser.reachable():
        try:
            contents[template.name] = to_mailwizz(template, campaign=campaign, tenant=info, renderer=renderer)
        except MailwizzTagError as exc:
            problems.append(PreflightProblem(exc.file, exc.line, None, str(exc).partition(": ")[2]))
    return contents, problems
