"""The PostgreSQL side of ravana-db: the server's schema (schema.py), connections (server.py),
the file's rows as the server stores them (rows.py), one batch written there (write.py) and
`sync` (sync.py); the read side (connect.py, read.py, views.py). psycopg is imported only on
these paths."""
