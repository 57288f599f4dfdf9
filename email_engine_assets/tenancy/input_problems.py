"""Inputs the engine could not read: the one vocabulary of refusals, for every kind of input.

An input the engine could not read, or stopped reading part-way, is an :class:`InputProblem`
(kind, name, reason). Each read pass of a kind records the problems it met
(:mod:`email_engine_assets.tenancy.input_problems_store`), replacing the kind's earlier ones, so a
problem is reported again by every run until its input is read (a fixed or replaced file) or is
gone. What is *not* a refusal never gets here: a row rejected with its stored reason (the rejects
table), an accounting line kept with its reason, the incomplete last line of the newest,
still-growing accounting file.

Who reads them: ``email-engine run`` (a "refused inputs" block and a non-zero exit), the
``inputs_read`` asset checks (severity ERROR), and the ``sender_reputation`` check, which refuses a
send while any :data:`FEEDBACK_KINDS` input of the tenant is unread.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

TENANT_FILE = "tenant_file"
CAMPAIGN_FILE = "campaign_file"
TEMPLATE_FILE = "template_file"
INBOX_FILE = "inbox_file"
ACCOUNTING_FILE = "accounting_file"
WEBHOOK_ROW = "webhook_row"
MAILWIZZ_POLL = "mailwizz_poll"
INPUT_KINDS: tuple[str, ...] = (TENANT_FILE, CAMPAIGN_FILE, TEMPLATE_FILE, INBOX_FILE, ACCOUNTING_FILE, WEBHOOK_ROW,
                                MAILWIZZ_POLL)
# Feedback a send must not go without: complaints, bounces, unsubscribes it could not read.
FEEDBACK_KINDS: tuple[str, ...] = (ACCOUNTING_FILE, WEBHOOK_ROW, MAILWIZZ_POLL)
# The kinds each file-reading asset answers for in its ``inputs_read`` check.
TENANT_FILE_KINDS: tuple[str, ...] = (TENANT_FILE, CAMPAIGN_FILE, TEMPLATE_FILE)
INPUTS_READ = "inputs_read"

NAME_MAX = 500
REASON_MAX = 1000
SHOWN = 5


@dataclass(frozen=True)
class InputProblem:
    """An input not read (or read only in part): what kind, which one (a path, a row, a transport) and why.

    ``scope`` is the part of the kind a read pass covers (an inbox source, a MailWizz transport):
    a pass replaces the problems of the scopes it read and leaves the others alone.
    """

    kind: str
    name: str
    reason: str
    scope: str = ""

    def __post_init__(self) -> None:
        if self.kind not in INPUT_KINDS:
            raise ValueError(f"unknown input kind {self.kind[:40]!r}; known: {', '.join(INPUT_KINDS)}")
        object.__setattr__(self, "name", _clip(self.name, NAME_MAX))
        object.__setattr__(self, "reason", _clip(self.reason, REASON_MAX))

    def line(self) -> str:
        return f"{self.kind} {self.name}: {self.reason}"


def _clip(text: str, limit: int) -> str:
    text = str(text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def described(problems: Sequence[InputProblem], what: str, shown: int = SHOWN) -> str:
    """One sentence for a check's description (``what``: a plural noun): how many, the first few, how many more."""
    if not problems:
        return f"{what}: all read"
    listed = "; ".join(p.line() for p in problems[:shown])
    more = f" (and {len(problems) - shown} more)" if len(problems) > shown else ""
    return f"{what} not read ({len(problems)}): {listed}{more}"

