"""Everything Rosetta says to a source PostgreSQL; no Flask, no models.

connection.py connects within a deadline and words a refusal; sampling.py and
sampling_queries.py read the WAL position, slots and WAL size the monitor stores; checks.py
runs a source's readiness checklist; replication_objects.py lists tables and creates and drops
publications and slots. The monitor, the readiness area and the sources area use it.
"""
