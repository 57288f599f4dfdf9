"""Our own open and click tracking on the composing side: links through /c/<token>, the /o/ pixel.

The rewriting alone (pure), then through the Composer (a real workspace, tenant file and
templates), then a whole campaign through the real assets into the outbox.
"""

from __future__ import annotations

import email
import email.policy
import re

import pytest

from email_engine_assets.content.composer import Composed, Composer
from email_engine_assets.content.messages import build_message
from email_engine_assets.content.templates import load_templates
from email_engine_assets.content.tracking_links import attribute_value, track_links
from email_engine_assets.content.tracking_tokens import (
    BadToken,
    verify_tracking_token,
)
from email_engine_assets.tenancy.config import load_workspace
from email_engine_tests.content_helpers import TENANT_YAML, write_template

KEY = b"secret-signing-key-for-the-tests"
BASE = "https://t.acme.example"
UNSUBSCRIBE = "https://unsubscribe.acme.example/u/UNSUBTOKEN"
PIXEL_STYLE = 'width="1" height="1" alt="" style="display:block;border:0;width:1px;height:1px">'
CLICK = re.compile(r"https://t\.acme\.example/c/([A-Za-z0-9_-]+\.[A-Za-z0-9_-]+)")
OPEN = re.compile(r'<img src="https://t\.acme\.example/o/([A-Za-z0-9_-]+\.[A-Za-z0-9_-]+)" ' + re.escape(PIXEL_STYLE))


def track(html: str, text: str = "", *, opens: bool = True, clicks: bool = True, **overrides):
    args = dict(key=KEY, tenant_id="acme", row_token="row1", base_url=BASE, unsubscribe_url=UNSUBSCRIBE,
                unsubscribe_base_url="https://unsubscribe.acme.example/", opens=opens, clicks=clicks)
    return track_links(html, text, **(args | overrides))


def clicked(part: str) -> list[tuple[int, str]]:
    """(link index, original URL) of every tracked link in ``part``, in order, each token verified."""
    out = []
    for token in CLICK.findall(part):
        hit = verify_tracking_token(KEY, token, "click")
        assert (hit.tenant_id, hit.row_token) == ("acme", "row1")
        out.append((hit.link_index, hit.url))
    return out


# --- the rewriting alone ---------------------------------------------------------------------


def test_links_go_through_click_tokens_that_verify_back_to_the_original_url_and_the_rest_is_kept():
    html = ('<html><body><p class="x">Hi <a href="https://shop.example/a" class=btn>shop</a>\n'
            '<a title="t" href="http://blog.example/p?x=1">blog</a></p>\n</body></html>')
    tracked = track(html, opens=False)
    assert clicked(tracked.html) == [(0, "https://shop.example/a"), (1, "http://blog.example/p?x=1")]
    assert tracked.links == ("https://shop.example/a", "http://blog.example/p?x=1")
    # only the two href values changed: the document around them is as it was, byte for byte
    assert CLICK.sub("LINK", tracked.html) == html.replace("https://shop.example/a", "LINK").replace("http://blog.example/p?x=1", "LINK")
    with pytest.raises(BadToken):  # a click token is not an open token
        verify_tracking_token(KEY, CLICK.findall(tracked.html)[0], "open")


def test_entities_in_href_are_decoded_before_signing_as_a_browser_does():
    html = ('<a href="https://x.example/?a=1&amp;b=2&#38;c=3">one</a>'
            '<a href="https://x.example/?a=1&copy=2&amp;reg=3">legacy names before = stay as written</a>'
            '<a href="https://x.example/caf&eacute;">named</a>')
    tracked = track(html, opens=False)
    assert [url for _, url in clicked(tracked.html)] == [
        "https://x.example/?a=1&b=2&c=3", "https://x.example/?a=1&copy=2&reg=3", "https://x.example/café"]
    assert attribute_value("a&lt;b&ltc&lt d&amp") == "a<b&ltc< d&"  # html.unescape would give "a<b<c< d&"


def test_the_new_href_is_attribute_escaped():
    tracked = track('<a href="https://x.example/">x</a>', opens=False, base_url='https://t.acme.example/a"b&c')
    assert 'href="https://t.acme.example/a&quot;b&amp;c/c/' in tracked.html


