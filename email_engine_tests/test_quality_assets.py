"""email_validations, contact_enrichment and tag_assignments on PostgreSQL, against real DNS and SMTP servers on loopback."""

from __future__ import annotations

import time

import dagster as dg
import pytest
import sqlalchemy as sa

from email_engine_assets.audiences.assets import tag_assignments
from email_engine_assets.contacts.assets import contact_imports, contacts
from email_engine_assets.quality.assets import contact_enrichment, email_validations
from email_engine_assets.quality.store import analyze_after_bulk_write, contact_ranges
from email_engine_assets.tenancy.partitions import import_key
from email_engine_resources.dns import DnsResolverResource
from email_engine_resources.postgres import PostgresResource
from email_engine_resources.smtp_probe import SmtpProbeResource
from email_engine_resources.workspace import WorkspaceResource
from email_engine_tests.dns_server import LoopbackDnsServer, TestZone
from email_engine_tests.smtp_server import LoopbackSmtpServer, MailboxRules, free_port

QUALITY = [email_validations, contact_enrichment, tag_assignments]

ZONE = TestZone(
    mx={
        "good.example": [(10, "mx.good.example")],
        "nomail.example": [(0, ".")],
        "probe.example": [(10, "localhost")],
        "catchall.example": [(10, "localhost")],
    },
    a={"aonly.example": ["192.0.2.1"], "localhost": ["127.0.0.1"]},
    servfail={"broken.example"},
    generated_mx_suffixes=("gen.example",),
)

CONTACTS = """email,first_name,country,language,phone,company,tags
ann@good.example,Ann,FR,,+33 6 12 34 56 78,Acme,vip
bob@nomail.example,Bob,,de-DE,,,
cy@missing.example,Cy,,,,,
dee@aonly.example,Dee,Deutschland,,,Dee GmbH,
eve@broken.example,Eve,,,,,
info@good.example,,,,,,
fay@mailinator.com,Fay,,,,,
gus@good.fr,Gus,,,,,
"""


@pytest.fixture
def instance():
    with dg.instance_for_test() as inst:
        yield inst


@pytest.fixture(scope="module")
def dns_server():
    with LoopbackDnsServer(ZONE) as server:
        yield server


def resources(dns_port: int, smtp_port: int = 25, smtp: dict | None = None, **dns):
    return {
        "db": PostgresResource(),
        "workspace": WorkspaceResource(),
        "dns": DnsResolverResource(nameservers=["127.0.0.1"], port=dns_port, timeout_s=0.3, retries=0, **dns),
        "smtp_probe": SmtpProbeResource(
            port=smtp_port, connect_timeout_s=2, command_timeout_s=2, per_mx_rate_per_s=100, **(smtp or {})
        ),
    }


def chunks_of(size: int | None, assets=QUALITY) -> dict:
    """Run config giving the quality ``assets`` ``size`` contacts per chunk (None: their default)."""
    if size is None:
        return {}
    return {"ops": {a.op.name: {"config": {"contacts_per_chunk": size}} for a in assets}}


def run_all(instance, tenant, res, assets=None, chunk=None):
    instance.add_dynamic_partitions("tenant", [tenant])
    instance.add_dynamic_partitions("source", ["crm"])
    dg.materialize([contact_imports], partition_key=import_key(tenant, "crm"), instance=instance, resources=res)
    return dg.materialize(
        assets or [contacts, *QUALITY], partition_key=tenant, instance=instance, resources=res, run_config=chunks_of(chunk)
    )


def verdicts(engine, tenant="acme"):
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT email, verdict, reasons, domain_status, mailbox_status FROM email_validations WHERE tenant_id = :t"),
            {"t": tenant},
        )
        return {r.email: r for r in rows}


