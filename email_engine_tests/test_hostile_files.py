"""Hostile files in the inbox: links out of it, crafted content, resource bombs.

Each test plants what an attacker (or a broken export) would, and checks that nothing is read
that should not be, that errors name the file without echoing its content, and that every cap
holds while the rest of the input still imports.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
import sqlalchemy as sa

from email_engine_assets.audiences.assets import tag_assignments
from email_engine_assets.contacts.assets import contact_imports, contacts
from email_engine_assets.contacts.importer import (
    file_digest,
    import_file,
    import_source,
)
from email_engine_assets.contacts.inbox import (
    RefusedFile,
    open_regular_file,
    place_file,
    real_source_folder,
)
from email_engine_assets.contacts.readers import (
    FileReadError,
    ReadLimits,
    iter_chunks,
    read_header,
    sniff_format,
)
from email_engine_assets.contacts.sensors import inbox_sensor
from email_engine_assets.contacts.store import register_workspace
from email_engine_assets.tenancy.config import load_workspace
from email_engine_assets.tenancy.partitions import import_key
from email_engine_resources.frames import copy_frame, read_frame
from email_engine_resources.postgres import PostgresResource
from email_engine_resources.workspace import WorkspaceResource

CANARY = "canary-secret-4f1d9a"
GOOD = "email,name\ngood@example.com,Good\n"


@pytest.fixture
def instance():
    with dg.instance_for_test() as inst:
        yield inst


def materialize(instance, assets, partition_key):
    return dg.materialize(
        assets, partition_key=partition_key, instance=instance, raise_on_error=False,
        resources={"db": PostgresResource(), "workspace": WorkspaceResource()},
    )


def import_partition(instance, tenant: str, source: str = "crm"):
    instance.add_dynamic_partitions("tenant", [tenant])
    instance.add_dynamic_partitions("source", [source])
    return materialize(instance, [contact_imports], import_key(tenant, source))


def failure_text(result) -> str:
    failures = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
    return "\n".join(str(e.event_specific_data.error.message) for e in failures)


def registered(engine, workspace):
    """The workspace's tenants, registered in the database as the import asset does."""
    ws = load_workspace(workspace.root)
    with engine.begin() as conn:
        register_workspace(conn, ws)
    return ws


def ledger(engine, tenant: str) -> list[dict]:
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT path, status, error, rows_total FROM import_files WHERE tenant_id = :t ORDER BY file_id"), {"t": tenant})
        return [dict(r._mapping) for r in rows]


def emails(engine, tenant: str) -> list[str]:
    with engine.connect() as conn:
        return sorted(conn.execute(sa.text("SELECT email FROM staged_rows WHERE tenant_id = :t"), {"t": tenant}).scalars())


def tick(instance) -> dg.SensorResult:
    context = dg.build_sensor_context(instance=instance, resources={"workspace": WorkspaceResource(), "db": PostgresResource()})
    return inbox_sensor(context)


def aged(path: Path) -> Path:
    past = time.time() - 3600
    os.utime(path, (past, past), follow_symlinks=False)
    return path


# --- inbox escapes -----------------------------------------------------------------------------


def test_link_to_the_process_environment_is_refused_and_never_read(engine, workspace, instance, monkeypatch):
    monkeypatch.setenv("EMAIL_ENGINE_CANARY", CANARY)
    workspace.tenant("acme")
    workspace.file("acme", "crm", "good.csv", GOOD)
    (workspace.root / "inbox/acme/crm/env.csv").symlink_to("/proc/self/environ")
    result = import_partition(instance, "acme")
    assert not result.success
    message = failure_text(result)
    assert "env.csv" in message and "symbolic link" in message
    assert CANARY not in message
    rows = ledger(engine, "acme")
    assert [(Path(r["path"]).name, r["status"]) for r in rows] == [("good.csv", "imported")]  # env.csv never claimed
    assert CANARY not in json.dumps(rows)
    assert emails(engine, "acme") == ["good@example.com"]


