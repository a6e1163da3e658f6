"""Undoing a consolidation run's merges, and the list of runs."""

import json

from .. import runs
from ..errors import InputError
from ..store import write
from ..text import loads
from ..times import now as utc_now
from .lock import run_lock

RUNS = runs.of("consolidate")
MAX_MERGES = 1000  # merges listed per run by history()
# Runs after this one, not undone, that changed some of the memories it changed.
LATER = f"""
SELECT DISTINCT c.id, c.consolidation_id FROM memory_merge mine
JOIN memory_merge theirs ON theirs.memory_id = mine.memory_id
    AND theirs.consolidation_id != mine.consolidation_id
JOIN memory_consolidations c ON c.consolidation_id = theirs.consolidation_id
WHERE mine.consolidation_id = :run AND {RUNS}
AND c.id > (SELECT id FROM memory_consolidations WHERE consolidation_id = :run)
AND json_extract(c.consolidation_results, '$.undone_at') IS NULL
ORDER BY c.id DESC
"""
# Each column goes back to its value before the run only if it still holds the run's value
# (compare-and-swap in the write itself): what was written since the run is kept.
SAME_METADATA = ("(CASE WHEN metadata IS NULL OR NOT json_valid(metadata) THEN metadata "
                 "ELSE json(metadata) END) IS json(?)")
RESTORE_SURVIVOR = f"""
UPDATE memory SET
    importance = CASE WHEN abs(importance - ?) <= 1e-9 THEN ? ELSE importance END,
    metadata = CASE WHEN {SAME_METADATA} THEN ? ELSE metadata END,
    last_accessed = CASE WHEN last_accessed IS ? THEN ? ELSE last_accessed END,
    access_count = max(0, access_count - ?),
    merged_into = CASE WHEN merged_into IS ? THEN ? ELSE merged_into END
WHERE id = ?
"""
RESTORE_MERGED = "UPDATE memory SET merged_into = ? WHERE id = ? AND merged_into IS ?"


def undo(db, *, path, run_id, wait=False):
    """Undo a consolidation run's merges and links: every memory it merged or changed gets
    back the values it had, except what was written since (a later `log`, an access
    counted since: kept), the memories it took are due again, and their merge is never made
    again (kept apart). A later run that changed the same memories is undone first.

    Args:
        run_id: the run's id, or a prefix that starts only that run's id.

    Returns:
        A report: run_id, restored (memories), links_removed, kept ([{memory_id, columns}]:
        the later values left in place).

    Raises:
        InputError: no such run, an ambiguous prefix, a run already undone, or a later run
            to undo first.
    """
    run_id = _resolve(db, run_id)
    undone_at = db.execute(
        "SELECT json_extract(consolidation_results, '$.undone_at') FROM memory_consolidations "
        "WHERE consolidation_id = ?", [run_id]).fetchone()[0]
    if undone_at is not None:
        raise InputError(f"run {run_id} was already undone at {undone_at}")
    with run_lock(path, wait=wait):
        later = [r[1] for r in db.execute(LATER, {"run": run_id})]
        if later:
            runs_named = ", ".join(later)
            raise InputError(
                f"later run {runs_named} merged some of the same memories: undo it first "
                f"(`ravana-db consolidate --undo {later[0]}`)" if len(later) == 1 else
                f"later runs {runs_named} merged some of the same memories: undo them first, "
                f"in that order")
        rows = db.execute("SELECT memory_id, role, before, after FROM memory_merge "
                          "WHERE consolidation_id = ? ORDER BY rowid DESC", [run_id]).fetchall()
        statements, kept = [], []
        for memory_id, role, before, after in rows:
            before, after = loads(before), loads(after)
            changed = _changed_since(db, memory_id, after, survivor=role == "survivor")
            if changed:
                kept.append({"memory_id": memory_id, "columns": changed})
            if role == "survivor":
                statements.append((RESTORE_SURVIVOR, [
                    after["importance"], before["importance"],
                    _json(after["metadata"]), _json(before["metadata"]),
                    after["last_accessed"], before["last_accessed"],
                    (after.get("access_count") or before["access_count"]) -
                    before["access_count"],
                    after["merged_into"], before["merged_into"], memory_id]))
            else:
                statements.append((RESTORE_MERGED, [before["merged_into"], memory_id,
                                                    after.get("merged_into")]))
        statements += [
            (("UPDATE memory SET dup_key = NULL, consolidated_in = NULL "
             "WHERE consolidated_in = (SELECT id FROM memory_consolidations "
             "WHERE consolidation_id = ?)"), [run_id]),
            ("DELETE FROM memory_link WHERE consolidation_id = ?", [run_id]),
            (("UPDATE memory_consolidations SET consolidation_results = json_set("
             "consolidation_results, '$.undone_at', ?) WHERE consolidation_id = ?"),
             [utc_now(), run_id])]
        links = db.execute("SELECT count(*) FROM memory_link WHERE consolidation_id = ?",
                           [run_id]).fetchone()[0]
        write(db, [], statements=statements)
    return {"run_id": run_id, "restored": len(rows), "links_removed": links,
            "kept": sorted(kept, key=lambda k: k["memory_id"])}


