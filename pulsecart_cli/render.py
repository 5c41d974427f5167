"""How results look: Rich tables on a terminal, one JSON document with --json. Logs go to stderr."""

import json
import sys
from datetime import date, datetime
from decimal import Decimal

from rich.console import Console
from rich.table import Table

from pulsecart_cli.ledger import UnitResult

STATUS_STYLE = {"succeeded": "green", "failed": "bold red", "running": "yellow"}


NON_TERMINAL_WIDTH = 160  # logs (Airflow, cron mail) are read wide; do not wrap tables at 80


def _console(stream) -> Console:
    return Console(file=stream, highlight=False, width=None if stream.isatty() else NON_TERMINAL_WIDTH)


def out() -> Console:
    return _console(sys.stdout)


def err() -> Console:
    return _console(sys.stderr)


def _default(value):
    if isinstance(value, (date, datetime)):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"cannot encode {type(value).__name__}")


def print_json(document) -> None:
    sys.stdout.write(json.dumps(document, default=_default, indent=2) + "\n")


def day_results_json(job: str, results: list[UnitResult]) -> dict:
    return {
        "job": job,
        "ok": all(r.status == "succeeded" for r in results),
        "days": [
            {"date": r.run_date, "status": r.status, "rows": r.rows, "duration_s": r.duration_s,
             "details": r.details, "error": r.error, "run_id": r.run_id}
            for r in results
        ],
    }


def _notes(result: UnitResult) -> str:
    if result.error:
        return result.error.splitlines()[0]
    if result.job == "metrics":
        d = result.details
        note = f"orders {d['orders_placed']}, revenue {d['revenue']}, abandonment {d['abandonment_rate'] or '-'}%"
        if d["invalid_order_totals"]:
            note += f", [yellow]{d['invalid_order_totals']} invalid order totals (left out of revenue)[/]"
        return note
    if result.job == "aggregate":
        d = result.details
        current = "current scores updated" if d["current_scores_updated"] else "backfill: current scores kept"
        return f"{d['scored_users']} users scored; {current}"
    return ", ".join(f"{k} {v}" for k, v in result.details.items())


def day_results_table(job: str, results: list[UnitResult]) -> Table:
    table = Table(title=f"pulsecart {job}", title_justify="left")
    for column, justify in (("day", "left"), ("status", "left"), ("rows", "right"),
                            ("duration", "right"), ("notes", "left")):
        table.add_column(column, justify=justify)
    for r in results:
        style = STATUS_STYLE.get(r.status, "")
        table.add_row(str(r.run_date), f"[{style}]{r.status}[/]", f"{r.rows:,}", f"{r.duration_s:.2f}s", _notes(r))
    return table
