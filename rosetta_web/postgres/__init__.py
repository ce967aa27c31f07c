"""Everything Rosetta says to a source PostgreSQL; no Flask, no models.

connection.py connects and samples (with sampling_queries.py); checks.py runs a source's
readiness checklist; replication_objects.py lists tables and creates and drops publications and
slots.
"""
