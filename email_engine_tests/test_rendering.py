"""Sandboxed rendering: strict names with file and line, escaping, caps, RTL and CJK documents."""

from __future__ import annotations

import tracemalloc
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


DOUBLING = "{% set ns = namespace(s='x') %}{% for i in range(40) %}{% set ns.s = EXPR %}{% endfor %}{{ ns.s|length }}"


@pytest.mark.parametrize(
    ("expression", "refused"),
    [
        # a string doubled in a loop through a namespace, by each operator and by a captured block
        (DOUBLING.replace("EXPR", "ns.s ~ ns.s"), "'~' would make a string of"),
        (DOUBLING.replace("EXPR", "ns.s + ns.s"), "'+' would make a string of"),
        (DOUBLING.replace("EXPR", "ns.s * 2"), "'*' would make a string of"),
        (DOUBLING.replace("EXPR", "'{0}{0}'.format(ns.s)"), "str.format() would make a string of"),
        ("{% set ns = namespace(s='x') %}{% for i in range(40) %}{% set b %}{{ ns.s }}{{ ns.s }}{% endset %}"
         "{% set ns.s = b %}{% endfor %}", "a captured block would make a string of"),
        ("{% macro m(n) %}{% for i in range(10000) %}{{ n }}{% endfor %}{% endmacro %}{{ m('y' * 100000)|length }}",
         "a captured block would make a string of"),
        # widths
        ("{{ '%999999999s'|format('x') }}", "the 'format' filter would make a string of"),
        ("{{ '%999999999s' % 'x' }}", "'%' formatting would make a string of"),
        ("{{ '%.999999999f' % 1.5 }}", "'%' formatting would make a string of"),
        ("{{ '{:>999999999}'.format('x') }}", "str.format() would make a string of"),
        ("{{ '{:{w}}'.format('x', w=999999999) }}", "str.format() would make a string of"),
        ("{{ 'x'|center(999999999) }}", "the 'center' filter would make a string of 999999999 characters"),
        ("{{ 'x'.center(999999999) }}", "str.center() would make a string of"),
        ("{{ 'x'.ljust(999999999) }}", "str.ljust() would make a string of"),
        ("{{ 'x'.rjust(999999999) }}", "str.rjust() would make a string of"),
        ("{{ ('a\\n' * 100000)|indent(100000) }}", "the 'indent' filter would make a string of"),
        ("{{ ('a ' * 100000)|wordwrap(1, wrapstring='x' * 100000) }}", "the 'wordwrap' filter would make a string of"),
        ("{{ ('\\t' * 100000).expandtabs(100000) }}", "str.expandtabs() would make a string of"),
        # many copies of one string
        ("{{ ('a' * 100000)|replace('a', 'b' * 100000) }}", "the 'replace' filter would make a string of"),
        ("{{ (['x' * 100000] * 100000)|join }}", "the 'join' filter would make a string of"),
        ("{{ ''.join(['x' * 100000] * 100000) }}", "str.join() would make a string of"),
        ("{{ ['x' * 100000] * 100000 }}", "printing a list would make a string of"),
        ("{{ ('a' * 100000).translate({97: 'b' * 100000}) }}", "str.translate() would make a string of"),
        ("{{ lipsum(100000, max=100000) }}", "lipsum() would make a string of"),
        # lists and numbers
        ("{% set ns = namespace(l=[1]) %}{% for i in range(40) %}{% set ns.l = ns.l + ns.l %}{% endfor %}", "'+' would make a list of"),
        ("{{ [1]|batch(999999999, 'x')|list }}", "the 'batch' filter would make a list of"),
        ("{% set l = [1] %}{% for i in range(40) %}{{ l.extend(l) }}{% endfor %}", "access to attribute 'extend' of 'list' object is unsafe"),
        ("{% set ns = namespace(n=10) %}{% for i in range(40) %}{% set ns.n = ns.n * ns.n %}{% endfor %}", "'*' would make an integer of over"),
        ("{% set ns = namespace(n=10) %}{% for i in range(10) %}{% set ns.n = ns.n ** 60 %}{% endfor %}", "'**' would make an integer of over"),
    ],
)
def test_every_intermediate_value_is_capped_before_it_is_built(expression, refused):
    """Each one ends with a render error naming the line and the limit, under 64 MiB of memory growth
    (without the caps each needs gigabytes)."""
    t = template(f"<p>\n{expression}\n</p>")
    renderer = Renderer()
    renderer.compile(t)
    tracemalloc.start()
    try:
        with pytest.raises(RenderError) as caught:
            renderer.render(t, {})
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 * 2**20, f"{peak / 2**20:.1f} MiB"
    assert caught.value.line == 6 and caught.value.part == "html"
    assert caught.value.message.startswith("refused by the sandbox: ") and refused in caught.value.message, caught.value.message


def test_ordinary_templates_compute_as_jinja_does_under_the_caps():
    body = (
        "{% set ns = namespace(n=0, s='') %}{% for tag in tags %}{% set ns.n = ns.n + 1 %}{% set ns.s = ns.s ~ tag %}{% endfor %}"
        "{{ ns.n }}|{{ ns.s }}|{{ '%s, %-6s|' % (first_name, 'x') }}{{ '%05.1f'|format(3.14159) }}|{{ '{:>6}|{}'.format(first_name, 2) }}"
        "|{{ first_name|center(9) }}|{{ first_name.ljust(5, '.') }}|{{ tags|join(', ') }}|{{ 'a\nb'|replace('\n', '<br>') }}"
        "|{{ 'x' * 3 }}|{{ [1, 2] + [3] }}|{{ 2 ** 10 }}|{{ 'a,b'.split(',') }}|{% set b %}[{{ first_name }}]{% endset %}{{ b }}"
        "|{{ ('word ' * 20)|wordwrap(30)|length }}|{{ 'l1\nl2'|indent(2) }}|{{ {'a': 1}|tojson }}|{{ tags|batch(1)|list|length }}"
    )
    t = template("<p>{{ company }}</p>", text=body)
    out = Renderer().render(t, {"first_name": "Ann", "tags": ["vip", "b2b"]})
    assert out.text == (
        "2|vipb2b|Ann, x     |003.1|   Ann|2|   Ann   |Ann..|vip, b2b|a<br>b|xxx|1, 2, 3|1024|a, b|[Ann]"
        "|99|l1\n  l2|{\"a\": 1}|2\n"
    )


def test_large_values_under_the_caps_are_built():
    """Escaping is counted as it is (not as its worst case): 300,000 plain characters join in HTML."""
    body = "<p>{{ (('a' * 300000) ~ 'b')|length }} {{ (['a' * 300000, 'b'])|join|length }} {{ ('<' * 200000)|length }}</p>"
    assert "<p>300001 300001 200000</p>" in Renderer().render(template(body), {}).html


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