def test_verdicts_reasons_and_dns_cache(engine, workspace, instance, dns_server):
    workspace.tenant("acme")
    workspace.file("acme", "crm", "c.csv", CONTACTS)
    dns_server.reset_stats()
    result = run_all(instance, "acme", resources(dns_server.port))
    v = verdicts(engine)
    assert v["ann@good.example"].verdict == "valid" and v["ann@good.example"].domain_status == "mx"
    assert v["bob@nomail.example"].verdict == "invalid" and "domain: null_mx" in v["bob@nomail.example"].reasons[0]
    assert v["cy@missing.example"].verdict == "invalid" and v["cy@missing.example"].domain_status == "nxdomain"
    assert v["dee@aonly.example"].verdict == "valid" and v["dee@aonly.example"].domain_status == "a_fallback"
    assert v["eve@broken.example"].verdict == "unknown" and "SERVFAIL" in " ".join(v["eve@broken.example"].reasons)
    assert v["info@good.example"].verdict == "risky" and "role_account" in v["info@good.example"].reasons
    assert v["fay@mailinator.com"].verdict in ("risky", "invalid") and "disposable" in v["fay@mailinator.com"].reasons
    meta = result.asset_materializations_for_node("email_validations")[0].metadata
    assert meta["checked"].value == 8 and meta["distinct_domains"].value == 7 and meta["dns_lookups"].value == 7
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    assert checks["every_contact_has_verdict"].passed
    first_queries = dns_server.stats.total
    assert first_queries >= 7

    # stale verdicts are re-checked, but the domains are still fresh in the shared cache: no query at all
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE email_validations SET checked_at = now() - interval '40 days'"))
    dns_server.reset_stats()
    result = dg.materialize([email_validations], partition_key="acme", instance=instance, resources=resources(dns_server.port))
    meta = result.asset_materializations_for_node("email_validations")[0].metadata
    assert meta["checked"].value == 8 and meta["dns_lookups"].value == 0 and meta["dns_cache_hits"].value == 7
    assert dns_server.stats.total == 0
    # fresh verdicts: nothing is due
    result = dg.materialize([email_validations], partition_key="acme", instance=instance, resources=resources(dns_server.port))
    assert result.asset_materializations_for_node("email_validations")[0].metadata["checked"].value == 0


def test_unreachable_resolver_gives_unknown_promptly(engine, workspace, instance):
    workspace.tenant("acme")
    workspace.file("acme", "crm", "c.csv", "email\n" + "".join(f"u{i}@d{i}.gen.example\n" for i in range(400)))
    started = time.perf_counter()
    run_all(instance, "acme", resources(free_port("127.0.0.1")))
    elapsed = time.perf_counter() - started
    v = verdicts(engine)
    assert len(v) == 400 and {r.verdict for r in v.values()} == {"unknown"}
    assert all(any("resolver unreachable" in reason for reason in r.reasons) for r in v.values())
    assert elapsed < 30


ONE_WINDOW = 10**9  # seconds: windows are aligned on the epoch; a test never straddles two
PROBING_TENANT = "id: acme\nname: A\nsources:\n  - id: crm\nvalidation:\n  smtp_probe: true\n"


def test_smtp_probe_runs_only_when_the_tenant_enables_it(engine, workspace, instance, dns_server):
    rules = MailboxRules(mailboxes={"real@probe.example"}, full={"full@probe.example"}, catch_all_domains={"catchall.example"})
    workspace.tenant("acme", PROBING_TENANT + "  allow_private_targets: true\n")  # the server is on loopback
    workspace.file("acme", "crm", "c.csv", "email\nreal@probe.example\nghost@probe.example\nfull@probe.example\nany@catchall.example\n")
    with LoopbackSmtpServer(rules) as smtp:
        run_all(instance, "acme", resources(dns_server.port, smtp.port))
        assert "DATA" not in smtp.all_verbs()
    v = verdicts(engine)
    assert (v["real@probe.example"].verdict, v["real@probe.example"].mailbox_status) == ("valid", "deliverable")
    assert (v["ghost@probe.example"].verdict, v["ghost@probe.example"].mailbox_status) == ("invalid", "undeliverable")
    assert (v["full@probe.example"].verdict, v["full@probe.example"].mailbox_status) == ("risky", "full_inbox")
    assert (v["any@catchall.example"].verdict, v["any@catchall.example"].mailbox_status) == ("risky", "catch_all")


def test_probe_refuses_mail_hosts_on_private_addresses_unless_the_tenant_allows(engine, workspace, instance, dns_server):
    workspace.tenant("acme", PROBING_TENANT)  # probe on, private targets not allowed (the default)
    workspace.file("acme", "crm", "c.csv", "email\nreal@probe.example\n")
    with LoopbackSmtpServer(MailboxRules(mailboxes={"real@probe.example"})) as smtp:
        run_all(instance, "acme", resources(dns_server.port, smtp.port))
        assert smtp.sessions == []  # "localhost" resolved to 127.0.0.1 through the test nameserver: refused
    row = verdicts(engine)["real@probe.example"]
    assert (row.verdict, row.mailbox_status) == ("unknown", "refused_private_target")
    assert any("127.0.0.1 is a loopback address" in reason for reason in row.reasons)


