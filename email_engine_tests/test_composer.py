"""The Composer on a real workspace: contact in, message or skip out; preflight; MailWizz tag mode."""

from __future__ import annotations

import email
import email.policy

import pytest

from email_engine_assets.content.composer import (
    SKIP_REASONS,
    Composed,
    Composer,
    Skipped,
)
from email_engine_assets.content.mailwizz_tags import (
    MailwizzTagError,
    mailwizz_contents,
    to_mailwizz,
)
from email_engine_assets.content.rendering import TenantInfo
from email_engine_assets.content.templates import load_templates
from email_engine_assets.content.unsubscribe import verify_unsubscribe_token
from email_engine_assets.tenancy.config import load_workspace
from email_engine_assets.tenancy.sending import UnsubscribeSettings
from email_engine_tests.content_helpers import TENANT_YAML, simple, write_template

KEY = b"secret-signing-key-for-the-tests"


@pytest.fixture
def acme(workspace):
    workspace.tenant("acme", TENANT_YAML)
    root = workspace.root
    write_template(root, "acme", "spring_fr.yaml", """\
        category: spring
        language: fr
        subject: "Bonjour {{ first_name }}"
        html: |
          <p>Bonjour {{ first_name }} de {{ company }}</p>
          <a href="{{ unsubscribe_url }}">Se désinscrire</a>
        """)
    write_template(root, "acme", "spring_fr_salon.yaml", simple("spring", "fr", tags=("salon_2026",), subject="Merci de votre visite"))
    write_template(root, "acme", "spring_ar.yaml", simple("spring", "ar", subject="مرحبا {{ first_name }}",
                   body='<p>مرحبا {{ first_name }}</p><a href="{{ unsubscribe_url }}">إلغاء الاشتراك</a>'))
    write_template(root, "acme", "spring_en.yaml", simple("spring", "en"))
    return root


def composer(root, **overrides) -> Composer:
    tenant = load_workspace(root).tenants["acme"]
    args = dict(
        templates=load_templates(root, "acme"), tenant=tenant, campaign="spring-2026", category="spring",
        from_name="Acme", from_email="news@acme.example", reply_to="hello@acme.example", signing_key=KEY,
    )
    return Composer(**(args | overrides))


def test_compose_builds_the_message_of_the_chosen_template(acme):
    c = composer(acme)
    contact = {"email": "ann@example.com", "first_name": "Anne", "last_name": "Martin", "company": None, "language": "fr", "tags": ["crm"]}
    result = c.compose(contact, contact_id=7, row_token="r7")
    assert isinstance(result, Composed)
    assert (result.template, result.rule, result.subject, result.message_id) == ("spring_fr", "category_language", "Bonjour Anne", "<r7@acme.example>")
    msg = email.message_from_bytes(result.message, policy=email.policy.default)
    assert str(msg["To"]) == "Anne Martin <ann@example.com>"
    assert msg["Content-Language"] == "fr"
    unsubscribe, mailto = msg["List-Unsubscribe"].split(", ")
    assert mailto == "<mailto:unsubscribe@acme.example>"
    url = unsubscribe.strip("<>")
    assert url.startswith("https://unsubscribe.acme.example/u/")
    assert verify_unsubscribe_token(KEY, url.rsplit("/", 1)[1]) == ("acme", "spring-2026", 7)
    html = msg.get_body(("html",)).get_content()
    assert "Bonjour Anne de </p>" in html and f'href="{url}"' in html
    again = email.message_from_bytes(c.compose(contact, contact_id=7, row_token="r7").message, policy=email.policy.default)
    assert (again["Message-ID"], again["List-Unsubscribe"]) == (msg["Message-ID"], msg["List-Unsubscribe"])  # same row, same message


def test_variant_rtl_fallback_and_skips(acme):
    c = composer(acme)
    salon = c.compose({"email": "a@example.com", "language": "French", "tags": ["salon_2026"]}, contact_id=1, row_token="r1")
    assert (salon.template, salon.rule) == ("spring_fr_salon", "variant")
    arabic = c.compose({"email": "b@example.com", "first_name": "علي", "language": "ar"}, contact_id=2, row_token="r2")
    html = email.message_from_bytes(arabic.message, policy=email.policy.default).get_body(("html",)).get_content()
    assert 'dir="rtl"' in html and "مرحبا علي" in html and arabic.subject == "مرحبا علي"
    german = c.compose({"email": "c@example.com", "language": "de"}, contact_id=3, row_token="r3")
    assert (german.template, german.rule) == ("spring_en", "category_en")
    bad = c.compose({"email": "josé@example.com", "language": "en"}, contact_id=4, row_token="r4")
    assert isinstance(bad, Skipped) and bad.reason == "bad_address"

    other = composer(acme, category="winter")  # no winter template, default category b2b has none either
    skipped = other.compose({"email": "a@example.com", "language": "fr"}, contact_id=1, row_token="r1")
    assert skipped == Skipped("no_template") and skipped.reason in SKIP_REASONS


