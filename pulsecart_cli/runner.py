"""Runs the jobs: a daily job's request (--if-missing, the plan, a dry run, the days, each under its
lock, in its own transaction, in the ledger) and reconcile's topics."""

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from datetime import date, timedelta
from functools import partial

import psycopg

from pulsecart_cli import pubsub, signals
from pulsecart_cli.database import connect, connection
from pulsecart_cli.errors import (
    Interrupted,
    LockBusy,
    PulsecartError,
    UsageError,
)
from pulsecart_cli.jobs import DayContext, read_day
from pulsecart_cli.ledger import Invocation, RunStatus, UnitResult, WorkOutput
from pulsecart_cli.migrations import require_current
from pulsecart_cli.planning import LastSuccess, Selection, last_success, plan_days
from pulsecart_cli.queries import one_row, query
from pulsecart_cli.reconcile import Options, check_subscription, reconcile_topic
from pulsecart_cli.registry import DAILY_JOBS
from pulsecart_cli.units import ConnectionLost, NotRun, committed_result, run_unit


@dataclass
class InDoubt:
    """The day whose connection died while it ran: did its COMMIT land? ``committed`` is what a new
    connection read in its ledger row; None when no new connection could ask."""

    day: date
    run_id: int
    committed: bool | None = None


@dataclass
class DailyRun:
    results: list[UnitResult] = field(default_factory=list)
    interruption: Interrupted | None = None  # a signal (Ctrl-C, SIGTERM, SIGHUP) stopped the run
    stopped_by: Exception | None = None  # a busy lock or a lost connection stopped it before its end
    in_doubt: InDoubt | None = None  # the day in flight when the connection was lost
    notes: list[str] = field(default_factory=list)  # worth telling the operator, not failures

    @property
    def interrupted(self) -> bool:
        return self.interruption is not None

    @property
    def ok(self) -> bool:
        return not self.interrupted and self.stopped_by is None and all(r.completed for r in self.results)


@dataclass(frozen=True)
class DailyRequest:
    """One `pulsecart <job>` run: the days asked for, which of them to run, and how."""

    job: str  # a name in registry.DAILY_JOBS
    days: list[date]
    invocation: Invocation
    selection: Selection = field(default_factory=Selection)  # no selector: every day asked for
    dry_run: bool = False  # plan only: say which days would run and why
    if_missing: bool = False  # one day: do nothing when it already succeeded
    wait: bool = False  # wait for a run holding a day's lock instead of stopping
    keep_going: bool = False  # continue after a failed day
    forget: bool = False  # remove the days' results instead (`pulsecart forget`)


@dataclass
class DailyReport:
    """What became of a ``DailyRequest``: the days planned and, unless nothing had to run, the run. Facts
    only: verdicts.of_daily says what they mean for the exit code and the `Error:` line."""

    request: DailyRequest
    plan: list[tuple[date, str]] = field(default_factory=list)  # oldest first, each with why it was chosen
    already_succeeded: LastSuccess | None = None  # --if-missing found the day done: nothing was planned
    run: DailyRun | None = None  # None: an --if-missing day already done, a dry run, or no day selected

    @property
    def not_run(self) -> int:
        """Planned days the run did not get to."""
        return len(self.plan) - len(self.run.results) if self.run else 0


MAX_FORGET_DAYS = 366
FORGET_TARGET = "forget"  # a forget's ledger row: the job and day it removed, under that day's lock

OnDayStart = Callable[[date], None]
OnDayDone = Callable[[UnitResult], None]


@contextmanager
def _no_progress(total: int) -> Iterator[tuple[OnDayStart, OnDayDone]]:
    yield (lambda day: None), (lambda result: None)


