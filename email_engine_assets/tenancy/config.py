"""Tenant configuration: one YAML file per tenant, validated with pydantic.

Unknown keys are errors. Every error names the file, the path inside it, the bad value and what
is expected, e.g. ``tenants/acme.yaml: sources[1].priority = 'high': Input should be a valid integer``.

The files are read as hostile input: at most ``TENANT_FILE_MAX_BYTES``, no YAML anchors or aliases
(an alias bomb of a few hundred bytes expands to gigabytes), and an error quotes the input only in
a short, escaped excerpt. A broken file stops its own tenant only (:attr:`Workspace.errors`).
"""

from __future__ import annotations

import codecs
import hashlib
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import (
    BaseModel,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from email_engine_assets.audiences.segments import SegmentBuildSettings, SegmentList
from email_engine_assets.audiences.tag_rules import TagRuleList
from email_engine_assets.contacts.fields import CANONICAL_FIELDS
from email_engine_assets.tenancy.feedback_settings import (
    FeedbackPolicy,
    GuardRails,
    WebhookSettings,
)
from email_engine_assets.tenancy.schedule_settings import ScheduleSettings
from email_engine_assets.tenancy.sending import (
    OUTBOX,
    DkimSettings,
    EnvSecret,
    OutboxTransport,
    TransportConfig,
    UnsubscribeSettings,
)
from email_engine_assets.tenancy.tracking_settings import TrackingSettings
from email_engine_assets.tenancy.strict import LanguageCode, Slug, Strict, is_slug
from email_engine_assets.tenancy.tag_slug import tag_slug

TENANT_FILE_MAX_BYTES = 1 << 20
_Model = TypeVar("_Model", bound=BaseModel)
PROBLEM_MAX_CHARS = 300
MAX_PROBLEMS = 20

class SourceConfig(Strict):
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
    webhook_secret: EnvSecret | None = Field(default=None, description="signs contacts pushed to POST /hooks/contacts/<tenant>/<source>")

    @field_validator("encoding")
    @classmethod
    def _known_codec(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                codec = codecs.lookup(value)
            except LookupError:
                raise ValueError("unknown text encoding; expected e.g. utf-8, utf-16, cp1252, latin-1") from None
            # rot13, hex, zlib, ...: codecs that bytes.decode() refuses.
            if not getattr(codec, "_is_text_encoding", True):
                raise ValueError("a codec but not a text encoding; expected e.g. utf-8, utf-16, cp1252, latin-1")
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


class ValidationSettings(Strict):
    recheck_age_days: int = Field(default=30, ge=1)
    unknown_recheck_age_hours: int = Field(default=1, ge=1, description="re-check 'unknown' verdicts this soon")
    smtp_probe: bool = False
    allow_private_targets: bool = Field(
        default=False, description="let the SMTP probe connect to loopback / private / link-local addresses"
    )
    invalid_share_jump: float = Field(default=0.10, gt=0, le=1, description="warn when the invalid share rises by more")


class TenantConfig(Strict):
    id: Slug
    name: str
    default_language: LanguageCode = "en"
    default_category: str | None = None
    sources: list[SourceConfig] = Field(min_length=1)
    validation: ValidationSettings = ValidationSettings()
    tag_rules: TagRuleList = Field(default_factory=list)
    segments: SegmentList = Field(default_factory=list)
    segment_build: SegmentBuildSettings = SegmentBuildSettings()
    transports: list[TransportConfig] = Field(default_factory=list, description="the implicit 'outbox' is always there")
    unsubscribe: UnsubscribeSettings | None = None
    dkim: DkimSettings | None = None
    webhooks: WebhookSettings = WebhookSettings()
    feedback: FeedbackPolicy = FeedbackPolicy()
    guard_rails: GuardRails = GuardRails()
    schedules: ScheduleSettings = ScheduleSettings()
    tracking: TrackingSettings = TrackingSettings()

    @model_validator(mode="after")
    def _unique_ids(self) -> "TenantConfig":
        for label, ids in (("source id", [s.id for s in self.sources]), ("transport name", [t.name for t in self.transports])):
            dupes = sorted({i for i in ids if ids.count(i) > 1})
            if dupes:
                raise ValueError(f"duplicate {label}: {', '.join(dupes)}")
        if self.tracking.on and self.tracking_base_url is None:
            raise ValueError("tracking is on but has no base_url, and there is no unsubscribe.base_url to default to")
        return self

    @property
    def tracking_base_url(self) -> str | None:
        """Where ``/o/`` and ``/c/`` are served: ``tracking.base_url``, else ``unsubscribe.base_url``."""
        return self.tracking.base_url or (self.unsubscribe.base_url if self.unsubscribe else None)

    def source(self, source_id: str) -> SourceConfig | None:
        return next((s for s in self.sources if s.id == source_id), None)

    def segment(self, name: str):
        return next((s for s in self.segments if s.name == name), None)

    def transport(self, name: str) -> TransportConfig | None:
        """The transport called ``name``; ``outbox`` exists even when the file declares none."""
        found = next((t for t in self.transports if t.name == name), None)
        return OutboxTransport() if found is None and name == OUTBOX else found


def excerpt(text: str, limit: int = PROBLEM_MAX_CHARS) -> str:
    """``text`` cut to ``limit`` characters, control characters escaped: safe to print and to log."""
    cut = text[:limit]
    shown = "".join(c if c.isprintable() else repr(c)[1:-1] for c in cut)
    return shown + (f"... ({len(text) - limit} more characters)" if len(text) > limit else "")


class ConfigError(ValueError):
    """A tenant file that cannot be used; ``str()`` names the file, the path and the problem.

    Each problem is cut to a short excerpt and at most ``MAX_PROBLEMS`` are kept: a crafted file
    must not turn its error into a flood.
    """

    def __init__(self, path: Path, problems: list[str]):
        self.path = path
        self.problems = [excerpt(p) for p in problems[:MAX_PROBLEMS]]
        if len(problems) > MAX_PROBLEMS:
            self.problems.append(f"... and {len(problems) - MAX_PROBLEMS} more problems")
        super().__init__("\n".join(f"{path}: {p}" for p in self.problems))


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
    if (error.get("ctx") or {}).get("class_name") == "EnvSecret":
        # a secret written into the file where {env: NAME} belongs: never echoed (errors reach logs and the UI)
        return f"{where}: a secret is not written in the file; name the environment variable that holds it: {{env: NAME}}"
    return f"{where} = {error.get('input')!r:.120}: {msg}"


class _TenantLoader(yaml.SafeLoader):
    """The safe loader without anchors and aliases: a node is never shared, so the data is no
    larger than the text."""

    def compose_node(self, parent, index):
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise yaml.MarkedYAMLError(
                problem="anchors and aliases (&name, *name) are not allowed in workspace files", problem_mark=event.start_mark
            )
        return super().compose_node(parent, index)


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """Where and what, without the YAML library's quote of the offending line."""
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        return f"not valid YAML at line {mark.line + 1}, column {mark.column + 1}: {exc.problem}"
    return f"not valid YAML: {exc}"


def read_tenant_text(path: Path) -> str:
    """The text of a tenant file: a regular file of at most ``TENANT_FILE_MAX_BYTES``, in UTF-8."""
    try:
        with path.open("rb") as fh:
            if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
                raise ConfigError(path, ["not a regular file"])
            data = fh.read(TENANT_FILE_MAX_BYTES + 1)
            size = os.fstat(fh.fileno()).st_size
    except OSError as exc:
        raise ConfigError(path, [f"cannot read: {exc.strerror or type(exc).__name__}"]) from None
    if len(data) > TENANT_FILE_MAX_BYTES:
        raise ConfigError(path, [f"file is {max(size, len(data))} bytes; a tenant file may hold at most {TENANT_FILE_MAX_BYTES} bytes"])
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(path, [f"not UTF-8 text: {exc}"]) from None


def parse_mapping(path: Path, text: str) -> tuple[dict, yaml.Node]:
    """The top-level mapping of a workspace YAML file (tenant, campaign or template) and its node
    (for line numbers); :class:`ConfigError` naming ``path`` when the text is no such mapping."""
    loader = _TenantLoader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as exc:
        raise ConfigError(path, [_yaml_problem(exc)]) from None
    except RecursionError:
        raise ConfigError(path, ["not valid YAML: values nested too deeply"]) from None
    finally:
        loader.dispose()
    if not isinstance(data, dict):
        raise ConfigError(path, [f"expected a mapping at the top level, got {type(data).__name__}"])
    return data, node


def validate_file(path: Path, data: dict, model: type[_Model]) -> _Model:
    """``data`` as ``model``; :class:`ConfigError` naming ``path``, each key and what is wrong."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(path, [_describe(e) for e in exc.errors()]) from None


def parse_tenant(path: Path, text: str | None = None) -> TenantConfig:
    text = read_tenant_text(path) if text is None else text
    if len(text) > TENANT_FILE_MAX_BYTES:
        raise ConfigError(path, [f"text is {len(text)} characters; a tenant file may hold at most {TENANT_FILE_MAX_BYTES} bytes"])
    data, _ = parse_mapping(path, text)
    config = validate_file(path, data, TenantConfig)
    if config.id != path.stem:
        raise ConfigError(path, [f"id = {config.id!r}: must equal the file name {path.stem!r}"])
    return config


@dataclass(frozen=True)
class Workspace:
    """The valid tenants, and the error of each tenant file that could not be used (by file stem)."""

    root: Path
    tenants: dict[str, TenantConfig]
    digests: dict[str, str]
    errors: dict[str, str] = field(default_factory=dict)

    @property
    def inbox(self) -> Path:
        return self.root / "inbox"

    def source_dir(self, tenant_id: str, source_id: str) -> Path:
        return self.inbox / tenant_id / source_id


def load_workspace(root: Path) -> Workspace:
    """Load and validate every ``tenants/*.yaml``.

    A broken file stops its own tenant only: the others load, and its error (naming the file, the
    path inside it and the problem) is in ``errors`` for the sensor, the assets and the CLI to show.
    Only a workspace without a ``tenants/`` folder raises.
    """
    root = Path(root)
    tenant_dir = root / "tenants"
    if not tenant_dir.is_dir():
        raise ConfigError(root, [f"no tenants/ folder (expected {tenant_dir})"])
    tenants: dict[str, TenantConfig] = {}
    digests: dict[str, str] = {}
    errors: dict[str, str] = {}
    for path in sorted(tenant_dir.glob("*.y*ml")):
        try:
            tenants[path.stem], digests[path.stem] = read_tenant_file(path)
        except ConfigError as exc:
            errors[path.stem] = str(exc)
    return Workspace(root=root, tenants=tenants, digests=digests, errors=errors)


# Parsed tenant files by (path, digest of the text): each asset of a run over a thousand tenants reads
# every tenant file again, and parsing is most of the cost. The text is read and hashed each time,
# so an edited file is parsed again; configs are frozen, so sharing one is safe.
_PARSED: dict[tuple[str, str], TenantConfig] = {}
_PARSED_MAX = 4096


def read_tenant_file(path: Path) -> tuple[TenantConfig, str]:
    """One tenant file: its validated config and the digest of its text."""
    text = read_tenant_text(path)
    digest = hashlib.sha256(text.encode()).hexdigest()
    key = (str(path), digest)
    config = _PARSED.get(key)
    if config is None:
        config = parse_tenant(path, text)  # a refused file raises: never cached
        if len(_PARSED) >= _PARSED_MAX:
            _PARSED.clear()
        _PARSED[key] = config
    return config, digest


def load_tenants(root: Path, tenant_ids: Iterable[str]) -> Workspace:
    """The workspace with only the named tenants (a run of one tenant need not parse a thousand files).

    A tenant without a file is left out, as :func:`load_workspace` would; a broken file's error is
    kept in ``errors``, as there.
    """
    root = Path(root)
    tenants: dict[str, TenantConfig] = {}
    digests: dict[str, str] = {}
    errors: dict[str, str] = {}
    for tenant_id in sorted(set(tenant_ids)):
        if not is_slug(tenant_id):  # a partition key is not a path
            continue
        path = next((p for p in (root / "tenants" / f"{tenant_id}{ext}" for ext in (".yaml", ".yml")) if p.is_file()), None)
        if path is None:
            continue
        try:
            tenants[tenant_id], digests[tenant_id] = read_tenant_file(path)
        except ConfigError as exc:
            errors[tenant_id] = str(exc)
    return Workspace(root=root, tenants=tenants, digests=digests, errors=errors)


def one_tenant(root: Path, tenant_id: str) -> tuple[TenantConfig, Workspace]:
    """The tenant's config and a workspace holding only it; ``LookupError`` with the tenant file's
    problems, or naming a tenant that has no file."""
    ws = load_tenants(root, [tenant_id])
    if tenant_id not in ws.tenants:
        raise LookupError(ws.errors.get(tenant_id) or f"no tenant {tenant_id[:64]!r}")
    return ws.tenants[tenant_id], ws
