"""Failure and lateness alerts of the PulseCart DAGs, by email through the Airflow connection `smtp_default`.

Recipients: the Airflow Variable `pulsecart_alert_emails` (comma-separated), read when an alert is
sent, never at parse time. Unset or empty: no email at all (the failure still shows in Airflow).

- A task that has failed for good (after its last retry, or at once when it cannot be retried)
  sends one message: DAG, task, the day processed, the try, the `Error:` line pulsecart printed and
  the command that reruns it by hand. Airflow calls `on_failure_callback` only then; a try that
  will be retried calls `on_retry_callback`, which pulsecart leaves unset.
- A scheduled run whose day is not done by its deadline sends one message, from a task of its own:
  `wait_for_deadline` waits (reschedule mode, no worker slot held) until the deadline, then
  `finished_by_deadline` runs `pulsecart status --check` for the day and, when it fails, emails.
  Backfills and manual runs process old days on purpose and never send one.
"""

import copy
import html
import logging
import re
from collections.abc import Iterable
from functools import cached_property

from airflow.providers.common.compat.sdk import AirflowException, AirflowSensorTimeout
from airflow.providers.smtp.notifications.smtp import SmtpNotifier
from airflow.providers.standard.hooks.subprocess import SubprocessHook
from airflow.providers.standard.operators.bash import BashOperator
from airflow.providers.standard.sensors.bash import BashSensor

log = logging.getLogger(__name__)

RECIPIENTS = "{{ var.value.get('pulsecart_alert_emails', '') }}"
SMTP_CONN_ID = "smtp_default"
ERROR_LINE = re.compile(r"Error: .*")
LAST_CHECK = " Last check: "   # a sensor's timeout names what its last poke printed after this


def recipients(value: str | Iterable[str] | None) -> list[str]:
    """The addresses in a comma-separated string (the rendered variable) or a list."""
    addresses = (value or "").split(",") if value is None or isinstance(value, str) else value
    return [address.strip() for address in addresses if address.strip()]


def send(to: list[str], subject: str, fields: list[tuple[str, str]]) -> None:
    """One plain message (as HTML <pre>, what the SMTP hook sends) through `smtp_default`."""
    width = max(len(name) for name, _ in fields) + 2
    text = "\n".join(f"{name + ':':<{width}}{value}" for name, value in fields if value)
    notifier = SmtpNotifier(to=to, subject=subject, smtp_conn_id=SMTP_CONN_ID,
                            html_content=f"<pre>{html.escape(text)}</pre>")
    notifier.notify({})


class FailureEmail(SmtpNotifier):
    """`on_failure_callback`: one email when a task has failed for good.

    ``day`` and ``rerun`` are Jinja templates, rendered like the task's own fields when it fails."""

    # Airflow's own fields plus ours (mypy reads the base class's tuple as a fixed type).
    template_fields = (*SmtpNotifier.template_fields, "day", "rerun")  # type: ignore[assignment]

    def __init__(self, rerun: str, day: str = ""):
        super().__init__(to=RECIPIENTS, smtp_conn_id=SMTP_CONN_ID)
        self.rerun, self.day = rerun, day

    def __call__(self, *args) -> None:
        # Rendering changes the fields in place: render a copy, so the task's notifier stays a template.
        return SmtpNotifier.__call__(copy.copy(self), *args)

    def notify(self, context) -> None:
        to = recipients(self.to)
        ti = context["ti"]
        if not to:
            log.info("pulsecart_alert_emails is not set: no failure email for %s.%s", ti.dag_id, ti.task_id)
            return
        exception = context.get("exception")
        error = ERROR_LINE.search(str(exception or ""))
        airflow_said, _, last_check = str(exception or "").partition(LAST_CHECK)
        tries = ti.max_tries + 1
        try_text = f"{ti.try_number} of {tries}" + (" (failed without retry)" if ti.try_number < tries else "")
        on_day = f" for {self.day}" if self.day else ""
        subject_try = f"try {ti.try_number} of {tries}" + (", failed without retry" if ti.try_number < tries else "")
        send(to, f"[pulsecart] FAILED {ti.dag_id}.{ti.task_id}{on_day} ({subject_try})", [
            ("DAG", ti.dag_id),
            ("Task", ti.task_id),
            ("Day", self.day),
            ("Run", ti.run_id),
            ("Try", try_text),
            ("pulsecart", error[0] if error else last_check or "no Error: line (see the task log)"),
            ("Airflow", "" if error or exception is None else f"{type(exception).__name__}: {airflow_said}"),
            ("Rerun by hand", self.rerun),
            ("Then check", f"pulsecart status --end {self.day} --days 7" if self.day else "pulsecart status"),
            ("Log", getattr(ti, "log_url", "")),
        ])