def run_daily(
    url: str,
    request: DailyRequest,
    *,
    progress: Callable[[int], AbstractContextManager[tuple[OnDayStart, OnDayDone]]] = _no_progress,
    notify: Callable[[str], None] = lambda message: None,
) -> DailyReport:
    """--if-missing, then plan the days, then (unless a dry run) run them, on one connection with one
    migration check. A dry run of the days as given needs no database at all.

    ``progress(number of days)`` is entered around the run and gives the callbacks called as each
    day starts and ends; ``notify`` hears notes while the run goes on (``DailyRun.notes`` has the rest)."""
    report = DailyReport(request)
    job, days = request.job, request.days
    if request.forget and len(days) > MAX_FORGET_DAYS:
        raise UsageError(f"forget: {len(days):,} days is more than {MAX_FORGET_DAYS} at once; "
                         "forget a shorter window (each day gets its own ledger row)")
    if request.dry_run and not (request.if_missing or request.selection.filtering):
        report.plan = plan_days(None, job, days, request.selection)
        return report
    with connection(url) as conn:
        require_current(conn)
        if request.if_missing:
            report.already_succeeded = last_success(conn, job, days[0])
            if report.already_succeeded is not None:
                return report
        report.plan = plan_days(conn, job, days, request.selection)
        if request.dry_run or not report.plan:
            return report
        conn.execute(query("changes.fold"))   # readers count few rows; only a run that writes folds
        planned = [d for d, _ in report.plan]
        writers_open = not request.forget and _settle_event_writers(conn, planned[-1])
        if writers_open:
            notify(f"{job}: a transaction writing events stayed open over {WRITERS_WAIT_S:g} s after the run began; "
                   "it may hold rows of these days, so they stay stale until a run after it ends")
        with progress(len(report.plan)) as (on_day_start, on_day_done):
            report.run = _run_planned_days(conn, url, job, planned, request.invocation,
                                           wait=request.wait, keep_going=request.keep_going,
                                           on_day_start=on_day_start, on_day_done=on_day_done, notify=notify,
                                           forget=request.forget, writers_open=writers_open)
        if report.run.in_doubt is not None:
            _settle_in_doubt(url, job, report.run, report.run.in_doubt)
    return report


WRITERS_WAIT_S = 2.0


def _settle_event_writers(conn: psycopg.Connection, last_day: date) -> bool:
    """Before a run reads events up to ``last_day``: from now on inserts into its days write change rows
    (migration 0007). An insert that came before may have written none; its transaction still holds a write
    lock on events, so wait up to WRITERS_WAIT_S for those transactions to end. True when some stay open."""
    conn.execute(query("changes.read_events_through"), {"last_day": last_day})
    writers = one_row(conn.execute(query("changes.event_writers"), {"among": None}))[0]
    deadline = time.monotonic() + WRITERS_WAIT_S
    while writers and time.monotonic() < deadline:
        time.sleep(0.01)
        writers = one_row(conn.execute(query("changes.event_writers"), {"among": writers}))[0]
    return bool(writers)


def _settle_in_doubt(url: str, job: str, run: DailyRun, doubt: InDoubt) -> None:
    """Did the day in flight when the connection died commit? Its ledger row, read on a new connection, says
    'succeeded' only if it did (written in the day's own transaction): a committed day joins the run's
    results; when no connection can ask, it stays unknown."""
    try:
        with signals.shielded(), connection(url) as conn:
            result = committed_result(conn, doubt.run_id, job, doubt.day)
    except (PulsecartError, psycopg.Error):
        return
    doubt.committed = result is not None
    if result is not None:
        result.interruption = run.interruption  # a signal came while it ran, and it committed
        run.results.append(result)


