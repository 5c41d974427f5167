"""How a command ended, from the facts the runner returns: the `Error:` line and the exit code. The CLI
prints them (cli._finish); the runner writes no sentence for the operator's last line."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from pulsecart_cli.dates import day_list
from pulsecart_cli.errors import EXIT_FAILURE, EXIT_LOCKED, PulsecartError, first_line
from pulsecart_cli.ledger import RunStatus, UnitResult

if TYPE_CHECKING:
    from pulsecart_cli.runner import DailyReport, DailyRun


@dataclass(frozen=True)
class Verdict:
    code: int = 0
    message: str | None = None  # the Error: line (without "Error: "); None when all went well
    hint: str | None = None  # what to do about it, shown after the message as errors' hints are
    cause: BaseException | None = None  # the exception behind it, for --debug


SUCCESS = Verdict()


def of_daily(report: DailyReport) -> Verdict:
    """A daily job's request: 128 + the signal when interrupted (which days rolled back, which had
    committed), the error that stopped it early (a busy lock, a lost connection: which days stand), 1
    when a day failed, else 0."""
    run, job = report.run, report.request.job
    if run is None:
        return SUCCESS
    if run.interruption is not None:
        in_flight = [r for r in run.results if r.interrupted]
        lost = [run.in_doubt] if run.in_doubt and not run.in_doubt.committed else []
        what = "; ".join(f"{job} {', '.join(str(day) for day in days)} {fate}" for fate, days in (
            ("rolled back and marked failed", [r.run_date for r in in_flight if r.status == RunStatus.FAILED]),
            ("had committed as it arrived", [r.run_date for r in in_flight if r.completed]),  # its COMMIT under way
            ("lost its connection: rolled back", [d.day for d in lost if d.committed is False]),
            ("lost its connection: committed or not, unknown (`pulsecart status` tells once the database answers)",
             [d.day for d in lost if d.committed is None]),
        ) if days) or f"{job}: no day was in flight"
        what += "".join(f"; {r.run_date} had failed: {first_line(r.error, r.status)}"
                        for r in run.results if not r.completed and not r.interrupted)
        return Verdict(run.interruption.exit_code,
                       f"{run.interruption.reason}: {what}; {report.not_run} day(s) not run")
    if run.stopped_by is not None:
        return _stopped(report, run, run.stopped_by)
    if run.ok:
        return SUCCESS
    failed = [r for r in run.results if not r.completed]
    errors = "; ".join(f"{r.run_date}: {first_line(r.error, r.status)}" for r in failed)
    later = f"; {report.not_run} later day(s) not run" if report.not_run else ""
    return Verdict(EXIT_FAILURE, f"{job} failed on {len(failed)} of {len(report.plan)} day(s): {errors}{later}")


def _stopped(report: DailyReport, run: DailyRun, exc: Exception) -> Verdict:
    """The error that stopped the run before its end, with the days that stand."""
    job = report.request.job
    days = [d for d, _ in report.plan]
    ran = {r.run_date: r.completed for r in run.results if r.run_date is not None}  # a daily job's units are days
    committed = [d for d, completed in ran.items() if completed]
    failed = [d for d, completed in ran.items() if not completed]
    unknown = [run.in_doubt.day] if run.in_doubt and run.in_doubt.committed is None else []
    not_committed = [d for d in days if d not in committed and d not in failed and d not in unknown]
    standing = "; ".join(f"{label}: {day_list(ds)}" for label, ds in (
        ("committed", committed), ("failed", failed),
        ("committed or not, unknown (`pulsecart status` tells once the database answers)", unknown),
        ("not committed", not_committed)) if ds)
    if isinstance(exc, PulsecartError):
        message = exc.message if not committed and not failed else f"{exc.message}; {standing}"
        return Verdict(exc.exit_code, message, exc.hint, exc)
    hint = (f"rerun the days not committed, e.g. pulsecart {job} --window {min(days)}..{max(days)} "
            "--only-missing --only-failed")
    return Verdict(EXIT_FAILURE, f"{job} stopped: database error: {first_line(exc, type(exc).__name__)}; {standing}",
                   hint, exc)


def of_reconcile(topics: int, results: list[UnitResult]) -> Verdict:
    """`reconcile`'s topics: 128 + the signal when interrupted, 1 when a topic failed, 3 when one was
    skipped for its lock (the others ran), else 0."""
    interrupted = next((r for r in results if r.interrupted), None)
    if interrupted is not None and interrupted.interruption is not None:
        return Verdict(interrupted.interruption.exit_code,
                       f"{interrupted.error}: reconcile {interrupted.target} stopped (unacked messages are delivered "
                       f"again); {topics - len(results)} topic(s) not run")
    failed = [r for r in results if r.status == RunStatus.FAILED]
    busy = [r for r in results if r.status == RunStatus.BUSY]
    problems = [f"{r.target} failed: {first_line(r.error)}" for r in failed]
    problems += [f"{r.target} skipped: {r.error}" for r in busy]
    if not problems:
        return SUCCESS
    done = len(results) - len(failed) - len(busy)
    return Verdict(EXIT_FAILURE if failed else EXIT_LOCKED,
                   f"reconcile: {'; '.join(problems)}" + (f"; {done} other topic(s) done" if done else ""))
