"""Mapping source headers to canonical contact fields.

Headers are matched by synonyms in English, French, German, Spanish, Italian and Portuguese,
after folding case, accents, spaces, hyphens and underscores (``"E-Mail Adresse"``,
``"adresse_email"`` and ``"Adresse e-mail"`` all match). Per-source overrides from the tenant
configuration map a header to a field and win over synonyms.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping, Sequence

from email_engine_assets.contacts.fields import CANONICAL_FIELDS
from email_engine_assets.contacts.sniffing import excerpt

SYNONYMS: dict[str, tuple[str, ...]] = {
    "email": (
        "email", "e-mail", "mail", "courriel", "adresse courriel", "correo", "correo electronico",
        "email address", "e-mail address", "mail address", "adresse email", "adresse e-mail",
        "adresse mail", "e-mail-adresse", "emailadresse", "mailadresse", "posta elettronica",
        "indirizzo email", "endereco de email", "emails",
    ),
    "first_name": (
        "first name", "firstname", "given name", "forename", "prénom", "prenom", "vorname",
        "nombre", "nome", "primeiro nome",
    ),
    "last_name": (
        "last name", "lastname", "surname", "family name", "nom", "nom de famille", "nachname",
        "familienname", "apellido", "apellidos", "cognome", "sobrenome",
    ),
    "full_name": (
        "name", "full name", "fullname", "contact name", "nom complet", "nombre completo",
        "nome completo", "vollständiger name",
    ),
    "company": (
        "company", "company name", "organisation", "organization", "société", "societe",
        "entreprise", "firma", "unternehmen", "empresa", "azienda", "raison sociale",
    ),
    "phone": (
        "phone", "phone number", "telephone", "téléphone", "tel", "mobile", "mobile phone",
        "portable", "telefon", "telefonnummer", "telefono", "teléfono", "handy", "cellulare",
        "movil", "celular",
    ),
    "country": ("country", "pays", "land", "país", "pais", "paese", "country code"),
    "language": ("language", "lang", "langue", "sprache", "idioma", "lingua", "locale"),
    "city": ("city", "ville", "stadt", "ort", "ciudad", "città", "cidade", "town"),
    "category": ("category", "catégorie", "categorie", "kategorie", "categoría", "categoria"),
    "tags": ("tags", "tag", "labels", "label", "étiquettes", "etiquettes", "etiquetas", "etichette"),
    "website": ("website", "web site", "site", "site web", "url", "web", "webseite", "sitio web", "sito web"),
}

_IGNORED = re.compile(r"[\s\-_]+")


_LISTED_COLUMNS = 10
_LISTED_NAME_CHARS = 40


class MissingEmailColumn(ValueError):
    """No header maps to ``email``; ``columns`` holds the headers that were found.

    The message lists a few of them, each cut short and escaped like ``repr``: the header is file
    content, and a file that is not a contact list (``/proc/self/environ``) must not end up in logs.
    """

    def __init__(self, columns: Sequence[str]) -> None:
        shown = [excerpt(name, _LISTED_NAME_CHARS) for name in columns[:_LISTED_COLUMNS]]
        if len(columns) > _LISTED_COLUMNS:
            shown.append(f"and {len(columns) - _LISTED_COLUMNS} more")
        listed = ", ".join(shown) or "none"
        super().__init__(f"no email column found ({len(columns)} columns found: {listed})")
        self.columns = list(columns)


def header_key(name: str) -> str:
    """The form headers are compared in: lower case, accents folded, no spaces/hyphens/underscores."""
    folded = unicodedata.normalize("NFKD", name.strip().lstrip("\ufeff"))
    folded = "".join(char for char in folded if not unicodedata.combining(char))
    return _IGNORED.sub("", folded.casefold())


def _synonym_index() -> dict[str, str]:
    index: dict[str, str] = {}
    for canonical, synonyms in SYNONYMS.items():
        for synonym in (canonical, *synonyms):
            key = header_key(synonym)
            if index.setdefault(key, canonical) != canonical:
                raise RuntimeError(f"synonym {synonym!r} is listed for both {index[key]} and {canonical}")
    return index


_SYNONYM_INDEX = _synonym_index()


def map_columns(header: Sequence[str], overrides: Mapping[str, str] | None = None) -> dict[str, str]:
    """Return {canonical_field: header_name}. Matching is case-, accent-, space-, hyphen-, underscore-insensitive.
    Overrides map a header name to a canonical field and win over synonyms. First header wins when several match.
    Raises MissingEmailColumn when no email column is found, listing the columns found. Unknown override target -> ValueError naming it.

    An override key is matched against the header the same way (exact name first); an override
    whose header is absent from this file is ignored, since files of one source may differ.
    A header taken by an override is not matched again by synonyms.
    """
    mapping = _apply_overrides(header, overrides or {})
    taken = set(mapping.values())
    for name in header:
        if name in taken:
            continue
        canonical = _SYNONYM_INDEX.get(header_key(name))
        if canonical is not None and canonical not in mapping:
            mapping[canonical] = name
            taken.add(name)
    if "email" not in mapping:
        raise MissingEmailColumn(header)
    return {field: mapping[field] for field in CANONICAL_FIELDS if field in mapping}


def _apply_overrides(header: Sequence[str], overrides: Mapping[str, str]) -> dict[str, str]:
    by_key: dict[str, str] = {}
    for name in header:
        by_key.setdefault(header_key(name), name)
    mapping: dict[str, str] = {}
    for source, canonical in overrides.items():
        if canonical not in CANONICAL_FIELDS:
            raise ValueError(
                f"column override {source!r} -> {canonical!r}: unknown field {canonical!r}; "
                f"expected one of {', '.join(CANONICAL_FIELDS)}")
        name = source if source in header else by_key.get(header_key(source))
        if name is None:
            continue
        if canonical in mapping and mapping[canonical] != name:
            raise ValueError(
                f"column overrides map both {mapping[canonical]!r} and {name!r} to {canonical!r}")
        mapping[canonical] = name
    return mapping
