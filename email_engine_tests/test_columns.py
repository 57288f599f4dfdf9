"""Header synonyms in several languages, overrides and the missing-email error."""

from __future__ import annotations

import pytest

from email_engine_assets.contacts.columns import (
    MissingEmailColumn,
    header_key,
    map_columns,
)
from email_engine_assets.contacts.fields import CANONICAL_FIELDS

SYNONYM_CASES = [
    # (header as found in a file, canonical field)
    ("email", "email"), ("E-mail", "email"), ("MAIL", "email"), ("Courriel", "email"),
    ("correo", "email"), ("Correo electrónico", "email"), ("Email Address", "email"),
    ("adresse_email", "email"), ("Adresse mail", "email"), ("E-Mail-Adresse", "email"),
    ("Emailadresse", "email"), ("Posta elettronica", "email"),
    ("First Name", "first_name"), ("firstname", "first_name"), ("Given-Name", "first_name"),
    ("Prénom", "first_name"), ("PRENOM", "first_name"), ("Vorname", "first_name"),
    ("Nombre", "first_name"), ("nome", "first_name"),
    ("last_name", "last_name"), ("LastName", "last_name"), ("Surname", "last_name"),
    ("Family name", "last_name"), ("Nom", "last_name"), ("Nom de famille", "last_name"),
    ("Nachname", "last_name"), ("Apellido", "last_name"), ("apellidos", "last_name"),
    ("Cognome", "last_name"),
    ("Name", "full_name"), ("Full Name", "full_name"), ("Nom complet", "full_name"),
    ("Nombre completo", "full_name"),
    ("Company", "company"), ("Organisation", "company"), ("organization", "company"),
    ("Société", "company"), ("societe", "company"), ("Entreprise", "company"),
    ("Firma", "company"), ("Unternehmen", "company"), ("Empresa", "company"),
    ("Phone", "phone"), ("Telephone", "phone"), ("Téléphone", "phone"), ("Tel", "phone"),
    ("Mobile", "phone"), ("Portable", "phone"), ("Telefon", "phone"), ("telefono", "phone"),
    ("Teléfono", "phone"), ("Handy", "phone"),
    ("Country", "country"), ("Pays", "country"), ("Land", "country"), ("País", "country"),
    ("pais", "country"), ("Paese", "country"),
    ("Language", "language"), ("lang", "language"), ("Langue", "language"),
    ("Sprache", "language"), ("Idioma", "language"), ("Lingua", "language"),
    ("City", "city"), ("Ville", "city"), ("Stadt", "city"), ("Ciudad", "city"),
    ("Category", "category"),
    ("Tags", "tags"), ("tag", "tags"), ("Labels", "tags"), ("Étiquettes", "tags"),
    ("Website", "website"), ("Site", "website"), ("URL", "website"), ("Web", "website"),
]


@pytest.mark.parametrize(("header", "canonical"), SYNONYM_CASES)
def test_synonym_maps_to_canonical_field(header: str, canonical: str) -> None:
    columns = ["email_column_placeholder", header] if canonical != "email" else [header]
    overrides = {"email_column_placeholder": "email"} if canonical != "email" else None
    assert map_columns(columns, overrides)[canonical] == header


def test_full_french_header() -> None:
    header = ["Courriel", "Prénom", "Nom", "Société", "Téléphone", "Pays", "Langue", "Ville", "Étiquettes"]
    assert map_columns(header) == {
        "email": "Courriel", "first_name": "Prénom", "last_name": "Nom", "company": "Société",
        "phone": "Téléphone", "country": "Pays", "language": "Langue", "city": "Ville",
        "tags": "Étiquettes",
    }


def test_full_german_and_spanish_headers() -> None:
    german = map_columns(["E-Mail-Adresse", "Vorname", "Nachname", "Firma", "Handy", "Land", "Sprache", "Stadt"])
    assert german == {
        "email": "E-Mail-Adresse", "first_name": "Vorname", "last_name": "Nachname",
        "company": "Firma", "phone": "Handy", "country": "Land", "language": "Sprache", "city": "Stadt",
    }
    spanish = map_columns(["Correo electrónico", "Nombre", "Apellidos", "Empresa", "Teléfono", "País", "Idioma", "Ciudad"])
    assert spanish == {
        "email": "Correo electrónico", "first_name": "Nombre", "last_name": "Apellidos",
        "company": "Empresa", "phone": "Teléfono", "country": "País", "language": "Idioma", "city": "Ciudad",
    }


def test_matching_ignores_case_accents_spaces_hyphens_underscores() -> None:
    assert header_key(" Adresse E-Mail ") == header_key("adresse_email") == "adresseemail"
    assert header_key("PRÉNOM") == header_key("prenom")
    assert map_columns(["ADRESSE__E-MAIL", "pré_nom"]) == {"email": "ADRESSE__E-MAIL", "first_name": "pré_nom"}


def test_first_matching_header_wins() -> None:
    mapping = map_columns(["Mail", "email", "Tel", "Mobile"])
    assert mapping["email"] == "Mail"
    assert mapping["phone"] == "Tel"


def test_unmatched_headers_are_left_out() -> None:
    assert map_columns(["email", "Notes", "Score"]) == {"email": "email"}


def test_override_wins_over_synonyms() -> None:
    header = ["contact", "email", "Nom"]
    mapping = map_columns(header, {"contact": "email", "Nom": "company"})
    assert mapping == {"email": "contact", "company": "Nom"}


def test_override_key_is_matched_like_synonyms() -> None:
    assert map_columns(["Adresse Perso", "x"], {"adresse-perso": "email"}) == {"email": "Adresse Perso"}


def test_override_for_absent_header_is_ignored() -> None:
    assert map_columns(["email", "Name"], {"Raison sociale": "company"}) == {"email": "email", "full_name": "Name"}


def test_override_to_unknown_field_names_it() -> None:
    with pytest.raises(ValueError, match="'e_mail'"):
        map_columns(["email", "x"], {"x": "e_mail"})


def test_two_overrides_to_one_field_are_refused() -> None:
    with pytest.raises(ValueError, match="'a'.*'b'"):
        map_columns(["a", "b"], {"a": "email", "b": "email"})


def test_missing_email_lists_columns_found() -> None:
    with pytest.raises(MissingEmailColumn) as caught:
        map_columns(["Prénom", "Nom", "Téléphone"])
    message = str(caught.value)
    for name in ("Prénom", "Nom", "Téléphone"):
        assert repr(name) in message
    assert caught.value.columns == ["Prénom", "Nom", "Téléphone"]
    assert isinstance(caught.value, ValueError)


def test_result_keys_follow_canonical_order() -> None:
    mapping = map_columns(["Tags", "Ville", "Email", "Name"])
    assert list(mapping) == [f for f in CANONICAL_FIELDS if f in mapping]
