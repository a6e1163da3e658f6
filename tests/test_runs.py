"""The record of a maintenance run (runs.py): what `compress` and `consolidate` leave in
memory_consolidations and consolidation_metrics, written through the store's one write path."""

import json

import pytest

from ravana_db import runs
from ravana_db.db import open_db
from ravana_db.store import write


@pytest.fixture
def db(db_path):
    db = open_db(db_path)
    yield db
    db.close()


def run_row(db, run_id):
    found = list(db.query("SELECT * FROM memory_consolidations WHERE consolidation_id = ?",
                          [run_id]))
    return found[0] if found else None


def test_a_run_is_recorded_as_given(db):
    write(db, [], statements=[runs.record(
        "run-1", type="weekly", results={"operation": "consolidate", "note": "café ☕"},
        processed=12, patterns=3, ratio=0.5, seconds=1.25)])
    row = run_row(db, "run-1")
    assert {k: row[k] for k in ("consolidation_type", "memories_processed", "patterns_extracted",
                                "compression_ratio", "processing_time_seconds", "success",
                                "error_message")} == {
        "consolidation_type": "weekly", "memories_processed": 12, "patterns_extracted": 3,
        "compression_ratio": 0.5, "processing_time_seconds": 1.25, "success": 1,
        "error_message": None}
    # The results are JSON with its text as written (not \u escapes), readable by SQLite.
    assert row["consolidation_results"] == '{"operation": "consolidate", "note": "café ☕"}'
    assert row["consolidation_date"]  # the schema's default: now


def test_a_run_with_an_error_is_recorded_as_failed(db):
    write(db, [], statements=[runs.record("run-2", type="daily", results={"operation": "x"},
                                          error="disk full")])
    row = run_row(db, "run-2")
    assert (row["success"], row["error_message"]) == (0, "disk full")
    assert (row["memories_processed"], row["compression_ratio"]) == (0, 1.0)


def test_finish_completes_the_run_recorded_when_it_started(db):
    write(db, [], statements=[runs.record("run-3", type="daily", results={"operation": "c"},
                                          error="running")])
    write(db, [], statements=[runs.finish("run-3", results={"operation": "c", "merged": 2},
                                          processed=7, patterns=1, ratio=0.9, seconds=2.0)])
    row = run_row(db, "run-3")
    assert json.loads(row["consolidation_results"]) == {"operation": "c", "merged": 2}
    assert (row["success"], row["error_message"], row["memories_processed"],
            row["patterns_extracted"], row["compression_ratio"],
            row["processing_time_seconds"]) == (1, None, 7, 1, 0.9, 2.0)
    assert db.execute("SELECT count(*) FROM memory_consolidations").fetchone()[0] == 1


def test_metrics_belong_to_their_run(db):
    statements = [runs.record("run-4", type="daily", results={"operation": "compress"})]
    statements += runs.metrics("run-4", [("seconds", 1.5, "s"), ("merged", 3, None)])
    write(db, [], statements=statements)
    metrics = list(db.query(
        "SELECT metric_id, consolidation_id, metric_name, metric_value, metric_unit "
        "FROM consolidation_metrics ORDER BY id"))
    assert [(m["consolidation_id"], m["metric_name"], m["metric_value"], m["metric_unit"])
            for m in metrics] == [("run-4", "seconds", 1.5, "s"), ("run-4", "merged", 3.0, None)]
    assert len({m["metric_id"] for m in metrics}) == 2  # each its own id


def test_of_picks_the_runs_of_one_operation(db):
    write(db, [], statements=[
        runs.record(f"{operation}-{i}", type="daily", results={"operation": operation})
        for operation in ("compress", "consolidate") for i in range(2)])
    for operation in ("compress", "consolidate"):
        picked = [r[0] for r in db.execute(
            "SELECT consolidation_id FROM memory_consolidations "
            f"WHERE {runs.of(operation)} ORDER BY id")]
        assert picked == [f"{operation}-0", f"{operation}-1"]


def test_a_failure_is_recorded_alone(db):
    runs.record_failure(db, runs.record("run-5", type="daily", results={"operation": "c"},
                                        error="the summarizer crashed"))
    row = run_row(db, "run-5")
    assert (row["success"], row["error_message"]) == (0, "the summarizer crashed")


def test_a_failure_that_cannot_be_recorded_is_swallowed(db):
    """The first error is the one to report: a second one, while recording it, is dropped."""
    write(db, [], statements=[runs.record("run-6", type="daily", results={"operation": "c"})])
    runs.record_failure(db, runs.record("run-6", type="daily", results={"operation": "c"},
                                        error="second"))  # the same id: refused, swallowed
    row = run_row(db, "run-6")
    assert (row["success"], row["error_message"]) == (1, None)
    assert db.execute("SELECT count(*) FROM memory_consolidations").fetchone()[0] == 1


def test_compress_and_consolidate_each_record_their_run(cli, embedded, rows):
    for args in (["compress", "--format", "json"],
                 ["consolidate", "--type", "event_triggered", "--format", "json"]):
        result = cli(*args)
        assert result.exit_code == 0, result.stderr
    recorded = rows("SELECT consolidation_id, consolidation_type, success, "
                    "json_extract(consolidation_results, '$.operation') AS operation "
                    "FROM memory_consolidations ORDER BY id")
    assert [(r["operation"], r["success"]) for r in recorded] == [("compress", 1),
                                                                  ("consolidate", 1)]
    # Each run's metrics name their run.
    owners = {r["consolidation_id"] for r in rows("consolidation_metrics")}
    assert owners <= {r["consolidation_id"] for r in recorded}
    listed = json.loads(cli("consolidate", "--list", "--format", "json").stdout)
    assert [r["consolidation_id"] for r in listed] == [recorded[1]["consolidation_id"]]
