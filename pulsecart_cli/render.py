"""How results look: Rich tables on a terminal, one JSON document with --json. Logs go to stderr."""

import json
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, TextIO

from rich.console import Console, Group, JustifyMethod, RenderableType
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from pulsecart_cli.dates import when
from pulsecart_cli.errors import first_line
from pulsecart_cli.ledger import RunStatus, UnitResult
from pulsecart_cli.registry import DAILY_JOBS
from pulsecart_cli.status import DayStanding, DayState, Problem

if TYPE_CHECKING:  # for annotations only: not imported at run time
    from pulsecart_cli.runner import DailyRun
    from pulsecart_cli.schedules import AirflowDayRun, Backfill

STATUS_STYLE = {RunStatus.SUCCEEDED: "green", RunStatus.FAILED: "bold red", RunStatus.RUNNING: "yellow",
                RunStatus.BUSY: "yellow", RunStatus.FORGOTTEN: "cyan"}


NON_TERMINAL_WIDTH = 160  # logs (Airflow, cron mail) are read wide; do not wrap tables at 80


def _console(stream: TextIO, soft_wrap: bool = False) -> Console:
    return Console(file=stream, highlight=False, width=None if stream.isatty() else NON_TERMINAL_WIDTH,
                   soft_wrap=soft_wrap)


def out() -> Console:
    return _console(sys.stdout)


def err() -> Console:
    """Messages for the operator: each stays one line, however long (logs are grepped line by line)."""
    return _console(sys.stderr, soft_wrap=True)


def message(text: str) -> None:
    """Plain text (no Rich markup) on stderr."""
    err().print(clean(text), markup=False)


# C0 and C1 controls, DEL, and the bidirectional overrides that reorder what a terminal shows.
_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def clean(text: str, keep: str = "") -> str:
    """The text with control characters from data escaped (\\x1b), so a terminal shows them instead of
    obeying them; characters in ``keep`` (say a newline) stay."""
    return _CONTROLS.sub(lambda m: m[0] if m[0] in keep else repr(m[0])[1:-1], text)


def cell(value: object) -> str:
    """A value from data as it goes into a Rich table or markup: controls escaped, markup escaped."""
    return escape(clean(str(value)))


def _default(value: object) -> str:
    if isinstance(value, (date, datetime)):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"cannot encode {type(value).__name__}")


def print_json(document: object) -> None:
    sys.stdout.write(json.dumps(document, default=_default, indent=2) + "\n")


def daily_json(job: str, days: list[dict[str, Any]], ok: bool = True, interrupted: bool = False,
               dry_run: bool = False, **extra: Any) -> dict[str, Any]:
    """The one shape of `aggregate` and `metrics` --json: ok is true exactly when the exit code is 0."""
    return {"ok": ok, "job": job, "dry_run": dry_run, "interrupted": interrupted, "days": days} | extra


def day_results_json(job: str, run: "DailyRun") -> dict[str, Any]:
    return daily_json(job, [
        {"date": r.run_date, "status": r.status, "rows": r.rows, "duration_s": r.duration_s,
         "details": r.details, "error": r.error, "run_id": r.run_id}
        for r in run.results
    ], ok=run.ok, interrupted=run.interrupted)


def backfill_json(plan: "Backfill", check: str, exit_code: int | None = None,
                  runs: "list[AirflowDayRun] | None" = None) -> dict[str, Any]:
    """--via airflow: the backfill command for exactly plan.first … plan.last (with --run, how it exited, and
    unless --no-wait, how each day's run ended: ``runs``, a list of schedules.AirflowDayRun; null when not waited for)."""
    first_run, last_run = plan.runs
    ok = exit_code in (None, 0) and all(run.state == "success" for run in runs or [])
    return {"ok": ok, "job": plan.dag.job, "via": "airflow", "dag_id": plan.dag.dag_id,
            "first_day": plan.first, "last_day": plan.last, "first_run": first_run, "last_run": last_run,
            "command": plan.command(), "ran": exit_code is not None, "exit_code": exit_code, "then": check,
            "runs": None if runs is None else [{"date": run.day, "state": run.state, "run_id": run.run_id or None}
                                               for run in runs]}


def reconcile_json(results: list[UnitResult], ok: bool) -> dict[str, Any]:
    return {
        "ok": ok,
        "job": "reconcile",
        "topics": [
            {"topic": r.target, "status": r.status, "pulled": r.details.get("pulled", 0),
             "republished": r.details.get("republished", 0), "quarantined": r.details.get("quarantined", 0),
             "already_quarantined": r.details.get("already_quarantined", 0), "failed": r.details.get("failed", 0),
             "dry_run": r.details.get("dry_run", False), "reasons": r.details.get("reasons", {}),
             "duration_s": r.duration_s, "error": r.error, "run_id": r.run_id}
            for r in results
        ],
    }


