"""The dossier of one person: every row a tenant holds about an address, shaped for reading or export.

:func:`build_dossier` takes the rows :func:`.store.dossier_rows` read and gives each golden-record
field its origin (source, file path and line: the sparse provenance of ``contacts`` expanded, as
``contacts.merge_store`` describes it). :func:`dossier_json` is the export (keys sorted, dates in
ISO 8601); :func:`explain_lines` the readable form (the caller makes each line safe for a terminal).
"""

from __future__ import annotations

import json
from datetime import date, datetime
from pathlib import PurePath
from typing import Any

from email_engine_assets.contacts.fields import TEXT_FIELDS

SECTIONS: tuple[str, ...] = (
    "staged_rows", "rejected_rows", "tags", "validation", "enrichment", "segments", "sends", "events", "suppression", "mailwizz",
    "files_on_disk",
)


def _origin(entry: dict | None, files: dict[int, dict]) -> dict | None:
    if not entry or entry.get("file_id") is None:
        return None
    file_id = int(entry["file_id"])
    known = files.get(file_id, {})
    return {"source": known.get("source", entry.get("source")), "file": known.get("path"), "file_id": file_id,
            "line": entry.get("line"), "priority": entry.get("priority")}


def field_origins(contact: dict, files: dict[int, dict]) -> dict[str, dict]:
    """{field: {"value", "source", "file", "file_id", "line", "priority"}} for each filled field.

    A field is won by the entry in ``field_sources`` when it has one, else by the contact's primary
    staged row (``primary_file_id`` / ``primary_line_no``).
    """
    exceptions = contact.get("field_sources") or {}
    primary = None
    if contact.get("primary_file_id") is not None:
        primary = {"file_id": contact["primary_file_id"], "line": contact["primary_line_no"], "priority": contact["primary_priority"]}
    out = {}
    for field in TEXT_FIELDS:
        value = contact.get(field)
        if value is None:
            continue
        origin = _origin(exceptions.get(field) or primary, files) or {"source": None, "file": None, "file_id": None,
                                                                      "line": None, "priority": None}
        out[field] = {"value": value, **origin}
    return out


def build_dossier(tenant_id: str, email_key: str, rows: dict) -> dict[str, Any]:
    """The export shape: ``tenant``, ``email``, ``erased_at``, ``contact`` (or None) and every section."""
    contact = rows.get("contact")
    shaped = None
    if contact:
        shaped = {
            "contact_id": contact["contact_id"],
            "created_at": contact["created_at"],
            "updated_at": contact["updated_at"],
            "sources": list(contact.get("sources") or []),
            "tags": list(contact.get("tags") or []),
            "fields": field_origins(contact, rows.get("files") or {}),
        }
    dossier = {"tenant": tenant_id, "email": email_key, "erased_at": rows.get("erased_at"), "contact": shaped}
    for section in SECTIONS:
        dossier[section] = rows.get(section)
    return dossier


def _plain(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, bytes | memoryview):
        return bytes(value).hex()
    if isinstance(value, set | frozenset | tuple):
        return sorted(value) if isinstance(value, set | frozenset) else list(value)
    return str(value)


def dossier_json(dossier: dict) -> str:
    """The dossier as JSON: stable (sorted) keys, ISO dates, non-ASCII kept as it is."""
    return json.dumps(dossier, sort_keys=True, default=_plain, ensure_ascii=False, indent=2)


def _when(value: Any) -> str:
    return value.isoformat(timespec="seconds") if isinstance(value, datetime) else str(value)


def _where(source: str | None, path: str | None, line: Any) -> str:
    """``source/file-name:line`` (the file's name only: the inbox path is the operator's own)."""
    return f"{source or '?'}/{PurePath(path).name if path else '?'}:{line}"


def _who(event: dict) -> str:
    """Who made an open or click, as tracking classed it (``machine``; NULL: nobody classed it)."""
    rule = f" by rule {event['classified_by']}" if event.get("classified_by") else ""
    if event.get("machine") is None:
        return "unclassified"
    return ("a machine" if event["machine"] else "a person") + rule


