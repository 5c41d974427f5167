"""Killed, timed out or cut off: SIGTERM and SIGHUP take Ctrl-C's path, a dead run never looks alive,
a lock held by a session whose client is gone says what to do, and every failure ends in one `Error:` line."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from datetime import date

import pytest
from psycopg import sql

from pulsecart_cli.signals import GIVE_UP_AFTER_S
from pulsecart_cli.units import lock_keys
from tests.helpers import (
    FAIL_ON_MARCH_3,
    SLOW_METRICS,
    SLOW_THEN_FAIL_ON,
    WINDOW,
    CuttingProxy,
    aggregates,
    five_days_with_markers,
    has_marker,
    history_begins,
    insert_events,
    interrupt_when_running,
    run_pulsecart,
    runs,
    sleeping_sessions,
    slow_the_first_time,
    utc,
)

D = date(2025, 3, 3)


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("Error:")]


def start(db_url, *args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "pulsecart_cli", *args],
                            env={"PULSECART_DATABASE_URL": db_url, "PATH": "/usr/bin:/bin"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_until(predicate, timeout: float, what: str) -> float:
    """Seconds it took for ``predicate()`` to hold."""
    started = time.monotonic()
    while not predicate():
        assert time.monotonic() - started < timeout, f"{what} did not happen within {timeout}s"
        time.sleep(0.05)
    return time.monotonic() - started


def lock_holder(conn, job, day):
    keys = lock_keys(job, day, None)
    return conn.execute("SELECT pulsecart_lock_holder(%(job_key)s, %(unit_key)s)", keys).fetchone()[0]


# --- 1. SIGTERM and SIGHUP are handled like Ctrl-C -----------------------------------------------------

@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_a_signal_mid_statement_rolls_the_day_back_and_a_rerun_starts_at_once(conn, db_url, sig):
    five_days_with_markers(conn)
    conn.execute(SLOW_THEN_FAIL_ON.format(day="2025-03-03", seconds=60, fail="false"))
    name = signal.Signals(sig).name

    result = interrupt_when_running(conn, db_url, "aggregate", "--date", "2025-03-03", sig=sig, sleeping=1)

    assert result.returncode == 128 + sig, result.stderr
    assert error_lines(result.stderr) == [
        f"Error: terminated by {name}: aggregate 2025-03-03 rolled back and marked failed; 0 day(s) not run"]
    assert "Traceback" not in result.stderr
    assert "2025-03-03" in result.stdout and f"terminated by {name}" in result.stdout   # the summary
    assert runs(conn) == [(D, "failed", f"terminated by {name}")]
    assert conn.execute("SELECT finished_at IS NOT NULL FROM job_runs").fetchone()[0]
    assert has_marker(conn, D)                                   # rolled back: no partial day
    assert sleeping_sessions(conn) == 0                          # the statement was cancelled on the server
    assert lock_holder(conn, "aggregate", D) is None

    conn.execute("DROP TRIGGER slow_day ON event_aggregates")
    rerun = run_pulsecart("aggregate", "--date", "2025-03-03", env={"PULSECART_DATABASE_URL": db_url})
    assert rerun.returncode == 0, rerun.stderr
    assert not has_marker(conn, D)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_a_signal_rolls_back_both_days_in_flight_of_a_window(conn, db_url, sig):
    five_days_with_markers(conn)
    conn.execute(SLOW_THEN_FAIL_ON.format(day="2025-03-02", seconds=60, fail="false"))
    name = signal.Signals(sig).name

    result = interrupt_when_running(conn, db_url, "aggregate", "--window", WINDOW, running=2, sleeping=1, sig=sig)

    assert result.returncode == 128 + sig, result.stderr
    assert error_lines(result.stderr) == [(f"Error: terminated by {name}: aggregate 2025-03-02, 2025-03-03 "
                                           "rolled back and marked failed; 2 day(s) not run")]
    assert runs(conn) == [(date(2025, 3, 1), "succeeded", None), (date(2025, 3, 2), "failed", f"terminated by {name}"),
                          (date(2025, 3, 3), "failed", f"terminated by {name}")]
    assert [has_marker(conn, date(2025, 3, d)) for d in range(1, 6)] == [False, True, True, True, True]
    assert sleeping_sessions(conn) == 0

    conn.execute("DROP TRIGGER slow_day ON event_aggregates")
    rerun = run_pulsecart("aggregate", "--window", WINDOW, "--only-failed", "--only-missing", "--json",
                          env={"PULSECART_DATABASE_URL": db_url})
    assert rerun.returncode == 0, rerun.stderr
    assert [d["date"] for d in json.loads(rerun.stdout)["days"]] == [
        "2025-03-02", "2025-03-03", "2025-03-04", "2025-03-05"]


SLOW_SUCCESS_RECORD = """
CREATE FUNCTION slow_success() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_sleep(60);
    RETURN NEW;
