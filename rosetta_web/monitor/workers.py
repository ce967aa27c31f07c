"""The monitor's threads and connections, one set per app, made by create_app and kept in
app.extensions: the lanes that sample suspect sources apart from the round, the resolver that
looks host names up for the probe, and the connections kept open to the servers sampled."""

from __future__ import annotations

import threading
import time

from flask import Flask, current_app

from ..postgres.connection import Resolver
from ..postgres.sampling import KeptConnections

LANES = "rosetta_lanes"
RESOLVER = "rosetta_resolver"
KEPT = "rosetta_kept_connections"


class Lanes:
    """The sources being sampled in this process by a lane the round did not wait for, and the
    lanes' threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.in_flight: set[int] = set()
        self.threads: list[threading.Thread] = []

    def add(self, thread: threading.Thread) -> None:
        """Keep a new lane's thread, forgetting those that have finished."""
        with self.lock:
            self.threads[:] = [*(old for old in self.threads if old.is_alive()), thread]

    def join(self, timeout_s: float) -> None:
        """Wait, at most `timeout_s`, for the lanes to store what they sampled."""
        deadline = time.monotonic() + timeout_s
        with self.lock:
            threads = list(self.threads)
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))


def init_app(app: Flask) -> None:
    """Give the app its sampling lanes, its resolver and its kept connections."""
    app.extensions[LANES] = Lanes()
    app.extensions[RESOLVER] = Resolver()
    app.extensions[KEPT] = KeptConnections()


def lanes(app: Flask | None = None) -> Lanes:
    """Return the app's sampling lanes (the current app's by default)."""
    found: Lanes = (app or current_app).extensions[LANES]
    return found


def resolver(app: Flask | None = None) -> Resolver:
    """Return the app's resolver (the current app's by default)."""
    found: Resolver = (app or current_app).extensions[RESOLVER]
    return found


def kept_connections(app: Flask | None = None) -> KeptConnections:
    """Return the connections the app keeps open to the servers it samples."""
    found: KeptConnections = (app or current_app).extensions[KEPT]
    return found
