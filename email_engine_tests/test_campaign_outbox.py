"""The outbox transport: whole files only, never through a symlink, never written twice."""

from __future__ import annotations

import email
import os

import pytest

from email_engine_resources.delivery import OutgoingMessage
from email_engine_resources.outbox import MAX_MESSAGE_BYTES, Outbox


def _message(row_id: int, campaign: str = "spring", body: bytes | None = None) -> OutgoingMessage:
    data = body or (f"From: a@acme.example\r\nTo: p{row_id}@example.com\r\nMessage-ID: <t{row_id}@acme.example>\r\n"
                    f"Subject: hi\r\n\r\nhello\r\n").encode()
    return OutgoingMessage(row_id=row_id, tenant_id="acme", campaign=campaign, job=f"acme.{campaign}",
                           envelope_id=f"t{row_id}", mail_from="a@acme.example", recipient=f"p{row_id}@example.com", message=data)


def test_each_message_becomes_one_eml_file_and_no_temporary_file_is_left(tmp_path):
    outbox = Outbox(tmp_path / "outbox")
    results = outbox.deliver([_message(1), _message(2)])
    assert [(r.row_id, r.status) for r in results] == [(1, "sent"), (2, "sent")]
    folder = tmp_path / "outbox" / "acme" / "spring"
    assert sorted(os.listdir(folder)) == ["1.eml", "2.eml"]
    parsed = email.message_from_bytes((folder / "1.eml").read_bytes())
    assert parsed["To"] == "p1@example.com" and parsed["Message-ID"] == "<t1@acme.example>"
    assert oct(folder.stat().st_mode & 0o777) == "0o700"


def test_a_temporary_file_left_by_a_killed_write_is_not_an_eml_and_does_not_stop_the_next(tmp_path):
    folder = tmp_path / "outbox" / "acme" / "spring"
    folder.mkdir(parents=True)
    (folder / ".3.999.tmp").write_bytes(b"From: half")  # a write killed before its rename
    assert list(folder.glob("*.eml")) == []
    [result] = Outbox(tmp_path / "outbox").deliver([_message(3)])
    assert result.status == "sent" and (folder / "3.eml").read_bytes().endswith(b"hello\r\n")


def test_a_row_already_in_the_outbox_is_not_written_again(tmp_path):
    outbox = Outbox(tmp_path / "outbox")
    outbox.deliver([_message(1)])
    path = tmp_path / "outbox" / "acme" / "spring" / "1.eml"
    first = path.read_bytes()
    [again] = outbox.deliver([_message(1, body=b"Subject: other\r\n\r\nx\r\n")])
    assert (again.status, again.detail) == ("sent", "already in the outbox") and path.read_bytes() == first


@pytest.mark.parametrize("planted", ["root", "tenant", "campaign"])
def test_a_symlinked_folder_is_refused_and_nothing_is_written_through_it(tmp_path, planted):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    root = tmp_path / "outbox"
    if planted == "root":
        root.symlink_to(elsewhere)
    elif planted == "tenant":
        root.mkdir()
        (root / "acme").symlink_to(elsewhere)
    else:
        (root / "acme").mkdir(parents=True)
        (root / "acme" / "spring").symlink_to(elsewhere)
    [result] = Outbox(root).deliver([_message(1)])
    assert result.status == "failed" and "symlink" in result.detail
    assert list(elsewhere.rglob("*")) == []


def test_a_planted_eml_symlink_is_never_followed(tmp_path):
    folder = tmp_path / "outbox" / "acme" / "spring"
    folder.mkdir(parents=True)
    target = tmp_path / "target"
    (folder / f".1.{os.getpid()}.tmp").symlink_to(target)
    (folder / "2.eml").symlink_to(target)
    results = Outbox(tmp_path / "outbox").deliver([_message(1), _message(2)])
    assert [r.status for r in results] == ["failed", "failed"] and not target.exists()
    assert "not a regular file" in results[1].detail


def test_a_message_over_the_cap_fails_and_names_the_limit(tmp_path):
    [result] = Outbox(tmp_path / "outbox").deliver([_message(1, body=b"x" * (MAX_MESSAGE_BYTES + 1))])
    assert result.status == "failed" and str(MAX_MESSAGE_BYTES) in result.detail
    assert list((tmp_path / "outbox").rglob("*.eml")) == []


def test_folder_names_must_be_slugs(tmp_path):
    [result] = Outbox(tmp_path / "outbox").deliver([_message(1, campaign="../../etc")])
    assert result.status == "failed" and "not a slug" in result.detail