END $$;
CREATE TRIGGER slow_success BEFORE UPDATE ON job_runs FOR EACH ROW
WHEN (NEW.status = 'succeeded' AND NEW.run_date = DATE '2025-03-01') EXECUTE FUNCTION slow_success();
"""


def test_a_signal_while_a_window_day_records_its_success_rolls_it_back_and_says_so(conn, db_url):
    """The signal's cancel lands on a worker's last statement, the ledger's 'succeeded' in the day's own
    transaction: the day rolls back, so its row must say failed ("terminated by SIGTERM"), never succeeded."""
    five_days_with_markers(conn)
    conn.execute(SLOW_SUCCESS_RECORD)

    result = interrupt_when_running(conn, db_url, "aggregate", "--window", WINDOW, running=1, sleeping=1,
                                    sig=signal.SIGTERM)

    assert result.returncode == 143, result.stderr
    [line] = error_lines(result.stderr)
    assert line.startswith("Error: terminated by SIGTERM: aggregate 2025-03-01") and "rolled back" in line, line
    assert runs(conn)[0] == (date(2025, 3, 1), "failed", "terminated by SIGTERM")
    assert all(status != "succeeded" for _, status, _ in runs(conn))
    assert has_marker(conn, date(2025, 3, 1))                    # rolled back: the marker the day replaces is there

def slow_failure_record(seconds: int) -> str:
    return slow_the_first_time(
        "slow_failure_record", seconds,
        "UPDATE ON job_runs FOR EACH ROW WHEN (NEW.status = 'failed' AND NEW.run_date = DATE '2025-03-03')")


SLOW_FAILURE_RECORD_ONCE = slow_failure_record(seconds=60)


@pytest.mark.parametrize("job, failure", [
    ("metrics", FAIL_ON_MARCH_3),
    ("aggregate", SLOW_THEN_FAIL_ON.format(day="2025-03-03", seconds=0, fail="true")),
], ids=["main-thread", "window-worker"])
def test_a_signal_while_a_window_day_records_its_failure_leaves_no_running_row(conn, db_url, job, failure):
    """The signal stops whatever statement runs when it lands (psycopg's cancel on the main thread, the main
    thread's cancel on an aggregate window's workers): here the ledger write of a day that had failed on
    its own. That write must still happen (the row said 'running', then 'abandoned', and the day was left
    out of the summary); one signal stops one statement, so it is run again."""
    insert_events(conn, [(u, "order.placed", utc(2025, 3, d, 12), {"total": 1}) for d in range(1, 6) for u in "ab"])
    conn.execute(failure)
    conn.execute(SLOW_FAILURE_RECORD_ONCE)

    result = interrupt_when_running(conn, db_url, job, "--window", WINDOW, running=1, sleeping=1,
                                    sig=signal.SIGTERM)

    assert result.returncode == 143, result.stderr
    assert "Traceback" not in result.stderr
    ledger = runs(conn)
    assert all(status != "running" for _, status, _ in ledger), (ledger, result.stdout, result.stderr)
    [day_3] = [(status, error) for day, status, error in ledger if day == date(2025, 3, 3)]
    assert day_3[0] == "failed" and "injected failure" in day_3[1], day_3
    [line] = error_lines(result.stderr)
    assert line.startswith("Error: terminated by SIGTERM: ") and "2025-03-03" in line, line


def test_a_signal_before_any_work_exits_with_its_code_and_one_error_line(db_url):
    process = start(db_url, "seed", "--start", "2025-03-01", "--days", "30", "--events-per-day", "200000")
    time.sleep(1.5)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=30)
    assert process.returncode == 143, err
    assert error_lines(err) == ["Error: terminated by SIGTERM"]
    assert "Traceback" not in err



def test_a_signal_at_any_moment_of_startup_exits_with_its_code_and_at_most_one_error_line(db_url):
    """Every 2 ms of the first 60 (where the handler gets installed) and every 10 ms up to half a second, a
    SIGTERM lands somewhere else: the interpreter's start, the imports, typer parsing the arguments,
    connecting. Before the handler exists the default action ends the process, silently; from then on,
    one error line and 143. Never SIGINT's 130, never a traceback."""
    codes = set()
    for delay_ms in [*range(0, 60, 2), *range(60, 500, 10)]:
        process = start(db_url, "seed", "--start", "2025-03-01", "--days", "30", "--events-per-day", "200000")
        time.sleep(delay_ms / 1000)
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=30)
        codes.add(process.returncode)
        assert "Traceback" not in err, (delay_ms, err)
        if process.returncode == -signal.SIGTERM:
            assert err == "", (delay_ms, err)
        else:
            assert (process.returncode, error_lines(err)) == (143, ["Error: terminated by SIGTERM"]), (delay_ms, err)
    assert 143 in codes


