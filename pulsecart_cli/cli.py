"""The `pulsecart` command line: thin commands over the library.

Each command parses its options, opens a connection, calls one library function and renders the
result. ``PulsecartGroup.main`` is the one place that turns errors into exit codes.
"""

import shlex
import sys
import traceback
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, date, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any

import psycopg
import typer
from rich.markup import escape
from typer._click import exceptions as click_exceptions  # typer vendors click since 0.29
from typer.core import TyperGroup

from pulsecart_cli import (
    __version__,
    database,
    embedded,
    grants,
    migrations,
    pubsub,
    quarantine,
    redaction,
    render,
    schedules,
    signals,
    verdicts,
)
from pulsecart_cli.dates import look_back, parse_day, parse_duration, select_days, today_utc, when
from pulsecart_cli.errors import (
    EXIT_FAILURE,
    EXIT_INCOMPLETE,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    CheckFailed,
    Interrupted,
    JobFailed,
    MissingPrivileges,
    PulsecartError,
    SuspectDays,
    UsageError,
    first_line,
)
from pulsecart_cli.ledger import LEDGER_STATUSES, TRIGGERS, Invocation, RunStatus
from pulsecart_cli.planning import Selection
from pulsecart_cli.prune import DEFAULT_KEEP_DAYS, prune_history
from pulsecart_cli.reconcile import Options as ReconcileOptions
from pulsecart_cli.registry import DAILY_JOBS, DailyJob
from pulsecart_cli.runner import DailyReport, DailyRequest, run_daily, run_reconcile
from pulsecart_cli.seed import SeedSpec, seed_events
from pulsecart_cli.status import (
    DEFAULT_MIN_SHARE,
    MIN_USUAL_WEEKS,
    DayState,
    completeness,
    day_states,
    problems,
    recent_runs,
    usual_phrase,
    with_suspect_days,
)


class PulsecartGroup(TyperGroup):
    """Maps every error to one line on stderr and a documented exit code."""

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, windows_expand_args: bool = True, **extra: Any) -> Any:
        argv = list(sys.argv[1:] if args is None else args)
        with redaction.filtered_output(argv):
            code = self._run(argv, prog_name, complete_var, windows_expand_args=windows_expand_args, **extra)
        return _exit(code, standalone_mode)

    def _run(self, argv: list[str], prog_name: str | None, complete_var: str | None, **extra: Any) -> int:
        debug = "--debug" in argv
        cause: BaseException | None
        try:
            signals.check()  # a signal during the imports
            code, message, cause = _as_int(super().main(args=argv, prog_name=prog_name or "pulsecart",
                                                        complete_var=complete_var, standalone_mode=False,
                                                        **extra)), None, None
        except Exception as exc:  # noqa: BLE001 - every error ends in one line and its exit code
            code, message = _code_and_line(exc)
            cause = exc
            _debug_traceback(debug and _worth_a_traceback(exc))
        except Interrupted as exc:
            code, message, cause = exc.exit_code, exc.reason, exc
        interruption = signals.requested()
        if interruption is not None and code != interruption.exit_code:  # any end after a signal is its doing
            cancelled = message is None or any(isinstance(error, psycopg.errors.QueryCanceled)
                                               for error in (cause, cause and cause.__cause__))
            code, message = interruption.exit_code, interruption.reason + ("" if cancelled else f": {message}")
        signals.decided()
        if message is not None:
            _print_error(message)
        return code


def _as_int(code: object) -> int:
    return code if isinstance(code, int) else 0


def _code_and_line(exc: Exception) -> tuple[int, str | None]:
    """The one place that maps an error to its exit code and `Error:` line (None: it printed its own)."""
    if isinstance(exc, typer.Exit):
        return exc.exit_code, None
    if isinstance(exc, _Failed):
        return exc.verdict.code, _with_hint(exc.verdict.message, exc.verdict.hint)
    if isinstance(exc, typer.Abort):
        return EXIT_INTERRUPTED, "interrupted"
    if isinstance(exc, click_exceptions.NoArgsIsHelpError):
        print(exc.format_message())
        return 0, None
    if isinstance(exc, click_exceptions.UsageError):
        command = exc.ctx.command_path if exc.ctx else "pulsecart"
        return EXIT_USAGE, f"{exc.format_message()} (see '{command} --help')"
    if isinstance(exc, click_exceptions.ClickException):
        return exc.exit_code, exc.format_message()
    if isinstance(exc, PulsecartError):
        return exc.exit_code, _with_hint(exc.message, exc.hint)
    if isinstance(exc, psycopg.Error):
        return EXIT_FAILURE, f"database error: {first_line(exc, type(exc).__name__)}"
    if type(exc).__module__.startswith("google."):
        return EXIT_FAILURE, f"Pub/Sub error: {type(exc).__name__}: {first_line(exc)}"
    return EXIT_FAILURE, f"unexpected {type(exc).__name__}: {exc} (rerun with --debug for the traceback)"


def _worth_a_traceback(exc: Exception) -> bool:
    """With --debug: the errors pulsecart raised or met, not the parser's."""
    if isinstance(exc, _Failed):
        return exc.verdict.cause is not None
    return not isinstance(exc, (typer.Exit, typer.Abort, click_exceptions.ClickException))