def test_unsubscribe_mailto_tel_anchors_relative_and_data_no_track_are_never_rewritten():
    kept = [
        f'<a href="{UNSUBSCRIBE}">unsubscribe</a>',
        '<a href="https://unsubscribe.acme.example/u/OTHER">an unsubscribe link of the base</a>',
        '<a href="https://t.acme.example/u/X">under the tracking base</a>',
        '<a href="https://t.acme.example/c/already">our own click link</a>',
        '<a href="mailto:hello@acme.example">mail</a>',
        '<a href="tel:+33100000000">call</a>',
        '<a href="#top">top</a>',
        '<a href="/relative/page">relative</a>',
        '<a href="//protocol.relative/">protocol-relative</a>',
        '<a href="javascript:alert(1)">script</a>',
        '<a href="ftp://files.example/">ftp</a>',
        '<a data-no-track href="https://x.example/private">opted out</a>',
        '<a href="https://x.example/private2" DATA-NO-TRACK="true">opted out, any case and value</a>',
        '<a name="anchor">no href</a><a href>empty</a>',
        '<link href="https://x.example/style.css"><img src="https://x.example/i.png">',
    ]
    html = "<body>" + "\n".join(kept) + "</body>"
    tracked = track(html, f"Unsubscribe: {UNSUBSCRIBE}\nhttps://unsubscribe.acme.example/u/ANY", opens=False)
    assert tracked.html == html and tracked.links == ()
    assert tracked.text == f"Unsubscribe: {UNSUBSCRIBE}\nhttps://unsubscribe.acme.example/u/ANY"


def test_the_pixel_goes_just_before_body_end_only_with_opens_on():
    html = "<html><body><p>hi</p></body></html>"
    tracked = track(html, clicks=False)
    [token] = OPEN.findall(tracked.html)
    assert tracked.html.startswith("<html><body><p>hi</p><img src=") and tracked.html.endswith(PIXEL_STYLE + "</body></html>")
    hit = verify_tracking_token(KEY, token, "open")
    assert (hit.kind, hit.tenant_id, hit.row_token) == ("open", "acme", "row1")
    assert track('<a href="https://x.example/">x</a>', clicks=False).html.startswith('<a href="https://x.example/">x</a><img')
    # no body end tag: appended; one inside a comment or a script is not the body's end
    tricky = "<p>x</p><!-- </body> --><script>var s = '</body>';</script>"
    assert track(tricky, clicks=False).html.startswith(tricky + "<img src=")
    assert OPEN.search(track("<BODY>x</BODY >", clicks=False).html).start() == len("<BODY>x")
    assert not OPEN.search(track(html, opens=False).html)


def test_tracking_off_changes_nothing():
    html = '<body><a href="https://x.example/">x</a></body>'
    tracked = track(html, "https://x.example/", opens=False, clicks=False)
    assert (tracked.html, tracked.text, tracked.links) == (html, "https://x.example/", ())


def test_the_text_part_is_rewritten_and_one_url_has_one_index_in_both_parts():
    html = '<a href="https://b.example/two">2</a> <a href="https://a.example/one?x=1&amp;y=2">1</a> <a href="https://b.example/two">2 again</a>'
    text = ("[2](https://b.example/two)\nSee https://a.example/one?x=1&y=2. Or (https://c.example/three), "
            "https://d.example/path_(x)! and <https://e.example/five>, \"https://f.example/six\"\n"
            "[a](https://g.example/seven)[b](https://h.example/eight?q[]=1)")
    tracked = track(html, text, opens=False)
    assert clicked(tracked.html) == [(0, "https://b.example/two"), (1, "https://a.example/one?x=1&y=2"), (0, "https://b.example/two")]
    assert clicked(tracked.text) == [(0, "https://b.example/two"), (1, "https://a.example/one?x=1&y=2"), (2, "https://c.example/three"),
                                     (3, "https://d.example/path_(x)"), (4, "https://e.example/five"), (5, "https://f.example/six"),
                                     (6, "https://g.example/seven"), (7, "https://h.example/eight?q[]=1")]
    assert tracked.links == ("https://b.example/two", "https://a.example/one?x=1&y=2", "https://c.example/three",
                             "https://d.example/path_(x)", "https://e.example/five", "https://f.example/six",
                             "https://g.example/seven", "https://h.example/eight?q[]=1")
    # the punctuation around each stays outside the link
    assert CLICK.sub("L", tracked.text) == "[2](L)\nSee L. Or (L), L! and <L>, \"L\"\n[a](L)[b](L)"


