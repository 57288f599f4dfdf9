"""Template files: ``templates/<tenant>/<name>.yaml`` in the workspace.

A file holds one message for one (category, language), optionally a variant for contacts that
have all of its ``tags``::

    category: b2b
    language: fr
    tags: [salon_2026]          # optional
    subject: "Bonjour {{ first_name }}"
    html: |
      <p>Bonjour {{ first_name }}, ... <a href="{{ unsubscribe_url }}">Se désinscrire</a></p>
    text: |                     # optional: derived from the HTML when absent
      Bonjour {{ first_name }} ...

Files are hostile input, read as tenant files are (:mod:`email_engine_assets.tenancy.config`):
regular files only, never through a symbolic link, at most ``TEMPLATE_FILE_MAX_BYTES``, no YAML
anchors, unknown keys refused. A broken file is reported in :attr:`TemplateSet.errors` (its error
names the file and the key) while the good ones load.

Each template part remembers the line of the file where it starts, so that an error inside the
Jinja source (line ``n`` of the part) is reported at the line of the YAML file a person opens.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import yaml
from pydantic import Field, field_validator

from email_engine_assets.contacts.inbox import (
    RefusedFile,
    list_source_folder,
    open_regular_file,
    real_source_folder,
)
from email_engine_assets.tenancy.config import (
    ConfigError,
    excerpt,
    parse_mapping,
    validate_file,
)
from email_engine_assets.tenancy.strict import SLUG_PATTERN, LanguageCode, Strict, is_slug
from email_engine_assets.tenancy.tag_slug import tag_slug

TEMPLATES_DIR = "templates"
TEMPLATE_FILE_MAX_BYTES = 512 * 1024
MAX_TEMPLATES_PER_TENANT = 1000
SUBJECT_MAX_CHARS = 500
TEMPLATE_PARTS: tuple[str, ...] = ("subject", "html", "text")



class TemplateFile(Strict):
    """The keys of a template file; anything else is refused."""

    category: Annotated[str, Field(min_length=1, max_length=64)]
    language: LanguageCode
    tags: list[str] = Field(default_factory=list, max_length=50)
    subject: Annotated[str, Field(min_length=1, max_length=SUBJECT_MAX_CHARS)]
    html: Annotated[str, Field(min_length=1)]
    text: str | None = None

    @field_validator("tags")
    @classmethod
    def _slug_tags(cls, value: list[str]) -> list[str]:
        slugs = [tag_slug(t) for t in value]
        if not all(slugs):
            raise ValueError("tags must contain letters or digits")
        return sorted(set(slugs))


@dataclass(frozen=True)
class Template:
    """One loaded template. ``file`` is the path shown in errors (``templates/<tenant>/<name>.yaml``);
    ``lines`` maps each part present to the file line where its first source line is."""

    name: str
    file: str
    category: str
    language: str
    tags: frozenset[str]
    subject: str
    html: str
    text: str | None
    lines: dict[str, int] = field(default_factory=dict, compare=False)

    def file_line(self, part: str, line: int | None) -> int | None:
        """The line of the file holding line ``line`` (1-based) of ``part``'s source."""
        start = self.lines.get(part)
        if start is None:
            return None
        return start + (line - 1 if line and line > 0 else 0)


@dataclass(frozen=True)
class TemplateSet:
    """A tenant's templates by name (file stem), and the error of each file that could not be used."""

    tenant_id: str
    templates: dict[str, Template] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)


def _part_lines(node: yaml.Node) -> dict[str, int]:
    """The 1-based file line where each part's text starts.

    A block scalar (``|``, ``>``) starts on the line after its indicator; a plain or quoted scalar
    on its own line (a folded multi-line quoted scalar may then be off by its folds)."""
    lines: dict[str, int] = {}
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode) and key.value in TEMPLATE_PARTS and isinstance(value, yaml.ScalarNode):
                block = value.style in ("|", ">")
                lines[key.value] = value.start_mark.line + (2 if block else 1)
    return lines


def parse_template(path: Path, text: str, shown: str) -> Template:
    """One template file's text; :class:`ConfigError` naming ``shown`` (the file) and the key."""
    shown_path = Path(shown)
    if len(text) > TEMPLATE_FILE_MAX_BYTES:
        raise ConfigError(shown_path, [f"text is {len(text)} characters; a template file may hold at most {TEMPLATE_FILE_MAX_BYTES} bytes"])
    data, node = parse_mapping(shown_path, text)
    model = validate_file(shown_path, data, TemplateFile)
    return Template(
        name=path.stem,
        file=shown,
        category=model.category,
        language=model.language,
        tags=frozenset(model.tags),
        subject=model.subject,
        html=model.html,
        text=model.text,
        lines=_part_lines(node),
    )


def _read(path: Path, shown: str) -> str:
    try:
        with open_regular_file(path) as fh:
            data = fh.read(TEMPLATE_FILE_MAX_BYTES + 1)
    except RefusedFile as exc:
        raise ConfigError(Path(shown), [exc.why]) from None
    except OSError as exc:
        raise ConfigError(Path(shown), [f"cannot read: {exc.strerror or type(exc).__name__}"]) from None
    if len(data) > TEMPLATE_FILE_MAX_BYTES:
        raise ConfigError(Path(shown), [f"file is over {TEMPLATE_FILE_MAX_BYTES} bytes, the most a template file may hold"])
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(Path(shown), [f"not UTF-8 text: {exc}"]) from None


def load_templates(workspace_root: Path, tenant_id: str) -> TemplateSet:
    """Every ``templates/<tenant_id>/*.yaml`` of the workspace (none: an empty set).

    The ``templates`` and tenant folders must be real folders, not links; a linked or special
    file, a file name that is not a slug, a file over the cap or beyond the
    ``MAX_TEMPLATES_PER_TENANT``-th is an error of that file; the others load.
    """
    if not is_slug(tenant_id):
        raise ValueError(f"tenant id {excerpt(tenant_id, 64)!r} is not a slug")
    folder = Path(workspace_root) / TEMPLATES_DIR / tenant_id
    templates: dict[str, Template] = {}
    errors: dict[str, str] = {}
    try:
        real = real_source_folder(folder)
    except RefusedFile as exc:
        return TemplateSet(tenant_id, {}, {"": f"{TEMPLATES_DIR}/{tenant_id}: {exc.why}"})
    listing = list_source_folder(real)
    for path, why in listing.refused:
        if path.suffix in (".yaml", ".yml"):
            errors[path.stem] = f"{TEMPLATES_DIR}/{tenant_id}/{path.name}: {why}"
    candidates = [p for p in listing.files if p.suffix in (".yaml", ".yml")]
    for count, path in enumerate(candidates):
        shown = f"{TEMPLATES_DIR}/{tenant_id}/{path.name}"
        if count >= MAX_TEMPLATES_PER_TENANT:
            errors[path.stem] = f"{shown}: more than {MAX_TEMPLATES_PER_TENANT} template files for one tenant; not read"
            continue
        if not is_slug(path.stem):
            errors[path.stem] = f"{shown}: the file name must be a slug matching {SLUG_PATTERN} (it names the template)"
            continue
        if path.stem in templates or path.stem in errors:
            errors[path.stem] = f"{shown}: another file has the same name ({path.stem}.yaml and {path.stem}.yml)"
            templates.pop(path.stem, None)
            continue
        try:
            templates[path.stem] = parse_template(path, _read(path, shown), shown)
        except ConfigError as exc:
            errors[path.stem] = str(exc)
    return TemplateSet(tenant_id, templates, errors)