def test_probe_limit_per_ip_is_shared_across_runs(engine, workspace, instance, dns_server):
    workspace.tenant("acme", PROBING_TENANT + "  allow_private_targets: true\n")
    workspace.file("acme", "crm", "c.csv", "email\nreal@probe.example\nany@catchall.example\n")
    rules = MailboxRules(mailboxes={"real@probe.example"}, catch_all_domains={"catchall.example"})
    with LoopbackSmtpServer(rules) as smtp:
        limited = resources(dns_server.port, smtp.port, smtp={"per_ip_sessions": 1, "per_ip_window_s": ONE_WINDOW})
        run_all(instance, "acme", limited)
        assert len(smtp.sessions) == 1  # two domains, two sessions wanted, one slot for 127.0.0.1
        first = verdicts(engine)
        deferred = [email for email, row in first.items() if row.verdict == "unknown"]
        assert len(deferred) == 1
        assert any("deferred: probe limit for 127.0.0.1 reached" in r for r in first[deferred[0]].reasons)

        # an hour later the unknown verdict is due again; the window is still full for every run
        with engine.begin() as conn:
            conn.execute(sa.text("UPDATE email_validations SET checked_at = now() - interval '2 hours' WHERE verdict = 'unknown'"))
        again = dg.materialize([email_validations], partition_key="acme", instance=instance, resources=limited)
        assert again.asset_materializations_for_node("email_validations")[0].metadata["checked"].value == 1
        assert len(smtp.sessions) == 1
    assert verdicts(engine)[deferred[0]].mailbox_status == "unknown"


def test_unknown_verdicts_are_rechecked_after_the_short_age(engine, workspace, instance, dns_server):
    workspace.tenant("acme")
    workspace.file("acme", "crm", "c.csv", "email\nann@good.example\neve@broken.example\n")
    res = resources(dns_server.port)
    run_all(instance, "acme", res)
    assert {e: r.verdict for e, r in verdicts(engine).items()} == {"ann@good.example": "valid", "eve@broken.example": "unknown"}

    def checked_after(age: str) -> int:
        with engine.begin() as conn:
            conn.execute(sa.text("UPDATE email_validations SET checked_at = now() - CAST(:age AS interval)"), {"age": age})
        result = dg.materialize([email_validations], partition_key="acme", instance=instance, resources=res)
        return result.asset_materializations_for_node("email_validations")[0].metadata["checked"].value

    assert checked_after("30 minutes") == 0
    assert checked_after("2 hours") == 1  # only the unknown one, not the valid one (30 days)
    workspace.tenant("acme", "id: acme\nname: A\nsources:\n  - id: crm\nvalidation:\n  unknown_recheck_age_hours: 3\n")
    assert checked_after("2 hours") == 0
    assert checked_after("31 days") == 2


def test_due_contacts_are_written_over_their_old_rows(engine, workspace, instance, dns_server):
    """A stale verdict and an enrichment whose inputs changed are rewritten in place, the others kept."""
    workspace.tenant("acme")
    workspace.file("acme", "crm", "c.csv", CONTACTS)
    res = resources(dns_server.port)
    run_all(instance, "acme", res, chunk=3)
    first = {email: row.verdict for email, row in verdicts(engine).items()}
    assert first["ann@good.example"] == "valid" and first["cy@missing.example"] == "invalid"
    with engine.begin() as conn:
        conn.exec_driver_sql(
            """UPDATE email_validations SET verdict = 'risky', checked_at = now() - interval '31 days'
               WHERE email IN ('ann@good.example', 'gus@good.fr')"""
        )
        conn.exec_driver_sql("UPDATE email_validations SET verdict = 'risky' WHERE email = 'cy@missing.example'")
        conn.exec_driver_sql("UPDATE contacts SET country = 'DE' WHERE email = 'gus@good.fr'")
        before = dict(conn.exec_driver_sql("SELECT contact_id, updated_at FROM contact_enrichment").all())
    run_config = chunks_of(3, [email_validations, contact_enrichment])
    dg.materialize([email_validations, contact_enrichment], partition_key="acme", instance=instance, resources=res,
                   run_config=run_config)
    stored = verdicts(engine)
    assert (stored["ann@good.example"].verdict, stored["gus@good.fr"].verdict) == ("valid", first["gus@good.fr"])
    assert stored["cy@missing.example"].verdict == "risky"  # not due: left as it was
    with engine.connect() as conn:
        fresh = conn.exec_driver_sql(
            "SELECT count(*) FROM email_validations WHERE checked_at > now() - interval '1 hour'").scalar_one()
        enriched = {r.email: r for r in conn.exec_driver_sql(
            "SELECT c.email, e.contact_id, e.country, e.country_rule, e.language, e.updated_at"
            " FROM contact_enrichment e JOIN contacts c USING (tenant_id, contact_id)")}
    assert len(stored) == len(CONTACTS.splitlines()) - 1 and fresh == len(stored)
    gus = enriched.pop("gus@good.fr")
    assert (gus.country, gus.country_rule, gus.language) == ("DE", "field", "de")
    assert gus.updated_at > before[gus.contact_id]
    assert all(r.updated_at == before[r.contact_id] for r in enriched.values())


