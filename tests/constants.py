"""Figures the tests share: the error envelope's keys, 1024-based sizes, the repository root."""

from __future__ import annotations

from pathlib import Path

# The keys of every error answer (rosetta_web/errors.py).
ENVELOPE_KEYS = {"error", "message", "details", "timestamp"}

# Sizes as psql's pg_size_pretty counts them: 1024-based (its "MB" is a MiB).
MIB = 1024**2
MB = MIB
GIB = 1024**3

# The repository: where wsgi.py, schemathesis.toml and rosetta_web/ are.
ROOT = Path(__file__).resolve().parent.parent

# A phone's screen, for the browser tests' narrow layouts.
PHONE = {"width": 390, "height": 844}
