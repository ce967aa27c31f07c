"""Rosetta's version, as /health and the OpenAPI document give it: a module of its own, so
neither imports the app factory."""

__version__ = "0.1.0"