def _resolve(db, given):
    """The id of the consolidation run that `given` names in full or starts."""
    prefix = given.strip()
    if not prefix:
        raise InputError("no run id given: `ravana-db consolidate --list` shows the runs")
    found = [r[0] for r in db.execute(
        f"SELECT consolidation_id FROM memory_consolidations WHERE {RUNS} AND "
        f"lower(substr(consolidation_id, 1, ?)) = lower(?) ORDER BY id DESC LIMIT 3",
        [len(prefix), prefix])]
    if not found:
        raise InputError(f"no consolidation run {given!r}: `ravana-db consolidate --list` "
                         "shows the runs")
    if len(found) > 1 and prefix not in found:
        raise InputError(f"run id {given!r} is ambiguous: it starts {', '.join(found[:2])}"
                         f"{' and more' if len(found) > 2 else ''}: give more of it")
    return prefix if prefix in found else found[0]


def _changed_since(db, memory_id, after, *, survivor):
    """The columns of a memory written since the run (they no longer hold its values)."""
    row = db.execute("SELECT importance, metadata, last_accessed, merged_into FROM memory "
                     "WHERE id = ?", [memory_id]).fetchone()
    if row is None:
        return []
    importance, metadata, last_accessed, merged_into = row
    changed = []
    if survivor:
        if importance is None or after["importance"] is None or \
                abs(importance - after["importance"]) > 1e-9:
            changed.append("importance")
        try:
            same = (loads(metadata) if metadata is not None else None) == after["metadata"]
        except ValueError:
            same = False
        if not same:
            changed.append("metadata")
        if last_accessed != after["last_accessed"]:
            changed.append("last_accessed")
    if merged_into != after.get("merged_into"):
        changed.append("merged_into")
    return changed


def _json(value):
    return None if value is None else json.dumps(value, ensure_ascii=False)


def _results(text):
    """A run's results as a dict; {} when another client stored something unreadable."""
    try:
        value = loads(text)
    except (ValueError, TypeError):  # text.DeepJSONError is a ValueError
        return {}
    return value if isinstance(value, dict) else {}


def history(db, *, limit=20, merges=MAX_MERGES):
    """The latest consolidation runs, newest first, each with the merges it made (at most
    `merges` a run): memory_id, survivor_id and the reason, the evidence of the check that
    made it."""
    columns = ("consolidation_id", "consolidation_date", "consolidation_type",
               "memories_processed", "patterns_extracted", "success", "error_message")
    return [dict(zip(columns, r)) | {
        "merged": _results(r[-1]).get("merged"), "undone_at": _results(r[-1]).get(
            "undone_at"), "merges": _merges(db, r[0], merges)} for r in db.execute(
        f"SELECT {', '.join(columns)}, consolidation_results FROM memory_consolidations "
        f"WHERE {RUNS} ORDER BY consolidation_date DESC, id DESC LIMIT ?", [limit])]


def _merges(db, run_id, limit):
    """A run's merges (its primary key's lookup): memory_id, survivor_id, reason."""
    return [{"memory_id": m, "survivor_id": s, "reason": why} for m, s, why in db.execute(
        "SELECT memory_id, survivor_id, reason FROM memory_merge WHERE consolidation_id = ? "
        "AND role = 'merged' ORDER BY memory_id LIMIT ?", [run_id, limit])]
