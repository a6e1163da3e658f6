"""The record of a maintenance run (compress, consolidate): one `memory_consolidations` row
and its `consolidation_metrics`, written in the run's own transaction, or on failure alone."""

import json
import uuid

from .errors import RavanaError
from .sql import driver

RECORD = """
INSERT INTO memory_consolidations(consolidation_id, consolidation_type, memories_processed,
    patterns_extracted, compression_ratio, consolidation_results, processing_time_seconds,
    success, error_message)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
"""
FINISH = """
UPDATE memory_consolidations SET memories_processed = ?, patterns_extracted = ?,
    compression_ratio = ?, consolidation_results = ?, processing_time_seconds = ?, success = ?,
    error_message = ?
WHERE consolidation_id = ?
"""
METRIC = """
INSERT INTO consolidation_metrics(metric_id, consolidation_id, metric_name, metric_value,
    metric_unit) VALUES (?, ?, ?, ?, ?)
"""


def of(operation):
    """The SQL condition that picks a `memory_consolidations` row of this operation."""
    return f"json_extract(consolidation_results, '$.operation') = '{operation}'"


def record(run_id, *, type, results, processed=0, patterns=0, ratio=1.0, seconds=0.0,
           error=None):
    """The statement that records a run (success unless error)."""
    return RECORD, [run_id, type, processed, patterns, ratio,
                    json.dumps(results, ensure_ascii=False), seconds, int(error is None), error]


def finish(run_id, *, results, processed=0, patterns=0, ratio=1.0, seconds=0.0, error=None):
    """The statement that completes a run recorded when it started."""
    return FINISH, [processed, patterns, ratio, json.dumps(results, ensure_ascii=False), seconds,
                    int(error is None), error, run_id]


def metrics(run_id, rows):
    """Statements for the run's metrics: rows of (name, value, unit)."""
    return [(METRIC, [str(uuid.uuid4()), run_id, name, value, unit])
            for name, value, unit in rows]


def record_failure(db, statement):
    """Write a failed run's record alone; a second error is swallowed (the first is the one
    to report)."""
    from .store import write

    try:
        write(db, [], statements=[statement])
    except (RavanaError, driver().Error):
        pass
