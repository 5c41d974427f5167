"""pulsecart: run, replay and backfill PulseCart's scheduled batch jobs.

Importing the package loads nothing: the entry point (``console``) installs its signal handlers before
anything slow is imported, so ``__version__`` is read from the installed metadata when first asked for."""


def __getattr__(name: str) -> str:
    if name != "__version__":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib.metadata import PackageNotFoundError, version

    try:
        found = version("pulsecart")
    except PackageNotFoundError:  # running from a source tree that was never installed
        found = "0.0.0+source"
    globals()["__version__"] = found  # read once: the next access finds the attribute
    return found
