"""The growth path: every agent's file synced into one PostgreSQL (+ pgvector), searched there."""
