"""The database's schema: its frozen migration history (history.py) and the search index as
it is now (search_index.py). Per-table facts live in tables.py."""

from .history import (
    CONSOLIDATION,
    CONSOLIDATION_POLICY,
    CONSOLIDATION_TYPES,
    CORE,
    FEEDS,
    MEMORY_TYPES,
    NOW,
    PATTERN_TYPES,
    SEARCH,
    key_number,
    migrations,
)
from .search_index import (
    BITS,
    BROWSE,
    DOC,
    DOC_TRIGGERS,
    FTS,
    INDEX_TABLES,
    PARTS,
    SIGNATURE_BITS,
    as_built,
    bits_code,
    index_objects,
    install_index,
    outdated,
    part_of,
    source_triggers,
)

__all__ = [
    "BITS", "BROWSE", "CONSOLIDATION", "CONSOLIDATION_POLICY", "CONSOLIDATION_TYPES", "CORE",
    "DOC", "DOC_TRIGGERS", "FEEDS", "FTS", "INDEX_TABLES", "MEMORY_TYPES", "NOW", "PARTS",
    "PATTERN_TYPES", "SEARCH", "SIGNATURE_BITS", "as_built", "bits_code",
    "index_objects", "install_index", "key_number", "migrations", "outdated", "part_of",
    "source_triggers",
]