def test_source_folder_linked_to_another_tenant_is_refused(engine, workspace, instance):
    workspace.tenant("acme")
    workspace.tenant("rival")
    workspace.file("rival", "crm", "theirs.csv", "email\nsecret.customer@rival.example\n")
    acme_crm = workspace.root / "inbox/acme/crm"
    acme_crm.rmdir()
    acme_crm.symlink_to(workspace.root / "inbox/rival/crm")
    result = import_partition(instance, "acme")
    assert not result.success and "not a folder of the inbox" in failure_text(result)
    assert ledger(engine, "acme") == [] and emails(engine, "acme") == []


def test_tenant_folder_linked_elsewhere_is_refused(tmp_path, workspace):
    elsewhere = tmp_path / "elsewhere" / "crm"
    elsewhere.mkdir(parents=True)
    (elsewhere / "a.csv").write_text(GOOD)
    (workspace.root / "inbox" / "acme").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(RefusedFile, match="symbolic link"):
        real_source_folder(workspace.root / "inbox" / "acme" / "crm")


def test_sensor_names_each_refused_entry_and_why(engine, workspace, instance):
    workspace.tenant("acme", sources=("crm", "events"))
    folder = workspace.root / "inbox/acme/crm"
    (folder / "env.csv").symlink_to("/proc/self/environ")
    os.mkfifo(folder / "pipe.csv")
    aged(folder / "pipe.csv")
    events = workspace.root / "inbox/acme/events"
    events.rmdir()
    events.symlink_to(folder)
    result = tick(instance)
    assert result.run_requests == []
    reason = result.skip_reason.skip_message
    assert "'env.csv': is a symbolic link" in reason
    assert "'pipe.csv': is a FIFO" in reason
    assert "refused folder inbox/acme/events" in reason


def test_file_swapped_for_a_link_after_listing_is_refused_at_every_open(tmp_path):
    folder = tmp_path / "inbox" / "acme" / "crm"
    folder.mkdir(parents=True)
    path = folder / "a.csv"
    path.write_text(GOOD)
    fmt = sniff_format(path)  # listed and sniffed while it was a regular file
    secret = tmp_path / "secret.csv"
    secret.write_text(f"email,token\nx@example.com,{CANARY}\n")
    path.unlink()
    path.symlink_to(secret)
    with pytest.raises(RefusedFile, match="symbolic link"):
        file_digest(path)
    for read in (lambda: sniff_format(path), lambda: read_header(path, fmt), lambda: list(iter_chunks(path, fmt))):
        with pytest.raises(FileReadError, match="a.csv: cannot open: is a symbolic link") as caught:
            read()
        assert CANARY not in str(caught.value)


