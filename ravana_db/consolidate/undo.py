"""Undoing a consolidation run's merges, and the list of runs."""

import json

from .. import runs
from ..db import now as utc_now
from ..errors import InputError
from ..store import write
from ..text import loads
from .lock import run_lock

RUNS = runs.of("consolidate")


def undo(db, *, path, run_id, wait=False):
    """Undo a consolidation run's merges and links exactly: every memory it merged or changed
    gets back the values it had (an access counted since stays counted), the memories it took
    are due again, and their merge is never made again (kept apart).

    Returns a report: run_id, restored (memories), links removed.
    """
    found_run = db.execute(
        f"SELECT json_extract(consolidation_results, '$.undone_at'), success FROM "
        f"memory_consolidations WHERE consolidation_id = ? AND {RUNS}", [run_id]).fetchone()
    if found_run is None:
        raise InputError(f"no consolidation run {run_id!r}: `ravana-db consolidate --list` "
                         "shows the runs")
    if found_run[0] is not None:
        raise InputError(f"run {run_id} was already undone at {found_run[0]}")
    with run_lock(path, wait=wait):
        rows = db.execute("SELECT memory_id, role, before, after FROM memory_merge "
                          "WHERE consolidation_id = ? ORDER BY rowid DESC", [run_id]).fetchall()
        statements = []
        for memory_id, role, before, after in rows:
            before, after = loads(before), loads(after)
            if role == "survivor":
                statements.append((
                    ("UPDATE memory SET importance = ?, metadata = ?, last_accessed = ?, "
                    "access_count = max(0, access_count - ?), merged_into = ? WHERE id = ?"),
                    [before["importance"], json.dumps(before["metadata"], ensure_ascii=False),
                     before["last_accessed"],
                     (after.get("access_count") or before["access_count"]) -
                     before["access_count"], before["merged_into"], memory_id]))
            else:
                statements.append(("UPDATE memory SET merged_into = ? WHERE id = ?",
                                   [before["merged_into"], memory_id]))
        statements += [
            (("UPDATE memory SET dup_key = NULL, consolidated_in = NULL "
             "WHERE consolidated_in = ?"), [run_id]),
            ("DELETE FROM memory_link WHERE consolidation_id = ?", [run_id]),
            (("UPDATE memory_consolidations SET consolidation_results = json_set("
             "consolidation_results, '$.undone_at', ?) WHERE consolidation_id = ?"),
             [utc_now(), run_id])]
        links = db.execute("SELECT count(*) FROM memory_link WHERE consolidation_id = ?",
                           [run_id]).fetchone()[0]
        write(db, [], statements=statements)
    return {"run_id": run_id, "restored": len(rows), "links_removed": links}


def history(db, *, limit=20):
    """The latest consolidation runs, newest first."""
    columns = ("consolidation_id", "consolidation_date", "consolidation_type",
               "memories_processed", "patterns_extracted", "success", "error_message")
    return [dict(zip(columns, r)) | {
        "merged": loads(r[-1]).get("merged"), "undone_at": loads(r[-1]).get(
            "undone_at")} for r in db.execute(
        f"SELECT {', '.join(columns)}, consolidation_results FROM memory_consolidations "
        f"WHERE {RUNS} ORDER BY consolidation_date DESC, id DESC LIMIT ?", [limit])]
