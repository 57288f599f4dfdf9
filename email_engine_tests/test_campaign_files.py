"""Campaign files are hostile input: errors name the file and the key, sizes are capped, no alias bombs."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from email_engine_assets.campaigns.files import (
    check_schedule,
    load_campaigns,
    parse_campaign,
    split_key,
)
from email_engine_assets.tenancy.config import (
    TENANT_FILE_MAX_BYTES,
    ConfigError,
    TenantConfig,
)

TENANT = TenantConfig.model_validate({"id": "acme", "name": "Acme", "sources": [{"id": "crm"}]})
GOOD = "segment: vip\ncategory: news\nfrom_name: Acme\nfrom_email: news@acme.example\n"


def _parse(tmp_path, text: str, name: str = "spring"):
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    return parse_campaign(path, TENANT)


def test_a_good_file_defaults_to_the_outbox_and_is_a_draft(tmp_path):
    c = _parse(tmp_path, GOOD + "reply_to: help@acme.example\nrate_per_minute: 600\n")
    assert (c.key, c.file.transport, c.file.send_at, c.file.rate_per_minute) == ("acme.spring", "outbox", None, 600)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("bogus: 1\n", "bogus: unknown key"),
        ("transport: mta9\n", "transport = 'mta9': not a transport of tenant acme (known: outbox)"),
        ("send_at: 2030-01-01T10:00:00\n", "send_at"),  # no zone
        ("rate_per_minute: 0\n", "rate_per_minute"),
        ("reply_to: 'x\\r\\nBcc: all@evil.example'\n", "reply_to"),
    ],
)
def test_errors_name_the_file_and_the_key(tmp_path, extra, message):
    with pytest.raises(ConfigError) as err:
        _parse(tmp_path, GOOD + extra)
    assert "spring.yaml" in str(err.value) and message in str(err.value)


def test_a_header_injection_in_from_name_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="from_name.*control characters"):
        _parse(tmp_path, GOOD.replace("from_name: Acme", 'from_name: "Acme\\r\\nBcc: x@evil.example"'))


def test_missing_keys_anchors_and_size_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="segment: required key is missing"):
        _parse(tmp_path, "category: news\nfrom_name: A\nfrom_email: a@acme.example\n")
    with pytest.raises(ConfigError, match="anchors and aliases"):
        _parse(tmp_path, GOOD + "x: &a [1]\ny: *a\n")
    with pytest.raises(ConfigError, match=f"at most {TENANT_FILE_MAX_BYTES} bytes"):
        _parse(tmp_path, GOOD + "#" * TENANT_FILE_MAX_BYTES)
    with pytest.raises(ConfigError, match="must be a slug"):
        _parse(tmp_path, GOOD, name="Spring Sale")


def test_the_schedule_must_lie_in_the_future_when_checked(tmp_path):
    c = _parse(tmp_path, GOOD + "send_at: 2026-11-29T13:00:00+01:00\n")
    assert check_schedule(c, datetime(2026, 11, 29, 11, 59, tzinfo=timezone.utc)) is None
    problem = check_schedule(c, datetime(2026, 11, 29, 12, 0, tzinfo=timezone.utc))
    assert "spring.yaml: send_at = 2026-11-29T13:00:00+01:00: must lie in the future" in problem


def test_keys_are_tenant_dot_name_slugs():
    assert split_key("acme.spring-2026") == ("acme", "spring-2026")
    for bad in ("acme", "acme.", ".x", "Acme.x", "acme.x.y", "acme.x/../y", "a|b.c"):
        with pytest.raises(ValueError, match="<tenant>.<name>"):
            split_key(bad)


def test_one_broken_file_stops_only_itself_and_symlinked_folders_are_skipped(tmp_path):
    folder = tmp_path / "campaigns" / "acme"
    folder.mkdir(parents=True)
    (folder / "good.yaml").write_text(GOOD)
    (folder / "bad.yaml").write_text("segment: [\n")
    (tmp_path / "campaigns" / "globex").symlink_to(folder)
    globex = TENANT.model_copy(update={"id": "globex"})
    files = load_campaigns(tmp_path, {"acme": TENANT, "globex": globex})
    assert list(files.campaigns) == ["acme.good"]
    assert list(files.errors) == ["acme.bad"] and "not valid YAML at line" in files.errors["acme.bad"]
