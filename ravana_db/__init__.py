"""ravana-db: an autonomous agent's whole memory in one SQLite file."""

__version__ = "0.1.0"
