"""The PostgreSQL side of ravana-db: the server's schema (schema.py), connections (server.py),
the file's rows as the server stores them (rows.py) and `sync` (sync.py). psycopg is imported
only on these paths."""