def _run_planned_days(
    conn: psycopg.Connection,
    url: str,
    job: str,
    days: list[date],
    invocation: Invocation,
    *,
    wait: bool,
    keep_going: bool,
    on_day_start: OnDayStart,
    on_day_done: OnDayDone,
    notify: Callable[[str], None],
    forget: bool = False,
    writers_open: bool = False,
) -> DailyRun:
    """Run ``job`` for each day, oldest first, so that scores as of D see D-6 .. D already done.
    Stops at the first failed day unless ``keep_going``, at a signal (the current day rolled back), and at
    a busy lock or a lost connection (``stopped_by``; the days before it stand).
    An overlapping job's window also runs on a second connection to ``url``. ``forget``: remove each day's
    results instead (`pulsecart forget`), one day at a time, under the same lock and ledger. ``writers_open``:
    each day notes a possible change of its events (_settle_event_writers)."""
    days = sorted(days)
    if DAILY_JOBS[job].overlapping and len(days) > 1 and not forget:
        return _OverlappingDays(url, job, days, invocation, wait, keep_going, notify,
                                writers_open).run(conn, on_day_start, on_day_done)
    day_function = DAILY_JOBS[job].forget_day if forget else DAILY_JOBS[job].run_day
    run = DailyRun()
    for index, day in enumerate(days):
        run.interruption = signals.requested()
        if run.interruption is not None:
            break
        try:
            on_day_start(day)
            context = DayContext(later_days=_later_within_a_week(days, index), notify=notify,
                                 writers_open=writers_open)
            result = run_unit(conn, job, partial(read_day, day_function, day=day, context=context), invocation,
                              run_date=day, target=FORGET_TARGET if forget else None, wait=wait)
        except Interrupted as exc:  # before the day started
            run.interruption = exc
            break
        except ConnectionLost as exc:
            run.stopped_by, run.in_doubt = exc.error, InDoubt(day, exc.run_id)
            break
        except (PulsecartError, psycopg.Error) as exc:
            run.stopped_by = exc
            break
        run.results.append(result)
        on_day_done(result)
        run.interruption = result.interruption
        if not _next_day_may_run(result, keep_going):
            break
    return run


def _later_within_a_week(days: list[date], index: int) -> frozenset[date]:
    """The days of a sorted, distinct run after days[index] that its scores step must leave to their own
    turn: those up to 6 days later (the only ones it reads into). Bounded, so a long window stays linear."""
    week_after = days[index] + timedelta(days=6)
    return frozenset(day for day in days[index + 1:index + 7] if day <= week_after)


def _next_day_may_run(result: UnitResult | None, keep_going: bool) -> bool:
    """After this day (None: it never got to run), may the window's next day run?"""
    if result is None or result.interrupted or result.not_run:
        return False
    return result.completed or keep_going


DAYS_IN_FLIGHT = 2


@dataclass
class _Day:
    day: date
    finished: threading.Event = field(default_factory=threading.Event)
    result: UnitResult | None = None
    error: BaseException | None = None  # raised outside the day's unit: its lock was busy, the connection died


