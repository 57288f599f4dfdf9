"""Sandboxed rendering: strict names with file and line, escaping, caps, RTL and CJK documents."""

from __future__ import annotations

from pathlib import Path

import pytest

from email_engine_assets.content.rendering import (
    Renderer,
    RenderError,
    TenantInfo,
    html_document,
)
from email_engine_assets.content.templates import parse_template


def template(html: str, *, subject: str = "Hi {{ first_name }}", language: str = "en", text: str | None = None, name: str = "t"):
    body = "\n".join("  " + line for line in html.splitlines())
    extra = "text: |\n" + "\n".join("  " + line for line in text.splitlines()) + "\n" if text is not None else ""
    source = f"category: b2b\nlanguage: {language}\nsubject: '{subject}'\nhtml: |\n{body}\n{extra}"
    return parse_template(Path(f"{name}.yaml"), source, f"templates/acme/{name}.yaml")


def test_variables_render_and_html_is_escaped():
    t = template('<style>p { color: red }</style>\n<p>Hello {{ first_name }} from {{ tenant }} ({{ tenant.id }})</p>\n<a href="{{ unsubscribe_url }}">stop</a>')
    out = Renderer().render(t, {"first_name": "<b>Ann</b>", "unsubscribe_url": "https://u.example/u/x?a=1&b=2", "tenant": TenantInfo("acme", "Acme")})
    assert out.subject == "Hi <b>Ann</b>"  # the subject is not HTML
    assert "Hello &lt;b&gt;Ann&lt;/b&gt; from Acme (acme)" in out.html
    assert '<p style="color: red;">' in out.html and "<style>" not in out.html  # CSS inlined
    assert 'href="https://u.example/u/x?a=1&amp;b=2"' in out.html
    assert "Hello <b>Ann</b> from Acme (acme)" in out.text  # derived from the HTML
    assert "[stop](https://u.example/u/x?a=1&b=2)" in out.text  # the link survives in the text part


def test_a_known_field_without_value_renders_empty():
    t = template("<p>[{{ company }}][{{ last_name }}]</p>", subject="Hi {{ first_name }}!", text="Dear {{ first_name }}, {{ tags }}")
    out = Renderer().render(t, {"tags": ["a", "b"]})
    assert "<p>[][]</p>" in out.html
    assert out.subject == "Hi !"
    assert out.text == "Dear , a, b\n"


def test_an_unknown_name_is_an_error_with_file_line_and_variable():
    t = template("<p>one</p>\n<p>two</p>\n<p>{{ frist_name }}</p>")
    renderer = Renderer()
    problems = renderer.check(t)
    assert [(p.file, p.line, p.variable, p.part) for p in problems] == [("templates/acme/t.yaml", 7, "frist_name", "html")]
    assert str(problems[0]).startswith("templates/acme/t.yaml, line 7 (html): unknown variable 'frist_name'")
    with pytest.raises(RenderError) as caught:
        renderer.render(t, {"first_name": "x"})
    assert caught.value.line == 7


def test_an_undefined_attribute_at_render_time_names_the_line():
    t = template("<p>a</p>\n<p>{{ tenant.owner }}</p>")
    with pytest.raises(RenderError) as caught:
        Renderer().render(t, {"tenant": TenantInfo("acme", "Acme")})
    assert (caught.value.line, caught.value.variable) == (6, "owner")


def test_syntax_errors_name_the_line():
    (unclosed,) = Renderer().check(template("<p>a</p>\n{% if first_name %}\n<p>b</p>"))
    assert (unclosed.line, unclosed.part) == (6, "html") and "endif" in unclosed.message
    (brace,) = Renderer().check(template("<p>a</p>\n{{ first_name }\n<p>b</p>"))
    assert brace.line == 6 and "unexpected '}'" in brace.message


@pytest.mark.parametrize(
    "expression",
    [
        "{{ ''.__class__ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ first_name.__init__.__globals__ }}",
        "{{ cycler.__init__.__globals__.os }}",
        "{{ range.__self__ }}",
    ],
)
def test_the_sandbox_refuses_escapes(expression):
    t = template(f"<p>{expression}</p>")
    with pytest.raises(RenderError) as caught:
        Renderer().render(t, {"first_name": "Ann"})
    assert caught.value.file == "templates/acme/t.yaml" and caught.value.line == 5


@pytest.mark.parametrize(
    "expression",
    [
        "{{ 'x' * 1000000000 }}",
        "{{ 9 ** 999999 }}",
        "{% for i in range(1000000) %}{% endfor %}",
        "{% for i in range(9999) %}{% for j in range(9999) %}xxxxxxxxxxxxxxxxxxxxxxxx{% endfor %}{% endfor %}",
    ],
)
def test_huge_output_and_computations_are_capped(expression):
    t = template(f"<p>{expression}</p>")
    with pytest.raises(RenderError):
        Renderer().render(t, {})


def test_subject_line_breaks_never_reach_a_header():
    t = template("<p>x</p>")
    out = Renderer().render(t, {"first_name": "Ann\r\nBcc: victim@example.com"})
    assert "\n" not in out.subject and "\r" not in out.subject


def test_right_to_left_and_cjk_documents():
    ar = Renderer().render(template("<p>مرحبا {{ first_name }}</p>", language="ar", subject="مرحبا"), {"first_name": "علي"})
    assert ar.html.startswith('<!DOCTYPE html><html lang="ar" dir="rtl"><head><meta charset="utf-8"></head>')
    assert "مرحبا علي" in ar.html and "مرحبا علي" in ar.text
    zh = Renderer().render(template("<html><head><title>t</title></head><body><p>你好 {{ first_name }}</p></body></html>", language="zh"), {"first_name": "王"})
    assert '<html lang="zh"><head><meta charset="utf-8">' in zh.html and "dir=" not in zh.html
    assert "你好 王" in zh.text


def test_document_wrapping_keeps_an_authors_attributes_and_lines():
    source = '<html dir="ltr" lang="fr-CA">\n<head></head><body>{{ x }}</body></html>'
    assert html_document(source, "ar").startswith('<html dir="ltr" lang="fr-CA">\n<head><meta charset="utf-8">')
    assert html_document("a\nb", "en").count("\n") == 1


def test_each_part_is_compiled_once():
    renderer = Renderer()
    t = template("<p>{{ first_name }}</p>")
    for name in ("a", "b", "c"):
        renderer.render(t, {"first_name": name})
    assert len(renderer._compiled) == 1


def test_remote_stylesheets_are_never_fetched():
    """css-inline would load a <link> stylesheet over the network; it is told not to."""
    t = template('<html><head><link rel="stylesheet" href="http://127.0.0.1:9/x.css"><style>p { color: red }</style></head>\n<body><p>x</p></body></html>')
    out = Renderer().render(t, {})
    assert '<p style="color: red;">x</p>' in out.html and "127.0.0.1:9/x.css" not in out.html
