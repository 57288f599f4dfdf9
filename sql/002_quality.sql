-- Contact quality: email verdicts, the shared DNS cache, enrichment and tag assignments.

-- The only table shared by all tenants: public DNS facts about a domain.
CREATE TABLE dns_cache (
    domain     text PRIMARY KEY,
    status     text NOT NULL CHECK (status IN ('mx', 'a_fallback', 'null_mx', 'nxdomain', 'no_mail', 'unknown')),
    mx_hosts   text[] NOT NULL DEFAULT '{}',
    detail     text,
    ttl_s      integer NOT NULL,
    checked_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL
);
CREATE INDEX dns_cache_expiry ON dns_cache (expires_at);

CREATE TABLE email_validations (
    contact_id      bigint PRIMARY KEY REFERENCES contacts (contact_id) ON DELETE CASCADE,
    tenant_id       text NOT NULL,
    email           text NOT NULL,
    verdict         text NOT NULL CHECK (verdict IN ('valid', 'risky', 'invalid', 'unknown')),
    reasons         text[] NOT NULL DEFAULT '{}',
    syntax_ok       boolean NOT NULL,
    syntax_error    text,
    domain_status   text,
    domain_detail   text,
    mx_hosts        text[] NOT NULL DEFAULT '{}',
    mailbox_status  text,
    smtp_code       integer,
    smtp_message    text,
    disposable      boolean NOT NULL DEFAULT false,
    role_account    boolean NOT NULL DEFAULT false,
    free_mail       boolean NOT NULL DEFAULT false,
    typo_suggestion text,
    checked_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX email_validations_tenant ON email_validations (tenant_id, checked_at);

-- One row per validation run: the history the "invalid share jumped" check compares against.
CREATE TABLE validation_runs (
    run_id        bigserial PRIMARY KEY,
    tenant_id     text NOT NULL,
    checked       bigint NOT NULL,
    domains       bigint NOT NULL,
    dns_lookups   bigint NOT NULL,
    valid         bigint NOT NULL,
    risky         bigint NOT NULL,
    invalid       bigint NOT NULL,
    unknown       bigint NOT NULL,
    invalid_share double precision NOT NULL,
    finished_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX validation_runs_tenant ON validation_runs (tenant_id, run_id);

CREATE TABLE contact_enrichment (
    contact_id    bigint PRIMARY KEY REFERENCES contacts (contact_id) ON DELETE CASCADE,
    tenant_id     text NOT NULL,
    language      text NOT NULL,
    language_rule text NOT NULL,
    country       text,
    country_rule  text,
    phone_e164    text,
    phone_valid   boolean,
    phone_raw     text,
    inputs_sha256 text NOT NULL,
    updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX contact_enrichment_tenant ON contact_enrichment (tenant_id);

-- provenance: 'import:<source>', 'rule:<name>' or 'manual'
CREATE TABLE tag_assignments (
    contact_id  bigint NOT NULL REFERENCES contacts (contact_id) ON DELETE CASCADE,
    tenant_id   text NOT NULL,
    tag         text NOT NULL CHECK (tag ~ '^[a-z0-9]+(_[a-z0-9]+)*$'),
    provenance  text NOT NULL CHECK (provenance ~ '^(import|rule):.+$' OR provenance = 'manual'),
    assigned_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (contact_id, tag, provenance)
);
CREATE INDEX tag_assignments_tenant ON tag_assignments (tenant_id, provenance);