@pytest.mark.parametrize("job, table", [("metrics", "daily_metrics"), ("aggregate", "event_aggregates")])
@pytest.mark.parametrize("cut, refuse_after, standing, day_3", [
    ("after", False, "committed: 2025-03-01..2025-03-03; not committed: 2025-03-04..2025-03-05", "succeeded"),
    ("before", False, "committed: 2025-03-01..2025-03-02; not committed: 2025-03-03..2025-03-05", "failed"),
    ("after", True, ("committed: 2025-03-01..2025-03-02; committed or not, unknown (`pulsecart status` tells once "
                     "the database answers): 2025-03-03; not committed: 2025-03-04..2025-03-05"), "succeeded"),
], ids=["answer-lost", "commit-lost", "database-gone"])
def test_a_connection_cut_at_the_commit_says_whether_the_day_committed(conn, db_url, job, table, cut,
                                                                       refuse_after, standing, day_3):
    """The network drops day 3's connection at its COMMIT: with the server's answer lost (committed),
    with the COMMIT itself lost (rolled back), or for good. A new connection reads day 3's ledger row;
    the error line says what stands, and never calls a committed day "not committed"."""
    insert_events(conn, [(u, "order.placed", utc(2025, 3, d, 12), {"total": 1}) for d in range(1, 6) for u in "ab"])
    conn.execute(SLOW_THEN_FAIL_ON.format(day="2025-03-03", seconds=3, fail="false")
                 .replace("ON event_aggregates", f"ON {table}"))
    proxy = CuttingProxy(db_url)
    try:
        process = start(proxy.url, job, "--window", WINDOW)
        day_2_committed = "SELECT count(*) FROM job_runs WHERE run_date = '2025-03-02' AND status = 'succeeded'"
        wait_until(lambda: sleeping_sessions(conn) == 1 and conn.execute(day_2_committed).fetchone()[0] == 1, 20,
                   "day 3's slow statement, day 2 committed (aggregate runs two days at once)")
        proxy.arm(cut, refuse_after=refuse_after)
        out, err = process.communicate(timeout=60)
    finally:
        proxy.close()

    assert process.returncode == 1, err
    [line] = error_lines(err)
    assert line.startswith(f"Error: {job} stopped: database error: "), line
    assert f"; {standing} (hint: rerun" in line, line
    assert err.splitlines() == [line]     # nothing else: no traceback, no psycopg log of the failed rollback
    assert ("2025-03-03" in out) == (standing.startswith("committed: 2025-03-01..2025-03-03")), out
    listed = json.loads(run_pulsecart("runs", "--json", env={"PULSECART_DATABASE_URL": db_url}).stdout)["runs"]
    assert sorted((r["run_date"], r["status"]) for r in listed if r["job"] == job) == [   # two workers: any id order
        ("2025-03-01", "succeeded"), ("2025-03-02", "succeeded"), ("2025-03-03", day_3)]


SIGNAL_INSIDE_PSYCOPG = """
import os, signal, sys, threading
from pulsecart_cli import console


def signal_once_the_statement_is_sent(frame, event, arg):
    # psycopg has sent the statement and its generator has yet to read the answer: a signal here raises in
    # the generator, which psycopg cannot resume after cancelling, so the answer stays unread
    if event == "call" and frame.f_code.co_name == "maybe_add_to_cache" and b"{marker}" in frame.f_locals["query"].query:
        sys.setprofile(None)
        os.kill(os.getpid(), signal.SIGTERM)


threading.setprofile(signal_once_the_statement_is_sent)  # the command runs on a worker thread
sys.argv = ["pulsecart", "aggregate", "--date", "2025-03-02"]
console.main()
"""


@pytest.mark.parametrize("marker", ["pg_try_advisory_xact_lock", "INSERT INTO job_runs"],
                         ids=["in-the-work", "recording-the-start"])
