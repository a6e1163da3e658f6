"""tables.py: each table's facts name columns the schema really has, and the names other modules
import are derived from them."""

from ravana_db import tables
from ravana_db.db import open_db
from ravana_db.tables import TABLE_FACTS, TIME_COLUMNS


def columns(db, table):
    return [row[1] for row in db.execute(f"PRAGMA table_info([{table}])")]


def test_every_table_and_column_named_exists_in_a_new_database(db_path):
    db = open_db(db_path)
    for table in TABLE_FACTS:
        found = columns(db, table.name)
        assert found, table.name
        named = [*table.times, *table.hashed, *(c for key in table.natural for c in key)]
        assert set(named) <= set(found), table.name
        if table.search:
            assert table.search.ref in found, table.name
    db.close()


def test_a_tables_time_columns_are_all_its_columns_that_hold_a_time(db_path):
    """Import parses a column as a time by its name (TIME_COLUMNS): the name must mean a time in
    every table that has it."""
    db = open_db(db_path)
    for table in TABLE_FACTS:
        timed = {c for c in columns(db, table.name) if c in TIME_COLUMNS}
        assert timed == set(table.times), table.name
    db.close()


def test_the_old_names_are_derived_from_the_facts():
    assert tables.TABLES == tuple(t.name for t in TABLE_FACTS)
    assert list(tables.SEARCHABLE) == list(tables.KIND_ORDER)
    assert all(tables.SEARCHABLE[k]["table"] == tables.BY_KIND[k].name for k in tables.KIND_ORDER)
    assert set(tables.TIME) == set(tables.TABLES)
    assert set(tables.NATURAL) <= set(tables.TABLES)