def test_a_tenant_without_an_unsubscribe_url_cannot_compose(workspace):
    workspace.tenant("acme", TENANT_YAML.split("unsubscribe:")[0])
    with pytest.raises(ValueError, match="unsubscribe.base_url"):
        composer(workspace.root)


def test_preflight_names_file_line_and_variable(acme):
    write_template(acme, "acme", "spring_de.yaml", """\
        category: spring
        language: de
        subject: "Hallo {{ first_name }}"
        html: |
          <p>Hallo</p>
          <p>{{ vorname }}</p>
        """)
    write_template(acme, "acme", "spring_es.yaml", simple("spring", "es", body="<p>{{ tenant.owner }}</p>"))
    write_template(acme, "acme", "broken.yaml", simple("spring", "zh") + "extra: 1\n")
    problems = composer(acme).preflight([{"email": "x@example.com", "language": "es"}, {"email": "y@example.com", "language": "fr"}])
    shown = sorted((p.file, p.line, p.variable) for p in problems)
    assert shown == [
        ("templates/acme/broken.yaml", None, None),
        ("templates/acme/spring_de.yaml", 6, "vorname"),  # static check: no sample needed
        ("templates/acme/spring_es.yaml", 5, "owner"),  # rendered for the Spanish sample
    ]
    assert any("extra: unknown key" in p.message for p in problems)


def test_preflight_of_good_templates_is_empty(acme):
    samples = [{"email": "a@example.com", "language": lang, "tags": tags} for lang in ("fr", "ar", "en", "ru", None) for tags in ([], ["salon_2026"])]
    assert composer(acme).preflight(samples) == []


def test_mailwizz_tag_mode(acme):
    write_template(acme, "acme", "mw.yaml", """\
        category: spring
        language: fr
        subject: "{{ first_name }}, {{ campaign }} de {{ tenant.name }}"
        html: |
          <style>p { color: red }</style>
          <p>Bonjour {{ first_name }} {{ last_name }} ({{ company }}, {{ email }})</p>
          <a href="{{ unsubscribe_url }}">Se désinscrire</a>
        """)
    template = load_templates(acme, "acme").templates["mw"]
    content = to_mailwizz(template, campaign="spring-2026", tenant=TenantInfo("acme", "Acme & Co"))
    assert content.subject == "[FNAME], spring-2026 de Acme & Co"
    assert "Bonjour [FNAME] [LNAME] ([COMPANY], [EMAIL])" in content.html
    assert 'href="[UNSUBSCRIBE_URL]"' in content.html and 'style="color: red;"' in content.html
    assert "[Se désinscrire]([UNSUBSCRIBE_URL])" in content.text
    assert content.custom_fields == {"COMPANY": "company"}


@pytest.mark.parametrize(
    ("html", "line", "construct"),
    [
        ("<p>a</p>\n{% for t in tags %}{{ t }}{% endfor %}", 6, "a loop"),
        ("<p>a</p>\n{% if first_name %}x{% endif %}", 6, "a conditional"),
        ("<p>{{ first_name | upper }}</p>", 5, "the filter 'upper'"),
        ("<p>{{ first_name ~ '!' }}</p>", 5, "a concatenation"),
        ("<p>{{ tags }}</p>", 5, "the variable 'tags'"),
        ("{% set x = 1 %}<p>a</p>", 5, "an assignment"),
        ("<p>no link here</p>", 5, "unsubscribe link"),
    ],
)
def test_mailwizz_refuses_what_it_cannot_carry(acme, html, line, construct):
    body = "\n".join("  " + x for x in (html + '\n<a href="{{ unsubscribe_url }}">x</a>' if "link" not in construct else html).splitlines())
    write_template(acme, "acme", "mw.yaml", f"category: spring\nlanguage: fr\nsubject: Hi\nhtml: |\n{body}\n")
    template = load_templates(acme, "acme").templates["mw"]
    with pytest.raises(MailwizzTagError) as caught:
        to_mailwizz(template, campaign="c", tenant=TenantInfo("acme", "Acme"))
    assert caught.value.file == "templates/acme/mw.yaml"
    assert caught.value.line == line
    assert construct in str(caught.value)