def test_probe_off_by_default_never_connects(engine, workspace, instance, dns_server):
    workspace.tenant("acme")
    workspace.file("acme", "crm", "c.csv", "email\nreal@probe.example\n")
    with LoopbackSmtpServer(MailboxRules(mailboxes={"real@probe.example"})) as smtp:
        run_all(instance, "acme", resources(dns_server.port, smtp.port))
        assert smtp.sessions == []
    assert verdicts(engine)["real@probe.example"].mailbox_status is None


def test_enrichment_records_the_rule_that_decided(engine, workspace, instance, dns_server):
    workspace.tenant("acme", "id: acme\nname: A\ndefault_language: es\nsources:\n  - id: crm\n")
    workspace.file("acme", "crm", "c.csv", CONTACTS)
    run_all(instance, "acme", resources(dns_server.port))
    with engine.connect() as conn:
        rows = {
            r.email: r
            for r in conn.execute(sa.text("SELECT c.email, e.* FROM contact_enrichment e JOIN contacts c USING (contact_id)"))
        }
    assert (rows["ann@good.example"].language, rows["ann@good.example"].language_rule) == ("fr", "country")
    assert (rows["ann@good.example"].phone_e164, rows["ann@good.example"].country_rule) == ("+33612345678", "field")
    assert (rows["bob@nomail.example"].language, rows["bob@nomail.example"].language_rule) == ("de", "field")
    assert (rows["dee@aonly.example"].country, rows["dee@aonly.example"].language) == ("DE", "de")
    assert (rows["gus@good.fr"].country, rows["gus@good.fr"].country_rule, rows["gus@good.fr"].language_rule) == ("FR", "tld", "country")
    assert (rows["cy@missing.example"].language, rows["cy@missing.example"].language_rule) == ("es", "default")


RULES_V1 = """
id: acme
name: A
sources:
  - id: crm
tag_rules:
  - name: french
    tag: Marché FR
    all: [{field: country, equals: FR}]
  - name: companies
    tag: b2b
    all: [{field: company, exists: true}]
    exclude: [{field: tags, contains: vip}]
  - name: bad_addresses
    tag: do not mail
    any: [{field: verdict, in: [invalid]}, {field: flags, contains: disposable}]
"""


def tags_of(engine):
    with engine.connect() as conn:
        contacts_tags = dict(conn.execute(sa.text("SELECT email, tags FROM contacts")).all())
        assignments = set(
            conn.execute(
                sa.text("SELECT c.email, a.tag, a.provenance FROM tag_assignments a JOIN contacts c USING (contact_id)")
            ).all()
        )
    return contacts_tags, assignments


