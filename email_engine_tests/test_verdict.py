"""Summary verdict: the rule table, reasons, bad input, and the frame version agreeing."""

from __future__ import annotations

import itertools

import polars as pl
import pytest

from email_engine_assets.quality.verdict import (
    DOMAIN_STATUSES,
    MAILBOX_STATUSES,
    VERDICTS,
    summarize,
    summarize_frame,
)

CLEAN = dict(syntax_ok=True, syntax_error=None, domain_status="mx", mailbox_status=None,
             disposable=False, role_account=False)


@pytest.mark.parametrize(
    ("changes", "verdict", "reasons"),
    [
        ({}, "valid", []),
        ({"domain_status": "a_fallback"}, "valid", []),
        ({"mailbox_status": "deliverable"}, "valid", []),
        ({"syntax_ok": False, "syntax_error": "local part too long", "domain_status": None},
         "invalid", ["syntax: local part too long"]),
        ({"syntax_ok": False, "domain_status": None}, "invalid", ["syntax: invalid"]),
        ({"domain_status": "nxdomain"}, "invalid", ["domain: nxdomain"]),
        ({"domain_status": "null_mx"}, "invalid", ["domain: null_mx"]),
        ({"domain_status": "no_mail"}, "invalid", ["domain: no_mail"]),
        ({"mailbox_status": "undeliverable"}, "invalid", ["mailbox: undeliverable"]),
        ({"mailbox_status": "disabled"}, "invalid", ["mailbox: disabled"]),
        ({"disposable": True}, "risky", ["disposable"]),
        ({"role_account": True}, "risky", ["role_account"]),
        ({"mailbox_status": "catch_all"}, "risky", ["mailbox: catch_all"]),
        ({"mailbox_status": "full_inbox"}, "risky", ["mailbox: full_inbox"]),
        ({"typo_suggestion": "gmail.com"}, "risky", ["typo_suggestion: gmail.com"]),
        ({"domain_status": "unknown", "domain_detail": "SERVFAIL"}, "unknown",
         ["domain: unknown (SERVFAIL)"]),
        ({"domain_status": None}, "unknown", ["domain: not_checked"]),
        ({"mailbox_status": "unknown", "mailbox_detail": "timeout"}, "unknown",
         ["mailbox: unknown (timeout)"]),
        # every finding is listed, the worst decides
        ({"domain_status": "nxdomain", "disposable": True, "role_account": True}, "invalid",
         ["domain: nxdomain", "disposable", "role_account"]),
        ({"domain_status": "unknown", "role_account": True}, "risky",
         ["domain: unknown", "role_account"]),
        ({"mailbox_status": "disabled", "disposable": True}, "invalid",
         ["disposable", "mailbox: disabled"]),
    ],
)
def test_summarize_rules(changes, verdict, reasons):
    assert summarize(**{**CLEAN, **changes}) == (verdict, reasons)


@pytest.mark.parametrize(("field", "value"), [("domain_status", "MX"), ("mailbox_status", "ok")])
def test_summarize_rejects_unknown_status(field, value):
    with pytest.raises(ValueError, match=field):
        summarize(**{**CLEAN, field: value})


def _all_combinations() -> pl.DataFrame:
    rows = []
    for syntax_ok, domain, mailbox, disposable, role, typo in itertools.product(
        (True, False), (*DOMAIN_STATUSES, None), (*MAILBOX_STATUSES, None), (False, True),
        (False, True, None), (None, "gmail.com"),
    ):
        rows.append({
            "syntax_ok": syntax_ok, "syntax_error": None if syntax_ok else "bad dot",
            "domain_status": domain, "mailbox_status": mailbox, "disposable": disposable,
            "role_account": role, "typo_suggestion": typo,
            "domain_detail": "SERVFAIL" if domain == "unknown" else None,
            "mailbox_detail": None,
        })
    return pl.DataFrame(rows, infer_schema_length=None)


def test_summarize_frame_agrees_with_summarize():
    frame = _all_combinations()
    result = summarize_frame(frame)
    assert result.columns == [*frame.columns, "verdict", "reasons"]
    assert result.schema["reasons"] == pl.List(pl.String)
    for row in result.iter_rows(named=True):
        args = {k: row[k] for k in frame.columns}
        args["role_account"] = bool(args["role_account"])
        assert (row["verdict"], row["reasons"]) == summarize(**args), row
    assert set(result.get_column("verdict").unique()) == set(VERDICTS)


def test_summarize_frame_without_optional_columns_keeps_order():
    frame = pl.DataFrame({
        "id": [3, 1, 2],
        "syntax_ok": [True, False, True], "syntax_error": [None, "", None],
        "domain_status": ["mx", None, "nxdomain"], "mailbox_status": [None, None, "unknown"],
        "disposable": [False, None, False], "role_account": [True, False, False],
    })
    result = summarize_frame(frame)
    assert result.get_column("id").to_list() == [3, 1, 2]
    assert result.get_column("verdict").to_list() == ["risky", "invalid", "invalid"]
    assert result.get_column("reasons").to_list() == [
        ["role_account"], ["syntax: invalid"], ["domain: nxdomain", "mailbox: unknown"]]


def test_summarize_frame_rejects_bad_input():
    good = {"syntax_ok": [True], "syntax_error": [None], "domain_status": ["mx"],
            "mailbox_status": [None], "disposable": [False], "role_account": [False]}
    with pytest.raises(ValueError, match="role_account"):
        summarize_frame(pl.DataFrame({k: v for k, v in good.items() if k != "role_account"}))
    with pytest.raises(ValueError, match="'SERVFAIL'"):
        summarize_frame(pl.DataFrame({**good, "domain_status": ["SERVFAIL"]}))
    with pytest.raises(ValueError, match="syntax_ok"):
        summarize_frame(pl.DataFrame({**good, "syntax_ok": [None]},
                                     schema_overrides={"syntax_ok": pl.Boolean}))