def test_a_signal_inside_psycopg_after_a_statement_is_sent_still_rolls_back_and_exits_with_its_code(
        conn, db_url, marker):
    """A SIGTERM between psycopg sending a statement and reading its answer left the answer unread: the
    rollback and the ledger write that follow failed with "another command is already in progress", and
    the run ended with exit 1, "database error" (3 in 100 SIGTERMs at random moments of a one-day run).
    While the start row was written, the row was left 'running', then failed but not named in the line."""
    insert_events(conn, [(u, "order.placed", utc(2025, 3, d, 12), {"total": 1}) for d in (1, 2) for u in "ab"])
    result = subprocess.run([sys.executable, "-c", SIGNAL_INSIDE_PSYCOPG.replace("{marker}", marker)],
                            env={"PULSECART_DATABASE_URL": db_url, "PATH": "/usr/bin:/bin"},
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 143, result.stderr
    [line] = error_lines(result.stderr)
    if runs(conn):  # the start row is written unless the cancel reached the INSERT in time; then it is named
        assert runs(conn) == [(date(2025, 3, 2), "failed", "terminated by SIGTERM")]
        assert line.startswith("Error: terminated by SIGTERM: aggregate 2025-03-02 rolled back and marked failed"), line
    else:
        assert line.startswith("Error: terminated by SIGTERM"), line
    assert not conn.execute("SELECT count(*) FROM event_aggregates").fetchone()[0]
    assert run_pulsecart("aggregate", "--date", "2025-03-02", env={"PULSECART_DATABASE_URL": db_url}).returncode == 0


def run_script(script: str, db_url: str) -> subprocess.CompletedProcess:
    """Run ``script`` (which calls ``console.main``) in a child process on the test database."""
    return subprocess.run([sys.executable, "-c", script], env={"PULSECART_DATABASE_URL": db_url, "PATH": "/usr/bin:/bin"},
                          capture_output=True, text=True, timeout=60, check=False)


SIGNAL_AS_THE_COMMIT_BEGINS = """
import os, signal, sys, threading
from pulsecart_cli import console

success_recorded = False


def signal_as_the_commit_begins(frame, event, arg):
    # the day's success is written in its transaction; psycopg is about to send the COMMIT: a signal here
    # ends psycopg's generator with the transaction still open on the connection
    global success_recorded
    if event == "call" and frame.f_code.co_name == "_finish":
        success_recorded = True
    elif event == "call" and frame.f_code.co_name == "_commit_gen" and success_recorded:
        sys.setprofile(None)
        os.kill(os.getpid(), signal.SIGTERM)


threading.setprofile(signal_as_the_commit_begins)
sys.argv = ["pulsecart", "aggregate", "--date", "2025-03-02"]
console.main()
"""


def test_a_signal_as_the_commit_begins_lets_it_commit_and_says_so(conn, db_url):
    """A signal once the day's success is written and its COMMIT is about to be sent: the COMMIT goes
    through (a signal never cuts a statement on the client side), and the line says what the database
    holds. (With a raising handler, the transaction was left open and the line said "committed" over a
    day that then rolled back.)"""
    insert_events(conn, [(u, "order.placed", utc(2025, 3, d, 12), {"total": 1}) for d in (1, 2) for u in "ab"])
    result = run_script(SIGNAL_AS_THE_COMMIT_BEGINS, db_url)
    assert (result.returncode, error_lines(result.stderr)) == (
        143, ["Error: terminated by SIGTERM: aggregate 2025-03-02 had committed as it arrived; 0 day(s) not run"])
    assert runs(conn) == [(date(2025, 3, 2), "succeeded", None)]
    assert aggregates(conn, date(2025, 3, 2)) == {("a", "order.placed"): 1, ("b", "order.placed"): 1}


SIGNAL_AS_THE_SECOND_WORKER_STARTS = """
import os, signal, sys, threading, time
from pulsecart_cli import console

starts = 0


def signal_as_the_second_worker_starts(frame, event, arg):
    global starts
    if event == "call" and frame.f_code.co_name == "start" and isinstance(frame.f_locals.get("self"), threading.Thread):
        starts += 1
        if starts == 2:
            sys.setprofile(None)
            time.sleep(1)  # the first worker is inside day 1's slow statement by now
            os.kill(os.getpid(), signal.SIGTERM)


threading.setprofile(signal_as_the_second_worker_starts)
sys.argv = ["pulsecart", "aggregate", "--window", "2025-03-01..2025-03-05"]
console.main()
"""


def test_a_signal_while_a_window_starts_its_workers_stops_the_one_already_at_work(conn, db_url):
    """The interruption escaped the window before its workers were told: the process exited under the first
    worker, whose day stayed 'running' (then 'abandoned'), with a bare "terminated by SIGTERM" line. Now
    every day in flight (the second, when it had begun to wait for the first) rolls back and is named."""
    five_days_with_markers(conn)
    conn.execute(SLOW_THEN_FAIL_ON.format(day="2025-03-01", seconds=30, fail="false"))
    result = run_script(SIGNAL_AS_THE_SECOND_WORKER_STARTS, db_url)
    in_flight = [day for day, _, _ in runs(conn)]
    assert in_flight in ([date(2025, 3, 1)], [date(2025, 3, 1), date(2025, 3, 2)])
    assert runs(conn) == [(day, "failed", "terminated by SIGTERM") for day in in_flight]
    line = (f"Error: terminated by SIGTERM: aggregate {', '.join(map(str, in_flight))} rolled back and marked failed; "
            f"{5 - len(in_flight)} day(s) not run")
    assert (result.returncode, error_lines(result.stderr)) == (143, [line])
    assert all(has_marker(conn, date(2025, 3, d)) for d in range(1, 6))  # every day as it was


def test_a_signal_after_the_command_finished_changes_nothing(db_url):
    """A SIGTERM while Python shuts down (here: from an atexit hook, after the exit status is decided) must
    not turn a finished run into 143 or print anything: the work is over, there is nothing to stop."""
    script = ("import atexit, os, signal, sys; from pulsecart_cli import console;"
              " atexit.register(lambda: os.kill(os.getpid(), signal.SIGTERM));"
              " sys.argv = ['pulsecart', 'runs', '--limit', '1']; console.main()")
    result = subprocess.run([sys.executable, "-c", script], env={"PULSECART_DATABASE_URL": db_url, "PATH": "/usr/bin:/bin"},
                            capture_output=True, text=True, timeout=60, check=False)
    assert (result.returncode, result.stderr) == (0, "")
    assert "recent runs" in result.stdout


@pytest.mark.parametrize("held_s, refuse_after", [(0.5, False), (7, False), (7, True)],
                         ids=["answered", "answered-late", "answered-then-database-gone"])
def test_a_signal_while_the_commit_is_under_way_keeps_a_day_that_committed(conn, db_url, held_s, refuse_after):
    """SIGTERM after the day's COMMIT reached the server and before its answer reached pulsecart: the day
    committed, so its row must stay 'succeeded' (not be overwritten with 'terminated'), and the error line
    must not call it rolled back. A signal does not cut the wait for the COMMIT's answer, however late."""
    fate = "had committed as it arrived"
    insert_events(conn, [(u, "order.placed", utc(2025, 3, d, 12), {"total": 1}) for d in range(1, 6) for u in "ab"])
    conn.execute(SLOW_THEN_FAIL_ON.format(day="2025-03-03", seconds=1, fail="false").replace(
        "ON event_aggregates", "ON daily_metrics"))
    proxy = CuttingProxy(db_url)
    try:
        process = start(proxy.url, "metrics", "--window", WINDOW)
        wait_until(lambda: sleeping_sessions(conn) == 1, 20, "day 3's slow statement")
        proxy.arm("hold", refuse_after=refuse_after)
        wait_until(proxy.holding.is_set, 20, "day 3's COMMIT answer held")
        process.send_signal(signal.SIGTERM)
        time.sleep(held_s)
        proxy.release()
        _, err = process.communicate(timeout=60)
    finally:
        proxy.close()

    assert process.returncode == 143, err
    assert err.splitlines() == [f"Error: terminated by SIGTERM: metrics 2025-03-03 {fate}; 2 day(s) not run"]
    assert runs(conn) == [(date(2025, 3, 1), "succeeded", None), (date(2025, 3, 2), "succeeded", None),
                          (D, "succeeded", None)]
    assert conn.execute("SELECT count(*) FROM daily_metrics WHERE date = %s", (D,)).fetchone()[0] == 1

# --- 2. A dead run never looks alive -------------------------------------------------------------------

def test_a_killed_run_reads_as_failed_at_once_without_another_run(cli, conn, db_url):
    history_begins(conn)   # the two days before are in the history: missing, not before it
    conn.execute(SLOW_METRICS.format(seconds=1))
    victim = start(db_url, "metrics", "--date", "2025-03-03")
    wait_until(lambda: sleeping_sessions(conn) == 1, 20, "the run's slow statement")
    alive = json.loads(cli("status", "--job", "metrics", "--end", "2025-03-03", "--days", "3", "--json").stdout)
    assert alive["jobs"]["metrics"]["days"][-1]["state"] == "running"       # a live run is not abandoned

    victim.kill()
    victim.wait(timeout=10)
    wait_until(lambda: lock_holder(conn, "metrics", D) is None, 20, "the dead run's session ending")
    assert conn.execute("SELECT status FROM job_runs").fetchall() == [("running",)]   # nobody wrote since

    status = json.loads(cli("status", "--job", "metrics", "--end", "2025-03-03", "--days", "3", "--json").stdout)
    job = status["jobs"]["metrics"]
    assert [(d["date"], d["state"]) for d in job["days"]] == [
        ("2025-03-01", "missing"), ("2025-03-02", "missing"), ("2025-03-03", "failed")]
    assert job["fix"] == "pulsecart metrics --window 2025-03-01..2025-03-03 --only-missing --only-failed"
    text = cli("status", "--job", "metrics", "--end", "2025-03-03", "--days", "3").stdout
    assert "··✗" in text and "no gaps" not in text

    listed = json.loads(cli("runs", "--json").stdout)["runs"]
    assert [(r["status"], r["error"], r["duration_s"]) for r in listed] == [
        ("failed", "abandoned: the process ended without finishing (its lock was free)", None)]
    assert "abandoned" in cli("runs").stdout
    assert len(json.loads(cli("runs", "--status", "failed", "--json").stdout)["runs"]) == 1
    assert json.loads(cli("runs", "--status", "running", "--json").stdout) == {"ok": True, "runs": []}

    plan = json.loads(cli("metrics", "--window", "2025-03-01..2025-03-05", "--only-failed", "--dry-run",
                          "--json").stdout)
    assert plan["days"] == [{"date": "2025-03-03", "reason": "failed"}]

    conn.execute("DROP TRIGGER slow_metrics ON daily_metrics")
    assert cli("metrics", "--date", "2025-03-03").exit_code == 0
    reaped = conn.execute("SELECT status, finished_at FROM job_runs ORDER BY id").fetchall()
    assert reaped == [("failed", None), ("succeeded", reaped[1][1])]        # its duration stays unknown


# --- 3. A lock held by a session whose client is gone --------------------------------------------------

def test_a_lock_held_by_a_session_whose_client_is_gone_names_the_backend_and_what_to_do(conn, db_url):
    conn.execute(SLOW_METRICS.format(seconds=60))
    victim = start(db_url, "metrics", "--date", "2025-03-03")
    wait_until(lambda: sleeping_sessions(conn) == 1, 20, "the run's slow statement")
    run_id, backend_pid = conn.execute("SELECT id, backend_pid FROM job_runs").fetchone()
    assert conn.execute("SELECT application_name FROM pg_stat_activity WHERE pid = %s",
                        (backend_pid,)).fetchone() == ("pulsecart metrics 2025-03-03",)
    assert conn.execute("SELECT setting FROM pg_settings WHERE name = 'client_connection_check_interval'"
                        ).fetchone() is not None

    victim.kill()
    victim.wait(timeout=10)
    killed_at = time.monotonic()
    busy = run_pulsecart("metrics", "--date", "2025-03-03", env={"PULSECART_DATABASE_URL": db_url})

    assert busy.returncode == 3, busy.stderr
    [line] = error_lines(busy.stderr)
    assert line.startswith(f"Error: metrics 2025-03-03 is being run by run {run_id} (manual on "
                           f"{socket.gethostname()} pid {victim.pid}, started ")
    assert f"; server backend pid {backend_pid}, 'pulsecart metrics 2025-03-03'); its client (pid {victim.pid}) " \
           "is gone but its server session still holds the lock until its last statement ends" in line
    assert line.endswith(f"(hint: wait for it (or pass --wait), or end it now with "
                         f"SELECT pg_terminate_backend({backend_pid}))")

    # The server checks for a vanished client during a statement: the lock frees itself long before
    # the 60 s statement would have ended, and the next run starts.
    wait_until(lambda: lock_holder(conn, "metrics", D) is None, 25, "the server noticing the client is gone")
    assert time.monotonic() - killed_at < 25
    conn.execute("DROP TRIGGER slow_metrics ON daily_metrics")
    again = run_pulsecart("metrics", "--date", "2025-03-03", env={"PULSECART_DATABASE_URL": db_url})
    assert again.returncode == 0, again.stderr


# --- 4. Every non-zero exit prints one Error: line -------------------------------------------------------

def test_a_failed_day_ends_in_one_error_line_naming_the_day_and_its_error(cli, conn):
    conn.execute(FAIL_ON_MARCH_3)
    result = cli("metrics", "--window", "2025-03-02..2025-03-04")
    assert result.exit_code == 1
    assert error_lines(result.stderr) == [
        ("Error: metrics failed on 1 of 3 day(s): 2025-03-03: RaiseException: injected failure for 2025-03-03; "
         "1 later day(s) not run")]
    single = cli("metrics", "--date", "2025-03-03", "--json")
    assert single.exit_code == 1
    assert json.loads(single.stdout)["ok"] is False
    assert error_lines(single.stderr) == [
        "Error: metrics failed on 1 of 1 day(s): 2025-03-03: RaiseException: injected failure for 2025-03-03"]


@pytest.mark.parametrize("job, table", [("metrics", "daily_metrics"), ("aggregate", "event_aggregates")])
def test_the_database_dying_mid_window_says_which_days_committed(conn, db_url, job, table):
    insert_events(conn, [(u, "order.placed", utc(2025, 3, d, 12), {"total": 1}) for d in range(1, 6) for u in "ab"])
    conn.execute(SLOW_THEN_FAIL_ON.format(day="2025-03-03", seconds=60, fail="false")
                 .replace("ON event_aggregates", f"ON {table}"))
    process = start(db_url, job, "--window", WINDOW)
    wait_until(lambda: sleeping_sessions(conn) == 1, 20, "day 3's slow statement")
    backend_pid = conn.execute("SELECT backend_pid FROM job_runs WHERE run_date = %s", (D,)).fetchone()[0]
    conn.execute("SELECT pg_terminate_backend(%s)", (backend_pid,))
    out, err = process.communicate(timeout=30)

    assert process.returncode == 1, err
    [line] = error_lines(err)
    assert line.startswith(f"Error: {job} stopped: database error: ")
    assert "; committed: 2025-03-01..2025-03-02; not committed: 2025-03-03..2025-03-05 (hint: rerun" in line
    assert err.splitlines() == [line]     # nothing else: no traceback, no psycopg log of the failed rollback
    assert "2025-03-01" in out and "2025-03-02" in out            # the days that did commit, in the summary
    assert [(d, s) for d, s, _ in runs(conn)] == [
        (date(2025, 3, 1), "succeeded"), (date(2025, 3, 2), "succeeded"), (D, "running")]
    assert json.loads(run_pulsecart("runs", "--json", "--limit", "1",
                                    env={"PULSECART_DATABASE_URL": db_url}).stdout)["runs"][0]["status"] == "failed"


def signal_twice(conn, db_url, first: int, second: int, record_s: int) -> tuple[int, str]:
    """``first`` while a day's statement runs, ``second`` while its failure record (held ``record_s``) is
    written: the exit code and stderr."""
    insert_events(conn, [(u, "order.placed", utc(2025, 3, d, 12), {"total": 1}) for d in (1, 2, 3) for u in "ab"])
    conn.execute(SLOW_METRICS.format(seconds=30))
    conn.execute(slow_failure_record(seconds=record_s))
    process = start(db_url, "metrics", "--date", "2025-03-03")
    wait_until(lambda: sleeping_sessions(conn) == 1, 20, "the day's slow statement")
    process.send_signal(first)
    wait_until(lambda: sleeping_sessions(conn) == 1 and not day_statement_sleeping(conn), 20, "the failure record")
    process.send_signal(second)
    _, err = process.communicate(timeout=10)  # well before a failure record held 30 s
    return process.returncode, err


def day_statement_sleeping(conn) -> bool:
    """The slow statement is the day's work (not yet its failure record)."""
    return bool(conn.execute("SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'PgSleep'"
                             " AND query ILIKE '%daily_metrics%'").fetchone()[0])


def test_a_second_signal_keeps_the_first_ones_exit_and_its_cleanup(conn, db_url):
    """Airflow's SIGTERM, then a SIGHUP (the worker's session closing) while the day rolls back and its failure
    is written: the run ends as the first signal says, 143, with its ledger row written."""
    code, err = signal_twice(conn, db_url, signal.SIGTERM, signal.SIGHUP, record_s=2)
    assert (code, error_lines(err)) == (
        143, ["Error: terminated by SIGTERM: metrics 2025-03-03 rolled back and marked failed; 0 day(s) not run"])
    assert runs(conn) == [(D, "failed", "terminated by SIGTERM")]


def test_a_second_ctrl_c_exits_at_once_without_cleanup(conn, db_url):
    """An operator who does not want to wait: the first Ctrl-C cancels the statement and starts the cleanup
    (here a failure record held 30 s); the second ends the process at once with 130. The server rolls back
    what the process left, and the next run of the day starts."""
    code, err = signal_twice(conn, db_url, signal.SIGINT, signal.SIGINT, record_s=30)
    assert code == 130, err
    assert error_lines(err) == [("Error: interrupted again: exiting without cleanup (the database rolls back what "
                                 "was in flight)")]
    conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE wait_event = 'PgSleep'")
    conn.execute("DROP TRIGGER slow_metrics ON daily_metrics")
    rerun = run_pulsecart("metrics", "--date", "2025-03-03", env={"PULSECART_DATABASE_URL": db_url})
    assert rerun.returncode == 0, rerun.stderr
    assert runs(conn)[-1] == (D, "succeeded", None)


@pytest.mark.parametrize("job", ["metrics", "aggregate"])
def test_a_signal_at_any_moment_of_a_window_leaves_whole_days_and_a_true_ledger(conn, db_url, job):
    """SIGTERM at 24 moments spread over a five-day window (startup, the imports, planning, each day's
    statements, the commits, the summary): the run ends in 143 with one error line or, signalled after its
    end, 0; no ledger row is left running; a day's results exist exactly when its latest row says succeeded;
    and a rerun of the window finishes the rest at once."""
    insert_events(conn, [(u, "order.placed", utc(2025, 3, d, h), {"total": 1})
                         for d in range(1, 6) for u in "abc" for h in (1, 13)])
    table = {"metrics": "daily_metrics", "aggregate": "event_aggregates"}[job]
    conn.execute(SLOW_THEN_FAIL_ON.format(day="2025-03-03", seconds=0.3, fail="false").replace(
        "ON event_aggregates", f"ON {table}"))
    env = {"PULSECART_DATABASE_URL": db_url}
    codes = []
    for delay_ms in range(0, 2400, 100):
        process = start(db_url, job, "--window", WINDOW)
        time.sleep(delay_ms / 1000)
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=60)
        codes.append(process.returncode)
        assert "Traceback" not in err, (delay_ms, err)
        if process.returncode == -signal.SIGTERM:  # before the handler: nothing started
            assert err == "", (delay_ms, err)
        elif process.returncode == 143:
            assert [line.split(":")[0] for line in error_lines(err)] == ["Error"], (delay_ms, err)
            assert error_lines(err)[0].startswith("Error: terminated by SIGTERM"), (delay_ms, err)
        else:
            assert (process.returncode, err) == (0, ""), (delay_ms, err)
        latest = {day: status for day, status, _ in runs(conn)}
        assert "running" not in latest.values(), (delay_ms, runs(conn))
        produced = {row[0] for row in conn.execute(sql.SQL("SELECT DISTINCT date FROM {}").format(sql.Identifier(table)))}
        assert produced == {day for day, status in latest.items() if status == "succeeded"}, (delay_ms, latest)
        assert run_pulsecart(job, "--window", WINDOW, "--only-missing", "--only-failed", env=env).returncode == 0
        conn.execute(sql.SQL("DELETE FROM {}").format(sql.Identifier(table)))
        conn.execute("DELETE FROM job_runs")
    assert 143 in codes


