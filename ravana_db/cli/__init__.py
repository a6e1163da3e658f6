"""The command line: resolve the path, open the file, make one library call, emit the result.

Each module registers its commands on `common.app` when imported, and `--help` lists them in
that order (commands first, then groups), so the imports below keep their order, unsorted.
"""

from . import (  # noqa: F401, I001
    admin, query, compress, consolidate, log, ingest, export, feeds, timeline, explain, mcp,
    sync,
)
from .common import app, main

__all__ = ["app", "main"]