def reconcile_table(results: list[UnitResult]) -> Table:
    dry_run = any(r.details.get("dry_run") for r in results)
    table = Table(title="pulsecart reconcile" + (" (dry run: nothing acked)" if dry_run else ""),
                  title_justify="left")
    for column in ("topic", "status", "pulled", "republished", "quarantined", "failed", "duration", "notes"):
        table.add_column(column, justify="left" if column in ("topic", "status", "notes") else "right")
    for r in results:
        d = r.details
        reasons = ", ".join(f"{n} {reason}" for reason, n in sorted(d.get("reasons", {}).items()))
        notes = r.error or reasons
        if d.get("already_quarantined"):
            notes += f"; {d['already_quarantined']} redelivered, already in quarantine"
        table.add_row(cell(r.target), f"[{STATUS_STYLE.get(r.status, '')}]{r.status}[/]", f"{d.get('pulled', 0):,}",
                      f"{d.get('republished', 0):,}", f"{d.get('quarantined', 0):,}", f"{d.get('failed', 0):,}",
                      f"{r.duration_s:.2f}s", cell(notes))
    return table


def quarantine_table(entries: list[dict[str, Any]]) -> Table:
    table = Table(title="quarantined dead letters", title_justify="left")
    for column in ("id", "topic", "message id", "reason", "status", "quarantined at", "bytes"):
        table.add_column(column, justify="right" if column in ("id", "bytes") else "left")
    for e in entries:
        table.add_row(str(e["id"]), cell(e["original_topic"]), cell(e["message_id"]), cell(e["reason"]),
                      cell(e["status"]), when(e["quarantined_at"]), f"{e['size']:,}")
    return table


def _shown(value: object) -> str:
    return when(value) if isinstance(value, datetime) else clean(str(value))


def quarantine_entry(entry: dict[str, Any], max_bytes: int) -> str:
    from pulsecart_cli.quarantine import printable

    data = bytes(entry["data"])
    kind, shown = printable(data, max_bytes)
    lines = [f"{k}: {_shown(entry[k])}" for k in ("id", "status", "reason", "original_topic", "dead_letter_topic",
                                                   "message_id", "ordering_key", "publish_time", "quarantined_at")]
    lines.append(f"attributes: {json.dumps(entry['attributes'], sort_keys=True)}")
    if entry["status"] != "quarantined":
        lines.append(f"{entry['status']} at {when(entry['status_changed_at'])}: {_shown(entry['status_note'] or '')}"
                     + (f" (message {_shown(entry['replayed_message_id'])})" if entry["replayed_message_id"] else ""))
    cut = f", first {max_bytes:,} shown" if len(data) > max_bytes else ""
    lines.append(f"data ({kind}, {len(data):,} bytes{cut}):")
    lines.append(clean(shown, keep="\n\t"))
    return escape("\n".join(lines))


def _notes(result: UnitResult) -> str:
    if result.error:
        return cell(first_line(result.error))
    job = DAILY_JOBS[result.job]
    if result.status == RunStatus.FORGOTTEN:
        return job.forgotten_summary(result.details)
    return job.summary(result.details)


def day_results_table(job: str, results: list[UnitResult]) -> Table:
    table = Table(title=f"pulsecart {job}", title_justify="left")
    columns: tuple[tuple[str, JustifyMethod], ...] = (
        ("day", "left"), ("status", "left"), ("rows", "right"), ("duration", "right"), ("notes", "left"))
    for column, justify in columns:
        table.add_column(column, justify=justify)
    for r in results:
        style = STATUS_STYLE.get(r.status, "")
        table.add_row(str(r.run_date), f"[{style}]{r.status}[/]", f"{r.rows:,}", f"{r.duration_s:.2f}s", _notes(r))
    return table


def plan_text(job: str, plan: list[tuple[date, str]]) -> str:
    if not plan:
        return f"dry run: {job} would run no day"
    lines = [f"dry run: {job} would run {len(plan)} day(s), oldest first:"]
    lines += [f"  {day}  {reason}" for day, reason in plan]
    return "\n".join(lines)


@contextmanager
def day_progress(job: str, total: int,
                 enabled: bool) -> Iterator[tuple[Callable[[date], None], Callable[[UnitResult], None]]]:
    """A progress bar on stderr (days done / total, current day, elapsed, ETA) when stderr is a terminal."""
    if not enabled or not sys.stderr.isatty():
        yield (lambda day: None), (lambda result: None)
        return
    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn())
    with Progress(*columns, console=_console(sys.stderr), transient=False) as progress:
        task = progress.add_task(job, total=total)

        def on_start(day: date) -> None:
            progress.update(task, description=f"{job} {day}")

        def on_done(result: UnitResult) -> None:
            progress.advance(task)

        yield on_start, on_done