def _exit(code: object, standalone_mode: bool) -> int:
    code = code if isinstance(code, int) else 0
    if standalone_mode:
        sys.exit(code)
    return code


def _finish(verdict: verdicts.Verdict) -> int:
    """A command's last step: 0, or (not a success) PulsecartGroup._run prints the `Error:` line and exits
    with the verdict's code."""
    if verdict.message is None:
        return 0
    raise _Failed(verdict) from verdict.cause


def _with_hint(message: str | None, hint: str | None) -> str:
    return (message or "") + (f" (hint: {hint})" if hint else "")


class _Failed(Exception):
    """A command that ran and ended badly (a day failed, a signal, a busy lock): its verdict."""

    def __init__(self, verdict: verdicts.Verdict):
        super().__init__(verdict.message)
        self.verdict = verdict


def _print_error(message: str) -> None:
    """One line on stderr, control characters from data escaped; red on a terminal."""
    message = render.clean(" ".join(line.strip() for line in message.strip().splitlines()))
    if sys.stderr.isatty():
        render.err().print(f"[bold red]Error:[/] {escape(message)}")
    else:
        print(f"Error: {message}", file=sys.stderr)


def _debug_traceback(debug: bool) -> None:
    if debug:
        traceback.print_exc(file=sys.stderr)


