"""Template files load safely; the choice per contact follows the rules in order."""

from __future__ import annotations

import os

import pytest

from email_engine_assets.content.choice import CHOICE_RULES, Chooser, choose
from email_engine_assets.content.templates import (
    TEMPLATE_FILE_MAX_BYTES,
    load_templates,
)
from email_engine_tests.content_helpers import simple, write_template


def test_good_files_load_and_broken_ones_are_named(tmp_path):
    write_template(tmp_path, "acme", "welcome_fr.yaml", simple("b2b", "fr"))
    write_template(tmp_path, "acme", "unknown_key.yaml", simple("b2b", "en") + "colour: red\n")
    write_template(tmp_path, "acme", "bad_language.yaml", simple("b2b", "it"))
    write_template(tmp_path, "acme", "no_subject.yaml", "category: b2b\nlanguage: en\nhtml: x\n")
    write_template(tmp_path, "acme", "Bad Name.yaml", simple("b2b", "en"))
    write_template(tmp_path, "acme", "bomb.yaml", "a: &x [1]\nb: *x\n")
    write_template(tmp_path, "acme", "notes.txt", "not a template")
    found = load_templates(tmp_path, "acme")
    assert set(found.templates) == {"welcome_fr"}
    t = found.templates["welcome_fr"]
    assert (t.category, t.language, t.tags, t.file) == ("b2b", "fr", frozenset(), "templates/acme/welcome_fr.yaml")
    assert found.errors["unknown_key"] == "templates/acme/unknown_key.yaml: colour: unknown key"
    assert "templates/acme/bad_language.yaml: language = 'it': expected one of fr, en" in found.errors["bad_language"]
    assert found.errors["no_subject"] == "templates/acme/no_subject.yaml: subject: required key is missing"
    assert "must be a slug" in found.errors["Bad Name"]
    assert "anchors and aliases" in found.errors["bomb"]


def test_no_template_folder_is_an_empty_set(tmp_path):
    found = load_templates(tmp_path, "acme")
    assert found.templates == {} and found.errors == {}
    with pytest.raises(ValueError, match="not a slug"):
        load_templates(tmp_path, "../etc")


def test_links_and_oversized_files_are_refused(tmp_path):
    secret = tmp_path / "secret.yaml"
    secret.write_text(simple("b2b", "en"))
    folder = write_template(tmp_path, "acme", "ok.yaml", simple("b2b", "en")).parent
    os.symlink(secret, folder / "linked.yaml")
    (folder / "huge.yaml").write_text(simple("b2b", "en") + "#" * TEMPLATE_FILE_MAX_BYTES)
    os.mkfifo(folder / "fifo.yaml")
    found = load_templates(tmp_path, "acme")
    assert set(found.templates) == {"ok"}
    assert "symbolic link" in found.errors["linked"]
    assert "at most" in found.errors["huge"] or "over" in found.errors["huge"]
    assert "FIFO" in found.errors["fifo"]


def test_a_linked_tenant_folder_is_refused(tmp_path):
    other = tmp_path / "elsewhere"
    write_template(other, "globex", "x.yaml", simple("b2b", "en"))
    (tmp_path / "templates").mkdir()
    os.symlink(other / "templates" / "globex", tmp_path / "templates" / "acme")
    found = load_templates(tmp_path, "acme")
    assert found.templates == {}
    assert "symbolic link" in found.errors[""]


def test_part_lines_point_into_the_file(tmp_path):
    write_template(tmp_path, "acme", "t.yaml", "category: b2b\nlanguage: en\nsubject: Hi\nhtml: |\n  <p>a</p>\n  <p>b</p>\ntext: plain\n")
    t = load_templates(tmp_path, "acme").templates["t"]
    assert t.lines == {"subject": 3, "html": 5, "text": 7}
    assert t.file_line("html", 2) == 6


@pytest.fixture
def library(tmp_path):
    files = {
        "b2b_fr": simple("b2b", "fr"),
        "b2b_fr_salon": simple("b2b", "fr", tags=("salon_2026",)),
        "b2b_fr_salon_vip": simple("b2b", "fr", tags=("salon_2026", "vip")),
        "a_b2b_fr_vip": simple("b2b", "fr", tags=("vip",)),
        "z_b2b_fr_vip": simple("b2b", "fr", tags=("vip",)),
        "b2b_en": simple("b2b", "en"),
        "b2c_de": simple("b2c", "de"),
        "news_es": simple("news", "es"),
        "news_en": simple("news", "en"),
        "other_en_tagged": simple("other", "en", tags=("vip",)),
    }
    for name, text in files.items():
        write_template(tmp_path, "acme", f"{name}.yaml", text)
    loaded = load_templates(tmp_path, "acme")
    assert not loaded.errors
    return loaded


@pytest.mark.parametrize(
    ("category", "language", "tags", "default_category", "expected"),
    [
        ("b2b", "fr", ["salon_2026", "vip", "crm"], "news", ("b2b_fr_salon_vip", "variant")),  # most tags first
        ("b2b", "fr", ["salon_2026"], "news", ("b2b_fr_salon", "variant")),
        ("b2b", "fr", ["vip"], "news", ("a_b2b_fr_vip", "variant")),  # equal tag counts: file name
        ("b2b", "fr", ["crm"], "news", ("b2b_fr", "category_language")),
        ("b2b", "de", ["vip"], "news", ("b2b_en", "category_en")),  # no b2b de: English
        ("b2b", None, [], "news", ("b2b_en", "category_en")),  # language unknown
        ("b2c", "es", [], "news", ("news_es", "default_category_language")),
        ("b2c", "de", [], "news", ("b2c_de", "category_language")),
        ("b2c", "ru", [], "news", ("news_en", "default_category_en")),
        ("b2c", "ru", [], None, None),  # nothing fits: the caller skips the contact
        ("other", "en", [], None, None),  # a variant is never chosen for contacts without its tags
        ("other", "en", ["vip"], None, ("other_en_tagged", "variant")),
    ],
)
def test_choice_rules(library, category, language, tags, default_category, expected):
    found = choose(library, category=category, language=language, tags=tags, default_category=default_category)
    assert (found and (found.template.name, found.rule)) == expected
    assert found is None or found.rule in CHOICE_RULES


def test_chooser_caches_per_language_and_relevant_tags(library):
    chooser = Chooser(library, category="b2b", default_category="news")
    for i in range(10_000):
        chooser.choose("fr", [f"import_{i}", "salon_2026"])
        chooser.choose("de", [f"import_{i}"])
    assert len(chooser._cache) == 2  # unrelated tags are not part of the key
    assert chooser.choose("fr", ["salon_2026", "x"]).template.name == "b2b_fr_salon"
    assert {t.name for t in chooser.reachable()} >= {"b2b_fr", "b2b_fr_salon_vip", "news_es", "b2b_en"}
    assert "b2c_de" not in {t.name for t in chooser.reachable()}