@pytest.mark.parametrize(("html", "urls"), [
    ('<p><a href="https://x.example/1">unclosed <b>tags <a href="https://x.example/2">', ["https://x.example/1", "https://x.example/2"]),
    ("<a href=https://x.example/unquoted?a=1&amp;b=2>u</a>", ["https://x.example/unquoted?a=1&b=2"]),
    ("<A HREF='HTTPS://X.example/Upper'>u</A><AREA HREF=\"http://x.example/area\">", ["HTTPS://X.example/Upper", "http://x.example/area"]),
    ('1 < 2 <a href="https://x.example/after-a-stray-lt">s</a> <', ["https://x.example/after-a-stray-lt"]),
    ('<a href="  https://x.example/sp\n aced  ">trimmed, newline dropped</a>', ["https://x.example/sp aced"]),
    ('<a href="https://x.example/first" href="https://x.example/second">the first href wins</a>', ["https://x.example/first"]),
    ('<!--[if mso]><a href="https://x.example/mso">m</a><![endif]--><![if !mso]><a href="https://x.example/not-mso">n</a><![endif]>',
     ["https://x.example/not-mso"]),
    ('<!--><a href="https://x.example/after-empty-comment">e</a><!-- x --!><a href="https://x.example/after-bang">b</a>',
     ["https://x.example/after-empty-comment", "https://x.example/after-bang"]),
    ('<a href="https://x.example/self-closed"/><a\nhref\n=\n"https://x.example/spread">s</a>', ["https://x.example/self-closed", "https://x.example/spread"]),
    ("<style>a[href='https://x.example/css'] {}</style><textarea>x</textarea><a href='https://x.example/ok'>", ["https://x.example/ok"]),
    ('<a href="https://x.example/eof"', []),
])
def test_malformed_html_does_not_crash_and_what_a_browser_follows_is_rewritten(html, urls):
    tracked = track(html, opens=False)
    assert [url for _, url in clicked(tracked.html)] == urls
    assert tracked.links == tuple(dict.fromkeys(urls))


def test_a_url_the_token_cannot_carry_is_left_as_it_is():
    long = "https://x.example/" + "a" * 5000
    tracked = track(f'<a href="{long}">l</a><a href="https://x.example/&#0;nul">n</a>', opens=False)
    assert long in tracked.html and tracked.links == ("https://x.example/\ufffdnul",)


# --- through the Composer ----------------------------------------------------------------------

TRACKING = """\
tracking:
  opens: {opens}
  clicks: {clicks}
  base_url: https://t.acme.example
  exclude_tag: no_tracking
  exclude_field: company
"""


@pytest.fixture
def acme(workspace):
    workspace.tenant("acme", TENANT_YAML)
    write_template(workspace.root, "acme", "spring_fr.yaml", """\
        category: spring
        language: fr
        subject: "Bonjour {{ first_name }}"
        html: |
          <html><body><p>Bonjour {{ first_name }}</p>
          <a href="https://shop.acme.example/?c=spring&amp;u={{ first_name }}">La boutique</a>
          <a href="mailto:hello@acme.example">Écrire</a> <a href="#haut">Haut</a>
          <a href="{{ unsubscribe_url }}">Se désinscrire</a></body></html>
        """)
    return workspace


def composer(workspace, tracking: str = "", *, track: bool = True) -> Composer:
    workspace.tenant("acme", TENANT_YAML + tracking)
    tenant = load_workspace(workspace.root).tenants["acme"]
    return Composer(templates=load_templates(workspace.root, "acme"), tenant=tenant, campaign="spring-2026", category="spring",
                    from_name="Acme", from_email="news@acme.example", reply_to=None, signing_key=KEY, track=track)


ANNE = {"email": "anne@example.com", "first_name": "Anne", "language": "fr", "tags": ["crm"], "company": "Martin SA"}


def parts(made: Composed) -> tuple[email.message.EmailMessage, str, str]:
    message = email.message_from_bytes(made.message, policy=email.policy.default)
    return message, message.get_body(("html",)).get_content(), message.get_body(("plain",)).get_content()


def without_date(message: bytes) -> bytes:
    return re.sub(rb"^Date: [^\r]*\r\n", b"", message, flags=re.M)


def test_a_composed_message_carries_tracked_links_and_the_pixel_and_the_unsubscribe_is_untouched(acme):
    c = composer(acme, TRACKING.format(opens="true", clicks="true"))
    made = c.compose(ANNE, contact_id=7, row_token="row1")
    message, html, text = parts(made)
    assert made.tracked_links == ("https://shop.acme.example/?c=spring&u=Anne",)
    assert clicked(html) == [(0, "https://shop.acme.example/?c=spring&u=Anne")]
    assert clicked(text) == [(0, "https://shop.acme.example/?c=spring&u=Anne")]  # the derived text part, same index
    [token] = OPEN.findall(html)
    assert verify_tracking_token(KEY, token, "open").row_token == "row1"
    assert 'href="mailto:hello@acme.example"' in html and 'href="#haut"' in html
    unsubscribe = re.match(r"<([^>]+)>", message["List-Unsubscribe"]).group(1)
    assert unsubscribe.startswith("https://unsubscribe.acme.example/u/") and f'href="{unsubscribe}"' in html and unsubscribe in text
    untracked = c.compose(ANNE | {"tags": ["crm", "no_tracking"]}, contact_id=7, row_token="row1")
    assert parts(untracked)[0]["List-Unsubscribe"] == message["List-Unsubscribe"]  # List-Unsubscribe never touched
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


