"""ravana-db: an autonomous agent's whole memory in one SQLite file."""


def __getattr__(name):
    """`ravana_db.__version__`: the installed package's version, read when first asked for
    (importlib.metadata costs ~25 ms, which commands that never show it should not pay)."""
    if name != "__version__":
        raise AttributeError(f"module 'ravana_db' has no attribute {name!r}")
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ravana-db")
    except PackageNotFoundError:  # a source tree that was never installed
        return "unknown (not installed)"
