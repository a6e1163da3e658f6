"""Consolidation: a growing pile of memories and logs into less, better memory. No LLM.

One run, in order (each step planned outside any transaction, then written in short ones
through store.write, so `log`, `ingest` and `query` go on meanwhile):
  1. duplicates: the due memories (the type's window, not yet consolidated, at most the
     run's cap) get their duplicate key (duplicates.key); memories with the same key that pass
     the strict check merge into the most detailed one; look-alikes found through the vector
     index's signatures (bands of SimHash bits: no pair comparison) that fail the check are
     linked in `memory_link`, with the reason;
  2. promotion to very_long_term_memories by the policy rows `promote.*`;
  3. patterns (behavioral, causal, temporal from actionlog; structural among VLTMs);
  4. strategic knowledge per domain from its patterns;
  5. retention: the policy table's archive, compress (compress/levels.py) and expiry;
  6. the run's record, metrics and what each merge changed (`memory_merge`, for undo).
A file lock beside the database (flock: the kernel drops it when the process dies) keeps two
runs apart.

Where things are: run.py runs the steps in order; read.py holds their queries; merge.py
(step 1) and plan.py (the others) plan, as plain functions over the rows read; write.py
writes; policy.py reads the policy rows; duplicates.py is the duplicate check and the
look-alike banding; patterns.py finds patterns and knowledge; undo.py undoes a run and lists
them; lock.py is the run lock.
"""

from . import duplicates, patterns
from .lock import Busy, run_lock
from .run import consolidate
from .undo import history, undo

__all__ = ["Busy", "consolidate", "duplicates", "history", "patterns", "run_lock", "undo"]