@pytest.mark.parametrize("chunk", [None, 3], ids=["one-chunk", "chunks-of-3"])
def test_rule_changes_add_and_remove_exactly_the_expected_tags(engine, workspace, instance, dns_server, chunk):
    workspace.tenant("acme", RULES_V1)
    workspace.file("acme", "crm", "c.csv", CONTACTS)
    res = resources(dns_server.port)
    result = run_all(instance, "acme", res, chunk=chunk)
    assert len(verdicts(engine)) == 8
    assert result.asset_materializations_for_node("contact_enrichment")[0].metadata["enriched"].value == 8
    contact_tags, assignments = tags_of(engine)
    assert ("ann@good.example", "marche_fr", "rule:french") in assignments
    assert ("ann@good.example", "vip", "import:crm") in assignments
    assert ("dee@aonly.example", "b2b", "rule:companies") in assignments
    assert not any(a[0] == "ann@good.example" and a[1] == "b2b" for a in assignments)  # excluded by its vip tag
    assert ("bob@nomail.example", "do_not_mail", "rule:bad_addresses") in assignments
    assert ("fay@mailinator.com", "do_not_mail", "rule:bad_addresses") in assignments
    assert contact_tags["ann@good.example"] == ["marche_fr", "vip"]
    with engine.begin() as conn:
        conn.execute(
            sa.text("INSERT INTO tag_assignments (contact_id, tenant_id, tag, provenance) SELECT contact_id, 'acme', 'hand_picked', 'manual' FROM contacts WHERE email = 'dee@aonly.example'")
        )
    # again with the same rules: nothing changes
    again = dg.materialize([tag_assignments], partition_key="acme", instance=instance, resources=res, run_config=chunks_of(chunk, [tag_assignments]))
    meta = again.asset_materializations_for_node("tag_assignments")[0].metadata
    assert (meta["added"].value, meta["removed"].value) == (0, 0)

    # the 'companies' rule is dropped and 'french' now wants Germany: exactly those assignments move
    workspace.tenant("acme", RULES_V1.replace("equals: FR", "equals: DE").split("  - name: companies")[0]
                     + "  - name: bad_addresses" + RULES_V1.split("  - name: bad_addresses")[1])
    before = assignments | {("dee@aonly.example", "hand_picked", "manual")}
    result = dg.materialize([tag_assignments], partition_key="acme", instance=instance, resources=res, run_config=chunks_of(chunk, [tag_assignments]))
    contact_tags, after = tags_of(engine)
    removed, added = before - after, after - before
    assert removed == {
        ("ann@good.example", "marche_fr", "rule:french"),
        ("gus@good.fr", "marche_fr", "rule:french"),  # country FR from the .fr domain (enrichment)
        ("dee@aonly.example", "b2b", "rule:companies"),
    }
    assert added == {("dee@aonly.example", "marche_fr", "rule:french")}
    assert contact_tags["dee@aonly.example"] == ["hand_picked", "marche_fr"]
    assert contact_tags["ann@good.example"] == ["vip"]
    meta = result.asset_materializations_for_node("tag_assignments")[0].metadata
    assert (meta["added"].value, meta["removed"].value) == (1, 3)


def test_invalid_share_jump_warns(engine, workspace, instance, dns_server):
    workspace.tenant("acme", sources=("crm",))
    workspace.file("acme", "crm", "a.csv", "email\nann@good.example\nbea@good.example\n")
    res = resources(dns_server.port)
    first = run_all(instance, "acme", res)
    assert {c.check_name: c.passed for c in first.get_asset_check_evaluations()}["invalid_share_stable"]
    workspace.file("acme", "crm", "b.csv", "email\nx1@missing.example\nx2@missing.example\nx3@missing.example\n")
    second = run_all(instance, "acme", res)
    check = {c.check_name: c for c in second.get_asset_check_evaluations()}["invalid_share_stable"]
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
    assert check.metadata["invalid_share"].value == 0.6


def test_contact_ranges_cover_each_contact_of_the_tenant_once(engine):
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO tenants (tenant_id, name, config_sha256) VALUES ('acme', 'A', '-'), ('beta', 'B', '-')"))
        # ids of the two tenants interleave
        conn.execute(sa.text(
            "INSERT INTO contacts (tenant_id, email) SELECT CASE WHEN i % 3 = 0 THEN 'beta' ELSE 'acme' END, 'u' || i || '@x.example'"
            " FROM generate_series(1, 20) i"
        ))
        ranges = contact_ranges(conn, "acme", 5)
        ids = conn.execute(sa.text("SELECT contact_id FROM contacts WHERE tenant_id = 'acme' ORDER BY contact_id")).scalars().all()
        assert contact_ranges(conn, "nobody", 5) == []
    covered = [[i for i in ids if first <= i <= last] for first, last in ranges]
    assert [len(c) for c in covered] == [5, 5, 4] and sum(covered, []) == ids


def test_a_bulk_write_is_analyzed_and_a_small_one_is_not(engine):
    """Autovacuum's rule: ANALYZE once 50 rows + 10 % of the rows the statistics knew were written."""
    def known(conn) -> float:
        return conn.execute(sa.text("SELECT reltuples FROM pg_class WHERE oid = CAST('written' AS regclass)")).scalar_one()

    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TEMP TABLE written AS SELECT g AS id FROM generate_series(1, 1000) g")
        before = known(conn)
        assert not analyze_after_bulk_write(conn, "written", 49)
        assert known(conn) == before != 1000
        assert analyze_after_bulk_write(conn, "written", 1000)
        assert known(conn) == 1000
        conn.exec_driver_sql("INSERT INTO written SELECT g FROM generate_series(1001, 1149) g")
        assert not analyze_after_bulk_write(conn, "written", 149)
        assert known(conn) == 1000
        assert analyze_after_bulk_write(conn, "written", 150)
        assert known(conn) == 1149
