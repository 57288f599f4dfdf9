"""PowerMTA accounting lines (parsing and mapping), PowerMTA's config reader and its management API."""

from __future__ import annotations

import polars as pl
import pytest

from email_engine_assets.audiences.suppressions import suppression_key
from email_engine_assets.feedback.accounting import (
    MAX_LINE_BYTES,
    HeaderError,
    address_keys,
    complete_length,
    header_columns,
    line_digest,
    parse_lines,
)
from email_engine_assets.feedback.events import bounce_class
from email_engine_resources.powermta_config import (
    MAX_CONFIG_BYTES,
    PowerMtaConfigError,
    header_settings,
    parse_powermta_config,
    read_powermta_config,
)
from email_engine_resources.powermta_management import (
    PowerMtaManagement,
    PowerMtaManagementError,
)
from email_engine_tests.powermta_server import (
    AccountingFile,
    ManagementState,
    running_management,
)

HEADER = b"type,timeLogged,orig,rcpt,dsnStatus,dsnDiag,bounceCat,jobId,envId,header_x-envid,feedbackType,format"
T = "2026-11-29 12:00:00+0100"


def lines(*rows: str) -> bytes:
    return "".join(r + "\n" for r in rows).encode()


def parse(data: bytes, tenant: str = "acme", header: bytes = HEADER):
    return parse_lines(header_columns(header), data, base_offset=1000, tenant_id=tenant)


def test_mixed_record_types_map_to_events_by_column_name():
    data = lines(
        f"d,{T},b@bounce.example,Alice@Example.COM,2.0.0 (success),\"smtp;250 ok, queued\",,acme.spring,TokA,,,",
        f"b,{T},b@bounce.example,bob@example.com,5.1.1,\"smtp;550 5.1.1 no, such user\",bad-mailbox,acme.spring,,,,",
        f"rb,{T},b@bounce.example,carl@example.com,5.7.1,\"smtp;550 spam\",spam-related,acme.spring,,,,",
        f"t,{T},b@bounce.example,dan@example.com,4.2.2,smtp;452 full,quota-issues,acme.spring,,,,",
        f"f,{T},b@bounce.example,erin@example.com,,,,acme.spring,,TokE,abuse,jmrp",
        f"tq,{T},b@bounce.example,fay@example.com,,,,acme.spring,,,,",
        f"r,{T},b@bounce.example,fay@example.com,,,,acme.spring,,,,",
        f"rs,{T},b@bounce.example,fay@example.com,,,,acme.spring,,,,",
    )
    parsed = parse(data)
    got = parsed.events.select("event_type", "bounce_class", "token", "campaign", "email").rows()
    assert got == [
        ("delivered", None, "TokA", "spring", "alice@example.com"),
        ("bounced", "hard", None, "spring", "bob@example.com"),
        ("bounced", "reputation", None, "spring", "carl@example.com"),
        ("deferred", None, None, "spring", "dan@example.com"),
        ("complained", None, "TokE", "spring", "erin@example.com"),  # header_x-envid, case kept
    ]
    assert parsed.counts["ignored"] == 3 and parsed.counts["lines"] == 8 and parsed.kept.height == 0
    assert {parsed.counts[f"type_{t}"] for t in ("d", "b", "rb", "t", "f", "tq", "r", "rs")} == {1}
    assert "jmrp" in parsed.events["detail"][4] and "no, such user" in parsed.events["detail"][1]
    assert parsed.events["occurred_at"][0].isoformat() == "2026-11-29T11:00:00+00:00"
    # The dedupe key is the digest of the raw line.
    assert parsed.events["dedupe_key"][0] == line_digest(data.split(b"\n")[0])


def test_columns_are_found_by_name_whatever_their_order_and_case():
    header = b"envId,RCPT,Type,jobid,timeLogged,extra"
    parsed = parse(lines(f"Tok1,a@example.com,d,acme.c1,{T},\"x,y\""), header=header)
    assert parsed.events.select("event_type", "token", "campaign", "email").row(0) == ("delivered", "Tok1", "c1", "a@example.com")