def test_a_ctrl_c_after_the_error_line_changes_nothing(conn, db_url):
    """The first signal's cleanup is done and its line printed; a Ctrl-C before the process ends (an operator
    pressing it again) printed a second line, "interrupted again: exiting without cleanup", and exit 130."""
    insert_events(conn, [(u, "order.placed", utc(2025, 3, d, 12), {"total": 1}) for d in (1, 2, 3) for u in "ab"])
    conn.execute(SLOW_METRICS.format(seconds=30))
    for _ in range(3):
        process = start(db_url, "metrics", "--date", "2025-03-03")
        wait_until(lambda: sleeping_sessions(conn) == 1, 20, "the day's slow statement")
        process.send_signal(signal.SIGHUP)
        lines = [process.stderr.readline()]
        process.send_signal(signal.SIGINT)
        lines += process.stderr.readlines()
        assert (process.wait(timeout=30), lines) == (
            129, ["Error: terminated by SIGHUP: metrics 2025-03-03 rolled back and marked failed; 0 day(s) not run\n"])


def test_a_signal_its_parent_ignores_stays_ignored(conn, db_url):
    """`nohup pulsecart …` and a background job of a script (SIGINT ignored) run on when the terminal closes."""
    insert_events(conn, [(u, "order.placed", utc(2025, 3, d, 12), {"total": 1}) for d in (1, 2, 3) for u in "ab"])
    conn.execute(SLOW_METRICS.format(seconds=2))
    process = subprocess.Popen([shutil.which("nohup") or "/usr/bin/nohup", sys.executable, "-m", "pulsecart_cli", "metrics", "--date", "2025-03-03"],
                               env={"PULSECART_DATABASE_URL": db_url, "PATH": "/usr/bin:/bin"},
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_until(lambda: sleeping_sessions(conn) == 1, 20, "the day's slow statement")
    process.send_signal(signal.SIGHUP)
    _, err = process.communicate(timeout=30)
    assert (process.returncode, error_lines(err)) == (0, [])
    assert runs(conn) == [(D, "succeeded", None)]


def test_a_run_whose_database_stops_answering_still_ends_after_a_signal(conn, db_url):
    """A server session that stops answering (here SIGSTOP; a stuck disk, a paused VM) ignores the cancel, and
    the worker waits on it: the process ends anyway, GIVE_UP_AFTER_S after the signal, with one line. The
    database rolls back once the session runs again, and the day reruns."""
    insert_events(conn, [(u, "order.placed", utc(2025, 3, d, 12), {"total": 1}) for d in (1, 2, 3) for u in "ab"])
    conn.execute(SLOW_METRICS.format(seconds=30))
    process = start(db_url, "metrics", "--date", "2025-03-03")
    wait_until(lambda: sleeping_sessions(conn) == 1, 20, "the day's slow statement")
    [backend] = conn.execute("SELECT pid FROM pg_stat_activity WHERE wait_event = 'PgSleep'").fetchone()
    os.kill(backend, signal.SIGSTOP)
    try:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=GIVE_UP_AFTER_S + 30)
    finally:
        os.kill(backend, signal.SIGCONT)
    line = (f"Error: terminated by SIGTERM: still not stopped {GIVE_UP_AFTER_S:g} s later, exiting without cleanup "
            "(the database rolls back what was in flight)")
    assert (process.returncode, error_lines(err)) == (143, [line])
    wait_until(lambda: sleeping_sessions(conn) == 0, 60, "the session to end")
    conn.execute("DROP TRIGGER slow_metrics ON daily_metrics")
    assert run_pulsecart("metrics", "--date", "2025-03-03", env={"PULSECART_DATABASE_URL": db_url}).returncode == 0
    assert runs(conn)[-1] == (D, "succeeded", None)


