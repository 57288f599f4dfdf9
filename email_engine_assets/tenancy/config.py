"""Tenant configuration: one YAML file per tenant, validated with pydantic.

Unknown keys are errors. Every error names the file, the path inside it, the bad value and what
is expected, e.g. ``tenants/acme.yaml: sources[1].priority = 'high': Input should be a valid integer``.
"""

from __future__ import annotations

import codecs
import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from email_engine_assets.audiences.tag_rules import TagRuleList
from email_engine_assets.contacts.columns import CANONICAL_FIELDS
from email_engine_assets.tenancy.languages import SUPPORTED_LANGUAGES
from email_engine_assets.tenancy.tag_slug import tag_slug

SLUG_PATTERN = r"^[a-z0-9][a-z0-9_-]*$"
_SLUG = re.compile(SLUG_PATTERN)


def _check_slug(value: str) -> str:
    if not _SLUG.match(value):
        raise ValueError(f"must be a slug matching {SLUG_PATTERN} (lower case, digits, '_' or '-')")
    return value


Slug = Annotated[str, Field(max_length=64), AfterValidator(_check_slug)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SourceConfig(_Strict):
    """One data source of a tenant: a folder ``inbox/<tenant>/<id>/``."""

    id: Slug
    description: str = ""
    format: Literal["csv", "tsv", "json", "ndjson"] | None = None
    encoding: str | None = None
    delimiter: str | None = None
    priority: int = Field(default=0, description="survivorship: higher wins")
    columns: dict[str, str] = Field(default_factory=dict, description="header -> canonical field")
    tags: list[str] = Field(default_factory=list, description="tags given to every row of the source")
    category: str | None = None

    @field_validator("encoding")
    @classmethod
    def _known_codec(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                codecs.lookup(value)
            except LookupError:
                raise ValueError("unknown text encoding; expected e.g. utf-8, utf-16, cp1252, latin-1") from None
        return value

    @field_validator("delimiter")
    @classmethod
    def _one_char(cls, value: str | None) -> str | None:
        if value is not None and len(value) != 1:
            raise ValueError("must be a single character such as ',' ';' '|' or a tab")
        return value

    @field_validator("columns")
    @classmethod
    def _known_fields(cls, value: dict[str, str]) -> dict[str, str]:
        for header, target in value.items():
            if target not in CANONICAL_FIELDS:
                raise ValueError(
                    f"column {header!r} maps to unknown field {target!r}; expected one of {', '.join(CANONICAL_FIELDS)}"
                )
        return value

    @field_validator("tags")
    @classmethod
    def _slug_tags(cls, value: list[str]) -> list[str]:
        slugs = [tag_slug(t) for t in value]
        if not all(slugs):
            raise ValueError(f"tags must contain letters or digits: {value!r}")
        return slugs


class ValidationSettings(_Strict):
    recheck_age_days: int = Field(default=30, ge=1)
    smtp_probe: bool = False
    invalid_share_jump: float = Field(default=0.10, gt=0, le=1, description="warn when the invalid share rises by more")


class TenantConfig(_Strict):
    id: Slug
    name: str
    default_language: str = "en"
    default_category: str | None = None
    sources: list[SourceConfig] = Field(min_length=1)
    validation: ValidationSettings = ValidationSettings()
    tag_rules: TagRuleList = Field(default_factory=list)

    @field_validator("default_language")
    @classmethod
    def _supported(cls, value: str) -> str:
        if value not in SUPPORTED_LANGUAGES:
            raise ValueError(f"expected one of {', '.join(SUPPORTED_LANGUAGES)}")
        return value

    @model_validator(mode="after")
    def _unique_ids(self) -> "TenantConfig":
        for label, ids in (("source id", [s.id for s in self.sources]),):
            dupes = sorted({i for i in ids if ids.count(i) > 1})
            if dupes:
                raise ValueError(f"duplicate {label}: {', '.join(dupes)}")
        return self

    def source(self, source_id: str) -> SourceConfig | None:
        return next((s for s in self.sources if s.id == source_id), None)


class ConfigError(ValueError):
    """A tenant file that cannot be used; ``str()`` names the file, the path and the problem."""

    def __init__(self, path: Path, problems: list[str]):
        self.path = path
        self.problems = problems
        super().__init__("\n".join(f"{path}: {p}" for p in problems))


def _loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _describe(error: dict[str, Any]) -> str:
    where = _loc(tuple(p for p in error["loc"] if not str(p).startswith("function-")))
    msg = error["msg"].removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        return f"{where}: unknown key"
    if error["type"] == "missing":
        return f"{where}: required key is missing"
    return f"{where} = {error.get('input')!r:.120}: {msg}"


def parse_tenant(path: Path, text: str | None = None) -> TenantConfig:
    text = path.read_text(encoding="utf-8") if text is None else text
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(path, [f"not valid YAML: {exc}"]) from None
    if not isinstance(data, dict):
        raise ConfigError(path, [f"expected a mapping at the top level, got {type(data).__name__}"])
    try:
        config = TenantConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(path, [_describe(e) for e in exc.errors()]) from None
    if config.id != path.stem:
        raise ConfigError(path, [f"id = {config.id!r}: must equal the file name {path.stem!r}"])
    return config


@dataclass(frozen=True)
class Workspace:
    root: Path
    tenants: dict[str, TenantConfig]
    digests: dict[str, str]

    @property
    def inbox(self) -> Path:
        return self.root / "inbox"

    def source_dir(self, tenant_id: str, source_id: str) -> Path:
        return self.inbox / tenant_id / source_id


def load_workspace(root: Path) -> Workspace:
    """Load and validate every ``tenants/*.yaml``; all problems of all files are reported at once."""
    root = Path(root)
    tenant_dir = root / "tenants"
    if not tenant_dir.is_dir():
        raise ConfigError(root, [f"no tenants/ folder (expected {tenant_dir})"])
    tenants: dict[str, TenantConfig] = {}
    digests: dict[str, str] = {}
    problems: list[ConfigError] = []
    for path in sorted(tenant_dir.glob("*.y*ml")):
        try:
            tenants[path.stem], digests[path.stem] = read_tenant_file(path)
        except UnicodeDecodeError as exc:
            problems.append(ConfigError(path, [f"not UTF-8 text: {exc}"]))
        except ConfigError as exc:
            problems.append(exc)
    if problems:
        raise ConfigError(tenant_dir, [str(p) for p in problems])
    return Workspace(root=root, tenants=tenants, digests=digests)


def read_tenant_file(path: Path) -> tuple[TenantConfig, str]:
    """One tenant file: its validated config and the digest of its text."""
    text = path.read_text(encoding="utf-8")
    return parse_tenant(path, text), hashlib.sha256(text.encode()).hexdigest()


def load_tenants(root: Path, tenant_ids: Iterable[str]) -> Workspace:
    """The workspace with only the named tenants (a run of one tenant need not parse a thousand files).

    A tenant without a file is left out, as :func:`load_workspace` would; a broken file raises.
    """
    root = Path(root)
    tenants: dict[str, TenantConfig] = {}
    digests: dict[str, str] = {}
    for tenant_id in sorted(set(tenant_ids)):
        if not re.match(SLUG_PATTERN, tenant_id):  # a partition key is not a path
            continue
        path = next((p for p in (root / "tenants" / f"{tenant_id}{ext}" for ext in (".yaml", ".yml")) if p.is_file()), None)
        if path is None:
            continue
        try:
            tenants[tenant_id], digests[tenant_id] = read_tenant_file(path)
        except UnicodeDecodeError as exc:
            raise ConfigError(path, [f"not UTF-8 text: {exc}"]) from None
    return Workspace(root=root, tenants=tenants, digests=digests)