def test_unusable_lines_are_kept_with_a_reason_and_where_they_were():
    data = lines(
        f"zz,{T},o,a@example.com,,,,acme.c,,,,",
        "d,yesterday,o,a@example.com,,,,acme.c,,,,",
        f"d,{T},o,,,,,acme.c,,,,",
        f"d,{T},o,a@example.com,,,,acme.c,,,,,,,,,",  # wider than the header
        f"d,{T},o,a@example.com,acme.c",  # narrower: its fields would land in the wrong columns
    )
    parsed = parse(data)
    starts = [1000]
    for line in data.split(b"\n")[:-1]:
        starts.append(starts[-1] + len(line) + 1)
    assert sorted(parsed.kept.select("byte_offset", "reason").rows()) == [
        (starts[0], "unknown_type"), (starts[1], "bad_time"), (starts[2], "no_recipient"), (starts[3], "malformed"),
        (starts[4], "malformed")]
    assert parsed.counts["kept_with_reason"] == 5 and parsed.counts["lines"] == 5
    assert parsed.events.height == 0
    assert parsed.kept.filter(pl.col("reason") == "unknown_type")["raw_line"][0].startswith("zz,")


def test_a_line_of_another_tenants_job_is_left_to_that_tenant():
    parsed = parse(lines(f"d,{T},o,a@example.com,,,,other.c,,,,", f"d,{T},o,b@example.com,,,,acme.c,,,,"))
    assert parsed.events["email"].to_list() == ["b@example.com"] and parsed.counts["other_tenants"] == 1


def test_a_line_without_job_is_marked_for_the_ledger_check():
    parsed = parse(lines(f"d,{T},o,a@example.com,,,,,Tok9,,,"))
    assert parsed.events.select("has_job", "campaign", "token").row(0) == (False, None, "Tok9")


def test_partial_last_line_waits_and_quoted_newlines_stay_inside_their_line():
    complete = lines(f"d,{T},o,a@example.com,,\"two\nlines, quoted\",,acme.c,,,,")
    assert complete_length(complete + b'b,2026,"open quote\nstill open') == len(complete)
    assert complete_length(b"d,no newline yet") == 0
    parsed = parse(complete)
    assert parsed.counts["lines"] == 1 and "two\nlines, quoted" in parsed.events["detail"][0]


def test_crlf_and_utf8_bom_and_blank_lines():
    header = "\ufefftype,timeLogged,rcpt,jobId".encode()
    parsed = parse(f"d,{T},a@example.com,acme.c\r\n\r\n".encode(), header=header)
    assert parsed.events.height == 1 and parsed.counts["blank"] == 1
    assert parsed.events["dedupe_key"][0] == line_digest(f"d,{T},a@example.com,acme.c".encode())


def test_hostile_lines_are_kept_not_fatal():
    long_line = b"d," + b"x" * (MAX_LINE_BYTES + 10)
    nul = f"d,{T},o,a\x00@example.com,,,,acme.c,,,,".encode()
    parsed = parse(long_line + b"\n" + nul + b"\n" + b"\xff\xfe,\xff\n")
    assert sorted(parsed.kept["reason"].to_list()) == ["line_too_long", "malformed", "malformed"]
    assert len(parsed.kept["raw_line"][0]) <= 4096


@pytest.mark.parametrize("header", [b"rcpt,jobId", b"\xff\xfe", b"types,rcpt"])
def test_a_header_without_a_type_column_is_refused(header):
    with pytest.raises(HeaderError, match="no 'type' column"):
        header_columns(header)


# A published multi-type production header (d, b, f, rb records and kept headers): rcvSourceIp comes twice.
PUBLISHED_HEADER = (
    b"type,timeLogged,timeQueued,orig,rcpt,orcpt,dsnAction,dsnStatus,dsnDiag,dsnMta,bounceCat,srcType,srcMta,dlvType,"
    b"dlvSourceIp,dlvDestinationIp,dlvEsmtpAvailable,dlvSize,vmta,jobId,envId,queue,vmtaPool,header_x-sp-subaccount-id,"
    b"header_x-sp-message-id,repSourceIp,feedbackType,format,userAgent,reportingMta,reportedDomain,header_From,"
    b"header_Return-Path,header_X-job,header_Subject,rcvSourceIp,rcvSourceIp,dsnReportingMta"
)


def _published_line(**values: str) -> str:
    names = PUBLISHED_HEADER.decode().split(",")
    row = dict.fromkeys(names, "")
    row.update(values)
    return ",".join(row[n] for n in names)