def test_mailwizz_contents_of_a_campaign(acme):
    write_template(acme, "acme", "spring_de.yaml", simple("spring", "de", body='{% if first_name %}x{% endif %}<a href="{{ unsubscribe_url }}">x</a>'))
    tenant = load_workspace(acme).tenants["acme"]
    contents, problems = mailwizz_contents(load_templates(acme, "acme"), tenant=tenant, campaign="spring-2026", category="spring")
    assert set(contents) == {"spring_fr", "spring_fr_salon", "spring_ar", "spring_en"}
    assert [(p.file, p.line) for p in problems] == [("templates/acme/spring_de.yaml", 5)]
    assert "a conditional" in problems[0].message


@pytest.mark.parametrize(("tenant_id", "category"), [("acme", "b2b"), ("globex", "b2c")])
def test_example_templates_load_render_and_carry_to_mailwizz(tenant_id, category):
    from email_engine_resources.settings import DEFAULT_WORKSPACE

    templates = load_templates(DEFAULT_WORKSPACE, tenant_id)
    assert not templates.errors
    assert {"fr", "en", "de", "ar", "zh"} <= {t.language for t in templates.templates.values() if t.category == category}
    tenant = load_workspace(DEFAULT_WORKSPACE).tenants[tenant_id].model_copy(
        update={"unsubscribe": UnsubscribeSettings(base_url="https://unsubscribe.example")}
    )
    c = Composer(templates=templates, tenant=tenant, campaign="example", category=category, from_name="News",
                 from_email="news@example.com", reply_to=None, signing_key=KEY)
    samples = [{"email": "a@example.com", "first_name": "Ann", "company": "Co", "language": lang, "tags": ["salon_2026"]}
               for lang in ("fr", "en", "de", "ar", "zh", "pt")]
    assert c.preflight(samples) == []
    for number, sample in enumerate(samples):
        result = c.compose(sample, contact_id=number, row_token=f"r{number}")
        assert isinstance(result, Composed)
        assert "/u/" in email.message_from_bytes(result.message, policy=email.policy.default).get_body(("html",)).get_content()
    contents, problems = mailwizz_contents(templates, tenant=tenant, campaign="example", category=category)
    assert problems == [] and all("[UNSUBSCRIBE_URL]" in m.html for m in contents.values())
    if tenant_id == "acme":  # the README's worked example
        jean = c.compose({"email": "jean.dupont@example.fr", "language": "fr", "tags": ["client", "vip", "salon_2026"]}, contact_id=1, row_token="r1")
        hans = c.compose({"email": "hans.muller@beispiel.de", "language": "de"}, contact_id=2, row_token="r2")
        ana = c.compose({"email": "ana.silva@exemplo.com.br", "language": "pt"}, contact_id=3, row_token="r3")
        assert [(r.template, r.rule) for r in (jean, hans, ana)] == [
            ("b2b_fr_salon", "variant"), ("b2b_de", "category_language"), ("b2b_en", "category_en")]


def test_a_broken_dkim_key_is_refused_before_any_composer_and_never_counts_as_a_bad_address(acme):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    from email_engine_assets.content.dkim_signing import DkimKeyError
    from email_engine_assets.content.messages import DkimKey

    with pytest.raises(DkimKeyError, match="^private_key: not a valid PEM private key") as caught:
        DkimKey("acme.example", "s1", b"-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n")
    assert "bm90IGEga2V5" not in str(caught.value)
    pem = rsa.generate_private_key(public_exponent=65537, key_size=1024).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption())
    c = composer(acme, dkim_key=DkimKey("acme.example", "s1", pem))  # PKCS#1 ("RSA PRIVATE KEY") too
    assert c.preflight([{"email": "a@example.com", "language": "fr"}]) == []
    signed = c.compose({"email": "a@example.com", "language": "fr"}, contact_id=1, row_token="r1")
    assert isinstance(signed, Composed) and signed.message.startswith(b"DKIM-Signature: v=1; a=rsa-sha256;")
    with pytest.raises(ValueError, match="address"):
        composer(acme, from_email="not an address")
