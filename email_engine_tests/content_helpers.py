"""Template files on disk for the content tests."""

from __future__ import annotations

import textwrap
from pathlib import Path

TENANT_YAML = """\
id: acme
name: Acme Industrie
default_language: fr
default_category: b2b
sources:
  - id: crm
    priority: 10
unsubscribe:
  base_url: https://unsubscribe.acme.example/
  mailto: unsubscribe@acme.example
"""


def write_template(root: Path, tenant: str, name: str, text: str) -> Path:
    folder = root / "templates" / tenant
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def simple(category: str, language: str, *, tags: tuple[str, ...] = (), subject: str = "Hello {{ first_name }}", body: str = "") -> str:
    tag_line = f"tags: [{', '.join(tags)}]\n" if tags else ""
    html = body or '<p>Hello {{ first_name }}</p><a href="{{ unsubscribe_url }}">unsubscribe</a>'
    return f"category: {category}\nlanguage: {language}\n{tag_line}subject: \"{subject}\"\nhtml: |\n  {html}\n"
