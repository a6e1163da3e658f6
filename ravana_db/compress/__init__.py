"""Compression: new summaries into one, very-long-term memories made smaller as they age.

run.py plans and writes a run (and records it); summary.py is the extractive summary;
summarizer.py runs an external summarizer command instead; levels.py is the memories' levels.
This module re-exports what other modules and the tests use.
"""

from .levels import FIELD_BUDGET, drop_verbose, level, pack, restore, strings
from .run import SWAP, apply, compress, plan
from .summarizer import MAX_OUTPUT, run_summarizer, summarizer_argv
from .summary import cited, extract, select, sentences

__all__ = ["FIELD_BUDGET", "MAX_OUTPUT", "SWAP", "apply", "cited", "compress", "drop_verbose",
           "extract", "level", "pack", "plan", "restore", "run_summarizer", "select",
           "sentences", "strings", "summarizer_argv"]