class _OverlappingDays:
    """A window of an overlapping job on DAYS_IN_FLIGHT connections: day D computes its own part while
    D-1 finishes, then waits for D-1's commit. Days commit in order and a failure stops the days after
    it, as in a serial run: the next day, already started, is rolled back and leaves no ledger row."""

    def __init__(self, url: str, job: str, days: list[date], invocation: Invocation, wait: bool, keep_going: bool,
                 notify: Callable[[str], None], writers_open: bool):
        self.url, self.job, self.invocation, self.wait, self.keep_going = url, job, invocation, wait, keep_going
        self.notify, self.writers_open = notify, writers_open
        self.days = [_Day(day) for day in days]
        self.stopping = threading.Event()  # start no further day
        self._guard = threading.Lock()
        self._next = 0
        self.worker_error: BaseException | None = None  # why a second worker could not connect

    def run(self, first: psycopg.Connection, on_day_start: OnDayStart, on_day_done: OnDayDone) -> DailyRun:
        """``first``: the caller's connection, for the first worker (the caller closes it)."""
        workers = [threading.Thread(target=self._work_through_days, args=(first if i == 0 else None,), daemon=True)
                   for i in range(min(DAYS_IN_FLIGHT, len(self.days)))]
        for worker in workers:
            worker.start()
        try:
            self._report_in_order(workers, on_day_start, on_day_done)
        except BaseException:  # the library used without the CLI's signals: a KeyboardInterrupt
            self.stopping.set()  # no further day; the days in flight end before their connections close
            raise
        finally:
            for worker in workers:
                worker.join()
        return self._daily_run()

    def _report_in_order(self, workers: list[threading.Thread], on_day_start: OnDayStart,
                         on_day_done: OnDayDone) -> None:
        for day in self.days:
            on_day_start(day.day)
            while not day.finished.wait(0.1):
                if not any(worker.is_alive() for worker in workers):
                    return
            if day.result is None or day.result.not_run:
                return
            on_day_done(day.result)

    def _daily_run(self) -> DailyRun:
        run = DailyRun(interruption=signals.requested())
        for day in self.days:
            if isinstance(day.error, ConnectionLost):  # a signal or not: did its COMMIT land?
                run.stopped_by, run.in_doubt = day.error.error, InDoubt(day.day, day.error.run_id)
                break
            if day.error is not None and not run.interrupted:
                if not isinstance(day.error, (PulsecartError, psycopg.Error)):
                    raise day.error
                run.stopped_by = day.error
                break
            if day.result is not None and not day.result.not_run:
                run.results.append(day.result)
        if self.worker_error is not None and not run.interrupted:
            run.notes.append(f"ran one day at a time: a second connection failed ({self.worker_error})")
        return run

    def _claim(self) -> int | None:
        with self._guard:
            if self.stopping.is_set() or self._next == len(self.days) or signals.requested():
                return None
            self._next += 1
            return self._next - 1

    def _work_through_days(self, given: psycopg.Connection | None) -> None:
        """Runs days on ``given``, or on a connection of its own that it closes after."""
        try:
            conn = given or connect(self.url)
        except BaseException as exc:  # noqa: BLE001 - e.g. no connection slot left: the other worker goes on
            self.worker_error = exc
            return
        try:
            while (index := self._claim()) is not None:
                self._run_day(conn, index)
        finally:
            if given is None:
                signals.close(conn)

    def _run_day(self, conn: psycopg.Connection, index: int) -> None:
        day = self.days[index]
        try:
            day.result = run_unit(conn, self.job, lambda c: self._day_work(c, index), self.invocation,
                                  run_date=day.day, wait=self.wait)
        except BaseException as exc:  # noqa: BLE001 - the lock was busy, the connection died, a signal came
            day.error = exc
        finally:
            if not _next_day_may_run(day.result, self.keep_going):
                self.stopping.set()
            day.finished.set()

    def _day_work(self, conn: psycopg.Connection, index: int) -> WorkOutput:
        context = DayContext(later_days=_later_within_a_week([d.day for d in self.days], index),
                             wait_for_previous_day=lambda: self._wait_for_previous(index), notify=self.notify,
                             writers_open=self.writers_open)
        return read_day(DAILY_JOBS[self.job].run_day, conn, self.days[index].day, context)

    def _wait_for_previous(self, index: int) -> None:
        """Returns once the window's previous day has ended; raises ``NotRun`` when this day must not
        run after it."""
        if index == 0:
            return
        previous = self.days[index - 1]
        while not previous.finished.wait(0.1):
            signals.check()
        signals.check()
        if not _next_day_may_run(previous.result, self.keep_going):
            raise NotRun


def run_reconcile(
    url: str,
    pairs: list[pubsub.TopicPair],
    project: str,
    options: Options,
    invocation: Invocation,
    *,
    wait: bool = False,
) -> list[UnitResult]:
    """Reconcile each topic's dead letters under its lock, one ledger row per topic. A topic whose lock
    is busy is skipped (status ``busy``, the lock's message as its error) and the others still run;
    a signal stops the topic in flight and the rest."""
    clients = pubsub.connect(project)
    results = []
    with connection(url) as conn:
        require_current(conn)
        for pair in pairs:
            check_subscription(clients, pair)
        for pair in pairs:
            try:
                result = run_unit(
                    conn, "reconcile", partial(reconcile_topic, clients, pair=pair, options=options), invocation,
                    target=pair.original, wait=wait, transactional=False)
            except LockBusy as exc:
                result = UnitResult("reconcile", None, pair.original, RunStatus.BUSY, error=exc.message)
            except ConnectionLost as exc:  # its messages were handled one by one: no commit in doubt to settle
                raise exc.error from exc
            results.append(result)
            if result.interrupted:
                break
    return results
