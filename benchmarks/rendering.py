"""Rendering throughput: templates compiled once (our Renderer) vs compiled for every message.

    python benchmarks/rendering.py --messages 5000

Both sides render the same realistic template (subject, an HTML body with a style sheet to
inline, the text part derived from the HTML) for the same contacts; the reference builds a fresh
Renderer per message, so it parses and compiles the Jinja source each time. Also printed: the
whole Composer (choice, token, render, RFC 5322 message) per message, with and without DKIM.
"""

from __future__ import annotations

import argparse
import random
import shutil
import subprocess
import tempfile
import textwrap
import time
from pathlib import Path

from email_engine_assets.content.composer import Composer
from email_engine_assets.content.messages import DkimKey
from email_engine_assets.content.rendering import Renderer, TenantInfo
from email_engine_assets.content.templates import load_templates
from email_engine_assets.tenancy.config import parse_tenant

# Variables only (what MailWizz can carry too): the text part is derived once from the template.
SIMPLE = """\
category: spring
language: fr
subject: "{{ first_name }}, notre offre de printemps pour {{ company }}"
html: |
  <html><head><style>
    body { font-family: Arial, sans-serif; color: #222 }
    .cta { background: #0a6; color: #fff; padding: 12px 20px; border-radius: 4px }
    p { line-height: 1.5 }
  </style></head><body>
  <h1>Bonjour {{ first_name }} {{ last_name }}</h1>
  <p>Chez {{ tenant }}, nous avons préparé pour {{ company }} une offre adaptée à {{ city }} ({{ country }}).</p>
  <p>Nos équipes de {{ city }} vous attendent : démonstrations, tarifs dédiés et accompagnement.</p>
  <p><a class="cta" href="https://acme.example/offre?c={{ campaign }}">Découvrir</a></p>
  <p><a href="{{ unsubscribe_url }}">Se désinscrire</a></p>
  </body></html>
"""
# A loop between table rows: the HTML parser moves such text, so the text part is converted
# from each rendered HTML (inscriptis, milliseconds a message).
TEMPLATE = """\
category: spring
language: fr
subject: "{{ first_name }}, notre offre de printemps pour {{ company }}"
html: |
  <html><head><style>
    body { font-family: Arial, sans-serif; color: #222 }
    .cta { background: #0a6; color: #fff; padding: 12px 20px; border-radius: 4px }
    p { line-height: 1.5 } td { padding: 8px }
  </style></head><body>
  <table><tr><td><h1>Bonjour {{ first_name }} {{ last_name }}</h1></td></tr>
  {% for line in range(6) %}<tr><td><p>Chez {{ tenant }}, nous avons préparé pour {{ company }} une offre
  adaptée à {{ city }} ({{ country }}). Ligne {{ line }}.</p></td></tr>{% endfor %}
  <tr><td><a class="cta" href="https://acme.example/offre?c={{ campaign }}">Découvrir</a></td></tr>
  <tr><td><p><a href="{{ unsubscribe_url }}">Se désinscrire</a></p></td></tr></table>
  </body></html>
"""
TENANT = """\
id: acme
name: Acme Industrie
default_category: spring
sources: [{id: crm}]
unsubscribe: {base_url: "https://unsubscribe.acme.example"}
"""


def contacts(n: int) -> list[dict]:
    rng = random.Random(7)
    first = ["Anne", "Jean", "Zoé", "Léa", "Marc", "Inès", "Hugo", "Chloé"]
    return [
        {"email": f"user{i}@example.com", "first_name": rng.choice(first), "last_name": f"Nom{i}", "company": f"Société {i % 97}",
         "city": "Lyon", "country": "FR", "language": "fr", "tags": ["crm"]}
        for i in range(n)
    ]


def rate(label: str, n: int, run) -> float:
    start = time.perf_counter()
    run()
    elapsed = time.perf_counter() - start
    print(f"{label:<44} {n / elapsed:>10,.0f} messages/s")
    return n / elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=5000)
    args = parser.parse_args()
    n = args.messages
    for label, source in (("variables only", SIMPLE), ("loop in a table", TEMPLATE)):
        print(f"-- template: {label}")
        run(source, n)


def run(source: str, n: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "templates" / "acme").mkdir(parents=True)
        (root / "templates" / "acme" / "spring_fr.yaml").write_text(source, encoding="utf-8")
        (root / "tenants").mkdir()
        (root / "tenants" / "acme.yaml").write_text(textwrap.dedent(TENANT), encoding="utf-8")
        tenant = parse_tenant(root / "tenants" / "acme.yaml")
        templates = load_templates(root, "acme")
        template = templates.templates["spring_fr"]
        people = contacts(n)
        variables = [p | {"unsubscribe_url": f"https://u.example/u/{i}", "campaign": "spring", "tenant": TenantInfo("acme", "Acme")}
                     for i, p in enumerate(people)]

        renderer = Renderer()
        once = rate("render, compiled once (ours)", n, lambda: [renderer.render(template, v) for v in variables])
        per = rate("render, compiled per message (reference)", n, lambda: [Renderer().render(template, v) for v in variables])
        print(f"ratio compiled once / per message: {once / per:.1f}x")

        composer = Composer(templates=templates, tenant=tenant, campaign="spring", category="spring", from_name="Acme",
                            from_email="news@acme.example", reply_to=None, signing_key=b"k" * 32)
        rate("compose: choice + token + render + MIME", n,
             lambda: [composer.compose(p, contact_id=i, row_token=f"r{i}") for i, p in enumerate(people)])
        if shutil.which("openssl"):
            pem = subprocess.run(["openssl", "genrsa", "2048"], capture_output=True, check=True).stdout
            signed = Composer(templates=templates, tenant=tenant, campaign="spring", category="spring", from_name="Acme",
                              from_email="news@acme.example", reply_to=None, signing_key=b"k" * 32,
                              dkim_key=DkimKey("acme.example", "s1", pem))
            m = max(1, n // 10)
            rate("compose + DKIM rsa-2048 (OpenSSL)", m,
                 lambda: [signed.compose(p, contact_id=i, row_token=f"r{i}") for i, p in enumerate(people[:m])])

if __name__ == "__main__":
    main()