def test_a_header_naming_a_column_twice_is_read_and_the_first_non_empty_value_wins():
    columns = header_columns(PUBLISHED_HEADER)
    assert columns.count("rcvSourceIp") == 2
    # rcpt named twice (a hand-merged header): the first column is empty on one line, filled on the other
    header = b"type,timeLogged,rcpt,jobId,envId,rcpt,bounceCat,bounceCat"
    data = lines(f"d,{T},,acme.spring,TokA,second@example.com,,",
                 f"b,{T},first@example.com,acme.spring,TokB,other@example.com,,bad-mailbox")
    parsed = parse(data, header=header)
    assert parsed.events.select("email", "bounce_class").rows() == [("second@example.com", None),
                                                                      ("first@example.com", "hard")]
    assert parsed.kept.height == 0


def test_the_published_header_with_sample_lines_maps_by_name():
    data = lines(
        _published_line(type="d", timeLogged="2019-02-08 21:54:05+0000", timeQueued="2019-02-08 21:54:05+0000",
                         orig="AA-D=1181.com@bounce.bar.com", rcpt="D@1181.com", dsnAction="relayed",
                         dsnStatus="2.0.0 (success)", dsnDiag="smtp;250 DATA ok", vmta="vmta48", jobId="acme.spring",
                         envId="TokD", queue="1181.com/vmta48", rcvSourceIp="10.1.2.3"),
        _published_line(type="f", timeLogged="2019-02-08 22:00:00+0000", rcpt="A@yahoo.com", feedbackType="abuse",
                        format="arf", **{"header_X-job": "acme.spring"}),
    )
    parsed = parse(data, header=PUBLISHED_HEADER)
    assert parsed.events.select("event_type", "email", "token").rows() == [
        ("delivered", "d@1181.com", "TokD"), ("complained", "a@yahoo.com", None)]
    assert parsed.kept.height == 0


def test_bounce_classes_agree_with_the_bounce_rule():
    pairs = [("bad-mailbox", "5.1.1"), ("quota-issues", "5.2.2"), ("spam-related", "5.7.1"), ("", "5.1.1 (x)"),
             ("other", "5.7.1"), ("", ""), ("made-up", "4.4.7"), ("bad-domain", "")]
    data = lines(*(f"b,{T},o,u{i}@example.com,{s},,{c},acme.c,,,," for i, (c, s) in enumerate(pairs)))
    assert parse(data).events["bounce_class"].to_list() == [bounce_class(c or None, s or None) for c, s in pairs]


def test_address_keys_agree_with_the_suppression_key():
    addresses = ["Alice@Example.COM", " bob@EXAMPLE.com ", "<carl@example.com>", "dörte@bücher.example",
                 "Eve@xn--bcher-kva.example", "x@ÉXAMPLE.org"]
    keys = address_keys(pl.Series(addresses)).to_list()
    assert keys == [suppression_key(a.strip().strip("<>")) for a in addresses]
    assert address_keys(pl.Series(["not an address"])).to_list() == ["not an address"]


def test_the_stand_in_writes_lines_that_parse(tmp_path):
    acct = AccountingFile(tmp_path)
    acct.append({"type": "d", "timeLogged": T, "rcpt": "a@example.com", "jobId": "acme.c", "envId": "TokQ",
                 "dsnDiag": "smtp;250 ok, \"quoted\""})
    data = acct.path.read_bytes()
    header, _, body = data.partition(b"\n")
    parsed = parse(body, header=header)
    assert parsed.events.select("token", "campaign").row(0) == ("TokQ", "c")


CONFIG = """\
# PowerMTA config
http-mgmt-port 8080
<source 127.0.0.1>
    process-x-job yes   # comment after a value
    process-x-virtual-mta yes
</source>
<virtual-mta vmta1>
    smtp-source-host 192.0.2.10 mta1.example.com
    <domain *>
        max-smtp-out 5
    </domain>
</virtual-mta>
<virtual-mta vmta2> smtp-source-host 192.0.2.11 mta2.example.com </virtual-mta>
<virtual-mta-pool pool1>
    virtual-mta vmta1
    virtual-mta vmta2
</virtual-mta-pool>
<acct-file /var/log/pmta/acct.csv>
    records d,b,t,f,rb
    move-interval 1d
    max-size 250M
</acct-file>
<acct-file |/usr/bin/piped>
</acct-file>
"""


