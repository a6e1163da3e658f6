"""Rows in: `ingest jsonl` and `ingest dir` (jsonl.py), `ingest ravana` (original.py), all
through one Loader (loader.py) that checks every row, spools it to disk (spool.py), then
writes in batches; target.py says what the target's schema holds."""

from .jsonl import load_dir, load_jsonl
from .original import load_original
from .target import check_table, table_info

__all__ = ["check_table", "load_dir", "load_jsonl", "load_original", "table_info"]
