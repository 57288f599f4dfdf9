"""The send ledger as a transport's connections see it: a row is in flight only once a connection holds it.

A window of queued rows is claimed (an address suppressed by then is settled at once) and composed
in memory -- for a big send by worker processes, a few windows ahead (:mod:`.composing`); those rows
stay ``queued`` in the database. Each time a connection slot is ready it
calls :meth:`LedgerFeed.exchange`: in one transaction the outcomes it brings are recorded and the
rows it takes are marked ``sending`` -- re-checking there that the campaign is still ``running``
and that no address was suppressed meanwhile. So the rows ``sending`` in the database never exceed
connections x pipeline depth, whatever the rate, and a SIGKILL leaves at most those ``unknown``;
the window's other rows are still ``queued`` for the next run.

Slots calling at the same time share one commit: the first caller commits for every caller
waiting, and those arriving meanwhile are committed together next (a group commit), so the
number of commits follows the database's speed, not the number of messages.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

import sqlalchemy as sa

from email_engine_assets.campaigns import store
from email_engine_assets.campaigns.composing import ComposePool, compose_one, portable
from email_engine_assets.campaigns.files import Campaign
from email_engine_assets.campaigns.ledger import skipped_state
from email_engine_assets.campaigns.parts import Composer, Skipped
from email_engine_resources.delivery import (
    DELIVERY_STATUSES,
    DeliveryResult,
    OutgoingMessage,
)

POOL_MIN_ROWS = 2000  # a smaller send composes in its own process: the workers' start would cost more than they save


@dataclass(frozen=True)
class Handed:
    """A composed row: the message, and what the ledger records with its outcome."""

    row: dict  # row_id, contact_id, email, token, contact
    message: OutgoingMessage
    template: str
    rule: str | None
    message_id: str | None

    def result(self, state: str, detail: str) -> dict:
        """The ledger record of its outcome (the row is ``sending`` until then)."""
        return {"row_id": self.row["row_id"], "from_state": "sending", "state": state, "detail": detail,
                "template": self.template, "rule": self.rule, "message_id": self.message_id}


@dataclass
class _Call:
    results: Sequence[DeliveryResult]
    want: int
    taken: list[OutgoingMessage] = field(default_factory=list)
    done: bool = False
    error: BaseException | None = None


class LedgerFeed:
    """A :class:`~email_engine_resources.delivery.MessageSource` over one campaign's queued rows.

    ``window`` rows are claimed and composed at a time; with ``rate_per_minute`` a full window
    waits until ``window`` rows' worth of time has passed before the next is claimed. With
    ``one_template`` (a list transport) each take holds rows of one template only.
    """

    def __init__(self, engine: sa.Engine, campaign: Campaign, composer: Composer, outcomes: Counter, *, window: int,
                 rate_per_minute: int | None = None, one_template: bool = False,
                 sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic,
                 on_window: Callable[[int], None] = lambda windows: None,
                 held_domains: Callable[[sa.Connection], dict[str, int]] | None = None,
                 compose_workers: int = 0, pool_min_rows: int = POOL_MIN_ROWS):
        self.engine, self.campaign, self.composer = engine, campaign, composer
        self._autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
        self.outcomes = outcomes  # what was recorded, by state
        self.window, self.rate, self.one_template = window, rate_per_minute, one_template
        self.sleep, self.clock, self.on_window = sleep, clock, on_window
        self.windows = 0
        self.held_domains = held_domains
        self.held: dict[str, int] = {}  # recipient domains not fed for the rest of the run: {domain: refusals seen}
        self.handed: dict[int, Handed] = {}  # in flight: marked sending, no outcome recorded yet
        self._ready: deque[Handed] = deque()  # claimed and composed, still queued in the database
        self._skipped: list[dict] = []  # composer skips, recorded with the next commit
        self._after = 0  # the last row id claimed
        self._last_window: tuple[float, int] | None = None  # (started, rows) of the last window claimed
        self._done = False  # nothing more: every row claimed, or the campaign stopped
        # composing in worker processes (no rate, no list transport: those go at their own pace)
        self._workers = compose_workers
        self._pool_min_rows = pool_min_rows
        self._pool_wanted = compose_workers > 1 and not rate_per_minute and not one_template
        self._pool: ComposePool | None = None
        self._pool_ahead = 0
        # windows claimed ahead by the claiming thread, composing in the pool: (rows, suppressed, future)
        self._ahead: deque[tuple[list[dict], int, Future | None]] = deque()
        self._ahead_changed = threading.Condition()
        self._claimer: threading.Thread | None = None
        self._claim_error: BaseException | None = None
        self._stopping = False
        self._conn: sa.Connection | None = None  # the exchanges' own autocommit connection (one committer at a time)
        self._error: BaseException | None = None
        self._waiting: list[_Call] = []
        self._committing = False
        self._lock = threading.Condition()

    # --- the source's one call, from any thread -------------------------------------------------

    def exchange(self, results: Sequence[DeliveryResult], want: int) -> list[OutgoingMessage]:
        call = _Call(results, max(0, want))
        with self._lock:
            self._waiting.append(call)
            while not call.done:
                if self._committing:
                    self._lock.wait()
                    continue
                calls, self._waiting = self._waiting, []
                self._committing = True
                self._lock.release()
                try:
                    self._commit(calls)
                except BaseException as exc:  # every caller of this commit hears of it, and every later one
                    self._error = exc
                    for c in calls:
                        c.error = exc
                finally:
                    self._lock.acquire()
                    self._committing = False
                    for c in calls:
                        c.done = True
                    self._lock.notify_all()
        if call.error is not None:
            raise call.error
        return call.taken

    def finish(self) -> None:
        """Record what is still to be recorded once the transport is done: composer skips, and rows a
        transport handed no result for (``unknown``: whether they left is not known)."""
        try:
            self.exchange([DeliveryResult(row_id, "unknown", "the transport returned no result") for row_id in list(self.handed)], 0)
        finally:
            self._close_connection()

    # --- one commit for every waiting caller ------------------------------------------------------

    def _commit(self, calls: list[_Call]) -> None:
        if self._error is not None:
            raise self._error
        results = [self._ledger_result(r) for c in calls for r in c.results]
        results = [r for r in results if r is not None]
        wanted = sum(c.want for c in calls)
        taken: list[Handed] = []
        first = True
        while first or (len(taken) < wanted and not self._done and not (self.one_template and taken)):
            self._fill(wanted - len(taken))
            candidates = self._next(wanted - len(taken))
            skipped, self._skipped = self._skipped, []
            if not (results or skipped or candidates or wanted):
                break
            suppress = [r for r in results if r.get("suppress")]
            # One statement, its own transaction (one round trip); a suppression to write joins it in one transaction.
            marking = [h.row["row_id"] for h in candidates]
            if suppress:
                with self.engine.begin() as conn:
                    done = store.record_and_mark(conn, self.campaign.tenant_id, self.campaign.name, results + skipped, marking)
                    for r in suppress:  # MailWizz holds the address as unsubscribed or blacklisted: suppression wins
                        store.suppress(conn, self.campaign.tenant_id, r["email"], r["suppress"],
                                       f"{r['detail'][:200]} (campaign {self.campaign.name})")
            else:
                done = store.record_and_mark(self._connection(), self.campaign.tenant_id, self.campaign.name,
                                             results + skipped, marking)
            self.outcomes.update(r["state"] for r in results + skipped)
            results, first = [], False
            if not done.running:  # paused or cancelled: the rows not marked stay queued
                self._done = True
                self._ready.clear()
                self._stop_claiming()
                break
            self.outcomes["skipped_suppressed"] += done.suppressed
            ids = set(done.in_flight)
            for h in candidates:
                if h.row["row_id"] in ids:
                    self.handed[h.row["row_id"]] = h
                    taken.append(h)
            if not candidates:
                break
        for c in calls:
            c.taken = [h.message for h in taken[: c.want]]
            del taken[: c.want]

    def _ledger_result(self, d: DeliveryResult) -> dict | None:
        handed = self.handed.pop(d.row_id, None)
        if handed is None:  # not a row in flight (a second result for one row): nothing to record
            return None
        status = d.status if d.status in DELIVERY_STATUSES else "unknown"
        if d.skipped:  # e.g. MailWizz does not take the address: skipped_bad_address
            status = skipped_state(d.skipped)
        result = handed.result(status, str(d.detail)[:500])
        if d.suppress:
            result.update(suppress=d.suppress, email=handed.row["email"])
        return result

    def _next(self, n: int) -> list[Handed]:
        out: list[Handed] = []
        while self._ready and len(out) < n:
            if self.one_template and out and self._ready[0].template != out[0].template:
                break
            out.append(self._ready.popleft())
        return out

    def _fill(self, n: int) -> None:
        """Claim and compose windows until ``n`` rows are ready or nothing more is queued."""
        while len(self._ready) < n and not self._done:
            if self._pool_wanted:
                self._start_pool()
            if self._pool is not None:
                with self._ahead_changed:
                    while not self._ahead and self._claimer is not None and self._claim_error is None:
                        self._ahead_changed.wait()
                    if self._claim_error is not None:
                        raise self._claim_error
                    if not self._ahead:
                        self._done = True
                        return
                    rows, suppressed, future = self._ahead.popleft()
                    self._ahead_changed.notify_all()
                self._count_window(rows, suppressed, self.clock())  # no rate on this path: the time is not waited on
                if future is not None:
                    self._add(zip(rows, future.result()))
                continue
            if self._last_window is not None and self.rate:
                started, count = self._last_window
                if count == self.window:  # a full window takes window / rate minutes; a short one was the last
                    wait = count * 60.0 / self.rate - (self.clock() - started)
                    if wait > 0:
                        self.sleep(wait)
            started = self.clock()
            claimed = self._claim()
            if claimed is None:
                self._done = True
                return
            self._count_window(*claimed, started)
            self._add((row, compose_one(self.composer, row["contact"], row["contact_id"], row["token"])) for row in claimed[0])

    def _claim(self) -> tuple[list[dict], int] | None:
        """The next window: its rows and how many were settled as suppressed; None once nothing more is queued."""
        with self.engine.begin() as conn:
            if self.held_domains is not None:  # a destination that throttles is not fed: its rows wait, queued
                self.held.update(self.held_domains(conn))
            rows, suppressed = store.claim_batch(conn, self.campaign.tenant_id, self.campaign.name, self.window,
                                                 after_row_id=self._after, held=sorted(self.held))
        if not rows and not suppressed:
            return None
        if rows:
            self._after = rows[-1]["row_id"]
        return rows, suppressed

    def _count_window(self, rows: list[dict], suppressed: int, started: float) -> None:
        """A window's rows are taken up: ``on_window`` (the guard rail) runs before any of them is marked."""
        if self.windows:
            self.on_window(self.windows)  # the windows before this one: their rows are recorded, in flight or composed
        self.windows += 1
        self._last_window = (started, len(rows) + suppressed)
        self.outcomes["skipped_suppressed"] += suppressed

    def _claim_ahead(self) -> None:
        """The claiming thread of a pooled send: keeps ``_pool_ahead`` windows claimed and composing, so
        that neither the claim nor the composition is on the exchanges' path. The rows stay ``queued``."""
        try:
            while True:
                with self._ahead_changed:
                    while not self._stopping and len(self._ahead) >= self._pool_ahead:
                        self._ahead_changed.wait()
                    if self._stopping:
                        return
                claimed = self._claim()
                with self._ahead_changed:
                    if self._stopping:
                        return
                    if claimed is None:
                        self._claimer = None
                    else:
                        rows, suppressed = claimed
                        self._ahead.append((rows, suppressed, self._pool.submit(rows) if rows else None))
                    self._ahead_changed.notify_all()
                    if claimed is None:
                        return
        except BaseException as exc:  # the exchange that waits for a window raises it
            with self._ahead_changed:
                self._claim_error = exc
                self._ahead_changed.notify_all()

    def _stop_claiming(self) -> None:
        with self._ahead_changed:
            self._stopping = True
            self._ahead.clear()
            claimer, self._claimer = self._claimer, None
            self._ahead_changed.notify_all()
        if claimer is not None and claimer is not threading.current_thread():
            claimer.join()

    def _connection(self) -> sa.Connection:
        if self._conn is None:
            self._conn = self._autocommit.connect()
        return self._conn

    def _close_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def _add(self, made: Iterable[tuple[dict, object]]) -> None:
        composed = [h for h in (self._handed(row, m) for row, m in made) if h is not None]
        if self.one_template:
            composed.sort(key=lambda h: h.template)  # stable: row order within each template
        self._ready.extend(composed)

    def _start_pool(self) -> None:
        """Compose in worker processes when the send is big enough to be worth their start."""
        self._pool_wanted = False
        with self.engine.connect() as conn:
            queued = store.state_counts(conn, self.campaign.tenant_id, self.campaign.name).get("queued", 0)
        if queued >= self._pool_min_rows and portable(self.composer):
            self._pool = ComposePool(self.composer, self._workers)
            self._pool_ahead = 2 * self._workers
            self._claimer = threading.Thread(target=self._claim_ahead, name="ledger-claim", daemon=True)
            self._claimer.start()

    def close(self) -> None:
        """Stop the composing processes (the windows they still compose are dropped: those rows stay queued)."""
        self._stop_claiming()
        self._pool_wanted = False
        self._close_connection()
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def _handed(self, row: dict, made) -> Handed | None:
        row_id = row["row_id"]
        if isinstance(made, tuple):  # ("error", detail): the composer raised
            self._skipped.append(_skip(row_id, skipped_state("render_error"), made[1]))
            return None
        if isinstance(made, Skipped):
            # a reason outside the ledger's vocabulary raises here, before this window's rows leave
            self._skipped.append(_skip(row_id, skipped_state(made.reason), made.detail[:500]))
            return None
        c = self.campaign
        message = OutgoingMessage(row_id=row_id, tenant_id=c.tenant_id, campaign=c.name, job=c.key, envelope_id=row["token"],
                                  mail_from=c.file.from_email, recipient=row["email"], message=made.message)
        return Handed(row, message, made.template, made.rule, made.message_id)


def _skip(row_id: int, state: str, detail: str) -> dict:
    """A composer's skip: the row goes from ``queued`` to its ``skipped_*`` state, never in flight."""
    return {"row_id": row_id, "from_state": "queued", "state": state, "detail": detail}