def test_parent_folder_swapped_for_a_link_is_refused(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    (real / "a.csv").write_text(GOOD)
    (tmp_path / "linked").symlink_to(real)
    with pytest.raises(RefusedFile, match="reached through a symbolic link"):
        open_regular_file(tmp_path / "linked" / "a.csv")
    with open_regular_file(real / "a.csv") as stream:
        assert stream.read() == GOOD.encode()


def test_fifo_is_refused_without_blocking(tmp_path):
    pipe = tmp_path / "pipe.csv"
    os.mkfifo(pipe)
    started = time.perf_counter()
    with pytest.raises(RefusedFile, match="FIFO"):
        open_regular_file(pipe)
    assert time.perf_counter() - started < 1


def test_import_copy_replaces_a_planted_link_instead_of_writing_through_it(tmp_path, workspace):
    workspace.tenant("acme")
    victim = tmp_path / "victim.txt"
    victim.write_text("untouched")
    folder = workspace.root / "inbox/acme/crm"
    (folder / "new.csv").symlink_to(victim)
    given = tmp_path / "new.csv"
    given.write_text(GOOD)
    placed = place_file(given, real_source_folder(folder))
    assert victim.read_text() == "untouched"
    assert not placed.is_symlink() and placed.read_text() == GOOD
    assert sorted(p.name for p in folder.iterdir()) == ["new.csv"]  # no .part left behind


def test_failed_file_error_never_echoes_content(engine, workspace):
    workspace.tenant("acme")
    header = ",".join([f"\x1b]0;pwned\x07{CANARY}" * 20] + [f"col{i}" for i in range(30)])
    path = workspace.file("acme", "crm", "\x1b[31mevil.csv", header + "\n" + ",".join(["x"] * 31) + "\n")
    ws = registered(engine, workspace)
    tenant = ws.tenants["acme"]
    report = import_file(engine, tenant, tenant.source("crm"), real_source_folder(path.parent) / path.name)
    assert report.status == "failed"
    assert "no email column found (31 columns found:" in report.error and "and 21 more" in report.error
    assert "\x1b" not in report.error and "\x07" not in report.error
    assert report.error.count(CANARY) <= 1 and len(report.error) < 800
    assert "\\x1b[31mevil.csv" in report.error


# --- minified JSON and database errors ---------------------------------------------------------


def test_minified_json_array_imports_every_item(engine, workspace, instance):
    workspace.tenant("acme")
    items = [{"email": "a@example.com"}, {"email": "b@example.com"}, {"email": "a@example.com"}, "oops"]
    workspace.file("acme", "crm", "push.json", json.dumps(items, separators=(",", ":")))
    result = import_partition(instance, "acme")
    assert result.success, failure_text(result)
    assert [(r["status"], r["rows_total"]) for r in ledger(engine, "acme")] == [("imported", 4)]
    with engine.connect() as conn:
        staged = conn.execute(sa.text("SELECT line_no, email, is_duplicate FROM staged_rows ORDER BY line_no")).all()
        rejects = conn.execute(sa.text("SELECT line_no, reason FROM rejected_rows")).all()
    assert [tuple(r) for r in staged] == [(1, "a@example.com", False), (2, "b@example.com", False), (3, "a@example.com", True)]
    assert [tuple(r) for r in rejects] == [(4, "array item is not an object (found string)")]


def test_database_error_marks_the_file_failed_and_the_next_file_imports(engine, workspace):
    workspace.tenant("acme")
    workspace.file("acme", "crm", "a_bad.csv", f"email,name\nboom@example.com,{CANARY}\n")  # the trigger's detail quotes the row
    workspace.file("acme", "crm", "b_good.csv", GOOD)
    with engine.begin() as conn:
        conn.exec_driver_sql(
            """CREATE FUNCTION refuse_boom() RETURNS trigger LANGUAGE plpgsql AS $$
               BEGIN RAISE EXCEPTION 'staging refused' USING DETAIL = 'row ' || NEW.email_raw; END $$"""
        )
        conn.exec_driver_sql(
            "CREATE TRIGGER refuse_boom BEFORE INSERT ON staged_rows FOR EACH ROW "
            "WHEN (NEW.email = 'boom@example.com') EXECUTE FUNCTION refuse_boom()"
        )
    try:
        ws = registered(engine, workspace)
        tenant = ws.tenants["acme"]
        reports = import_source(engine, tenant, tenant.source("crm"), ws.source_dir("acme", "crm"))
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql("DROP TRIGGER refuse_boom ON staged_rows")
            conn.exec_driver_sql("DROP FUNCTION refuse_boom()")
    assert [(Path(r.path).name, r.status) for r in reports] == [("a_bad.csv", "failed"), ("b_good.csv", "imported")]
    assert "a_bad.csv: database error while staging the file (RaiseException): staging refused" == reports[0].error
    assert [(Path(r["path"]).name, r["status"]) for r in ledger(engine, "acme")] == [("a_bad.csv", "failed"), ("b_good.csv", "imported")]
    assert CANARY not in reports[0].error


# --- a tag called NULL -------------------------------------------------------------------------


def test_tags_named_null_and_array_syntax_are_stored_as_text(engine, workspace, instance):
    workspace.tenant("acme")
    workspace.file(
        "acme", "crm", "tags.csv",
        'email,tags\n'
        'a@example.com,VIP;NULL\n'
        'b@example.com,"""null"";{;};,;\\;NuLL"\n'
        'c@example.com,"{x}|a""b|back\\slash"\n',
    )
    import_partition(instance, "acme")
    assert materialize(instance, [contacts], "acme").success
    result = materialize(instance, [tag_assignments], "acme")
    assert result.success, failure_text(result)
    with engine.connect() as conn:
        tags = dict(conn.execute(sa.text("SELECT email, tags FROM contacts")).all())
        assigned = conn.execute(sa.text("SELECT count(*) FROM tag_assignments WHERE tag IS NULL")).scalar_one()
    assert tags == {"a@example.com": ["null", "vip"], "b@example.com": ["null"], "c@example.com": ["ab", "backslash", "x"]}
    assert assigned == 0


def test_copy_frame_keeps_any_text_in_arrays(engine):
    values = [["NULL", "null", '"quoted"', "{", "}", ",", "back\\slash", "", "sp ace"], [], None, ["plain"]]
    frame = pl.DataFrame({"id": [1, 2, 3, 4], "items": values}, schema={"id": pl.Int64, "items": pl.List(pl.String)})
    many = pl.DataFrame({"id": list(range(10, 20)), "items": [[f"NULL{i}", "null"] for i in range(10)]},
                        schema={"id": pl.Int64, "items": pl.List(pl.String)})
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TEMP TABLE arrays (id bigint, items text[]) ON COMMIT DROP")
        copy_frame(conn, "arrays", frame, ["id", "items"])
        copy_frame(conn, "arrays", many, ["id", "items"])  # every list distinct: the row-by-row path
        stored = dict(conn.exec_driver_sql("SELECT id, items FROM arrays").all())
    assert [stored[i] for i in (1, 2, 3, 4)] == values
    assert stored[15] == ["NULL5", "null"]


def test_read_frame_keeps_any_text_nulls_and_types(engine):
    texts = ["", None, "NULL", "\\N", '"', 'a,"b"', "line\nbreak\r\n", "  spaced  ", "é中😀", "t", "{x,y}"]
    lists = [["NULL", None, "", ",", '"q"', "{", "back\\slash"], [], None, ["plain"]]
    rows = [(i, texts[i % len(texts)], [True, False, None][i % 3], lists[i % len(lists)], 2**62 + i)
            for i in range(len(texts) * len(lists))]
    schema = {"id": pl.Int64, "text": pl.String, "flag": pl.Boolean, "items": pl.List(pl.String), "big": pl.Int64}
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TEMP TABLE tricky (id bigint, text text, flag boolean, items text[], big bigint) ON COMMIT DROP")
        copy_frame(conn, "tricky", pl.DataFrame(rows, schema=schema, orient="row"), list(schema))
        sql = "SELECT id, text, flag, items, big FROM tricky WHERE id = ANY(:ids) AND text IS DISTINCT FROM :not ORDER BY id"
        read = read_frame(conn, sql, {"ids": [r[0] for r in rows], "not": "%(x)s"}, schema)
        nothing = read_frame(conn, "SELECT id, items FROM tricky WHERE id < :n", {"n": 0}, {"id": pl.Int64, "items": pl.List(pl.String)})
    assert read.schema == pl.Schema(schema)
    assert read.rows() == rows
    assert nothing.height == 0 and nothing.schema == pl.Schema({"id": pl.Int64, "items": pl.List(pl.String)})


def test_read_frame_errors_are_database_errors(engine):
    with engine.connect() as conn, pytest.raises(sa.exc.DBAPIError, match="no_such_table"):
        read_frame(conn, "SELECT id FROM no_such_table WHERE id = :id", {"id": 1}, {"id": pl.Int64})


# --- resource bombs ----------------------------------------------------------------------------


def test_header_of_100k_repeated_names_is_read_in_linear_time(tmp_path):
    path = tmp_path / "wide.csv"
    path.write_text(",".join(["email"] * 100_000) + "\n")
    fmt = sniff_format(path)
    started = time.perf_counter()
    names = read_header(path, fmt, ReadLimits(max_columns=200_000))
    assert time.perf_counter() - started < 10  # quadratic de-duplication took minutes
    assert names[:3] == ["email", "email_2", "email_3"] and names[-1] == "email_100000"
    assert len(set(names)) == 100_000


def test_repeats_next_to_taken_suffixes_stay_unique(tmp_path):
    path = tmp_path / "tricky.csv"
    path.write_text("a,a_2,a,a,a_3,a_2\n")
    assert read_header(path, sniff_format(path)) == ["a", "a_2", "a_3", "a_4", "a_3_2", "a_2_2"]


def test_more_columns_than_the_cap_fails_the_file_naming_count_and_cap(engine, workspace):
    workspace.tenant("acme")
    path = workspace.file("acme", "crm", "wide.csv", ",".join(["email"] + [f"c{i}" for i in range(1_000)]) + "\n")
    ws = registered(engine, workspace)
    tenant = ws.tenants["acme"]
    report = import_file(engine, tenant, tenant.source("crm"), real_source_folder(path.parent) / path.name)
    assert report.status == "failed"
    assert report.error.endswith("wide.csv: the header has 1001 columns, over the limit of 1000")


def test_json_keys_over_the_column_cap_fail_the_file(tmp_path):
    early = tmp_path / "early.json"
    early.write_text(json.dumps([{f"k{i}": "x" for i in range(30)} | {"email": "a@x.io"}]))
    with pytest.raises(FileReadError, match="early.json: the objects have more than 20 distinct keys"):
        read_header(early, sniff_format(early), ReadLimits(max_columns=20))
    late = tmp_path / "late.ndjson"  # new keys after the header's sample grow the columns until the cap
    lines = [{"email": f"u{i}@x.io"} for i in range(1_000)] + [{"email": "z@x.io", **{f"k{i}": "x" for i in range(30)}}]
    late.write_text("\n".join(map(json.dumps, lines)) + "\n")
    with pytest.raises(FileReadError, match="late.ndjson: more than 20 columns"):
        list(iter_chunks(late, sniff_format(late), max_columns=20))


def test_csv_record_over_the_size_cap_is_rejected_and_reading_goes_on(tmp_path):
    path = tmp_path / "big.csv"
    long_record = ",".join(["a@x.io"] + ["y" * 40] * 3)  # every field under the field cap
    path.write_text(f"email,n1,n2,n3\nok@x.io,1,2,3\n{long_record}\nafter@x.io,4,5,6\n")
    chunks = list(iter_chunks(path, sniff_format(path), max_record_chars=100))
    frame = pl.concat([c.frame for c in chunks])
    rejects = [r for c in chunks for r in c.rejects]
    assert frame["email"].to_list() == ["ok@x.io", "after@x.io"]
    assert [(r.line, r.reason) for r in rejects] == [(3, f"the record has {len(long_record) + 1} characters, over the limit of 100")]


@pytest.mark.parametrize("kind", ["json", "ndjson"])
def test_json_record_over_the_size_cap_is_rejected_and_reading_goes_on(tmp_path, kind):
    items = [{"email": "ok@x.io"}, {"email": "big@x.io", "notes": ['x"]}{' * 10] * 5}, {"email": "after@x.io"}]
    path = tmp_path / f"items.{kind}"
    path.write_text(json.dumps(items) if kind == "json" else "\n".join(map(json.dumps, items)) + "\n")
    chunks = list(iter_chunks(path, sniff_format(path), max_record_chars=200))
    frame = pl.concat([c.frame for c in chunks], how="diagonal")
    rejects = [r for c in chunks for r in c.rejects]
    assert frame["email"].to_list() == ["ok@x.io", "after@x.io"]
    assert [r.line for r in rejects] == [2] and "over the limit of 200" in rejects[0].reason
    assert rejects[0].raw.startswith('{"email": "big@x.io"')


def test_json_item_over_the_real_cap_is_skipped_across_blocks(tmp_path):
    """A 2.5 MB item is skipped without parsing; an escaped quote cut by the end of a 1 MiB block
    must not end its string early."""
    start = '[{"email": "ok@x.io"}, {"email": "big@x.io", "notes": "'
    filler = "a" * ((2 << 20) - 1 - len(start))  # the backslash is the last character of the second block
    text = start + filler + '\\"still inside ]} a string' + "b" * 500_000 + '"}, {"email": "after@x.io"}]'
    assert text[(2 << 20) - 1] == "\\"
    path = tmp_path / "huge.json"
    path.write_text(text)
    chunks = list(iter_chunks(path, sniff_format(path)))
    frame = pl.concat([c.frame for c in chunks], how="diagonal")
    rejects = [r for c in chunks for r in c.rejects]
    assert frame["email"].to_list() == ["ok@x.io", "after@x.io"]
    assert [r.line for r in rejects] == [2] and "over the limit of 1048576" in rejects[0].reason
    assert len(rejects[0].raw) == 1000


def test_ndjson_line_over_the_real_cap_is_rejected_without_reading_it_whole(tmp_path):
    path = tmp_path / "feed.ndjson"
    big = '{"email": "big@x.io", "n": "' + "z" * 3_000_000 + '"}\n'
    path.write_text('{"email": "ok@x.io"}\n' + big + '{"email": "after@x.io"}\n')
    chunks = list(iter_chunks(path, sniff_format(path)))
    rejects = [r for c in chunks for r in c.rejects]
    assert pl.concat([c.frame for c in chunks])["email"].to_list() == ["ok@x.io", "after@x.io"]
    assert [(r.line, r.reason) for r in rejects] == [(2, f"the record has {len(big)} characters, over the limit of 1048576")]


def test_chunks_are_cut_by_characters_and_by_cells(tmp_path):
    rows = [f"u{i}@x.io,{'n' * 990}" for i in range(200)]
    path = tmp_path / "long.csv"
    path.write_text("email,notes\n" + "\n".join(rows) + "\n")
    chunks = list(iter_chunks(path, sniff_format(path), chunk_chars=20_000))
    sizes = [c.frame.height for c in chunks]
    assert sum(sizes) == 200 and len(chunks) >= 8
    assert all(c.frame["__raw"].str.len_chars().sum() < 2 * 20_000 + 64 * 1_000 for c in chunks)
    assert max(sizes[1:]) <= 21  # once the record size is known, a chunk holds ~20,000 characters

    wide = tmp_path / "wide.csv"
    wide.write_text(",".join(["email"] + [f"c{i}" for i in range(499)]) + "\n"
                    + "".join(",".join([f"u{i}@x.io"] + ["v"] * 499) + "\n" for i in range(50)))
    chunks = list(iter_chunks(wide, sniff_format(wide), chunk_cells=5_000))
    assert [c.frame.height for c in chunks] == [10] * 5  # 500 columns: 10 rows make 5,000 cells

    items = tmp_path / "wide.ndjson"
    items.write_text("".join(json.dumps({"email": f"u{i}@x.io", "notes": "n" * 1_000}) + "\n" for i in range(30)))
    chunks = list(iter_chunks(items, sniff_format(items), chunk_chars=5_000))
    assert [c.frame.height for c in chunks] == [5] * 6
