"""The errors ravana-db reports: one line each, translated to an exit code by the CLI."""


class RavanaError(Exception):
    """A runtime failure: the command could not do its job (exit 1)."""

    exit_code = 1


class InputError(RavanaError):
    """Bad usage or bad input (exit 2). Nothing has been written."""

    exit_code = 2