app = typer.Typer(
    cls=PulsecartGroup,
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)
db_app = typer.Typer(help="""Schema migrations (sql/migrations/), one transaction each.

\b
Examples:
  pulsecart db status
  pulsecart db migrate
""", no_args_is_help=True)
dev_app = typer.Typer(help="""Local development helpers.

\b
Examples:
  pulsecart dev db start
  pulsecart dev db url
""", no_args_is_help=True)
dev_db_app = typer.Typer(help="""The embedded PostgreSQL under $PULSECART_HOME (default ./.pulsecart).

\b
Examples:
  pulsecart dev db start
  pulsecart dev db stop
  export PULSECART_DATABASE_URL=$(pulsecart dev db url)
""", no_args_is_help=True)
pubsub_app = typer.Typer(help="""Pub/Sub topics and subscriptions (local development and tests; production uses Terraform).

\b
Examples:
  PUBSUB_EMULATOR_HOST=127.0.0.1:8085 pulsecart pubsub setup --project demo
  pulsecart pubsub setup --topic commerce-events --project demo
""", no_args_is_help=True)
quarantine_app = typer.Typer(help="""Review dead letters that reconcile set aside: list, show, replay, discard.

\b
Examples:
  pulsecart quarantine list --status quarantined
  pulsecart quarantine show 12
  pulsecart quarantine replay 12 13 --note "consumer fixed in v2.3"
  pulsecart quarantine discard 14 --reason "test data"
""", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(dev_app, name="dev")
app.add_typer(pubsub_app, name="pubsub")
app.add_typer(quarantine_app, name="quarantine")
dev_app.add_typer(dev_db_app, name="db")

def _choices(name: str, values: Iterable[str]) -> type[StrEnum]:
    """An Enum for an option's values: help lists them and Click rejects anything else (exit 2)."""
    return StrEnum(name, {value: value for value in values})  # type: ignore[return-value]  # a class, not a member


if TYPE_CHECKING:  # built from the library's values at run time; to mypy, string enums
    Trigger = StrEnum
    DailyJobName = StrEnum
    JobName = StrEnum
    RunStatusChoice = StrEnum
    QuarantineStatus = StrEnum
else:
    Trigger = _choices("Trigger", TRIGGERS)
    DailyJobName = _choices("DailyJob", DAILY_JOBS)
    JobName = _choices("Job", [*DAILY_JOBS, "reconcile"])
    RunStatusChoice = _choices("RunStatus", LEDGER_STATUSES)
    QuarantineStatus = _choices("QuarantineStatus", quarantine.STATUSES)
EVERY_DAILY_JOB = "both" if len(DAILY_JOBS) == 2 else "all"
BIGINT_MAX = 2**63 - 1  # ids and limits end up as PostgreSQL bigints

DatabaseUrl = Annotated[str | None, typer.Option(
    "--database-url", metavar="URL", envvar="PULSECART_DATABASE_URL",
    help="PostgreSQL URL (postgresql://… or libpq key=value). Default: the embedded database under "
         "$PULSECART_HOME (./.pulsecart), started when needed.")]
DateOpt = Annotated[str | None, typer.Option("--date", metavar="D", help="One UTC day: YYYY-MM-DD, yesterday, today or 'N days ago'.")]
WindowOpt = Annotated[str | None, typer.Option("--window", metavar="A..B", help="Days A to B, both included.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout, nothing else.")]
KeepGoingOpt = Annotated[bool, typer.Option("--keep-going", help="Continue after a failed day (exit code still 1).")]
WaitOpt = Annotated[bool, typer.Option("--wait", help="Wait for a run holding the day's lock instead of exiting 3.")]
ProjectOpt = Annotated[str | None, typer.Option(
    "--project", metavar="P", envvar=["PULSECART_GCP_PROJECT", "GOOGLE_CLOUD_PROJECT"],
    help="GCP project (the first environment variable set wins).")]
TriggerOpt = Annotated[Trigger | None, typer.Option(
    "--trigger", help="How the run is recorded. Default: airflow under Airflow, else manual.")]


def _print_version(value: bool) -> None:
    if value:
        print(f"pulsecart {__version__}")
        raise typer.Exit(0)


@app.callback()
def root(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors.")] = False,
    version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """Run, replay and backfill PulseCart's scheduled batch jobs.

    Every run, by hand, from cron or from Airflow, lands in one ledger (job_runs). Shell completion:
    pulsecart --install-completion.

    \b
    Examples:
      pulsecart db migrate
      pulsecart aggregate --date yesterday
      pulsecart status --days 14
      pulsecart aggregate --help
    """


def _invocation(trigger: Trigger | None) -> Invocation:
    return Invocation.detect(trigger and trigger.value)


class Via(StrEnum):
    local = "local"
    airflow = "airflow"


ViaOpt = Annotated[Via, typer.Option(
    "--via", help="local: run the days here. airflow: print the `airflow backfill create` command that has "
                  "Airflow process exactly these days (with --run, run it).")]
RunOpt = Annotated[bool, typer.Option(
    "--run", help="With --via airflow: run the command with the airflow on PATH instead of printing it, then wait "
                  "for Airflow's runs, showing each day as it ends; exit 1 when one failed.")]
NoWaitOpt = Annotated[bool, typer.Option(
    "--no-wait", help="With --via airflow --run: return once Airflow has created the runs.")]
MaxActiveRunsOpt = Annotated[int | None, typer.Option(
    "--max-active-runs", metavar="N", min=1, max=1000,
    help="With --via airflow: how many days Airflow runs at once. Default: 4.")]
DEFAULT_MAX_ACTIVE_RUNS = 4


def _backfill_via_airflow(job: str, days: list[date], dry_run: bool, run_it: bool, no_wait: bool,
                          max_active_runs: int | None, as_json: bool, local_only: dict[str, bool]) -> int:
    given = [flag for flag, on in local_only.items() if on]
    if given:
        raise UsageError(f"{', '.join(given)}: only with --via local (through Airflow, every day asked for "
                         "runs: --reprocess-behavior completed; pulsecart's ledger does not choose them)")
    if no_wait and not run_it:
        raise UsageError("--no-wait goes with --via airflow --run")
    backfill = schedules.backfill(job, days, max_active_runs or DEFAULT_MAX_ACTIVE_RUNS, dry_run)
    return _via_airflow(backfill, run_it, not no_wait and not dry_run, as_json)


def _run_with_progress(database_url: str | None, request: DailyRequest, as_json: bool) -> DailyReport:
    """The request run on the database, with a progress bar on a terminal and notes as they come."""
    job = request.job
    return run_daily(database.resolve_url(database_url), request,
                     progress=lambda total: render.day_progress(job, total, enabled=not as_json and total > 1),
                     notify=lambda note: render.message(f"note: {note}"))


def _render_daily(report: DailyReport, as_json: bool) -> int:
    """A daily job's report on stdout (a table, the plan, or --json) and stderr; its exit code."""
    job, days = report.request.job, report.request.days
    if report.already_succeeded is not None:
        done = report.already_succeeded
        render.message(f"{job} {days[0]} already succeeded (run {done.id}, {done.trigger}, "
                       f"finished {when(done.finished_at)}); nothing to do")
        if as_json:
            render.print_json(render.daily_json(job, [], skipped="already succeeded"))
        return 0
    if report.request.dry_run:
        if as_json:
            render.print_json(render.daily_json(job, [{"date": d, "reason": r} for d, r in report.plan], dry_run=True))
        else:
            render.out().print(render.plan_text(job, report.plan))
        return 0
    run = report.run
    if run is None:
        render.message(f"{job}: no day in {days[0]}..{days[-1]} matches the selection; nothing to do")
        if as_json:
            render.print_json(render.daily_json(job, []))
        return 0
    for note in run.notes:
        render.message(f"note: {note}")
    if as_json:
        render.print_json(render.day_results_json(job, run))
    elif run.results or run.stopped_by is None:
        title = f"forget {job}" if report.request.forget else job
        render.out().print(render.day_results_table(title, run.results))
        if report.not_run and not run.interrupted and run.stopped_by is None:
            render.message(f"{report.not_run} later day(s) not run after the failure; pass --keep-going to continue.")
    return _finish(verdicts.of_daily(report))


def _via_airflow(plan: schedules.Backfill, run_it: bool, wait: bool, as_json: bool) -> int:
    """Print (or run, and then wait for) the `airflow backfill create` that processes exactly plan.first … plan.last."""
    first_run, last_run = plan.runs
    check = f"pulsecart status --job {plan.dag.job} --end {plan.last} --days {len(plan.days)}"
    note = (f"{plan.dag.dag_id}: the runs {when(first_run)} … {when(last_run)} process "
            f"{plan.first} … {plan.last}; afterwards: {check}")
    if not run_it:
        if as_json:
            render.print_json(render.backfill_json(plan, check))
        else:
            render.out().print(shlex.join(plan.command()), markup=False, soft_wrap=True)
            render.message(note)
        return 0
    airflow = schedules.find_airflow()
    render.message(f"running: {shlex.join(plan.command())}")
    created_at = datetime.now(UTC)
    result = schedules.run(plan, airflow)
    for text, stream in ((result.stdout, sys.stderr if as_json else sys.stdout), (result.stderr, sys.stderr)):
        stream.write(text)
    failed = schedules.failure(result)
    ended = None
    if failed is None and wait:
        render.message(f"waiting for Airflow's runs of {plan.dag.dag_id} for {plan.first} … {plan.last} "
                       "(Ctrl-C stops the waiting, not the runs)")

        def show(run: schedules.AirflowDayRun) -> None:
            if not as_json:
                render.out().print(f"{plan.dag.job} {run.day}: {run.state}" + (f" ({run.run_id})" if run.run_id else ""),
                                   markup=False)

        ended = schedules.wait(plan, airflow, created_at, show)
    if as_json:
        render.print_json(render.backfill_json(plan, check, exit_code=result.returncode, runs=ended))
    if failed is not None:
        raise failed
    if ended is None:
        render.message(note + ("" if plan.dry_run else " (not waiting: the runs go on in Airflow)"))
        return 0
    not_succeeded = [run for run in ended if run.state != "success"]
    if not_succeeded:
        raise JobFailed(f"{len(not_succeeded)} of {len(ended)} day(s) did not succeed in Airflow: "
                        + ", ".join(f"{run.day} ({run.state})" for run in not_succeeded),
                        hint=f"read the task logs in Airflow; then: {check}")
    render.message(f"{plan.dag.dag_id}: all {len(ended)} day(s) succeeded; {check}")
    return 0


OnlyMissingOpt = Annotated[bool, typer.Option("--only-missing", help="Only days with no succeeded run.")]
OnlyFailedOpt = Annotated[bool, typer.Option("--only-failed", help="Only days whose latest run failed.")]
StaleOpt = Annotated[bool, typer.Option(
    "--stale", help="Only days whose events changed after their latest successful run read them (late, deleted or "
         "corrected events), or whose scores read such a day.")]
DryRunOpt = Annotated[bool, typer.Option("--dry-run", help="Print the days that would run and why; change nothing.")]
IfMissingOpt = Annotated[bool, typer.Option(
    "--if-missing", help="With --date: do nothing (exit 0) when the day already succeeded. For cron.")]


def _add_daily_command(job: DailyJob) -> None:
    """`pulsecart <job>`: the options every daily job shares, the help from its registry entry."""

    def command(
        date_text: DateOpt = None, window_text: WindowOpt = None, database_url: DatabaseUrl = None,
        as_json: JsonOpt = False, keep_going: KeepGoingOpt = False, wait: WaitOpt = False, trigger: TriggerOpt = None,
        only_missing: OnlyMissingOpt = False, only_failed: OnlyFailedOpt = False, stale: StaleOpt = False,
        dry_run: DryRunOpt = False, if_missing: IfMissingOpt = False,
        via: ViaOpt = Via.local, run_it: RunOpt = False, no_wait: NoWaitOpt = False,
        max_active_runs: MaxActiveRunsOpt = None,
    ) -> int:
        days = select_days(date_text, window_text)
        if via is Via.airflow:
            local_only = {"--keep-going": keep_going, "--wait": wait, "--trigger": trigger is not None,
                          "--only-missing": only_missing, "--only-failed": only_failed, "--stale": stale,
                          "--if-missing": if_missing}
            return _backfill_via_airflow(job.name, days, dry_run, run_it, no_wait, max_active_runs, as_json, local_only)
        if run_it or no_wait or max_active_runs is not None:
            raise UsageError("--run, --no-wait and --max-active-runs go with --via airflow")
        if if_missing and window_text is not None:
            raise UsageError("--if-missing goes with a single --date (for a window use --only-missing)")
        request = DailyRequest(job.name, days, _invocation(trigger), Selection(only_missing, only_failed, stale),
                               dry_run=dry_run, if_missing=if_missing, wait=wait, keep_going=keep_going)
        return _render_daily(_run_with_progress(database_url, request, as_json), as_json)

    command.__name__ = command.__qualname__ = job.name
    command.__doc__ = job.help
    app.command(job.name)(command)


for _job in DAILY_JOBS.values():
    _add_daily_command(_job)


@app.command()
def forget(
    job: Annotated[DailyJobName, typer.Argument(metavar="JOB", help="The job whose results to remove.")],
    date_text: DateOpt = None, window_text: WindowOpt = None, database_url: DatabaseUrl = None,
    as_json: JsonOpt = False, wait: WaitOpt = False, trigger: TriggerOpt = None,
) -> int:
    """Remove a day's results, as if the job had never run for it (a mistyped --date, say).

    aggregate: deletes the day's event_aggregates, its score history and its record, and rescores the
    aggregated as-of days D+1 … D+6 that read its counts; the current scores move back to the newest
    aggregated day that remains. metrics: deletes the day's daily_metrics row. The ledger records a
    `forgotten` run and status shows the day as never run; running the job for the day again brings
    everything back (results are computed from events). Days after today are accepted here.

    \b
    Examples:
      pulsecart forget aggregate --date 2026-03-08
      pulsecart forget metrics --window 2025-03-01..2025-03-02 --json
    """
    days = select_days(date_text, window_text, allow_future=True)
    request = DailyRequest(job.value, days, _invocation(trigger), wait=wait, forget=True)
    return _render_daily(_run_with_progress(database_url, request, as_json), as_json)


@app.command()
def status(
    job: Annotated[DailyJobName | None, typer.Option("--job", help=f"Only this job (default: {EVERY_DAILY_JOB}).")] = None,
    days: Annotated[int, typer.Option("--days", min=1, max=366, help="How many days back.")] = 30,
    end: Annotated[str, typer.Option("--end", metavar="D", help="Last day shown.")] = "yesterday",
    check: Annotated[bool, typer.Option(
        "--check", help="Exit 5 unless every day succeeded and is not stale; print one line per problem day "
                        "with the command that fixes it. Exit 7 when the only problems are suspect days (a "
                        "warning). For cron's MAILTO or a monitoring check.")] = False,
    database_url: DatabaseUrl = None, as_json: JsonOpt = False,
) -> None:
    """Show, per date job, which of the last N days succeeded, failed, are missing, stale or running,
    and the commands that fill the gaps.

    \b
    Examples:
      pulsecart status --days 14
      pulsecart status --job aggregate --end 2025-03-07 --days 7 --json
      pulsecart status --check --days 3
    """
    jobs = [job.value] if job else list(DAILY_JOBS)
    window = look_back(end, days)
    with _migrated_connection(database_url) as conn:
        states = with_suspect_days(conn, {j: day_states(conn, j, window) for j in jobs}, window)
    if check:
        found = problems(states)
        if as_json:
            render.print_json(render.check_json(found, window))
        else:
            for p in found:
                render.out().print(f"{p.job} {p.day} {p.state}: {p.reason}; fix: {p.fix}", markup=False)
        failed = [p for p in found if p.state != DayState.SUSPECT]
        if failed:
            raise CheckFailed(f"status --check: {len(failed)} problem day(s) in {window[0]}..{window[-1]}"
                              + (f" and {len(found) - len(failed)} suspect" if len(found) > len(failed) else ""))
        if found:
            raise SuspectDays(f"status --check: {len(found)} suspect day(s) in {window[0]}..{window[-1]}: their "
                              "figures are far from the usual")
        if not as_json and sys.stdout.isatty():   # silent otherwise: cron mails what a command prints
            render.out().print(f"ok: every day of {', '.join(jobs)} in {window[0]}..{window[-1]} succeeded "
                               "and is up to date")
    elif as_json:
        render.print_json({"ok": True} | render.status_json(states, window))
    else:
        render.out().print(render.status_view(states, window))


@app.command()
def runs(
    job: Annotated[JobName | None, typer.Option("--job", help="Only this job.")] = None,
    status_filter: Annotated[RunStatusChoice | None, typer.Option("--status", help="Only runs in this state.")] = None,
    date_text: Annotated[str | None, typer.Option(
        "--date", metavar="D", help="Only runs for this day (YYYY-MM-DD, yesterday, today).")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=BIGINT_MAX, help="How many rows at most.")] = 20,
    database_url: DatabaseUrl = None, as_json: JsonOpt = False,
) -> None:
    """Recent runs from the ledger (job_runs), newest first.

    \b
    Examples:
      pulsecart runs --job aggregate --status failed
      pulsecart runs --date 2025-03-03 --limit 5 --json
    """
    day = parse_day(date_text) if date_text is not None else None
    with _migrated_connection(database_url) as conn:
        rows = recent_runs(conn, job and job.value, status_filter and status_filter.value, day, limit)
    if as_json:
        render.print_json({"ok": True, "runs": rows})
    else:
        render.out().print(render.runs_table(rows))


@app.command("check-complete")
def check_complete(
    date_text: Annotated[str, typer.Option("--date", metavar="D", help="The day whose data should be complete.")],
    grace: Annotated[str, typer.Option("--grace", help="How far past D's end the newest event must be.")] = "30m",
    min_share: Annotated[float, typer.Option(
        "--min-share", min=0.0, max=1.0, metavar="S",
        help="Wait while D holds less than this share of its usual events (the median of the same weekday over "
             "the 4 weeks before). 0 accepts D as it is, and the ledger records it.")] = DEFAULT_MIN_SHARE,
    database_url: DatabaseUrl = None,
) -> int:
    """Exit 0 when D's events are complete, else 4: the consumer has moved past D (an event at or after
    D+1 00:00 UTC + grace exists), and D holds at least --min-share of its usual events.

    The Airflow DAGs use it as a sensor. A thin day (a producer down for hours, a stuck partition) waits;
    a holiday is accepted on purpose with --min-share 0, recorded in the ledger and honoured later.

    \b
    Examples:
      pulsecart check-complete --date 2025-03-03 --grace 30m
      pulsecart check-complete --date yesterday
      pulsecart check-complete --date 2025-12-25 --min-share 0
    """
    day = parse_day(date_text)
    grace_delta = parse_duration(grace)
    accept_as = _invocation(None) if min_share == 0 else None
    with _migrated_connection(database_url) as conn:
        result = completeness(conn, day, grace_delta, min_share, accept_as)
    newest = when(result.newest_event) if result.newest_event else "none"
    if result.usual is None:
        volume = (f"volume check skipped: {len(result.usual_weeks)} earlier {day:%A}s with counts "
                  f"({MIN_USUAL_WEEKS} needed)")
    else:
        volume = (f"{result.events:,} events, {result.share:.0%} of its usual "
                  f"({usual_phrase(day, result.usual_weeks, result.usual)})")
    if result.accepted_at is not None:
        volume += f"; accepted as it is on {when(result.accepted_at)}"
    if not result.past_the_day:
        render.out().print(f"{day} is not complete yet: newest event {newest}, "
                           f"waiting for one at or after {when(result.threshold)}", markup=False, soft_wrap=True)
        return EXIT_INCOMPLETE
    if result.thin:
        render.out().print(f"{day} has {result.share:.0%} of its usual events "
                           f"({usual_phrase(day, result.usual_weeks, result.usual)}): waiting for the rest; to accept it as it is: "
                           f"pulsecart check-complete --date {day} --min-share 0", markup=False, soft_wrap=True)
        return EXIT_INCOMPLETE
    render.out().print(f"{day} is complete: newest event {newest} >= {when(result.threshold)}; {volume}",
                       markup=False, soft_wrap=True)
    return 0


@app.command()
def reconcile(
    topic: Annotated[str, typer.Option("--topic", metavar="T",
                                       help="commerce-events, user-actions, system-events, a full name, or all.")],
    project: ProjectOpt = None,
    max_messages: Annotated[int, typer.Option("--max-messages", min=1, help="Stop after this many messages per topic.")] = 10_000,
    max_reconciles: Annotated[int, typer.Option(
        "--max-reconciles", min=1, help="Quarantine a message republished this many times already.")] = 3,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Pull and classify, ack nothing, change nothing.")] = False,
    publish_timeout: Annotated[float, typer.Option(
        "--publish-timeout", min=0.1, max=3600, help="Seconds to wait for a publish before leaving its message unacked.")] = 30.0,
    pull_timeout: Annotated[float, typer.Option(
        "--pull-timeout", min=0.1, max=3600, help="Seconds a pull may wait for messages; an empty pull ends the run.")] = 5.0,
    database_url: DatabaseUrl = None, as_json: JsonOpt = False,
    wait: Annotated[bool, typer.Option(
        "--wait", help="Wait for a run holding the topic's lock instead of skipping it (exit 3).")] = False,
    trigger: TriggerOpt = None,
) -> int:
    """Drain dead-letter topics: republish processable messages to their original topic, quarantine the rest.

    A message is acked only after its republish returned a message id or its quarantine row committed.

    \b
    Examples:
      pulsecart reconcile --topic all --project my-project
      pulsecart reconcile --topic commerce-events --dry-run --json
      pulsecart reconcile --topic user-actions --max-messages 500 --pull-timeout 10
    """
    pairs = pubsub.resolve_topics(topic)
    project_id = pubsub.resolve_project(project)
    invocation = _invocation(trigger)
    url = database.resolve_url(database_url)
    options = ReconcileOptions(max_messages=max_messages, max_reconciles=max_reconciles, dry_run=dry_run,
                               publish_timeout_s=publish_timeout, pull_timeout_s=pull_timeout)
    results = run_reconcile(url, pairs, project_id, options, invocation, wait=wait)
    if as_json:
        ok = len(results) == len(pairs) and all(r.status == RunStatus.SUCCEEDED and not r.interrupted for r in results)
        render.print_json(render.reconcile_json(results, ok))
    else:
        render.out().print(render.reconcile_table(results))
    return _finish(verdicts.of_reconcile(len(pairs), results))


@pubsub_app.command("setup")
def pubsub_setup(
    project: ProjectOpt = None,
    topic: Annotated[str, typer.Option(
        "--topic", metavar="T", help="commerce-events, user-actions, system-events, a full name, or all.")] = "all",
) -> None:
    """Create the topics, dead-letter topics and subscriptions, idempotently (production uses Terraform).

    \b
    Examples:
      PUBSUB_EMULATOR_HOST=127.0.0.1:8085 pulsecart pubsub setup --project demo
      pulsecart pubsub setup --topic commerce-events
    """
    clients = pubsub.connect(pubsub.resolve_project(project))
    created = pubsub.setup(clients, pubsub.resolve_topics(topic))
    render.out().print("\n".join(f"created {c}" for c in created) if created else "everything already exists")


@quarantine_app.command("list")
def quarantine_list(
    topic: Annotated[str | None, typer.Option("--topic", metavar="T", help="Only this original topic.")] = None,
    reason: Annotated[str | None, typer.Option("--reason", help="Only reasons containing this text.")] = None,
    status: Annotated[QuarantineStatus | None, typer.Option("--status", help="Only entries in this state.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=BIGINT_MAX, help="How many rows.")] = 50,
    database_url: DatabaseUrl = None, as_json: JsonOpt = False,
) -> None:
    """List quarantined dead letters, newest first.

    \b
    Examples:
      pulsecart quarantine list --topic commerce-events
      pulsecart quarantine list --status quarantined --reason event_type --json
    """
    topic_name = pubsub.resolve_topics(topic)[0].original if topic else None
    with _migrated_connection(database_url) as conn:
        entries = quarantine.list_entries(conn, topic_name, reason, status and status.value, limit)
    if as_json:
        render.print_json({"ok": True, "entries": entries})
    else:
        render.out().print(render.quarantine_table(entries))


@quarantine_app.command("show")
def quarantine_show(
    entry_id: Annotated[int, typer.Argument(metavar="ID", min=1, max=BIGINT_MAX)],
    database_url: DatabaseUrl = None, as_json: JsonOpt = False,
    max_bytes: Annotated[int, typer.Option(
        "--max-bytes", min=1, help="Show at most this many bytes of the data (--json shows all of it).")] = 4096,
) -> None:
    """Show one quarantined message; its data as text when it is text, else hex.

    \b
    Examples:
      pulsecart quarantine show 12
      pulsecart quarantine show 12 --max-bytes 65536
      pulsecart quarantine show 12 --json
    """
    with _migrated_connection(database_url) as conn:
        entry = quarantine.get_entries(conn, [entry_id])[0]
    if as_json:
        kind, shown = quarantine.printable(bytes(entry["data"]))
        render.print_json({"ok": True} | {k: v for k, v in entry.items() if k != "data"} | {"data_" + kind: shown})
    else:
        render.out().print(render.quarantine_entry(entry, max_bytes))


@quarantine_app.command("replay")
def quarantine_replay(
    entry_ids: Annotated[list[int], typer.Argument(metavar="ID...", min=1, max=BIGINT_MAX)],
    project: ProjectOpt = None, database_url: DatabaseUrl = None,
    note: Annotated[str | None, typer.Option("--note", help="Why it can be replayed now (kept on the row).")] = None,
) -> None:
    """Republish quarantined messages to their original topic after a fix; marks them replayed.

    \b
    Examples:
      pulsecart quarantine replay 12 13 --note "consumer fixed in v2.3"
      pulsecart quarantine replay 12 --project my-project
    """
    clients = pubsub.connect(pubsub.resolve_project(project))
    with _migrated_connection(database_url) as conn:
        for entry_id, message_id in quarantine.replay(conn, clients, entry_ids, note):
            render.out().print(f"replayed {entry_id} as message {message_id}")


@quarantine_app.command("discard")
def quarantine_discard(
    entry_ids: Annotated[list[int], typer.Argument(metavar="ID...", min=1, max=BIGINT_MAX)],
    reason: Annotated[str, typer.Option("--reason", help="Why it will never be processed (kept on the row).")],
    database_url: DatabaseUrl = None,
) -> None:
    """Mark quarantined messages discarded; the rows are kept.

    \b
    Examples:
      pulsecart quarantine discard 12 --reason "test data"
      pulsecart quarantine discard 12 13 14 --reason "malformed, producer fixed"
    """
    with _migrated_connection(database_url) as conn:
        for entry_id in quarantine.discard(conn, entry_ids, reason):
            render.out().print(f"discarded {entry_id}")


@contextmanager
def _migrated_connection(database_url: str | None) -> Iterator[psycopg.Connection]:
    with database.connection(database.resolve_url(database_url)) as conn:
        migrations.require_current(conn)
        yield conn


@app.command()
def seed(
    start: Annotated[str, typer.Option("--start", metavar="D", help="First day (YYYY-MM-DD, yesterday, today).")],
    days: Annotated[int, typer.Option("--days", help="Number of days.")] = 7,
    users: Annotated[int, typer.Option("--users", help="Number of distinct users.")] = 1000,
    events_per_day: Annotated[int, typer.Option("--events-per-day", help="Events per day.")] = 10_000,
    seed_value: Annotated[int, typer.Option("--seed", help="Random seed: same seed, same rows.")] = 42,
    database_url: DatabaseUrl = None,
) -> None:
    """Load deterministic synthetic events with COPY; same seed, same rows.

    \b
    Examples:
      pulsecart seed --start 2025-03-01 --days 7 --users 1000 --events-per-day 10000 --seed 42
      pulsecart seed --start yesterday --days 1
    """
    spec = SeedSpec(parse_day(start, "--start"), days, users, events_per_day, seed_value)
    with _migrated_connection(database_url) as conn:
        result = seed_events(conn, spec)
    last = date.fromordinal(spec.start.toordinal() + days - 1)
    render.out().print(f"seeded {result.events:,} events over {result.days} day(s) ({spec.start}..{last}); "
                       f"{result.invalid_totals:,} orders with an invalid total")


@app.command()
def prune(
    keep_days: Annotated[int, typer.Option("--keep-days", metavar="N", min=8, max=100_000,
                                           help="Keep the score history of the last N days.")] = DEFAULT_KEEP_DAYS,
    database_url: DatabaseUrl = None,
) -> None:
    """Remove score history older than N days (one row per user and day adds up: 36 M rows a year at 100,000 users).

    Never the current scores, nor what later days still read; counts are kept. A pruned day shows as
    stale in `status`, and rerunning it rebuilds its scores. One day per transaction: a running job
    waits for one day's delete at most. The nightly DAG runs it.

    \b
    Examples:
      pulsecart prune
      pulsecart prune --keep-days 90
    """
    with _migrated_connection(database_url) as conn:
        pruned = prune_history(conn, keep_days, today_utc())
    if pruned.days:
        render.out().print(f"pruned the scores as of {len(pruned.days)} day(s), {pruned.days[0]}..{pruned.days[-1]} "
                           f"({pruned.rows:,} rows); kept the last {keep_days} days", markup=False)
    else:
        render.out().print(f"nothing to prune: no scores older than {keep_days} days", markup=False)


@db_app.command("migrate")
def db_migrate(database_url: DatabaseUrl = None) -> None:
    """Create pulsecart's schema, or bring it up to date, and create or adopt the application's tables.

    pulsecart's own tables go in their own schema ($PULSECART_SCHEMA, default pulsecart). An existing
    events table (the consumer's, partitioned or not) is adopted as it is: migrate adds an index
    (CREATE INDEX CONCURRENTLY) and change-tracking triggers without blocking its writers for more
    than a second; the seed's event_aggregates, daily_metrics and personalization_scores are adopted
    with their rows. When the role lacks a privilege a step needs, nothing changes and the owner's SQL
    is printed (exit 6). Safe to run again.

    \b
    Examples:
      pulsecart db migrate
      pulsecart db migrate --database-url postgresql://pulsecart@db.internal/pulsecart
    """
    with database.connection(database.resolve_url(database_url)) as conn:
        try:
            report = migrations.migrate(conn)
        except MissingPrivileges as exc:
            print(exc.owner_sql)
            raise
        changed = migrations.changed(migrations.applied(conn))
    lines = []
    if report.moved_from_public:
        lines.append(f"moved pulsecart's tables from public into the schema {database.schema_name()}")
    lines += [f"applied {m.label}" for m in report.applied]
    lines += [f"adopted {table} as it is" for table in report.adopted]
    lines += report.changed
    render.out().print("\n".join(lines) if lines else "schema is up to date", markup=False)
    for m in changed:
        render.message(f"warning: {m.label}.sql changed since it was applied (its checksum differs)")


@db_app.command("grant")
def db_grant(
    role: Annotated[str, typer.Argument(metavar="ROLE", help="The login role the jobs run as.")],
    print_only: Annotated[bool, typer.Option("--print", help="Print the SQL instead of running it.")] = False,
    database_url: DatabaseUrl = None,
) -> None:
    """Grant a login role exactly what the jobs need: read events, write pulsecart's schema and the outputs.

    Run it as the role that ran `db migrate` (the owner of pulsecart's schema and the outputs). The role
    gets no INSERT, UPDATE or DELETE on events and cannot alter it.

    \b
    Examples:
      pulsecart db grant pulsecart_jobs
      pulsecart db grant pulsecart_jobs --print | psql "$OWNER_URL"
    """
    if print_only:
        print("\n".join(statement.as_string() + ";" for statement in grants.grant_statements(role)))
        return
    with _migrated_connection(database_url) as conn:
        grants.grant(conn, role)
    render.out().print(f"granted {role} what the jobs need (db grant {role} --print shows the SQL)", markup=False)


@db_app.command("status")
def db_status(database_url: DatabaseUrl = None) -> None:
    """Show applied and pending migrations, and applied files changed since.

    \b
    Examples:
      pulsecart db status
    """
    with database.connection(database.resolve_url(database_url)) as conn:
        applied = migrations.applied(conn)
    changed = {m.version for m in migrations.changed(applied)}
    for m in migrations.available():
        done = applied.get(m.version)
        state = f"applied {when(done.applied_at)}" if done else "pending"
        render.out().print(f"{m.label}  {state}" + ("  (file changed since)" if m.version in changed else ""))
    for newer in migrations.unknown(applied):
        render.out().print(f"{render.clean(newer.label)}  applied {when(newer.applied_at)} by a newer pulsecart")
    migrations.refuse_newer(applied)


HomeOpt = Annotated[str | None, typer.Option(
    "--home", metavar="DIR", envvar="PULSECART_HOME",
    help="Where the embedded database lives (DIR/pgdata). Default: ./.pulsecart.")]


@dev_db_app.command("start")
def dev_db_start(home: HomeOpt = None) -> None:
    """Start the embedded PostgreSQL (no-op when it runs).

    \b
    Examples:
      pulsecart dev db start
      pulsecart dev db start --home /tmp/scratch
    """
    uri, started = embedded.start(home)
    render.out().print(f"{'started' if started else 'already running'}: {uri}")


@dev_db_app.command("stop")
def dev_db_stop(home: HomeOpt = None) -> None:
    """Stop the embedded PostgreSQL.

    \b
    Examples:
      pulsecart dev db stop
      PULSECART_HOME=.pulsecart/demo pulsecart dev db stop
    """
    render.out().print("stopped" if embedded.stop(home) else "not running")


@dev_db_app.command("url")
def dev_db_url(home: HomeOpt = None) -> None:
    """Print the embedded PostgreSQL's URL, starting it when needed.

    \b
    Examples:
      export PULSECART_DATABASE_URL=$(pulsecart dev db url)
      psql "$(pulsecart dev db url)"
    """
    print(embedded.start(home)[0])