class LatenessEmail(FailureEmail):
    """`on_failure_callback` of a scheduled run's deadline check: one email when the day is still not done
    at the deadline. It runs in the check task's own process, which reads the Variable and the connection
    wherever they are stored (metadata database, environment, secrets backend); Airflow's Deadline Alert
    callbacks may not read them from the metadata database (AirflowSecretsBackendAccessDenied)."""

    template_fields = (*FailureEmail.template_fields, "by")  # type: ignore[assignment]

    def __init__(self, job: str, day: str, by: str):
        super().__init__(rerun=f"pulsecart {job} --date {day}", day=day)
        self.by = by

    def notify(self, context) -> None:
        to = recipients(self.to)
        ti = context["ti"]
        if not to:
            log.info("pulsecart_alert_emails is not set: no lateness email for %s", ti.run_id)
            return
        error = ERROR_LINE.search(str(context.get("exception") or ""))
        send(to, f"[pulsecart] LATE {ti.dag_id} for {self.day}: not finished by {self.by}", [
            ("DAG", ti.dag_id),
            ("Day", self.day),
            ("Run", ti.run_id),
            ("State", error[0] if error else "not done at its deadline (see the task log)"),
            ("Check", f"pulsecart check-complete --date {self.day} --grace 30m; pulsecart status"),
            ("Rerun by hand", self.rerun),
        ])


def alerts_help(late_after: str = "") -> str:
    lateness = (f"A scheduled run whose day is not done by {late_after} sends one lateness email (the task "
                "`finished_by_deadline`); backfills and manual runs never do.\n") if late_after else ""
    return f"""
### Alerts

A task that fails for good (after its last retry) sends one email to the Airflow Variable
`pulsecart_alert_emails` (comma-separated; **unset or empty: no email**) through the connection
`smtp_default`: DAG, task, day, try, the `Error:` line pulsecart printed and the command to rerun.
A sensor that times out quotes instead what its last check printed: why the day still waits
(`2025-03-04 has 22% of its usual events …`) and the command that accepts it as it is.
{lateness}"""


class _ErrorLineKept:
    """Passes log calls on to ``log`` and keeps the last command output line starting `Error:`, and (for
    BashSensor, which logs its command's output between "Output:" and "Command exited …") the last line."""

    def __init__(self, log):
        self.wrapped, self.line, self.last_output, self.in_output = log, "", "", False

    def info(self, event, *args, **kwargs):
        text = args[0] if event == "%s" and args else event
        if isinstance(text, str) and text.startswith("Error: "):
            self.line = text
        if event == "Output:" or (isinstance(event, str) and event.startswith("Command exited")):
            self.in_output = event == "Output:"
        elif self.in_output and isinstance(text, str) and text.strip():
            self.last_output = text
        return self.wrapped.info(event, *args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.wrapped, name)


class _KeepsErrorLine:
    """Mixin for what logs a command's output line by line (stdout and stderr are one stream there):
    ``self.log`` also keeps the last line starting `Error:` that pulsecart printed."""

    @property
    def log(self):
        log = super().log  # type: ignore[misc]  # a mixin: log is the operator's it is mixed into
        kept = self.__dict__.get("_error_line_log")
        if kept is None or kept.wrapped is not log:
            kept = self.__dict__["_error_line_log"] = _ErrorLineKept(log)
        return kept

    def error_line(self, forget: bool = False) -> str:
        line = self.log.line
        if forget:
            self.log.line = ""
        return line


def _with_error_line(failed: AirflowException, line: str) -> AirflowException:
    return type(failed)(f"{failed} {line}") if line else failed


class _OutputHook(_KeepsErrorLine, SubprocessHook):
    pass


class PulsecartCommand(BashOperator):
    """A BashOperator whose failure names the `Error:` line pulsecart printed, for the failure email."""

    @cached_property
    def subprocess_hook(self) -> _OutputHook:
        return _OutputHook()

    def execute(self, context):
        self.subprocess_hook.error_line(forget=True)
        try:
            return super().execute(context)
        except AirflowException as failed:
            if type(failed) is not AirflowException:   # skips and the like pass as they are
                raise
            raise _with_error_line(failed, self.subprocess_hook.error_line()) from None


class PulsecartSensor(_KeepsErrorLine, BashSensor):
    """A BashSensor whose failure names the `Error:` line pulsecart printed, and whose timeout names what its
    last poke printed (why it still waits: "2025-03-04 has 22% of its usual events …"), for the failure email."""

    def poke(self, context):
        self.error_line(forget=True)
        self.log.last_output = ""
        try:
            return super().poke(context)
        except AirflowException as failed:
            raise _with_error_line(failed, self.error_line()) from None

    def execute(self, context):
        try:
            return super().execute(context)
        except AirflowSensorTimeout as timed_out:
            if not self.log.last_output:
                raise
            raise AirflowSensorTimeout(f"{timed_out}{LAST_CHECK}{self.log.last_output}") from None