STATE_MARKS = {DayState.SUCCEEDED: ("✓", "green"), DayState.FAILED: ("✗", "bold red"),
               DayState.MISSING: ("·", "dim"), DayState.STALE: ("~", "yellow"), DayState.RUNNING: ("▶", "cyan"),
               DayState.BEFORE_EVENTS: (" ", "dim"), DayState.SUSPECT: ("?", "magenta")}
# The selector that picks each kind of gap, in the order `status` suggests them.
GAP_FLAGS = {DayState.MISSING: "--only-missing", DayState.FAILED: "--only-failed", DayState.STALE: "--stale"}


def _fix_command(job: str, states: dict[date, DayStanding]) -> str | None:
    gaps: dict[DayState, list[date]] = {s.state: [] for s in states.values()}
    for day, state in states.items():
        gaps[state.state].append(day)
    flags = [flag for state, flag in GAP_FLAGS.items() if gaps.get(state)]
    if not flags:
        return None
    days = [d for state in GAP_FLAGS for d in gaps.get(state, [])]
    days += [d for s in states.values() if s.state == DayState.STALE for d, _ in s.stale_inputs]  # may be earlier
    return f"pulsecart {job} --window {min(days)}..{max(days)} {' '.join(flags)}"


def _counts(states: dict[date, DayStanding]) -> dict[DayState, int]:
    counts = dict.fromkeys(STATE_MARKS, 0)
    for state in states.values():
        counts[state.state] += 1
    return counts


def status_json(states_by_job: dict[str, dict[date, DayStanding]], window: list[date]) -> dict[str, Any]:
    return {
        "start": window[0], "end": window[-1],
        "jobs": {
            job: {"counts": _counts(states), "fix": _fix_command(job, states),
                  "days": [{"date": day, "state": s.state, "latest_run_id": s.latest_run_id}
                           | ({"reason": s.stale_reason} if s.state == DayState.STALE else {})
                           | ({"reason": s.suspect_reason} if s.state == DayState.SUSPECT else {})
                           for day, s in sorted(states.items())]}
            for job, states in states_by_job.items()
        },
    }


def check_json(problems: list[Problem], window: list[date]) -> dict[str, Any]:
    return {"ok": not problems, "start": window[0], "end": window[-1],
            "problems": [{"job": p.job, "date": p.day, "state": p.state, "reason": p.reason, "fix": p.fix}
                         for p in problems]}


def status_view(states_by_job: dict[str, dict[date, DayStanding]], window: list[date]) -> Group:
    table = Table(title=f"pulsecart status {window[0]} .. {window[-1]} (oldest left)", title_justify="left")
    table.add_column("job")
    table.add_column("days")
    for state in STATE_MARKS:
        table.add_column(state, justify="right")
    fixes = []
    for job, states in states_by_job.items():
        marks = "".join(f"[{STATE_MARKS[s.state][1]}]{STATE_MARKS[s.state][0]}[/]" for _, s in sorted(states.items()))
        counts = _counts(states)
        table.add_row(job, marks, *(str(counts[state]) for state in STATE_MARKS))
        fix = _fix_command(job, states)
        if fix:
            fixes.append(fix)
    legend = "  ".join(f"[{style}]{mark}[/] {state}" for state, (mark, style) in STATE_MARKS.items())
    parts: list[RenderableType] = [table, legend]
    parts += ["to fill the gaps:"] + [f"  {fix}" for fix in fixes] if fixes else ["no gaps"]
    suspect = [f"  {job} {day}: {escape(s.suspect_reason or '')}" for job, states in states_by_job.items()
               for day, s in sorted(states.items()) if s.state == DayState.SUSPECT]
    if suspect:
        parts += ["[magenta]suspect[/] (a warning: they ran, but their figures are far from the usual):", *suspect]
    return Group(*parts)


def runs_table(rows: list[dict[str, Any]]) -> Table:
    table = Table(title="recent runs (newest first)", title_justify="left")
    for column in ("id", "job", "day / target", "status", "trigger", "started", "duration", "rows", "error"):
        table.add_column(column, justify="right" if column in ("id", "duration", "rows") else "left")
    for r in rows:
        duration = f"{float(r['duration_s']):.2f}s" if r["duration_s"] is not None else "-"
        table.add_row(str(r["id"]), cell(r["job"]), cell(" ".join(str(part) for part in (r["run_date"], r["target"]) if part)),
                      f"[{STATUS_STYLE.get(r['status'], '')}]{r['status']}[/]", cell(r["trigger"]),
                      when(r["started_at"]), duration,
                      "-" if r["rows_written"] is None else f"{r['rows_written']:,}", cell(r["error"] or ""))
    return table