def test_opens_only_and_clicks_only(acme):
    _, html, text = parts(composer(acme, TRACKING.format(opens="true", clicks="false")).compose(ANNE, contact_id=7, row_token="row1"))
    assert OPEN.search(html) and not CLICK.search(html + text)
    _, html, text = parts(composer(acme, TRACKING.format(opens="false", clicks="true")).compose(ANNE, contact_id=7, row_token="row1"))
    assert not OPEN.search(html) and CLICK.search(html) and CLICK.search(text)


def test_tracking_off_exclusion_and_list_mode_leave_the_message_byte_identical(acme):
    before = composer(acme)  # no tracking: block, as before tracking existed
    rendered = before.renderer.render(before.choose(ANNE).template, before.variables(ANNE, 7))
    built = build_message(rendered=rendered, from_name="Acme", from_email="news@acme.example", reply_to=None,
                          to_email=ANNE["email"], to_name="Anne", message_id="<row1@acme.example>",
                          unsubscribe_url=before.variables(ANNE, 7)["unsubscribe_url"], unsubscribe_mailto="unsubscribe@acme.example",
                          dkim=None, extra_headers={"Content-Language": "fr"})
    expected = without_date(built)
    on = TRACKING.format(opens="true", clicks="true")
    cases = {
        "no tracking block": (composer(acme), ANNE),
        "opens and clicks off": (composer(acme, TRACKING.format(opens="false", clicks="false")), ANNE),
        "excluded by tag": (composer(acme, on), ANNE | {"tags": ["no_tracking"]}),
        "excluded by field": (composer(acme, on), ANNE | {"company": " Yes "}),
        "excluded by field, 1": (composer(acme, on), ANNE | {"company": "1"}),
        "a list transport (MailWizz tracks itself)": (composer(acme, on, track=False), ANNE),
    }
    for case, (c, contact) in cases.items():
        made = c.compose(contact, contact_id=7, row_token="row1")
        assert without_date(made.message) == expected, case
        assert made.tracked_links == (), case
    assert composer(acme, on).compose(ANNE | {"company": "no"}, contact_id=7, row_token="row1").tracked_links  # not a true word


def test_the_mailwizz_composer_never_tracks_and_its_list_content_is_unchanged(acme):
    from email_engine_assets.campaigns.wiring import TemplateComposer
    from email_engine_assets.content.rendering import TenantInfo
    from email_engine_assets.content.mailwizz_tags import to_mailwizz

    acme.tenant("acme", TENANT_YAML + TRACKING.format(opens="true", clicks="true"))
    tenant = load_workspace(acme.root).tenants["acme"]
    templates = load_templates(acme.root, "acme")
    args = dict(templates=templates, tenant=tenant, campaign="spring-2026", category="spring", from_name="Acme",
                from_email="news@acme.example", reply_to=None, signing_key=KEY)
    listed = TemplateComposer(list_mode=True, **args)
    assert listed.tracking is None and listed.compose(ANNE, contact_id=7, row_token="row1").tracked_links == ()
    content = listed.list_content("spring_fr")
    plain = to_mailwizz(templates.templates["spring_fr"], campaign="spring-2026", tenant=TenantInfo(id="acme", name=tenant.name))
    assert (content.html, content.text) == (plain.html, plain.text) and "/c/" not in content.html and "/o/" not in content.html
    assert TemplateComposer(**args).compose(ANNE, contact_id=7, row_token="row1").tracked_links  # outbox / PowerMTA: tracked


def test_the_preview_row_token_composes_with_tracking(acme):
    made = composer(acme, TRACKING.format(opens="true", clicks="true")).compose(ANNE, contact_id=7, row_token="preview7")
    _, html, _ = parts(made)
    assert verify_tracking_token(KEY, OPEN.findall(html)[0], "open").row_token == "preview7"


def test_random_tag_soup_never_crashes_and_every_link_written_verifies():
    import random

    pieces = ["<", ">", "/", "!", "-", "--", "[", "]", '"', "'", "=", " ", "\n", "a", "A", "href", "HREF", "https://x.example/",
              "&amp;", "&", "#", ";", "</body>", "<a ", "<!--", "-->", "<![", "<script>", "</script>", "<?", "data-no-track",
              "<area ", "<a href=", "\x00", "é", "\r"]
    rnd = random.Random(15)
    for _ in range(3000):
        soup = "".join(rnd.choice(pieces) for _ in range(rnd.randint(1, 60)))
        tracked = track(soup, soup)
        for part in (tracked.html, tracked.text):
            assert all(url == tracked.links[index] for index, url in clicked(part))
        assert len(OPEN.findall(tracked.html)) == 1