def test_config_reader_reads_vmtas_pools_acct_file_and_port(tmp_path):
    path = tmp_path / "config"
    path.write_text(CONFIG)
    config = read_powermta_config(path)
    assert config.virtual_mtas == {"vmta1", "vmta2"}
    assert config.pools == {"pool1": ("vmta1", "vmta2")}
    assert config.http_mgmt_port == 8080
    assert config.accounting_dir() == "/var/log/pmta"
    assert config.acct_files[0].records == ("d", "b", "t", "f", "rb")
    assert config.knows("VMTA1") and config.knows("pool1") and not config.knows("vmta3")
    config.check_virtual_mta("pool1")
    with pytest.raises(PowerMtaConfigError, match="'vmta3' is neither.*known: vmta1, vmta2, pool1"):
        config.check_virtual_mta("vmta3")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("<virtual-mta a>\nsmtp-source-host 1.2.3.4 h\n", "line 1: <virtual-mta> is never closed"),
        ("<virtual-mta a>\n</virtual-mta-pool>\n", "line 2: </virtual-mta-pool> does not close <virtual-mta> opened on line 1"),
        ("<virtual-mta-pool p>\nvirtual-mta ghost\n</virtual-mta-pool>\n", "line 1: pool 'p' names 'ghost'"),
        ("<virtual-mta a></virtual-mta>\n<virtual-mta A></virtual-mta>\n", "line 2: 'A' is defined twice"),
        ("<virtual-mta bad name!></virtual-mta>\n", "line 1: <virtual-mta> needs a name"),
        ("\n\nhttp-mgmt-port eighty\n", "line 3: http-mgmt-port needs a port number"),
        ("<acct-file></acct-file>\n", "line 1: <acct-file> needs a path"),
        ("<virtual-mta a></virtual-mta><virtual-mta-pool p> vmta a </virtual-mta-pool>", "holds something other than"),
    ],
)
def test_config_reader_names_the_line_of_a_broken_config(text, message):
    with pytest.raises(PowerMtaConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_powermta_config(text, "pmta.conf")


def test_config_reader_caps_the_size_and_names_a_missing_file(tmp_path):
    big = tmp_path / "big"
    big.write_bytes(b"#" * (MAX_CONFIG_BYTES + 1))
    with pytest.raises(PowerMtaConfigError, match="larger than"):
        read_powermta_config(big)
    with pytest.raises(PowerMtaConfigError, match="missing.*cannot be read"):
        read_powermta_config(tmp_path / "missing")


def test_management_figures_from_status_and_queues():
    with running_management(ManagementState(api_key="s3cret-key")) as (url, state):
        with PowerMtaManagement(url, "s3cret-key", allow_private=True) as api:
            figures = api.figures()
        assert figures["queued_recipients"] == 42 and figures["connections_out"] == 7
        assert figures["out_recipients_last_hour"] == 120 and figures["queues"] == 2 and figures["queues_in_backoff"] == 1
        assert state.requests == ["/status?format=json", "/queues?format=json"]
        with PowerMtaManagement(url, "wrong-key", allow_private=True) as api:
            with pytest.raises(PowerMtaManagementError, match="HTTP 401") as caught:
                api.get("status")
        assert "wrong-key" not in str(caught.value)


@pytest.mark.parametrize(("answer_as", "message"), [
    ("xml", "HTTP 200, an XML answer, not the expected JSON envelope"),
    ("bare", "HTTP 200, JSON without the expected envelope"),
])
def test_management_names_an_answer_that_is_not_the_json_envelope(answer_as, message):
    with running_management(ManagementState(answer_as=answer_as)) as (url, _state):
        with PowerMtaManagement(url, allow_private=True) as api:
            with pytest.raises(PowerMtaManagementError, match=message):
                api.figures()


def test_management_refuses_a_private_target_unless_allowed():
    with running_management() as (url, _state):
        with PowerMtaManagement(url) as api:
            with pytest.raises(PowerMtaManagementError, match="private targets are not allowed"):
                api.get("status")


def test_time_forms_all_become_utc():
    data = lines(*(f"d,{t},o,a{i}@example.com,,,,acme.c,,,," for i, t in enumerate(
        ["2026-11-29 12:00:00-0230", "2026-11-29T12:00:00+0100", "2026-11-29 12:00:00", "2026-11-29 12:00:00+0000"])))
    got = [d.isoformat() for d in parse(data).events["occurred_at"]]
    assert got == ["2026-11-29T14:30:00+00:00", "2026-11-29T11:00:00+00:00", "2026-11-29T12:00:00+00:00",
                   "2026-11-29T12:00:00+00:00"]


@pytest.mark.parametrize(("text", "utc"), [
    ("1764417600", "2025-11-29T12:00:00+00:00"),  # Unix seconds ("normally time_t")
    ("1764417600.25", "2025-11-29T12:00:00.250000+00:00"),
    ("2012-06-12 00:11:57-0500", "2012-06-12T05:11:57+00:00"),
    ("2026-11-29T12:00:00Z", "2026-11-29T12:00:00+00:00"),
    ("2026-11-29T12:00:00+01:00", "2026-11-29T11:00:00+00:00"),
    ("2026-11-29T12:00:00.5-02:00", "2026-11-29T14:00:00.500000+00:00"),
    ("yesterday", None),
    ("20261129", None),  # a bare date is no epoch
])
def test_epoch_seconds_offsets_and_iso_forms_become_utc(text, utc):
    parsed = parse(lines(f"d,{text},o,a@example.com,,,,acme.c,,,,"))
    if utc is None:
        assert parsed.kept["reason"].to_list() == ["bad_time"]
    else:
        assert [d.isoformat() for d in parsed.events["occurred_at"]] == [utc]


def test_time_queued_stands_in_when_time_logged_is_absent():
    parsed = parse(lines("d,1764417600,a@example.com,acme.c"), header=b"type,timeQueued,rcpt,jobId")
    assert [d.isoformat() for d in parsed.events["occurred_at"]] == ["2025-11-29T12:00:00+00:00"]


def test_includes_are_followed_relative_paths_and_globs_in_name_order(tmp_path):
    (tmp_path / "customs").mkdir()
    (tmp_path / "customs" / "10-vmtas.conf").write_text(
        "<virtual-mta vmta1> smtp-source-host 192.0.2.10 mta1.example.com </virtual-mta>\n")
    (tmp_path / "customs" / "20-pools.conf").write_text(
        "<virtual-mta-pool pool1>\n  virtual-mta vmta1\n</virtual-mta-pool>\n")
    (tmp_path / "customs" / "notes.txt").write_text("<virtual-mta-pool broken>\n")  # not matched by the glob
    (tmp_path / "acct.conf").write_text("<acct-file /var/log/pmta/acct.csv>\n  records all\n</acct-file>\n")
    (tmp_path / "config").write_text("include customs/*.conf   # relative glob\ninclude acct.conf\nhttp-mgmt-port 8080\n")
    config = read_powermta_config(tmp_path / "config")
    assert config.virtual_mtas == {"vmta1"} and config.pools == {"pool1": ("vmta1",)}
    assert config.acct_files[0].path == "/var/log/pmta/acct.csv" and config.http_mgmt_port == 8080
    assert [p.rsplit("/", 1)[-1] for p in config.files] == ["config", "10-vmtas.conf", "20-pools.conf", "acct.conf"]
    (tmp_path / "customs" / "20-pools.conf").write_text("<virtual-mta-pool pool1>\n  virtual-mta ghost\n</virtual-mta-pool>\n")
    with pytest.raises(PowerMtaConfigError, match=r"20-pools.conf, line 1: pool 'pool1' names 'ghost'"):
        read_powermta_config(tmp_path / "config")


def test_an_include_cycle_and_a_missing_include_are_refused_naming_file_and_line(tmp_path):
    (tmp_path / "a.conf").write_text("# a\ninclude b.conf\n")
    (tmp_path / "b.conf").write_text("\n\ninclude ./a.conf\n")
    with pytest.raises(PowerMtaConfigError, match=r"b.conf, line 3: include cycle refused: .*/a.conf -> .*/b.conf -> .*/a.conf$"):
        read_powermta_config(tmp_path / "a.conf")
    (tmp_path / "self.conf").write_text("include self.conf\n")
    with pytest.raises(PowerMtaConfigError, match="include cycle refused"):
        read_powermta_config(tmp_path / "self.conf")
    (tmp_path / "c.conf").write_text("include gone.conf\n")
    with pytest.raises(PowerMtaConfigError, match=r"c.conf, line 1: .*gone.conf: cannot be read"):
        read_powermta_config(tmp_path / "c.conf")
    (tmp_path / "d.conf").write_text("include none/*.conf\n")  # a glob matching nothing includes nothing
    assert read_powermta_config(tmp_path / "d.conf").acct_files == ()


@pytest.mark.parametrize(("records", "expected"), [
    ("records d,b,t", ("d", "b", "t")),
    ("records d b f", ("d", "b", "f")),
    ("records d, b, rb", ("d", "b", "rb")),
    ("records all", ("d", "b", "t", "tq", "r", "f", "rb", "rs")),
    ("records d b f move-interval 1d", ("d", "b", "f")),  # a one-line section: records stops at the next setting
    ("move-interval 1d", ("d", "b")),  # PowerMTA's default
])
def test_records_in_all_its_forms(records, expected):
    one_line = parse_powermta_config(f"<acct-file /var/log/pmta/acct.csv> {records} max-size 250M </acct-file>\n")
    many_lines = parse_powermta_config(f"<acct-file /var/log/pmta/acct.csv>\n    {records}\n    max-size 250M\n</acct-file>\n")
    assert one_line.acct_files[0].records == many_lines.acct_files[0].records == expected


def test_records_naming_no_record_type_is_refused():
    with pytest.raises(PowerMtaConfigError, match="pmta.conf, line 1: records names 'x'"):
        parse_powermta_config("<acct-file /a/acct.csv>\nrecords d,x\n</acct-file>\n", "pmta.conf")


def test_acct_file_names_rotation_and_move_to():
    config = parse_powermta_config("<acct-file /var/log/pmta/acct.csv>\n records d,b\n move-to /archive/pmta\n</acct-file>\n"
                                   "<acct-file /var/log/pmta/acct-bounced.csv> records b move-to old </acct-file>\n")
    acct, bounced = config.acct_files
    assert acct.locations() == ("/var/log/pmta", "/archive/pmta")
    assert bounced.locations() == ("/var/log/pmta", "/var/log/pmta/old")
    names = ["acct.csv", "acct-2026-11-29-0000.csv", "acct-2026-11-29-0000-1.csv", "acct-bounced.csv",
             "acct-bounced-2026-11-29-0000.csv", "acct.csv.bak", "acct-notes.csv"]
    assert [n for n in names if acct.names().fullmatch(n)] == names[:3]
    assert [n for n in names if bounced.names().fullmatch(n)] == ["acct-bounced.csv", "acct-bounced-2026-11-29-0000.csv"]


SOURCES = """\
<source 0/0>
    smtp-service yes
</source>
<source 10.0.0.0/8> process-x-job yes process-x-virtual-mta yes </source>
<source 10.1.2.3>
    process-x-job yes
    process-x-virtual-mta yes
    process-x-envid yes
</source>
<source {auth}>
    process-x-job yes
</source>
"""


@pytest.mark.parametrize(("address", "match", "missing", "envid"), [
    ("10.1.2.3", "10.1.2.3", [], True),  # the exact address beats the CIDR and 0/0
    ("10.9.9.9", "10.0.0.0/8", [], False),  # envid not processed: the ENVID goes on MAIL FROM
    ("192.0.2.7", "0/0", ["process-x-job", "process-x-virtual-mta"], False),
    ("::ffff:10.1.2.3", "10.1.2.3", [], True),
])
def test_the_most_specific_source_block_says_which_header_settings_are_missing(address, match, missing, envid):
    config = parse_powermta_config(SOURCES)
    block, lacking, x_envid = header_settings(config, address, virtual_mta=True)
    assert (block.match, lacking, x_envid) == (match, missing, envid)
    assert header_settings(config, "192.0.2.7", virtual_mta=False)[1] == ["process-x-job"]
    assert header_settings(parse_powermta_config("<source 10.0.0.0/8>\n</source>\n"), "192.0.2.7", virtual_mta=False) == (
        None, ["process-x-job"], False)