def explain_lines(dossier: dict) -> list[str]:
    """A readable account of the dossier, one line per fact (not yet made terminal-safe)."""
    lines = [f"{dossier['tenant']}: {dossier['email']}"]
    if dossier.get("erased_at"):
        lines.append(f"  erased at {_when(dossier['erased_at'])}: a later import rejects this address (reason 'erased')")
    contact = dossier.get("contact")
    if contact is None:
        lines.append("  no contact holds this address")
    else:
        lines.append(f"  contact {contact['contact_id']}, created {_when(contact['created_at'])}, updated {_when(contact['updated_at'])}")
        lines.append(f"  sources: {', '.join(contact['sources']) or '-'}; tags: {', '.join(contact['tags']) or '-'}")
        lines.append("  fields (value  <-  source/file:line):")
        for field, origin in contact["fields"].items():
            where = _where(origin["source"], origin["file"], origin["line"]) if origin["file_id"] is not None else "origin unknown"
            lines.append(f"    {field:<11} {origin['value']}  <-  {where}")
    staged = dossier.get("staged_rows") or []
    lines.append(f"  staged rows: {len(staged)}")
    for row in staged:
        lines.append(f"    {_where(row['source'], row['path'], row['line'])}" + (" (duplicate in its file)" if row["is_duplicate"] else ""))
    rejected = dossier.get("rejected_rows") or []
    if rejected:
        lines.append(f"  rejected rows mentioning the address: {len(rejected)}")
        for row in rejected:
            lines.append(f"    {_where(row['source'], row['path'], row['line'])}: {row['reason']}")
    tags = dossier.get("tags") or []
    lines.append("  tag assignments: " + (", ".join(f"{t['tag']} ({t['provenance']})" for t in tags) or "-"))
    validation = dossier.get("validation")
    if validation:
        flags = [f for f in ("disposable", "role_account", "free_mail") if validation.get(f)]
        lines.append(f"  validation: {validation['verdict']}" + (f" ({', '.join(validation['reasons'])})" if validation.get("reasons") else "")
                     + f"; domain {validation.get('domain_status') or '-'}, mailbox {validation.get('mailbox_status') or '-'}"
                     + (f"; flags: {', '.join(flags)}" if flags else "") + f"; checked {_when(validation['checked_at'])}")
    else:
        lines.append("  validation: -")
    enrichment = dossier.get("enrichment")
    if enrichment:
        lines.append(f"  enrichment: language {enrichment['language']} ({enrichment['language_rule']}), "
                     f"country {enrichment.get('country') or '-'}, phone {enrichment.get('phone_e164') or '-'}")
    lines.append("  segments: " + (", ".join(s["segment"] for s in dossier.get("segments") or []) or "-"))
    sends = dossier.get("sends") or []
    lines.append(f"  sends: {len(sends)}")
    for s in sends:
        lines.append(f"    {s['campaign']}: {s['state']}" + (f", template {s['template']}" if s.get("template") else "")
                     + f", queued {_when(s['queued_at'])}" + (f", settled {_when(s['settled_at'])}" if s.get("settled_at") else "")
                     + (f" ({s['detail']})" if s.get("detail") else ""))
    events = dossier.get("events") or []
    lines.append(f"  events: {len(events)}")
    for e in events:
        lines.append(f"    {_when(e['occurred_at'])} {e['event_type']}" + (f" ({e['bounce_class']})" if e.get("bounce_class") else "")
                     + f" via {e['origin']}" + (f", campaign {e['campaign']}" if e.get("campaign") else "")
                     + (f", link {e['link_index']}" if e.get("link_index") is not None else "")
                     + (f" ({_who(e)})" if e["event_type"] in ("opened", "clicked") else "")
                     + (f": {e['detail']}" if e.get("detail") else "") + (f" -> {e['url']}" if e.get("url") else ""))
    suppression = dossier.get("suppression")
    lines.append("  suppression: " + (f"{suppression['reason']} since {_when(suppression['created_at'])}" if suppression else "-"))
    mailwizz = dossier.get("mailwizz") or []
    lines.append("  mailwizz: " + ("; ".join(f"{m['instance']} list {m['list_name']}: {m['state']}" for m in mailwizz) or "-"))
    disk = dossier.get("files_on_disk") or {}
    for path in disk.get("outbox") or []:
        lines.append(f"  outbox message: {path}")
    for entry in disk.get("inbox") or []:
        lines.append(f"  inbox file ({entry['written_by']}): {entry['path']}, line(s) {', '.join(map(str, entry['lines']))}")
    return lines