SIGNAL_AFTER_THE_CHECK = """
import os, signal, sys, time
import psycopg
from pulsecart_cli import console, database, signals

signalled = False


def execute(self, query, *args, **kwargs):
    global signalled
    signals.check()
    if not signalled and "INSERT INTO daily_metrics" in str(query):
        signalled = True
        os.kill(os.getpid(), signal.SIGTERM)  # the check has passed: the statement goes out after the signal
        time.sleep(0.3)  # the main thread's first cancel reaches an idle session and is dropped
        return psycopg.Cursor.execute(self, query, *args, **kwargs)
    return psycopg.Cursor.execute(self, query, *args, **kwargs)


database._StoppableCursor.execute = execute
sys.argv = ["pulsecart", "metrics", "--date", "2025-03-03"]
console.main()
"""


def test_a_statement_sent_just_after_the_signal_is_cancelled_too(conn, db_url):
    """A statement that passed the check just before the signal and reached the server after the cancel
    (which an idle session drops) ran to its end: 25 s here, so the process gave up without cleanup. The main
    thread cancels again until the command ends."""
    insert_events(conn, [(u, "order.placed", utc(2025, 3, d, 12), {"total": 1}) for d in (1, 2, 3) for u in "ab"])
    conn.execute(SLOW_METRICS.format(seconds=25))
    result = run_script(SIGNAL_AFTER_THE_CHECK, db_url)
    assert (result.returncode, error_lines(result.stderr)) == (
        143, ["Error: terminated by SIGTERM: metrics 2025-03-03 rolled back and marked failed; 0 day(s) not run"])
    assert runs(conn) == [(D, "failed", "terminated by SIGTERM")]


def test_the_entry_point_handles_signals_before_it_imports_anything_slow():
    """Until ``console.main`` installs the handlers, a SIGTERM ends the process silently and a Ctrl-C prints
    Python's own traceback. The entry point's module and the package it sits in load only what the
    handlers need (the package's version, read from its metadata, once took 25 ms there)."""
    script = ("import sys; before = set(sys.modules); import pulsecart_cli.console;"
              " print(' '.join(sorted(set(sys.modules) - before)))")
    loaded = set(subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                                check=True).stdout.split())
    ours = {"pulsecart_cli", "pulsecart_cli.console", "pulsecart_cli.errors", "pulsecart_cli.signals"}
    assert ours <= loaded
    assert loaded - ours <= {"signal", "threading", "_weakrefset", "weakref", "_thread", "collections",
                             "collections.abc", "contextlib", "functools", "types", "typing", "_typing",
                             "typing.io", "typing.re"}, loaded - ours
