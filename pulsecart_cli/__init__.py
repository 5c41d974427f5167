"""pulsecart: run, replay and backfill PulseCart's scheduled batch jobs."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("pulsecart")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+source"
