"""The errors ravana-db reports: one line each, translated to an exit code by the CLI."""


class RavanaError(Exception):
    """A runtime failure: the command could not do its job (exit 1)."""

    exit_code = 1


class InputError(RavanaError):
    """Bad usage or bad input (exit 2). Nothing has been written."""

    exit_code = 2


class RecordError(InputError):
    """One record of a batch is bad; `index` is its position in the batch, so that the caller
    can name it its own way (a line of stdin, an entry of a feed)."""

    def __init__(self, index, message):
        super().__init__(message)
        self.index = index
